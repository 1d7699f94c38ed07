//! A tiny raw SOCKS5 client (RFC 1928 + RFC 1929 username/password) for exact protocol
//! assertions against netmix.
//!
//! [`socks5_connect`] does the whole dance and hands back the reply code, so tests can assert
//! e.g. `0x05` (connection refused) for [`crate::REFUSED_PORT`]. The steps are public too
//! ([`negotiate`], [`authenticate`], [`encode_connect`], [`read_reply`]) for tests that want to
//! send malformed or partial requests themselves (write raw bytes to the stream directly).
//! [`socks5_command`] sends BIND or UDP ASSOCIATE instead; [`udp_wrap`] and [`udp_unwrap`]
//! build and read the datagrams of a UDP relay (RFC 1928 §7).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// SOCKS version byte.
pub const VERSION: u8 = 0x05;
/// Method: no authentication.
pub const NO_AUTH: u8 = 0x00;
/// Method: username/password (RFC 1929).
pub const USER_PASS: u8 = 0x02;
/// Method reply: no acceptable method.
pub const NO_ACCEPTABLE: u8 = 0xFF;
/// Command: CONNECT.
pub const CMD_CONNECT: u8 = 0x01;
/// Command: BIND.
pub const CMD_BIND: u8 = 0x02;
/// Command: UDP ASSOCIATE.
pub const CMD_UDP_ASSOCIATE: u8 = 0x03;

/// Where to CONNECT to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// ATYP 1 (IPv4) or 4 (IPv6).
    Ip(SocketAddr),
    /// ATYP 3: a name the proxy resolves.
    Domain(String, u16),
}

impl From<SocketAddr> for Target {
    fn from(a: SocketAddr) -> Target {
        Target::Ip(a)
    }
}

/// The server's answer to CONNECT.
#[derive(Debug)]
pub struct Reply<S> {
    /// REP: 0 = succeeded, 1 = general failure, 2 = not allowed, 3 = network unreachable,
    /// 4 = host unreachable, 5 = connection refused, 6 = TTL expired, 7 = command not
    /// supported, 8 = address type not supported.
    pub code: u8,
    /// BND.ADDR/BND.PORT (for an ATYP 3 answer: 0.0.0.0 with the port, name in
    /// `bound_domain`).
    pub bound: SocketAddr,
    /// BND.ADDR when the server answered with a domain name.
    pub bound_domain: Option<String>,
    /// The stream, positioned right after the reply: the tunnel if `code == 0`.
    pub stream: S,
}

/// Method negotiation, auth (if `auth` is given: offers only 0x02, else only 0x00), CONNECT,
/// reply. A non-zero reply code is `Ok` (check `code`); a refused method or failed
/// authentication is an `io::ErrorKind::PermissionDenied` error.
pub async fn socks5_connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    target: Target,
    auth: Option<(&str, &str)>,
) -> io::Result<Reply<S>> {
    let method = negotiate(
        &mut stream,
        &[if auth.is_some() { USER_PASS } else { NO_AUTH }],
    )
    .await?;
    match (method, auth) {
        (NO_AUTH, None) => {}
        (USER_PASS, Some((user, pass))) => {
            let status = authenticate(&mut stream, user, pass).await?;
            if status != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("authentication rejected (status {status:#04x})"),
                ));
            }
        }
        (NO_ACCEPTABLE, _) => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "no acceptable authentication method (0xFF)",
            ));
        }
        (m, _) => {
            return Err(bad(format!(
                "server chose a method we did not offer: {m:#04x}"
            )));
        }
    }
    stream.write_all(&encode_connect(&target)?).await?;
    let (code, bound, bound_domain) = read_reply(&mut stream).await?;
    Ok(Reply {
        code,
        bound,
        bound_domain,
        stream,
    })
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Sends the greeting offering `methods` and returns the method the server chose.
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    methods: &[u8],
) -> io::Result<u8> {
    let count = u8::try_from(methods.len()).map_err(|_| bad("too many methods"))?;
    let mut hello = vec![VERSION, count];
    hello.extend_from_slice(methods);
    stream.write_all(&hello).await?;
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).await?;
    if answer[0] != VERSION {
        return Err(bad(format!("method reply has version {:#04x}", answer[0])));
    }
    Ok(answer[1])
}

/// RFC 1929 username/password sub-negotiation; returns the status byte (0 = success).
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    user: &str,
    pass: &str,
) -> io::Result<u8> {
    let ulen = u8::try_from(user.len()).map_err(|_| bad("username longer than 255 bytes"))?;
    let plen = u8::try_from(pass.len()).map_err(|_| bad("password longer than 255 bytes"))?;
    let mut msg = vec![0x01, ulen];
    msg.extend_from_slice(user.as_bytes());
    msg.push(plen);
    msg.extend_from_slice(pass.as_bytes());
    stream.write_all(&msg).await?;
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).await?;
    if answer[0] != 0x01 {
        return Err(bad(format!("auth reply has version {:#04x}", answer[0])));
    }
    Ok(answer[1])
}

/// No-auth negotiation, then request `command` for `target` and read the (first) reply.
/// A non-zero reply code is `Ok` (check `code`); for BIND, read the second reply with
/// [`read_reply`] on `stream`.
pub async fn socks5_command<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    command: u8,
    target: Target,
) -> io::Result<Reply<S>> {
    let method = negotiate(&mut stream, &[NO_AUTH]).await?;
    if method != NO_AUTH {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("server chose method {method:#04x}"),
        ));
    }
    stream.write_all(&encode_request(command, &target)?).await?;
    let (code, bound, bound_domain) = read_reply(&mut stream).await?;
    Ok(Reply {
        code,
        bound,
        bound_domain,
        stream,
    })
}

/// The CONNECT request bytes for `target`.
pub fn encode_connect(target: &Target) -> io::Result<Vec<u8>> {
    encode_request(CMD_CONNECT, target)
}

/// The request bytes for `command` and `target`.
pub fn encode_request(command: u8, target: &Target) -> io::Result<Vec<u8>> {
    let mut req = vec![VERSION, command, 0x00];
    req.extend_from_slice(&encode_addr(target)?);
    Ok(req)
}

/// ATYP, DST.ADDR and DST.PORT for `target`.
fn encode_addr(target: &Target) -> io::Result<Vec<u8>> {
    let mut req = Vec::with_capacity(1 + 16 + 2);
    let port = match target {
        Target::Ip(SocketAddr::V4(a)) => {
            req.push(0x01);
            req.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Ip(SocketAddr::V6(a)) => {
            req.push(0x04);
            req.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Domain(name, port) => {
            let len = u8::try_from(name.len()).map_err(|_| bad("domain longer than 255 bytes"))?;
            req.push(0x03);
            req.push(len);
            req.extend_from_slice(name.as_bytes());
            *port
        }
    };
    req.extend_from_slice(&port.to_be_bytes());
    Ok(req)
}

/// A datagram for a UDP relay (RFC 1928 §7): `RSV RSV FRAG`, the destination, `payload`.
///
/// # Panics
/// For a domain name longer than 255 bytes.
pub fn udp_wrap(frag: u8, dest: &Target, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 0, frag];
    d.extend_from_slice(&encode_addr(dest).expect("a short name"));
    d.extend_from_slice(payload);
    d
}

/// Reads a datagram from a UDP relay: (FRAG, the source it names, the payload). A name
/// (ATYP 3) is an error: relays name sources by address.
pub fn udp_unwrap(datagram: &[u8]) -> io::Result<(u8, SocketAddr, &[u8])> {
    let short = || bad(format!("datagram of {} bytes too short", datagram.len()));
    let (&[_, _, frag, atyp], rest) = datagram.split_first_chunk::<4>().ok_or_else(short)?;
    let (ip, rest) = match atyp {
        0x01 => {
            let (b, rest) = rest.split_first_chunk::<4>().ok_or_else(short)?;
            (IpAddr::V4(Ipv4Addr::from(*b)), rest)
        }
        0x04 => {
            let (b, rest) = rest.split_first_chunk::<16>().ok_or_else(short)?;
            (IpAddr::V6(Ipv6Addr::from(*b)), rest)
        }
        other => return Err(bad(format!("datagram with ATYP {other:#04x}"))),
    };
    let (port, payload) = rest.split_first_chunk::<2>().ok_or_else(short)?;
    Ok((
        frag,
        SocketAddr::new(ip, u16::from_be_bytes(*port)),
        payload,
    ))
}

/// Reads a CONNECT reply: (REP, BND address, BND domain if ATYP 3).
pub async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<(u8, SocketAddr, Option<String>)> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let [version, code, _reserved, atyp] = head;
    if version != VERSION {
        return Err(bad(format!("reply has version {version:#04x}")));
    }
    let (ip, domain) = match atyp {
        0x01 => {
            let mut b = [0u8; 4];
            stream.read_exact(&mut b).await?;
            (IpAddr::V4(Ipv4Addr::from(b)), None)
        }
        0x04 => {
            let mut b = [0u8; 16];
            stream.read_exact(&mut b).await?;
            (IpAddr::V6(Ipv6Addr::from(b)), None)
        }
        0x03 => {
            let len = stream.read_u8().await?;
            let mut b = vec![0u8; usize::from(len)];
            stream.read_exact(&mut b).await?;
            let name = String::from_utf8(b).map_err(|_| bad("bound domain is not UTF-8"))?;
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), Some(name))
        }
        other => return Err(bad(format!("reply has unknown ATYP {other:#04x}"))),
    };
    let port = stream.read_u16().await?;
    Ok((code, SocketAddr::new(ip, port), domain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// Plays the server side of a user/pass CONNECT to a domain and checks every byte.
    #[tokio::test]
    async fn connect_with_auth_to_domain() {
        let (client, mut server) = duplex(1024);
        let srv = tokio::spawn(async move {
            let mut b = [0u8; 3];
            server.read_exact(&mut b).await.unwrap();
            assert_eq!(b, [5, 1, USER_PASS]);
            server.write_all(&[5, USER_PASS]).await.unwrap();
            let mut b = [0u8; 9];
            server.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"\x01\x02me\x04pass");
            server.write_all(&[1, 0]).await.unwrap();
            let mut b = [0u8; 7 + 10];
            server.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"\x05\x01\x00\x03\x0atarget.lab\x00\x50");
            server
                .write_all(&[5, 0, 0, 1, 198, 18, 10, 2, 0x30, 0x39])
                .await
                .unwrap();
            server.write_all(b"payload").await.unwrap();
        });
        let target = Target::Domain("target.lab".into(), 80);
        let mut reply = socks5_connect(client, target, Some(("me", "pass")))
            .await
            .unwrap();
        assert_eq!(reply.code, 0);
        assert_eq!(reply.bound, "198.18.10.2:12345".parse().unwrap());
        let mut rest = [0u8; 7];
        reply.stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"payload");
        srv.await.unwrap();
    }

    #[test]
    fn udp_datagrams_wrap_and_unwrap() {
        let to: SocketAddr = "198.19.0.1:9".parse().unwrap();
        let d = udp_wrap(0, &Target::Ip(to), b"hi");
        assert_eq!(d, [0, 0, 0, 1, 198, 19, 0, 1, 0, 9, b'h', b'i']);
        assert_eq!(udp_unwrap(&d).unwrap(), (0, to, &b"hi"[..]));
        let named = udp_wrap(3, &Target::Domain("a.lab".into(), 53), b"");
        assert_eq!(named, [0, 0, 3, 3, 5, b'a', b'.', b'l', b'a', b'b', 0, 53]);
        assert!(udp_unwrap(&named).is_err(), "relays answer with addresses");
        assert!(udp_unwrap(&d[..9]).is_err());
        let v6: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        let d = udp_wrap(0, &Target::Ip(v6), b"x");
        assert_eq!(udp_unwrap(&d).unwrap(), (0, v6, &b"x"[..]));
    }

    #[tokio::test]
    async fn refused_code_and_rejections() {
        let (client, mut server) = duplex(1024);
        tokio::spawn(async move {
            let mut b = [0u8; 3];
            server.read_exact(&mut b).await.unwrap();
            assert_eq!(b, [5, 1, NO_AUTH]);
            server.write_all(&[5, 0]).await.unwrap();
            let mut b = [0u8; 22];
            server.read_exact(&mut b).await.unwrap();
            assert_eq!(b[3], 0x04, "IPv6 ATYP");
            server
                .write_all(&[5, 5, 0, 3, 3, b'a', b'.', b'b', 0, 1])
                .await
                .unwrap();
        });
        let target = Target::Ip("[::1]:11".parse().unwrap());
        let reply = socks5_connect(client, target, None).await.unwrap();
        assert_eq!(reply.code, 5);
        assert_eq!(reply.bound_domain.as_deref(), Some("a.b"));
        assert_eq!(reply.bound.port(), 1);

        let (client, mut server) = duplex(1024);
        tokio::spawn(async move {
            let mut b = [0u8; 3];
            server.read_exact(&mut b).await.unwrap();
            server.write_all(&[5, NO_ACCEPTABLE]).await.unwrap();
        });
        let target = Target::Ip("198.19.0.1:80".parse().unwrap());
        let err = socks5_connect(client, target, None).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }
}
