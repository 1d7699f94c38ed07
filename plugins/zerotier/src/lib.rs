//! `zerotier`: the ZeroTier-aware strategy plugin of netmix.
//!
//! The engine's ZeroTier agent puts each joined network's facts on its interface in the
//! snapshot ([`InterfaceSnapshot::zerotier`]): status, assigned subnets, and only the managed
//! routes the OS would install (README §A4; none while the network is not `OK`). For each
//! connection, by its resolved destination address ([`ConnMeta::addr`]):
//!
//! 1. **ZeroTier destination**: inside a usable ZeroTier interface's routes or assigned subnets.
//!    The order holds *only* the matching ZeroTier interfaces, longest prefix first (a /24
//!    beats a /16 beats an exit node's /0); reason
//!    `zerotier: 10.147.20.0/24 via ztxxxx (network 565799d8f620c5c5)`.
//! 2. **Exit node**: otherwise, a ZeroTier interface whose network offers a default route that
//!    the engine let through (`allowDefault` on the network *and* `[zerotier]
//!    allow_default_route` in netmix's config, node online) goes first; the base strategy's
//!    order follows as fallback.
//! 3. **Everything else**: the base strategy over the non-ZeroTier interfaces only; reason
//!    `base capacity: …` (or `base latency: …`, `base lowest-id: …`). A ZeroTier interface
//!    never appears in this order, not even as a fallback (the engine, too, never appends
//!    ZeroTier interfaces on its own).
//!
//! A plugin cannot load another plugin, so the base strategy runs inside this one, from
//! `netmix-strategy-kit` (see [`base`]): `capacity` (the default; the `capacity` plugin's
//! scoring), `latency` (the `latency` plugin's scoring) or `lowest-id`. `rebuild` splits the
//! snapshot once: each ZeroTier interface with the prefixes it may carry, and the base's plan
//! over the other interfaces; a pick matches the destination against the prefixes and lets the
//! base order the rest with the engine's live in-flight counts.
//!
//! Options (TOML):
//!
//! ```toml
//! [strategies.zerotier]
//! base = "capacity"         # or "latency", "lowest-id"
//! [strategies.zerotier.capacity]
//! unit_bytes = 1048576      # the capacity strategy's own options
//! [strategies.zerotier.latency]
//! tolerance_pct = 10        # the latency strategy's own options
//! ```
//!
//! `#![forbid(unsafe_code)]` is not possible here: `export_strategy!` expands to abi_stable
//! macros that use `unsafe`.

#![allow(non_local_definitions)]

pub mod base;

use base::{Base, BasePlan, BaseStrategy};
use netmix_plugin_api::{
    Choice, ConnMeta, InterfaceKind, InterfaceSnapshot, IpAddrC, IpNetC, Snapshot, StrategyError,
    StrategyImpl, ZeroTierInfo, parse_options,
};
use netmix_strategy_kit::capacity::CapacityConfig;
use netmix_strategy_kit::latency::LatencyConfig;

/// Options of the `zerotier` strategy.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZeroTierOptions {
    /// The strategy for everything that is not a ZeroTier destination.
    pub base: Base,
    /// Options of the `capacity` base strategy (`[strategies.zerotier.capacity]`).
    pub capacity: CapacityConfig,
    /// Options of the `latency` base strategy (`[strategies.zerotier.latency]`).
    pub latency: LatencyConfig,
}

/// The ZeroTier-aware strategy.
#[derive(Debug, Default)]
pub struct ZeroTier {
    base: BaseStrategy,
}

/// A usable ZeroTier interface as the plan keeps it.
#[derive(Debug)]
struct ZtLink {
    /// The interface, for [`ConnMeta::fits`].
    iface: InterfaceSnapshot,
    /// Its network id (empty without ZeroTier facts).
    network_id: String,
    /// The prefixes it may carry (see [`usable_prefixes`]); empty without ZeroTier facts.
    prefixes: Vec<IpNetC>,
}

/// What [`ZeroTier`] prepares from a snapshot.
#[derive(Debug)]
pub struct ZeroTierPlan {
    /// The usable ZeroTier interfaces.
    zerotier: Vec<ZtLink>,
    /// The base strategy's plan over the other usable interfaces.
    base: BasePlan,
}

/// A ZeroTier interface's claim on a destination.
#[derive(Debug, Clone, Copy)]
struct Match<'a> {
    link: &'a ZtLink,
    net: IpNetC,
}

/// The routes and assigned subnets of `info` that may carry traffic: none unless the network's
/// status is OK; a default route only when the engine allowed it (`allow_default`).
pub fn usable_prefixes(info: &ZeroTierInfo) -> impl Iterator<Item = IpNetC> + '_ {
    let ok = info.status.as_str() == "OK";
    let routes = info
        .routes
        .iter()
        .map(|r| r.target)
        .filter(|t| t.prefix_len > 0 || info.allow_default);
    routes
        .chain(info.assigned.iter().copied())
        .filter(move |_| ok)
}

/// The longest of `prefixes` that contains `dest`.
fn longest_match(prefixes: impl IntoIterator<Item = IpNetC>, dest: &IpAddrC) -> Option<IpNetC> {
    prefixes
        .into_iter()
        .filter(|net| net.contains(dest))
        .max_by_key(|net| net.prefix_len)
}

/// The longest prefix of `info`'s usable routes and assigned subnets that contains `dest`
/// (see [`usable_prefixes`]).
pub fn best_prefix(info: &ZeroTierInfo, dest: &IpAddrC) -> Option<IpNetC> {
    longest_match(usable_prefixes(info), dest)
}

fn is_zerotier(iface: &InterfaceSnapshot) -> bool {
    iface.kind == InterfaceKind::ZeroTier || iface.zerotier.is_some()
}

impl ZeroTier {
    /// Builds the strategy from its options (TOML text).
    ///
    /// # Errors
    /// [`StrategyError::InvalidConfig`] on unknown keys, an unknown base or bad options of a
    /// base strategy.
    pub fn from_options(options_toml: &str) -> Result<Self, StrategyError> {
        let options: ZeroTierOptions = parse_options(options_toml)?;
        Ok(Self {
            base: BaseStrategy::new(options.base, options.capacity, options.latency)?,
        })
    }

    /// The base strategy for traffic that is not for a ZeroTier network.
    pub fn base(&self) -> Base {
        self.base.base()
    }
}

impl StrategyImpl for ZeroTier {
    type Plan = ZeroTierPlan;

    fn plan(&self, snapshot: &Snapshot) -> Result<ZeroTierPlan, StrategyError> {
        let usable = || snapshot.interfaces.iter().filter(|i| i.is_usable());
        let zerotier = usable()
            .filter(|i| is_zerotier(i))
            .map(|iface| {
                let info = iface.zerotier.as_ref().into_option();
                ZtLink {
                    iface: iface.clone(),
                    network_id: info.map_or_else(String::new, |z| z.network_id.to_string()),
                    prefixes: info.map_or_else(Vec::new, |z| usable_prefixes(z).collect()),
                }
            })
            .collect();
        let base = self.base.plan_of(usable().filter(|i| !is_zerotier(i)));
        Ok(ZeroTierPlan { zerotier, base })
    }

    fn pick(&self, plan: &ZeroTierPlan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        let matches: Vec<Match<'_>> = match conn.addr.as_ref().into_option() {
            Some(dest) => plan
                .zerotier
                .iter()
                .filter(|link| conn.fits(&link.iface))
                .filter_map(|link| {
                    let net = longest_match(link.prefixes.iter().copied(), dest)?;
                    Some(Match { link, net })
                })
                .collect(),
            None => Vec::new(),
        };

        // 1. A ZeroTier destination: only the matching interfaces, longest prefix first.
        let mut specific: Vec<Match<'_>> = matches
            .iter()
            .copied()
            .filter(|m| m.net.prefix_len > 0)
            .collect();
        if !specific.is_empty() {
            specific.sort_by(|a, b| {
                b.net
                    .prefix_len
                    .cmp(&a.net.prefix_len)
                    .then(a.link.iface.id.cmp(&b.link.iface.id))
            });
            let best = specific[0];
            let reason = format!(
                "zerotier: {} via {} (network {})",
                best.net, best.link.iface.name, best.link.network_id
            );
            let order: Vec<u32> = specific.iter().map(|m| m.link.iface.id).collect();
            return Ok(Choice::new(order, reason));
        }

        // 2. An allowed exit node first, the base strategy after it.
        let base = match self.base.pick(&plan.base, conn) {
            Ok(choice) => Some(choice),
            Err(StrategyError::NoCandidate) => None,
            Err(e) => return Err(e),
        };
        if let Some(exit) = matches.iter().find(|m| m.net.prefix_len == 0) {
            let mut order: Vec<u32> = matches
                .iter()
                .filter(|m| m.net.prefix_len == 0)
                .map(|m| m.link.iface.id)
                .collect();
            if let Some(base) = &base {
                order.extend(base.order.iter().copied());
            }
            let reason = format!(
                "zerotier exit node: {} via {} (network {})",
                exit.net, exit.link.iface.name, exit.link.network_id
            );
            return Ok(Choice::new(order, reason));
        }

        // 3. Everything else: the base strategy, never a ZeroTier interface.
        base.ok_or(StrategyError::NoCandidate)
    }

    /// A ZeroTier route is one path; only a destination whose last connection was bulk
    /// goes multipath.
    fn multipath(&self) -> netmix_plugin_api::paths::MultipathPolicy {
        netmix_plugin_api::paths::MultipathPolicy::ByHistory {
            unknown: netmix_plugin_api::Paths::Single,
        }
    }
}

netmix_plugin_api::export_strategy! {
    name: "zerotier",
    description: "ZeroTier destinations through their network's interface (longest prefix); the rest by a base strategy (capacity by default), never through ZeroTier unless an allowed exit node.",
    new: ZeroTier::from_options,
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::Ordering;

    use abi_stable::std_types::{RNone, RSome, RVec};
    use netmix_plugin_api::{ExtFields, LinkState, ZtRoute};

    use super::*;

    fn net(a: [u8; 4], len: u8) -> IpNetC {
        IpNetC::new(Ipv4Addr::from(a), len)
    }

    fn info(id: &str, status: &str, routes: &[IpNetC], assigned: &[IpNetC]) -> ZeroTierInfo {
        ZeroTierInfo {
            network_id: id.into(),
            name: "".into(),
            status: status.into(),
            routes: routes
                .iter()
                .map(|t| ZtRoute {
                    target: *t,
                    via: RNone,
                })
                .collect(),
            assigned: assigned.iter().copied().collect::<RVec<_>>(),
            allow_default: routes.iter().any(|r| r.prefix_len == 0),
            peers_direct: 1,
            peers_relayed: 0,
            online: true,
            tcp_fallback: false,
            ext: ExtFields::new(),
        }
    }

    fn phys(id: u32, latency_ms: u32) -> InterfaceSnapshot {
        let mut s = InterfaceSnapshot::new(id, &format!("wan{id}"));
        s.addrs.push(net([198, 18, id as u8, 2], 24));
        s.latency_ewma_us = RSome(latency_ms * 1000);
        s
    }

    fn zt(id: u32, name: &str, i: ZeroTierInfo) -> InterfaceSnapshot {
        let mut s = InterfaceSnapshot::new(id, name);
        s.kind = InterfaceKind::ZeroTier;
        s.addrs.push(net([10, 147, id as u8, 9], 16));
        // A fast ZeroTier link: the base strategy would love it if it were allowed to pick it.
        s.latency_ewma_us = RSome(100);
        s.zerotier = RSome(i);
        s
    }

    fn to(a: [u8; 4]) -> ConnMeta {
        ConnMeta::for_addr(Ipv4Addr::from(a), 80)
    }

    /// Plans for `ifs` and picks for `conn`, as the engine's rebuild then pick do.
    fn pick(
        s: &ZeroTier,
        ifs: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        s.pick(&s.plan(&Snapshot::of(ifs.to_vec()))?, conn)
    }

    /// The strategy with the `latency` base, whose order on [`lab`] is wan2 (10 ms), wan1.
    fn with_latency_base() -> ZeroTier {
        ZeroTier::from_options("base = \"latency\"").unwrap()
    }

    fn lab() -> Vec<InterfaceSnapshot> {
        vec![
            phys(1, 20),
            phys(2, 10),
            zt(
                3,
                "ztwide",
                info("aaaaaaaaaaaaaaaa", "OK", &[net([10, 147, 0, 0], 16)], &[]),
            ),
            zt(
                4,
                "ztnarrow",
                info(
                    "bbbbbbbbbbbbbbbb",
                    "OK",
                    &[net([10, 147, 20, 0], 24)],
                    &[net([172, 22, 0, 0], 16)],
                ),
            ),
        ]
    }

    #[test]
    fn longest_prefix_wins_and_only_zerotier_interfaces_are_offered() {
        let s = ZeroTier::default();
        let c = pick(&s, &lab(), &to([10, 147, 20, 5])).unwrap();
        assert_eq!(c.order.as_slice(), &[4, 3]);
        assert_eq!(
            c.reason.as_str(),
            "zerotier: 10.147.20.0/24 via ztnarrow (network bbbbbbbbbbbbbbbb)"
        );
        let c = pick(&s, &lab(), &to([10, 147, 99, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[3]);
        // Assigned subnets count as routes.
        let c = pick(&s, &lab(), &to([172, 22, 3, 4])).unwrap();
        assert_eq!(c.order.as_slice(), &[4]);
        assert!(c.reason.starts_with("zerotier: 172.22.0.0/16 via ztnarrow"));
    }

    #[test]
    fn other_traffic_never_gets_a_zerotier_interface() {
        let s = with_latency_base();
        let c = pick(&s, &lab(), &to([198, 19, 0, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[2, 1], "latency order, no zt");
        assert!(
            c.reason.starts_with("base latency: latency 10.0ms"),
            "{}",
            c.reason
        );
        // A host name the engine did not resolve: base too.
        let c = pick(&s, &lab(), &ConnMeta::for_host("example.com", 443)).unwrap();
        assert_eq!(c.order.as_slice(), &[2, 1]);
        let lowest = ZeroTier::from_options("base = \"lowest-id\"").unwrap();
        let c = pick(&lowest, &lab(), &to([198, 19, 0, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[1, 2]);
        assert_eq!(c.reason.as_str(), "base lowest-id: lowest id wan1");
    }

    #[test]
    fn a_network_that_is_not_ok_or_down_loses_its_routes() {
        let s = with_latency_base();
        let mut ifs = lab();
        ifs[3].zerotier = RSome(info(
            "bbbbbbbbbbbbbbbb",
            "ACCESS_DENIED",
            &[net([10, 147, 20, 0], 24)],
            &[],
        ));
        let c = pick(&s, &ifs, &to([10, 147, 20, 5])).unwrap();
        assert_eq!(c.order.as_slice(), &[3], "the wider network still matches");
        ifs[2].state = LinkState::Down;
        let c = pick(&s, &ifs, &to([10, 147, 20, 5])).unwrap();
        assert_eq!(
            c.order.as_slice(),
            &[2, 1],
            "no usable match: base, still no zt"
        );
    }

    #[test]
    fn exit_node_only_when_the_snapshot_allows_it() {
        let s = with_latency_base();
        let mut ifs = lab();
        let mut exit = info(
            "cccccccccccccccc",
            "OK",
            &[net([172, 27, 0, 0], 16), net([0, 0, 0, 0], 0)],
            &[],
        );
        ifs.push(zt(5, "ztexit", exit.clone()));
        let c = pick(&s, &ifs, &to([198, 19, 0, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[5, 2, 1]);
        assert!(
            c.reason
                .starts_with("zerotier exit node: 0.0.0.0/0 via ztexit")
        );
        // A specific route still beats the exit node.
        let c = pick(&s, &ifs, &to([10, 147, 20, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[4, 3]);
        // Not allowed (the engine leaves the default route out and allow_default false).
        exit.allow_default = false;
        ifs[4].zerotier = RSome(exit);
        let c = pick(&s, &ifs, &to([198, 19, 0, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[2, 1]);
    }

    #[test]
    fn best_prefix_and_options() {
        let i = info(
            "x",
            "OK",
            &[net([10, 0, 0, 0], 8)],
            &[net([10, 1, 2, 0], 24)],
        );
        let d = IpAddrC::from(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(best_prefix(&i, &d), Some(net([10, 1, 2, 0], 24)));
        assert_eq!(
            best_prefix(&i, &IpAddrC::from(Ipv4Addr::new(11, 0, 0, 1))),
            None
        );
        assert!(ZeroTier::from_options("base = \"nope\"").is_err());
        assert!(ZeroTier::from_options("bogus = 1").is_err());
        assert!(ZeroTier::from_options("[latency]\ntolerance_pct = -3.0").is_err());
        assert!(
            ZeroTier::from_options("base = \"latency\"\n[latency]\ntolerance_pct = 5.0").is_ok()
        );
        assert_eq!(ZeroTier::default().base(), Base::Capacity);
        assert_eq!(ZeroTier::from_options("").unwrap().base(), Base::Capacity);
        let e = ZeroTier::from_options("[capacity]\nunit_bytes = 0").unwrap_err();
        assert_eq!(
            e,
            StrategyError::invalid_config("capacity.unit_bytes must be at least 1")
        );
        assert!(ZeroTier::from_options("[capacity]\nunit = 1").is_err());
        let s = ZeroTier::from_options(
            "base = \"capacity\"\n[capacity]\nunit_bytes = 65536\ndegraded_penalty = 3.0",
        )
        .unwrap();
        assert_eq!(s.base(), Base::Capacity);
        let only_zt = vec![lab().remove(2)];
        assert_eq!(
            pick(&ZeroTier::default(), &only_zt, &to([198, 19, 0, 1])).unwrap_err(),
            StrategyError::NoCandidate
        );
    }

    #[test]
    fn the_capacity_base_shares_other_traffic_by_measured_capacity() {
        let s = ZeroTier::default();
        let mut ifs = lab();
        ifs[0].capacity_down_bps = 20_000_000;
        ifs[1].capacity_down_bps = 60_000_000;
        // The ZeroTier interfaces are the fastest: the base must not see them at all.
        ifs[2].capacity_down_bps = 900_000_000;
        let plan = s.plan(&Snapshot::of(ifs.clone())).unwrap();
        let mut counts = [0; 5];
        for port in 0..24 {
            let mut conn = to([198, 19, 0, 1]);
            conn.client_port = port;
            let c = s.pick(&plan, &conn).unwrap();
            assert!(c.order.iter().all(|id| *id == 1 || *id == 2), "{c:?}");
            assert!(
                c.reason.starts_with("base capacity: capacity: wan"),
                "{}",
                c.reason
            );
            let first = c.first().unwrap();
            // The engine counts the connection from the start of its connect.
            ifs[first as usize - 1]
                .live
                .active
                .fetch_add(1, Ordering::Relaxed);
            counts[first as usize] += 1;
        }
        // 20:60 of 24 is 6 : 18.
        assert!((5..=7).contains(&counts[1]), "{counts:?}");
        assert!((17..=19).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn the_base_reads_the_live_in_flight_counts() {
        for base in ["capacity", "latency"] {
            let s = ZeroTier::from_options(&format!("base = \"{base}\"")).unwrap();
            let ifs = lab();
            let plan = s.plan(&Snapshot::of(ifs.clone())).unwrap();
            let active = |id: u32| &ifs[id as usize - 1].live.active;
            let other_traffic = to([198, 19, 0, 1]);
            let first = s.pick(&plan, &other_traffic).unwrap().first().unwrap();
            active(first).fetch_add(1, Ordering::Relaxed);
            // One in flight on `first`: the next connection goes to the other link.
            let second = s.pick(&plan, &other_traffic).unwrap().first().unwrap();
            assert_ne!(second, first, "{base}");
            active(second).fetch_add(1, Ordering::Relaxed);
            // Both end: the first choice again.
            active(first).fetch_sub(1, Ordering::Relaxed);
            active(second).fetch_sub(1, Ordering::Relaxed);
            assert_eq!(
                s.pick(&plan, &other_traffic).unwrap().first(),
                Some(first),
                "{base}"
            );
            // ZeroTier connections do not weigh on the base: many in flight on ztnarrow
            // change nothing for other traffic.
            assert_eq!(
                s.pick(&plan, &to([10, 147, 20, 5])).unwrap().first(),
                Some(4)
            );
            active(4).store(50, Ordering::Relaxed);
            assert_eq!(
                s.pick(&plan, &other_traffic).unwrap().first(),
                Some(first),
                "{base}"
            );
        }
    }

    #[test]
    fn tried_and_family_are_respected() {
        let s = with_latency_base();
        let mut conn = to([10, 147, 20, 5]);
        conn.tried.push(4);
        let c = pick(&s, &lab(), &conn).unwrap();
        assert_eq!(
            c.order.as_slice(),
            &[3],
            "ztnarrow failed: the wider network"
        );
        let v6 = ConnMeta::for_addr("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(), 80);
        assert_eq!(
            pick(&s, &lab(), &v6).unwrap_err(),
            StrategyError::NoCandidate,
            "no interface has an IPv6 address"
        );
    }
}
