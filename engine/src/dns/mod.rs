//! Name resolution through the interfaces (`[dns] mode = "netmix"`, the default).
//!
//! A name a client sends is looked up in `/etc/hosts` first, then in the answer cache (each
//! answer kept for its TTL), and only then asked of DNS servers: through the interface the
//! strategy picked first, to that interface's servers, with the next interface raced after
//! `[dns] stagger_ms` (and at once when a query fails), so a link that is up but dead costs one
//! stagger rather than a resolver timeout. Every query's socket is bound to its interface like
//! a connection's. A query that fails while another interface answered the same name counts
//! against its interface, as a failed connect would (passive health).
//!
//! Which servers an interface asks, first that applies: its `[[interface]] dns` list, `[dns]
//! servers`, the per-link list systemd-resolved or systemd-networkd keeps for it
//! (`/run/systemd/resolve/netif/<index>`, `/run/systemd/netif/links/<index>`), the system's
//! `/etc/resolv.conf`. A loopback server (a local stub such as systemd-resolved's 127.0.0.53)
//! cannot be reached through an interface, so it is asked over loopback, once per name.
//!
//! The DNS protocol itself (queries, retries over TCP on truncation, answer parsing, TTLs) is
//! hickory-resolver's; this module decides where each query goes.

mod cache;
mod servers;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::runtime::{
    RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime,
};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, DnsMode, InterfaceFilter};
use crate::iface::bind::{ConnectError, bound_socket, bound_udp_socket_on};
use crate::iface::{InterfaceState, Outcome, Source};
use crate::router::Member;

pub use cache::Cache;
use servers::SystemServers;

/// What a name resolved to, and where the answer came from.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The addresses, in the order to try them (IPv6 first where the name has both).
    pub addrs: Vec<IpAddr>,
    /// Who answered.
    pub source: AnswerSource,
}

/// Where an [`Answer`] came from.
#[derive(Debug, Clone)]
pub enum AnswerSource {
    /// The name was an address.
    Literal,
    /// `/etc/hosts`.
    Hosts,
    /// The answer cache.
    Cache,
    /// A DNS server asked through this interface.
    Interface(Member),
    /// A DNS server on loopback (a local stub resolver).
    Loopback,
    /// The operating system's resolver.
    System,
}

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A DNS server said the name does not exist, or has no address.
    NotFound,
    /// No path answered: every query failed or the deadline passed (the reasons, per path),
    /// and the interfaces whose own path failed.
    Unanswered(String, Vec<u32>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("name not found"),
            Self::Unanswered(why, _) => write!(f, "no DNS answer ({why})"),
        }
    }
}

/// The resolver every connection task shares.
pub struct Dns {
    mode: DnsMode,
    stagger: Duration,
    timeout: Duration,
    cache_size: usize,
    global: Vec<IpAddr>,
    filter: InterfaceFilter,
    cache: Mutex<Cache>,
    hosts: servers::HostsFile,
    system: SystemServers,
    /// One hickory resolver per interface, rebuilt when its addresses or servers change.
    resolvers: Mutex<std::collections::HashMap<u32, Built>>,
    /// The resolver for loopback servers.
    loopback: Mutex<Option<(Vec<IpAddr>, Arc<LoopbackResolver>)>>,
}

/// hickory's resolver with its own sockets, for servers on loopback.
type LoopbackResolver = Resolver<TokioRuntimeProvider>;

struct Built {
    key: (Vec<ipnet::IpNet>, Vec<IpAddr>),
    resolver: Arc<Resolver<Bound>>,
}

/// Where one query goes.
enum Path {
    Interface(Member, Arc<Resolver<Bound>>),
    Loopback(Arc<LoopbackResolver>),
}

impl Path {
    fn name(&self) -> &str {
        match self {
            Self::Interface(m, _) => &m.state.name,
            Self::Loopback(_) => "loopback",
        }
    }

    async fn one(&self, name: String, v6: bool) -> Result<Lookup, NetError> {
        match (self, v6) {
            (Self::Interface(_, r), true) => r.ipv6_lookup(name).await,
            (Self::Interface(_, r), false) => r.ipv4_lookup(name).await,
            (Self::Loopback(r), true) => r.ipv6_lookup(name).await,
            (Self::Loopback(r), false) => r.ipv4_lookup(name).await,
        }
    }

    /// Asks for the AAAA and the A records at once and judges the two answers together: one
    /// family's records are an answer even when the other family's query failed.
    async fn lookup(&self, name: String) -> Said {
        let (v6, v4) = tokio::join!(self.one(name.clone(), true), self.one(name, false));
        Said::combine(Said::of(v6), Said::of(v4))
    }
}

/// What one path said about a name.
#[derive(Debug)]
enum Said {
    /// Addresses, valid until then.
    Addrs(Vec<IpAddr>, std::time::Instant),
    /// The server says the name does not exist or has no address of this kind.
    NoName,
    /// A server answered, but not usefully (SERVFAIL, REFUSED, …): the path works.
    Inconclusive(String),
    /// No answer came back: the path failed.
    Failed(String),
}

impl Said {
    fn of(result: Result<Lookup, NetError>) -> Self {
        match result {
            Ok(lookup) => {
                let addrs: Vec<IpAddr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| r.data.ip_addr())
                    .collect();
                if addrs.is_empty() {
                    Self::NoName
                } else {
                    Self::Addrs(addrs, lookup.valid_until())
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no)))
                if matches!(
                    no.response_code,
                    ResponseCode::NXDomain | ResponseCode::NoError
                ) =>
            {
                Self::NoName
            }
            Err(e @ NetError::Dns(_)) => Self::Inconclusive(e.to_string()),
            Err(e) => Self::Failed(e.to_string()),
        }
    }

    /// The AAAA answer and the A answer, as one: addresses when either has some (IPv6
    /// first), else a failure when either query failed, else no name when both say so.
    fn combine(v6: Self, v4: Self) -> Self {
        match (v6, v4) {
            (Self::Addrs(mut a, t1), Self::Addrs(b, t2)) => {
                a.extend(b);
                Self::Addrs(a, t1.min(t2))
            }
            (a @ Self::Addrs(..), _) | (_, a @ Self::Addrs(..)) => a,
            (f @ Self::Failed(_), _) | (_, f @ Self::Failed(_)) => f,
            (Self::NoName, Self::NoName) => Self::NoName,
            (i @ Self::Inconclusive(_), _) | (_, i @ Self::Inconclusive(_)) => i,
        }
    }
}

impl Dns {
    /// The resolver for `config`'s `[dns]` and `[[interface]] dns`.
    pub fn new(config: &Config) -> Self {
        let d = &config.dns;
        Self {
            mode: d.mode,
            stagger: Duration::from_millis(d.stagger_ms),
            timeout: Duration::from_millis(d.timeout_ms),
            cache_size: d.cache_size,
            global: d.servers.clone(),
            filter: InterfaceFilter::new(config),
            cache: Mutex::new(Cache::new(d.cache_size)),
            hosts: servers::HostsFile::system(),
            system: SystemServers::new(),
            resolvers: Mutex::new(std::collections::HashMap::new()),
            loopback: Mutex::new(None),
        }
    }

    /// `[dns] mode`.
    pub fn mode(&self) -> DnsMode {
        self.mode
    }

    /// The answer `/etc/hosts` or the cache has for `host`, without a query; an address
    /// spelled as a name (`::1`, `[::1]`, and the numeric forms `inet_aton` takes: `0`,
    /// `127.1`, `0x7f.0.0.1`) is that address, as the system's resolver would say.
    pub fn local_answer(&self, host: &str) -> Option<Answer> {
        if let Some(ip) = literal(host) {
            return Some(Answer {
                addrs: vec![ip],
                source: AnswerSource::Literal,
            });
        }
        if let Some(addrs) = self.hosts.lookup(host) {
            return Some(Answer {
                addrs,
                source: AnswerSource::Hosts,
            });
        }
        let addrs = lock(&self.cache).get(host, std::time::Instant::now())?;
        Some(Answer {
            addrs,
            source: AnswerSource::Cache,
        })
    }

    /// Resolves `host`: `/etc/hosts`, the cache, then DNS queries through `order` (the
    /// strategy's order; when empty, every interface that is present), raced after the
    /// stagger, within `deadline`. In `system` mode, the operating system's resolver.
    ///
    /// # Errors
    /// [`Failure::NotFound`] when a server said so, otherwise [`Failure::Unanswered`].
    pub async fn resolve(
        &self,
        host: &str,
        order: &[Member],
        present: &[Member],
        deadline: Duration,
    ) -> Result<Answer, Failure> {
        if self.mode == DnsMode::System {
            return system_lookup(host, deadline).await;
        }
        if let Some(answer) = self.local_answer(host) {
            return Ok(answer);
        }
        let paths = self.paths(if order.is_empty() { present } else { order }, present);
        if paths.is_empty() {
            // Nothing to ask through (no interface, no server known): the system's resolver.
            return system_lookup(host, deadline).await;
        }
        let (answer, valid_until) = self.race(host, paths, deadline).await?;
        lock(&self.cache).insert(host, &answer.addrs, valid_until);
        Ok(answer)
    }

    /// The servers `iface` asks (see the module docs), loopback ones included.
    pub fn servers_for(&self, iface: &InterfaceState) -> Vec<IpAddr> {
        if let Some(list) = self
            .filter
            .settings(&iface.name)
            .map(|s| &s.dns)
            .filter(|l| !l.is_empty())
        {
            return list.clone();
        }
        if !self.global.is_empty() {
            return self.global.clone();
        }
        self.system.servers_for(iface.index)
    }

    /// The query paths for `members`, in order: each interface with a server it reaches,
    /// and loopback (once) where the servers are local. A server inside an interface's
    /// on-link subnet (the Wi-Fi router's 192.168.1.1) is asked only through that interface:
    /// through another link it would fail, count against a healthy link, and tell the
    /// carrier the LAN's names.
    fn paths(&self, members: &[Member], present: &[Member]) -> Vec<Path> {
        let on_link_elsewhere = |ip: &IpAddr, me: &Member| {
            present.iter().chain(members).any(|other| {
                other.state.id != me.state.id
                    && other
                        .state
                        .addrs
                        .iter()
                        .any(|n| n.prefix_len() < n.max_prefix_len() && n.contains(ip))
            }) && !me
                .state
                .addrs
                .iter()
                .any(|n| n.prefix_len() < n.max_prefix_len() && n.contains(ip))
        };
        let mut paths = Vec::new();
        let mut loopback_added = false;
        for member in members {
            let servers = self.servers_for(&member.state);
            let (local, remote): (Vec<IpAddr>, Vec<IpAddr>) =
                servers.into_iter().partition(IpAddr::is_loopback);
            let reachable: Vec<IpAddr> = remote
                .into_iter()
                .filter(|ip| member.state.source_for(&SocketAddr::new(*ip, 53)).is_some())
                .filter(|ip| !on_link_elsewhere(ip, member))
                .collect();
            if !reachable.is_empty() {
                paths.push(Path::Interface(
                    member.clone(),
                    self.interface_resolver(member, reachable),
                ));
            } else if !local.is_empty() && !loopback_added {
                loopback_added = true;
                paths.push(Path::Loopback(self.loopback_resolver(local)));
            }
        }
        paths
    }

    fn interface_resolver(&self, member: &Member, servers: Vec<IpAddr>) -> Arc<Resolver<Bound>> {
        let key = (member.state.addrs.clone(), servers);
        let mut resolvers = lock(&self.resolvers);
        // Interfaces that are gone (ids are never reused) take their resolver with them; the
        // map holds at most the interfaces asked through lately.
        if resolvers.len() > 32 {
            resolvers.clear();
        }
        if let Some(built) = resolvers.get(&member.state.id)
            && built.key == key
        {
            return built.resolver.clone();
        }
        let provider = Bound {
            state: member.state.clone(),
            handle: TokioHandle::default(),
        };
        let resolver = Arc::new(self.build(&key.1, provider));
        resolvers.insert(
            member.state.id,
            Built {
                key,
                resolver: resolver.clone(),
            },
        );
        resolver
    }

    fn loopback_resolver(&self, servers: Vec<IpAddr>) -> Arc<LoopbackResolver> {
        let mut slot = lock(&self.loopback);
        if let Some((key, resolver)) = slot.as_ref()
            && *key == servers
        {
            return resolver.clone();
        }
        let resolver = Arc::new(self.build(&servers, TokioRuntimeProvider::default()));
        *slot = Some((servers, resolver.clone()));
        resolver
    }

    fn build<P: RuntimeProvider>(&self, servers: &[IpAddr], provider: P) -> Resolver<P> {
        let (domain, search, ndots) = self.system.search();
        let config = ResolverConfig::from_parts(
            domain,
            search,
            servers
                .iter()
                .map(|ip| NameServerConfig::udp_and_tcp(*ip))
                .collect(),
        );
        let mut builder = Resolver::builder_with_config(config, provider);
        let opts = builder.options_mut();
        opts.timeout = self.timeout;
        opts.attempts = 1;
        opts.ndots = ndots;
        opts.ip_strategy = LookupIpStrategy::Ipv6AndIpv4;
        // Our own cache (shared by every interface) and hosts file come first; hickory's
        // cache only keeps negative answers and the per-type records between them.
        opts.cache_size = self.cache_size.min(256) as u64;
        opts.use_hosts_file = ResolveHosts::Never;
        builder
            .build()
            .expect("a resolver with plain UDP/TCP servers always builds")
    }

    /// Asks `paths` in order, the next one after the stagger or at once when one has no
    /// answer for the name; the first addresses win. A server that says the name does not
    /// exist only ends the race when every path has answered (split DNS: a LAN name only the
    /// LAN's server knows). Queries still out after a win go on in the background, and those
    /// that fail count against their interface (another answered the name: the path is at
    /// fault).
    async fn race(
        &self,
        host: &str,
        paths: Vec<Path>,
        deadline: Duration,
    ) -> Result<(Answer, std::time::Instant), Failure> {
        let until = Instant::now() + deadline;
        let paths: Vec<Arc<Path>> = paths.into_iter().map(Arc::new).collect();
        let mut next = 0;
        let mut running: JoinSet<(usize, Said)> = JoinSet::new();
        let mut failed: Vec<(usize, String)> = Vec::new();
        let mut no_name = false;
        let launch = |running: &mut JoinSet<_>, i: usize| {
            let path = paths[i].clone();
            let name = host.to_owned();
            running.spawn(async move { (i, path.lookup(name).await) });
        };
        launch(&mut running, next);
        next += 1;
        loop {
            let stagger = tokio::time::sleep(self.stagger);
            tokio::select! {
                Some(joined) = running.join_next() => {
                    let Ok((i, said)) = joined else { continue };
                    match said {
                        Said::Addrs(addrs, valid_until) => {
                            let source = match &*paths[i] {
                                Path::Interface(m, _) => AnswerSource::Interface(m.clone()),
                                Path::Loopback(_) => AnswerSource::Loopback,
                            };
                            for (j, why) in &failed {
                                count_against(&paths[*j], why);
                            }
                            let paths = paths.clone();
                            tokio::spawn(async move {
                                while let Some(Ok((j, said))) = running.join_next().await {
                                    if let Said::Failed(why) = said {
                                        count_against(&paths[j], &why);
                                    }
                                }
                            });
                            return Ok((Answer { addrs, source }, valid_until));
                        }
                        Said::NoName => no_name = true,
                        Said::Inconclusive(why) => {
                            tracing::debug!(host, via = paths[i].name(), why, "DNS answer without addresses.");
                        }
                        Said::Failed(why) => {
                            tracing::debug!(host, via = paths[i].name(), why, "DNS query failed.");
                            failed.push((i, why));
                        }
                    }
                    if next < paths.len() {
                        launch(&mut running, next);
                        next += 1;
                    } else if running.is_empty() {
                        return Err(if no_name {
                            Failure::NotFound
                        } else {
                            Failure::Unanswered(describe(&paths, &failed), failed_ids(&paths, &failed))
                        });
                    }
                }
                () = stagger, if next < paths.len() => {
                    launch(&mut running, next);
                    next += 1;
                }
                () = tokio::time::sleep_until(until) => {
                    if no_name {
                        return Err(Failure::NotFound);
                    }
                    return Err(Failure::Unanswered(format!(
                        "{} after {} ms",
                        if failed.is_empty() { "no answer".to_owned() } else { describe(&paths, &failed) },
                        deadline.as_millis()
                    ), failed_ids(&paths, &failed)));
                }
            }
        }
    }
}

/// The interfaces whose own query failed.
fn failed_ids(paths: &[Arc<Path>], failed: &[(usize, String)]) -> Vec<u32> {
    failed
        .iter()
        .filter_map(|(i, _)| match &*paths[*i] {
            Path::Interface(m, _) => Some(m.state.id),
            Path::Loopback(_) => None,
        })
        .collect()
}

/// `host` as an address: an IP literal (IPv6 with or without brackets), or an IPv4 address in
/// one of the numeric forms `inet_aton` accepts (1 to 4 parts, each decimal, octal with a
/// leading 0, or hex with 0x; the last part fills the remaining bytes).
pub fn literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix == 16 {
            return None;
        }
        // `from_str_radix` takes a leading `+`; inet_aton does not.
        if !digits.bytes().all(|b| (b as char).is_digit(radix)) {
            return None;
        }
        values.push(if digits.is_empty() {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        });
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - leading.len() as u32);
    if rest_bits < 32 && *last >= 1 << rest_bits {
        return None;
    }
    let mut addr: u32 = 0;
    for (i, v) in leading.iter().enumerate() {
        addr |= v << (24 - 8 * i as u32);
    }
    addr |= last;
    Some(IpAddr::V4(std::net::Ipv4Addr::from(addr)))
}

fn count_against(path: &Path, why: &str) {
    if let Path::Interface(member, _) = path {
        tracing::debug!(iface = %member.state.name, why, "DNS query failed while another interface answered; counted against the link.");
        member.handles.failed(Source::Connection, Outcome::Failed);
    }
}

fn describe(paths: &[Arc<Path>], failed: &[(usize, String)]) -> String {
    failed
        .iter()
        .map(|(i, why)| format!("{}: {why}", paths[*i].name()))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn system_lookup(host: &str, deadline: Duration) -> Result<Answer, Failure> {
    match tokio::time::timeout(deadline, tokio::net::lookup_host((host, 0))).await {
        Err(_) => Err(Failure::Unanswered(
            "the system resolver timed out".to_owned(),
            Vec::new(),
        )),
        Ok(Err(_)) => Err(Failure::NotFound),
        Ok(Ok(found)) => {
            let addrs: Vec<IpAddr> = found.map(|a| a.ip()).collect();
            if addrs.is_empty() {
                Err(Failure::NotFound)
            } else {
                Ok(Answer {
                    addrs,
                    source: AnswerSource::System,
                })
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// hickory's sockets, bound to one interface like a connection's.
#[derive(Clone)]
struct Bound {
    state: Arc<InterfaceState>,
    handle: TokioHandle,
}

fn into_io(error: ConnectError) -> io::Error {
    match error {
        ConnectError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

type BoxFuture<T> = Pin<Box<dyn Send + std::future::Future<Output = io::Result<T>>>>;

impl RuntimeProvider for Bound {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = tokio::net::UdpSocket;
    type Tcp = AsyncIoTokioAsStd<TcpStream>;

    fn create_handle(&self) -> Self::Handle {
        self.handle.clone()
    }

    fn connect_tcp(
        &self,
        server: SocketAddr,
        _bind_addr: Option<SocketAddr>,
        wait_for: Option<Duration>,
    ) -> BoxFuture<Self::Tcp> {
        let state = self.state.clone();
        Box::pin(async move {
            let socket = bound_socket(&state, server).map_err(into_io)?;
            let wait_for = wait_for.unwrap_or(Duration::from_secs(5));
            match tokio::time::timeout(wait_for, socket.connect(server)).await {
                Ok(stream) => Ok(AsyncIoTokioAsStd(stream?)),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "DNS over TCP: connect timed out",
                )),
            }
        })
    }

    fn bind_udp(&self, local: SocketAddr, server: SocketAddr) -> BoxFuture<Self::Udp> {
        let state = self.state.clone();
        Box::pin(async move { bound_udp_socket_on(&state, server, local.port()).map_err(into_io) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_families_judged_together() {
        let t = std::time::Instant::now();
        let addrs = |ips: &[&str]| Said::Addrs(ips.iter().map(|i| i.parse().unwrap()).collect(), t);
        let failed = || Said::Failed("timed out".into());
        let servfail = || Said::Inconclusive("SERVFAIL".into());
        // One family's records are an answer, whatever the other family's query did.
        assert!(
            matches!(Said::combine(Said::NoName, addrs(&["198.19.0.1"])), Said::Addrs(a, _) if a.len() == 1)
        );
        assert!(matches!(
            Said::combine(failed(), addrs(&["198.19.0.1"])),
            Said::Addrs(..)
        ));
        match Said::combine(addrs(&["2001:db8::1"]), addrs(&["198.19.0.1"])) {
            Said::Addrs(a, _) => assert_eq!(a[0].to_string(), "2001:db8::1", "IPv6 first"),
            other => panic!("{other:?}"),
        }
        // A lost A query with an AAAA "no such record" is the path's failure, not "no name".
        assert!(matches!(
            Said::combine(Said::NoName, failed()),
            Said::Failed(_)
        ));
        assert!(matches!(
            Said::combine(Said::NoName, Said::NoName),
            Said::NoName
        ));
        // A server that answered SERVFAIL works: not counted as a failed path.
        assert!(matches!(
            Said::combine(servfail(), Said::NoName),
            Said::Inconclusive(_)
        ));
    }

    #[test]
    fn addresses_spelled_as_names_are_those_addresses() {
        let v4 = |s: &str| literal(s).map(|ip| ip.to_string());
        for (name, want) in [
            ("0", Some("0.0.0.0")),
            ("127.1", Some("127.0.0.1")),
            ("0x7f.0.0.1", Some("127.0.0.1")),
            ("0177.0.0.1", Some("127.0.0.1")),
            ("2130706433", Some("127.0.0.1")),
            ("10.1.65535", Some("10.1.255.255")),
            ("198.19.0.1", Some("198.19.0.1")),
            ("::1", Some("::1")),
            ("[::ffff:127.0.0.1]", Some("::ffff:127.0.0.1")),
            ("256.0.0.1", None),
            ("10.1.65536", None),
            ("1.2.3.4.5", None),
            ("09", None),
            ("0x", None),
            ("example.com", None),
            ("1.2.3.", None),
            ("+127.0.0.1", None),
            ("0x+7f", None),
        ] {
            assert_eq!(v4(name).as_deref(), want, "{name}");
        }
    }
}
