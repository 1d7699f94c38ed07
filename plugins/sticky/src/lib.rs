//! `sticky`: keep talking to the same destination through the same interface.
//!
//! This is the example to copy when you write your own netmix strategy. It uses nothing but the
//! public surface of `netmix-plugin-api`, and it is built like any plugin: a `cdylib`
//! (`libnetmix_strategy_sticky.so`) that you drop into the engine's plugin folder, then select
//! with `strategy = "sticky"` in the config.
//!
//! Why sticky? Some services tie a session to the client's address (banking sites, game servers,
//! anything behind a strict CDN rule). If consecutive connections to the same host leave through
//! different interfaces, such a service sees the address change and logs the user out.
//!
//! How it works:
//! - The first connection to a destination (host name if the client gave one, else the address)
//!   goes out through the least-loaded usable interface, and we remember that choice.
//! - Later connections to the same destination reuse it, as long as it is still usable (not
//!   `Down`, not already tried for this connection) and the destination was used within the last
//!   `ttl_secs` seconds (sliding: every use extends it). Otherwise we choose anew.
//! - The remembered choices live in a `Mutex<HashMap>`. Expired entries are swept now and then,
//!   so the map does not grow forever.
//!
//! Options (TOML): `ttl_secs` (default 300).
//!
//! Note: `#![forbid(unsafe_code)]` would be nice, but `export_strategy!` expands to abi_stable
//! macros that contain `unsafe`, so it cannot be used in a plugin crate.

// abi_stable's macros generate impls inside functions; this silences the harmless warning.
#![allow(non_local_definitions)]

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use netmix_plugin_api::{
    Choice, ConnMeta, InterfaceSnapshot, StrategyError, StrategyImpl, candidates, order_by_key,
    parse_options,
};

/// How long a destination stays bound to its interface after its last use, by default.
pub const DEFAULT_TTL_SECS: u64 = 300;

/// Sweep expired entries every this many picks.
const SWEEP_EVERY_PICKS: u64 = 256;

/// The options users can set in the config, e.g. `[strategy.sticky] ttl_secs = 600`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StickyConfig {
    /// Forget a destination this many seconds after it was last used.
    pub ttl_secs: u64,
}

impl Default for StickyConfig {
    fn default() -> Self {
        Self {
            ttl_secs: DEFAULT_TTL_SECS,
        }
    }
}

/// What we remember about one destination.
#[derive(Debug, Clone, Copy)]
struct Binding {
    /// The interface it is bound to.
    interface: u32,
    /// When the binding was made (shown in the reason).
    since: Instant,
    /// When it was last used (the TTL counts from here).
    last_used: Instant,
}

/// Everything behind the mutex.
#[derive(Debug, Default)]
struct State {
    bindings: HashMap<String, Binding>,
    picks: u64,
}

/// The sticky strategy. The engine calls `pick` from many threads, so the state is behind a
/// mutex; the critical section is a hash-map lookup.
#[derive(Debug)]
pub struct Sticky {
    ttl: Duration,
    state: Mutex<State>,
}

impl Sticky {
    /// Builds the strategy from its options, given as TOML text (empty = all defaults).
    pub fn from_options(options_toml: &str) -> Result<Self, StrategyError> {
        let config: StickyConfig = parse_options(options_toml)?;
        if config.ttl_secs == 0 {
            return Err(StrategyError::invalid_config(
                "ttl_secs must be at least 1 (use another strategy for no stickiness)",
            ));
        }
        Ok(Self::new(Duration::from_secs(config.ttl_secs)))
    }

    /// A sticky strategy that forgets a destination `ttl` after its last use.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    /// `pick` with an explicit clock, so tests can move time forward.
    fn pick_at(
        &self,
        now: Instant,
        interfaces: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        // Candidates, least loaded first (fewest active connections, then lowest latency);
        // interfaces that are Down or already tried are left out by the helper.
        let mut order = order_by_key(interfaces, conn, |i| {
            (i.active_conns, i.latency_ewma_us.unwrap_or(u32::MAX), i.id)
        });
        if order.is_empty() {
            return Err(StrategyError::NoCandidate);
        }
        let name_of = |id: u32| {
            candidates(interfaces, conn)
                .find(|i| i.id == id)
                .map_or_else(|| id.to_string(), |i| i.name.to_string())
        };
        let destination = conn.host_or_addr();

        // A panic elsewhere may have poisoned the mutex; the map is still fine to use.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.picks += 1;
        if state.picks.is_multiple_of(SWEEP_EVERY_PICKS) {
            let ttl = self.ttl;
            state
                .bindings
                .retain(|_, b| now.saturating_duration_since(b.last_used) < ttl);
        }

        // Still bound, and the interface still usable for this connection? Reuse it.
        if let Some(binding) = state.bindings.get_mut(&destination) {
            let fresh = now.saturating_duration_since(binding.last_used) < self.ttl;
            if fresh && let Some(pos) = order.iter().position(|&id| id == binding.interface) {
                binding.last_used = now;
                // The bound interface goes first; the others stay as fallbacks.
                let id = order.remove(pos);
                order.insert(0, id);
                let age = now.saturating_duration_since(binding.since).as_secs();
                let reason = format!("sticky: {destination} → {} (since {age}s)", name_of(id));
                return Ok(Choice::new(order, reason));
            }
        }

        // New destination (or its interface went away): take the least-loaded one.
        let chosen = order[0];
        state.bindings.insert(
            destination.clone(),
            Binding {
                interface: chosen,
                since: now,
                last_used: now,
            },
        );
        let reason = format!("new: {destination} → {} (least loaded)", name_of(chosen));
        Ok(Choice::new(order, reason))
    }
}

impl StrategyImpl for Sticky {
    fn pick(
        &self,
        interfaces: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        self.pick_at(Instant::now(), interfaces, conn)
    }
}

// This generates the exported root module. Every call into `Sticky` (and `from_options`) runs
// under `catch_unwind`, so a bug here becomes an error the engine logs, not a crash.
netmix_plugin_api::export_strategy! {
    name: "sticky",
    description: "Same destination, same interface (for `ttl_secs`); new ones go to the least loaded.",
    new: Sticky::from_options,
}

#[cfg(test)]
mod tests {
    use netmix_plugin_api::LinkState;

    use super::*;

    fn ifaces() -> Vec<InterfaceSnapshot> {
        (1..=3)
            .map(|id| {
                let mut s = InterfaceSnapshot::new(id, &format!("wan{id}"));
                s.active_conns = 10 - id; // wan3 is the least loaded
                s
            })
            .collect()
    }

    #[test]
    fn new_destination_goes_to_least_loaded_then_sticks() {
        let s = Sticky::from_options("").unwrap();
        let mut ifs = ifaces();
        let conn = ConnMeta::for_host("bank.example", 443);
        let t0 = Instant::now();
        let c = s.pick_at(t0, &ifs, &conn).unwrap();
        assert_eq!(c.first(), Some(3));
        assert_eq!(c.reason, "new: bank.example → wan3 (least loaded)");
        // wan3 becomes the busiest; the destination still sticks to it.
        ifs[2].active_conns = 50;
        let c = s.pick_at(t0 + Duration::from_secs(7), &ifs, &conn).unwrap();
        assert_eq!(c.first(), Some(3));
        assert_eq!(c.reason, "sticky: bank.example → wan3 (since 7s)");
        assert_eq!(c.order.len(), 3);
        // Another destination goes to the now least-loaded interface.
        let other = ConnMeta::for_host("other.example", 80);
        assert_eq!(s.pick_at(t0, &ifs, &other).unwrap().first(), Some(2));
    }

    #[test]
    fn down_tried_or_expired_chooses_anew() {
        let s = Sticky::new(Duration::from_secs(60));
        let mut ifs = ifaces();
        let mut conn = ConnMeta::for_host("h", 1);
        let t0 = Instant::now();
        assert_eq!(s.pick_at(t0, &ifs, &conn).unwrap().first(), Some(3));
        ifs[2].state = LinkState::Down;
        assert_eq!(s.pick_at(t0, &ifs, &conn).unwrap().first(), Some(2));
        ifs[2].state = LinkState::Up;
        // Now bound to 2; 2 already failed for this connection → 3 (and rebound to it).
        conn.tried.push(2);
        assert_eq!(s.pick_at(t0, &ifs, &conn).unwrap().first(), Some(3));
        conn.tried.clear();
        // After the TTL the stale binding is ignored: the least loaded (now wan1) wins.
        ifs[0].active_conns = 0;
        let late = t0 + Duration::from_secs(61);
        let c = s.pick_at(late, &ifs, &conn).unwrap();
        assert_eq!(c.first(), Some(1));
        assert!(c.reason.starts_with("new: "), "{}", c.reason);
    }

    #[test]
    fn keyed_by_address_without_host() {
        let s = Sticky::new(Duration::from_secs(60));
        let conn = ConnMeta::for_addr(std::net::Ipv4Addr::new(192, 0, 2, 9), 443);
        let c = s.pick_at(Instant::now(), &ifaces(), &conn).unwrap();
        assert!(c.reason.contains("192.0.2.9 → wan3"), "{}", c.reason);
    }

    #[test]
    fn sweeps_expired_entries() {
        let s = Sticky::new(Duration::from_secs(1));
        let ifs = ifaces();
        let t0 = Instant::now();
        for i in 0..SWEEP_EVERY_PICKS {
            let conn = ConnMeta::for_host(&format!("h{i}"), 1);
            s.pick_at(t0 + Duration::from_secs(i), &ifs, &conn).unwrap();
        }
        assert!(s.state.lock().unwrap().bindings.len() < 3);
    }

    #[test]
    fn options() {
        assert!(Sticky::from_options("ttl_secs = 0").is_err());
        assert!(Sticky::from_options("ttl = 5").is_err());
        assert_eq!(
            Sticky::from_options("ttl_secs = 9").unwrap().ttl.as_secs(),
            9
        );
    }
}
