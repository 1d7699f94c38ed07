//! The base strategy for traffic that is not for a ZeroTier network.
//!
//! A plugin cannot load another plugin, and linking `netmix-strategy-latency`'s rlib is not
//! possible either: its `export_strategy!` root-module symbol would clash with this plugin's
//! in the cdylib. So the `latency` plugin's scoring is restated here, same formula and options:
//!
//! ```text
//! score = latency EWMA × (1 + active connections) × (degraded_penalty if Degraded)
//! ```
//!
//! An interface without a sample scores with the median EWMA of the others (50 ms when none
//! has one); scores within `tolerance_pct` of the best are a tie, broken by fewest active
//! connections, then lowest id.

use netmix_plugin_api::{Choice, InterfaceSnapshot, LinkState, StrategyError};

/// The latency assumed when no interface has a sample yet, microseconds.
pub const DEFAULT_UNKNOWN_LATENCY_US: u32 = 50_000;

/// Options of the `latency` base (the `latency` plugin's options).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyConfig {
    /// Scores within this many percent of the best are a tie (broken by load, then id).
    pub tolerance_pct: f64,
    /// Score multiplier for interfaces in state `Degraded`.
    pub degraded_penalty: f64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            tolerance_pct: 10.0,
            degraded_penalty: 2.0,
        }
    }
}

impl LatencyConfig {
    /// Checks the ranges the `latency` plugin checks.
    ///
    /// # Errors
    /// [`StrategyError::InvalidConfig`] naming the bad option.
    pub fn validate(&self) -> Result<(), StrategyError> {
        if !(0.0..=1000.0).contains(&self.tolerance_pct) {
            return Err(StrategyError::invalid_config(format!(
                "latency.tolerance_pct must be between 0 and 1000, got {}",
                self.tolerance_pct
            )));
        }
        if !(self.degraded_penalty >= 1.0 && self.degraded_penalty.is_finite()) {
            return Err(StrategyError::invalid_config(format!(
                "latency.degraded_penalty must be a number >= 1, got {}",
                self.degraded_penalty
            )));
        }
        Ok(())
    }
}

/// Orders `usable` by score, best first, with the `latency` plugin's reason for the first.
///
/// # Errors
/// [`StrategyError::NoCandidate`] when `usable` is empty.
pub fn latency_order(
    config: &LatencyConfig,
    usable: &[&InterfaceSnapshot],
) -> Result<Choice, StrategyError> {
    if usable.is_empty() {
        return Err(StrategyError::NoCandidate);
    }
    let mut known: Vec<u32> = usable
        .iter()
        .filter_map(|i| i.latency_ewma_us.into_option())
        .collect();
    known.sort_unstable();
    let neutral = known
        .get(known.len() / 2)
        .copied()
        .unwrap_or(DEFAULT_UNKNOWN_LATENCY_US);
    let mut scored: Vec<(&InterfaceSnapshot, u32, bool, f64)> = usable
        .iter()
        .map(|&i| {
            let measured = i.latency_ewma_us.is_some();
            let latency = i.latency_ewma_us.unwrap_or(neutral).max(1);
            let penalty = if i.state == LinkState::Degraded {
                config.degraded_penalty
            } else {
                1.0
            };
            let score = f64::from(latency) * (1.0 + f64::from(i.active_conns)) * penalty;
            (i, latency, measured, score)
        })
        .collect();
    let best = scored.iter().map(|s| s.3).fold(f64::INFINITY, f64::min);
    let tie = best * (1.0 + config.tolerance_pct / 100.0);
    scored.sort_by(|a, b| {
        let (at, bt) = (a.3 <= tie, b.3 <= tie);
        bt.cmp(&at).then_with(|| {
            if at && bt {
                a.0.active_conns.cmp(&b.0.active_conns)
            } else {
                a.3.total_cmp(&b.3)
            }
            .then(a.0.id.cmp(&b.0.id))
        })
    });
    let (first, latency, measured, _) = scored[0];
    let reason = format!(
        "latency {}{:.1}ms×(1+{} active){}",
        if measured { "" } else { "~" },
        f64::from(latency) / 1000.0,
        first.active_conns,
        if first.state == LinkState::Degraded {
            " degraded"
        } else {
            ""
        },
    );
    Ok(Choice::new(
        scored.iter().map(|s| s.0.id).collect::<Vec<_>>(),
        reason,
    ))
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::RSome;

    use super::*;

    #[test]
    fn same_order_as_the_latency_plugin() {
        let mk = |id: u32, ms: Option<u32>, active: u32| {
            let mut s = InterfaceSnapshot::new(id, "x");
            if let Some(ms) = ms {
                s.latency_ewma_us = RSome(ms * 1000);
            }
            s.active_conns = active;
            s
        };
        let c = LatencyConfig::default();
        let ifs = [mk(1, Some(40), 0), mk(2, Some(5), 0), mk(3, Some(20), 0)];
        let r = latency_order(&c, &ifs.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(r.order.as_slice(), &[2, 3, 1]);
        assert_eq!(r.reason.as_str(), "latency 5.0ms×(1+0 active)");
        let ifs = [mk(1, Some(5), 4), mk(2, Some(20), 0), mk(3, None, 0)];
        let r = latency_order(&c, &ifs.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(r.order.as_slice(), &[2, 3, 1]);
        assert!(latency_order(&c, &[]).is_err());
        assert!(
            LatencyConfig {
                tolerance_pct: -1.0,
                ..c.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            LatencyConfig {
                degraded_penalty: 0.5,
                ..c
            }
            .validate()
            .is_err()
        );
    }
}
