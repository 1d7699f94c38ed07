//! ZeroTier One's local REST API: tolerant serde models, the HTTP client, and the pure rules
//! that turn the service's JSON into what netmix routes on.
//!
//! Parsing is tolerant on purpose (README §A3: keys may be added in later versions): every
//! field has a default, unknown fields are ignored, and a list element that does not parse is
//! skipped rather than failing the whole list. `GET /peer/{addr}` answers `200 {}` for an
//! unknown peer, so a peer without `address` is "not found"; latency `-1` means unknown.
//!
//! Route rules (README §A4, `checkIfManagedIsAllowed`/`syncManagedStuff` in OneService.cpp):
//! the OS only installs a managed route when `allowManaged` is on; a default route also needs
//! `allowDefault`, netmix's own `allow_default_route` and the node online; global-scope targets
//! need `allowGlobal`; link-local, loopback, multicast and "none" targets never count; a route
//! whose `via` is one of this node's own addresses is skipped. A network whose status is not
//! `OK` has no usable route at all. [`route_verdicts`] applies them.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::token::AuthToken;

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

// === JSON models ===

/// `GET /status` (the fields netmix uses).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Status {
    /// This node's 10-hex address.
    pub address: String,
    /// At least one upstream (root) is reachable.
    pub online: bool,
    /// Traffic is tunnelled over TCP through ZeroTier's relay (slow).
    pub tcp_fallback_active: bool,
    /// `"1.14.1"`.
    pub version: String,
}

/// One route of a network.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RouteJson {
    /// `"10.147.20.0/24"`.
    pub target: String,
    /// Gateway; `null` means on-link.
    pub via: Option<String>,
}

/// `GET /network` element (the fields netmix uses).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Network {
    /// 16-hex network id.
    pub id: String,
    /// Same as `id` in 1.14.
    pub nwid: String,
    /// From the controller; empty until configured.
    pub name: String,
    /// `OK`, `REQUESTING_CONFIGURATION`, `ACCESS_DENIED`, ... or `""`.
    pub status: String,
    /// `PRIVATE` or `PUBLIC`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The OS interface name (`ztnnhrtimp`, `feth1234`, `ethernet_32777`).
    pub port_device_name: String,
    /// `ip/bits` strings.
    pub assigned_addresses: Vec<String>,
    /// Managed routes.
    pub routes: Vec<RouteJson>,
    /// Local setting: install managed addresses and routes.
    pub allow_managed: bool,
    /// Local setting: allow global-scope routes.
    pub allow_global: bool,
    /// Local setting: allow a default route.
    pub allow_default: bool,
    /// Usually 2800.
    pub mtu: u32,
}

impl Network {
    /// The id, whichever field carries it.
    pub fn network_id(&self) -> &str {
        if self.id.is_empty() {
            &self.nwid
        } else {
            &self.id
        }
    }
}

/// One path of a peer.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PathJson {
    /// `ip/port`.
    pub address: String,
    /// The path is in use.
    pub preferred: bool,
    /// Not expired.
    pub active: bool,
}

/// `GET /peer` element (the fields netmix uses).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Peer {
    /// 10-hex address; missing for an unknown peer (`200 {}`).
    pub address: Option<String>,
    /// Milliseconds, `-1` when unknown.
    pub latency: i64,
    /// `LEAF`, `MOON` or `PLANET`.
    pub role: String,
    /// Traffic to it goes over TCP fallback.
    pub tunneled: bool,
    /// Known physical paths.
    pub paths: Vec<PathJson>,
    /// `"1.14.1"`, or `"-1.-1.-1"` when unknown.
    pub version: String,
}

impl Peer {
    /// Direct the way `zerotier-cli peers` decides: some path is preferred and the peer is not
    /// tunneled. No paths at all is relayed.
    pub fn is_direct(&self) -> bool {
        !self.tunneled && self.paths.iter().any(|p| p.preferred)
    }

    /// The latency, `None` when the service says -1 (unknown).
    pub fn latency_ms(&self) -> Option<u32> {
        u32::try_from(self.latency).ok()
    }
}

/// Parses a JSON array, skipping elements that do not parse; `Err` only when the body is not
/// an array at all.
///
/// # Errors
/// The body is not JSON, or not an array.
pub fn parse_list<T: DeserializeOwned>(body: &[u8]) -> Result<(Vec<T>, usize), String> {
    let values: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON array: {e}"))?;
    let total = values.len();
    let items: Vec<T> = values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let skipped = total - items.len();
    Ok((items, skipped))
}

// === Client ===

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Nothing answers (service stopped, or on another port).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// 401: the token is wrong (the service may have restarted with a new one).
    #[error("401 unauthorized (wrong token)")]
    Unauthorized,
    /// Another HTTP status.
    #[error("HTTP {0} for {1}")]
    Status(u16, &'static str),
    /// The body is not what the API documents.
    #[error("unexpected answer to {0}: {1}")]
    BadJson(&'static str, String),
    /// The answer is larger than the API ever sends: not the ZeroTier service, or a broken one.
    #[error("the answer to {0} is larger than {max} KiB", max = MAX_BODY >> 10)]
    TooLarge(&'static str),
    /// The port is held by a program of another user (while ZeroTier is down, any user can
    /// bind it): the token is not sent there.
    #[error(
        "port {port} is held by uid {uid}, not by root or netmix's user: not sending the token"
    )]
    Impostor {
        /// The port.
        port: u16,
        /// Who holds it.
        uid: u32,
    },
}

impl ApiError {
    /// A short name for "did the kind of failure change?" (log once per kind).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Unauthorized => "unauthorized",
            Self::Status(..) => "http-status",
            Self::BadJson(..) => "bad-json",
            Self::TooLarge(_) => "too-large",
            Self::Impostor { .. } => "impostor",
        }
    }
}

/// Everything one poll returns.
#[derive(Debug, Clone, Default)]
pub struct Poll {
    /// `/status`.
    pub status: Status,
    /// `/network`.
    pub networks: Vec<Network>,
    /// `/peer`.
    pub peers: Vec<Peer>,
    /// List elements that did not parse (skipped).
    pub skipped: usize,
}

/// A client of one service instance (base URL + token).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    port: u16,
}

/// Largest answer read from the service, in bytes (its real answers are a few KiB).
pub const MAX_BODY: usize = 1 << 20;

impl Client {
    /// A client for `http://127.0.0.1:{port}` with `token` in the `X-ZT1-Auth` header (marked
    /// sensitive, so it is never printed).
    ///
    /// # Errors
    /// The token is not a valid header value, or the HTTP client cannot be built.
    pub fn new(port: u16, token: &AuthToken) -> Result<Self, String> {
        let mut value = HeaderValue::from_str(token.expose())
            .map_err(|_| "the auth token holds characters a header cannot carry".to_owned())?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("X-ZT1-Auth", value);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            // A redirect would carry the token header elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: format!("http://127.0.0.1:{port}"),
            port,
        })
    }

    async fn get(&self, path: &'static str) -> Result<Vec<u8>, ApiError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(error_chain(&e)))?;
        match resp.status().as_u16() {
            200 => {
                let mut resp = resp;
                let mut body = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| ApiError::Unreachable(error_chain(&e)))?
                {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(ApiError::TooLarge(path));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
            401 => Err(ApiError::Unauthorized),
            code => Err(ApiError::Status(code, path)),
        }
    }

    /// `GET /status`, `/network` and `/peer`, concurrently.
    ///
    /// # Errors
    /// The first failure (see [`ApiError`]).
    pub async fn poll(&self) -> Result<Poll, ApiError> {
        if let Some(uid) = port_owner::foreign_listener(self.port) {
            return Err(ApiError::Impostor {
                port: self.port,
                uid,
            });
        }
        let (status, networks, peers) =
            tokio::join!(self.get("/status"), self.get("/network"), self.get("/peer"));
        let status: Status = serde_json::from_slice(&status?)
            .map_err(|e| ApiError::BadJson("/status", e.to_string()))?;
        let (networks, bad_nets) =
            parse_list::<Network>(&networks?).map_err(|e| ApiError::BadJson("/network", e))?;
        let (peers, bad_peers) =
            parse_list::<Peer>(&peers?).map_err(|e| ApiError::BadJson("/peer", e))?;
        Ok(Poll {
            status,
            networks,
            peers: peers.into_iter().filter(|p| p.address.is_some()).collect(),
            skipped: bad_nets + bad_peers,
        })
    }
}

/// Who listens on a loopback port: the token goes only to a listener of root or of the user
/// netmix runs as (Linux: from `/proc/net/tcp` and `/proc/net/tcp6`; elsewhere not checked).
/// A ZeroTier One service run under a dedicated account would be refused; the usual packages
/// run it as root.
mod port_owner {
    /// A loopback (or wildcard) TCP listener on `port` owned by another user: its uid.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn foreign_listener(port: u16) -> Option<u32> {
        let euid = nix::unistd::geteuid().as_raw();
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|table| listeners(&table, port))
            .find(|&uid| uid != 0 && uid != euid)
    }

    /// Not checked on this platform.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub fn foreign_listener(_port: u16) -> Option<u32> {
        None
    }

    /// The uids of LISTEN sockets on `port` bound to a loopback or wildcard address, from the
    /// text of `/proc/net/tcp{,6}` (addresses in hex, as the kernel stores them).
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    pub fn listeners(table: &str, port: u16) -> Vec<u32> {
        const LISTEN: &str = "0A";
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let (local, state, uid) = (cols.get(1)?, cols.get(3)?, cols.get(7)?);
                let (addr, p) = local.split_once(':')?;
                if *state != LISTEN || u16::from_str_radix(p, 16).ok()? != port {
                    return None;
                }
                let reachable = matches!(
                    addr,
                    // 127.0.0.1, 0.0.0.0 (IPv4, one little-endian word)
                    "0100007F" | "00000000"
                    // ::1, ::, ::ffff:127.0.0.1, ::ffff:0.0.0.0 (four little-endian words)
                    | "00000000000000000000000001000000"
                    | "00000000000000000000000000000000"
                    | "0000000000000000FFFF00000100007F"
                    | "0000000000000000FFFF000000000000"
                ) || addr.ends_with("7F") && addr.len() == 8;
                reachable.then(|| uid.parse().ok()).flatten()
            })
            .collect()
    }
}

/// The error and its causes on one line ("error sending request ...: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

// === Route rules (README §A4) ===

/// Whether a route counts, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteVerdict {
    /// The target network.
    pub target: IpNet,
    /// The gateway (`None`: on-link).
    pub via: Option<IpAddr>,
    /// `None`: usable; otherwise why it is not.
    pub refused: Option<&'static str>,
}

/// What the route checks need beyond the network itself.
#[derive(Debug, Clone, Copy)]
pub struct RouteContext {
    /// The node is online (a default route is only synced while online).
    pub online: bool,
    /// netmix's `[zerotier] allow_default_route`.
    pub allow_default_route: bool,
}

/// The address scope the way ZeroTier's `InetAddress::ipScope` sees it (simplified: private
/// and shared ranges are not global).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    None,
    Loopback,
    LinkLocal,
    Multicast,
    Private,
    Global,
}

fn scope(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if o[0] == 0 {
                Scope::None
            } else if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_link_local() {
                Scope::LinkLocal
            } else if v4.is_multicast() || o[0] >= 240 {
                Scope::Multicast
            } else if v4.is_private()
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
            // 198.18.0.0/15 benchmarking
            {
                Scope::Private
            } else {
                Scope::Global
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_unspecified() {
                Scope::None
            } else if v6.is_loopback() {
                Scope::Loopback
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Scope::LinkLocal
            } else if v6.is_multicast() {
                Scope::Multicast
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Scope::Private
            } else {
                Scope::Global
            }
        }
    }
}

/// Parses `ip/bits` (the host bits may be set, as in `assignedAddresses`).
pub fn parse_net(text: &str) -> Option<IpNet> {
    text.trim().parse::<IpNet>().ok()
}

/// The node's own addresses on a network.
pub fn own_addresses(net: &Network) -> Vec<IpNet> {
    net.assigned_addresses
        .iter()
        .filter_map(|a| parse_net(a))
        .collect()
}

/// Applies README §A4 to every route of `net` (unparsable routes are dropped).
pub fn route_verdicts(net: &Network, ctx: RouteContext) -> Vec<RouteVerdict> {
    let own: Vec<IpAddr> = own_addresses(net).iter().map(IpNet::addr).collect();
    net.routes
        .iter()
        .filter_map(|r| {
            let target = parse_net(&r.target)?.trunc();
            let via = r
                .via
                .as_deref()
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            let refused = refusal(net, ctx, target, via, &own);
            Some(RouteVerdict {
                target,
                via,
                refused,
            })
        })
        .collect()
}

fn refusal(
    net: &Network,
    ctx: RouteContext,
    target: IpNet,
    via: Option<IpAddr>,
    own: &[IpAddr],
) -> Option<&'static str> {
    if net.status != "OK" {
        return Some("network status is not OK");
    }
    if !net.allow_managed {
        return Some("allowManaged is off");
    }
    if via.is_some_and(|v| own.contains(&v)) {
        return Some("via is this node's own address");
    }
    if target.prefix_len() == 0 {
        return if !net.allow_default {
            Some("default route needs allowDefault")
        } else if !ctx.allow_default_route {
            Some("default route needs zerotier.allow_default_route")
        } else if !ctx.online {
            Some("default route needs the node online")
        } else {
            None
        };
    }
    match scope(target.addr()) {
        Scope::None | Scope::Loopback | Scope::LinkLocal | Scope::Multicast => {
            Some("link-local, loopback or multicast target")
        }
        Scope::Global if !net.allow_global => Some("global target needs allowGlobal"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback HTTP server answering every request with `answer` (head and body); counts the
    /// requests that carried the auth header.
    async fn answering(answer: Vec<u8>) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tokens = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = tokens.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (answer, seen) = (answer.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut head = vec![0u8; 4096];
                    let n = s.read(&mut head).await.unwrap_or(0);
                    if String::from_utf8_lossy(&head[..n])
                        .to_ascii_lowercase()
                        .contains("x-zt1-auth")
                    {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = s.write_all(&answer).await;
                });
            }
        });
        (port, tokens)
    }

    fn token() -> AuthToken {
        AuthToken::new("secret-token-value").unwrap()
    }

    #[tokio::test]
    async fn answers_past_a_mebibyte_are_refused() {
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1024
        )
        .into_bytes();
        answer.resize(answer.len() + MAX_BODY + 1024, b' ');
        let (port, _) = answering(answer).await;
        let err = Client::new(port, &token())
            .unwrap()
            .poll()
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::TooLarge(_)), "{err}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed_with_the_token() {
        use std::sync::atomic::Ordering;
        let (elsewhere, carried) =
            answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec()).await;
        let redirect = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{elsewhere}/status\r\nContent-Length: 0\r\n\r\n"
        );
        let (port, _) = answering(redirect.into_bytes()).await;
        let err = Client::new(port, &token())
            .unwrap()
            .poll()
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::Status(302, _)), "{err}");
        assert_eq!(
            carried.load(Ordering::Relaxed),
            0,
            "the token went to the redirect target"
        );
    }

    #[test]
    fn listeners_are_read_from_the_kernel_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:26B9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  65534        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:26B9 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 100 0 0 10 0\n\
   2: 0A12C802:26B9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 3 1 0 100 0 0 10 0\n\
   3: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0\n";
        assert_eq!(
            port_owner::listeners(tcp, 9913),
            vec![65534],
            "loopback LISTEN only"
        );
        assert_eq!(port_owner::listeners(tcp, 80), vec![0]);
        let tcp6 = "  sl  local_address rem_address st ...\n\
   0: 00000000000000000000000001000000:26B9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  42 0 5\n";
        assert_eq!(port_owner::listeners(tcp6, 9913), vec![42]);
    }

    /// While ZeroTier is down any user can bind its port: a listener of another user never
    /// gets the token (nor a connection).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn a_listener_of_another_user_gets_no_token() {
        use std::os::unix::process::CommandExt as _;
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test runs a listener as another user (uid 65534): run it as root"
        );
        let script = "import socket,sys\n\
s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8)\n\
print(s.getsockname()[1], flush=True)\n\
c,_=s.accept(); print('GOT', c.recv(4096), flush=True)\n";
        // The system interpreter: uid 65534 cannot enter root's own toolchains.
        let python = ["/usr/bin/python3", "/bin/python3"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("python3");
        let mut child = std::process::Command::new(python)
            .args(["-c", script])
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let err = Client::new(port, &token())
            .unwrap()
            .poll()
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::Impostor { uid: 65534, .. }),
            "{err}"
        );
        let _ = child.kill();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        let _ = child.wait();
        assert!(!rest.contains("GOT"), "the impostor was contacted: {rest}");
    }

    const NETWORKS: &str = include_str!("testdata/network_list.json");
    const PEERS: &str = include_str!("testdata/peer_list.json");
    const STATUS: &str = include_str!("testdata/status.json");

    fn ctx(online: bool, allow: bool) -> RouteContext {
        RouteContext {
            online,
            allow_default_route: allow,
        }
    }

    #[test]
    fn documented_samples_parse() {
        let s: Status = serde_json::from_str(STATUS).unwrap();
        assert!(s.online && !s.tcp_fallback_active);
        assert_eq!(s.version, "1.14.1");
        let (nets, skipped) = parse_list::<Network>(NETWORKS.as_bytes()).unwrap();
        assert_eq!((nets.len(), skipped), (3, 0));
        assert_eq!(nets[0].port_device_name, "ztnnhrtimp");
        assert_eq!(nets[0].network_id(), "565799d8f620c5c5");
        assert_eq!(nets[2].status, "REQUESTING_CONFIGURATION");
        let (peers, _) = parse_list::<Peer>(PEERS.as_bytes()).unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[2].latency_ms(), None, "-1 is unknown");
        assert_eq!(peers[1].latency_ms(), Some(40));
    }

    #[test]
    fn tolerant_parsing() {
        let (nets, skipped) =
            parse_list::<Network>(br#"[{"id":"1","future":{"x":1}}, 7, {"routes":"bad"}]"#)
                .unwrap();
        assert_eq!((nets.len(), skipped), (1, 2));
        assert!(parse_list::<Network>(b"{}").is_err());
        assert!(parse_list::<Network>(b"<html>").is_err());
        let unknown: Peer = serde_json::from_str("{}").unwrap();
        assert_eq!(unknown.address, None, "200 {{}} is a missing peer");
    }

    #[test]
    fn direct_or_relayed() {
        let (peers, _) = parse_list::<Peer>(PEERS.as_bytes()).unwrap();
        assert!(peers[0].is_direct());
        assert!(peers[1].is_direct());
        assert!(!peers[2].is_direct(), "no paths: relayed");
        let mut p = peers[1].clone();
        p.tunneled = true;
        assert!(!p.is_direct(), "tunneled: relayed");
        let mut p = peers[1].clone();
        for path in &mut p.paths {
            path.preferred = false;
        }
        assert!(!p.is_direct(), "no preferred path: relayed");
    }

    #[test]
    fn route_rules() {
        let (nets, _) = parse_list::<Network>(NETWORKS.as_bytes()).unwrap();
        let usable = |n: &Network, c| {
            route_verdicts(n, c)
                .into_iter()
                .filter(|v| v.refused.is_none())
                .map(|v| v.target.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            usable(&nets[0], ctx(true, false)),
            ["10.147.20.0/24", "192.168.50.0/24"]
        );
        // The exit-node network: the default route needs allowDefault (set), the config and online.
        assert_eq!(usable(&nets[1], ctx(true, false)), ["172.27.0.0/16"]);
        assert_eq!(
            usable(&nets[1], ctx(true, true)),
            ["172.27.0.0/16", "0.0.0.0/0"]
        );
        assert_eq!(usable(&nets[1], ctx(false, true)), ["172.27.0.0/16"]);
        let mut n = nets[1].clone();
        n.allow_default = false;
        assert_eq!(usable(&n, ctx(true, true)), ["172.27.0.0/16"]);
        // Not OK: nothing.
        let mut n = nets[0].clone();
        n.status = "ACCESS_DENIED".into();
        assert!(usable(&n, ctx(true, true)).is_empty());
        // allowManaged off: nothing.
        let mut n = nets[0].clone();
        n.allow_managed = false;
        assert!(usable(&n, ctx(true, true)).is_empty());
        // Link-local, multicast, loopback, global without allowGlobal, via = own IP.
        let mut n = nets[0].clone();
        n.routes = [
            ("169.254.0.0/16", None),
            ("224.0.0.0/4", None),
            ("127.0.0.0/8", None),
            ("8.8.8.0/24", None),
            ("fe80::/64", None),
            ("10.9.0.0/16", Some("10.147.20.190")),
            ("10.8.0.0/16", Some("10.147.20.1")),
        ]
        .into_iter()
        .map(|(t, v)| RouteJson {
            target: t.into(),
            via: v.map(Into::into),
        })
        .collect();
        assert_eq!(usable(&n, ctx(true, true)), ["10.8.0.0/16"]);
        n.allow_global = true;
        assert_eq!(usable(&n, ctx(true, true)), ["8.8.8.0/24", "10.8.0.0/16"]);
    }
}
