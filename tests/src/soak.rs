//! The soak: netmix over three links that flap (down/up and blackhole/restore, each every
//! 10–20 s on a seeded schedule, never all three at once) under a steady, bounded load of short
//! who-am-I connections and long downloads; it reports what failed and whether the process
//! stayed flat. Run by `tests/benches/soak.rs` (30 minutes by default) and, for two minutes, by
//! `tests/tests/soak.rs`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::{fd_count, rss_kib};
use crate::{
    DASHBOARD, HTTP_PORT, Lab, TARGET, Target, WHOAMI_PORT, api, socks5_connect, spawn_engine,
};

/// Short who-am-I clients, each making one connection after another (50 ms apart).
const SHORT_CLIENTS: usize = 6;
/// Clients downloading [`DOWNLOAD_BYTES`] after another.
const LONG_CLIENTS: usize = 2;
const DOWNLOAD_BYTES: u64 = 8 * 1024 * 1024;
/// How long a client waits for anything before counting a failure.
const CLIENT_DEADLINE: Duration = Duration::from_secs(20);
/// Load runs this long before the start figures are taken.
const WARM_UP: Duration = Duration::from_secs(10);

/// What a soak run saw.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    /// How long the load ran.
    pub elapsed: Duration,
    /// Link faults applied (each later undone).
    pub faults: u64,
    /// Short connections that got their answer.
    pub short_ok: u64,
    /// New connections netmix could not open (a SOCKS failure reply, or no reply in time).
    pub new_failed: u64,
    /// Connections that opened and then broke (their link died under them).
    pub in_flight_broken: u64,
    /// Downloads that completed.
    pub downloads_ok: u64,
    /// Downloads cut short.
    pub downloads_broken: u64,
    /// netmix's open descriptors after warm-up, at the end of the load, and after it drained.
    pub fds: [usize; 3],
    /// netmix's RSS (KiB) after warm-up and at the end.
    pub rss_kib: [u64; 2],
    /// The dashboard listed all three interfaces at the end.
    pub dashboard_ok: bool,
    /// The faults and the new-connection failures, in time order (`12.3 s wan1 down`,
    /// `12.9 s new connection failed: reply 6`), at most [`MAX_NOTES`].
    pub notes: Vec<String>,
}

/// Notes kept at most.
pub const MAX_NOTES: usize = 400;

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "soak {:.1} min, {} link faults: short connections {} ok, {} new failed, {} broken in flight; \
             downloads {} ok, {} broken in flight; fds {} → {} (drained {}); RSS {} → {} KiB ({:+.1}%); dashboard {}",
            self.elapsed.as_secs_f64() / 60.0,
            self.faults,
            self.short_ok,
            self.new_failed,
            self.in_flight_broken,
            self.downloads_ok,
            self.downloads_broken,
            self.fds[0],
            self.fds[1],
            self.fds[2],
            self.rss_kib[0],
            self.rss_kib[1],
            (self.rss_kib[1] as f64 / self.rss_kib[0].max(1) as f64 - 1.0) * 100.0,
            if self.dashboard_ok {
                "answers"
            } else {
                "DOES NOT ANSWER"
            },
        )?;
        if self.new_failed > 0 {
            write!(f, "\n  timeline: {}", self.notes.join("; "))?;
        }
        Ok(())
    }
}

/// A small deterministic generator (xorshift64*), so a schedule can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.next() % span.max(1))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Down,
    Blackhole,
}

/// Runs the soak for `length` on a fresh lab with the flapping schedule from `seed`.
///
/// # Panics
/// When the lab or netmix cannot be set up.
pub fn run_soak(length: Duration, seed: u64) -> SoakReport {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers_blocking();
    let config = crate::lab_config(
        "\"wan*\"",
        "[health]\nprobe_targets = [\"198.19.0.1:7\"]\nprobe_interval_ms = 500\nprobe_timeout_ms = 400\n",
    );
    let engine = spawn_engine(&lab, &config);
    let pid = engine.pid();
    let proxy = engine.socks_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");

    let mut report = SoakReport::default();
    let started = Instant::now();
    let workers: Vec<_> = (0..SHORT_CLIENTS + LONG_CLIENTS)
        .map(|i| {
            let (stop, counts, notes) = (stop.clone(), counts.clone(), notes.clone());
            let ns = lab.client_ns().to_owned();
            runtime.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = if i < SHORT_CLIENTS {
                        short(&ns, proxy).await
                    } else {
                        download(&ns, proxy).await
                    };
                    if let Outcome::NewFailed(why) = &outcome {
                        note(&notes, started, &format!("new connection failed: {why}"));
                    }
                    let slot = match (i < SHORT_CLIENTS, outcome) {
                        (true, Outcome::Ok) => 0,
                        (_, Outcome::NewFailed(_)) => 1,
                        (true, Outcome::Broken) => 2,
                        (false, Outcome::Ok) => 3,
                        (false, Outcome::Broken) => 4,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();

    // The flapping schedule, on this thread: each link's next event 10–20 s away; at most two
    // links impaired at once.
    let mut rng = Rng(seed | 1);
    let mut state = [Fault::None; 3];
    let mut next: Vec<Instant> = (0..3)
        .map(|_| started + rng.between(Duration::from_secs(5), Duration::from_secs(15)))
        .collect();
    let mut took_start = false;
    while started.elapsed() < length {
        if !took_start && started.elapsed() >= WARM_UP {
            report.fds[0] = fd_count(pid);
            report.rss_kib[0] = rss_kib(pid);
            took_start = true;
        }
        let now = Instant::now();
        for k in 0..3 {
            if now < next[k] {
                continue;
            }
            next[k] = now + rng.between(Duration::from_secs(10), Duration::from_secs(20));
            let dev = &lab.link(k).dev;
            match state[k] {
                Fault::Down => {
                    lab.set_link_up(k);
                    note(&notes, started, &format!("{dev} up"));
                }
                Fault::Blackhole => {
                    lab.blackhole(k, false);
                    note(&notes, started, &format!("{dev} restored"));
                }
                Fault::None => {
                    if state.iter().filter(|s| **s != Fault::None).count() >= 2 {
                        continue;
                    }
                    report.faults += 1;
                    if rng.next().is_multiple_of(2) {
                        lab.set_link_down(k);
                        state[k] = Fault::Down;
                        note(&notes, started, &format!("{dev} down"));
                    } else {
                        lab.blackhole(k, true);
                        state[k] = Fault::Blackhole;
                        note(&notes, started, &format!("{dev} blackholed"));
                    }
                    continue;
                }
            }
            state[k] = Fault::None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.elapsed = started.elapsed();
    report.fds[1] = fd_count(pid);
    report.rss_kib[1] = rss_kib(pid);
    report.dashboard_ok = runtime.block_on(async {
        let list = api(&lab, DASHBOARD, "/api/interfaces").await;
        list.as_array().is_some_and(|a| a.len() == 3)
    });
    stop.store(true, Ordering::Relaxed);
    for (k, fault) in state.iter().enumerate() {
        match fault {
            Fault::Down => lab.set_link_up(k),
            Fault::Blackhole => lab.blackhole(k, false),
            Fault::None => {}
        }
    }
    runtime.block_on(async {
        for w in workers {
            let _ = tokio::time::timeout(CLIENT_DEADLINE * 2, w).await;
        }
    });
    // Drained: every relay over, the descriptors back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        report.fds[2] = fd_count(pid);
        if report.fds[2] <= report.fds[0] || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = |i: usize| counts[i].load(Ordering::Relaxed);
    report.short_ok = c(0);
    report.new_failed = c(1);
    report.in_flight_broken = c(2);
    report.downloads_ok = c(3);
    report.downloads_broken = c(4);
    report.notes = std::mem::take(&mut *notes.lock().expect("notes"));
    drop(engine);
    report
}

/// Appends a timestamped note (up to [`MAX_NOTES`]).
fn note(notes: &Mutex<Vec<String>>, started: Instant, what: &str) {
    let mut notes = notes.lock().expect("notes");
    if notes.len() < MAX_NOTES {
        notes.push(format!("{:.1} s {what}", started.elapsed().as_secs_f64()));
    }
}

enum Outcome {
    Ok,
    /// netmix did not open the connection, and why.
    NewFailed(String),
    /// It opened, then broke.
    Broken,
}

async fn open(ns: &str, proxy: SocketAddr, port: u16) -> Result<tokio::net::TcpStream, String> {
    let s = crate::lab::connect_tokio_in(ns, proxy, Duration::from_secs(5))
        .await
        .map_err(|e| format!("proxy unreachable: {e}"))?;
    let target = Target::Ip(SocketAddr::new(TARGET.into(), port));
    let started = Instant::now();
    match tokio::time::timeout(CLIENT_DEADLINE, socks5_connect(s, target, None)).await {
        Ok(Ok(r)) if r.code == 0 => Ok(r.stream),
        Ok(Ok(r)) => Err(format!(
            "reply {} after {} ms",
            r.code,
            started.elapsed().as_millis()
        )),
        Ok(Err(e)) => Err(format!("SOCKS exchange: {e}")),
        Err(_) => Err("no reply in time".to_owned()),
    }
}

async fn short(ns: &str, proxy: SocketAddr) -> Outcome {
    let mut s = match open(ns, proxy, WHOAMI_PORT).await {
        Ok(s) => s,
        Err(why) => return Outcome::NewFailed(why),
    };
    let mut answer = String::new();
    match tokio::time::timeout(CLIENT_DEADLINE, s.read_to_string(&mut answer)).await {
        Ok(Ok(_)) if !answer.trim().is_empty() => Outcome::Ok,
        _ => Outcome::Broken,
    }
}

async fn download(ns: &str, proxy: SocketAddr) -> Outcome {
    let mut s = match open(ns, proxy, HTTP_PORT).await {
        Ok(s) => s,
        Err(why) => return Outcome::NewFailed(why),
    };
    let request = format!("GET /bytes/{DOWNLOAD_BYTES} HTTP/1.1\r\nHost: t\r\n\r\n");
    if s.write_all(request.as_bytes()).await.is_err() {
        return Outcome::Broken;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match tokio::time::timeout(CLIENT_DEADLINE, s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => total += n as u64,
            _ => return Outcome::Broken,
        }
    }
    if total >= DOWNLOAD_BYTES {
        Outcome::Ok
    } else {
        Outcome::Broken
    }
}
