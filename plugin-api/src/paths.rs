//! Single-path or multipath, per connection (new in 1.1): the rule the shipped strategies use,
//! applied by the [`StrategyImpl`](crate::StrategyImpl) adapter.
//!
//! Balancing per connection cannot give one download more than one link; Multipath TCP can,
//! but a small request gains nothing from extra subflows (the handshakes cost more than the
//! transfer) and should stay on the link the strategy picked. At the moment a connection
//! opens, nobody knows how much it will carry, so the rule goes by what the same destination
//! carried last time ([`History`]): a destination whose last connection moved at least
//! [`BULK_BYTES`] is bulk (multipath), one that moved less is small (single-path), and one not
//! seen yet gets the strategy's default ([`MultipathPolicy`]).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Choice, ConnMeta, ConnOutcome, OutcomeStage, Paths, Transport};

/// A destination whose last connection moved this many bytes (both ways) or more is bulk.
pub const BULK_BYTES: u64 = 1 << 20;

/// Destinations remembered; when full, the table starts over (a bounded memory, not an LRU:
/// the rule only needs the recent past).
pub const HISTORY_CAPACITY: usize = 4096;

/// How a strategy wants its connections to use the links when the engine has multipath on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipathPolicy {
    /// Always single-path (what a strategy says by default, and what 1.0 plugins get).
    Never,
    /// By the destination's last connection: bulk → multipath, small → single-path; a
    /// destination not seen yet gets `unknown`.
    ByHistory {
        /// The answer for a destination with no history.
        unknown: Paths,
    },
    /// Every TCP connection multipath.
    Always,
}

/// What the last connection to each destination moved, from [`crate::Strategy::observe`].
#[derive(Debug, Default)]
pub struct History {
    last: Mutex<HashMap<String, u64>>,
}

impl History {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a closed connection's bytes (other outcomes say nothing about size).
    pub fn observe(&self, outcome: &ConnOutcome) {
        if outcome.stage != OutcomeStage::Closed || outcome.conn.transport != Transport::Tcp {
            return;
        }
        let key = destination(&outcome.conn);
        let moved = outcome.bytes_up.saturating_add(outcome.bytes_down);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= HISTORY_CAPACITY && !last.contains_key(&key) {
            last.clear();
        }
        last.insert(key, moved);
    }

    /// What the last connection to `conn`'s destination moved, if one was seen.
    pub fn last_bytes(&self, conn: &ConnMeta) -> Option<u64> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.get(&destination(conn)).copied()
    }

    /// Applies `policy` to `conn` and says so at the end of `choice.reason`. `available` is
    /// [`crate::Snapshot::multipath_available`]: without it every connection is single-path
    /// and the reason is left as it was.
    pub fn decide(
        &self,
        policy: MultipathPolicy,
        available: bool,
        conn: &ConnMeta,
        choice: &mut Choice,
    ) -> Paths {
        if !available || conn.transport != Transport::Tcp {
            return Paths::Single;
        }
        let (paths, why) = match policy {
            MultipathPolicy::Never => return Paths::Single,
            MultipathPolicy::Always => (Paths::Multi, "every connection".to_owned()),
            MultipathPolicy::ByHistory { unknown } => match self.last_bytes(conn) {
                Some(bytes) if bytes >= BULK_BYTES => (
                    Paths::Multi,
                    format!("bulk destination, last {}", size(bytes)),
                ),
                Some(bytes) => (
                    Paths::Single,
                    format!("small answers, last {}", size(bytes)),
                ),
                None => (unknown, "new destination".to_owned()),
            },
        };
        let mut reason = choice.reason.to_string();
        reason.push_str(&format!(" · {paths} ({why})"));
        choice.reason = reason.into();
        paths
    }
}

/// The history key: the host name as the client gave it, else the address; the port too (a
/// site's API and its downloads often differ by port, rarely by name alone).
fn destination(conn: &ConnMeta) -> String {
    format!("{}:{}", conn.host_or_addr(), conn.port)
}

/// Bytes in words: `512 B`, `3 KiB`, `256 MiB`.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(host: &str, bytes_down: u64) -> ConnOutcome {
        let mut o = ConnOutcome::new(1, ConnMeta::for_host(host, 443), OutcomeStage::Closed);
        o.bytes_down = bytes_down;
        o
    }

    #[test]
    fn by_history() {
        let h = History::new();
        let policy = MultipathPolicy::ByHistory {
            unknown: Paths::Multi,
        };
        let conn = |host| ConnMeta::for_host(host, 443);
        let mut c = Choice::new(vec![1], "capacity");
        assert_eq!(
            h.decide(policy, true, &conn("new.example"), &mut c),
            Paths::Multi
        );
        assert_eq!(c.reason, "capacity · multipath (new destination)");

        h.observe(&closed("small.example", 3000));
        h.observe(&closed("big.example", 300 << 20));
        let mut c = Choice::new(vec![1], "r");
        assert_eq!(
            h.decide(policy, true, &conn("small.example"), &mut c),
            Paths::Single
        );
        assert_eq!(c.reason, "r · single-path (small answers, last 2 KiB)");
        let mut c = Choice::new(vec![1], "r");
        assert_eq!(
            h.decide(policy, true, &conn("big.example"), &mut c),
            Paths::Multi
        );
        assert_eq!(c.reason, "r · multipath (bulk destination, last 300 MiB)");

        // Without multipath on, nothing changes, not even the reason.
        let mut c = Choice::new(vec![1], "r");
        assert_eq!(
            h.decide(policy, false, &conn("big.example"), &mut c),
            Paths::Single
        );
        assert_eq!(c.reason, "r");
        // UDP is never multipath.
        let mut udp = conn("big.example");
        udp.transport = Transport::Udp;
        assert_eq!(
            h.decide(MultipathPolicy::Always, true, &udp, &mut c),
            Paths::Single
        );
    }

    #[test]
    fn only_closed_tcp_connections_count_and_the_table_is_bounded() {
        let h = History::new();
        let mut failed = closed("a.example", 5 << 20);
        failed.stage = OutcomeStage::ConnectFailed;
        h.observe(&failed);
        assert_eq!(h.last_bytes(&ConnMeta::for_host("a.example", 443)), None);
        for i in 0..HISTORY_CAPACITY + 10 {
            h.observe(&closed(&format!("h{i}.example"), 1));
        }
        assert!(h.last.lock().unwrap().len() <= HISTORY_CAPACITY);
        let last = format!("h{}.example", HISTORY_CAPACITY + 9);
        assert_eq!(h.last_bytes(&ConnMeta::for_host(&last, 443)), Some(1));
    }
}
