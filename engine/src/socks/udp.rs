//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7): a UDP relay for one client, pinned to one interface.
//!
//! - The relay socket sits on the address the client's control connection reached (port 0);
//!   the success reply names it. It takes datagrams only from the client's address (the
//!   request's DST.ADDR/DST.PORT; an unspecified address means the control connection's peer,
//!   port 0 means "the port of the first datagram from there"), whole ones only (FRAG 0).
//! - Each datagram's destination is resolved ([`path::resolve`]) and checked against
//!   `socks.deny` ([`path::is_denied`]); the first one decides the interface, as a connection's
//!   does ([`Session::new`], transport UDP), and the association keeps it: its outbound
//!   sockets (one per address family, made on first use) are bound to that interface. Answers
//!   from outside go back to the client with the header naming their source.
//! - When the interface stops being usable (seen on the next datagram or by the check every
//!   [`CHECK_INTERVAL`]), or a send says the link failed, the association moves to what the
//!   strategy picks next with the old one in `tried` (logged at INFO and in the event log as a
//!   failover, like a TCP connection's).
//! - It ends when the control connection closes or fails, or after the idle deadline
//!   (`timeouts.idle_secs`, else [`DEFAULT_UDP_IDLE_SECS`]); every socket closes with it.
//!
//! Bounded: one association per control connection, one datagram buffer of 64 KiB per
//! association (released after a quiet [`CHECK_INTERVAL`]), no queue (a datagram that finds
//! no room within [`SEND_WAIT`] is dropped, as the network would).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netmix_plugin_api as api;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, MissedTickBehavior};

use super::conn::ServeContext;
use super::handshake::{self, MAX_UDP_IP_HEADER, Reply, TargetAddr};
use super::path::{self, Held};
use super::relay::Totals;
use super::session::{Route, Session, Via};
use crate::iface::bind::{ConnectError, bound_udp_socket};
use crate::iface::{Outcome, Rescan, Source};

/// Idle deadline of an association when the config sets none (`timeouts.idle_secs = 0`).
pub const DEFAULT_UDP_IDLE_SECS: u64 = 120;

/// How often an association checks that its interface is still usable, and whether it idles.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The largest datagram either way: the UDP maximum, header included.
const MAX_DATAGRAM: usize = 64 * 1024;

/// Datagrams taken from one socket per wake-up before the other sockets get their turn.
const BURST: usize = 64;

/// How long a send waits for room (a full send buffer; a new socket's first readiness) before
/// its datagram is dropped.
const SEND_WAIT: Duration = Duration::from_millis(100);

/// Sends `data` to `to` at once when the socket has room, else within [`SEND_WAIT`]; returns
/// the bytes sent, `None` when the datagram was dropped for want of room.
async fn send(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> io::Result<Option<usize>> {
    match socket.try_send_to(data, to) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            match tokio::time::timeout(SEND_WAIT, socket.send_to(data, to)).await {
                Ok(sent) => sent.map(Some),
                Err(_) => Ok(None),
            }
        }
        Err(e) => Err(e),
    }
}

/// Serves a UDP ASSOCIATE request until its control connection closes or it idles; the
/// client expects its datagrams from `requested` (RFC 1928 §7). Never panics; failures are
/// logged at debug and, before the reply, answered with a general failure.
pub(crate) async fn associate(
    mut control: TcpStream,
    peer: SocketAddr,
    requested: &TargetAddr,
    ctx: &ServeContext,
) {
    let relay = match control.local_addr() {
        Ok(local) => UdpSocket::bind(SocketAddr::new(local.ip().to_canonical(), 0)).await,
        Err(e) => Err(e),
    };
    let relay = match relay {
        Ok(relay) => relay,
        Err(error) => {
            tracing::debug!(%peer, %error, "Cannot open a UDP relay socket.");
            let _ = handshake::write_reply(&mut control, Reply::GeneralFailure, None).await;
            return;
        }
    };
    let bound = relay.local_addr().ok();
    if handshake::write_reply(&mut control, Reply::Succeeded, bound)
        .await
        .is_err()
    {
        return;
    }
    let client = ClientAddr::expected(requested, peer);
    tracing::debug!(%peer, relay = ?bound, client = ?client, "UDP association open.");
    let mut association = Association {
        ctx,
        peer,
        relay,
        client,
        pinned: None,
        unroutable_reported: false,
        totals: Totals::default(),
        idle: ctx
            .idle_timeout
            .unwrap_or(Duration::from_secs(DEFAULT_UDP_IDLE_SECS)),
        last_active: Instant::now(),
        active_since_check: false,
        last_dest: None,
        buf: Vec::new(),
    };
    let why = association.run(&control).await;
    let Association { pinned, totals, .. } = association;
    tracing::debug!(%peer, why, up = totals.up, down = totals.down, "UDP association closed.");
    if let Some(pinned) = pinned {
        pinned.record.closed(ctx, totals);
    }
}

/// Where the client sends from: whose datagrams the relay takes, and where answers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientAddr {
    ip: IpAddr,
    /// `None` until the first datagram from `ip` names it (the request left it open).
    port: Option<u16>,
    /// The client's address as its datagrams carry it, once one arrived: answers go there.
    seen: Option<SocketAddr>,
}

impl ClientAddr {
    /// From the request's DST.ADDR/DST.PORT and the control connection's `peer`: an
    /// unspecified address (or a name) stands for the peer's, port 0 for "not known yet".
    fn expected(requested: &TargetAddr, peer: SocketAddr) -> Self {
        let (ip, port) = match requested {
            TargetAddr::Ip(a) if !a.ip().is_unspecified() => (a.ip(), a.port()),
            other => (peer.ip(), other.port()),
        };
        Self {
            ip,
            port: (port != 0).then_some(port),
            seen: None,
        }
    }

    /// Whether a datagram from `src` is the client's; the first one from the client's address
    /// fixes the port when the request left it open.
    fn admits(&mut self, src: SocketAddr) -> bool {
        if src.ip().to_canonical() != self.ip.to_canonical() {
            return false;
        }
        match self.port {
            Some(port) if port != src.port() => return false,
            Some(_) => {}
            None => self.port = Some(src.port()),
        }
        self.seen = Some(src);
        true
    }
}

/// The interface an association is pinned to, with its outbound sockets there.
struct Pinned {
    record: Held,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Pinned {
    /// The outbound socket for `dest`'s family, made (bound to the interface) on first use.
    fn socket(&mut self, dest: SocketAddr) -> Result<&UdpSocket, ConnectError> {
        let slot = if dest.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        let socket = match slot.take() {
            Some(socket) => socket,
            None => bound_udp_socket(&self.record.member.state, dest)?,
        };
        Ok(slot.insert(socket))
    }
}

/// What woke the association.
enum Wake {
    Client,
    Outside(bool),
    Control,
    Check,
}

/// One association's state, owned by its connection task.
struct Association<'a> {
    ctx: &'a ServeContext,
    /// The control connection's peer.
    peer: SocketAddr,
    /// The socket the client sends to.
    relay: UdpSocket,
    client: ClientAddr,
    /// `None` until the first datagram to send decides the interface.
    pinned: Option<Pinned>,
    /// A datagram found no interface and that was recorded (once per association).
    unroutable_reported: bool,
    totals: Totals,
    idle: Duration,
    last_active: Instant,
    /// A datagram moved since the last check (else the buffer is released).
    active_since_check: bool,
    /// The destination of the latest datagram sent (its family guides a move).
    last_dest: Option<SocketAddr>,
    /// Room for one datagram and a header in front of it; empty while idle.
    buf: Vec<u8>,
}

/// Completes when `socket` is readable; never when there is none.
async fn readable(socket: Option<&UdpSocket>) -> io::Result<()> {
    match socket {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

impl Association<'_> {
    /// Relays until the control connection ends, a socket fails, or nothing moved for the
    /// idle deadline; returns why it ended.
    async fn run(&mut self, control: &TcpStream) -> &'static str {
        let mut check = tokio::time::interval_at(Instant::now() + CHECK_INTERVAL, CHECK_INTERVAL);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let wake = {
                let (v4, v6) = match &self.pinned {
                    Some(p) => (p.v4.as_ref(), p.v6.as_ref()),
                    None => (None, None),
                };
                tokio::select! {
                    r = self.relay.readable() => r.map(|()| Wake::Client),
                    r = readable(v4) => r.map(|()| Wake::Outside(true)),
                    r = readable(v6) => r.map(|()| Wake::Outside(false)),
                    r = control.readable() => r.map(|()| Wake::Control),
                    _ = check.tick() => Ok(Wake::Check),
                }
            };
            match wake {
                Err(_) => return "a socket failed",
                Ok(Wake::Client) => self.upstream().await,
                Ok(Wake::Outside(v4)) => self.downstream(v4).await,
                Ok(Wake::Control) => {
                    // The control connection carries nothing more; only its end matters.
                    let mut discard = [0u8; 256];
                    match control.try_read(&mut discard) {
                        Ok(0) => return "the control connection closed",
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return "the control connection failed",
                    }
                }
                Ok(Wake::Check) => {
                    if let Some(why) = self.check() {
                        return why;
                    }
                }
            }
        }
    }

    /// The datagram buffer, allocated on first use after a quiet spell.
    fn take_buf(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.is_empty() {
            buf = vec![0; MAX_UDP_IP_HEADER + MAX_DATAGRAM];
        }
        buf
    }

    fn touch(&mut self) {
        self.last_active = Instant::now();
        self.active_since_check = true;
    }

    /// Takes the client's datagrams waiting on the relay socket and sends them on.
    async fn upstream(&mut self) {
        let mut buf = self.take_buf();
        for _ in 0..BURST {
            let (n, src) = match self.relay.try_recv_from(&mut buf[..MAX_DATAGRAM]) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "UDP relay receive failed.");
                    break;
                }
            };
            self.forward_up(&buf[..n], src).await;
        }
        self.buf = buf;
    }

    /// One datagram from `src` to the relay: checked, unwrapped, sent out the interface.
    async fn forward_up(&mut self, datagram: &[u8], src: SocketAddr) {
        if !self.client.admits(src) {
            tracing::debug!(peer = %self.peer, %src, "UDP datagram from a source other than the client; dropped.");
            return;
        }
        let header = match handshake::parse_udp_header(datagram) {
            Ok(header) => header,
            Err(error) => {
                tracing::debug!(peer = %self.peer, %error, "Malformed UDP request header; dropped.");
                return;
            }
        };
        if header.frag != 0 {
            tracing::debug!(peer = %self.peer, frag = header.frag, "Fragmented UDP datagram; dropped (no reassembly).");
            return;
        }
        let payload = &datagram[header.len..];
        let Some((host, dest)) = self.destination(&header.target).await else {
            return;
        };
        self.touch();
        self.last_dest = Some(dest);
        if !self.ensure_pinned(&header.target, host, dest) {
            return;
        }
        // A second try only after a send proved the link dead and the association moved.
        for _ in 0..2 {
            let Some(pinned) = self.pinned.as_mut() else {
                return;
            };
            let socket = match pinned.socket(dest) {
                Ok(socket) => socket,
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %dest, %error, "UDP datagram to a family the interface lacks; dropped.");
                    return;
                }
            };
            match send(socket, payload, dest).await {
                Ok(Some(n)) => {
                    self.totals.up += n as u64;
                    (pinned.record.member.handles.live.bytes_up)
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                Ok(None) => {
                    tracing::trace!(peer = %self.peer, %dest, "UDP send buffer full; datagram dropped.");
                    return;
                }
                Err(e) => {
                    let error = ConnectError::Io(e);
                    let iface = &pinned.record.member;
                    tracing::debug!(peer = %self.peer, %dest, iface = %iface.state.name, %error, "UDP send failed.");
                    if error.suggests_link_down() {
                        self.ctx.rescan.do_send(Rescan);
                    }
                    if !error.is_link_failure() {
                        return;
                    }
                    iface
                        .handles
                        .failed(Source::Connection, Outcome::LinkFailed);
                    if !self.move_on(&format!("failed ({error})")) {
                        return;
                    }
                }
            }
        }
    }

    /// Where a datagram for `target` goes (with the name it was asked by), or `None` (logged)
    /// when the name does not resolve or `socks.deny` covers it.
    async fn destination(&self, target: &TargetAddr) -> Option<(Option<String>, SocketAddr)> {
        let (host, dest) = match target {
            TargetAddr::Ip(addr) => (None, *addr),
            TargetAddr::Domain(..) => match path::resolve(
                self.ctx,
                target,
                self.pinned
                    .as_ref()
                    .map(|p| std::slice::from_ref(&p.record.member))
                    .unwrap_or_default(),
            )
            .await
            {
                Ok((host, addrs)) => {
                    if let Some(denied) = addrs
                        .iter()
                        .find(|a| path::is_denied(&self.ctx.deny, a.ip()))
                    {
                        tracing::debug!(peer = %self.peer, %target, %denied, "UDP destination not allowed by socks.deny; dropped.");
                        return None;
                    }
                    // An address of a family the pinned interface has, if there is one.
                    let fits = |a: &&SocketAddr| {
                        self.pinned
                            .as_ref()
                            .is_none_or(|p| p.record.member.state.source_for(a).is_some())
                    };
                    let dest = addrs.iter().find(fits).unwrap_or(&addrs[0]);
                    (host, *dest)
                }
                Err(reason) => {
                    tracing::debug!(peer = %self.peer, %target, %reason, "Cannot resolve a UDP destination; dropped.");
                    return None;
                }
            },
        };
        if let Some(refusal) = path::refusal(self.ctx, &[dest]) {
            tracing::debug!(peer = %self.peer, %target, "{refusal} UDP datagram dropped.");
            return None;
        }
        Some((host, dest))
    }

    /// Pins the association on its first datagram (to `dest`, asked for as `target`), or
    /// moves it when its interface is no longer usable; false when no interface can carry it.
    fn ensure_pinned(
        &mut self,
        target: &TargetAddr,
        host: Option<String>,
        dest: SocketAddr,
    ) -> bool {
        if let Some(pinned) = &self.pinned {
            let id = pinned.record.member.state.id;
            if self.ctx.router.snapshot().usable_member(id).is_none() {
                self.move_on("is no longer usable");
            }
            return true;
        }
        let ctx = self.ctx;
        let mut session = Session::new(
            ctx,
            self.peer,
            target,
            host,
            &[dest],
            api::ClientProtocol::Socks5,
            api::Transport::Udp,
            Route::Ask,
        );
        let order = std::mem::take(&mut session.order);
        let mut last_error = None;
        for member in order.into_iter().take(ctx.max_attempts) {
            match bound_udp_socket(&member.state, dest) {
                Ok(socket) => {
                    session.connected(ctx, Via::Interface(&member));
                    let (v4, v6) = if dest.is_ipv4() {
                        (Some(socket), None)
                    } else {
                        (None, Some(socket))
                    };
                    tracing::debug!(peer = %self.peer, target = %session.destination, iface = %member.state.name, reason = %session.reason, "UDP association pinned.");
                    self.pinned = Some(Pinned {
                        record: Held::start(session, member),
                        v4,
                        v6,
                    });
                    return true;
                }
                Err(error) => {
                    tracing::debug!(iface = %member.state.name, %error, "Cannot open a UDP socket on the interface.");
                    session
                        .failed
                        .push((member.state.name.clone(), error.to_string()));
                    session.meta.tried.push(member.state.id);
                    last_error = Some(error);
                }
            }
        }
        tracing::debug!(peer = %self.peer, %target, "No interface for the UDP datagram; dropped.");
        if !self.unroutable_reported {
            self.unroutable_reported = true;
            session.failed(ctx, last_error.as_ref());
        }
        false
    }

    /// Moves the association off its interface (which `why`) to what the strategy picks next;
    /// false (and it stays) when no other interface can take it.
    fn move_on(&mut self, why: &str) -> bool {
        let ctx = self.ctx;
        let (Some(pinned), Some(dest)) = (self.pinned.as_mut(), self.last_dest) else {
            return false;
        };
        let old = pinned.record.member.state.id;
        let meta = &mut pinned.record.session.meta;
        if !meta.tried.contains(&old) {
            meta.tried.push(old);
        }
        let mut order = ctx.router.pick(meta).order;
        if order.iter().all(|m| m.state.id == old) {
            // Every interface was left once already: only the failing one is out now.
            meta.tried.clear();
            meta.tried.push(old);
            order = ctx.router.pick(meta).order;
        }
        for member in order.into_iter().filter(|m| m.state.id != old) {
            match bound_udp_socket(&member.state, dest) {
                Ok(socket) => {
                    pinned.record.moved(ctx, member, why);
                    (pinned.v4, pinned.v6) = if dest.is_ipv4() {
                        (Some(socket), None)
                    } else {
                        (None, Some(socket))
                    };
                    return true;
                }
                Err(error) => {
                    tracing::debug!(iface = %member.state.name, %error, "Cannot open a UDP socket on the interface.");
                }
            }
        }
        tracing::debug!(peer = %self.peer, iface = %pinned.record.member.state.name, why, "No other interface for the UDP association; it stays.");
        false
    }

    /// Answers from outside waiting on the outbound socket (IPv4 or IPv6), wrapped and sent
    /// to the client.
    async fn downstream(&mut self, v4: bool) {
        let mut buf = self.take_buf();
        for _ in 0..BURST {
            let Some(pinned) = &self.pinned else { break };
            let Some(socket) = (if v4 { &pinned.v4 } else { &pinned.v6 }) else {
                break;
            };
            let (n, from) = match socket.try_recv_from(&mut buf[MAX_UDP_IP_HEADER..]) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    // Unconnected UDP sockets get no ICMP errors; anything else is passing.
                    tracing::debug!(peer = %self.peer, %error, "UDP receive from outside failed.");
                    break;
                }
            };
            let Some(client) = self.client.seen else {
                continue;
            };
            // The header goes right in front of the payload: no copy of the data.
            let (header, len) = handshake::encode_udp_header(from);
            let start = MAX_UDP_IP_HEADER - len;
            buf[start..MAX_UDP_IP_HEADER].copy_from_slice(&header[..len]);
            match send(&self.relay, &buf[start..MAX_UDP_IP_HEADER + n], client).await {
                Ok(None) => {
                    tracing::trace!(peer = %self.peer, "Client's receive buffer full; UDP answer dropped.");
                }
                Ok(Some(_)) => {
                    self.totals.down += n as u64;
                    (pinned.record.member.handles.live.bytes_down)
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    self.last_active = Instant::now();
                    self.active_since_check = true;
                }
                Err(error) => {
                    tracing::trace!(peer = %self.peer, %error, "UDP answer to the client dropped.");
                }
            }
        }
        self.buf = buf;
    }

    /// The periodic check: idle deadline, interface still usable, buffer release. `Some`
    /// (why) ends the association.
    fn check(&mut self) -> Option<&'static str> {
        if !std::mem::take(&mut self.active_since_check) {
            self.buf = Vec::new();
        }
        if self.last_active.elapsed() >= self.idle {
            return Some("idle");
        }
        if let Some(pinned) = &self.pinned {
            let id = pinned.record.member.state.id;
            if self.ctx.router.snapshot().usable_member(id).is_none() {
                self.move_on("is no longer usable");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::Config;
    use crate::socks::testing::loopback_context;

    /// A control connection as `associate` gets it (handshake done): the client's end and
    /// the association task, for a request naming `requested`.
    async fn open(
        ctx: &std::sync::Arc<ServeContext>,
        requested: &str,
    ) -> (TcpStream, tokio::task::JoinHandle<()>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut control = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let (ctx, requested) = (ctx.clone(), TargetAddr::Ip(requested.parse().unwrap()));
        let task = tokio::spawn(async move { associate(server, peer, &requested, &ctx).await });
        let mut reply = [0u8; 10];
        control.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..4], &[5, 0, 0, 1], "succeeded, IPv4 BND.ADDR");
        let relay = SocketAddr::from((
            [reply[4], reply[5], reply[6], reply[7]],
            u16::from_be_bytes([reply[8], reply[9]]),
        ));
        assert_eq!(
            relay.ip(),
            peer.ip(),
            "the relay sits where the client connected"
        );
        (control, task, relay)
    }

    /// `payload` for `dest`, with the request header.
    fn wrap(dest: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let (header, len) = handshake::encode_udp_header(dest);
        [&header[..len], payload].concat()
    }

    #[actix::test]
    #[cfg_attr(
        windows,
        ignore = "hangs under Wine 8 before the first datagram (not diagnosed; see the Windows issue's note)"
    )]
    async fn relays_both_ways_counts_and_frees_its_sockets_when_the_control_closes() {
        let (ctx, lo) = loopback_context(&Config::default());
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_at = echo.local_addr().unwrap();
        let echoer = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = echo.recv_from(&mut buf).await.unwrap();
                echo.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let (mut control, task, relay) = open(&ctx, "0.0.0.0:0").await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&wrap(echo_at, b"query"), relay)
            .await
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(from, relay);
        assert_eq!(
            &buf[..n],
            wrap(echo_at, b"query").as_slice(),
            "re-wrapped, source named"
        );
        let live = &lo.handles.live;
        assert_eq!(live.active.load(Ordering::Relaxed), 1, "counted in flight");
        assert_eq!(live.bytes_up.load(Ordering::Relaxed), 5);
        assert_eq!(live.bytes_down.load(Ordering::Relaxed), 5);

        control.shutdown().await.unwrap();
        drop(control);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the association ends with its control connection")
            .unwrap();
        assert_eq!(
            live.active.load(Ordering::Relaxed),
            0,
            "no longer in flight"
        );
        // The relay socket is closed: the loopback answers "port unreachable".
        client.connect(relay).await.unwrap();
        client.send(&wrap(echo_at, b"late")).await.unwrap();
        let late = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await;
        assert!(
            matches!(late, Ok(Err(ref e)) if e.kind() == io::ErrorKind::ConnectionRefused),
            "{late:?}"
        );
        echoer.abort();
    }

    #[actix::test]
    async fn an_idle_association_ends() {
        let mut config = Config::default();
        config.timeouts.idle_secs = 1;
        let (ctx, _) = loopback_context(&config);
        let (_control, task, _) = open(&ctx, "0.0.0.0:0").await;
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("idle associations end")
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(900));
    }

    #[test]
    fn the_client_address_comes_from_the_request_or_the_peer() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let any = ClientAddr::expected(&TargetAddr::Ip("0.0.0.0:0".parse().unwrap()), peer);
        assert_eq!((any.ip, any.port), (peer.ip(), None));
        let port_only =
            ClientAddr::expected(&TargetAddr::Ip("0.0.0.0:5353".parse().unwrap()), peer);
        assert_eq!((port_only.ip, port_only.port), (peer.ip(), Some(5353)));
        let given = ClientAddr::expected(&TargetAddr::Ip("127.0.0.2:7".parse().unwrap()), peer);
        assert_eq!(
            (given.ip, given.port),
            ("127.0.0.2".parse().unwrap(), Some(7))
        );
        let named = ClientAddr::expected(&TargetAddr::Domain("me".into(), 9), peer);
        assert_eq!((named.ip, named.port), (peer.ip(), Some(9)));
    }

    #[test]
    fn the_first_datagram_fixes_an_open_port_and_others_are_refused() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut client = ClientAddr::expected(&TargetAddr::Ip("0.0.0.0:0".parse().unwrap()), peer);
        assert!(
            !client.admits("127.0.0.2:5000".parse().unwrap()),
            "another host"
        );
        assert_eq!(client.seen, None);
        assert!(
            client.admits("127.0.0.1:5000".parse().unwrap()),
            "the first from the peer"
        );
        assert!(
            !client.admits("127.0.0.1:5001".parse().unwrap()),
            "another port"
        );
        assert!(
            client.admits("[::ffff:127.0.0.1]:5000".parse().unwrap()),
            "mapped spelling"
        );
        let mut fixed =
            ClientAddr::expected(&TargetAddr::Ip("127.0.0.1:6000".parse().unwrap()), peer);
        assert!(!fixed.admits("127.0.0.1:5000".parse().unwrap()));
        assert!(fixed.admits("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(fixed.seen, Some("127.0.0.1:6000".parse().unwrap()));
    }
}
