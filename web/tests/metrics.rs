//! `/metrics` checked by a small Prometheus text-format (0.0.4) validator.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::{HOST, harness_with, sample_feed};
use netmix_web::models::Feed;
use netmix_web::{render_metrics, routes};

/// One parsed sample.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses and validates exposition text; panics with the offending line on any violation:
/// - every line is `# HELP name text`, `# TYPE name type`, or `name{labels} value`;
/// - a family's HELP and TYPE come before its first sample, once each;
/// - counters end in `_total`; values parse as floats; label values are properly escaped;
/// - no sample repeats the same name and label set.
fn validate(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut help = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut seen_samples = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP needs text");
            assert!(is_metric_name(name), "bad name in {line:?}");
            assert!(!text.is_empty(), "empty HELP: {line:?}");
            assert!(help.insert(name.to_owned()), "second HELP for {name}");
            assert!(!types.contains_key(name), "HELP after TYPE for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE needs a type");
            assert!(help.contains(name), "TYPE before HELP for {name}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type in {line:?}"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "second TYPE for {name}"
            );
        } else {
            assert!(!line.starts_with('#'), "unknown comment {line:?}");
            let sample = parse_sample(line);
            assert!(
                types.contains_key(&sample.name),
                "sample before HELP/TYPE: {line:?}"
            );
            if types[&sample.name] == "counter" {
                assert!(sample.value >= 0.0, "negative counter: {line:?}");
            }
            let key = format!("{}{:?}", sample.name, sample.labels);
            assert!(seen_samples.insert(key), "duplicate sample: {line:?}");
            samples.push(sample);
        }
    }
    samples
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name{a="x",b="y"} value`, with `\\`, `\"`, `\n` escapes inside label values.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line:?}"));
    let name = &line[..name_end];
    assert!(is_metric_name(name), "bad metric name in {line:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            // label name
            let start = chars.peek().map(|&(i, _)| i).expect("unterminated labels");
            if body[start..].starts_with('}') {
                end = Some(start + 1);
                break;
            }
            let eq = body[start..]
                .find('=')
                .map(|i| start + i)
                .expect("label without =");
            let label = &body[start..eq];
            assert!(is_label_name(label), "bad label name {label:?} in {line:?}");
            assert_eq!(
                &body[eq + 1..eq + 2],
                "\"",
                "label value must be quoted: {line:?}"
            );
            while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("unterminated value: {line:?}"));
                match c {
                    '"' => break,
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    '\n' => panic!("raw newline in label value"),
                    c => value.push(c),
                }
            }
            assert!(
                labels.insert(label.to_owned(), value).is_none(),
                "repeated label in {line:?}"
            );
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    end = Some(i + 1);
                    break;
                }
                other => panic!("expected , or }} after label, got {other:?} in {line:?}"),
            }
        }
        rest = &body[end.expect("labels end")..];
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before value: {line:?}"));
    assert!(
        !value.contains(' '),
        "timestamps are not expected: {line:?}"
    );
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

#[test]
fn validator_rejects_what_it_should() {
    for bad in [
        "x 1\n",                                        // no HELP/TYPE
        "# HELP x h\n# TYPE x counter\nx 1\n",          // counter without _total
        "# TYPE x gauge\n# HELP x h\nx 1\n",            // TYPE before HELP
        "# HELP x h\n# TYPE x gauge\nx{a=\"b} 1\n",     // unterminated
        "# HELP x h\n# TYPE x gauge\nx{a=\"\\q\"} 1\n", // bad escape
        "# HELP x h\n# TYPE x gauge\nx one\n",          // bad value
        "# HELP x h\n# TYPE x gauge\nx 1\nx 2\n",       // duplicate
    ] {
        let outcome = std::panic::catch_unwind(|| validate(bad));
        assert!(outcome.is_err(), "validator accepted {bad:?}");
    }
    let ok = validate(
        "# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\",b=\"\"} 1.5\n",
    );
    assert_eq!(ok[0].labels["a"], "q\"\\\n");
}

#[tokio::test]
async fn metrics_endpoint_is_valid_and_matches_the_feed() {
    let h = harness_with(sample_feed(5, 20), true);
    let feed = h.ctx.feed.borrow().clone();
    let res = warp::test::request()
        .path("/metrics")
        .header("host", HOST)
        .reply(&routes(h.ctx.clone()))
        .await;
    assert_eq!(res.status(), 200);
    let samples = validate(std::str::from_utf8(res.body()).unwrap());

    for iface in &feed.interfaces {
        let name = iface.name.as_str();
        let labels = [("interface", name)];
        match iface.latency_ms {
            Some(ms) => {
                let got = value(&samples, "netmix_interface_latency_seconds", &labels);
                assert!((got - ms / 1000.0).abs() < 1e-9);
            }
            None => assert!(find(&samples, "netmix_interface_latency_seconds", &labels).is_none()),
        }
        let up = value(&samples, "netmix_interface_up", &labels);
        assert_eq!(up, if iface.health == "down" { 0.0 } else { 1.0 }, "{name}");
        for state in ["up", "degraded", "down"] {
            let v = value(
                &samples,
                "netmix_interface_health",
                &[("interface", name), ("state", state)],
            );
            assert_eq!(v, if iface.health == state { 1.0 } else { 0.0 });
        }
        let up_bytes = [("interface", name), ("direction", "up")];
        let down_bytes = [("interface", name), ("direction", "down")];
        assert_eq!(
            value(&samples, "netmix_interface_bytes_total", &up_bytes),
            iface.bytes_up as f64
        );
        assert_eq!(
            value(&samples, "netmix_interface_bytes_total", &down_bytes),
            iface.bytes_down as f64
        );
        assert_eq!(
            value(&samples, "netmix_interface_active_connections", &labels),
            f64::from(iface.active)
        );
        assert_eq!(
            value(&samples, "netmix_interface_failures_total", &labels),
            iface.failures as f64
        );
    }
    let t = &feed.totals;
    assert_eq!(
        value(&samples, "netmix_connections_total", &[]),
        t.connections_total as f64
    );
    assert_eq!(
        value(&samples, "netmix_failovers_total", &[]),
        t.failovers as f64
    );
    assert_eq!(
        value(&samples, "netmix_plugin_errors_total", &[]),
        t.plugin_errors as f64
    );
    assert_eq!(
        value(&samples, "netmix_connections_failed_total", &[]),
        t.failed as f64
    );
    assert!(!t.connections_by_protocol.is_empty());
    for (protocol, &opened) in &t.connections_by_protocol {
        assert_eq!(
            value(
                &samples,
                "netmix_connections_opened_total",
                &[("protocol", protocol)]
            ),
            opened as f64,
            "{protocol}"
        );
    }
    let opened: f64 = samples
        .iter()
        .filter(|s| s.name == "netmix_connections_opened_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(opened, t.connections_total as f64);
    assert_eq!(
        value(
            &samples,
            "netmix_strategy_active",
            &[("strategy", "latency")]
        ),
        1.0
    );
}

#[test]
fn hostile_names_are_escaped() {
    let mut feed: Feed = sample_feed(1, 0);
    feed.interfaces[0].name = "we\"ird\\na\nme".to_owned();
    feed.interfaces[0].latency_ms = Some(f64::NAN);
    feed.interfaces[1].jitter_ms = f64::INFINITY;
    feed.strategy.active = "}{ \"x".to_owned();
    let text = render_metrics(&feed);
    let samples = validate(&text);
    assert!(
        find(
            &samples,
            "netmix_interface_up",
            &[("interface", "we\"ird\\na\nme")]
        )
        .is_some()
    );
    assert!(
        find(
            &samples,
            "netmix_strategy_active",
            &[("strategy", "}{ \"x")]
        )
        .is_some()
    );
    assert!(samples.iter().all(|s| s.value.is_finite()));
}

#[test]
fn empty_feed_is_valid() {
    let samples = validate(&render_metrics(&Feed::default()));
    assert_eq!(value(&samples, "netmix_connections_total", &[]), 0.0);
}
