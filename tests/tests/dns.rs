//! Names through live links (issue 14): netmix resolves names itself, each query through an
//! interface, raced over the next one after the stagger, so a dead primary link costs one
//! stagger; every address of a name is a candidate; IPv6 works on every link.
//!
//! The lab is a multi-homed machine: a DNS server in the internet namespace reachable over
//! every uplink, the client namespace's resolv.conf naming it, and the main routing table with
//! a default route per link (metrics 100/200/300).

#![cfg(target_os = "linux")]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netmix_integration::{
    DASHBOARD, DNS_SERVER, DnsServer, Engine, Lab, TARGET, TARGET6, Target, WHOAMI_PORT, api, ask,
    iface_json, lab_config, spawn_engine,
};

/// `[dns] stagger_ms` in these tests (the default).
const STAGGER: Duration = Duration::from_millis(150);

/// A SOCKS5 CONNECT through `proxy`; the reply code, BND.ADDR, what the destination sent and
/// how long until the reply.
async fn connect(
    lab: &Lab,
    proxy: SocketAddr,
    target: Target,
) -> (u8, SocketAddr, String, Duration) {
    let (w, took) = ask(lab, proxy, target).await;
    (w.code, w.bound, w.seen, took)
}

/// A three-link lab set up as a multi-homed machine: DNS server with `zone`, resolv.conf
/// naming it, main-table default routes with metrics 100/200/300.
async fn multihomed(zone: &[(&str, IpAddr)]) -> (Lab, netmix_integration::Servers, DnsServer) {
    let lab = Lab::with_links(3);
    let servers = lab.start_servers().await;
    let dns = lab.start_dns(zone);
    lab.set_resolv_conf(&[IpAddr::V4(DNS_SERVER)]);
    lab.set_main_default_routes();
    (lab, servers, dns)
}

fn engine(lab: &Lab) -> Engine {
    spawn_engine(
        lab,
        &lab_config(
            "\"wan*\"",
            "[health]\nfailures_to_down = 2\n\n[failover]\nmin_connect_ms = 250\n",
        ),
    )
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Blackhole,
    Down,
}

/// With the metric-100 link (wan0) dead, 10 of 10 new connections by name succeed, each
/// delayed by at most the stagger plus wan0's adaptive connect deadline, and every name's
/// queries arrived over the link that then carried its connection.
async fn the_primary_dies(fault: Fault) {
    let names: Vec<String> = (0..10).map(|i| format!("svc{i}.lab")).collect();
    let mut zone: Vec<(&str, IpAddr)> = names
        .iter()
        .map(|n| (n.as_str(), IpAddr::V4(TARGET)))
        .collect();
    zone.push(("warm.lab", IpAddr::V4(TARGET)));
    let (lab, _servers, dns) = multihomed(&zone).await;
    let engine = engine(&lab);
    // Every link carries a few connections first, so each has a measured connect time (the
    // adaptive deadline) as a machine in use would.
    for _ in 0..6 {
        let (code, ..) = connect(
            &lab,
            engine.socks_addr(),
            Target::Ip(SocketAddr::new(IpAddr::V4(TARGET), WHOAMI_PORT)),
        )
        .await;
        assert_eq!(code, 0, "warm-up\n{}", engine.logs());
    }
    let deadline_ms = iface_json(&lab, "wan0")
        .await
        .expect("wan0 in /api/interfaces")["connect_timeout_ms"]
        .as_u64()
        .expect("connect_timeout_ms");
    let bound = STAGGER + Duration::from_millis(deadline_ms) + Duration::from_millis(250);
    match fault {
        Fault::Blackhole => lab.blackhole(0, true),
        Fault::Down => lab.set_link_down(0),
    }
    dns.reset();
    let mut links = Vec::new();
    for name in &names {
        let (code, _, seen, took) = connect(
            &lab,
            engine.socks_addr(),
            Target::Domain(name.clone(), WHOAMI_PORT),
        )
        .await;
        assert_eq!(
            code,
            0,
            "{fault:?}: CONNECT {name} failed\n{}",
            engine.logs()
        );
        assert!(
            took <= bound,
            "{fault:?}: CONNECT {name} took {took:?}, more than the stagger + wan0's {deadline_ms} ms deadline (+250 ms)\n{}",
            engine.logs()
        );
        let link = lab
            .link_for_source(seen.parse().expect("who-am-I address"))
            .expect("a lab link");
        assert_ne!(link, 0, "{fault:?}: {name} went out through the dead link");
        let queried: Vec<usize> = dns
            .queries()
            .iter()
            .filter(|q| q.name.trim_end_matches('.').eq_ignore_ascii_case(name))
            .filter_map(|q| lab.link_for_source(q.source.ip()))
            .collect();
        assert!(
            !queried.is_empty(),
            "{fault:?}: no query for {name} reached the DNS server"
        );
        assert!(
            queried.iter().all(|&l| l == link),
            "{fault:?}: {name}'s queries came over links {queried:?}, its connection over {link}"
        );
        links.push(link);
    }
    // The strategy (round-robin) had wan0 first for some of them: the race, not luck, saved
    // those, and the dashboard's reason column says so.
    let conns = api(&lab, DASHBOARD, "/api/connections?limit=50").await;
    let raced = conns
        .as_array()
        .expect("connection list")
        .iter()
        .filter(|c| {
            c["reason"]
                .as_str()
                .is_some_and(|r| r.contains("DNS answered through") && r.contains("(wan0 did not)"))
        })
        .count();
    if matches!(fault, Fault::Blackhole) {
        assert!(
            raced >= 1,
            "no connection by name had wan0 first and was saved by the DNS race: {conns:#}"
        );
        // No connection went through wan0 (each went where DNS answered), so only its
        // unanswered queries, counted once they time out, can take it out of rotation.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let w0 = iface_json(&lab, "wan0").await.expect("wan0");
            if w0["health"] == "down" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "wan0's failed DNS queries did not count against it: {w0:#}\n{}",
                engine.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("{fault:?}: links {links:?}; {raced} saved by the DNS race");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_through_live_links_when_the_primary_is_blackholed() {
    the_primary_dies(Fault::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_through_live_links_when_the_primary_is_down() {
    the_primary_dies(Fault::Down).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_two_a_records_whose_first_drops_packets_connects_through_the_second() {
    let dropped: IpAddr = "198.18.202.1".parse().unwrap();
    let (lab, _servers, dns) =
        multihomed(&[("two.lab", dropped), ("two.lab", IpAddr::V4(TARGET))]).await;
    lab.exec_inet(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lab.exec_inet(&["ip", "route", "add", "blackhole", "198.18.202.0/24"]);
    let engine = spawn_engine(
        &lab,
        &lab_config("\"wan*\"", "[failover]\nenabled = false\n"),
    );
    let (code, _, seen, took) = connect(
        &lab,
        engine.socks_addr(),
        Target::Domain("two.lab".into(), WHOAMI_PORT),
    )
    .await;
    assert_eq!(
        code,
        0,
        "connected through the second A record\n{}",
        engine.logs()
    );
    assert!(
        lab.link_for_source(seen.parse().unwrap()).is_some(),
        "{seen}"
    );
    assert!(
        took < Duration::from_millis(1200),
        "one address stagger, not the connect deadline: {took:?}"
    );
    assert!(
        dns.queries()
            .iter()
            .any(|q| q.name.starts_with("two.lab") && q.qtype == "A"),
        "the name was asked of the lab's DNS server, not found elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_and_hosts_entries_come_first() {
    let (lab, _servers, dns) = multihomed(&[
        ("cached.lab", IpAddr::V4(TARGET)),
        ("both.lab", "198.18.203.1".parse().unwrap()),
    ])
    .await;
    // /etc/hosts says both.lab is the target; DNS says otherwise: the hosts file wins.
    lab.set_hosts(&[("both.lab", IpAddr::V4(TARGET))]);
    let engine = engine(&lab);
    for _ in 0..3 {
        let (code, ..) = connect(
            &lab,
            engine.socks_addr(),
            Target::Domain("cached.lab".into(), WHOAMI_PORT),
        )
        .await;
        assert_eq!(code, 0, "{}", engine.logs());
    }
    let asked = dns
        .queries()
        .iter()
        .filter(|q| q.name.starts_with("cached.lab") && q.qtype == "A")
        .count();
    assert_eq!(
        asked,
        1,
        "three connections, one A query (the TTL is 60 s): {:?}",
        dns.queries()
    );
    let (code, ..) = connect(
        &lab,
        engine.socks_addr(),
        Target::Domain("both.lab".into(), WHOAMI_PORT),
    )
    .await;
    assert_eq!(
        code,
        0,
        "both.lab from /etc/hosts reaches the target\n{}",
        engine.logs()
    );
    assert!(
        !dns.queries().iter().any(|q| q.name.starts_with("both.lab")),
        "a name in /etc/hosts is not asked of DNS"
    );
    let (code, ..) = connect(
        &lab,
        engine.socks_addr(),
        Target::Domain("nothing.lab".into(), WHOAMI_PORT),
    )
    .await;
    assert_eq!(code, 4, "an unknown name: host unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_literals_and_dual_stack_names_work_on_every_link() {
    let (lab, _servers, dns) = multihomed(&[
        ("dual.lab", IpAddr::V6(TARGET6)),
        ("dual.lab", IpAddr::V4(TARGET)),
    ])
    .await;
    for k in 0..3 {
        // One link at a time: the others are excluded, so the connection must use wan{k}.
        let engine = spawn_engine(&lab, &lab_config(&format!("\"wan{k}\""), ""));
        let v6 = IpAddr::V6(lab.link(k).client_addr6);
        let (code, bound, seen, _) = connect(
            &lab,
            engine.socks_addr(),
            Target::Ip(SocketAddr::new(IpAddr::V6(TARGET6), WHOAMI_PORT)),
        )
        .await;
        assert_eq!(code, 0, "wan{k}: CONNECT to [{TARGET6}]\n{}", engine.logs());
        assert_eq!(
            seen.parse::<IpAddr>().unwrap(),
            v6,
            "wan{k}: left through the link's IPv6 address"
        );
        assert_eq!(
            bound.ip(),
            v6,
            "wan{k}: BND.ADDR is the link's IPv6 address"
        );
        let (code, bound, seen, _) = connect(
            &lab,
            engine.socks_addr(),
            Target::Domain("dual.lab".into(), WHOAMI_PORT),
        )
        .await;
        assert_eq!(code, 0, "wan{k}: CONNECT to dual.lab\n{}", engine.logs());
        assert_eq!(
            seen.parse::<IpAddr>().unwrap(),
            v6,
            "wan{k}: the AAAA record first (RFC 8305)"
        );
        assert_eq!(bound.ip(), v6, "wan{k}: BND.ADDR");
        let (code, bound, seen, _) = connect(
            &lab,
            engine.socks_addr(),
            Target::Ip(SocketAddr::new(IpAddr::V4(TARGET), WHOAMI_PORT)),
        )
        .await;
        assert_eq!(code, 0);
        let v4 = IpAddr::V4(lab.link(k).client_addr);
        assert_eq!(
            (seen.parse::<IpAddr>().unwrap(), bound.ip()),
            (v4, v4),
            "wan{k}: IPv4 as before"
        );
    }
    let aaaa = dns
        .queries()
        .iter()
        .filter(|q| q.name.starts_with("dual.lab") && q.qtype == "AAAA")
        .count();
    assert!(aaaa >= 1, "dual.lab's AAAA record was asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_by_name_resolve_through_the_link_they_probe() {
    let (lab, _servers, dns) = multihomed(&[("probe.lab", IpAddr::V4(TARGET))]).await;
    // wan0 carries the main table's best default route and is dead from the start: the system
    // resolver (through the default route) could not resolve the probe target at all.
    lab.blackhole(0, true);
    let engine = spawn_engine(
        &lab,
        &lab_config(
            "\"wan*\"",
            "[health]\nprobe_targets = [\"probe.lab:7\"]\nprobe_interval_ms = 300\nprobe_timeout_ms = 250\nfailures_to_down = 2\n",
        ),
    );
    let mut measured = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let (Some(w0), Some(w1), Some(w2)) = (
            iface_json(&lab, "wan0").await,
            iface_json(&lab, "wan1").await,
            iface_json(&lab, "wan2").await,
        ) && !w1["latency_ms"].is_null()
            && !w2["latency_ms"].is_null()
            && w0["health"] == "down"
        {
            measured = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        measured,
        "the live links were measured by probes of probe.lab and the dead one went Down\n{}",
        engine.logs()
    );
    let links: Vec<usize> = dns
        .queries()
        .iter()
        .filter(|q| q.name.starts_with("probe.lab"))
        .filter_map(|q| lab.link_for_source(q.source.ip()))
        .collect();
    assert!(
        !links.is_empty() && links.iter().all(|&l| l != 0),
        "probe.lab was asked through the live links only (the dead one's queries never arrive): {links:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_netmix_itself_is_refused() {
    let (lab, _servers, _dns) =
        multihomed(&[("self.lab", IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))]).await;
    let engine = engine(&lab);
    let port = engine.socks_addr().port();
    let (code, ..) = connect(
        &lab,
        engine.socks_addr(),
        Target::Domain("self.lab".into(), port),
    )
    .await;
    assert_eq!(
        code,
        2,
        "a DNS answer naming netmix's own port is a proxy loop: 02\n{}",
        engine.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interface_asks_its_own_servers_and_system_mode_asks_the_system() {
    let (lab, _servers, dns) = multihomed(&[("own.lab", IpAddr::V4(TARGET))]).await;
    // wan0's own server does not exist: its queries go there (never to the lab's server), fail,
    // and the next interface answers.
    let engine = spawn_engine(
        &lab,
        &lab_config(
            "\"wan*\"",
            "[[interface]]\nname = \"wan0\"\ndns = [\"198.19.0.99\"]\n",
        ),
    );
    for _ in 0..3 {
        let (code, ..) = connect(
            &lab,
            engine.socks_addr(),
            Target::Domain("own.lab".into(), WHOAMI_PORT),
        )
        .await;
        assert_eq!(code, 0, "{}", engine.logs());
    }
    assert!(
        dns.queries()
            .iter()
            .all(|q| lab.link_for_source(q.source.ip()) != Some(0)),
        "wan0 asked its own server, not the lab's: {:?}",
        dns.queries()
    );
    drop(engine);
    // System mode: getaddrinfo through resolv.conf and the main table (wan0, metric 100).
    dns.reset();
    let engine = spawn_engine(&lab, &lab_config("\"wan*\"", "[dns]\nmode = \"system\"\n"));
    let (code, ..) = connect(
        &lab,
        engine.socks_addr(),
        Target::Domain("own.lab".into(), WHOAMI_PORT),
    )
    .await;
    assert_eq!(code, 0, "{}", engine.logs());
    let links: Vec<Option<usize>> = dns
        .queries()
        .iter()
        .map(|q| lab.link_for_source(q.source.ip()))
        .collect();
    assert!(
        !links.is_empty() && links.iter().all(|l| *l == Some(0)),
        "the system resolver asked out of the metric-100 route (wan0): {links:?}"
    );
}
