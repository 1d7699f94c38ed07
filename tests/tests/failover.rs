//! Health, failover and the numbers the engine reports, against faults the lab imposes on real
//! links while real clients keep connecting.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use netmix_integration::{
    DASHBOARD, Lab, LinkSpec, Sample, api, assert_eventually_async, iface_json, run_netmix,
    set_lab_delay_bin, spawn_engine, steady_stream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROBE_MS: u64 = 300;

/// Probing every 300 ms, quick ejection and readmission, strategy round-robin.
fn config(extra: &str) -> String {
    format!(
        "strategy = \"round-robin\"\n{extra}\n[interfaces]\ninclude = [\"wan*\"]\n\n[discovery]\nrescan_interval_ms = 1000\n\n\
         [health]\nprobe_targets = [\"198.19.0.1:7\"]\nprobe_interval_ms = {PROBE_MS}\nprobe_timeout_ms = 400\n\
         failures_to_down = 2\nsuccesses_to_up = 2\neject_base_ms = 1000\neject_max_ms = 4000\n"
    )
}

async fn health(lab: &Lab, name: &str) -> String {
    iface_json(lab, name)
        .await
        .map(|i| i["health"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Polls the dashboard API until `name` reports `want`; returns how long that took.
async fn time_until_health(lab: &Lab, name: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while health(lab, name).await != want {
        assert!(
            start.elapsed() < limit,
            "{name} did not become {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn failed(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.code != 0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_down_during_a_stream_costs_no_client_connection() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &config(""));
    for name in ["wan0", "wan1", "wan2"] {
        time_until_health(&lab, name, "up", Duration::from_secs(5)).await;
    }
    let socks = engine.socks_addr();
    let fault_at = Instant::now() + Duration::from_millis(800);
    let (samples, marked_down) = tokio::join!(
        steady_stream(
            &lab,
            socks,
            Duration::from_millis(3000),
            Duration::from_millis(20)
        ),
        async {
            tokio::time::sleep_until(fault_at.into()).await;
            lab.set_link_down(1);
            time_until_health(&lab, "wan1", "down", Duration::from_secs(3)).await
        }
    );
    assert!(samples.len() > 50, "a steady stream: {}", samples.len());
    assert!(
        failed(&samples).is_empty(),
        "no client connection failed: {:?}",
        failed(&samples)
    );
    let after: Vec<_> = samples
        .iter()
        .filter(|s| s.at > fault_at + marked_down)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|s| s.link != Some(1)),
        "nothing goes to the down link once it is Down"
    );
    // Marked Down at the first failure or within one probe interval (+ the API's 500 ms feed).
    assert!(
        marked_down <= Duration::from_millis(PROBE_MS + 700),
        "marked Down after {marked_down:?}"
    );

    lab.set_link_up(1);
    let back = time_until_health(&lab, "wan1", "up", Duration::from_secs(5)).await;
    // Up again after two good probes (plus the discovery rescan that sees the link up).
    assert!(
        back >= Duration::from_millis(PROBE_MS),
        "needs successes_to_up probes, took {back:?}"
    );
    let logs = engine.logs();
    assert!(
        logs.contains("Interface is Up. iface=wan1 from=Degraded why=\"probe succeeded\""),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_is_ejected_and_costs_each_client_at_most_the_adaptive_timeout() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &config("[failover]\nmin_connect_ms = 250\n"));
    for name in ["wan0", "wan1", "wan2"] {
        time_until_health(&lab, name, "up", Duration::from_secs(5)).await;
    }
    // Once probes have measured it, the adaptive per-attempt deadline on an undelayed link sits
    // at its 250 ms floor (before the first probe it is the configured 5 s).
    assert_eventually_async!(
        iface_json(&lab, "wan2").await.unwrap()["connect_timeout_ms"].as_u64() == Some(250),
        "adaptive deadline from measured latency"
    );
    let deadline_ms: u64 = 250;

    let socks = engine.socks_addr();
    let fault_at = Instant::now() + Duration::from_millis(800);
    let (samples, ejected) = tokio::join!(
        steady_stream(
            &lab,
            socks,
            Duration::from_millis(3500),
            Duration::from_millis(20)
        ),
        async {
            tokio::time::sleep_until(fault_at.into()).await;
            lab.blackhole(2, true);
            time_until_health(&lab, "wan2", "down", Duration::from_secs(4)).await
        }
    );
    assert!(
        failed(&samples).is_empty(),
        "no client connection failed: {:?}",
        failed(&samples)
    );
    let worst = samples
        .iter()
        .filter(|s| s.at >= fault_at)
        .map(|s| s.took)
        .max()
        .unwrap();
    assert!(
        worst <= Duration::from_millis(deadline_ms + 250),
        "an affected connection waited {worst:?}, more than the {deadline_ms} ms deadline"
    );
    let slow = samples
        .iter()
        .filter(|s| s.at >= fault_at && s.took >= Duration::from_millis(200))
        .count();
    assert!(
        slow >= 1,
        "the blackhole was hit at least once before ejection"
    );
    assert!(
        ejected < Duration::from_secs(2),
        "ejected after {ejected:?}"
    );
    let after: Vec<_> = samples
        .iter()
        .filter(|s| s.at > fault_at + ejected)
        .collect();
    assert!(
        after.iter().all(|s| s.link != Some(2)),
        "nothing goes to the ejected link"
    );

    lab.blackhole(2, false);
    time_until_health(&lab, "wan2", "up", Duration::from_secs(8)).await;
    let j = iface_json(&lab, "wan2").await.unwrap();
    assert!(j["ejections"].as_u64().unwrap() >= 1, "{j}");
    assert!(j["failures"].as_u64().unwrap() >= 2, "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_stats_match_what_the_lab_imposes() {
    set_lab_delay_bin(env!("CARGO_BIN_EXE_lab-delay"));
    let lab = Lab::new(&[
        LinkSpec::plain().delay(40),
        LinkSpec::plain().delay(5),
        LinkSpec::plain().delay(20),
    ]);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &config(""));
    // Latency order and size.
    let mut lat = [0.0f64; 3];
    for (k, name) in ["wan0", "wan1", "wan2"].iter().enumerate() {
        assert_eventually_async!(
            iface_json(&lab, name)
                .await
                .is_some_and(|i| i["latency_history"]
                    .as_array()
                    .is_some_and(|h| h.len() >= 3)),
            "{name} has probe samples"
        );
        lat[k] = iface_json(&lab, name).await.unwrap()["latency_ms"]
            .as_f64()
            .unwrap();
    }
    assert!(
        lat[1] < lat[2] && lat[2] < lat[0],
        "latency order follows the delays: {lat:?}"
    );
    for (k, delay) in [40.0, 5.0, 20.0].iter().enumerate() {
        assert!(
            lat[k] >= delay * 0.9 && lat[k] <= delay + 15.0,
            "link {k}: {} ms for a {delay} ms delay",
            lat[k]
        );
    }

    // Active connections: six held open, round-robin puts two on each link.
    let mut held = Vec::new();
    for _ in 0..6 {
        let s = lab.connect_client(engine.socks_addr()).await;
        let t = netmix_integration::Target::Ip(
            (netmix_integration::TARGET, netmix_integration::ECHO_PORT).into(),
        );
        let r = netmix_integration::socks5_connect(s, t, None)
            .await
            .unwrap();
        assert_eq!(r.code, 0);
        held.push(r.stream);
    }
    for name in ["wan0", "wan1", "wan2"] {
        assert_eventually_async!(
            iface_json(&lab, name).await.unwrap()["active"] == 2,
            "{name} reports 2 active connections"
        );
    }
    // Bytes: 2 MB echoed back through each held connection's link.
    let payload = vec![7u8; 2_000_000 / 6];
    for s in &mut held {
        s.write_all(&payload).await.unwrap();
        let mut back = vec![0u8; payload.len()];
        s.read_exact(&mut back).await.unwrap();
    }
    drop(held);
    for name in ["wan0", "wan1", "wan2"] {
        assert_eventually_async!(
            {
                let i = iface_json(&lab, name).await.unwrap();
                i["active"] == 0
                    && i["bytes_up"].as_u64().unwrap() >= 2 * payload.len() as u64
                    && i["bytes_down"].as_u64().unwrap() >= 2 * payload.len() as u64
            },
            "{name} reports the bytes that crossed it"
        );
    }
    // `netmix status` prints the same numbers for a terminal.
    let out = run_netmix(&lab, &["status"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["wan0", "wan1", "wan2"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("up"), "{line}");
    }
    let _ = api(&lab, DASHBOARD, "/api/interfaces").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_failover_the_dead_link_costs_clients() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    // No probes, no failover: the only protection is discovery's rescan.
    let cfg = "strategy = \"round-robin\"\n[failover]\nenabled = false\n\n[interfaces]\ninclude = [\"wan*\"]\n\n[discovery]\nrescan_interval_ms = 5000\n";
    let engine = spawn_engine(&lab, cfg);
    // All three joined (else round-robin may never pick the link that goes down).
    assert_eventually_async!(
        api(&lab, DASHBOARD, "/api/interfaces")
            .await
            .as_array()
            .is_some_and(|a| a.len() == 3),
        "three links joined"
    );
    lab.set_link_down(1);
    let samples = steady_stream(
        &lab,
        engine.socks_addr(),
        Duration::from_millis(600),
        Duration::from_millis(20),
    )
    .await;
    assert!(
        !failed(&samples).is_empty(),
        "with failover off, the down link fails some clients"
    );
    assert!(
        failed(&samples).iter().all(|s| s.code == 0x03),
        "network unreachable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_log_records_every_candidate() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let log = std::env::temp_dir().join(format!("netmix-connlog-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let engine = spawn_engine(
        &lab,
        &config(&format!("connection_log = \"{}\"\n", log.display())),
    );
    for name in ["wan0", "wan1", "wan2"] {
        time_until_health(&lab, name, "up", Duration::from_secs(5)).await;
        // Probed at least once, so the decision-time stats below have a latency to record.
        assert_eventually_async!(
            iface_json(&lab, name).await.unwrap()["latency_ms"].is_number(),
            "{name} measured"
        );
    }
    let samples = steady_stream(
        &lab,
        engine.socks_addr(),
        Duration::from_millis(300),
        Duration::from_millis(30),
    )
    .await;
    assert!(failed(&samples).is_empty());
    assert_eventually_async!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            >= samples.len(),
        "one line per connection"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert_eq!(
            r["candidates"].as_array().unwrap().len(),
            3,
            "every candidate: {r}"
        );
        assert!(
            r["candidates"][0]["latency_ewma_us"].is_number(),
            "stats at decision time: {r}"
        );
        assert_eq!(r["ok"], true);
        let chosen = r["chosen"].as_str().unwrap();
        assert!(chosen.starts_with("wan"), "{r}");
        assert!(r["bytes_down"].as_u64().unwrap() > 0, "{r}");
        assert!(
            r["reason"].as_str().unwrap().starts_with("round-robin"),
            "{r}"
        );
        assert_eq!(
            r["attempts"].as_array().unwrap().last().unwrap()["interface"],
            chosen
        );
    }
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_a_second_interface_hides_a_blackhole() {
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    // A long per-attempt deadline, but the next interface starts racing after 100 ms.
    let engine = spawn_engine(
        &lab,
        "strategy = \"round-robin\"\n[interfaces]\ninclude = [\"wan*\"]\n[timeouts]\nconnect_ms = 3000\n\
         [failover]\nadaptive_timeout = false\nrace_after_ms = 100\n",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    lab.blackhole(0, true);
    let samples = steady_stream(
        &lab,
        engine.socks_addr(),
        Duration::from_millis(1500),
        Duration::from_millis(50),
    )
    .await;
    assert!(failed(&samples).is_empty(), "{:?}", failed(&samples));
    assert!(
        samples.iter().all(|s| s.link == Some(1)),
        "only the healthy link carried traffic"
    );
    let worst = samples.iter().map(|s| s.took).max().unwrap();
    assert!(
        worst < Duration::from_millis(1000),
        "the race answered long before the 3 s deadline: {worst:?}"
    );
    assert!(
        samples.iter().any(|s| s.took >= Duration::from_millis(100)),
        "some connections did start on the black-holed link and were raced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_destination_does_not_count_against_the_links() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &config(""));
    for name in ["wan0", "wan1", "wan2"] {
        time_until_health(&lab, name, "up", Duration::from_secs(5)).await;
    }
    for _ in 0..12 {
        let s = lab.connect_client(engine.socks_addr()).await;
        let target = netmix_integration::Target::Ip(
            (netmix_integration::TARGET, netmix_integration::REFUSED_PORT).into(),
        );
        let r = netmix_integration::socks5_connect(s, target, None)
            .await
            .unwrap();
        assert_eq!(r.code, 0x05, "refused, answered at once");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for name in ["wan0", "wan1", "wan2"] {
        let i = iface_json(&lab, name).await.unwrap();
        assert_eq!(i["health"], "up", "{i}");
        assert_eq!(
            i["failures"], 0,
            "the destination's refusal is not the link's failure: {i}"
        );
    }
}
