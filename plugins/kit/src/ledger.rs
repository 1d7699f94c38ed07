//! The in-flight ledger: connections a strategy picked that are not closed yet, per interface.
//!
//! A connection counts on an interface from the moment the strategy picks it (before the
//! engine has even started to connect) until `observe` reports that it failed or closed. The
//! engine's own count (`active_conns`) reaches the snapshot a few milliseconds later, too late
//! for a burst of simultaneous connections; strategies use the larger of the two.
//!
//! - `Connected` moves the entry to the interface the connection really went through (failover
//!   may have taken the next one in the order); `ConnectFailed` and `Closed` remove it.
//! - Connections are told apart by the client's address and port. No two live connections to
//!   the proxy share them, so a new pick for a key still in the ledger means the old connection
//!   is gone (its report was lost): its entry is dropped before the new pick is counted.
//! - An entry older than the maximum age ([`LEDGER_MAX_AGE`] by default) is dropped, so a lost
//!   report cannot pin a link for ever. Expired entries are swept at most once per sixtieth of
//!   the maximum age (a minute by default); the per-interface counts are kept up to date as
//!   entries come and go, so a pick costs the same with ten or ten thousand in flight.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use netmix_plugin_api::{ConnMeta, ConnOutcome, IpAddrC, OutcomeStage};

/// Entries older than this are dropped, by default (a lost `observe` must not pin a link for
/// ever).
pub const LEDGER_MAX_AGE: Duration = Duration::from_secs(3600);

/// A connection, by its client's address and port.
type Key = (IpAddrC, u16);

fn key(conn: &ConnMeta) -> Key {
    (conn.client, conn.client_port)
}

/// A picked connection not yet closed.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    iface: u32,
    since: Instant,
}

/// The entries and their per-interface counts (always consistent with each other).
#[derive(Debug)]
struct Entries {
    by_conn: HashMap<Key, InFlight>,
    per_iface: HashMap<u32, u32>,
    next_sweep: Instant,
}

impl Entries {
    fn insert(&mut self, key: Key, entry: InFlight) {
        if let Some(old) = self.by_conn.insert(key, entry) {
            self.uncount(old.iface);
        }
        *self.per_iface.entry(entry.iface).or_default() += 1;
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.by_conn.remove(key) {
            self.uncount(old.iface);
        }
    }

    fn uncount(&mut self, iface: u32) {
        uncount(&mut self.per_iface, iface);
    }

    /// Drops the entries older than `max_age`, unless the last sweep was too recent.
    fn sweep(&mut self, now: Instant, max_age: Duration) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + max_age / 60;
        let per_iface = &mut self.per_iface;
        self.by_conn.retain(|_, f| {
            let keep = now.duration_since(f.since) < max_age;
            if !keep {
                uncount(per_iface, f.iface);
            }
            keep
        });
    }
}

fn uncount(per_iface: &mut HashMap<u32, u32>, iface: u32) {
    if let Some(n) = per_iface.get_mut(&iface) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_iface.remove(&iface);
        }
    }
}

/// The connections a strategy picked and the engine has not reported closed, per interface.
#[derive(Debug)]
pub struct Ledger {
    entries: Mutex<Entries>,
    max_age: Duration,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// An empty ledger whose entries expire after [`LEDGER_MAX_AGE`].
    pub fn new() -> Self {
        Self::with_max_age(LEDGER_MAX_AGE)
    }

    /// An empty ledger whose entries expire after `max_age`.
    pub fn with_max_age(max_age: Duration) -> Self {
        Self {
            entries: Mutex::new(Entries {
                by_conn: HashMap::new(),
                per_iface: HashMap::new(),
                next_sweep: Instant::now(),
            }),
            max_age,
        }
    }

    /// How long an entry counts at most.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Starts a pick for `conn`: locks the ledger (so that concurrent picks see each other's
    /// choices), sweeps expired entries and forgets `conn`'s own earlier entry, if any.
    /// Read the counts with [`PendingPick::in_flight`], then [`PendingPick::record`] the choice;
    /// dropping the pending pick unlocks without recording anything.
    pub fn start_pick(&self, conn: &ConnMeta) -> PendingPick<'_> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.sweep(now, self.max_age);
        let key = key(conn);
        entries.remove(&key);
        PendingPick { entries, key, now }
    }

    /// Applies the engine's report on a connection: `Connected` moves it to the interface it
    /// went through, `ConnectFailed` and `Closed` remove it. Connections the ledger does not
    /// hold are ignored.
    pub fn observe(&self, outcome: &ConnOutcome) {
        let key = key(&outcome.conn);
        let mut entries = self.lock();
        match outcome.stage {
            OutcomeStage::Connected => {
                if let Some(&old) = entries.by_conn.get(&key)
                    && old.iface != outcome.interface
                {
                    entries.insert(
                        key,
                        InFlight {
                            iface: outcome.interface,
                            ..old
                        },
                    );
                }
            }
            OutcomeStage::ConnectFailed | OutcomeStage::Closed => entries.remove(&key),
        }
    }

    /// Connections in flight on interface `iface`.
    pub fn in_flight(&self, iface: u32) -> u32 {
        self.lock().per_iface.get(&iface).copied().unwrap_or(0)
    }

    /// Connections in flight on all interfaces together.
    pub fn len(&self) -> usize {
        self.lock().by_conn.len()
    }

    /// Whether no connection is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pick in progress, from [`Ledger::start_pick`]: the ledger stays locked until it is
/// recorded or dropped.
#[derive(Debug)]
pub struct PendingPick<'a> {
    entries: MutexGuard<'a, Entries>,
    key: Key,
    now: Instant,
}

impl PendingPick<'_> {
    /// Connections in flight on interface `iface` (not counting the one being picked).
    pub fn in_flight(&self, iface: u32) -> u32 {
        self.entries.per_iface.get(&iface).copied().unwrap_or(0)
    }

    /// Records the connection as in flight on `iface` and unlocks the ledger.
    pub fn record(mut self, iface: u32) {
        let entry = InFlight {
            iface,
            since: self.now,
        };
        self.entries.insert(self.key, entry);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn conn(port: u16) -> ConnMeta {
        let mut c = ConnMeta::for_addr(Ipv4Addr::new(198, 19, 0, 1), 80);
        c.client_port = port;
        c
    }

    fn outcome(port: u16, interface: u32, stage: OutcomeStage) -> ConnOutcome {
        ConnOutcome::new(interface, conn(port), stage)
    }

    fn record(ledger: &Ledger, port: u16, iface: u32) {
        ledger.start_pick(&conn(port)).record(iface);
    }

    #[test]
    fn picks_count_until_closed_or_failed() {
        let l = Ledger::new();
        record(&l, 1, 7);
        record(&l, 2, 7);
        record(&l, 3, 8);
        assert_eq!((l.in_flight(7), l.in_flight(8), l.len()), (2, 1, 3));
        let pending = l.start_pick(&conn(4));
        assert_eq!((pending.in_flight(7), pending.in_flight(9)), (2, 0));
        drop(pending);
        assert_eq!(l.len(), 3, "a dropped pick records nothing");
        l.observe(&outcome(1, 7, OutcomeStage::Closed));
        l.observe(&outcome(3, 8, OutcomeStage::ConnectFailed));
        assert_eq!((l.in_flight(7), l.in_flight(8), l.len()), (1, 0, 1));
        // Reports about connections it does not hold change nothing.
        l.observe(&outcome(1, 7, OutcomeStage::Closed));
        l.observe(&outcome(5, 7, OutcomeStage::Connected));
        assert_eq!((l.in_flight(7), l.len()), (1, 1));
        l.observe(&outcome(2, 7, OutcomeStage::Closed));
        assert!(l.is_empty());
    }

    #[test]
    fn connected_moves_the_entry_where_it_went() {
        let l = Ledger::new();
        record(&l, 1, 7);
        l.observe(&outcome(1, 7, OutcomeStage::Connected));
        assert_eq!(l.in_flight(7), 1);
        // Failover: picked 7, connected through 8.
        record(&l, 2, 7);
        l.observe(&outcome(2, 8, OutcomeStage::Connected));
        assert_eq!((l.in_flight(7), l.in_flight(8), l.len()), (1, 1, 2));
        l.observe(&outcome(2, 8, OutcomeStage::Closed));
        assert_eq!((l.in_flight(7), l.in_flight(8), l.len()), (1, 0, 1));
    }

    #[test]
    fn a_new_pick_for_the_same_client_port_replaces_the_old_entry() {
        let l = Ledger::new();
        record(&l, 1, 7);
        let pending = l.start_pick(&conn(1));
        assert_eq!(pending.in_flight(7), 0, "the stale entry does not count");
        pending.record(8);
        assert_eq!((l.in_flight(7), l.in_flight(8), l.len()), (0, 1, 1));
    }

    #[test]
    fn old_entries_expire() {
        let l = Ledger::with_max_age(Duration::ZERO);
        record(&l, 1, 7);
        assert_eq!(l.in_flight(7), 1);
        assert_eq!(l.start_pick(&conn(2)).in_flight(7), 0);
        assert!(l.is_empty());
        let l = Ledger::new();
        record(&l, 1, 7);
        assert_eq!(l.start_pick(&conn(2)).in_flight(7), 1);
        assert_eq!(l.max_age(), LEDGER_MAX_AGE);
    }
}
