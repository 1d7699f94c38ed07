//! Two minutes of the soak (`netmix_integration::soak`): three flapping links under load. No
//! new connection may fail while a link works (failover takes it), the process stays flat, and
//! the dashboard still answers. The 30-minute run is `cargo bench --bench soak`.

#![cfg(target_os = "linux")]

use std::time::Duration;

use netmix_integration::soak::run_soak;

#[test]
fn two_minutes_of_flapping_links_under_load() {
    let report = run_soak(Duration::from_secs(120), 0x5eed);
    println!("{report}");
    assert!(report.faults >= 6, "the links flapped: {report}");
    assert!(
        report.short_ok > 500 && report.downloads_ok > 5,
        "load ran: {report}"
    );
    assert_eq!(
        report.new_failed, 0,
        "no new connection failed while a link worked: {report}"
    );
    assert!(report.dashboard_ok, "{report}");
    assert!(
        report.fds[2] <= report.fds[0],
        "descriptors back after the drain: {report}"
    );
    assert!(
        report.rss_kib[1] <= report.rss_kib[0] + report.rss_kib[0] / 10 + 4096,
        "RSS flat within 10% (+4 MiB slack for a two-minute run): {report}"
    );
}
