//! A stand-in for the ZeroTier One service's local API, and a "ZeroTier site" in the lab.
//!
//! The real service cannot be installed here, so [`StandIn`] serves what ZeroTier One 1.14
//! documents (`/work/shared/zerotier/README.md`), quirks included:
//!
//! - `GET /status`, `/network`, `/network/{16hex}`, `/peer`, `/peer/{10hex}`; compact JSON with
//!   keys in alphabetical order (serde_json's map is sorted);
//! - auth: header `X-ZT1-Auth`, else `?auth=`, else `Authorization: Bearer`. A present
//!   `X-ZT1-Auth` is the only one looked at (the service's `else if` chain). Failure: `401 {}`;
//! - unknown network `404 {}`; unknown peer `200 {}`; other paths `404 {}`; `/health` needs no
//!   token;
//! - peers' `latency` is `-1` when unknown; a relayed peer has no preferred path.
//!
//! It listens on `127.0.0.1` inside a namespace (the lab's client namespace, where netmix
//! runs) on a port of its own, and keeps a home folder with `zerotier-one.port` and
//! `authtoken.secret` as the service does. Tests change its state while netmix runs
//! ([`StandIn::set_status`], [`StandIn::set_peer_direct`], ...) and [`StandIn::restart`] it on
//! a new port with a new token. It runs on its own small runtime, so tests may block.
//!
//! [`ZtSite`] adds a third namespace to a [`Lab`]: a veth named like a ZeroTier device
//! (`ztlab0001`) from the client namespace to a "ZeroTier subnet" hosting a who-am-I server.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::lab::Lab;
use crate::ns::{in_ns, ip_n, netns_path, write_net_sysctl};
use crate::servers::SeenMap;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A 24-character `[a-z0-9]` token, different each call (like `authtoken.secret`).
pub fn new_token() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut x = nanos ^ (u128::from(std::process::id()) << 64) ^ (u128::from(n) << 96);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..24)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            alphabet[((x >> 64) % 36) as usize] as char
        })
        .collect()
}

/// A network object as `GET /network/{id}` returns it (every 1.14 field, keys sorted).
pub fn network_json(
    id: &str,
    device: &str,
    status: &str,
    assigned: &[&str],
    routes: &[(&str, Option<&str>)],
) -> Value {
    let configured = status != "REQUESTING_CONFIGURATION";
    json!({
        "allowDNS": false, "allowDefault": false, "allowGlobal": false, "allowManaged": true,
        "assignedAddresses": if configured { assigned.to_vec() } else { Vec::new() },
        "bridge": false, "broadcastEnabled": true, "dhcp": false,
        "dns": {"domain": "", "servers": []},
        "id": id, "mac": "e6:d2:2b:e6:68:73", "mtu": 2800,
        "multicastSubscriptions": [{"adi": 0, "mac": "ff:ff:ff:ff:ff:ff"}],
        "name": if configured { "lab_net" } else { "" },
        "netconfRevision": if configured { 3 } else { 0 }, "nwid": id,
        "portDeviceName": device, "portError": 0,
        "routes": if configured {
            routes.iter().map(|(t, v)| json!({"flags": 0, "metric": 0, "target": t, "via": v})).collect()
        } else { Vec::new() },
        "status": status, "type": "PRIVATE"
    })
}

/// A peer object as `GET /peer/{addr}` returns it: direct (one preferred path) or relayed (no
/// path); `latency` `None` is the service's `-1`.
pub fn peer_json(address: &str, role: &str, latency: Option<u32>, direct: bool) -> Value {
    let paths: Vec<Value> = if direct {
        vec![
            json!({"active": true, "address": "203.0.113.9/9993", "expired": false,
            "lastReceive": 1_618_955_164_580_u64, "lastSend": 1_618_955_164_596_u64,
            "localPort": 9993, "localSocket": 94_001_234, "preferred": true, "trustedPathId": 0}),
        ]
    } else {
        Vec::new()
    };
    let (version, major, minor, rev) = if role == "PLANET" {
        ("-1.-1.-1", -1, -1, -1)
    } else {
        ("1.14.1", 1, 14, 1)
    };
    json!({
        "address": address, "isBonded": false,
        "latency": latency.map_or(-1, i64::from),
        "paths": paths, "role": role, "tunneled": false,
        "version": version, "versionMajor": major, "versionMinor": minor, "versionRev": rev
    })
}

/// What the stand-in serves; tests change it through [`StandIn`].
#[derive(Debug)]
struct State {
    token: String,
    status: Value,
    networks: Vec<Value>,
    peers: Vec<Value>,
}

/// The stand-in ZeroTier One API (see the module docs). Stopped, and its home removed, on drop.
pub struct StandIn {
    runtime: Option<Runtime>,
    state: Arc<Mutex<State>>,
    ns: String,
    home: PathBuf,
    port: u16,
    accept: Option<JoinHandle<()>>,
    requests: Arc<AtomicU64>,
    unauthorized: Arc<AtomicU64>,
}

impl StandIn {
    /// Starts it inside namespace `ns` with no network and no peer, online, and writes
    /// `zerotier-one.port` and `authtoken.secret` into a fresh home folder.
    pub fn start(ns: &str) -> StandIn {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let home = std::env::temp_dir().join(format!("netmix-zt-home-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).expect("create stand-in home");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zt-standin")
            .enable_all()
            .build()
            .expect("stand-in runtime");
        let status = json!({
            "address": "0deadbeef1", "clock": 1_618_948_931_097_u64,
            "config": {"settings": {"allowTcpFallbackRelay": true, "forceTcpRelay": false,
                "homeDir": home.display().to_string(), "listeningOn": [], "portMappingEnabled": true,
                "primaryPort": 0, "secondaryPort": 0, "softwareUpdate": "disable",
                "softwareUpdateChannel": "release", "surfaceAddresses": [], "tertiaryPort": 0}},
            "online": true, "planetWorldId": 149_604_618, "planetWorldTimestamp": 1_618_339_625_163_u64,
            "publicIdentity": "0deadbeef1:0:690b", "tcpFallbackActive": false,
            "version": "1.14.1", "versionBuild": 0, "versionMajor": 1, "versionMinor": 14, "versionRev": 1
        });
        let mut s = StandIn {
            runtime: Some(runtime),
            state: Arc::new(Mutex::new(State {
                token: new_token(),
                status,
                networks: Vec::new(),
                peers: Vec::new(),
            })),
            ns: ns.to_owned(),
            home,
            port: 0,
            accept: None,
            requests: Arc::default(),
            unauthorized: Arc::default(),
        };
        s.listen();
        s
    }

    /// Binds a new port, serves it, and rewrites the home's port and token files.
    fn listen(&mut self) {
        let std = in_ns(&self.ns, || {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind stand-in");
            l.set_nonblocking(true).expect("nonblocking");
            l
        });
        self.port = std.local_addr().expect("local addr").port();
        {
            let mut st = self.state.lock().expect("state");
            st.status["config"]["settings"]["primaryPort"] = json!(self.port);
            std::fs::write(self.home.join("authtoken.secret"), &st.token).expect("write token");
        }
        std::fs::write(self.home.join("zerotier-one.port"), self.port.to_string())
            .expect("write port");
        let state = self.state.clone();
        let (requests, unauthorized) = (self.requests.clone(), self.unauthorized.clone());
        let rt = self.runtime.as_ref().expect("runtime");
        self.accept = Some(rt.spawn(async move {
            let listener = TcpListener::from_std(std).expect("tokio listener");
            while let Ok((sock, _)) = listener.accept().await {
                let (state, requests, unauthorized) =
                    (state.clone(), requests.clone(), unauthorized.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, state, requests, unauthorized).await;
                });
            }
        }));
    }

    /// Stops listening, then comes back on a new port with a new token (files rewritten), as
    /// a restarted service does.
    pub fn restart(&mut self) {
        if let Some(h) = self.accept.take() {
            h.abort();
        }
        // Let the aborted task drop its listener before the old port is assumed closed.
        std::thread::sleep(std::time::Duration::from_millis(50));
        self.state.lock().expect("state").token = new_token();
        self.listen();
    }

    /// The home folder (`zerotier-one.port`, `authtoken.secret`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The port it listens on now.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The current token.
    pub fn token(&self) -> String {
        self.state.lock().expect("state").token.clone()
    }

    /// Requests served so far (any answer).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests refused with 401 so far.
    pub fn unauthorized(&self) -> u64 {
        self.unauthorized.load(Ordering::Relaxed)
    }

    /// Adds a network, or replaces the one with the same id.
    pub fn put_network(&self, network: Value) {
        let mut st = self.state.lock().expect("state");
        let id = network["id"].clone();
        st.networks.retain(|n| n["id"] != id);
        st.networks.push(network);
    }

    /// Changes a network's `status` field (the rest stays as it is).
    pub fn set_status(&self, id: &str, status: &str) {
        let mut st = self.state.lock().expect("state");
        for n in st.networks.iter_mut().filter(|n| n["id"] == id) {
            n["status"] = json!(status);
        }
    }

    /// Adds a peer, or replaces the one with the same address.
    pub fn put_peer(&self, peer: Value) {
        let mut st = self.state.lock().expect("state");
        let address = peer["address"].clone();
        st.peers.retain(|p| p["address"] != address);
        st.peers.push(peer);
    }

    /// Makes a peer direct (one preferred path, `latency`) or relayed (no path, latency -1).
    pub fn set_peer_direct(&self, address: &str, direct: bool, latency: Option<u32>) {
        let role = {
            let st = self.state.lock().expect("state");
            st.peers
                .iter()
                .find(|p| p["address"] == address)
                .and_then(|p| p["role"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "LEAF".to_owned())
        };
        self.put_peer(peer_json(address, &role, latency, direct));
    }

    /// Sets `/status` `online` and `tcpFallbackActive`.
    pub fn set_online(&self, online: bool, tcp_fallback: bool) {
        let mut st = self.state.lock().expect("state");
        st.status["online"] = json!(online);
        st.status["tcpFallbackActive"] = json!(tcp_fallback);
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// One request: head only (the API's GETs have no body), then one answer, then close.
async fn serve(
    mut sock: TcpStream,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicU64>,
    unauthorized: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    requests.fetch_add(1, Ordering::Relaxed);
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (code, body) = answer(method, path, query, &headers, &state, &unauthorized);
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(response.as_bytes()).await?;
    sock.shutdown().await
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn answer(
    method: &str,
    path: &str,
    query: &str,
    headers: &HashMap<String, String>,
    state: &Mutex<State>,
    unauthorized: &AtomicU64,
) -> (u16, Value) {
    let st = state.lock().expect("state");
    if path == "/health" {
        return (
            200,
            json!({"clock": 0, "online": st.status["online"], "version": "1.14.1"}),
        );
    }
    // The service's chain: X-ZT1-Auth if present (nothing else is looked at), else ?auth=,
    // else Authorization: Bearer.
    let authorized = if let Some(h) = headers.get("x-zt1-auth") {
        *h == st.token
    } else if let Some(a) = query.split('&').find_map(|kv| kv.strip_prefix("auth=")) {
        a == st.token
    } else if let Some(b) = headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        b.trim() == st.token
    } else {
        false
    };
    if !authorized {
        unauthorized.fetch_add(1, Ordering::Relaxed);
        return (401, json!({}));
    }
    if method != "GET" {
        return (404, json!({}));
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["status"] => (200, st.status.clone()),
        ["network"] => (200, Value::Array(st.networks.clone())),
        ["network", id] if is_hex(id, 16) => st
            .networks
            .iter()
            .find(|n| n["id"] == *id)
            .map_or((404, json!({})), |n| (200, n.clone())),
        ["peer"] => (200, Value::Array(st.peers.clone())),
        // Unknown peer: 200 with {} (the quirk).
        ["peer", a] if is_hex(a, 10) => (
            200,
            st.peers
                .iter()
                .find(|p| p["address"] == *a)
                .cloned()
                .unwrap_or_else(|| json!({})),
        ),
        _ => (404, json!({})),
    }
}

// === The ZeroTier site ===

/// A third namespace reached from the lab's client namespace over a veth named like a
/// ZeroTier device, hosting a "ZeroTier subnet" `198.18.{octet}.0/24`:
///
/// ```text
///  client ns: {dev} 198.18.{octet}.2/24 ── veth ── site ns: zt0 198.18.{octet}.1/24,
///             table 250: 198.18.{octet}.0/24 dev {dev}        lo 198.18.{octet}.10 (who-am-I :9)
///             rules: from 198.18.{octet}.2, oif {dev} → 250
/// ```
///
/// The connected route also sits in the client's main table, as a ZeroTier route does. Torn
/// down on drop.
pub struct ZtSite {
    ns: String,
    /// Client-side device (`ztlab0001`).
    pub dev: String,
    /// The client's address on it.
    pub client_addr: Ipv4Addr,
    /// The who-am-I server inside the subnet.
    pub server: SocketAddr,
    /// The subnet, `198.18.{octet}.0/24`.
    pub subnet: String,
    seen: SeenMap,
    runtime: Option<Runtime>,
}

impl ZtSite {
    /// Builds the site for `lab` (see the type docs).
    pub fn new(lab: &Lab, dev: &str, octet: u8) -> ZtSite {
        let ns = format!("{}z", lab.client_ns());
        if netns_path(&ns).exists() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .expect("ip netns add");
        assert!(ok.success(), "ip netns add {ns}");
        let site = ZtSite {
            ns: ns.clone(),
            dev: dev.to_owned(),
            client_addr: Ipv4Addr::new(198, 18, octet, 2),
            server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, octet, 10)), 9),
            subnet: format!("198.18.{octet}.0/24"),
            seen: SeenMap::default(),
            runtime: None,
        };
        let c = lab.client_ns();
        ip_n(&ns, "link set lo up");
        ip_n(
            c,
            &format!("link add {dev} type veth peer name zt0 netns {ns}"),
        );
        for (n, d) in [(c, dev), (ns.as_str(), "zt0")] {
            in_ns(n, || {
                for key in ["all", "default", d] {
                    write_net_sysctl(&format!("ipv4.conf.{key}.rp_filter"), "0");
                }
            });
        }
        ip_n(c, &format!("addr add 198.18.{octet}.2/24 dev {dev}"));
        ip_n(&ns, &format!("addr add 198.18.{octet}.1/24 dev zt0"));
        ip_n(&ns, &format!("addr add 198.18.{octet}.10/32 dev lo"));
        ip_n(&ns, "link set zt0 up");
        ip_n(c, &format!("link set {dev} up"));
        ip_n(
            c,
            &format!("route add 198.18.{octet}.0/24 dev {dev} table 250"),
        );
        ip_n(c, &format!("rule add from 198.18.{octet}.2 lookup 250"));
        ip_n(c, &format!("rule add oif {dev} lookup 250"));
        site.start_server()
    }

    fn start_server(mut self) -> ZtSite {
        let std = in_ns(&self.ns, || {
            let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, self.server.port()))
                .expect("bind site who-am-I");
            l.set_nonblocking(true).expect("nonblocking");
            l
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zt-site")
            .enable_all()
            .build()
            .expect("site runtime");
        let seen = self.seen.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(std).expect("tokio listener");
            while let Ok((mut sock, peer)) = listener.accept().await {
                *seen.lock().expect("seen").entry(peer.ip()).or_default() += 1;
                tokio::spawn(async move {
                    let _ = sock.write_all(format!("{}\n", peer.ip()).as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        self.runtime = Some(runtime);
        self
    }

    /// Connections the site's server accepted, per source address.
    pub fn seen(&self) -> HashMap<IpAddr, u64> {
        self.seen.lock().expect("seen").clone()
    }

    /// All connections the site's server accepted.
    pub fn seen_total(&self) -> u64 {
        self.seen().values().sum()
    }
}

impl Drop for ZtSite {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
