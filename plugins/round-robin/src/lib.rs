//! `round-robin`: the weighted round-robin strategy plugin of netmix.
//!
//! The engine's router loads this crate's `cdylib` (`libnetmix_strategy_round_robin.so`) through
//! `netmix-plugin-api` and asks it to order the interfaces for every new connection. Each usable
//! interface (state not `Down`) is picked in proportion to its configured `weight`: over one
//! cycle of `sum(weights)` picks, an interface of weight `w` is first exactly `w` times, spread
//! out the way nginx's *smooth* weighted round-robin spreads them (1:2:3 gives
//! `c b a c b c`, not `a b b c c c`).
//!
//! # Design
//!
//! The cycle is precomputed once per interface set and shared behind an `RwLock<Arc<..>>`; a pick
//! only bumps an `AtomicUsize` cursor and reads the cycle, so concurrent picks never wait on each
//! other. The set is keyed by `(id, weight)` of the usable interfaces, sorted by id, so a
//! hot-plugged interface, a removed one, a state flip or a weight change rebuilds the cycle and
//! never indexes out of bounds (exact proportions hold for a stable set).
//!
//! Interfaces already tried for the connection are skipped (the cursor walks on to the next
//! untried one). Weight 0 means "last resort": such interfaces are never first while another is
//! usable, and come last among the fallbacks. After the first pick, the fallbacks are the other
//! usable interfaces in the order the cycle would reach them.
//!
//! Options: none (an empty table). Unknown keys are an error.
//!
//! `#![forbid(unsafe_code)]` is not possible here: `export_strategy!` expands to abi_stable
//! macros that use `unsafe`.

#![allow(non_local_definitions)]

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicUsize, Ordering},
};

use netmix_plugin_api::{
    Choice, ConnMeta, InterfaceSnapshot, StrategyError, StrategyImpl, parse_options,
};

/// Longest cycle kept; larger weight sums are scaled down proportionally.
const MAX_CYCLE_LEN: u64 = 10_000;

/// Options of the `round-robin` strategy (none yet).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRobinConfig {}

/// One precomputed cycle for one set of interfaces.
#[derive(Debug, Default)]
struct Cycle {
    /// `(id, weight)` of the usable interfaces, sorted by id: what the cycle was built for.
    key: Vec<(u32, u32)>,
    /// Interface ids in pick order; each id appears (scaled) `weight` times.
    seq: Vec<u32>,
    /// Usable interfaces of weight 0, sorted by id: fallbacks of last resort.
    last_resort: Vec<u32>,
}

impl Cycle {
    fn build(key: Vec<(u32, u32)>) -> Self {
        let all_zero = key.iter().all(|&(_, w)| w == 0);
        let weighted: Vec<(u32, u64)> = key
            .iter()
            .filter(|&&(_, w)| w > 0 || all_zero)
            .map(|&(id, w)| (id, u64::from(w.max(1))))
            .collect();
        let last_resort = if all_zero {
            Vec::new()
        } else {
            key.iter()
                .filter(|&&(_, w)| w == 0)
                .map(|&(id, _)| id)
                .collect()
        };
        let seq = smooth_sequence(&reduce_weights(weighted));
        Self {
            key,
            seq,
            last_resort,
        }
    }
}

/// Divides the weights by their gcd, then scales them down if their sum exceeds
/// [`MAX_CYCLE_LEN`] (every weight stays at least 1).
fn reduce_weights(weighted: Vec<(u32, u64)>) -> Vec<(u32, u64)> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = weighted.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    let weighted: Vec<_> = weighted.into_iter().map(|(id, w)| (id, w / g)).collect();
    let total: u64 = weighted.iter().map(|&(_, w)| w).sum();
    if total <= MAX_CYCLE_LEN {
        return weighted;
    }
    weighted
        .into_iter()
        .map(|(id, w)| (id, (w * MAX_CYCLE_LEN / total).max(1)))
        .collect()
}

/// One cycle of smooth weighted round-robin: each step adds every weight to its running
/// counter, picks the largest counter (lowest index on ties) and subtracts the total from it.
fn smooth_sequence(weighted: &[(u32, u64)]) -> Vec<u32> {
    let total: u64 = weighted.iter().map(|&(_, w)| w).sum();
    let mut current = vec![0_i64; weighted.len()];
    let mut seq = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, &(_, w)) in weighted.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        seq.push(weighted[best].0);
    }
    seq
}

/// The weighted round-robin strategy.
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursor: AtomicUsize,
    cycle: RwLock<Arc<Cycle>>,
}

impl RoundRobin {
    /// Builds the strategy from its options (TOML text; must be empty or an empty table).
    pub fn from_options(options_toml: &str) -> Result<Self, StrategyError> {
        let RoundRobinConfig {} = parse_options(options_toml)?;
        Ok(Self::default())
    }

    /// The cycle for this set of usable interfaces, rebuilt if the set changed.
    fn cycle_for(&self, key: Vec<(u32, u32)>) -> Arc<Cycle> {
        {
            let cycle = self.cycle.read().unwrap_or_else(|e| e.into_inner());
            if cycle.key == key {
                return Arc::clone(&cycle);
            }
        }
        let mut cycle = self.cycle.write().unwrap_or_else(|e| e.into_inner());
        if cycle.key != key {
            *cycle = Arc::new(Cycle::build(key));
        }
        Arc::clone(&cycle)
    }
}

impl StrategyImpl for RoundRobin {
    fn pick(
        &self,
        interfaces: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        let mut key: Vec<(u32, u32)> = interfaces
            .iter()
            .filter(|i| i.is_usable())
            .map(|i| (i.id, i.weight))
            .collect();
        key.sort_unstable();
        key.dedup_by_key(|&mut (id, _)| id);
        let cycle = self.cycle_for(key);
        let len = cycle.seq.len();

        let mut order: Vec<u32> = Vec::with_capacity(cycle.key.len());
        let mut first_pos = None;
        if len > 0 {
            let start = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
            for step in 0..len {
                let pos = (start + step) % len;
                let id = cycle.seq[pos];
                if conn.was_tried(id) || order.contains(&id) {
                    continue;
                }
                first_pos.get_or_insert(pos);
                order.push(id);
            }
        }
        order.extend(cycle.last_resort.iter().filter(|&&id| !conn.was_tried(id)));

        let Some(&first) = order.first() else {
            return Err(StrategyError::NoCandidate);
        };
        let weight = cycle
            .key
            .iter()
            .find(|&&(id, _)| id == first)
            .map_or(0, |&(_, w)| w);
        let reason = match first_pos {
            Some(pos) => format!("round-robin {}/{len} (weight {weight})", pos + 1),
            None => "round-robin: last resort (weight 0)".to_owned(),
        };
        Ok(Choice::new(order, reason))
    }
}

netmix_plugin_api::export_strategy! {
    name: "round-robin",
    description: "Weighted round-robin over the usable interfaces (smooth, honours `weight`).",
    new: RoundRobin::from_options,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use netmix_plugin_api::LinkState;

    use super::*;

    fn ifaces(weights: &[u32]) -> Vec<InterfaceSnapshot> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let mut s = InterfaceSnapshot::new(i as u32 + 1, &format!("eth{i}"));
                s.weight = w;
                s
            })
            .collect()
    }

    fn counts(rr: &RoundRobin, ifs: &[InterfaceSnapshot], n: usize) -> HashMap<u32, usize> {
        let conn = ConnMeta::for_host("example.com", 443);
        let mut counts = HashMap::new();
        for _ in 0..n {
            let choice = rr.pick(ifs, &conn).unwrap();
            *counts.entry(choice.first().unwrap()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_are_exact() {
        let rr = RoundRobin::from_options("").unwrap();
        let c = counts(&rr, &ifaces(&[1, 1, 1]), 30);
        assert_eq!((c[&1], c[&2], c[&3]), (10, 10, 10));
    }

    #[test]
    fn weights_are_exact_and_smooth() {
        let rr = RoundRobin::default();
        let ifs = ifaces(&[1, 2, 3]);
        let c = counts(&rr, &ifs, 30);
        assert_eq!((c[&1], c[&2], c[&3]), (5, 10, 15));
        let seq = &rr.cycle.read().unwrap().seq;
        assert_eq!(seq, &[3, 2, 1, 3, 2, 3]);
    }

    #[test]
    fn skips_down_and_tried_and_lists_fallbacks() {
        let rr = RoundRobin::default();
        let mut ifs = ifaces(&[1, 1, 1, 1]);
        ifs[1].state = LinkState::Down;
        let mut conn = ConnMeta::for_host("h", 1);
        conn.tried.push(1);
        for _ in 0..10 {
            let c = rr.pick(&ifs, &conn).unwrap();
            assert_eq!(c.order.len(), 2, "{c:?}");
            assert!(!c.order.contains(&1) && !c.order.contains(&2));
            assert!(c.reason.starts_with("round-robin "), "{}", c.reason);
        }
        conn.tried.extend([3, 4]);
        assert_eq!(
            rr.pick(&ifs, &conn).unwrap_err(),
            StrategyError::NoCandidate
        );
    }

    #[test]
    fn zero_weight_is_last_resort() {
        let rr = RoundRobin::default();
        let ifs = ifaces(&[0, 1]);
        let c = rr.pick(&ifs, &ConnMeta::for_host("h", 1)).unwrap();
        assert_eq!(c.order.as_slice(), &[2, 1]);
        let mut conn = ConnMeta::for_host("h", 1);
        conn.tried.push(2);
        let c = rr.pick(&ifs, &conn).unwrap();
        assert_eq!(c.order.as_slice(), &[1]);
        let all_zero = rr
            .pick(&ifaces(&[0, 0]), &ConnMeta::for_host("h", 1))
            .unwrap();
        assert_eq!(all_zero.order.len(), 2);
    }

    #[test]
    fn survives_hot_plug() {
        let rr = RoundRobin::default();
        let conn = ConnMeta::for_host("h", 1);
        let sets = [
            ifaces(&[5, 1, 1]),
            ifaces(&[1]),
            ifaces(&[]),
            ifaces(&[2, 3, 4, 5]),
        ];
        for round in 0..50 {
            let ifs = &sets[round % sets.len()];
            match rr.pick(ifs, &conn) {
                Ok(c) => assert_eq!(c.order.len(), ifs.len()),
                Err(e) => assert!(ifs.is_empty(), "{e}"),
            }
        }
    }

    #[test]
    fn huge_weights_are_scaled() {
        let rr = RoundRobin::default();
        let c = counts(&rr, &ifaces(&[u32::MAX, 1]), 100);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(rr.cycle.read().unwrap().seq.len() <= MAX_CYCLE_LEN as usize + 1);
    }

    #[test]
    fn rejects_unknown_options() {
        assert!(matches!(
            RoundRobin::from_options("foo = 1"),
            Err(StrategyError::InvalidConfig(_))
        ));
    }
}
