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
//! scoring), `latency` (the `latency` plugin's scoring) or `lowest-id`. `capacity` and
//! `latency` count their own connections in flight; `observe` is forwarded to them.
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

use base::{Base, BaseStrategy};
use netmix_plugin_api::{
    Choice, ConnMeta, ConnOutcome, InterfaceKind, InterfaceSnapshot, IpAddrC, IpNetC,
    StrategyError, StrategyImpl, ZeroTierInfo, candidates, parse_options,
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

/// A ZeroTier interface's claim on a destination.
#[derive(Debug, Clone, Copy)]
struct Match<'a> {
    iface: &'a InterfaceSnapshot,
    info: &'a ZeroTierInfo,
    net: IpNetC,
}

/// The longest prefix of `info`'s usable routes and assigned subnets that contains `dest`.
///
/// A default route counts only when the engine allowed it (`allow_default`); a network whose
/// status is not OK counts for nothing, whatever the snapshot carries.
pub fn best_prefix(info: &ZeroTierInfo, dest: &IpAddrC) -> Option<IpNetC> {
    if info.status.as_str() != "OK" {
        return None;
    }
    let routes = info
        .routes
        .iter()
        .map(|r| r.target)
        .filter(|t| t.prefix_len > 0 || info.allow_default);
    routes
        .chain(info.assigned.iter().copied())
        .filter(|net| net.contains(dest))
        .max_by_key(|net| net.prefix_len)
}

fn zerotier_info(iface: &InterfaceSnapshot) -> Option<&ZeroTierInfo> {
    iface.zerotier.as_ref().into_option()
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
    fn pick(
        &self,
        interfaces: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        let usable: Vec<&InterfaceSnapshot> = candidates(interfaces, conn).collect();
        let (zt, others): (Vec<_>, Vec<_>) = usable.into_iter().partition(|i| is_zerotier(i));

        let matches: Vec<Match<'_>> = match conn.addr.as_ref().into_option() {
            Some(dest) => zt
                .iter()
                .filter_map(|iface| {
                    let info = zerotier_info(iface)?;
                    let net = best_prefix(info, dest)?;
                    Some(Match { iface, info, net })
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
                    .then(a.iface.id.cmp(&b.iface.id))
            });
            let best = specific[0];
            let reason = format!(
                "zerotier: {} via {} (network {})",
                best.net, best.iface.name, best.info.network_id
            );
            let order: Vec<u32> = specific.iter().map(|m| m.iface.id).collect();
            return Ok(Choice::new(order, reason));
        }

        // 2. An allowed exit node first, the base strategy after it.
        let exits: Vec<Match<'_>> = matches
            .iter()
            .copied()
            .filter(|m| m.net.prefix_len == 0)
            .collect();
        let base = if others.is_empty() {
            None
        } else {
            Some(self.base.order(&others, conn)?)
        };
        if let Some(exit) = exits.first() {
            let mut order: Vec<u32> = exits.iter().map(|m| m.iface.id).collect();
            if let Some(base) = &base {
                order.extend(base.order.iter().copied());
            }
            let reason = format!(
                "zerotier exit node: {} via {} (network {})",
                exit.net, exit.iface.name, exit.info.network_id
            );
            return Ok(Choice::new(order, reason));
        }

        // 3. Everything else: the base strategy, never a ZeroTier interface.
        base.ok_or(StrategyError::NoCandidate)
    }

    fn observe(&self, outcome: &ConnOutcome) -> Result<(), StrategyError> {
        self.base.observe(outcome);
        Ok(())
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

    use abi_stable::std_types::{RNone, RSome, RVec};
    use netmix_plugin_api::{ExtFields, LinkState, OutcomeStage, ZtRoute};

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
        s.latency_ewma_us = RSome(latency_ms * 1000);
        s
    }

    fn zt(id: u32, name: &str, i: ZeroTierInfo) -> InterfaceSnapshot {
        let mut s = InterfaceSnapshot::new(id, name);
        s.kind = InterfaceKind::ZeroTier;
        // A fast ZeroTier link: the base strategy would love it if it were allowed to pick it.
        s.latency_ewma_us = RSome(100);
        s.zerotier = RSome(i);
        s
    }

    fn to(a: [u8; 4]) -> ConnMeta {
        ConnMeta::for_addr(Ipv4Addr::from(a), 80)
    }

    /// The strategy with the `latency` base, whose order on [`lab`] is wan2 (10 ms), wan1.
    fn with_latency_base() -> ZeroTier {
        ZeroTier::from_options("base = \"latency\"").unwrap()
    }

    fn report(conn: ConnMeta, interface: u32, stage: OutcomeStage) -> ConnOutcome {
        ConnOutcome {
            interface,
            conn,
            stage,
            connect_us: 1,
            bytes_up: 0,
            bytes_down: 0,
            duration_us: 0,
            ext: ExtFields::new(),
        }
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
        let c = s.pick(&lab(), &to([10, 147, 20, 5])).unwrap();
        assert_eq!(c.order.as_slice(), &[4, 3]);
        assert_eq!(
            c.reason.as_str(),
            "zerotier: 10.147.20.0/24 via ztnarrow (network bbbbbbbbbbbbbbbb)"
        );
        let c = s.pick(&lab(), &to([10, 147, 99, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[3]);
        // Assigned subnets count as routes.
        let c = s.pick(&lab(), &to([172, 22, 3, 4])).unwrap();
        assert_eq!(c.order.as_slice(), &[4]);
        assert!(c.reason.starts_with("zerotier: 172.22.0.0/16 via ztnarrow"));
    }

    #[test]
    fn other_traffic_never_gets_a_zerotier_interface() {
        let s = with_latency_base();
        let c = s.pick(&lab(), &to([198, 19, 0, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[2, 1], "latency order, no zt");
        assert!(
            c.reason.starts_with("base latency: latency 10.0ms"),
            "{}",
            c.reason
        );
        // A host name the engine did not resolve: base too.
        let c = s
            .pick(&lab(), &ConnMeta::for_host("example.com", 443))
            .unwrap();
        assert_eq!(c.order.as_slice(), &[2, 1]);
        let lowest = ZeroTier::from_options("base = \"lowest-id\"").unwrap();
        let c = lowest.pick(&lab(), &to([198, 19, 0, 1])).unwrap();
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
        let c = s.pick(&ifs, &to([10, 147, 20, 5])).unwrap();
        assert_eq!(c.order.as_slice(), &[3], "the wider network still matches");
        ifs[2].state = LinkState::Down;
        let c = s.pick(&ifs, &to([10, 147, 20, 5])).unwrap();
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
        let c = s.pick(&ifs, &to([198, 19, 0, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[5, 2, 1]);
        assert!(
            c.reason
                .starts_with("zerotier exit node: 0.0.0.0/0 via ztexit")
        );
        // A specific route still beats the exit node.
        let c = s.pick(&ifs, &to([10, 147, 20, 1])).unwrap();
        assert_eq!(c.order.as_slice(), &[4, 3]);
        // Not allowed (the engine leaves the default route out and allow_default false).
        exit.allow_default = false;
        ifs[4].zerotier = RSome(exit);
        let c = s.pick(&ifs, &to([198, 19, 0, 1])).unwrap();
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
            ZeroTier::default()
                .pick(&only_zt, &to([198, 19, 0, 1]))
                .unwrap_err(),
            StrategyError::NoCandidate
        );
    }

    #[test]
    fn the_capacity_base_shares_other_traffic_by_measured_capacity() {
        let s = ZeroTier::default();
        let mut ifs = lab();
        ifs[0].ext.set("peak_down_bps", "20000000");
        ifs[1].ext.set("peak_down_bps", "60000000");
        // The ZeroTier interfaces are the fastest: the base must not see them at all.
        ifs[2].ext.set("peak_down_bps", "900000000");
        let mut counts = [0; 5];
        for port in 0..24 {
            let mut conn = to([198, 19, 0, 1]);
            conn.client_port = port;
            let c = s.pick(&ifs, &conn).unwrap();
            assert!(c.order.iter().all(|id| *id == 1 || *id == 2), "{c:?}");
            assert!(
                c.reason.starts_with("base capacity: capacity: wan"),
                "{}",
                c.reason
            );
            counts[c.first().unwrap() as usize] += 1;
        }
        // 20:60 of 24 is 6 : 18, all picked before the engine counts any of them.
        assert!((5..=7).contains(&counts[1]), "{counts:?}");
        assert!((17..=19).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn observe_reaches_the_base_ledger() {
        for base in ["capacity", "latency"] {
            let s = ZeroTier::from_options(&format!("base = \"{base}\"")).unwrap();
            let ifs = lab();
            let mut conn = to([198, 19, 0, 1]);
            conn.client_port = 1;
            let first = s.pick(&ifs, &conn).unwrap().first().unwrap();
            let mut other = to([198, 19, 0, 1]);
            other.client_port = 2;
            // One in flight on `first`: the next connection goes to the other link.
            let second = s.pick(&ifs, &other).unwrap().first().unwrap();
            assert_ne!(second, first, "{base}");
            s.observe(&report(other.clone(), second, OutcomeStage::ConnectFailed))
                .unwrap();
            s.observe(&report(conn.clone(), first, OutcomeStage::Closed))
                .unwrap();
            // Nothing in flight any more: the first choice again.
            assert_eq!(s.pick(&ifs, &other).unwrap().first(), Some(first), "{base}");
            // ZeroTier destinations do not go through the base: their reports change nothing
            // there (`other` is still in flight on `first`).
            let mut zt_conn = to([10, 147, 20, 5]);
            zt_conn.client_port = 3;
            assert_eq!(s.pick(&ifs, &zt_conn).unwrap().first(), Some(4));
            s.observe(&report(zt_conn.clone(), 4, OutcomeStage::Connected))
                .unwrap();
            s.observe(&report(zt_conn, 4, OutcomeStage::Closed))
                .unwrap();
            conn.client_port = 4;
            assert_eq!(s.pick(&ifs, &conn).unwrap().first(), Some(second), "{base}");
        }
        let lowest = ZeroTier::from_options("base = \"lowest-id\"").unwrap();
        lowest
            .observe(&report(to([198, 19, 0, 1]), 1, OutcomeStage::Closed))
            .unwrap();
    }
}
