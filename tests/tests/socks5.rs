//! The engine foundation end to end: real netmix processes in the lab, real clients (curl,
//! tokio-socks, raw SOCKS5 bytes), real sockets on the lab's links.

#![cfg(target_os = "linux")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use netmix_integration::client::by_name;
use netmix_integration::{
    ECHO_PORT, HTTP_PORT, Lab, LinkSpec, REFUSED_PORT, TARGET, Target, WHOAMI_PORT,
    assert_eventually_async, bytes_body, lab_config, run_netmix, socks5_connect, spawn_engine,
    spread, whoami,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A config for the lab: the given interfaces, quick rescans, short timeouts.
fn config(include: &str, extra: &str) -> String {
    lab_config(include, extra)
}

fn all_wan() -> String {
    config("\"wan*\"", "")
}

/// The reply code netmix gives a no-auth CONNECT to `t`.
async fn reply_code(lab: &Lab, socks: SocketAddr, t: Target) -> u8 {
    let s = lab.connect_client(socks).await;
    socks5_connect(s, t, None).await.expect("exchange").code
}

fn target(port: u16) -> Target {
    Target::Ip(SocketAddr::new(TARGET.into(), port))
}

/// Sends raw bytes to netmix and returns everything it answers until it closes (≤ 5 s).
async fn raw(lab: &Lab, socks: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = lab.connect_client(socks).await;
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

/// Sends raw bytes to netmix and returns the first `n` bytes of its answer (≤ 5 s): for
/// requests whose connection stays open (BIND waiting, a UDP association).
async fn raw_prefix(lab: &Lab, socks: SocketAddr, bytes: &[u8], n: usize) -> Vec<u8> {
    let mut s = lab.connect_client(socks).await;
    s.write_all(bytes).await.unwrap();
    let mut out = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut out))
        .await
        .expect("an answer in time")
        .expect("an answer of that length");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_tokio_socks_fetch_through_netmix() {
    let lab = Lab::with_links(3);
    lab.set_hosts(&[("target.lab", IpAddr::V4(TARGET))]);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &all_wan());

    // curl, letting netmix resolve the name.
    let socks = engine.socks_addr().to_string();
    let out = lab.exec_client(&[
        "curl",
        "-sS",
        "-m",
        "10",
        "--socks5-hostname",
        &socks,
        "http://target.lab/bytes/300000",
    ]);
    assert!(
        out.status.success(),
        "curl failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        engine.logs()
    );
    assert_eq!(
        out.stdout,
        bytes_body(300_000),
        "body through netmix must be intact"
    );
    let out = lab.exec_client(&[
        "curl",
        "-sS",
        "-m",
        "10",
        "--socks5-hostname",
        &socks,
        "http://target.lab/ip",
    ]);
    let ip: IpAddr = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("an address");
    assert!(
        lab.link_for_source(ip).is_some(),
        "curl's request left through a lab link, got {ip}"
    );

    // tokio-socks, by name and by address.
    for dest in [
        ("target.lab".to_owned(), WHOAMI_PORT),
        (TARGET.to_string(), WHOAMI_PORT),
    ] {
        let stream = lab.connect_client(engine.socks_addr()).await;
        let mut s =
            tokio_socks::tcp::Socks5Stream::connect_with_socket(stream, (dest.0.as_str(), dest.1))
                .await
                .expect("tokio-socks CONNECT");
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        let ip: IpAddr = answer.trim().parse().unwrap();
        assert!(lab.link_for_source(ip).is_some(), "{ip}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_round_robin_spreads_evenly_and_bnd_addr_names_the_link() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    // An empty plugins folder: the built-in round-robin answers.
    let empty = std::env::temp_dir().join(format!("netmix-empty-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let cfg = config(
        "\"wan*\"",
        &format!("[plugins]\ndir = \"{}\"\n", empty.display()),
    );
    let engine = spawn_engine(&lab, &cfg);
    assert_eventually_async!(
        engine.logs().matches("Interface joined.").count() == 3,
        "three interfaces joined:\n{}",
        engine.logs()
    );
    let counts = spread(&lab, &engine, 30).await;
    assert_eq!(counts, vec![10, 10, 10], "{:?}", by_name(&lab, &counts));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_code_is_provoked() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    // The internet namespace forwards, so an address it has no route for answers with ICMP
    // "network unreachable".
    lab.exec_inet(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let engine = spawn_engine(
        &lab,
        &config("\"wan*\"", "[socks]\ndeny = [\"198.19.0.128/25\"]\n"),
    );
    let socks = engine.socks_addr();
    let code = |t: Target| reply_code(&lab, socks, t);
    assert_eq!(code(target(WHOAMI_PORT)).await, 0x00, "succeeded");
    assert_eq!(code(target(REFUSED_PORT)).await, 0x05, "refused port");
    assert_eq!(
        code(Target::Ip("198.19.0.200:80".parse().unwrap())).await,
        0x02,
        "denied by socks.deny"
    );
    assert_eq!(
        code(Target::Ip("198.18.200.1:80".parse().unwrap())).await,
        0x03,
        "remote network unreachable"
    );
    assert_eq!(
        code(Target::Ip("[2001:db8::1]:80".parse().unwrap())).await,
        0x03,
        "no interface has IPv6"
    );
    assert_eq!(
        code(Target::Domain("no-such-host.lab".into(), 80)).await,
        0x04,
        "unknown host"
    );

    // BIND and UDP ASSOCIATE are served (tests/tests/socks5_udp_bind.rs); their targets go
    // through the same checks as CONNECT's. An unknown command, unknown address types.
    let bind = raw_prefix(
        &lab,
        socks,
        &[5, 1, 0, 5, 2, 0, 1, 198, 19, 0, 1, 0, 80],
        12,
    )
    .await;
    assert_eq!(&bind[..6], &[5, 0, 5, 0x00, 0, 1], "BIND: listening (IPv4)");
    assert!(
        lab.link_for_source(IpAddr::from([bind[6], bind[7], bind[8], bind[9]]))
            .is_some(),
        "BIND listens on a link's address: {bind:?}"
    );
    let bind = raw(&lab, socks, &[5, 1, 0, 5, 2, 0, 1, 198, 19, 0, 200, 0, 80]).await;
    assert_eq!(&bind[..4], &[5, 0, 5, 0x02], "BIND: denied by socks.deny");
    let mut unknown = vec![5, 1, 0, 5, 2, 0, 3, 16];
    unknown.extend_from_slice(b"no-such-host.lab");
    unknown.extend_from_slice(&[0, 80]);
    let bind = raw(&lab, socks, &unknown).await;
    assert_eq!(&bind[..4], &[5, 0, 5, 0x04], "BIND: unknown host");
    let udp = raw_prefix(&lab, socks, &[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0], 12).await;
    assert_eq!(
        &udp[..8],
        &[5, 0, 5, 0x00, 0, 1, 127, 0],
        "UDP ASSOCIATE: a relay on the listener's address"
    );
    let other = raw(&lab, socks, &[5, 1, 0, 5, 9, 0, 1, 198, 19, 0, 1, 0, 80]).await;
    assert_eq!(&other[..4], &[5, 0, 5, 0x07], "command not supported");
    let atyp = raw(&lab, socks, &[5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80]).await;
    assert_eq!(&atyp[..4], &[5, 0, 5, 0x08], "address type not supported");
    // A client that offers only username/password to a server without auth: 0xFF.
    assert_eq!(
        raw(&lab, socks, &[5, 1, 2]).await,
        vec![5, 0xFF],
        "no acceptable method"
    );
    drop(engine);

    // Bad credentials.
    let engine = spawn_engine(
        &lab,
        &config(
            "\"wan*\"",
            "[[socks.auth.users]]\nusername = \"alice\"\npassword = \"secret\"\n",
        ),
    );
    let s = lab.connect_client(engine.socks_addr()).await;
    let err = socks5_connect(s, target(WHOAMI_PORT), Some(("alice", "wrong")))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::PermissionDenied,
        "bad password refused"
    );
    let mut bad = vec![5, 1, 2, 1, 5];
    bad.extend_from_slice(b"alice");
    bad.push(5);
    bad.extend_from_slice(b"wrong");
    assert_eq!(
        raw(&lab, engine.socks_addr(), &bad).await,
        vec![5, 2, 1, 1],
        "RFC 1929 failure status"
    );
    assert_eq!(
        raw(&lab, engine.socks_addr(), &[5, 1, 0]).await,
        vec![5, 0xFF],
        "auth required"
    );
    let s = lab.connect_client(engine.socks_addr()).await;
    let ok = socks5_connect(s, target(WHOAMI_PORT), Some(("alice", "secret")))
        .await
        .unwrap();
    assert_eq!(ok.code, 0);
    drop(engine);

    // Connect timeout through a blackholed link (the only one netmix may use).
    lab.blackhole(2, true);
    let engine = spawn_engine(&lab, &config("\"wan2\"", ""));
    let started = Instant::now();
    let s = lab.connect_client(engine.socks_addr()).await;
    let reply = socks5_connect(s, target(WHOAMI_PORT), None).await.unwrap();
    assert_eq!(reply.code, 0x06, "timeout through a blackhole");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_down_avoided_and_new_link_joins_without_restart() {
    let mut lab = Lab::with_links(3);
    let servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &all_wan());
    assert_eventually_async!(
        engine.logs().matches("Interface joined.").count() == 3,
        "three interfaces joined"
    );

    lab.set_link_down(1);
    // Right away (before any rescan could notice) every new connection still succeeds.
    let counts = spread(&lab, &engine, 12).await;
    assert_eq!(
        counts[1], 0,
        "nothing leaves through the down link: {counts:?}"
    );
    assert_eq!(counts[0] + counts[2], 12);
    assert_eq!(servers.seen_from(lab.link(1).client_addr), 0);

    assert_eventually_async!(
        engine
            .logs()
            .contains("Link state changed. iface=wan1 up=false"),
        "discovery saw the link go down:\n{}",
        engine.logs()
    );
    lab.set_link_up(1);
    assert_eventually_async!(
        engine
            .logs()
            .contains("iface=wan1 from=Down why=\"link up\""),
        "netmix saw the link come back:\n{}",
        engine.logs()
    );
    let k = lab.add_link(LinkSpec::plain());
    assert_eventually_async!(
        engine
            .logs()
            .contains(&format!("Interface joined. iface={}", lab.link(k).dev)),
        "netmix noticed the new link:\n{}",
        engine.logs()
    );
    let counts = spread(&lab, &engine, 40).await;
    assert!(counts[k] >= 8, "the new link gets its share: {counts:?}");
    assert!(
        counts[1] >= 8,
        "the restored link gets its share: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_get_answers_while_others_are_served() {
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &config("\"wan*\"", ""));
    let socks = engine.socks_addr();

    // A silent client, a truncated handshake and a garbage one, all at once.
    let mut silent = lab.connect_client(socks).await;
    let mut truncated = lab.connect_client(socks).await;
    truncated
        .write_all(&[5, 1, 0, 5, 1, 0, 1, 198])
        .await
        .unwrap();
    let garbage = raw(&lab, socks, b"\x16\x03\x01\x00\x05hello").await;
    assert!(
        garbage.is_empty(),
        "neither SOCKS nor HTTP: closed without an answer, got {garbage:?}"
    );

    // Meanwhile a normal client is served at once.
    let started = Instant::now();
    let w = whoami(&lab, &engine).await;
    assert_eq!(w.code, 0);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "served while others hang"
    );

    // A 255-byte domain name is parsed and answered (it does not resolve: 04).
    let name = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63)
    );
    assert_eq!(name.len(), 255);
    let s = lab.connect_client(socks).await;
    let r = socks5_connect(s, Target::Domain(name, 80), None)
        .await
        .unwrap();
    assert_eq!(r.code, 0x04);

    // The silent and the truncated client are closed within the handshake timeout (1.5 s).
    for s in [&mut silent, &mut truncated] {
        let started = Instant::now();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut buf)).await;
        let n = n.expect("closed by netmix within the handshake timeout");
        assert!(n.is_ok());
        assert!(started.elapsed() < Duration::from_millis(2500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_data_is_kept_and_half_close_works_both_ways() {
    let lab = Lab::with_links(1);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &config("\"wan*\"", ""));
    let mut s = lab.connect_client(engine.socks_addr()).await;
    // Greeting, request and payload in one write, before any answer.
    let mut bytes = vec![5, 1, 0, 5, 1, 0, 1];
    bytes.extend_from_slice(&TARGET.octets());
    bytes.extend_from_slice(&ECHO_PORT.to_be_bytes());
    bytes.extend_from_slice(b"pipelined hello");
    s.write_all(&bytes).await.unwrap();
    // The client closes its sending side: the echo server sees EOF, echoes and closes.
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(&out[..2], &[5, 0]);
    assert_eq!(&out[2..4], &[5, 0], "CONNECT succeeded");
    let reply_len = 10;
    assert_eq!(
        &out[2 + reply_len..],
        b"pipelined hello",
        "payload after the request arrived once"
    );

    // The other direction: the server closes first (who-am-I), the client can still send.
    let s = lab.connect_client(engine.socks_addr()).await;
    let mut r = socks5_connect(s, target(WHOAMI_PORT), None).await.unwrap();
    let mut answer = String::new();
    r.stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(
        answer.trim().parse::<Ipv4Addr>().unwrap(),
        lab.link(0).client_addr
    );
    assert!(r.stream.write_all(b"still open for writing").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_download_through_each_link_is_intact() {
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &config("\"wan*\"", ""));
    for _ in 0..2 {
        let s = lab.connect_client(engine.socks_addr()).await;
        let mut r = socks5_connect(s, target(HTTP_PORT), None).await.unwrap();
        r.stream
            .write_all(b"GET /bytes/1000000 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut all = Vec::new();
        r.stream.read_to_end(&mut all).await.unwrap();
        let body_at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&all[body_at..], &bytes_body(1_000_000)[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_command_shows_what_discovery_sees() {
    let lab = Lab::with_links(2);
    let out = run_netmix(
        &lab,
        &["interfaces", "--config", "{config}"],
        &config("\"wan0\"", ""),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
            .to_owned()
    };
    assert!(line("wan0").ends_with("yes"), "{text}");
    assert!(line("wan0").contains("198.18.10.2"), "{text}");
    assert!(
        line("wan1").contains("no: not in interfaces.include"),
        "{text}"
    );
    assert!(line("lo").contains("no: loopback"), "{text}");
    lab.set_link_down(0);
    let out = run_netmix(
        &lab,
        &["interfaces", "--config", "{config}"],
        &config("\"wan0\"", ""),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("wan0") && l.ends_with("no: link down")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully() {
    let lab = Lab::with_links(1);
    let _servers = lab.start_servers().await;
    let mut engine = spawn_engine(
        &lab,
        &config("\"wan*\"", "shutdown_grace_period_secs = 2\n"),
    );
    assert_eq!(whoami(&lab, &engine).await.code, 0);
    engine.signal(nix::sys::signal::Signal::SIGTERM);
    let status = engine
        .wait_exit(Duration::from_secs(5))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        engine.logs().contains("signal=\"SIGTERM\""),
        "{}",
        engine.logs()
    );
}

/// An echo round trip through netmix; the open connection on success.
async fn echo_through(lab: &Lab, socks: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = lab.connect_client(socks).await;
    let r = socks5_connect(s, target(ECHO_PORT), None).await?;
    if r.code != 0 {
        return Err(std::io::Error::other(format!("SOCKS reply {}", r.code)));
    }
    let mut s = r.stream;
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_fits_the_open_files_limit_and_clients_past_it_wait() {
    let lab = std::sync::Arc::new(Lab::with_links(1));
    let _servers = lab.start_servers().await;
    // 512 descriptors: netmix keeps an eighth (64) for itself and needs 2 per connection, so it
    // serves (512 - 64) / 2 = 224 at once, not the configured 4096.
    let bin = netmix_integration::netmix_bin();
    let engine = netmix_integration::Engine::spawn_program(
        &lab,
        std::path::Path::new("/usr/bin/prlimit"),
        &[
            "--nofile=512:512",
            bin.to_str().unwrap(),
            "run",
            "--config",
            "{config}",
        ],
        &config("\"wan0\"", ""),
    );
    let socks = engine.socks_addr();
    // (The port may accept a moment before the listener actor has logged its cap.)
    assert_eventually_async!(
        {
            let logs = engine.logs();
            logs.contains("more than the open-files limit allows") && logs.contains("using=224")
        },
        "{}",
        engine.logs()
    );

    let mut held = Vec::new();
    for k in 0..224 {
        let s = echo_through(&lab, socks)
            .await
            .unwrap_or_else(|e| panic!("connection {k} of 224: {e}"));
        held.push(s);
    }
    // Past the cap, clients wait in the backlog: no error, no answer yet.
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let lab = lab.clone();
            tokio::spawn(async move { echo_through(&lab, socks).await.map(drop) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "clients past the cap wait instead of failing"
    );
    // As connections close, the waiting clients are served.
    held.truncate(220);
    for w in waiting {
        tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("served once room was made")
            .unwrap()
            .expect("a waiting client is relayed normally");
    }
    assert!(
        !engine.logs().contains("Too many open files"),
        "{}",
        engine.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deny_list_covers_every_spelling_of_the_local_host() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(
        &lab,
        &config(
            "\"wan*\"",
            "[socks]\ndeny = [\"127.0.0.0/8\", \"::1/128\"]\n",
        ),
    );
    let socks = engine.socks_addr();
    let code = |t: Target| reply_code(&lab, socks, t);
    // Each of these names this host (where the outbound socket is bound by source address
    // only, a connect to it reaches services listening on 0.0.0.0, netmix's own SOCKS port
    // among them), so a deny list of 127.0.0.0/8 and ::1 must cover them all.
    let port = socks.port();
    for t in [
        Target::Ip((Ipv4Addr::LOCALHOST, port).into()),
        Target::Ip(format!("0.0.0.0:{port}").parse().unwrap()),
        Target::Domain("0".into(), port),
        Target::Ip(format!("[::ffff:127.0.0.1]:{port}").parse().unwrap()),
        Target::Ip(format!("[::]:{port}").parse().unwrap()),
        Target::Ip(format!("[::1]:{port}").parse().unwrap()),
    ] {
        let shown = format!("{t:?}");
        assert_eq!(code(t).await, 0x02, "{shown} is denied");
    }
    assert_eq!(
        code(target(WHOAMI_PORT)).await,
        0x00,
        "others still connect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_cannot_keep_a_good_one_waiting() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    // A small connection cap (64: 16 pending handshakes), and a long handshake deadline, so
    // that silent clients would hold their places for a long time.
    let engine = spawn_engine(
        &lab,
        &config("\"wan*\"", "[socks]\nmax_connections = 64\n")
            .replace("handshake_ms = 1500", "handshake_ms = 30000"),
    );
    let socks = engine.socks_addr();
    let mut silent = Vec::new();
    for i in 0..200 {
        let mut s = lab.connect_client(socks).await;
        if i % 2 == 0 {
            // A slow drip: the greeting's first byte, then nothing.
            s.write_all(&[5]).await.unwrap();
        }
        silent.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let s = lab.connect_client(socks).await;
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        socks5_connect(s, target(WHOAMI_PORT), None),
    )
    .await
    .expect("a good client is served at once")
    .unwrap();
    assert_eq!(reply.code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    // The silent ones lost their places: most are closed already.
    let mut closed = 0;
    for s in &mut silent {
        let mut b = [0u8; 8];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 150,
        "only {closed} of 200 silent connections were let go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_slow_down_and_are_reported_once() {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(
        &lab,
        &config(
            "\"wan*\"",
            "[[socks.auth.users]]\nusername = \"alice\"\npassword = \"secret\"\n",
        ),
    );
    let socks = engine.socks_addr();
    let mut took = Vec::new();
    for _ in 0..6 {
        let s = lab.connect_client(socks).await;
        let started = Instant::now();
        let err = socks5_connect(s, target(WHOAMI_PORT), Some(("alice", "guess")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        took.push(started.elapsed());
    }
    assert!(
        took[..3].iter().all(|t| *t < Duration::from_millis(200)),
        "{took:?}"
    );
    assert!(
        took[3] >= Duration::from_millis(240),
        "4th failure answered after {:?}",
        took[3]
    );
    assert!(
        took[5] >= Duration::from_millis(980),
        "6th failure answered after {:?}",
        took[5]
    );
    // The right password still works, and resets the back-off.
    let s = lab.connect_client(socks).await;
    let ok = socks5_connect(s, target(WHOAMI_PORT), Some(("alice", "secret")))
        .await
        .unwrap();
    assert_eq!(ok.code, 0);
    let s = lab.connect_client(socks).await;
    let started = Instant::now();
    let _ = socks5_connect(s, target(WHOAMI_PORT), Some(("alice", "guess"))).await;
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "back-off reset by the success"
    );
    let logs = engine.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("SOCKS authentication failed"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one INFO line per client per minute: {lines:#?}"
    );
    assert!(
        lines[0].contains("INFO") && lines[0].contains("client=127.0.0.1"),
        "{}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_then_closes() {
    let lab = Lab::with_links(1);
    let _servers = lab.start_servers().await;
    let mut engine = spawn_engine(
        &lab,
        &config("\"wan*\"", "shutdown_grace_period_secs = 3\n"),
    );
    let socks = engine.socks_addr();
    let mut streams = Vec::with_capacity(500);
    for i in 0..500 {
        let s = echo_through(&lab, socks)
            .await
            .unwrap_or_else(|e| panic!("stream {i}: {e}"));
        streams.push(s);
    }
    let signalled = Instant::now();
    engine.signal(nix::sys::signal::Signal::SIGTERM);
    // New clients are turned away at once...
    let mut refused = false;
    for _ in 0..50 {
        if lab
            .try_connect_client(socks, Duration::from_millis(200))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the SOCKS port still accepts after SIGTERM");
    assert!(signalled.elapsed() < Duration::from_secs(1));
    // ...while every open stream keeps working during the grace period.
    for (i, s) in streams.iter_mut().enumerate() {
        s.write_all(b"y")
            .await
            .unwrap_or_else(|e| panic!("stream {i}: {e}"));
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut b))
            .await
            .unwrap_or_else(|_| panic!("stream {i} stalled during the grace period"))
            .unwrap_or_else(|e| panic!("stream {i}: {e}"));
        assert_eq!(&b, b"y");
    }
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "checked within the grace period"
    );
    // Then netmix closes them and exits cleanly.
    let status = engine
        .wait_exit(Duration::from_secs(8))
        .expect("exits after the grace period");
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "waited for the streams"
    );
    for (i, s) in streams.iter_mut().enumerate().step_by(25) {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0) | Err(_))),
            "stream {i} still open after exit: {r:?}"
        );
    }
    assert!(
        engine.logs().contains("Grace period over"),
        "says it closed open connections: {}",
        engine.logs()
    );
}
