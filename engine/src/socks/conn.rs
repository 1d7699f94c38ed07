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

use super::handshake::{self, Credentials, Reply, TargetAddr};
use super::relay::relay;
use crate::batch::Batched;
use crate::config::{Config, UserConfig};
use crate::connlog::{Attempt, CandidateStats, ConnLog, ConnRecord};
use crate::events::unix_ms;
use crate::events::{EventKind, Events};
use crate::feed::ConnEvent;
use crate::iface::bind::{ConnectError, connect_via};
use crate::iface::{InterfaceView, Observed, Outcome, Rescan, Source, Traffic};
use crate::router::{ConnMeta, Observation, Router, Stage};

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
    /// Next connection id.
    next_id: AtomicU64,
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
            next_id: AtomicU64::new(1),
        }
    }
}

/// Serves one client from handshake to close. Never panics; every failure is logged at debug
/// and, where the protocol allows, answered with the right reply code.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, ctx: Arc<ServeContext>) {
    if !super::listener::ACCEPTED_INHERIT_NODELAY {
        let _ = client.set_nodelay(true);
    }
    let creds = ctx.users.as_ref().map(|u| u as &dyn Credentials);
    let request = match timeout(
        ctx.handshake_timeout,
        handshake::negotiate(&mut client, creds),
    )
    .await
    {
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

    let (host, addrs) = match resolve(&target, ctx.connect_timeout).await {
        Ok(found) => found,
        Err(reason) => {
            tracing::debug!(%peer, %target, reason, "Cannot resolve.");
            let _ = handshake::write_reply(&mut client, Reply::HostUnreachable, None).await;
            return;
        }
    };
    if let Some(denied) = addrs
        .iter()
        .find(|a| ctx.deny.iter().any(|n| n.contains(&a.ip())))
    {
        tracing::info!(%peer, %target, %denied, "Destination not allowed by socks.deny.");
        let _ = handshake::write_reply(&mut client, Reply::NotAllowed, None).await;
        return;
    }

    let meta = ConnMeta {
        host,
        addr: addrs.first().map(SocketAddr::ip),
        port: target.port(),
        client: peer,
    };
    let decision = ctx.router.pick(&meta);
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let mut log_record = ctx.conn_log.as_ref().map(|_| ConnRecord {
        unix_ms: unix_ms(),
        id,
        client: peer.to_string(),
        host: meta.host.clone(),
        addr: meta.addr.map(|a| a.to_string()),
        port: meta.port,
        strategy: decision.strategy.clone(),
        reason: decision.reason.clone(),
        candidates: ctx
            .router
            .snapshot()
            .interfaces
            .iter()
            .map(|v| CandidateStats::of(v))
            .collect(),
        attempts: Vec::new(),
        chosen: None,
        ok: false,
        connect_us: 0,
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
    });
    let record =
        |interface: Option<&str>, retries: usize, error: Option<String>| ConnEvent::Opened {
            id,
            at: Instant::now(),
            at_unix_ms: unix_ms(),
            client: peer.to_string(),
            destination: target.to_string(),
            interface: interface.map(str::to_owned),
            strategy: decision.strategy.clone(),
            reason: decision.reason.clone(),
            retries: retries as u32,
            error,
        };
    let connected = match connect_with_failover(&ctx, &decision.order, &addrs).await {
        Ok(connected) => connected,
        Err(error) => {
            if let (Some(log), Some(mut r)) = (&ctx.conn_log, log_record.take()) {
                r.attempts = vec![Attempt {
                    interface: String::new(),
                    ok: false,
                    error: Some(
                        error
                            .as_ref()
                            .map_or_else(|| "no usable interface".to_owned(), ToString::to_string),
                    ),
                }];
                log.log(r);
            }
            if let Some(first) = decision.order.first() {
                let failed = Observation {
                    iface: first.id,
                    stage: Stage::ConnectFailed,
                    connect_us: 0,
                    bytes_up: 0,
                    bytes_down: 0,
                    duration_us: 0,
                };
                Router::observe(&decision, &meta, failed);
            }
            if let Some(feed) = &ctx.feed {
                let why = error
                    .as_ref()
                    .map_or_else(|| "no usable interface".to_owned(), ToString::to_string);
                feed.send(record(
                    None,
                    decision.order.len().min(ctx.max_attempts),
                    Some(why),
                ));
            }
            let reply = error.as_ref().map_or(Reply::NetworkUnreachable, reply_for);
            tracing::info!(
                %peer,
                %target,
                reply = ?reply,
                error = error.as_ref().map(|e| e.to_string()),
                "Connection failed."
            );
            let _ = handshake::write_reply(&mut client, reply, None).await;
            return;
        }
    };

    let Connected {
        iface,
        stream: mut outbound,
        connect_time,
        failed,
    } = connected;
    ctx.router.remember(&meta, iface.id);
    if let Some(feed) = &ctx.feed {
        feed.send(record(Some(&iface.name), failed.len(), None));
    }
    if !failed.is_empty() {
        let tried: Vec<String> = failed.iter().map(|(n, e)| format!("{n} ({e})")).collect();
        let message = format!(
            "{target}: {} failed, connected via {}",
            tried.join(", "),
            iface.name
        );
        tracing::info!(%peer, %target, iface = %iface.name, failed = ?tried, "Failed over.");
        ctx.events
            .emit(EventKind::Failover, Some(&iface.name), message);
    }
    let observation = |stage, bytes_up, bytes_down, duration: Duration| Observation {
        iface: iface.id,
        stage,
        connect_us: connect_time.as_micros() as u64,
        bytes_up,
        bytes_down,
        duration_us: duration.as_micros() as u64,
    };
    Router::observe(
        &decision,
        &meta,
        observation(Stage::Connected, 0, 0, Duration::ZERO),
    );
    let bound = outbound.local_addr().ok();
    if handshake::write_reply(&mut client, Reply::Succeeded, bound)
        .await
        .is_err()
    {
        return;
    }
    if !early_data.is_empty() && outbound.write_all(&early_data).await.is_err() {
        iface.traffic.send(Traffic::Opened);
        iface.traffic.send(Traffic::Closed);
        return;
    }
    iface.traffic.send(Traffic::Opened);
    tracing::debug!(%peer, %target, iface = %iface.name, reason = %decision.reason, "Relaying.");
    let started = Instant::now();
    let totals = relay(&client, &outbound, &iface.live, ctx.idle_timeout).await;
    iface.traffic.send(Traffic::Closed);
    if let (Some(log), Some(mut r)) = (&ctx.conn_log, log_record.take()) {
        r.attempts = failed
            .iter()
            .map(|(n, e)| Attempt {
                interface: n.clone(),
                ok: false,
                error: Some(e.clone()),
            })
            .chain(std::iter::once(Attempt {
                interface: iface.name.clone(),
                ok: true,
                error: None,
            }))
            .collect();
        r.chosen = Some(iface.name.clone());
        r.ok = true;
        r.connect_us = connect_time.as_micros() as u64;
        r.bytes_up = totals.up;
        r.bytes_down = totals.down;
        r.duration_ms = started.elapsed().as_millis() as u64;
        log.log(r);
    }
    if let Some(feed) = &ctx.feed {
        feed.send(ConnEvent::Closed {
            id,
            at: Instant::now(),
            bytes_up: totals.up,
            bytes_down: totals.down,
        });
    }
    Router::observe(
        &decision,
        &meta,
        observation(Stage::Closed, totals.up, totals.down, started.elapsed()),
    );
    tracing::debug!(%peer, %target, iface = %iface.name, up = totals.up, down = totals.down, "Closed.");
}

/// Connects through the interfaces in `order`: the first, then (on interface-side failures)
/// the next, up to `max_attempts`; with `race_after` set, a slow attempt is raced by the next
/// one after that stagger and the first to connect wins.
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
    order: &[Arc<InterfaceView>],
    addrs: &[SocketAddr],
) -> Result<Connected, Option<ConnectError>> {
    let candidates: Vec<(Arc<InterfaceView>, SocketAddr)> = order
        .iter()
        .filter_map(|iface| {
            let dest = addrs.iter().find(|a| iface.source_for(a).is_some())?;
            Some((iface.clone(), *dest))
        })
        .take(ctx.max_attempts)
        .collect();
    let mut attempts = JoinSet::new();
    let mut next = 0;
    let mut soft_failures: Vec<Arc<InterfaceView>> = Vec::new();
    let mut failures = Vec::new();
    let mut last_error = None;
    let launch = |attempts: &mut JoinSet<_>, i: usize| {
        let (iface, dest) = candidates[i].clone();
        attempts.spawn(async move {
            let started = Instant::now();
            let result = connect_via(&iface, dest, iface.connect_timeout).await;
            (iface, started.elapsed(), result)
        });
    };
    loop {
        if attempts.is_empty() {
            if next >= candidates.len() {
                return Err(last_error);
            }
            launch(&mut attempts, next);
            next += 1;
        }
        let race = ctx.race_after.filter(|_| next < candidates.len());
        let stagger = async {
            match race {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(joined) = attempts.join_next() => {
                let Ok((iface, elapsed, result)) = joined else { continue };
                match result {
                    Ok(stream) => {
                        iface.traffic.send(Traffic::Connected(elapsed));
                        for failed in soft_failures {
                            failed.actor.do_send(Observed { source: Source::Connection, outcome: Outcome::Failed });
                        }
                        return Ok(Connected { iface, stream, connect_time: elapsed, failed: failures });
                    }
                    Err(error) => {
                        tracing::debug!(iface = %iface.name, %error, elapsed_ms = elapsed.as_millis() as u64, "Connect failed.");
                        if !error.is_interface_side() {
                            // The destination answered (refused): the link works, and another
                            // interface would hear the same answer.
                            iface.traffic.send(Traffic::Connected(elapsed));
                            return Err(Some(error));
                        }
                        failures.push((iface.name.clone(), error.to_string()));
                        if error.suggests_link_down() {
                            ctx.rescan.do_send(Rescan);
                        }
                        if error.is_link_failure() {
                            iface.actor.do_send(Observed { source: Source::Connection, outcome: Outcome::LinkFailed });
                        } else {
                            soft_failures.push(iface);
                        }
                        last_error = Some(error);
                        if next < candidates.len() && attempts.is_empty() {
                            launch(&mut attempts, next);
                            next += 1;
                        }
                    }
                }
            }
            () = stagger => {
                launch(&mut attempts, next);
                next += 1;
            }
        }
    }
}

/// A connect that worked, and what failed before it.
struct Connected {
    iface: Arc<InterfaceView>,
    stream: TcpStream,
    connect_time: Duration,
    /// Interfaces tried first, with their errors.
    failed: Vec<(String, String)>,
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
