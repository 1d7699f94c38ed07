//! `capacity`: place each new connection where the work already queued will finish first.
//!
//! The default strategy. It gives each link a share of the new connections proportional to its
//! measured capacity, with no hand-set weights, so a batch of downloads finishes together on
//! unequal links:
//!
//! ```text
//! expected completion on link i = (connections in flight on i + 1) × unit / capacity_i + latency_i
//! ```
//!
//! The scoring lives in `netmix-strategy-kit` ([`netmix_strategy_kit::capacity`]), shared with
//! the `zerotier` plugin's base strategy; this crate parses the options and exports the plugin.
//! `rebuild` prepares each link's constants (capacity, latency, penalty, reason text); `pick`
//! combines them with the engine's live in-flight counts.
//!
//! Options (TOML): `unit_bytes` (typical transfer size, default 1 MiB), `degraded_penalty`
//! (default 2, at least 1).
//!
//! `#![forbid(unsafe_code)]` is not possible here: `export_strategy!` expands to abi_stable
//! macros that use `unsafe`.

#![allow(non_local_definitions)]

use netmix_plugin_api::{Choice, ConnMeta, Snapshot, StrategyError, StrategyImpl, parse_options};
use netmix_strategy_kit::capacity::{Capacity as CapacityScoring, CapacityPlan};

pub use netmix_strategy_kit::capacity::CapacityConfig;

/// The strategy: the kit's capacity scoring behind the plugin interface.
#[derive(Debug, Default)]
pub struct Capacity(CapacityScoring);

impl Capacity {
    /// From the TOML options table.
    ///
    /// # Errors
    /// Unknown keys or out-of-range values.
    pub fn from_options(options: &str) -> Result<Self, StrategyError> {
        let config: CapacityConfig = parse_options(options)?;
        config.validate()?;
        Ok(Self::new(config))
    }

    /// With explicit options.
    pub fn new(config: CapacityConfig) -> Self {
        Self(CapacityScoring::new(config))
    }

    /// The options.
    pub fn config(&self) -> &CapacityConfig {
        self.0.config()
    }
}

impl StrategyImpl for Capacity {
    type Plan = CapacityPlan;

    fn plan(&self, snapshot: &Snapshot) -> Result<CapacityPlan, StrategyError> {
        self.0.plan(snapshot)
    }

    fn pick(&self, plan: &CapacityPlan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        self.0.pick(plan, conn)
    }

    /// A bulk transfer is what capacity sharing is for: a destination not seen yet goes
    /// multipath (every link), one known for small answers stays on the picked link.
    fn multipath(&self) -> netmix_plugin_api::paths::MultipathPolicy {
        netmix_plugin_api::paths::MultipathPolicy::ByHistory {
            unknown: netmix_plugin_api::Paths::Multi,
        }
    }
}

netmix_plugin_api::export_strategy! {
    name: "capacity",
    description: "Shares new connections in proportion to each link's measured capacity, so a batch finishes together (no hand-set weights).",
    new: Capacity::from_options,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use netmix_plugin_api::{InterfaceSnapshot, guard::Guarded};

    use super::*;

    #[test]
    fn bad_options_are_refused() {
        assert!(Capacity::from_options("unit_bytes = 0").is_err());
        assert!(Capacity::from_options("degraded_penalty = 0.5").is_err());
        assert!(Capacity::from_options("nope = 1").is_err());
        assert!(Capacity::from_options("").is_ok());
        let c = Capacity::from_options("unit_bytes = 1000\ndegraded_penalty = 3.0").unwrap();
        assert_eq!(c.config().unit_bytes, 1000);
    }

    #[test]
    fn picks_read_the_live_counts_through_the_abi_surface() {
        let s = Guarded::boxed("capacity", Capacity::default());
        let mut ifs = [
            InterfaceSnapshot::new(0, "wan0"),
            InterfaceSnapshot::new(1, "wan1"),
        ];
        ifs[0].capacity_down_bps = 30_000_000;
        ifs[1].capacity_down_bps = 10_000_000;
        s.rebuild(&Snapshot::of(ifs.to_vec())).unwrap();
        let conn = ConnMeta::for_host("example.com", 443);
        let c = s.pick(&conn).unwrap();
        assert_eq!(c.order.as_slice(), &[0, 1]);
        assert!(
            c.reason.starts_with("capacity: wan0 done in ≈"),
            "{}",
            c.reason
        );
        // The engine starts three connects on wan0: 4 × unit / 30 > 1 × unit / 10.
        ifs[0].live.active.store(3, Ordering::Relaxed);
        assert_eq!(s.pick(&conn).unwrap().first(), Some(1));
    }
}
