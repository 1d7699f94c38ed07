//! One client connection, as a plain tokio task: handshake, resolve, pick interfaces, connect
//! through the first that works (failing over on interface-side errors), reply, relay.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::Recipient;
use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use abi_stable::std_types::{RArc, RNone, RSome, RString};
use netmix_plugin_api as api;

use super::guard::{AuthGuard, HandshakePool};
use super::handshake::{self, Credentials, Reply, TargetAddr};
use super::relay::{Totals, relay};
use crate::batch::Batched;
use crate::config::{Config, UserConfig};
use crate::connlog::{Attempt, CandidateStats, ConnLog, ConnRecord};
use crate::events::unix_ms;
use crate::events::{EventKind, Events};
use crate::feed::ConnEvent;
use crate::iface::bind::{ConnectError, connect_via};
use crate::iface::{Outcome, Rescan, Source};
use crate::router::{ActiveStrategy, Member, Router};

/// The accepted RFC 1929 users.
#[derive(Debug, Clone)]
pub struct Users(Vec<UserConfig>);

impl Credentials for Users {
    fn check(&self, username: &[u8], password: &[u8]) -> bool {
        // Compare every entry in full so timing says little about which byte differed.
        self.0.iter().fold(false, |found, u| {
            let user_ok = constant_time_eq(u.username.as_bytes(), username);
            let pass_ok = constant_time_eq(u.password.expose().as_bytes(), password);
            found | (user_ok & pass_ok)
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Everything a connection task needs, shared by all of them.
pub struct ServeContext {
    /// Picks interfaces.
    pub router: Arc<Router>,
    /// `Some` when authentication is required.
    pub users: Option<Users>,
    /// Destinations clients may not reach.
    pub deny: Vec<IpNet>,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// Per-attempt connect deadline (also bounds name resolution).
    pub connect_timeout: Duration,
    /// Idle relay deadline.
    pub idle_timeout: Option<Duration>,
    /// Interfaces tried per connection at most (1 when failover is off).
    pub max_attempts: usize,
    /// Race the next interface after this stagger (`None`: one attempt at a time).
    pub race_after: Option<Duration>,
    /// Asks discovery to rescan when an interface seems to have vanished.
    pub rescan: Recipient<Rescan>,
    /// Failover events for the dashboard.
    pub events: Events,
    /// Connection records for the dashboard (None: no dashboard).
    pub feed: Option<Batched<ConnEvent>>,
    /// The connection log for learning (None: off).
    pub conn_log: Option<ConnLog>,
    /// Connections still in their handshake (bounded; the oldest is evicted for a new one).
    pub handshakes: HandshakePool,
    /// Failed logins per client (back-off).
    pub auth: AuthGuard,
    /// Next connection id.
    next_id: AtomicU64,
}

/// One client's view of the users: failures count against its address.
struct ClientCredentials<'a> {
    users: &'a Users,
    client: std::net::IpAddr,
    guard: &'a AuthGuard,
}

impl Credentials for ClientCredentials<'_> {
    fn check(&self, username: &[u8], password: &[u8]) -> bool {
        let ok = self.users.check(username, password);
        if ok {
            self.guard.succeeded(self.client);
        }
        ok
    }

    fn failure_delay(&self) -> Duration {
        self.guard.failed(self.client, std::time::Instant::now())
    }
}

impl ServeContext {
    /// The shared context for a config.
    pub fn new(
        config: &Config,
        router: Arc<Router>,
        rescan: Recipient<Rescan>,
        events: Events,
        feed: Option<Batched<ConnEvent>>,
        conn_log: Option<ConnLog>,
    ) -> Self {
        Self {
            router,
            users: config.socks.auth.as_ref().map(|a| Users(a.users.clone())),
            deny: config.socks.deny.clone(),
            handshake_timeout: config.handshake_timeout(),
            connect_timeout: config.connect_timeout(),
            idle_timeout: config.idle_timeout(),
            max_attempts: if config.failover.enabled {
                config.failover.max_attempts
            } else {
                1
            },
            race_after: (config.failover.enabled && config.failover.race_after_ms > 0)
                .then(|| Duration::from_millis(config.failover.race_after_ms)),
            rescan,
            events,
            feed,
            conn_log,
            handshakes: HandshakePool::for_max_connections(config.socks.max_connections),
            auth: AuthGuard::default(),
            next_id: AtomicU64::new(1),
        }
    }
}

/// Serves one client from handshake to close, as a pipeline of named phases: negotiate,
/// resolve, pick, connect (with failover), relay, record. Never panics; every failure is logged
/// at debug and, where the protocol allows, answered with the right reply code.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, ctx: Arc<ServeContext>) {
    if !super::listener::ACCEPTED_INHERIT_NODELAY {
        let _ = client.set_nodelay(true);
    }
    // === negotiate ===
    let creds = ctx.users.as_ref().map(|users| ClientCredentials {
        users,
        client: peer.ip(),
        guard: &ctx.auth,
    });
    let place = ctx.handshakes.enter();
    let negotiated = tokio::select! {
        r = timeout(
            ctx.handshake_timeout,
            handshake::negotiate(&mut client, creds.as_ref().map(|c| c as &dyn Credentials)),
        ) => r,
        () = place.evicted.cancelled() => {
            tracing::debug!(%peer, "Handshake evicted: the pool of pending handshakes is full.");
            return;
        }
    };
    drop(place);
    let request = match negotiated {
        Err(_) => {
            tracing::debug!(%peer, "Handshake timed out; closing.");
            return;
        }
        Ok(Err(error)) => {
            if let Some(reply) = error.reply() {
                let _ = handshake::write_reply(&mut client, reply, None).await;
            }
            tracing::debug!(%peer, %error, "Handshake refused.");
            return;
        }
        Ok(Ok(request)) => request,
    };
    let handshake::Request { target, early_data } = request;

    // === resolve ===
    let (host, addrs) = match resolve(&target, ctx.connect_timeout).await {
        Ok(found) => found,
        Err(reason) => {
            tracing::debug!(%peer, %target, reason, "Cannot resolve.");
            let _ = handshake::write_reply(&mut client, Reply::HostUnreachable, None).await;
            return;
        }
    };
    if let Some(denied) = addrs.iter().find(|a| is_denied(&ctx.deny, a.ip())) {
        tracing::info!(%peer, %target, %denied, "Destination not allowed by socks.deny.");
        let _ = handshake::write_reply(&mut client, Reply::NotAllowed, None).await;
        return;
    }

    // === pick ===
    let mut conn = Session::new(&ctx, peer, &target, host, &addrs);

    // === connect, with failover ===
    let connected = match connect_with_failover(&ctx, &mut conn, &addrs).await {
        Ok(connected) => connected,
        Err(error) => {
            let reply = error.as_ref().map_or(Reply::NetworkUnreachable, reply_for);
            tracing::info!(
                %peer,
                %target,
                reply = ?reply,
                error = error.as_ref().map(|e| e.to_string()),
                "Connection failed."
            );
            conn.failed(&ctx, error.as_ref());
            let _ = handshake::write_reply(&mut client, reply, None).await;
            return;
        }
    };
    let Connected {
        member,
        stream: mut outbound,
        _in_flight,
    } = connected;
    conn.connected(&ctx, &member);

    // === relay ===
    let bound = outbound.local_addr().ok();
    if handshake::write_reply(&mut client, Reply::Succeeded, bound)
        .await
        .is_err()
    {
        conn.closed(&ctx, &member, Totals::default());
        return;
    }
    if !early_data.is_empty() && outbound.write_all(&early_data).await.is_err() {
        conn.closed(&ctx, &member, Totals::default());
        return;
    }
    tracing::debug!(%peer, %target, iface = %member.state.name, reason = %conn.reason, "Relaying.");
    let totals = relay(&client, &outbound, &member.handles.live, ctx.idle_timeout).await;

    // === record ===
    conn.closed(&ctx, &member, totals);
}

/// One connection's record, from decision to close: every sink (dashboard feed, connection
/// log, the deciding strategy, the event log) reads it, so each learns the same facts.
struct Session {
    id: u64,
    peer: SocketAddr,
    destination: String,
    accepted_unix_ms: u64,
    /// What strategies see; `tried` grows with each failed interface.
    meta: api::ConnMeta,
    strategy: String,
    reason: String,
    decided_by: Arc<ActiveStrategy>,
    /// The first decision's order (fallbacks after the first pick); the connect phase takes it.
    order: Vec<Member>,
    /// Every candidate's numbers at decision time (only with a connection log).
    candidates: Option<Vec<CandidateStats>>,
    /// Failed attempts: interface name and error.
    failed: Vec<(String, String)>,
    connect_time: Duration,
    relay_started: Option<Instant>,
}

impl Session {
    /// Builds the connection's facts and asks the router (the pick phase).
    fn new(
        ctx: &ServeContext,
        peer: SocketAddr,
        target: &TargetAddr,
        host: Option<String>,
        addrs: &[SocketAddr],
    ) -> Self {
        let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
        let mut meta = match addrs.first() {
            Some(a) => api::ConnMeta::for_addr(a.ip(), target.port()),
            None => api::ConnMeta::for_host("", target.port()),
        };
        meta.id = id;
        meta.host = host.map_or(RNone, |h| RSome(RString::from(h)));
        meta.client = peer.ip().into();
        meta.client_port = peer.port();
        meta.protocol = api::ClientProtocol::Socks5;
        let decision = ctx.router.pick(&meta);
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
            accepted_unix_ms: unix_ms(),
            meta,
            strategy: decision.strategy,
            reason: decision.reason,
            decided_by: decision.decided_by,
            order: decision.order,
            candidates,
            failed: Vec::new(),
            connect_time: Duration::ZERO,
            relay_started: None,
        }
    }

    fn outcome(&self, iface: u32, stage: api::OutcomeStage) -> api::ConnOutcome {
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
            protocol: "socks5".to_owned(),
            destination: self.destination.clone(),
            interface: interface.map(str::to_owned),
            strategy: self.strategy.clone(),
            reason: self.reason.clone(),
            retries: self.failed.len() as u32,
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
    fn failed(&self, ctx: &ServeContext, error: Option<&ConnectError>) {
        let why = error.map_or_else(|| "no usable interface".to_owned(), ToString::to_string);
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
    fn connected(&mut self, ctx: &ServeContext, member: &Member) {
        self.relay_started = Some(Instant::now());
        ctx.router.remember(&self.meta, member.state.id);
        if let Some(feed) = &ctx.feed {
            feed.send(self.opened_event(Some(&member.state.name), None));
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
        self.decided_by
            .observe(|| self.outcome(member.state.id, api::OutcomeStage::Connected));
    }

    /// The relay ended (or never started): the record's last facts go to every sink.
    fn closed(&self, ctx: &ServeContext, member: &Member, totals: Totals) {
        if let (Some(log), Some(record)) = (
            &ctx.conn_log,
            self.log_record(Some(&member.state.name), totals, None),
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
        self.decided_by.observe(|| {
            let mut outcome = self.outcome(member.state.id, api::OutcomeStage::Closed);
            outcome.bytes_up = totals.up;
            outcome.bytes_down = totals.down;
            outcome.duration_us = self
                .relay_started
                .map_or(0, |t| t.elapsed().as_micros() as u64);
            outcome
        });
        tracing::debug!(peer = %self.peer, target = %self.destination, iface = %member.state.name, up = totals.up, down = totals.down, "Closed.");
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
    let next = |queue: &mut Vec<Member>, launched: &[u32]| -> Option<(Member, SocketAddr)> {
        if launched.len() >= ctx.max_attempts {
            return None;
        }
        while !queue.is_empty() {
            let member = queue.remove(0);
            if launched.contains(&member.state.id) {
                continue;
            }
            if let Some(dest) = addrs.iter().find(|a| member.state.source_for(a).is_some()) {
                return Some((member, *dest));
            }
        }
        None
    };
    let launch = |attempts: &mut JoinSet<_>,
                  launched: &mut Vec<u32>,
                  (member, dest): (Member, SocketAddr)| {
        launched.push(member.state.id);
        // Counted before the task starts, so the very next pick (a burst) already sees it.
        let in_flight = InFlight::start(&member.handles.live);
        attempts.spawn(async move {
            let started = Instant::now();
            let result = connect_via(&member.state, dest, member.state.connect_timeout).await;
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
                        conn.decided_by.observe(|| conn.outcome(member.state.id, api::OutcomeStage::ConnectFailed));
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
                        queue = ctx.router.pick(&conn.meta).order;
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

/// A connect that worked.
struct Connected {
    member: Member,
    stream: TcpStream,
    /// Keeps the connection counted on its interface until the relay is over.
    _in_flight: InFlight,
}

/// Whether `socks.deny` covers `ip`, judged by where a connect to it really goes: an
/// IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 address it carries, and the
/// "this host" addresses (`0.0.0.0/8`, `::`) reach the local host, so they count as loopback
/// (`127.0.0.1`, `::1`). Otherwise a deny list of `127.0.0.0/8` would not stop `0.0.0.0` or
/// `::ffff:127.0.0.1`.
fn is_denied(deny: &[IpNet], ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = ip.to_canonical();
    let effective = match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    deny.iter()
        .any(|n| n.contains(&ip) || n.contains(&effective))
}

/// Resolves the target once. A name resolves through the system resolver (hosts file, DNS).
async fn resolve(
    target: &TargetAddr,
    deadline: Duration,
) -> Result<(Option<String>, Vec<SocketAddr>), &'static str> {
    match target {
        TargetAddr::Ip(addr) => Ok((None, vec![*addr])),
        TargetAddr::Domain(host, port) => {
            match timeout(deadline, tokio::net::lookup_host((host.as_str(), *port))).await {
                Err(_) => Err("resolver timed out"),
                Ok(Err(_)) => Err("name not found"),
                Ok(Ok(found)) => {
                    let addrs: Vec<_> = found.collect();
                    if addrs.is_empty() {
                        Err("no address")
                    } else {
                        Ok((Some(host.clone()), addrs))
                    }
                }
            }
        }
    }
}

/// The reply code for the last connect failure.
fn reply_for(error: &ConnectError) -> Reply {
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

    #[test]
    fn users_check_both_fields() {
        let users = Users(vec![
            toml::from_str::<UserConfig>("username = \"a\"\npassword = \"b\"").unwrap(),
        ]);
        assert!(users.check(b"a", b"b"));
        assert!(!users.check(b"a", b"c"));
        assert!(!users.check(b"b", b"b"));
        assert!(!users.check(b"a", b"bb"));
    }
}
