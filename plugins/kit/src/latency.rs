//! `latency`: the lowest-latency strategy, load-aware so that it spreads.
//!
//! Scores every usable interface and orders them by score, lowest first:
//!
//! ```text
//! score = latency EWMA × (1 + connections in flight) × (degraded_penalty if Degraded)
//! ```
//!
//! This is the "peak EWMA" idea (Finagle, linkerd): latency alone sends every connection to the
//! one fastest link until it saturates; multiplying by the outstanding load makes a link look
//! slower as it fills, so new connections spread once the fast link is busy.
//!
//! - "In flight" is the larger of the strategy's own [`Ledger`] (a connection counts from the
//!   moment it is picked until `observe` reports it closed, moved or failed) and the engine's
//!   `active_conns`, which reaches the snapshot a few milliseconds late: without the ledger a
//!   burst of simultaneous connections would all land on one link.
//! - An interface without a latency sample yet scores with the median EWMA of the others (or
//!   [`DEFAULT_UNKNOWN_LATENCY_US`] when no interface has one): neither shunned nor preferred,
//!   so it gets traffic and thereby measurements.
//! - Scores within `tolerance_pct` of the best count as a tie, broken by fewest connections in
//!   flight, then lowest id. Without it, two similar links would flap on every small change of
//!   their EWMAs.

use netmix_plugin_api::{
    Choice, ConnMeta, ConnOutcome, InterfaceSnapshot, LinkState, StrategyError,
};

use crate::Scorer;
use crate::ledger::Ledger;

/// The latency assumed when no interface has a sample yet, microseconds.
pub const DEFAULT_UNKNOWN_LATENCY_US: u32 = 50_000;
/// Default `tolerance_pct`.
pub const DEFAULT_TOLERANCE_PCT: f64 = 10.0;
/// Default `degraded_penalty`.
pub const DEFAULT_DEGRADED_PENALTY: f64 = 2.0;

/// Options of the `latency` strategy.
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
            tolerance_pct: DEFAULT_TOLERANCE_PCT,
            degraded_penalty: DEFAULT_DEGRADED_PENALTY,
        }
    }
}

impl LatencyConfig {
    /// Checks the option ranges.
    ///
    /// # Errors
    /// [`StrategyError::InvalidConfig`] naming the bad option.
    pub fn validate(&self) -> Result<(), StrategyError> {
        if !(0.0..=1000.0).contains(&self.tolerance_pct) {
            return Err(StrategyError::invalid_config(format!(
                "tolerance_pct must be between 0 and 1000, got {}",
                self.tolerance_pct
            )));
        }
        if !(self.degraded_penalty >= 1.0 && self.degraded_penalty.is_finite()) {
            return Err(StrategyError::invalid_config(format!(
                "degraded_penalty must be a number >= 1, got {}",
                self.degraded_penalty
            )));
        }
        Ok(())
    }
}

/// The load-aware lowest-latency strategy.
#[derive(Debug, Default)]
pub struct Latency {
    config: LatencyConfig,
    ledger: Ledger,
}

/// One candidate with its score.
struct Scored<'a> {
    iface: &'a InterfaceSnapshot,
    latency_us: u32,
    measured: bool,
    queued: u32,
    score: f64,
}

/// The median of the known EWMAs, or the default when none is known.
fn neutral_latency_us(candidates: &[&InterfaceSnapshot]) -> u32 {
    let mut known: Vec<u32> = candidates
        .iter()
        .filter_map(|i| i.latency_ewma_us.into_option())
        .collect();
    if known.is_empty() {
        return DEFAULT_UNKNOWN_LATENCY_US;
    }
    known.sort_unstable();
    known[known.len() / 2]
}

impl Latency {
    /// With explicit options (not validated: see [`LatencyConfig::validate`]).
    pub fn new(config: LatencyConfig) -> Self {
        Self {
            config,
            ledger: Ledger::new(),
        }
    }

    /// The options.
    pub fn config(&self) -> &LatencyConfig {
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

impl Scorer for Latency {
    fn pick_among(
        &self,
        usable: &[&InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        if usable.is_empty() {
            return Err(StrategyError::NoCandidate);
        }
        let pending = self.ledger.start_pick(conn);
        let neutral = neutral_latency_us(usable);
        let mut scored: Vec<Scored<'_>> = usable
            .iter()
            .map(|&iface| {
                let measured = iface.latency_ewma_us.is_some();
                let latency_us = iface.latency_ewma_us.unwrap_or(neutral).max(1);
                let queued = pending.in_flight(iface.id).max(iface.active_conns);
                let penalty = if iface.state == LinkState::Degraded {
                    self.config.degraded_penalty
                } else {
                    1.0
                };
                let score = f64::from(latency_us) * (1.0 + f64::from(queued)) * penalty;
                Scored {
                    iface,
                    latency_us,
                    measured,
                    queued,
                    score,
                }
            })
            .collect();

        let best = scored.iter().map(|s| s.score).fold(f64::INFINITY, f64::min);
        let tie_limit = best * (1.0 + self.config.tolerance_pct / 100.0);
        // Ties first, by load then id; the rest by score then id.
        scored.sort_by(|a, b| {
            let (a_tie, b_tie) = (a.score <= tie_limit, b.score <= tie_limit);
            b_tie.cmp(&a_tie).then_with(|| {
                if a_tie && b_tie {
                    a.queued.cmp(&b.queued)
                } else {
                    a.score.total_cmp(&b.score)
                }
                .then(a.iface.id.cmp(&b.iface.id))
            })
        });

        let first = &scored[0];
        pending.record(first.iface.id);
        let reason = format!(
            "latency {}{:.1}ms×(1+{} active){}",
            if first.measured { "" } else { "~" },
            f64::from(first.latency_us) / 1000.0,
            first.queued,
            if first.iface.state == LinkState::Degraded {
                " degraded"
            } else {
                ""
            },
        );
        let order: Vec<u32> = scored.iter().map(|s| s.iface.id).collect();
        Ok(Choice::new(order, reason))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netmix_plugin_api::OutcomeStage;
    use netmix_plugin_api::abi_stable::std_types::RSome;

    use super::*;

    fn iface(id: u32, latency_ms: Option<u32>, active: u32) -> InterfaceSnapshot {
        let mut s = InterfaceSnapshot::new(id, &format!("eth{id}"));
        s.latency_ewma_us = latency_ms.map(|ms| ms * 1000).into();
        s.active_conns = active;
        s
    }

    fn pick(l: &Latency, ifs: &[InterfaceSnapshot]) -> Choice {
        l.pick(ifs, &ConnMeta::for_host("example.com", 443))
            .unwrap()
    }

    fn conn(port: u16) -> ConnMeta {
        let mut c = ConnMeta::for_addr(Ipv4Addr::new(198, 19, 0, 1), 80);
        c.client_port = port;
        c
    }

    /// The first choice of `n` picks in a burst (distinct connections), counted per id.
    fn burst(l: &Latency, ifs: &[InterfaceSnapshot], n: u16) -> Vec<u32> {
        let mut counts = vec![0; ifs.len()];
        for port in 0..n {
            let first = l.pick(ifs, &conn(port)).unwrap().first().unwrap();
            counts[first as usize] += 1;
        }
        counts
    }

    #[test]
    fn prefers_lowest_latency() {
        let l = Latency::default();
        let c = pick(
            &l,
            &[
                iface(1, Some(40), 0),
                iface(2, Some(5), 0),
                iface(3, Some(20), 0),
            ],
        );
        assert_eq!(c.order.as_slice(), &[2, 3, 1]);
        assert_eq!(c.reason, "latency 5.0ms×(1+0 active)");
    }

    #[test]
    fn spreads_under_load() {
        let l = Latency::default();
        // 5 ms × (1 + 4) = 25 ms > 20 ms × 1.
        let c = pick(&l, &[iface(1, Some(5), 4), iface(2, Some(20), 0)]);
        assert_eq!(c.first(), Some(2));
        let c = pick(&l, &[iface(1, Some(5), 2), iface(2, Some(20), 0)]);
        assert_eq!(c.first(), Some(1));
    }

    #[test]
    fn a_burst_spreads_before_the_engine_counts_it() {
        // The snapshot says nothing is active (the engine's counts lag): the ledger spreads.
        let l = Latency::default();
        let equal = [
            iface(0, Some(10), 0),
            iface(1, Some(10), 0),
            iface(2, Some(10), 0),
        ];
        assert_eq!(burst(&l, &equal, 24), [8, 8, 8]);
        assert_eq!(l.ledger().len(), 24);

        let l = Latency::default();
        let counts = burst(&l, &[iface(0, Some(5), 0), iface(1, Some(30), 0)], 24);
        assert!(counts[0] > counts[1], "{counts:?}");
        assert!(counts[1] > 0, "{counts:?}");
    }

    #[test]
    fn the_larger_of_ledger_and_engine_count_is_used() {
        let l = Latency::default();
        // The engine already counts 4 on the fast link: 5 × 5 = 25 > 20.
        let c = l
            .pick(&[iface(1, Some(5), 4), iface(2, Some(20), 0)], &conn(1))
            .unwrap();
        assert_eq!(c.first(), Some(2));
        // One in flight on 2 by the ledger, none by the engine: 20 × 2 = 40 > 5 × 5.
        let c = l
            .pick(&[iface(1, Some(5), 4), iface(2, Some(20), 0)], &conn(2))
            .unwrap();
        assert_eq!(c.first(), Some(1));
        assert_eq!(c.reason, "latency 5.0ms×(1+4 active)");
    }

    #[test]
    fn observe_releases_and_moves() {
        let l = Latency::default();
        let ifs = [iface(0, Some(10), 0), iface(1, Some(10), 0)];
        let report = |port, interface, stage| ConnOutcome::new(interface, conn(port), stage);
        assert_eq!(l.pick(&ifs, &conn(1)).unwrap().first(), Some(0));
        // Failover took it to 1 instead.
        l.observe(&report(1, 1, OutcomeStage::Connected));
        assert_eq!((l.ledger().in_flight(0), l.ledger().in_flight(1)), (0, 1));
        assert_eq!(l.pick(&ifs, &conn(2)).unwrap().first(), Some(0));
        l.observe(&report(2, 0, OutcomeStage::ConnectFailed));
        l.observe(&report(1, 1, OutcomeStage::Closed));
        assert!(l.ledger().is_empty());
    }

    #[test]
    fn tolerance_breaks_ties_by_load_then_id() {
        let l = Latency::default();
        // 10.0 vs 10.5 ms: within 10%, the less loaded wins even though it is slower.
        let mut a = iface(1, Some(10), 0);
        a.latency_ewma_us = RSome(10_000);
        let mut b = iface(2, Some(10), 0);
        b.latency_ewma_us = RSome(9_600);
        assert_eq!(pick(&l, &[a.clone(), b.clone()]).first(), Some(1));
        let strict = Latency::new(LatencyConfig {
            tolerance_pct: 0.0,
            ..Default::default()
        });
        assert_eq!(pick(&strict, &[a, b]).first(), Some(2));
    }

    #[test]
    fn unknown_latency_is_neutral_and_down_is_skipped() {
        let l = Latency::default();
        let mut down = iface(4, Some(1), 0);
        down.state = LinkState::Down;
        let c = pick(
            &l,
            &[
                iface(1, Some(30), 0),
                iface(2, None, 0),
                iface(3, Some(10), 0),
                down,
            ],
        );
        assert_eq!(c.order.as_slice(), &[3, 1, 2]);
        let c = pick(&l, &[iface(1, None, 1), iface(2, None, 0)]);
        assert_eq!(c.first(), Some(2));
        assert!(c.reason.starts_with("latency ~50.0ms"), "{}", c.reason);
    }

    #[test]
    fn degraded_is_penalised() {
        let mut fast = iface(1, Some(5), 0);
        fast.state = LinkState::Degraded;
        assert_eq!(
            pick(&Latency::default(), &[fast.clone(), iface(2, Some(8), 0)]).first(),
            Some(2)
        );
        assert_eq!(
            pick(&Latency::default(), &[fast, iface(2, Some(12), 0)]).first(),
            Some(1)
        );
    }

    #[test]
    fn options_are_validated() {
        let with = |tolerance_pct, degraded_penalty| LatencyConfig {
            tolerance_pct,
            degraded_penalty,
        };
        assert!(with(-1.0, 2.0).validate().is_err());
        assert!(with(1001.0, 2.0).validate().is_err());
        assert!(with(10.0, 0.5).validate().is_err());
        assert!(with(10.0, f64::INFINITY).validate().is_err());
        assert!(with(25.0, 3.0).validate().is_ok());
        assert_eq!(
            with(-1.0, 2.0).validate().unwrap_err(),
            StrategyError::invalid_config("tolerance_pct must be between 0 and 1000, got -1")
        );
    }

    #[test]
    fn nothing_usable() {
        let l = Latency::default();
        let mut conn = ConnMeta::for_host("h", 1);
        conn.tried.push(1);
        assert_eq!(
            l.pick(&[iface(1, Some(1), 0)], &conn).unwrap_err(),
            StrategyError::NoCandidate
        );
        assert!(l.ledger().is_empty());
    }
}
