//! Interfaces: one [`InterfaceActor`] per network interface, the [`Discovery`] actor that starts
//! and retires them as interfaces come and go, and outbound socket binding.
//!
//! Each `InterfaceActor` owns its interface's state and numbers. Whenever they change it sends an
//! immutable [`InterfaceView`] to the [`ConnectionManager`](crate::manager::ConnectionManager),
//! which publishes the set to the router. Connection tasks report their events through the
//! view's [`Traffic`] queue (one actor wake-up per burst, see [`crate::batch`]) and failures
//! with `do_send`; they never wait on the actor.

pub mod bind;
mod discovery;
pub mod scan;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::time::Instant;

use crate::batch::{Batched, Wake};
use crate::config::Config;
use crate::events::{EventKind, Events};
use crate::health::state::{Health, HealthPolicy, HealthState, Transition};
use crate::health::stats::{LatencyStats, Throughput};

pub use discovery::{Discovery, Rescan};
pub use scan::{InterfaceKind, ScannedInterface};

/// Bytes relayed through an interface so far. Relay tasks add to these as data moves (one
/// relaxed atomic add per read, never a message per byte); the interface's actor samples them
/// every second for throughput. They belong to that actor: nothing else reads them.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Client → destination bytes.
    pub bytes_up: AtomicU64,
    /// Destination → client bytes.
    pub bytes_down: AtomicU64,
}

/// Counters an interface accumulates from the connections it carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InterfaceStats {
    /// Relayed connections open now.
    pub active: u32,
    /// Connects and probes that succeeded.
    pub successes: u64,
    /// Connects and probes that failed on the interface's side.
    pub failures: u64,
    /// Bytes sent to destinations (client → destination).
    pub bytes_up: u64,
    /// Bytes received from destinations (destination → client).
    pub bytes_down: u64,
    /// Smoothed throughput, client → destination, bits per second.
    pub up_bps: u64,
    /// Smoothed throughput, destination → client, bits per second.
    pub down_bps: u64,
    /// Highest one-second download rate seen (a capacity estimate), bits per second.
    pub peak_down_bps: u64,
    /// Times the interface was ejected (Down after failures).
    pub ejections: u32,
}

/// An immutable picture of one interface, as the router and the dashboard see it.
#[derive(Debug, Clone)]
pub struct InterfaceView {
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
    /// Source addresses, both families.
    pub addrs: Vec<IpAddr>,
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
    /// The per-attempt connect deadline on this interface (adaptive).
    pub connect_timeout: Duration,
    /// Counters.
    pub stats: InterfaceStats,
    /// Byte counters relays add to.
    pub live: Arc<LiveCounters>,
    /// The actor (probes report to it; the dashboard asks it for history).
    pub actor: Addr<InterfaceActor>,
    /// Connection events for the actor, delivered in batches.
    pub traffic: Batched<Traffic>,
}

impl InterfaceView {
    /// The source address to bind for `dest`: the first address of the same family.
    pub fn source_for(&self, dest: &SocketAddr) -> Option<IpAddr> {
        self.addrs
            .iter()
            .copied()
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
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Observed {
    /// Probe or real connection.
    pub source: Source,
    /// What happened.
    pub outcome: Outcome,
}

/// What a client connection tells its interface (through [`InterfaceView::traffic`]).
/// Failures go as [`Observed`] messages instead, so that health reacts at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// An outbound connect succeeded after this long (or was refused by the destination: the
    /// link itself works).
    Connected(Duration),
    /// A relay started.
    Opened,
    /// A relay ended.
    Closed,
}

/// Asks for the latency history: (age, microseconds) pairs, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Vec<(Duration, u32)>")]
pub struct GetLatencyHistory;

/// Event for the connection manager: an interface's view changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct InterfaceChanged(pub Arc<InterfaceView>);

// === impl InterfaceActor ===

/// How many recent latency samples a view carries for strategies.
const VIEW_SAMPLES: usize = 16;
/// How often an interface samples throughput and ends ejections (four samples per rate
/// window: see [`crate::health::stats::Throughput`]).
const TICK: Duration = Duration::from_millis(250);

/// Owns one interface's state and numbers.
pub struct InterfaceActor {
    view: InterfaceView,
    params: InterfaceParams,
    health: HealthState,
    latency: LatencyStats,
    throughput: Throughput,
    manager: Recipient<InterfaceChanged>,
    events: Events,
    last_publish: Instant,
    publish_pending: bool,
    /// A collection of the traffic queue is scheduled.
    drain_pending: bool,
}

/// Counter-only changes are published at most this often.
const PUBLISH_GAP: Duration = Duration::from_millis(5);

impl InterfaceActor {
    /// Starts the actor for a newly discovered interface.
    pub fn spawn(
        id: u32,
        scanned: &ScannedInterface,
        settings: (u32, bool),
        params: InterfaceParams,
        manager: Recipient<InterfaceChanged>,
        events: Events,
    ) -> Addr<Self> {
        let scanned = scanned.clone();
        Self::create(move |ctx| {
            let now = Instant::now();
            let health = HealthState::new(params.policy, scanned.up, now);
            let view = InterfaceView {
                id,
                name: scanned.name.clone(),
                index: scanned.index,
                kind: scanned.kind,
                health: health.state(),
                link_up: scanned.up,
                addrs: scanned.addrs.clone(),
                weight: settings.0,
                metered: settings.1,
                retired: false,
                latency_ewma_us: None,
                jitter_us: 0,
                recent_latency_us: Vec::new(),
                connect_timeout: params.connect_timeout,
                stats: InterfaceStats::default(),
                live: Arc::new(LiveCounters::default()),
                actor: ctx.address(),
                traffic: Batched::new(ctx.address().recipient()),
            };
            Self {
                view,
                params,
                health,
                latency: LatencyStats::new(params.history, 4096),
                throughput: Throughput::default(),
                manager,
                events,
                last_publish: now,
                publish_pending: false,
                drain_pending: false,
            }
        })
    }

    /// Publishes counter changes at most every [`PUBLISH_GAP`] (thousands of connections a
    /// second must not mean thousands of snapshots); health and link changes go at once.
    fn publish_soon(&mut self, ctx: &mut Context<Self>) {
        if self.last_publish.elapsed() >= PUBLISH_GAP {
            self.publish();
        } else if !self.publish_pending {
            self.publish_pending = true;
            ctx.run_later(PUBLISH_GAP, |act, _| act.publish());
        }
    }

    fn publish(&mut self) {
        self.publish_pending = false;
        self.last_publish = Instant::now();
        self.view.health = self.health.state();
        self.view.stats.ejections = self.health.ejections();
        self.view.latency_ewma_us = self.latency.ewma_us();
        self.view.jitter_us = self.latency.jitter_us();
        self.view.recent_latency_us = self.latency.recent(VIEW_SAMPLES);
        self.view.connect_timeout = self
            .params
            .connect_deadline(self.view.latency_ewma_us, self.view.jitter_us);
        self.manager
            .do_send(InterfaceChanged(Arc::new(self.view.clone())));
    }

    fn log_transition(&self, t: Option<Transition>, why: &str) {
        let Some(t) = t else { return };
        let name = &self.view.name;
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
        if self.view.retired && self.view.stats.active == 0 {
            ctx.stop();
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let up = self.view.live.bytes_up.load(Ordering::Relaxed);
        let down = self.view.live.bytes_down.load(Ordering::Relaxed);
        self.throughput.sample(now, up, down);
        self.latency.expire(now);
        let transition = self.health.tick(now);
        self.log_transition(transition, "ejection over; on probation");
        let s = &mut self.view.stats;
        let changed = transition.is_some()
            || s.bytes_up != up
            || s.bytes_down != down
            || s.up_bps != self.throughput.up_bps()
            || s.down_bps != self.throughput.down_bps();
        s.bytes_up = up;
        s.bytes_down = down;
        s.up_bps = self.throughput.up_bps();
        s.down_bps = self.throughput.down_bps();
        s.peak_down_bps = self.throughput.peak_bps().1;
        if changed {
            self.publish();
        }
    }
}

impl Actor for InterfaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(
            iface = %self.view.name,
            id = self.view.id,
            kind = self.view.kind.as_str(),
            health = ?self.view.health,
            addrs = ?self.view.addrs,
            "Interface joined."
        );
        self.events.emit(
            EventKind::InterfaceJoined,
            Some(&self.view.name),
            format!("{} joined ({:?})", self.view.name, self.view.health),
        );
        self.publish();
        ctx.run_interval(TICK, |act, _| act.tick());
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(iface = %self.view.name, "Interface actor stopped.");
    }
}

impl Handler<LinkUpdated> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, msg: LinkUpdated, _ctx: &mut Self::Context) {
        let s = msg.0;
        if s.addrs != self.view.addrs {
            tracing::info!(iface = %self.view.name, addrs = ?s.addrs, "Addresses changed.");
        }
        if s.up != self.view.link_up {
            tracing::info!(iface = %self.view.name, up = s.up, "Link state changed.");
        }
        let transition = self.health.link(s.up);
        self.log_transition(transition, if s.up { "link up" } else { "link down" });
        self.view.link_up = s.up;
        self.view.addrs = s.addrs;
        self.view.index = s.index;
        self.publish();
    }
}

impl Handler<Retire> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        tracing::info!(iface = %self.view.name, open = self.view.stats.active, "Interface vanished; draining.");
        self.view.retired = true;
        self.events.emit(
            EventKind::InterfaceGone,
            Some(&self.view.name),
            format!(
                "{} vanished; {} open connections drain",
                self.view.name, self.view.stats.active
            ),
        );
        self.publish();
        self.stop_if_drained(ctx);
    }
}

impl Handler<Observed> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, msg: Observed, ctx: &mut Self::Context) {
        let now = Instant::now();
        let transition = match msg.outcome {
            Outcome::Connected(rtt) => self.record_success(now, rtt),
            Outcome::Failed => {
                self.view.stats.failures += 1;
                self.health.failure(now)
            }
            Outcome::LinkFailed => {
                self.view.stats.failures += 1;
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
        if transition.is_some() {
            self.publish();
        } else {
            self.publish_soon(ctx);
        }
    }
}

impl Handler<Wake> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        // Let the burst gather: one collection per PUBLISH_GAP at most.
        if !self.drain_pending {
            self.drain_pending = true;
            ctx.run_later(PUBLISH_GAP, |act, ctx| act.drain_traffic(ctx));
        }
    }
}

impl InterfaceActor {
    /// A connect or probe through the interface succeeded after `rtt`.
    fn record_success(&mut self, now: Instant, rtt: Duration) -> Option<Transition> {
        self.view.stats.successes += 1;
        self.latency.record(now, rtt);
        self.health.success(now)
    }

    fn drain_traffic(&mut self, ctx: &mut Context<Self>) {
        self.drain_pending = false;
        let now = Instant::now();
        let mut transition = None;
        for event in self.view.traffic.take() {
            match event {
                Traffic::Connected(rtt) => {
                    if let Some(t) = self.record_success(now, rtt) {
                        transition = Some(t);
                    }
                }
                Traffic::Opened => self.view.stats.active += 1,
                Traffic::Closed => {
                    self.view.stats.active = self.view.stats.active.saturating_sub(1);
                }
            }
        }
        self.view.stats.bytes_up = self.view.live.bytes_up.load(Ordering::Relaxed);
        self.view.stats.bytes_down = self.view.live.bytes_down.load(Ordering::Relaxed);
        self.log_transition(transition, "connection succeeded");
        if transition.is_some() {
            self.publish();
        } else {
            self.publish_soon(ctx);
        }
        self.stop_if_drained(ctx);
    }
}

impl Handler<GetLatencyHistory> for InterfaceActor {
    type Result = MessageResult<GetLatencyHistory>;

    fn handle(&mut self, _: GetLatencyHistory, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.latency.history(Instant::now()))
    }
}
