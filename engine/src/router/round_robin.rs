//! The built-in weighted round-robin: the default strategy, and the fallback whenever a
//! plugin is missing or fails.

use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;

use super::Snapshot;
use crate::iface::InterfaceView;

/// Smooth weighted round-robin over the snapshot's precomputed sequence.
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// The next interface in the sequence first, then every other usable one in id order.
    pub fn pick(&self, snapshot: &Snapshot) -> (Vec<Arc<InterfaceView>>, String) {
        let seq = &snapshot.rr_sequence;
        if seq.is_empty() {
            return (Vec::new(), "no usable interface".into());
        }
        let step = self.cursor.fetch_add(1, Ordering::Relaxed) % seq.len();
        let first = seq[step];
        let mut order = Vec::with_capacity(snapshot.interfaces.len());
        order.push(snapshot.interfaces[first].clone());
        let n = snapshot.interfaces.len();
        order.extend((1..n).map(|k| snapshot.interfaces[(first + k) % n].clone()));
        let weight = snapshot.interfaces[first].weight;
        let reason = if weight == 1 {
            format!("round-robin {}/{}", step + 1, seq.len())
        } else {
            format!("round-robin {}/{} (weight {weight})", step + 1, seq.len())
        };
        (order, reason)
    }
}

/// The smooth weighted round-robin order (nginx's): over one cycle of `sum(weights)` picks each
/// index appears exactly `weight` times, spread out rather than in runs.
pub fn smooth_sequence(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w.max(1))).sum();
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w.max(1));
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best);
    }
    seq
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(seq: &[usize], n: usize, picks: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for i in 0..picks {
            c[seq[i % seq.len()]] += 1;
        }
        c
    }

    #[test]
    fn equal_weights_alternate() {
        let seq = smooth_sequence(&[1, 1, 1]);
        assert_eq!(seq, vec![0, 1, 2]);
        assert_eq!(counts(&seq, 3, 30), vec![10, 10, 10]);
    }

    #[test]
    fn weights_one_two_three() {
        let seq = smooth_sequence(&[1, 2, 3]);
        assert_eq!(seq.len(), 6);
        assert_eq!(counts(&seq, 3, 30), vec![5, 10, 15]);
        // smooth: the heaviest never runs three times in a row
        assert!(!seq.windows(3).any(|w| w.iter().all(|&x| x == 2)));
    }

    #[test]
    fn empty_is_empty() {
        assert!(smooth_sequence(&[]).is_empty());
    }
}
