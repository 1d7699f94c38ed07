//! Helpers for tests that talk to a running netmix: ask the who-am-I server through the proxy,
//! count which link carried what.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::{Engine, Lab, TARGET, Target, WHOAMI_PORT, socks5_connect};

/// One answer of the who-am-I service through netmix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    /// The SOCKS reply code (0 = succeeded).
    pub code: u8,
    /// BND.ADDR/BND.PORT from the reply.
    pub bound: SocketAddr,
    /// The source address the server saw (empty when the connect failed).
    pub seen: String,
}

/// Connects through netmix to the who-am-I service and reads its answer.
///
/// # Panics
/// When the proxy cannot be reached or the SOCKS exchange breaks (not on a failure reply).
pub async fn whoami(lab: &Lab, engine: &Engine) -> WhoAmI {
    let target = Target::Ip(SocketAddr::new(TARGET.into(), WHOAMI_PORT));
    ask(lab, engine.socks_addr(), target).await.0
}

/// A SOCKS5 CONNECT to `target` through the proxy at `proxy` (inside the client namespace):
/// the reply, what the destination sent until it closed (empty when the connect failed), and
/// the time from the request to the reply.
///
/// # Panics
/// When the proxy cannot be reached or the SOCKS exchange breaks (not on a failure reply).
pub async fn ask(lab: &Lab, proxy: SocketAddr, target: Target) -> (WhoAmI, Duration) {
    let stream = lab.connect_client(proxy).await;
    let started = std::time::Instant::now();
    let mut reply = tokio::time::timeout(
        Duration::from_secs(20),
        socks5_connect(stream, target, None),
    )
    .await
    .expect("SOCKS exchange timed out")
    .expect("SOCKS exchange");
    let took = started.elapsed();
    let mut seen = String::new();
    if reply.code == 0 {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            reply.stream.read_to_string(&mut seen),
        )
        .await;
    }
    let answer = WhoAmI {
        code: reply.code,
        bound: reply.bound,
        seen: seen.trim().to_owned(),
    };
    (answer, took)
}

/// Makes `n` sequential who-am-I connections and counts them per lab link (by source
/// address); asserts each succeeded and that BND.ADDR matched the link the server saw.
pub async fn spread(lab: &Lab, engine: &Engine, n: usize) -> Vec<usize> {
    let mut counts = vec![0; lab.links().len()];
    for i in 0..n {
        let w = whoami(lab, engine).await;
        assert_eq!(w.code, 0, "connection {i} failed: {w:?}\n{}", engine.logs());
        let ip: IpAddr = w
            .seen
            .parse()
            .unwrap_or_else(|_| panic!("bad answer {w:?}"));
        assert_eq!(
            w.bound.ip(),
            ip,
            "BND.ADDR must be the source the server saw"
        );
        let k = lab
            .link_for_source(ip)
            .unwrap_or_else(|| panic!("{ip} is no lab link"));
        counts[k] += 1;
    }
    counts
}

/// Counts per link name, for messages.
pub fn by_name(lab: &Lab, counts: &[usize]) -> HashMap<String, usize> {
    counts
        .iter()
        .enumerate()
        .map(|(k, c)| (lab.link(k).dev.clone(), *c))
        .collect()
}

/// GETs `path` from netmix's dashboard API (127.0.0.1:5000 in the client namespace, or
/// `dashboard`) and parses the JSON body.
///
/// # Panics
/// When the dashboard cannot be reached or answers with something other than 200 + JSON.
pub async fn api(lab: &Lab, dashboard: SocketAddr, path: &str) -> serde_json::Value {
    api_over(lab.connect_client(dashboard).await, dashboard, path).await
}

/// [`api`] over a connection already made to `dashboard` (by a caller already inside the
/// client namespace).
///
/// # Panics
/// As [`api`].
pub async fn api_over(
    mut s: tokio::net::TcpStream,
    dashboard: SocketAddr,
    path: &str,
) -> serde_json::Value {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {dashboard}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .expect("dashboard answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let bytes = crate::web::dechunk(body.as_bytes()).expect("a well-formed chunked body");
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: bad JSON ({e}): {body}"))
}

/// The dashboard's default address inside the client namespace.
pub const DASHBOARD: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);

/// One interface's JSON object from `/api/interfaces`, by name.
pub async fn iface_json(lab: &Lab, name: &str) -> Option<serde_json::Value> {
    let list = api(lab, DASHBOARD, "/api/interfaces").await;
    list.as_array()?.iter().find(|i| i["name"] == name).cloned()
}

/// One connection of a [`steady_stream`].
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the client started it.
    pub at: std::time::Instant,
    /// How long until the answer arrived (or the failure).
    pub took: Duration,
    /// The SOCKS reply code (0 = succeeded); 0xFF when the proxy could not be reached.
    pub code: u8,
    /// The lab link that carried it.
    pub link: Option<usize>,
}

/// Opens who-am-I connections through netmix one after another, `gap` apart, for `length`
/// (bounded: at most `length / gap` connections), and records each.
pub async fn steady_stream(
    lab: &Lab,
    socks: SocketAddr,
    length: Duration,
    gap: Duration,
) -> Vec<Sample> {
    let end = std::time::Instant::now() + length;
    let mut samples = Vec::new();
    while std::time::Instant::now() < end {
        let at = std::time::Instant::now();
        let target = Target::Ip(SocketAddr::new(TARGET.into(), WHOAMI_PORT));
        let result = async {
            let stream = lab
                .try_connect_client(socks, Duration::from_secs(2))
                .await?;
            let mut reply = socks5_connect(stream, target, None).await?;
            let mut seen = String::new();
            if reply.code == 0 {
                reply.stream.read_to_string(&mut seen).await?;
            }
            Ok::<_, std::io::Error>((reply.code, seen))
        };
        let (code, link) = match tokio::time::timeout(Duration::from_secs(10), result).await {
            Ok(Ok((code, seen))) => (
                code,
                seen.trim()
                    .parse::<IpAddr>()
                    .ok()
                    .and_then(|ip| lab.link_for_source(ip)),
            ),
            _ => (0xFF, None),
        };
        samples.push(Sample {
            at,
            took: at.elapsed(),
            code,
            link,
        });
        tokio::time::sleep(gap.saturating_sub(at.elapsed())).await;
    }
    samples
}
