//! The `onnx` strategy's evaluation: a lab where latency misleads (5 ms / 4 Mbit/s beside
//! 40 ms / 50 Mbit/s), the same fixed workload (32 small requests of 2 KiB to `api.lab`, 8
//! downloads of 2 MiB to `files.lab`, 4 at a time, seeded order) run through netmix once per
//! strategy — `latency`, `onnx` (the shipped model) and `onnx` in `formula` mode
//! (latency + expected size / capacity) — each on a fresh engine after the same unmeasured
//! warm-up. Prints the mean completion times and ratios and appends them to BENCHMARKS.md.
//!
//! Needs root, the built workspace and the ONNX Runtime library:
//!
//! ```sh
//! ./scripts/setup-onnx.sh && cargo build --workspace
//! cargo bench -p netmix-integration --bench onnx_eval
//! ```
//!
//! Collecting training data instead (random choices, connection log on):
//!
//! ```sh
//! cargo bench -p netmix-integration --bench onnx_eval -- --collect /tmp/onnx-lab.jsonl --rounds 4
//! ./plugins/onnx/train/train.sh --log /tmp/onnx-lab.jsonl --out plugins/onnx/model/default.onnx
//! ```

#[path = "../tests/onnx_common/mod.rs"]
mod onnx_common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use netmix_integration::{set_lab_delay_bin, spawn_engine};
use onnx_common::*;

const SMALL: usize = 32;
const BIG: usize = 8;
const CONCURRENCY: usize = 4;
const SEED: u64 = 0x6e65_746d_6978;

fn main() {
    set_lab_delay_bin(env!("CARGO_BIN_EXE_lab-delay"));
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match arg("--collect") {
        Some(out) => {
            let rounds = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(4);
            rt.block_on(collect(Path::new(&out), rounds));
        }
        None => rt.block_on(evaluate()),
    }
}

/// Runs the workload with uniformly random choices and the connection log on.
async fn collect(out: &Path, rounds: usize) {
    let lab = Arc::new(lab());
    let _servers = lab.start_servers().await;
    let dir = plugins_dir("collect");
    let log =
        std::env::temp_dir().join(format!("netmix-onnx-collect-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let options =
        "mode = \"formula\"\nepsilon = 1.0\nexplore_within_pct = 1e9\nexplore_after_secs = 0";
    let extra = format!("connection_log = \"{}\"", log.display());
    let engine = spawn_engine(&lab, &config(&dir, "onnx", options, &extra));
    wait_measured(&lab, &engine).await;
    for round in 0..rounds {
        let concurrency = [1, 2, 4, 6][round % 4];
        let started = Instant::now();
        let done = run(
            &lab,
            engine.socks_addr(),
            &jobs(SMALL, BIG, SEED + round as u64),
            concurrency,
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", engine.logs()));
        eprintln!(
            "round {round}: concurrency {concurrency}, {} connections in {:.1}s, per link {:?}",
            done.len(),
            started.elapsed().as_secs_f64(),
            per_link(&done)
        );
    }
    drop(engine);
    std::fs::copy(&log, out).unwrap();
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "wrote {}; train with: ./plugins/onnx/train/train.sh --log {} --out plugins/onnx/model/default.onnx",
        out.display(),
        out.display()
    );
}

/// One strategy's run on a fresh engine.
async fn measure(lab: &Arc<Lab>, dir: &Path, strategy: &str, options: &str) -> Vec<Done> {
    let engine = spawn_engine(lab, &config(dir, strategy, options, ""));
    wait_measured(lab, &engine).await;
    warm_up(lab, engine.socks_addr())
        .await
        .unwrap_or_else(|e| panic!("{strategy} warm-up: {e}\n{}", engine.logs()));
    let started = Instant::now();
    let done = run(
        lab,
        engine.socks_addr(),
        &jobs(SMALL, BIG, SEED),
        CONCURRENCY,
    )
    .await
    .unwrap_or_else(|e| panic!("{strategy}: {e}\n{}", engine.logs()));
    let logs = engine.logs();
    if options.contains("library") && !logs.contains("ONNX model ready") {
        panic!("the onnx strategy did not load its model:\n{logs}");
    }
    eprintln!(
        "{strategy:<8} {:<18} mean {:.3}s  (workload {:.1}s; (small, big) per link wan0/wan1: {:?})",
        if options.contains("formula") {
            "formula"
        } else {
            ""
        },
        mean_secs(&done),
        started.elapsed().as_secs_f64(),
        per_link(&done)
    );
    done
}

use netmix_integration::Lab;

async fn evaluate() {
    let lib = ort_library();
    let lab = Arc::new(lab());
    let _servers = lab.start_servers().await;
    let dir = plugins_dir("eval");
    let model_opts = format!("library = \"{}\"\nseed = 1", lib.display());
    let formula_opts = "mode = \"formula\"\nseed = 1".to_owned();
    let started = Instant::now();
    let latency = measure(&lab, &dir, "latency", "").await;
    let onnx = measure(&lab, &dir, "onnx", &model_opts).await;
    let formula = measure(&lab, &dir, "onnx", &formula_opts).await;
    let (l, o, f) = (mean_secs(&latency), mean_secs(&onnx), mean_secs(&formula));
    let small_mean = |d: &[Done], big: bool| {
        let v: Vec<_> = d.iter().filter(|x| x.big == big).copied().collect();
        mean_secs(&v)
    };
    let row = |name: &str, d: &[Done], m: f64| {
        format!(
            "| {name} | {m:.3} | {:.3} | {:.3} | {:.2} | {:?} |",
            small_mean(d, false),
            small_mean(d, true),
            m / l,
            per_link(d)
        )
    };
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let table = format!(
        "\n### Run of {date}\n\n\
         Workload: {SMALL} × {} KiB from api.lab + {BIG} × {} MiB from files.lab, {CONCURRENCY} at a time, \
         seeded order; links wan0 5 ms / 4 Mbit/s, wan1 40 ms / 50 Mbit/s. Completion time = client-side, \
         from the connect to the proxy to the last byte. Total bench time {:.0} s.\n\n\
         | strategy | mean (s) | mean small (s) | mean download (s) | × latency | (small, downloads) on (wan0, wan1) |\n\
         |---|---|---|---|---|---|\n{}\n{}\n{}\n\n\
         ONNX / latency = **{:.2}** (target ≤ 0.70); formula / latency = {:.2}; ONNX / formula = {:.2}.\n",
        SMALL_BYTES / 1024,
        BIG_BYTES / (1024 * 1024),
        started.elapsed().as_secs_f64(),
        row("latency", &latency, l),
        row("onnx (shipped model)", &onnx, o),
        row("formula (latency + size / capacity)", &formula, f),
        o / l,
        f / l,
        o / f
    );
    println!("{table}");
    append_benchmarks(&table);
    assert!(
        o <= 0.7 * l,
        "ONNX mean {o:.3}s is more than 0.7 × latency's {l:.3}s"
    );
}

/// Appends `text` to BENCHMARKS.md under this benchmark's section (created when absent).
fn append_benchmarks(text: &str) {
    const HEADER: &str = "## ONNX strategy: completion time where latency misleads";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    if existing.is_empty() {
        writeln!(f, "# netmix benchmarks").unwrap();
    }
    if !existing.contains(HEADER) {
        writeln!(
            f,
            "\n{HEADER}\n\nCommand (root, after `./scripts/setup-onnx.sh && cargo build --workspace`):\n\
             `cargo bench -p netmix-integration --bench onnx_eval`. Each run appends below."
        )
        .unwrap();
    }
    f.write_all(text.as_bytes()).unwrap();
}
