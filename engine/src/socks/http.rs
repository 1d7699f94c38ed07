//! The HTTP/1.1 proxy front: `CONNECT host:port` tunnels and absolute-form forward requests
//! (`GET http://host/path`), on the same port as SOCKS.
//!
//! The first request's head is read and parsed with `httparse`. A `CONNECT` (what browsers
//! and `curl -p` send for every HTTPS site) is then served on the raw socket, so the tunnel is
//! relayed exactly like a SOCKS5 connection (splice included). Anything else hands the
//! connection, with the bytes already read, to hyper's HTTP/1.1 server: each request is routed
//! on its own (keep-alive requests may name different hosts), over a fresh outbound
//! connection through the interface its strategy picks, with bodies streamed both ways and the
//! hop-by-hop headers removed. `Proxy-Authorization: Basic` is checked against `[socks.auth]`.
//!
//! Failures answer with a status: 403 denied by `socks.deny`, 407 credentials wanted, 502 the
//! destination refused or is unreachable, 504 the connect timed out, 400/431 a request that is
//! malformed or too large.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use abi_stable::std_types::RArc;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use netmix_plugin_api as api;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::conn::ServeContext;
use super::handshake::{Credentials, Reply, TargetAddr};
use super::path;
use super::relay::Totals;

/// The largest request head taken (browsers send a few KiB; 64 KiB is generous).
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields taken in one head.
const MAX_HEADERS: usize = 128;
/// How long a kept-alive client connection may sit without a new request head.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// The body of every response: an upstream's, streamed, or netmix's own short text.
type Body = Either<Incoming, Full<Bytes>>;

/// Whether a first byte can start an HTTP request (methods are upper-case tokens).
pub fn starts_request(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// The first request's head, and everything read so far.
#[derive(Debug)]
pub struct Head {
    /// Every byte read from the client (the head, then whatever followed it).
    buf: Vec<u8>,
    /// How much of `buf` is the head.
    head_len: usize,
    /// `Some` for a `CONNECT`: the target and the `Proxy-Authorization` value.
    connect: Option<(TargetAddr, Option<Vec<u8>>)>,
}

impl Head {
    /// How many of the bytes read are the head.
    pub fn head_len(&self) -> usize {
        self.head_len
    }
}

/// Why a first head was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Socket error or EOF before the head was complete.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Not a valid HTTP/1.x request head, or a CONNECT target without host and port.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The head passed the size or header-count limit.
    #[error("request head too large")]
    TooLarge,
}

impl HeadError {
    /// The response to send before closing, if the client should get one.
    pub fn response(&self) -> Option<Vec<u8>> {
        match self {
            Self::Io(_) => None,
            Self::Malformed(why) => Some(plain_response(
                StatusCode::BAD_REQUEST,
                &[],
                &format!("netmix: {why}"),
            )),
            Self::TooLarge => Some(plain_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &[],
                "netmix: request head too large",
            )),
        }
    }
}

/// Parses a head from `buf`: `Ok(None)` while incomplete, else the head's length and, for a
/// `CONNECT`, its target and credentials.
///
/// # Errors
/// [`HeadError::Malformed`] or [`HeadError::TooLarge`].
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if head_len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let connect = if req.method == Some("CONNECT") {
        let target = connect_target(req.path.unwrap_or_default())?;
        let auth = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
            .map(|h| h.value.to_vec());
        Some((target, auth))
    } else {
        None
    };
    Ok(Some(Head {
        buf: buf.to_vec(),
        head_len,
        connect,
    }))
}

/// The `host:port` of a CONNECT (authority form; IPv6 in brackets).
fn connect_target(authority: &str) -> Result<TargetAddr, HeadError> {
    let a: http::uri::Authority = authority.parse().map_err(|_| {
        HeadError::Malformed(format!("CONNECT target {authority:?} is not host:port"))
    })?;
    let port = a
        .port_u16()
        .ok_or_else(|| HeadError::Malformed(format!("CONNECT target {authority:?} has no port")))?;
    Ok(TargetAddr::from_host(a.host(), port))
}

/// Reads the first request's head (and whatever arrived with it).
///
/// # Errors
/// [`HeadError`]; send its [`HeadError::response`] before closing.
pub async fn read_head(client: &mut TcpStream) -> Result<Head, HeadError> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf)? {
            return Ok(head);
        }
    }
}

/// Serves a client whose first head is `head`: a CONNECT tunnel on the raw socket, or the
/// HTTP/1.1 server for everything else.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, head: Head, ctx: Arc<ServeContext>) {
    let Head {
        buf,
        head_len,
        connect,
    } = head;
    let Some((target, auth)) = connect else {
        forward_all(client, peer, buf, ctx).await;
        return;
    };
    if !authorized(&ctx, peer, auth.as_deref()).await {
        let _ = client.write_all(&auth_required()).await;
        return;
    }
    match path::open(&ctx, peer, &target, api::ClientProtocol::HttpConnect).await {
        Err(reply) => {
            let status = status_for(reply);
            let _ = client
                .write_all(&plain_response(status, &[], refusal_text(reply)))
                .await;
        }
        Ok(opened) => {
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                opened.record.closed(&ctx, Totals::default());
                return;
            }
            opened.relay(&ctx, &client, &buf[head_len..]).await;
        }
    }
}

/// Runs hyper's HTTP/1.1 server on the client connection; each request is [`forward`]ed.
async fn forward_all(client: TcpStream, peer: SocketAddr, read: Vec<u8>, ctx: Arc<ServeContext>) {
    let io = TokioIo::new(Prefixed {
        prefix: read,
        at: 0,
        inner: client,
    });
    let service = hyper::service::service_fn(move |req| forward(ctx.clone(), peer, req));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(KEEPALIVE_IDLE)
        .serve_connection(io, service)
        .with_upgrades()
        .await;
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "HTTP client connection ended with an error.");
    }
}

/// One request from an HTTP client: authenticate, route its host, send it on, stream the
/// answer back.
async fn forward(
    ctx: Arc<ServeContext>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let auth = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    if !authorized(&ctx, peer, auth.as_deref()).await {
        return Ok(response(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            &[(header::PROXY_AUTHENTICATE, REALM)],
            "netmix: proxy authentication required",
        ));
    }
    if req.method() == Method::CONNECT {
        return Ok(tunnel_upgraded(ctx, peer, req).await);
    }
    let (target, host_header) = match forward_target(req.uri()) {
        Ok(found) => found,
        Err(why) => return Ok(response(StatusCode::BAD_REQUEST, &[], &why)),
    };
    let opened = match path::open(&ctx, peer, &target, api::ClientProtocol::HttpForward).await {
        Ok(opened) => opened,
        Err(reply) => return Ok(response(status_for(reply), &[], refusal_text(reply))),
    };

    // The request as the origin server should see it: origin form, its own Host, no
    // hop-by-hop headers.
    let origin_form: Uri = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    *req.uri_mut() = origin_form;
    *req.version_mut() = http::Version::HTTP_11;
    strip_hop_by_hop(req.headers_mut());
    req.headers_mut().insert(header::HOST, host_header);

    let totals = Arc::new(Counts::default());
    let io = TokioIo::new(Counted {
        inner: opened.stream,
        live: opened.record.live(),
        counts: totals.clone(),
    });
    let record = opened.record;
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%peer, %error, "Upstream HTTP handshake failed.");
            record.closed(&ctx, Totals::default());
            return Ok(response(
                StatusCode::BAD_GATEWAY,
                &[],
                "netmix: upstream failed",
            ));
        }
    };
    // The connection task lives until the response body is through (the sender is dropped
    // below, so the connection closes after this one exchange), then records the close.
    let close_ctx = ctx.clone();
    let close_totals = totals.clone();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "Upstream HTTP connection ended with an error.");
        }
        record.closed(&close_ctx, close_totals.totals());
    });
    let sent = sender.send_request(req);
    let answered = match ctx.idle_timeout {
        Some(idle) => tokio::time::timeout(idle, sent)
            .await
            .map_err(|_| None)
            .and_then(|r| r.map_err(Some)),
        None => sent.await.map_err(Some),
    };
    drop(sender);
    match answered {
        Ok(mut resp) => {
            strip_hop_by_hop(resp.headers_mut());
            Ok(resp.map(Either::Left))
        }
        Err(None) => Ok(response(
            StatusCode::GATEWAY_TIMEOUT,
            &[],
            "netmix: the destination did not answer in time",
        )),
        Err(Some(error)) => {
            tracing::debug!(%peer, %error, "Upstream HTTP request failed.");
            Ok(response(
                StatusCode::BAD_GATEWAY,
                &[],
                "netmix: the destination closed the connection without answering",
            ))
        }
    }
}

/// A CONNECT that arrives after other requests on a kept-alive connection: answered by hyper
/// and relayed over the upgraded connection.
async fn tunnel_upgraded(
    ctx: Arc<ServeContext>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let target = match req.uri().authority().map(|a| connect_target(a.as_str())) {
        Some(Ok(target)) => target,
        Some(Err(e)) => return response(StatusCode::BAD_REQUEST, &[], &e.to_string()),
        None => {
            return response(
                StatusCode::BAD_REQUEST,
                &[],
                "netmix: CONNECT needs host:port",
            );
        }
    };
    let opened = match path::open(&ctx, peer, &target, api::ClientProtocol::HttpConnect).await {
        Ok(opened) => opened,
        Err(reply) => return response(status_for(reply), &[], refusal_text(reply)),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut outbound = opened.stream;
        let Ok(upgraded) = upgrade.await else {
            opened.record.closed(&ctx, Totals::default());
            return;
        };
        let mut client = TokioIo::new(upgraded);
        let moved = tokio::io::copy_bidirectional(&mut client, &mut outbound).await;
        let (up, down) = moved.unwrap_or_default();
        let live = opened.record.live();
        live.bytes_up.fetch_add(up, Ordering::Relaxed);
        live.bytes_down.fetch_add(down, Ordering::Relaxed);
        opened.record.closed(&ctx, Totals { up, down });
    });
    Response::new(Either::Right(Full::new(Bytes::new())))
}

/// The target of an absolute-form request and the Host header the origin gets.
fn forward_target(uri: &Uri) -> Result<(TargetAddr, HeaderValue), String> {
    let Some(authority) = uri.authority() else {
        return Err(
            "netmix is a proxy: send absolute-form requests (GET http://host/path) or CONNECT"
                .to_owned(),
        );
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "netmix forwards plain http:// requests; use CONNECT for {other}://"
            ));
        }
        None => return Err("the request URI has no scheme".to_owned()),
    }
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(80);
    let host_header = match authority.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let host_header =
        HeaderValue::from_str(&host_header).map_err(|_| "invalid host in the URI".to_owned())?;
    Ok((TargetAddr::from_host(host, port), host_header))
}

/// Removes the headers that describe one hop, not the message: those named in `Connection`,
/// and the standard hop-by-hop set (RFC 9110 §7.6.1, plus `Proxy-Connection` and
/// `Keep-Alive`). hyper re-frames the body for each side itself.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

const REALM: &str = "Basic realm=\"netmix\"";

/// Whether `value` (a `Proxy-Authorization` header) carries accepted `Basic` credentials, or
/// no authentication is configured. A failure counts against the client like a SOCKS5 one
/// (the answer is delayed after repeated failures).
async fn authorized(ctx: &ServeContext, peer: SocketAddr, value: Option<&[u8]>) -> bool {
    let Some(users) = ctx.users.as_ref() else {
        return true;
    };
    let creds = super::conn::ClientCredentials::new(users, peer.ip(), &ctx.auth);
    let pair = value.and_then(basic_credentials);
    let ok = match &pair {
        Some((user, pass)) => creds.check(user, pass),
        None => false,
    };
    if !ok {
        if value.is_some() {
            let delay = creds.failure_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        tracing::debug!(%peer, offered = value.is_some(), "HTTP proxy credentials refused.");
    }
    ok
}

/// The user and password of a `Basic` credential (`Basic base64(user:password)`).
fn basic_credentials(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// The HTTP status for a failure the shared connection path reports as a SOCKS5 reply code.
pub fn status_for(reply: Reply) -> StatusCode {
    match reply {
        Reply::NotAllowed => StatusCode::FORBIDDEN,
        Reply::TtlExpired => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// One line for the body of a refusal.
fn refusal_text(reply: Reply) -> &'static str {
    match reply {
        Reply::NotAllowed => "netmix: destination not allowed (socks.deny)",
        Reply::TtlExpired => "netmix: connect timed out",
        Reply::ConnectionRefused => "netmix: connection refused by the destination",
        Reply::HostUnreachable => "netmix: host unreachable or name not found",
        Reply::NetworkUnreachable => "netmix: network unreachable (no usable interface reached it)",
        _ => "netmix: connect failed",
    }
}

/// A 407 asking for Basic credentials, closing the connection (for the raw CONNECT path).
fn auth_required() -> Vec<u8> {
    plain_response(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        &[(header::PROXY_AUTHENTICATE, REALM)],
        "netmix: proxy authentication required",
    )
}

/// A complete short text response that closes the connection, as bytes (for answers written
/// before hyper is involved).
fn plain_response(status: StatusCode, extra: &[(HeaderName, &str)], body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len() + 1
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.push('\n');
    out.into_bytes()
}

/// The same short text response for hyper.
fn response(status: StatusCode, extra: &[(HeaderName, &str)], body: &str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!("{body}\n")))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            resp.headers_mut().insert(name.clone(), value);
        }
    }
    if status == StatusCode::BAD_REQUEST {
        // A client that sends what a proxy cannot serve is not kept.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

// === impl Prefixed ===

/// The client socket with the bytes already read put back in front.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// === impl Counted ===

/// Bytes one forwarded exchange moved.
#[derive(Debug, Default)]
struct Counts {
    up: AtomicU64,
    down: AtomicU64,
}

impl Counts {
    fn totals(&self) -> Totals {
        Totals {
            up: self.up.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
        }
    }
}

/// The outbound socket of a forwarded request, counting what moves in the exchange's totals
/// and the interface's live counters.
struct Counted {
    inner: TcpStream,
    live: RArc<api::LiveCounters>,
    counts: Arc<Counts>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.counts.down.fetch_add(n, Ordering::Relaxed);
            self.live.bytes_down.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.counts.up.fetch_add(n as u64, Ordering::Relaxed);
            self.live.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_incrementally() {
        let req = b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dTpw\r\n\r\nTLS";
        for n in 0..req.len() - 3 {
            assert!(parse_head(&req[..n]).unwrap().is_none(), "prefix {n}");
        }
        let head = parse_head(req).unwrap().unwrap();
        assert_eq!(&head.buf[head.head_len..], b"TLS");
        let (target, auth) = head.connect.unwrap();
        assert_eq!(target, TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap()));
        assert_eq!(
            basic_credentials(&auth.unwrap()),
            Some((b"u".to_vec(), b"p".to_vec()))
        );

        let get = parse_head(b"GET http://lab.test/x HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(get.connect.is_none());
    }

    #[test]
    fn bad_heads_get_an_answer() {
        for bad in [
            &b"CONNECT lab.test HTTP/1.1\r\n\r\n"[..],
            b"CONNECT  HTTP/1.1\r\n\r\n",
            b"GET\x01 / HTTP/1.1\r\n\r\n",
        ] {
            let err = parse_head(bad).unwrap_err();
            let resp = String::from_utf8(err.response().unwrap()).unwrap();
            assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
        }
        let mut big = b"GET http://a/ HTTP/1.1\r\n".to_vec();
        while big.len() < MAX_HEAD {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let err = parse_head(&big).unwrap_err();
        assert!(
            String::from_utf8(err.response().unwrap())
                .unwrap()
                .starts_with("HTTP/1.1 431 ")
        );
    }

    #[test]
    fn forward_targets() {
        let (t, host) = forward_target(&"http://lab.test:8080/a?b".parse().unwrap()).unwrap();
        assert_eq!(t, TargetAddr::Domain("lab.test".into(), 8080));
        assert_eq!(host, "lab.test:8080");
        let (t, host) = forward_target(&"http://198.18.0.1/".parse().unwrap()).unwrap();
        assert_eq!(t, TargetAddr::Ip("198.18.0.1:80".parse().unwrap()));
        assert_eq!(host, "198.18.0.1");
        assert!(forward_target(&"/only/a/path".parse().unwrap()).is_err());
        assert!(forward_target(&"https://lab.test/".parse().unwrap()).is_err());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-length", "x-kept"]);
    }

    #[test]
    fn credentials_and_statuses() {
        assert_eq!(
            basic_credentials(b"Basic dXNlcjpwYTpzcw=="),
            Some((b"user".to_vec(), b"pa:ss".to_vec()))
        );
        assert_eq!(basic_credentials(b"Bearer abc"), None);
        assert_eq!(basic_credentials(b"Basic !!!"), None);
        assert_eq!(status_for(Reply::NotAllowed), StatusCode::FORBIDDEN);
        assert_eq!(status_for(Reply::TtlExpired), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            status_for(Reply::ConnectionRefused),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status_for(Reply::NetworkUnreachable),
            StatusCode::BAD_GATEWAY
        );
        let resp = String::from_utf8(auth_required()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 407 "));
        assert!(resp.contains("proxy-authenticate: Basic realm=\"netmix\"\r\n"));
    }
}
