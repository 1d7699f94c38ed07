//! Time per connection by name (needs root: it builds the network-namespace lab).
//!
//! A two-link lab set up as a multi-homed machine (the lab's DNS server in the internet
//! namespace, resolv.conf naming it, main-table default routes with metrics 100/200). In
//! alternating rounds, the same run measures SOCKS5 CONNECTs through netmix to the target by
//! IP address, by a name netmix has cached, and by names it has never seen (a query through a
//! link each), and the system resolver (`tokio::net::lookup_host`, i.e. getaddrinfo, run by
//! the `lab-lookup` helper inside the client namespace) on names it has never seen. Reported:
//! medians and the added time of a name over an IP address, against lookup_host's time. Then
//! the same with the metric-100 link black-holed.
//!
//! Run: `cargo build --workspace --bins && cargo bench -p netmix-integration --bench dns`

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netmix_integration::{
    DNS_SERVER, Lab, TARGET, Target, WHOAMI_PORT, command_in, lab_config, socks5_connect,
    spawn_engine,
};

const ROUNDS: usize = 5;
const PER_ROUND: usize = 40;

/// One SOCKS5 CONNECT (the proxy connection made first, not timed): the time to the reply.
async fn connect(lab: &Lab, proxy: SocketAddr, target: Target) -> Duration {
    let s = lab.connect_client(proxy).await;
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), socks5_connect(s, target, None))
        .await
        .expect("SOCKS exchange timed out")
        .expect("SOCKS exchange");
    assert_eq!(r.code, 0, "CONNECT failed");
    started.elapsed()
}

/// `lookup_host` on each name inside the client namespace: the time of each and how many
/// addresses it found.
fn lookup_host(lab: &Lab, names: &[String]) -> Vec<(Duration, usize)> {
    let bin = std::env::var("NETMIX_LAB_LOOKUP").unwrap_or_else(|_| {
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
        dir.join("lab-lookup").display().to_string()
    });
    let mut args = vec![bin.as_str()];
    args.extend(names.iter().map(String::as_str));
    let out = command_in(lab.client_ns(), &args)
        .output()
        .unwrap_or_else(|e| panic!("run {bin} (cargo build -p netmix-integration --bins): {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let us: u64 = f.next().and_then(|v| v.parse().ok()).expect("µs");
            let found: usize = f.next().and_then(|v| v.parse().ok()).expect("count");
            (Duration::from_micros(us), found)
        })
        .collect()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let names: Vec<String> = (0..ROUNDS * PER_ROUND * 2 + 20)
        .map(|i| format!("n{i}.lab"))
        .collect();
    let mut zone: Vec<(&str, IpAddr)> = names
        .iter()
        .map(|n| (n.as_str(), IpAddr::V4(TARGET)))
        .collect();
    zone.push(("hit.lab", IpAddr::V4(TARGET)));
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    let _dns = lab.start_dns(&zone);
    lab.set_resolv_conf(&[IpAddr::V4(DNS_SERVER)]);
    lab.set_main_default_routes();
    let engine = spawn_engine(&lab, &lab_config("\"wan*\"", ""));
    let proxy = engine.socks_addr();
    let by_ip = Target::Ip(SocketAddr::new(IpAddr::V4(TARGET), WHOAMI_PORT));
    // Warm-up: both links measured, the cached name cached.
    for _ in 0..10 {
        connect(&lab, proxy, by_ip.clone()).await;
        connect(&lab, proxy, Target::Domain("hit.lab".into(), WHOAMI_PORT)).await;
    }
    let (mut ip, mut hit, mut miss, mut system) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut fresh = names.iter();
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            ip.push(connect(&lab, proxy, by_ip.clone()).await);
            hit.push(connect(&lab, proxy, Target::Domain("hit.lab".into(), WHOAMI_PORT)).await);
            let name = fresh.next().expect("enough names").clone();
            miss.push(connect(&lab, proxy, Target::Domain(name, WHOAMI_PORT)).await);
        }
        let batch: Vec<String> = fresh.by_ref().take(PER_ROUND).cloned().collect();
        for (took, found) in lookup_host(&lab, &batch) {
            assert!(
                found > 0,
                "lookup_host found no address: the reference failed"
            );
            system.push(took);
        }
    }
    let (ip, hit, miss, system) = (
        median(&mut ip),
        median(&mut hit),
        median(&mut miss),
        median(&mut system),
    );
    println!(
        "Time per SOCKS5 CONNECT through netmix (median of {}), and lookup_host, same run:\n",
        ROUNDS * PER_ROUND
    );
    println!("| what | median | added over by-IP | added / lookup_host |");
    println!("|---|---|---|---|");
    println!("| CONNECT by IP address | {} | — | — |", us(ip));
    for (what, t) in [
        ("CONNECT by name, cache hit", hit),
        (
            "CONNECT by name, cache miss (a DNS query through a link)",
            miss,
        ),
    ] {
        let added = t.saturating_sub(ip);
        println!(
            "| {what} | {} | {} | {:.2} |",
            us(t),
            us(added),
            added.as_secs_f64() / system.as_secs_f64()
        );
    }
    println!(
        "| lookup_host (getaddrinfo, resolv.conf, default route), new name | {} | — | 1.00 |",
        us(system)
    );

    // The metric-100 link black-holed: the system resolver's queries go out through it.
    lab.blackhole(0, true);
    let mut dead_miss = Vec::new();
    for name in fresh.by_ref().take(10) {
        dead_miss.push(connect(&lab, proxy, Target::Domain(name.clone(), WHOAMI_PORT)).await);
    }
    let batch: Vec<String> = fresh.take(3).cloned().collect();
    let mut dead_system: Vec<Duration> = lookup_host(&lab, &batch).iter().map(|r| r.0).collect();
    let worst = dead_miss.iter().max().copied().unwrap_or_default();
    println!(
        "\nwan0 (metric 100) black-holed: CONNECT by a new name median {}, worst {} (10 names); \
         lookup_host median {} (3 names; resolv.conf timeout:2 attempts:1)",
        us(median(&mut dead_miss)),
        us(worst),
        us(median(&mut dead_system))
    );
}
