//! Target servers in the internet namespace.
//!
//! [`Lab::start_servers`] binds listeners inside the internet namespace (on `0.0.0.0`, so
//! they answer on the target address 198.19.0.1 and on every link's peer address, and on
//! `[::]` with `IPV6_V6ONLY`, so they answer on [`crate::TARGET6`] 2001:db8:ffff::1 and every
//! link's v6 peer address too; ports are per namespace, so fixed ports never collide between
//! labs) and serves them from a small
//! tokio runtime of their own. Because they do not run on the test's runtime, tests may
//! block freely (std sockets, `assert_eventually!`) without starving them.
//!
//! | port | service |
//! | ---- | ------- |
//! | [`HTTP_PORT`] 80 | minimal HTTP/1.1: `GET /ip` → client's source IP; `GET /local` → the server address the request reached; `GET /headers` → the request head as received; `GET /bytes/N` → N bytes of [`bytes_body`]; `GET /chunked/N` → the same, chunked; `POST /count` → the body's length (Content-Length or chunked); `GET /` → short text; always `Connection: close` |
//! | [`ECHO_PORT`] 7 | echo until EOF, then shut down the write half (half-close is observable) |
//! | [`WHOAMI_PORT`] 9 | writes the peer's IP + `"\n"`, then closes |
//! | [`SILENT_PORT`] 10 | accepts, reads and discards, never answers |
//! | [`REFUSED_PORT`] 11 | nothing listens: connections are refused |
//!
//! Every accepted connection (any port, either family) is counted per source IP in
//! [`Servers::seen`].
//!
//! UDP, on the target addresses 198.19.0.1 and 2001:db8:ffff::1 only (so that answers leave
//! from the address asked):
//!
//! | port | service |
//! | ---- | ------- |
//! | [`UDP_ECHO_PORT`] 7 | sends each datagram back as it came |
//! | [`UDP_WHOAMI_PORT`] 9 | answers each datagram with the sender's IP + `"\n"` |
//!
//! Every datagram either receives is recorded (port, source, payload; the latest
//! [`MAX_RECORDED_DATAGRAMS`]) in [`Servers::datagrams`], and counted in
//! [`Servers::datagram_count`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Runtime;

use crate::lab::{Lab, TARGET6};

/// HTTP/1.1 server.
pub const HTTP_PORT: u16 = 80;
/// Echo server (RFC 862 port).
pub const ECHO_PORT: u16 = 7;
/// "Who am I": answers the peer's IP address and closes.
pub const WHOAMI_PORT: u16 = 9;
/// Accepts and never answers (for timeouts on the far side).
pub const SILENT_PORT: u16 = 10;
/// Nothing listens here: connections get RST (connection refused).
pub const REFUSED_PORT: u16 = 11;

/// UDP echo (RFC 862 port), on the target address.
pub const UDP_ECHO_PORT: u16 = 7;
/// UDP "who am I": answers each datagram with the sender's IP, on the target address.
pub const UDP_WHOAMI_PORT: u16 = 9;
/// Datagrams [`Servers::datagrams`] keeps (the latest).
pub const MAX_RECORDED_DATAGRAMS: usize = 4096;

/// One datagram a UDP server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The server's port ([`UDP_ECHO_PORT`] or [`UDP_WHOAMI_PORT`]).
    pub port: u16,
    /// Who sent it.
    pub source: SocketAddr,
    /// What it carried.
    pub payload: Vec<u8>,
}

/// What the UDP servers received: the latest datagrams and how many in all.
#[derive(Debug, Default)]
struct UdpRecord {
    latest: VecDeque<Datagram>,
    total: u64,
}

/// Size of the chunks `/bytes/N` is streamed in.
const CHUNK: usize = 64 * 1024;
const PATTERN: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n";

/// The body `GET /bytes/N` returns: a repeating 64-byte pattern, `n` bytes long.
pub fn bytes_body(n: usize) -> Vec<u8> {
    PATTERN.iter().copied().cycle().take(n).collect()
}

/// Accepted connections per source IP.
pub type SeenMap = Arc<Mutex<HashMap<IpAddr, u64>>>;

/// The running target servers; stopped on drop.
pub struct Servers {
    runtime: Option<Runtime>,
    seen: SeenMap,
    udp: Arc<Mutex<UdpRecord>>,
    target: Ipv4Addr,
}

impl Servers {
    /// A snapshot of how many connections each source IP opened (all ports together).
    pub fn seen(&self) -> HashMap<IpAddr, u64> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The live shared counter map.
    pub fn seen_handle(&self) -> SeenMap {
        self.seen.clone()
    }

    /// Connections seen from `ip` so far.
    pub fn seen_from(&self, ip: impl Into<IpAddr>) -> u64 {
        self.seen().get(&ip.into()).copied().unwrap_or(0)
    }

    /// Forgets all counts.
    pub fn reset_seen(&self) {
        self.seen.lock().expect("seen lock").clear();
    }

    /// The latest datagrams the UDP servers received (oldest first).
    pub fn datagrams(&self) -> Vec<Datagram> {
        let record = self.udp.lock().expect("udp record lock");
        record.latest.iter().cloned().collect()
    }

    /// Whether a UDP server received a datagram carrying exactly `payload`.
    pub fn received(&self, payload: &[u8]) -> bool {
        let record = self.udp.lock().expect("udp record lock");
        record.latest.iter().any(|d| d.payload == payload)
    }

    /// Datagrams the UDP servers received in all.
    pub fn datagram_count(&self) -> u64 {
        self.udp.lock().expect("udp record lock").total
    }

    /// `198.19.0.1:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.target), port)
    }

    /// `[2001:db8:ffff::1]:port`.
    pub fn addr6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(TARGET6), port)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Does not block, so it is fine inside the test's async context too.
            rt.shutdown_background();
        }
    }
}

impl Lab {
    /// Starts the target servers inside the internet namespace (see the module docs).
    pub async fn start_servers(&self) -> Servers {
        self.start_servers_blocking()
    }

    /// [`Lab::start_servers`] for synchronous tests.
    pub fn start_servers_blocking(&self) -> Servers {
        let ports = [HTTP_PORT, ECHO_PORT, WHOAMI_PORT, SILENT_PORT];
        // One v4 and one v6-only listener per port, same handler.
        let listeners: Vec<(u16, std::net::TcpListener)> = self.in_inet(|| {
            ports
                .iter()
                .flat_map(|&port| {
                    [
                        (port, listen_v4(port)),
                        (
                            port,
                            listen_v6_only(Ipv6Addr::UNSPECIFIED, port)
                                .unwrap_or_else(|e| panic!("bind server port [::]:{port}: {e}")),
                        ),
                    ]
                })
                .collect()
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lab-servers")
            .enable_all()
            .build()
            .expect("server runtime");
        let seen = SeenMap::default();
        for (port, listener) in listeners {
            let seen = seen.clone();
            runtime.spawn(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                serve(port, listener, seen).await;
            });
        }
        let udp_ports = [UDP_ECHO_PORT, UDP_WHOAMI_PORT];
        let target = self.target();
        let sockets: Vec<(u16, std::net::UdpSocket)> = self.in_inet(|| {
            udp_ports
                .iter()
                .flat_map(|&port| [IpAddr::V4(target), IpAddr::V6(TARGET6)].map(|ip| (ip, port)))
                .map(|(ip, port)| {
                    let s = std::net::UdpSocket::bind((ip, port))
                        .unwrap_or_else(|e| panic!("bind UDP server {ip} port {port}: {e}"));
                    s.set_nonblocking(true).expect("nonblocking UDP socket");
                    (port, s)
                })
                .collect()
        });
        let udp = Arc::new(Mutex::new(UdpRecord::default()));
        for (port, socket) in sockets {
            let udp = udp.clone();
            runtime.spawn(async move {
                let socket = UdpSocket::from_std(socket).expect("tokio UDP socket");
                serve_udp(port, socket, udp).await;
            });
        }
        Servers {
            runtime: Some(runtime),
            seen,
            udp,
            target,
        }
    }
}

/// A nonblocking TCP listener on `0.0.0.0:port`, in the calling thread's namespace.
fn listen_v4(port: u16) -> std::net::TcpListener {
    let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .unwrap_or_else(|e| panic!("bind server port {port}: {e}"));
    l.set_nonblocking(true).expect("nonblocking listener");
    l
}

/// A nonblocking TCP listener on `[ip]:port` with `IPV6_V6ONLY` (so that it coexists with a
/// v4 listener on the same port), in the calling thread's namespace.
pub(crate) fn listen_v6_only(ip: Ipv6Addr, port: u16) -> std::io::Result<std::net::TcpListener> {
    let addr = SocketAddr::new(IpAddr::V6(ip), port);
    let sock = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_only_v6(true)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

async fn serve(port: u16, listener: TcpListener, seen: SeenMap) {
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        *seen
            .lock()
            .expect("seen lock")
            .entry(peer.ip())
            .or_default() += 1;
        tokio::spawn(async move {
            // Errors are the client's business (resets, early closes): just drop the socket.
            let _ = match port {
                HTTP_PORT => http(sock, peer).await,
                ECHO_PORT => echo(sock).await,
                WHOAMI_PORT => whoami(sock, peer).await,
                _ => silent(sock).await,
            };
        });
    }
}

async fn serve_udp(port: u16, socket: UdpSocket, record: Arc<Mutex<UdpRecord>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, source)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        {
            let mut record = record.lock().expect("udp record lock");
            if record.latest.len() == MAX_RECORDED_DATAGRAMS {
                record.latest.pop_front();
            }
            record.latest.push_back(Datagram {
                port,
                source,
                payload: buf[..n].to_vec(),
            });
            record.total += 1;
        }
        // A full send buffer loses the answer, as the network may.
        let _ = match port {
            UDP_WHOAMI_PORT => {
                let answer = format!("{}\n", source.ip());
                socket.try_send_to(answer.as_bytes(), source)
            }
            _ => socket.try_send_to(&buf[..n], source),
        };
    }
}

async fn echo(mut sock: TcpStream) -> std::io::Result<()> {
    let (mut r, mut w) = sock.split();
    tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await
}

async fn whoami(mut sock: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    sock.write_all(format!("{}\n", peer.ip()).as_bytes())
        .await?;
    sock.shutdown().await
}

async fn silent(mut sock: TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    while sock.read(&mut buf).await? > 0 {}
    Ok(())
}

async fn http(mut sock: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    // Read the request head; what follows it (a POST body's start) stays in `rest`.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let rest = head.split_off(end);
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let with_body = method != "HEAD";
    if method == "POST" && path == "/count" {
        let n = read_body(&mut sock, &head, rest).await?;
        return respond(&mut sock, "200 OK", n.to_string().as_bytes(), true).await;
    }
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut sock,
            "405 Method Not Allowed",
            b"GET only\n",
            with_body,
        )
        .await;
    }
    match path {
        "/" => return respond(&mut sock, "200 OK", b"netmix lab target\n", with_body).await,
        "/ip" => {
            let ip = peer.ip().to_string();
            return respond(&mut sock, "200 OK", ip.as_bytes(), with_body).await;
        }
        "/local" => {
            let ip = sock.local_addr()?.ip().to_string();
            return respond(&mut sock, "200 OK", ip.as_bytes(), with_body).await;
        }
        "/headers" => return respond(&mut sock, "200 OK", head.as_bytes(), with_body).await,
        _ => {}
    }
    if let Some(n) = path
        .strip_prefix("/chunked/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        sock.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .await?;
        let body = bytes_body(n);
        for piece in body.chunks(10_000) {
            sock.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await?;
            sock.write_all(piece).await?;
            sock.write_all(b"\r\n").await?;
        }
        sock.write_all(b"0\r\n\r\n").await?;
        return sock.shutdown().await;
    }
    let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return respond(&mut sock, "404 Not Found", b"not found\n", with_body).await;
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\
         Connection: close\r\n\r\n"
    );
    sock.write_all(header.as_bytes()).await?;
    if with_body {
        let chunk = bytes_body(CHUNK); // CHUNK is a multiple of the pattern length
        let mut left = n;
        while left > 0 {
            let len = left.min(CHUNK as u64) as usize;
            sock.write_all(&chunk[..len]).await?;
            left -= len as u64;
        }
    }
    sock.shutdown().await
}

/// Reads a request body framed by Content-Length or chunked transfer coding (the head is
/// `head`, the body's first bytes `rest`) and returns its length; checks that every byte is
/// [`bytes_body`]'s pattern in order, answering 0 for a body that is not.
async fn read_body(sock: &mut TcpStream, head: &str, mut rest: Vec<u8>) -> std::io::Result<usize> {
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                let want = rest.len() + 1;
                fill(sock, &mut rest, want).await?;
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            rest.drain(..line_end + 2);
            fill(sock, &mut rest, size + 2).await?;
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
            if size == 0 {
                break body;
            }
        }
    } else {
        let n: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        fill(sock, &mut rest, n).await?;
        rest.truncate(n);
        rest
    };
    Ok(if body == bytes_body(body.len()) {
        body.len()
    } else {
        0
    })
}

/// Reads from `sock` until `rest` holds `want` bytes.
async fn fill(sock: &mut TcpStream, rest: &mut Vec<u8>, want: usize) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    while rest.len() < want {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        rest.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

async fn respond(
    sock: &mut TcpStream,
    status: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(header.as_bytes()).await?;
    if with_body {
        sock.write_all(body).await?;
    }
    sock.shutdown().await
}
