//! ZeroTier end to end: a stand-in for ZeroTier One's local API (the real service cannot be
//! installed here), a `ztlab0001` interface leading to a "ZeroTier subnet" namespace, and the
//! `zerotier` strategy plugin loaded by a real netmix.

#![cfg(target_os = "linux")]

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netmix_integration::{
    DASHBOARD, Engine, Lab, StandIn, Target, ZtSite, api, assert_eventually_async, iface_json,
    netmix_bin, network_json, peer_json, socks5_connect, spawn_engine, spread,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NET: &str = "8056c2e21c000001";
const DEV: &str = "ztlab0001";

/// A plugins folder holding only the built zerotier plugin.
fn plugins_dir(tag: &str) -> PathBuf {
    let built = netmix_bin()
        .parent()
        .unwrap()
        .join("libnetmix_strategy_zerotier.so");
    assert!(
        built.exists(),
        "{} missing: build the plugins first: cargo build --workspace",
        built.display()
    );
    let dir = std::env::temp_dir().join(format!("netmix-zt-plugins-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = dir.join("libnetmix_strategy_zerotier.so");
    std::fs::copy(&built, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir
}

fn config(plugins: &Path, zt_home: &Path) -> String {
    format!(
        "strategy = \"zerotier\"\n\n[strategies.zerotier]\nbase = \"latency\"\n\n\
         [plugins]\ndir = \"{}\"\n\n[interfaces]\ninclude = [\"wan*\", \"zt*\"]\n\n\
         [discovery]\nrescan_interval_ms = 300\n\n[timeouts]\nconnect_ms = 2000\n\n\
         [health]\nfailures_to_down = 50\n\n\
         [zerotier]\nhome = \"{}\"\npoll_interval_ms = 200\n",
        plugins.display(),
        zt_home.display()
    )
}

/// Connects through netmix to `dest` and reads the who-am-I answer: (SOCKS code, answer).
async fn whoami_at(lab: &Lab, engine: &Engine, dest: SocketAddr) -> (u8, String) {
    let stream = lab.connect_client(engine.socks_addr()).await;
    let mut reply = tokio::time::timeout(
        Duration::from_secs(20),
        socks5_connect(stream, Target::Ip(dest), None),
    )
    .await
    .expect("SOCKS exchange timed out")
    .expect("SOCKS exchange");
    let mut seen = String::new();
    if reply.code == 0 {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            reply.stream.read_to_string(&mut seen),
        )
        .await;
    }
    (reply.code, seen.trim().to_owned())
}

async fn zt(lab: &Lab) -> serde_json::Value {
    api(lab, DASHBOARD, "/api/zerotier").await
}

fn network(z: &serde_json::Value) -> &serde_json::Value {
    &z["networks"][0]
}

async fn wait_joined(engine: &Engine, n: usize) {
    assert_eventually_async!(
        engine.logs().matches("Interface joined.").count() >= n,
        "{n} interfaces joined:\n{}",
        engine.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zerotier_subnet_goes_through_its_interface_and_nothing_else_does() {
    let lab = Lab::with_links(2);
    let servers = lab.start_servers().await;
    let site = ZtSite::new(&lab, DEV, 200);
    let mut standin = StandIn::start(lab.client_ns());
    let assigned = ["198.18.200.2/24"];
    let routes = [("198.18.200.0/24", None)];
    standin.put_network(network_json(
        NET,
        DEV,
        "REQUESTING_CONFIGURATION",
        &assigned,
        &routes,
    ));
    standin.put_peer(peer_json("cafe04eba9", "PLANET", Some(80), true));
    standin.put_peer(peer_json("992fcf1db7", "LEAF", Some(12), true));
    standin.put_peer(peer_json("a1b2c3d4e5", "LEAF", None, false));
    let first_token = standin.token();

    let dir = plugins_dir("main");
    let engine = spawn_engine(&lab, &config(&dir, standin.home()));
    wait_joined(&engine, 3).await;

    // Still joining: no route yet, so the subnet is not reached through ztlab0001.
    assert_eventually_async!(
        network(&zt(&lab).await)["status"] == "REQUESTING_CONFIGURATION",
        "the dashboard shows the joining network: {}",
        zt(&lab).await
    );
    let (code, _) = whoami_at(&lab, &engine, site.server).await;
    assert_ne!(code, 0, "no ZeroTier route yet");
    assert_eq!(site.seen_total(), 0);

    // OK: the subnet goes through the ZeroTier interface.
    standin.put_network(network_json(NET, DEV, "OK", &assigned, &routes));
    assert_eventually_async!(
        network(&zt(&lab).await)["routes"][0]["usable"] == true,
        "the route becomes usable: {}",
        zt(&lab).await
    );
    for i in 0..3 {
        let (code, seen) = whoami_at(&lab, &engine, site.server).await;
        assert_eq!(code, 0, "subnet connection {i}:\n{}", engine.logs());
        assert_eq!(seen, site.client_addr.to_string(), "left through {DEV}");
    }
    assert_eq!(site.seen_total(), 3);

    // Everything else never does (spread() panics on a source that is no wan link).
    let counts = spread(&lab, &engine, 6).await;
    assert_eq!(counts.iter().sum::<usize>(), 6);
    assert_eq!(servers.seen_from(site.client_addr), 0);
    assert_eq!(site.seen_total(), 3);
    let ztif = iface_json(&lab, DEV).await.expect("ztlab0001 in the API");
    assert_eq!(ztif["kind"], "zerotier");
    assert_eq!(ztif["failures"], 0, "never tried for other traffic: {ztif}");

    // The feed publishes every 500 ms: wait until it holds all ten connections.
    assert_eventually_async!(
        api(&lab, DASHBOARD, "/api/connections?limit=20")
            .await
            .as_array()
            .is_some_and(|a| a.len() >= 10),
        "the feed shows every connection"
    );
    let conns = api(&lab, DASHBOARD, "/api/connections?limit=20").await;
    let reasons: Vec<&str> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    let expected = format!("zerotier: 198.18.200.0/24 via {DEV} (network {NET})");
    assert_eq!(
        reasons.iter().filter(|r| **r == expected).count(),
        3,
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .filter(|r| r.starts_with("base latency: "))
            .count()
            >= 6,
        "{reasons:?}"
    );

    // Peers: latency and direct/relayed, and a peer going relayed.
    let z = zt(&lab).await;
    assert_eq!(z["service"], "ok");
    assert_eq!(z["online"], true);
    let peer = |z: &serde_json::Value, a: &str| {
        z["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"] == a)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(peer(&z, "992fcf1db7")["path"], "direct");
    assert_eq!(peer(&z, "992fcf1db7")["latency_ms"], 12);
    assert_eq!(peer(&z, "a1b2c3d4e5")["path"], "relayed");
    assert!(
        peer(&z, "a1b2c3d4e5")["latency_ms"].is_null(),
        "-1 is unknown"
    );
    standin.set_peer_direct("992fcf1db7", false, None);
    assert_eventually_async!(
        peer(&zt(&lab).await, "992fcf1db7")["path"] == "relayed",
        "the peer went relayed"
    );

    // ACCESS_DENIED: the routes are gone at once; new subnet connections avoid ztlab0001.
    standin.set_status(NET, "ACCESS_DENIED");
    assert_eventually_async!(
        network(&zt(&lab).await)["status"] == "ACCESS_DENIED",
        "the dashboard shows the denial"
    );
    let (code, seen) = whoami_at(&lab, &engine, site.server).await;
    assert!(
        code != 0 || seen != site.client_addr.to_string(),
        "not through {DEV}"
    );
    assert_eq!(site.seen_total(), 3, "no new connection reached the subnet");
    let ztif = iface_json(&lab, DEV).await.unwrap();
    assert_eq!(ztif["failures"], 0, "{ztif}");

    // The service restarts on a new port with a new token: the agent re-reads both.
    standin.put_network(network_json(NET, DEV, "OK", &assigned, &routes));
    let old_port = standin.port();
    standin.restart();
    assert_ne!(standin.port(), old_port);
    let port = u64::from(standin.port());
    assert_eventually_async!(
        {
            let z = zt(&lab).await;
            z["port"] == port && z["service"] == "ok" && network(&z)["status"] == "OK"
        },
        "the agent follows the restarted service: {}",
        zt(&lab).await
    );
    let (code, seen) = whoami_at(&lab, &engine, site.server).await;
    assert_eq!(code, 0, "{}", engine.logs());
    assert_eq!(seen, site.client_addr.to_string());
    assert_eq!(site.seen_total(), 4);

    // The token never reaches the logs, the API or the page.
    let logs = engine.logs();
    let feed = api(&lab, DASHBOARD, "/api/feed").await.to_string();
    for token in [first_token, standin.token()] {
        assert!(!logs.contains(&token), "token in the log");
        assert!(!feed.contains(&token), "token in the feed");
    }
    assert!(
        logs.matches("ZeroTier service not usable").count() <= 1,
        "a failure is logged once:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_one_clear_line_and_netmix_keeps_serving() {
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    let standin = StandIn::start(lab.client_ns());
    let token_file = standin.home().join("authtoken.secret");
    std::fs::remove_file(&token_file).unwrap();
    let dir = plugins_dir("notoken");
    let engine = spawn_engine(&lab, &config(&dir, standin.home()));
    wait_joined(&engine, 2).await;
    assert_eventually_async!(
        engine.logs().contains("no ZeroTier auth token"),
        "the missing token is reported:\n{}",
        engine.logs()
    );
    // Let it retry a few times (0.5 s, 1 s, ...): still one line.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let logs = engine.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("no ZeroTier auth token"))
        .collect();
    assert_eq!(lines.len(), 1, "once:\n{logs}");
    let line = lines[0];
    for path in [
        token_file.display().to_string(),
        ".zeroTierOneAuthToken".to_owned(),
        "/var/lib/zerotier-one/authtoken.secret".to_owned(),
    ] {
        assert!(line.contains(&path), "names {path}: {line}");
    }
    assert!(line.contains("not found"), "{line}");
    assert_eq!(zt(&lab).await["service"], "no_token");
    // netmix keeps serving.
    assert_eq!(spread(&lab, &engine, 4).await.iter().sum::<usize>(), 4);
    // The token appears: the agent picks it up on a later retry.
    std::fs::write(&token_file, standin.token()).unwrap();
    assert_eventually_async!(
        zt(&lab).await["service"] == "ok",
        "recovers once the token is readable: {}",
        zt(&lab).await
    );
}

/// A raw HTTP GET to the stand-in inside the client namespace: (status, body).
async fn raw_get(lab: &Lab, port: u16, target: &str, headers: &str) -> (u16, String) {
    let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
    let mut s = lab.connect_client(addr).await;
    let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standin_follows_the_documented_quirks() {
    let lab = Lab::with_links(1);
    let standin = StandIn::start(lab.client_ns());
    standin.put_network(network_json(NET, DEV, "OK", &["10.147.20.190/24"], &[]));
    standin.put_peer(peer_json("992fcf1db7", "LEAF", Some(40), true));
    let p = standin.port();
    let good = format!("X-ZT1-Auth: {}\r\n", standin.token());
    assert_eq!(
        std::fs::read_to_string(standin.home().join("zerotier-one.port")).unwrap(),
        p.to_string()
    );
    assert_eq!(raw_get(&lab, p, "/status", "").await, (401, "{}".into()));
    assert_eq!(
        raw_get(&lab, p, "/status", "X-ZT1-Auth: wrong\r\n").await,
        (401, "{}".into())
    );
    // A wrong header fails even with a right ?auth= (the service's else-if chain).
    let q = format!("/status?auth={}", standin.token());
    assert_eq!(raw_get(&lab, p, &q, "X-ZT1-Auth: wrong\r\n").await.0, 401);
    assert_eq!(raw_get(&lab, p, &q, "").await.0, 200);
    let bearer = format!("Authorization: Bearer {}\r\n", standin.token());
    assert_eq!(raw_get(&lab, p, "/status", &bearer).await.0, 200);
    let (code, body) = raw_get(&lab, p, "/status", &good).await;
    assert_eq!(code, 200);
    assert!(
        body.starts_with("{\"address\":\"0deadbeef1\",\"clock\":"),
        "sorted keys: {body}"
    );
    assert_eq!(
        raw_get(&lab, p, "/peer/00000000ff", &good).await,
        (200, "{}".into())
    );
    assert_eq!(
        raw_get(&lab, p, "/network/ffffffffffffffff", &good).await,
        (404, "{}".into())
    );
    assert_eq!(raw_get(&lab, p, "/network/abc", &good).await.0, 404);
    let (code, body) = raw_get(&lab, p, &format!("/network/{NET}"), &good).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"portDeviceName\":\"ztlab0001\""), "{body}");
    let (_, body) = raw_get(&lab, p, "/peer/992fcf1db7", &good).await;
    assert!(body.contains("\"latency\":40"), "{body}");
    assert_eq!(raw_get(&lab, p, "/health", "").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_zerotier_is_one_short_info_line_and_not_installed_in_the_api() {
    // The lab machine has no ZeroTier One: no token file in any known place, nothing on 9993.
    for f in [
        "/var/lib/zerotier-one/authtoken.secret",
        "/var/lib/zerotier-one/zerotier-one.port",
    ] {
        assert!(
            !Path::new(f).exists(),
            "this test needs a machine without ZeroTier One ({f} exists)"
        );
    }
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    // A default config: the ZeroTier agent is on and looks in the usual places.
    let engine = spawn_engine(&lab, &netmix_integration::lab_config("\"wan*\"", ""));
    assert_eventually_async!(
        zt(&lab).await["service"] == "not_installed",
        "the API says not installed: {}",
        zt(&lab).await
    );
    let z = zt(&lab).await;
    assert!(z["error"].is_null(), "not installed is no error: {z}");
    assert_eq!(z["networks"], serde_json::json!([]), "{z}");
    assert_eq!(z["peers"], serde_json::json!([]), "{z}");
    // Let it poll again a few times (0.5 s, 1 s, 2 s back-off).
    assert_eventually_async!(
        engine.logs().matches("ZeroTier poll failed again.").count() >= 2,
        "the agent keeps looking (at debug):\n{}",
        engine.logs()
    );
    let logs = engine.logs();
    let level = |l: &str| l.split_whitespace().nth(1).unwrap_or("").to_owned();
    let shown: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("ZeroTier") && !matches!(level(l).as_str(), "DEBUG" | "TRACE"))
        .collect();
    assert_eq!(shown.len(), 1, "one ZeroTier line above debug:\n{logs}");
    let line = shown[0];
    assert_eq!(level(line), "INFO", "{line}");
    assert!(line.contains("ZeroTier not installed"), "{line}");
    assert!(
        line.chars().count() < 160,
        "{} characters: {line}",
        line.chars().count()
    );
    // Nothing about ZeroTier is a warning, and root is not told to run as root.
    for l in logs
        .lines()
        .filter(|l| l.to_lowercase().contains("zerotier"))
    {
        assert!(!matches!(level(l).as_str(), "WARN" | "ERROR"), "{l}");
        assert!(!l.contains("run as root"), "{l}");
    }
    // netmix serves as ever.
    assert_eq!(spread(&lab, &engine, 4).await.iter().sum::<usize>(), 4);
}
