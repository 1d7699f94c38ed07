//! What the system says about names: `/etc/hosts`, `/etc/resolv.conf`, and the per-link
//! server lists of systemd-resolved and systemd-networkd. Each is re-read when it may have
//! changed (the hosts file by its modification time, the rest every few seconds), so a new
//! DHCP lease or an edited hosts file is seen without a restart.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::Hosts;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RecordType};

use super::lock;

/// How often resolv.conf and the per-link lists are re-read, and the hosts file re-checked.
const REFRESH: Duration = Duration::from_secs(5);

/// `/etc/hosts`, re-read when its modification time changes (checked at most every
/// [`REFRESH`]).
pub(super) struct HostsFile {
    path: PathBuf,
    state: Mutex<HostsState>,
}

struct HostsState {
    checked: Option<Instant>,
    modified: Option<SystemTime>,
    hosts: Arc<Hosts>,
}

impl HostsFile {
    /// The system's hosts file.
    pub(super) fn system() -> Self {
        let path = if cfg!(windows) {
            PathBuf::from(r"C:\Windows\System32\drivers\etc\hosts")
        } else {
            PathBuf::from("/etc/hosts")
        };
        Self::at(path)
    }

    /// The hosts file at `path`.
    pub(super) fn at(path: PathBuf) -> Self {
        Self {
            path,
            state: Mutex::new(HostsState {
                checked: None,
                modified: None,
                hosts: Arc::new(Hosts::default()),
            }),
        }
    }

    fn current(&self) -> Arc<Hosts> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        if state
            .checked
            .is_none_or(|t| now.duration_since(t) >= REFRESH)
        {
            state.checked = Some(now);
            let modified = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if modified != state.modified || modified.is_none() {
                state.modified = modified;
                state.hosts = Arc::new(read_hosts(&self.path));
            }
        }
        state.hosts.clone()
    }

    /// `host`'s addresses in the hosts file (IPv6 first, each family in file order).
    pub(super) fn lookup(&self, host: &str) -> Option<Vec<IpAddr>> {
        let name = Name::from_ascii(host).ok()?;
        let hosts = self.current();
        let mut addrs = Vec::new();
        for record_type in [RecordType::AAAA, RecordType::A] {
            if let Some(lookup) = hosts.lookup_static_host(&Query::query(name.clone(), record_type))
            {
                addrs.extend(lookup.answers().iter().filter_map(|r| r.data.ip_addr()));
            }
        }
        (!addrs.is_empty()).then_some(addrs)
    }
}

fn read_hosts(path: &Path) -> Hosts {
    let mut hosts = Hosts::default();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = hosts.read_hosts_conf(file);
    }
    hosts
}

/// resolv.conf and the per-link lists, re-read every [`REFRESH`].
pub(super) struct SystemServers {
    state: Mutex<SystemState>,
}

#[derive(Default)]
struct SystemState {
    read: Option<Instant>,
    servers: Vec<IpAddr>,
    /// Per-link lists by interface index, each with when it was read.
    per_link: std::collections::HashMap<u32, (Instant, Vec<IpAddr>)>,
    domain: Option<Name>,
    search: Vec<Name>,
    ndots: usize,
}

impl SystemServers {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(SystemState::default()),
        }
    }

    fn refreshed(&self) -> std::sync::MutexGuard<'_, SystemState> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        if state.read.is_none_or(|t| now.duration_since(t) >= REFRESH) {
            state.read = Some(now);
            match hickory_resolver::system_conf::read_system_conf() {
                Ok((config, opts)) => {
                    let mut servers: Vec<IpAddr> = Vec::new();
                    for ns in config.name_servers() {
                        if !servers.contains(&ns.ip) {
                            servers.push(ns.ip);
                        }
                    }
                    state.servers = servers;
                    state.domain = config.domain().cloned();
                    state.search = config.search().to_vec();
                    state.ndots = opts.ndots;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "No system DNS configuration.");
                    state.servers.clear();
                    state.ndots = 1;
                }
            }
        }
        state
    }

    /// The servers for the interface with OS index `index`: its per-link list where the OS
    /// keeps one, else resolv.conf's.
    pub(super) fn servers_for(&self, index: u32) -> Vec<IpAddr> {
        let mut state = self.refreshed();
        let now = Instant::now();
        let fresh = state
            .per_link
            .get(&index)
            .filter(|(at, _)| now.duration_since(*at) < REFRESH)
            .map(|(_, list)| list.clone());
        let per_link = fresh.unwrap_or_else(|| {
            let list = per_link_servers(index);
            if state.per_link.len() > 64 {
                state.per_link.clear();
            }
            state.per_link.insert(index, (now, list.clone()));
            list
        });
        if !per_link.is_empty() {
            return per_link;
        }
        state.servers.clone()
    }

    /// resolv.conf's domain, search list and `ndots`.
    pub(super) fn search(&self) -> (Option<Name>, Vec<Name>, usize) {
        let state = self.refreshed();
        (
            state.domain.clone(),
            state.search.clone(),
            state.ndots.max(1),
        )
    }
}

/// The DNS servers systemd-resolved (`SERVERS=`) or systemd-networkd (`DNS=`) keeps for the
/// link with index `index`; empty where neither runs.
fn per_link_servers(index: u32) -> Vec<IpAddr> {
    if !cfg!(target_os = "linux") || index == 0 {
        return Vec::new();
    }
    for (path, key) in [
        (format!("/run/systemd/resolve/netif/{index}"), "SERVERS"),
        (format!("/run/systemd/netif/links/{index}"), "DNS"),
    ] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let found = parse_link_servers(&text, key);
            if !found.is_empty() {
                return found;
            }
        }
    }
    Vec::new()
}

/// The addresses on `key=` lines of a systemd link state file. Entries may carry a port
/// (`198.51.100.1:53`, `[2001:db8::1]:53`), an interface (`%3`) or a server name (`#dns.example`).
pub(super) fn parse_link_servers(text: &str, key: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(value) = line.strip_prefix(key).and_then(|r| r.strip_prefix('=')) else {
            continue;
        };
        for token in value.split_whitespace() {
            let token = token.split('#').next().unwrap_or_default();
            let token = token.split('%').next().unwrap_or_default();
            let ip = token
                .parse::<IpAddr>()
                .ok()
                .or_else(|| {
                    let inner = token.strip_prefix('[')?;
                    inner.split(']').next()?.parse().ok()
                })
                .or_else(|| {
                    token
                        .rsplit_once(':')?
                        .0
                        .parse::<std::net::Ipv4Addr>()
                        .ok()
                        .map(IpAddr::V4)
                });
            if let Some(ip) = ip
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_link_lists_are_read_in_every_spelling() {
        let text = "# This is private data. Do not parse.\nLLMNR=yes\n\
                    SERVERS=198.51.100.1 198.51.100.2:53 [2001:db8::53]:53 2001:db8::54%3 198.51.100.1#dns.example\n\
                    DOMAINS=lan\n";
        let ips: Vec<String> = parse_link_servers(text, "SERVERS")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ips,
            [
                "198.51.100.1",
                "198.51.100.2",
                "2001:db8::53",
                "2001:db8::54"
            ]
        );
        assert!(parse_link_servers(text, "DNS").is_empty());
        assert!(parse_link_servers("DNSSEC=no\n", "DNS").is_empty());
    }

    #[test]
    fn the_hosts_file_answers_both_families_and_sees_edits() {
        let dir = std::env::temp_dir().join(format!("netmix-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        std::fs::write(
            &path,
            "127.0.0.1 localhost\n198.19.0.7 nas.lan nas\n2001:db8::7 nas.lan\n198.19.0.8 nas.lan\n",
        )
        .unwrap();
        let hosts = HostsFile::at(path.clone());
        let found: Vec<String> = hosts
            .lookup("NAS.lan")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, ["2001:db8::7", "198.19.0.7", "198.19.0.8"]);
        assert_eq!(hosts.lookup("nas").map(|a| a.len()), Some(1));
        assert_eq!(hosts.lookup("other.example"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
