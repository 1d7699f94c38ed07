//! SOCKS4 and SOCKS4a (the SOCKS 4 protocol and its 4A extension for host names).
//!
//! A request is `VN=4 CD DSTPORT(2) DSTIP(4) USERID NUL`, and with 4a, when DSTIP is
//! `0.0.0.x` (x ≠ 0), a `HOSTNAME NUL` follows, which netmix resolves. The reply is eight
//! bytes: `0x00`, `0x5A` granted or `0x5B` rejected, and a port and IPv4 address. SOCKS4 has
//! no password, so with `[socks.auth]` configured every SOCKS4 request is refused.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::handshake::TargetAddr;

/// The version byte.
pub const VERSION: u8 = 0x04;
const CMD_CONNECT: u8 = 0x01;
/// Reply: request granted.
pub const GRANTED: u8 = 0x5A;
/// Reply: request rejected or failed.
pub const REJECTED: u8 = 0x5B;
/// The longest user id or host name taken (SOCKS5 allows 255-byte names; so do we).
const MAX_FIELD: usize = 255;
/// The longest request: header, user id and host name, each with its NUL.
const MAX_REQUEST: usize = 8 + (MAX_FIELD + 1) * 2;

/// A SOCKS4 CONNECT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Where the client wants to go (a name for 4a).
    pub target: TargetAddr,
    /// Bytes received after the request, in order.
    pub early_data: Vec<u8>,
}

/// Why a SOCKS4 request was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Socks4Error {
    /// Socket error or EOF mid-request.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A command other than CONNECT (BIND is not served over SOCKS4).
    #[error("SOCKS4 command {0:#04x} not supported")]
    UnsupportedCommand(u8),
    /// A user id or host name past 255 bytes, an empty or non-UTF-8 host name.
    #[error("malformed SOCKS4 request: {0}")]
    Malformed(&'static str),
}

impl Socks4Error {
    /// Whether the client reached the point where a reply makes sense (it sent a whole request,
    /// or one we refuse to read further).
    pub fn wants_reply(&self) -> bool {
        !matches!(self, Self::Io(_))
    }
}

/// Parses a whole request from `buf`: `Ok(None)` when more bytes are needed, else the request
/// and how many bytes it took.
///
/// # Errors
/// [`Socks4Error`] for a request netmix will not serve.
pub fn parse(buf: &[u8]) -> Result<Option<(TargetAddr, usize)>, Socks4Error> {
    if buf.len() < 8 {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(Socks4Error::Malformed("not SOCKS version 4"));
    }
    let port = u16::from_be_bytes([buf[2], buf[3]]);
    let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
    let Some(user_len) = field(&buf[8..])? else {
        return Ok(None);
    };
    let after_user = 8 + user_len + 1;
    // 0.0.0.x with x ≠ 0: SOCKS4a, a host name follows the user id.
    let o = ip.octets();
    let target = if o[..3] == [0, 0, 0] && o[3] != 0 {
        let Some(host_len) = field(&buf[after_user..])? else {
            return Ok(None);
        };
        let host = std::str::from_utf8(&buf[after_user..after_user + host_len])
            .map_err(|_| Socks4Error::Malformed("host name is not UTF-8"))?;
        if host.is_empty() {
            return Err(Socks4Error::Malformed("empty host name"));
        }
        (TargetAddr::from_host(host, port), after_user + host_len + 1)
    } else {
        (
            TargetAddr::Ip(SocketAddr::new(IpAddr::V4(ip), port)),
            after_user,
        )
    };
    if buf[1] != CMD_CONNECT {
        return Err(Socks4Error::UnsupportedCommand(buf[1]));
    }
    Ok(Some(target))
}

/// The length of a NUL-terminated field at the start of `buf`, `None` while its NUL has not
/// arrived.
fn field(buf: &[u8]) -> Result<Option<usize>, Socks4Error> {
    match buf.iter().take(MAX_FIELD + 1).position(|&b| b == 0) {
        Some(n) => Ok(Some(n)),
        None if buf.len() > MAX_FIELD => Err(Socks4Error::Malformed("field longer than 255 bytes")),
        None => Ok(None),
    }
}

/// Reads one request (the version byte included), keeping what follows it as early data.
///
/// # Errors
/// [`Socks4Error`]; the caller sends [`REJECTED`] when [`Socks4Error::wants_reply`].
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, Socks4Error> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    loop {
        if let Some((target, used)) = parse(&buf)? {
            return Ok(Request {
                target,
                early_data: buf.split_off(used),
            });
        }
        let room = (MAX_REQUEST + chunk.len())
            .saturating_sub(buf.len())
            .min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The eight-byte reply; `bound` is the outbound socket's address when it is IPv4 (zeros
/// otherwise: SOCKS4 has no way to say an IPv6 address, and clients ignore it for CONNECT).
pub fn encode_reply(code: u8, bound: Option<SocketAddr>) -> [u8; 8] {
    let (ip, port) = match bound {
        Some(SocketAddr::V4(a)) => (a.ip().octets(), a.port()),
        _ => ([0; 4], 0),
    };
    let p = port.to_be_bytes();
    [0x00, code, p[0], p[1], ip[0], ip[1], ip[2], ip[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cd: u8, port: u16, ip: [u8; 4], user: &[u8], host: Option<&[u8]>) -> Vec<u8> {
        let mut r = vec![VERSION, cd];
        r.extend_from_slice(&port.to_be_bytes());
        r.extend_from_slice(&ip);
        r.extend_from_slice(user);
        r.push(0);
        if let Some(h) = host {
            r.extend_from_slice(h);
            r.push(0);
        }
        r
    }

    #[test]
    fn ipv4_and_4a_names() {
        let r = request(1, 80, [198, 18, 0, 1], b"me", None);
        assert_eq!(
            parse(&r).unwrap(),
            Some((TargetAddr::Ip("198.18.0.1:80".parse().unwrap()), r.len()))
        );
        let r = request(1, 443, [0, 0, 0, 7], b"", Some(b"lab.test"));
        assert_eq!(
            parse(&r).unwrap(),
            Some((TargetAddr::Domain("lab.test".into(), 443), r.len()))
        );
        // Every prefix asks for more.
        for n in 0..r.len() {
            assert!(parse(&r[..n]).unwrap().is_none(), "prefix {n}");
        }
    }

    #[tokio::test]
    async fn early_data_is_kept() {
        let mut r = request(1, 80, [198, 18, 0, 1], b"", None);
        r.extend_from_slice(b"GET /");
        let req = read_request(&mut r.as_slice()).await.unwrap();
        assert_eq!(req.early_data, b"GET /");
    }

    #[test]
    fn refusals() {
        let r = request(2, 80, [198, 18, 0, 1], b"", None);
        assert!(matches!(parse(&r), Err(Socks4Error::UnsupportedCommand(2))));
        let r = request(1, 80, [198, 18, 0, 1], &[b'u'; 300], None);
        assert!(matches!(parse(&r), Err(Socks4Error::Malformed(_))));
        let r = request(1, 80, [0, 0, 0, 1], b"", Some(b""));
        assert!(matches!(parse(&r), Err(Socks4Error::Malformed(_))));
        let r = request(1, 80, [0, 0, 0, 1], b"", Some(&[0xff, 0xfe]));
        assert!(matches!(parse(&r), Err(Socks4Error::Malformed(_))));
        // A user id that never ends is refused once it passes the limit, not read forever.
        let mut r = request(1, 80, [198, 18, 0, 1], b"", None);
        r.pop();
        r.extend(std::iter::repeat_n(b'x', 256));
        assert!(parse(&r).is_err());
    }

    #[tokio::test]
    async fn a_truncated_request_is_an_io_error() {
        let r = request(1, 80, [198, 18, 0, 1], b"abc", None);
        let err = read_request(&mut &r[..r.len() - 1]).await.unwrap_err();
        assert!(!err.wants_reply());
    }

    #[test]
    fn reply_encoding() {
        assert_eq!(
            encode_reply(GRANTED, Some("198.18.10.2:4000".parse().unwrap())),
            [0, 0x5A, 0x0f, 0xa0, 198, 18, 10, 2]
        );
        assert_eq!(
            encode_reply(REJECTED, Some("[2001:db8::1]:1".parse().unwrap())),
            [0, 0x5B, 0, 0, 0, 0, 0, 0]
        );
    }
}
