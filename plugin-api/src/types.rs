//! The data that crosses the plugin boundary: what a strategy sees and what it returns.
//!
//! Every type here is `#[repr(C)]` (or a `#[repr(transparent)]` integer) and derives `StableAbi`,
//! and holds only `abi_stable` std types (`RString`, `RVec`, `ROption`, `RArc`, ...), so its
//! layout is checked when a plugin is loaded.
//!
//! # What may change in a 1.x release, and how
//!
//! These structs are not prefix types: adding, removing or reordering a field is a breaking
//! change (plugins built against the old layout are refused, in one line, with an "ABI
//! mismatch"). They grow in three ways that keep 1.0 plugins loading:
//!
//! - **Open value sets.** [`InterfaceKind`], [`Transport`], [`ClientProtocol`] and [`LogLevel`]
//!   are integers with named constants, not Rust enums: a 1.x engine may send a value a 1.0
//!   plugin has no name for (treat it as "other"). Only [`LinkState`] and [`OutcomeStage`] are
//!   closed enums: their values are the whole state machine.
//! - **The `ext` slot.** [`Snapshot`], [`InterfaceSnapshot`], [`ZeroTierInfo`], [`ConnMeta`] and
//!   [`ConnOutcome`] end with `ext: ExtFields`, ordered string key/value pairs for facts that
//!   are new and not hot (old plugins ignore unknown keys; new ones treat a missing key as
//!   "unknown"). An empty `ext` does not allocate.
//! - **New methods.** A typed, hot new fact arrives through a new [`crate::Strategy`] method
//!   appended after the prefix (with a default body that falls back to the 1.0 methods), taking
//!   a new type; see [the crate docs](crate#evolution-within-1x) for how the engine loads
//!   plugins built before it.
//!
//! Why not prefix types for these structs (as the root module uses)? A prefix type lives behind
//! a reference to a `'static`, metadata-prefixed allocation; it suits a module built once, not
//! data the engine rebuilds on every change, and it cannot be stored in an `RVec`.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use abi_stable::{
    StableAbi,
    std_types::{RArc, RNone, ROption, RString, RVec, Tuple2},
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

// === Open value sets ===

/// Declares an open set of values: a `#[repr(transparent)]` `u8` with named constants (see the
/// [module docs](self)). Unknown values print as `"other(N)"`.
macro_rules! open_values {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u8);

        #[allow(non_upper_case_globals)]
        impl $name {
            $( $(#[$vmeta])* pub const $variant: Self = Self($value); )+

            /// The lowercase name of a known value, `None` for a value this version has no
            /// name for.
            pub fn known_name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($text), )+
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.known_name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "other({})", self.0),
                }
            }
        }
    };
}

open_values! {
    /// What kind of network interface this is (an open set: see the [module docs](self)).
    pub struct InterfaceKind {
        /// Ethernet or Wi-Fi.
        Physical = 0 => "physical",
        /// A tethered phone (USB/Bluetooth/hotspot).
        Tether = 1 => "tether",
        /// A tunnel or virtual device (VPN, bridge, veth).
        Virtual = 2 => "virtual",
        /// A ZeroTier virtual network.
        ZeroTier = 3 => "zerotier",
        /// The loopback interface.
        Loopback = 4 => "loopback",
        /// Anything else; the engine may put a finer name in `ext["kind"]`.
        Other = 255 => "other",
    }
}

open_values! {
    /// The transport a connection carries (an open set).
    pub struct Transport {
        /// A TCP stream (SOCKS CONNECT, HTTP CONNECT, HTTP forwarding).
        Tcp = 0 => "tcp",
        /// UDP datagrams (a SOCKS5 UDP ASSOCIATE association).
        Udp = 1 => "udp",
    }
}

open_values! {
    /// The protocol the client spoke to netmix (an open set).
    pub struct ClientProtocol {
        /// SOCKS5 (RFC 1928).
        Socks5 = 0 => "socks5",
        /// SOCKS4, or SOCKS4a with a host name.
        Socks4 = 1 => "socks4",
        /// An HTTP `CONNECT` tunnel.
        HttpConnect = 2 => "http-connect",
        /// An HTTP forward-proxy request (`GET http://host/path`).
        HttpForward = 3 => "http-forward",
        /// The engine itself (a health probe, a DNS query).
        Engine = 4 => "engine",
    }
}

open_values! {
    /// The level of a plugin's log line (an open set; see [`crate::log`]).
    pub struct LogLevel {
        /// Something an operator must act on.
        Error = 1 => "error",
        /// Something went wrong and was recovered from (e.g. a fallback).
        Warn = 2 => "warn",
        /// Lifecycle and state changes.
        Info = 3 => "info",
        /// Detail for debugging.
        Debug = 4 => "debug",
        /// Per-decision detail.
        Trace = 5 => "trace",
    }
}

open_values! {
    /// How one TCP connection uses the links (new in 1.1; an open set): what
    /// [`crate::Strategy::answer`] says next to the order.
    pub struct Paths {
        /// One path: the connection leaves through the first interface of the order (with
        /// the others as failover), as in 1.0.
        Single = 0 => "single-path",
        /// Every link: with the engine's multipath on (`Snapshot::multipath_available`), the
        /// connection is Multipath TCP, its first subflow through the first interface of the
        /// order, further subflows through every other usable interface. With multipath off it
        /// is single-path.
        Multi = 1 => "multipath",
    }
}

// === Interfaces ===

/// The health of an interface as the engine judges it (thresholds, not single samples).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Healthy.
    Up,
    /// Usable but failing some probes or connections; prefer others.
    Degraded,
    /// Not usable. The engine never puts a Down interface in a strategy's [`Snapshot`]; the
    /// value exists for strategies that keep interfaces of their own.
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

/// Counters of one interface that change with every connection, shared live between the engine
/// and strategies: the engine updates them with relaxed atomic operations as connections start
/// and end and as bytes move; a strategy reads them in `pick` (they are never stale, unlike a
/// snapshot rebuilt on change). Strategies must only read them.
#[repr(C)]
#[derive(StableAbi, Debug, Default)]
pub struct LiveCounters {
    /// Connections in flight through the interface: counted from the moment the engine starts
    /// to connect through it until the connection fails or closes.
    pub active: AtomicU32,
    /// Connections started through it since it appeared (each attempt counts once).
    pub opened: AtomicU64,
    /// Bytes sent to destinations through it since it appeared.
    pub bytes_up: AtomicU64,
    /// Bytes received from destinations through it since it appeared.
    pub bytes_down: AtomicU64,
}

impl LiveCounters {
    /// Connections in flight now.
    #[inline]
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Bytes sent so far.
    #[inline]
    pub fn bytes_up(&self) -> u64 {
        self.bytes_up.load(Ordering::Relaxed)
    }

    /// Bytes received so far.
    #[inline]
    pub fn bytes_down(&self) -> u64 {
        self.bytes_down.load(Ordering::Relaxed)
    }
}

/// Everything a strategy may know about one interface, as of the snapshot.
///
/// The engine rebuilds the snapshot when something changes and hands it to
/// [`crate::Strategy::rebuild`]; live counters ([`Self::live`]) change between rebuilds.
/// Keep ids, not references, across rebuilds: `id` is stable while the interface exists.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct InterfaceSnapshot {
    /// Stable id of the interface for this engine run (never reused for another interface).
    pub id: u32,
    /// The OS name (`eth0`, `wlan0`, `ztabcdef12`).
    pub name: RString,
    /// What kind of interface it is.
    pub kind: InterfaceKind,
    /// Health: `Up` or `Degraded` (Down interfaces are left out of the snapshot).
    pub state: LinkState,
    /// Its addresses with their on-link prefix lengths (`198.18.10.2/24`), both families.
    pub addrs: RVec<IpNetC>,
    /// Exponentially weighted moving average of the probe/connect latency, in microseconds;
    /// `None` until the first sample.
    pub latency_ewma_us: ROption<u32>,
    /// Recent latency samples in microseconds, oldest first.
    pub latency_samples_us: RVec<u32>,
    /// Latency jitter (smoothed absolute deviation), in microseconds.
    pub jitter_us: u32,
    /// The engine's per-attempt connect deadline on this interface, microseconds (adaptive:
    /// it follows the measured latency).
    pub connect_timeout_us: u32,
    /// Connections (and probes) that succeeded through it.
    pub successes: u64,
    /// Connections (and probes) that failed through it on the interface's side.
    pub failures: u64,
    /// Measured upload throughput, bits per second (recent window).
    pub throughput_up_bps: u64,
    /// Measured download throughput, bits per second (recent window).
    pub throughput_down_bps: u64,
    /// Capacity estimate, upload, bits per second: the highest recent one-second rate while
    /// the link carried traffic; 0 while unmeasured.
    pub capacity_up_bps: u64,
    /// Capacity estimate, download, bits per second (as `capacity_up_bps`); 0 while unmeasured.
    pub capacity_down_bps: u64,
    /// Configured weight (default 1; 0 means "only as a last resort").
    pub weight: u32,
    /// Whether the user marked it metered (pay per byte).
    pub metered: bool,
    /// ZeroTier facts, for ZeroTier interfaces.
    pub zerotier: ROption<ZeroTierInfo>,
    /// The live counters (connections in flight, bytes), shared with the engine.
    pub live: RArc<LiveCounters>,
    /// Facts added later (see the [module docs](self)).
    pub ext: ExtFields,
}

impl InterfaceSnapshot {
    /// A healthy physical interface with no statistics yet, weight 1 and its own zeroed live
    /// counters (for tests and builders).
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
            connect_timeout_us: 5_000_000,
            successes: 0,
            failures: 0,
            throughput_up_bps: 0,
            throughput_down_bps: 0,
            capacity_up_bps: 0,
            capacity_down_bps: 0,
            weight: 1,
            metered: false,
            zerotier: RNone,
            live: RArc::new(LiveCounters::default()),
            ext: ExtFields::new(),
        }
    }

    /// Whether it may be picked at all (`state != Down`).
    #[inline]
    pub fn is_usable(&self) -> bool {
        self.state != LinkState::Down
    }

    /// Connections in flight through it now (live).
    #[inline]
    pub fn active_conns(&self) -> u32 {
        self.live.active()
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

    /// Whether it has an address of `family` (a connection to an IPv6 destination needs an
    /// IPv6 source).
    #[inline]
    pub fn has_family(&self, family: IpFamily) -> bool {
        self.addrs.iter().any(|n| n.addr.family == family)
    }
}

/// What [`crate::Strategy::rebuild`] receives: every interface a new connection may use.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases with every snapshot the engine builds (a strategy can tell a stale plan).
    pub generation: u64,
    /// The usable interfaces (Up or Degraded), ordered by id. When every interface is Down the
    /// engine offers them all as Degraded: the last links are never all ejected.
    pub interfaces: RVec<InterfaceSnapshot>,
    /// Facts added later (see the [module docs](self)).
    pub ext: ExtFields,
}

impl Snapshot {
    /// A snapshot of `interfaces` (generation 0; for tests and builders).
    pub fn of(interfaces: impl Into<Vec<InterfaceSnapshot>>) -> Self {
        Self {
            generation: 0,
            interfaces: RVec::from(interfaces.into()),
            ext: ExtFields::new(),
        }
    }

    /// The interface with `id`, if present.
    pub fn get(&self, id: u32) -> Option<&InterfaceSnapshot> {
        self.interfaces.iter().find(|i| i.id == id)
    }

    /// The key of [`Snapshot::ext`] that says the engine can open multipath connections
    /// (value: the mechanism, `"mptcp"`). Set since 1.1.
    pub const EXT_MULTIPATH: &'static str = "multipath";

    /// Whether a [`Paths::Multi`] answer would make a connection multipath (the engine runs
    /// with multipath on); otherwise every connection is single-path whatever the answer.
    pub fn multipath_available(&self) -> bool {
        self.ext.get(Self::EXT_MULTIPATH).is_some()
    }
}

// === Connections ===

/// What the engine knows about a new outgoing connection when it asks for a route.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ConnMeta {
    /// The engine's id of this connection, unique for the engine run; [`ConnOutcome`]s about
    /// it carry the same id.
    pub id: u64,
    /// The destination host name, when the client sent one.
    pub host: ROption<RString>,
    /// The destination address, when the client sent one (or it was already resolved).
    pub addr: ROption<IpAddrC>,
    /// The destination port.
    pub port: u16,
    /// TCP or UDP.
    pub transport: Transport,
    /// The protocol the client spoke to netmix.
    pub protocol: ClientProtocol,
    /// The client's address.
    pub client: IpAddrC,
    /// The client's port.
    pub client_port: u16,
    /// Interface ids already tried for this connection, in the order tried: empty on the
    /// first pick; when a connect fails on the interface's side the engine asks again with
    /// the failed interfaces here.
    pub tried: RVec<u32>,
    /// Facts added later (see the [module docs](self)).
    pub ext: ExtFields,
}

impl ConnMeta {
    /// A TCP connection to `host:port` from `127.0.0.1:0` over SOCKS5 with nothing tried
    /// (tests and builders).
    pub fn for_host(host: &str, port: u16) -> Self {
        Self {
            host: ROption::RSome(host.into()),
            ..Self::for_addr_opt(RNone, port)
        }
    }

    /// A TCP connection to `addr:port` from `127.0.0.1:0` over SOCKS5 with nothing tried
    /// (tests and builders).
    pub fn for_addr(addr: impl Into<IpAddrC>, port: u16) -> Self {
        Self::for_addr_opt(ROption::RSome(addr.into()), port)
    }

    fn for_addr_opt(addr: ROption<IpAddrC>, port: u16) -> Self {
        Self {
            id: 0,
            host: RNone,
            addr,
            port,
            transport: Transport::Tcp,
            protocol: ClientProtocol::Socks5,
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
    #[inline]
    pub fn was_tried(&self, id: u32) -> bool {
        self.tried.contains(&id)
    }

    /// Whether `iface` can carry this connection: not tried yet and, when the destination
    /// address is known, with a source address of its family.
    #[inline]
    pub fn fits(&self, iface: &InterfaceSnapshot) -> bool {
        !self.was_tried(iface.id)
            && match &self.addr {
                ROption::RSome(a) => iface.has_family(a.family),
                RNone => true,
            }
    }
}

/// Which moment of a connection's life a [`ConnOutcome`] reports.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeStage {
    /// The connect succeeded; `bytes_*` and `duration_us` are still zero. A `Closed` follows.
    Connected,
    /// The connect through this interface failed (the engine may ask again, with it in
    /// `tried`).
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

    /// The order as the engine should try it: ids that are in `snapshot`, fit `conn` (see
    /// [`ConnMeta::fits`]), each once, in the strategy's order. (A host-side check: strategies
    /// are code from elsewhere.)
    pub fn valid_order(&self, snapshot: &[InterfaceSnapshot], conn: &ConnMeta) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.order.len());
        for &id in self.order.iter() {
            if !out.contains(&id) && candidates(snapshot, conn).any(|i| i.id == id) {
                out.push(id);
            }
        }
        out
    }
}

/// A strategy's whole answer for one connection (new in 1.1): the [`Choice`] plus how the
/// connection uses the links. What [`crate::Strategy::answer`] returns; its default, and what
/// the engine answers for a plugin built against 1.0, is the plugin's `pick` with
/// [`Paths::Single`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The order and reason, as [`crate::Strategy::pick`] gives them.
    pub choice: Choice,
    /// Single-path or multipath (only TCP connections can be multipath).
    pub paths: Paths,
    /// Facts added later (see the [module docs](self)).
    pub ext: ExtFields,
}

impl Answer {
    /// `choice`, single-path.
    pub fn single(choice: Choice) -> Self {
        Self::new(choice, Paths::Single)
    }

    /// `choice` with `paths`.
    pub fn new(choice: Choice, paths: Paths) -> Self {
        Self {
            choice,
            paths,
            ext: ExtFields::new(),
        }
    }
}

// === Helpers for strategy authors ===

/// The interfaces of a snapshot that can carry `conn`: usable, not tried, of the destination's
/// address family (see [`ConnMeta::fits`]), in snapshot order.
pub fn candidates<'a>(
    interfaces: &'a [InterfaceSnapshot],
    conn: &'a ConnMeta,
) -> impl Iterator<Item = &'a InterfaceSnapshot> + 'a {
    interfaces
        .iter()
        .filter(move |i| i.is_usable() && conn.fits(i))
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
    fn open_values_name_what_they_know() {
        assert_eq!(InterfaceKind::ZeroTier.to_string(), "zerotier");
        assert_eq!(InterfaceKind(77).to_string(), "other(77)");
        assert_eq!(InterfaceKind(77).known_name(), None);
        assert_eq!(ClientProtocol::HttpConnect.to_string(), "http-connect");
        assert_eq!(format!("{:?}", Transport::Udp), "udp");
        assert!(LogLevel::Error < LogLevel::Trace);
    }

    #[test]
    fn live_counters_are_shared() {
        let a = InterfaceSnapshot::new(1, "wan0");
        let b = a.clone();
        a.live.active.fetch_add(2, Ordering::Relaxed);
        assert_eq!(b.active_conns(), 2, "a clone shares the live counters");
    }

    #[test]
    fn helpers() {
        let mut ifs: Vec<_> = (1..=4).map(|i| InterfaceSnapshot::new(i, "x")).collect();
        for i in &mut ifs {
            i.addrs
                .push(IpNetC::new(Ipv4Addr::new(198, 18, 0, i.id as u8), 24));
        }
        ifs[1].state = LinkState::Down;
        ifs[0].live.active.store(5, Ordering::Relaxed);
        let mut conn = ConnMeta::for_host("example.com", 443);
        conn.tried.push(3);
        assert_eq!(conn.host_or_addr(), "example.com");
        assert_eq!(order_by_key(&ifs, &conn, |i| i.active_conns()), vec![4, 1]);
        let by_addr = ConnMeta::for_addr(Ipv4Addr::new(192, 0, 2, 1), 80);
        assert_eq!(by_addr.host_or_addr(), "192.0.2.1");
        let v6 = ConnMeta::for_addr("2001:db8::1".parse::<Ipv6Addr>().unwrap(), 80);
        assert_eq!(candidates(&ifs, &v6).count(), 0, "no IPv6 source anywhere");
        assert_eq!(Choice::new(vec![2, 1], "r").first(), Some(2));
        let messy = Choice::new(vec![9, 4, 2, 4, 3, 1], "r");
        assert_eq!(messy.valid_order(&ifs, &conn), vec![4, 1]);
    }
}
