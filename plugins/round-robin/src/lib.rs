//! `round-robin`: the weighted round-robin strategy plugin of netmix, and the engine's built-in
//! fallback.
//!
//! The engine's router loads this crate's `cdylib` (`libnetmix_strategy_round_robin.so`) through
//! `netmix-plugin-api` when a user selects `round-robin`; the engine also links the `rlib` and
//! runs [`RoundRobin`] in-process (`Guarded::boxed("round-robin", RoundRobin::default())`)
//! whenever the selected plugin is missing or fails. Each usable interface is picked in
//! proportion to its configured `weight`: over one cycle of `sum(weights)` picks, an interface
//! of weight `w` is first exactly `w` times, spread out the way nginx's *smooth* weighted
//! round-robin spreads them (1:2:3 gives `c b a c b c`, not `a b b c c c`).
//!
//! # Design
//!
//! `rebuild` ([`StrategyImpl::plan`]) computes the cycle for the snapshot's interfaces and,
//! for every position of the cycle, the whole answer a pick starting there gives: the order
//! (each interface once, in the order the cycle reaches it) and the reason text. A pick bumps
//! an `AtomicUsize` cursor and copies one precomputed row, so concurrent picks never wait on
//! each other and a pick costs the same whatever the weights. Exact proportions hold between
//! rebuilds; a rebuild keeps the cursor.
//!
//! Interfaces already tried for the connection (or without a source address of the
//! destination's family) are skipped: the cursor walks on to the next one that fits. Weight 0
//! means "last resort": such interfaces are never first while another fits, and come last
//! among the fallbacks. After the first pick, the fallbacks are the other interfaces in the
//! order the cycle would reach them.
//!
//! Options: none (an empty table). Unknown keys are an error.
//!
//! `#![forbid(unsafe_code)]` is not possible here: `export_strategy!` expands to abi_stable
//! macros that use `unsafe`.

#![allow(non_local_definitions)]

use std::sync::atomic::{AtomicUsize, Ordering};

use netmix_plugin_api::{
    Choice, ConnMeta, InterfaceSnapshot, IpFamily, Snapshot, StrategyError, StrategyImpl,
    abi_stable::std_types::{ROption, RString, RVec},
    parse_options,
};

/// Longest cycle kept; larger weight sums are scaled down proportionally.
const MAX_CYCLE_LEN: u64 = 10_000;

/// Most ids kept in the precomputed rows (cycle length × interfaces); past it (hundreds of
/// interfaces with large weights) a pick walks the cycle instead.
const MAX_ROW_ENTRIES: usize = 1 << 20;

/// Options of the `round-robin` strategy (none yet).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRobinConfig {}

/// What [`RoundRobin`] prepares from a snapshot: the cycle and every answer it can give.
#[derive(Debug, Default)]
pub struct Cycle {
    /// The interfaces of the snapshot that take part (usable ones), by id, for `fits`.
    interfaces: Vec<InterfaceSnapshot>,
    /// `(id, weight)` of those interfaces, sorted by id.
    weights: Vec<(u32, u32)>,
    /// Interface ids in pick order; each id appears (scaled) `weight` times.
    seq: Vec<u32>,
    /// How many distinct ids `seq` holds (the width of a row).
    width: usize,
    /// For every position `p` of `seq`, the distinct ids in the order the cycle reaches them
    /// from `p` (row `p` is `rows[p * width..][..width]`); empty past [`MAX_ROW_ENTRIES`].
    rows: Vec<u32>,
    /// For every position `p`, the reason of a pick whose first id is `seq[p]`.
    reasons: Vec<String>,
    /// Usable interfaces of weight 0, sorted by id: fallbacks of last resort.
    last_resort: Vec<u32>,
    /// Whether every interface has an IPv4 address, and an IPv6 one: then a connection with
    /// nothing tried fits them all (see [`Cycle::all_fit`]).
    everywhere_v4: bool,
    everywhere_v6: bool,
}

impl Cycle {
    /// The cycle for the usable ones of `interfaces`.
    pub fn build(interfaces: &[InterfaceSnapshot]) -> Self {
        let mut usable: Vec<InterfaceSnapshot> = interfaces
            .iter()
            .filter(|i| i.is_usable())
            .cloned()
            .collect();
        usable.sort_by_key(|i| i.id);
        usable.dedup_by_key(|i| i.id);
        let weights: Vec<(u32, u32)> = usable.iter().map(|i| (i.id, i.weight)).collect();

        let all_zero = weights.iter().all(|&(_, w)| w == 0);
        let weighted: Vec<(u32, u64)> = weights
            .iter()
            .filter(|&&(_, w)| w > 0 || all_zero)
            .map(|&(id, w)| (id, u64::from(w.max(1))))
            .collect();
        let last_resort = if all_zero {
            Vec::new()
        } else {
            weights
                .iter()
                .filter(|&&(_, w)| w == 0)
                .map(|&(id, _)| id)
                .collect()
        };
        let seq = smooth_sequence(&reduce_weights(weighted.clone()));
        let width = weighted.len();
        let len = seq.len();

        let rows = if len > 0 && len.saturating_mul(width) <= MAX_ROW_ENTRIES {
            rotation_rows(&seq, width)
        } else {
            Vec::new()
        };
        let weight_of = |id: u32| weights.iter().find(|w| w.0 == id).map_or(0, |w| w.1);
        let reasons = seq
            .iter()
            .enumerate()
            .map(|(pos, &id)| format!("round-robin {}/{len} (weight {})", pos + 1, weight_of(id)))
            .collect();
        let everywhere = |family| usable.iter().all(|i| i.has_family(family));
        Self {
            everywhere_v4: everywhere(IpFamily::V4),
            everywhere_v6: everywhere(IpFamily::V6),
            interfaces: usable,
            weights,
            seq,
            width,
            rows,
            reasons,
            last_resort,
        }
    }

    /// Interface ids in pick order over one cycle.
    pub fn sequence(&self) -> &[u32] {
        &self.seq
    }

    /// `(id, weight)` of the interfaces taking part, sorted by id.
    pub fn weights(&self) -> &[(u32, u32)] {
        &self.weights
    }

    /// Whether interface `id` fits `conn` (see [`ConnMeta::fits`]).
    fn fits(&self, id: u32, conn: &ConnMeta) -> bool {
        match self.interfaces.binary_search_by_key(&id, |i| i.id) {
            Ok(index) => conn.fits(&self.interfaces[index]),
            Err(_) => false,
        }
    }

    /// Whether every interface fits `conn` (the common case: a first attempt, nothing tried,
    /// every interface has an address of the destination's family). The same test as
    /// [`ConnMeta::fits`] on every interface, answered from what `build` found.
    fn all_fit(&self, conn: &ConnMeta) -> bool {
        conn.tried.is_empty()
            && match &conn.addr {
                ROption::RSome(a) => match a.family {
                    IpFamily::V4 => self.everywhere_v4,
                    IpFamily::V6 => self.everywhere_v6,
                },
                ROption::RNone => true,
            }
    }

    /// The answer for a pick that starts at cycle position `start`.
    fn answer(&self, start: usize, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        let len = self.seq.len();
        let mut order = RVec::with_capacity(self.width + self.last_resort.len());
        let mut first_pos = None;
        if len > 0 {
            if !self.rows.is_empty() && self.all_fit(conn) {
                order.extend_from_slice(&self.rows[start * self.width..][..self.width]);
                first_pos = Some(start);
            } else {
                for step in 0..len {
                    let pos = (start + step) % len;
                    let id = self.seq[pos];
                    if order.contains(&id) || !self.fits(id, conn) {
                        continue;
                    }
                    first_pos.get_or_insert(pos);
                    order.push(id);
                }
            }
        }
        order.extend(
            self.last_resort
                .iter()
                .copied()
                .filter(|&id| self.fits(id, conn)),
        );
        if order.is_empty() {
            return Err(StrategyError::NoCandidate);
        }
        let reason = match first_pos {
            Some(pos) => RString::from(self.reasons[pos].as_str()),
            None => RString::from("round-robin: last resort (weight 0)"),
        };
        Ok(Choice { order, reason })
    }
}

/// For every position `p` of `seq`, the `width` distinct ids of `seq` in the order a walk
/// from `p` (wrapping around) first meets them, concatenated.
///
/// Row `p` is `seq[p]` followed by row `p + 1` without `seq[p]` (a walk from `p` meets
/// `seq[p]` first, then the others where the walk from `p + 1` first meets them), so after
/// one walk for row 0 the rows are built backwards in O(len × width).
fn rotation_rows(seq: &[u32], width: usize) -> Vec<u32> {
    let len = seq.len();
    let mut rows = vec![0; len * width];
    let mut filled = 0;
    for &id in seq {
        if !rows[..filled].contains(&id) {
            rows[filled] = id;
            filled += 1;
            if filled == width {
                break;
            }
        }
    }
    for p in (1..len).rev() {
        let next = if p + 1 == len { 0 } else { p + 1 };
        let (head, tail) = rows.split_at_mut(next.max(p) * width);
        let (row, from) = if next > p {
            (&mut head[p * width..], &tail[..width])
        } else {
            (&mut tail[..width], &head[..width])
        };
        row[0] = seq[p];
        for (slot, &id) in row[1..]
            .iter_mut()
            .zip(from.iter().filter(|&&id| id != seq[p]))
        {
            *slot = id;
        }
    }
    rows
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

/// The weighted round-robin strategy: a cursor into the cycle of the current plan.
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// Builds the strategy from its options (TOML text; must be empty or an empty table).
    ///
    /// # Errors
    /// [`StrategyError::InvalidConfig`] on any key.
    pub fn from_options(options_toml: &str) -> Result<Self, StrategyError> {
        let RoundRobinConfig {} = parse_options(options_toml)?;
        Ok(Self::default())
    }
}

impl StrategyImpl for RoundRobin {
    type Plan = Cycle;

    fn plan(&self, snapshot: &Snapshot) -> Result<Cycle, StrategyError> {
        Ok(Cycle::build(&snapshot.interfaces))
    }

    fn pick(&self, cycle: &Cycle, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        let len = cycle.seq.len().max(1);
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
        cycle.answer(start, conn)
    }

    /// Per-connection spreading stays per connection; a destination whose last connection
    /// was bulk goes multipath.
    fn multipath(&self) -> netmix_plugin_api::paths::MultipathPolicy {
        netmix_plugin_api::paths::MultipathPolicy::ByHistory {
            unknown: netmix_plugin_api::Paths::Single,
        }
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
    use std::net::{Ipv4Addr, Ipv6Addr};

    use netmix_plugin_api::{IpNetC, LinkState};

    use super::*;

    fn ifaces(weights: &[u32]) -> Vec<InterfaceSnapshot> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let mut s = InterfaceSnapshot::new(i as u32 + 1, &format!("eth{i}"));
                s.addrs
                    .push(IpNetC::new(Ipv4Addr::new(198, 18, i as u8, 2), 24));
                s.weight = w;
                s
            })
            .collect()
    }

    fn plan(ifs: &[InterfaceSnapshot]) -> Cycle {
        RoundRobin::default()
            .plan(&Snapshot::of(ifs.to_vec()))
            .unwrap()
    }

    fn counts(rr: &RoundRobin, ifs: &[InterfaceSnapshot], n: usize) -> HashMap<u32, usize> {
        let cycle = plan(ifs);
        let conn = ConnMeta::for_host("example.com", 443);
        let mut counts = HashMap::new();
        for _ in 0..n {
            let choice = rr.pick(&cycle, &conn).unwrap();
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
        assert_eq!(plan(&ifs).sequence(), &[3, 2, 1, 3, 2, 3]);
    }

    #[test]
    fn orders_and_reasons_follow_the_cycle() {
        let rr = RoundRobin::default();
        let cycle = plan(&ifaces(&[1, 2, 3]));
        let conn = ConnMeta::for_host("h", 1);
        let picks: Vec<Choice> = (0..6).map(|_| rr.pick(&cycle, &conn).unwrap()).collect();
        assert_eq!(picks[0].order.as_slice(), &[3, 2, 1]);
        assert_eq!(picks[2].order.as_slice(), &[1, 3, 2]);
        assert_eq!(picks[0].reason, "round-robin 1/6 (weight 3)");
        assert_eq!(picks[2].reason, "round-robin 3/6 (weight 1)");
        // The walk (taken when something does not fit) gives the same answers.
        let mut v4 = ConnMeta::for_addr(Ipv4Addr::new(192, 0, 2, 1), 80);
        v4.tried.push(99);
        for (start, expected) in picks.iter().enumerate() {
            assert_eq!(&cycle.answer(start, &v4).unwrap(), expected, "{start}");
        }
    }

    #[test]
    fn skips_down_and_tried_and_lists_fallbacks() {
        let rr = RoundRobin::default();
        let mut ifs = ifaces(&[1, 1, 1, 1]);
        ifs[1].state = LinkState::Down;
        let cycle = plan(&ifs);
        let mut conn = ConnMeta::for_host("h", 1);
        conn.tried.push(1);
        for _ in 0..10 {
            let c = rr.pick(&cycle, &conn).unwrap();
            assert_eq!(c.order.len(), 2, "{c:?}");
            assert!(!c.order.contains(&1) && !c.order.contains(&2));
            assert!(c.reason.starts_with("round-robin "), "{}", c.reason);
        }
        conn.tried.extend([3, 4]);
        assert_eq!(
            rr.pick(&cycle, &conn).unwrap_err(),
            StrategyError::NoCandidate
        );
    }

    #[test]
    fn skips_interfaces_without_an_address_of_the_family() {
        let rr = RoundRobin::default();
        let mut ifs = ifaces(&[1, 1, 1]);
        ifs[1]
            .addrs
            .push(IpNetC::new("2001:db8::2".parse::<Ipv6Addr>().unwrap(), 64));
        let cycle = plan(&ifs);
        let v6 = ConnMeta::for_addr("2001:db8::1".parse::<Ipv6Addr>().unwrap(), 443);
        for _ in 0..5 {
            assert_eq!(rr.pick(&cycle, &v6).unwrap().order.as_slice(), &[2]);
        }
    }

    #[test]
    fn zero_weight_is_last_resort() {
        let rr = RoundRobin::default();
        let ifs = ifaces(&[0, 1]);
        let cycle = plan(&ifs);
        let c = rr.pick(&cycle, &ConnMeta::for_host("h", 1)).unwrap();
        assert_eq!(c.order.as_slice(), &[2, 1]);
        let mut conn = ConnMeta::for_host("h", 1);
        conn.tried.push(2);
        let c = rr.pick(&cycle, &conn).unwrap();
        assert_eq!(c.order.as_slice(), &[1]);
        assert_eq!(c.reason, "round-robin: last resort (weight 0)");
        let all_zero = rr
            .pick(&plan(&ifaces(&[0, 0])), &ConnMeta::for_host("h", 1))
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
            match rr.pick(&plan(ifs), &conn) {
                Ok(c) => assert_eq!(c.order.len(), ifs.len()),
                Err(e) => assert!(ifs.is_empty(), "{e}"),
            }
        }
    }

    #[test]
    fn huge_weights_are_scaled() {
        let rr = RoundRobin::default();
        let ifs = ifaces(&[u32::MAX, 1]);
        let c = counts(&rr, &ifs, 100);
        assert_eq!(c.len(), 1, "{c:?}");
        let cycle = plan(&ifs);
        assert!(cycle.sequence().len() <= MAX_CYCLE_LEN as usize + 1);
        assert_eq!(cycle.weights(), &[(1, u32::MAX), (2, 1)]);
        // The rarely-first interface is still every pick's fallback.
        let c = rr.pick(&cycle, &ConnMeta::for_host("h", 1)).unwrap();
        assert_eq!(c.order.len(), 2);
    }

    #[test]
    fn rejects_unknown_options() {
        assert!(matches!(
            RoundRobin::from_options("foo = 1"),
            Err(StrategyError::InvalidConfig(_))
        ));
    }
}
