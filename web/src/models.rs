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
    /// Connects and probes through this interface that failed on the link's side and count
    /// against its health, since start ("link failures" on the page). A timeout counts only
    /// when another interface then reached the same destination, so this is not the number of
    /// failed connections ([`Totals::failed`]).
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
    /// Interfaces whose connect failed for this connection, in the order they were tried: for
    /// a failed connection every interface tried (empty when none could even try), for a
    /// connected one those tried before [`interface`](Self::interface). Empty in feeds from
    /// engines that predate it.
    #[serde(default)]
    pub tried: Vec<String>,
    /// Strategy that chose the interface.
    pub strategy: String,
    /// The strategy's short reason for its choice.
    pub reason: String,
    /// `open`, `closed` or `failed`.
    pub state: String,
    /// Why the connection failed, when it did (the last interface's error).
    pub error: Option<String>,
    /// Bytes sent (client → destination).
    pub bytes_up: u64,
    /// Bytes received (destination → client).
    pub bytes_down: u64,
    /// When the connection was accepted, Unix time in milliseconds.
    pub started_unix_ms: u64,
    /// How long the connection has lasted (so far, when open), in milliseconds. For a failed
    /// connection: the time from accepting the request to the failure answer (every connect
    /// attempt included).
    pub duration_ms: u64,
    /// How many interfaces failed for this connection (failovers): the length of
    /// [`tried`](Self::tried).
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
    /// Connections that failed on every interface tried (rows with `state` `failed`). Not the
    /// interfaces' [`InterfaceDto::failures`], which count connects and probes held against
    /// one link's health.
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
    /// When this engine process started, Unix time in milliseconds: the same in every feed of
    /// one run, different after a restart (the page marks it). 0 in feeds from engines that
    /// predate it.
    #[serde(default)]
    pub started_unix_ms: u64,
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
///
/// `service` is [`ZT_NOT_INSTALLED`] when ZeroTier One is simply absent (no auth token file in
/// any known place and nothing listening on its port): not an error, so `error` is `None` and
/// the lists are empty. A token without an answering service, a refused token or an answer
/// that is not the API's stay errors (`unreachable`, `unauthorized`, `bad_answer`), as does
/// `no_token` when something listens on the port but no token can be read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ZeroTierDto {
    /// `ok`, `not_installed`, `unreachable`, `unauthorized`, `no_token`, `bad_answer` or
    /// `starting`.
    pub service: String,
    /// What is wrong with the service, for a human; `None` when `service` is `ok`,
    /// `not_installed` or `starting`.
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

/// [`ZeroTierDto::service`] when ZeroTier One is not installed on this machine.
pub const ZT_NOT_INSTALLED: &str = "not_installed";

impl ZeroTierDto {
    /// ZeroTier One is not installed (see [`ZT_NOT_INSTALLED`]).
    pub fn not_installed(&self) -> bool {
        self.service == ZT_NOT_INSTALLED
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_connection() -> ConnectionDto {
        ConnectionDto {
            id: 7,
            client: "127.0.0.1:40000".into(),
            protocol: "socks5".into(),
            destination: "198.19.0.1:12".into(),
            interface: None,
            tried: vec!["wan0".into(), "wan1".into()],
            strategy: "round-robin".into(),
            reason: "next in turn".into(),
            state: "failed".into(),
            error: Some("connect timed out".into()),
            bytes_up: 0,
            bytes_down: 0,
            started_unix_ms: 1_764_000_000_000,
            duration_ms: 3_012,
            retries: 2,
        }
    }

    #[test]
    fn a_failed_connection_carries_what_was_tried_and_how_long_it_took() {
        let v = serde_json::to_value(failed_connection()).unwrap();
        assert_eq!(v["tried"], serde_json::json!(["wan0", "wan1"]));
        assert_eq!(v["interface"], serde_json::Value::Null);
        assert_eq!(v["duration_ms"], 3_012);
        assert_eq!(v["error"], "connect timed out");
        let back: ConnectionDto = serde_json::from_value(v).unwrap();
        assert_eq!(back, failed_connection());
    }

    #[test]
    fn older_feeds_without_the_new_fields_still_parse() {
        let mut conn = serde_json::to_value(failed_connection()).unwrap();
        conn.as_object_mut().unwrap().remove("tried");
        let parsed: ConnectionDto = serde_json::from_value(conn).unwrap();
        assert!(parsed.tried.is_empty());

        let mut feed = serde_json::to_value(Feed {
            started_unix_ms: 1_764_000_000_000,
            ..Feed::default()
        })
        .unwrap();
        assert_eq!(feed["started_unix_ms"], 1_764_000_000_000u64);
        feed.as_object_mut().unwrap().remove("started_unix_ms");
        let parsed: Feed = serde_json::from_value(feed).unwrap();
        assert_eq!(parsed.started_unix_ms, 0);
    }

    #[test]
    fn zerotier_not_installed_is_a_state_not_an_error() {
        let dto = ZeroTierDto {
            service: ZT_NOT_INSTALLED.into(),
            ..ZeroTierDto::default()
        };
        assert!(dto.not_installed());
        let v = serde_json::to_value(&dto).unwrap();
        assert_eq!(v["service"], "not_installed");
        assert_eq!(v["error"], serde_json::Value::Null);
        // The same shape as every other state: the page and older clients read it as before.
        let ok = serde_json::to_value(ZeroTierDto {
            service: "ok".into(),
            ..ZeroTierDto::default()
        })
        .unwrap();
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&v), keys(&ok));
        assert!(!ZeroTierDto::default().not_installed());
    }
}
