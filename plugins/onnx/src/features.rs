//! The model's input: one row of [`FEATURES`] per candidate interface, and the online state
//! the plugin keeps to compute them (per-destination expected size, per-interface capacity
//! and bytes in flight).
//!
//! # The contract with the trainer
//!
//! `plugins/onnx/train/train.py` replays a connection log (engine `connection_log`) and
//! computes the same rows with the same rules and constants, from the same facts: the
//! candidates' stats at decision time (what `pick` sees in the snapshot) and the earlier
//! connections' outcomes (what `observe` sees). Changing a feature, its order or a rule here
//! means changing `train.py` too and bumping [`FEATURE_VERSION`], so that an old model is
//! refused instead of silently mis-read.
//!
//! | feature | meaning |
//! |---|---|
//! | `latency_ms` | latency EWMA (median of the other candidates, else 50 ms, when unknown) |
//! | `jitter_ms` | jitter |
//! | `success_rate` | successes / (successes + failures), 1 when nothing was tried |
//! | `active` | open connections |
//! | `down_mbps` | current smoothed download throughput |
//! | `capacity_mbps` | estimated download capacity (see [`capacity_bps`]) |
//! | `capacity_known` | 1 when the capacity was measured by a big transfer, else 0 (optimistic prior) |
//! | `expected_kb` | expected size of this connection: EWMA of earlier `bytes_down` to the same destination |
//! | `inflight_kb` | expected bytes of the connections open on this interface (plugin's own count) |
//! | `transfer_ms` | `expected_kb` over the capacity |
//! | `queue_ms` | (`inflight_kb` + `expected_kb`) over the capacity |

use std::collections::HashMap;

use netmix_plugin_api::{ConnMeta, ConnOutcome, InterfaceSnapshot, OutcomeStage};

/// Feature names, in column order. Stored in the model as `netmix.features`.
pub const FEATURES: [&str; 11] = [
    "latency_ms",
    "jitter_ms",
    "success_rate",
    "active",
    "down_mbps",
    "capacity_mbps",
    "capacity_known",
    "expected_kb",
    "inflight_kb",
    "transfer_ms",
    "queue_ms",
];
/// Number of features per row.
pub const N_FEATURES: usize = FEATURES.len();
/// Version of the feature rules; stored in the model as `netmix.version`.
pub const FEATURE_VERSION: &str = "1";

/// Latency assumed when no candidate has a sample, ms.
pub const DEFAULT_UNKNOWN_LATENCY_MS: f64 = 50.0;
/// Expected size of a connection to a destination never seen, before any connection closed, bytes.
pub const DEFAULT_EXPECTED_BYTES: f64 = 16_384.0;
/// Capacity assumed for a link no big transfer has measured yet, bit/s: optimistic, so that a
/// big download tries it once (and measures it) instead of starving it.
pub const OPTIMISTIC_CAPACITY_BPS: f64 = 100e6;
/// A closed connection with at least this many bytes down measures its link's capacity.
pub const BIG_TRANSFER_BYTES: u64 = 256 * 1024;
/// Smoothing of the per-destination expected size (weight of the newest sample).
pub const SIZE_ALPHA: f64 = 0.5;
/// Smoothing of the per-interface measured rate (weight of the newest sample).
pub const RATE_ALPHA: f64 = 0.5;
/// Destinations remembered at most; the table is cleared when it grows past this.
pub const MAX_DESTINATIONS: usize = 4096;

/// What the plugin learned from earlier connections (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct FeatureState {
    /// Destination key → EWMA of bytes down at close.
    dest_bytes: HashMap<String, f64>,
    /// EWMA of bytes down at close over every destination (the default for a new one).
    global_bytes: Option<f64>,
    /// Interface id → EWMA of the download rate of its big transfers, bit/s.
    rate_bps: HashMap<u32, f64>,
    /// Open connections: (interface, client address, client port) → expected bytes.
    open: HashMap<(u32, [u8; 16], u16), f64>,
    /// Interface id → sum of the expected bytes of its open connections.
    inflight: HashMap<u32, f64>,
}

/// The key of a destination: `host-or-address:port`, lowercase.
pub fn dest_key(conn: &ConnMeta) -> String {
    format!("{}:{}", conn.host_or_addr().to_ascii_lowercase(), conn.port)
}

impl FeatureState {
    /// The expected bytes down of a new connection to `conn`'s destination.
    pub fn expected_bytes(&self, conn: &ConnMeta) -> f64 {
        self.dest_bytes
            .get(&dest_key(conn))
            .copied()
            .or(self.global_bytes)
            .unwrap_or(DEFAULT_EXPECTED_BYTES)
    }

    /// The capacity estimate of `iface` and whether it was measured, see [`capacity_bps`].
    pub fn capacity(&self, iface: &InterfaceSnapshot) -> (f64, bool) {
        capacity_bps(self.rate_bps.get(&iface.id).copied(), iface)
    }

    /// Expected bytes of the connections open on interface `id`.
    pub fn inflight_bytes(&self, id: u32) -> f64 {
        self.inflight.get(&id).copied().unwrap_or(0.0).max(0.0)
    }

    /// Learns from an outcome.
    pub fn observe(&mut self, outcome: &ConnOutcome) {
        let key = (
            outcome.interface,
            outcome.conn.client.octets,
            outcome.conn.client_port,
        );
        match outcome.stage {
            OutcomeStage::Connected => {
                let expected = self.expected_bytes(&outcome.conn);
                if let Some(old) = self.open.insert(key, expected) {
                    self.add_inflight(outcome.interface, -old);
                }
                self.add_inflight(outcome.interface, expected);
            }
            OutcomeStage::ConnectFailed => {
                if let Some(old) = self.open.remove(&key) {
                    self.add_inflight(outcome.interface, -old);
                }
            }
            OutcomeStage::Closed => {
                if let Some(old) = self.open.remove(&key) {
                    self.add_inflight(outcome.interface, -old);
                }
                self.learn_size(&outcome.conn, outcome.bytes_down as f64);
                if outcome.bytes_down >= BIG_TRANSFER_BYTES && outcome.duration_us > 0 {
                    let rate = outcome.bytes_down as f64 * 8.0 / (outcome.duration_us as f64 / 1e6);
                    let r = self.rate_bps.entry(outcome.interface).or_insert(rate);
                    *r += RATE_ALPHA * (rate - *r);
                }
            }
        }
    }

    fn add_inflight(&mut self, id: u32, bytes: f64) {
        let v = self.inflight.entry(id).or_insert(0.0);
        *v = (*v + bytes).max(0.0);
    }

    fn learn_size(&mut self, conn: &ConnMeta, bytes: f64) {
        if self.dest_bytes.len() >= MAX_DESTINATIONS {
            self.dest_bytes.clear();
        }
        let e = self.dest_bytes.entry(dest_key(conn)).or_insert(bytes);
        *e += SIZE_ALPHA * (bytes - *e);
        let g = self.global_bytes.get_or_insert(bytes);
        *g += SIZE_ALPHA * (bytes - *g);
    }

    /// One row of [`FEATURES`] per candidate, appended to `rows` (row-major).
    pub fn rows(&self, candidates: &[&InterfaceSnapshot], conn: &ConnMeta, rows: &mut Vec<f32>) {
        let neutral = neutral_latency_ms(candidates);
        let expected = self.expected_bytes(conn);
        for iface in candidates {
            let (cap, known) = self.capacity(iface);
            let inflight = self.inflight_bytes(iface.id);
            let row = feature_row(&RowInput {
                latency_ms: iface.latency_ms().unwrap_or(neutral),
                jitter_ms: f64::from(iface.jitter_us) / 1000.0,
                successes: iface.successes,
                failures: iface.failures,
                active: iface.active_conns(),
                down_bps: iface.throughput_down_bps as f64,
                capacity_bps: cap,
                capacity_known: known,
                expected_bytes: expected,
                inflight_bytes: inflight,
            });
            rows.extend(row.iter().map(|&v| v as f32));
        }
    }
}

/// The capacity estimate of a link, bit/s, and whether it was measured: the plugin's own
/// measurement of big transfers (`observed`), or the engine's `capacity_down_bps` once a big
/// transfer was seen, whichever is larger; [`OPTIMISTIC_CAPACITY_BPS`] before any.
///
/// The engine's smoothed `throughput_down_bps` is not used for this: it is 0 on an idle link.
pub fn capacity_bps(observed: Option<f64>, iface: &InterfaceSnapshot) -> (f64, bool) {
    match observed {
        Some(rate) if rate > 0.0 => (rate.max(iface.capacity_down_bps as f64), true),
        _ => (OPTIMISTIC_CAPACITY_BPS, false),
    }
}

/// The median latency EWMA of the candidates that have one (the value for those that do not).
pub fn neutral_latency_ms(candidates: &[&InterfaceSnapshot]) -> f64 {
    let mut known: Vec<f64> = candidates.iter().filter_map(|i| i.latency_ms()).collect();
    if known.is_empty() {
        return DEFAULT_UNKNOWN_LATENCY_MS;
    }
    known.sort_by(f64::total_cmp);
    known[known.len() / 2]
}

/// The raw facts of one row.
#[derive(Debug, Clone, Copy)]
pub struct RowInput {
    /// Latency EWMA (or the neutral value), ms.
    pub latency_ms: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Successful connects/probes.
    pub successes: u64,
    /// Failed connects/probes.
    pub failures: u64,
    /// Open connections.
    pub active: u32,
    /// Smoothed download throughput, bit/s.
    pub down_bps: f64,
    /// Capacity estimate, bit/s.
    pub capacity_bps: f64,
    /// Whether the capacity was measured.
    pub capacity_known: bool,
    /// Expected bytes of this connection.
    pub expected_bytes: f64,
    /// Expected bytes of the open connections on the interface.
    pub inflight_bytes: f64,
}

/// One row of [`FEATURES`].
pub fn feature_row(r: &RowInput) -> [f64; N_FEATURES] {
    let total = r.successes + r.failures;
    let success_rate = if total == 0 {
        1.0
    } else {
        r.successes as f64 / total as f64
    };
    let cap = r.capacity_bps.max(1e3);
    let transfer_ms = r.expected_bytes * 8.0 / cap * 1000.0;
    let queue_ms = (r.inflight_bytes + r.expected_bytes) * 8.0 / cap * 1000.0;
    [
        r.latency_ms,
        r.jitter_ms,
        success_rate,
        f64::from(r.active),
        r.down_bps / 1e6,
        r.capacity_bps / 1e6,
        if r.capacity_known { 1.0 } else { 0.0 },
        r.expected_bytes / 1024.0,
        r.inflight_bytes / 1024.0,
        transfer_ms,
        queue_ms,
    ]
}

/// The simple formula "latency + size / throughput", ms: the `formula` mode's score and the
/// benchmark's reference.
pub fn formula_ms(row: &[f32]) -> f64 {
    f64::from(row[0]) + f64::from(row[9])
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::RSome;
    use netmix_plugin_api::ExtFields;

    use super::*;

    fn outcome(iface: u32, host: &str, stage: OutcomeStage, bytes: u64, us: u64) -> ConnOutcome {
        let mut conn = ConnMeta::for_host(host, 80);
        conn.client_port = 40_000;
        ConnOutcome {
            interface: iface,
            conn,
            stage,
            connect_us: 1000,
            bytes_up: 100,
            bytes_down: bytes,
            duration_us: us,
            ext: ExtFields::new(),
        }
    }

    #[test]
    fn learns_sizes_rates_and_inflight() {
        let mut s = FeatureState::default();
        let files = ConnMeta::for_host("files.lab", 80);
        assert_eq!(s.expected_bytes(&files), DEFAULT_EXPECTED_BYTES);
        s.observe(&outcome(1, "files.lab", OutcomeStage::Connected, 0, 0));
        assert_eq!(s.inflight_bytes(1), DEFAULT_EXPECTED_BYTES);
        // 2 MB in 4 s: 4 Mbit/s.
        s.observe(&outcome(
            1,
            "files.lab",
            OutcomeStage::Closed,
            2_000_000,
            4_000_000,
        ));
        assert_eq!(s.inflight_bytes(1), 0.0);
        assert_eq!(s.expected_bytes(&files), 2_000_000.0);
        // A new destination gets the global average.
        assert_eq!(
            s.expected_bytes(&ConnMeta::for_host("api.lab", 80)),
            2_000_000.0
        );
        let mut iface = InterfaceSnapshot::new(1, "wan0");
        assert_eq!(s.capacity(&iface), (4e6, true));
        iface.capacity_down_bps = 5_000_000;
        assert_eq!(s.capacity(&iface), (5e6, true));
        let other = InterfaceSnapshot::new(2, "wan1");
        assert_eq!(s.capacity(&other), (OPTIMISTIC_CAPACITY_BPS, false));
    }

    #[test]
    fn rows_follow_the_feature_order() {
        let mut s = FeatureState::default();
        s.observe(&outcome(
            1,
            "files.lab",
            OutcomeStage::Closed,
            1_048_576,
            1_000_000,
        ));
        let mut a = InterfaceSnapshot::new(1, "wan0");
        a.latency_ewma_us = RSome(5_000);
        a.successes = 3;
        a.failures = 1;
        let b = InterfaceSnapshot::new(2, "wan1");
        let mut rows = Vec::new();
        s.rows(&[&a, &b], &ConnMeta::for_host("files.lab", 80), &mut rows);
        assert_eq!(rows.len(), 2 * N_FEATURES);
        let (ra, rb) = rows.split_at(N_FEATURES);
        assert_eq!(ra[0], 5.0);
        assert_eq!(rb[0], 5.0, "unknown latency is the median of the known");
        assert_eq!(ra[2], 0.75);
        assert_eq!(ra[7], 1024.0);
        // 1 MiB measured at 1 MiB/s: 1000 ms.
        assert!((ra[9] - 1000.0).abs() < 0.01, "{}", ra[9]);
        assert_eq!(rb[6], 0.0);
        assert!(formula_ms(ra) > formula_ms(rb));
    }
}
