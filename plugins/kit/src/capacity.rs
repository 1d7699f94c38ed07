//! `capacity`: place each new connection where the work already queued will finish first.
//!
//! Blind balancers give every link the same share, so on unequal links the slowest one becomes
//! the straggler and a batch of downloads finishes later than on the best link alone. This
//! strategy gives each link a share proportional to what it can carry, with no hand-set
//! weights:
//!
//! ```text
//! expected completion on link i = (connections in flight on i + 1) × unit / capacity_i + latency_i
//! ```
//!
//! - `capacity_i` is the link's measured delivery rate: the engine's decaying peak of its
//!   one-second download rate (`peak_down_bps` extension field). A link not measured yet is
//!   assumed as fast as the average measured one (or all equal when none is), so it gets
//!   traffic and thereby a measurement.
//! - "in flight" is the larger of the strategy's own [`Ledger`] (a connection counts from the
//!   moment it is picked until `observe` reports it closed, moved or failed) and the engine's
//!   `active_conns`, which reaches the snapshot too late for a burst of simultaneous
//!   connections.
//! - `unit` (option `unit_bytes`, default 1 MiB) is the size of a typical transfer; it sets how
//!   much a link's latency weighs against its queue: small for request/response traffic,
//!   large for bulk downloads.
//! - A Degraded link's expected completion is doubled (option `degraded_penalty`).

use netmix_plugin_api::{
    Choice, ConnMeta, ConnOutcome, InterfaceSnapshot, LinkState, StrategyError,
};

use crate::Scorer;
use crate::ledger::Ledger;

/// Options (`[strategies.capacity]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapacityConfig {
    /// Typical transfer size in bytes (how much latency weighs against queueing).
    pub unit_bytes: u64,
    /// Multiplier on a Degraded link's expected completion.
    pub degraded_penalty: f64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            unit_bytes: 1 << 20,
            degraded_penalty: 2.0,
        }
    }
}

impl CapacityConfig {
    /// Checks the option ranges.
    ///
    /// # Errors
    /// [`StrategyError::InvalidConfig`] naming the bad option.
    pub fn validate(&self) -> Result<(), StrategyError> {
        if self.unit_bytes == 0 {
            return Err(StrategyError::invalid_config(
                "unit_bytes must be at least 1",
            ));
        }
        if self.degraded_penalty.is_nan() || self.degraded_penalty < 1.0 {
            return Err(StrategyError::invalid_config(
                "degraded_penalty must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The strategy.
#[derive(Debug, Default)]
pub struct Capacity {
    config: CapacityConfig,
    ledger: Ledger,
}

/// A link's measured capacity in bit/s, 0 when unknown.
fn capacity_bps(i: &InterfaceSnapshot) -> f64 {
    i.ext
        .get("peak_down_bps")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

impl Capacity {
    /// With explicit options (not validated: see [`CapacityConfig::validate`]).
    pub fn new(config: CapacityConfig) -> Self {
        Self {
            config,
            ledger: Ledger::new(),
        }
    }

    /// The options.
    pub fn config(&self) -> &CapacityConfig {
        &self.config
    }

    /// The connections picked and not closed yet.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Feedback from the engine: keeps the in-flight ledger up to date.
    pub fn observe(&self, outcome: &ConnOutcome) {
        self.ledger.observe(outcome);
    }
}

impl Scorer for Capacity {
    fn pick_among(
        &self,
        usable: &[&InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        if usable.is_empty() {
            return Err(StrategyError::NoCandidate);
        }
        let pending = self.ledger.start_pick(conn);

        let known: Vec<f64> = usable
            .iter()
            .map(|i| capacity_bps(i))
            .filter(|c| *c > 0.0)
            .collect();
        let fallback_cap = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let unit_bits = self.config.unit_bytes as f64 * 8.0;
        let mut scored: Vec<(f64, &InterfaceSnapshot, f64, u32)> = usable
            .iter()
            .map(|i| {
                let cap = match capacity_bps(i) {
                    c if c > 0.0 => c,
                    _ => fallback_cap,
                };
                let queued = pending.in_flight(i.id).max(i.active_conns);
                let latency = f64::from(i.latency_ewma_us.into_option().unwrap_or(0)) / 1e6;
                let mut eta = (f64::from(queued) + 1.0) * unit_bits / cap + latency;
                if known.is_empty() {
                    // Nothing measured: plain least-loaded, latency breaking ties.
                    eta = f64::from(queued) + 1.0 + latency / 1e3;
                }
                if i.state == LinkState::Degraded {
                    eta *= self.config.degraded_penalty;
                }
                (eta, *i, cap, queued)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
        let (eta, best, cap, queued) = scored[0];
        pending.record(best.id);
        let reason = if known.is_empty() {
            format!(
                "capacity: {} least loaded ({queued} in flight; no rate measured yet)",
                best.name
            )
        } else {
            format!(
                "capacity: {} done in ≈{:.2}s ({queued} in flight, {:.1} Mbit/s)",
                best.name,
                eta,
                cap / 1e6
            )
        };
        Ok(Choice::new(
            scored.iter().map(|s| s.1.id).collect::<Vec<_>>(),
            reason,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netmix_plugin_api::OutcomeStage;
    use netmix_plugin_api::abi_stable::std_types::ROption;

    use super::*;

    fn iface(id: u32, mbit: u64, latency_ms: u32) -> InterfaceSnapshot {
        let mut i = InterfaceSnapshot::new(id, &format!("wan{id}"));
        if mbit > 0 {
            i.ext.set("peak_down_bps", (mbit * 1_000_000).to_string());
        }
        i.latency_ewma_us = ROption::RSome(latency_ms * 1000);
        i
    }

    fn conn(port: u16) -> ConnMeta {
        let mut c = ConnMeta::for_addr(Ipv4Addr::new(198, 19, 0, 1), 80);
        c.client = Ipv4Addr::LOCALHOST.into();
        c.client_port = port;
        c
    }

    #[test]
    fn a_burst_is_shared_in_proportion_to_capacity() {
        let s = Capacity::new(CapacityConfig::default());
        let ifs = [iface(0, 20, 5), iface(1, 40, 5), iface(2, 80, 5)];
        let mut counts = [0; 3];
        for port in 0..24 {
            let c = s.pick(&ifs, &conn(port)).unwrap();
            counts[c.first().unwrap() as usize] += 1;
        }
        // 20:40:80 of 24 is 3.4 : 6.9 : 13.7.
        assert!((3..=4).contains(&counts[0]), "{counts:?}");
        assert!((6..=8).contains(&counts[1]), "{counts:?}");
        assert!((13..=15).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn closed_connections_leave_the_ledger() {
        let s = Capacity::new(CapacityConfig::default());
        let ifs = [iface(0, 10, 5), iface(1, 10, 5)];
        let first = s.pick(&ifs, &conn(1)).unwrap().first().unwrap();
        let outcome = ConnOutcome::new(first, conn(1), OutcomeStage::Closed);
        s.observe(&outcome);
        assert!(s.ledger().is_empty());
        // Equal links, nothing in flight: the same (lowest id) link again.
        assert_eq!(s.pick(&ifs, &conn(2)).unwrap().first(), Some(first));
    }

    #[test]
    fn unmeasured_links_share_by_count() {
        let s = Capacity::new(CapacityConfig::default());
        let ifs = [iface(0, 0, 5), iface(1, 0, 5), iface(2, 0, 5)];
        let mut counts = [0; 3];
        for port in 0..30 {
            counts[s.pick(&ifs, &conn(port)).unwrap().first().unwrap() as usize] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
    }

    #[test]
    fn latency_decides_between_idle_equal_links() {
        let s = Capacity::new(CapacityConfig {
            unit_bytes: 1000,
            ..Default::default()
        });
        let ifs = [iface(0, 50, 40), iface(1, 50, 5)];
        assert_eq!(s.pick(&ifs, &conn(1)).unwrap().first(), Some(1));
    }

    #[test]
    fn nothing_usable() {
        let s = Capacity::default();
        let mut c = conn(1);
        c.tried.push(0);
        assert_eq!(
            s.pick(&[iface(0, 10, 5)], &c).unwrap_err(),
            StrategyError::NoCandidate
        );
        assert_eq!(
            s.pick_among(&[], &c).unwrap_err(),
            StrategyError::NoCandidate
        );
        assert!(s.ledger().is_empty());
    }

    #[test]
    fn options_are_validated() {
        assert!(CapacityConfig::default().validate().is_ok());
        let zero = CapacityConfig {
            unit_bytes: 0,
            ..Default::default()
        };
        assert_eq!(
            zero.validate().unwrap_err(),
            StrategyError::invalid_config("unit_bytes must be at least 1")
        );
        for bad in [0.5, f64::NAN] {
            let c = CapacityConfig {
                degraded_penalty: bad,
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
