//! The connection path every front end shares: resolve the target, apply `socks.deny`, ask
//! the strategy, connect through the interfaces it picks (failing over on interface-side
//! errors), and hand back an open outbound stream with its [`Session`] record, or the
//! failure as a SOCKS5 reply code that each front maps to its own protocol's answer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use abi_stable::std_types::RArc;
use ipnet::IpNet;
use netmix_plugin_api as api;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use super::conn::ServeContext;
use super::handshake::{Reply, TargetAddr};
use super::relay::{Totals, relay};
use super::session::{Decided, LocalRoute, Route, Session, Via, meta_for};
use crate::config::DnsMode;
use crate::dns::{Answer, AnswerSource, Failure};
use crate::iface::bind::{ConnectError, connect_any};
use crate::iface::{Outcome, Rescan, Source};
use crate::router::Member;

/// An outbound connection that is open, with its record; the front sends its success reply,
/// then [`Opened::relay`]s (or drives the stream itself and closes the [`Record`]).
pub(crate) struct Opened {
    /// The outbound stream.
    pub stream: TcpStream,
    /// What is recorded of it.
    pub record: Record,
}

/// An open connection's record and what carries it; on an interface, it counts as in flight
/// there until [`Record::closed`].
pub(crate) struct Record {
    /// The connection's record.
    pub session: Session,
    carrier: Carrier,
}

enum Carrier {
    Interface {
        member: Member,
        _in_flight: InFlight,
    },
    Unbound(&'static str),
}

impl Carrier {
    fn via(&self) -> Via<'_> {
        match self {
            Self::Interface { member, .. } => Via::Interface(member),
            Self::Unbound(name) => Via::Unbound(name),
        }
    }
}

impl Record {
    /// What carries the connection.
    pub fn via(&self) -> Via<'_> {
        self.carrier.via()
    }

    /// The counters bytes moved count in: the interface's, or (unbound) a private set.
    pub fn live(&self) -> RArc<api::LiveCounters> {
        match &self.carrier {
            Carrier::Interface { member, .. } => member.handles.live.clone(),
            Carrier::Unbound(_) => RArc::new(api::LiveCounters::default()),
        }
    }

    /// The connection is over, having moved `totals`: every sink hears of it.
    pub fn closed(self, ctx: &ServeContext, totals: Totals) {
        self.session.closed(ctx, self.via(), totals);
    }
}

/// A connection an interface carries without a connect of netmix's (a UDP association, a
/// BIND's listening socket), counted in flight there while it lives.
pub(crate) struct Held {
    /// The connection's record.
    pub session: Session,
    /// The interface that carries it.
    pub member: Member,
    _in_flight: InFlight,
}

impl Held {
    /// `member` carries `session` from now on (counted in flight there).
    pub fn start(session: Session, member: Member) -> Self {
        let in_flight = InFlight::start(&member.handles.live);
        Self {
            session,
            member,
            _in_flight: in_flight,
        }
    }

    /// The connection leaves its interface (no longer usable: `why`) for `to`: it counts in
    /// flight there from now on, and every sink hears of the move.
    pub fn moved(&mut self, ctx: &ServeContext, to: Member, why: &str) {
        let from = std::mem::replace(&mut self.member, to);
        self._in_flight = InFlight::start(&self.member.handles.live);
        self.session.moved(ctx, &from, &self.member, why);
    }

    /// The connection never carried anything, for the reason `why`: every sink hears of the
    /// failure instead of a close.
    pub fn failed(self, ctx: &ServeContext, why: String) {
        self.session.failed_because(ctx, why);
    }

    /// The connection is over, having moved `totals`: every sink hears of it.
    pub fn closed(self, ctx: &ServeContext, totals: Totals) {
        self.session
            .closed(ctx, Via::Interface(&self.member), totals);
    }
}

impl From<Held> for Record {
    fn from(held: Held) -> Self {
        Self {
            session: held.session,
            carrier: Carrier::Interface {
                member: held.member,
                _in_flight: held._in_flight,
            },
        }
    }
}

impl Opened {
    /// Sends `early_data` (bytes the client sent after its request) on, relays until either
    /// side is done, and records the close.
    pub async fn relay(self, ctx: &ServeContext, client: &TcpStream, early_data: &[u8]) {
        let Self {
            stream: mut outbound,
            record,
        } = self;
        if !early_data.is_empty() && outbound.write_all(early_data).await.is_err() {
            record.closed(ctx, Totals::default());
            return;
        }
        let session = &record.session;
        tracing::debug!(peer = %session.peer, target = %session.destination, via = record.via().name(), reason = %session.reason, "Relaying.");
        let live = record.live();
        live.bytes_up
            .fetch_add(early_data.len() as u64, Ordering::Relaxed);
        let mut totals = relay(client, &outbound, &live, ctx.idle_timeout).await;
        totals.up += early_data.len() as u64;
        record.closed(ctx, totals);
    }
}

/// A target resolved and allowed: the host name (when there was one), the addresses, and
/// the strategy's decision when it had to be made before the name was resolved.
struct Resolved {
    host: Option<String>,
    addrs: Vec<SocketAddr>,
    decided: Option<Decided>,
}

/// Resolves `target` and checks every address against what clients may not reach
/// ([`refusal`]). A name `/etc/hosts` and the cache cannot answer is asked of DNS through the
/// interfaces the strategy picks for it (a decision the connection then keeps), the one whose
/// server answered first.
async fn resolve_allowed(
    ctx: &ServeContext,
    peer: SocketAddr,
    target: &TargetAddr,
    protocol: api::ClientProtocol,
    transport: api::Transport,
) -> Result<Resolved, Reply> {
    let (host, addrs, decided) = match target {
        TargetAddr::Ip(addr) => (None, vec![*addr], None),
        TargetAddr::Domain(host, port) => {
            let (answer, decided) = resolve_name(ctx, peer, host, *port, protocol, transport)
                .await
                .map_err(|failure| {
                    tracing::info!(%peer, %target, "Cannot resolve: {failure}.");
                    Reply::HostUnreachable
                })?;
            let addrs = answer
                .addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, *port))
                .collect();
            (Some(host.clone()), addrs, decided)
        }
    };
    if let Some(refusal) = refusal(ctx, &addrs) {
        tracing::info!(%peer, %target, "{refusal}");
        return Err(Reply::NotAllowed);
    }
    Ok(Resolved {
        host,
        addrs,
        decided,
    })
}

/// Resolves `host`. A name the hosts file or the cache knows (or `system` mode) needs no
/// decision yet; otherwise the strategy picks for the name, DNS asks through its order, and
/// the connection keeps that decision (with the answering interface first), unless the
/// strategy must see the address to decide.
async fn resolve_name(
    ctx: &ServeContext,
    peer: SocketAddr,
    host: &str,
    port: u16,
    protocol: api::ClientProtocol,
    transport: api::Transport,
) -> Result<(Answer, Option<Decided>), Failure> {
    let quick = match ctx.dns.mode() {
        DnsMode::Netmix => ctx.dns.local_answer(host),
        DnsMode::System => Some(ctx.dns.resolve(host, &[], &[], ctx.connect_timeout).await?),
    };
    if let Some(answer) = quick {
        return Ok((answer, None));
    }
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = meta_for(
        id,
        peer,
        port,
        Some(host.to_owned()),
        None,
        protocol,
        transport,
    );
    let mut decision = ctx.router.pick(&meta);
    let answer = ctx
        .dns
        .resolve(
            host,
            &decision.order,
            &present_members(ctx),
            ctx.connect_timeout,
        )
        .await?;
    if let AnswerSource::Interface(by) = &answer.source {
        prefer_answering(&mut decision, by);
    }
    // The zerotier strategy routes by address (a ZeroTier network's routes, an exit node):
    // it decides again once the address is known.
    let decided = (!needs_address(ctx, &answer.addrs)).then_some(Decided { id, decision });
    Ok((answer, decided))
}

/// The answer came through `by`: the connection goes there first (the server there answered
/// for that network, and the interfaces before it did not answer in time), and the reason
/// says so when that is not the strategy's first choice.
fn prefer_answering(decision: &mut crate::router::Decision, by: &Member) {
    let Some(at) = decision
        .order
        .iter()
        .position(|m| m.state.id == by.state.id)
    else {
        return;
    };
    if at > 0 {
        let skipped = decision.order[0].state.name.clone();
        let member = decision.order.remove(at);
        decision.order.insert(0, member);
        decision.reason = format!(
            "{}; DNS answered through {} first ({skipped} did not)",
            decision.reason, by.state.name
        );
    }
}

/// Whether the strategy must see the address to decide: the zerotier strategy is active, or
/// an address lies in a ZeroTier network.
fn needs_address(ctx: &ServeContext, addrs: &[IpAddr]) -> bool {
    if ctx.router.active_name() == "zerotier" {
        return true;
    }
    ctx.router.snapshot().all.iter().any(|m| {
        m.state.kind == crate::iface::scan::InterfaceKind::ZeroTier
            && m.state
                .addrs
                .iter()
                .any(|n| addrs.iter().any(|a| n.contains(a)))
    })
}

/// Every interface that could carry a connection (the DNS fallback when the strategy has no
/// usable one).
fn present_members(ctx: &ServeContext) -> Vec<Member> {
    ctx.router
        .snapshot()
        .all
        .iter()
        .filter(|m| {
            m.state.is_present() && m.state.kind != crate::iface::scan::InterfaceKind::ZeroTier
        })
        .cloned()
        .collect()
}

/// How the strategy is consulted for a resolved target: asked now, or the decision made
/// for its name before resolving.
fn route_for(decided: Option<Decided>) -> Route {
    decided.map_or(Route::Ask, |d| Route::Decided(Box::new(d)))
}

/// The decision for a connection netmix does not connect itself (a UDP association's first
/// destination, a BIND's expected peer): resolve, refuse what clients may not reach, ask the
/// strategy. Local routes do not apply (the strategy picks the carrying interface).
pub(crate) async fn decide(
    ctx: &ServeContext,
    peer: SocketAddr,
    target: &TargetAddr,
    protocol: api::ClientProtocol,
    transport: api::Transport,
) -> Result<(Session, Vec<SocketAddr>), Reply> {
    let Resolved {
        host,
        addrs,
        decided,
    } = resolve_allowed(ctx, peer, target, protocol, transport).await?;
    let session = Session::new(
        ctx,
        peer,
        target,
        host,
        &addrs,
        protocol,
        transport,
        route_for(decided),
    );
    Ok((session, addrs))
}

/// Where a destination lives when the strategy is not to be asked.
enum Local {
    /// Loopback or `routing.direct`: connect unbound, the OS routes it.
    Unbound(&'static str, String),
    /// Inside this interface's on-link subnet: through it only.
    OnLink(Member, String),
}

/// Loopback goes over loopback, a `routing.direct` network follows the OS's routing table,
/// and a destination in an interface's on-link subnet goes through that interface, whatever
/// the strategy would say (judged by the first resolved address); ZeroTier networks excepted.
fn local_route(ctx: &ServeContext, addrs: &[SocketAddr]) -> Option<Local> {
    let ip = effective_ip(addrs.first()?.ip());
    if ip.is_loopback() {
        return Some(Local::Unbound("loopback", "loopback".to_owned()));
    }
    if let Some(net) = ctx.direct.iter().find(|n| n.contains(&ip)) {
        return Some(Local::Unbound("direct", format!("direct ({net})")));
    }
    let snapshot = ctx.router.snapshot();
    snapshot
        .all
        .iter()
        // A ZeroTier network's subnet is the zerotier strategy's to route (it knows whether the
        // network is up and which routes are allowed); the plain strategies never use it.
        .filter(|m| !m.state.retired && m.state.kind != crate::iface::scan::InterfaceKind::ZeroTier)
        .find_map(|m| {
            let net = m
                .state
                .addrs
                .iter()
                .find(|n| n.prefix_len() < n.max_prefix_len() && n.contains(&ip))?;
            let reason = format!("on-link ({}, {})", m.state.name, net.trunc());
            Some(Local::OnLink(m.clone(), reason))
        })
}

/// Connects without binding to any interface (the OS routes it), trying `addrs` in order
/// within `deadline`.
async fn connect_unbound(
    addrs: &[SocketAddr],
    deadline: Duration,
) -> Result<TcpStream, ConnectError> {
    let until = Instant::now() + deadline;
    let mut last = ConnectError::Timeout;
    for addr in addrs {
        let left = until.saturating_duration_since(Instant::now());
        match timeout(left, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = ConnectError::Io(e),
            Err(_) => return Err(ConnectError::Timeout),
        }
    }
    Err(last)
}

/// Resolves `target`, checks `socks.deny`, picks and connects. Failures are logged (INFO for
/// a connect failure, as before) and come back as the SOCKS5 reply code that says why:
/// `NotAllowed` (denied), `HostUnreachable` (no such name), or the connect error's code.
pub(crate) async fn open(
    ctx: &ServeContext,
    peer: SocketAddr,
    target: &TargetAddr,
    protocol: api::ClientProtocol,
) -> Result<Opened, Reply> {
    let Resolved {
        host,
        addrs,
        decided,
    } = resolve_allowed(ctx, peer, target, protocol, api::Transport::Tcp).await?;
    let id = decided.as_ref().map(|d| d.id);
    let (route, unbound) = match local_route(ctx, &addrs) {
        None => (route_for(decided), None),
        Some(Local::Unbound(name, reason)) => (
            Route::Local(LocalRoute {
                reason,
                order: Vec::new(),
                id,
            }),
            Some(name),
        ),
        Some(Local::OnLink(member, reason)) => (
            Route::Local(LocalRoute {
                reason,
                order: vec![member],
                id,
            }),
            None,
        ),
    };
    let mut session = Session::new(
        ctx,
        peer,
        target,
        host,
        &addrs,
        protocol,
        api::Transport::Tcp,
        route,
    );
    let connected = match unbound {
        Some(name) => {
            let started = Instant::now();
            connect_unbound(&addrs, ctx.connect_timeout)
                .await
                .map(|stream| {
                    session.connect_time = started.elapsed();
                    (stream, Carrier::Unbound(name))
                })
                .map_err(Some)
        }
        None => connect_with_failover(ctx, &mut session, &addrs)
            .await
            .map(|c| {
                (
                    c.stream,
                    Carrier::Interface {
                        member: c.member,
                        _in_flight: c._in_flight,
                    },
                )
            }),
    };
    match connected {
        Ok((stream, carrier)) => {
            session.connected(ctx, carrier.via());
            Ok(Opened {
                stream,
                record: Record { session, carrier },
            })
        }
        Err(error) => {
            let reply = error.as_ref().map_or(Reply::NetworkUnreachable, reply_for);
            tracing::info!(
                %peer,
                %target,
                protocol = session.label,
                outcome = reply.describe(),
                error = %error.as_ref().map_or_else(|| "no usable interface".to_owned(), ToString::to_string),
                "Connection failed."
            );
            session.failed(ctx, error.as_ref());
            Err(reply)
        }
    }
}

/// A connection counted in its interface's in-flight number ([`api::LiveCounters::active`])
/// from the start of its connect until this is dropped (connect failed, or relay over).
struct InFlight(RArc<api::LiveCounters>);

impl InFlight {
    fn start(live: &RArc<api::LiveCounters>) -> Self {
        live.active.fetch_add(1, Ordering::Relaxed);
        live.opened.fetch_add(1, Ordering::Relaxed);
        Self(live.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connects through the decision's first interface, then (on interface-side failures) through
/// what the strategy picks next with the failed ones in `tried`, up to `max_attempts`; with
/// `race_after` set, a slow attempt is raced by the next one after that stagger and the first
/// to connect wins.
///
/// Health bookkeeping: a link-level failure (network unreachable, device gone) counts against
/// its interface at once; a timeout or host-unreachable counts only when another interface then
/// reached the same destination (otherwise the destination is the likelier culprit); a refusal
/// proves the link works and ends the attempts.
///
/// # Errors
/// The last failure, or `None` when no interface could even try.
async fn connect_with_failover(
    ctx: &ServeContext,
    conn: &mut Session,
    addrs: &[SocketAddr],
) -> Result<Connected, Option<ConnectError>> {
    // Interfaces still to try, best first: the decision's order, replaced by a fresh pick after
    // each failure.
    let mut queue: Vec<Member> = std::mem::take(&mut conn.order);
    let mut launched: Vec<u32> = Vec::new();
    let mut attempts = JoinSet::new();
    let mut soft_failures: Vec<Member> = Vec::new();
    let mut last_error = None;
    let next = |queue: &mut Vec<Member>, launched: &[u32]| -> Option<(Member, Vec<SocketAddr>)> {
        if launched.len() >= ctx.max_attempts {
            return None;
        }
        while !queue.is_empty() {
            let member = queue.remove(0);
            if launched.contains(&member.state.id) {
                continue;
            }
            let dests = attempt_order(addrs, |a| member.state.source_for(a).is_some());
            if !dests.is_empty() {
                return Some((member, dests));
            }
        }
        None
    };
    let launch = |attempts: &mut JoinSet<_>,
                  launched: &mut Vec<u32>,
                  (member, dests): (Member, Vec<SocketAddr>)| {
        launched.push(member.state.id);
        // Counted before the task starts, so the very next pick (a burst) already sees it.
        let in_flight = InFlight::start(&member.handles.live);
        attempts.spawn(async move {
            let started = Instant::now();
            let result = connect_any(&member.state, &dests, member.state.connect_timeout).await;
            (member, started.elapsed(), result.map(|s| (s, in_flight)))
        });
    };
    loop {
        if attempts.is_empty() {
            let Some(candidate) = next(&mut queue, &launched) else {
                return Err(last_error);
            };
            launch(&mut attempts, &mut launched, candidate);
        }
        let race = ctx
            .race_after
            .filter(|_| launched.len() < ctx.max_attempts && !queue.is_empty());
        let stagger = async {
            match race {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(joined) = attempts.join_next() => {
                let Ok((member, elapsed, result)) = joined else { continue };
                match result {
                    Ok((stream, in_flight)) => {
                        member.handles.connected(Source::Connection, elapsed);
                        for failed in soft_failures {
                            failed.handles.failed(Source::Connection, Outcome::Failed);
                        }
                        conn.connect_time = elapsed;
                        return Ok(Connected { member, stream, _in_flight: in_flight });
                    }
                    Err(error) => {
                        tracing::debug!(iface = %member.state.name, %error, elapsed_ms = elapsed.as_millis() as u64, "Connect failed.");
                        if !error.is_interface_side() {
                            // The destination answered (refused): the link works, and another
                            // interface would hear the same answer.
                            member.handles.connected(Source::Connection, elapsed);
                            return Err(Some(error));
                        }
                        conn.failed.push((member.state.name.clone(), error.to_string()));
                        conn.meta.tried.push(member.state.id);
                        conn.observe(|| conn.outcome(member.state.id, api::OutcomeStage::ConnectFailed));
                        if error.suggests_link_down() {
                            ctx.rescan.do_send(Rescan);
                        }
                        if error.is_link_failure() {
                            member.handles.failed(Source::Connection, Outcome::LinkFailed);
                        } else {
                            soft_failures.push(member);
                        }
                        last_error = Some(error);
                        // Ask again, with what failed in `tried`.
                        if !conn.pinned {
                            queue = ctx.router.pick(&conn.meta).order;
                            if queue.is_empty() && attempts.is_empty() {
                                queue = last_resort(ctx, &launched);
                            }
                        }
                        if attempts.is_empty()
                            && let Some(candidate) = next(&mut queue, &launched)
                        {
                            launch(&mut attempts, &mut launched, candidate);
                        }
                    }
                }
            }
            () = stagger => {
                if let Some(candidate) = next(&mut queue, &launched) {
                    launch(&mut attempts, &mut launched, candidate);
                }
            }
        }
    }
}

/// The addresses an interface tries, in RFC 8305 order: only those `reachable` through it,
/// families interleaved starting with the resolver's first choice, each family in the
/// resolver's order.
pub(crate) fn attempt_order(
    addrs: &[SocketAddr],
    reachable: impl Fn(&SocketAddr) -> bool,
) -> Vec<SocketAddr> {
    let usable: Vec<SocketAddr> = addrs.iter().copied().filter(|a| reachable(a)).collect();
    let Some(first) = usable.first() else {
        return usable;
    };
    let (mut lead, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        usable.iter().partition(|a| a.is_ipv4() == first.is_ipv4());
    lead.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(usable.len());
    while let Some(a) = lead.pop() {
        out.push(a);
        if let Some(b) = other.pop() {
            out.push(b);
        }
    }
    out.extend(other.into_iter().rev());
    out
}

/// When every usable interface has failed a connection: the ejected ones whose link is up, as
/// a last try before the client hears "unreachable". Health lags behind a link's recovery by a
/// probe or two, so a link that came back a moment ago is still Down; trying it costs one
/// connect deadline at most and saves the connection when it is back.
fn last_resort(ctx: &ServeContext, launched: &[u32]) -> Vec<Member> {
    ctx.router
        .snapshot()
        .all
        .iter()
        .filter(|m| {
            !m.state.retired
                && m.state.link_up
                && m.state.kind != crate::iface::scan::InterfaceKind::ZeroTier
                && !launched.contains(&m.state.id)
        })
        .cloned()
        .collect()
}

/// A connect that worked.
struct Connected {
    member: Member,
    stream: TcpStream,
    /// Keeps the connection counted on its interface until the relay is over.
    _in_flight: InFlight,
}

/// Why none of `addrs` may be reached, checked against every resolved address: netmix itself
/// (a proxy loop), `socks.deny`, and loopback or link-local when the proxy is shared beyond
/// loopback without `socks.allow_local`.
pub(crate) fn refusal(ctx: &ServeContext, addrs: &[SocketAddr]) -> Option<String> {
    let local = ctx.router.snapshot();
    let is_local = |ip: IpAddr| {
        local
            .all
            .iter()
            .any(|m| m.state.addrs.iter().any(|net| net.addr() == ip))
    };
    for dest in addrs {
        let ip = effective_ip(dest.ip());
        if ctx.own.iter().any(|own| {
            own.port() == dest.port()
                && (effective_ip(own.ip()) == ip
                    || (own.ip().is_unspecified() && (ip.is_loopback() || is_local(ip))))
        }) {
            return Some(format!(
                "Refused {dest}: that is netmix's own address (a proxy loop)."
            ));
        }
        if is_denied(&ctx.deny, dest.ip()) {
            return Some(format!("Refused {dest}: not allowed by socks.deny."));
        }
        if ctx.guard_local && (ip.is_loopback() || is_link_local(ip)) {
            return Some(format!(
                "Refused {dest}: loopback and link-local destinations are refused while \
                 socks.listen is not loopback (set socks.allow_local = true to allow them)."
            ));
        }
    }
    None
}

/// 169.254.0.0/16 or fe80::/10.
fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// Where a connect to `ip` really goes: an IPv4-mapped IPv6 address is the IPv4 address it
/// carries, and the "this host" addresses (`0.0.0.0/8`, `::`) reach the local host, so they
/// count as loopback.
fn effective_ip(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.octets()[0] == 0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// Whether `socks.deny` covers `ip`, judged by where a connect to it really goes: an
/// IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 address it carries, and the
/// "this host" addresses (`0.0.0.0/8`, `::`) reach the local host, so they count as loopback
/// (`127.0.0.1`, `::1`). Otherwise a deny list of `127.0.0.0/8` would not stop `0.0.0.0` or
/// `::ffff:127.0.0.1`.
pub(crate) fn is_denied(deny: &[IpNet], ip: IpAddr) -> bool {
    let canonical = ip.to_canonical();
    let effective = effective_ip(ip);
    deny.iter()
        .any(|n| n.contains(&canonical) || n.contains(&effective))
}

/// Resolves `target` through `through` (an interface already carrying the client's traffic,
/// e.g. a UDP association's; empty: any present one), by `[dns]`: hosts file, cache, DNS.
pub(crate) async fn resolve(
    ctx: &ServeContext,
    target: &TargetAddr,
    through: &[Member],
) -> Result<(Option<String>, Vec<SocketAddr>), String> {
    match target {
        TargetAddr::Ip(addr) => Ok((None, vec![*addr])),
        TargetAddr::Domain(host, port) => {
            // Per datagram: a cached name must not cost a walk over the interfaces.
            let cached = (ctx.dns.mode() == DnsMode::Netmix)
                .then(|| ctx.dns.local_answer(host))
                .flatten();
            let answer = match cached {
                Some(answer) => answer,
                None => ctx
                    .dns
                    .resolve(host, through, &present_members(ctx), ctx.connect_timeout)
                    .await
                    .map_err(|f| f.to_string())?,
            };
            let addrs = answer
                .addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, *port))
                .collect();
            Ok((Some(host.clone()), addrs))
        }
    }
}

/// The reply code for the last connect failure.
pub(crate) fn reply_for(error: &ConnectError) -> Reply {
    match error {
        ConnectError::Timeout => Reply::TtlExpired,
        ConnectError::NoAddressFamily { .. } => Reply::NetworkUnreachable,
        ConnectError::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
            io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
            io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
            io::ErrorKind::TimedOut => Reply::TtlExpired,
            _ if error.suggests_link_down() => Reply::NetworkUnreachable,
            _ => Reply::GeneralFailure,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_interleave_families_in_resolver_order() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let addrs = [
            a("[2001:db8::1]:80"),
            a("[2001:db8::2]:80"),
            a("[2001:db8::3]:80"),
            a("198.18.0.1:80"),
            a("198.18.0.2:80"),
        ];
        assert_eq!(
            attempt_order(&addrs, |_| true),
            [addrs[0], addrs[3], addrs[1], addrs[4], addrs[2]]
        );
        assert_eq!(
            attempt_order(&addrs, SocketAddr::is_ipv4),
            [addrs[3], addrs[4]],
            "only what the interface reaches"
        );
        let v4_first = [addrs[3], addrs[0], addrs[4]];
        assert_eq!(
            attempt_order(&v4_first, |_| true),
            [addrs[3], addrs[0], addrs[4]]
        );
        assert!(attempt_order(&addrs, |_| false).is_empty());
    }

    #[test]
    fn errors_map_to_reply_codes() {
        let io = |k| ConnectError::Io(io::Error::from(k));
        assert_eq!(
            reply_for(&io(io::ErrorKind::ConnectionRefused)),
            Reply::ConnectionRefused
        );
        assert_eq!(
            reply_for(&io(io::ErrorKind::NetworkUnreachable)),
            Reply::NetworkUnreachable
        );
        assert_eq!(
            reply_for(&io(io::ErrorKind::HostUnreachable)),
            Reply::HostUnreachable
        );
        assert_eq!(reply_for(&ConnectError::Timeout), Reply::TtlExpired);
        assert_eq!(reply_for(&io(io::ErrorKind::Other)), Reply::GeneralFailure);
        assert!(!io(io::ErrorKind::ConnectionRefused).is_interface_side());
        assert!(ConnectError::Timeout.is_interface_side());
    }

    #[test]
    fn the_deny_list_cannot_be_bypassed_by_another_spelling() {
        let deny: Vec<IpNet> = ["127.0.0.0/8", "::1/128", "198.19.0.128/25"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
            "::",
            "::1",
            "::ffff:198.19.0.200",
        ] {
            assert!(is_denied(&deny, ip.parse().unwrap()), "{ip} must be denied");
        }
        for ip in ["198.19.0.1", "::ffff:198.19.0.1", "2001:db8::1"] {
            assert!(!is_denied(&deny, ip.parse().unwrap()), "{ip} is allowed");
        }
        assert!(
            !is_denied(&[], "0.0.0.0".parse().unwrap()),
            "no deny list, nothing denied"
        );
    }
}
