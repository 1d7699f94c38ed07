//! The `netmix` command line against the lab: `netmix status` of a live engine speaks in units
//! (KiB/MiB, kbit/s/Mbit/s), says `—` for what is not measured yet and names the active
//! strategy; `netmix interfaces` lists an interface that has no address yet.

#![cfg(target_os = "linux")]

use netmix_integration::web::fetch_via_socks;
use netmix_integration::{DASHBOARD, Lab, api, assert_eventually_async, lab_config, run_netmix};

/// Bytes downloaded through the one link that carries traffic.
const DOWNLOAD: u64 = 3 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_units_dashes_and_the_active_strategy() {
    let lab = Lab::with_links(2);
    let _servers = lab.start_servers().await;
    // No probes (none configured): a link only gets a latency from a connection through it.
    let engine = netmix_integration::spawn_engine(&lab, &lab_config("\"wan*\"", ""));
    assert_eventually_async!(
        api(&lab, DASHBOARD, "/api/interfaces")
            .await
            .as_array()
            .is_some_and(|a| a.len() == 2),
        "both links on the dashboard:\n{}",
        engine.logs()
    );
    // One download: round-robin sends it through one link; the other stays unmeasured.
    let got = fetch_via_socks(
        lab.client_ns(),
        engine.socks_addr(),
        &format!("/bytes/{DOWNLOAD}"),
    )
    .await;
    assert_eq!(got, DOWNLOAD);
    assert_eventually_async!(
        api(&lab, DASHBOARD, "/api/interfaces")
            .await
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["bytes_down"].as_u64().unwrap() >= DOWNLOAD && i["active"] == 0),
        "the download counted"
    );

    let out = run_netmix(&lab, &["status"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "strategy: round-robin", "{text}");
    let row = |name: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in\n{text}"));
        // Columns: name, health, latency, jitter, success, active, sent, received, up, down —
        // values with a unit are "<number> <unit>".
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut cells = vec![words[0].to_owned(), words[1].to_owned()];
        let mut k = 2;
        while k < words.len() {
            let next_is_unit = words
                .get(k + 1)
                .is_some_and(|w| w.chars().next().is_some_and(char::is_alphabetic));
            if next_is_unit {
                cells.push(format!("{} {}", words[k], words[k + 1]));
                k += 2;
            } else {
                cells.push(words[k].to_owned());
                k += 1;
            }
        }
        assert_eq!(cells.len(), 10, "{line}");
        cells
    };
    let (wan0, wan1) = (row("wan0"), row("wan1"));
    let (busy, idle) = if wan0[7].ends_with("MiB") {
        (wan0, wan1)
    } else {
        (wan1, wan0)
    };
    // The link that carried the download: a latency in ms, bytes in MiB, rates in bit/s.
    assert!(busy[2].ends_with(" ms"), "latency {busy:?}");
    assert!(busy[3].ends_with(" ms"), "jitter {busy:?}");
    assert_eq!(busy[4], "100%", "{busy:?}");
    let received: f64 = busy[7].trim_end_matches(" MiB").parse().unwrap();
    assert!((3.0..3.2).contains(&received), "received {busy:?}");
    assert!(
        busy[6].ends_with(" KiB") || busy[6].ends_with(" B"),
        "sent {busy:?}"
    );
    for rate in &busy[8..] {
        assert!(rate.ends_with("bit/s"), "rate {busy:?}");
    }
    // The other one: nothing measured yet, so dashes, not "0.0ms".
    assert_eq!(&idle[2..5], ["—", "—", "—"], "{idle:?}");
    assert_eq!(&idle[6..], ["0 B", "0 B", "0 bit/s", "0 bit/s"], "{idle:?}");
    assert!(!text.contains("0.0ms"), "{text}");
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_lists_an_interface_without_address_as_no_address_yet() {
    let lab = Lab::with_links(1);
    // A veth pair in the client namespace named like a USB tether: no address on either end,
    // both down (a phone just plugged in, before DHCP).
    let out = lab.exec_client(&[
        "ip", "link", "add", "usbnm0", "type", "veth", "peer", "name", "usbnm1",
    ]);
    assert!(
        out.status.success(),
        "ip link add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = lab_config("\"wan*\", \"usbnm0\"", "");
    let listing = || {
        let out = run_netmix(&lab, &["interfaces", "--config", "{config}"], &config);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        text
    };
    let line = |text: &str, name: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} listed in\n{text}"))
            .to_owned()
    };
    let text = listing();
    let bare = line(&text, "usbnm0");
    assert!(bare.contains("no address yet"), "{bare}");
    assert!(bare.contains("tether"), "{bare}");
    assert!(bare.ends_with("no: link down"), "{bare}");
    // The same include/exclude rules judge it: its peer is not included.
    let peer = line(&text, "usbnm1");
    assert!(peer.contains("no address yet"), "{peer}");
    assert!(peer.ends_with("no: not in interfaces.include"), "{peer}");
    // The addressed links are listed as before.
    assert!(line(&text, "wan0").ends_with("yes"), "{text}");
    assert!(line(&text, "wan0").contains("198.18.10.2"), "{text}");

    // Both ends up: the link runs, still without a usable address.
    for dev in ["usbnm0", "usbnm1"] {
        let out = lab.exec_client(&["ip", "link", "set", dev, "up"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut last = String::new();
    let mut running = false;
    for _ in 0..50 {
        last = listing();
        let bare = line(&last, "usbnm0");
        if bare.contains(" up ") {
            assert!(bare.contains("no address yet"), "{bare}");
            assert!(bare.ends_with("no: no usable address"), "{bare}");
            running = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(running, "usbnm0 never came up:\n{last}");
}
