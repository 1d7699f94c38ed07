//! SOCKS5 server handshake (RFC 1928) with username/password authentication (RFC 1929).
//!
//! Reads whatever the client has sent (usually one read per message, one for a client that
//! pipelines everything) and hands back the bytes that followed the request, so data a client
//! pipelines right after its request reaches the destination first. Every failure maps to the reply code
//! the client should get ([`HandshakeError::reply`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The SOCKS5 version byte.
pub const VERSION: u8 = 0x05;
const AUTH_VERSION: u8 = 0x01;
const METHOD_NONE: u8 = 0x00;
const METHOD_USERPASS: u8 = 0x02;
const METHOD_UNACCEPTABLE: u8 = 0xFF;
const CMD_CONNECT: u8 = 0x01;
const CMD_BIND: u8 = 0x02;
const CMD_UDP_ASSOCIATE: u8 = 0x03;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// RFC 1928 reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// 00 succeeded.
    Succeeded = 0x00,
    /// 01 general SOCKS server failure.
    GeneralFailure = 0x01,
    /// 02 connection not allowed by ruleset.
    NotAllowed = 0x02,
    /// 03 network unreachable.
    NetworkUnreachable = 0x03,
    /// 04 host unreachable.
    HostUnreachable = 0x04,
    /// 05 connection refused.
    ConnectionRefused = 0x05,
    /// 06 TTL expired (used for timeouts).
    TtlExpired = 0x06,
    /// 07 command not supported.
    CommandNotSupported = 0x07,
    /// 08 address type not supported.
    AddressTypeNotSupported = 0x08,
}

/// What a SOCKS5 client asks for (RFC 1928 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A TCP connection to the target.
    Connect,
    /// A listening socket the target connects back to (§4, BIND).
    Bind,
    /// A UDP relay (§7); the target is where the client will send from (often 0.0.0.0:0).
    UdpAssociate,
}

impl Reply {
    /// What the reply says, in words (for logs).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::GeneralFailure => "connect failed",
            Self::NotAllowed => "not allowed",
            Self::NetworkUnreachable => "network unreachable",
            Self::HostUnreachable => "host unreachable",
            Self::ConnectionRefused => "connection refused",
            Self::TtlExpired => "connect timed out",
            Self::CommandNotSupported => "command not supported",
            Self::AddressTypeNotSupported => "address type not supported",
        }
    }
}

/// Where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddr {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A host name (to resolve) and port.
    Domain(String, u16),
}

impl TargetAddr {
    /// A host as a client wrote it (a name, or an IP literal, IPv6 with or without brackets).
    pub fn from_host(host: &str, port: u16) -> Self {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Self::Ip(SocketAddr::new(ip, port)),
            Err(_) => Self::Domain(host.to_owned(), port),
        }
    }

    /// The destination port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Ip(a) => a.port(),
            Self::Domain(_, p) => *p,
        }
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => a.fmt(f),
            Self::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// Accepted username/password pairs (RFC 1929). `None` in [`negotiate`] means no auth.
pub trait Credentials: Send + Sync {
    /// True when the pair is accepted.
    fn check(&self, username: &[u8], password: &[u8]) -> bool;

    /// How long to wait before telling the client its credentials failed (a back-off against
    /// guessing); called after a failed [`Credentials::check`]. None by default.
    fn failure_delay(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Why a handshake ended without a CONNECT to serve.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Socket error or EOF mid-message.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Not SOCKS version 5.
    #[error("not SOCKS5 (version byte {0:#04x})")]
    BadVersion(u8),
    /// The client offered no method we accept; it was sent 0xFF.
    #[error("no acceptable authentication method offered")]
    NoAcceptableMethod,
    /// Wrong username or password; the client was told.
    #[error("authentication failed")]
    AuthFailed,
    /// A command other than CONNECT, BIND and UDP ASSOCIATE.
    #[error("command {0:#04x} not supported")]
    UnsupportedCommand(u8),
    /// An address type other than IPv4, IPv6 or domain name.
    #[error("address type {0:#04x} not supported")]
    UnsupportedAddressType(u8),
    /// A zero-length or non-UTF-8 domain name.
    #[error("invalid domain name")]
    BadDomain,
}

impl HandshakeError {
    /// The reply code to send before closing, when the client reached the request stage.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Self::UnsupportedCommand(_) => Some(Reply::CommandNotSupported),
            Self::UnsupportedAddressType(_) => Some(Reply::AddressTypeNotSupported),
            Self::BadDomain => Some(Reply::HostUnreachable),
            Self::Io(_) | Self::BadVersion(_) | Self::NoAcceptableMethod | Self::AuthFailed => None,
        }
    }
}

/// What the handshake yields: the target, and any bytes the client sent after its request
/// (pipelined data, to be forwarded first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// CONNECT, BIND or UDP ASSOCIATE.
    pub command: Command,
    /// Where the client wants to go.
    pub target: TargetAddr,
    /// Bytes received after the request, in order.
    pub early_data: Vec<u8>,
}

/// Runs method negotiation, authentication and reads the request, reading whatever the client
/// has sent in as few reads as possible; bytes beyond the request come back in
/// [`Request::early_data`], so nothing pipelined is lost. On success the client is waiting
/// for the reply to a CONNECT to the returned target.
///
/// # Errors
/// [`HandshakeError`]; the method-rejection and auth-failure answers have already been sent,
/// the request-stage reply (if any) is the caller's to send with [`write_reply`].
pub async fn negotiate<S>(
    stream: &mut S,
    credentials: Option<&dyn Credentials>,
) -> Result<Request, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut r = Reader {
        buf: [0; READ_BUF],
        start: 0,
        end: 0,
    };
    // Method selection: VER NMETHODS METHODS...
    let [version, n] = r.array::<2, _>(stream).await?;
    if version != VERSION {
        return Err(HandshakeError::BadVersion(version));
    }
    let methods = r.take(stream, usize::from(n)).await?;
    let wanted = if credentials.is_some() {
        METHOD_USERPASS
    } else {
        METHOD_NONE
    };
    if !methods.contains(&wanted) {
        stream.write_all(&[VERSION, METHOD_UNACCEPTABLE]).await?;
        return Err(HandshakeError::NoAcceptableMethod);
    }
    stream.write_all(&[VERSION, wanted]).await?;

    if let Some(credentials) = credentials {
        let [auth_version, ulen] = r.array::<2, _>(stream).await?;
        if auth_version != AUTH_VERSION {
            stream.write_all(&[AUTH_VERSION, 0x01]).await?;
            return Err(HandshakeError::AuthFailed);
        }
        let mut user = [0u8; 255];
        let user = &mut user[..usize::from(ulen)];
        user.copy_from_slice(r.take(stream, usize::from(ulen)).await?);
        let [plen] = r.array::<1, _>(stream).await?;
        let pass = r.take(stream, usize::from(plen)).await?;
        if !credentials.check(user, pass) {
            let delay = credentials.failure_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            stream.write_all(&[AUTH_VERSION, 0x01]).await?;
            return Err(HandshakeError::AuthFailed);
        }
        stream.write_all(&[AUTH_VERSION, 0x00]).await?;
    }

    // Request: VER CMD RSV ATYP DST.ADDR DST.PORT
    let [version, cmd, _rsv, atyp] = r.array::<4, _>(stream).await?;
    if version != VERSION {
        return Err(HandshakeError::BadVersion(version));
    }
    let target = match atyp {
        ATYP_IPV4 => {
            let [a, b, c, d, p0, p1] = r.array::<6, _>(stream).await?;
            TargetAddr::Ip(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
                u16::from_be_bytes([p0, p1]),
            ))
        }
        ATYP_IPV6 => {
            let buf = r.array::<18, _>(stream).await?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&buf[..16]);
            TargetAddr::Ip(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                u16::from_be_bytes([buf[16], buf[17]]),
            ))
        }
        ATYP_DOMAIN => {
            let [len] = r.array::<1, _>(stream).await?;
            let name = r.take(stream, usize::from(len)).await?.to_vec();
            let port = u16::from_be_bytes(r.array::<2, _>(stream).await?);
            let host = String::from_utf8(name).map_err(|_| HandshakeError::BadDomain)?;
            if host.is_empty() {
                return Err(HandshakeError::BadDomain);
            }
            TargetAddr::Domain(host, port)
        }
        other => return Err(HandshakeError::UnsupportedAddressType(other)),
    };
    let command = match cmd {
        CMD_CONNECT => Command::Connect,
        CMD_BIND => Command::Bind,
        CMD_UDP_ASSOCIATE => Command::UdpAssociate,
        other => return Err(HandshakeError::UnsupportedCommand(other)),
    };
    Ok(Request {
        command,
        target,
        early_data: r.buf[r.start..r.end].to_vec(),
    })
}

/// Room for the longest handshake message (auth: 2 + 255 + 1 + 255 bytes) twice over.
const READ_BUF: usize = 1024;

/// Reads ahead into a fixed buffer and hands out exact-size pieces.
struct Reader {
    buf: [u8; READ_BUF],
    start: usize,
    end: usize,
}

impl Reader {
    /// The next `n` bytes (n ≤ 513), reading more from `stream` only when needed.
    async fn take<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        n: usize,
    ) -> std::io::Result<&[u8]> {
        while self.end - self.start < n {
            if self.end == READ_BUF {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let k = stream.read(&mut self.buf[self.end..]).await?;
            if k == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.end += k;
        }
        let at = self.start;
        self.start += n;
        Ok(&self.buf[at..at + n])
    }

    async fn array<const N: usize, S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> std::io::Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(stream, N).await?);
        Ok(out)
    }
}

/// Sends a reply with BND.ADDR/BND.PORT = `bound` (0.0.0.0:0 when there is none).
///
/// # Errors
/// Socket errors.
pub async fn write_reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    reply: Reply,
    bound: Option<SocketAddr>,
) -> std::io::Result<()> {
    let (buf, len) = encode_reply(reply, bound);
    stream.write_all(&buf[..len]).await
}

/// Encodes a reply into a fixed buffer; returns the buffer and the length used.
pub fn encode_reply(reply: Reply, bound: Option<SocketAddr>) -> ([u8; 22], usize) {
    let bound = bound.unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    let mut buf = [0u8; 22];
    buf[..3].copy_from_slice(&[VERSION, reply as u8, 0x00]);
    let len = put_addr(&mut buf[3..], bound);
    (buf, 3 + len)
}

/// Writes ATYP, the address (IPv4 or IPv6, never a name) and the port at the start of `out`
/// (room for 19 bytes); returns the bytes written.
fn put_addr(out: &mut [u8], addr: SocketAddr) -> usize {
    let at = match addr.ip() {
        IpAddr::V4(ip) => {
            out[0] = ATYP_IPV4;
            out[1..5].copy_from_slice(&ip.octets());
            5
        }
        IpAddr::V6(ip) => {
            out[0] = ATYP_IPV6;
            out[1..17].copy_from_slice(&ip.octets());
            17
        }
    };
    out[at..at + 2].copy_from_slice(&addr.port().to_be_bytes());
    at + 2
}

// === UDP request header (RFC 1928 §7) ===

/// The longest header [`encode_udp_header`] writes (IPv6): RSV RSV FRAG ATYP, 16, 2.
pub const MAX_UDP_IP_HEADER: usize = 22;

/// The header in front of every datagram between a client and its UDP relay:
/// `RSV(2) FRAG(1) ATYP(1) DST.ADDR DST.PORT(2)`, then DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// The fragment number; 0 for a whole datagram (netmix does not reassemble: others are
    /// dropped).
    pub frag: u8,
    /// Where DATA goes (client to relay) or came from (relay to client).
    pub target: TargetAddr,
    /// The header's length: DATA starts here.
    pub len: usize,
}

/// Why a datagram's header could not be read (the datagram is dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdpHeaderError {
    /// Shorter than its header says.
    #[error("datagram shorter than its header")]
    Truncated,
    /// An address type other than IPv4, IPv6 or domain name.
    #[error("address type {0:#04x} not supported")]
    UnsupportedAddressType(u8),
    /// A zero-length or non-UTF-8 domain name.
    #[error("invalid domain name")]
    BadDomain,
}

/// Reads the header of a datagram a client sent to its relay. The reserved bytes are not
/// checked (RFC 1928 gives them no meaning).
///
/// # Errors
/// [`UdpHeaderError`] when the header is cut short or names no usable address.
pub fn parse_udp_header(datagram: &[u8]) -> Result<UdpHeader, UdpHeaderError> {
    let [_, _, frag, atyp, rest @ ..] = datagram else {
        return Err(UdpHeaderError::Truncated);
    };
    let port_at = |rest: &[u8], at: usize| -> Result<u16, UdpHeaderError> {
        match rest.get(at..at + 2) {
            Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
            _ => Err(UdpHeaderError::Truncated),
        }
    };
    let (target, used) = match *atyp {
        ATYP_IPV4 => {
            let octets: [u8; 4] = rest
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(UdpHeaderError::Truncated)?;
            let port = port_at(rest, 4)?;
            (
                TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port)),
                6,
            )
        }
        ATYP_IPV6 => {
            let octets: [u8; 16] = rest
                .get(..16)
                .and_then(|b| b.try_into().ok())
                .ok_or(UdpHeaderError::Truncated)?;
            let port = port_at(rest, 16)?;
            (
                TargetAddr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port)),
                18,
            )
        }
        ATYP_DOMAIN => {
            let (&n, rest) = rest.split_first().ok_or(UdpHeaderError::Truncated)?;
            let n = usize::from(n);
            let name = rest.get(..n).ok_or(UdpHeaderError::Truncated)?;
            let port = port_at(rest, n)?;
            let host = std::str::from_utf8(name).map_err(|_| UdpHeaderError::BadDomain)?;
            if host.is_empty() {
                return Err(UdpHeaderError::BadDomain);
            }
            (TargetAddr::Domain(host.to_owned(), port), 1 + n + 2)
        }
        other => return Err(UdpHeaderError::UnsupportedAddressType(other)),
    };
    Ok(UdpHeader {
        frag: *frag,
        target,
        len: 4 + used,
    })
}

/// Encodes the header for a whole datagram (FRAG 0) that came from `from`, for the relay to
/// put in front of DATA; returns the buffer and the length used (10 for IPv4, 22 for IPv6).
pub fn encode_udp_header(from: SocketAddr) -> ([u8; MAX_UDP_IP_HEADER], usize) {
    let mut buf = [0u8; MAX_UDP_IP_HEADER];
    let len = put_addr(&mut buf[3..], from);
    (buf, 3 + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    struct One;
    impl Credentials for One {
        fn check(&self, u: &[u8], p: &[u8]) -> bool {
            u == b"user" && p == b"pass"
        }
    }

    /// Runs `negotiate` against `input`; returns the result and everything the server wrote.
    async fn run(
        input: &[u8],
        creds: Option<&dyn Credentials>,
    ) -> (Result<TargetAddr, HandshakeError>, Vec<u8>) {
        let (r, out) = run_full(input, creds).await;
        (r.map(|req| req.target), out)
    }

    async fn run_full(
        input: &[u8],
        creds: Option<&dyn Credentials>,
    ) -> (Result<Request, HandshakeError>, Vec<u8>) {
        let (mut client, mut server) = duplex(4096);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let result = negotiate(&mut server, creds).await;
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        (result, out)
    }

    #[tokio::test]
    async fn connect_ipv4_without_auth() {
        let (r, out) = run(&[5, 1, 0, 5, 1, 0, 1, 198, 18, 0, 1, 0, 80], None).await;
        assert_eq!(r.unwrap(), TargetAddr::Ip("198.18.0.1:80".parse().unwrap()));
        assert_eq!(out, [5, 0]);
    }

    #[tokio::test]
    async fn connect_ipv6_and_domain() {
        let mut req = vec![5, 1, 0, 5, 1, 0, 4];
        req.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        req.extend_from_slice(&443u16.to_be_bytes());
        let (r, _) = run(&req, None).await;
        assert_eq!(
            r.unwrap(),
            TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap())
        );

        let name = "a".repeat(255);
        let mut req = vec![5, 1, 0, 5, 1, 0, 3, 255];
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(&[0, 80]);
        let (r, _) = run(&req, None).await;
        assert_eq!(r.unwrap(), TargetAddr::Domain(name, 80));
    }

    #[tokio::test]
    async fn pipelined_bytes_come_back_in_order() {
        let (mut client, mut server) = duplex(4096);
        client
            .write_all(&[5, 1, 0, 5, 1, 0, 1, 1, 2, 3, 4, 0, 7, b'G', b'E', b'T'])
            .await
            .unwrap();
        let req = negotiate(&mut server, None).await.unwrap();
        assert_eq!(req.early_data, b"GET");
        client.write_all(b" /").await.unwrap();
        let mut rest = [0u8; 2];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b" /", "later bytes stay in the stream");
    }

    #[tokio::test]
    async fn pipelined_auth_and_request() {
        let mut all = vec![5, 1, 2, 1, 4];
        all.extend_from_slice(b"user");
        all.push(4);
        all.extend_from_slice(b"pass");
        all.extend_from_slice(&[5, 1, 0, 3, 4]);
        all.extend_from_slice(b"host");
        all.extend_from_slice(&[0, 80]);
        all.extend_from_slice(b"payload");
        let (r, out) = run_full(&all, Some(&One)).await;
        let req = r.unwrap();
        assert_eq!(req.target, TargetAddr::Domain("host".into(), 80));
        assert_eq!(req.early_data, b"payload");
        assert_eq!(out, [5, 2, 1, 0]);
    }

    #[tokio::test]
    async fn no_acceptable_method_gets_ff() {
        let (r, out) = run(&[5, 1, 2], None).await;
        assert!(matches!(r, Err(HandshakeError::NoAcceptableMethod)));
        assert_eq!(out, [5, 0xFF]);
        let (r, out) = run(&[5, 1, 0], Some(&One)).await;
        assert!(matches!(r, Err(HandshakeError::NoAcceptableMethod)));
        assert_eq!(out, [5, 0xFF]);
    }

    #[tokio::test]
    async fn userpass_good_and_bad() {
        let mut ok = vec![5, 2, 0, 2, 1, 4];
        ok.extend_from_slice(b"user");
        ok.push(4);
        ok.extend_from_slice(b"pass");
        ok.extend_from_slice(&[5, 1, 0, 1, 10, 0, 0, 1, 0, 80]);
        let (r, out) = run(&ok, Some(&One)).await;
        assert!(r.is_ok());
        assert_eq!(out, [5, 2, 1, 0]);

        let mut bad = vec![5, 1, 2, 1, 4];
        bad.extend_from_slice(b"user");
        bad.push(4);
        bad.extend_from_slice(b"nope");
        let (r, out) = run(&bad, Some(&One)).await;
        assert!(matches!(r, Err(HandshakeError::AuthFailed)));
        assert_eq!(out, [5, 2, 1, 1]);
    }

    #[tokio::test]
    async fn request_stage_errors_map_to_replies() {
        let (r, _) = run_full(&[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80], None).await;
        assert_eq!(r.unwrap().command, Command::Bind);
        let (r, _) = run_full(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0], None).await;
        assert_eq!(r.unwrap().command, Command::UdpAssociate);
        let (r, _) = run(&[5, 1, 0, 5, 4, 0, 1, 1, 2, 3, 4, 0, 80], None).await;
        assert_eq!(r.unwrap_err().reply(), Some(Reply::CommandNotSupported));
        let (r, _) = run(&[5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80], None).await;
        assert_eq!(r.unwrap_err().reply(), Some(Reply::AddressTypeNotSupported));
        let (r, _) = run(&[5, 1, 0, 5, 1, 0, 3, 0, 0, 80], None).await;
        assert_eq!(r.unwrap_err().reply(), Some(Reply::HostUnreachable));
    }

    #[tokio::test]
    async fn truncated_and_wrong_version() {
        let (r, _) = run(&[5, 1, 0, 5, 1, 0, 1, 1, 2], None).await;
        assert!(matches!(r, Err(HandshakeError::Io(_))));
        let (r, out) = run(&[4, 1, 0], None).await;
        assert!(matches!(r, Err(HandshakeError::BadVersion(4))));
        assert!(out.is_empty());
    }

    #[test]
    fn hosts_as_written() {
        assert_eq!(
            TargetAddr::from_host("[2001:db8::1]", 443),
            TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap())
        );
        assert_eq!(
            TargetAddr::from_host("198.18.0.1", 80),
            TargetAddr::Ip("198.18.0.1:80".parse().unwrap())
        );
        assert_eq!(
            TargetAddr::from_host("example.test", 80),
            TargetAddr::Domain("example.test".into(), 80)
        );
    }

    #[test]
    fn udp_header_parses_every_address_type() {
        let h = parse_udp_header(&[0, 0, 0, 1, 198, 19, 0, 1, 0, 53, b'q']).unwrap();
        assert_eq!(
            h,
            UdpHeader {
                frag: 0,
                target: TargetAddr::Ip("198.19.0.1:53".parse().unwrap()),
                len: 10
            }
        );
        let mut v6 = vec![0, 0, 2, 4];
        v6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x01, 0xbb]);
        let h = parse_udp_header(&v6).unwrap();
        assert_eq!(h.frag, 2);
        assert_eq!(
            h.target,
            TargetAddr::Ip("[2001:db8::7]:443".parse().unwrap())
        );
        assert_eq!(h.len, 22, "DATA may be empty");
        let mut name = vec![0, 0, 0, 3, 10];
        name.extend_from_slice(b"target.lab");
        name.extend_from_slice(&[0, 9]);
        name.extend_from_slice(b"data");
        let h = parse_udp_header(&name).unwrap();
        assert_eq!(h.target, TargetAddr::Domain("target.lab".into(), 9));
        assert_eq!(&name[h.len..], b"data");
    }

    #[test]
    fn udp_header_refuses_short_and_odd_headers() {
        for short in [
            &[][..],
            &[0, 0, 0],
            &[0, 0, 0, 1, 1, 2, 3, 4, 0],
            &[0, 0, 0, 4, 1, 2, 3],
            &[0, 0, 0, 3],
            &[0, 0, 0, 3, 5, b'a', b'b'],
            &[0, 0, 0, 3, 1, b'a', 0],
        ] {
            assert_eq!(
                parse_udp_header(short),
                Err(UdpHeaderError::Truncated),
                "{short:?}"
            );
        }
        assert_eq!(
            parse_udp_header(&[0, 0, 0, 9, 1, 2, 3, 4, 0, 1]),
            Err(UdpHeaderError::UnsupportedAddressType(9))
        );
        assert_eq!(
            parse_udp_header(&[0, 0, 0, 3, 0, 0, 53]),
            Err(UdpHeaderError::BadDomain)
        );
        assert_eq!(
            parse_udp_header(&[0, 0, 0, 3, 1, 0xff, 0, 53]),
            Err(UdpHeaderError::BadDomain)
        );
    }

    #[test]
    fn udp_header_encoding_round_trips() {
        for from in ["198.18.10.2:4000", "[2001:db8::1]:53", "0.0.0.0:0"] {
            let from: SocketAddr = from.parse().unwrap();
            let (b, n) = encode_udp_header(from);
            let h = parse_udp_header(&b[..n]).unwrap();
            assert_eq!((h.frag, h.target, h.len), (0, TargetAddr::Ip(from), n));
        }
        let (b, n) = encode_udp_header("198.19.0.1:9".parse().unwrap());
        assert_eq!(&b[..n], &[0, 0, 0, 1, 198, 19, 0, 1, 0, 9]);
        assert_eq!(
            encode_udp_header("[::1]:1".parse().unwrap()).1,
            MAX_UDP_IP_HEADER
        );
    }

    #[test]
    fn reply_encoding() {
        let (b, n) = encode_reply(Reply::Succeeded, Some("198.18.10.2:4000".parse().unwrap()));
        assert_eq!(&b[..n], &[5, 0, 0, 1, 198, 18, 10, 2, 0x0f, 0xa0]);
        let (b, n) = encode_reply(Reply::HostUnreachable, Some("[::1]:1".parse().unwrap()));
        assert_eq!(n, 22);
        assert_eq!(&b[..4], &[5, 4, 0, 4]);
        let (b, n) = encode_reply(Reply::GeneralFailure, None);
        assert_eq!(&b[..n], &[5, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
}
