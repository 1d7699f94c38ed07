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
//! The base plans over the non-ZeroTier interfaces only (see [`BaseStrategy::plan_of`]), and
//! reads the engine's live in-flight counts when it picks: nothing to forward from `observe`.

use netmix_plugin_api::{
    Choice, ConnMeta, InterfaceSnapshot, StrategyError,
    abi_stable::std_types::{RString, RVec},
};
use netmix_strategy_kit::capacity::{Capacity, CapacityConfig, CapacityPlan};
use netmix_strategy_kit::latency::{Latency, LatencyConfig, LatencyPlan};

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

/// What the base prepares from the non-ZeroTier interfaces of a snapshot.
#[derive(Debug)]
pub enum BasePlan {
    /// The capacity scoring's plan.
    Capacity(CapacityPlan),
    /// The latency scoring's plan.
    Latency(LatencyPlan),
    /// The usable interfaces sorted by id, each with its reason.
    LowestId(Vec<(InterfaceSnapshot, String)>),
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

    /// The plan over the usable ones of `interfaces` (the caller leaves the ZeroTier ones
    /// out); every reason names the base (`base capacity: …`).
    pub fn plan_of<'a>(
        &self,
        interfaces: impl IntoIterator<Item = &'a InterfaceSnapshot>,
    ) -> BasePlan {
        let label = format!("base {}: ", self.base().name());
        match self {
            Self::Capacity(s) => BasePlan::Capacity(s.plan_labeled(interfaces, &label)),
            Self::Latency(s) => BasePlan::Latency(s.plan_labeled(interfaces, &label)),
            Self::LowestId => {
                let mut ifaces: Vec<(InterfaceSnapshot, String)> = interfaces
                    .into_iter()
                    .filter(|i| i.is_usable())
                    .map(|i| (i.clone(), format!("{label}lowest id {}", i.name)))
                    .collect();
                ifaces.sort_by_key(|(i, _)| i.id);
                BasePlan::LowestId(ifaces)
            }
        }
    }

    /// Orders the interfaces of `plan` that fit `conn`, best first.
    ///
    /// # Errors
    /// [`StrategyError::NoCandidate`] when none fits; [`StrategyError::Other`] if `plan` was
    /// made by another base (a bug).
    pub fn pick(&self, plan: &BasePlan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        match (self, plan) {
            (Self::Capacity(s), BasePlan::Capacity(p)) => s.pick_in(p, conn),
            (Self::Latency(s), BasePlan::Latency(p)) => s.pick_in(p, conn),
            (Self::LowestId, BasePlan::LowestId(ifaces)) => {
                let fits = |(i, _): &&(InterfaceSnapshot, String)| conn.fits(i);
                let (_, reason) = ifaces.iter().find(fits).ok_or(StrategyError::NoCandidate)?;
                Ok(Choice {
                    order: ifaces
                        .iter()
                        .filter(fits)
                        .map(|(i, _)| i.id)
                        .collect::<RVec<u32>>(),
                    reason: RString::from(reason.as_str()),
                })
            }
            _ => Err(StrategyError::other("base plan of another base")),
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
        let new = |base| {
            BaseStrategy::new(base, CapacityConfig::default(), LatencyConfig::default()).unwrap()
        };
        let order = |s: &BaseStrategy| s.pick(&s.plan_of(&ifs), &conn()).unwrap();
        let c = order(&new(Base::Latency));
        assert_eq!(c.order.as_slice(), &[2, 1, 3]);
        assert_eq!(
            c.reason.as_str(),
            "base latency: latency 5.0ms×(1+0 active)"
        );
        let c = order(&new(Base::Capacity));
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
        let c = order(&new(Base::LowestId));
        assert_eq!(c.order.as_slice(), &[1, 2, 3]);
        assert_eq!(c.reason.as_str(), "base lowest-id: lowest id wan1");
        for base in [Base::Capacity, Base::Latency, Base::LowestId] {
            let s = new(base);
            assert_eq!(
                s.pick(&s.plan_of(&[]), &conn()).unwrap_err(),
                StrategyError::NoCandidate
            );
        }
        let (latency, lowest) = (new(Base::Latency), new(Base::LowestId));
        assert!(matches!(
            latency.pick(&lowest.plan_of(&ifs), &conn()),
            Err(StrategyError::Other(_))
        ));
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
