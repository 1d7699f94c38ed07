//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7) and BIND (§4, §6) end to end: a real netmix process in
//! the lab, raw SOCKS5 clients in the client namespace, UDP servers and connect-back hosts in
//! the internet namespace, and what they saw as the proof.

#![cfg(target_os = "linux")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use netmix_integration::client::{DASHBOARD, api, iface_json};
use netmix_integration::socks::{CMD_BIND, CMD_UDP_ASSOCIATE, read_reply};
use netmix_integration::{
    Engine, Lab, Servers, TARGET, Target, UDP_ECHO_PORT, UDP_WHOAMI_PORT, assert_eventually_async,
    lab_config, patience, socks5_command, spawn_engine, udp_unwrap, udp_wrap,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// An open association: its control connection, the relay it names, the client's socket.
struct Association {
    control: TcpStream,
    relay: SocketAddr,
    socket: UdpSocket,
}

/// Opens an association from a fresh socket on 127.0.0.1; with `announce`, the request
/// names that socket's address (else 0.0.0.0:0, and netmix learns it from the first datagram).
async fn associate(lab: &Lab, engine: &Engine, announce: bool) -> Association {
    let socket = lab.udp_client();
    let from = if announce {
        socket.local_addr().unwrap()
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    };
    let control = lab.connect_client(engine.socks_addr()).await;
    let reply = socks5_command(control, CMD_UDP_ASSOCIATE, Target::Ip(from))
        .await
        .expect("UDP ASSOCIATE exchange");
    assert_eq!(reply.code, 0, "UDP ASSOCIATE succeeded\n{}", engine.logs());
    assert_eq!(
        reply.bound.ip(),
        engine.socks_addr().ip(),
        "the relay sits on the address the control connection reached"
    );
    assert_ne!(reply.bound.port(), 0);
    Association {
        control: reply.stream,
        relay: reply.bound,
        socket,
    }
}

/// The next datagram on `socket` within `wait`, unwrapped: (FRAG, source named, payload).
async fn receive(socket: &UdpSocket, wait: Duration) -> Option<(u8, SocketAddr, Vec<u8>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let (frag, from, payload) = udp_unwrap(&buf[..n]).expect("a well-formed datagram");
    Some((frag, from, payload.to_vec()))
}

impl Association {
    /// Sends `payload` to `dest` through the relay (with `frag`).
    async fn send(&self, frag: u8, dest: &Target, payload: &[u8]) {
        let datagram = udp_wrap(frag, dest, payload);
        self.socket.send_to(&datagram, self.relay).await.unwrap();
    }

    /// One request and its answer (within 5 s): (source named, payload).
    async fn exchange(&self, dest: &Target, payload: &[u8]) -> (SocketAddr, Vec<u8>) {
        self.send(0, dest, payload).await;
        let (frag, from, answer) = receive(&self.socket, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no answer from {dest:?} through {}", self.relay));
        assert_eq!(frag, 0, "answers are whole datagrams");
        (from, answer)
    }

    /// Asks the UDP who-am-I server and returns the lab link its answer names.
    async fn link(&self, lab: &Lab) -> usize {
        let (from, answer) = self.exchange(&udp_target(UDP_WHOAMI_PORT), b"who").await;
        assert_eq!(from, SocketAddr::from((TARGET, UDP_WHOAMI_PORT)));
        link_of(lab, &answer)
    }
}

fn udp_target(port: u16) -> Target {
    Target::Ip(SocketAddr::from((TARGET, port)))
}

/// The lab link whose client address `answer` (a who-am-I answer) names.
fn link_of(lab: &Lab, answer: &[u8]) -> usize {
    let text = String::from_utf8_lossy(answer);
    let ip: IpAddr = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad who-am-I answer {text:?}"));
    lab.link_for_source(ip)
        .unwrap_or_else(|| panic!("{ip} is no lab link"))
}

/// A DNS-style query (header + one question) for `name`, A/IN, with id `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap());
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

async fn joined(engine: &Engine, n: usize) {
    assert_eventually_async!(
        engine.logs().matches("Interface joined.").count() >= n,
        "{n} interfaces joined:\n{}",
        engine.logs()
    );
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .count()
}

/// Whether a datagram carrying `payload` reached a UDP server within `wait`.
async fn arrives(servers: &Servers, payload: &[u8], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if servers.received(payload) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_associate_relays_dns_style_exchanges_out_the_chosen_link() {
    let lab = Lab::with_links(3);
    lab.set_hosts(&[("target.lab", IpAddr::V4(TARGET))]);
    let servers = lab.start_servers().await;
    let (engine, log) = netmix_integration::spawn_with_connection_log(&lab, "udp-connlog", "");
    joined(&engine, 3).await;

    let a = associate(&lab, &engine, false).await;
    let query = dns_query(0xbeef, "target.lab");
    let (from, answer) = a.exchange(&udp_target(UDP_ECHO_PORT), &query).await;
    assert_eq!(
        from,
        SocketAddr::from((TARGET, UDP_ECHO_PORT)),
        "the header names the answer's source"
    );
    assert_eq!(answer, query, "the answer comes back intact");
    let seen = servers
        .datagrams()
        .into_iter()
        .find(|d| d.payload == query)
        .expect("the server got the query");
    assert_eq!(seen.port, UDP_ECHO_PORT);
    let k = lab
        .link_for_source(seen.source.ip())
        .expect("the query left through a lab link");
    assert_eq!(a.link(&lab).await, k, "the association stays on its link");
    // A destination by name: netmix resolves it, the answer names the address.
    let named = Target::Domain("target.lab".into(), UDP_WHOAMI_PORT);
    let (from, answer) = a.exchange(&named, b"who").await;
    assert_eq!(from, SocketAddr::from((TARGET, UDP_WHOAMI_PORT)));
    assert_eq!(link_of(&lab, &answer), k);

    // Round-robin: the next association gets another link; both keep working side by side.
    let b = associate(&lab, &engine, false).await;
    let j = b.link(&lab).await;
    assert_ne!(j, k, "two associations, two links");
    assert_eq!(a.link(&lab).await, k);
    assert_eq!(b.link(&lab).await, j);

    // One record per association in the connection log, labelled socks5-udp, with its bytes.
    drop(a);
    drop(b);
    assert_eventually_async!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("\"socks5-udp\"")
            .count()
            == 2,
        "two association records:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("JSON lines");
        assert_eq!(r["protocol"], "socks5-udp", "{r}");
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["chosen"].as_str().unwrap().starts_with("wan"), "{r}");
        assert!(r["bytes_up"].as_u64().unwrap() > 0, "{r}");
        assert!(r["bytes_down"].as_u64().unwrap() > 0, "{r}");
    }
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_and_strangers_are_dropped_and_a_valid_datagram_after_arrives() {
    let lab = Lab::with_links(1);
    let servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &lab_config("\"wan*\"", ""));
    joined(&engine, 1).await;
    let whoami = udp_target(UDP_WHOAMI_PORT);

    // The request names the client's socket: anything else is a stranger.
    let a = associate(&lab, &engine, true).await;
    a.send(1, &whoami, b"fragment-1").await;
    a.send(0x80, &whoami, b"fragment-last").await;
    let stranger = lab.udp_client();
    stranger
        .send_to(&udp_wrap(0, &whoami, b"stranger"), a.relay)
        .await
        .unwrap();
    let (_, answer) = a.exchange(&whoami, b"valid-after").await;
    assert_eq!(link_of(&lab, &answer), 0);
    assert!(arrives(&servers, b"valid-after", Duration::from_secs(2)).await);
    for dropped in [&b"fragment-1"[..], b"fragment-last", b"stranger"] {
        assert!(
            !servers.received(dropped),
            "{} must not arrive",
            String::from_utf8_lossy(dropped)
        );
    }
    assert!(
        receive(&stranger, Duration::from_millis(300))
            .await
            .is_none(),
        "no answer to a stranger"
    );

    // The request leaves the port open: the first datagram from the client's address fixes
    // it, and another port of the same host is a stranger from then on.
    let b = associate(&lab, &engine, false).await;
    b.exchange(&whoami, b"first-fixes-the-port").await;
    stranger
        .send_to(&udp_wrap(0, &whoami, b"stranger-2"), b.relay)
        .await
        .unwrap();
    b.exchange(&whoami, b"valid-after-2").await;
    assert!(arrives(&servers, b"valid-after-2", Duration::from_secs(2)).await);
    assert!(
        !servers.received(b"stranger-2"),
        "the stranger never arrives"
    );
    assert!(
        engine
            .logs()
            .contains("Fragmented UDP datagram; dropped (no reassembly).")
    );
    assert!(
        engine
            .logs()
            .contains("UDP datagram from a source other than the client; dropped.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_udp_destinations_are_dropped() {
    let lab = Lab::with_links(1);
    lab.set_hosts(&[("target.lab", IpAddr::V4(TARGET))]);
    let servers = lab.start_servers().await;
    let engine = spawn_engine(
        &lab,
        &lab_config("\"wan*\"", "[socks]\ndeny = [\"198.19.0.1/32\"]\n"),
    );
    joined(&engine, 1).await;
    let a = associate(&lab, &engine, false).await;
    a.send(0, &udp_target(UDP_WHOAMI_PORT), b"denied-by-address")
        .await;
    a.send(
        0,
        &Target::Domain("target.lab".into(), UDP_WHOAMI_PORT),
        b"denied-by-name",
    )
    .await;
    assert!(
        receive(&a.socket, Duration::from_millis(500))
            .await
            .is_none()
    );
    assert!(!servers.received(b"denied-by-address"));
    assert!(!servers.received(b"denied-by-name"));
    assert_eq!(servers.datagram_count(), 0, "nothing reached the internet");
    assert_eventually_async!(
        engine.logs().matches("not allowed by socks.deny").count() == 2,
        "both drops logged:\n{}",
        engine.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_control_connection_frees_the_association() {
    let lab = Lab::with_links(1);
    let servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &lab_config("\"wan*\"", ""));
    joined(&engine, 1).await;
    let pid = engine.pid();
    // One association first, so that whatever netmix sets up once is set up.
    let warm = associate(&lab, &engine, false).await;
    warm.link(&lab).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = fd_count(pid);

    let a = associate(&lab, &engine, false).await;
    assert_eq!(a.link(&lab).await, 0);
    let open = fd_count(pid);
    assert!(
        open >= before + 3,
        "control connection, relay and outbound sockets: {before} → {open}"
    );
    let Association {
        control,
        relay,
        socket,
    } = a;
    drop(control);
    let deadline = Instant::now() + patience();
    while fd_count(pid) != before {
        assert!(
            Instant::now() < deadline,
            "descriptors still open: {before} before, {} now\n{}",
            fd_count(pid),
            engine.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The relay port relays no more.
    let whoami = udp_target(UDP_WHOAMI_PORT);
    socket
        .send_to(&udp_wrap(0, &whoami, b"after-close"), relay)
        .await
        .unwrap();
    assert!(receive(&socket, Duration::from_millis(500)).await.is_none());
    assert!(!arrives(&servers, b"after-close", Duration::from_millis(300)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_link_going_down_moves_the_association() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &lab_config("\"wan*\"", ""));
    joined(&engine, 3).await;
    let a = associate(&lab, &engine, false).await;
    let k = a.link(&lab).await;
    lab.set_link_down(k);
    let started = Instant::now();
    let whoami = udp_target(UDP_WHOAMI_PORT);
    let moved_to = loop {
        assert!(
            started.elapsed() < patience(),
            "still no answer via another link after {:?}\n{}",
            patience(),
            engine.logs()
        );
        a.send(0, &whoami, b"who").await;
        if let Some((_, from, answer)) = receive(&a.socket, Duration::from_millis(300)).await {
            assert_eq!(from, SocketAddr::from((TARGET, UDP_WHOAMI_PORT)));
            let j = link_of(&lab, &answer);
            if j != k {
                break j;
            }
        }
    };
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "moved within a few rescans and checks: {took:?}"
    );
    assert_eq!(a.link(&lab).await, moved_to, "and stays there");
    let logs = engine.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("Failed over.") && l.contains("socks5-udp"))
        .unwrap_or_else(|| panic!("the move is logged:\n{logs}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains(&lab.link(k).dev), "{line}");

    // The dashboard: one open connection, now on the new link (counted in its `active`), and
    // a failover event.
    let (old, new) = (&lab.link(k).dev, &lab.link(moved_to).dev);
    assert_eventually_async!(
        {
            let conns = api(&lab, DASHBOARD, "/api/connections?limit=10").await;
            let open: Vec<_> = conns
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["state"] == "open")
                .cloned()
                .collect();
            open.len() == 1 && open[0]["interface"] == new.as_str() && open[0]["retries"] == 1
        },
        "the association shows on its new link: {}",
        api(&lab, DASHBOARD, "/api/connections?limit=10").await
    );
    assert_eventually_async!(
        iface_json(&lab, new)
            .await
            .is_some_and(|i| i["active"] == 1),
        "counted in {new}'s active: {:?}",
        iface_json(&lab, new).await
    );
    let events = api(&lab, DASHBOARD, "/api/events?limit=100").await;
    assert!(
        events.as_array().unwrap().iter().any(|e| {
            e["kind"] == "failover"
                && e["message"].as_str().unwrap().contains("socks5-udp")
                && e["message"].as_str().unwrap().contains(old.as_str())
        }),
        "a failover event: {events}"
    );
    drop(a);
    assert_eventually_async!(
        iface_json(&lab, new)
            .await
            .is_some_and(|i| i["active"] == 0),
        "no longer active once closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_accepts_the_target_and_relays_both_ways() {
    let lab = Lab::with_links(2);
    let log =
        std::env::temp_dir().join(format!("netmix-bind-connlog-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let engine = spawn_engine(
        &lab,
        &lab_config(
            "\"wan*\"",
            &format!("connection_log = \"{}\"\n", log.display()),
        ),
    );
    joined(&engine, 2).await;
    let control = lab.connect_client(engine.socks_addr()).await;
    // The target host is 198.19.0.1: only a connection from it is taken.
    let mut reply = socks5_command(control, CMD_BIND, Target::Ip(SocketAddr::from((TARGET, 0))))
        .await
        .expect("BIND exchange");
    assert_eq!(reply.code, 0, "first reply\n{}", engine.logs());
    let bound = reply.bound;
    let k = lab
        .link_for_source(bound.ip())
        .unwrap_or_else(|| panic!("BND.ADDR {bound} is a lab link's address"));
    assert_ne!(bound.port(), 0);

    // Another host (the link's gateway) is closed, and the wait goes on.
    let gateway = IpAddr::V4(lab.link(k).peer_addr);
    let mut stray = lab
        .connect_from_inet(gateway, bound, Duration::from_secs(5))
        .await
        .expect("the stray's connect");
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), stray.read(&mut b))
        .await
        .expect("the stray is closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing for a stray");

    let mut target = lab
        .connect_from_inet(IpAddr::V4(TARGET), bound, Duration::from_secs(5))
        .await
        .expect("the target connects back");
    let (code, peer, _) =
        tokio::time::timeout(Duration::from_secs(5), read_reply(&mut reply.stream))
            .await
            .expect("second reply in time")
            .unwrap();
    assert_eq!(code, 0, "second reply");
    assert_eq!(
        peer,
        target.local_addr().unwrap(),
        "names the connecting host"
    );

    let client = &mut reply.stream;
    client.write_all(b"hello from the client").await.unwrap();
    let mut got = [0u8; 21];
    target.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello from the client");
    target.write_all(b"hello from the target").await.unwrap();
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello from the target");
    // The target's end of stream reaches the client.
    target.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .expect("end of stream passed on")
        .unwrap();
    assert!(rest.is_empty());

    // Recorded as one connection through the link it listened on.
    drop(reply);
    assert_eventually_async!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("socks5-bind"),
        "a connection log record"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let r: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(r["protocol"], "socks5-bind", "{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["chosen"], lab.link(k).dev.as_str(), "{r}");
    assert_eq!(
        (r["bytes_up"].as_u64(), r["bytes_down"].as_u64()),
        (Some(21), Some(21)),
        "{r}"
    );
    let _ = std::fs::remove_file(&log);
}
