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
//! The scoring and the in-flight ledger live in `netmix-strategy-kit`
//! ([`netmix_strategy_kit::capacity`]), shared with the `zerotier` plugin's base strategy; this
//! crate parses the options and exports the plugin.
//!
//! Options (TOML): `unit_bytes` (typical transfer size, default 1 MiB), `degraded_penalty`
//! (default 2, at least 1).

#![allow(non_local_definitions)]

use netmix_plugin_api::{
    Choice, ConnMeta, ConnOutcome, InterfaceSnapshot, StrategyError, StrategyImpl, parse_options,
};
use netmix_strategy_kit::Scorer;
use netmix_strategy_kit::capacity::Capacity as CapacityScoring;

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
}

impl StrategyImpl for Capacity {
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
    name: "capacity",
    description: "Shares new connections in proportion to each link's measured capacity, so a batch finishes together (no hand-set weights).",
    new: Capacity::from_options,
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netmix_plugin_api::OutcomeStage;

    use super::*;

    #[test]
    fn bad_options_are_refused() {
        assert!(Capacity::from_options("unit_bytes = 0").is_err());
        assert!(Capacity::from_options("degraded_penalty = 0.5").is_err());
        assert!(Capacity::from_options("nope = 1").is_err());
        assert!(Capacity::from_options("").is_ok());
        let c = Capacity::from_options("unit_bytes = 1000\ndegraded_penalty = 3.0").unwrap();
        assert_eq!(c.0.config().unit_bytes, 1000);
    }

    #[test]
    fn picks_and_observations_reach_the_ledger() {
        let s = Capacity::default();
        let ifs = [
            InterfaceSnapshot::new(0, "wan0"),
            InterfaceSnapshot::new(1, "wan1"),
        ];
        let mut conn = ConnMeta::for_addr(Ipv4Addr::new(198, 19, 0, 1), 80);
        conn.client_port = 1;
        let first = s.pick(&ifs, &conn).unwrap().first().unwrap();
        assert_eq!(s.0.ledger().in_flight(first), 1);
        let outcome = ConnOutcome::new(first, conn, OutcomeStage::Closed);
        s.observe(&outcome).unwrap();
        assert!(s.0.ledger().is_empty());
    }
}
