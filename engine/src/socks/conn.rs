//! One client connection, as a plain tokio task: tell the protocol from the first byte, read
//! its request, then the shared path (resolve, pick, connect with failover), reply, relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use actix::Recipient;
use ipnet::IpNet;
use netmix_plugin_api as api;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::guard::{AuthGuard, HandshakePool};
use super::handshake::{self, Command, Credentials, Reply};
use super::relay::Totals;
use super::{bind, http, path, socks4, udp};
use crate::batch::Batched;
use crate::config::{Config, UserConfig};
use crate::connlog::ConnLog;
use crate::dns::Dns;
use crate::events::Events;
use crate::feed::ConnEvent;
use crate::iface::Rescan;
use crate::router::Router;

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
    /// Resolves host names (`[dns]`).
    pub dns: Arc<Dns>,
    /// `Some` when authentication is required.
    pub users: Option<Users>,
    /// Destinations clients may not reach.
    pub deny: Vec<IpNet>,
    /// Networks reached unbound, through the OS's routing table (`routing.direct`).
    pub direct: Vec<IpNet>,
    /// netmix's own listening addresses (the proxy port, the dashboard): never a destination.
    pub own: Vec<SocketAddr>,
    /// Refuse loopback and link-local destinations (the proxy is shared beyond loopback and
    /// `socks.allow_local` is off).
    pub guard_local: bool,
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
    pub(crate) next_id: AtomicU64,
}

/// One client's view of the users: failures count against its address.
pub(crate) struct ClientCredentials<'a> {
    users: &'a Users,
    client: std::net::IpAddr,
    guard: &'a AuthGuard,
}

impl<'a> ClientCredentials<'a> {
    /// `client`'s view of `users`, its failures counted in `guard`.
    pub(crate) fn new(users: &'a Users, client: std::net::IpAddr, guard: &'a AuthGuard) -> Self {
        Self {
            users,
            client,
            guard,
        }
    }
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
        dns: Arc<Dns>,
        rescan: Recipient<Rescan>,
        events: Events,
        feed: Option<Batched<ConnEvent>>,
        conn_log: Option<ConnLog>,
    ) -> Self {
        Self {
            router,
            dns,
            users: config.socks.auth.as_ref().map(|a| Users(a.users.clone())),
            deny: config.socks.deny.clone(),
            direct: config.routing.direct.clone(),
            own: std::iter::once(config.socks.listen)
                .chain(config.dashboard.enabled.then_some(config.dashboard.listen))
                .collect(),
            guard_local: !config.socks.listen.ip().is_loopback() && !config.socks.allow_local,
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

/// Serves one client from first byte to close: the protocol is told from the first byte
/// (0x05 SOCKS5, 0x04 SOCKS4/4a, an upper-case letter an HTTP method), its front end reads
/// the request within the handshake deadline and pool, and the shared connection path
/// ([`path::open`]) resolves, picks, connects and fails over for every protocol alike. Never
/// panics; every failure is logged at debug and, where the protocol allows, answered.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, ctx: Arc<ServeContext>) {
    if !super::listener::ACCEPTED_INHERIT_NODELAY {
        let _ = client.set_nodelay(true);
    }
    // === negotiate ===
    let place = ctx.handshakes.enter();
    let asked = tokio::select! {
        r = timeout(ctx.handshake_timeout, negotiate(&mut client, peer, &ctx)) => r,
        () = place.evicted.cancelled() => {
            tracing::debug!(%peer, "Handshake evicted: the pool of pending handshakes is full.");
            return;
        }
    };
    drop(place);
    let Ok(asked) = asked else {
        tracing::debug!(%peer, "Handshake timed out; closing.");
        return;
    };
    // === serve, per protocol ===
    match asked {
        None => {}
        Some(Asked::Socks5(request)) => socks5(client, peer, request, &ctx).await,
        Some(Asked::Socks4(request)) => socks4(client, peer, request, &ctx).await,
        Some(Asked::Http(head)) => http::serve(client, peer, head, ctx).await,
    }
}

/// A request read by one of the front ends.
enum Asked {
    Socks5(handshake::Request),
    Socks4(socks4::Request),
    Http(http::Head),
}

/// Tells the protocol from the first byte and reads the request; `None` when the client was
/// refused (and answered, where its protocol has an answer) or went away.
async fn negotiate(client: &mut TcpStream, peer: SocketAddr, ctx: &ServeContext) -> Option<Asked> {
    let mut first = [0u8; 1];
    match client.peek(&mut first).await {
        Ok(1) => {}
        _ => return None,
    }
    match first[0] {
        handshake::VERSION => {
            let creds = ctx
                .users
                .as_ref()
                .map(|users| ClientCredentials::new(users, peer.ip(), &ctx.auth));
            match handshake::negotiate(client, creds.as_ref().map(|c| c as &dyn Credentials)).await
            {
                Ok(request) => Some(Asked::Socks5(request)),
                Err(error) => {
                    if let Some(reply) = error.reply() {
                        let _ = handshake::write_reply(client, reply, None).await;
                    }
                    tracing::debug!(%peer, %error, "SOCKS5 handshake refused.");
                    None
                }
            }
        }
        socks4::VERSION => match socks4::read_request(client).await {
            Ok(request) => Some(Asked::Socks4(request)),
            Err(error) => {
                if error.wants_reply() {
                    let _ = client
                        .write_all(&socks4::encode_reply(socks4::REJECTED, None))
                        .await;
                }
                tracing::debug!(%peer, %error, "SOCKS4 request refused.");
                None
            }
        },
        b if http::starts_request(b) => match http::read_head(client).await {
            Ok(head) => Some(Asked::Http(head)),
            Err(error) => {
                if let Some(response) = error.response() {
                    let _ = client.write_all(&response).await;
                }
                tracing::debug!(%peer, %error, "HTTP request refused.");
                None
            }
        },
        other => {
            tracing::debug!(%peer, first_byte = other, "Not SOCKS5, SOCKS4 or HTTP; closing.");
            None
        }
    }
}

/// A SOCKS5 request: CONNECT through the shared path; BIND ([`bind`]) and UDP ASSOCIATE
/// ([`udp`]) in their own modules, on the same path's pieces.
async fn socks5(
    mut client: TcpStream,
    peer: SocketAddr,
    request: handshake::Request,
    ctx: &ServeContext,
) {
    let handshake::Request {
        command,
        target,
        early_data,
    } = request;
    match command {
        Command::Connect => {
            match path::open(ctx, peer, &target, api::ClientProtocol::Socks5).await {
                Err(reply) => {
                    let _ = handshake::write_reply(&mut client, reply, None).await;
                }
                Ok(opened) => {
                    let bound = opened.stream.local_addr().ok();
                    if handshake::write_reply(&mut client, Reply::Succeeded, bound)
                        .await
                        .is_err()
                    {
                        opened.record.closed(ctx, Totals::default());
                        return;
                    }
                    opened.relay(ctx, &client, &early_data).await;
                }
            }
        }
        Command::Bind => bind::serve(client, peer, &target, &early_data, ctx).await,
        Command::UdpAssociate => udp::associate(client, peer, &target, ctx).await,
    }
}

/// A SOCKS4/4a CONNECT through the shared path. SOCKS4 carries no password, so with
/// authentication configured it is refused, and the log says why.
async fn socks4(
    mut client: TcpStream,
    peer: SocketAddr,
    request: socks4::Request,
    ctx: &ServeContext,
) {
    if ctx.users.is_some() {
        tracing::info!(
            %peer,
            target = %request.target,
            "SOCKS4 request refused: socks.auth is configured and SOCKS4 has no password; use SOCKS5 or HTTP with credentials."
        );
        let _ = client
            .write_all(&socks4::encode_reply(socks4::REJECTED, None))
            .await;
        return;
    }
    match path::open(ctx, peer, &request.target, api::ClientProtocol::Socks4).await {
        Err(_) => {
            let _ = client
                .write_all(&socks4::encode_reply(socks4::REJECTED, None))
                .await;
        }
        Ok(opened) => {
            let bound = opened.stream.local_addr().ok();
            if client
                .write_all(&socks4::encode_reply(socks4::GRANTED, bound))
                .await
                .is_err()
            {
                opened.record.closed(ctx, Totals::default());
                return;
            }
            opened.relay(ctx, &client, &request.early_data).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
