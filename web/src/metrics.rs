//! Prometheus text exposition (format 0.0.4) of a [`Feed`].
//!
//! Rendered from the same snapshot the dashboard shows, so metrics and page never disagree.
//! Counters end in `_total`; every family gets `# HELP` and `# TYPE` before its samples, even
//! when it has no sample (no interface yet), so scrapers see a stable schema.

use std::fmt::{Display, Write as _};

use crate::models::{Feed, PROTOCOLS};

/// `Content-Type` of the `/metrics` response.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Health states exported by `netmix_interface_health{state=…}`, one sample per state.
const HEALTH_STATES: [&str; 3] = ["up", "degraded", "down"];

/// Renders `feed` as Prometheus text format 0.0.4.
pub fn render(feed: &Feed) -> String {
    let mut out = String::with_capacity(4096 + feed.interfaces.len() * 2048);
    let ifaces = &feed.interfaces;

    family(
        &mut out,
        "netmix_interface_latency_seconds",
        "gauge",
        "Latency estimate (EWMA) of the interface; absent before the first sample.",
    );
    for i in ifaces {
        if let Some(ms) = i.latency_ms {
            sample(
                &mut out,
                "netmix_interface_latency_seconds",
                &[("interface", &i.name), ("kind", &i.kind)],
                ms / 1000.0,
            );
        }
    }

    family(
        &mut out,
        "netmix_interface_jitter_seconds",
        "gauge",
        "Latency jitter of the interface.",
    );
    for i in ifaces {
        let labels = [("interface", i.name.as_str()), ("kind", i.kind.as_str())];
        sample(
            &mut out,
            "netmix_interface_jitter_seconds",
            &labels,
            i.jitter_ms / 1000.0,
        );
    }

    family(
        &mut out,
        "netmix_interface_up",
        "gauge",
        "1 when the interface is usable (health up or degraded), else 0.",
    );
    for i in ifaces {
        let up = u8::from(i.health == "up" || i.health == "degraded");
        let labels = [("interface", i.name.as_str()), ("kind", i.kind.as_str())];
        sample(&mut out, "netmix_interface_up", &labels, up);
    }

    family(
        &mut out,
        "netmix_interface_health",
        "gauge",
        "Health state of the interface: 1 for the current state, 0 for the others.",
    );
    for i in ifaces {
        for state in HEALTH_STATES {
            let labels = [("interface", i.name.as_str()), ("state", state)];
            sample(
                &mut out,
                "netmix_interface_health",
                &labels,
                u8::from(i.health == state),
            );
        }
        if !HEALTH_STATES.contains(&i.health.as_str()) {
            let labels = [("interface", i.name.as_str()), ("state", i.health.as_str())];
            sample(&mut out, "netmix_interface_health", &labels, 1);
        }
    }

    family(
        &mut out,
        "netmix_interface_bytes_total",
        "counter",
        "Bytes relayed through the interface (up = client to destination).",
    );
    for i in ifaces {
        for (direction, bytes) in [("up", i.bytes_up), ("down", i.bytes_down)] {
            let labels = [("interface", i.name.as_str()), ("direction", direction)];
            sample(&mut out, "netmix_interface_bytes_total", &labels, bytes);
        }
    }

    family(
        &mut out,
        "netmix_interface_active_connections",
        "gauge",
        "Connections currently relayed through the interface.",
    );
    for i in ifaces {
        let labels = [("interface", i.name.as_str())];
        sample(
            &mut out,
            "netmix_interface_active_connections",
            &labels,
            i.active,
        );
    }

    family(
        &mut out,
        "netmix_interface_successes_total",
        "counter",
        "Successful connects through the interface.",
    );
    for i in ifaces {
        let labels = [("interface", i.name.as_str())];
        sample(
            &mut out,
            "netmix_interface_successes_total",
            &labels,
            i.successes,
        );
    }

    family(
        &mut out,
        "netmix_interface_failures_total",
        "counter",
        "Failed connects through the interface.",
    );
    for i in ifaces {
        let labels = [("interface", i.name.as_str())];
        sample(
            &mut out,
            "netmix_interface_failures_total",
            &labels,
            i.failures,
        );
    }

    family(
        &mut out,
        "netmix_interface_ejections_total",
        "counter",
        "Times the interface was taken out of rotation.",
    );
    for i in ifaces {
        let labels = [("interface", i.name.as_str())];
        sample(
            &mut out,
            "netmix_interface_ejections_total",
            &labels,
            i.ejections,
        );
    }

    let t = &feed.totals;
    let totals: [(&str, &str, &str, u64); 6] = [
        (
            "netmix_connections_total",
            "counter",
            "Connections accepted.",
            t.connections_total,
        ),
        (
            "netmix_connections_open",
            "gauge",
            "Connections currently open.",
            t.connections_open,
        ),
        (
            "netmix_failovers_total",
            "counter",
            "Connections moved to another interface after a failure.",
            t.failovers,
        ),
        (
            "netmix_connections_failed_total",
            "counter",
            "Connections that failed on every interface tried.",
            t.failed,
        ),
        (
            "netmix_plugin_errors_total",
            "counter",
            "Errors returned by strategy plugins.",
            t.plugin_errors,
        ),
        (
            "netmix_uptime_seconds",
            "gauge",
            "Engine uptime.",
            feed.uptime_ms / 1000,
        ),
    ];
    for (name, kind, help, value) in totals {
        family(&mut out, name, kind, help);
        sample(&mut out, name, &[], value);
    }

    // Every known protocol has a sample (0 until its first connection), so a rate over it starts
    // from 0 rather than from nothing; a protocol the feed names but this list does not (a
    // newer engine) is exported too.
    family(
        &mut out,
        "netmix_connections_opened_total",
        "counter",
        "Connections accepted, by client protocol (adds up to netmix_connections_total).",
    );
    let by_protocol = &t.connections_by_protocol;
    for protocol in PROTOCOLS {
        let opened = by_protocol.get(protocol).copied().unwrap_or(0);
        let labels = [("protocol", protocol)];
        sample(&mut out, "netmix_connections_opened_total", &labels, opened);
    }
    for (protocol, &opened) in by_protocol {
        if !PROTOCOLS.contains(&protocol.as_str()) {
            let labels = [("protocol", protocol.as_str())];
            sample(&mut out, "netmix_connections_opened_total", &labels, opened);
        }
    }

    family(
        &mut out,
        "netmix_strategy_active",
        "gauge",
        "1 for the active routing strategy.",
    );
    if !feed.strategy.active.is_empty() {
        let labels = [("strategy", feed.strategy.active.as_str())];
        sample(&mut out, "netmix_strategy_active", &labels, 1);
    }
    family(
        &mut out,
        "netmix_strategy_fallback_active",
        "gauge",
        "1 while the built-in fallback replaces a failing strategy.",
    );
    let fallback = u8::from(feed.strategy.fallback_active);
    sample(&mut out, "netmix_strategy_fallback_active", &[], fallback);

    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line. Non-finite floats are skipped rather than written as `NaN`/`inf`, which
/// Rust and Prometheus spell differently.
fn sample<V: Value>(out: &mut String, name: &str, labels: &[(&str, &str)], value: V) {
    if !value.is_finite() {
        return;
    }
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (n, (key, val)) in labels.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(val));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A number a sample can carry.
trait Value: Display {
    fn is_finite(&self) -> bool {
        true
    }
}
impl Value for u8 {}
impl Value for u32 {}
impl Value for u64 {}
impl Value for i32 {}
impl Value for f64 {
    fn is_finite(&self) -> bool {
        f64::is_finite(*self)
    }
}

/// Label values escape `\`, `"` and newline.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes `\` and newline.
fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn empty_feed_still_has_every_family() {
        let text = render(&Feed::default());
        for name in [
            "netmix_interface_latency_seconds",
            "netmix_interface_up",
            "netmix_interface_health",
            "netmix_interface_bytes_total",
            "netmix_interface_active_connections",
            "netmix_interface_failures_total",
            "netmix_connections_total",
            "netmix_failovers_total",
            "netmix_plugin_errors_total",
            "netmix_connections_failed_total",
            "netmix_connections_opened_total",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert!(text.contains("\nnetmix_connections_total 0\n"));
        for protocol in PROTOCOLS {
            let line = format!("\nnetmix_connections_opened_total{{protocol=\"{protocol}\"}} 0\n");
            assert!(text.contains(&line), "{line:?} missing");
        }
    }

    #[test]
    fn connections_opened_are_counted_per_protocol() {
        let mut feed = Feed::default();
        let by_protocol = &mut feed.totals.connections_by_protocol;
        by_protocol.insert("socks5".to_owned(), 7);
        by_protocol.insert("http-connect".to_owned(), 2);
        by_protocol.insert("future-proto".to_owned(), 1);
        let text = render(&feed);
        for (protocol, n) in [
            ("socks5", 7),
            ("http-connect", 2),
            ("socks4", 0),
            ("future-proto", 1),
        ] {
            let line =
                format!("\nnetmix_connections_opened_total{{protocol=\"{protocol}\"}} {n}\n");
            assert!(text.contains(&line), "{line:?} missing");
        }
        let samples = text
            .lines()
            .filter(|l| l.starts_with("netmix_connections_opened_total{"))
            .count();
        assert_eq!(samples, PROTOCOLS.len() + 1);
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let mut out = String::new();
        sample(&mut out, "x", &[], f64::NAN);
        sample(&mut out, "x", &[], f64::INFINITY);
        assert!(out.is_empty());
        sample(&mut out, "x", &[("a", "b")], 0.25);
        assert_eq!(out, "x{a=\"b\"} 0.25\n");
    }
}
