//! The performance suite (issue 8), netmix against the direct path in the same run. Needs root
//! (it builds the network-namespace lab) and a release build:
//!
//! ```sh
//! cargo build --release --workspace
//! NETMIX_PROFILE=release cargo bench -p netmix-integration --bench perf [-- a b c d e f g]
//! ```
//!
//! - (a) single-stream throughput: 1 GiB over an unshaped link;
//! - (b) connection set-up rate: 2,000 short connections, 16 at a time;
//! - (c) added latency per connection (connect + one echo round trip), p50 and p99;
//! - (d) memory per idle relayed connection at 10,000 connections (netmix's RSS), and errors;
//! - (e) aggregate goodput of 24 × 8 MiB downloads over 20/40/80 Mbit/s links, per strategy,
//!   against the links' sum (nominal, and measured link by link in the same run);
//! - (f) HTTP CONNECT against SOCKS5 on the same port: set-up rate and 1 GiB throughput.
//! - (g) UDP datagrams per second through a SOCKS5 UDP association: 100,000 echo round trips
//!   of 100-byte datagrams, 32 in flight, median of 3 rounds, against direct and a bare UDP
//!   forwarder, plus the round-trip time of one datagram at a time (p50, p99 of 2,000).
//!
//! "Direct" is the same client opening the same connection itself, bound to the link. The
//! client runs on a tokio runtime whose threads all live in the lab's client namespace; the
//! servers run on their own runtime in the internet namespace; netmix is its own process.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netmix_integration::engine::rss_kib;
use netmix_integration::{
    ECHO_PORT, HTTP_PORT, Lab, LinkSpec, TARGET, Target, WHOAMI_PORT, socks5_connect, spawn_engine,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const TOKEN: &str = "perf-bench-token-0123456789abcdef";

/// A client runtime whose threads are all inside `ns`.
fn client_runtime(ns: &str) -> tokio::runtime::Runtime {
    let path = format!("/var/run/netns/{ns}");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        })
        .build()
        .expect("client runtime")
}

/// Raises this process's open-files limit (10,000 relayed connections need 20,000 here).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.max(65_536);
        if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// How a client reaches the target.
#[derive(Clone, Copy)]
enum Path {
    /// Its own socket bound to lab link `k`.
    Direct(usize, IpAddr),
    /// Through netmix's SOCKS port.
    Netmix(SocketAddr),
    /// Through the bare forwarder at this address (it always goes to the who-am-I port).
    Forward(SocketAddr),
    /// Through netmix's port, as an HTTP CONNECT tunnel.
    HttpConnect(SocketAddr),
}

async fn open(path: Path, port: u16) -> io::Result<TcpStream> {
    let dest = SocketAddr::new(TARGET.into(), port);
    match path {
        Path::Direct(k, source) => {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            sock.bind_device(Some(format!("wan{k}").as_bytes()))?;
            sock.bind(&SocketAddr::new(source, 0).into())?;
            sock.set_nonblocking(true)?;
            sock.set_tcp_nodelay(true)?;
            let s = tokio::net::TcpSocket::from_std_stream(sock.into());
            s.connect(dest).await
        }
        Path::Forward(at) => {
            let s = TcpStream::connect(at).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
        Path::HttpConnect(proxy) => {
            let mut s = TcpStream::connect(proxy).await?;
            s.set_nodelay(true)?;
            s.write_all(format!("CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n\r\n").as_bytes())
                .await?;
            // The answer is exactly "HTTP/1.1 200 Connection established\r\n\r\n" (39 bytes);
            // read it byte by byte so nothing after it is taken.
            let mut head = Vec::with_capacity(64);
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if s.read(&mut b).await? == 0 || head.len() > 1024 {
                    return Err(io::Error::other("CONNECT answer cut short"));
                }
                head.push(b[0]);
            }
            if !head.starts_with(b"HTTP/1.1 200") {
                return Err(io::Error::other(
                    String::from_utf8_lossy(&head).into_owned(),
                ));
            }
            Ok(s)
        }
        Path::Netmix(socks) => {
            let s = TcpStream::connect(socks).await?;
            s.set_nodelay(true)?;
            let r = socks5_connect(s, Target::Ip(dest), None).await?;
            if r.code != 0 {
                return Err(io::Error::other(format!("SOCKS reply {}", r.code)));
            }
            Ok(r.stream)
        }
    }
}

/// GET /bytes/n and read the body; returns the body size.
async fn download(path: Path, n: u64) -> io::Result<u64> {
    let mut s = open(path, HTTP_PORT).await?;
    s.write_all(format!("GET /bytes/{n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        total += k as u64;
    }
    Ok(total.saturating_sub(100)) // the response head is ~100 bytes
}

fn netmix_config(strategy: &str, include: &str, extra: &str) -> String {
    format!(
        "strategy = \"{strategy}\"\n{extra}\n[interfaces]\ninclude = [{include}]\n\n\
         [timeouts]\nidle_secs = 0\n\n[socks]\nmax_connections = 20000\n"
    )
}

fn pct(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    raise_fd_limit();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |x: &str| args.is_empty() || args.iter().any(|a| a == x);
    println!(
        "netmix performance suite — {}",
        netmix_integration::netmix_bin().display()
    );
    if ["a", "b", "c", "d", "f", "g"].iter().any(|x| wants(x)) {
        unshaped(&wants);
    }
    if wants("e") {
        aggregate();
    }
}

/// (a)–(d), (f) and (g) on one unshaped link.
fn unshaped(wants: &dyn Fn(&str) -> bool) {
    let lab = Lab::with_links(1);
    let _servers = lab.start_servers_blocking();
    let engine = spawn_engine(&lab, &netmix_config("round-robin", "\"wan0\"", ""));
    let rt = client_runtime(lab.client_ns());
    let direct = Path::Direct(0, lab.link(0).client_addr.into());
    let via = Path::Netmix(engine.socks_addr());
    let pid = engine.pid();
    let [a, b, c, d, f, g] = ["a", "b", "c", "d", "f", "g"].map(wants);
    let connect = Path::HttpConnect(engine.socks_addr());
    let socks = engine.socks_addr();
    let (_forwarder_rt, forwarder) =
        spawn_forwarder(lab.client_ns(), lab.link(0).client_addr.into());
    let forward = Path::Forward(forwarder);
    let (_udp_forwarder_rt, udp_forwarder) =
        spawn_udp_forwarder(lab.client_ns(), lab.link(0).client_addr.into());
    rt.block_on(async move {
        tokio::spawn(async move {
            if a {
                bench_a(direct, via, pid).await;
            }
            if b {
                bench_b(direct, via, forward, pid).await;
            }
            if c {
                bench_c(direct, via).await;
            }
            if d {
                bench_d(via, pid).await;
            }
            if f {
                bench_f(via, connect).await;
            }
            if g {
                bench_g(direct, socks, udp_forwarder, pid).await;
            }
        })
        .await
        .unwrap();
    });
    // Anything the engine had to complain about, for the record.
    let logs = engine.logs();
    for line in logs
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("failed"))
        .take(5)
    {
        println!("    engine: {line}");
    }
    drop(engine);
}

async fn bench_a(direct: Path, via: Path, pid: u32) {
    const N: u64 = 1 << 30;
    // One 1 GiB stream takes well under a second here, so single runs swing with whatever else
    // the two cores are doing: several rounds, alternating which path goes first, and medians.
    let rounds: usize = std::env::var("NETMIX_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11);
    let mut rates = [Vec::new(), Vec::new()];
    let mut netmix_cpu = Duration::ZERO;
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let path = [direct, via][i];
            let start = Instant::now();
            let cpu = netmix_integration::process_cpu(pid);
            let got = download(path, N).await.expect("download");
            assert!(got >= N, "short download: {got}");
            rates[i].push(N as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9);
            if i == 1 {
                netmix_cpu += netmix_integration::process_cpu(pid) - cpu;
            }
        }
    }
    let each: Vec<String> = (0..rounds)
        .map(|r| format!("{:.0}%", rates[1][r] / rates[0][r] * 100.0))
        .collect();
    let [d, n] = [pct(&mut rates[0], 0.5), pct(&mut rates[1], 0.5)];
    println!(
        "(a) single stream, 1 GiB, median of {rounds}: direct {d:.2} Gbit/s, netmix {n:.2} Gbit/s, \
         ratio {:.0}% (target ≥ 90%); rounds {}; netmix CPU {:.2} s per GiB",
        n / d * 100.0,
        each.join(" "),
        netmix_cpu.as_secs_f64() / rounds as f64
    );
}

/// The least any proxy must do: a bare TCP forwarder (no SOCKS, no choice, no accounting)
/// with its own two-thread runtime in the client namespace, accepting on loopback and
/// connecting through lab link 0 to the who-am-I port, `copy_bidirectional` in between. Its
/// set-up rate is the ceiling for a one-hop proxy on this machine.
fn spawn_forwarder(ns: &str, source: IpAddr) -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = client_runtime(ns);
    let listener = rt
        .block_on(async { tokio::spawn(tokio::net::TcpListener::bind("127.0.0.1:0")).await })
        .unwrap()
        .expect("forwarder listens");
    let at = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let Ok(mut upstream) = open(Path::Direct(0, source), WHOAMI_PORT).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (rt, at)
}

async fn bench_b(direct: Path, via: Path, forward: Path, pid: u32) {
    // NETMIX_BENCH_CONNS makes it longer (for profiling); the figure to report uses 2,000.
    let conns: usize = std::env::var("NETMIX_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut rates = [0.0; 3];
    let mut netmix_cpu = Duration::ZERO;
    for (i, path) in [direct, via, forward].into_iter().enumerate() {
        let cpu = netmix_integration::process_cpu(pid);
        rates[i] = setup_rate(path, conns).await;
        if i == 1 {
            netmix_cpu = netmix_integration::process_cpu(pid) - cpu;
        }
    }
    println!(
        "(b) set-up rate, {conns} conns, 16 at a time: direct {:.0}/s, netmix {:.0}/s, ratio {:.0}% (target ≥ 70%); \
         netmix CPU {:.0} µs per connection; bare forwarder {:.0}/s = {:.0}% of direct (netmix = {:.0}% of it)",
        rates[0],
        rates[1],
        rates[1] / rates[0] * 100.0,
        netmix_cpu.as_secs_f64() * 1e6 / conns as f64,
        rates[2],
        rates[2] / rates[0] * 100.0,
        rates[1] / rates[2] * 100.0,
    );
}

/// Opens `conns` short who-am-I connections through `path`, 16 at a time, each read to its
/// end; returns connections per second (panics on any error).
async fn setup_rate(path: Path, conns: usize) -> f64 {
    const PARALLEL: usize = 16;
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let ok = async {
                let mut s = open(path, WHOAMI_PORT).await?;
                let mut answer = Vec::new();
                s.read_to_end(&mut answer).await?;
                Ok::<_, io::Error>(!answer.is_empty())
            }
            .await;
            if !matches!(ok, Ok(true)) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "connection errors");
    conns as f64 / start.elapsed().as_secs_f64()
}

/// (f) HTTP CONNECT against SOCKS5 through the same netmix port: set-up rate and 1 GiB
/// single-stream throughput, rounds alternating which goes first, medians.
async fn bench_f(socks5: Path, connect: Path) {
    const N: u64 = 1 << 30;
    let rounds: usize = std::env::var("NETMIX_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut setup = [Vec::new(), Vec::new()];
    let mut stream = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let path = [socks5, connect][i];
            setup[i].push(setup_rate(path, 1000).await);
            let start = Instant::now();
            let got = download(path, N).await.expect("download");
            assert!(got >= N, "short download: {got}");
            stream[i].push(N as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9);
        }
    }
    let [s5, hc] = [pct(&mut setup[0], 0.5), pct(&mut setup[1], 0.5)];
    let [t5, tc] = [pct(&mut stream[0], 0.5), pct(&mut stream[1], 0.5)];
    println!(
        "(f) HTTP CONNECT vs SOCKS5, median of {rounds}: set-up (1,000 conns, 16 at a time) SOCKS5 {s5:.0}/s, \
         CONNECT {hc:.0}/s = {:.0}%; 1 GiB stream SOCKS5 {t5:.2} Gbit/s, CONNECT {tc:.2} Gbit/s = {:.0}% (target ≥ 95% each)",
        hc / s5 * 100.0,
        tc / t5 * 100.0
    );
}

async fn bench_c(direct: Path, via: Path) {
    const SAMPLES: usize = 1000;
    let mut results = Vec::new();
    for path in [direct, via] {
        let mut ms = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let start = Instant::now();
            let mut s = open(path, ECHO_PORT).await.expect("connect");
            s.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            s.read_exact(&mut back).await.unwrap();
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        results.push((pct(&mut ms, 0.5), pct(&mut ms, 0.99)));
    }
    println!(
        "(c) connect + first echo: direct p50 {:.3} ms p99 {:.3} ms; netmix p50 {:.3} ms p99 {:.3} ms; \
         added p50 {:.3} ms (target < 0.3 ms), p99 {:.3} ms",
        results[0].0,
        results[0].1,
        results[1].0,
        results[1].1,
        results[1].0 - results[0].0,
        results[1].1 - results[0].1
    );
}

async fn bench_d(via: Path, pid: u32) {
    const WANTED: usize = 10_000;
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((0, 0));
    // netmix needs 2 descriptors per relayed connection plus 256 of its own (it lowers its
    // connection cap to fit: see socks::listener), and so does this process (the client's and
    // the echo server's ends). Where the limit is too low for 10,000 (and cannot be raised),
    // measure as many as fit and say so.
    let fit = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(512)
        / 2;
    let conns: usize = match std::env::var("NETMIX_BENCH_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => n,
        None if fit < WANTED => {
            println!(
                "    (d) the open-files limit here is {soft} (hard {hard}; raising it needs \
                 CAP_SYS_RESOURCE): {WANTED} relayed connections need > {} — measuring {fit}",
                2 * WANTED + 256
            );
            fit
        }
        None => WANTED,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let gate = Arc::new(Semaphore::new(64));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let r = async {
                let mut s = open(via, ECHO_PORT).await?;
                s.write_all(b"x").await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                Ok::<_, io::Error>(s)
            };
            let r = match tokio::time::timeout(Duration::from_secs(10), r).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::other("timed out")),
            };
            drop(permit);
            match r {
                Ok(s) => Some(s),
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        println!("    (d) connection error: {e}");
                    }
                    None
                }
            }
        }));
    }
    let mut held = Vec::with_capacity(conns);
    for t in tasks {
        if let Some(s) = t.await.unwrap() {
            held.push(s);
        }
    }
    let opened = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / held.len().max(1) as f64;
    println!(
        "(d) {} idle relayed connections open ({} errors, opened in {:.1} s): netmix RSS {} → {} KiB, \
         {:.1} KiB per connection (target ≤ 32 KiB)",
        held.len(),
        errors.load(Ordering::Relaxed),
        opened.as_secs_f64(),
        before,
        after,
        per
    );
    drop(held);
}

/// The least a UDP relay must do: a bare forwarder (no SOCKS header, no checks, no choice,
/// no accounting) with its own two-thread runtime in the client namespace, taking datagrams on
/// loopback and sending them through lab link 0 to the UDP echo port, and the answers back to
/// whoever sent last. Its rate is the ceiling for a user-space UDP relay on this machine.
fn spawn_udp_forwarder(ns: &str, source: IpAddr) -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = client_runtime(ns);
    let (relay, out) = rt
        .block_on(async move {
            tokio::spawn(async move {
                let relay = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let (out, _, _) = udp_path(Path::Direct(0, source)).await;
                (relay, out)
            })
            .await
        })
        .unwrap();
    let at = relay.local_addr().unwrap();
    rt.spawn(async move {
        let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        let mut client = None;
        loop {
            tokio::select! {
                Ok((n, from)) = relay.recv_from(&mut up) => {
                    client = Some(from);
                    let _ = out.send(&up[..n]).await;
                }
                Ok(n) = out.recv(&mut down) => {
                    if let Some(c) = client {
                        let _ = relay.send_to(&down[..n], c).await;
                    }
                }
            }
        }
    });
    (rt, at)
}

/// A UDP socket for the (g) runs, connected to the echo server (direct, bound to the link),
/// to the bare forwarder, or to the relay of a fresh association (netmix, whose control
/// connection comes back too).
/// Returns the socket and the header to put in front of each payload.
async fn udp_path(path: Path) -> (tokio::net::UdpSocket, Vec<u8>, Option<TcpStream>) {
    let echo = SocketAddr::new(TARGET.into(), netmix_integration::UDP_ECHO_PORT);
    match path {
        Path::Direct(k, source) => {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                .expect("UDP socket");
            sock.bind_device(Some(format!("wan{k}").as_bytes()))
                .expect("bind to the link");
            sock.bind(&SocketAddr::new(source, 0).into()).expect("bind");
            sock.set_nonblocking(true).unwrap();
            let s = tokio::net::UdpSocket::from_std(sock.into()).unwrap();
            s.connect(echo).await.unwrap();
            (s, Vec::new(), None)
        }
        Path::Forward(at) => {
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.connect(at).await.unwrap();
            (s, Vec::new(), None)
        }
        Path::HttpConnect(_) => panic!("HTTP has no UDP"),
        Path::Netmix(socks) => {
            let control = TcpStream::connect(socks).await.expect("SOCKS port");
            let any = SocketAddr::from(([0, 0, 0, 0], 0));
            let r = netmix_integration::socks5_command(
                control,
                netmix_integration::socks::CMD_UDP_ASSOCIATE,
                Target::Ip(any),
            )
            .await
            .expect("UDP ASSOCIATE");
            assert_eq!(r.code, 0, "UDP ASSOCIATE succeeded");
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.connect(r.bound).await.unwrap();
            let header = netmix_integration::udp_wrap(0, &Target::Ip(echo), b"");
            (s, header, Some(r.stream))
        }
    }
}

/// Echo round trips on `sock`: `total` datagrams of `header` + `payload`, `window` in flight
/// (a datagram unanswered for 50 ms counts as lost and is replaced), within `budget`.
/// Returns (answered, lost, seconds).
async fn udp_round_trips(
    sock: &tokio::net::UdpSocket,
    datagram: &[u8],
    total: usize,
    window: usize,
    budget: Duration,
) -> (usize, usize, f64) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sent, mut got, mut lost, mut in_flight) = (0, 0, 0, 0);
    let start = Instant::now();
    while in_flight < window && sent < total {
        sock.send(datagram).await.expect("send");
        sent += 1;
        in_flight += 1;
    }
    while got + lost < total && start.elapsed() < budget {
        match tokio::time::timeout(Duration::from_millis(50), sock.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                assert_eq!(n, datagram.len(), "the echo is whole");
                got += 1;
                // A late answer to a datagram already counted lost leaves no gap to refill.
                in_flight = in_flight.saturating_sub(1);
            }
            Ok(Err(e)) => panic!("UDP receive: {e}"),
            Err(_) => {
                lost += in_flight;
                in_flight = 0;
            }
        }
        while in_flight < window && sent < total {
            sock.send(datagram).await.expect("send");
            sent += 1;
            in_flight += 1;
        }
    }
    (got, lost, start.elapsed().as_secs_f64())
}

async fn bench_g(direct: Path, socks: SocketAddr, forwarder: SocketAddr, pid: u32) {
    const DATAGRAMS: usize = 100_000;
    const WINDOW: usize = 32;
    const PAYLOAD: usize = 100;
    const ROUNDS: usize = 3;
    const SAMPLES: usize = 2000;
    let paths = [direct, Path::Netmix(socks), Path::Forward(forwarder)];
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let mut lost = [0; 3];
    let mut netmix_cpu = Duration::ZERO;
    for round in 0..ROUNDS {
        // Which path goes first rotates, so a noisy moment does not always hit the same one.
        for i in (0..3).map(|i| (i + round) % 3) {
            let (sock, mut datagram, _control) = udp_path(paths[i]).await;
            datagram.extend_from_slice(&[0x5a; PAYLOAD]);
            let cpu = netmix_integration::process_cpu(pid);
            let (got, l, secs) =
                udp_round_trips(&sock, &datagram, DATAGRAMS, WINDOW, Duration::from_secs(15)).await;
            if i == 1 {
                netmix_cpu += netmix_integration::process_cpu(pid) - cpu;
            }
            rates[i].push(got as f64 / secs);
            lost[i] += l;
        }
    }
    let mut rtt = Vec::new();
    for path in &paths[..2] {
        let (sock, mut datagram, _control) = udp_path(*path).await;
        datagram.extend_from_slice(&[0x5a; PAYLOAD]);
        let mut us = Vec::with_capacity(SAMPLES);
        let mut buf = vec![0u8; 2048];
        for _ in 0..SAMPLES {
            let start = Instant::now();
            sock.send(&datagram).await.unwrap();
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await
            {
                us.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        rtt.push((pct(&mut us, 0.5), pct(&mut us, 0.99)));
    }
    let [d, n, f] = [0, 1, 2].map(|i| pct(&mut rates[i], 0.5));
    println!(
        "(g) UDP echo, {DATAGRAMS} × {PAYLOAD} B, {WINDOW} in flight, median of {ROUNDS}: direct {d:.0} datagrams/s, \
         netmix {n:.0}/s, ratio {:.0}%; bare UDP forwarder {f:.0}/s = {:.0}% of direct (netmix = {:.0}% of it); \
         lost {}/{}/{}; netmix CPU {:.1} µs per round trip; one at a time: direct p50 {:.0} µs p99 {:.0} µs, \
         netmix p50 {:.0} µs p99 {:.0} µs",
        n / d * 100.0,
        f / d * 100.0,
        n / f * 100.0,
        lost[0],
        lost[1],
        lost[2],
        netmix_cpu.as_secs_f64() * 1e6 / (ROUNDS * DATAGRAMS) as f64,
        rtt[0].0,
        rtt[0].1,
        rtt[1].0,
        rtt[1].1,
    );
}

/// (e): 24 × 8 MiB over 20/40/80 Mbit/s, per strategy, one engine (capacities learned once).
fn aggregate() {
    const FILE: u64 = 8 << 20;
    const FILES: usize = 24;
    let rates = [20u32, 40, 80];
    let lab = Lab::new(&rates.map(|r| LinkSpec::plain().rate(r)));
    let _servers = lab.start_servers_blocking();
    let token_file = std::env::temp_dir().join(format!("netmix-perf-token-{}", std::process::id()));
    std::fs::write(&token_file, TOKEN).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut extra = format!("[dashboard]\ntoken_file = \"{}\"\n", token_file.display());
    let ort = ort_library();
    if let Some(lib) = &ort {
        extra.push_str(&format!(
            "\n[strategies.onnx]\nlibrary = \"{}\"\n",
            lib.display()
        ));
    }
    let engine = spawn_engine(&lab, &netmix_config("capacity", "\"wan*\"", &extra));
    let rt = client_runtime(lab.client_ns());
    let sources: Vec<IpAddr> = (0..3).map(|k| lab.link(k).client_addr.into()).collect();
    let socks = engine.socks_addr();
    rt.block_on(async move {
        tokio::spawn(async move {
            // The links' sum, measured: each link alone, 3 parallel streams, direct.
            let mut measured = 0.0;
            for (k, src) in sources.iter().enumerate() {
                let start = Instant::now();
                let jobs: Vec<_> =
                    (0..3).map(|_| tokio::spawn(download(Path::Direct(k, *src), FILE / 2))).collect();
                let mut bytes = 0;
                for j in jobs {
                    bytes += j.await.unwrap().expect("direct download");
                }
                let mbit = bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6;
                println!("    link wan{k} ({} Mbit/s nominal): {mbit:.1} Mbit/s measured", rates[k]);
                measured += mbit;
            }
            let nominal: f64 = rates.iter().map(|&r| f64::from(r)).sum();
            // Warm-up: one batch so that netmix has seen every link's delivery rate.
            batch(Path::Netmix(socks), 6, FILE).await;
            println!(
                "(e) {FILES} × 8 MiB over 20/40/80 Mbit/s — links' sum {nominal:.0} Mbit/s nominal, \
                 {measured:.1} Mbit/s measured"
            );
            let mut strategies = vec!["capacity", "latency", "round-robin", "sticky", "zerotier"];
            if ort.is_some() {
                strategies.push("onnx");
            } else {
                println!("    onnx: skipped (no ONNX Runtime: run ./scripts/setup-onnx.sh or set NETMIX_ORT_LIB)");
            }
            // NETMIX_BENCH_STRATEGIES=a,b runs only those (for iterating on one); the figures to
            // report are from a run of all of them.
            if let Ok(only) = std::env::var("NETMIX_BENCH_STRATEGIES") {
                strategies.retain(|s| only.split(',').any(|o| o.trim() == *s));
            }
            for strategy in strategies {
                set_strategy(socks, strategy).await;
                let before = link_bytes(socks).await;
                let (secs, mbit) = batch(Path::Netmix(socks), FILES, FILE).await;
                // The API's byte counters are refreshed a few times a second.
                tokio::time::sleep(Duration::from_millis(1200)).await;
                let after = link_bytes(socks).await;
                let split: Vec<String> = after
                    .iter()
                    .zip(&before)
                    .map(|(a, b)| format!("{:.1}", (a.1 - b.1) as f64 / FILE as f64))
                    .collect();
                let peaks: Vec<String> =
                    after.iter().map(|a| format!("{:.0}", a.2 as f64 / 1e6)).collect();
                println!(
                    "    {strategy:<12} {secs:6.1} s  {mbit:6.1} Mbit/s  = {:5.1}% of nominal, {:5.1}% of measured sum; \
                     files per link {}, capacity estimates {} Mbit/s",
                    mbit / nominal * 100.0,
                    mbit / measured * 100.0,
                    split.join("/"),
                    peaks.join("/")
                );
            }
        })
        .await
        .unwrap();
    });
    drop(engine);
    let _ = std::fs::remove_file(&token_file);
}

/// The ONNX Runtime library for the onnx strategy, if present (`NETMIX_ORT_LIB`, or where
/// `./scripts/setup-onnx.sh` puts it).
fn ort_library() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("NETMIX_ORT_LIB")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.deps/onnxruntime/onnxruntime/capi/libonnxruntime.so.1.31.1")
        });
    path.is_file().then(|| path.canonicalize().unwrap_or(path))
}

/// `files` parallel downloads of `size`; returns (seconds, aggregate Mbit/s of goodput).
async fn batch(path: Path, files: usize, size: u64) -> (f64, f64) {
    let start = Instant::now();
    let jobs: Vec<_> = (0..files)
        .map(|_| tokio::spawn(download(path, size)))
        .collect();
    let mut bytes = 0;
    for j in jobs {
        bytes += j.await.unwrap().expect("download through netmix");
    }
    let secs = start.elapsed().as_secs_f64();
    (secs, bytes as f64 * 8.0 / secs / 1e6)
}

/// Per lab link (sorted by name): (name, bytes received, capacity estimate in bit/s), from the
/// dashboard API.
async fn link_bytes(socks: SocketAddr) -> Vec<(String, u64, u64)> {
    let api = SocketAddr::new(socks.ip(), 5000);
    let s = TcpStream::connect(api).await.expect("dashboard");
    let list = netmix_integration::client::api_over(s, api, "/api/interfaces").await;
    let mut links: Vec<(String, u64, u64)> = list
        .as_array()
        .expect("an interface list")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default().to_owned(),
                i["bytes_down"].as_u64().unwrap_or(0),
                i["peak_down_bps"].as_u64().unwrap_or(0),
            )
        })
        .filter(|l| l.0.starts_with("wan"))
        .collect();
    links.sort();
    links
}

/// Switches the strategy through the dashboard API (keeps the engine's learned numbers).
async fn set_strategy(socks: SocketAddr, name: &str) {
    let api = SocketAddr::new(socks.ip(), 5000);
    let body = format!("{{\"name\":\"{name}\"}}");
    let request = format!(
        "POST /api/strategy HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(api).await.expect("dashboard");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "switch to {name}: {answer}"
    );
    // Let the in-flight ledger of the previous batch drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
}
