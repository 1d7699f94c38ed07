//! Sockets bound to one interface, so that a connection leaves through the link the router
//! chose whatever the OS routing table says: TCP connects ([`connect_via`]), UDP sockets for
//! SOCKS5 UDP associations ([`bound_udp_socket`]) and listeners for SOCKS5 BIND
//! ([`bound_listener`]), all set up the same way.
//!
//! - Linux/Android: `SO_BINDTODEVICE` plus the interface's source address. Without the
//!   privilege for `SO_BINDTODEVICE` (not root, no CAP_NET_RAW) the source address alone is
//!   used, which works with per-source policy routing; that is logged once.
//! - macOS/iOS: `IP_BOUND_IF` / `IPV6_BOUND_IF` by index plus the source address.
//! - Windows: `IP_UNICAST_IF` / `IPV6_UNICAST_IF` by index plus the source address.

use std::io;
use std::net::SocketAddr;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use super::InterfaceState;

/// SO_BINDTODEVICE was refused once (no CAP_NET_RAW): said once, then binds by address only.
#[cfg(any(target_os = "linux", target_os = "android"))]
static BIND_DEVICE_DENIED: AtomicBool = AtomicBool::new(false);

/// Why an outbound connect through an interface failed, and whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The interface has no source address of the destination's family.
    #[error("{iface} has no {family} address")]
    NoAddressFamily {
        /// Interface name.
        iface: String,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
    /// Socket set-up or connect failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The connect did not finish in time.
    #[error("connect timed out")]
    Timeout,
}

impl ConnectError {
    /// True when the failure shows the link itself is unusable: no such device, source
    /// address gone. ("Network unreachable" is not enough: a remote router says it too.)
    pub fn is_link_failure(&self) -> bool {
        const ENODEV: i32 = 19;
        match self {
            Self::Io(e) => {
                e.kind() == io::ErrorKind::AddrNotAvailable
                    || (cfg!(any(target_os = "linux", target_os = "android"))
                        && e.raw_os_error() == Some(ENODEV))
            }
            Self::NoAddressFamily { .. } | Self::Timeout => false,
        }
    }

    /// True when the link may have gone down (worth an immediate interface rescan).
    pub fn suggests_link_down(&self) -> bool {
        self.is_link_failure()
            || matches!(self, Self::Io(e) if e.kind() == io::ErrorKind::NetworkUnreachable)
    }

    /// True when the failure says something about the interface (link down, no route,
    /// blackhole), false when it is the destination's doing (refused).
    pub fn is_interface_side(&self) -> bool {
        match self {
            Self::NoAddressFamily { .. } => false,
            Self::Timeout => true,
            Self::Io(e) => !matches!(e.kind(), io::ErrorKind::ConnectionRefused),
        }
    }
}

/// Connects to `dest` through `iface`, bounded by `timeout`.
///
/// # Errors
/// [`ConnectError`] with the OS error or the timeout.
pub async fn connect_via(
    iface: &InterfaceState,
    dest: SocketAddr,
    timeout: std::time::Duration,
) -> Result<TcpStream, ConnectError> {
    let socket = bound_socket(iface, dest)?;
    match tokio::time::timeout(timeout, socket.connect(dest)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(ConnectError::Io(e)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// How long one address of a destination gets before the next one is tried alongside it
/// (RFC 8305's "connection attempt delay").
pub const ADDRESS_STAGGER: std::time::Duration = std::time::Duration::from_millis(250);

/// Connects to the first of `dests` (in order) that answers through `iface`, within `timeout`
/// overall: each address gets [`ADDRESS_STAGGER`] before the next starts alongside it, and a
/// failure starts the next at once (RFC 8305). A destination that drops packets costs one
/// stagger, not the whole deadline.
///
/// # Errors
/// When none connected: a refusal if any address refused (the destination answered, so the
/// link works), else the last failure; [`ConnectError::Timeout`] when the deadline passed.
pub async fn connect_any(
    iface: &InterfaceState,
    dests: &[SocketAddr],
    timeout: std::time::Duration,
) -> Result<TcpStream, ConnectError> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let Some((&first, rest)) = dests.split_first() else {
        return Err(ConnectError::Timeout);
    };
    if rest.is_empty() {
        return connect_via(iface, first, timeout).await;
    }
    let until = tokio::time::Instant::now() + timeout;
    let attempt = |dest: SocketAddr| async move {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        connect_via(iface, dest, left).await
    };
    let mut pending = FuturesUnordered::new();
    pending.push(attempt(first));
    let mut waiting = rest.iter().copied();
    let mut answered = None;
    let mut last = None;
    loop {
        let stagger = tokio::time::sleep(ADDRESS_STAGGER);
        tokio::select! {
            Some(result) = pending.next() => match result {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    tracing::debug!(iface = %iface.name, %error, "One address failed; trying the next.");
                    if error.is_interface_side() {
                        last = Some(error);
                    } else {
                        answered = Some(error);
                    }
                    match waiting.next() {
                        Some(dest) => pending.push(attempt(dest)),
                        None if pending.is_empty() => {
                            return Err(answered.or(last).unwrap_or(ConnectError::Timeout));
                        }
                        None => {}
                    }
                }
            },
            () = stagger, if waiting.len() > 0 => {
                if let Some(dest) = waiting.next() {
                    tracing::debug!(iface = %iface.name, next = %dest, "No answer yet; trying the next address alongside.");
                    pending.push(attempt(dest));
                }
            }
        }
    }
}

/// A non-blocking TCP socket for `dest`, bound to `iface` and its source address.
///
/// # Errors
/// When the interface lacks an address of `dest`'s family or the OS refuses a socket option.
pub fn bound_socket(iface: &InterfaceState, dest: SocketAddr) -> Result<TcpSocket, ConnectError> {
    let (socket, source) = interface_socket(iface, dest, Type::STREAM, Protocol::TCP)?;
    defer_port_choice(&socket);
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.set_tcp_nodelay(true)?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}

/// A non-blocking UDP socket bound to `iface` and its source address of `dest`'s family (any
/// port): the outbound side of a UDP association, which sends to many destinations.
///
/// # Errors
/// When the interface lacks an address of `dest`'s family or the OS refuses a socket option
/// or the bind.
///
/// # Panics
/// Outside a tokio runtime (the socket registers with its reactor).
pub fn bound_udp_socket(
    iface: &InterfaceState,
    dest: SocketAddr,
) -> Result<tokio::net::UdpSocket, ConnectError> {
    bound_udp_socket_on(iface, dest, 0)
}

/// [`bound_udp_socket`] on local port `port` (0: any), e.g. a DNS query's random port.
///
/// # Errors
/// As [`bound_udp_socket`].
///
/// # Panics
/// Outside a tokio runtime (the socket registers with its reactor).
pub fn bound_udp_socket_on(
    iface: &InterfaceState,
    dest: SocketAddr,
    port: u16,
) -> Result<tokio::net::UdpSocket, ConnectError> {
    let (socket, source) = interface_socket(iface, dest, Type::DGRAM, Protocol::UDP)?;
    if source.is_ipv6() {
        // One family per socket: an IPv4-mapped destination must not slip out another way.
        socket.set_only_v6(true)?;
    }
    socket.bind(&SocketAddr::new(source, port).into())?;
    Ok(tokio::net::UdpSocket::from_std(socket.into())?)
}

/// A listening TCP socket on `iface`'s address of `peer`'s family (any port), bound to the
/// interface, for a SOCKS5 BIND whose `peer` is to connect back through that interface.
///
/// # Errors
/// When the interface lacks an address of `peer`'s family or the OS refuses a socket option,
/// the bind or the listen.
///
/// # Panics
/// Outside a tokio runtime (the socket registers with its reactor).
pub fn bound_listener(
    iface: &InterfaceState,
    peer: SocketAddr,
    backlog: i32,
) -> Result<tokio::net::TcpListener, ConnectError> {
    let (socket, source) = interface_socket(iface, peer, Type::STREAM, Protocol::TCP)?;
    if source.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.listen(backlog)?;
    Ok(tokio::net::TcpListener::from_std(socket.into())?)
}

/// A non-blocking socket of `ty` bound to `iface` for `dest`'s family (not yet to an
/// address), with the interface's source address for that family.
fn interface_socket(
    iface: &InterfaceState,
    dest: SocketAddr,
    ty: Type,
    protocol: Protocol,
) -> Result<(Socket, std::net::IpAddr), ConnectError> {
    let source = iface
        .source_for(&dest)
        .ok_or_else(|| ConnectError::NoAddressFamily {
            iface: iface.name.clone(),
            family: if dest.is_ipv4() { "IPv4" } else { "IPv6" },
        })?;
    let socket = new_nonblocking_socket(Domain::for_address(dest), ty, protocol)?;
    bind_to_interface(&socket, iface, dest)?;
    Ok((socket, source))
}

/// A non-blocking socket: in the `socket()` call itself where the OS allows (two `fcntl`
/// calls fewer per connection), else set afterwards.
fn new_nonblocking_socket(domain: Domain, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        Socket::new(domain, ty.nonblocking(), Some(protocol))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let socket = Socket::new(domain, ty, Some(protocol))?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }
}

/// Binding a source address with port 0 makes the kernel reserve a port at once, from the
/// ephemeral range and unique for that address: at ~28,000 open connections per source (fewer
/// with TIME_WAITs about) binds fail with "address in use". With `IP_BIND_ADDRESS_NO_PORT` the
/// port is chosen at connect time, unique only per 4-tuple, like an unbound connect.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn defer_port_choice(socket: &Socket) {
    use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
    // Older kernels (< 4.2) lack it; the bind still works, only with the old limit.
    let _ = setsockopt(socket, IpBindAddressNoPort, &true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn defer_port_choice(_socket: &Socket) {}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn bind_to_interface(socket: &Socket, iface: &InterfaceState, _dest: SocketAddr) -> io::Result<()> {
    match socket.bind_device(Some(iface.name.as_bytes())) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            if !BIND_DEVICE_DENIED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "SO_BINDTODEVICE needs CAP_NET_RAW; binding by source address only \
                     (needs per-source routing rules to pick the link)."
                );
            }
            Ok(())
        }
        other => other,
    }
}

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "tvos",
    target_os = "watchos"
))]
fn bind_to_interface(socket: &Socket, iface: &InterfaceState, dest: SocketAddr) -> io::Result<()> {
    let index = std::num::NonZeroU32::new(iface.index);
    if dest.is_ipv4() {
        socket.bind_device_by_index_v4(index)
    } else {
        socket.bind_device_by_index_v6(index)
    }
}

#[cfg(windows)]
#[allow(unsafe_code)]
fn bind_to_interface(socket: &Socket, iface: &InterfaceState, dest: SocketAddr) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{
        IP_UNICAST_IF, IPPROTO_IP, IPPROTO_IPV6, IPV6_UNICAST_IF, SOCKET, setsockopt,
    };
    // IP_UNICAST_IF takes the index in network byte order; IPV6_UNICAST_IF in host order.
    let (level, name, value) = if dest.is_ipv4() {
        (IPPROTO_IP, IP_UNICAST_IF, iface.index.to_be())
    } else {
        (IPPROTO_IPV6, IPV6_UNICAST_IF, iface.index)
    };
    // SAFETY: the socket handle is valid for the call, and the option value points to a u32
    // that lives across the call, with its exact length.
    let rc = unsafe {
        setsockopt(
            socket.as_raw_socket() as SOCKET,
            level,
            name,
            (&value as *const u32).cast(),
            std::mem::size_of::<u32>() as i32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "tvos",
    target_os = "watchos",
    windows
)))]
fn bind_to_interface(_: &Socket, _: &InterfaceState, _: SocketAddr) -> io::Result<()> {
    // Elsewhere the source address bind alone selects the link.
    Ok(())
}
