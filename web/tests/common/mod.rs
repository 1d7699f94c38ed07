//! Shared fixtures for the web tests (and the `demo` example): a realistic [`Feed`], a
//! [`Control`] double that records calls, and a [`WebContext`] wired to a `watch` channel the
//! test owns.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::{Arc, Mutex};

use netmix_web::models::{
    ConnectionDto, EventDto, Feed, InterfaceDto, LatencyPoint, PROTOCOLS, StrategyDto,
    StrategyInfo, Totals,
};
use netmix_web::{Control, WebConfig, WebContext};
use tokio::sync::watch;

/// The one Host the test context allows (plus `localhost:5000`).
pub const HOST: &str = "127.0.0.1:5000";
/// The dashboard token of the test context.
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// The proxy listen address of the test context (for `/proxy.pac`).
pub const PROXY: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1080);
/// Strategies the fake engine knows.
pub const STRATEGIES: [&str; 3] = ["round-robin", "latency", "sticky"];

/// A [`Control`] double: records every call; switches the strategy in the feed it publishes (as
/// the engine would) when the name is known and it holds a feed sender.
pub struct RecordingControl {
    pub calls: Mutex<Vec<String>>,
    pub feed: Option<watch::Sender<Arc<Feed>>>,
}

impl Control for RecordingControl {
    fn set_strategy(&self, name: &str) -> Result<(), String> {
        self.calls.lock().unwrap().push(name.to_owned());
        if !STRATEGIES.contains(&name) {
            return Err(format!(
                "unknown strategy {name:?}; available: {}",
                STRATEGIES.join(", ")
            ));
        }
        if let Some(feed) = &self.feed {
            feed.send_modify(|feed| {
                let mut next = (**feed).clone();
                next.version += 1;
                next.strategy.active = name.to_owned();
                *feed = Arc::new(next);
            });
        }
        Ok(())
    }
}

impl RecordingControl {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

/// A test harness: the context, the feed sender, the control double.
pub struct Harness {
    pub ctx: WebContext,
    pub feed: watch::Sender<Arc<Feed>>,
    pub control: Arc<RecordingControl>,
}

/// A context over [`sample_feed`]`(1, 1000)` whose control publishes strategy changes.
pub fn harness() -> Harness {
    harness_with(sample_feed(1, 1000), true)
}

/// A context over `feed`; its control publishes strategy changes when `publish` is set (and only
/// then holds a feed sender).
pub fn harness_with(feed: Feed, publish: bool) -> Harness {
    let (tx, rx) = watch::channel(Arc::new(feed));
    let control = Arc::new(RecordingControl {
        calls: Mutex::new(Vec::new()),
        feed: publish.then(|| tx.clone()),
    });
    let ctx = WebContext {
        feed: rx,
        control: control.clone(),
        config: WebConfig {
            token: TOKEN.to_owned(),
            allowed_hosts: vec![HOST.to_owned(), "localhost:5000".to_owned()],
            proxy: Some(PROXY),
        },
    };
    Harness {
        ctx,
        feed: tx,
        control,
    }
}

/// A feed with four interfaces (one per kind and health), `connections` connections (newest
/// first, ids descending) and 500 events. `version` changes the numbers a little, so a series of
/// versions looks alive.
pub fn sample_feed(version: u64, connections: usize) -> Feed {
    let t = version as f64;
    let now_ms = 1_764_000_000_000 + version * 1000;
    let ifaces = [
        ("wan0", "physical", "up", 12.0, 1.0, 1, false),
        ("wlan0", "physical", "degraded", 48.0, 9.0, 1, false),
        ("usb0", "tether", "up", 35.0, 4.0, 1, true),
        ("zt3jn4wqde", "zerotier", "down", 90.0, 0.0, 2, false),
    ];
    let interfaces: Vec<InterfaceDto> = ifaces
        .iter()
        .enumerate()
        .map(
            |(n, &(name, kind, health, base, wobble, weight, metered))| {
                let history = (0..120)
                    .map(|k| {
                        let phase = (k as f64 + t + n as f64 * 7.0) / 6.0;
                        LatencyPoint {
                            age_ms: (119 - k) * 2500,
                            ms: base
                                + wobble * phase.sin()
                                + if k.is_multiple_of(37) {
                                    base * 0.8
                                } else {
                                    0.0
                                },
                        }
                    })
                    .collect();
                let usable = health != "down";
                InterfaceDto {
                    id: n as u32 + 1,
                    name: name.to_owned(),
                    kind: kind.to_owned(),
                    health: health.to_owned(),
                    link_up: usable,
                    addrs: vec![format!("10.{n}.0.2/24"), format!("fd00:{n}::2/64")],
                    weight,
                    metered,
                    latency_ms: usable.then_some(base + wobble * (t / 6.0).sin()),
                    jitter_ms: wobble,
                    latency_history: if usable { history } else { Vec::new() },
                    successes: 1000 * (n as u64 + 1) + version,
                    failures: 3 * n as u64,
                    success_rate: Some(1.0 - 0.03 * n as f64),
                    active: if usable { 3 + n as u32 } else { 0 },
                    bytes_up: 1_000_000 * (n as u64 + 1) + version * 10_000,
                    bytes_down: 50_000_000 * (n as u64 + 1) + version * 400_000,
                    up_bps: if usable {
                        800_000 + (version % 7) * 90_000
                    } else {
                        0
                    },
                    down_bps: if usable {
                        (12_000_000.0 * (1.0 + 0.4 * (t / 5.0 + n as f64).sin())) as u64
                    } else {
                        0
                    },
                    peak_down_bps: if usable {
                        20_000_000 * (n as u64 + 1)
                    } else {
                        0
                    },
                    connect_timeout_ms: 3000,
                    ejections: n as u32,
                }
            },
        )
        .collect();
    let strategy = StrategyDto {
        active: "latency".to_owned(),
        available: STRATEGIES
            .iter()
            .map(|&name| StrategyInfo {
                name: name.to_owned(),
                description: format!("{name} strategy"),
                source: if name == "sticky" {
                    "/etc/netmix/plugins/libnetmix_strategy_sticky.so".to_owned()
                } else {
                    "built-in".to_owned()
                },
            })
            .collect(),
        fallback_active: false,
        last_error: None,
    };
    let connections: Vec<ConnectionDto> = (0..connections as u64)
        .map(|k| {
            let id = 10_000 + version * 10 - k;
            let iface = &ifaces[(id % 3) as usize].0;
            let state = match id % 17 {
                0 => "failed",
                1..=6 => "open",
                _ => "closed",
            };
            ConnectionDto {
                id,
                client: format!("127.0.0.1:{}", 40_000 + id % 20_000),
                protocol: PROTOCOLS[(id % PROTOCOLS.len() as u64) as usize].to_owned(),
                destination: format!("host{}.example.com:443", id % 50),
                interface: (state != "failed").then(|| (*iface).to_owned()),
                tried: if state == "failed" {
                    vec!["wan0".to_owned(), "wlan0".to_owned()]
                } else {
                    Vec::new()
                },
                strategy: "latency".to_owned(),
                reason: format!("lowest latency ({iface})"),
                state: state.to_owned(),
                error: (state == "failed").then(|| "connection refused on every interface".into()),
                bytes_up: id * 37 % 100_000,
                bytes_down: id * 7919 % 10_000_000,
                started_unix_ms: now_ms - k * 900,
                duration_ms: k * 900 + 120,
                retries: u32::from(id.is_multiple_of(11)),
            }
        })
        .collect();
    let kinds = [
        "iface_up",
        "failover",
        "iface_degraded",
        "strategy_changed",
        "iface_down",
    ];
    let events = (0..500u64)
        .map(|k| {
            let kind = kinds[(k % 5) as usize];
            let iface = ifaces[(k % 4) as usize].0;
            EventDto {
                unix_ms: now_ms - k * 4000,
                kind: kind.to_owned(),
                message: format!("{kind} on {iface} (#{k})"),
                interface: Some(iface.to_owned()),
            }
        })
        .collect();
    // Mostly SOCKS5, some of every other protocol; adds up to `connections_total`.
    let connections_total = 12_000 + version * 10;
    let mut connections_by_protocol: std::collections::BTreeMap<String, u64> = PROTOCOLS[1..]
        .iter()
        .zip(1..)
        .map(|(&p, n)| (p.to_owned(), 100 * n))
        .collect();
    let others: u64 = connections_by_protocol.values().sum();
    connections_by_protocol.insert(PROTOCOLS[0].to_owned(), connections_total - others);
    Feed {
        version,
        uptime_ms: 3_600_000 + version * 1000,
        started_unix_ms: 1_764_000_000_000 - 3_600_000,
        totals: Totals {
            connections_total,
            connections_by_protocol,
            connections_open: interfaces.iter().map(|i| u64::from(i.active)).sum(),
            failovers: 42,
            failed: 7,
            plugin_errors: 1,
            bytes_up: interfaces.iter().map(|i| i.bytes_up).sum(),
            bytes_down: interfaces.iter().map(|i| i.bytes_down).sum(),
        },
        interfaces,
        strategy,
        connections,
        events,
        zerotier: None,
    }
}

/// `serve` on a fresh loopback port with the test context (allowed hosts fitted to the port):
/// its address, the stop handle and the task.
pub async fn start_serving() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut h = harness();
    h.ctx.config = WebConfig {
        token: TOKEN.to_owned(),
        allowed_hosts: WebConfig::loopback_hosts(addr.port()),
        proxy: Some(PROXY),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(netmix_web::serve(h.ctx.clone(), listener, async move {
        let _ = stop_rx.await;
    }));
    (addr, stop_tx, server)
}
