//! Cost of the two halves of a strategy through the ABI (trait object call, panic guard,
//! strategy), with 8 interfaces: `rebuild` (when the interfaces change) and `pick` (every new
//! connection). Plain `Instant` loops; prints µs per rebuild and ns per pick.
//!
//! Build the plugins first, in the same profile as the bench:
//!
//! ```sh
//! cargo build --release -p netmix-strategy-round-robin -p netmix-strategy-capacity \
//!     -p netmix-strategy-latency -p netmix-strategy-sticky
//! cargo bench -p netmix-plugin-api --bench pick
//! ```
//!
//! The strategies take turns: each of [`ROUNDS`] rounds times every strategy once, so that a
//! noisy moment (other builds, a busy VM host) hits them alike. Each figure is the median over
//! the rounds, with the fastest round in brackets. Falls back to the debug plugins (and says
//! so) when no release build exists. `NETMIX_BENCH_ONLY=latency` (a comma-separated list of
//! file stems) times only those, e.g. under `perf record`.

use std::{
    hint::black_box,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Instant,
};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    std_types::{RSome, RStr},
};
use netmix_plugin_api::{
    ConnMeta, HostMod, HostMod_Ref, InterfaceSnapshot, IpNetC, LogLevel, Snapshot, StrategyBox,
    host::load_plugin,
};

/// Picks per round.
const PICKS: u32 = 100_000;
/// Rebuilds per round.
const REBUILDS: u32 = 1_000;
/// Rounds.
const ROUNDS: usize = 15;

fn plugin_file(stem: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps");
    let file = format!(
        "{}netmix_strategy_{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let release = profile.join(&file);
    if release.exists() {
        return release;
    }
    let debug = profile.with_file_name("debug").join(&file);
    assert!(
        debug.exists(),
        "{file} not found: build the plugins first: cargo build --release \
         -p netmix-strategy-{}",
        stem.replace('_', "-")
    );
    eprintln!("note: no release build of {file}, timing the debug one");
    debug
}

/// The engine's services: plugin log lines go to stderr.
fn host() -> HostMod_Ref {
    extern "C" fn log(plugin: RStr<'_>, level: LogLevel, message: RStr<'_>) {
        eprintln!("{level} [{plugin}] {message}");
    }
    HostMod { log }.leak_into_prefix()
}

/// Eight interfaces with everything a strategy reads: weights, latencies and samples,
/// capacities, addresses, and connections in flight.
fn interfaces() -> Vec<InterfaceSnapshot> {
    (0..8u32)
        .map(|i| {
            let mut s = InterfaceSnapshot::new(i + 1, &format!("wan{i}"));
            s.weight = 1 + i % 3;
            s.addrs
                .push(IpNetC::new(Ipv4Addr::new(198, 18, i as u8, 2), 24));
            s.latency_ewma_us = RSome(5_000 + 1_700 * i);
            s.latency_samples_us = (0..16).map(|k| 5_000 + 100 * k).collect();
            s.capacity_down_bps = 10_000_000 * u64::from(1 + i % 4);
            s.live.active.store((i * 7) % 5, Ordering::Relaxed);
            s
        })
        .collect()
}

/// One strategy under test and its timings so far.
struct Timed {
    name: String,
    path: PathBuf,
    strategy: StrategyBox,
    pick_ns: Vec<f64>,
    rebuild_us: Vec<f64>,
}

/// The median and the minimum of `runs`.
fn median_min(runs: &mut [f64]) -> (f64, f64) {
    runs.sort_by(f64::total_cmp);
    (runs[runs.len() / 2], runs[0])
}

fn main() {
    let snapshot = Snapshot::of(interfaces());
    let conn = ConnMeta::for_host("example.com", 443);

    let only = std::env::var("NETMIX_BENCH_ONLY").unwrap_or_default();
    let mut timed: Vec<Timed> = ["round_robin", "capacity", "latency", "sticky"]
        .into_iter()
        .filter(|stem| only.is_empty() || only.split(',').any(|s| s == *stem))
        .map(|stem| {
            let path = plugin_file(stem);
            let plugin = load_plugin(&path).unwrap_or_else(|e| panic!("{e}"));
            let strategy = plugin
                .instantiate("", host())
                .unwrap_or_else(|e| panic!("{e}"));
            // Warm up.
            for _ in 0..REBUILDS / 10 {
                strategy.rebuild(&snapshot).unwrap();
            }
            for _ in 0..PICKS / 10 {
                black_box(strategy.pick(&conn)).unwrap();
            }
            Timed {
                name: plugin.name,
                path,
                strategy,
                pick_ns: Vec::new(),
                rebuild_us: Vec::new(),
            }
        })
        .collect();

    for _ in 0..ROUNDS {
        for t in &mut timed {
            let start = Instant::now();
            for _ in 0..REBUILDS {
                t.strategy.rebuild(black_box(&snapshot)).unwrap();
            }
            t.rebuild_us
                .push(start.elapsed().as_secs_f64() * 1e6 / f64::from(REBUILDS));

            let start = Instant::now();
            for _ in 0..PICKS {
                black_box(t.strategy.pick(black_box(&conn))).unwrap();
            }
            t.pick_ns
                .push(start.elapsed().as_nanos() as f64 / f64::from(PICKS));
        }
    }

    println!(
        "8 interfaces, through the ABI; median of {ROUNDS} rounds [fastest round] of {PICKS} \
         picks / {REBUILDS} rebuilds"
    );
    for t in &mut timed {
        let (pick, pick_min) = median_min(&mut t.pick_ns);
        let (rebuild, rebuild_min) = median_min(&mut t.rebuild_us);
        println!(
            "{:<12} {pick:>5.0} ns/pick [{pick_min:>4.0}]  {rebuild:>6.2} µs/rebuild \
             [{rebuild_min:>5.2}]  {}",
            t.name,
            t.path.display()
        );
    }
}
