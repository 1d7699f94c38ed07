//! `latency`: the lowest-latency strategy plugin of netmix, load-aware so that it spreads.
//!
//! The engine's router loads this crate's `cdylib` (`libnetmix_strategy_latency.so`) through
//! `netmix-plugin-api`. For each connection it scores every usable interface (state not `Down`,
//! not already tried, with a source address of the destination's family) and orders them by
//! score, lowest first:
//!
//! ```text
//! score = latency EWMA × (1 + connections in flight) × (degraded_penalty if Degraded)
//! ```
//!
//! "In flight" is the engine's live count, which includes connects that have only just started,
//! so a burst spreads. Scores within `tolerance_pct` of the best are a tie, broken by fewest in
//! flight, then lowest id. The scoring lives in `netmix-strategy-kit`
//! ([`netmix_strategy_kit::latency`]), shared with the `zerotier` plugin's base strategy; this
//! crate parses the options and exports the plugin. `rebuild` prepares each link's latency,
//! penalty and reason text; `pick` combines them with the live counts.
//!
//! Options (TOML): `tolerance_pct` (default 10), `degraded_penalty` (default 2.0, at least 1).
//!
//! `#![forbid(unsafe_code)]` is not possible here: `export_strategy!` expands to abi_stable
//! macros that use `unsafe`.

#![allow(non_local_definitions)]

use netmix_plugin_api::{Choice, ConnMeta, Snapshot, StrategyError, StrategyImpl, parse_options};
use netmix_strategy_kit::latency::{Latency as LatencyScoring, LatencyPlan};

pub use netmix_strategy_kit::latency::{
    DEFAULT_DEGRADED_PENALTY, DEFAULT_TOLERANCE_PCT, DEFAULT_UNKNOWN_LATENCY_US, LatencyConfig,
};

/// The load-aware lowest-latency strategy: the kit's latency scoring behind the plugin
/// interface.
#[derive(Debug, Default)]
pub struct Latency(LatencyScoring);

impl Latency {
    /// Builds the strategy from its options (TOML text).
    ///
    /// # Errors
    /// [`StrategyError::InvalidConfig`] on unknown keys or out-of-range values.
    pub fn from_options(options_toml: &str) -> Result<Self, StrategyError> {
        let config: LatencyConfig = parse_options(options_toml)?;
        config.validate()?;
        Ok(Self(LatencyScoring::new(config)))
    }

    /// The options.
    pub fn config(&self) -> &LatencyConfig {
        self.0.config()
    }
}

impl StrategyImpl for Latency {
    type Plan = LatencyPlan;

    fn plan(&self, snapshot: &Snapshot) -> Result<LatencyPlan, StrategyError> {
        self.0.plan(snapshot)
    }

    fn pick(&self, plan: &LatencyPlan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        self.0.pick(plan, conn)
    }

    /// Small requests stay on the lowest-latency link; only a destination whose last
    /// connection was bulk goes multipath.
    fn multipath(&self) -> netmix_plugin_api::paths::MultipathPolicy {
        netmix_plugin_api::paths::MultipathPolicy::ByHistory {
            unknown: netmix_plugin_api::Paths::Single,
        }
    }
}

netmix_plugin_api::export_strategy! {
    name: "latency",
    description: "Lowest latency EWMA × (1 + active connections), with a tie tolerance.",
    new: Latency::from_options,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use netmix_plugin_api::{InterfaceSnapshot, abi_stable::std_types::RSome, guard::Guarded};

    use super::*;

    #[test]
    fn options_are_validated() {
        assert!(Latency::from_options("tolerance_pct = -1.0").is_err());
        assert!(Latency::from_options("degraded_penalty = 0.5").is_err());
        assert!(Latency::from_options("tolerance = 5").is_err());
        assert!(Latency::from_options("").is_ok());
        let l = Latency::from_options("tolerance_pct = 25.0\ndegraded_penalty = 3.0").unwrap();
        assert_eq!(l.config().tolerance_pct, 25.0);
        assert_eq!(l.config().degraded_penalty, 3.0);
    }

    #[test]
    fn picks_read_the_live_counts_through_the_abi_surface() {
        let s = Guarded::boxed("latency", Latency::default());
        let ifs = [
            InterfaceSnapshot::new(0, "eth0"),
            InterfaceSnapshot::new(1, "eth1"),
        ];
        let mut with_latency = ifs.clone();
        with_latency[0].latency_ewma_us = RSome(5_000);
        with_latency[1].latency_ewma_us = RSome(12_000);
        s.rebuild(&Snapshot::of(with_latency.to_vec())).unwrap();
        let conn = ConnMeta::for_host("example.com", 443);
        let c = s.pick(&conn).unwrap();
        assert_eq!(c.order.as_slice(), &[0, 1]);
        assert_eq!(c.reason, "latency 5.0ms×(1+0 active)");
        // Two connects start on eth0 (the clones share the live counters): 5 × 3 > 12.
        ifs[0].live.active.store(2, Ordering::Relaxed);
        assert_eq!(s.pick(&conn).unwrap().first(), Some(1));
    }
}
