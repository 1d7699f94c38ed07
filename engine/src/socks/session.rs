//! One connection's record from decision to close, which every sink reads: the dashboard
//! feed, the connection log, the deciding strategy and the event log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use abi_stable::std_types::{RNone, RSome, RString};
use netmix_plugin_api as api;
use tokio::time::Instant;

use super::conn::ServeContext;
use super::handshake::TargetAddr;
use super::relay::Totals;
use crate::connlog::{Attempt, CandidateStats, ConnRecord};
use crate::events::{EventKind, unix_ms};
use crate::feed::ConnEvent;
use crate::iface::bind::ConnectError;
use crate::router::{ActiveStrategy, Member};

/// What decides where a connection goes.
pub(crate) enum Route {
    /// The strategy, asked with the resolved address.
    Ask,
    /// netmix's own rule (loopback, on-link, `routing.direct`).
    Local(LocalRoute),
    /// The strategy, asked already (with the host name, before resolving it).
    Decided(Box<Decided>),
}

/// A decision made before the name was resolved, for the connection `id`.
pub(crate) struct Decided {
    pub(crate) id: u64,
    pub(crate) decision: crate::router::Decision,
}

/// What strategies are told about connection `id`.
pub(crate) fn meta_for(
    id: u64,
    peer: SocketAddr,
    port: u16,
    host: Option<String>,
    addr: Option<&SocketAddr>,
    protocol: api::ClientProtocol,
    transport: api::Transport,
) -> api::ConnMeta {
    let mut meta = match addr {
        Some(a) => api::ConnMeta::for_addr(a.ip(), port),
        None => api::ConnMeta::for_host("", port),
    };
    meta.id = id;
    meta.host = host.map_or(RNone, |h| RSome(RString::from(h)));
    meta.client = peer.ip().into();
    meta.client_port = peer.port();
    meta.protocol = protocol;
    meta.transport = transport;
    meta
}

/// One connection's record, from decision to close: every sink (dashboard feed, connection
/// log, the deciding strategy, the event log) reads it, so each learns the same facts.
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) destination: String,
    /// How the client asked (`socks5`, `http-forward`, `socks5-udp`, …) for the feed and log.
    pub(crate) label: &'static str,
    accepted_unix_ms: u64,
    /// When the request was taken (a failed connection's duration runs from here).
    accepted_at: Instant,
    /// What strategies see; `tried` grows with each failed interface.
    pub(crate) meta: api::ConnMeta,
    pub(crate) strategy: String,
    pub(crate) reason: String,
    /// The strategy that decided (`None` for a local route: on-link, loopback, direct).
    pub(crate) decided_by: Option<Arc<ActiveStrategy>>,
    /// A local route: only the interface it names (no re-pick after a failure).
    pub(crate) pinned: bool,
    /// The first decision's order (fallbacks after the first pick); the connect phase takes it.
    pub(crate) order: Vec<Member>,
    /// Every candidate's numbers at decision time (only with a connection log).
    candidates: Option<Vec<CandidateStats>>,
    /// Failed attempts: interface name and error.
    pub(crate) failed: Vec<(String, String)>,
    pub(crate) connect_time: Duration,
    relay_started: Option<Instant>,
}

impl Session {
    /// Builds the connection's facts and asks the router (the pick phase), unless `route`
    /// already says where the destination lives or a decision was made (before resolving the
    /// name it was made for).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ctx: &ServeContext,
        peer: SocketAddr,
        target: &TargetAddr,
        host: Option<String>,
        addrs: &[SocketAddr],
        protocol: api::ClientProtocol,
        transport: api::Transport,
        route: Route,
    ) -> Self {
        let id = match &route {
            Route::Decided(d) => d.id,
            Route::Local(LocalRoute { id: Some(id), .. }) => *id,
            _ => ctx.next_id.fetch_add(1, Ordering::Relaxed),
        };
        let meta = meta_for(
            id,
            peer,
            target.port(),
            host,
            addrs.first(),
            protocol,
            transport,
        );
        let label = match (protocol, transport) {
            (api::ClientProtocol::Socks5, api::Transport::Udp) => "socks5-udp",
            _ => protocol.known_name().unwrap_or("other"),
        };
        let pinned = matches!(route, Route::Local(_));
        let (strategy, reason, decided_by, order) = match route {
            Route::Local(route) => (LOCAL_STRATEGY.to_owned(), route.reason, None, route.order),
            Route::Decided(d) => {
                let d = d.decision;
                (d.strategy, d.reason, Some(d.decided_by), d.order)
            }
            Route::Ask => {
                let d = ctx.router.pick(&meta);
                (d.strategy, d.reason, Some(d.decided_by), d.order)
            }
        };
        let candidates = ctx.conn_log.as_ref().map(|_| {
            ctx.router
                .snapshot()
                .usable()
                .map(CandidateStats::of)
                .collect()
        });
        Self {
            id,
            peer,
            destination: target.to_string(),
            label,
            accepted_unix_ms: unix_ms(),
            accepted_at: Instant::now(),
            meta,
            strategy,
            reason,
            decided_by,
            pinned,
            order,
            candidates,
            failed: Vec::new(),
            connect_time: Duration::ZERO,
            relay_started: None,
        }
    }

    /// Tells the deciding strategy (if one decided) about an outcome.
    pub(crate) fn observe(&self, outcome: impl FnOnce() -> api::ConnOutcome) {
        if let Some(strategy) = &self.decided_by {
            strategy.observe(outcome);
        }
    }

    pub(crate) fn outcome(&self, iface: u32, stage: api::OutcomeStage) -> api::ConnOutcome {
        let mut o = api::ConnOutcome::new(iface, self.meta.clone(), stage);
        o.connect_us = u32::try_from(self.connect_time.as_micros()).unwrap_or(u32::MAX);
        o
    }

    fn opened_event(&self, interface: Option<&str>, error: Option<String>) -> ConnEvent {
        ConnEvent::Opened {
            id: self.id,
            at: Instant::now(),
            at_unix_ms: unix_ms(),
            client: self.peer.to_string(),
            protocol: self.label.to_owned(),
            destination: self.destination.clone(),
            interface: interface.map(str::to_owned),
            tried: self.failed.iter().map(|(name, _)| name.clone()).collect(),
            since_accept: self.accepted_at.elapsed(),
            strategy: self.strategy.clone(),
            reason: self.reason.clone(),
            error,
        }
    }

    fn log_record(
        &self,
        chosen: Option<&str>,
        totals: Totals,
        error: Option<String>,
    ) -> Option<ConnRecord> {
        let candidates = self.candidates.clone()?;
        let mut attempts: Vec<Attempt> = self
            .failed
            .iter()
            .map(|(n, e)| Attempt {
                interface: n.clone(),
                ok: false,
                error: Some(e.clone()),
            })
            .collect();
        match chosen {
            Some(name) => attempts.push(Attempt {
                interface: name.to_owned(),
                ok: true,
                error: None,
            }),
            None if attempts.is_empty() => attempts.push(Attempt {
                interface: String::new(),
                ok: false,
                error,
            }),
            None => {}
        }
        Some(ConnRecord {
            unix_ms: self.accepted_unix_ms,
            id: self.id,
            client: self.peer.to_string(),
            protocol: self.label.to_owned(),
            host: self.meta.host.as_ref().map(|h| h.to_string()).into_option(),
            addr: self.meta.addr.as_ref().map(|a| a.to_string()).into_option(),
            port: self.meta.port,
            strategy: self.strategy.clone(),
            reason: self.reason.clone(),
            candidates,
            attempts,
            chosen: chosen.map(str::to_owned),
            ok: chosen.is_some(),
            connect_us: self.connect_time.as_micros() as u64,
            bytes_up: totals.up,
            bytes_down: totals.down,
            duration_ms: self
                .relay_started
                .map_or(0, |t| t.elapsed().as_millis() as u64),
        })
    }

    /// No interface connected: tell the feed, the log and the strategy.
    pub(crate) fn failed(&self, ctx: &ServeContext, error: Option<&ConnectError>) {
        self.failed_because(
            ctx,
            error.map_or_else(|| "no usable interface".to_owned(), ToString::to_string),
        );
    }

    /// The connection never carried anything, for the reason `why`: tell the feed and the log.
    pub(crate) fn failed_because(&self, ctx: &ServeContext, why: String) {
        if let Some(feed) = &ctx.feed {
            feed.send(self.opened_event(None, Some(why.clone())));
        }
        if let (Some(log), Some(record)) = (
            &ctx.conn_log,
            self.log_record(None, Totals::default(), Some(why)),
        ) {
            log.log(record);
        }
    }

    /// Connected through `member`: remember it, tell the feed, the strategy and the event log.
    pub(crate) fn connected(&mut self, ctx: &ServeContext, via: Via<'_>) {
        self.relay_started = Some(Instant::now());
        if let Some(feed) = &ctx.feed {
            feed.send(self.opened_event(Some(via.name()), None));
        }
        let Via::Interface(member) = via else {
            return;
        };
        if !self.pinned {
            ctx.router.remember(&self.meta, member.state.id);
        }
        if !self.failed.is_empty() {
            let tried: Vec<String> = self
                .failed
                .iter()
                .map(|(n, e)| format!("{n} ({e})"))
                .collect();
            let message = format!(
                "{}: {} failed, connected via {}",
                self.destination,
                tried.join(", "),
                member.state.name
            );
            tracing::info!(peer = %self.peer, target = %self.destination, iface = %member.state.name, failed = ?tried, "Failed over.");
            ctx.events
                .emit(EventKind::Failover, Some(&member.state.name), message);
        }
        self.observe(|| self.outcome(member.state.id, api::OutcomeStage::Connected));
    }

    /// The connection left `from` (no longer usable: `why`) for `to` without a new connect
    /// (a UDP association follows its interface): the strategy hears that `from` failed it and
    /// `to` carries it, the feed shows the new interface, and the move is logged at INFO and
    /// in the event log as a failover.
    pub(crate) fn moved(&mut self, ctx: &ServeContext, from: &Member, to: &Member, why: &str) {
        self.failed.push((from.state.name.clone(), why.to_owned()));
        self.observe(|| self.outcome(from.state.id, api::OutcomeStage::ConnectFailed));
        ctx.router.remember(&self.meta, to.state.id);
        if let Some(feed) = &ctx.feed {
            feed.send(ConnEvent::Moved {
                id: self.id,
                interface: to.state.name.clone(),
                retries: self.failed.len() as u32,
            });
        }
        tracing::info!(peer = %self.peer, target = %self.destination, protocol = self.label, from = %from.state.name, iface = %to.state.name, why, "Failed over.");
        let message = format!(
            "{} ({}): {} {why}, moved to {}",
            self.destination, self.label, from.state.name, to.state.name
        );
        ctx.events
            .emit(EventKind::Failover, Some(&to.state.name), message);
        self.observe(|| self.outcome(to.state.id, api::OutcomeStage::Connected));
    }

    /// The relay ended (or never started): the record's last facts go to every sink.
    pub(crate) fn closed(&self, ctx: &ServeContext, via: Via<'_>, totals: Totals) {
        if let (Some(log), Some(record)) = (
            &ctx.conn_log,
            self.log_record(Some(via.name()), totals, None),
        ) {
            log.log(record);
        }
        if let Some(feed) = &ctx.feed {
            feed.send(ConnEvent::Closed {
                id: self.id,
                at: Instant::now(),
                bytes_up: totals.up,
                bytes_down: totals.down,
            });
        }
        tracing::debug!(peer = %self.peer, target = %self.destination, via = via.name(), up = totals.up, down = totals.down, "Closed.");
        let Via::Interface(member) = via else {
            return;
        };
        self.observe(|| {
            let mut outcome = self.outcome(member.state.id, api::OutcomeStage::Closed);
            outcome.bytes_up = totals.up;
            outcome.bytes_down = totals.down;
            outcome.duration_us = self
                .relay_started
                .map_or(0, |t| t.elapsed().as_micros() as u64);
            outcome
        });
    }
}

/// The strategy column of a connection routed locally.
pub(crate) const LOCAL_STRATEGY: &str = "local route";

/// Where a destination lives when the strategy is not asked: the interface whose on-link
/// subnet holds it, or nowhere in particular (loopback, `routing.direct`: the OS routes it).
pub(crate) struct LocalRoute {
    /// `on-link (wan1, 198.18.11.0/24)`, `loopback`, `direct (10.0.0.0/8)`.
    pub reason: String,
    /// The one interface to use; empty for an unbound connection.
    pub order: Vec<Member>,
    /// The connection's id when one was taken already (a name resolved after a pick).
    pub id: Option<u64>,
}

/// What carried a connection: an interface, or the OS's own routing (unbound).
#[derive(Clone, Copy)]
pub(crate) enum Via<'a> {
    /// Bound to this interface.
    Interface(&'a Member),
    /// Unbound: `loopback` or `direct`.
    Unbound(&'static str),
}

impl Via<'_> {
    /// The name the dashboard and the log show.
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Interface(m) => &m.state.name,
            Self::Unbound(name) => name,
        }
    }
}
