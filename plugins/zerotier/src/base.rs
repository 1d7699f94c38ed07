//! The base strategy for traffic that is not for a ZeroTier network.
//!
//! A plugin cannot load another plugin, and it cannot link another plugin crate either (both
//! would export the abi_stable root-module symbol), so the base strategies come from
//! `netmix-strategy-kit`, the same code the `capacity` and `latency` plugins run:
//!
//! - `capacity` (default): new connections shared in proportion to each link's measured
//!   capacity ([`netmix_strategy_kit::capacity`]); options in `[strategies.zerotier.capacity]`.
//! - `latency`: load-aware lowest latency ([`netmix_strategy_kit::latency`]); options in
//!   `[strategies.zerotier.latency]`.
//! - `lowest-id`: the usable interface with the lowest id (predictable; for tests and simple
//!   setups).
//!
//! `capacity` and `latency` count their own connections in flight, so the plugin forwards every
//! `observe` to the base. A connection sent to an exit node is counted on the base's first
//! choice (its fallback) until `Connected` moves it to the interface it really went through.

use netmix_plugin_api::{Choice, ConnMeta, ConnOutcome, InterfaceSnapshot, StrategyError};
use netmix_strategy_kit::Scorer;
use netmix_strategy_kit::capacity::{Capacity, CapacityConfig};
use netmix_strategy_kit::latency::{Latency, LatencyConfig};

/// The `base` option: which strategy orders traffic that is not for a ZeroTier network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Base {
    /// Shares connections in proportion to each link's measured capacity (the `capacity`
    /// plugin's scoring).
    #[default]
    Capacity,
    /// Load-aware lowest latency (the `latency` plugin's scoring).
    Latency,
    /// The usable interface with the lowest id (predictable; for tests and simple setups).
    LowestId,
}

impl Base {
    /// The option's value, as written in the config and in reasons (`base capacity: …`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::Latency => "latency",
            Self::LowestId => "lowest-id",
        }
    }
}

/// Prefixes an [`StrategyError::InvalidConfig`] message with its options table, so that the
/// user knows where to look (`latency.tolerance_pct must be …`).
fn in_table(table: &str, error: StrategyError) -> StrategyError {
    match error {
        StrategyError::InvalidConfig(msg) => {
            StrategyError::invalid_config(format!("{table}.{msg}"))
        }
        other => other,
    }
}

/// A running base strategy.
#[derive(Debug)]
pub enum BaseStrategy {
    /// See [`Base::Capacity`].
    Capacity(Capacity),
    /// See [`Base::Latency`].
    Latency(Latency),
    /// See [`Base::LowestId`].
    LowestId,
}

impl Default for BaseStrategy {
    fn default() -> Self {
        Self::Capacity(Capacity::default())
    }
}

impl BaseStrategy {
    /// The base strategy `base`, with its options. Both option tables are checked, the unused
    /// one too, so that a mistake does not lie in wait for the day the base changes.
    ///
    /// # Errors
    /// [`StrategyError::InvalidConfig`] naming the bad option (`capacity.unit_bytes …`).
    pub fn new(
        base: Base,
        capacity: CapacityConfig,
        latency: LatencyConfig,
    ) -> Result<Self, StrategyError> {
        capacity.validate().map_err(|e| in_table("capacity", e))?;
        latency.validate().map_err(|e| in_table("latency", e))?;
        Ok(match base {
            Base::Capacity => Self::Capacity(Capacity::new(capacity)),
            Base::Latency => Self::Latency(Latency::new(latency)),
            Base::LowestId => Self::LowestId,
        })
    }

    /// Which base this is.
    pub fn base(&self) -> Base {
        match self {
            Self::Capacity(_) => Base::Capacity,
            Self::Latency(_) => Base::Latency,
            Self::LowestId => Base::LowestId,
        }
    }

    /// Orders `usable` (already filtered: usable, not tried, not ZeroTier) for `conn`, best
    /// first; the reason names the base (`base capacity: …`).
    ///
    /// # Errors
    /// [`StrategyError::NoCandidate`] when `usable` is empty.
    pub fn order(
        &self,
        usable: &[&InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        let choice = match self {
            Self::Capacity(s) => s.pick_among(usable, conn)?,
            Self::Latency(s) => s.pick_among(usable, conn)?,
            Self::LowestId => {
                let first = usable
                    .iter()
                    .min_by_key(|i| i.id)
                    .ok_or(StrategyError::NoCandidate)?;
                let mut ids: Vec<u32> = usable.iter().map(|i| i.id).collect();
                ids.sort_unstable();
                Choice::new(ids, format!("lowest id {}", first.name))
            }
        };
        Ok(Choice {
            reason: format!("base {}: {}", self.base().name(), choice.reason).into(),
            ..choice
        })
    }

    /// Feedback from the engine, for the bases that count their connections in flight.
    pub fn observe(&self, outcome: &ConnOutcome) {
        match self {
            Self::Capacity(s) => s.observe(outcome),
            Self::Latency(s) => s.observe(outcome),
            Self::LowestId => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use netmix_plugin_api::abi_stable::std_types::RSome;

    use super::*;

    fn iface(id: u32, latency_ms: u32) -> InterfaceSnapshot {
        let mut s = InterfaceSnapshot::new(id, &format!("wan{id}"));
        s.latency_ewma_us = RSome(latency_ms * 1000);
        s
    }

    fn conn() -> ConnMeta {
        ConnMeta::for_host("example.com", 443)
    }

    #[test]
    fn each_base_orders_and_names_itself() {
        let ifs = [iface(3, 40), iface(1, 20), iface(2, 5)];
        let usable: Vec<&InterfaceSnapshot> = ifs.iter().collect();
        let new = |base| {
            BaseStrategy::new(base, CapacityConfig::default(), LatencyConfig::default()).unwrap()
        };
        let c = new(Base::Latency).order(&usable, &conn()).unwrap();
        assert_eq!(c.order.as_slice(), &[2, 1, 3]);
        assert_eq!(
            c.reason.as_str(),
            "base latency: latency 5.0ms×(1+0 active)"
        );
        let c = new(Base::Capacity).order(&usable, &conn()).unwrap();
        assert_eq!(
            c.order.as_slice(),
            &[2, 1, 3],
            "nothing measured: latency breaks ties"
        );
        assert!(
            c.reason.starts_with("base capacity: capacity: wan2"),
            "{}",
            c.reason
        );
        let c = new(Base::LowestId).order(&usable, &conn()).unwrap();
        assert_eq!(c.order.as_slice(), &[1, 2, 3]);
        assert_eq!(c.reason.as_str(), "base lowest-id: lowest id wan1");
        for base in [Base::Capacity, Base::Latency, Base::LowestId] {
            assert_eq!(
                new(base).order(&[], &conn()).unwrap_err(),
                StrategyError::NoCandidate
            );
        }
    }

    #[test]
    fn bad_options_name_their_table() {
        let bad_latency = LatencyConfig {
            tolerance_pct: -1.0,
            ..Default::default()
        };
        let e =
            BaseStrategy::new(Base::Capacity, CapacityConfig::default(), bad_latency).unwrap_err();
        assert_eq!(
            e,
            StrategyError::invalid_config(
                "latency.tolerance_pct must be between 0 and 1000, got -1"
            )
        );
        let bad_capacity = CapacityConfig {
            unit_bytes: 0,
            ..Default::default()
        };
        let e =
            BaseStrategy::new(Base::Latency, bad_capacity, LatencyConfig::default()).unwrap_err();
        assert_eq!(
            e,
            StrategyError::invalid_config("capacity.unit_bytes must be at least 1")
        );
    }
}
