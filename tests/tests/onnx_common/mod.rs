//! The `onnx` strategy's evaluation workload, shared by `tests/tests/onnx.rs` and the
//! `onnx_eval` benchmark: a lab where latency misleads, and a fixed mix of small requests and
//! multi-megabyte downloads made through netmix.
//!
//! Links: `wan0` 5 ms / 4 Mbit/s (answers first, finishes downloads last) and `wan1` 40 ms /
//! 50 Mbit/s. Small requests go to `api.lab`, downloads to `files.lab`; both names resolve to
//! the lab's target (198.19.0.1, HTTP on port 80) inside the client namespace, so the proxy
//! tells them apart by host name, the only thing it sees.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netmix_integration::{Engine, Lab, LinkSpec, TARGET, Target, netmix_bin, socks5_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The narrow, low-latency link (index 0).
pub const NARROW: LinkSpec = LinkSpec::plain().delay(5).rate(4);
/// The wide, higher-latency link (index 1).
pub const WIDE: LinkSpec = LinkSpec::plain().delay(40).rate(50);
/// Host of the small requests.
pub const SMALL_HOST: &str = "api.lab";
/// Host of the downloads.
pub const BIG_HOST: &str = "files.lab";
/// Body size of a small request.
pub const SMALL_BYTES: usize = 2 * 1024;
/// Body size of a download.
pub const BIG_BYTES: usize = 2 * 1024 * 1024;

/// The evaluation lab, with `api.lab` and `files.lab` resolving to the target.
pub fn lab() -> Lab {
    let lab = Lab::new(&[NARROW, WIDE]);
    lab.set_hosts(&[
        (SMALL_HOST, IpAddr::V4(TARGET)),
        (BIG_HOST, IpAddr::V4(TARGET)),
    ]);
    lab
}

/// The ONNX Runtime library for the engine: `$NETMIX_ORT_LIB`, else what
/// `scripts/setup-onnx.sh` installs into `.deps/onnxruntime`. Panics with the way to get it.
pub fn ort_library() -> PathBuf {
    let path = std::env::var_os("NETMIX_ORT_LIB")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.deps/onnxruntime/onnxruntime/capi/libonnxruntime.so.1.31.1")
        });
    assert!(
        path.is_file(),
        "the ONNX Runtime library {} is missing: run ./scripts/setup-onnx.sh (pip install of the \
         pinned onnxruntime wheel) or set NETMIX_ORT_LIB",
        path.display()
    );
    path.canonicalize().unwrap_or(path)
}

/// A fresh plugins folder holding the built `latency` and `onnx` plugins.
pub fn plugins_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netmix-plugins-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for stem in ["strategy_latency", "strategy_onnx"] {
        let file = format!("libnetmix_{stem}.so");
        let from = netmix_bin().parent().unwrap().join(&file);
        assert!(
            from.exists(),
            "{} missing: build the plugins first: cargo build --workspace",
            from.display()
        );
        let to = dir.join(&file);
        std::fs::copy(&from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

/// A netmix config for the lab: `strategy`, the `[strategies.onnx]` options, probes of the
/// target every 300 ms (so that latency is known), and `extra` top-level keys.
pub fn config(dir: &Path, strategy: &str, onnx_options: &str, extra: &str) -> String {
    format!(
        "strategy = \"{strategy}\"\n{extra}\n[plugins]\ndir = \"{}\"\n\n[interfaces]\ninclude = [\"wan*\"]\n\n\
         [discovery]\nrescan_interval_ms = 300\n\n[timeouts]\nconnect_ms = 3000\n\n\
         [health]\nprobe_targets = [\"198.19.0.1:80\"]\nprobe_interval_ms = 300\n\n\
         [strategies.onnx]\n{onnx_options}\n",
        dir.display()
    )
}

/// One finished request.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    /// A download (else a small request).
    pub big: bool,
    /// From the connect to the proxy to the last byte.
    pub elapsed: Duration,
    /// The lab link that carried it.
    pub link: usize,
}

/// One GET through netmix: `big` picks the host and size. Returns the completion time and the
/// link.
pub async fn fetch(lab: &Lab, socks: SocketAddr, big: bool) -> Result<Done, String> {
    let (host, n) = if big {
        (BIG_HOST, BIG_BYTES)
    } else {
        (SMALL_HOST, SMALL_BYTES)
    };
    let start = Instant::now();
    let stream = lab
        .try_connect_client(socks, Duration::from_secs(5))
        .await
        .map_err(|e| format!("connect to the proxy: {e}"))?;
    let work = async {
        let mut reply = socks5_connect(stream, Target::Domain(host.to_owned(), 80), None)
            .await
            .map_err(|e| format!("SOCKS: {e}"))?;
        if reply.code != 0 {
            return Err(format!("SOCKS reply {}", reply.code));
        }
        let req = format!("GET /bytes/{n} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        reply
            .stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut body = Vec::with_capacity(n + 256);
        reply
            .stream
            .read_to_end(&mut body)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if body.len() < n {
            return Err(format!("short answer: {} of {n} bytes", body.len()));
        }
        let link = lab
            .link_for_source(reply.bound.ip())
            .ok_or_else(|| format!("BND.ADDR {} is no lab link", reply.bound))?;
        Ok(Done {
            big,
            elapsed: start.elapsed(),
            link,
        })
    };
    tokio::time::timeout(Duration::from_secs(90), work)
        .await
        .map_err(|_| format!("{host} timed out"))?
}

/// The workload's order: `small` small requests and `big` downloads, shuffled with `seed`.
pub fn jobs(small: usize, big: usize, seed: u64) -> Vec<bool> {
    let mut v: Vec<bool> = std::iter::repeat_n(false, small)
        .chain(std::iter::repeat_n(true, big))
        .collect();
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// Runs `jobs` in order with at most `concurrency` at once (each starts when a slot frees).
pub async fn run(
    lab: &Arc<Lab>,
    socks: SocketAddr,
    jobs: &[bool],
    concurrency: usize,
) -> Result<Vec<Done>, String> {
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for &big in jobs {
        let permit = slots.clone().acquire_owned().await.unwrap();
        let lab = lab.clone();
        tasks.push(tokio::spawn(async move {
            let r = fetch(&lab, socks, big).await;
            drop(permit);
            r
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// Waits until the engine has a latency for both links (the probes ran).
pub async fn wait_measured(lab: &Lab, engine: &Engine) {
    for name in ["wan0", "wan1"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if netmix_integration::iface_json(lab, name)
                .await
                .is_some_and(|i| i["latency_ms"].is_number())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never got a latency measurement:\n{}",
                engine.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A few more probes so the EWMAs settle.
    tokio::time::sleep(Duration::from_millis(900)).await;
}

/// The same unmeasured warm-up for every strategy: small, download, small, download, one at
/// a time (a learning strategy learns the destinations' sizes and the links' capacities).
pub async fn warm_up(lab: &Lab, socks: SocketAddr) -> Result<(), String> {
    for big in [false, true, false, true] {
        fetch(lab, socks, big).await?;
    }
    Ok(())
}

/// Mean completion time in seconds.
pub fn mean_secs(done: &[Done]) -> f64 {
    done.iter().map(|d| d.elapsed.as_secs_f64()).sum::<f64>() / done.len().max(1) as f64
}

/// (small requests, downloads) carried by each link.
pub fn per_link(done: &[Done]) -> [(usize, usize); 2] {
    let mut out = [(0, 0); 2];
    for d in done {
        if d.big {
            out[d.link].1 += 1;
        } else {
            out[d.link].0 += 1;
        }
    }
    out
}
