//! Failover benchmark (needs root: it builds the network-namespace lab).
//!
//! For each fault (link down, blackhole) and each mode (failover on, failover off), a client
//! opens who-am-I connections through netmix every 20 ms for 4 s; the fault hits one of three
//! links after 1 s. Reported: failed client connections, time until the engine marks the link
//! Down (dashboard API), time from the fault to the last affected connection (failed or slower
//! than 150 ms), and the slowest connection.
//!
//! Run: `cargo build --workspace && cargo bench -p netmix-integration --bench failover`

use std::time::{Duration, Instant};

use netmix_integration::{Lab, iface_json, spawn_engine, steady_stream};

#[derive(Clone, Copy)]
enum Fault {
    LinkDown,
    Blackhole,
}

fn config(failover: bool) -> String {
    format!(
        "strategy = \"round-robin\"\n[failover]\nenabled = {failover}\n\n[interfaces]\ninclude = [\"wan*\"]\n\n[discovery]\nrescan_interval_ms = 2000\n\n\
         [health]\nprobe_targets = [\"198.19.0.1:7\"]\nprobe_interval_ms = 500\nprobe_timeout_ms = 400\n\
         failures_to_down = 2\nsuccesses_to_up = 2\n"
    )
}

async fn run(fault: Fault, failover: bool) -> String {
    let lab = Lab::with_links(3);
    let _servers = lab.start_servers().await;
    let engine = spawn_engine(&lab, &config(failover));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fault_at = Instant::now() + Duration::from_millis(1000);
    let (samples, marked) = tokio::join!(
        steady_stream(
            &lab,
            engine.socks_addr(),
            Duration::from_secs(4),
            Duration::from_millis(20)
        ),
        async {
            tokio::time::sleep_until(fault_at.into()).await;
            match fault {
                Fault::LinkDown => lab.set_link_down(1),
                Fault::Blackhole => lab.blackhole(1, true),
            }
            loop {
                let h = iface_json(&lab, "wan1")
                    .await
                    .map(|i| i["health"].as_str().unwrap_or("").to_owned());
                if h.as_deref() == Some("down") {
                    break Some(fault_at.elapsed());
                }
                if fault_at.elapsed() > Duration::from_secs(3) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    );
    let after: Vec<_> = samples.iter().filter(|s| s.at >= fault_at).collect();
    let failed = after.iter().filter(|s| s.code != 0).count();
    let affected_until = after
        .iter()
        .filter(|s| s.code != 0 || s.took > Duration::from_millis(150))
        .map(|s| (s.at + s.took).duration_since(fault_at))
        .max();
    let worst = after.iter().map(|s| s.took).max().unwrap_or_default();
    format!(
        "| {:<9} | {:<8} | {:>5} | {:>6} | {:>14} | {:>21} | {:>9} |",
        match fault {
            Fault::LinkDown => "link down",
            Fault::Blackhole => "blackhole",
        },
        if failover { "on" } else { "off" },
        after.len(),
        failed,
        marked.map_or("not within 3 s".to_owned(), |d| format!(
            "{} ms",
            d.as_millis()
        )),
        affected_until.map_or("none".to_owned(), |d| format!("{} ms", d.as_millis())),
        format!("{} ms", worst.as_millis()),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "| fault     | failover | conns | failed | marked Down at | last affected conn at | slowest   |"
    );
    println!(
        "|-----------|----------|-------|--------|----------------|-----------------------|-----------|"
    );
    for fault in [Fault::LinkDown, Fault::Blackhole] {
        for failover in [true, false] {
            println!("{}", run(fault, failover).await);
        }
    }
}
