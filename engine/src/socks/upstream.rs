//! The client side of chaining to an upstream proxy.
//!
//! *Chaining* means that netmix does not connect to a client's destination itself: it connects
//! (elsewhere, through one of its interfaces) to another proxy — a netmix relay, or any SOCKS5 or
//! HTTP proxy — and asks that proxy to open the connection to the destination. This module is
//! that request: [`handshake`] runs on a TCP stream that is already connected to the upstream
//! and, when it succeeds, the stream has become a plain byte tunnel to the target.
//!
//! Two protocols are spoken:
//!
//! - **SOCKS5** ([RFC 1928]) with username/password authentication ([RFC 1929]): the greeting
//!   offers exactly one method — `0x02` (username/password) when credentials are configured,
//!   `0x00` (none) when they are not, so a configured credential is never skipped — then the
//!   optional authentication, then a `CONNECT` request (ATYP 1 or 4 for IP addresses, 3 for
//!   host names). Each message is sent only after the previous one was answered, and every
//!   answer is read to its exact length (the reply's bound address by its ATYP), so nothing
//!   after the reply is ever consumed.
//! - **HTTP `CONNECT`** ([RFC 9110 §9.3.6]): `CONNECT host:port HTTP/1.1` with a `Host` header
//!   and, with credentials, `Proxy-Authorization: Basic …` ([RFC 7617]). Any 2xx opens the
//!   tunnel. The response head is parsed with `httparse` from a bounded buffer (16 KiB).
//!
//! # The leftover bytes
//!
//! [`handshake`] returns the bytes the upstream sent *after* the end of its handshake answer
//! that were read along with it. They are the first bytes of the tunnel (from the target, or
//! early data a proxy sends right after its blank line), and the caller must forward them to its
//! own client before anything else read from the stream. For SOCKS5 the reply has an exact
//! length and is read exactly, so the leftover is always empty and tunnel data stays in the
//! stream; for HTTP it is whatever followed the head in the last read.
//!
//! Failures come back as [`UpstreamError`], which also says what netmix should answer its own
//! client ([`UpstreamError::reply`] for SOCKS5, [`UpstreamError::http_status`] for HTTP).
//! [`handshake`] sets no deadline itself: the caller wraps it in one and reports
//! [`UpstreamError::Timeout`].
//!
//! [RFC 1928]: https://www.rfc-editor.org/rfc/rfc1928
//! [RFC 1929]: https://www.rfc-editor.org/rfc/rfc1929
//! [RFC 7617]: https://www.rfc-editor.org/rfc/rfc7617
//! [RFC 9110 §9.3.6]: https://www.rfc-editor.org/rfc/rfc9110#section-9.3.6

use std::fmt;
use std::io;
use std::net::SocketAddr;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::handshake::{Reply, TargetAddr, VERSION};

const AUTH_VERSION: u8 = 0x01;
const METHOD_NONE: u8 = 0x00;
const METHOD_USERPASS: u8 = 0x02;
const METHOD_UNACCEPTABLE: u8 = 0xFF;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// The longest HTTP response head accepted from an upstream.
pub const MAX_HTTP_HEAD: usize = 16 * 1024;
/// The most header lines accepted in an upstream's HTTP response head.
const MAX_HTTP_HEADERS: usize = 64;

/// What the words of an [`UpstreamError::Io`] say when the upstream hung up mid-answer.
const CLOSED: &str = "the upstream closed the connection during the handshake";

/// Which protocol the upstream proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// SOCKS5 (RFC 1928), with username/password authentication (RFC 1929) when configured.
    Socks5,
    /// HTTP `CONNECT`, with `Proxy-Authorization: Basic` when configured.
    Http,
}

/// The username and password netmix presents to an upstream proxy.
///
/// For SOCKS5 each must be 1 to 255 bytes (RFC 1929); for HTTP the username must not contain
/// `:` (RFC 7617). Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamAuth {
    /// The username.
    pub username: String,
    /// The password (never printed).
    pub password: String,
}

impl fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamAuth")
            .field("username", &self.username)
            .field("password", &format_args!("<hidden>"))
            .finish()
    }
}

/// Why the upstream did not open the tunnel.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The stream failed, or the upstream closed it before its answer was complete (then the
    /// error says "the upstream closed the connection during the handshake").
    #[error("upstream i/o: {0}")]
    Io(#[from] io::Error),
    /// The handshake took too long (reported by the caller, which sets the deadline).
    #[error("the upstream did not complete the handshake in time")]
    Timeout,
    /// The upstream wants credentials and none are configured (SOCKS5 method `0x02`, or HTTP
    /// 407 to a request without `Proxy-Authorization`).
    #[error("the upstream requires authentication and no credentials are configured for it")]
    AuthRequired,
    /// The upstream refused the configured credentials (RFC 1929 status other than 0, or HTTP
    /// 407 to a request with `Proxy-Authorization`).
    #[error("the upstream rejected the configured credentials")]
    AuthRejected,
    /// The SOCKS5 upstream accepted none of the offered methods (it answered `0xFF`).
    #[error("the upstream accepted no offered SOCKS5 authentication method")]
    NoAcceptableMethod,
    /// The SOCKS5 upstream answered the `CONNECT` with a failure (codes it should not send are
    /// read as [`Reply::GeneralFailure`]).
    #[error("the upstream could not connect to the target: {}", reply.describe())]
    Refused {
        /// The upstream's reply code.
        reply: Reply,
    },
    /// The HTTP upstream answered the `CONNECT` with a status other than 2xx and 407.
    #[error("the upstream answered the CONNECT with HTTP {status} {reason}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The reason phrase (may be empty).
        reason: String,
    },
    /// The upstream's answer is malformed, or the request cannot be expressed in the protocol
    /// (a name or credential too long); the words say which.
    #[error("{0}")]
    Protocol(String),
}

impl UpstreamError {
    /// The SOCKS5 reply netmix should give its own client for this failure.
    pub fn reply(&self) -> Reply {
        match self {
            Self::Refused { reply } => *reply,
            Self::HttpStatus { status, .. } => match status {
                403 => Reply::NotAllowed,
                502 | 503 => Reply::HostUnreachable,
                504 => Reply::TtlExpired,
                _ => Reply::GeneralFailure,
            },
            Self::Timeout => Reply::TtlExpired,
            Self::Io(_)
            | Self::AuthRequired
            | Self::AuthRejected
            | Self::NoAcceptableMethod
            | Self::Protocol(_) => Reply::GeneralFailure,
        }
    }

    /// The HTTP status netmix should give its own HTTP client for this failure: 403 when the
    /// upstream forbade the target, 504 when something timed out, 502 otherwise.
    pub fn http_status(&self) -> u16 {
        match self.reply() {
            Reply::NotAllowed => 403,
            Reply::TtlExpired => 504,
            _ => 502,
        }
    }
}

/// Asks the upstream proxy on the other end of `stream` (already connected) to open a tunnel
/// to `target`, authenticating with `auth` when given; afterwards `stream` is a byte tunnel to
/// `target`.
///
/// Returns the bytes the upstream sent after the end of its answer that were read with it (see
/// the [module docs](self)): the caller forwards them to its client first. Always empty for
/// SOCKS5, whose answers are read to their exact length.
///
/// Requests that the protocol cannot carry (a SOCKS5 host name over 255 bytes, a credential
/// outside 1..=255 bytes, a host unfit for an HTTP request line) fail with
/// [`UpstreamError::Protocol`] before anything is sent.
///
/// # Errors
/// [`UpstreamError`]; the stream is then in an unspecified state and should be dropped.
pub async fn handshake<S>(
    stream: &mut S,
    kind: UpstreamKind,
    auth: Option<&UpstreamAuth>,
    target: &TargetAddr,
) -> Result<Vec<u8>, UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    match kind {
        UpstreamKind::Socks5 => socks5(stream, auth, target).await.map(|()| Vec::new()),
        UpstreamKind::Http => http_connect(stream, auth, target).await,
    }
}

// === SOCKS5 ===

async fn socks5<S>(
    stream: &mut S,
    auth: Option<&UpstreamAuth>,
    target: &TargetAddr,
) -> Result<(), UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // Everything that could be refused is checked before the first byte goes out.
    let auth_message = auth.map(encode_userpass).transpose()?;
    let request = encode_connect(target)?;

    // Method selection: VER NMETHODS METHODS (one method; see the module docs).
    let offered = if auth.is_some() {
        METHOD_USERPASS
    } else {
        METHOD_NONE
    };
    send(stream, &[VERSION, 1, offered]).await?;
    let [version, method] = read_array::<2, _>(stream).await?;
    if version != VERSION {
        return Err(protocol(format!(
            "the upstream's SOCKS5 method choice has version {version}"
        )));
    }
    match method {
        METHOD_UNACCEPTABLE => return Err(UpstreamError::NoAcceptableMethod),
        METHOD_USERPASS if auth.is_none() => return Err(UpstreamError::AuthRequired),
        m if m != offered => {
            return Err(protocol(format!(
                "the upstream chose SOCKS5 method {m:#04x}, which was not offered \
                 (offered {offered:#04x})"
            )));
        }
        _ => {}
    }

    // Username/password sub-negotiation (RFC 1929): VER STATUS.
    if let Some(message) = auth_message {
        send(stream, &message).await?;
        let [version, status] = read_array::<2, _>(stream).await?;
        if version != AUTH_VERSION {
            return Err(protocol(format!(
                "the upstream's SOCKS5 authentication status has version {version}"
            )));
        }
        if status != 0x00 {
            return Err(UpstreamError::AuthRejected);
        }
    }

    // Request, then reply: VER REP RSV ATYP BND.ADDR BND.PORT.
    send(stream, &request).await?;
    let [version, rep, _rsv, atyp] = read_array::<4, _>(stream).await?;
    if version != VERSION {
        return Err(protocol(format!(
            "the upstream's SOCKS5 reply has version {version}"
        )));
    }
    if rep != Reply::Succeeded as u8 {
        return Err(UpstreamError::Refused {
            reply: reply_from_code(rep),
        });
    }
    // The bound address is of no use to the tunnel, but it must be consumed exactly.
    let mut bound = [0u8; 255 + 2];
    let rest = match atyp {
        ATYP_IPV4 => 4 + 2,
        ATYP_IPV6 => 16 + 2,
        ATYP_DOMAIN => {
            let [len] = read_array::<1, _>(stream).await?;
            usize::from(len) + 2
        }
        other => {
            return Err(protocol(format!(
                "the upstream's SOCKS5 reply has address type {other:#04x}"
            )));
        }
    };
    read_exact(stream, &mut bound[..rest]).await?;
    Ok(())
}

/// The RFC 1929 message: VER ULEN UNAME PLEN PASSWD.
fn encode_userpass(auth: &UpstreamAuth) -> Result<Vec<u8>, UpstreamError> {
    let user = auth.username.as_bytes();
    let pass = auth.password.as_bytes();
    let ulen = field_len("username", user.len())?;
    let plen = field_len("password", pass.len())?;
    let mut message = Vec::with_capacity(3 + user.len() + pass.len());
    message.extend_from_slice(&[AUTH_VERSION, ulen]);
    message.extend_from_slice(user);
    message.push(plen);
    message.extend_from_slice(pass);
    Ok(message)
}

/// A credential's length as its RFC 1929 length byte (1..=255).
fn field_len(what: &str, len: usize) -> Result<u8, UpstreamError> {
    match u8::try_from(len) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(protocol(format!(
            "the upstream {what} is {len} bytes long; SOCKS5 (RFC 1929) needs 1 to 255"
        ))),
    }
}

/// The CONNECT request: VER CMD RSV ATYP DST.ADDR DST.PORT.
fn encode_connect(target: &TargetAddr) -> Result<Vec<u8>, UpstreamError> {
    let mut request = Vec::with_capacity(4 + 1 + 255 + 2);
    request.extend_from_slice(&[VERSION, CMD_CONNECT, 0x00]);
    match target {
        TargetAddr::Ip(SocketAddr::V4(a)) => {
            request.push(ATYP_IPV4);
            request.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Ip(SocketAddr::V6(a)) => {
            request.push(ATYP_IPV6);
            request.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Domain(host, _) => {
            let len = match u8::try_from(host.len()) {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(protocol(format!(
                        "the target host name is {} bytes long; SOCKS5 carries 1 to 255",
                        host.len()
                    )));
                }
            };
            request.extend_from_slice(&[ATYP_DOMAIN, len]);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&target.port().to_be_bytes());
    Ok(request)
}

/// A SOCKS5 reply code as a [`Reply`]; codes RFC 1928 does not define are a general failure.
fn reply_from_code(code: u8) -> Reply {
    match code {
        0x00 => Reply::Succeeded,
        0x02 => Reply::NotAllowed,
        0x03 => Reply::NetworkUnreachable,
        0x04 => Reply::HostUnreachable,
        0x05 => Reply::ConnectionRefused,
        0x06 => Reply::TtlExpired,
        0x07 => Reply::CommandNotSupported,
        0x08 => Reply::AddressTypeNotSupported,
        _ => Reply::GeneralFailure,
    }
}

// === HTTP CONNECT ===

async fn http_connect<S>(
    stream: &mut S,
    auth: Option<&UpstreamAuth>,
    target: &TargetAddr,
) -> Result<Vec<u8>, UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let authority = http_authority(target)?;
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = auth {
        if auth.username.contains(':') {
            return Err(protocol(
                "the upstream username contains ':', which HTTP Basic authentication \
                 (RFC 7617) cannot carry"
                    .to_owned(),
            ));
        }
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", auth.username, auth.password));
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&token);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    send(stream, request.as_bytes()).await?;

    let mut buf = vec![0u8; MAX_HTTP_HEAD];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(closed());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HTTP_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head)) => {
                let status = response.code.ok_or_else(|| {
                    protocol("the upstream's HTTP response has no status code".to_owned())
                })?;
                return match status {
                    200..=299 => Ok(buf[head..len].to_vec()),
                    407 if auth.is_some() => Err(UpstreamError::AuthRejected),
                    407 => Err(UpstreamError::AuthRequired),
                    _ => Err(UpstreamError::HttpStatus {
                        status,
                        reason: response.reason.unwrap_or_default().to_owned(),
                    }),
                };
            }
            Ok(httparse::Status::Partial) if len == MAX_HTTP_HEAD => {
                return Err(protocol(format!(
                    "the upstream's HTTP response head is longer than {} KiB",
                    MAX_HTTP_HEAD / 1024
                )));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(protocol(format!(
                    "the upstream's HTTP response head has more than {MAX_HTTP_HEADERS} headers"
                )));
            }
            Err(e) => {
                return Err(protocol(format!(
                    "the upstream's HTTP response head is malformed ({e})"
                )));
            }
        }
    }
}

/// `host:port` for the request line and `Host` header; IPv6 literals in brackets (without a
/// zone, which means nothing to the upstream).
fn http_authority(target: &TargetAddr) -> Result<String, UpstreamError> {
    match target {
        TargetAddr::Ip(SocketAddr::V4(a)) => Ok(a.to_string()),
        TargetAddr::Ip(SocketAddr::V6(a)) => Ok(format!("[{}]:{}", a.ip(), a.port())),
        TargetAddr::Domain(host, port) => {
            // The name goes into a request line and a header verbatim: nothing that could end
            // or split either (CR, LF, spaces), nor leave the authority form.
            let bracketed = host.starts_with('[') && host.ends_with(']');
            let unfit = host.is_empty()
                || host.bytes().any(|b| {
                    b <= b' '
                        || b == 0x7F
                        || matches!(b, b'/' | b'?' | b'#' | b'@')
                        || (b == b':' && !bracketed)
                });
            if unfit {
                return Err(protocol(format!(
                    "the target host name {host:?} cannot be written in an HTTP CONNECT request"
                )));
            }
            Ok(format!("{host}:{port}"))
        }
    }
}

// === I/O helpers ===

fn protocol(words: String) -> UpstreamError {
    UpstreamError::Protocol(words)
}

fn closed() -> UpstreamError {
    UpstreamError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, CLOSED))
}

/// Writes one whole message and pushes it out (the upstream answers before we go on).
async fn send<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    message: &[u8],
) -> Result<(), UpstreamError> {
    stream.write_all(message).await?;
    stream.flush().await?;
    Ok(())
}

/// Fills `buf` exactly; an EOF first is [`CLOSED`].
async fn read_exact<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), UpstreamError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(closed()),
        Err(e) => Err(UpstreamError::Io(e)),
    }
}

async fn read_array<const N: usize, S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> Result<[u8; N], UpstreamError> {
    let mut out = [0u8; N];
    read_exact(stream, &mut out).await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Each test plays the upstream's side byte for byte on a real loopback socket.

    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::*;

    /// One move of the scripted upstream.
    enum Step {
        /// Read exactly this many bytes (recorded).
        Read(usize),
        /// Read up to and including the blank line ending an HTTP head (recorded).
        ReadHead,
        /// Read until the client closes (recorded).
        ReadToEnd,
        /// Write these bytes in one write.
        Write(Vec<u8>),
    }
    use Step::{Read, ReadHead, ReadToEnd, Write};

    /// Starts an upstream that plays `steps` on its first connection, then closes it; returns
    /// the client's end and the upstream's task, which yields every byte it read.
    async fn upstream(steps: Vec<Step>) -> (TcpStream, JoinHandle<io::Result<Vec<u8>>>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let mut got = Vec::new();
            for step in steps {
                match step {
                    Read(n) => {
                        let mut buf = vec![0u8; n];
                        s.read_exact(&mut buf).await?;
                        got.extend_from_slice(&buf);
                    }
                    ReadHead => {
                        let start = got.len();
                        while !got[start..].ends_with(b"\r\n\r\n") {
                            got.push(s.read_u8().await?);
                        }
                    }
                    ReadToEnd => {
                        s.read_to_end(&mut got).await?;
                    }
                    Write(bytes) => s.write_all(&bytes).await?,
                }
            }
            Ok(got)
        });
        let client = TcpStream::connect(addr).await.unwrap();
        (client, server)
    }

    fn bytes(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn auth(username: &str, password: &str) -> UpstreamAuth {
        UpstreamAuth {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    const OK_REPLY_V4: [u8; 10] = [5, 0, 0, 1, 10, 0, 0, 1, 0x1F, 0x90];

    // --- SOCKS5 ---

    #[tokio::test]
    async fn socks5_no_auth_ipv4() {
        let request = [5, 1, 0, 1, 93, 184, 216, 34, 0x01, 0xBB];
        let (mut c, server) = upstream(vec![
            Read(3),
            Write(vec![5, 0]),
            Read(request.len()),
            Write(OK_REPLY_V4.to_vec()),
        ])
        .await;
        let target = TargetAddr::Ip("93.184.216.34:443".parse().unwrap());
        let left = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap();
        assert!(left.is_empty());
        let got = server.await.unwrap().unwrap();
        assert_eq!(got, bytes(&[&[5, 1, 0], &request]));
    }

    #[tokio::test]
    async fn socks5_no_auth_ipv6() {
        let ip: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let request = bytes(&[&[5, 1, 0, 4], &ip.octets(), &[0x00, 0x50]]);
        let reply = bytes(&[&[5, 0, 0, 4], &Ipv6Addr::LOCALHOST.octets(), &[0x12, 0x34]]);
        let (mut c, server) = upstream(vec![
            Read(3),
            Write(vec![5, 0]),
            Read(request.len()),
            Write(reply),
        ])
        .await;
        // The zone goes nowhere: SOCKS5 carries the 16 octets only.
        let target = TargetAddr::Ip(SocketAddr::V6(SocketAddrV6::new(ip, 80, 0, 3)));
        let left = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap();
        assert!(left.is_empty());
        let got = server.await.unwrap().unwrap();
        assert_eq!(got, bytes(&[&[5, 1, 0], &request]));
    }

    #[tokio::test]
    async fn socks5_no_auth_domain() {
        let request = bytes(&[&[5, 1, 0, 3, 11], b"example.org", &[0x1F, 0x90]]);
        let (mut c, server) = upstream(vec![
            Read(3),
            Write(vec![5, 0]),
            Read(request.len()),
            Write(OK_REPLY_V4.to_vec()),
        ])
        .await;
        let target = TargetAddr::Domain("example.org".to_owned(), 8080);
        let left = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap();
        assert!(left.is_empty());
        let got = server.await.unwrap().unwrap();
        assert_eq!(got, bytes(&[&[5, 1, 0], &request]));
    }

    #[tokio::test]
    async fn socks5_user_pass_success() {
        let userpass = bytes(&[&[1, 5], b"alice", &[6], b"s3cret"]);
        let request = [5, 1, 0, 1, 127, 0, 0, 1, 0x00, 0x16];
        let (mut c, server) = upstream(vec![
            Read(3),
            Write(vec![5, 2]),
            Read(userpass.len()),
            Write(vec![1, 0]),
            Read(request.len()),
            Write(OK_REPLY_V4.to_vec()),
        ])
        .await;
        let target = TargetAddr::Ip("127.0.0.1:22".parse().unwrap());
        let creds = auth("alice", "s3cret");
        let left = handshake(&mut c, UpstreamKind::Socks5, Some(&creds), &target)
            .await
            .unwrap();
        assert!(left.is_empty());
        let got = server.await.unwrap().unwrap();
        // Only method 0x02 is offered when credentials are configured.
        assert_eq!(got, bytes(&[&[5, 1, 2], &userpass, &request]));
    }

    #[tokio::test]
    async fn socks5_wrong_password_is_auth_rejected() {
        let userpass = bytes(&[&[1, 5], b"alice", &[5], b"wrong"]);
        let (mut c, server) = upstream(vec![
            Read(3),
            Write(vec![5, 2]),
            Read(userpass.len()),
            Write(vec![1, 1]),
            ReadToEnd,
        ])
        .await;
        let target = TargetAddr::Domain("example.org".to_owned(), 80);
        let creds = auth("alice", "wrong");
        let err = handshake(&mut c, UpstreamKind::Socks5, Some(&creds), &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::AuthRejected), "{err:?}");
        assert_eq!(err.reply(), Reply::GeneralFailure);
        assert_eq!(err.http_status(), 502);
        drop(c);
        // No request after the failed authentication.
        let got = server.await.unwrap().unwrap();
        assert_eq!(got, bytes(&[&[5, 1, 2], &userpass]));
    }

    #[tokio::test]
    async fn socks5_no_acceptable_method() {
        let (mut c, server) = upstream(vec![Read(3), Write(vec![5, 0xFF]), ReadToEnd]).await;
        let target = TargetAddr::Domain("example.org".to_owned(), 80);
        let err = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::NoAcceptableMethod), "{err:?}");
        assert_eq!(err.reply(), Reply::GeneralFailure);
        drop(c);
        assert_eq!(server.await.unwrap().unwrap(), [5, 1, 0]);
    }

    #[tokio::test]
    async fn socks5_auth_wanted_without_credentials_is_auth_required() {
        let (mut c, _server) = upstream(vec![Read(3), Write(vec![5, 2]), ReadToEnd]).await;
        let target = TargetAddr::Domain("example.org".to_owned(), 80);
        let err = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::AuthRequired), "{err:?}");
    }

    #[tokio::test]
    async fn socks5_unoffered_method_with_credentials_is_protocol() {
        // Credentials are configured; a server that skips them is not followed.
        let (mut c, _server) = upstream(vec![Read(3), Write(vec![5, 0]), ReadToEnd]).await;
        let target = TargetAddr::Domain("example.org".to_owned(), 80);
        let creds = auth("alice", "s3cret");
        let err = handshake(&mut c, UpstreamKind::Socks5, Some(&creds), &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains("not offered"), "{err}");
    }

    #[tokio::test]
    async fn socks5_connect_refused() {
        let (mut c, _server) = upstream(vec![
            Read(3),
            Write(vec![5, 0]),
            Read(10),
            Write(vec![5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
            ReadToEnd,
        ])
        .await;
        let target = TargetAddr::Ip("10.1.2.3:25".parse().unwrap());
        let err = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Refused {
                    reply: Reply::ConnectionRefused
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.reply(), Reply::ConnectionRefused);
        assert_eq!(err.http_status(), 502);
        assert!(err.to_string().contains("connection refused"), "{err}");
    }

    #[tokio::test]
    async fn socks5_unknown_reply_code_is_general_failure() {
        let (mut c, _server) = upstream(vec![
            Read(3),
            Write(vec![5, 0]),
            Read(10),
            Write(vec![5, 0x42, 0, 1, 0, 0, 0, 0, 0, 0]),
            ReadToEnd,
        ])
        .await;
        let target = TargetAddr::Ip("10.1.2.3:25".parse().unwrap());
        let err = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Refused {
                    reply: Reply::GeneralFailure
                }
            ),
            "{err:?}"
        );
    }

    /// The reply's bound address is a name: it is consumed to its exact length, the tunnel
    /// data written in the same segment stays in the stream (the leftover is empty), and the
    /// tunnel works both ways.
    #[tokio::test]
    async fn socks5_domain_bound_address_is_consumed_exactly() {
        let reply = bytes(&[&[5, 0, 0, 3, 9], b"relay.lan", &[0x04, 0x38], b"hello"]);
        let (mut c, server) = upstream(vec![
            Read(3),
            Write(vec![5, 0]),
            Read(10),
            Write(reply),
            Read(4),
        ])
        .await;
        let target = TargetAddr::Ip("192.0.2.1:80".parse().unwrap());
        let left = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap();
        assert!(left.is_empty(), "SOCKS5 never reads past its reply");
        let mut data = [0u8; 5];
        c.read_exact(&mut data).await.unwrap();
        assert_eq!(&data, b"hello");
        c.write_all(b"ping").await.unwrap();
        let got = server.await.unwrap().unwrap();
        assert!(got.ends_with(b"ping"));
        // And then the upstream closed: nothing else was in the tunnel.
        assert_eq!(c.read(&mut data).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn socks5_upstream_closes_mid_reply() {
        let (mut c, _server) = upstream(vec![
            Read(3),
            Write(vec![5, 0]),
            Read(10),
            Write(vec![5, 0, 0, 1, 127, 0]),
        ])
        .await;
        let target = TargetAddr::Ip("10.1.2.3:25".parse().unwrap());
        let err = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap_err();
        let UpstreamError::Io(ref e) = err else {
            panic!("expected Io, got {err:?}");
        };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains(CLOSED), "{err}");
        assert_eq!(err.reply(), Reply::GeneralFailure);
    }

    #[tokio::test]
    async fn socks5_reply_with_wrong_version_is_protocol() {
        let (mut c, _server) = upstream(vec![
            Read(3),
            Write(vec![5, 0]),
            Read(10),
            Write(vec![4, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
            ReadToEnd,
        ])
        .await;
        let target = TargetAddr::Ip("10.1.2.3:25".parse().unwrap());
        let err = handshake(&mut c, UpstreamKind::Socks5, None, &target)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the upstream's SOCKS5 reply has version 4",
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn socks5_unfit_requests_fail_before_sending() {
        let long = "a".repeat(256);
        let cases: [(TargetAddr, Option<UpstreamAuth>); 4] = [
            (TargetAddr::Domain(long.clone(), 80), None),
            (TargetAddr::Domain(String::new(), 80), None),
            (
                TargetAddr::Domain("example.org".to_owned(), 80),
                Some(auth(&long, "pw")),
            ),
            (
                TargetAddr::Domain("example.org".to_owned(), 80),
                Some(auth("alice", "")),
            ),
        ];
        for (target, creds) in cases {
            let (mut c, server) = upstream(vec![ReadToEnd]).await;
            let err = handshake(&mut c, UpstreamKind::Socks5, creds.as_ref(), &target)
                .await
                .unwrap_err();
            assert!(matches!(err, UpstreamError::Protocol(_)), "{err:?}");
            drop(c);
            assert!(server.await.unwrap().unwrap().is_empty(), "{err}");
        }
    }

    // --- HTTP CONNECT ---

    #[tokio::test]
    async fn http_200_returns_leftover() {
        let (mut c, server) = upstream(vec![
            ReadHead,
            Write(b"HTTP/1.1 200 Connection established\r\nVia: up\r\n\r\nearly data".to_vec()),
        ])
        .await;
        let target = TargetAddr::Domain("example.org".to_owned(), 443);
        let left = handshake(&mut c, UpstreamKind::Http, None, &target)
            .await
            .unwrap();
        assert_eq!(left, b"early data");
        let got = server.await.unwrap().unwrap();
        assert_eq!(
            got,
            b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn http_head_over_several_writes_and_ipv6_target() {
        let (mut c, server) = upstream(vec![
            ReadHead,
            Write(b"HTTP/1.0 2".to_vec()),
            Write(b"04 No Content\r\n".to_vec()),
            Write(b"\r\n".to_vec()),
        ])
        .await;
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let target = TargetAddr::Ip(SocketAddr::V6(SocketAddrV6::new(ip, 8443, 0, 2)));
        let left = handshake(&mut c, UpstreamKind::Http, None, &target)
            .await
            .unwrap();
        assert!(left.is_empty());
        let got = server.await.unwrap().unwrap();
        assert_eq!(
            got,
            b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn http_407_without_credentials_is_auth_required() {
        let (mut c, _server) = upstream(vec![
            ReadHead,
            Write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"up\"\r\n\r\n"
                    .to_vec(),
            ),
        ])
        .await;
        let target = TargetAddr::Domain("example.org".to_owned(), 443);
        let err = handshake(&mut c, UpstreamKind::Http, None, &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::AuthRequired), "{err:?}");
        assert_eq!(err.http_status(), 502);
    }

    #[tokio::test]
    async fn http_407_with_credentials_is_auth_rejected() {
        let (mut c, _server) = upstream(vec![
            ReadHead,
            Write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n".to_vec()),
        ])
        .await;
        let target = TargetAddr::Domain("example.org".to_owned(), 443);
        let creds = auth("alice", "wrong");
        let err = handshake(&mut c, UpstreamKind::Http, Some(&creds), &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::AuthRejected), "{err:?}");
        assert_eq!(err.reply(), Reply::GeneralFailure);
    }

    #[tokio::test]
    async fn http_503_is_http_status() {
        let (mut c, _server) = upstream(vec![
            ReadHead,
            Write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ])
        .await;
        let target = TargetAddr::Domain("example.org".to_owned(), 443);
        let err = handshake(&mut c, UpstreamKind::Http, None, &target)
            .await
            .unwrap_err();
        let UpstreamError::HttpStatus { status, reason } = &err else {
            panic!("expected HttpStatus, got {err:?}");
        };
        assert_eq!((*status, reason.as_str()), (503, "Service Unavailable"));
        assert_eq!(err.http_status(), 502);
        assert_eq!(err.reply(), Reply::HostUnreachable);
    }

    #[tokio::test]
    async fn http_proxy_authorization_header() {
        let (mut c, server) =
            upstream(vec![ReadHead, Write(b"HTTP/1.1 200 OK\r\n\r\n".to_vec())]).await;
        let target = TargetAddr::Ip("198.51.100.7:443".parse().unwrap());
        // The example of RFC 7617 §2.
        let creds = auth("Aladdin", "open sesame");
        let left = handshake(&mut c, UpstreamKind::Http, Some(&creds), &target)
            .await
            .unwrap();
        assert!(left.is_empty());
        let got = server.await.unwrap().unwrap();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut headers);
        assert_eq!(
            req.parse(&got).unwrap(),
            httparse::Status::Complete(got.len())
        );
        assert_eq!(req.method, Some("CONNECT"));
        assert_eq!(req.path, Some("198.51.100.7:443"));
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        assert_eq!(header("Host"), Some(&b"198.51.100.7:443"[..]));
        assert_eq!(
            header("Proxy-Authorization"),
            Some(&b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="[..])
        );
    }

    #[tokio::test]
    async fn http_over_long_head_is_protocol() {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Padding: ".to_vec();
        head.resize(MAX_HTTP_HEAD + 1024, b'a');
        let (mut c, _server) = upstream(vec![ReadHead, Write(head)]).await;
        let target = TargetAddr::Domain("example.org".to_owned(), 443);
        let err = handshake(&mut c, UpstreamKind::Http, None, &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains("longer than 16 KiB"), "{err}");
    }

    #[tokio::test]
    async fn http_upstream_closes_mid_head() {
        let (mut c, _server) =
            upstream(vec![ReadHead, Write(b"HTTP/1.1 200 OK\r\n".to_vec())]).await;
        let target = TargetAddr::Domain("example.org".to_owned(), 443);
        let err = handshake(&mut c, UpstreamKind::Http, None, &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Io(_)), "{err:?}");
        assert!(err.to_string().contains(CLOSED), "{err}");
    }

    #[tokio::test]
    async fn http_malformed_head_is_protocol() {
        let (mut c, _server) = upstream(vec![
            ReadHead,
            Write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()),
        ])
        .await;
        let target = TargetAddr::Domain("example.org".to_owned(), 443);
        let err = handshake(&mut c, UpstreamKind::Http, None, &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn http_unfit_requests_fail_before_sending() {
        let example = || TargetAddr::Domain("example.org".to_owned(), 443);
        let cases: [(TargetAddr, Option<UpstreamAuth>); 4] = [
            // A name that would inject a header line.
            (
                TargetAddr::Domain("evil.org\r\nX-Injected: 1".to_owned(), 443),
                None,
            ),
            (TargetAddr::Domain("a b".to_owned(), 443), None),
            (TargetAddr::Domain("user@host".to_owned(), 443), None),
            (example(), Some(auth("ali:ce", "pw"))),
        ];
        for (target, creds) in cases {
            let (mut c, server) = upstream(vec![ReadToEnd]).await;
            let err = handshake(&mut c, UpstreamKind::Http, creds.as_ref(), &target)
                .await
                .unwrap_err();
            assert!(matches!(err, UpstreamError::Protocol(_)), "{err:?}");
            drop(c);
            assert!(server.await.unwrap().unwrap().is_empty(), "{err}");
        }
    }

    // --- the error's answers and the credential's Debug ---

    #[test]
    fn error_answers() {
        let status = |status| UpstreamError::HttpStatus {
            status,
            reason: String::new(),
        };
        let cases = [
            (status(403), Reply::NotAllowed, 403),
            (status(502), Reply::HostUnreachable, 502),
            (status(503), Reply::HostUnreachable, 502),
            (status(504), Reply::TtlExpired, 504),
            (status(500), Reply::GeneralFailure, 502),
            (UpstreamError::Timeout, Reply::TtlExpired, 504),
            (
                UpstreamError::Refused {
                    reply: Reply::NotAllowed,
                },
                Reply::NotAllowed,
                403,
            ),
            (
                UpstreamError::Refused {
                    reply: Reply::TtlExpired,
                },
                Reply::TtlExpired,
                504,
            ),
            (
                UpstreamError::Refused {
                    reply: Reply::NetworkUnreachable,
                },
                Reply::NetworkUnreachable,
                502,
            ),
            (UpstreamError::AuthRequired, Reply::GeneralFailure, 502),
            (UpstreamError::AuthRejected, Reply::GeneralFailure, 502),
            (
                UpstreamError::NoAcceptableMethod,
                Reply::GeneralFailure,
                502,
            ),
            (
                UpstreamError::Protocol("x".to_owned()),
                Reply::GeneralFailure,
                502,
            ),
            (closed(), Reply::GeneralFailure, 502),
        ];
        for (err, reply, http) in cases {
            assert_eq!((err.reply(), err.http_status()), (reply, http), "{err:?}");
        }
    }

    #[test]
    fn debug_hides_password() {
        let creds = auth("alice", "hunter2-secret");
        for shown in [format!("{creds:?}"), format!("{creds:#?}")] {
            assert!(!shown.contains("hunter2-secret"), "{shown}");
            assert!(shown.contains("alice"), "{shown}");
            assert!(shown.contains("<hidden>"), "{shown}");
        }
        assert_eq!(
            format!("{creds:?}"),
            r#"UpstreamAuth { username: "alice", password: <hidden> }"#
        );
    }
}
