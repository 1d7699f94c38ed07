//! `sticky`: keep talking to the same destination through the same interface.
//!
//! This is the example to copy when you write your own netmix strategy. It uses nothing but the
//! public surface of `netmix-plugin-api`, and it is built like any plugin: a `cdylib`
//! (`libnetmix_strategy_sticky.so`) that you drop into the engine's plugin folder, then select
//! with `strategy = "sticky"` in the config.
//!
//! Why sticky? Some services tie a session to the client's address (banking sites, game servers,
//! anything behind a strict CDN rule). If consecutive connections to the same host leave through
//! different interfaces, such a service sees the address change and logs the user out.
//!
//! How it works:
//! - A strategy has two halves ([`StrategyImpl`]): `plan`, called when the interfaces change,
//!   prepares whatever does not depend on the connection (here: the usable interfaces, sorted
//!   by latency); `pick`, called for every new connection from many threads, must be quick.
//! - The first connection to a destination (host name if the client gave one, else the address)
//!   goes out through the least-loaded interface (fewest connections in flight right now, then
//!   lowest latency), and we remember that choice.
//! - Later connections to the same destination reuse it, as long as it can still carry them (in
//!   the snapshot, not already tried for this connection, with an address of the destination's
//!   family) and the destination was used within the last `ttl_secs` seconds (sliding: every use
//!   extends it). Otherwise we choose anew.
//! - The remembered choices live in `netmix_plugin_api::sticky::SiteTable`, the same table the
//!   engine's `sticky_ttl_secs` uses (expired entries are swept as it grows).
//!
//! Options (TOML): `ttl_secs` (default 300).
//!
//! Note: `#![forbid(unsafe_code)]` would be nice, but `export_strategy!` expands to abi_stable
//! macros that contain `unsafe`, so it cannot be used in a plugin crate.

// abi_stable's macros generate impls inside functions; this silences the harmless warning.
#![allow(non_local_definitions)]

use std::time::{Duration, Instant};

use netmix_plugin_api::{
    Choice, ConnMeta, InterfaceSnapshot, Snapshot, StrategyError, StrategyImpl, parse_options,
    sticky::{SiteTable, site_key},
};

/// How long a destination stays bound to its interface after its last use, by default.
pub const DEFAULT_TTL_SECS: u64 = 300;

/// The options users can set in the config, e.g. `[strategies.sticky] ttl_secs = 600`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StickyConfig {
    /// Forget a destination this many seconds after it was last used.
    pub ttl_secs: u64,
}

impl Default for StickyConfig {
    fn default() -> Self {
        Self {
            ttl_secs: DEFAULT_TTL_SECS,
        }
    }
}

/// The sticky strategy. The engine calls `pick` from many threads, so the bindings are in a
/// [`SiteTable`] (a mutex around a hash map; each call holds it for one lookup).
#[derive(Debug)]
pub struct Sticky {
    sites: SiteTable,
}

/// What `plan` prepares: the usable interfaces, lowest latency first (then lowest id), so
/// that `pick` only has to sort them by their live load.
#[derive(Debug, Default)]
pub struct Plan {
    by_latency: Vec<InterfaceSnapshot>,
}

impl Sticky {
    /// Builds the strategy from its options, given as TOML text (empty = all defaults).
    ///
    /// # Errors
    /// [`StrategyError::InvalidConfig`] on unknown keys or `ttl_secs = 0`.
    pub fn from_options(options_toml: &str) -> Result<Self, StrategyError> {
        let config: StickyConfig = parse_options(options_toml)?;
        if config.ttl_secs == 0 {
            return Err(StrategyError::invalid_config(
                "ttl_secs must be at least 1 (use another strategy for no stickiness)",
            ));
        }
        Ok(Self::new(Duration::from_secs(config.ttl_secs)))
    }

    /// A sticky strategy that forgets a destination `ttl` after its last use.
    pub fn new(ttl: Duration) -> Self {
        Self {
            sites: SiteTable::new(ttl),
        }
    }

    /// `pick` with an explicit clock, so tests can move time forward.
    fn pick_at(&self, now: Instant, plan: &Plan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        // The interfaces that can carry this connection, least loaded first. `active_conns()`
        // is live (the engine counts every connect it starts), so this sort happens here and
        // not in `plan`; the stable sort keeps the plan's latency order among equals.
        let mut candidates: Vec<(u32, &InterfaceSnapshot)> = plan
            .by_latency
            .iter()
            .filter(|i| conn.fits(i))
            .map(|i| (i.active_conns(), i))
            .collect();
        candidates.sort_by_key(|&(active, _)| active);
        let mut order: Vec<u32> = candidates.iter().map(|(_, i)| i.id).collect();
        let Some(&(_, least_loaded)) = candidates.first() else {
            return Err(StrategyError::NoCandidate);
        };
        let site = site_key(conn);

        // Still bound, and the interface still a candidate? Reuse it (the table extends the
        // binding). Otherwise bind the site to the least-loaded candidate. One table lookup.
        let mut reused = None;
        let binding = self.sites.stick(&site, now, |bound| {
            match bound.and_then(|b| order.iter().position(|&id| id == b.interface)) {
                Some(pos) => {
                    reused = Some(pos);
                    order[pos]
                }
                None => least_loaded.id,
            }
        });
        let reason = match reused {
            Some(pos) => {
                // The bound interface goes first; the others stay as fallbacks.
                let id = order.remove(pos);
                order.insert(0, id);
                let age = now.saturating_duration_since(binding.since).as_secs();
                format!("sticky: {site} → {} (since {age}s)", candidates[pos].1.name)
            }
            // New destination (or its interface went away): the least-loaded one.
            None => format!("new: {site} → {} (least loaded)", least_loaded.name),
        };
        Ok(Choice::new(order, reason))
    }
}

impl StrategyImpl for Sticky {
    type Plan = Plan;

    // Called when the interfaces change (not for every connection): the slow part goes here.
    fn plan(&self, snapshot: &Snapshot) -> Result<Plan, StrategyError> {
        let mut by_latency: Vec<InterfaceSnapshot> = snapshot
            .interfaces
            .iter()
            .filter(|i| i.is_usable())
            .cloned()
            .collect();
        by_latency.sort_by_key(|i| (i.latency_ewma_us.unwrap_or(u32::MAX), i.id));
        Ok(Plan { by_latency })
    }

    // Called for every new connection, from many threads at once: keep it quick.
    fn pick(&self, plan: &Plan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        self.pick_at(Instant::now(), plan, conn)
    }

    /// A site stays on its link; only a destination whose last connection was bulk goes
    /// multipath.
    fn multipath(&self) -> netmix_plugin_api::paths::MultipathPolicy {
        netmix_plugin_api::paths::MultipathPolicy::ByHistory {
            unknown: netmix_plugin_api::Paths::Single,
        }
    }
}

// This generates the exported root module. Every call into `Sticky` (and `from_options`) runs
// under `catch_unwind`, so a bug here becomes an error the engine logs, not a crash.
netmix_plugin_api::export_strategy! {
    name: "sticky",
    description: "Same destination, same interface (for `ttl_secs`); new ones go to the least loaded.",
    new: Sticky::from_options,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use netmix_plugin_api::{LinkState, sticky::SWEEP_AT};

    use super::*;

    fn ifaces() -> Vec<InterfaceSnapshot> {
        (1..=3)
            .map(|id| {
                let s = InterfaceSnapshot::new(id, &format!("wan{id}"));
                s.live.active.store(10 - id, Ordering::Relaxed); // wan3 is the least loaded
                s
            })
            .collect()
    }

    fn plan(s: &Sticky, ifs: &[InterfaceSnapshot]) -> Plan {
        s.plan(&Snapshot::of(ifs.to_vec())).unwrap()
    }

    #[test]
    fn new_destination_goes_to_least_loaded_then_sticks() {
        let s = Sticky::from_options("").unwrap();
        let ifs = ifaces();
        let p = plan(&s, &ifs);
        let conn = ConnMeta::for_host("bank.example", 443);
        let t0 = Instant::now();
        let c = s.pick_at(t0, &p, &conn).unwrap();
        assert_eq!(c.first(), Some(3));
        assert_eq!(c.reason, "new: bank.example → wan3 (least loaded)");
        // wan3 becomes the busiest; the destination still sticks to it.
        ifs[2].live.active.store(50, Ordering::Relaxed);
        let c = s.pick_at(t0 + Duration::from_secs(7), &p, &conn).unwrap();
        assert_eq!(c.first(), Some(3));
        assert_eq!(c.reason, "sticky: bank.example → wan3 (since 7s)");
        assert_eq!(c.order.len(), 3);
        // Another destination goes to the now least-loaded interface.
        let other = ConnMeta::for_host("other.example", 80);
        assert_eq!(s.pick_at(t0, &p, &other).unwrap().first(), Some(2));
    }

    #[test]
    fn down_tried_or_expired_chooses_anew() {
        let s = Sticky::new(Duration::from_secs(60));
        let mut ifs = ifaces();
        let mut conn = ConnMeta::for_host("h", 1);
        let t0 = Instant::now();
        assert_eq!(
            s.pick_at(t0, &plan(&s, &ifs), &conn).unwrap().first(),
            Some(3)
        );
        ifs[2].state = LinkState::Down;
        assert_eq!(
            s.pick_at(t0, &plan(&s, &ifs), &conn).unwrap().first(),
            Some(2)
        );
        ifs[2].state = LinkState::Up;
        let p = plan(&s, &ifs);
        // Now bound to 2; 2 already failed for this connection → 3 (and rebound to it).
        conn.tried.push(2);
        assert_eq!(s.pick_at(t0, &p, &conn).unwrap().first(), Some(3));
        conn.tried.clear();
        // After the TTL the stale binding is ignored: the least loaded (now wan1) wins.
        ifs[0].live.active.store(0, Ordering::Relaxed);
        let late = t0 + Duration::from_secs(61);
        let c = s.pick_at(late, &p, &conn).unwrap();
        assert_eq!(c.first(), Some(1));
        assert!(c.reason.starts_with("new: "), "{}", c.reason);
    }

    #[test]
    fn keyed_by_address_without_host() {
        let s = Sticky::new(Duration::from_secs(60));
        let mut ifs = ifaces();
        for i in &mut ifs {
            i.addrs.push(netmix_plugin_api::IpNetC::new(
                std::net::Ipv4Addr::new(198, 18, i.id as u8, 2),
                24,
            ));
        }
        let conn = ConnMeta::for_addr(std::net::Ipv4Addr::new(192, 0, 2, 9), 443);
        let c = s.pick_at(Instant::now(), &plan(&s, &ifs), &conn).unwrap();
        assert!(c.reason.contains("192.0.2.9 → wan3"), "{}", c.reason);
    }

    #[test]
    fn ties_in_load_go_to_the_lowest_latency() {
        let s = Sticky::new(Duration::from_secs(60));
        let mut ifs = ifaces();
        for (i, ms) in ifs.iter_mut().zip([30, 5, 20]) {
            i.live.active.store(0, Ordering::Relaxed);
            i.latency_ewma_us = netmix_plugin_api::abi_stable::std_types::RSome(ms * 1000);
        }
        let c = s
            .pick_at(Instant::now(), &plan(&s, &ifs), &ConnMeta::for_host("h", 1))
            .unwrap();
        assert_eq!(c.order.as_slice(), &[2, 3, 1]);
    }

    #[test]
    fn sweeps_expired_entries() {
        let s = Sticky::new(Duration::from_secs(1));
        let ifs = ifaces();
        let p = plan(&s, &ifs);
        let t0 = Instant::now();
        for i in 0..=SWEEP_AT as u64 {
            let conn = ConnMeta::for_host(&format!("h{i}"), 1);
            s.pick_at(t0 + Duration::from_secs(i), &p, &conn).unwrap();
        }
        assert!(s.sites.len() < 3, "{}", s.sites.len());
    }

    #[test]
    fn options() {
        assert!(Sticky::from_options("ttl_secs = 0").is_err());
        assert!(Sticky::from_options("ttl = 5").is_err());
        assert_eq!(
            Sticky::from_options("ttl_secs = 9")
                .unwrap()
                .sites
                .ttl()
                .as_secs(),
            9
        );
    }
}
