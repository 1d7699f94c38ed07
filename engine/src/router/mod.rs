//! The router: an immutable snapshot of the interfaces (rebuilt whenever the set or a number
//! changes) and the active strategy that orders them for each new connection.
//!
//! `publish` runs on the ConnectionManager's thread and also converts the snapshot to the
//! plugin ABI's types once, so `pick` — on relay tasks — only loads two `ArcSwap`s and calls
//! the strategy: a connection never waits for an actor to choose.
//!
//! Strategies are plugins (see [`plugins`]); the built-in weighted round-robin answers when
//! the selected plugin is missing, errs, panics or returns nothing usable, and says so once
//! per plugin in the log and in the event feed.

pub mod plugins;
mod round_robin;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use abi_stable::std_types::{RNone, ROption, RSome, RString, RVec};
use arc_swap::ArcSwap;
use netmix_plugin_api::host::LoadedPlugin;
use netmix_plugin_api::{self as api, StrategyBox};

use crate::events::{EventKind, Events};
use crate::health::state::Health;
use crate::iface::{InterfaceKind, InterfaceView};
pub use round_robin::RoundRobin;

/// The name of the built-in strategy (also the fallback).
pub const BUILTIN: &str = "round-robin";

/// What a strategy knows about a new connection.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    /// The host name the client asked for, if it gave a name.
    pub host: Option<String>,
    /// The destination address (resolved when the client gave a name).
    pub addr: Option<IpAddr>,
    /// Destination port.
    pub port: u16,
    /// The client's address.
    pub client: SocketAddr,
}

/// The strategy's answer: interfaces to try in order, and why.
#[derive(Debug, Clone)]
pub struct Decision {
    /// First pick, then fallbacks. Empty when no interface is usable.
    pub order: Vec<Arc<InterfaceView>>,
    /// Short reason for logs and the dashboard.
    pub reason: String,
    /// The strategy that decided (`round-robin (fallback)` when the built-in stood in).
    pub strategy: String,
    /// The plugin instance that decided, for outcome feedback.
    pub decided_by: Option<Arc<ActiveStrategy>>,
}

/// The interfaces as of the last change, plus what strategies precompute from them.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Interfaces new connections may use (not Down), ordered by id; all present ones when
    /// every one is Down (the last interface is never ejected).
    pub interfaces: Vec<Arc<InterfaceView>>,
    /// The same interfaces in the plugin ABI's types.
    pub ffi: RVec<api::InterfaceSnapshot>,
    /// Every interface the ConnectionManager published, unfiltered (to rebuild the snapshot
    /// when only the ZeroTier facts change).
    all: Vec<Arc<InterfaceView>>,
    /// The weighted round-robin sequence (indexes into `interfaces`).
    rr_sequence: Vec<usize>,
}

impl Snapshot {
    fn build(all: Vec<Arc<InterfaceView>>, zerotier: &ZeroTierFacts) -> Self {
        let any_usable = all.iter().any(|v| v.is_usable());
        let interfaces: Vec<_> = all
            .iter()
            .filter(|v| {
                if any_usable {
                    v.is_usable()
                } else {
                    v.is_present()
                }
            })
            .cloned()
            .collect();
        let weights: Vec<u32> = interfaces.iter().map(|v| v.weight).collect();
        let ffi = interfaces
            .iter()
            .map(|v| to_ffi(v, !any_usable, zerotier.get(&v.name)))
            .collect();
        Self {
            rr_sequence: round_robin::smooth_sequence(&weights),
            ffi,
            interfaces,
            all,
        }
    }

    fn by_id(&self, id: u32) -> Option<&Arc<InterfaceView>> {
        self.interfaces.iter().find(|v| v.id == id)
    }
}

/// A strategy instance built from a plugin.
pub struct ActiveStrategy {
    /// The strategy's name.
    pub name: String,
    /// The file it came from.
    pub source: String,
    strategy: StrategyBox,
    reported: AtomicBool,
}

impl std::fmt::Debug for ActiveStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveStrategy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A strategy users may select.
#[derive(Debug, Clone)]
pub struct StrategyInfo {
    /// Name for the config and the dashboard.
    pub name: String,
    /// One sentence.
    pub description: String,
    /// "built-in" or the plugin file.
    pub source: String,
}

/// ZeroTier facts by OS interface name (the network's `portDeviceName`), as the
/// [`ZeroTierAgent`](crate::zerotier::ZeroTierAgent) publishes them: only routes that pass
/// README §A4's checks, none at all for a network whose status is not OK.
pub type ZeroTierFacts = HashMap<String, api::ZeroTierInfo>;

/// Picks the interfaces for each connection from the latest snapshot.
pub struct Router {
    snapshot: ArcSwap<Snapshot>,
    /// The latest ZeroTier facts, merged into every snapshot.
    zerotier: ArcSwap<ZeroTierFacts>,
    /// Serialises snapshot rebuilds (interface changes and ZeroTier changes come from two
    /// actors), so neither overwrites the other's newer data.
    rebuild: Mutex<()>,
    round_robin: RoundRobin,
    /// `None`: the built-in round-robin is active (selected, or standing in).
    active: ArcSwap<Option<Arc<ActiveStrategy>>>,
    /// The name the user selected (may be missing, then the built-in stands in).
    selected: ArcSwap<String>,
    plugins: Vec<(LoadedPlugin, String)>,
    events: Events,
    plugin_errors: AtomicU64,
    sticky: Option<Sticky>,
}

/// Per-site stickiness: destination → (interface id, when it was last used).
struct Sticky {
    ttl: Duration,
    sites: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Sweep expired sticky entries once the table grows past this.
const STICKY_SWEEP_AT: usize = 4096;

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("selected", &self.selected.load())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with the built-in strategy only and no interfaces yet.
    pub fn new(events: Events) -> Self {
        Self {
            snapshot: ArcSwap::default(),
            zerotier: ArcSwap::default(),
            rebuild: Mutex::new(()),
            round_robin: RoundRobin::default(),
            active: ArcSwap::from_pointee(None),
            selected: ArcSwap::from_pointee(BUILTIN.to_owned()),
            plugins: Vec::new(),
            events,
            plugin_errors: AtomicU64::new(0),
            sticky: None,
        }
    }

    /// Turns on per-site stickiness for `ttl` (zero: off).
    pub fn with_stickiness(mut self, ttl: Duration) -> Self {
        self.sticky = (!ttl.is_zero()).then(|| Sticky {
            ttl,
            sites: Mutex::new(HashMap::new()),
        });
        self
    }

    /// Remembers that `conn`'s destination went out through `iface` (per-site stickiness).
    pub fn remember(&self, conn: &ConnMeta, iface: u32) {
        let Some(sticky) = &self.sticky else { return };
        let now = Instant::now();
        let mut sites = sticky.sites.lock().unwrap_or_else(PoisonError::into_inner);
        if sites.len() >= STICKY_SWEEP_AT {
            sites.retain(|_, (_, at)| now.duration_since(*at) < sticky.ttl);
        }
        match sites.get_mut(&site_key(conn)) {
            Some(entry) if entry.0 == iface => entry.1 = now,
            _ => {
                sites.insert(site_key(conn), (iface, now));
            }
        }
    }

    /// Moves the remembered interface of `conn`'s site to the front, if it is still usable.
    fn apply_stickiness(&self, conn: &ConnMeta, mut decision: Decision) -> Decision {
        let Some(sticky) = &self.sticky else {
            return decision;
        };
        let key = site_key(conn);
        let remembered = {
            let sites = sticky.sites.lock().unwrap_or_else(PoisonError::into_inner);
            sites.get(&key).copied()
        };
        let Some((id, at)) = remembered else {
            return decision;
        };
        let age = at.elapsed();
        if age >= sticky.ttl {
            return decision;
        }
        if let Some(pos) = decision.order.iter().position(|v| v.id == id) {
            let iface = decision.order.remove(pos);
            decision.reason = format!(
                "sticky: {key} → {} (last used {}s ago)",
                iface.name,
                age.as_secs()
            );
            decision.order.insert(0, iface);
        }
        decision
    }

    /// A router that can switch between `plugins` (each with its options as TOML text).
    pub fn with_plugins(events: Events, plugins: Vec<(LoadedPlugin, String)>) -> Self {
        Self {
            plugins,
            ..Self::new(events)
        }
    }

    /// Makes `name` the active strategy. A plugin of that name wins over the built-in.
    ///
    /// # Errors
    /// When no strategy has that name, or the plugin's constructor fails (the previous
    /// strategy stays active).
    pub fn select(&self, name: &str) -> Result<(), String> {
        if let Some((plugin, options)) = self.plugins.iter().find(|(p, _)| p.name == name) {
            let strategy = plugin.instantiate(options).map_err(|e| {
                self.plugin_errors.fetch_add(1, Ordering::Relaxed);
                let msg = format!(
                    "strategy \"{name}\" ({}) failed to start: {e}",
                    plugin.path.display()
                );
                self.events.emit(EventKind::PluginError, None, msg.clone());
                msg
            })?;
            self.active.store(Arc::new(Some(Arc::new(ActiveStrategy {
                name: name.to_owned(),
                source: plugin.path.display().to_string(),
                strategy,
                reported: AtomicBool::new(false),
            }))));
        } else if name == BUILTIN {
            self.active.store(Arc::new(None));
        } else {
            let known = self
                .available()
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!("no strategy named \"{name}\" (available: {known})"));
        }
        self.selected.store(Arc::new(name.to_owned()));
        tracing::info!(strategy = name, "Strategy selected.");
        self.events.emit(
            EventKind::StrategyChanged,
            None,
            format!("strategy is now {name}"),
        );
        Ok(())
    }

    /// Selects `name`, or falls back to the built-in (and says so) when it cannot.
    pub fn select_or_fallback(&self, name: &str) {
        if let Err(error) = self.select(name) {
            tracing::warn!(%error, fallback = BUILTIN, "Cannot use the configured strategy; using the built-in one.");
            self.events.emit(
                EventKind::Fallback,
                None,
                format!("{error}; using the built-in {BUILTIN}"),
            );
            self.selected.store(Arc::new(name.to_owned()));
            self.active.store(Arc::new(None));
        }
    }

    /// Every selectable strategy: plugins, then the built-in (unless a plugin took its name).
    pub fn available(&self) -> Vec<StrategyInfo> {
        let mut list: Vec<StrategyInfo> = self
            .plugins
            .iter()
            .map(|(p, _)| StrategyInfo {
                name: p.name.clone(),
                description: p.description.clone(),
                source: p.path.display().to_string(),
            })
            .collect();
        if !list.iter().any(|s| s.name == BUILTIN) {
            list.push(StrategyInfo {
                name: BUILTIN.to_owned(),
                description: "weighted round-robin (built in)".to_owned(),
                source: "built-in".to_owned(),
            });
        }
        list
    }

    /// The strategy the user selected.
    pub fn selected(&self) -> String {
        self.selected.load().as_ref().clone()
    }

    /// The strategy actually answering (the built-in when it stands in).
    pub fn active_name(&self) -> String {
        match self.active.load().as_ref() {
            Some(a) => a.name.clone(),
            None => BUILTIN.to_owned(),
        }
    }

    /// True when the built-in answers in place of the selected plugin.
    pub fn is_fallback(&self) -> bool {
        self.active.load().is_none() && self.selected.load().as_str() != BUILTIN
    }

    /// Plugin errors so far (load, construction, pick).
    pub fn plugin_errors(&self) -> u64 {
        self.plugin_errors.load(Ordering::Relaxed)
    }

    /// Replaces the snapshot (called by the ConnectionManager on every change).
    pub fn publish(&self, interfaces: Vec<Arc<InterfaceView>>) {
        let _guard = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        let zerotier = self.zerotier.load();
        self.snapshot
            .store(Arc::new(Snapshot::build(interfaces, &zerotier)));
    }

    /// Replaces the ZeroTier facts (called by the ZeroTier agent when they change) and
    /// rebuilds the snapshot at once, so a network that leaves status OK loses its routes for
    /// the very next connection.
    pub fn set_zerotier(&self, facts: ZeroTierFacts) {
        let _guard = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        self.zerotier.store(Arc::new(facts));
        let all = self.snapshot.load().all.clone();
        let zerotier = self.zerotier.load();
        self.snapshot
            .store(Arc::new(Snapshot::build(all, &zerotier)));
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Orders the usable interfaces for a new connection: the strategy's answer, then
    /// per-site stickiness when enabled.
    pub fn pick(&self, conn: &ConnMeta) -> Decision {
        let decision = self.pick_by_strategy(conn);
        self.apply_stickiness(conn, decision)
    }

    fn pick_by_strategy(&self, conn: &ConnMeta) -> Decision {
        let snapshot = self.snapshot.load();
        let active = self.active.load();
        let Some(strategy) = active.as_ref() else {
            let (order, reason) = self.round_robin.pick(&snapshot);
            let strategy = if self.is_fallback() {
                format!("{BUILTIN} (fallback)")
            } else {
                BUILTIN.to_owned()
            };
            return Decision {
                order,
                reason,
                strategy,
                decided_by: None,
            };
        };
        let meta = conn_to_ffi(conn);
        let failure = match strategy
            .strategy
            .pick(snapshot.ffi.as_rslice(), &meta)
            .into_result()
        {
            Ok(choice) => {
                let ids = choice.valid_order(&snapshot.ffi, &meta);
                if ids.is_empty() && !snapshot.interfaces.is_empty() {
                    Some("returned no usable interface".to_owned())
                } else {
                    let mut order: Vec<_> = ids
                        .iter()
                        .filter_map(|id| snapshot.by_id(*id).cloned())
                        .collect();
                    // Whatever the plugin left out still serves as a last-resort fallback,
                    // except ZeroTier interfaces: they reach only their networks' routes, so
                    // they carry a connection only when the strategy names them (a ZeroTier
                    // subnet, or an allowed exit node), never as an implicit fallback.
                    for v in &snapshot.interfaces {
                        if !ids.contains(&v.id) && v.kind != InterfaceKind::ZeroTier {
                            order.push(v.clone());
                        }
                    }
                    return Decision {
                        order,
                        reason: choice.reason.into_string(),
                        strategy: strategy.name.clone(),
                        decided_by: Some(strategy.clone()),
                    };
                }
            }
            Err(e) => Some(e.to_string()),
        };
        let failure = failure.unwrap_or_default();
        self.plugin_errors.fetch_add(1, Ordering::Relaxed);
        if !strategy.reported.swap(true, Ordering::Relaxed) {
            tracing::error!(
                plugin = %strategy.name,
                file = %strategy.source,
                error = %failure,
                "Strategy plugin failed; the built-in round-robin answers instead (logged once)."
            );
            self.events.emit(
                EventKind::PluginError,
                None,
                format!(
                    "strategy {} failed: {failure}; built-in {BUILTIN} answers",
                    strategy.name
                ),
            );
        }
        let (order, reason) = self.round_robin.pick(&snapshot);
        Decision {
            order,
            reason: format!("fallback ({} failed): {reason}", strategy.name),
            strategy: format!("{BUILTIN} (fallback)"),
            decided_by: None,
        }
    }

    /// Tells the strategy that decided how a connection through `iface` went.
    pub fn observe(decision: &Decision, conn: &ConnMeta, outcome: Observation) {
        let Some(strategy) = &decision.decided_by else {
            return;
        };
        let stage = match outcome.stage {
            Stage::Connected => api::OutcomeStage::Connected,
            Stage::ConnectFailed => api::OutcomeStage::ConnectFailed,
            Stage::Closed => api::OutcomeStage::Closed,
        };
        let report = api::ConnOutcome {
            interface: outcome.iface,
            conn: conn_to_ffi(conn),
            stage,
            connect_us: u32::try_from(outcome.connect_us).unwrap_or(u32::MAX),
            bytes_up: outcome.bytes_up,
            bytes_down: outcome.bytes_down,
            duration_us: outcome.duration_us,
            ext: api::ExtFields::default(),
        };
        if let Err(e) = strategy.strategy.observe(&report).into_result() {
            tracing::debug!(plugin = %strategy.name, error = %e, "Strategy observe failed.");
        }
    }
}

/// A moment of a connection's life, for [`Router::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connected.
    Connected,
    /// Connect failed on this interface.
    ConnectFailed,
    /// Finished.
    Closed,
}

/// What [`Router::observe`] reports.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// Interface id.
    pub iface: u32,
    /// The moment.
    pub stage: Stage,
    /// Connect time.
    pub connect_us: u64,
    /// Bytes to the destination.
    pub bytes_up: u64,
    /// Bytes from the destination.
    pub bytes_down: u64,
    /// Time since connected.
    pub duration_us: u64,
}

/// The site a connection goes to: the host name when the client gave one, else the address.
fn site_key(conn: &ConnMeta) -> String {
    match (&conn.host, conn.addr) {
        (Some(h), _) => h.to_ascii_lowercase(),
        (None, Some(a)) => a.to_string(),
        (None, None) => String::new(),
    }
}

fn conn_to_ffi(conn: &ConnMeta) -> api::ConnMeta {
    api::ConnMeta {
        host: conn
            .host
            .as_deref()
            .map_or(RNone, |h| RSome(RString::from(h))),
        addr: conn.addr.map_or(RNone, |a| RSome(a.into())),
        port: conn.port,
        client: conn.client.ip().into(),
        client_port: conn.client.port(),
        tried: RVec::new(),
        ext: api::ExtFields::default(),
    }
}

fn to_ffi(
    v: &InterfaceView,
    all_down: bool,
    zerotier: Option<&api::ZeroTierInfo>,
) -> api::InterfaceSnapshot {
    let state = match v.health {
        // When every interface is Down they are offered anyway, as Degraded.
        Health::Down if all_down => api::LinkState::Degraded,
        Health::Down => api::LinkState::Down,
        Health::Degraded => api::LinkState::Degraded,
        Health::Up => api::LinkState::Up,
    };
    api::InterfaceSnapshot {
        id: v.id,
        name: RString::from(v.name.as_str()),
        kind: match v.kind {
            InterfaceKind::Physical => api::InterfaceKind::Physical,
            InterfaceKind::Tether => api::InterfaceKind::Tether,
            InterfaceKind::Virtual => api::InterfaceKind::Virtual,
            InterfaceKind::ZeroTier => api::InterfaceKind::ZeroTier,
            InterfaceKind::Loopback => api::InterfaceKind::Loopback,
        },
        state,
        addrs: v.addrs.iter().map(|a| (*a).into()).collect(),
        latency_ewma_us: v.latency_ewma_us.map_or(ROption::RNone, ROption::RSome),
        latency_samples_us: v.recent_latency_us.iter().copied().collect(),
        jitter_us: v.jitter_us,
        successes: v.stats.successes,
        failures: v.stats.failures,
        active_conns: v.stats.active,
        bytes_up: v.stats.bytes_up,
        bytes_down: v.stats.bytes_down,
        throughput_up_bps: v.stats.up_bps,
        throughput_down_bps: v.stats.down_bps,
        weight: v.weight,
        metered: v.metered,
        // Only for an interface a joined network names as its device.
        zerotier: zerotier.cloned().map_or(ROption::RNone, ROption::RSome),
        ext: {
            let mut ext = api::ExtFields::default();
            // Facts added after plugin-api 0.1.0 travel as extension fields.
            ext.set("peak_down_bps", v.stats.peak_down_bps.to_string());
            ext.set(
                "connect_timeout_ms",
                v.connect_timeout.as_millis().to_string(),
            );
            ext
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use actix::prelude::*;

    use super::*;
    use crate::iface::{InterfaceActor, InterfaceChanged, InterfaceParams, ScannedInterface};

    /// Swallows the interface actors' reports.
    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<InterfaceChanged> for Sink {
        type Result = ();
        fn handle(&mut self, _: InterfaceChanged, _: &mut Self::Context) {}
    }

    fn view(id: u32, health: Health, sink: &Addr<Sink>) -> Arc<InterfaceView> {
        let scanned = ScannedInterface {
            name: format!("wan{id}"),
            index: id,
            addrs: vec![Ipv4Addr::new(198, 18, 10 + id as u8, 2).into()],
            up: true,
            loopback: false,
            kind: InterfaceKind::Physical,
            eligible: Ok(()),
        };
        let params = InterfaceParams::from_config(&crate::config::Config::default());
        let actor = InterfaceActor::spawn(
            id,
            &scanned,
            (1, false),
            params,
            sink.clone().recipient(),
            Events::new(),
        );
        Arc::new(InterfaceView {
            id,
            name: scanned.name.clone(),
            index: id,
            kind: InterfaceKind::Physical,
            health,
            link_up: true,
            addrs: scanned.addrs.clone(),
            weight: 1,
            metered: false,
            retired: false,
            latency_ewma_us: None,
            jitter_us: 0,
            recent_latency_us: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            stats: Default::default(),
            live: Default::default(),
            traffic: crate::batch::Batched::new(actor.clone().recipient()),
            actor,
        })
    }

    fn meta() -> ConnMeta {
        ConnMeta {
            host: None,
            addr: Some(Ipv4Addr::new(198, 19, 0, 1).into()),
            port: 80,
            client: "127.0.0.1:5000".parse().unwrap(),
        }
    }

    #[actix::test]
    async fn down_interfaces_get_no_new_connections() {
        let sink = Sink.start();
        let router = Router::new(Events::new());
        router.publish(vec![
            view(1, Health::Up, &sink),
            view(2, Health::Down, &sink),
            view(3, Health::Degraded, &sink),
        ]);
        for _ in 0..6 {
            let d = router.pick(&meta());
            let ids: Vec<u32> = d.order.iter().map(|v| v.id).collect();
            assert!(!ids.contains(&2), "{ids:?}");
            assert_eq!(ids.len(), 2);
        }
    }

    #[actix::test]
    async fn the_last_interfaces_are_never_all_ejected() {
        let sink = Sink.start();
        let router = Router::new(Events::new());
        router.publish(vec![
            view(1, Health::Down, &sink),
            view(2, Health::Down, &sink),
        ]);
        let d = router.pick(&meta());
        assert_eq!(
            d.order.len(),
            2,
            "with every interface Down, all are still tried"
        );
        // A plugin sees them as Degraded, not Down, so it does not refuse them.
        let snapshot = router.snapshot();
        assert!(
            snapshot
                .ffi
                .iter()
                .all(|i| i.state == api::LinkState::Degraded)
        );
    }
}
