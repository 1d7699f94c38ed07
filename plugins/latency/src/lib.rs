//! `latency`: the lowest-latency strategy plugin of netmix, load-aware so that it spreads.
//!
//! The engine's router loads this crate's `cdylib` (`libnetmix_strategy_latency.so`) through
//! `netmix-plugin-api`. For each connection it scores every usable interface (state not `Down`,
//! not already tried) and orders them by score, lowest first:
//!
//! ```text
//! score = latency EWMA × (1 + active connections) × (degraded_penalty if Degraded)
//! ```
//!
//! This is the "peak EWMA" idea (Finagle, linkerd): latency alone sends every connection to the
//! one fastest link until it saturates; multiplying by the outstanding load makes a link look
//! slower as it fills, so new connections spread once the fast link is busy.
//!
//! - An interface without a latency sample yet scores with the median EWMA of the others (or
//!   [`DEFAULT_UNKNOWN_LATENCY_US`] when no interface has one): neither shunned nor preferred,
//!   so it gets traffic and thereby measurements.
//! - Scores within `tolerance_pct` of the best count as a tie, broken by fewest active
//!   connections, then lowest id. Without it, two similar links would flap on every small
//!   change of their EWMAs.
//!
//! Options (TOML): `tolerance_pct` (default 10), `degraded_penalty` (default 2.0, at least 1).
//!
//! `#![forbid(unsafe_code)]` is not possible here: `export_strategy!` expands to abi_stable
//! macros that use `unsafe`.

#![allow(non_local_definitions)]

use netmix_plugin_api::{
    Choice, ConnMeta, InterfaceSnapshot, LinkState, StrategyError, StrategyImpl, candidates,
    parse_options,
};

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

/// The load-aware lowest-latency strategy.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    config: LatencyConfig,
}

/// One candidate with its score.
struct Scored<'a> {
    iface: &'a InterfaceSnapshot,
    latency_us: u32,
    measured: bool,
    score: f64,
}

impl Latency {
    /// Builds the strategy from its options (TOML text).
    pub fn from_options(options_toml: &str) -> Result<Self, StrategyError> {
        let config: LatencyConfig = parse_options(options_toml)?;
        if !(0.0..=1000.0).contains(&config.tolerance_pct) {
            return Err(StrategyError::invalid_config(format!(
                "tolerance_pct must be between 0 and 1000, got {}",
                config.tolerance_pct
            )));
        }
        if !(config.degraded_penalty >= 1.0 && config.degraded_penalty.is_finite()) {
            return Err(StrategyError::invalid_config(format!(
                "degraded_penalty must be a number >= 1, got {}",
                config.degraded_penalty
            )));
        }
        Ok(Self { config })
    }
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

impl StrategyImpl for Latency {
    fn pick(
        &self,
        interfaces: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        let usable: Vec<&InterfaceSnapshot> = candidates(interfaces, conn).collect();
        if usable.is_empty() {
            return Err(StrategyError::NoCandidate);
        }
        let neutral = neutral_latency_us(&usable);
        let mut scored: Vec<Scored<'_>> = usable
            .into_iter()
            .map(|iface| {
                let measured = iface.latency_ewma_us.is_some();
                let latency_us = iface.latency_ewma_us.unwrap_or(neutral).max(1);
                let penalty = if iface.state == LinkState::Degraded {
                    self.config.degraded_penalty
                } else {
                    1.0
                };
                let score = f64::from(latency_us) * (1.0 + f64::from(iface.active_conns)) * penalty;
                Scored {
                    iface,
                    latency_us,
                    measured,
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
                    a.iface.active_conns.cmp(&b.iface.active_conns)
                } else {
                    a.score.total_cmp(&b.score)
                }
                .then(a.iface.id.cmp(&b.iface.id))
            })
        });

        let first = &scored[0];
        let reason = format!(
            "latency {}{:.1}ms×(1+{} active){}",
            if first.measured { "" } else { "~" },
            f64::from(first.latency_us) / 1000.0,
            first.iface.active_conns,
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

netmix_plugin_api::export_strategy! {
    name: "latency",
    description: "Lowest latency EWMA × (1 + active connections), with a tie tolerance.",
    new: Latency::from_options,
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::RSome;

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
    fn tolerance_breaks_ties_by_load_then_id() {
        let l = Latency::default();
        // 10.0 vs 10.5 ms: within 10%, the less loaded wins even though it is slower.
        let mut a = iface(1, Some(10), 0);
        a.latency_ewma_us = RSome(10_000);
        let mut b = iface(2, Some(10), 0);
        b.latency_ewma_us = RSome(9_600);
        assert_eq!(pick(&l, &[a.clone(), b.clone()]).first(), Some(1));
        let strict = Latency::from_options("tolerance_pct = 0").unwrap();
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
        let l = Latency::default();
        let mut fast = iface(1, Some(5), 0);
        fast.state = LinkState::Degraded;
        assert_eq!(
            pick(&l, &[fast.clone(), iface(2, Some(8), 0)]).first(),
            Some(2)
        );
        assert_eq!(pick(&l, &[fast, iface(2, Some(12), 0)]).first(), Some(1));
    }

    #[test]
    fn options_are_validated() {
        assert!(Latency::from_options("tolerance_pct = -1.0").is_err());
        assert!(Latency::from_options("degraded_penalty = 0.5").is_err());
        assert!(Latency::from_options("tolerance = 5").is_err());
        assert!(Latency::from_options("tolerance_pct = 25.0\ndegraded_penalty = 3.0").is_ok());
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
    }
}
