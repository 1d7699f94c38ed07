//! Cost of one `pick` through the ABI (trait object call, panic guard, strategy), with 8
//! interfaces. Plain `Instant` loop; prints nanoseconds per pick.
//!
//! Build the plugins first, in the same profile as the bench:
//! `cargo build --release -p netmix-strategy-round-robin -p netmix-strategy-latency -p netmix-strategy-sticky`
//! then `cargo bench -p netmix-plugin-api --bench pick`. Falls back to the debug plugins (and
//! says so) when no release build exists.

use std::{
    hint::black_box,
    path::{Path, PathBuf},
    time::Instant,
};

use abi_stable::std_types::{RSlice, RSome};
use netmix_plugin_api::{ConnMeta, InterfaceSnapshot, host::load_plugin};

const PICKS: u32 = 200_000;

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
    let candidates = [
        profile.join(&file),
        profile.with_file_name("debug").join(&file),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{file} not found: build the plugins first: cargo build --release --workspace")
        })
}

fn main() {
    let interfaces: Vec<InterfaceSnapshot> = (0..8u32)
        .map(|i| {
            let mut s = InterfaceSnapshot::new(i + 1, &format!("wan{i}"));
            s.weight = 1 + i % 3;
            s.latency_ewma_us = RSome(5_000 + 1_700 * i);
            s.latency_samples_us = (0..16).map(|k| 5_000 + 100 * k).collect();
            s.active_conns = (i * 7) % 5;
            s
        })
        .collect();
    let conn = ConnMeta::for_host("example.com", 443);

    for stem in ["round_robin", "latency", "sticky"] {
        let path = plugin_file(stem);
        let plugin = load_plugin(&path).unwrap_or_else(|e| panic!("{e}"));
        let strategy = plugin.instantiate("").unwrap_or_else(|e| panic!("{e}"));
        let slice = RSlice::from_slice(&interfaces);
        for _ in 0..10_000 {
            black_box(strategy.pick(slice, &conn)).unwrap();
        }
        let start = Instant::now();
        for _ in 0..PICKS {
            black_box(strategy.pick(black_box(slice), black_box(&conn))).unwrap();
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(PICKS);
        println!(
            "{:<12} {ns:>8.0} ns/pick  (8 interfaces, {PICKS} picks, {})",
            plugin.name,
            path.display()
        );
    }
}
