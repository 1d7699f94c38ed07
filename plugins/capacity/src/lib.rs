//! `capacity`: place each new connection where the work already queued will finish first.
//!
//! The default strategy. Blind balancers give every link the same share, so on unequal links
//! the slowest one becomes the straggler and a batch of downloads finishes later than on the
//! best link alone. This strategy gives each link a share proportional to what it can carry,
//! with no hand-set weights:
//!
//! ```text
//! expected completion on link i = (connections in flight on i + 1) × unit / capacity_i + latency_i
//! ```
//!
//! - `capacity_i` is the link's measured delivery rate: the engine's decaying peak of its
//!   one-second download rate (`peak_down_bps` extension field). A link not measured yet is
//!   assumed as fast as the average measured one (or all equal when none is), so it gets
//!   traffic and thereby a measurement.
//! - "in flight" is counted by this plugin itself: a connection counts from the moment it is
//!   picked (the engine's own counts reach the snapshot a few milliseconds later, too late
//!   for a burst of simultaneous connections) until `observe` reports it closed, moved to
//!   another interface, or failed. The larger of this ledger and the engine's count is used.
//! - `unit` (option `unit_bytes`, default 1 MiB) is the size of a typical transfer; it sets how
//!   much a link's latency weighs against its queue: small for request/response traffic,
//!   large for bulk downloads.
//! - A Degraded link's expected completion is doubled (option `degraded_penalty`).

#![allow(non_local_definitions)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use netmix_plugin_api::{
    Choice, ConnMeta, ConnOutcome, InterfaceSnapshot, IpAddrC, LinkState, OutcomeStage,
    StrategyError, StrategyImpl, candidates, parse_options,
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

/// A picked connection not yet closed.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    iface: u32,
    since: Instant,
}

/// Entries older than this are dropped (a lost `observe` must not pin a link forever).
const LEDGER_MAX_AGE: Duration = Duration::from_secs(3600);

/// The strategy.
#[derive(Debug)]
pub struct Capacity {
    config: CapacityConfig,
    ledger: Mutex<HashMap<(IpAddrC, u16), InFlight>>,
}

impl Capacity {
    /// From the TOML options table.
    ///
    /// # Errors
    /// Unknown keys or out-of-range values.
    pub fn from_options(options: &str) -> Result<Self, StrategyError> {
        let config: CapacityConfig = parse_options(options)?;
        if config.unit_bytes == 0 {
            return Err(StrategyError::invalid_config(
                "unit_bytes must be at least 1",
            ));
        }
        if config.degraded_penalty.is_nan() || config.degraded_penalty < 1.0 {
            return Err(StrategyError::invalid_config(
                "degraded_penalty must be at least 1",
            ));
        }
        Ok(Self::new(config))
    }

    /// With explicit options.
    pub fn new(config: CapacityConfig) -> Self {
        Self {
            config,
            ledger: Mutex::new(HashMap::new()),
        }
    }

    fn key(conn: &ConnMeta) -> (IpAddrC, u16) {
        (conn.client, conn.client_port)
    }
}

/// A link's measured capacity in bit/s, 0 when unknown.
fn capacity_bps(i: &InterfaceSnapshot) -> f64 {
    i.ext
        .get("peak_down_bps")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

impl StrategyImpl for Capacity {
    fn pick(
        &self,
        interfaces: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        let usable: Vec<&InterfaceSnapshot> = candidates(interfaces, conn).collect();
        if usable.is_empty() {
            return Err(StrategyError::NoCandidate);
        }
        let now = Instant::now();
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        ledger.retain(|_, f| now.duration_since(f.since) < LEDGER_MAX_AGE);
        let mut in_flight: HashMap<u32, u32> = HashMap::new();
        for f in ledger.values() {
            *in_flight.entry(f.iface).or_default() += 1;
        }

        let known: Vec<f64> = usable
            .iter()
            .map(|i| capacity_bps(i))
            .filter(|c| *c > 0.0)
            .collect();
        let fallback_cap = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let unit_bits = self.config.unit_bytes as f64 * 8.0;
        let mut scored: Vec<(f64, &InterfaceSnapshot, f64, u32)> = usable
            .iter()
            .map(|i| {
                let cap = match capacity_bps(i) {
                    c if c > 0.0 => c,
                    _ => fallback_cap,
                };
                let queued = in_flight
                    .get(&i.id)
                    .copied()
                    .unwrap_or(0)
                    .max(i.active_conns);
                let latency = f64::from(i.latency_ewma_us.into_option().unwrap_or(0)) / 1e6;
                let mut eta = (f64::from(queued) + 1.0) * unit_bits / cap + latency;
                if known.is_empty() {
                    // Nothing measured: plain least-loaded, latency breaking ties.
                    eta = f64::from(queued) + 1.0 + latency / 1e3;
                }
                if i.state == LinkState::Degraded {
                    eta *= self.config.degraded_penalty;
                }
                (eta, *i, cap, queued)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
        let (eta, best, cap, queued) = scored[0];
        ledger.insert(
            Self::key(conn),
            InFlight {
                iface: best.id,
                since: now,
            },
        );
        let reason = if known.is_empty() {
            format!(
                "capacity: {} least loaded ({queued} in flight; no rate measured yet)",
                best.name
            )
        } else {
            format!(
                "capacity: {} done in ≈{:.2}s ({queued} in flight, {:.1} Mbit/s)",
                best.name,
                eta,
                cap / 1e6
            )
        };
        Ok(Choice::new(
            scored.iter().map(|s| s.1.id).collect::<Vec<_>>(),
            reason,
        ))
    }

    fn observe(&self, outcome: &ConnOutcome) -> Result<(), StrategyError> {
        let key = Self::key(&outcome.conn);
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        match outcome.stage {
            // Failover may have moved it: count it where it really went.
            OutcomeStage::Connected => {
                if let Some(f) = ledger.get_mut(&key) {
                    f.iface = outcome.interface;
                }
            }
            OutcomeStage::ConnectFailed | OutcomeStage::Closed => {
                ledger.remove(&key);
            }
        }
        Ok(())
    }
}

netmix_plugin_api::export_strategy! {
    name: "capacity",
    description: "Shares new connections in proportion to each link's measured capacity, so a batch finishes together (no hand-set weights).",
    new: Capacity::from_options,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn iface(id: u32, mbit: u64, latency_ms: u32) -> InterfaceSnapshot {
        let mut i = InterfaceSnapshot::new(id, &format!("wan{id}"));
        if mbit > 0 {
            i.ext.set("peak_down_bps", (mbit * 1_000_000).to_string());
        }
        i.latency_ewma_us =
            netmix_plugin_api::abi_stable::std_types::ROption::RSome(latency_ms * 1000);
        i
    }

    fn conn(port: u16) -> ConnMeta {
        let mut c = ConnMeta::for_addr(Ipv4Addr::new(198, 19, 0, 1), 80);
        c.client = Ipv4Addr::LOCALHOST.into();
        c.client_port = port;
        c
    }

    #[test]
    fn a_burst_is_shared_in_proportion_to_capacity() {
        let s = Capacity::new(CapacityConfig::default());
        let ifs = [iface(0, 20, 5), iface(1, 40, 5), iface(2, 80, 5)];
        let mut counts = [0; 3];
        for port in 0..24 {
            let c = s.pick(&ifs, &conn(port)).unwrap();
            counts[c.first().unwrap() as usize] += 1;
        }
        // 20:40:80 of 24 is 3.4 : 6.9 : 13.7.
        assert!((3..=4).contains(&counts[0]), "{counts:?}");
        assert!((6..=8).contains(&counts[1]), "{counts:?}");
        assert!((13..=15).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn closed_connections_leave_the_ledger() {
        let s = Capacity::new(CapacityConfig::default());
        let ifs = [iface(0, 10, 5), iface(1, 10, 5)];
        let first = s.pick(&ifs, &conn(1)).unwrap().first().unwrap();
        let outcome = ConnOutcome {
            interface: first,
            conn: conn(1),
            stage: OutcomeStage::Closed,
            connect_us: 1,
            bytes_up: 0,
            bytes_down: 0,
            duration_us: 0,
            ext: Default::default(),
        };
        s.observe(&outcome).unwrap();
        assert!(s.ledger.lock().unwrap().is_empty());
        // Equal links, nothing in flight: the same (lowest id) link again.
        assert_eq!(s.pick(&ifs, &conn(2)).unwrap().first(), Some(first));
    }

    #[test]
    fn unmeasured_links_share_by_count() {
        let s = Capacity::new(CapacityConfig::default());
        let ifs = [iface(0, 0, 5), iface(1, 0, 5), iface(2, 0, 5)];
        let mut counts = [0; 3];
        for port in 0..30 {
            counts[s.pick(&ifs, &conn(port)).unwrap().first().unwrap() as usize] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
    }

    #[test]
    fn latency_decides_between_idle_equal_links() {
        let s = Capacity::new(CapacityConfig {
            unit_bytes: 1000,
            ..Default::default()
        });
        let ifs = [iface(0, 50, 40), iface(1, 50, 5)];
        assert_eq!(s.pick(&ifs, &conn(1)).unwrap().first(), Some(1));
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(Capacity::from_options("unit_bytes = 0").is_err());
        assert!(Capacity::from_options("nope = 1").is_err());
        assert!(Capacity::from_options("").is_ok());
    }
}
