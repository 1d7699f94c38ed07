//! Strategy plugins end to end: the real built libraries, loaded by a real netmix from a
//! plugins folder, steering real connections over the lab's links.

#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netmix_integration::client::by_name;
use netmix_integration::{
    DASHBOARD, ECHO_PORT, Lab, LinkSpec, TARGET, Target, api, assert_eventually_async, iface_json,
    netmix_bin, set_lab_delay_bin, socks5_connect, spawn_engine, spread,
};

/// The built library of package `netmix-<stem>` next to the netmix binary.
fn built(stem: &str) -> PathBuf {
    let path = netmix_bin()
        .parent()
        .unwrap()
        .join(format!("libnetmix_{stem}.so"));
    assert!(
        path.exists(),
        "{} missing: build the plugins first: cargo build --workspace",
        path.display()
    );
    path
}

/// A fresh plugins folder holding copies of the given libraries (as a user drops them in).
fn plugins_dir(tag: &str, libs: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netmix-plugins-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (stem, file) in libs {
        let to = dir.join(file);
        std::fs::copy(built(stem), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

fn config(dir: &Path, strategy: &str, extra: &str) -> String {
    format!(
        "strategy = \"{strategy}\"\n{extra}\n[plugins]\ndir = \"{}\"\n\n[interfaces]\ninclude = [\"wan*\"]\n\n\
         [discovery]\nrescan_interval_ms = 300\n\n[timeouts]\nconnect_ms = 2000\n",
        dir.display()
    )
}

const ALL: [(&str, &str); 3] = [
    ("strategy_round_robin", "libnetmix_strategy_round_robin.so"),
    ("strategy_latency", "libnetmix_strategy_latency.so"),
    ("strategy_sticky", "libnetmix_strategy_sticky.so"),
];

/// The newest `n` connections from the dashboard API, once the feed has caught up.
async fn recent_connections(lab: &Lab, n: usize) -> serde_json::Value {
    let path = format!("/api/connections?limit={n}");
    let mut list = api(lab, DASHBOARD, &path).await;
    for _ in 0..40 {
        if list
            .as_array()
            .is_some_and(|a| a.len() >= n && a.iter().all(|c| c["state"] != "open"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        list = api(lab, DASHBOARD, &path).await;
    }
    list
}

async fn wait_joined(engine: &netmix_integration::Engine, n: usize) {
    assert_eventually_async!(
        engine.logs().matches("Interface joined.").count() >= n,
        "{n} interfaces joined:\n{}",
        engine.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_plugin_spreads_and_honours_weights() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let dir = plugins_dir("rr", &ALL[..1]);

    let engine = spawn_engine(&lab, &config(&dir, "round-robin", ""));
    wait_joined(&engine, 3).await;
    assert!(
        engine
            .logs()
            .contains("Plugin loaded. strategy=round-robin"),
        "{}",
        engine.logs()
    );
    let counts = spread(&lab, &engine, 30).await;
    assert_eq!(counts, vec![10, 10, 10], "{:?}", by_name(&lab, &counts));
    let strategy = api(&lab, DASHBOARD, "/api/strategy").await;
    assert_eq!(strategy["active"], "round-robin");
    assert_eq!(strategy["fallback_active"], false);
    let conns = recent_connections(&lab, 5).await;
    let reason = conns[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("round-robin "),
        "the plugin's reason: {reason}"
    );
    drop(engine);

    let weights = "[[interface]]\nname = \"wan0\"\nweight = 1\n[[interface]]\nname = \"wan1\"\nweight = 2\n\
                   [[interface]]\nname = \"wan2\"\nweight = 3\n";
    let engine = spawn_engine(&lab, &config(&dir, "round-robin", weights));
    wait_joined(&engine, 3).await;
    let counts = spread(&lab, &engine, 30).await;
    assert_eq!(counts, vec![5, 10, 15], "{:?}", by_name(&lab, &counts));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_plugin_prefers_the_fastest_link_then_spreads_under_load() {
    set_lab_delay_bin(env!("CARGO_BIN_EXE_lab-delay"));
    let lab = Lab::new(&[
        LinkSpec::plain().delay(60),
        LinkSpec::plain().delay(5),
        LinkSpec::plain().delay(30),
    ]);
    let _servers = lab.start_servers().await;
    let dir = plugins_dir("lat", &ALL);
    let probes = "[health]\nprobe_targets = [\"198.19.0.1:7\"]\nprobe_interval_ms = 300\n";
    let engine = spawn_engine(&lab, &config(&dir, "latency", probes));
    wait_joined(&engine, 3).await;
    // Every link measured by the prober.
    for name in ["wan0", "wan1", "wan2"] {
        assert_eventually_async!(
            iface_json(&lab, name)
                .await
                .is_some_and(|i| i["latency_ms"].is_number()),
            "{name} has a latency measurement"
        );
    }
    // Short connections all go to the 5 ms link.
    let counts = spread(&lab, &engine, 10).await;
    assert_eq!(
        counts,
        vec![0, 10, 0],
        "new connections pick the least delay: {:?}",
        by_name(&lab, &counts)
    );

    // Long-lived connections: once wan1 carries several, the others get new ones.
    let mut held = Vec::new();
    let mut per_link = [0usize; 3];
    for _ in 0..12 {
        let s = lab.connect_client(engine.socks_addr()).await;
        let r = socks5_connect(s, Target::Ip((TARGET, ECHO_PORT).into()), None)
            .await
            .unwrap();
        assert_eq!(r.code, 0);
        let k = lab.link_for_source(r.bound.ip()).unwrap();
        per_link[k] += 1;
        held.push(r.stream);
        // Let the open connection reach the interface's numbers before the next pick.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        per_link[1] >= 4,
        "the fastest link still carries the most: {per_link:?}"
    );
    assert!(
        per_link[1] < 12,
        "but not all once it is busy: {per_link:?}"
    );
    assert!(
        per_link[2] >= 1,
        "the next fastest takes some: {per_link:?}"
    );
    assert!(
        per_link[1] >= per_link[2] && per_link[2] >= per_link[0],
        "ordered by delay: {per_link:?}"
    );
    for (k, name) in ["wan0", "wan1", "wan2"].iter().enumerate() {
        assert_eventually_async!(
            iface_json(&lab, name).await.unwrap()["active"].as_u64() == Some(per_link[k] as u64),
            "the API's active count for {name} matches the {} held connections",
            per_link[k]
        );
    }
    drop(held);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugins_are_refused_in_one_line_and_a_panicking_one_falls_back() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let dir = plugins_dir(
        "bad",
        &[
            ("strategy_round_robin", "libnetmix_strategy_round_robin.so"),
            ("fixture_abi_mismatch", "libnetmix_strategy_old_layout.so"),
            ("fixture_not_a_plugin", "libnot_a_plugin.so"),
            ("fixture_panicky", "libnetmix_strategy_panicky.so"),
        ],
    );
    std::fs::write(dir.join("garbage.so"), b"not an ELF file").unwrap();
    let engine = spawn_engine(&lab, &config(&dir, "panicky", ""));
    wait_joined(&engine, 3).await;
    let logs = engine.logs();
    let refused = |file: &str, cause: &str| {
        let line = logs
            .lines()
            .find(|l| l.contains("Plugin refused") && l.contains(file))
            .unwrap_or_else(|| panic!("{file} refused:\n{logs}"));
        assert!(
            line.contains(&dir.join(file).display().to_string()),
            "names the file: {line}"
        );
        assert!(line.contains(cause), "says why ({cause}): {line}");
        assert!(line.len() < 400, "one short line: {line}");
    };
    refused("libnetmix_strategy_old_layout.so", "ABI mismatch");
    refused("libnot_a_plugin.so", "not a netmix plugin");
    refused("garbage.so", "not a complete library file");
    assert!(
        logs.contains("Plugin loaded. strategy=round-robin"),
        "the good one still loads"
    );

    // The panicking plugin is selected; every connection still goes out, via the fallback.
    let counts = spread(&lab, &engine, 9).await;
    assert_eq!(counts.iter().sum::<usize>(), 9);
    assert_eq!(
        counts,
        vec![3, 3, 3],
        "built-in round-robin answered: {counts:?}"
    );
    let logs = engine.logs();
    let failures: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Strategy plugin failed"))
        .collect();
    assert_eq!(failures.len(), 1, "logged once:\n{logs}");
    assert!(
        failures[0].contains("plugin=panicky"),
        "names the plugin: {}",
        failures[0]
    );
    assert!(
        !logs.contains("panicked at"),
        "the plugin's panic is not dumped on stderr:\n{logs}"
    );
    // The plugin's own log line went through the engine's log, attributed to it.
    let own = logs
        .lines()
        .find(|l| l.contains("panicky fixture constructed"))
        .unwrap_or_else(|| panic!("the plugin's log line:\n{logs}"));
    assert!(
        own.contains("netmix::plugin") && own.contains("plugin=panicky"),
        "{own}"
    );
    let strategy = api(&lab, DASHBOARD, "/api/strategy").await;
    assert_eq!(strategy["active"], "panicky");
    let has_event =
        |events: &serde_json::Value, needle: &str| {
            events.as_array().unwrap().iter().any(|e| {
                e["kind"] == "plugin_error" && e["message"].as_str().unwrap().contains(needle)
            })
        };
    assert_eventually_async!(
        has_event(
            &api(&lab, DASHBOARD, "/api/events?limit=100").await,
            "panicky failed"
        ),
        "the dashboard's event log shows the plugin error"
    );
    let events = api(&lab, DASHBOARD, "/api/events?limit=100").await;
    assert!(
        has_event(&events, "old_layout.so: ABI mismatch"),
        "refusals are events too: {events}"
    );
    let conns = recent_connections(&lab, 3).await;
    assert!(
        conns[0]["strategy"].as_str().unwrap().contains("fallback"),
        "{conns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_strategy_in_the_config_switches_plugins() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let dir = plugins_dir("switch", &ALL);
    for name in ["round-robin", "latency", "sticky"] {
        let engine = spawn_engine(&lab, &config(&dir, name, ""));
        wait_joined(&engine, 3).await;
        spread(&lab, &engine, 3).await;
        let strategy = api(&lab, DASHBOARD, "/api/strategy").await;
        assert_eq!(strategy["active"], name);
        assert_eq!(strategy["fallback_active"], false);
        let conns = recent_connections(&lab, 3).await;
        for c in conns.as_array().unwrap() {
            assert_eq!(c["strategy"], name, "{c}");
        }
    }
    // A strategy that does not exist: the built-in answers, and says so.
    let engine = spawn_engine(&lab, &config(&dir, "no-such-strategy", ""));
    wait_joined(&engine, 3).await;
    assert_eq!(spread(&lab, &engine, 3).await.iter().sum::<usize>(), 3);
    assert!(
        engine
            .logs()
            .contains("the built-in round-robin answers instead"),
        "{}",
        engine.logs()
    );
    let strategy = api(&lab, DASHBOARD, "/api/strategy").await;
    assert_eq!(strategy["fallback_active"], true, "{strategy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_in_sticky_example_keeps_a_destination_on_one_link() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    // Only the example plugin, dropped into an otherwise empty folder.
    let dir = plugins_dir("sticky", &ALL[2..]);
    let engine = spawn_engine(
        &lab,
        &config(&dir, "sticky", "[strategies.sticky]\nttl_secs = 60\n"),
    );
    wait_joined(&engine, 3).await;
    let counts = spread(&lab, &engine, 10).await;
    assert_eq!(
        counts.iter().filter(|&&c| c == 10).count(),
        1,
        "one link carried all: {counts:?}"
    );
    let conns = recent_connections(&lab, 10).await;
    let reasons: Vec<&str> = conns
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().filter(|r| r.starts_with("sticky")).count() >= 9,
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_site_stickiness_works_over_any_strategy() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let dir = plugins_dir("site", &ALL[..1]);
    let engine = spawn_engine(&lab, &config(&dir, "round-robin", "sticky_ttl_secs = 60\n"));
    wait_joined(&engine, 3).await;
    let counts = spread(&lab, &engine, 9).await;
    assert_eq!(
        counts.iter().filter(|&&c| c == 9).count(),
        1,
        "same site, same link: {counts:?}"
    );
    let conns = recent_connections(&lab, 9).await;
    let sticky = conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["reason"]
                .as_str()
                .unwrap()
                .starts_with("sticky: 198.19.0.1")
        })
        .count();
    assert_eq!(sticky, 8, "all but the first say they were sticky: {conns}");
    drop(engine);

    // Off by default: the same nine connections spread.
    let engine = spawn_engine(&lab, &config(&dir, "round-robin", ""));
    wait_joined(&engine, 3).await;
    assert_eq!(spread(&lab, &engine, 9).await, vec![3, 3, 3]);
}
