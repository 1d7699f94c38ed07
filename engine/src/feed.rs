//! The DashboardFeed actor: gathers what the dashboard shows — the interfaces (from the
//! ConnectionManager, with each interface actor's latency history), recent connections (from
//! the relay tasks), events and totals — and publishes one [`Feed`] on a `watch` channel at
//! most every 500 ms. The web crate reads that channel; it never talks to an actor.
//!
//! Connection records arrive as [`ConnEvent`]s through a [`Batched`] queue (one wake-up of
//! this actor per burst, not one message per connection), so a relay never waits for the
//! feed. The feed keeps a bounded window: every open connection plus the newest closed ones,
//! up to [`netmix_web::models::MAX_CONNECTIONS`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use netmix_web::models::{MAX_CONNECTIONS, MAX_EVENTS};
use netmix_web::{
    ConnectionDto, EventDto, Feed, InterfaceDto, LatencyPoint, StrategyDto, StrategyInfo, Totals,
};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::batch::{Batched, Wake};
use crate::events::Event;
use crate::manager::{ConnectionManager, LatencyHistoryOf};
use crate::router::{Member, Router};

/// How often the feed is rebuilt and published.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// How long queued connection events may wait before the feed collects them.
const COLLECT_AFTER: Duration = Duration::from_millis(100);

/// A connection's life, as the relay task reports it.
#[derive(Debug)]
pub enum ConnEvent {
    /// Connected (or failed: `error` set, then no `Closed` follows).
    Opened {
        /// Engine-wide connection id.
        id: u64,
        /// When (the event may be collected a little later).
        at: Instant,
        /// When, Unix time in milliseconds.
        at_unix_ms: u64,
        /// Client address.
        client: String,
        /// The client protocol: "socks5", "socks4", "http-connect", "http-forward",
        /// "socks5-udp", "socks5-bind" (see [`netmix_web::models::PROTOCOLS`]).
        protocol: String,
        /// What the client asked for.
        destination: String,
        /// The interface that carried it.
        interface: Option<String>,
        /// The interfaces whose connect failed, in order (all of them when `error` is set;
        /// their number is the row's `retries`).
        tried: Vec<String>,
        /// From accepting the request to this event (for a failed connection, its whole life).
        since_accept: Duration,
        /// The strategy that chose.
        strategy: String,
        /// Its reason.
        reason: String,
        /// Set when no interface connected.
        error: Option<String>,
    },
    /// Moved to another interface while open (a UDP association whose interface went away).
    Moved {
        /// The id from `Opened`.
        id: u64,
        /// The interface that carries it now.
        interface: String,
        /// Interfaces it has left or that failed before.
        retries: u32,
    },
    /// Finished.
    Closed {
        /// The id from `Opened`.
        id: u64,
        /// When.
        at: Instant,
        /// Client → destination bytes.
        bytes_up: u64,
        /// Destination → client bytes.
        bytes_down: u64,
    },
}

/// Builds and publishes the dashboard's [`Feed`].
pub struct DashboardFeed {
    manager: Addr<ConnectionManager>,
    router: Arc<Router>,
    events: Option<broadcast::Receiver<Event>>,
    tx: watch::Sender<Arc<Feed>>,
    open: HashMap<u64, (ConnectionDto, Instant)>,
    closed: VecDeque<ConnectionDto>,
    recent_events: VecDeque<EventDto>,
    totals: Totals,
    interfaces: Vec<InterfaceDto>,
    started: Instant,
    /// When the engine started, Unix time in milliseconds (the page spots a restart by it).
    started_unix_ms: u64,
    version: u64,
    /// The ZeroTier agent's state, when the agent runs.
    zerotier: Option<crate::zerotier::ZtHandle>,
    /// Where connection tasks queue their events (set when the actor is created).
    inbox: Option<Batched<ConnEvent>>,
    /// A collection of the inbox is scheduled.
    collect_pending: bool,
}

impl DashboardFeed {
    /// A feed (not started) and the receiver the web layer reads.
    pub fn new(
        manager: Addr<ConnectionManager>,
        router: Arc<Router>,
        events: broadcast::Receiver<Event>,
    ) -> (Self, watch::Receiver<Arc<Feed>>) {
        let (tx, rx) = watch::channel(Arc::new(Feed::default()));
        let feed = Self {
            manager,
            router,
            events: Some(events),
            tx,
            open: HashMap::new(),
            closed: VecDeque::with_capacity(MAX_CONNECTIONS),
            recent_events: VecDeque::with_capacity(MAX_EVENTS),
            totals: Totals::default(),
            interfaces: Vec::new(),
            started: Instant::now(),
            started_unix_ms: crate::events::unix_ms(),
            version: 0,
            zerotier: None,
            inbox: None,
            collect_pending: false,
        };
        (feed, rx)
    }

    /// Starts the actor; returns its address and the queue connection tasks report to.
    pub fn start_with_inbox(mut self) -> (Addr<Self>, Batched<ConnEvent>) {
        let mut inbox = None;
        let addr = Self::create(|ctx| {
            let queue = Batched::new(ctx.address().recipient());
            inbox = Some(queue.clone());
            self.inbox = Some(queue);
            self
        });
        (addr, inbox.expect("set by create"))
    }

    /// Applies every queued connection event.
    fn collect(&mut self) {
        let Some(inbox) = &self.inbox else { return };
        for event in inbox.take() {
            self.apply(event);
        }
    }

    /// Shows the ZeroTier agent's state (networks, routes, peers) in the feed.
    pub fn with_zerotier(mut self, zerotier: Option<crate::zerotier::ZtHandle>) -> Self {
        self.zerotier = zerotier;
        self
    }

    fn publish(&mut self) {
        self.collect();
        self.drain_events();
        self.version += 1;
        let now = Instant::now();
        let mut connections: Vec<ConnectionDto> = self
            .open
            .values()
            .map(|(c, since)| ConnectionDto {
                duration_ms: now.duration_since(*since).as_millis() as u64,
                ..c.clone()
            })
            .collect();
        connections.sort_by_key(|c| std::cmp::Reverse(c.id));
        connections.extend(self.closed.iter().rev().cloned());
        connections.truncate(MAX_CONNECTIONS);
        let mut totals = self.totals.clone();
        totals.connections_open = self.open.len() as u64;
        totals.plugin_errors = self.router.plugin_errors();
        totals.bytes_up = self.interfaces.iter().map(|i| i.bytes_up).sum();
        totals.bytes_down = self.interfaces.iter().map(|i| i.bytes_down).sum();
        let feed = Feed {
            version: self.version,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            started_unix_ms: self.started_unix_ms,
            interfaces: self.interfaces.clone(),
            strategy: self.strategy(),
            totals,
            connections,
            events: self.recent_events.iter().rev().cloned().collect(),
            zerotier: self.zerotier.as_ref().map(|z| z.load().dto()),
        };
        self.tx.send_replace(Arc::new(feed));
    }

    fn strategy(&self) -> StrategyDto {
        StrategyDto {
            active: self.router.selected(),
            available: self
                .router
                .available()
                .into_iter()
                .map(|s| StrategyInfo {
                    name: s.name,
                    description: s.description,
                    source: s.source,
                })
                .collect(),
            fallback_active: self.router.is_fallback(),
            last_error: self.router.fallback_reason().or_else(|| {
                self.recent_events
                    .iter()
                    .rev()
                    .find(|e| e.kind == "plugin_error" || e.kind == "fallback")
                    .map(|e| e.message.clone())
            }),
        }
    }

    fn drain_events(&mut self) {
        let Some(rx) = self.events.as_mut() else {
            return;
        };
        loop {
            match rx.try_recv() {
                Ok(e) => {
                    if self.recent_events.len() == MAX_EVENTS {
                        self.recent_events.pop_front();
                    }
                    if e.kind == crate::events::EventKind::Failover {
                        self.totals.failovers += 1;
                    }
                    self.recent_events.push_back(EventDto {
                        unix_ms: e.unix_ms,
                        kind: e.kind.as_str().to_owned(),
                        message: e.message,
                        interface: e.interface,
                    });
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    tracing::debug!(lost = n, "Dashboard feed fell behind on events.");
                }
                Err(_) => break,
            }
        }
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let manager = self.manager.clone();
        let snapshot = self.router.snapshot();
        let gather = async move {
            let mut out = Vec::with_capacity(snapshot.all.len());
            for m in &snapshot.all {
                let history = manager
                    .send(LatencyHistoryOf(m.state.id))
                    .await
                    .unwrap_or_default();
                out.push(interface_dto(m, &history));
            }
            out
        };
        ctx.spawn(gather.into_actor(self).map(|interfaces, act, _| {
            act.interfaces = interfaces;
            act.publish();
        }));
    }
}

fn interface_dto(m: &Member, history: &[(Duration, u32)]) -> InterfaceDto {
    let (v, live) = (&m.state, &m.handles.live);
    let s = v;
    let attempts = v.attempts();
    InterfaceDto {
        id: v.id,
        name: v.name.clone(),
        kind: v.kind.as_str().to_owned(),
        health: v.health.as_str().to_owned(),
        link_up: v.link_up,
        addrs: v.addrs.iter().map(|n| n.addr().to_string()).collect(),
        weight: v.weight,
        metered: v.metered,
        latency_ms: v.latency_ewma_us.map(|us| f64::from(us) / 1000.0),
        jitter_ms: f64::from(v.jitter_us) / 1000.0,
        latency_history: history
            .iter()
            .map(|(age, us)| LatencyPoint {
                age_ms: age.as_millis() as u64,
                ms: f64::from(*us) / 1000.0,
            })
            .collect(),
        successes: s.successes,
        failures: s.failures,
        success_rate: (attempts > 0).then(|| s.successes as f64 / attempts as f64),
        active: live.active(),
        bytes_up: live.bytes_up(),
        bytes_down: live.bytes_down(),
        up_bps: s.up_bps,
        down_bps: s.down_bps,
        peak_down_bps: s.peak_down_bps,
        connect_timeout_ms: v.connect_timeout.as_millis() as u64,
        ejections: s.ejections,
    }
}

impl Actor for DashboardFeed {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.refresh(ctx);
        ctx.run_interval(PUBLISH_EVERY, |act, ctx| act.refresh(ctx));
    }
}

impl Handler<Wake> for DashboardFeed {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        if !self.collect_pending {
            self.collect_pending = true;
            ctx.run_later(COLLECT_AFTER, |act, _| {
                act.collect_pending = false;
                act.collect();
            });
        }
    }
}

impl DashboardFeed {
    fn apply(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Opened {
                id,
                at,
                at_unix_ms,
                client,
                protocol,
                destination,
                interface,
                tried,
                since_accept,
                strategy,
                reason,
                error,
            } => {
                self.totals.connections_total += 1;
                *self
                    .totals
                    .connections_by_protocol
                    .entry(protocol.clone())
                    .or_default() += 1;
                let failed = error.is_some();
                let retries = u32::try_from(tried.len()).unwrap_or(u32::MAX);
                let dto = ConnectionDto {
                    id,
                    client,
                    protocol,
                    destination,
                    interface,
                    tried,
                    strategy,
                    reason,
                    state: if failed { "failed" } else { "open" }.to_owned(),
                    error,
                    bytes_up: 0,
                    bytes_down: 0,
                    started_unix_ms: at_unix_ms.saturating_sub(since_accept.as_millis() as u64),
                    // A failed connection's whole life is the wait for its answer.
                    duration_ms: if failed {
                        since_accept.as_millis() as u64
                    } else {
                        0
                    },
                    retries,
                };
                if failed {
                    self.totals.failed += 1;
                    self.push_closed(dto);
                } else {
                    self.open.insert(id, (dto, at));
                }
            }
            ConnEvent::Moved {
                id,
                interface,
                retries,
            } => {
                if let Some((dto, _)) = self.open.get_mut(&id) {
                    dto.interface = Some(interface);
                    dto.retries = retries;
                }
            }
            ConnEvent::Closed {
                id,
                at,
                bytes_up,
                bytes_down,
            } => {
                if let Some((mut dto, since)) = self.open.remove(&id) {
                    dto.state = "closed".to_owned();
                    dto.bytes_up = bytes_up;
                    dto.bytes_down = bytes_down;
                    dto.duration_ms = at.saturating_duration_since(since).as_millis() as u64;
                    self.push_closed(dto);
                }
            }
        }
    }
}

impl DashboardFeed {
    fn push_closed(&mut self, dto: ConnectionDto) {
        if self.closed.len() == MAX_CONNECTIONS {
            self.closed.pop_front();
        }
        self.closed.push_back(dto);
    }
}

/// The dashboard's handle for switching strategies.
pub struct RouterControl(pub Arc<Router>);

impl netmix_web::Control for RouterControl {
    fn set_strategy(&self, name: &str) -> Result<(), String> {
        self.0.select(name)
    }
}
