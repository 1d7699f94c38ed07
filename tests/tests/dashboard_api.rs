//! The dashboard API over real HTTP, against a real netmix in the lab: every endpoint, the
//! Host / Origin / token refusals, a strategy switch that really changes where the next
//! connections go, `/metrics` through a Prometheus text validator, and the token never
//! appearing in anything a GET returns. (The same checks at warp level, against a fake feed,
//! are in `web/tests/`.)

#![cfg(target_os = "linux")]

use std::time::Duration;

use netmix_integration::client::by_name;
use netmix_integration::web::{
    HttpResponse, drop_syns_to_dropped_port, failed_row, http, measured_deadlines, plugins_dir,
    prom_value, timed_out_connection, validate_prometheus, write_token_file, ws_connect,
};
use netmix_integration::{
    DASHBOARD, Engine, Lab, api, assert_eventually_async, spawn_engine, spread,
};

const TOKEN: &str = "0123456789abcdef-lab-token-fedcba9876543210";

/// A lab with three links and netmix on it: round-robin (the plugin) active, sticky
/// available, the dashboard on 127.0.0.1:5000 with a known token; returns once all three
/// links have joined.
async fn start(lab: &Lab, tag: &str) -> Engine {
    let plugins = plugins_dir(
        tag,
        &[
            "strategy_round_robin",
            "strategy_sticky",
            "strategy_latency",
        ],
    );
    let token_file = write_token_file(tag, TOKEN);
    let config = format!(
        "strategy = \"round-robin\"\n\n[plugins]\ndir = \"{}\"\n\n[interfaces]\ninclude = [\"wan*\"]\n\n\
         [discovery]\nrescan_interval_ms = 300\n\n[dashboard]\ntoken_file = \"{}\"\n",
        plugins.display(),
        token_file.display()
    );
    let engine = spawn_engine(lab, &config);
    assert_eventually_async!(
        engine.logs().matches("Interface joined.").count() >= 3,
        "3 interfaces joined:\n{}",
        engine.logs()
    );
    assert_eventually_async!(
        api(lab, DASHBOARD, "/api/interfaces")
            .await
            .as_array()
            .is_some_and(|a| a.len() == 3),
        "the dashboard shows the 3 links"
    );
    engine
}

async fn get(lab: &Lab, path: &str) -> HttpResponse {
    http(lab, DASHBOARD, "GET", path, &[], None).await
}

async fn post_strategy(lab: &Lab, name: &str, auth: Option<&str>) -> HttpResponse {
    let body = format!("{{\"name\":\"{name}\"}}");
    let mut headers = vec![("Content-Type", "application/json")];
    let bearer;
    if let Some(token) = auth {
        bearer = format!("Bearer {token}");
        headers.push(("Authorization", bearer.as_str()));
    }
    http(
        lab,
        DASHBOARD,
        "POST",
        "/api/strategy",
        &headers,
        Some(body.as_bytes()),
    )
    .await
}

/// The newest `n` connections, once the feed shows `n` closed ones with ids above
/// `newer_than` (the feed publishes every 500 ms, so it may lag the clients).
async fn settled_connections(lab: &Lab, n: usize, newer_than: u64) -> Vec<serde_json::Value> {
    let path = format!("/api/connections?limit={n}");
    let mut last = serde_json::Value::Null;
    for _ in 0..60 {
        last = get(lab, &path).await.json();
        if let Some(list) = last.as_array()
            && list.len() == n
            && list
                .iter()
                .all(|c| c["state"] == "closed" && c["id"].as_u64().unwrap() > newer_than)
        {
            return list.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} closed connections never showed up: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_over_real_http_and_never_shows_the_token() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = start(&lab, "api-all").await;
    let counts = spread(&lab, &engine, 6).await;
    assert_eq!(counts, vec![2, 2, 2], "{:?}", by_name(&lab, &counts));
    let conns = settled_connections(&lab, 6, 0).await;

    let mut bodies = Vec::new();
    // The page and its assets.
    for (path, kind, needle) in [
        ("/", "text/html", "id=\"ws-status\""),
        ("/static/app.js", "text/javascript", "connections-filter"),
        ("/static/style.css", "text/css", ".iface-card"),
    ] {
        let r = get(&lab, path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with(kind)),
            "GET {path}: {:?}",
            r.headers
        );
        assert!(
            r.header("content-security-policy")
                .is_some_and(|c| c.contains("default-src 'none'")),
            "GET {path} has the CSP: {:?}",
            r.headers
        );
        assert!(r.text().contains(needle), "GET {path}: {}", r.text());
        bodies.push((path.to_owned(), r.text()));
    }

    // The PAC file: no token, names the proxy port in both entries.
    let r = get(&lab, "/proxy.pac").await;
    assert_eq!(r.status, 200, "GET /proxy.pac: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/x-ns-proxy-autoconfig")
    );
    let socks = engine.socks_addr();
    let entry = format!("\"PROXY {socks}; SOCKS5 {socks}\"");
    assert!(r.text().contains(&entry), "{entry} in {}", r.text());
    bodies.push(("/proxy.pac".into(), r.text()));

    // JSON endpoints.
    let json = |r: &HttpResponse, path: &str| {
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        r.json()
    };
    let r = get(&lab, "/api/interfaces").await;
    let ifaces = json(&r, "/api/interfaces");
    bodies.push(("/api/interfaces".into(), r.text()));
    let mut names: Vec<&str> = ifaces
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["wan0", "wan1", "wan2"]);
    for i in ifaces.as_array().unwrap() {
        assert_eq!(i["successes"], 2, "each link carried 2: {i}");
        assert_eq!(i["health"], "up", "{i}");
        assert!(i["bytes_down"].as_u64().unwrap() > 0, "{i}");
    }

    let r = get(&lab, "/api/connections").await;
    let all = json(&r, "/api/connections");
    bodies.push(("/api/connections".into(), r.text()));
    assert_eq!(all.as_array().unwrap().len(), 6, "{all}");
    for c in &conns {
        assert_eq!(c["strategy"], "round-robin", "{c}");
        assert_eq!(c["destination"], "198.19.0.1:9", "{c}");
        assert_eq!(c["protocol"], "socks5", "{c}");
        assert!(c["bytes_down"].as_u64().unwrap() > 0, "{c}");
    }
    let limited = json(
        &get(&lab, "/api/connections?limit=2").await,
        "/api/connections?limit=2",
    );
    assert_eq!(limited.as_array().unwrap().len(), 2);
    assert_eq!(limited[0]["id"], conns[0]["id"], "newest first");

    let r = get(&lab, "/api/strategy").await;
    let strategy = json(&r, "/api/strategy");
    bodies.push(("/api/strategy".into(), r.text()));
    assert_eq!(strategy["active"], "round-robin");
    assert_eq!(strategy["fallback_active"], false);
    let available: Vec<&str> = strategy["available"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for s in ["round-robin", "sticky", "latency"] {
        assert!(available.contains(&s), "{s} in {available:?}");
    }

    let r = get(&lab, "/api/events").await;
    let events = json(&r, "/api/events");
    bodies.push(("/api/events".into(), r.text()));
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["interface"] == "wan1"),
        "the links' events: {events}"
    );
    let one = json(
        &get(&lab, "/api/events?limit=1").await,
        "/api/events?limit=1",
    );
    assert_eq!(one.as_array().unwrap().len(), 1);

    let r = get(&lab, "/api/feed").await;
    let feed = json(&r, "/api/feed");
    bodies.push(("/api/feed".into(), r.text()));
    assert!(feed["version"].as_u64().unwrap() > 0);
    assert_eq!(feed["interfaces"].as_array().unwrap().len(), 3);
    assert!(feed["totals"]["connections_total"].as_u64().unwrap() >= 6);
    assert_eq!(feed["strategy"]["active"], "round-robin");

    let r = get(&lab, "/api/zerotier").await;
    assert_eq!(r.status, 200, "{}", r.text());
    bodies.push(("/api/zerotier".into(), r.text()));

    // Prometheus text, validated and consistent with the JSON.
    let r = get(&lab, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain") && c.contains("version=0.0.4")),
        "{:?}",
        r.headers
    );
    let samples = validate_prometheus(&r.text());
    bodies.push(("/metrics".into(), r.text()));
    let total = prom_value(&samples, "netmix_connections_total", &[]).expect("connections");
    assert!(total >= 6.0, "netmix_connections_total {total}");
    let socks5 = prom_value(
        &samples,
        "netmix_connections_opened_total",
        &[("protocol", "socks5")],
    )
    .expect("connections opened per protocol");
    assert!(
        socks5 >= 6.0,
        "netmix_connections_opened_total socks5 {socks5}"
    );
    assert_eq!(
        prom_value(
            &samples,
            "netmix_strategy_active",
            &[("strategy", "round-robin")]
        ),
        Some(1.0)
    );
    for name in ["wan0", "wan1", "wan2"] {
        assert_eq!(
            prom_value(&samples, "netmix_interface_up", &[("interface", name)]),
            Some(1.0),
            "{name}"
        );
        let down = prom_value(
            &samples,
            "netmix_interface_bytes_total",
            &[("interface", name), ("direction", "down")],
        )
        .expect("bytes per link");
        assert!(down > 0.0, "{name} received bytes");
    }

    // The live feed (same origin as the page).
    let mut ws = ws_connect(
        &lab,
        DASHBOARD,
        "/ws?connections=3",
        Some("http://127.0.0.1:5000"),
    )
    .await
    .unwrap_or_else(|r| panic!("upgrade refused: {} {}", r.status, r.text()));
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next_text())
        .await
        .expect("a message within 5 s")
        .expect("read")
        .expect("not closed");
    let live: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(live["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(
        live["connections"].as_array().unwrap().len(),
        3,
        "?connections=3 trims"
    );
    bodies.push(("/ws".into(), first));
    ws.close().await;

    for (path, body) in &bodies {
        assert!(!body.contains(TOKEN), "GET {path} leaks the token");
        assert!(
            !body.contains(&TOKEN[..16]),
            "GET {path} leaks part of the token"
        );
    }
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_switch_needs_the_token_and_the_next_connections_follow_it() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = start(&lab, "api-switch").await;

    let r = post_strategy(&lab, "sticky", None).await;
    assert_eq!(r.status, 401, "no token: {}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"netmix\"")
    );
    assert!(r.json()["error"].is_string());
    let r = post_strategy(&lab, "sticky", Some("not-the-token")).await;
    assert_eq!(r.status, 401, "wrong token: {}", r.text());
    let r = post_strategy(&lab, "sticky", Some(&TOKEN[..TOKEN.len() - 1])).await;
    assert_eq!(r.status, 401, "a prefix of the token: {}", r.text());
    assert_eq!(
        get(&lab, "/api/strategy").await.json()["active"],
        "round-robin"
    );
    let counts = spread(&lab, &engine, 6).await;
    assert_eq!(
        counts,
        vec![2, 2, 2],
        "still round-robin: {:?}",
        by_name(&lab, &counts)
    );
    let before = settled_connections(&lab, 6, 0).await;
    for c in &before {
        assert_eq!(c["strategy"], "round-robin", "{c}");
    }

    let r = post_strategy(&lab, "no-such-strategy", Some(TOKEN)).await;
    assert_eq!(r.status, 400, "unknown strategy: {}", r.text());
    assert_eq!(
        get(&lab, "/api/strategy").await.json()["active"],
        "round-robin"
    );

    let r = post_strategy(&lab, "sticky", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "right token: {}", r.text());
    assert_eq!(r.json()["active"], "sticky");
    assert!(!r.text().contains(TOKEN));
    assert_eq!(get(&lab, "/api/strategy").await.json()["active"], "sticky");

    // The engine really switched: the next connections are sticky's, all to one link.
    let counts = spread(&lab, &engine, 6).await;
    assert_eq!(
        counts.iter().filter(|&&c| c > 0).count(),
        1,
        "sticky keeps one destination on one link: {:?}",
        by_name(&lab, &counts)
    );
    let newest_before = before[0]["id"].as_u64().unwrap();
    let conns = settled_connections(&lab, 6, newest_before).await;
    for c in &conns {
        assert_eq!(c["strategy"], "sticky", "{c}");
        assert_eq!(c["interface"], conns[0]["interface"], "{c}");
    }
    assert!(
        conns[0]["reason"].as_str().unwrap().starts_with("sticky: "),
        "{}",
        conns[0]
    );
    let metrics = validate_prometheus(&get(&lab, "/metrics").await.text());
    assert_eq!(
        prom_value(
            &metrics,
            "netmix_strategy_active",
            &[("strategy", "sticky")]
        ),
        Some(1.0)
    );
    let events = get(&lab, "/api/events").await.json();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("sticky")),
        "the switch is in the event log: {events}"
    );
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = start(&lab, "api-guard").await;

    for host in ["evil.example", "evil.example:5000", "127.0.0.1:5001"] {
        for path in ["/", "/api/interfaces", "/metrics"] {
            let r = http(&lab, DASHBOARD, "GET", path, &[("Host", host)], None).await;
            assert_eq!(r.status, 403, "GET {path} with Host {host}: {}", r.text());
            assert!(!r.text().contains("wan0"), "a refusal shows no data");
        }
    }
    // Even with the right token, a foreign Host changes nothing (DNS rebinding).
    let auth = format!("Bearer {TOKEN}");
    let r = http(
        &lab,
        DASHBOARD,
        "POST",
        "/api/strategy",
        &[
            ("Host", "evil.example"),
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(b"{\"name\":\"sticky\"}"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        get(&lab, "/api/strategy").await.json()["active"],
        "round-robin"
    );
    // Allowed spellings of the same address.
    for host in ["localhost:5000", "LOCALHOST:5000", "127.0.0.1:5000"] {
        let r = http(
            &lab,
            DASHBOARD,
            "GET",
            "/api/strategy",
            &[("Host", host)],
            None,
        )
        .await;
        assert_eq!(r.status, 200, "Host {host}: {}", r.text());
    }

    // WebSocket upgrades: a foreign page's origin is refused, the dashboard's own accepted.
    for origin in [
        "http://evil.example",
        "http://evil.example:5000",
        "https://127.0.0.1:5000",
        "null",
    ] {
        match ws_connect(&lab, DASHBOARD, "/ws", Some(origin)).await {
            Ok(_) => panic!("WebSocket from Origin {origin} accepted"),
            Err(r) => assert_eq!(r.status, 403, "Origin {origin}: {}", r.text()),
        }
    }
    for origin in [
        Some("http://127.0.0.1:5000"),
        Some("http://localhost:5000"),
        None,
    ] {
        let mut ws = ws_connect(&lab, DASHBOARD, "/ws", origin)
            .await
            .unwrap_or_else(|r| panic!("Origin {origin:?} refused: {} {}", r.status, r.text()));
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next_text())
            .await
            .expect("a message")
            .expect("read")
            .expect("open");
        assert!(msg.contains("\"wan0\""), "Origin {origin:?}: {msg}");
        ws.close().await;
    }
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_shows_the_links_tried_the_real_time_and_the_error() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = start(&lab, "api-failed").await;
    // Latency samples first, so every link has its adaptive deadline.
    assert_eq!(spread(&lab, &engine, 3).await, vec![1, 1, 1]);
    drop_syns_to_dropped_port(&lab);
    let deadline = measured_deadlines(&lab).await.into_iter().min().unwrap();
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (code, waited) = timed_out_connection(lab.client_ns(), engine.socks_addr()).await;
    assert_ne!(code, 0);
    let row = failed_row(&lab).await;
    let mut tried: Vec<&str> = row["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tried.sort_unstable();
    assert_eq!(tried, ["wan0", "wan1", "wan2"], "{row}");
    assert_eq!(row["retries"], 3, "{row}");
    assert!(row["interface"].is_null(), "{row}");
    assert!(
        row["error"].as_str().unwrap().contains("timed out"),
        "{row}"
    );
    let duration = row["duration_ms"].as_u64().unwrap();
    assert!(
        duration >= 3 * deadline,
        "{duration} ms for 3 × {deadline} ms: {row}"
    );
    let waited_ms = waited.as_millis() as u64;
    assert!(
        duration <= waited_ms + 50 && waited_ms <= duration + 1000,
        "{duration} ms, the client waited {waited_ms} ms: {row}"
    );
    // Started when it was accepted, not when it failed.
    let started = row["started_unix_ms"].as_u64().unwrap();
    assert!(
        started + 100 >= before_ms && started <= before_ms + 1000,
        "started {started}, asked at {before_ms}: {row}"
    );
    // The connected ones tried nothing else.
    let rows = get(&lab, "/api/connections?limit=10").await.json();
    for r in rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "closed")
    {
        assert_eq!(r["tried"], serde_json::json!([]), "{r}");
    }
    let feed = get(&lab, "/api/feed").await.json();
    assert_eq!(feed["totals"]["failed"], 1, "{}", feed["totals"]);
    assert!(feed["started_unix_ms"].as_u64().unwrap() <= before_ms);
    let samples = validate_prometheus(&get(&lab, "/metrics").await.text());
    assert_eq!(
        prom_value(&samples, "netmix_connections_failed_total", &[]),
        Some(1.0)
    );
    drop(engine);
}
