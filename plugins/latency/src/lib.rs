//! `latency`: the lowest-latency strategy plugin of netmix, load-aware so that it spreads.
//!
//! The engine's router loads this crate's `cdylib` (`libnetmix_strategy_latency.so`) through
//! `netmix-plugin-api`. For each connection it scores every usable interface (state not `Down`,
//! not already tried) and orders them by score, lowest first:
//!
//! ```text
//! score = latency EWMA × (1 + connections in flight) × (degraded_penalty if Degraded)
//! ```
//!
//! "In flight" counts the strategy's own picks not yet reported closed (the engine's
//! `active_conns` reaches the snapshot too late for a burst), or the engine's count when that is
//! larger. Scores within `tolerance_pct` of the best are a tie, broken by fewest in flight, then
//! lowest id. The scoring and the ledger live in `netmix-strategy-kit`
//! ([`netmix_strategy_kit::latency`]), shared with the `zerotier` plugin's base strategy; this
//! crate parses the options and exports the plugin.
//!
//! Options (TOML): `tolerance_pct` (default 10), `degraded_penalty` (default 2.0, at least 1).
//!
//! `#![forbid(unsafe_code)]` is not possible here: `export_strategy!` expands to abi_stable
//! macros that use `unsafe`.

#![allow(non_local_definitions)]

use netmix_plugin_api::{
    Choice, ConnMeta, ConnOutcome, InterfaceSnapshot, StrategyError, StrategyImpl, parse_options,
};
use netmix_strategy_kit::Scorer;
use netmix_strategy_kit::latency::Latency as LatencyScoring;

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
}

impl StrategyImpl for Latency {
    fn pick(
        &self,
        interfaces: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        self.0.pick(interfaces, conn)
    }

    fn observe(&self, outcome: &ConnOutcome) -> Result<(), StrategyError> {
        self.0.observe(outcome);
        Ok(())
    }
}

netmix_plugin_api::export_strategy! {
    name: "latency",
    description: "Lowest latency EWMA × (1 + active connections), with a tie tolerance.",
    new: Latency::from_options,
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netmix_plugin_api::OutcomeStage;

    use super::*;

    #[test]
    fn options_are_validated() {
        assert!(Latency::from_options("tolerance_pct = -1.0").is_err());
        assert!(Latency::from_options("degraded_penalty = 0.5").is_err());
        assert!(Latency::from_options("tolerance = 5").is_err());
        assert!(Latency::from_options("").is_ok());
        let l = Latency::from_options("tolerance_pct = 25.0\ndegraded_penalty = 3.0").unwrap();
        assert_eq!(l.0.config().tolerance_pct, 25.0);
        assert_eq!(l.0.config().degraded_penalty, 3.0);
    }

    #[test]
    fn picks_and_observations_reach_the_ledger() {
        let l = Latency::default();
        let ifs = [
            InterfaceSnapshot::new(0, "eth0"),
            InterfaceSnapshot::new(1, "eth1"),
        ];
        let mut conn = ConnMeta::for_addr(Ipv4Addr::new(198, 19, 0, 1), 80);
        conn.client_port = 1;
        let first = l.pick(&ifs, &conn).unwrap().first().unwrap();
        assert_eq!(l.0.ledger().in_flight(first), 1);
        let outcome = ConnOutcome::new(first, conn, OutcomeStage::Closed);
        l.observe(&outcome).unwrap();
        assert!(l.0.ledger().is_empty());
    }
}
