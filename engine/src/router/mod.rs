//! The router: the active strategy, fed the latest [`Snapshot`], orders the interfaces for each
//! new connection.
//!
//! - [`Router::publish`] (called by the ConnectionManager on every change) swaps the snapshot
//!   in and wakes the rebuild thread, which calls the strategy's `rebuild` off the connection
//!   path; the built-in round-robin (the fallback) is rebuilt at once, in microseconds, so it is
//!   always ready.
//! - [`Router::pick`] (on connection tasks) loads the snapshot and calls the strategy's `pick`:
//!   a connection never waits for an actor or a rebuild.
//!
//! The built-in fallback is the `round-robin` plugin's own code, linked in: it answers when the
//! selected plugin is missing, errs, panics or returns nothing usable, and the router says so
//! once per plugin in the log and in the event feed. Per-site stickiness
//! (`sticky_ttl_secs`) applies over any strategy, through the same
//! [`SiteTable`](netmix_plugin_api::sticky::SiteTable) the `sticky` plugin uses.

pub mod plugins;
mod snapshot;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::RStr;
use arc_swap::ArcSwap;
use netmix_plugin_api::error::one_line;
use netmix_plugin_api::guard::Guarded;
use netmix_plugin_api::host::LoadedPlugin;
use netmix_plugin_api::sticky::{SiteTable, site_key};
use netmix_plugin_api::{self as api, HostMod, HostMod_Ref, LogLevel, StrategyBox};
use netmix_strategy_round_robin::RoundRobin;

use crate::events::{EventKind, Events};
use crate::iface::InterfaceKind;
pub use snapshot::{Member, Snapshot, ZeroTierFacts, kind_to_ffi};

/// The name of the built-in strategy (also the fallback).
pub const BUILTIN: &str = "round-robin";

/// The strategy's answer: interfaces to try in order, and why.
#[derive(Debug, Clone)]
pub struct Decision {
    /// First pick, then fallbacks. Empty when no interface can carry the connection.
    pub order: Vec<Member>,
    /// Short reason for logs and the dashboard.
    pub reason: String,
    /// The strategy that decided (`round-robin (fallback)` when the built-in stood in).
    pub strategy: String,
    /// The strategy instance that decided, for outcome feedback.
    pub decided_by: Arc<ActiveStrategy>,
    /// Single-path or multipath, as the strategy answered (ABI 1.1 `Strategy::answer`; always
    /// single-path for a plugin built against 1.0, for the fallback and with multipath off).
    pub paths: api::Paths,
}

/// A strategy instance, with what the router tracks about it.
pub struct ActiveStrategy {
    /// The strategy's name.
    pub name: String,
    /// The file it came from (`built-in` for the fallback).
    pub source: String,
    strategy: StrategyBox,
    /// The newest snapshot generation its `rebuild` accepted.
    rebuilt: AtomicU64,
    /// An error was reported already (pick or rebuild): report once.
    reported: AtomicBool,
    /// Whether outcome reports are worth building for it (false for the built-in).
    observes: bool,
}

impl std::fmt::Debug for ActiveStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveStrategy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ActiveStrategy {
    fn new(name: &str, source: String, strategy: StrategyBox) -> Self {
        Self {
            name: name.to_owned(),
            source,
            strategy,
            rebuilt: AtomicU64::new(0),
            reported: AtomicBool::new(false),
            observes: true,
        }
    }

    /// Hands it `snapshot`.
    ///
    /// # Errors
    /// The strategy's error, on one line.
    fn rebuild(&self, snapshot: &Snapshot) -> Result<(), String> {
        self.strategy
            .rebuild(&snapshot.ffi)
            .into_result()
            .map_err(|e| e.to_string())?;
        self.rebuilt
            .fetch_max(snapshot.generation(), Ordering::Relaxed);
        Ok(())
    }

    /// The newest generation it was rebuilt for.
    pub fn rebuilt_generation(&self) -> u64 {
        self.rebuilt.load(Ordering::Relaxed)
    }

    /// Tells it how a connection it routed went; `outcome` is only built when the strategy
    /// listens (the built-in round-robin does not: no report is built or sent for it).
    pub fn observe(&self, outcome: impl FnOnce() -> api::ConnOutcome) {
        if !self.observes {
            return;
        }
        if let Err(e) = self.strategy.observe(&outcome()).into_result() {
            tracing::debug!(plugin = %self.name, error = %e, "Strategy observe failed.");
        }
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

/// Picks the interfaces for each connection from the latest snapshot.
pub struct Router {
    shared: Arc<Shared>,
    /// Loaded plugins with their options (TOML text).
    plugins: Vec<(LoadedPlugin, String)>,
    sticky: Option<SiteTable>,
    /// The rebuild thread; stops when the router is dropped.
    _rebuilder: Rebuilder,
}

/// What the rebuild thread shares with the router.
struct Shared {
    snapshot: ArcSwap<Snapshot>,
    builtin: Arc<ActiveStrategy>,
    /// The strategy answering: the selected plugin, or the built-in.
    active: ArcSwap<ActiveStrategy>,
    /// The name the user selected (may be missing, then the built-in stands in).
    selected: ArcSwap<String>,
    /// Why the built-in answers for the selected strategy, while it does.
    fallback: Mutex<Option<String>>,
    events: Events,
    plugin_errors: AtomicU64,
    /// Serialises the active plugin's rebuilds (the rebuild thread and `select`): `rebuild` is
    /// called from one thread at a time.
    rebuild_lock: Mutex<()>,
    wake: Condvar,
    /// (a rebuild is wanted, the router is gone).
    pending: Mutex<(bool, bool)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("selected", &self.shared.selected.load())
            .finish_non_exhaustive()
    }
}

/// The engine's services for plugins: their log lines go to `tracing` with their name.
pub fn host_services() -> HostMod_Ref {
    static HOST: std::sync::OnceLock<HostMod_Ref> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| HostMod { log: plugin_log }.leak_into_prefix())
}

/// Longest plugin name and message the engine writes, in characters: the plugin-side helper
/// already squeezes lines, but a plugin need not use it, and a log line must stay one line.
const PLUGIN_LOG_MAX_CHARS: (usize, usize) = (64, 500);

extern "C" fn plugin_log(plugin: RStr<'_>, level: LogLevel, message: RStr<'_>) {
    let plugin = one_line(plugin.as_str(), PLUGIN_LOG_MAX_CHARS.0);
    let message = one_line(message.as_str(), PLUGIN_LOG_MAX_CHARS.1);
    match level {
        LogLevel::Error => tracing::error!(target: "netmix::plugin", plugin = %plugin, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "netmix::plugin", plugin = %plugin, "{message}"),
        LogLevel::Info => tracing::info!(target: "netmix::plugin", plugin = %plugin, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "netmix::plugin", plugin = %plugin, "{message}"),
        _ => tracing::trace!(target: "netmix::plugin", plugin = %plugin, "{message}"),
    }
}

impl Router {
    /// A router with the built-in strategy only and no interfaces yet.
    pub fn new(events: Events) -> Self {
        Self::with_plugins(events, Vec::new())
    }

    /// A router that can switch between `plugins` (each with its options as TOML text); the
    /// built-in is active until [`Router::select`].
    pub fn with_plugins(events: Events, plugins: Vec<(LoadedPlugin, String)>) -> Self {
        let builtin = Arc::new(ActiveStrategy {
            // Round-robin ignores outcomes.
            observes: false,
            ..ActiveStrategy::new(
                BUILTIN,
                "built-in".to_owned(),
                Guarded::boxed(BUILTIN, RoundRobin::default()),
            )
        });
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::default(),
            active: ArcSwap::new(builtin.clone()),
            builtin,
            selected: ArcSwap::from_pointee(BUILTIN.to_owned()),
            fallback: Mutex::new(None),
            events,
            plugin_errors: AtomicU64::new(0),
            rebuild_lock: Mutex::new(()),
            wake: Condvar::new(),
            pending: Mutex::new((false, false)),
        });
        let _ = shared.builtin.rebuild(&shared.snapshot.load());
        Self {
            _rebuilder: Rebuilder::start(shared.clone()),
            shared,
            plugins,
            sticky: None,
        }
    }

    /// A router whose active strategy is `strategy` (an in-process [`StrategyBox`], e.g.
    /// `Guarded::boxed`), for tests and embedders.
    pub fn with_strategy(events: Events, name: &str, strategy: StrategyBox) -> Self {
        let router = Self::new(events);
        let active = Arc::new(ActiveStrategy::new(name, "in-process".to_owned(), strategy));
        if let Err(e) = active.rebuild(&router.shared.snapshot.load()) {
            router.shared.report(&active, &format!("rebuild: {e}"));
        }
        router.activate(name, active);
        router
    }

    /// Turns on per-site stickiness for `ttl` (zero: off).
    pub fn with_stickiness(mut self, ttl: Duration) -> Self {
        self.sticky = (!ttl.is_zero()).then(|| SiteTable::new(ttl));
        self
    }

    /// Remembers that `conn`'s destination went out through `iface` (per-site stickiness).
    pub fn remember(&self, conn: &api::ConnMeta, iface: u32) {
        if let Some(sticky) = &self.sticky {
            sticky.bind(&site_key(conn), iface, Instant::now());
        }
    }

    /// Moves the remembered interface of `conn`'s site to the front, if it is in the order.
    fn apply_stickiness(&self, conn: &api::ConnMeta, decision: &mut Decision) {
        let Some(sticky) = &self.sticky else { return };
        let key = site_key(conn);
        let now = Instant::now();
        let Some(binding) = sticky.get(&key, now) else {
            return;
        };
        if let Some(pos) = decision
            .order
            .iter()
            .position(|m| m.state.id == binding.interface)
        {
            let member = decision.order.remove(pos);
            decision.reason = format!(
                "sticky: {key} → {} (last used {}s ago)",
                member.state.name,
                now.duration_since(binding.last_used).as_secs()
            );
            decision.order.insert(0, member);
        }
    }

    /// Makes `name` the active strategy: built from its plugin (which wins over the built-in
    /// of the same name) and rebuilt for the current snapshot before its first pick.
    ///
    /// # Errors
    /// When no strategy has that name, or the plugin's constructor or first rebuild fails (the
    /// previous strategy stays active).
    pub fn select(&self, name: &str) -> Result<(), String> {
        if let Some((plugin, options)) = self.plugins.iter().find(|(p, _)| p.name == name) {
            let fail = |e: String| {
                self.shared.plugin_errors.fetch_add(1, Ordering::Relaxed);
                let msg = format!(
                    "strategy \"{name}\" ({}) failed to start: {e}",
                    plugin.path.display()
                );
                self.shared
                    .events
                    .emit(EventKind::PluginError, None, msg.clone());
                msg
            };
            let strategy = plugin
                .instantiate(options, host_services())
                .map_err(|e| fail(e.to_string()))?;
            let active = Arc::new(ActiveStrategy::new(
                name,
                plugin.path.display().to_string(),
                strategy,
            ));
            {
                let _guard = self.shared.rebuild_lock();
                active.rebuild(&self.shared.snapshot.load()).map_err(fail)?;
            }
            self.activate(name, active);
        } else if name == BUILTIN {
            self.activate(name, self.shared.builtin.clone());
        } else {
            let known = self
                .available()
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!("no strategy named \"{name}\" (available: {known})"));
        }
        tracing::info!(strategy = name, "Strategy selected.");
        self.shared.events.emit(
            EventKind::StrategyChanged,
            None,
            format!("strategy is now {name}"),
        );
        Ok(())
    }

    fn activate(&self, name: &str, active: Arc<ActiveStrategy>) {
        *self
            .shared
            .fallback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.shared.active.store(active);
        self.shared.selected.store(Arc::new(name.to_owned()));
        // A snapshot published while it was being built is handed over now.
        self.shared.request_rebuild();
    }

    /// Selects `name`, or falls back to the built-in (and says so) when it cannot.
    pub fn select_or_fallback(&self, name: &str) {
        if let Err(error) = self.select(name) {
            let why = format!("{error}; the built-in {BUILTIN} answers instead");
            tracing::warn!("{why}");
            self.shared
                .events
                .emit(EventKind::Fallback, None, why.clone());
            self.shared.active.store(self.shared.builtin.clone());
            self.shared.selected.store(Arc::new(name.to_owned()));
            *self
                .shared
                .fallback
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
        }
    }

    /// Why the built-in answers in place of the selected strategy (the words the start-up
    /// line, `netmix plugins` and the dashboard all use), or `None` when the selected one does.
    pub fn fallback_reason(&self) -> Option<String> {
        self.shared
            .fallback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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
        self.shared.selected.load().as_ref().clone()
    }

    /// The strategy actually answering (the built-in when it stands in).
    pub fn active_name(&self) -> String {
        self.shared.active.load().name.clone()
    }

    /// The strategy instance answering.
    pub fn active(&self) -> Arc<ActiveStrategy> {
        self.shared.active.load_full()
    }

    /// True when the built-in answers in place of the selected plugin.
    pub fn is_fallback(&self) -> bool {
        Arc::ptr_eq(&self.shared.active.load(), &self.shared.builtin)
            && self.shared.selected.load().as_str() != BUILTIN
    }

    /// Plugin errors so far (load, construction, rebuild, pick).
    pub fn plugin_errors(&self) -> u64 {
        self.shared.plugin_errors.load(Ordering::Relaxed)
    }

    /// Replaces the snapshot (called by the ConnectionManager on every change): the built-in
    /// is rebuilt at once, the active strategy on the rebuild thread.
    pub fn publish(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        // Only the manager publishes, so the built-in's rebuilds never overlap; the plugin's
        // (under `rebuild_lock`, on the rebuild thread) never hold this caller up.
        self.shared.snapshot.store(snapshot.clone());
        let _ = self.shared.builtin.rebuild(&snapshot);
        self.shared.request_rebuild();
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Orders the interfaces that can carry `conn` (not in `conn.tried`, of the destination's
    /// family): the strategy's answer, then per-site stickiness when enabled.
    pub fn pick(&self, conn: &api::ConnMeta) -> Decision {
        let snapshot = self.shared.snapshot.load();
        let active = self.shared.active.load_full();
        let mut decision = match self.pick_with(&active, &snapshot, conn) {
            Ok(decision) => decision,
            Err(failure) => {
                let builtin = &self.shared.builtin;
                let fallback = self.pick_with(builtin, &snapshot, conn);
                let (order, reason) = match fallback {
                    Ok(d) => (d.order, d.reason),
                    Err(_) => (Vec::new(), "no usable interface".to_owned()),
                };
                let reason = match failure {
                    // The strategy's plan is older than the snapshot: it has not caught up with
                    // a new interface set yet. Not an error.
                    Failure::Stale => reason,
                    Failure::Error(error) => {
                        self.report(&active, &format!("pick: {error}"));
                        format!("fallback ({} failed): {reason}", active.name)
                    }
                };
                Decision {
                    order,
                    reason,
                    strategy: format!("{BUILTIN} (fallback)"),
                    decided_by: builtin.clone(),
                    paths: api::Paths::Single,
                }
            }
        };
        self.apply_stickiness(conn, &mut decision);
        decision
    }

    fn pick_with(
        &self,
        strategy: &Arc<ActiveStrategy>,
        snapshot: &Snapshot,
        conn: &api::ConnMeta,
    ) -> Result<Decision, Failure> {
        let candidates = api::candidates(&snapshot.ffi.interfaces, conn).count();
        let (choice, paths) = match strategy.strategy.answer(conn).into_result() {
            Ok(answer) => (answer.choice, answer.paths),
            // "Nothing fits" is an answer, not a failure (e.g. no route to a ZeroTier subnet).
            Err(api::StrategyError::NoCandidate) => {
                return Ok(Decision {
                    order: Vec::new(),
                    reason: "no usable interface".to_owned(),
                    strategy: strategy.name.clone(),
                    decided_by: strategy.clone(),
                    paths: api::Paths::Single,
                });
            }
            Err(e) => return Err(Failure::Error(e.to_string())),
        };
        let ids = choice.valid_order(&snapshot.ffi.interfaces, conn);
        if ids.is_empty() && candidates > 0 {
            return Err(if strategy.rebuilt_generation() < snapshot.generation() {
                Failure::Stale
            } else {
                Failure::Error("returned no usable interface".to_owned())
            });
        }
        let builtin = Arc::ptr_eq(strategy, &self.shared.builtin);
        let mut order: Vec<Member> = ids
            .iter()
            .filter_map(|id| snapshot.usable_member(*id).cloned())
            // The built-in knows nothing of ZeroTier routes (see below).
            .filter(|m| !builtin || m.state.kind != InterfaceKind::ZeroTier)
            .collect();
        // Whatever the strategy left out still serves as a last-resort fallback, except
        // ZeroTier interfaces: they reach only their networks' routes, so they carry a
        // connection only when the strategy names them (a ZeroTier subnet, or an allowed exit
        // node), never as an implicit fallback.
        for i in api::candidates(&snapshot.ffi.interfaces, conn) {
            if !ids.contains(&i.id)
                && let Some(m) = snapshot.usable_member(i.id)
                && m.state.kind != InterfaceKind::ZeroTier
            {
                order.push(m.clone());
            }
        }
        Ok(Decision {
            order,
            reason: choice.reason.into_string(),
            strategy: strategy.name.clone(),
            decided_by: strategy.clone(),
            paths,
        })
    }

    fn report(&self, strategy: &ActiveStrategy, failure: &str) {
        self.shared.report(strategy, failure);
    }
}

/// Why a strategy's pick was not used.
enum Failure {
    /// Its plan predates the snapshot's interface set.
    Stale,
    /// It erred, panicked or named nothing usable.
    Error(String),
}

impl Shared {
    fn rebuild_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.rebuild_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn request_rebuild(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.0 = true;
        self.wake.notify_one();
    }

    /// Rebuilds the active strategy (unless it is the built-in, already rebuilt by `publish`).
    fn rebuild_active(&self) {
        let active = self.active.load_full();
        if Arc::ptr_eq(&active, &self.builtin) {
            return;
        }
        let _guard = self.rebuild_lock();
        let snapshot = self.snapshot.load();
        if active.rebuilt_generation() >= snapshot.generation() && snapshot.generation() > 0 {
            return;
        }
        if let Err(e) = active.rebuild(&snapshot) {
            self.report(&active, &format!("rebuild: {e}"));
        }
    }

    fn report(&self, strategy: &ActiveStrategy, failure: &str) {
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
    }
}

/// The thread that calls strategies' `rebuild`: woken on every publish, it always hands over
/// the newest snapshot, so a burst of publishes costs one rebuild.
struct Rebuilder {
    shared: Arc<Shared>,
}

impl Rebuilder {
    fn start(shared: Arc<Shared>) -> Self {
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("netmix-rebuild".to_owned())
            .spawn(move || {
                loop {
                    {
                        let mut pending = worker
                            .pending
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        while !pending.0 && !pending.1 {
                            pending = worker
                                .wake
                                .wait(pending)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                        if pending.1 {
                            return;
                        }
                        pending.0 = false;
                    }
                    worker.rebuild_active();
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "Cannot start the strategy rebuild thread.");
        }
        Self { shared }
    }
}

impl Drop for Rebuilder {
    fn drop(&mut self) {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pending.1 = true;
        self.shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests;
