//! Cost of one `onnx` decision through the ABI (trait object call, panic guard, features,
//! one batched inference in ONNX Runtime, ordering), with 8 interfaces. Plain `Instant` loop.
//!
//! ```sh
//! ./scripts/setup-onnx.sh
//! cargo build --release -p netmix-strategy-onnx
//! cargo bench -p netmix-strategy-onnx --bench decision
//! ```
//! Uses the release plugin library next to the bench binary (falls back to the debug one and
//! says so). Also times the model alone (`Model::predict` on 8 rows) and the `formula` mode.

use std::{
    hint::black_box,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    std_types::{RSome, RStr},
};
use netmix_plugin_api::{
    ConnMeta, HostMod, HostMod_Ref, InterfaceSnapshot, LogLevel, Snapshot, host::load_plugin,
};
use netmix_strategy_onnx::features::N_FEATURES;
use netmix_strategy_onnx::model::{Model, ModelSource, find_library};

const PICKS: u32 = 100_000;

fn plugin_file() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps");
    let file = "libnetmix_strategy_onnx.so";
    let release = profile.join(file);
    if release.exists() {
        return release;
    }
    let debug = profile.with_file_name("debug").join(file);
    assert!(
        debug.exists(),
        "{file} not found: cargo build --release -p netmix-strategy-onnx"
    );
    eprintln!("note: no release build of the plugin, timing the debug one");
    debug
}

/// The engine's services, for the bench: the plugin's log lines go to stderr.
fn host() -> HostMod_Ref {
    extern "C" fn log(plugin: RStr<'_>, level: LogLevel, message: RStr<'_>) {
        eprintln!("{level} [{plugin}] {message}");
    }
    HostMod { log }.leak_into_prefix()
}

fn main() {
    let lib = find_library(None).unwrap_or_else(|e| panic!("{e}"));
    let interfaces: Vec<InterfaceSnapshot> = (0..8u32)
        .map(|i| {
            let mut s = InterfaceSnapshot::new(i + 1, &format!("wan{i}"));
            s.latency_ewma_us = RSome(5_000 + 5_000 * i);
            s.jitter_us = 300 + 50 * i;
            s.successes = 100;
            s.failures = u64::from(i % 3);
            s.live
                .active
                .store((i * 7) % 5, std::sync::atomic::Ordering::Relaxed);
            s.throughput_down_bps = u64::from(i) * 1_000_000;
            s.capacity_down_bps = 4_000_000 * u64::from(i + 1);
            s
        })
        .collect();
    let conn = ConnMeta::for_host("files.lab", 80);
    let path = plugin_file();
    let plugin = load_plugin(&path).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = Snapshot::of(interfaces);

    for (label, options) in [
        (
            "onnx (model)",
            format!(
                "library = \"{}\"\nepsilon = 0.0\nexplore_after_secs = 0",
                lib.display()
            ),
        ),
        (
            "onnx (formula)",
            "mode = \"formula\"\nepsilon = 0.0\nexplore_after_secs = 0".to_owned(),
        ),
    ] {
        let strategy = plugin
            .instantiate(&options, host())
            .unwrap_or_else(|e| panic!("{e}"));
        strategy.rebuild(&snapshot).unwrap();
        // The model loads in the background: wait until picks come from it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = strategy.pick(&conn).unwrap();
            if !c.reason.starts_with("latency fallback") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the model never loaded: {}",
                c.reason
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..5_000 {
            black_box(strategy.pick(&conn)).unwrap();
        }
        let start = Instant::now();
        for _ in 0..PICKS {
            black_box(strategy.pick(black_box(&conn))).unwrap();
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(PICKS);
        println!(
            "{label:<16} {us:>7.2} µs/decision  (8 interfaces, {PICKS} picks, {})",
            path.display()
        );
    }

    let model = Model::load(&lib, &ModelSource::Embedded, 1).unwrap_or_else(|e| panic!("{e}"));
    let rows = vec![1.0f32; 8 * N_FEATURES];
    let mut out = Vec::new();
    for _ in 0..5_000 {
        model.predict(&rows, &mut out).unwrap();
    }
    let start = Instant::now();
    for _ in 0..PICKS {
        model.predict(black_box(&rows), &mut out).unwrap();
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(PICKS);
    println!(
        "{:<16} {us:>7.2} µs/run       (8 rows × {N_FEATURES} features, ONNX Runtime {})",
        "model alone",
        lib.display()
    );
}
