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
//!   one-second download rate ([`InterfaceSnapshot::capacity_down_bps`]). A link not measured
//!   yet is assumed as fast as the average measured one (or all equal when none is), so it gets
//!   traffic and thereby a measurement.
//! - "in flight" is the engine's live count ([`InterfaceSnapshot::active_conns`]): it counts a
//!   connection from the moment the engine starts connecting through the link, so a burst of
//!   simultaneous connections sees each other.
//! - `unit` (option `unit_bytes`, default 1 MiB) is the size of a typical transfer; it sets how
//!   much a link's latency weighs against its queue: small for request/response traffic,
//!   large for bulk downloads.
//! - A Degraded link's expected completion is doubled (option `degraded_penalty`).
//!
//! Everything but the in-flight count is fixed per snapshot: [`Capacity::plan_labeled`]
//! computes it when the interfaces change, and a pick is a handful of multiplications and a
//! sort of the candidates.

use std::sync::atomic::Ordering;

use netmix_plugin_api::{
    Choice, ConnMeta, InterfaceSnapshot, LinkState, LiveCounters, Snapshot, StrategyError,
    StrategyImpl,
    abi_stable::std_types::{RArc, RString},
};

use crate::{
    Candidate, Fit, PRECOMPUTED_REASONS, SortKey, order_of, push_decimal, reason, usable,
    with_scratch,
};

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
}

/// One usable link and its constants for the current snapshot.
#[derive(Debug)]
struct Link {
    /// Which connections it can carry ([`ConnMeta::fits`]).
    fit: Fit,
    /// Its live counters (connections in flight).
    live: RArc<LiveCounters>,
    /// Expected completion added per connection queued, seconds (`unit / capacity`, or 1 when
    /// nothing is measured), times the Degraded penalty.
    per_conn: f64,
    /// Expected completion added regardless of the queue, seconds (the latency, or a
    /// thousandth of it as a tie-breaker when nothing is measured), times the penalty.
    fixed: f64,
    /// The reason up to the in-flight count (with the expected completion between them when
    /// measured): `"capacity: wan0 done in ≈"` / `"capacity: wan0 least loaded ("`.
    head: String,
    /// The reason after the in-flight count: `" in flight, 40.0 Mbit/s)"`.
    tail: String,
    /// The reasons for the in-flight counts below [`PRECOMPUTED_REASONS`].
    reasons: Vec<String>,
}

impl Link {
    /// Expected completion with `queued` connections in flight.
    fn eta(&self, queued: u32) -> f64 {
        (f64::from(queued) + 1.0) * self.per_conn + self.fixed
    }

    /// The reason of a pick that puts this link first with `queued` in flight.
    fn reason(&self, queued: u32, measured: bool) -> String {
        if !measured {
            return reason(&self.head, queued, &self.tail);
        }
        // "≈1.25s (3": the expected completion to the hundredth, then the count.
        let centis = (self.eta(queued) * 100.0 + 0.5) as u64;
        let mut r = String::with_capacity(self.head.len() + self.tail.len() + 32);
        r.push_str(&self.head);
        push_decimal(&mut r, centis / 100);
        r.push('.');
        r.push(char::from(b'0' + (centis / 10 % 10) as u8));
        r.push(char::from(b'0' + (centis % 10) as u8));
        r.push_str("s (");
        push_decimal(&mut r, u64::from(queued));
        r.push_str(&self.tail);
        r
    }
}

/// What [`Capacity`] prepares from a snapshot: every usable link's constants.
#[derive(Debug, Default)]
pub struct CapacityPlan {
    links: Vec<Link>,
    /// Whether any link has a measured capacity (else: plain least-loaded).
    measured: bool,
}

impl CapacityPlan {
    /// How many links the plan covers.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether the plan covers no link.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

impl Capacity {
    /// With explicit options (not validated: see [`CapacityConfig::validate`]).
    pub fn new(config: CapacityConfig) -> Self {
        Self { config }
    }

    /// The options.
    pub fn config(&self) -> &CapacityConfig {
        &self.config
    }

    /// The plan for the usable ones of `interfaces`, every reason starting with `label`
    /// (`""` for the plugin, `"base capacity: "` for the `zerotier` plugin's base).
    pub fn plan_labeled<'a>(
        &self,
        interfaces: impl IntoIterator<Item = &'a InterfaceSnapshot>,
        label: &str,
    ) -> CapacityPlan {
        let ifaces = usable(interfaces);
        let known: Vec<f64> = ifaces
            .iter()
            .map(|i| i.capacity_down_bps as f64)
            .filter(|&c| c > 0.0)
            .collect();
        let measured = !known.is_empty();
        let fallback_cap = if measured {
            known.iter().sum::<f64>() / known.len() as f64
        } else {
            1.0
        };
        let unit_bits = self.config.unit_bytes as f64 * 8.0;
        let links = ifaces
            .into_iter()
            .map(|i| {
                let cap = match i.capacity_down_bps as f64 {
                    c if c > 0.0 => c,
                    _ => fallback_cap,
                };
                let latency = f64::from(i.latency_ewma_us.into_option().unwrap_or(0)) / 1e6;
                let penalty = if i.state == LinkState::Degraded {
                    self.config.degraded_penalty
                } else {
                    1.0
                };
                let (per_conn, fixed, head, tail) = if measured {
                    (
                        unit_bits / cap,
                        latency,
                        format!("{label}capacity: {} done in ≈", i.name),
                        format!(" in flight, {:.1} Mbit/s)", cap / 1e6),
                    )
                } else {
                    // Nothing measured: plain least-loaded, latency breaking ties.
                    (
                        1.0,
                        latency / 1e3,
                        format!("{label}capacity: {} least loaded (", i.name),
                        " in flight; no rate measured yet)".to_owned(),
                    )
                };
                let mut link = Link {
                    fit: Fit::of(i),
                    live: i.live.clone(),
                    per_conn: per_conn * penalty,
                    fixed: fixed * penalty,
                    head,
                    tail,
                    reasons: Vec::new(),
                };
                link.reasons = (0..PRECOMPUTED_REASONS)
                    .map(|q| link.reason(q, measured))
                    .collect();
                link
            })
            .collect();
        CapacityPlan { links, measured }
    }

    /// Orders the links of `plan` that fit `conn` by expected completion, with the live
    /// in-flight counts.
    ///
    /// # Errors
    /// [`StrategyError::NoCandidate`] when no link of the plan fits `conn`.
    pub fn pick_in(&self, plan: &CapacityPlan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        with_scratch(
            plan.links.len(),
            |cands: &mut [Candidate], keys: &mut [SortKey]| {
                let mut n = 0;
                for (index, link) in plan.links.iter().enumerate() {
                    if !link.fit.fits(conn) {
                        continue;
                    }
                    let queued = link.live.active.load(Ordering::Relaxed);
                    let eta = link.eta(queued);
                    cands[n] = Candidate {
                        score: eta,
                        queued,
                        link: index as u32,
                    };
                    // By expected completion, then id.
                    keys[n] = SortKey::new(eta.to_bits(), n);
                    n += 1;
                }
                let keys = &mut keys[..n];
                keys.sort_unstable();
                let best = &cands[keys.first().ok_or(StrategyError::NoCandidate)?.position()];
                let link = &plan.links[best.link as usize];
                let reason = match link.reasons.get(best.queued as usize) {
                    Some(text) => RString::from(text.as_str()),
                    None => RString::from(link.reason(best.queued, plan.measured)),
                };
                Ok(Choice {
                    order: order_of(keys, |at| plan.links[cands[at].link as usize].fit.id),
                    reason,
                })
            },
        )
    }
}

impl StrategyImpl for Capacity {
    type Plan = CapacityPlan;

    fn plan(&self, snapshot: &Snapshot) -> Result<CapacityPlan, StrategyError> {
        Ok(self.plan_labeled(snapshot.interfaces.iter(), ""))
    }

    fn pick(&self, plan: &CapacityPlan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        self.pick_in(plan, conn)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::Ordering;

    use netmix_plugin_api::IpNetC;
    use netmix_plugin_api::abi_stable::std_types::ROption;

    use super::*;
    use crate::testing::{burst, conn};

    fn iface(id: u32, mbit: u64, latency_ms: u32) -> InterfaceSnapshot {
        let mut i = InterfaceSnapshot::new(id, &format!("wan{id}"));
        i.addrs
            .push(IpNetC::new(Ipv4Addr::new(198, 18, id as u8, 2), 24));
        i.capacity_down_bps = mbit * 1_000_000;
        i.latency_ewma_us = ROption::RSome(latency_ms * 1000);
        i
    }

    fn pick(
        s: &Capacity,
        ifs: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        s.pick(&s.plan(&Snapshot::of(ifs.to_vec()))?, conn)
    }

    #[test]
    fn a_burst_is_shared_in_proportion_to_capacity() {
        let s = Capacity::new(CapacityConfig::default());
        let ifs = [iface(0, 20, 5), iface(1, 40, 5), iface(2, 80, 5)];
        let counts = burst(&s, &ifs, 24);
        // 20:40:80 of 24 is 3.4 : 6.9 : 13.7.
        assert!((3..=4).contains(&counts[0]), "{counts:?}");
        assert!((6..=8).contains(&counts[1]), "{counts:?}");
        assert!((13..=15).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn a_closed_connection_frees_its_link() {
        let s = Capacity::new(CapacityConfig::default());
        let ifs = [iface(0, 10, 5), iface(1, 10, 5)];
        let plan = s.plan(&Snapshot::of(ifs.to_vec())).unwrap();
        let first = s.pick(&plan, &conn(1)).unwrap().first().unwrap();
        let live = &ifs[first as usize].live;
        live.active.fetch_add(1, Ordering::Relaxed);
        let c = s.pick(&plan, &conn(2)).unwrap();
        assert_ne!(
            c.first(),
            Some(first),
            "the live count is read, no rebuild needed"
        );
        live.active.fetch_sub(1, Ordering::Relaxed);
        // Equal links, nothing in flight: the same (lowest id) link again.
        assert_eq!(s.pick(&plan, &conn(3)).unwrap().first(), Some(first));
    }

    #[test]
    fn unmeasured_links_share_by_count() {
        let s = Capacity::new(CapacityConfig::default());
        let ifs = [iface(0, 0, 5), iface(1, 0, 5), iface(2, 0, 5)];
        assert_eq!(burst(&s, &ifs, 30), [10, 10, 10]);
        let c = pick(&s, &ifs, &conn(1)).unwrap();
        assert_eq!(
            c.reason,
            "capacity: wan0 least loaded (10 in flight; no rate measured yet)"
        );
    }

    #[test]
    fn latency_decides_between_idle_equal_links() {
        let s = Capacity::new(CapacityConfig {
            unit_bytes: 1000,
            ..Default::default()
        });
        let ifs = [iface(0, 50, 40), iface(1, 50, 5)];
        let c = pick(&s, &ifs, &conn(1)).unwrap();
        assert_eq!(c.order.as_slice(), &[1, 0]);
        // 8000 bit / 50 Mbit/s + 5 ms.
        assert_eq!(
            c.reason,
            "capacity: wan1 done in ≈0.01s (0 in flight, 50.0 Mbit/s)"
        );
    }

    #[test]
    fn reasons_past_the_precomputed_counts() {
        let s = Capacity::new(CapacityConfig {
            unit_bytes: 1_000_000,
            ..Default::default()
        });
        let link = iface(0, 8, 0);
        for active in [PRECOMPUTED_REASONS - 1, PRECOMPUTED_REASONS, 99] {
            link.live.active.store(active, Ordering::Relaxed);
            let c = pick(&s, std::slice::from_ref(&link), &conn(1)).unwrap();
            // (active + 1) × 8 Mbit / 8 Mbit/s.
            let expected = format!(
                "capacity: wan0 done in ≈{}.00s ({active} in flight, 8.0 Mbit/s)",
                active + 1
            );
            assert_eq!(c.reason, expected);
        }
        let unmeasured = iface(1, 0, 0);
        unmeasured.live.active.store(40, Ordering::Relaxed);
        let c = pick(&s, &[unmeasured], &conn(1)).unwrap();
        assert_eq!(
            c.reason,
            "capacity: wan1 least loaded (40 in flight; no rate measured yet)"
        );
    }

    #[test]
    fn degraded_and_unmeasured_links() {
        let s = Capacity::default();
        let mut slow_ok = iface(0, 10, 5);
        slow_ok.state = LinkState::Up;
        let mut fast_degraded = iface(1, 15, 5);
        fast_degraded.state = LinkState::Degraded;
        // 15 Mbit/s halved by the penalty is slower than 10.
        let c = pick(&s, &[slow_ok, fast_degraded], &conn(1)).unwrap();
        assert_eq!(c.order.as_slice(), &[0, 1]);
        // An unmeasured link is assumed as fast as the average measured one.
        let c = pick(
            &s,
            &[iface(0, 10, 5), iface(1, 30, 5), iface(2, 0, 1)],
            &conn(1),
        )
        .unwrap();
        assert_eq!(c.order.as_slice(), &[1, 2, 0]);
    }

    #[test]
    fn nothing_usable() {
        let s = Capacity::default();
        let mut c = conn(1);
        c.tried.push(0);
        assert_eq!(
            pick(&s, &[iface(0, 10, 5)], &c).unwrap_err(),
            StrategyError::NoCandidate
        );
        assert_eq!(pick(&s, &[], &c).unwrap_err(), StrategyError::NoCandidate);
        let mut down = iface(1, 10, 5);
        down.state = LinkState::Down;
        let plan = s.plan(&Snapshot::of(vec![down])).unwrap();
        assert!(plan.is_empty());
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
