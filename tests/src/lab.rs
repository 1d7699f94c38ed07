//! Namespaces, links and faults.
//!
//! A [`Lab`] owns two network namespaces, named uniquely per process and per lab
//! (`nmx{pid % 10000}n{counter}c` for the client, `...i` for the internet), and removes them
//! on drop together with `/etc/netns/<client>/` and any `lab-delay` helpers.
//!
//! Link `k` is a veth pair `wan{k}` (client, `198.18.{10+k}.2/24`) ↔ `up{k}` (internet,
//! `198.18.{10+k}.1/24`). The client namespace has no default route in its main table; each
//! link has table `100+k` with `default via 198.18.{10+k}.1 dev wan{k}` and the rules
//! `from 198.18.{10+k}.2 lookup 100+k` and `oif wan{k} lookup 100+k`. rp_filter is off
//! everywhere. The target address `198.19.0.1/32` sits on the internet namespace's `lo`, and
//! so does the DNS server's, [`DNS_SERVER`] `198.19.0.53/32` (see [`crate::dns_server`]).
//!
//! **IPv6**, on every link, always: `wan{k}` also has `2001:db8:{10+k}::2/64` and `up{k}`
//! `2001:db8:{10+k}::1/64` (no DAD, usable at once; kept while a link is down,
//! `keep_addr_on_down`), with the same policy routing (`ip -6 rule` `from
//! 2001:db8:{10+k}::2` and `oif wan{k}` → table `100+k`, `default via 2001:db8:{10+k}::1`
//! there). The v6 target [`TARGET6`] `2001:db8:ffff::1/128` and [`DNS_SERVER6`]
//! `2001:db8:ffff::53/128` are on the internet namespace's `lo`; it reaches the clients
//! through its on-link /64s. Faults (down, blackhole, delay) apply to both families.
//!
//! One difference between the families is the kernel's, not the lab's: an *unbound* IPv6
//! socket does get out even without a main-table default route. Linux picks its source
//! address first (RFC 6724, among all the namespace's addresses; on a tie the first link's,
//! `wan0`'s, wins) and routes again from that address, which then matches that link's
//! `from` rule. Unbound IPv4 sockets get `ENETUNREACH`.
//!
//! **Main-table default routes** are opt-in ([`Lab::set_main_default_routes`]): then the
//! client namespace looks like a real multi-homed machine, `default via 198.18.{10+k}.1 dev
//! wan{k} metric 100·(k+1)` (and the v6 equivalent) for every link, so that unbound sockets
//! (a resolver following `/etc/resolv.conf`, see [`Lab::set_resolv_conf`]) leave through the
//! lowest-metric link that still has its route.
//!
//! **Delay** (no netem in this kernel): packets *entering the internet namespace* through
//! `up{k}` (client → internet direction) go to NFQUEUE `k` (`iptables -t raw PREROUTING`),
//! where the `lab-delay` helper, started inside the internet namespace, holds each one for
//! the link's whole `delay_ms` before accepting it. The reverse direction is not delayed, so
//! the round-trip time and the TCP connect time both rise by ≈ `delay_ms`.
//!
//! **Rate**: `tc qdisc add dev X root tbf rate {R}mbit burst 64kb latency 50ms` on both ends.
//!
//! **Processes and sockets inside the lab**: see [`crate::ns`]; [`Lab::in_client`],
//! [`Lab::connect_via`], [`Lab::connect_client`], [`Lab::udp_client`],
//! [`Lab::connect_from_inet`] and [`Lab::exec_client`] are the shortcuts.

use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::dns_server::{DNS_SERVER, DNS_SERVER6};
use crate::ns::{command_in, host, in_ns, ip_n, netns_path, run_in, sh_words, write_net_sysctl};

/// The address every target server listens on, on the internet namespace's `lo`.
pub const TARGET: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

/// The target servers' IPv6 address, `2001:db8:ffff::1`, on the internet namespace's `lo`.
pub const TARGET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// Panics unless the process runs as root (euid 0). Every lab entry point calls it: the lab
/// never skips silently.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test needs root (CAP_NET_ADMIN) to build network namespaces; \
             run the test suite as root"
        );
    }
}

/// How one uplink behaves. `LinkSpec::default()` is a plain, fast, undelayed link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkSpec {
    /// Rate limit in Mbit/s (tbf on both veth ends); `None` = unlimited.
    pub rate_mbit: Option<u32>,
    /// Added round-trip delay in ms (applied client → internet); `None` = none.
    pub delay_ms: Option<u32>,
}

impl LinkSpec {
    /// A link with neither rate limit nor delay.
    pub const fn plain() -> LinkSpec {
        LinkSpec {
            rate_mbit: None,
            delay_ms: None,
        }
    }

    /// The same link, limited to `mbit` Mbit/s.
    pub const fn rate(self, mbit: u32) -> LinkSpec {
        LinkSpec {
            rate_mbit: Some(mbit),
            ..self
        }
    }

    /// The same link, with `ms` of added round-trip delay.
    pub const fn delay(self, ms: u32) -> LinkSpec {
        LinkSpec {
            delay_ms: Some(ms),
            ..self
        }
    }
}

/// One uplink of the lab, as built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Index `k` of the link.
    pub index: usize,
    /// Client-side device, `wan{k}`.
    pub dev: String,
    /// Internet-side device, `up{k}`.
    pub peer_dev: String,
    /// `198.18.{10+k}.2`: the source address of connections through this link.
    pub client_addr: Ipv4Addr,
    /// `198.18.{10+k}.1`: the gateway.
    pub peer_addr: Ipv4Addr,
    /// `2001:db8:{10+k}::2`: the IPv6 source address of connections through this link.
    pub client_addr6: Ipv6Addr,
    /// `2001:db8:{10+k}::1`: the IPv6 gateway.
    pub peer_addr6: Ipv6Addr,
    /// Policy routing table, `100+k`.
    pub table: u32,
    /// What it was built with.
    pub spec: LinkSpec,
}

impl Link {
    /// The link's client address of `dst`'s family ([`Link::client_addr`] or
    /// [`Link::client_addr6`]): the source of a connection to `dst` through this link.
    pub fn client_addr_for(&self, dst: IpAddr) -> IpAddr {
        match dst {
            IpAddr::V4(_) => IpAddr::V4(self.client_addr),
            IpAddr::V6(_) => IpAddr::V6(self.client_addr6),
        }
    }

    /// The link's gateway of `dst`'s family.
    pub fn peer_addr_for(&self, dst: IpAddr) -> IpAddr {
        match dst {
            IpAddr::V4(_) => IpAddr::V4(self.peer_addr),
            IpAddr::V6(_) => IpAddr::V6(self.peer_addr6),
        }
    }
}

/// A client namespace with N uplinks into an internet namespace; see the module docs.
/// Everything is torn down on drop.
pub struct Lab {
    client: String,
    inet: String,
    links: Vec<Link>,
    /// `lab-delay` helpers, killed on drop.
    helpers: Mutex<Vec<Child>>,
    /// Whether [`Lab::set_main_default_routes`] was called (links added or brought up later
    /// get theirs too).
    main_defaults: AtomicBool,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
static LAB_DELAY_BIN: OnceLock<PathBuf> = OnceLock::new();

/// Tells the lab where the `lab-delay` helper is. Integration tests of this package should
/// call `set_lab_delay_bin(env!("CARGO_BIN_EXE_lab-delay"))`; otherwise the lab uses
/// `$NETMIX_LAB_DELAY` or looks next to the test binary (`<target>/<profile>/lab-delay`).
pub fn set_lab_delay_bin(path: impl Into<PathBuf>) {
    let _ = LAB_DELAY_BIN.set(path.into());
}

fn lab_delay_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETMIX_LAB_DELAY") {
        return PathBuf::from(p);
    }
    if let Some(p) = LAB_DELAY_BIN.get() {
        return p.clone();
    }
    // <target>/<profile>/deps/<test binary> → <target>/<profile>/lab-delay
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("test binary has a directory");
    let candidates = [dir.join("lab-delay"), dir.join("../lab-delay")];
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "lab-delay helper not found (looked at {candidates:?}); build it with \
         `cargo build -p netmix-integration --bin lab-delay` or set NETMIX_LAB_DELAY"
    );
}

impl Lab {
    /// Builds a lab with one uplink per spec.
    pub fn new(specs: &[LinkSpec]) -> Lab {
        require_root();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("nmx{}n{n}", std::process::id() % 10_000);
        let mut lab = Lab {
            client: format!("{base}c"),
            inet: format!("{base}i"),
            links: Vec::new(),
            helpers: Mutex::new(Vec::new()),
            main_defaults: AtomicBool::new(false),
        };
        // From here on a panic drops `lab`, which cleans up whatever was built.
        for ns in [lab.client.clone(), lab.inet.clone()] {
            if netns_path(&ns).exists() {
                // Left over by an earlier process with the same pid; it is not ours any more.
                let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            }
            host(&["ip", "netns", "add", &ns]);
            ip_n(&ns, "link set lo up");
            in_ns(&ns, || {
                for key in ["all", "default", "lo"] {
                    write_net_sysctl(&format!("ipv4.conf.{key}.rp_filter"), "0");
                    write_net_sysctl(&format!("ipv6.conf.{key}.disable_ipv6"), "0");
                }
            });
        }
        let i = &lab.inet;
        ip_n(i, &format!("addr add {TARGET}/32 dev lo"));
        ip_n(i, &format!("addr add {DNS_SERVER}/32 dev lo"));
        ip_n(i, &format!("-6 addr add {TARGET6}/128 dev lo nodad"));
        ip_n(i, &format!("-6 addr add {DNS_SERVER6}/128 dev lo nodad"));
        for spec in specs {
            lab.add_link(*spec);
        }
        lab
    }

    /// A lab with `n` plain links.
    pub fn with_links(n: usize) -> Lab {
        Lab::new(&vec![LinkSpec::plain(); n])
    }

    /// Adds one more uplink (index = the previous number of links), also while things run.
    pub fn add_link(&mut self, spec: LinkSpec) -> usize {
        let k = self.links.len();
        assert!(k < 200, "too many links");
        let octet = u8::try_from(10 + k).expect("link index fits the addressing scheme");
        let link = Link {
            index: k,
            dev: format!("wan{k}"),
            peer_dev: format!("up{k}"),
            client_addr: Ipv4Addr::new(198, 18, octet, 2),
            peer_addr: Ipv4Addr::new(198, 18, octet, 1),
            client_addr6: link_addr6(k, 2),
            peer_addr6: link_addr6(k, 1),
            table: 100 + k as u32,
            spec,
        };
        let (c, i) = (&self.client.clone(), &self.inet.clone());
        let (dev, peer) = (&link.dev.clone(), &link.peer_dev.clone());
        ip_n(
            c,
            &format!("link add {dev} type veth peer name {peer} netns {i}"),
        );
        for (ns, d) in [(c, dev), (i, peer)] {
            in_ns(ns, || {
                write_net_sysctl(&format!("ipv4.conf.{d}.rp_filter"), "0");
                write_net_sysctl(&format!("ipv6.conf.{d}.disable_ipv6"), "0");
                // No DAD (the link-local address is usable at once too), and a link taken
                // down keeps its v6 address as it keeps its v4 one.
                write_net_sysctl(&format!("ipv6.conf.{d}.accept_dad"), "0");
                write_net_sysctl(&format!("ipv6.conf.{d}.keep_addr_on_down"), "1");
            });
        }
        ip_n(c, &format!("addr add {}/24 dev {dev}", link.client_addr));
        ip_n(i, &format!("addr add {}/24 dev {peer}", link.peer_addr));
        ip_n(
            c,
            &format!("-6 addr add {}/64 dev {dev} nodad", link.client_addr6),
        );
        ip_n(
            i,
            &format!("-6 addr add {}/64 dev {peer} nodad", link.peer_addr6),
        );
        ip_n(i, &format!("link set {peer} up"));
        ip_n(c, &format!("link set {dev} up"));
        let table = link.table;
        ip_n(
            c,
            &format!("rule add from {} lookup {table}", link.client_addr),
        );
        ip_n(c, &format!("rule add oif {dev} lookup {table}"));
        ip_n(
            c,
            &format!("-6 rule add from {} lookup {table}", link.client_addr6),
        );
        ip_n(c, &format!("-6 rule add oif {dev} lookup {table}"));
        self.links.push(link);
        self.restore_route(k);

        if let Some(rate) = spec.rate_mbit {
            for (ns, d) in [(c, dev), (i, peer)] {
                let tbf = format!("rate {rate}mbit burst 64kb latency 50ms");
                sh_words(ns, &format!("tc qdisc add dev {d} root tbf {tbf}"));
            }
        }
        if let Some(ms) = spec.delay_ms {
            self.start_delay(k, ms);
        }
        k
    }

    /// Starts `lab-delay` on NFQUEUE `k` in the internet namespace, waits until it has bound
    /// the queue, then steers packets entering through `up{k}` into it.
    fn start_delay(&self, k: usize, ms: u32) {
        let bin = lab_delay_bin();
        let bin = bin.to_str().expect("utf-8 path");
        let queue = k.to_string();
        let mut child = command_in(&self.inet, &[bin, &queue, &ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("lab-delay for link {k} did not start: {line}{err}");
        }
        self.helpers.lock().expect("helpers lock").push(child);
        let peer = self.links[k].peer_dev.as_str();
        let rule = format!("-t raw -A PREROUTING -i {peer} -j NFQUEUE --queue-num {queue}");
        for tool in ["iptables", "ip6tables"] {
            sh_words(&self.inet, &format!("{tool} -w {rule}"));
        }
    }

    /// (Re-)installs the default routes (v4 and v6) of link `k`'s table, and its main-table
    /// default routes if [`Lab::set_main_default_routes`] was called.
    fn restore_route(&self, k: usize) {
        let l = &self.links[k];
        let c = &self.client;
        let (dev, table) = (&l.dev, l.table);
        ip_n(
            c,
            &format!(
                "route replace default via {} dev {dev} table {table} onlink",
                l.peer_addr
            ),
        );
        ip_n(
            c,
            &format!(
                "-6 route replace default via {} dev {dev} table {table} onlink",
                l.peer_addr6
            ),
        );
        if self.main_defaults.load(Ordering::SeqCst) {
            let metric = Lab::main_metric(k);
            ip_n(
                c,
                &format!(
                    "route replace default via {} dev {dev} metric {metric} onlink",
                    l.peer_addr
                ),
            );
            ip_n(
                c,
                &format!(
                    "-6 route replace default via {} dev {dev} metric {metric} onlink",
                    l.peer_addr6
                ),
            );
        }
    }

    /// The metric of link `k`'s main-table default routes: `100 * (k + 1)`.
    pub fn main_metric(k: usize) -> u32 {
        100 * (k as u32 + 1)
    }

    /// Makes the client namespace a real multi-homed machine: installs in its main table
    /// `default via 198.18.{10+k}.1 dev wan{k} metric 100·(k+1)` and `default via
    /// 2001:db8:{10+k}::1 dev wan{k} metric 100·(k+1)` for every link (link 0: metric 100,
    /// link 1: 200, …), so that an unbound socket leaves through the lowest-metric link.
    /// From then on, links added later and links brought up again ([`Lab::set_link_up`]) get
    /// theirs too. Delete one with e.g. `ip route del default via 198.18.10.1 dev wan0 metric
    /// 100` (through [`Lab::exec_client`]).
    pub fn set_main_default_routes(&self) {
        self.main_defaults.store(true, Ordering::SeqCst);
        for k in 0..self.links.len() {
            self.restore_route(k);
        }
    }

    /// Name of the client namespace (where netmix runs).
    pub fn client_ns(&self) -> &str {
        &self.client
    }

    /// Name of the internet namespace (where the target servers live).
    pub fn inet_ns(&self) -> &str {
        &self.inet
    }

    /// Link `k`; panics if there is no such link.
    pub fn link(&self, k: usize) -> &Link {
        self.links
            .get(k)
            .unwrap_or_else(|| panic!("the lab has {} links, not {}", self.links.len(), k + 1))
    }

    /// All links, in index order.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The target servers' address, 198.19.0.1.
    pub fn target(&self) -> Ipv4Addr {
        TARGET
    }

    /// The target servers' IPv6 address, 2001:db8:ffff::1.
    pub fn target6(&self) -> Ipv6Addr {
        TARGET6
    }

    /// Which link a connection with source address `ip` (as seen by a server) came through:
    /// the link's v4 or v6 client address (also as an IPv4-mapped IPv6 address).
    pub fn link_for_source(&self, ip: IpAddr) -> Option<usize> {
        let ip = ip.to_canonical();
        self.links
            .iter()
            .position(|l| IpAddr::V4(l.client_addr) == ip || IpAddr::V6(l.client_addr6) == ip)
    }

    /// Takes link `k` down on the client side (its routes vanish with it).
    pub fn set_link_down(&self, k: usize) {
        let dev = &self.link(k).dev;
        ip_n(&self.client, &format!("link set {dev} down"));
    }

    /// Brings link `k` back up and restores its table's default routes (v4 and v6, and the
    /// main-table ones if [`Lab::set_main_default_routes`] was called).
    pub fn set_link_up(&self, k: usize) {
        let dev = &self.link(k).dev;
        ip_n(&self.client, &format!("link set {dev} up"));
        self.restore_route(k);
    }

    /// Silently drops every packet (IPv4 and IPv6) on link `k`, in both directions
    /// (`on = true`), or stops. The link stays up, so connections through it hang rather
    /// than fail.
    pub fn blackhole(&self, k: usize, on: bool) {
        let l = self.link(k);
        for (ns, dev) in [(&self.client, &l.dev), (&self.inet, &l.peer_dev)] {
            let op = if on {
                "-I PREROUTING 1"
            } else {
                "-D PREROUTING"
            };
            for tool in ["iptables", "ip6tables"] {
                sh_words(ns, &format!("{tool} -w -t raw {op} -i {dev} -j DROP"));
            }
        }
    }

    /// Writes `/etc/netns/<client>/hosts` (with `localhost` entries first), which processes
    /// started through `ip netns exec <client>` (the engine, curl) see as `/etc/hosts`.
    pub fn set_hosts(&self, entries: &[(&str, IpAddr)]) {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (name, ip) in entries {
            text.push_str(&format!("{ip} {name}\n"));
        }
        self.write_netns_file("hosts", &text);
    }

    /// Writes `/etc/netns/<client>/resolv.conf`, which processes started through `ip netns
    /// exec <client>` (the engine, curl, getent) see as `/etc/resolv.conf`: one `nameserver`
    /// line per address, in order, then `options timeout:2 attempts:1`. (Threads of the test
    /// process inside the namespace, [`Lab::in_client`], still see the host's file.)
    pub fn set_resolv_conf(&self, nameservers: &[IpAddr]) {
        let mut text = String::new();
        for ns in nameservers {
            text.push_str(&format!("nameserver {ns}\n"));
        }
        text.push_str("options timeout:2 attempts:1\n");
        self.write_netns_file("resolv.conf", &text);
    }

    /// Writes `/etc/netns/<client>/<name>`.
    fn write_netns_file(&self, name: &str, text: &str) {
        let dir = Path::new("/etc/netns").join(&self.client);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Runs a command inside the client namespace; output whatever the exit status.
    pub fn exec_client(&self, args: &[&str]) -> Output {
        run_in(&self.client, args)
    }

    /// Runs a command inside the internet namespace; output whatever the exit status.
    pub fn exec_inet(&self, args: &[&str]) -> Output {
        run_in(&self.inet, args)
    }

    /// Runs `f` on a thread inside the client namespace; see [`in_ns`].
    pub fn in_client<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        in_ns(&self.client, f)
    }

    /// Runs `f` on a thread inside the internet namespace; see [`in_ns`].
    pub fn in_inet<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        in_ns(&self.inet, f)
    }

    /// The fastest of three TCP connects to `dst` through link `k`, in milliseconds (best of
    /// three, so a scheduling hiccup does not make an undelayed link look slow); panics when
    /// one fails.
    pub fn fastest_connect_ms(&self, k: usize, dst: SocketAddr, timeout: Duration) -> f64 {
        (0..3)
            .map(|_| {
                let start = std::time::Instant::now();
                let s = self
                    .connect_via(k, dst, timeout)
                    .unwrap_or_else(|e| panic!("connect to {dst} through link {k}: {e}"));
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                drop(s);
                ms
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// A blocking TCP connect from the client namespace to `dst` through link `k`: the
    /// socket is bound to `wan{k}` (`SO_BINDTODEVICE`) and to the link's source address of
    /// `dst`'s family (v4 or v6).
    pub fn connect_via(
        &self,
        k: usize,
        dst: SocketAddr,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let l = self.link(k);
        let src = SocketAddr::new(l.client_addr_for(dst.ip()), 0);
        self.in_client(|| connect_std(Some((&l.dev, src)), dst, timeout))
    }

    /// A blocking UDP socket in the client namespace for talking to `dst` through link `k`:
    /// bound to `wan{k}` (`SO_BINDTODEVICE`) and to the link's source address of `dst`'s
    /// family, any port. Not connected.
    pub fn udp_via(&self, k: usize, dst: IpAddr) -> UdpSocket {
        let l = self.link(k);
        let src = SocketAddr::new(l.client_addr_for(dst), 0);
        self.in_client(|| {
            let sock = Socket::new(Domain::for_address(src), Type::DGRAM, Some(Protocol::UDP))?;
            sock.bind_device(Some(l.dev.as_bytes()))?;
            sock.bind(&SockAddr::from(src))?;
            Ok::<UdpSocket, io::Error>(sock.into())
        })
        .unwrap_or_else(|e| panic!("UDP socket on {} ({src}): {e}", l.dev))
    }

    /// A blocking TCP connect from the client namespace bound to nothing. To a v4 address it
    /// fails unless [`Lab::set_main_default_routes`] was called (by default the client
    /// namespace has no default route in its main table); to a v6 address it leaves through
    /// the link whose address the kernel picks as the source (see the module docs).
    pub fn connect_unbound(&self, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        self.in_client(|| connect_std(None, dst, timeout))
    }

    /// A tokio TCP connection made from inside the client namespace, e.g. to the proxy at
    /// `127.0.0.1:<port>`; panics if it cannot connect within 5 s.
    pub async fn connect_client(&self, addr: SocketAddr) -> tokio::net::TcpStream {
        self.try_connect_client(addr, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("connect to {addr} in {}: {e}", self.client))
    }

    /// Like [`Lab::connect_client`] but returns the error.
    pub async fn try_connect_client(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<tokio::net::TcpStream> {
        connect_tokio_in(&self.client, addr, timeout).await
    }
}

impl Lab {
    /// A tokio UDP socket on `127.0.0.1` (any port) inside the client namespace, where
    /// netmix's UDP relays are.
    pub fn udp_client(&self) -> tokio::net::UdpSocket {
        let std = self.in_client(|| {
            let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP client");
            s.set_nonblocking(true).expect("nonblocking UDP socket");
            s
        });
        tokio::net::UdpSocket::from_std(std).expect("tokio UDP socket (inside a runtime)")
    }

    /// A tokio TCP connection to `dst` made from inside the internet namespace with source
    /// address `source` (one of that namespace's, e.g. [`TARGET`]), as a target host connecting
    /// back to a BIND.
    pub async fn connect_from_inet(
        &self,
        source: IpAddr,
        dst: SocketAddr,
        timeout: Duration,
    ) -> io::Result<tokio::net::TcpStream> {
        let ns = self.inet.clone();
        let std = tokio::task::spawn_blocking(move || {
            in_ns(&ns, || {
                let sock =
                    Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
                sock.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
                sock.connect_timeout(&SockAddr::from(dst), timeout)?;
                Ok::<TcpStream, io::Error>(sock.into())
            })
        })
        .await
        .map_err(io::Error::other)??;
        std.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(std)
    }
}

/// `2001:db8:{10+k}::{host}`: link `k`'s IPv6 addresses (the group is `10+k` written in
/// decimal digits, read as hex, mirroring the v4 `198.18.{10+k}.x`).
fn link_addr6(k: usize, host: u16) -> Ipv6Addr {
    let group = u16::from_str_radix(&(10 + k).to_string(), 16).expect("link index fits");
    Ipv6Addr::new(0x2001, 0xdb8, group, 0, 0, 0, 0, host)
}

/// A tokio TCP connection to `addr` made from inside namespace `ns` (the connect itself runs
/// on a blocking thread, so the caller's runtime is never stalled).
pub async fn connect_tokio_in(
    ns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let ns = ns.to_owned();
    let std = tokio::task::spawn_blocking(move || in_ns(&ns, || connect_std(None, addr, timeout)))
        .await
        .map_err(io::Error::other)??;
    std.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std)
}

/// A blocking connect in the calling thread's namespace, optionally bound to a device and
/// source address.
fn connect_std(
    bind: Option<(&str, SocketAddr)>,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    if let Some((dev, src)) = bind {
        sock.bind_device(Some(dev.as_bytes()))?;
        sock.bind(&SockAddr::from(src))?;
    }
    sock.connect_timeout(&SockAddr::from(dst), timeout)?;
    Ok(sock.into())
}

impl Drop for Lab {
    fn drop(&mut self) {
        let helpers = match self.helpers.get_mut() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        for child in helpers.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client, &self.inet] {
            let out = Command::new("ip").args(["netns", "del", ns]).output();
            if let Ok(out) = out
                && !out.status.success()
                && netns_path(ns).exists()
            {
                eprintln!(
                    "lab: could not delete namespace {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
    }
}
