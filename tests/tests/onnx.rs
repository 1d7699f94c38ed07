//! The `onnx` strategy end to end: the built plugin, loaded by a real netmix, running the
//! shipped model in ONNX Runtime over the lab's "latency misleads" pair of links, and falling
//! back (and saying so once) when the library or the model is missing.
//!
//! Needs root and the ONNX Runtime library (`./scripts/setup-onnx.sh`, or `NETMIX_ORT_LIB`):
//! without it the tests fail with that message.

#![cfg(target_os = "linux")]

mod onnx_common;

use std::sync::Arc;

use netmix_integration::{set_lab_delay_bin, spawn_engine};
use onnx_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_model_sends_downloads_to_the_wide_link_and_requests_to_the_fast_one() {
    set_lab_delay_bin(env!("CARGO_BIN_EXE_lab-delay"));
    let lib = ort_library();
    let lab = Arc::new(lab());
    let _servers = lab.start_servers().await;
    let dir = plugins_dir("onnx-model");
    let options = format!(
        "library = \"{}\"\nepsilon = 0.0\nexplore_after_secs = 0",
        lib.display()
    );
    let engine = spawn_engine(&lab, &config(&dir, "onnx", &options, ""));
    wait_measured(&lab, &engine).await;
    warm_up(&lab, engine.socks_addr()).await.unwrap();
    let logs = engine.logs();
    assert_eq!(
        logs.matches("ONNX model ready: the built-in model with ONNX Runtime")
            .count(),
        1,
        "{logs}"
    );
    assert!(!logs.contains("falling back"), "{logs}");

    for _ in 0..3 {
        let d = fetch(&lab, engine.socks_addr(), false).await.unwrap();
        assert_eq!(d.link, 0, "a 2 KiB request goes to the 5 ms link: {d:?}");
    }
    for _ in 0..2 {
        let d = fetch(&lab, engine.socks_addr(), true).await.unwrap();
        assert_eq!(
            d.link, 1,
            "a 2 MiB download goes to the 50 Mbit/s link: {d:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_library_or_model_falls_back_and_keeps_serving() {
    set_lab_delay_bin(env!("CARGO_BIN_EXE_lab-delay"));
    let lib = ort_library();
    let lab = Arc::new(lab());
    let _servers = lab.start_servers().await;
    let dir = plugins_dir("onnx-fallback");
    for (options, cause) in [
        (
            "library = \"/nonexistent/libonnxruntime.so.1.31.1\"".to_owned(),
            "ONNX Runtime library /nonexistent/libonnxruntime.so.1.31.1 (from option `library`) does not exist",
        ),
        (
            format!(
                "library = \"{}\"\nmodel = \"/nonexistent/model.onnx\"",
                lib.display()
            ),
            "model file /nonexistent/model.onnx does not exist",
        ),
    ] {
        let engine = spawn_engine(&lab, &config(&dir, "onnx", &options, ""));
        wait_measured(&lab, &engine).await;
        // Keeps serving, with latency-style choices: everything small goes to the 5 ms link,
        // and downloads still complete.
        for big in [false, false, true, false] {
            let d = fetch(&lab, engine.socks_addr(), big)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", engine.logs()));
            if !big {
                assert_eq!(d.link, 0, "latency fallback picks the 5 ms link: {d:?}");
            }
        }
        let logs = engine.logs();
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("netmix::plugin"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "exactly one line from the plugin: {lines:#?}"
        );
        assert!(
            lines[0].contains("ONNX model unavailable, falling back to latency scoring")
                && lines[0].contains(cause),
            "{}",
            lines[0]
        );
        // It went through the engine's log, with the plugin's name and level.
        assert!(
            lines[0].contains("plugin=onnx") && lines[0].contains("WARN"),
            "{}",
            lines[0]
        );
        // The engine itself did not fall back: the plugin answers.
        assert!(
            !logs.contains("Strategy plugin failed"),
            "the plugin must not err: {logs}"
        );
    }
}
