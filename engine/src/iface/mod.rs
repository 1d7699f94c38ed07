//! Interfaces: one [`InterfaceActor`] per network interface, the [`Discovery`] actor that starts
//! and retires them as interfaces come and go, and outbound socket binding.
//!
//! Each `InterfaceActor` owns its interface's state and numbers. Whenever they change it sends
//! its [`InterfaceState`] (plain data) to the
//! [`ConnectionManager`](crate::manager::ConnectionManager), which builds the one snapshot for
//! the router, the prober and the dashboard. The state's [`Handles`] — live counters and the
//! event queue — are handed over once, when the interface joins, and kept beside the state by
//! id. Connection tasks report through the queue (successes in batches, one actor wake-up per
//! burst; failures at once, see [`crate::batch`]); they never wait on the actor.

pub mod bind;
mod discovery;
pub mod scan;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use abi_stable::std_types::RArc;
use actix::prelude::*;
use ipnet::IpNet;
use tokio::time::Instant;

use crate::batch::{Batched, Wake};
use crate::config::Config;
use crate::events::{EventKind, Events};
use crate::health::state::{Health, HealthPolicy, HealthState, Transition};
use crate::health::stats::{LatencyStats, Throughput};

pub use discovery::{Discovery, KnownCount, Rescan};
pub use netmix_plugin_api::LiveCounters;
pub use scan::{InterfaceKind, ScannedInterface};

/// One interface's state as plain data: what the snapshot, the dashboard and the CLI read.
/// Built by the interface's actor (the only writer) and published whole whenever it changes.
/// Numbers that change with every connection (in-flight count, bytes) are not here: they are
/// the interface's [`LiveCounters`], in its [`Handles`].
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceState {
    /// Stable for the life of the interface; a vanished-and-returned interface gets a new id.
    pub id: u32,
    /// OS name.
    pub name: String,
    /// OS index.
    pub index: u32,
    /// Kind guessed from the name.
    pub kind: InterfaceKind,
    /// Health: Up, Degraded or Down.
    pub health: Health,
    /// The OS reports the link up.
    pub link_up: bool,
    /// Source addresses with their on-link prefixes, both families.
    pub addrs: Vec<IpNet>,
    /// Relative share for weight-aware strategies.
    pub weight: u32,
    /// Costs money per byte.
    pub metered: bool,
    /// The interface vanished: no new connections; open ones drain.
    pub retired: bool,
    /// Smoothed TCP connect time, microseconds (`None` before the first measurement).
    pub latency_ewma_us: Option<u32>,
    /// Smoothed latency variation, microseconds.
    pub jitter_us: u32,
    /// The latest latency samples, microseconds, oldest first.
    pub recent_latency_us: Vec<u32>,
    /// The per-attempt connect deadline on this interface (adaptive: derived from the latency
    /// figures above by [`InterfaceParams::connect_deadline`]).
    pub connect_timeout: Duration,
    /// Connects and probes that succeeded.
    pub successes: u64,
    /// Connects and probes that failed on the interface's side.
    pub failures: u64,
    /// Smoothed throughput, client → destination, bits per second.
    pub up_bps: u64,
    /// Smoothed throughput, destination → client, bits per second.
    pub down_bps: u64,
    /// Capacity estimate, upload, bits per second (0 while unmeasured).
    pub peak_up_bps: u64,
    /// Capacity estimate, download, bits per second (0 while unmeasured).
    pub peak_down_bps: u64,
    /// Times the interface was ejected (Down after failures).
    pub ejections: u32,
}

impl InterfaceState {
    /// A fresh interface as discovery found it: no measurements yet.
    pub fn new(
        id: u32,
        scanned: &ScannedInterface,
        settings: (u32, bool),
        params: &InterfaceParams,
    ) -> Self {
        Self {
            id,
            name: scanned.name.clone(),
            index: scanned.index,
            kind: scanned.kind,
            health: if scanned.up { Health::Up } else { Health::Down },
            link_up: scanned.up,
            addrs: scanned.addrs.clone(),
            weight: settings.0,
            metered: settings.1,
            retired: false,
            latency_ewma_us: None,
            jitter_us: 0,
            recent_latency_us: Vec::new(),
            connect_timeout: params.connect_timeout,
            successes: 0,
            failures: 0,
            up_bps: 0,
            down_bps: 0,
            peak_up_bps: 0,
            peak_down_bps: 0,
            ejections: 0,
        }
    }

    /// The source address to bind for `dest`: the first address of the same family.
    pub fn source_for(&self, dest: &SocketAddr) -> Option<IpAddr> {
        self.addrs
            .iter()
            .map(IpNet::addr)
            .find(|a| a.is_ipv4() == dest.is_ipv4())
    }

    /// Could carry a connection at all (link up, an address, not retired), whatever its health.
    pub fn is_present(&self) -> bool {
        self.link_up && !self.retired && !self.addrs.is_empty()
    }

    /// May new connections go out through it: present and not Down.
    pub fn is_usable(&self) -> bool {
        self.is_present() && self.health != Health::Down
    }

    /// Connects plus failures: how often it was tried.
    pub fn attempts(&self) -> u64 {
        self.successes + self.failures
    }
}

/// What connection tasks and the prober hold to talk to an interface: its live counters and
/// its event queue. Made once by the actor; never changes.
#[derive(Debug, Clone)]
pub struct Handles {
    /// Connections in flight and bytes, updated by the data path with relaxed atomics (the
    /// same allocation strategies read through the snapshot).
    pub live: RArc<LiveCounters>,
    /// Health observations for the actor (successes batched, failures delivered at once).
    pub events: Batched<Observed>,
}

impl Handles {
    /// Reports a successful connect (or a refusal: the link works) after `rtt`.
    pub fn connected(&self, source: Source, rtt: Duration) {
        self.events.send(Observed {
            source,
            outcome: Outcome::Connected(rtt),
        });
    }

    /// Reports a failure on the interface's side; the actor hears it at once.
    pub fn failed(&self, source: Source, outcome: Outcome) {
        self.events.send_now(Observed { source, outcome });
    }

    /// Handles whose events go nowhere (for tests of code that only needs the counters).
    #[cfg(test)]
    pub fn detached() -> Self {
        Self {
            live: RArc::new(LiveCounters::default()),
            events: Batched::detached(),
        }
    }
}

/// How an interface judges its health and sizes its connect deadline.
#[derive(Debug, Clone, Copy)]
pub struct InterfaceParams {
    /// State machine thresholds.
    pub policy: HealthPolicy,
    /// Latency history kept.
    pub history: Duration,
    /// The configured (longest) connect deadline.
    pub connect_timeout: Duration,
    /// Floor of the adaptive deadline.
    pub min_connect_timeout: Duration,
    /// Adapt the deadline to measured latency.
    pub adaptive: bool,
}

impl InterfaceParams {
    /// From the config's `[health]`, `[failover]` and `[timeouts]`.
    pub fn from_config(config: &Config) -> Self {
        let h = &config.health;
        Self {
            policy: HealthPolicy {
                failures_to_down: h.failures_to_down,
                successes_to_up: h.successes_to_up,
                eject_base: Duration::from_millis(h.eject_base_ms),
                eject_max: Duration::from_millis(h.eject_max_ms),
                probing: !h.probe_targets.is_empty(),
            },
            history: Duration::from_secs(h.history_secs),
            connect_timeout: config.connect_timeout(),
            min_connect_timeout: Duration::from_millis(config.failover.min_connect_ms),
            adaptive: config.failover.adaptive_timeout,
        }
    }

    /// 4 × (EWMA + 2 × jitter) + 100 ms, clamped to [floor, configured]; the configured value
    /// while nothing is measured.
    pub fn connect_deadline(&self, ewma_us: Option<u32>, jitter_us: u32) -> Duration {
        match ewma_us {
            Some(ewma) if self.adaptive => {
                let us = 4 * (u64::from(ewma) + 2 * u64::from(jitter_us)) + 100_000;
                Duration::from_micros(us).clamp(
                    self.min_connect_timeout,
                    self.connect_timeout.max(self.min_connect_timeout),
                )
            }
            _ => self.connect_timeout,
        }
    }
}

// === messages ===

/// Discovery saw the interface again; its link state or addresses may have changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LinkUpdated(pub ScannedInterface);

/// The interface vanished: take no new connections, stop once the open ones are done.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Retire;

/// Where a health observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An active probe of the HealthProber.
    Probe,
    /// A client connection's outbound connect (passive health).
    Connection,
}

/// How a connect or probe through the interface went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Connected after this long.
    Connected(Duration),
    /// Failed on the interface's side (timeout, host unreachable).
    Failed,
    /// Failed in a way that leaves no doubt the link is unusable (network unreachable, no
    /// such device).
    LinkFailed,
}

/// A health observation for the interface.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Observed {
    /// Probe or real connection.
    pub source: Source,
    /// What happened.
    pub outcome: Outcome,
}

/// Asks for the latency history: (age, microseconds) pairs, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Vec<(Duration, u32)>")]
pub struct GetLatencyHistory;

/// For the connection manager: an interface joined (its first state, its handles and its
/// actor, for history requests).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct InterfaceJoined {
    /// The first state.
    pub state: InterfaceState,
    /// Its live counters and event queue.
    pub handles: Handles,
    /// The actor.
    pub actor: Addr<InterfaceActor>,
}

/// For the connection manager: an interface's state changed (`retired` set: it is gone).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct InterfaceChanged(pub InterfaceState);

/// Where interface actors report (the connection manager).
#[derive(Clone)]
pub struct Membership {
    /// Joins.
    pub joined: Recipient<InterfaceJoined>,
    /// Changes.
    pub changed: Recipient<InterfaceChanged>,
}

// === impl InterfaceActor ===

/// How many recent latency samples a state carries for strategies.
const STATE_SAMPLES: usize = 16;
/// How often an interface samples throughput and ends ejections (four samples per rate
/// window: see [`crate::health::stats::Throughput`]).
const TICK: Duration = Duration::from_millis(250);
/// How long a batch of connection successes gathers before the actor takes it: the one
/// debounce between the data path and the snapshot (failures are not delayed).
pub const COLLECT_WINDOW: Duration = Duration::from_millis(5);

/// Owns one interface's state and numbers.
pub struct InterfaceActor {
    state: InterfaceState,
    handles: Handles,
    params: InterfaceParams,
    health: HealthState,
    latency: LatencyStats,
    throughput: Throughput,
    members: Membership,
    events: Events,
    /// A collection of the event queue is scheduled.
    collect_pending: bool,
}

impl InterfaceActor {
    /// Starts the actor for a newly discovered interface.
    pub fn spawn(
        id: u32,
        scanned: &ScannedInterface,
        settings: (u32, bool),
        params: InterfaceParams,
        members: Membership,
        events: Events,
    ) -> Addr<Self> {
        let scanned = scanned.clone();
        Self::create(move |ctx| {
            let now = Instant::now();
            let health = HealthState::new(params.policy, scanned.up, now);
            let mut state = InterfaceState::new(id, &scanned, settings, &params);
            state.health = health.state();
            Self {
                state,
                handles: Handles {
                    live: RArc::new(LiveCounters::default()),
                    events: Batched::new(ctx.address().recipient()),
                },
                params,
                health,
                latency: LatencyStats::new(params.history, 4096),
                throughput: Throughput::default(),
                members,
                events,
                collect_pending: false,
            }
        })
    }

    /// Refreshes the derived figures and sends the state to the manager if it changed.
    fn publish(&mut self) {
        let before = self.state.clone();
        let s = &mut self.state;
        s.health = self.health.state();
        s.ejections = self.health.ejections();
        s.latency_ewma_us = self.latency.ewma_us();
        s.jitter_us = self.latency.jitter_us();
        s.recent_latency_us = self.latency.recent(STATE_SAMPLES);
        s.connect_timeout = self.params.connect_deadline(s.latency_ewma_us, s.jitter_us);
        s.up_bps = self.throughput.up_bps();
        s.down_bps = self.throughput.down_bps();
        (s.peak_up_bps, s.peak_down_bps) = self.throughput.peak_bps();
        if *s != before {
            self.members
                .changed
                .do_send(InterfaceChanged(self.state.clone()));
        }
    }

    fn log_transition(&self, t: Option<Transition>, why: &str) {
        let Some(t) = t else { return };
        let name = &self.state.name;
        let kind = match t.to {
            Health::Up => EventKind::InterfaceUp,
            Health::Degraded => EventKind::InterfaceDegraded,
            Health::Down => EventKind::InterfaceDown,
        };
        self.events.emit(
            kind,
            Some(name),
            format!("{name}: {:?} → {:?} ({why})", t.from, t.to),
        );
        match t.to {
            Health::Down => tracing::warn!(
                iface = %name, from = ?t.from, why,
                until_ms = self.health.ejected_until().map(|u| u.saturating_duration_since(Instant::now()).as_millis() as u64),
                "Interface is Down."
            ),
            Health::Degraded => {
                tracing::info!(iface = %name, from = ?t.from, why, "Interface is Degraded.")
            }
            Health::Up => tracing::info!(iface = %name, from = ?t.from, why, "Interface is Up."),
        }
    }

    fn stop_if_drained(&self, ctx: &mut Context<Self>) {
        if self.state.retired && self.handles.live.active() == 0 {
            ctx.stop();
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let live = &self.handles.live;
        self.throughput
            .sample(now, live.bytes_up(), live.bytes_down());
        self.latency.expire(now);
        let transition = self.health.tick(now);
        self.log_transition(transition, "ejection over; on probation");
        self.publish();
        self.stop_if_drained(ctx);
    }

    /// Applies one observation; returns the health transition it caused.
    fn observe(&mut self, now: Instant, msg: Observed) -> Option<Transition> {
        let transition = match msg.outcome {
            Outcome::Connected(rtt) => {
                self.state.successes += 1;
                self.latency.record(now, rtt);
                self.health.success(now)
            }
            Outcome::Failed => {
                self.state.failures += 1;
                self.health.failure(now)
            }
            Outcome::LinkFailed => {
                self.state.failures += 1;
                self.health.hard_failure(now)
            }
        };
        let why = match (msg.source, msg.outcome) {
            (Source::Probe, Outcome::Connected(_)) => "probe succeeded",
            (Source::Probe, _) => "probe failed",
            (Source::Connection, Outcome::Connected(_)) => "connection succeeded",
            (Source::Connection, _) => "connection failed",
        };
        self.log_transition(transition, why);
        transition
    }

    /// Takes everything queued on the event queue and publishes once.
    fn collect(&mut self) {
        self.collect_pending = false;
        let now = Instant::now();
        for event in self.handles.events.take() {
            self.observe(now, event);
        }
        self.publish();
    }
}

impl Actor for InterfaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(
            iface = %self.state.name,
            id = self.state.id,
            kind = self.state.kind.as_str(),
            health = ?self.state.health,
            addrs = ?self.state.addrs,
            "Interface joined."
        );
        self.events.emit(
            EventKind::InterfaceJoined,
            Some(&self.state.name),
            format!("{} joined ({:?})", self.state.name, self.state.health),
        );
        self.members.joined.do_send(InterfaceJoined {
            state: self.state.clone(),
            handles: self.handles.clone(),
            actor: ctx.address(),
        });
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(iface = %self.state.name, "Interface actor stopped.");
    }
}

impl Handler<LinkUpdated> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, msg: LinkUpdated, _ctx: &mut Self::Context) {
        let s = msg.0;
        if s.addrs != self.state.addrs {
            tracing::info!(iface = %self.state.name, addrs = ?s.addrs, "Addresses changed.");
        }
        if s.up != self.state.link_up {
            tracing::info!(iface = %self.state.name, up = s.up, "Link state changed.");
        }
        let transition = self.health.link(s.up);
        self.log_transition(transition, if s.up { "link up" } else { "link down" });
        self.state.link_up = s.up;
        self.state.addrs = s.addrs;
        self.state.index = s.index;
        self.publish();
    }
}

impl Handler<Retire> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        let open = self.handles.live.active();
        tracing::info!(iface = %self.state.name, open, "Interface vanished; draining.");
        self.state.retired = true;
        self.events.emit(
            EventKind::InterfaceGone,
            Some(&self.state.name),
            format!(
                "{} vanished; {open} open connections drain",
                self.state.name
            ),
        );
        self.publish();
        self.stop_if_drained(ctx);
    }
}

impl Handler<Observed> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, msg: Observed, _ctx: &mut Self::Context) {
        self.observe(Instant::now(), msg);
        self.publish();
    }
}

impl Handler<Wake> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, wake: Wake, ctx: &mut Self::Context) {
        if wake.urgent {
            self.collect();
        } else if !self.collect_pending {
            // Let the burst gather: one collection per COLLECT_WINDOW at most.
            self.collect_pending = true;
            ctx.run_later(COLLECT_WINDOW, |act, _| {
                if act.collect_pending {
                    act.collect();
                }
            });
        }
    }
}

impl Handler<GetLatencyHistory> for InterfaceActor {
    type Result = MessageResult<GetLatencyHistory>;

    fn handle(&mut self, _: GetLatencyHistory, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.latency.history(Instant::now()))
    }
}
