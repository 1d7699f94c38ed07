//! Talking to a real netmix dashboard from the tests: raw HTTP requests with any headers, a
//! small WebSocket client for `/ws`, a Prometheus text-format validator for `/metrics`, and the
//! bits the dashboard tests share (a token file, a plugins folder, the artifacts folder).
//!
//! Everything here goes over a real TCP connection made inside the lab's client namespace (the
//! dashboard listens on 127.0.0.1 there), so the engine's real HTTP stack answers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{
    HTTP_PORT, Lab, TARGET, Target, WHOAMI_PORT, connect_tokio_in, netmix_bin, socks5_connect,
};

/// How long one request (or one WebSocket message) may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code (200, 401, ...).
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one HTTP/1.1 request to `addr` from inside the client namespace and reads the whole
/// answer (`Connection: close`). `Host` is `addr` unless `headers` has one; a body gets its
/// `Content-Length`.
///
/// # Panics
/// When the server cannot be reached, does not answer within 10 s, or answers garbage.
pub async fn http(
    lab: &Lab,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    let mut s = lab.connect_client(addr).await;
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body.unwrap_or_default());
    s.write_all(&raw).await.expect("send request");
    let mut answer = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, s.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {IO_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    parse_response(&answer).unwrap_or_else(|| {
        panic!(
            "{method} {path}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&answer)
        )
    })
}

/// Splits a complete HTTP/1.1 answer into status, headers and (de-chunked) body.
fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Decodes an HTTP/1.1 chunked body; `None` when it is malformed or cut short.
pub(crate) fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..eol]).ok()?;
        let size = size.split(';').next()?.trim();
        let n = usize::from_str_radix(size, 16).ok()?;
        body = &body[eol + 2..];
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..n)?);
        body = body.get(n + 2..)?;
    }
}

/// A WebSocket client (RFC 6455, text frames) on a raw tokio `TcpStream`, enough to read the
/// dashboard's `/ws` feed.
pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Opens `path` (e.g. `/ws`) as a WebSocket on `addr` inside the client namespace, sending
/// `Origin: origin` when given. `Err` holds the server's answer when it refused the upgrade.
///
/// # Panics
/// When the server cannot be reached or answers garbage.
pub async fn ws_connect(
    lab: &Lab,
    addr: SocketAddr,
    path: &str,
    origin: Option<&str>,
) -> Result<WsClient, HttpResponse> {
    let mut stream = lab.connect_client(addr).await;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: bmV0bWl4LWxhYi10ZXN0IQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(origin) = origin {
        req.push_str(&format!("Origin: {origin}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .expect("send upgrade");
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("upgrade answer in time")
            .expect("read upgrade answer");
        if n == 0 {
            break buf.len();
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if buf.starts_with(b"HTTP/1.1 101") {
        let rest = buf.split_off(head_end);
        return Ok(WsClient { stream, buf: rest });
    }
    // A refusal: read the rest of it (the server closes or sent Content-Length).
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut buf)).await;
    Err(parse_response(&buf).unwrap_or_else(|| {
        panic!(
            "GET {path} (upgrade): not an HTTP answer: {:?}",
            String::from_utf8_lossy(&buf)
        )
    }))
}

impl WsClient {
    /// The next text message; `Ok(None)` when the server closed. Pings are answered.
    pub async fn next_text(&mut self) -> io::Result<Option<String>> {
        let mut message = Vec::new();
        loop {
            let (fin, opcode, payload) = self.frame().await?;
            match opcode {
                // Text or continuation.
                0x1 | 0x0 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message)
                            .map(Some)
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                0x8 => return Ok(None),
                0x9 => self.send(0xA, &payload).await?,
                _ => {} // binary, pong: not used by the dashboard
            }
        }
    }

    /// Sends a close frame and drops the connection.
    pub async fn close(mut self) {
        let _ = self.send(0x8, &1000u16.to_be_bytes()).await;
    }

    async fn fill(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            let mut chunk = vec![0u8; 64 * 1024];
            let got = self.stream.read(&mut chunk).await?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }

    /// One frame: (FIN, opcode, unmasked payload).
    async fn frame(&mut self) -> io::Result<(bool, u8, Vec<u8>)> {
        self.fill(2).await?;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7F {
            126 => {
                self.fill(4).await?;
                (u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4)
            }
            127 => {
                self.fill(10).await?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let len = usize::try_from(len).map_err(|_| io::Error::other("frame too large"))?;
        let mask = if masked {
            self.fill(at + 4).await?;
            let m = [
                self.buf[at],
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
            ];
            at += 4;
            Some(m)
        } else {
            None
        };
        self.fill(at + len).await?;
        let mut payload: Vec<u8> = self.buf.drain(..at + len).skip(at).collect();
        if let Some(m) = mask {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b ^= m[i % 4]);
        }
        Ok((b0 & 0x80 != 0, b0 & 0x0F, payload))
    }

    /// Sends one masked frame (clients must mask).
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = [0x6e, 0x6d, 0x78, 0x21];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await
    }
}

/// Downloads `GET path` from the lab's HTTP server (198.19.0.1:80) through the SOCKS proxy at
/// `socks`, from inside namespace `ns`, and returns how many body bytes arrived.
///
/// # Panics
/// When the proxy cannot be reached, refuses the CONNECT, or the answer is not a 200.
pub async fn fetch_via_socks(ns: &str, socks: SocketAddr, path: &str) -> u64 {
    let stream = connect_tokio_in(ns, socks, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("connect to the proxy {socks}: {e}"));
    let target = Target::Ip(SocketAddr::new(TARGET.into(), HTTP_PORT));
    let reply = socks5_connect(stream, target, None)
        .await
        .expect("SOCKS exchange");
    assert_eq!(reply.code, 0, "CONNECT to the lab HTTP server refused");
    let mut s = reply.stream;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {TARGET}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut body = 0u64;
    loop {
        let n = s.read(&mut buf).await.expect("read answer");
        if n == 0 {
            break;
        }
        if body == 0 && head.len() < 4096 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(
                    head.starts_with(b"HTTP/1.1 200"),
                    "GET {path}: {}",
                    String::from_utf8_lossy(&head)
                );
                body = (head.len() - i - 4) as u64;
            }
        } else {
            body += n as u64;
        }
    }
    body
}

/// Opens `total` who-am-I connections through the proxy at `socks` from inside namespace `ns`,
/// `concurrency` at a time, each worker pausing `gap` after each of its connections (so a
/// watcher sees the load spread over time); returns how many succeeded (reply 0 and an answer).
pub async fn connection_burst(
    ns: &str,
    socks: SocketAddr,
    total: usize,
    concurrency: usize,
    gap: Duration,
) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (ns, next, ok) = (ns.to_owned(), next.clone(), ok.clone());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let one = async {
                    let stream = connect_tokio_in(&ns, socks, Duration::from_secs(5)).await?;
                    let target = Target::Ip(SocketAddr::new(TARGET.into(), WHOAMI_PORT));
                    let mut reply = socks5_connect(stream, target, None).await?;
                    let mut seen = String::new();
                    reply.stream.read_to_string(&mut seen).await?;
                    Ok::<_, io::Error>(reply.code == 0 && !seen.is_empty())
                };
                if let Ok(Ok(true)) = tokio::time::timeout(IO_TIMEOUT, one).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(gap).await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("burst worker");
    }
    ok.load(Ordering::Relaxed)
}

/// A port of the lab's target whose SYNs the internet namespace drops once
/// [`drop_syns_to_dropped_port`] ran: a connect there times out on every link, while the links
/// stay healthy for everything else.
pub const DROPPED_PORT: u16 = 12;

/// Makes the internet namespace drop every TCP SYN to `TARGET:DROPPED_PORT` (until the lab is
/// torn down).
pub fn drop_syns_to_dropped_port(lab: &Lab) {
    let port = DROPPED_PORT.to_string();
    crate::sh(
        lab.inet_ns(),
        &[
            "iptables",
            "-w",
            "-t",
            "raw",
            "-I",
            "PREROUTING",
            "-p",
            "tcp",
            "-d",
            &TARGET.to_string(),
            "--dport",
            &port,
            "-j",
            "DROP",
        ],
    );
}

/// One SOCKS5 CONNECT through the proxy at `socks` (from inside namespace `ns`) to
/// `TARGET:DROPPED_PORT`: the reply code and how long the client waited for it.
///
/// # Panics
/// When the proxy cannot be reached or gives no reply within 60 s.
pub async fn timed_out_connection(ns: &str, socks: SocketAddr) -> (u8, Duration) {
    let stream = connect_tokio_in(ns, socks, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("connect to the proxy {socks}: {e}"));
    let target = Target::Ip(SocketAddr::new(TARGET.into(), DROPPED_PORT));
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        socks5_connect(stream, target, None),
    )
    .await
    .expect("a SOCKS reply within 60 s")
    .expect("SOCKS exchange");
    (reply.code, started.elapsed())
}

/// Every interface's connect deadline (`connect_timeout_ms`), once the dashboard shows a
/// latency for each (the deadline adapts to it); panics after [`crate::patience`].
pub async fn measured_deadlines(lab: &Lab) -> Vec<u64> {
    let deadline = std::time::Instant::now() + crate::patience();
    loop {
        let list = crate::api(lab, crate::DASHBOARD, "/api/interfaces").await;
        let ifaces = list.as_array().cloned().unwrap_or_default();
        if !ifaces.is_empty() && ifaces.iter().all(|i| i["latency_ms"].is_number()) {
            return ifaces
                .iter()
                .map(|i| {
                    i["connect_timeout_ms"]
                        .as_u64()
                        .expect("connect_timeout_ms")
                })
                .collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every interface has a latency yet: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The dashboard's row for the connection to `TARGET:DROPPED_PORT`, once `/api/connections`
/// lists it as failed (the feed publishes in batches); panics after [`crate::patience`].
pub async fn failed_row(lab: &Lab) -> serde_json::Value {
    let destination = format!("{TARGET}:{DROPPED_PORT}");
    let deadline = std::time::Instant::now() + crate::patience();
    loop {
        let rows = crate::api(lab, crate::DASHBOARD, "/api/connections?limit=20").await;
        let row = rows
            .as_array()
            .and_then(|a| a.iter().find(|r| r["destination"] == destination.as_str()))
            .cloned()
            .unwrap_or_default();
        if row["state"] == "failed" {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed row for {destination} in /api/connections: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One sample of a Prometheus exposition.
#[derive(Debug, Clone)]
pub struct PromSample {
    /// Metric name.
    pub name: String,
    /// Labels, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Parses and validates Prometheus text format 0.0.4 (the validator of `web/tests/metrics.rs`);
/// panics with the offending line on any violation:
/// - every line is `# HELP name text`, `# TYPE name type`, or `name{labels} value`;
/// - a family's HELP and TYPE come before its first sample, once each;
/// - counters end in `_total` and are not negative; values parse as floats; label values are
///   properly escaped;
/// - no sample repeats the same name and label set.
pub fn validate_prometheus(text: &str) -> Vec<PromSample> {
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut help = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut seen = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP needs text");
            assert!(is_metric_name(name), "bad name in {line:?}");
            assert!(!text.is_empty(), "empty HELP: {line:?}");
            assert!(help.insert(name.to_owned()), "second HELP for {name}");
            assert!(!types.contains_key(name), "HELP after TYPE for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE needs a type");
            assert!(help.contains(name), "TYPE before HELP for {name}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type in {line:?}"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "second TYPE for {name}"
            );
        } else {
            assert!(!line.starts_with('#'), "unknown comment {line:?}");
            let sample = parse_sample(line);
            assert!(
                types.contains_key(&sample.name),
                "sample before HELP/TYPE: {line:?}"
            );
            if types[&sample.name] == "counter" {
                assert!(sample.value >= 0.0, "negative counter: {line:?}");
            }
            let key = format!("{}{:?}", sample.name, sample.labels);
            assert!(seen.insert(key), "duplicate sample: {line:?}");
            samples.push(sample);
        }
    }
    samples
}

/// The value of the sample `name` whose labels include `labels`, if any.
pub fn prom_value(samples: &[PromSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name{a="x",b="y"} value`, with `\\`, `\"`, `\n` escapes inside label values.
fn parse_sample(line: &str) -> PromSample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line:?}"));
    let name = &line[..name_end];
    assert!(is_metric_name(name), "bad metric name in {line:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end = loop {
            let start = chars.peek().map(|&(i, _)| i).expect("unterminated labels");
            if body[start..].starts_with('}') {
                break start + 1;
            }
            let eq = body[start..]
                .find('=')
                .map(|i| start + i)
                .expect("label without =");
            let label = &body[start..eq];
            assert!(is_label_name(label), "bad label name {label:?} in {line:?}");
            assert_eq!(
                body.get(eq + 1..eq + 2),
                Some("\""),
                "label value must be quoted: {line:?}"
            );
            while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("unterminated value: {line:?}"));
                match c {
                    '"' => break,
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    c => value.push(c),
                }
            }
            assert!(
                labels.insert(label.to_owned(), value).is_none(),
                "repeated label in {line:?}"
            );
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => break i + 1,
                other => panic!("expected , or }} after label, got {other:?} in {line:?}"),
            }
        };
        rest = &body[end..];
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before value: {line:?}"));
    assert!(
        !value.contains(' '),
        "timestamps are not expected: {line:?}"
    );
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    PromSample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Writes `token` to a fresh file with mode 0600 (as netmix expects of its token file) and
/// returns its path, for `[dashboard] token_file = "..."`.
pub fn write_token_file(tag: &str, token: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "netmix-dashboard-token-{}-{tag}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes()).expect("write token");
    path
}

/// A fresh plugins folder holding copies of the built strategy plugins `stems` (e.g.
/// `"strategy_sticky"` for `libnetmix_strategy_sticky.so`, taken from next to the netmix
/// binary); panics with "build them first" if one is missing.
pub fn plugins_dir(tag: &str, stems: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netmix-plugins-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create plugins dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = netmix_bin();
    let built = bin.parent().expect("binary folder");
    for stem in stems {
        let file = format!("libnetmix_{stem}.so");
        let from = built.join(&file);
        assert!(
            from.exists(),
            "{} missing: build the plugins first: cargo build --workspace",
            from.display()
        );
        let to = dir.join(&file);
        std::fs::copy(&from, &to).expect("copy plugin");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    dir
}

/// `<target>/test-artifacts` (target = `$CARGO_TARGET_DIR` or the workspace's `target/`),
/// created if needed: where tests keep screenshots and other evidence.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_and_plain_answers() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
        let r = parse_response(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno").unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.header("Content-Length"), Some("2"));
        assert_eq!(r.text(), "no");
        assert!(parse_response(b"garbage").is_none());
    }

    #[test]
    fn validator_rejects_what_it_should() {
        for bad in [
            "x 1\n",
            "# HELP x h\n# TYPE x counter\nx 1\n",
            "# TYPE x gauge\n# HELP x h\nx 1\n",
            "# HELP x h\n# TYPE x gauge\nx{a=\"b} 1\n",
            "# HELP x h\n# TYPE x gauge\nx{a=\"\\q\"} 1\n",
            "# HELP x h\n# TYPE x gauge\nx one\n",
            "# HELP x h\n# TYPE x gauge\nx 1\nx 2\n",
        ] {
            let outcome = std::panic::catch_unwind(|| validate_prometheus(bad));
            assert!(outcome.is_err(), "validator accepted {bad:?}");
        }
        let ok = validate_prometheus(
            "# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\",b=\"\"} 1.5\n",
        );
        assert_eq!(ok[0].labels["a"], "q\"\\\n");
        assert_eq!(prom_value(&ok, "x_total", &[("b", "")]), Some(1.5));
    }
}
