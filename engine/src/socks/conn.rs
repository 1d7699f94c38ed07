//! One client connection, as a plain tokio task: handshake, resolve, pick interfaces, connect
//! through the first that works (failing over on interface-side errors), reply, relay.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use ipnet::IpNet;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::handshake::{self, Credentials, Reply, TargetAddr};
use super::relay::relay;
use crate::config::{Config, UserConfig};
use crate::iface::bind::{ConnectError, connect_via};
use crate::iface::{ConnClosed, ConnFailed, ConnOpened, Rescan};
use crate::router::{ConnMeta, Router};

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
    /// Interfaces tried per connection at most.
    pub max_attempts: usize,
    /// Asks discovery to rescan when an interface seems to have vanished.
    pub rescan: Recipient<Rescan>,
}

impl ServeContext {
    /// The shared context for a config.
    pub fn new(config: &Config, router: Arc<Router>, rescan: Recipient<Rescan>) -> Self {
        Self {
            router,
            users: config.socks.auth.as_ref().map(|a| Users(a.users.clone())),
            deny: config.socks.deny.clone(),
            handshake_timeout: config.handshake_timeout(),
            connect_timeout: config.connect_timeout(),
            idle_timeout: config.idle_timeout(),
            max_attempts: config.socks.max_attempts,
            rescan,
        }
    }
}

/// Serves one client from handshake to close. Never panics; every failure is logged at debug
/// and, where the protocol allows, answered with the right reply code.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, ctx: Arc<ServeContext>) {
    let _ = client.set_nodelay(true);
    let creds = ctx.users.as_ref().map(|u| u as &dyn Credentials);
    let target = match timeout(
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
        Ok(Ok(target)) => target,
    };

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
    let mut last_error: Option<ConnectError> = None;
    let mut connected = None;
    for iface in decision.order.iter().take(ctx.max_attempts) {
        let Some(&dest) = addrs.iter().find(|a| iface.source_for(a).is_some()) else {
            continue;
        };
        match connect_via(iface, dest, ctx.connect_timeout).await {
            Ok(stream) => {
                connected = Some((iface.clone(), stream));
                break;
            }
            Err(error) => {
                tracing::debug!(%peer, %target, iface = %iface.name, %error, "Connect failed.");
                if !error.is_interface_side() {
                    // The destination refused: another interface would hear the same.
                    last_error = Some(error);
                    break;
                }
                iface.actor.do_send(ConnFailed);
                if matches!(&error, ConnectError::Io(e) if link_gone(e)) {
                    ctx.rescan.do_send(Rescan);
                }
                last_error = Some(error);
            }
        }
    }
    let Some((iface, mut outbound)) = connected else {
        let reply = last_error
            .as_ref()
            .map_or(Reply::NetworkUnreachable, reply_for);
        tracing::info!(
            %peer,
            %target,
            reply = ?reply,
            error = last_error.as_ref().map(|e| e.to_string()),
            "Connection failed."
        );
        let _ = handshake::write_reply(&mut client, reply, None).await;
        return;
    };

    let bound = outbound.local_addr().ok();
    if handshake::write_reply(&mut client, Reply::Succeeded, bound)
        .await
        .is_err()
    {
        return;
    }
    iface.actor.do_send(ConnOpened);
    tracing::debug!(%peer, %target, iface = %iface.name, reason = %decision.reason, "Relaying.");
    let totals = relay(&mut client, &mut outbound, ctx.idle_timeout).await;
    iface.actor.do_send(ConnClosed {
        bytes_up: totals.up,
        bytes_down: totals.down,
    });
    tracing::debug!(%peer, %target, iface = %iface.name, up = totals.up, down = totals.down, "Closed.");
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

/// The interface (not the route) is gone or down: worth an immediate rescan.
fn link_gone(e: &io::Error) -> bool {
    const ENODEV: i32 = 19;
    e.kind() == io::ErrorKind::NetworkUnreachable
        || (cfg!(any(target_os = "linux", target_os = "android"))
            && e.raw_os_error() == Some(ENODEV))
        || e.kind() == io::ErrorKind::AddrNotAvailable
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
            _ if link_gone(e) => Reply::NetworkUnreachable,
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
