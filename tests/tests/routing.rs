//! Where connections go (issue 14): every address of a name is a candidate, local
//! destinations are reached where they live, and netmix refuses to proxy to itself.

#![cfg(target_os = "linux")]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netmix_integration::{
    Lab, TARGET, Target, WHOAMI_PORT, ask, lab_config, socks5_connect, spawn_engine,
};

/// A SOCKS5 CONNECT through `proxy`; the reply code, BND.ADDR and what the destination sent.
async fn connect(lab: &Lab, proxy: SocketAddr, target: Target) -> (u8, SocketAddr, String) {
    let (w, _) = ask(lab, proxy, target).await;
    (w.code, w.bound, w.seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_whose_first_address_drops_packets_connects_through_the_second() {
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    // 198.18.202.1 is routed into a blackhole in the internet namespace: it never answers.
    lab.exec_inet(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lab.exec_inet(&["ip", "route", "add", "blackhole", "198.18.202.0/24"]);
    let dropped: IpAddr = "198.18.202.1".parse().unwrap();
    lab.set_hosts(&[("two.lab", dropped), ("two.lab", IpAddr::V4(TARGET))]);
    // Failover off: only the second address of the same interface can save the connection.
    let engine = spawn_engine(
        &lab,
        &lab_config("\"wan*\"", "[failover]\nenabled = false\n"),
    );
    for _ in 0..4 {
        let started = Instant::now();
        let (code, _, seen) = connect(
            &lab,
            engine.socks_addr(),
            Target::Domain("two.lab".into(), WHOAMI_PORT),
        )
        .await;
        let took = started.elapsed();
        assert_eq!(
            code,
            0,
            "connected through the second address\n{}",
            engine.logs()
        );
        assert!(
            lab.link_for_source(seen.parse().unwrap()).is_some(),
            "{seen}"
        );
        assert!(
            took < Duration::from_millis(1200),
            "one address stagger, not the 1.5 s connect deadline: {took:?}"
        );
    }
    assert!(
        engine.logs().contains(&format!(
            "No answer yet; trying the next address alongside. iface=wan0 next={TARGET}:{WHOAMI_PORT}"
        )) || engine.logs().contains(&format!(
            "No answer yet; trying the next address alongside. iface=wan1 next={TARGET}:{WHOAMI_PORT}"
        )),
        "the dropped address was tried first, the second after a stagger\n{}",
        engine.logs()
    );
}

/// A server on 127.0.0.1 in the client namespace that answers every connection with `hello`
/// and closes; returns its address (the listener lives on a thread until the process ends).
fn local_server(lab: &Lab, hello: &'static str) -> SocketAddr {
    let listener = lab.in_client(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            use std::io::Write;
            let _ = s.write_all(hello.as_bytes());
        }
    });
    addr
}

/// The dashboard's rows for `destination`.
async fn rows_for(lab: &Lab, destination: &str) -> Vec<serde_json::Value> {
    let rows = netmix_integration::api(
        lab,
        netmix_integration::DASHBOARD,
        "/api/connections?limit=1000",
    )
    .await;
    rows.as_array()
        .map(|r| {
            r.iter()
                .filter(|r| r["destination"] == destination)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_goes_over_loopback_the_lan_through_its_own_link_and_direct_unbound() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let local = local_server(&lab, "local\n");
    let on_link = SocketAddr::new(lab.link(1).peer_addr.into(), WHOAMI_PORT);
    let direct = SocketAddr::new(lab.link(2).peer_addr.into(), WHOAMI_PORT);
    for strategy in ["round-robin", "latency", "capacity", "sticky"] {
        let cfg = lab_config("\"wan*\"", "[routing]\ndirect = [\"198.18.12.0/24\"]\n").replacen(
            "round-robin",
            strategy,
            1,
        );
        let engine = spawn_engine(&lab, &cfg);
        let proxy = engine.socks_addr();
        // Loopback: at once, over loopback (BND.ADDR is loopback).
        let started = Instant::now();
        let (code, bound, seen) = connect(&lab, proxy, Target::Ip(local)).await;
        assert_eq!(
            (code, seen.as_str()),
            (0, "local"),
            "{strategy}: loopback\n{}",
            engine.logs()
        );
        assert!(bound.ip().is_loopback(), "{strategy}: BND.ADDR {bound}");
        assert!(
            started.elapsed() < Duration::from_millis(1200),
            "{strategy}: at once, not after the 1.5 s connect deadline: {:?}",
            started.elapsed()
        );
        // On-link: wan1's own subnet leaves through wan1, every time.
        for _ in 0..4 {
            let (code, _, seen) = connect(&lab, proxy, Target::Ip(on_link)).await;
            assert_eq!(code, 0, "{strategy}: on-link");
            assert_eq!(
                seen,
                lab.link(1).client_addr.to_string(),
                "{strategy}: through wan1"
            );
        }
        // Direct: unbound, the OS's routing table (its connected route for wan2) decides.
        let (code, _, seen) = connect(&lab, proxy, Target::Ip(direct)).await;
        assert_eq!(code, 0, "{strategy}: direct");
        assert_eq!(
            seen,
            lab.link(2).client_addr.to_string(),
            "{strategy}: the OS's route"
        );
        // The dashboard says why, for each.
        for (dest, interface, reason) in [
            (local.to_string(), "loopback", "loopback".to_owned()),
            (
                on_link.to_string(),
                "wan1",
                "on-link (wan1, 198.18.11.0/24)".to_owned(),
            ),
            (
                direct.to_string(),
                "direct",
                "direct (198.18.12.0/24)".to_owned(),
            ),
        ] {
            let mut rows = Vec::new();
            for _ in 0..50 {
                rows = rows_for(&lab, &dest).await;
                if !rows.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(!rows.is_empty(), "{strategy}: no dashboard row for {dest}");
            for r in &rows {
                assert_eq!(r["interface"], interface, "{strategy}: {r}");
                assert_eq!(r["reason"], reason.as_str(), "{strategy}: {r}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netmix_never_proxies_to_itself_and_a_lan_listen_refuses_loopback_unless_allowed() {
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    let local = local_server(&lab, "local\n");
    let engine = spawn_engine(&lab, &lab_config("\"wan*\"", ""));
    let proxy = engine.socks_addr();
    for own in [
        proxy,
        netmix_integration::DASHBOARD,
        "0.0.0.0:1080".parse().unwrap(),
    ] {
        let (code, _, _) = connect(&lab, proxy, Target::Ip(own)).await;
        assert_eq!(code, 0x02, "a CONNECT to netmix itself ({own}) is refused");
    }
    assert!(
        engine
            .logs()
            .contains("that is netmix's own address (a proxy loop)")
    );
    drop(engine);

    let users = "[[socks.auth.users]]\nusername = \"alice\"\npassword = \"secret\"\n";
    for (allow, want) in [("", 0x02), ("allow_local = true\n", 0x00)] {
        let cfg = lab_config(
            "\"wan*\"",
            &format!("[socks]\nlisten = \"0.0.0.0:1080\"\n{allow}\n{users}"),
        );
        let engine = spawn_engine(&lab, &cfg);
        let s = lab.connect_client("127.0.0.1:1080".parse().unwrap()).await;
        let r = socks5_connect(s, Target::Ip(local), Some(("alice", "secret")))
            .await
            .expect("SOCKS exchange");
        assert_eq!(
            r.code,
            want,
            "loopback with a LAN listen, {allow:?}\n{}",
            engine.logs()
        );
        // Link-local too.
        let s = lab.connect_client("127.0.0.1:1080".parse().unwrap()).await;
        let r = socks5_connect(
            s,
            Target::Ip("169.254.1.1:80".parse().unwrap()),
            Some(("alice", "secret")),
        )
        .await
        .expect("SOCKS exchange");
        if want == 0x02 {
            assert_eq!(r.code, 0x02, "link-local with a LAN listen");
        }
        // Anything else still works.
        let s = lab.connect_client("127.0.0.1:1080".parse().unwrap()).await;
        let r = socks5_connect(
            s,
            Target::Ip(SocketAddr::new(TARGET.into(), WHOAMI_PORT)),
            Some(("alice", "secret")),
        )
        .await
        .expect("SOCKS exchange");
        assert_eq!(r.code, 0, "a lab target with a LAN listen");
    }
}
