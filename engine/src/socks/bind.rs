//! SOCKS5 BIND (RFC 1928 §4, §6): a listening socket on the chosen interface that the target
//! host connects back to, then a relay.
//!
//! The target (the host expected to connect) is resolved, checked against `socks.deny` and
//! routed like a CONNECT's ([`path::decide`]); the socket listens on the picked interface's
//! address (port 0, bound to the interface) and the first reply names it. Only a connection
//! from one of the target's addresses is taken (others are closed, and the wait goes on) within
//! [`DEFAULT_BIND_ACCEPT_SECS`] (or the idle deadline when shorter); the second reply names the
//! peer, and the two streams are relayed ([`super::relay::relay`]) as a session labelled
//! `socks5-bind`.

use std::net::SocketAddr;
use std::time::Duration;

use netmix_plugin_api as api;
use tokio::net::{TcpListener, TcpStream};

use super::conn::ServeContext;
use super::handshake::{self, Reply, TargetAddr};
use super::path::{self, Held, Opened};
use super::relay::Totals;
use super::session::{Session, Via};
use crate::iface::bind::{ConnectError, bound_listener};
use crate::router::Member;

/// How long a BIND waits for the target to connect, at most (the idle deadline, when
/// shorter, applies instead).
pub const DEFAULT_BIND_ACCEPT_SECS: u64 = 120;

/// Pending connections the listening socket queues (one is awaited; strays are closed).
const BACKLOG: i32 = 4;

/// Serves a BIND request for `target` from first reply to the relay's end. Never panics;
/// failures are logged and answered with the reply code that says why.
pub(crate) async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    target: &TargetAddr,
    early_data: &[u8],
    ctx: &ServeContext,
) {
    let (mut session, addrs) = match path::decide(
        ctx,
        peer,
        target,
        api::ClientProtocol::Socks5,
        api::Transport::Tcp,
    )
    .await
    {
        Ok(decided) => decided,
        Err(reply) => {
            let _ = handshake::write_reply(&mut client, reply, None).await;
            return;
        }
    };
    session.label = "socks5-bind";
    let (listener, member) = match listen(ctx, &mut session, &addrs) {
        Ok(listening) => listening,
        Err(error) => {
            let reply = error
                .as_ref()
                .map_or(Reply::NetworkUnreachable, path::reply_for);
            tracing::info!(%peer, %target, protocol = session.label, reply = ?reply, error = error.as_ref().map(|e| e.to_string()), "Connection failed.");
            session.failed(ctx, error.as_ref());
            let _ = handshake::write_reply(&mut client, reply, None).await;
            return;
        }
    };
    let record = Held::start(session, member);
    let bound = listener.local_addr().ok();
    tracing::debug!(%peer, %target, iface = %record.member.state.name, bound = ?bound, "BIND listening.");
    if handshake::write_reply(&mut client, Reply::Succeeded, bound)
        .await
        .is_err()
    {
        record.failed(ctx, "the client left before the first reply".to_owned());
        return;
    }
    let wait = ctx
        .idle_timeout
        .unwrap_or(Duration::MAX)
        .min(Duration::from_secs(DEFAULT_BIND_ACCEPT_SECS));
    let (stream, from) = match accept_from(&listener, &client, &addrs, wait).await {
        Ok(accepted) => accepted,
        Err(failure) => {
            tracing::debug!(%peer, %target, why = failure.why(wait), "BIND ended before a connection.");
            if let Some(reply) = failure.reply() {
                let _ = handshake::write_reply(&mut client, reply, None).await;
            }
            record.failed(ctx, failure.why(wait));
            return;
        }
    };
    drop(listener);
    let _ = stream.set_nodelay(true);
    let mut record = record;
    record
        .session
        .connected(ctx, Via::Interface(&record.member));
    if handshake::write_reply(&mut client, Reply::Succeeded, Some(from))
        .await
        .is_err()
    {
        record.closed(ctx, Totals::default());
        return;
    }
    Opened {
        stream,
        record: record.into(),
    }
    .relay(ctx, &client, early_data)
    .await;
}

/// Listens on the first interface of the decision that has an address of a target's family
/// (up to `max_attempts` interfaces), recording the ones that could not.
///
/// # Errors
/// The last failure, or `None` when no interface could even try.
fn listen(
    ctx: &ServeContext,
    session: &mut Session,
    addrs: &[SocketAddr],
) -> Result<(TcpListener, Member), Option<ConnectError>> {
    let mut last_error = None;
    let order = std::mem::take(&mut session.order);
    for member in order.into_iter().take(ctx.max_attempts) {
        let Some(peer) = addrs.iter().find(|a| member.state.source_for(a).is_some()) else {
            continue;
        };
        match bound_listener(&member.state, *peer, BACKLOG) {
            Ok(listener) => return Ok((listener, member)),
            Err(error) => {
                tracing::debug!(iface = %member.state.name, %error, "Cannot listen on the interface.");
                session
                    .failed
                    .push((member.state.name.clone(), error.to_string()));
                session.meta.tried.push(member.state.id);
                last_error = Some(error);
            }
        }
    }
    Err(last_error)
}

/// Why no connection was relayed.
#[derive(Debug)]
enum AcceptFailure {
    /// Nobody from the target's addresses connected in time.
    Timeout,
    /// The client closed its connection (or it failed) first.
    ClientGone,
}

impl AcceptFailure {
    fn reply(&self) -> Option<Reply> {
        match self {
            Self::Timeout => Some(Reply::TtlExpired),
            Self::ClientGone => None,
        }
    }

    fn why(&self, wait: Duration) -> String {
        match self {
            Self::Timeout => format!("no connection from the target within {} s", wait.as_secs()),
            Self::ClientGone => "the client closed before a connection came".to_owned(),
        }
    }
}

/// Accepts the first connection from one of `allowed`'s addresses within `wait`, closing any
/// other; gives up when `client` closes first.
async fn accept_from(
    listener: &TcpListener,
    client: &TcpStream,
    allowed: &[SocketAddr],
    wait: Duration,
) -> Result<(TcpStream, SocketAddr), AcceptFailure> {
    let expired = tokio::time::sleep(wait);
    tokio::pin!(expired);
    // Bytes the client sends early stay queued for the relay: it is watched only for its end.
    let mut watch_client = true;
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let from_target = allowed
                        .iter()
                        .any(|a| a.ip().to_canonical() == from.ip().to_canonical());
                    if from_target {
                        return Ok((stream, from));
                    }
                    tracing::debug!(%from, "BIND: a connection from a host other than the target; closed.");
                }
                Err(error) => {
                    // Aborted handshakes and the like; out of descriptors: wait a little.
                    tracing::debug!(%error, "BIND accept failed.");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            read = client.peek(&mut probe), if watch_client => match read {
                Ok(0) | Err(_) => return Err(AcceptFailure::ClientGone),
                Ok(_) => watch_client = false,
            },
            () = &mut expired => return Err(AcceptFailure::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::Config;
    use crate::socks::testing::loopback_context;

    /// Starts a BIND for `target` as `serve` gets it (handshake done); the client's end.
    async fn start(ctx: &Arc<ServeContext>, target: &str) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let (ctx, target) = (ctx.clone(), TargetAddr::Ip(target.parse().unwrap()));
        tokio::spawn(async move { serve(server, peer, &target, b"early", &ctx).await });
        control
    }

    /// Reads a reply: (code, BND address).
    async fn reply(control: &mut TcpStream) -> (u8, SocketAddr) {
        let mut r = [0u8; 10];
        tokio::time::timeout(Duration::from_secs(5), control.read_exact(&mut r))
            .await
            .expect("a reply in time")
            .unwrap();
        assert_eq!(r[3], 1, "IPv4 address");
        let addr = SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[8], r[9]])));
        (r[1], addr)
    }

    #[actix::test]
    async fn only_the_target_is_accepted_then_both_ways_relay() {
        let (ctx, lo) = loopback_context(&Config::default());
        let mut control = start(&ctx, "127.0.0.1:0").await;
        let (code, bound) = reply(&mut control).await;
        assert_eq!(code, 0);
        assert_eq!(
            bound.ip(),
            lo.state.addrs[0].addr(),
            "the interface's address"
        );
        assert_ne!(bound.port(), 0);

        // A host other than the target is closed, and the wait goes on.
        let stray = tokio::net::TcpSocket::new_v4().unwrap();
        stray.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stray = stray.connect(bound).await.unwrap();
        let mut b = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), stray.read(&mut b))
            .await
            .expect("the stray is closed")
            .unwrap_or(0);
        assert_eq!(n, 0, "nothing reaches a stray");

        let mut target = TcpStream::connect(bound).await.unwrap();
        let (code, peer) = reply(&mut control).await;
        assert_eq!(
            (code, peer),
            (0, target.local_addr().unwrap()),
            "second reply"
        );
        let mut got = [0u8; 5];
        target.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early", "bytes sent before the replies come first");
        control.write_all(b"to target").await.unwrap();
        let mut got = [0u8; 9];
        target.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"to target");
        target.write_all(b"to client").await.unwrap();
        control.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"to client");
    }

    #[actix::test]
    async fn a_denied_target_is_refused_before_listening() {
        let mut config = Config::default();
        config.socks.deny = vec!["127.0.0.0/8".parse().unwrap()];
        let (ctx, lo) = loopback_context(&config);
        let mut control = start(&ctx, "127.0.0.1:0").await;
        assert_eq!(reply(&mut control).await.0, Reply::NotAllowed as u8);
        assert_eq!(
            lo.handles
                .live
                .opened
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
}
