//! The data the dashboard shows: one [`Feed`] snapshot, published by the engine's feed actor on a
//! `watch` channel and served as JSON by the REST API and the `/ws` live feed.
//!
//! These types are the contract between the engine and the web layer. The engine fills them from
//! its single source of truth (the ConnectionManager's snapshot); the web layer only reads them.
//! They hold no secret: everything here may reach the browser.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One latency sample of an interface, for the latency chart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyPoint {
    /// How long ago the sample was taken, in milliseconds, relative to the feed's creation.
    pub age_ms: u64,
    /// The measured round-trip (connect) latency in milliseconds.
    pub ms: f64,
}

/// One network interface as the dashboard shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InterfaceDto {
    /// Stable id the engine gave the interface.
    pub id: u32,
    /// Interface name (`eth0`, `wlan0`, `zt3jn4…`).
    pub name: String,
    /// `physical`, `tether`, `virtual` or `zerotier`.
    pub kind: String,
    /// `up`, `degraded` or `down`.
    pub health: String,
    /// Whether the kernel reports the link as operationally up.
    pub link_up: bool,
    /// The interface's addresses, as text.
    pub addrs: Vec<String>,
    /// Configured weight (used by weighted strategies).
    pub weight: u32,
    /// Whether traffic on this link costs money (tethered phone, LTE).
    pub metered: bool,
    /// Current latency estimate (EWMA) in milliseconds; `None` before the first sample.
    pub latency_ms: Option<f64>,
    /// Jitter (mean deviation of recent samples) in milliseconds.
    pub jitter_ms: f64,
    /// Recent latency samples over the last minutes, oldest first.
    pub latency_history: Vec<LatencyPoint>,
    /// Successful connects through this interface since start.
    pub successes: u64,
    /// Failed connects through this interface since start.
    pub failures: u64,
    /// Recent success rate in `0.0..=1.0`; `None` before any attempt.
    pub success_rate: Option<f64>,
    /// Connections currently relayed through this interface.
    pub active: u32,
    /// Bytes sent (client → destination) since start.
    pub bytes_up: u64,
    /// Bytes received (destination → client) since start.
    pub bytes_down: u64,
    /// Measured upload throughput in **bits** per second.
    pub up_bps: u64,
    /// Measured download throughput in **bits** per second.
    pub down_bps: u64,
    /// Estimated download capacity in **bits** per second: the decaying peak of the one-second
    /// download rate (what the `capacity` strategy shares connections by); 0 before any traffic.
    pub peak_down_bps: u64,
    /// Connect timeout in use for this interface, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How many times the interface was ejected (taken out of rotation) since start.
    pub ejections: u32,
}

/// One proxied connection (open or recently finished).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectionDto {
    /// Connection id, increasing.
    pub id: u64,
    /// Client address (`127.0.0.1:53122`).
    pub client: String,
    /// The client protocol: one of [`PROTOCOLS`] (`"socks5"`, `"socks4"`, `"http-connect"`,
    /// `"http-forward"`, `"socks5-udp"`, `"socks5-bind"`). Empty in feeds from engines that
    /// predate it.
    #[serde(default)]
    pub protocol: String,
    /// Requested destination (`example.com:443`).
    pub destination: String,
    /// Interface the connection went out on; `None` if it never connected.
    pub interface: Option<String>,
    /// Strategy that chose the interface.
    pub strategy: String,
    /// The strategy's short reason for its choice.
    pub reason: String,
    /// `open`, `closed` or `failed`.
    pub state: String,
    /// Why the connection failed, when it did.
    pub error: Option<String>,
    /// Bytes sent (client → destination).
    pub bytes_up: u64,
    /// Bytes received (destination → client).
    pub bytes_down: u64,
    /// When the connection was accepted, Unix time in milliseconds.
    pub started_unix_ms: u64,
    /// How long the connection has lasted (so far, when open), in milliseconds.
    pub duration_ms: u64,
    /// How many other interfaces were tried before this one (failovers).
    pub retries: u32,
}

/// Something noteworthy that happened (interface state change, failover, plugin error, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventDto {
    /// When it happened, Unix time in milliseconds.
    pub unix_ms: u64,
    /// Machine-readable kind: `iface_up`, `iface_down`, `iface_degraded`, `failover`,
    /// `plugin_error`, `fallback`, `strategy_changed`, …
    pub kind: String,
    /// Human-readable one-line description.
    pub message: String,
    /// The interface concerned, if any.
    pub interface: Option<String>,
}

/// A routing strategy the user can switch to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StrategyInfo {
    /// Name to pass to [`crate::Control::set_strategy`].
    pub name: String,
    /// One-line description from the strategy itself.
    pub description: String,
    /// `"built-in"`, or the plugin file it was loaded from.
    pub source: String,
}

/// The routing strategy state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StrategyDto {
    /// Name of the active strategy.
    pub active: String,
    /// Every strategy that can be selected.
    pub available: Vec<StrategyInfo>,
    /// Whether the engine currently uses its built-in fallback because the strategy erred.
    pub fallback_active: bool,
    /// The strategy's last error, if any.
    pub last_error: Option<String>,
}

/// Engine-wide counters since start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Connections accepted.
    pub connections_total: u64,
    /// Connections accepted, by client protocol (see [`ConnectionDto::protocol`]); the values
    /// add up to `connections_total`. Empty in feeds from engines that predate it.
    #[serde(default)]
    pub connections_by_protocol: BTreeMap<String, u64>,
    /// Connections currently open.
    pub connections_open: u64,
    /// Connections moved to another interface after a failure.
    pub failovers: u64,
    /// Connections that failed on every interface tried.
    pub failed: u64,
    /// Errors returned by strategy plugins.
    pub plugin_errors: u64,
    /// Bytes sent, all interfaces.
    pub bytes_up: u64,
    /// Bytes received, all interfaces.
    pub bytes_down: u64,
}

/// One consistent snapshot of everything the dashboard shows.
///
/// `Feed::default()` is the empty feed (version 0), to publish before the engine has data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Feed {
    /// Increases with every published snapshot.
    pub version: u64,
    /// Engine uptime in milliseconds.
    pub uptime_ms: u64,
    /// Every known interface.
    pub interfaces: Vec<InterfaceDto>,
    /// Routing strategy state.
    pub strategy: StrategyDto,
    /// Engine-wide counters.
    pub totals: Totals,
    /// Recent connections, newest first, at most [`MAX_CONNECTIONS`].
    pub connections: Vec<ConnectionDto>,
    /// Recent events, newest first, at most [`MAX_EVENTS`].
    pub events: Vec<EventDto>,
    /// The local ZeroTier One service, its networks and peers; `None` when the ZeroTier agent
    /// is disabled. (Absent in feeds from engines without it.)
    #[serde(default)]
    pub zerotier: Option<ZeroTierDto>,
}

/// The local ZeroTier One service as netmix's ZeroTier agent sees it (`GET /api/zerotier`).
/// Never carries the service's auth token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ZeroTierDto {
    /// `ok`, `unreachable`, `unauthorized`, `no_token`, `bad_answer` or `starting`.
    pub service: String,
    /// What is wrong with the service, for a human; `None` when `service` is `ok`.
    pub error: Option<String>,
    /// The API port in use (from `zerotier-one.port`, else 9993).
    pub port: Option<u16>,
    /// This node's 10-hex address.
    pub address: String,
    /// The service's version (`"1.14.1"`).
    pub version: String,
    /// At least one ZeroTier root is reachable.
    pub online: bool,
    /// Traffic is tunnelled over TCP through ZeroTier's relay (slow).
    pub tcp_fallback: bool,
    /// Joined networks.
    pub networks: Vec<ZtNetworkDto>,
    /// Known peers.
    pub peers: Vec<ZtPeerDto>,
}

/// One joined ZeroTier network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ZtNetworkDto {
    /// 16-hex network id.
    pub id: String,
    /// Name from the controller (empty until configured).
    pub name: String,
    /// `OK`, `REQUESTING_CONFIGURATION`, `ACCESS_DENIED`, ...
    pub status: String,
    /// The OS interface carrying it (`ztnnhrtimp`).
    pub device: String,
    /// This node's addresses on it (`10.147.20.190/24`).
    pub assigned: Vec<String>,
    /// Managed routes, with whether netmix routes through them.
    pub routes: Vec<ZtRouteDto>,
}

/// One managed route of a ZeroTier network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ZtRouteDto {
    /// Destination network (`10.147.20.0/24`).
    pub target: String,
    /// Gateway; `None` on-link.
    pub via: Option<String>,
    /// netmix sends matching destinations through the network's interface.
    pub usable: bool,
    /// Why not, when not usable.
    pub note: Option<String>,
}

/// One ZeroTier peer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ZtPeerDto {
    /// 10-hex address.
    pub address: String,
    /// `LEAF`, `MOON` or `PLANET`.
    pub role: String,
    /// Latency in milliseconds; `None` when the service does not know it (-1).
    pub latency_ms: Option<u32>,
    /// `direct` or `relayed`.
    pub path: String,
    /// The peer's version (`"-1.-1.-1"` when unknown).
    pub version: String,
}

/// Every client protocol the proxy port speaks, as [`ConnectionDto::protocol`] names it:
/// SOCKS5 CONNECT, SOCKS4/4a, HTTP `CONNECT`, HTTP forward proxying (`GET http://…`), SOCKS5
/// UDP ASSOCIATE and SOCKS5 BIND.
pub const PROTOCOLS: [&str; 6] = [
    "socks5",
    "socks4",
    "http-connect",
    "http-forward",
    "socks5-udp",
    "socks5-bind",
];

/// The most connections a [`Feed`] carries.
pub const MAX_CONNECTIONS: usize = 1000;
/// The most events a [`Feed`] carries.
pub const MAX_EVENTS: usize = 500;

/// Body of `POST /api/strategy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SetStrategyRequest {
    /// Name of the strategy to activate (one of [`StrategyDto::available`]).
    pub name: String,
}

/// Body of every error response: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
}
