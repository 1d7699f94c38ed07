//! An authoritative DNS server in the internet namespace that logs every query.
//!
//! [`Lab::start_dns`] binds UDP and TCP port 53 on [`DNS_SERVER`] 198.19.0.53 and
//! [`DNS_SERVER6`] 2001:db8:ffff::53 (both on the internet namespace's `lo`, put there by
//! [`Lab::new`]), and answers from a small zone of `(name, address)` pairs:
//!
//! - `A` / `AAAA`: every v4 / v6 address the zone has for the name, in zone order, with the
//!   server's TTL ([`DEFAULT_DNS_TTL`] 60 s unless started with [`Lab::start_dns_with_ttl`]);
//!   `ANY` gets both;
//! - a name the zone has, but not with that type: NOERROR with no answers;
//! - a name the zone does not have: NXDOMAIN (no SOA: negative answers carry no TTL);
//! - always authoritative (AA), never recursive (no RA); RD and CD are copied; a query with
//!   EDNS gets an OPT record back (payload 1232); an answer too long for the UDP payload
//!   size is sent truncated (TC), as the client then retries over TCP;
//! - a class other than IN (or ANY): REFUSED; an opcode other than QUERY: NOTIMP; not
//!   exactly one question, or a message that does not parse: FORMERR (if it has an id).
//!
//! TCP messages carry the usual 2-byte length prefix; a connection may carry any number of
//! queries, until the client closes it.
//!
//! Every question that arrives is logged ([`DnsServer::queries`]) with its name, type,
//! source address and arrival time, so a test can tell through which link a resolver asked:
//! `lab.link_for_source(q.source.ip())`.
//!
//! Like the target servers, it runs on a small tokio runtime of its own, so tests may block
//! freely; it stops when the [`DnsServer`] is dropped. One per lab at a time (the addresses
//! and port are fixed); a new one may be started right after the old one is dropped.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Runtime;

use crate::lab::Lab;
use crate::servers::listen_v6_only;

/// The DNS server's IPv4 address, on the internet namespace's `lo`.
pub const DNS_SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 53);
/// The DNS server's IPv6 address, on the internet namespace's `lo`.
pub const DNS_SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x53);
/// The DNS server's port (UDP and TCP).
pub const DNS_PORT: u16 = 53;
/// The TTL of every answer unless the server was started with another one, in seconds.
pub const DEFAULT_DNS_TTL: u32 = 60;

/// The UDP payload size the server announces in its OPT record.
const EDNS_PAYLOAD: u16 = 1232;

/// One question the DNS server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsQuery {
    /// The name asked about, lower-cased, without the trailing dot (`"www.lab"`).
    pub name: String,
    /// The type asked for: `"A"`, `"AAAA"`, `"MX"`, ….
    pub qtype: String,
    /// Who asked (address and port as the server saw them).
    pub source: SocketAddr,
    /// Which of the server's addresses was asked (`198.19.0.53:53` or `[2001:db8:ffff::53]:53`).
    pub server: SocketAddr,
    /// Whether it came over TCP (else UDP).
    pub tcp: bool,
    /// When it arrived.
    pub at: Instant,
}

/// The zone and the query log, shared by the server's tasks and the [`DnsServer`] handle.
#[derive(Debug)]
struct Shared {
    zone: Mutex<Zone>,
    log: Mutex<Vec<DnsQuery>>,
}

#[derive(Debug)]
struct Zone {
    /// `(normalised name, address)`, in the order given.
    records: Vec<(String, IpAddr)>,
    ttl: u32,
}

/// The running DNS server; stopped on drop.
pub struct DnsServer {
    runtime: Option<Runtime>,
    shared: Arc<Shared>,
}

impl DnsServer {
    /// Every question received so far (since the last [`DnsServer::reset`]), oldest first.
    pub fn queries(&self) -> Vec<DnsQuery> {
        self.shared.log.lock().expect("dns log lock").clone()
    }

    /// Forgets the logged questions.
    pub fn reset(&self) {
        self.shared.log.lock().expect("dns log lock").clear();
    }

    /// Replaces the zone (for questions from now on).
    pub fn set_zone(&self, zone: &[(&str, IpAddr)]) {
        self.shared.zone.lock().expect("dns zone lock").records = normalise_zone(zone);
    }

    /// Changes the TTL of the answers (for questions from now on), in seconds.
    pub fn set_ttl(&self, ttl: u32) {
        self.shared.zone.lock().expect("dns zone lock").ttl = ttl;
    }

    /// `198.19.0.53:53`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(DNS_SERVER), DNS_PORT)
    }

    /// `[2001:db8:ffff::53]:53`.
    pub fn addr6(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(DNS_SERVER6), DNS_PORT)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Does not block, so it is fine inside the test's async context too.
            rt.shutdown_background();
        }
    }
}

impl Lab {
    /// Starts the DNS server in the internet namespace with answers from `zone` (a name may
    /// appear several times, with v4 and v6 addresses) and TTL [`DEFAULT_DNS_TTL`]; see the
    /// module docs. Usable from synchronous and async tests alike.
    pub fn start_dns(&self, zone: &[(&str, IpAddr)]) -> DnsServer {
        self.start_dns_with_ttl(zone, DEFAULT_DNS_TTL)
    }

    /// [`Lab::start_dns`] with answers of TTL `ttl` seconds.
    pub fn start_dns_with_ttl(&self, zone: &[(&str, IpAddr)], ttl: u32) -> DnsServer {
        let addrs = [IpAddr::V4(DNS_SERVER), IpAddr::V6(DNS_SERVER6)];
        let (udp, tcp) = self.in_inet(|| {
            let udp = addrs.map(|ip| retry_in_use(|| bind_udp(SocketAddr::new(ip, DNS_PORT))));
            let tcp = addrs.map(|ip| retry_in_use(|| bind_tcp(SocketAddr::new(ip, DNS_PORT))));
            (udp, tcp)
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lab-dns")
            .enable_all()
            .build()
            .expect("DNS server runtime");
        let shared = Arc::new(Shared {
            zone: Mutex::new(Zone {
                records: normalise_zone(zone),
                ttl,
            }),
            log: Mutex::new(Vec::new()),
        });
        for socket in udp {
            let shared = shared.clone();
            runtime.spawn(async move {
                let socket = UdpSocket::from_std(socket).expect("tokio UDP socket");
                serve_udp(socket, shared).await;
            });
        }
        for listener in tcp {
            let shared = shared.clone();
            runtime.spawn(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                serve_tcp(listener, shared).await;
            });
        }
        DnsServer {
            runtime: Some(runtime),
            shared,
        }
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    match addr.ip() {
        IpAddr::V6(ip) => listen_v6_only(ip, addr.port()),
        IpAddr::V4(_) => {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        }
    }
}

/// Binds with `bind`, retrying for a while when the address is still in use: a server
/// dropped just before may not have closed its sockets yet (its runtime stops in the
/// background).
fn retry_in_use<T>(bind: impl Fn() -> io::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match bind() {
            Ok(v) => return v,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("bind the lab DNS server (port {DNS_PORT}): {e}"),
        }
    }
}

fn normalise_zone(zone: &[(&str, IpAddr)]) -> Vec<(String, IpAddr)> {
    zone.iter()
        .map(|(name, ip)| {
            let ascii = Name::from_utf8(name)
                .map(|n| n.to_ascii())
                .unwrap_or_else(|_| (*name).to_owned());
            (normalise_name(&ascii), *ip)
        })
        .collect()
}

/// Lower case, no trailing dot.
fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, source)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(answer) = respond(&shared, &buf[..n], source, local, false) {
            // A full send buffer loses the answer, as the network may.
            let _ = socket.try_send_to(&answer, source);
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // Errors are the client's business (resets, early closes).
            let _ = serve_tcp_connection(sock, peer, shared).await;
        });
    }
}

/// Answers length-prefixed queries on one TCP connection until the client closes it.
async fn serve_tcp_connection(
    mut sock: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let local = sock.local_addr()?;
    loop {
        let mut len = [0u8; 2];
        match sock.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        sock.read_exact(&mut msg).await?;
        let Some(answer) = respond(&shared, &msg, peer, local, true) else {
            continue;
        };
        let Ok(n) = u16::try_from(answer.len()) else {
            continue;
        };
        let mut out = Vec::with_capacity(answer.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&answer);
        sock.write_all(&out).await?;
    }
}

/// The wire answer to the wire query `request` (logging its questions), or `None` when
/// there is nothing to answer (a response, or not even a header).
fn respond(
    shared: &Shared,
    request: &[u8],
    source: SocketAddr,
    server: SocketAddr,
    tcp: bool,
) -> Option<Vec<u8>> {
    let at = Instant::now();
    let req = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) => {
            let id = u16::from_be_bytes([*request.first()?, *request.get(1)?]);
            // QR set: a response that does not parse; never answer responses.
            if request.get(2)? & 0x80 != 0 {
                return None;
            }
            let msg = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return msg.to_vec().ok();
        }
    };
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    {
        let mut log = shared.log.lock().expect("dns log lock");
        for q in &req.queries {
            log.push(DnsQuery {
                name: normalise_name(&q.name().to_ascii()),
                qtype: q.query_type().to_string(),
                source,
                server,
                tcp,
                at,
            });
        }
    }

    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.edns = Some(edns);
    }
    resp.metadata.response_code = if req.metadata.op_code != OpCode::Query {
        ResponseCode::NotImp
    } else if req.queries.len() != 1 {
        ResponseCode::FormErr
    } else if !matches!(req.queries[0].query_class(), DNSClass::IN | DNSClass::ANY) {
        ResponseCode::Refused
    } else {
        let q = &req.queries[0];
        let name = normalise_name(&q.name().to_ascii());
        let zone = shared.zone.lock().expect("dns zone lock");
        let mut known = false;
        for (_, ip) in zone.records.iter().filter(|(n, _)| *n == name) {
            known = true;
            let rdata = match (q.query_type(), ip) {
                (RecordType::A | RecordType::ANY, IpAddr::V4(v4)) => RData::A(A(*v4)),
                (RecordType::AAAA | RecordType::ANY, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            resp.add_answer(Record::from_rdata(q.name().clone(), zone.ttl, rdata));
        }
        if known {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        }
    };
    let bytes = resp.to_vec().ok()?;
    if !tcp && bytes.len() > usize::from(req.max_payload()) {
        return resp.truncate().to_vec().ok();
    }
    Some(bytes)
}
