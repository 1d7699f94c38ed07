//! The mixed port end to end: SOCKS5, SOCKS4/4a, HTTP CONNECT and HTTP forward proxying on one
//! port, with real clients (curl) in the lab, each protocol through the same strategy and the
//! same failure answers in its own terms.

#![cfg(target_os = "linux")]

use std::net::{IpAddr, SocketAddr};
use std::process::Output;

use netmix_integration::web::http;
use netmix_integration::{
    DASHBOARD, Lab, REFUSED_PORT, TARGET, WHOAMI_PORT, api, assert_eventually_async, bytes_body,
    lab_config, spawn_engine,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs curl in the client namespace (10 s cap) with `args`.
fn curl(lab: &Lab, args: &[&str]) -> Output {
    let mut all = vec!["curl", "-sS", "-m", "10"];
    all.extend_from_slice(args);
    lab.exec_client(&all)
}

/// curl's stdout, asserting it succeeded.
fn curl_ok(lab: &Lab, args: &[&str], logs: impl Fn() -> String) -> String {
    let out = curl(lab, args);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw SOCKS4 CONNECT (4a when `host` is given); returns the reply code and anything the
/// destination then sent before closing.
async fn socks4(
    lab: &Lab,
    proxy: SocketAddr,
    dest: SocketAddr,
    host: Option<&str>,
) -> (u8, String) {
    let mut s = lab.connect_client(proxy).await;
    let mut req = vec![4, 1];
    req.extend_from_slice(&dest.port().to_be_bytes());
    match (host, dest.ip()) {
        (Some(_), _) => req.extend_from_slice(&[0, 0, 0, 1]),
        (None, IpAddr::V4(ip)) => req.extend_from_slice(&ip.octets()),
        (None, IpAddr::V6(_)) => panic!("SOCKS4 is IPv4 only"),
    }
    req.extend_from_slice(b"netmix-test\0");
    if let Some(h) = host {
        req.extend_from_slice(h.as_bytes());
        req.push(0);
    }
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 8];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_exact(&mut reply)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "no 8-byte SOCKS4 reply: {read:?}"
    );
    assert_eq!(reply[0], 0, "SOCKS4 reply version byte");
    let mut rest = String::new();
    if reply[1] == 0x5A {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.read_to_string(&mut rest),
        )
        .await;
    }
    (reply[1], rest.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_on_one_port_uses_every_link() {
    let lab = Lab::with_links(3);
    lab.set_hosts(&[("target.lab", IpAddr::V4(TARGET))]);
    let _servers = lab.start_servers().await;
    let (engine, log) = netmix_integration::spawn_with_connection_log(&lab, "protocols", "");
    let proxy = engine.socks_addr().to_string();
    let http_proxy = format!("http://{proxy}");
    let by_ip = format!("http://{TARGET}/ip");
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (
            "HTTP forward",
            vec!["-x", &http_proxy],
            "http://target.lab/ip",
        ),
        (
            "HTTP CONNECT",
            vec!["-p", "-x", &http_proxy],
            "http://target.lab/ip",
        ),
        ("SOCKS4", vec!["--socks4", &proxy], &by_ip),
        ("SOCKS4a", vec!["--socks4a", &proxy], "http://target.lab/ip"),
        (
            "SOCKS5 by name",
            vec!["--socks5-hostname", &proxy],
            "http://target.lab/ip",
        ),
    ];
    for (name, flags, url) in cases {
        let mut counts = vec![0usize; lab.links().len()];
        for _ in 0..30 {
            let mut args = flags.clone();
            args.push(url);
            let seen = curl_ok(&lab, &args, || engine.logs());
            let ip: IpAddr = seen
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: not an address: {seen:?}"));
            let k = lab
                .link_for_source(ip)
                .unwrap_or_else(|| panic!("{name}: {ip} is no lab link"));
            counts[k] += 1;
        }
        assert_eq!(counts, [10, 10, 10], "{name}: round-robin over three links");
    }

    // Each protocol is named in the dashboard's rows, /metrics and the connection log:
    // 30 each, SOCKS4 and 4a together.
    let want = [
        ("http-forward", 30),
        ("http-connect", 30),
        ("socks4", 60),
        ("socks5", 30),
    ];
    let mut logged = std::collections::HashMap::<String, usize>::new();
    assert_eventually_async!(
        {
            logged.clear();
            for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                *logged
                    .entry(v["protocol"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
            logged.values().sum::<usize>() >= 150
        },
        "the connection log has every connection: {logged:?}"
    );
    // The dashboard's feed is published in batches: wait until it has all 150.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let rows = loop {
        let rows = api(&lab, DASHBOARD, "/api/connections?limit=1000").await;
        if rows.as_array().is_some_and(|r| r.len() >= 150) {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard lists every connection: {rows}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let metrics = http(&lab, DASHBOARD, "GET", "/metrics", &[], None)
        .await
        .text();
    for (protocol, n) in want {
        let shown = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["protocol"] == protocol)
            .count();
        assert_eq!(shown, n, "dashboard rows for {protocol}");
        assert!(
            metrics.contains(&format!(
                "netmix_connections_opened_total{{protocol=\"{protocol}\"}} {n}\n"
            )),
            "/metrics for {protocol}:\n{metrics}"
        );
        assert_eq!(
            logged.get(protocol),
            Some(&n),
            "connection log for {protocol}"
        );
    }
    std::fs::remove_file(&log).ok();
    // A large body arrives intact over each HTTP flavour.
    for flags in [
        vec!["-x", http_proxy.as_str()],
        vec!["-p", "-x", http_proxy.as_str()],
    ] {
        let mut args = flags;
        args.push("http://target.lab/bytes/3000000");
        let out = curl(&lab, &args);
        assert!(out.status.success());
        assert!(
            out.stdout == bytes_body(3_000_000),
            "{args:?}: body differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_answered_in_each_protocols_terms() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    // Forwarding in the internet namespace: an address it has no route for answers with ICMP
    // "network unreachable"; one routed into a blackhole never answers (a connect timeout).
    lab.exec_inet(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lab.exec_inet(&["ip", "route", "add", "blackhole", "198.18.202.0/24"]);
    let engine = spawn_engine(
        &lab,
        &lab_config(
            "\"wan*\"",
            "[socks]\ndeny = [\"198.19.0.128/25\"]\n\n[failover]\nenabled = false\n",
        ),
    );
    let proxy = engine.socks_addr();
    let http_proxy = format!("http://{proxy}");
    let refused = SocketAddr::new(TARGET.into(), REFUSED_PORT);
    let cases: [(&str, SocketAddr, &str); 4] = [
        ("refused", refused, "502"),
        ("unreachable", "198.18.200.1:80".parse().unwrap(), "502"),
        ("timeout", "198.18.202.1:80".parse().unwrap(), "504"),
        ("denied", "198.19.0.200:80".parse().unwrap(), "403"),
    ];
    for (what, dest, status) in cases {
        let url = format!("http://{dest}/");
        let forward = curl(
            &lab,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
                &http_proxy,
                &url,
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&forward.stdout),
            status,
            "HTTP forward, {what}\n{}",
            engine.logs()
        );
        let connect = curl(
            &lab,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_connect}",
                "-p",
                "-x",
                &http_proxy,
                &url,
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&connect.stdout),
            status,
            "HTTP CONNECT, {what}\n{}",
            engine.logs()
        );
        let (code, _) = socks4(&lab, proxy, dest, None).await;
        assert_eq!(code, 0x5B, "SOCKS4, {what}");
    }
    // The same port grants what works, in each protocol.
    let whoami = SocketAddr::new(TARGET.into(), WHOAMI_PORT);
    let (code, seen) = socks4(&lab, proxy, whoami, None).await;
    assert_eq!(code, 0x5A, "SOCKS4 granted");
    assert!(
        lab.link_for_source(seen.parse().unwrap()).is_some(),
        "{seen}"
    );
    // SOCKS4a: netmix resolves the name; one it cannot resolve is rejected.
    let (code, seen) = socks4(&lab, proxy, whoami, Some(&TARGET.to_string())).await;
    assert_eq!(code, 0x5A, "SOCKS4a with an address literal");
    assert!(
        lab.link_for_source(seen.parse().unwrap()).is_some(),
        "{seen}"
    );
    let (code, _) = socks4(&lab, proxy, whoami, Some("no-such-host.lab")).await;
    assert_eq!(code, 0x5B, "SOCKS4a, unknown name");

    // Not a request at all: an origin-form GET gets a 400 saying netmix is a proxy, and
    // anything that is neither SOCKS nor HTTP is closed without an answer.
    let out = curl(&lab, &["-i", &format!("http://{proxy}/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("netmix is a proxy"), "{text}");
    let mut s = lab.connect_client(proxy).await;
    s.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        got.is_empty(),
        "a TLS record is closed unanswered, got {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_over_http_and_socks4_is_refused_with_auth() {
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(
        &lab,
        &lab_config(
            "\"wan*\"",
            "[[socks.auth.users]]\nusername = \"alice\"\npassword = \"secret\"\n",
        ),
    );
    let proxy = engine.socks_addr();
    let url = format!("http://{TARGET}/ip");
    let with = |creds: &str| format!("http://{creds}{proxy}");
    let logs = || engine.logs();
    for flags in [vec![], vec!["-p"]] {
        let write_out = if flags.is_empty() {
            "%{http_code}"
        } else {
            "%{http_connect}"
        };
        let good = with("alice:secret@");
        let mut args = flags.clone();
        args.extend(["-x", good.as_str(), url.as_str()]);
        let seen = curl_ok(&lab, &args, logs);
        assert!(
            lab.link_for_source(seen.trim().parse().unwrap()).is_some(),
            "{seen}"
        );
        for creds in ["alice:wrong@", "mallory:secret@", ""] {
            let proxy_url = with(creds);
            let mut args = flags.clone();
            args.extend([
                "-o",
                "/dev/null",
                "-w",
                write_out,
                "-x",
                proxy_url.as_str(),
                url.as_str(),
            ]);
            let out = curl(&lab, &args);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "407",
                "{flags:?} with {creds:?}"
            );
        }
    }
    // The 407 says how to authenticate.
    let out = curl(&lab, &["-i", "-x", &with(""), &url]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        text.contains("proxy-authenticate: basic realm=\"netmix\""),
        "{text}"
    );

    let (code, _) = socks4(
        &lab,
        proxy,
        SocketAddr::new(TARGET.into(), WHOAMI_PORT),
        None,
    )
    .await;
    assert_eq!(
        code, 0x5B,
        "SOCKS4 has no password: refused when auth is on"
    );
    assert!(
        engine
            .logs()
            .contains("SOCKS4 request refused: socks.auth is configured"),
        "the log says why\n{}",
        engine.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_kept_alive_client_connection_reaches_two_hosts_each_routed_on_its_own() {
    let lab = Lab::with_links(2);
    let second = "198.19.0.2";
    lab.exec_inet(&["ip", "addr", "add", &format!("{second}/32"), "dev", "lo"]);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &lab_config("\"wan*\"", ""));
    let http_proxy = format!("http://{}", engine.socks_addr());
    // curl sends all four over one connection to the proxy (num_connects 1, then 0).
    let out = curl_ok(
        &lab,
        &[
            "-x",
            &http_proxy,
            "-w",
            "\n%{num_connects}\n",
            &format!("http://{TARGET}/local"),
            &format!("http://{second}/local"),
            &format!("http://{TARGET}/ip"),
            &format!("http://{second}/ip"),
        ],
        || engine.logs(),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert_eq!(
        lines[0],
        TARGET.to_string(),
        "the first host answered the first request"
    );
    assert_eq!(
        lines[2], second,
        "the second host answered the second request"
    );
    assert_eq!(
        [lines[1], lines[3], lines[5], lines[7]],
        ["1", "0", "0", "0"],
        "one client connection for all four requests"
    );
    // Round-robin picks per request: consecutive requests left through different links.
    let links: Vec<usize> = [lines[4], lines[6]]
        .iter()
        .map(|ip| {
            lab.link_for_source(ip.parse().unwrap())
                .expect("a lab link")
        })
        .collect();
    assert_ne!(links[0], links[1], "each request routed on its own: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_bodies_stream_both_ways_and_hop_by_hop_headers_stay_behind() {
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &lab_config("\"wan*\"", ""));
    let http_proxy = format!("http://{}", engine.socks_addr());
    let logs = || engine.logs();
    let file = std::env::temp_dir().join(format!("netmix-body-{}", std::process::id()));
    std::fs::write(&file, bytes_body(5_000_000)).unwrap();
    let upload = format!("@{}", file.display());
    let count_url = format!("http://{TARGET}/count");
    // Content-Length, then chunked request bodies: the server checks every byte.
    let sized = curl_ok(
        &lab,
        &["-x", &http_proxy, "--data-binary", &upload, &count_url],
        logs,
    );
    assert_eq!(sized, "5000000");
    let chunked = curl_ok(
        &lab,
        &[
            "-x",
            &http_proxy,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &upload,
            &count_url,
        ],
        logs,
    );
    assert_eq!(chunked, "5000000");
    std::fs::remove_file(&file).ok();
    // A chunked response arrives whole.
    let out = curl(
        &lab,
        &[
            "-x",
            &http_proxy,
            &format!("http://{TARGET}/chunked/3000000"),
        ],
    );
    assert!(out.status.success());
    assert!(out.stdout == bytes_body(3_000_000), "chunked body differs");

    // What the origin server receives: origin form, its own Host, no hop-by-hop headers.
    let seen = curl_ok(
        &lab,
        &[
            "-x",
            &http_proxy,
            "-H",
            "Connection: X-Hop",
            "-H",
            "X-Hop: 1",
            "-H",
            "Proxy-Connection: keep-alive",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "X-Kept: 2",
            &format!("http://{TARGET}/headers"),
        ],
        logs,
    )
    .to_ascii_lowercase();
    assert!(seen.starts_with("get /headers http/1.1\r\n"), "{seen}");
    assert!(seen.contains(&format!("host: {TARGET}\r\n")), "{seen}");
    assert!(seen.contains("x-kept: 2\r\n"), "{seen}");
    for gone in ["x-hop", "proxy-connection", "keep-alive", "connection:"] {
        assert!(
            !seen.contains(gone),
            "{gone} must not reach the origin: {seen}"
        );
    }
}
