//! One look at the machine's interfaces (if-addrs), grouped by name and judged by the config's
//! filters. Pure apart from the `if_addrs` call, so `netmix interfaces` and the Discovery actor
//! share it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{Exclusion, InterfaceFilter};

/// What kind of link an interface is, guessed from its name (and, on Linux, sysfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceKind {
    /// Ethernet, Wi-Fi.
    Physical,
    /// A phone or modem: USB tethering, RNDIS, WWAN.
    Tether,
    /// VPNs, bridges, veth pairs, tunnels.
    Virtual,
    /// A ZeroTier virtual network (`zt…`).
    ZeroTier,
    /// The loopback interface (never used).
    Loopback,
}

impl InterfaceKind {
    /// Guesses the kind from the name, the way the OS names them.
    pub fn guess(name: &str, is_loopback: bool) -> Self {
        const TETHER: [&str; 5] = ["usb", "rndis", "wwan", "ww", "rmnet"];
        const VIRTUAL: [&str; 10] = [
            "tun", "tap", "wg", "veth", "docker", "br", "virbr", "vnet", "utun", "vmnet",
        ];
        if is_loopback || name == "lo" {
            Self::Loopback
        } else if name.starts_with("zt") || name.starts_with("feth") || name.starts_with("ZeroTier")
        {
            Self::ZeroTier
        } else if TETHER.iter().any(|p| name.starts_with(p)) || name.starts_with("Cellular") {
            Self::Tether
        } else if VIRTUAL.iter().any(|p| name.starts_with(p))
            || [
                "vEthernet",
                "VirtualBox",
                "VMware",
                "OpenVPN",
                "Tailscale",
                "WireGuard",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        {
            Self::Virtual
        } else {
            Self::Physical
        }
    }

    /// Lower-case name for tables and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Physical => "physical",
            Self::Tether => "tether",
            Self::Virtual => "virtual",
            Self::ZeroTier => "zerotier",
            Self::Loopback => "loopback",
        }
    }
}

/// One interface as a scan saw it (all its addresses together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedInterface {
    /// OS name (`eth0`, `wlan0`, `Ethernet 2`).
    pub name: String,
    /// OS interface index (0 when unknown).
    pub index: u32,
    /// Usable unicast addresses (IPv6 link-local left out: they cannot reach the internet).
    pub addrs: Vec<IpNet>,
    /// Operationally up (Linux: IFF_RUNNING).
    pub up: bool,
    /// Loopback interface.
    pub loopback: bool,
    /// Kind guessed from the name.
    pub kind: InterfaceKind,
    /// `Ok` when the config lets netmix use it, otherwise why not.
    pub eligible: Result<(), Exclusion>,
}

impl ScannedInterface {
    /// Would the router get this interface right now, and if not, why.
    pub fn usable(&self) -> Result<(), String> {
        self.eligible.clone().map_err(|e| e.to_string())?;
        if !self.up {
            return Err("link down".into());
        }
        if self.addrs.is_empty() {
            return Err("no usable address".into());
        }
        Ok(())
    }
}

/// Lists the machine's interfaces, one entry per name, sorted by index then name.
///
/// # Errors
/// When the OS refuses to list interfaces.
pub fn scan(filter: &InterfaceFilter) -> std::io::Result<Vec<ScannedInterface>> {
    let mut by_name: BTreeMap<String, ScannedInterface> = BTreeMap::new();
    for entry in if_addrs::get_if_addrs()? {
        let loopback = entry.is_loopback();
        let ip = entry.ip();
        let prefix = match &entry.addr {
            if_addrs::IfAddr::V4(v4) => v4.prefixlen,
            if_addrs::IfAddr::V6(v6) => v6.prefixlen,
        };
        let net = IpNet::new(ip, prefix).unwrap_or_else(|_| IpNet::from(ip));
        // Windows names an adapter twice: `name` is its friendly name (`Wi-Fi`), and the
        // internal `{GUID}` name may be what a config names; either matches.
        #[cfg(windows)]
        let names = [entry.name.as_str(), entry.adapter_name.as_str()];
        #[cfg(not(windows))]
        let names = [entry.name.as_str()];
        let scanned = by_name
            .entry(entry.name.clone())
            .or_insert_with(|| ScannedInterface {
                kind: InterfaceKind::guess(&entry.name, loopback),
                eligible: filter.check_names(&names, loopback),
                name: entry.name.clone(),
                index: entry.index.unwrap_or(0),
                addrs: Vec::new(),
                up: false,
                loopback,
            });
        scanned.up |= entry.is_oper_up();
        // Some entries carry no index (Wine's IPv6 ones): take it from any that does.
        if scanned.index == 0 {
            scanned.index = entry.index.unwrap_or(0);
        }
        if !is_link_local(ip) && !scanned.addrs.contains(&net) {
            scanned.addrs.push(net);
        }
    }
    let mut list: Vec<_> = by_name.into_values().collect();
    list.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
    Ok(list)
}

/// [`scan`] plus the interfaces that have no IP address at all (a tether just plugged in,
/// before DHCP answers; a link that is down), which an address listing leaves out. For
/// `netmix interfaces`: discovery only needs what can carry traffic. The same filters judge
/// them.
///
/// # Errors
/// When the OS refuses to list interfaces.
pub fn scan_with_addressless(filter: &InterfaceFilter) -> std::io::Result<Vec<ScannedInterface>> {
    let mut list = scan(filter)?;
    for (index, name) in all_names() {
        if list.iter().any(|i| i.name == name) {
            continue;
        }
        let flags = sysfs(&name, "flags")
            .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok());
        let loopback = flags.is_some_and(|f| f & IFF_LOOPBACK != 0) || name == "lo";
        // IFF_RUNNING as getifaddrs reports it: administratively up, operationally up (or
        // "unknown", as drivers without carrier detection say).
        let up = flags.is_some_and(|f| f & IFF_UP != 0)
            && sysfs(&name, "operstate").is_some_and(|s| s == "up" || s == "unknown");
        list.push(ScannedInterface {
            kind: InterfaceKind::guess(&name, loopback),
            eligible: filter.check(&name, loopback),
            index,
            addrs: Vec::new(),
            up,
            loopback,
            name,
        });
    }
    list.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
    Ok(list)
}

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// Every interface's index and name, with or without addresses.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn all_names() -> Vec<(u32, String)> {
    match nix::net::if_::if_nameindex() {
        Ok(list) => list
            .iter()
            .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "if_nameindex failed; listing addressed interfaces only.");
            Vec::new()
        }
    }
}

/// Not listed on this platform (only interfaces with an address are shown).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn all_names() -> Vec<(u32, String)> {
    Vec::new()
}

/// `/sys/class/net/<name>/<attr>`, trimmed (Linux; `None` elsewhere or when unreadable).
fn sysfs(name: &str, attr: &str) -> Option<String> {
    if name.contains('/') || name.starts_with('.') {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/{attr}")).ok()?;
    Some(text.trim().to_owned())
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_names() {
        assert_eq!(InterfaceKind::guess("eth0", false), InterfaceKind::Physical);
        assert_eq!(
            InterfaceKind::guess("wlp2s0", false),
            InterfaceKind::Physical
        );
        assert_eq!(
            InterfaceKind::guess("ztabcdef12", false),
            InterfaceKind::ZeroTier
        );
        assert_eq!(InterfaceKind::guess("usb0", false), InterfaceKind::Tether);
        assert_eq!(InterfaceKind::guess("wg0", false), InterfaceKind::Virtual);
        assert_eq!(InterfaceKind::guess("lo", true), InterfaceKind::Loopback);
        // Windows friendly names.
        assert_eq!(
            InterfaceKind::guess("Wi-Fi", false),
            InterfaceKind::Physical
        );
        assert_eq!(
            InterfaceKind::guess("Ethernet 2", false),
            InterfaceKind::Physical
        );
        assert_eq!(
            InterfaceKind::guess("ZeroTier One [8056c2e21c000001]", false),
            InterfaceKind::ZeroTier
        );
        assert_eq!(
            InterfaceKind::guess("vEthernet (WSL)", false),
            InterfaceKind::Virtual
        );
        assert_eq!(
            InterfaceKind::guess("Cellular", false),
            InterfaceKind::Tether
        );
    }

    #[test]
    fn the_full_listing_holds_every_addressed_interface_too() {
        let filter = InterfaceFilter::new(&crate::config::Config::default());
        let addressed = scan(&filter).unwrap();
        let all = scan_with_addressless(&filter).unwrap();
        for i in &addressed {
            assert!(all.contains(i), "{} kept as scanned", i.name);
        }
        let mut names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), all.len(), "one entry per name");
        for i in all
            .iter()
            .filter(|i| !addressed.iter().any(|a| a.name == i.name))
        {
            assert!(i.addrs.is_empty(), "{i:?}");
            assert!(i.usable().is_err(), "{i:?}");
        }
    }

    #[test]
    fn scan_sees_loopback_and_refuses_it() {
        let filter = InterfaceFilter::new(&crate::config::Config::default());
        let list = scan(&filter).unwrap();
        if let Some(lo) = list.iter().find(|i| i.loopback) {
            assert_eq!(lo.eligible, Err(Exclusion::Loopback));
            assert_eq!(lo.usable().unwrap_err(), "loopback");
        }
    }
}
