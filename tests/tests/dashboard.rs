//! The dashboard page in a real browser (Debian's headless chromium, driven by playwright-core
//! from `tests/browser/dashboard.mjs`) against a real netmix in the lab: one card per uplink,
//! numbers that move when traffic flows, a strategy switch made through the page that the next
//! connections follow, a page that stays responsive with more than 1,000 connections behind
//! its table, a failed connection's row (the interfaces tried, the real time it took, the error
//! as text), a one-line ZeroTier panel when ZeroTier is not installed, and a visible marker
//! when netmix restarts under the open page. Keeps `target/test-artifacts/dashboard.png`.
//!
//! Needs node, chromium and `npm ci --prefix tests/browser` (`.ci/run` installs them); without
//! them the test fails and says what to install.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use netmix_integration::client::by_name;
use netmix_integration::web::{
    artifacts_dir, connection_burst, drop_syns_to_dropped_port, failed_row, fetch_via_socks,
    measured_deadlines, plugins_dir, timed_out_connection, write_token_file,
};
use netmix_integration::{
    DASHBOARD, Engine, Lab, api, assert_eventually_async, command_in, spawn_engine, spread,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const TOKEN: &str = "browser-test-token-0123456789abcdef";
/// Connections generated for the "1,000 connections behind the table" check.
const LOAD: usize = 1100;
/// Bytes downloaded through each link while the page watches.
const DOWNLOAD: u64 = 2 * 1024 * 1024;
/// Connections made after the switch that must all follow the new strategy.
const AFTER_SWITCH: usize = 6;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Fails (never skips) with what to install when a piece of the browser setup is missing.
fn require_browser_setup() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the dashboard browser test needs node (≥ 20): apt-get install -y nodejs npm ({node:?})"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "the dashboard browser test needs chromium at {chromium}: apt-get install -y chromium \
         (or set CHROMIUM=/path/to/chromium)"
    );
    let pw = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        pw.is_file(),
        "the dashboard browser test needs playwright-core: npm ci --prefix tests/browser \
         ({} missing)",
        pw.display()
    );
}

/// The node script, running in the client namespace; killed on drop.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    seen: Vec<String>,
}

impl Browser {
    fn start(lab: &Lab, args: &[&str]) -> Browser {
        let script = browser_dir().join("dashboard.mjs");
        let mut argv = vec!["node", script.to_str().unwrap()];
        argv.extend_from_slice(args);
        let mut child = command_in(lab.client_ns(), &argv)
            .current_dir(browser_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Browser {
            child,
            stdin,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits for the script's `{"step": step, ...}` line; panics on an error step, on exit, or
    /// after `timeout`, with everything the script said.
    fn expect(&mut self, step: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        continue; // stray output
                    };
                    if v["step"] == step {
                        return v;
                    }
                    if v["step"] == "error" {
                        self.fail(&format!("browser step {step:?} failed"));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {step:?} from the browser within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    self.fail(&format!("the browser script ended before {step:?}"))
                }
            }
        }
    }

    fn tell(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the browser script");
        self.stdin.flush().unwrap();
    }

    fn fail(&self, what: &str) -> ! {
        std::thread::sleep(Duration::from_millis(200));
        panic!(
            "{what}\n--- script stdout ---\n{}\n--- script stderr ---\n{}",
            self.seen.join("\n"),
            self.stderr.lock().unwrap()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // playwright closes chromium on SIGTERM.
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An engine in `lab` for a browser test; `tag` keeps each test's plugin folder and token
/// file its own (the tests run in parallel).
async fn start_engine(lab: &Lab, tag: &str) -> Engine {
    let plugins = plugins_dir(tag, &["strategy_round_robin", "strategy_sticky"]);
    let token_file = write_token_file(tag, TOKEN);
    let config = format!(
        "strategy = \"round-robin\"\n\n[plugins]\ndir = \"{}\"\n\n[interfaces]\ninclude = [\"wan*\"]\n\n\
         [discovery]\nrescan_interval_ms = 300\n\n[dashboard]\ntoken_file = \"{}\"\n",
        plugins.display(),
        token_file.display()
    );
    let engine = spawn_engine(lab, &config);
    assert_eventually_async!(
        api(lab, DASHBOARD, "/api/interfaces")
            .await
            .as_array()
            .is_some_and(|a| a.len() == 3),
        "the dashboard shows the 3 links:\n{}",
        engine.logs()
    );
    engine
}

/// Runs a blocking browser call without stalling the runtime the engine's clients use.
async fn blocking<T: Send + 'static>(
    b: &mut Option<Browser>,
    f: impl FnOnce(&mut Browser) -> T + Send + 'static,
) -> T {
    let mut browser = b.take().expect("browser");
    let (browser, out) = tokio::task::spawn_blocking(move || {
        let out = f(&mut browser);
        (browser, out)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    *b = Some(browser);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_page_in_a_real_browser() {
    require_browser_setup();
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = start_engine(&lab, "browser").await;
    let ns = lab.client_ns().to_owned();
    let socks = engine.socks_addr();

    let shot = artifacts_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://{DASHBOARD}/");
    let mut b = Some(Browser::start(
        &lab,
        &[
            &url,
            TOKEN,
            shot.to_str().unwrap(),
            "wan0,wan1,wan2",
            "sticky",
        ],
    ));
    let step = Duration::from_secs(60);

    // 1. One card per uplink.
    let cards = blocking(&mut b, move |b| b.expect("cards", step)).await;
    assert_eq!(cards["names"], serde_json::json!(["wan0", "wan1", "wan2"]));
    // No ZeroTier in the lab: one line, no error panel over empty tables.
    assert_eq!(
        cards["zerotier"]["text"], "ZeroTier not installed",
        "{cards}"
    );
    assert_eq!(cards["zerotier"]["tables"], 0, "{cards}");

    // 2. Traffic through every link (round-robin: one download each); the page's numbers move.
    for _ in 0..3 {
        let got = fetch_via_socks(&ns, socks, &format!("/bytes/{DOWNLOAD}")).await;
        assert_eq!(got, DOWNLOAD);
    }
    let numbers = blocking(&mut b, move |b| {
        b.tell(&format!("traffic-done {DOWNLOAD}"));
        b.expect("numbers", step)
    })
    .await;
    for name in ["wan0", "wan1", "wan2"] {
        let before = numbers["before"]["cards"][name]["bytes_down"]
            .as_u64()
            .unwrap();
        let after = numbers["after"]["cards"][name]["bytes_down"]
            .as_u64()
            .unwrap();
        assert!(after >= before + DOWNLOAD, "{name}: {before} → {after}");
    }

    // 3. The page switches to sticky (after a refused wrong token); the engine agrees.
    let switched = blocking(&mut b, move |b| b.expect("switched", step)).await;
    assert_eq!(switched["from"], "round-robin");
    assert_eq!(switched["to"], "sticky");
    assert_eq!(
        api(&lab, DASHBOARD, "/api/strategy").await["active"],
        "sticky"
    );

    // 4. The next connections follow it, in the engine and on the page.
    let counts = spread(&lab, &engine, AFTER_SWITCH).await;
    assert_eq!(
        counts.iter().filter(|&&c| c > 0).count(),
        1,
        "sticky keeps the destination on one link: {:?}",
        by_name(&lab, &counts)
    );
    let followed = blocking(&mut b, move |b| {
        b.tell(&format!("sticky-done {AFTER_SWITCH}"));
        b.expect("followed", step)
    })
    .await;
    let rows = followed["rows"].as_array().unwrap();
    assert_eq!(rows.len(), AFTER_SWITCH);
    for r in rows {
        assert_eq!(r["strategy"], "sticky", "{r}");
        assert_eq!(r["interface"], rows[0]["interface"], "{r}");
    }

    // 5. Back to round-robin through the page, then more than 1,000 connections, 8 at a time.
    let ready = blocking(&mut b, move |b| b.expect("load-ready", step)).await;
    assert_eq!(
        api(&lab, DASHBOARD, "/api/strategy").await["active"],
        "round-robin"
    );
    let start_total = ready["connections_total"].as_u64().unwrap();
    // 8 at a time, paced to last a few seconds so the page is watched while they arrive.
    let load_started = Instant::now();
    let ok = connection_burst(&ns, socks, LOAD, 8, Duration::from_millis(25)).await;
    let load_took = load_started.elapsed();
    assert_eq!(ok, LOAD, "every load connection succeeded");
    let feed = api(&lab, DASHBOARD, "/api/feed").await;
    assert_eventually_async!(
        api(&lab, DASHBOARD, "/api/feed").await["totals"]["connections_total"]
            .as_u64()
            .unwrap()
            >= start_total + LOAD as u64,
        "the engine counted the load: {}",
        feed["totals"]
    );
    let expected_total = start_total + LOAD as u64;
    let responsive = blocking(&mut b, move |b| {
        b.tell(&format!("load-done {expected_total}"));
        b.expect("responsive", step)
    })
    .await;
    let feed = api(&lab, DASHBOARD, "/api/feed").await;
    assert!(
        feed["connections"].as_array().unwrap().len() >= 1000,
        "the feed holds ≥ 1000 connections behind the table"
    );
    let shown = responsive["rows"].as_u64().unwrap();
    assert!(
        (1..=100).contains(&shown),
        "bounded table: {shown} rows ({responsive})"
    );
    assert_eq!(responsive["status"], "live");
    assert!(
        responsive["distinctTotalsDuringLoad"].as_u64().unwrap() >= 3,
        "the counter kept moving during the load: {responsive}"
    );
    for key in ["filtered", "cleared"] {
        let ms = responsive[key]["ms"].as_f64().unwrap();
        assert!(ms < 500.0, "{key} round trip {ms} ms: {responsive}");
    }
    assert!(
        responsive["maxFrameMs"].as_f64().unwrap() < 500.0,
        "{responsive}"
    );
    eprintln!("{LOAD} connections in {load_took:?}; responsiveness: {responsive}");

    // 6. A connection that times out on every link: the API and the row say which links were
    // tried, how long it really took, and why.
    failed_connection_row(&lab, &mut b, socks, step).await;

    // 7. The screenshot artifact.
    let shot_step = blocking(&mut b, move |b| b.expect("screenshot", step)).await;
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        shot.display()
    );
    assert!(
        png.len() > 20_000,
        "{} is only {} bytes",
        shot.display(),
        png.len()
    );
    // The only console error allowed is the browser's note about the deliberate wrong token.
    let errors: Vec<&Value> = shot_step["consoleErrors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap_or("").contains("status of 401"))
        .collect();
    assert!(errors.is_empty(), "console errors on the page: {errors:?}");
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());

    // 8. netmix restarts (same ports) under the open page: the page says so, and its emptied
    // connections table says "No connections yet".
    let old_start = api(&lab, DASHBOARD, "/api/feed").await["started_unix_ms"]
        .as_u64()
        .expect("started_unix_ms in the feed");
    assert!(old_start > 0);
    drop(engine);
    let engine = start_engine(&lab, "browser").await;
    let new_start = api(&lab, DASHBOARD, "/api/feed").await["started_unix_ms"]
        .as_u64()
        .unwrap();
    assert_ne!(new_start, old_start, "a new run, a new start time");
    let restart = blocking(&mut b, move |b| {
        b.tell(&format!("restarted {new_start}"));
        let r = b.expect("restart", step);
        b.expect("done", step);
        r
    })
    .await;
    let marker = restart["marker"].as_str().unwrap();
    assert!(
        marker.starts_with("netmix restarted at "),
        "the marker: {restart}"
    );
    assert_eq!(restart["markerVisible"], true, "{restart}");
    assert_eq!(restart["startedUnixMs"], new_start.to_string(), "{restart}");
    assert_eq!(restart["rows"], 0, "{restart}");
    assert_eq!(restart["noConnections"], "No connections yet.", "{restart}");
    assert_eq!(restart["noConnectionsVisible"], true, "{restart}");
    // While netmix was away the browser reports the refused WebSocket; nothing else.
    for e in restart["consoleErrors"].as_array().unwrap() {
        let e = e.as_str().unwrap_or("");
        assert!(e.contains("WebSocket"), "console error on the page: {e}");
    }
    drop(b);
    drop(engine);
}

/// Step 6: a SOCKS5 CONNECT to a port whose SYNs the lab drops fails on every link after
/// their connect deadlines; `/api/connections` and the page's row show the links tried, the
/// real duration and the error, and the header and the cards name their failure counts
/// differently.
async fn failed_connection_row(
    lab: &Lab,
    b: &mut Option<Browser>,
    socks: std::net::SocketAddr,
    step: Duration,
) {
    drop_syns_to_dropped_port(lab);
    let deadline = measured_deadlines(lab).await.into_iter().min().unwrap();
    let (code, waited) = timed_out_connection(lab.client_ns(), socks).await;
    assert_ne!(code, 0, "the CONNECT failed");
    let row = failed_row(lab).await;
    let tried: Vec<&str> = row["tried"]
        .as_array()
        .unwrap_or_else(|| panic!("tried in {row}"))
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let mut sorted = tried.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["wan0", "wan1", "wan2"], "every link tried: {row}");
    assert!(row["interface"].is_null(), "{row}");
    let error = row["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("timed out"), "{row}");
    let duration = row["duration_ms"].as_u64().unwrap();
    // Each link got its whole deadline, one after the other: the real time, not 0.
    assert!(
        duration >= deadline * tried.len() as u64,
        "duration {duration} ms < {} × {deadline} ms deadline: {row}",
        tried.len()
    );
    let waited_ms = waited.as_millis() as u64;
    assert!(
        duration <= waited_ms + 50 && waited_ms <= duration + 1000,
        "the API's {duration} ms is what the client waited ({waited_ms} ms): {row}"
    );
    let failed_total = api(lab, DASHBOARD, "/api/feed").await["totals"]["failed"]
        .as_u64()
        .unwrap();
    assert!(failed_total >= 1);

    let id = row["id"].as_u64().unwrap();
    let shown = blocking(b, move |b| {
        b.tell(&format!("failed-done {id}"));
        b.expect("failed-row", step)
    })
    .await;
    let cells = &shown["row"];
    for k in ["interface", "error", "duration"] {
        assert_eq!(cells[k]["visible"], true, "{k} cell visible: {shown}");
    }
    assert_eq!(
        cells["interface"]["text"],
        format!("tried {}", tried.join(", ")),
        "{shown}"
    );
    assert_eq!(cells["error"]["text"], error.as_str(), "{shown}");
    assert_eq!(cells["state"]["text"], "failed", "{shown}");
    let page_ms = parse_duration_ms(cells["duration"]["text"].as_str().unwrap());
    assert!(
        page_ms + 100 >= duration && page_ms >= deadline,
        "the page shows {page_ms} ms for {duration} ms: {shown}"
    );
    let columns = shown["counters"]["columns"].as_array().unwrap();
    assert_eq!(columns[7], "error", "{shown}");
    // The header counts failed connections and says so; the cards count something else
    // (failures held against one link's health) under another name.
    assert_eq!(shown["counters"]["header"], "failed connections", "{shown}");
    assert_eq!(shown["counters"]["headerValue"], failed_total, "{shown}");
    let cards = shown["counters"]["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 3, "{shown}");
    assert!(cards.iter().all(|c| c == "link failures"), "{shown}");
}

/// The page's duration text (`750 ms`, `1.2 s`) in milliseconds.
fn parse_duration_ms(text: &str) -> u64 {
    if let Some(ms) = text.strip_suffix(" ms") {
        ms.parse().unwrap_or_else(|_| panic!("duration {text:?}"))
    } else if let Some(s) = text.strip_suffix(" s") {
        (s.parse::<f64>()
            .unwrap_or_else(|_| panic!("duration {text:?}"))
            * 1000.0) as u64
    } else {
        panic!("unexpected duration text {text:?}")
    }
}

/// Loads `url` in chromium started with `flag` (a proxy setting), in the client namespace;
/// returns the script's `loaded` line, or fails with everything it said.
fn load_in_chromium(lab: &Lab, flag: &str, url: &str) -> Value {
    let script = browser_dir().join("proxy.mjs");
    let out = command_in(
        lab.client_ns(),
        &["timeout", "90", "node", script.to_str().unwrap(), flag, url],
    )
    .current_dir(browser_dir())
    .output()
    .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
    assert!(
        out.status.success() && v["step"] == "loaded",
        "chromium with {flag} could not load {url}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_loads_a_lab_page_through_the_http_proxy_and_through_the_pac_file() {
    require_browser_setup();
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = start_engine(&lab, "browser-proxy").await;
    let url = format!("http://{}/ip", netmix_integration::TARGET);
    let destination = format!("{}:80", netmix_integration::TARGET);
    let mut seen_ids = Vec::new();
    for flag in [
        format!("--proxy-server=http://{}", engine.socks_addr()),
        format!("--proxy-pac-url=http://{DASHBOARD}/proxy.pac"),
    ] {
        let loaded = load_in_chromium(&lab, &flag, &url);
        assert_eq!(loaded["status"], 200, "{flag}: {loaded}");
        let ip: std::net::IpAddr = loaded["body"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{flag}: not an address: {loaded}"));
        assert!(
            lab.link_for_source(ip).is_some(),
            "{flag}: {ip} is no lab link"
        );
        // The page came through netmix as an HTTP forward request (chromium could also reach
        // the lab directly from this namespace, so the proof is netmix's own record).
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            let rows = api(&lab, DASHBOARD, "/api/connections?limit=1000").await;
            let new = rows.as_array().and_then(|rows| {
                rows.iter()
                    .filter(|r| {
                        r["destination"] == destination.as_str() && r["protocol"] == "http-forward"
                    })
                    .filter_map(|r| r["id"].as_u64())
                    .find(|id| !seen_ids.contains(id))
            });
            match new {
                Some(id) => break id,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => panic!(
                    "{flag}: no new http-forward row for {destination}:\n{rows}\n{}",
                    engine.logs()
                ),
            }
        };
        seen_ids.push(found);
    }
}
