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
//! - "In flight" is the engine's live count ([`InterfaceSnapshot::active_conns`]): it counts a
//!   connection from the moment the engine starts connecting through the link, so a burst of
//!   simultaneous connections sees each other and spreads.
//! - An interface without a latency sample yet scores with the median EWMA of the others (or
//!   [`DEFAULT_UNKNOWN_LATENCY_US`] when no interface has one): neither shunned nor preferred,
//!   so it gets traffic and thereby measurements.
//! - Scores within `tolerance_pct` of the best count as a tie, broken by fewest connections in
//!   flight, then lowest id. Without it, two similar links would flap on every small change of
//!   their EWMAs.
//!
//! Everything but the in-flight count is fixed per snapshot: [`Latency::plan_labeled`] computes
//! the latencies, penalties and reason texts when the interfaces change; a pick multiplies and
//! sorts.

use std::sync::atomic::Ordering;

use netmix_plugin_api::{
    Choice, ConnMeta, InterfaceSnapshot, LinkState, LiveCounters, Snapshot, StrategyError,
    StrategyImpl,
    abi_stable::std_types::{RArc, RString},
};

use crate::{Candidate, Fit, PRECOMPUTED_REASONS, SortKey, order_of, reason, usable, with_scratch};

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
}

/// One usable link and its constants for the current snapshot.
#[derive(Debug)]
struct Link {
    /// Which connections it can carry ([`ConnMeta::fits`]).
    fit: Fit,
    /// Its live counters (connections in flight).
    live: RArc<LiveCounters>,
    /// Its latency EWMA (or the neutral value), microseconds, at least 1.
    latency_us: f64,
    /// The Degraded penalty, 1 when Up.
    penalty: f64,
    /// The reason up to the in-flight count: `"latency ~5.0ms×(1+"`.
    head: String,
    /// The reason after it: `" active)"` or `" active) degraded"`.
    tail: String,
    /// The reasons for the in-flight counts below [`PRECOMPUTED_REASONS`].
    reasons: Vec<String>,
}

/// What [`Latency`] prepares from a snapshot: every usable link's constants.
#[derive(Debug, Default)]
pub struct LatencyPlan {
    links: Vec<Link>,
    /// `1 + tolerance_pct / 100`: scores up to the best times this are a tie.
    tie: f64,
}

impl LatencyPlan {
    /// How many links the plan covers.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether the plan covers no link.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

/// The median of the known EWMAs, or the default when none is known.
fn neutral_latency_us(links: &[&InterfaceSnapshot]) -> u32 {
    let mut known: Vec<u32> = links
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
        Self { config }
    }

    /// The options.
    pub fn config(&self) -> &LatencyConfig {
        &self.config
    }

    /// The plan for the usable ones of `interfaces`, every reason starting with `label`
    /// (`""` for the plugin, `"base latency: "` for the `zerotier` plugin's base).
    pub fn plan_labeled<'a>(
        &self,
        interfaces: impl IntoIterator<Item = &'a InterfaceSnapshot>,
        label: &str,
    ) -> LatencyPlan {
        let ifaces = usable(interfaces);
        let neutral = neutral_latency_us(&ifaces);
        let links = ifaces
            .into_iter()
            .map(|i| {
                let measured = i.latency_ewma_us.is_some();
                let latency_us = i.latency_ewma_us.unwrap_or(neutral).max(1);
                let degraded = i.state == LinkState::Degraded;
                let mut link = Link {
                    fit: Fit::of(i),
                    live: i.live.clone(),
                    latency_us: f64::from(latency_us),
                    penalty: if degraded {
                        self.config.degraded_penalty
                    } else {
                        1.0
                    },
                    head: format!(
                        "{label}latency {}{:.1}ms×(1+",
                        if measured { "" } else { "~" },
                        f64::from(latency_us) / 1000.0
                    ),
                    tail: if degraded {
                        " active) degraded"
                    } else {
                        " active)"
                    }
                    .to_owned(),
                    reasons: Vec::new(),
                };
                link.reasons = (0..PRECOMPUTED_REASONS)
                    .map(|q| reason(&link.head, q, &link.tail))
                    .collect();
                link
            })
            .collect();
        LatencyPlan {
            links,
            tie: 1.0 + self.config.tolerance_pct / 100.0,
        }
    }

    /// Orders the links of `plan` that fit `conn` by score, with the live in-flight counts.
    ///
    /// # Errors
    /// [`StrategyError::NoCandidate`] when no link of the plan fits `conn`.
    pub fn pick_in(&self, plan: &LatencyPlan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        with_scratch(
            plan.links.len(),
            |cands: &mut [Candidate], keys: &mut [SortKey]| {
                let mut n = 0;
                let mut best = f64::INFINITY;
                for (index, link) in plan.links.iter().enumerate() {
                    if !link.fit.fits(conn) {
                        continue;
                    }
                    let queued = link.live.active.load(Ordering::Relaxed);
                    let score = link.latency_us * (1.0 + f64::from(queued)) * link.penalty;
                    if score < best {
                        best = score;
                    }
                    cands[n] = Candidate {
                        score,
                        queued,
                        link: index as u32,
                    };
                    keys[n] = SortKey::new(0, n);
                    n += 1;
                }
                // Ties first, by load then id; the rest by score then id. Scores are positive, so
                // their bits order like them; the top bit puts them after every tie.
                let tie_limit = best * plan.tie;
                let keys = &mut keys[..n];
                for (key, c) in keys.iter_mut().zip(&*cands) {
                    let primary = if c.score <= tie_limit {
                        SortKey::count(c.queued)
                    } else {
                        (1 << 63) | c.score.to_bits()
                    };
                    *key = SortKey::new(primary, key.position());
                }
                keys.sort_unstable();
                let first = &cands[keys.first().ok_or(StrategyError::NoCandidate)?.position()];
                let link = &plan.links[first.link as usize];
                Ok(Choice {
                    order: order_of(keys, |at| plan.links[cands[at].link as usize].fit.id),
                    reason: match link.reasons.get(first.queued as usize) {
                        Some(text) => RString::from(text.as_str()),
                        None => RString::from(reason(&link.head, first.queued, &link.tail)),
                    },
                })
            },
        )
    }
}

impl StrategyImpl for Latency {
    type Plan = LatencyPlan;

    fn plan(&self, snapshot: &Snapshot) -> Result<LatencyPlan, StrategyError> {
        Ok(self.plan_labeled(snapshot.interfaces.iter(), ""))
    }

    fn pick(&self, plan: &LatencyPlan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        self.pick_in(plan, conn)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::Ordering;

    use netmix_plugin_api::IpNetC;
    use netmix_plugin_api::abi_stable::std_types::RSome;

    use super::*;
    use crate::testing::{burst, conn};

    fn iface(id: u32, latency_ms: Option<u32>, active: u32) -> InterfaceSnapshot {
        let mut s = InterfaceSnapshot::new(id, &format!("eth{id}"));
        s.addrs
            .push(IpNetC::new(Ipv4Addr::new(198, 18, id as u8, 2), 24));
        s.latency_ewma_us = latency_ms.map(|ms| ms * 1000).into();
        s.live.active.store(active, Ordering::Relaxed);
        s
    }

    fn plan(l: &Latency, ifs: &[InterfaceSnapshot]) -> LatencyPlan {
        l.plan(&Snapshot::of(ifs.to_vec())).unwrap()
    }

    fn pick(l: &Latency, ifs: &[InterfaceSnapshot]) -> Choice {
        l.pick(&plan(l, ifs), &ConnMeta::for_host("example.com", 443))
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
    fn a_burst_spreads_as_the_engine_counts_its_connects() {
        let l = Latency::default();
        let equal = [
            iface(0, Some(10), 0),
            iface(1, Some(10), 0),
            iface(2, Some(10), 0),
        ];
        assert_eq!(burst(&l, &equal, 24), [8, 8, 8]);

        let l = Latency::default();
        let counts = burst(&l, &[iface(0, Some(5), 0), iface(1, Some(30), 0)], 24);
        assert!(counts[0] > counts[1], "{counts:?}");
        assert!(counts[1] > 0, "{counts:?}");
    }

    #[test]
    fn the_live_count_is_read_at_pick_time() {
        let l = Latency::default();
        let ifs = [iface(1, Some(5), 0), iface(2, Some(20), 0)];
        let plan = plan(&l, &ifs);
        assert_eq!(l.pick(&plan, &conn(1)).unwrap().first(), Some(1));
        // Four connects start on the fast link after the rebuild: 5 × 5 = 25 > 20.
        ifs[0].live.active.store(4, Ordering::Relaxed);
        let c = l.pick(&plan, &conn(2)).unwrap();
        assert_eq!(c.first(), Some(2));
        assert_eq!(c.reason, "latency 20.0ms×(1+0 active)");
        // One of them ends: 5 × 4 = 20 ties with 20 × 1, and the less loaded wins the tie.
        ifs[0].live.active.store(3, Ordering::Relaxed);
        let c = l.pick(&plan, &conn(3)).unwrap();
        assert_eq!(c.first(), Some(2));
        ifs[0].live.active.store(2, Ordering::Relaxed);
        let c = l.pick(&plan, &conn(4)).unwrap();
        assert_eq!(c.first(), Some(1));
        assert_eq!(c.reason, "latency 5.0ms×(1+2 active)");
    }

    #[test]
    fn tolerance_breaks_ties_by_load_then_id() {
        let l = Latency::default();
        // 10.0 vs 9.6 ms: within 10%, the lower id wins even though it is slower.
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
        let c = pick(&Latency::default(), &[fast, iface(2, Some(12), 0)]);
        assert_eq!(c.first(), Some(1));
        assert_eq!(c.reason, "latency 5.0ms×(1+0 active) degraded");
    }

    #[test]
    fn reasons_past_the_precomputed_counts() {
        let l = Latency::default();
        for active in [PRECOMPUTED_REASONS - 1, PRECOMPUTED_REASONS, 1000] {
            let c = pick(&l, &[iface(1, Some(7), active)]);
            assert_eq!(c.reason, format!("latency 7.0ms×(1+{active} active)"));
        }
    }

    #[test]
    fn labels_prefix_every_reason() {
        let l = Latency::default();
        let ifs = [iface(1, Some(7), 0)];
        let plan = l.plan_labeled(&ifs, "base latency: ");
        let c = l.pick_in(&plan, &conn(1)).unwrap();
        assert_eq!(c.reason, "base latency: latency 7.0ms×(1+0 active)");
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
        let plan = plan(&l, &[iface(1, Some(1), 0)]);
        assert_eq!(
            l.pick(&plan, &conn).unwrap_err(),
            StrategyError::NoCandidate
        );
        let v6 = ConnMeta::for_addr("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(), 80);
        assert_eq!(
            l.pick(&plan, &v6).unwrap_err(),
            StrategyError::NoCandidate,
            "no IPv6 source"
        );
    }
}
