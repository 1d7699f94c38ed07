//! Smoke test of the lab itself (no netmix involved): links carry traffic with the right
//! source address, only bound sockets get out, faults and delay do what they say, and the
//! namespaces disappear on drop.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netmix_integration::{
    ECHO_PORT, HTTP_PORT, Lab, LinkSpec, REFUSED_PORT, Servers, WHOAMI_PORT, assert_eventually,
    bytes_body, set_lab_delay_bin,
};

const T: Duration = Duration::from_secs(1);

fn setup() {
    set_lab_delay_bin(env!("CARGO_BIN_EXE_lab-delay"));
}

/// Asks the who-am-I server through link `k` which source address it saw.
fn whoami_via(lab: &Lab, servers: &Servers, k: usize) -> std::io::Result<String> {
    let mut s = lab.connect_via(k, servers.addr(WHOAMI_PORT), T)?;
    s.set_read_timeout(Some(T))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_smoke() {
    setup();
    let lab = Lab::with_links(3);
    let (client_ns, inet_ns) = (lab.client_ns().to_owned(), lab.inet_ns().to_owned());
    let servers = lab.start_servers().await;

    // Each link carries traffic with its own source address.
    for k in 0..3 {
        let answer = whoami_via(&lab, &servers, k).expect("who-am-I through a link");
        assert_eq!(answer, format!("{}\n", lab.link(k).client_addr), "link {k}");
        let ip = IpAddr::V4(lab.link(k).client_addr);
        assert_eq!(lab.link_for_source(ip), Some(k));
        assert_eq!(servers.seen_from(ip), 1, "server counted link {k} once");
    }
    // No default route in the client's main table: an unbound socket cannot get out.
    let err = lab
        .connect_unbound(servers.addr(WHOAMI_PORT), T)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NetworkUnreachable, "{err}");

    // Link down → connect through it fails; up again → works (route restored).
    lab.set_link_down(1);
    assert!(whoami_via(&lab, &servers, 1).is_err(), "link 1 is down");
    assert!(
        whoami_via(&lab, &servers, 0).is_ok(),
        "other links unaffected"
    );
    lab.set_link_up(1);
    assert_eventually!(whoami_via(&lab, &servers, 1).is_ok(), "link 1 is up again");
    assert_eq!(whoami_via(&lab, &servers, 1).unwrap(), "198.18.11.2\n");

    // Blackhole → connect times out; off → works.
    lab.blackhole(2, true);
    let start = Instant::now();
    let err = lab
        .connect_via(2, servers.addr(WHOAMI_PORT), T)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(start.elapsed() >= Duration::from_millis(900));
    lab.blackhole(2, false);
    assert_eq!(whoami_via(&lab, &servers, 2).unwrap(), "198.18.12.2\n");

    // Refused port and echo with half-close.
    let err = lab
        .connect_via(0, servers.addr(REFUSED_PORT), T)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let mut echo = lab.connect_via(0, servers.addr(ECHO_PORT), T).unwrap();
    echo.set_read_timeout(Some(T)).unwrap();
    echo.write_all(b"hello lab").unwrap();
    echo.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    echo.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"hello lab");

    // HTTP through curl, as an external process in the client namespace.
    let base = format!("http://{}:{HTTP_PORT}", lab.target());
    let out = lab.exec_client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--interface",
        "wan0",
        &format!("{base}/ip"),
    ]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "198.18.10.2");
    let out = lab.exec_client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--interface",
        "wan1",
        &format!("{base}/bytes/100000"),
    ]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 100_000);
    assert_eq!(out.stdout, bytes_body(100_000));

    // /etc/netns/<client>/hosts is what `ip netns exec` processes resolve with.
    lab.set_hosts(&[("target.lab", IpAddr::V4(lab.target()))]);
    let out = lab.exec_client(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--interface",
        "wan2",
        "http://target.lab/ip",
    ]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "198.18.12.2");

    // The tokio connector from inside the client namespace (what tests use to reach the proxy).
    let err = lab
        .try_connect_client(servers.addr(WHOAMI_PORT), T)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NetworkUnreachable, "{err}");

    drop(servers);
    drop(lab);
    let list = netns_list();
    assert!(
        !list.contains(&client_ns) && !list.contains(&inet_ns),
        "namespaces left: {list}"
    );
    assert!(!std::path::Path::new("/etc/netns").join(&client_ns).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_delay_and_rate() {
    setup();
    let mut lab = Lab::new(&[LinkSpec::plain(), LinkSpec::plain().delay(40)]);
    let servers = lab.start_servers().await;

    let plain = lab.fastest_connect_ms(0, servers.addr(WHOAMI_PORT), T);
    let delayed = lab.fastest_connect_ms(1, servers.addr(WHOAMI_PORT), T);
    eprintln!("connect time: plain link {plain:.2} ms, 40 ms link {delayed:.2} ms");
    assert!(plain < 10.0, "undelayed link took {plain:.2} ms");
    assert!(
        (35.0..80.0).contains(&delayed),
        "40 ms link took {delayed:.2} ms"
    );

    // A link added while the servers run, rate limited to 8 Mbit/s: 1 MB takes ≈ 1 s.
    let k = lab.add_link(LinkSpec::plain().rate(8));
    assert_eq!(k, 2);
    assert_eq!(whoami_via(&lab, &servers, k).unwrap(), "198.18.12.2\n");
    let url = format!("http://{}/bytes/1000000", lab.target());
    let start = Instant::now();
    let out = lab.exec_client(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--interface",
        "wan2",
        &url,
    ]);
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 1_000_000);
    let mbit = 8.0 / secs;
    eprintln!("1 MB over the 8 Mbit/s link: {secs:.2} s ({mbit:.1} Mbit/s)");
    assert!(
        (5.0..10.0).contains(&mbit),
        "rate limit not applied: {mbit:.1} Mbit/s"
    );
}

/// Two labs at once (tests run in parallel threads) do not collide: same device names and
/// addresses, different namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labs_side_by_side() {
    setup();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lab::with_links(1));
        let b = s.spawn(|| Lab::with_links(2));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.client_ns(), b.client_ns());
    let (sa, sb) = (a.start_servers().await, b.start_servers().await);
    assert_eq!(whoami_via(&a, &sa, 0).unwrap(), "198.18.10.2\n");
    assert_eq!(whoami_via(&b, &sb, 1).unwrap(), "198.18.11.2\n");
    assert_eq!(sa.seen().len(), 1);
    assert_eq!(sb.seen().len(), 1);
    assert_eq!(
        sb.seen_from(SocketAddr::from(([198, 18, 11, 2], 0)).ip()),
        1
    );
}
