//! The lab's IPv6 uplinks, its opt-in main-table default routes and its DNS server (no
//! netmix involved).

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use netmix_integration::{
    DEFAULT_DNS_TTL, DNS_PORT, DNS_SERVER, DNS_SERVER6, ECHO_PORT, Lab, LinkSpec, Servers, TARGET6,
    UDP_WHOAMI_PORT, WHOAMI_PORT, assert_eventually, set_lab_delay_bin,
};

const T: Duration = Duration::from_secs(1);

fn setup() {
    set_lab_delay_bin(env!("CARGO_BIN_EXE_lab-delay"));
}

/// Asks the who-am-I server at `dst` through link `k` which source address it saw.
fn whoami_via(lab: &Lab, k: usize, dst: SocketAddr) -> std::io::Result<String> {
    let mut s = lab.connect_via(k, dst, T)?;
    s.set_read_timeout(Some(T))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The same, unbound: the client namespace's main table decides.
fn whoami_unbound(lab: &Lab, dst: SocketAddr) -> std::io::Result<String> {
    let mut s = lab.connect_unbound(dst, T)?;
    s.set_read_timeout(Some(T))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

fn ok_stdout(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_on_every_link() {
    setup();
    let lab = Lab::new(&[
        LinkSpec::plain(),
        LinkSpec::plain(),
        LinkSpec::plain().delay(40),
    ]);
    let servers: Servers = lab.start_servers().await;
    assert_eq!(lab.target6(), TARGET6);
    assert_eq!(servers.addr6(ECHO_PORT).ip(), IpAddr::V6(TARGET6));

    for k in 0..3 {
        let l = lab.link(k).clone();
        assert_eq!(
            l.client_addr6,
            format!("2001:db8:{}::2", 10 + k)
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        assert_eq!(
            l.peer_addr6,
            format!("2001:db8:{}::1", 10 + k)
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        let v6 = IpAddr::V6(l.client_addr6);
        assert_eq!(lab.link_for_source(v6), Some(k));

        // Echo over v6, bound to wan{k} and its v6 address.
        let mut echo = lab
            .connect_via(k, servers.addr6(ECHO_PORT), T)
            .unwrap_or_else(|e| panic!("v6 echo through link {k}: {e}"));
        assert_eq!(echo.local_addr().unwrap().ip(), v6, "link {k}'s v6 source");
        echo.set_read_timeout(Some(T)).unwrap();
        echo.write_all(b"hello v6").unwrap();
        echo.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        echo.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"hello v6", "link {k}");
        assert_eq!(servers.seen_from(v6), 1, "server saw link {k}'s v6 address");

        // Who-am-I over v6 says the same; v4 on the same link is unaffected.
        let answer = whoami_via(&lab, k, servers.addr6(WHOAMI_PORT)).unwrap();
        assert_eq!(answer, format!("{}\n", l.client_addr6), "link {k}");
        let answer = whoami_via(&lab, k, servers.addr(WHOAMI_PORT)).unwrap();
        assert_eq!(answer, format!("{}\n", l.client_addr), "link {k}");
        // The link's v6 peer address answers too (the servers listen on [::]).
        let to_peer = SocketAddr::new(IpAddr::V6(l.peer_addr6), WHOAMI_PORT);
        assert_eq!(
            whoami_via(&lab, k, to_peer).unwrap(),
            format!("{}\n", l.client_addr6)
        );

        // UDP who-am-I on the v6 target.
        let udp = lab.udp_via(k, IpAddr::V6(TARGET6));
        udp.set_read_timeout(Some(T)).unwrap();
        udp.send_to(b"who", servers.addr6(UDP_WHOAMI_PORT)).unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = udp.recv_from(&mut buf).expect("UDP v6 answer");
        assert_eq!(from, servers.addr6(UDP_WHOAMI_PORT));
        assert_eq!(&buf[..n], format!("{}\n", l.client_addr6).as_bytes());
    }
    assert!(
        servers
            .datagrams()
            .iter()
            .all(|d| lab.link_for_source(d.source.ip()).is_some()),
        "{:?}",
        servers.datagrams()
    );

    // No main-table default route, but unlike v4 an unbound v6 socket does get out: Linux
    // picks its source address first (RFC 6724, among all addresses; the first link's wins
    // the tie) and routes again from there, which matches that link's `from` rule.
    assert_eq!(
        whoami_unbound(&lab, servers.addr6(WHOAMI_PORT)).unwrap(),
        "2001:db8:10::2\n"
    );
    let err = lab
        .connect_unbound(servers.addr(WHOAMI_PORT), T)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NetworkUnreachable, "{err}");

    // Blackhole drops v6 too; off → works again.
    lab.blackhole(1, true);
    for dst in [servers.addr6(WHOAMI_PORT), servers.addr(WHOAMI_PORT)] {
        let err = lab.connect_via(1, dst, T).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{dst}: {err}");
    }
    assert!(whoami_via(&lab, 0, servers.addr6(WHOAMI_PORT)).is_ok());
    lab.blackhole(1, false);
    assert_eq!(
        whoami_via(&lab, 1, servers.addr6(WHOAMI_PORT)).unwrap(),
        "2001:db8:11::2\n"
    );

    // Down → v6 fails; up → the v6 address is still there and the v6 route is restored.
    lab.set_link_down(0);
    assert!(whoami_via(&lab, 0, servers.addr6(WHOAMI_PORT)).is_err());
    let addrs = ok_stdout(
        lab.exec_client(&["ip", "-6", "addr", "show", "dev", "wan0"]),
        "ip addr",
    );
    assert!(
        addrs.contains("2001:db8:10::2/64"),
        "kept while down: {addrs}"
    );
    lab.set_link_up(0);
    assert_eventually!(
        whoami_via(&lab, 0, servers.addr6(WHOAMI_PORT)).is_ok(),
        "link 0 carries v6 again"
    );
    assert_eq!(
        whoami_via(&lab, 0, servers.addr6(WHOAMI_PORT)).unwrap(),
        "2001:db8:10::2\n"
    );

    // The delayed link delays v6 as it does v4.
    let plain = lab.fastest_connect_ms(0, servers.addr6(WHOAMI_PORT), T);
    let delayed = lab.fastest_connect_ms(2, servers.addr6(WHOAMI_PORT), T);
    eprintln!("v6 connect time: plain link {plain:.2} ms, 40 ms link {delayed:.2} ms");
    assert!(plain < 10.0, "undelayed link took {plain:.2} ms");
    assert!(
        (35.0..80.0).contains(&delayed),
        "40 ms link took {delayed:.2} ms over v6"
    );

    // curl over v6 through a link, as an external process.
    let out = lab.exec_client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--interface",
        "wan1",
        "http://[2001:db8:ffff::1]/ip",
    ]);
    assert_eq!(ok_stdout(out, "curl -6"), "2001:db8:11::2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_table_default_routes_follow_their_metrics() {
    setup();
    let lab = Lab::with_links(3);
    let servers = lab.start_servers().await;
    lab.set_main_default_routes();
    assert_eq!(
        (
            Lab::main_metric(0),
            Lab::main_metric(1),
            Lab::main_metric(2)
        ),
        (100, 200, 300)
    );

    let routes = ok_stdout(
        lab.exec_client(&["ip", "route", "show", "default"]),
        "ip route",
    );
    for (k, metric) in [(0, 100), (1, 200), (2, 300)] {
        let want = format!("default via 198.18.{}.1 dev wan{k}", 10 + k);
        let line = routes
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("no `{want}` in:\n{routes}"));
        assert!(line.contains(&format!("metric {metric}")), "{line}");
    }
    let routes6 = ok_stdout(
        lab.exec_client(&["ip", "-6", "route", "show", "default"]),
        "ip -6 route",
    );
    for (k, metric) in [(0, 100), (1, 200), (2, 300)] {
        let want = format!("default via 2001:db8:{}::1 dev wan{k}", 10 + k);
        assert!(
            routes6
                .lines()
                .any(|l| l.starts_with(&want) && l.contains(&format!("metric {metric}"))),
            "no `{want} metric {metric}` in:\n{routes6}"
        );
    }

    // Unbound: the lowest metric wins, link 0 …
    let v4 = servers.addr(WHOAMI_PORT);
    let v6 = servers.addr6(WHOAMI_PORT);
    assert_eq!(whoami_unbound(&lab, v4).unwrap(), "198.18.10.2\n");
    assert_eq!(whoami_unbound(&lab, v6).unwrap(), "2001:db8:10::2\n");

    // … and without link 0's route, link 1.
    ok_stdout(
        lab.exec_client(&[
            "ip",
            "route",
            "del",
            "default",
            "via",
            "198.18.10.1",
            "dev",
            "wan0",
            "metric",
            "100",
        ]),
        "ip route del",
    );
    assert_eq!(whoami_unbound(&lab, v4).unwrap(), "198.18.11.2\n");
    assert_eq!(
        whoami_unbound(&lab, v6).unwrap(),
        "2001:db8:10::2\n",
        "v6 still has link 0's"
    );
    ok_stdout(
        lab.exec_client(&[
            "ip",
            "-6",
            "route",
            "del",
            "default",
            "via",
            "2001:db8:10::1",
            "dev",
            "wan0",
            "metric",
            "100",
        ]),
        "ip -6 route del",
    );
    assert_eq!(whoami_unbound(&lab, v6).unwrap(), "2001:db8:11::2\n");

    // Link 1 down → link 2; up again → its routes come back, so link 1 again.
    lab.set_link_down(1);
    assert_eq!(whoami_unbound(&lab, v4).unwrap(), "198.18.12.2\n");
    assert_eq!(whoami_unbound(&lab, v6).unwrap(), "2001:db8:12::2\n");
    lab.set_link_up(1);
    assert_eventually!(
        whoami_unbound(&lab, v4).is_ok_and(|a| a == "198.18.11.2\n")
            && whoami_unbound(&lab, v6).is_ok_and(|a| a == "2001:db8:11::2\n"),
        "link 1's main-table routes restored"
    );
    // Bound sockets still go where they are bound.
    assert_eq!(whoami_via(&lab, 2, v4).unwrap(), "198.18.12.2\n");
    assert_eq!(whoami_via(&lab, 0, v6).unwrap(), "2001:db8:10::2\n");

    // resolv.conf for `ip netns exec` processes.
    lab.set_resolv_conf(&[IpAddr::V4(DNS_SERVER), IpAddr::V6(DNS_SERVER6)]);
    let conf = ok_stdout(
        lab.exec_client(&["cat", "/etc/resolv.conf"]),
        "cat resolv.conf",
    );
    assert_eq!(
        conf,
        "nameserver 198.19.0.53\nnameserver 2001:db8:ffff::53\noptions timeout:2 attempts:1\n"
    );
}

/// One parsed answer: response code, whether authoritative, `(address, ttl)` records.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    code: ResponseCode,
    authoritative: bool,
    records: Vec<(IpAddr, u32)>,
}

fn query_bytes(name: &str, rtype: RecordType) -> (u16, Vec<u8>) {
    let mut msg = Message::query();
    msg.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        rtype,
    ));
    msg.metadata.recursion_desired = true;
    (msg.metadata.id, msg.to_vec().unwrap())
}

/// A name as text, without the trailing dot.
fn plain(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}

fn parse_answer(id: u16, bytes: &[u8], name: &str, rtype: RecordType) -> Answer {
    let msg = Message::from_vec(bytes).expect("a DNS message");
    assert_eq!(msg.metadata.id, id, "answer to our query");
    assert_eq!(msg.queries.len(), 1);
    assert_eq!(msg.queries[0].query_type(), rtype);
    assert_eq!(plain(msg.queries[0].name()), name);
    assert!(!msg.metadata.truncation);
    let records = msg
        .answers
        .iter()
        .map(|r| {
            assert_eq!(plain(&r.name), name, "owner name as asked");
            let ip = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                other => panic!("unexpected record {other:?}"),
            };
            (ip, r.ttl)
        })
        .collect();
    Answer {
        code: msg.metadata.response_code,
        authoritative: msg.metadata.authoritative,
        records,
    }
}

/// Asks `server` over UDP from the client namespace through link `k`.
fn ask_udp(lab: &Lab, k: usize, server: IpAddr, name: &str, rtype: RecordType) -> Answer {
    let sock = lab.udp_via(k, server);
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (id, query) = query_bytes(name, rtype);
    let to = SocketAddr::new(server, DNS_PORT);
    sock.send_to(&query, to).unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no UDP answer from {to} via link {k}: {e}"));
    assert_eq!(from, to, "answered from the address asked");
    parse_answer(id, &buf[..n], name, rtype)
}

/// Asks `server` over TCP (length-prefixed) from the client namespace through link `k`;
/// asks twice on the same connection.
fn ask_tcp(lab: &Lab, k: usize, server: IpAddr, name: &str, rtype: RecordType) -> Answer {
    let to = SocketAddr::new(server, DNS_PORT);
    let mut s = lab
        .connect_via(k, to, T)
        .unwrap_or_else(|e| panic!("TCP to {to} via link {k}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (id, query) = query_bytes(name, rtype);
        let mut framed = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        s.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut msg).unwrap();
        answers.push(parse_answer(id, &msg, name, rtype));
    }
    let second = answers.pop().unwrap();
    let first = answers.pop().unwrap();
    assert_eq!(first, second, "same answer twice on one connection");
    first
}

/// A question and the answer it must get: name, type, response code, `(address, ttl)`s.
type Case = (&'static str, RecordType, ResponseCode, Vec<(IpAddr, u32)>);

const ONE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const M4A: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const M4B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 12);
const M6A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x11);
const M6B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x12);

fn zone() -> Vec<(&'static str, IpAddr)> {
    vec![
        ("one.lab", IpAddr::V4(ONE)),
        ("multi.lab", IpAddr::V4(M4A)),
        ("multi.lab", IpAddr::V6(M6A)),
        ("multi.lab", IpAddr::V4(M4B)),
        ("multi.lab", IpAddr::V6(M6B)),
        ("six.lab", IpAddr::V6(TARGET6)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_server_answers_and_logs_the_link() {
    setup();
    let lab = Lab::with_links(2);
    let dns = lab.start_dns(&zone());
    assert_eq!(dns.addr(), SocketAddr::from((DNS_SERVER, 53)));
    assert_eq!(dns.addr6(), SocketAddr::new(IpAddr::V6(DNS_SERVER6), 53));
    let ttl = DEFAULT_DNS_TTL;
    assert_eq!(ttl, 60);

    let v4 = |ip: Ipv4Addr| (IpAddr::V4(ip), ttl);
    let v6 = |ip: Ipv6Addr| (IpAddr::V6(ip), ttl);
    let cases: Vec<Case> = vec![
        (
            "one.lab",
            RecordType::A,
            ResponseCode::NoError,
            vec![v4(ONE)],
        ),
        (
            "multi.lab",
            RecordType::A,
            ResponseCode::NoError,
            vec![v4(M4A), v4(M4B)],
        ),
        (
            "multi.lab",
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![v6(M6A), v6(M6B)],
        ),
        (
            "six.lab",
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![v6(TARGET6)],
        ),
        ("one.lab", RecordType::AAAA, ResponseCode::NoError, vec![]),
        ("six.lab", RecordType::A, ResponseCode::NoError, vec![]),
        ("nope.lab", RecordType::A, ResponseCode::NXDomain, vec![]),
        ("nope.lab", RecordType::AAAA, ResponseCode::NXDomain, vec![]),
    ];
    for k in 0..2 {
        for server in [IpAddr::V4(DNS_SERVER), IpAddr::V6(DNS_SERVER6)] {
            for tcp in [false, true] {
                dns.reset();
                let started = Instant::now();
                for (name, rtype, code, records) in &cases {
                    let answer = if tcp {
                        ask_tcp(&lab, k, server, name, *rtype)
                    } else {
                        ask_udp(&lab, k, server, name, *rtype)
                    };
                    let want = Answer {
                        code: *code,
                        authoritative: true,
                        records: records.clone(),
                    };
                    assert_eq!(
                        answer, want,
                        "{name} {rtype} via link {k} to {server}, tcp {tcp}"
                    );
                }
                // Every question logged, in order, with the link it came through.
                let log = dns.queries();
                let per_case = if tcp { 2 } else { 1 };
                assert_eq!(log.len(), cases.len() * per_case, "{log:#?}");
                for (i, q) in log.iter().enumerate() {
                    let (name, rtype, ..) = &cases[i / per_case];
                    assert_eq!(q.name, *name);
                    assert_eq!(q.qtype, rtype.to_string());
                    assert_eq!(lab.link_for_source(q.source.ip()), Some(k), "{q:?}");
                    assert_eq!(q.server, SocketAddr::new(server, DNS_PORT));
                    assert_eq!(q.tcp, tcp);
                    assert!(q.at >= started && q.at <= Instant::now());
                }
            }
        }
    }
    // Names are matched case-insensitively and logged lower-cased; a blackholed link
    // carries no query.
    dns.reset();
    let answer = ask_udp(&lab, 1, IpAddr::V4(DNS_SERVER), "One.LAB", RecordType::A);
    assert_eq!(answer.records, vec![v4(ONE)]);
    assert_eq!(dns.queries()[0].name, "one.lab");
    lab.blackhole(0, true);
    let sock = lab.udp_via(0, IpAddr::V6(DNS_SERVER6));
    sock.set_read_timeout(Some(T)).unwrap();
    let (_, query) = query_bytes("one.lab", RecordType::A);
    sock.send_to(&query, dns.addr6()).unwrap();
    assert!(sock.recv_from(&mut [0u8; 512]).is_err(), "blackholed");
    assert_eq!(dns.queries().len(), 1, "{:?}", dns.queries());
    lab.blackhole(0, false);

    // A zone change and another TTL apply at once.
    dns.set_zone(&[("one.lab", IpAddr::V4(M4A))]);
    dns.set_ttl(5);
    let answer = ask_tcp(&lab, 0, IpAddr::V6(DNS_SERVER6), "one.lab", RecordType::A);
    assert_eq!(answer.records, vec![(IpAddr::V4(M4A), 5)]);

    // glibc through /etc/resolv.conf and the main table's lowest-metric link (link 0).
    lab.set_main_default_routes();
    lab.set_resolv_conf(&[IpAddr::V4(DNS_SERVER)]);
    dns.set_zone(&zone());
    dns.reset();
    let out = lab.exec_client(&["getent", "ahostsv4", "multi.lab"]);
    let text = ok_stdout(out, "getent ahostsv4 multi.lab");
    assert!(
        text.contains("198.19.0.11") && text.contains("198.19.0.12"),
        "{text}"
    );
    let log = dns.queries();
    assert!(
        log.iter()
            .any(|q| q.name == "multi.lab" && q.qtype == "A" && !q.tcp),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .all(|q| lab.link_for_source(q.source.ip()) == Some(0)),
        "{log:#?}"
    );

    // Stopped on drop; a new server (here with another TTL) can start at once.
    drop(dns);
    assert_eventually!(
        lab.connect_via(0, SocketAddr::from((DNS_SERVER, 53)), T)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "the DNS server stopped"
    );
    let dns = lab.start_dns_with_ttl(&zone(), 7);
    let answer = ask_udp(&lab, 1, IpAddr::V4(DNS_SERVER), "one.lab", RecordType::A);
    assert_eq!(answer.records, vec![(IpAddr::V4(ONE), 7)]);
    assert_eq!(dns.queries().len(), 1);
}
