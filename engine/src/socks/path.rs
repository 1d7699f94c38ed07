//! The connection path every front end shares: resolve the target, apply `socks.deny`, ask
//! the strategy, connect through the interfaces it picks (failing over on interface-side
//! errors), and hand back an open outbound stream with its [`Session`] record, or the
//! failure as a SOCKS5 reply code that each front maps to its own protocol's answer.

use std::io;
use std::net::SocketAddr;
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
use super::session::Session;
use crate::iface::bind::{ConnectError, connect_via};
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

/// An open connection's record and interface; it counts as in flight on that interface until
/// [`Record::closed`].
pub(crate) struct Record {
    /// The connection's record.
    pub session: Session,
    /// The interface that carries it.
    pub member: Member,
    _in_flight: InFlight,
}

impl Record {
    /// A connection that `member` carries without a connect of netmix's (a UDP association,
    /// a BIND's listening socket): counted in flight on `member` from now on.
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
        self.session.closed(ctx, &self.member, totals);
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
        let (session, member) = (&record.session, &record.member);
        tracing::debug!(peer = %session.peer, target = %session.destination, iface = %member.state.name, reason = %session.reason, "Relaying.");
        let mut totals = relay(client, &outbound, &member.handles.live, ctx.idle_timeout).await;
        totals.up += early_data.len() as u64;
        record.closed(ctx, totals);
    }
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
    let (mut session, addrs) = decide(ctx, peer, target, protocol, api::Transport::Tcp).await?;
    match connect_with_failover(ctx, &mut session, &addrs).await {
        Ok(Connected {
            member,
            stream,
            _in_flight,
        }) => {
            session.connected(ctx, &member);
            Ok(Opened {
                stream,
                record: Record {
                    session,
                    member,
                    _in_flight,
                },
            })
        }
        Err(error) => {
            let reply = error.as_ref().map_or(Reply::NetworkUnreachable, reply_for);
            tracing::info!(
                %peer,
                %target,
                protocol = session.label,
                reply = ?reply,
                error = error.as_ref().map(|e| e.to_string()),
                "Connection failed."
            );
            session.failed(ctx, error.as_ref());
            Err(reply)
        }
    }
}

/// The steps before any connect, which every command shares: resolves `target`, checks
/// `socks.deny` and asks the strategy (the [`Session`]'s `order`). Failures are logged and
/// come back as the SOCKS5 reply code that says why: `HostUnreachable` (no such name) or
/// `NotAllowed` (denied).
pub(crate) async fn decide(
    ctx: &ServeContext,
    peer: SocketAddr,
    target: &TargetAddr,
    protocol: api::ClientProtocol,
    transport: api::Transport,
) -> Result<(Session, Vec<SocketAddr>), Reply> {
    let (host, addrs) = match resolve(target, ctx.connect_timeout).await {
        Ok(found) => found,
        Err(reason) => {
            tracing::debug!(%peer, %target, reason, "Cannot resolve.");
            return Err(Reply::HostUnreachable);
        }
    };
    if let Some(denied) = addrs.iter().find(|a| is_denied(&ctx.deny, a.ip())) {
        tracing::info!(%peer, %target, %denied, "Destination not allowed by socks.deny.");
        return Err(Reply::NotAllowed);
    }
    let session = Session::new(ctx, peer, target, host, &addrs, protocol, transport);
    Ok((session, addrs))
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
pub(crate) fn is_denied(deny: &[IpNet], ip: std::net::IpAddr) -> bool {
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
pub(crate) async fn resolve(
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
