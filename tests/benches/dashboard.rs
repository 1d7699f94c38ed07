//! Relay throughput with and without live dashboard clients (needs root: it builds the lab).
//!
//! One unshaped lab link; netmix (the binary `NETMIX_PROFILE` selects, use `release`) with its
//! dashboard on. 1,000 short connections are made first, so every feed message carries a full
//! connection table (as the page asks for: `/ws?connections=1000`). Then, per round, a client
//! downloads 3 × 200 MB (`GET /bytes/N` from the lab HTTP server through SOCKS) once with no
//! dashboard client and once with 3 WebSocket clients on `/ws` reading every message; the two
//! modes alternate which goes first. Prints each measurement, the medians and their ratio.
//!
//! Run:
//! ```sh
//! cargo build --release --workspace
//! NETMIX_PROFILE=release cargo bench -p netmix-integration --bench dashboard
//! ```
//! `NETMIX_BENCH_ROUNDS` (default 6) and `NETMIX_BENCH_MB` (default 1000: at ~1.5 GB/s a
//! measurement lasts ~2 s, long enough for the clients to get several feed messages) tune it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netmix_integration::web::{connection_burst, fetch_via_socks, write_token_file, ws_connect};
use netmix_integration::{DASHBOARD, Engine, Lab, api, spawn_engine};

const DOWNLOADS: usize = 3;
const WS_CLIENTS: usize = 3;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One measurement: MB/s (10^6 bytes) and netmix's CPU seconds per GB relayed.
#[derive(Clone, Copy)]
struct Run {
    mb_s: f64,
    cpu_s_per_gb: f64,
}

/// Downloads `DOWNLOADS × bytes` one after another.
async fn bulk(lab: &Lab, engine: &Engine, bytes: u64) -> Run {
    let cpu = netmix_integration::process_cpu(engine.pid());
    let started = Instant::now();
    for _ in 0..DOWNLOADS {
        let got = fetch_via_socks(
            lab.client_ns(),
            engine.socks_addr(),
            &format!("/bytes/{bytes}"),
        )
        .await;
        assert_eq!(got, bytes, "short download");
    }
    let total = (DOWNLOADS as u64 * bytes) as f64;
    let secs = started.elapsed().as_secs_f64();
    Run {
        mb_s: total / secs / 1e6,
        cpu_s_per_gb: (netmix_integration::process_cpu(engine.pid()) - cpu).as_secs_f64()
            / (total / 1e9),
    }
}

/// WebSocket clients that read every message until stopped.
struct Watchers {
    stop: Arc<AtomicBool>,
    messages: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

async fn watch(lab: &Lab, n: usize) -> Watchers {
    let stop = Arc::new(AtomicBool::new(false));
    let messages = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut ws = ws_connect(
            lab,
            DASHBOARD,
            "/ws?connections=1000",
            Some("http://127.0.0.1:5000"),
        )
        .await
        .unwrap_or_else(|r| panic!("upgrade refused: {}", r.status));
        let (stop, messages, bytes) = (stop.clone(), messages.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), ws.next_text()).await {
                    Ok(Ok(Some(text))) => {
                        // A whole feed object (not parsed: the page's parsing costs the
                        // browser's CPU, not netmix's, and would compete with the download
                        // client for this process's two worker threads).
                        assert!(
                            text.starts_with("{\"version\":") && text.ends_with('}'),
                            "a feed message"
                        );
                        messages.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
                    }
                    Ok(_) => panic!("the dashboard closed the WebSocket"),
                    Err(_) => {}
                }
            }
            ws.close().await;
        }));
    }
    Watchers {
        stop,
        messages,
        bytes,
        tasks,
        started: Instant::now(),
    }
}

impl Watchers {
    /// Stops them; (messages per client per second, mean message size in bytes).
    async fn finish(self) -> (f64, u64) {
        let secs = self.started.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("watcher");
        }
        let m = self.messages.load(Ordering::Relaxed);
        assert!(
            m >= WS_CLIENTS as u64,
            "the WebSocket clients got {m} messages"
        );
        let clients = WS_CLIENTS as f64;
        (
            m as f64 / clients / secs,
            self.bytes.load(Ordering::Relaxed) / m.max(1),
        )
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_or("NETMIX_BENCH_ROUNDS", 6) as usize;
    let bytes = env_or("NETMIX_BENCH_MB", 1000) * 1_000_000;
    let lab = Lab::with_links(1);
    let _servers = lab.start_servers().await;
    let token = write_token_file("bench", "bench-token-0123456789abcdef");
    let config = format!(
        "[interfaces]\ninclude = [\"wan*\"]\n\n[dashboard]\ntoken_file = \"{}\"\n",
        token.display()
    );
    let engine = spawn_engine(&lab, &config);
    let bin = netmix_integration::netmix_bin();
    println!("netmix: {}", bin.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    while api(&lab, DASHBOARD, "/api/interfaces")
        .await
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(Instant::now() < deadline, "wan0 never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = connection_burst(
        lab.client_ns(),
        engine.socks_addr(),
        1000,
        8,
        Duration::ZERO,
    )
    .await;
    assert_eq!(ok, 1000);
    // Warm-up (page cache, TCP autotuning, allocator).
    bulk(&lab, &engine, bytes / 4).await;

    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut rates = Vec::new();
    println!(
        "{DOWNLOADS} × {} MB per measurement, {WS_CLIENTS} WebSocket clients",
        bytes / 1_000_000
    );
    println!(
        "| round | no client: MB/s | netmix CPU s/GB | {WS_CLIENTS} /ws clients: MB/s | netmix CPU s/GB |"
    );
    println!("|---|---|---|---|---|");
    for round in 0..rounds {
        let mut pair = [None; 2];
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for clients in order {
            if clients {
                let w = watch(&lab, WS_CLIENTS).await;
                let run = bulk(&lab, &engine, bytes).await;
                rates.push(w.finish().await);
                pair[1] = Some(run);
            } else {
                pair[0] = Some(bulk(&lab, &engine, bytes).await);
            }
        }
        let [Some(a), Some(b)] = pair else {
            unreachable!()
        };
        println!(
            "| {} | {:.0} | {:.3} | {:.0} | {:.3} |",
            round + 1,
            a.mb_s,
            a.cpu_s_per_gb,
            b.mb_s,
            b.cpu_s_per_gb
        );
        without.push(a);
        with.push(b);
    }
    let med =
        |runs: &[Run], f: fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let (a_mb, b_mb) = (med(&without, |r| r.mb_s), med(&with, |r| r.mb_s));
    let (a_cpu, b_cpu) = (
        med(&without, |r| r.cpu_s_per_gb),
        med(&with, |r| r.cpu_s_per_gb),
    );
    println!("| median | {a_mb:.0} | {a_cpu:.3} | {b_mb:.0} | {b_cpu:.3} |");
    println!(
        "throughput with/without: {:.3}; netmix CPU per GB with/without: {:.3}",
        b_mb / a_mb,
        b_cpu / a_cpu
    );
    let per_sec = rates.iter().map(|r| r.0).sum::<f64>() / rates.len() as f64;
    let size = rates.iter().map(|r| r.1).sum::<u64>() / rates.len() as u64;
    println!(
        "WebSocket clients received {per_sec:.1} messages/s each, {} KiB per message",
        size / 1024
    );
    drop(engine);
}
