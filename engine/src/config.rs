//! The configuration file: serde types, defaults and [`Config::validate`].
//!
//! Every struct rejects unknown keys, every duration carries its unit in the key (`_ms` or
//! `_secs`), and every error names the file, the key and the reason on one line, for example
//! `configs/bad.toml: socks.listen: invalid socket address syntax (line 3)`.
//!
//! The `///` comment on each field is the user documentation; `configs/full.toml` shows every key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use ipnet::IpNet;
use serde::Deserialize;

/// Where the SOCKS5 listener binds when the config does not say.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1080);
/// Where the dashboard listens when the config does not say.
pub const DEFAULT_DASHBOARD_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);
/// How long a client may take to finish the SOCKS5 handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// How long one outbound connect attempt on one interface may take.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long a relayed connection may stay silent in both directions before it is closed.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
/// How many client connections are served at once; further clients wait in the accept backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How often interface discovery rescans the machine's interfaces.
pub const DEFAULT_RESCAN_INTERVAL_MS: u64 = 2_000;
/// How long shutdown waits for open connections to finish.
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD_SECS: u64 = 5;
/// The strategy used when the config names none.
pub const DEFAULT_STRATEGY: &str = "capacity";
/// Time between health probe rounds (when probe targets are configured).
pub const DEFAULT_PROBE_INTERVAL_MS: u64 = 5_000;
/// One health probe's deadline.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 2_000;
/// The floor of the adaptive per-attempt connect deadline.
pub const DEFAULT_MIN_CONNECT_TIMEOUT_MS: u64 = 250;
/// How long a DNS query through one interface goes unanswered before the next is raced.
pub const DEFAULT_DNS_STAGGER_MS: u64 = 150;
/// How long one interface's DNS query may take.
pub const DEFAULT_DNS_TIMEOUT_MS: u64 = 2_000;
/// Names kept in the DNS answer cache.
pub const DEFAULT_DNS_CACHE_SIZE: usize = 1_024;
/// How many interfaces one client connection may try before the client gets an error.
pub const DEFAULT_MAX_ATTEMPTS: usize = 3;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The SOCKS5 front: listen address, authentication, limits and destination rules.
    #[serde(default)]
    pub socks: SocksConfig,
    /// Which of the machine's interfaces carry traffic.
    #[serde(default)]
    pub interfaces: InterfacesConfig,
    /// Per-interface settings, matched by name or glob (`[[interface]]` tables; first match wins).
    #[serde(default, rename = "interface")]
    pub interface: Vec<InterfaceConfig>,
    /// Timeouts for the handshake, each outbound connect attempt and idle relays.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Interface discovery (hot-plug).
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// The routing strategy that picks an interface per connection, by name: `capacity` (the
    /// default plugin), `round-robin` (also built in: the fallback), or any loaded plugin.
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// Per-site stickiness: a connection to a host name (or address) that went out through an
    /// interface less than this many seconds ago goes out through the same one, whatever the
    /// strategy, so logins that check the client's address keep working. 0 = off.
    #[serde(default)]
    pub sticky_ttl_secs: u64,
    /// Options for each strategy, by strategy name: `[strategies.latency] tolerance_pct = 10`.
    /// The table is handed to the plugin as TOML text.
    #[serde(default)]
    pub strategies: BTreeMap<String, toml::Table>,
    /// Where strategy plugins are loaded from.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Health probing and the health state machine.
    #[serde(default)]
    pub health: HealthConfig,
    /// Reactive failover.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// The web dashboard.
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// Destinations routed by netmix itself rather than the strategy.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// How host names are resolved: through the interfaces, or by the system.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Write one JSON line per connection here (for training learned strategies). Default: off.
    #[serde(default)]
    pub connection_log: Option<PathBuf>,
    /// The ZeroTier agent: reads networks, routes and peers from the local ZeroTier One service.
    #[serde(default)]
    pub zerotier: ZeroTierConfig,
    /// How long shutdown (SIGINT/SIGTERM) waits for open connections before it closes them.
    #[serde(default = "default_grace")]
    pub shutdown_grace_period_secs: u64,
}

/// `[socks]`: the SOCKS5 listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocksConfig {
    /// Address and port to listen on. A non-loopback address needs `[socks.auth]`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The most client connections served at once (further clients wait to be accepted).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// RFC 1929 username/password authentication. Absent: no authentication (loopback only).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Destination networks that clients may not reach (reply 02, "not allowed by ruleset").
    #[serde(default = "default_deny")]
    pub deny: Vec<IpNet>,
    /// With a non-loopback `listen` (sharing netmix on a LAN), whether clients may reach this
    /// machine's loopback and link-local addresses (169.254.0.0/16, fe80::/10). Default false:
    /// a LAN client must not reach services that listen on 127.0.0.1 only.
    #[serde(default)]
    pub allow_local: bool,
}

/// `[routing]`: destinations the strategy does not choose for. Loopback always goes over
/// loopback and a destination in an interface's on-link subnet through that interface.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Networks reached unbound, following the OS's routing table (a VPN's ranges, say).
    #[serde(default)]
    pub direct: Vec<IpNet>,
}

/// How `[dns]` resolves host names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsMode {
    /// netmix asks the DNS servers itself, every query sent through an interface (the one the
    /// strategy picks first, raced by the next after `stagger_ms`).
    #[default]
    Netmix,
    /// The operating system's resolver, out of the default route (netmix before 0.3).
    System,
}

/// `[dns]`: name resolution for destinations clients name by host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// `netmix` (the default) or `system`.
    #[serde(default)]
    pub mode: DnsMode,
    /// DNS servers for every interface, instead of the system's (resolv.conf, or the per-link
    /// lists of systemd-resolved/networkd). An `[[interface]] dns` list beats this one.
    #[serde(default)]
    pub servers: Vec<IpAddr>,
    /// How long a query through one interface may go unanswered before the next interface is
    /// raced against it.
    #[serde(default = "default_dns_stagger_ms")]
    pub stagger_ms: u64,
    /// How long one interface's query may take before it counts as failed.
    #[serde(default = "default_dns_timeout_ms")]
    pub timeout_ms: u64,
    /// Names kept in the answer cache (each for its TTL).
    #[serde(default = "default_dns_cache_size")]
    pub cache_size: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            mode: DnsMode::default(),
            servers: Vec::new(),
            stagger_ms: default_dns_stagger_ms(),
            timeout_ms: default_dns_timeout_ms(),
            cache_size: default_dns_cache_size(),
        }
    }
}

const fn default_dns_stagger_ms() -> u64 {
    DEFAULT_DNS_STAGGER_MS
}
const fn default_dns_timeout_ms() -> u64 {
    DEFAULT_DNS_TIMEOUT_MS
}
const fn default_dns_cache_size() -> usize {
    DEFAULT_DNS_CACHE_SIZE
}

/// `[socks.auth]`: the accepted users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The accepted username/password pairs.
    pub users: Vec<UserConfig>,
}

/// One `[[socks.auth.users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// 1 to 255 bytes.
    pub username: String,
    /// 1 to 255 bytes; never logged.
    pub password: Masked,
}

/// A secret whose `Debug` and `Display` print `MASKED`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Masked(String);

impl Masked {
    /// The secret itself, for comparison only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Display for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// `[interfaces]`: which interfaces discovery hands to the router. Loopback is never used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfacesConfig {
    /// Names or globs of the interfaces to use (default: every interface, `["*"]`).
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Names or globs never to use, even when included (for example `["docker*", "virbr*"]`).
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// One `[[interface]]` table: settings for the interfaces whose name matches `name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Interface name or glob (`wlan*`).
    pub name: String,
    /// Relative share of connections for weight-aware strategies (1 to 1000, default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The link costs money per byte (a phone tether); strategies may avoid it.
    #[serde(default)]
    pub metered: bool,
    /// DNS servers asked through this interface, instead of `[dns] servers` or the system's.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
}

/// `[timeouts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// A client must finish the SOCKS5 handshake within this time, or it is closed.
    #[serde(default = "default_handshake_ms")]
    pub handshake_ms: u64,
    /// One outbound connect attempt on one interface; on expiry the next interface is tried.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// A relay silent in both directions for this long is closed (0 = never).
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
}

/// `[health]`: active probes and the Up / Degraded / Down state machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `host:port` targets that every interface probes by TCP connect, through itself.
    /// Default: none, so netmix sends nothing on its own; passive health (the outcome of every
    /// relayed connection) still works.
    #[serde(default)]
    pub probe_targets: Vec<String>,
    /// Time between probe rounds.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// One probe's deadline.
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// Consecutive failures that take an interface Down (ejected).
    #[serde(default = "default_failures_to_down")]
    pub failures_to_down: u32,
    /// Consecutive successes that take a Degraded interface back Up.
    #[serde(default = "default_successes_to_up")]
    pub successes_to_up: u32,
    /// First ejection; each further one doubles, up to `eject_max_ms`.
    #[serde(default = "default_eject_base_ms")]
    pub eject_base_ms: u64,
    /// Longest ejection.
    #[serde(default = "default_eject_max_ms")]
    pub eject_max_ms: u64,
    /// How much latency history each interface keeps (the dashboard's chart).
    #[serde(default = "default_history_secs")]
    pub history_secs: u64,
}

/// `[failover]`: what happens when a connect through the chosen interface fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Retry on the strategy's next choice before answering the client.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Interfaces one connection may try (first pick plus fallbacks).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: usize,
    /// Each attempt's deadline adapts to the interface's measured latency
    /// (4 × (EWMA + 2 × jitter) + 100 ms, between `min_connect_ms` and `timeouts.connect_ms`),
    /// so a blackholed link costs far less than the full connect timeout.
    #[serde(default = "default_true")]
    pub adaptive_timeout: bool,
    /// Floor of the adaptive deadline.
    #[serde(default = "default_min_connect_ms")]
    pub min_connect_ms: u64,
    /// Start the next interface's attempt if the current one has not connected after this
    /// long, and keep whichever connects first (happy-eyeballs style). 0 = off.
    #[serde(default)]
    pub race_after_ms: u64,
}

/// `[dashboard]`: the web dashboard and its API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve the dashboard.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where it listens. Keep it on loopback: the page shows where your connections go.
    #[serde(default = "default_dashboard_listen")]
    pub listen: SocketAddr,
    /// File holding the token that changing state (switching strategy) needs; created with
    /// mode 0600 on first run. Default: `$XDG_STATE_HOME/netmix/dashboard-token`, or
    /// `~/.local/state/netmix/dashboard-token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Extra `Host` header values to accept (`name:port`), besides the listen address and
    /// `localhost` (requests naming any other host are refused: DNS rebinding defence).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl DashboardConfig {
    /// The token file: configured, or `netmix/dashboard-token` under the user's state
    /// directory (`$XDG_STATE_HOME`, else `$HOME/.local/state`, else the home directory the
    /// user database names for the user netmix runs as; on Windows `%LOCALAPPDATA%`). Never a shared temporary folder:
    /// another user could plant the file there first.
    ///
    /// # Errors
    /// When no state directory can be found (then `dashboard.token_file` must be set).
    pub fn token_path(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.token_file {
            return Ok(p.clone());
        }
        #[cfg(windows)]
        let state = std::env::var_os("LOCALAPPDATA")
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty());
        #[cfg(not(windows))]
        let state = state_dir(
            std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
            account_home,
        );
        let state = state.ok_or_else(|| {
            "no state folder for the dashboard token (neither XDG_STATE_HOME nor HOME is set \
             and the user database names no home); set dashboard.token_file"
                .to_owned()
        })?;
        Ok(state.join("netmix").join("dashboard-token"))
    }
}

/// The user's state folder: `xdg`, else `home/.local/state`, else `account_home()`'s
/// `.local/state`. Empty values count as unset (XDG's rule).
#[cfg_attr(windows, allow(dead_code))]
fn state_dir(
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
    account_home: impl FnOnce() -> Option<PathBuf>,
) -> Option<PathBuf> {
    let set = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    set(xdg).or_else(|| set(set(home).or_else(account_home)).map(|h| h.join(".local/state")))
}

/// The running user's home folder: `$HOME`, else what the user database says.
fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(account_home)
}

/// Rewrites serde's and toml's words for types into a user's: `expected usize` → `expected a
/// whole number`, `invalid socket address syntax` → what an address with a port looks like.
fn in_words(reason: &str) -> String {
    let mut out = reason.to_owned();
    for (rust, words) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        (
            "invalid socket address syntax",
            "not an address with a port: write it like 127.0.0.1:1080 or [::1]:1080 (ports are 1–65535)",
        ),
        (
            "invalid IP address syntax",
            "not an IP address: write it like 192.0.2.1 or 2001:db8::1",
        ),
        (
            "invalid IP network syntax",
            "not a network: write it like 10.0.0.0/8",
        ),
    ] {
        out = out.replace(rust, words);
    }
    out
}

/// The home directory the user database gives the user netmix runs as.
#[cfg(unix)]
fn account_home() -> Option<PathBuf> {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
}

/// Windows: the user's profile folder (`%USERPROFILE%`), for `~/` in paths.
#[cfg(not(unix))]
fn account_home() -> Option<PathBuf> {
    std::env::var_os("USERPROFILE")
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_DASHBOARD_LISTEN,
            token_file: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[zerotier]`: the agent that asks the local ZeroTier One service (its REST API on
/// 127.0.0.1) which networks are joined, their routes and status, and how its peers are
/// reached. Without the service, netmix works as if ZeroTier did not exist.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroTierConfig {
    /// Ask the service at all. It only ever talks to 127.0.0.1, so it is on by default.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The service's home folder (holds `zerotier-one.port` and `authtoken.secret`). Default:
    /// `$ZEROTIER_HOME`, else `/var/lib/zerotier-one` (Linux),
    /// `/Library/Application Support/ZeroTier/One` (macOS), `%ProgramData%\ZeroTier\One`
    /// (Windows).
    #[serde(default)]
    pub home: Option<PathBuf>,
    /// The auth token itself, when the token files cannot be read (never logged). Default: read
    /// `<home>/authtoken.secret`, then the per-user copies such as `~/.zeroTierOneAuthToken`.
    #[serde(default)]
    pub token: Option<Masked>,
    /// How often networks, routes and peers are polled.
    #[serde(default = "default_zerotier_poll_ms")]
    pub poll_interval_ms: u64,
    /// Let a network's default route (an exit node) carry traffic that is not for a ZeroTier
    /// network. The network must also allow it (`allowDefault`). Default: off.
    #[serde(default)]
    pub allow_default_route: bool,
}

/// The default `zerotier.poll_interval_ms`.
pub const DEFAULT_ZEROTIER_POLL_MS: u64 = 5_000;

const fn default_zerotier_poll_ms() -> u64 {
    DEFAULT_ZEROTIER_POLL_MS
}

impl Default for ZeroTierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            home: None,
            token: None,
            poll_interval_ms: DEFAULT_ZEROTIER_POLL_MS,
            allow_default_route: false,
        }
    }
}

/// `[discovery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// How often the interface list is rescanned, so that new interfaces join and vanished
    /// ones stop receiving connections.
    #[serde(default = "default_rescan_ms")]
    pub rescan_interval_ms: u64,
}

/// `[plugins]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folders holding your own strategy plugins (`*.so`, `*.dll`, `*.dylib`), searched in
    /// order before the shipped ones.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// One more folder, searched first (the older spelling of `dirs = [...]`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Also load the shipped plugins: the `plugins` folder next to the `netmix` executable
    /// (else the executable's own folder, files named like strategy plugins only).
    #[serde(default = "default_true")]
    pub include_builtin: bool,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dirs: Vec::new(),
            dir: None,
            include_builtin: true,
        }
    }
}

impl PluginsConfig {
    /// The user's folders, in search order.
    pub fn user_dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.dir.iter().chain(&self.dirs)
    }
}

const fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
const fn default_max_attempts() -> usize {
    DEFAULT_MAX_ATTEMPTS
}
const fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
}
const fn default_weight() -> u32 {
    1
}
const fn default_handshake_ms() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT_MS
}
const fn default_connect_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
const fn default_idle_secs() -> u64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}
const fn default_rescan_ms() -> u64 {
    DEFAULT_RESCAN_INTERVAL_MS
}
const fn default_grace() -> u64 {
    DEFAULT_SHUTDOWN_GRACE_PERIOD_SECS
}
const fn default_dashboard_listen() -> SocketAddr {
    DEFAULT_DASHBOARD_LISTEN
}
const fn default_true() -> bool {
    true
}
const fn default_probe_interval_ms() -> u64 {
    DEFAULT_PROBE_INTERVAL_MS
}
const fn default_probe_timeout_ms() -> u64 {
    DEFAULT_PROBE_TIMEOUT_MS
}
const fn default_failures_to_down() -> u32 {
    3
}
const fn default_successes_to_up() -> u32 {
    2
}
const fn default_eject_base_ms() -> u64 {
    2_000
}
const fn default_eject_max_ms() -> u64 {
    60_000
}
const fn default_history_secs() -> u64 {
    300
}
const fn default_min_connect_ms() -> u64 {
    DEFAULT_MIN_CONNECT_TIMEOUT_MS
}
fn default_strategy() -> String {
    DEFAULT_STRATEGY.to_owned()
}
fn default_include() -> Vec<String> {
    vec!["*".to_owned()]
}
fn default_deny() -> Vec<IpNet> {
    Vec::new()
}

impl Default for SocksConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth: None,
            deny: default_deny(),
            allow_local: false,
        }
    }
}

impl Default for InterfacesConfig {
    fn default() -> Self {
        Self {
            include: default_include(),
            exclude: Vec::new(),
        }
    }
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            handshake_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            connect_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            idle_secs: DEFAULT_IDLE_TIMEOUT_SECS,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_targets: Vec::new(),
            probe_interval_ms: DEFAULT_PROBE_INTERVAL_MS,
            probe_timeout_ms: DEFAULT_PROBE_TIMEOUT_MS,
            failures_to_down: default_failures_to_down(),
            successes_to_up: default_successes_to_up(),
            eject_base_ms: default_eject_base_ms(),
            eject_max_ms: default_eject_max_ms(),
            history_secs: default_history_secs(),
        }
    }
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            adaptive_timeout: true,
            min_connect_ms: DEFAULT_MIN_CONNECT_TIMEOUT_MS,
            race_after_ms: 0,
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            rescan_interval_ms: DEFAULT_RESCAN_INTERVAL_MS,
        }
    }
}

impl Default for Config {
    /// The built-in configuration `netmix run` uses without `--config`: listen on
    /// 127.0.0.1:1080, every up non-loopback interface, round-robin, no probes (nothing is sent
    /// anywhere unless a client asks for it).
    fn default() -> Self {
        Self {
            socks: SocksConfig::default(),
            interfaces: InterfacesConfig::default(),
            interface: Vec::new(),
            timeouts: TimeoutsConfig::default(),
            discovery: DiscoveryConfig::default(),
            strategy: default_strategy(),
            strategies: BTreeMap::new(),
            sticky_ttl_secs: 0,
            plugins: PluginsConfig::default(),
            health: HealthConfig::default(),
            failover: FailoverConfig::default(),
            dashboard: DashboardConfig::default(),
            routing: RoutingConfig::default(),
            dns: DnsConfig::default(),
            connection_log: None,
            zerotier: ZeroTierConfig::default(),
            shutdown_grace_period_secs: DEFAULT_SHUTDOWN_GRACE_PERIOD_SECS,
        }
    }
}

/// A configuration error: which file, which key, and why, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{key}: {reason}{}", file_prefix(.file), line_suffix(*.line))]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub file: Option<PathBuf>,
    /// The dotted key path (`socks.listen`, `interface[1].weight`), or `(file)` for I/O errors.
    pub key: String,
    /// What is wrong, in words.
    pub reason: String,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: None,
            key: key.into(),
            reason: reason.into(),
            line: None,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_owned()),
            key: "(file)".into(),
            reason: format!("cannot read: {e}"),
            line: None,
        })?;
        Self::from_toml(&text).map_err(|mut e| {
            e.file = Some(path.to_owned());
            e
        })
    }

    /// Parses and validates config text.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key and the reason (no file).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
            file: None,
            key: "TOML syntax".into(),
            reason: e.message().trim().to_owned(),
            line: e.span().map(|s| line_of(s.start)),
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut key = e.path().to_string();
            let inner = e.into_inner();
            let reason = in_words(inner.message().trim());
            // Name the unknown key itself, whatever path depth serde reported it at.
            if let Some(rest) = reason.strip_prefix("unknown field `")
                && let Some(field) = rest.split('`').next()
                && key.rsplit('.').next() != Some(field)
            {
                key = if key == "." || key.is_empty() {
                    field.to_owned()
                } else {
                    format!("{key}.{field}")
                };
            }
            if key == "." || key.is_empty() {
                key = "(top level)".into();
            }
            ConfigError {
                file: None,
                key,
                reason,
                line: inner.span().map(|s| line_of(s.start)),
            }
        })?;
        let mut config = config;
        config.expand_home(home_dir)?;
        config.validate()?;
        Ok(config)
    }

    /// Expands a leading `~/` in every path the config names (as a shell would), with the
    /// home folder `home` gives.
    ///
    /// # Errors
    /// A path that starts with `~` when there is no home folder, or in the `~user` form.
    fn expand_home(&mut self, home: impl Fn() -> Option<PathBuf>) -> Result<(), ConfigError> {
        let expand = |key: &str, path: &mut PathBuf| -> Result<(), ConfigError> {
            let Some(text) = path.to_str() else {
                return Ok(());
            };
            let rest = match text {
                "~" => "",
                t if t.starts_with("~/") => &t[2..],
                t if t.starts_with('~') => {
                    return Err(ConfigError::new(
                        key,
                        format!("{t}: only ~/ (your own home folder) is expanded, not ~user"),
                    ));
                }
                _ => return Ok(()),
            };
            let home = home().ok_or_else(|| {
                ConfigError::new(
                    key,
                    format!("{text}: ~ cannot be expanded: HOME is not set and the user database names no home folder"),
                )
            })?;
            *path = home.join(rest);
            Ok(())
        };
        if let Some(p) = &mut self.plugins.dir {
            expand("plugins.dir", p)?;
        }
        for (i, p) in self.plugins.dirs.iter_mut().enumerate() {
            expand(&format!("plugins.dirs[{i}]"), p)?;
        }
        if let Some(p) = &mut self.dashboard.token_file {
            expand("dashboard.token_file", p)?;
        }
        if let Some(p) = &mut self.connection_log {
            expand("connection_log", p)?;
        }
        if let Some(p) = &mut self.zerotier.home {
            expand("zerotier.home", p)?;
        }
        Ok(())
    }

    /// Checks what serde cannot: ranges, globs, and the safety rules.
    ///
    /// # Errors
    /// The first problem found, as a [`ConfigError`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.socks;
        if !s.listen.ip().is_loopback() && s.auth.is_none() {
            return Err(ConfigError::new(
                "socks.listen",
                format!(
                    "{} is not a loopback address; listening on it without authentication would \
                     make an open proxy (add [socks.auth] users, or listen on 127.0.0.1)",
                    s.listen.ip()
                ),
            ));
        }
        if s.max_connections == 0 {
            return Err(ConfigError::new(
                "socks.max_connections",
                "must be at least 1",
            ));
        }
        if let Some(auth) = &s.auth {
            if auth.users.is_empty() {
                return Err(ConfigError::new(
                    "socks.auth.users",
                    "needs at least one user",
                ));
            }
            for (i, u) in auth.users.iter().enumerate() {
                if !(1..=255).contains(&u.username.len()) {
                    return Err(ConfigError::new(
                        format!("socks.auth.users[{i}].username"),
                        "must be 1 to 255 bytes (RFC 1929)",
                    ));
                }
                if !(1..=255).contains(&u.password.expose().len()) {
                    return Err(ConfigError::new(
                        format!("socks.auth.users[{i}].password"),
                        "must be 1 to 255 bytes (RFC 1929)",
                    ));
                }
            }
        }
        for (key, list) in [
            ("interfaces.include", &self.interfaces.include),
            ("interfaces.exclude", &self.interfaces.exclude),
        ] {
            for (i, pattern) in list.iter().enumerate() {
                compile_glob(pattern)
                    .map_err(|reason| ConfigError::new(format!("{key}[{i}]"), reason))?;
            }
        }
        for (i, iface) in self.interface.iter().enumerate() {
            compile_glob(&iface.name)
                .map_err(|reason| ConfigError::new(format!("interface[{i}].name"), reason))?;
            if !(1..=1000).contains(&iface.weight) {
                return Err(ConfigError::new(
                    format!("interface[{i}].weight"),
                    "must be between 1 and 1000",
                ));
            }
            if let Some((j, server)) = iface
                .dns
                .iter()
                .enumerate()
                .find(|(_, s)| s.is_unspecified() || s.is_multicast())
            {
                return Err(ConfigError::new(
                    format!("interface[{i}].dns[{j}]"),
                    format!("{server} is not a DNS server's address"),
                ));
            }
        }
        let t = &self.timeouts;
        if t.handshake_ms == 0 {
            return Err(ConfigError::new(
                "timeouts.handshake_ms",
                "must be greater than 0",
            ));
        }
        if t.connect_ms == 0 {
            return Err(ConfigError::new(
                "timeouts.connect_ms",
                "must be greater than 0",
            ));
        }
        if !(100..=3_600_000).contains(&self.discovery.rescan_interval_ms) {
            return Err(ConfigError::new(
                "discovery.rescan_interval_ms",
                "must be between 100 and 3600000",
            ));
        }
        let h = &self.health;
        for (i, target) in h.probe_targets.iter().enumerate() {
            if split_host_port(target).is_none() {
                return Err(ConfigError::new(
                    format!("health.probe_targets[{i}]"),
                    format!("\"{target}\" is not host:port (IPv6 as [addr]:port)"),
                ));
            }
        }
        for (key, value, min) in [
            ("health.probe_interval_ms", h.probe_interval_ms, 100),
            ("health.probe_timeout_ms", h.probe_timeout_ms, 10),
            ("health.eject_base_ms", h.eject_base_ms, 10),
            ("health.history_secs", h.history_secs, 1),
            ("failover.min_connect_ms", self.failover.min_connect_ms, 10),
        ] {
            if value < min {
                return Err(ConfigError::new(key, format!("must be at least {min}")));
            }
        }
        if h.eject_max_ms < h.eject_base_ms {
            return Err(ConfigError::new(
                "health.eject_max_ms",
                "must be at least health.eject_base_ms",
            ));
        }
        if h.failures_to_down == 0 || h.successes_to_up == 0 {
            let key = if h.failures_to_down == 0 {
                "health.failures_to_down"
            } else {
                "health.successes_to_up"
            };
            return Err(ConfigError::new(key, "must be at least 1"));
        }
        if !(100..=3_600_000).contains(&self.zerotier.poll_interval_ms) {
            return Err(ConfigError::new(
                "zerotier.poll_interval_ms",
                "must be between 100 and 3600000",
            ));
        }
        let d = &self.dns;
        for (key, value, range) in [
            ("dns.stagger_ms", d.stagger_ms, 1..=10_000),
            ("dns.timeout_ms", d.timeout_ms, 10..=60_000),
            ("dns.cache_size", d.cache_size as u64, 0..=1_000_000),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError::new(
                    key,
                    format!("must be between {} and {}", range.start(), range.end()),
                ));
            }
        }
        for (i, server) in d.servers.iter().enumerate() {
            if server.is_unspecified() || server.is_multicast() {
                return Err(ConfigError::new(
                    format!("dns.servers[{i}]"),
                    format!("{server} is not a DNS server's address"),
                ));
            }
        }
        if !(1..=16).contains(&self.failover.max_attempts) {
            return Err(ConfigError::new(
                "failover.max_attempts",
                "must be between 1 and 16",
            ));
        }
        if self.strategy.trim().is_empty() {
            return Err(ConfigError::new(
                "strategy",
                "must name a strategy (for example \"round-robin\")",
            ));
        }
        Ok(())
    }

    /// The handshake timeout as a [`Duration`].
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.handshake_ms)
    }

    /// The per-attempt connect timeout as a [`Duration`].
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.connect_ms)
    }

    /// The idle timeout, `None` when disabled.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.timeouts.idle_secs > 0).then(|| Duration::from_secs(self.timeouts.idle_secs))
    }

    /// The strategy options table for `name`, as TOML text (empty when none).
    pub fn strategy_options(&self, name: &str) -> String {
        self.strategies
            .get(name)
            .map(|t| toml::to_string(t).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals); `None` when malformed.
pub fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0 && !host.contains(' ')).then_some((host, port))
}

/// Compiles a name glob; the error is a reason fit for a [`ConfigError`].
fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    if pattern.is_empty() {
        return Err("must not be empty".into());
    }
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob: {}", e.kind()))
}

/// Interface name filters compiled from [`InterfacesConfig`] and the `[[interface]]` tables.
#[derive(Debug, Clone)]
pub struct InterfaceFilter {
    include: Vec<(String, GlobMatcher)>,
    exclude: Vec<(String, GlobMatcher)>,
    settings: Vec<(GlobMatcher, InterfaceConfig)>,
}

/// Why discovery does not use an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// Loopback interfaces are never used.
    Loopback,
    /// The name matches no `interfaces.include` pattern.
    NotIncluded,
    /// The name matches this `interfaces.exclude` pattern.
    Excluded(String),
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loopback => f.write_str("loopback"),
            Self::NotIncluded => f.write_str("not in interfaces.include"),
            Self::Excluded(p) => write!(f, "excluded by \"{p}\""),
        }
    }
}

impl InterfaceFilter {
    /// Compiles the filters of a validated config.
    pub fn new(config: &Config) -> Self {
        let compile = |list: &[String]| {
            list.iter()
                .filter_map(|p| compile_glob(p).ok().map(|m| (p.clone(), m)))
                .collect::<Vec<_>>()
        };
        Self {
            include: compile(&config.interfaces.include),
            exclude: compile(&config.interfaces.exclude),
            settings: config
                .interface
                .iter()
                .filter_map(|c| compile_glob(&c.name).ok().map(|m| (m, c.clone())))
                .collect(),
        }
    }

    /// `Ok(())` when the interface may be used, otherwise why not.
    pub fn check(&self, name: &str, is_loopback: bool) -> Result<(), Exclusion> {
        self.check_names(&[name], is_loopback)
    }

    /// [`check`](Self::check) for an interface known by several names (Windows: the
    /// adapter's friendly name such as `Wi-Fi`, and its internal `{GUID}` name): excluded when
    /// any name matches an exclude pattern, included when any matches an include pattern.
    pub fn check_names(&self, names: &[&str], is_loopback: bool) -> Result<(), Exclusion> {
        if is_loopback {
            return Err(Exclusion::Loopback);
        }
        if let Some((p, _)) = self
            .exclude
            .iter()
            .find(|(_, m)| names.iter().any(|n| m.is_match(n)))
        {
            return Err(Exclusion::Excluded(p.clone()));
        }
        if !self
            .include
            .iter()
            .any(|(_, m)| names.iter().any(|n| m.is_match(n)))
        {
            return Err(Exclusion::NotIncluded);
        }
        Ok(())
    }

    /// The `[[interface]]` settings that apply to `name` (first match), if any.
    pub fn settings(&self, name: &str) -> Option<&InterfaceConfig> {
        self.settings
            .iter()
            .find(|(m, _)| m.is_match(name))
            .map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_falls_back_to_a_shared_temp_folder() {
        let p = |s: &str| Some(PathBuf::from(s));
        let never = || -> Option<PathBuf> { panic!("not asked") };
        assert_eq!(state_dir(p("/x"), p("/h"), never), p("/x"));
        assert_eq!(state_dir(p(""), p("/h"), never), p("/h/.local/state"));
        assert_eq!(
            state_dir(None, None, || p("/acct")),
            p("/acct/.local/state")
        );
        assert_eq!(state_dir(None, p(""), || None), None);
        let mut d = DashboardConfig::default();
        if let Ok(path) = d.token_path() {
            assert!(
                !path.starts_with(std::env::temp_dir()),
                "{}",
                path.display()
            );
        }
        d.token_file = p("/etc/netmix/token");
        assert_eq!(d.token_path().unwrap(), PathBuf::from("/etc/netmix/token"));
    }

    #[test]
    fn empty_text_is_the_default() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.socks.listen, DEFAULT_LISTEN);
        assert_eq!(c.strategy, "capacity");
        assert!(c.socks.auth.is_none());
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = Config::from_toml("[socks]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n").unwrap_err();
        assert_eq!(e.key, "socks.listn", "{e}");
        assert!(e.reason.contains("unknown field"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        let e = Config::from_toml("bogus = 1\n").unwrap_err();
        assert_eq!(e.key, "bogus", "{e}");
    }

    #[test]
    fn bad_value_names_the_key_and_line() {
        let e = Config::from_toml("\n[socks]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.key, "socks.listen");
        assert_eq!(e.line, Some(3));
        let e = Config::from_toml(
            "[[interface]]\nname = \"a\"\n[[interface]]\nname = \"b\"\nweight = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "interface[1].weight", "{e}");
    }

    #[test]
    fn errors_are_one_line_and_name_the_file() {
        let dir = std::env::temp_dir().join(format!("netmix-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[timeouts]\nconnect_ms = 0\n").unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{}: timeouts.connect_ms: ", path.display())),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        let msg = Config::load(&dir.join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing.toml: (file): cannot read"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_proxy_is_refused() {
        let e = Config::from_toml("[socks]\nlisten = \"0.0.0.0:1080\"\n").unwrap_err();
        assert_eq!(e.key, "socks.listen");
        let ok = Config::from_toml(
            "[socks]\nlisten = \"0.0.0.0:1080\"\n[[socks.auth.users]]\nusername = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        assert_eq!(
            format!("{:?}", ok.socks.auth.unwrap().users[0].password),
            "MASKED"
        );
    }

    #[test]
    fn ranges_and_globs_are_checked() {
        for (text, key) in [
            (
                "[[interface]]\nname = \"x\"\nweight = 0\n",
                "interface[0].weight",
            ),
            (
                "[interfaces]\ninclude = [\"wan[\"]\n",
                "interfaces.include[0]",
            ),
            ("[socks]\nmax_connections = 0\n", "socks.max_connections"),
            (
                "[discovery]\nrescan_interval_ms = 1\n",
                "discovery.rescan_interval_ms",
            ),
            ("strategy = \" \"\n", "strategy"),
            (
                "[health]\nprobe_targets = [\"nohost\"]\n",
                "health.probe_targets[0]",
            ),
            (
                "[health]\neject_base_ms = 5000\neject_max_ms = 10\n",
                "health.eject_max_ms",
            ),
            ("[failover]\nmax_attempts = 0\n", "failover.max_attempts"),
            (
                "[[socks.auth.users]]\nusername = \"\"\npassword = \"p\"\n",
                "socks.auth.users[0].username",
            ),
        ] {
            assert_eq!(Config::from_toml(text).unwrap_err().key, key, "{text}");
        }
    }

    #[test]
    fn an_interface_known_by_two_names_matches_by_either() {
        let c = Config::from_toml(
            "[interfaces]\ninclude = [\"Wi-Fi\", \"[{]4D36E972*\"]\nexclude = [\"[{]BAD*\"]\n",
        )
        .unwrap();
        let f = InterfaceFilter::new(&c);
        assert_eq!(f.check_names(&["Wi-Fi", "{1111-2222}"], false), Ok(()));
        assert_eq!(
            f.check_names(&["Ethernet", "{4D36E972-E325}"], false),
            Ok(())
        );
        assert_eq!(
            f.check_names(&["Ethernet 3", "{0000}"], false),
            Err(Exclusion::NotIncluded)
        );
        assert_eq!(
            f.check_names(&["Wi-Fi", "{BAD0-0000}"], false),
            Err(Exclusion::Excluded("[{]BAD*".into()))
        );
    }

    #[test]
    fn filter_include_exclude_and_settings() {
        let c = Config::from_toml(
            "[interfaces]\ninclude = [\"wan*\", \"eth0\"]\nexclude = [\"wan9\"]\n[[interface]]\nname = \"wan1\"\nweight = 3\n",
        )
        .unwrap();
        let f = InterfaceFilter::new(&c);
        assert_eq!(f.check("wan0", false), Ok(()));
        assert_eq!(f.check("eth0", false), Ok(()));
        assert_eq!(f.check("lo", true), Err(Exclusion::Loopback));
        assert_eq!(f.check("wlan0", false), Err(Exclusion::NotIncluded));
        assert_eq!(
            f.check("wan9", false),
            Err(Exclusion::Excluded("wan9".into()))
        );
        assert_eq!(f.settings("wan1").map(|s| s.weight), Some(3));
        assert!(f.settings("wan0").is_none());
    }

    #[test]
    fn every_example_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 3, "expected example configs in {}", dir.display());
    }

    #[test]
    fn default_toml_equals_builtin_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/default.toml");
        let file = Config::load(&path).unwrap();
        let builtin = Config::default();
        assert_eq!(file.socks.listen, builtin.socks.listen);
        assert_eq!(file.strategy, builtin.strategy);
        assert_eq!(file.interfaces.include, builtin.interfaces.include);
    }

    #[test]
    fn strategy_options_become_toml_text() {
        let c =
            Config::from_toml("strategy = \"latency\"\n[strategies.latency]\ntolerance_pct = 7\n")
                .unwrap();
        assert!(c.strategy_options("latency").contains("tolerance_pct = 7"));
        assert_eq!(c.strategy_options("round-robin"), "");
    }
}
