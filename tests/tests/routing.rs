//! Where connections go (issue 14): every address of a name is a candidate, local
//! destinations are reached where they live, and netmix refuses to proxy to itself.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netmix_integration::{
    Lab, TARGET, Target, WHOAMI_PORT, lab_config, socks5_connect, spawn_engine,
};
use tokio::io::AsyncReadExt;

/// A SOCKS5 CONNECT through `proxy`; the reply code, BND.ADDR and what the destination sent.
async fn connect(lab: &Lab, proxy: SocketAddr, target: Target) -> (u8, SocketAddr, String) {
    let s = lab.connect_client(proxy).await;
    let mut r = tokio::time::timeout(Duration::from_secs(20), socks5_connect(s, target, None))
        .await
        .expect("SOCKS exchange timed out")
        .expect("SOCKS exchange");
    let mut seen = String::new();
    if r.code == 0 {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), r.stream.read_to_string(&mut seen)).await;
    }
    (r.code, r.bound, seen.trim().to_owned())
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
