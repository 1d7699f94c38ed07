//! The data that crosses the plugin boundary: what a strategy sees and what it returns.
//!
//! Every type here is `#[repr(C)]` (enums `#[repr(u8)]`) and derives `StableAbi`, and holds only
//! `abi_stable` std types (`RString`, `RVec`, `ROption`, ...), so its layout is checked when a
//! plugin is loaded. Adding, removing or reordering a field of any of these types is a breaking
//! change: plugins built against the old layout are refused with an "ABI mismatch".
//!
//! # Growing without breaking: the `ext` slot
//!
//! [`InterfaceSnapshot`], [`ZeroTierInfo`], [`ConnMeta`] and [`ConnOutcome`] end with
//! `ext: ExtFields`, an ordered list of string key/value pairs. A new per-interface or
//! per-connection fact is first published there (key names are documented where the engine
//! fills them in, e.g. `"kind"` for a finer interface kind than [`InterfaceKind`]), which changes
//! no layout: old plugins ignore unknown keys and new plugins must treat a missing key as
//! "unknown". An empty `ext` does not allocate.
//!
//! Why not abi_stable's prefix types for these structs (as the root module uses)? A prefix type
//! lives behind a reference to a `'static`, metadata-prefixed allocation; it suits a module built
//! once, not data the engine rebuilds per snapshot and per connection, thousands of times a
//! second, and it cannot be stored in an `RVec`/`RSlice`. When the string slot stops being
//! enough (a typed, hot field), the way forward is a new trait method after the prefix, e.g.
//! `pick_v2(&self, RSlice<InterfaceSnapshotV2>, &ConnMetaV2)`, whose default body converts to
//! these types and calls `pick`, so that old plugins keep working.
//!
//! The enums [`InterfaceKind`], [`LinkState`] and [`OutcomeStage`] are closed: a new variant is a
//! breaking change (refused at load time, never undefined behaviour). New interface kinds are
//! reported as [`InterfaceKind::Other`] with the precise kind in `ext["kind"]`.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use abi_stable::{
    StableAbi,
    std_types::{RNone, ROption, RString, RVec, Tuple2},
};

// === IP addresses ===

/// The family of an [`IpAddrC`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4: the address is in `octets[..4]`, the rest is zero.
    V4,
    /// IPv6: all 16 octets.
    V6,
}

/// An FFI-safe IP address (IPv4 or IPv6). Convert with `From<IpAddr>` and [`IpAddrC::to_std`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpAddrC {
    /// Which family `octets` holds.
    pub family: IpFamily,
    /// The address bytes in network order; an IPv4 address uses the first four.
    pub octets: [u8; 16],
}

impl IpAddrC {
    /// The unspecified IPv4 address `0.0.0.0`.
    pub const UNSPECIFIED_V4: Self = Self {
        family: IpFamily::V4,
        octets: [0; 16],
    };

    /// Converts to the standard library's address type.
    pub fn to_std(&self) -> IpAddr {
        match self.family {
            IpFamily::V4 => {
                let [a, b, c, d, ..] = self.octets;
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(self.octets)),
        }
    }
}

impl From<IpAddr> for IpAddrC {
    fn from(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => v4.into(),
            IpAddr::V6(v6) => v6.into(),
        }
    }
}

impl From<Ipv4Addr> for IpAddrC {
    fn from(addr: Ipv4Addr) -> Self {
        let mut octets = [0; 16];
        octets[..4].copy_from_slice(&addr.octets());
        Self {
            family: IpFamily::V4,
            octets,
        }
    }
}

impl From<Ipv6Addr> for IpAddrC {
    fn from(addr: Ipv6Addr) -> Self {
        Self {
            family: IpFamily::V6,
            octets: addr.octets(),
        }
    }
}

impl From<IpAddrC> for IpAddr {
    fn from(addr: IpAddrC) -> Self {
        addr.to_std()
    }
}

impl fmt::Display for IpAddrC {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_std().fmt(f)
    }
}

/// An FFI-safe IP network (address + prefix length), e.g. `10.147.17.0/24`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetC {
    /// The network (or host) address.
    pub addr: IpAddrC,
    /// The prefix length in bits (0–32 for IPv4, 0–128 for IPv6).
    pub prefix_len: u8,
}

impl IpNetC {
    /// A network from an address and a prefix length.
    pub fn new(addr: impl Into<IpAddrC>, prefix_len: u8) -> Self {
        Self {
            addr: addr.into(),
            prefix_len,
        }
    }

    /// Whether `ip` lies inside this network (always false across families).
    pub fn contains(&self, ip: &IpAddrC) -> bool {
        if ip.family != self.addr.family {
            return false;
        }
        let bits = usize::from(self.prefix_len).min(match ip.family {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        });
        let (full, rest) = (bits / 8, bits % 8);
        if self.addr.octets[..full] != ip.octets[..full] {
            return false;
        }
        if rest == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rest);
        self.addr.octets[full] & mask == ip.octets[full] & mask
    }
}

impl fmt::Display for IpNetC {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

// === Extension slot ===

/// Key/value strings for facts added after this ABI version (see the [module docs](self)).
///
/// Keys are lowercase `snake_case`; a key appears at most once. An empty list does not allocate.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtFields(pub RVec<Tuple2<RString, RString>>);

impl ExtFields {
    /// An empty list.
    pub const fn new() -> Self {
        Self(RVec::new())
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|kv| kv.0.as_str() == key)
            .map(|kv| kv.1.as_str())
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = RString::from(value.into());
        match self.0.iter_mut().find(|kv| kv.0.as_str() == key) {
            Some(kv) => kv.1 = value,
            None => self.0.push(Tuple2(key.into(), value)),
        }
    }

    /// All pairs, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|kv| (kv.0.as_str(), kv.1.as_str()))
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// === Interfaces ===

/// What kind of network interface this is.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceKind {
    /// A physical NIC: Ethernet, Wi-Fi.
    Physical,
    /// A phone or modem tethered over USB/Bluetooth (often metered).
    Tether,
    /// A virtual interface: VPN tunnel, bridge, veth.
    Virtual,
    /// A ZeroTier virtual network (see [`InterfaceSnapshot::zerotier`]).
    ZeroTier,
    /// The loopback interface.
    Loopback,
    /// Anything else; the engine may put a finer name in `ext["kind"]`.
    Other,
}

/// The health of an interface as the engine judges it (thresholds, not single samples).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Healthy.
    Up,
    /// Usable but failing some probes or connections; prefer others.
    Degraded,
    /// Not usable: never pick it.
    Down,
}

/// A route of a ZeroTier network.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ZtRoute {
    /// The destination network.
    pub target: IpNetC,
    /// The gateway, if the route is not on-link.
    pub via: ROption<IpAddrC>,
}

/// ZeroTier facts about an interface that is a ZeroTier network (from the local service API).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ZeroTierInfo {
    /// The 16-hex-digit network id.
    pub network_id: RString,
    /// The network's name, possibly empty.
    pub name: RString,
    /// The service's status string (`"OK"`, `"ACCESS_DENIED"`, `"REQUESTING_CONFIGURATION"`, ...).
    pub status: RString,
    /// Routes the network pushes.
    pub routes: RVec<ZtRoute>,
    /// Addresses assigned to this node on the network.
    pub assigned: RVec<IpNetC>,
    /// Whether the network may carry the default route (full-tunnel through an exit node).
    pub allow_default: bool,
    /// Peers reached directly.
    pub peers_direct: u32,
    /// Peers reached only through a relay.
    pub peers_relayed: u32,
    /// Whether the local ZeroTier node is online.
    pub online: bool,
    /// Whether the node fell back to TCP relaying (slow).
    pub tcp_fallback: bool,
    /// Facts added later (see the [module docs](self)).
    pub ext: ExtFields,
}

impl ZeroTierInfo {
    /// Whether a pushed route covers `dest` (the default route counts only if `allow_default`).
    pub fn routes_to(&self, dest: &IpAddrC) -> bool {
        self.routes
            .iter()
            .any(|r| r.target.contains(dest) && (r.target.prefix_len > 0 || self.allow_default))
    }
}

/// Everything a strategy may know about one interface, as of the snapshot.
///
/// The engine rebuilds the snapshot when something changes; a strategy reads it and must not
/// keep references across calls (keep ids instead: `id` is stable while the interface exists).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct InterfaceSnapshot {
    /// Stable id of the interface for this engine run (never reused for another interface).
    pub id: u32,
    /// The OS name (`eth0`, `wlan0`, `ztabcdef12`).
    pub name: RString,
    /// What kind of interface it is.
    pub kind: InterfaceKind,
    /// Health.
    pub state: LinkState,
    /// Its addresses.
    pub addrs: RVec<IpAddrC>,
    /// Exponentially weighted moving average of the probe/connect latency, in microseconds;
    /// `None` until the first sample.
    pub latency_ewma_us: ROption<u32>,
    /// Recent latency samples in microseconds, oldest first.
    pub latency_samples_us: RVec<u32>,
    /// Latency jitter (mean absolute deviation of recent samples), in microseconds.
    pub jitter_us: u32,
    /// Connections (and probes) that succeeded through it.
    pub successes: u64,
    /// Connections (and probes) that failed through it.
    pub failures: u64,
    /// Connections currently open through it.
    pub active_conns: u32,
    /// Bytes sent through it since it appeared.
    pub bytes_up: u64,
    /// Bytes received through it since it appeared.
    pub bytes_down: u64,
    /// Measured upload throughput, bits per second (recent window).
    pub throughput_up_bps: u64,
    /// Measured download throughput, bits per second (recent window).
    pub throughput_down_bps: u64,
    /// Configured weight (default 1; 0 means "only as a last resort").
    pub weight: u32,
    /// Whether the user marked it metered (pay per byte).
    pub metered: bool,
    /// ZeroTier facts, for ZeroTier interfaces.
    pub zerotier: ROption<ZeroTierInfo>,
    /// Facts added later (see the [module docs](self)).
    pub ext: ExtFields,
}

impl InterfaceSnapshot {
    /// A healthy physical interface with no statistics yet and weight 1 (for tests and builders).
    pub fn new(id: u32, name: &str) -> Self {
        Self {
            id,
            name: name.into(),
            kind: InterfaceKind::Physical,
            state: LinkState::Up,
            addrs: RVec::new(),
            latency_ewma_us: RNone,
            latency_samples_us: RVec::new(),
            jitter_us: 0,
            successes: 0,
            failures: 0,
            active_conns: 0,
            bytes_up: 0,
            bytes_down: 0,
            throughput_up_bps: 0,
            throughput_down_bps: 0,
            weight: 1,
            metered: false,
            zerotier: RNone,
            ext: ExtFields::new(),
        }
    }

    /// Whether it may be picked at all (`state != Down`).
    pub fn is_usable(&self) -> bool {
        self.state != LinkState::Down
    }

    /// The latency EWMA in milliseconds, if known.
    pub fn latency_ms(&self) -> Option<f64> {
        self.latency_ewma_us
            .into_option()
            .map(|us| f64::from(us) / 1000.0)
    }

    /// Fraction of failed connections, 0.0 when nothing was tried yet.
    pub fn failure_rate(&self) -> f64 {
        let total = self.successes + self.failures;
        if total == 0 {
            0.0
        } else {
            self.failures as f64 / total as f64
        }
    }
}

// === Connections ===

/// What the engine knows about a new outgoing connection when it asks for a route.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ConnMeta {
    /// The destination host name, when the client sent one (SOCKS5 domain address type).
    pub host: ROption<RString>,
    /// The destination address, when the client sent one (or it was already resolved).
    pub addr: ROption<IpAddrC>,
    /// The destination port.
    pub port: u16,
    /// The SOCKS client's address.
    pub client: IpAddrC,
    /// The SOCKS client's port.
    pub client_port: u16,
    /// Interface ids already tried for this connection (failed), in the order tried.
    pub tried: RVec<u32>,
    /// Facts added later (see the [module docs](self)).
    pub ext: ExtFields,
}

impl ConnMeta {
    /// A connection to `host:port` from `127.0.0.1:0` with nothing tried (tests and builders).
    pub fn for_host(host: &str, port: u16) -> Self {
        Self {
            host: ROption::RSome(host.into()),
            ..Self::for_addr_opt(RNone, port)
        }
    }

    /// A connection to `addr:port` from `127.0.0.1:0` with nothing tried (tests and builders).
    pub fn for_addr(addr: impl Into<IpAddrC>, port: u16) -> Self {
        Self::for_addr_opt(ROption::RSome(addr.into()), port)
    }

    fn for_addr_opt(addr: ROption<IpAddrC>, port: u16) -> Self {
        Self {
            host: RNone,
            addr,
            port,
            client: Ipv4Addr::LOCALHOST.into(),
            client_port: 0,
            tried: RVec::new(),
            ext: ExtFields::new(),
        }
    }

    /// The destination as a user would name it: the host name if given, else the address,
    /// else `"?"`.
    pub fn host_or_addr(&self) -> String {
        match (&self.host, &self.addr) {
            (ROption::RSome(h), _) => h.to_string(),
            (RNone, ROption::RSome(a)) => a.to_string(),
            (RNone, RNone) => "?".to_owned(),
        }
    }

    /// Whether interface `id` was already tried for this connection.
    pub fn was_tried(&self, id: u32) -> bool {
        self.tried.contains(&id)
    }
}

/// Which moment of a connection's life a [`ConnOutcome`] reports.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeStage {
    /// The connect succeeded; `bytes_*` and `duration_us` are still zero. A `Closed` follows.
    Connected,
    /// The connect through this interface failed (the engine may try the next one).
    ConnectFailed,
    /// The connection finished (either side closed, or it broke).
    Closed,
}

/// Feedback about one connection attempt through one interface (see [`crate::Strategy::observe`]).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ConnOutcome {
    /// The interface the attempt went through.
    pub interface: u32,
    /// The connection, as passed to `pick`.
    pub conn: ConnMeta,
    /// Which moment this reports.
    pub stage: OutcomeStage,
    /// Time from the start of the connect to its success or failure, microseconds.
    pub connect_us: u32,
    /// Bytes sent to the destination so far.
    pub bytes_up: u64,
    /// Bytes received from the destination so far.
    pub bytes_down: u64,
    /// Time since the connect succeeded, microseconds (0 unless `Closed`).
    pub duration_us: u64,
    /// Facts added later (see the [module docs](self)).
    pub ext: ExtFields,
}

impl ConnOutcome {
    /// A report of `stage` for `conn` through `interface`, with no timings or byte counts yet
    /// (set the fields that apply).
    pub fn new(interface: u32, conn: ConnMeta, stage: OutcomeStage) -> Self {
        Self {
            interface,
            conn,
            stage,
            connect_us: 0,
            bytes_up: 0,
            bytes_down: 0,
            duration_us: 0,
            ext: ExtFields::new(),
        }
    }

    /// Whether the connect succeeded (`Connected` or `Closed`).
    pub fn succeeded(&self) -> bool {
        self.stage != OutcomeStage::ConnectFailed
    }
}

// === The answer ===

/// A strategy's answer: interfaces to try in order, and why (shown on the dashboard).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Interface ids, best first, fallbacks after. Duplicates and unknown ids are ignored.
    pub order: RVec<u32>,
    /// A short human-readable reason for the first pick, e.g. `"latency 5.1ms×(1+2 active)"`.
    pub reason: RString,
}

impl Choice {
    /// A choice from an order and a reason.
    pub fn new(order: impl Into<Vec<u32>>, reason: impl Into<String>) -> Self {
        Self {
            order: RVec::from(order.into()),
            reason: RString::from(reason.into()),
        }
    }

    /// The first pick, if any.
    pub fn first(&self) -> Option<u32> {
        self.order.first().copied()
    }

    /// The order as the engine should try it: ids that are in `interfaces`, usable and not
    /// tried for `conn`, each once, in the strategy's order. (A host-side check: strategies
    /// are code from elsewhere.)
    pub fn valid_order(&self, interfaces: &[InterfaceSnapshot], conn: &ConnMeta) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.order.len());
        for &id in self.order.iter() {
            if !out.contains(&id) && candidates(interfaces, conn).any(|i| i.id == id) {
                out.push(id);
            }
        }
        out
    }
}

// === Helpers for strategy authors ===

/// The interfaces a strategy may pick for `conn`: usable and not yet tried, in snapshot order.
pub fn candidates<'a>(
    interfaces: &'a [InterfaceSnapshot],
    conn: &'a ConnMeta,
) -> impl Iterator<Item = &'a InterfaceSnapshot> + 'a {
    interfaces
        .iter()
        .filter(move |i| i.is_usable() && !conn.was_tried(i.id))
}

/// The ids of the [`candidates`] sorted by `key`, smallest first (ties keep snapshot order).
pub fn order_by_key<K: Ord>(
    interfaces: &[InterfaceSnapshot],
    conn: &ConnMeta,
    mut key: impl FnMut(&InterfaceSnapshot) -> K,
) -> Vec<u32> {
    let mut keyed: Vec<(K, u32)> = candidates(interfaces, conn)
        .map(|i| (key(i), i.id))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_round_trips() {
        for s in ["192.0.2.7", "0.0.0.0", "2001:db8::1", "::ffff:10.0.0.1"] {
            let ip: IpAddr = s.parse().unwrap();
            let c = IpAddrC::from(ip);
            assert_eq!(c.to_std(), ip);
            assert_eq!(c.to_string(), ip.to_string());
        }
        let v4 = IpAddrC::from("10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(v4.family, IpFamily::V4);
        assert_eq!(&v4.octets[4..], &[0; 12]);
    }

    #[test]
    fn net_contains() {
        let net = IpNetC::new("10.147.17.0".parse::<IpAddr>().unwrap(), 20);
        let inside = IpAddrC::from("10.147.31.255".parse::<IpAddr>().unwrap());
        let outside = IpAddrC::from("10.147.32.0".parse::<IpAddr>().unwrap());
        let v6 = IpAddrC::from("::1".parse::<IpAddr>().unwrap());
        assert!(net.contains(&inside));
        assert!(!net.contains(&outside));
        assert!(!net.contains(&v6));
        assert!(IpNetC::new(Ipv4Addr::UNSPECIFIED, 0).contains(&outside));
        assert_eq!(net.to_string(), "10.147.17.0/20");
    }

    #[test]
    fn ext_fields() {
        let mut ext = ExtFields::new();
        assert_eq!(ext.get("kind"), None);
        ext.set("kind", "wifi");
        ext.set("kind", "lte");
        ext.set("ssid", "home");
        assert_eq!(ext.get("kind"), Some("lte"));
        assert_eq!(ext.iter().count(), 2);
    }

    #[test]
    fn helpers() {
        let mut ifs: Vec<_> = (1..=4).map(|i| InterfaceSnapshot::new(i, "x")).collect();
        ifs[1].state = LinkState::Down;
        ifs[0].active_conns = 5;
        let mut conn = ConnMeta::for_host("example.com", 443);
        conn.tried.push(3);
        assert_eq!(conn.host_or_addr(), "example.com");
        assert_eq!(order_by_key(&ifs, &conn, |i| i.active_conns), vec![4, 1]);
        let by_addr = ConnMeta::for_addr(Ipv4Addr::new(192, 0, 2, 1), 80);
        assert_eq!(by_addr.host_or_addr(), "192.0.2.1");
        assert_eq!(Choice::new(vec![2, 1], "r").first(), Some(2));
        let messy = Choice::new(vec![9, 4, 2, 4, 3, 1], "r");
        assert_eq!(messy.valid_order(&ifs, &conn), vec![4, 1]);
    }
}
