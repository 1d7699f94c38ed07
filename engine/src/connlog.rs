//! The connection log: one JSON line per connection, for training learned strategies.
//!
//! Each record carries the stats of *every* candidate interface at decision time (not only
//! the chosen one's — a model can only learn what the other links would have done if it sees
//! them), the strategy's choice and reason, each attempt, and the outcome. Relay tasks hand
//! records to a bounded channel with `try_send` (a full channel drops and counts, it never
//! blocks a connection); one writer task appends them to the file.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::router::Member;

/// Records buffered between relays and the writer.
const CHANNEL: usize = 4096;

/// One candidate interface's numbers at decision time.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateStats {
    /// Interface id.
    pub id: u32,
    /// OS name.
    pub name: String,
    /// physical / tether / virtual / zerotier.
    pub kind: &'static str,
    /// up / degraded / down.
    pub health: &'static str,
    /// Smoothed connect time, µs.
    pub latency_ewma_us: Option<u32>,
    /// Jitter, µs.
    pub jitter_us: u32,
    /// Latest samples, µs.
    pub recent_latency_us: Vec<u32>,
    /// Successful connects/probes so far.
    pub successes: u64,
    /// Failed connects/probes so far.
    pub failures: u64,
    /// Open relays.
    pub active: u32,
    /// Smoothed throughput up, bit/s.
    pub up_bps: u64,
    /// Smoothed throughput down, bit/s.
    pub down_bps: u64,
    /// Best one-second download rate seen, bit/s.
    pub peak_down_bps: u64,
    /// Bytes so far, up.
    pub bytes_up: u64,
    /// Bytes so far, down.
    pub bytes_down: u64,
    /// Configured weight.
    pub weight: u32,
}

impl CandidateStats {
    /// The numbers of one interface view.
    pub fn of(m: &Member) -> Self {
        let v = &m.state;
        Self {
            id: v.id,
            name: v.name.clone(),
            kind: v.kind.as_str(),
            health: v.health.as_str(),
            latency_ewma_us: v.latency_ewma_us,
            jitter_us: v.jitter_us,
            recent_latency_us: v.recent_latency_us.clone(),
            successes: v.successes,
            failures: v.failures,
            active: m.handles.live.active(),
            up_bps: v.up_bps,
            down_bps: v.down_bps,
            peak_down_bps: v.peak_down_bps,
            bytes_up: m.handles.live.bytes_up(),
            bytes_down: m.handles.live.bytes_down(),
            weight: v.weight,
        }
    }
}

/// One connect attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// Interface name.
    pub interface: String,
    /// Connected.
    pub ok: bool,
    /// The error, when not.
    pub error: Option<String>,
}

/// One connection, from decision to close.
#[derive(Debug, Clone, Serialize)]
pub struct ConnRecord {
    /// When it was accepted, ms since the Unix epoch.
    pub unix_ms: u64,
    /// Engine-wide id.
    pub id: u64,
    /// Client address.
    pub client: String,
    /// How the client asked: `socks5`, `socks4`, `http-connect`, `http-forward`, `socks5-udp`,
    /// `socks5-bind`.
    pub protocol: String,
    /// Host name the client asked for, if any.
    pub host: Option<String>,
    /// Destination address.
    pub addr: Option<String>,
    /// Destination port.
    pub port: u16,
    /// The strategy that decided.
    pub strategy: String,
    /// Its reason.
    pub reason: String,
    /// Every candidate interface's stats at decision time.
    pub candidates: Vec<CandidateStats>,
    /// Attempts in order.
    pub attempts: Vec<Attempt>,
    /// The interface that carried it.
    pub chosen: Option<String>,
    /// Connected at all.
    pub ok: bool,
    /// Time to connect on the chosen interface, µs.
    pub connect_us: u64,
    /// Client → destination bytes.
    pub bytes_up: u64,
    /// Destination → client bytes.
    pub bytes_down: u64,
    /// From connect to close, ms.
    pub duration_ms: u64,
}

/// The handle relays log through; cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnLog {
    tx: mpsc::Sender<ConnRecord>,
    dropped: Arc<AtomicU64>,
}

impl ConnLog {
    /// Opens (appends to) `path` and starts the writer task on the current runtime.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let (tx, mut rx) = mpsc::channel::<ConnRecord>(CHANNEL);
        let path = path.to_owned();
        tokio::spawn(async move {
            let mut out = BufWriter::new(file);
            let mut failed = false;
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                for record in batch {
                    let mut line = serde_json::to_vec(&record).unwrap_or_default();
                    line.push(b'\n');
                    if let Err(error) = out.write_all(&line).await
                        && !failed
                    {
                        failed = true;
                        tracing::error!(path = %path.display(), %error, "Cannot write the connection log.");
                    }
                }
                let _ = out.flush().await;
            }
        });
        Ok(Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues a record; drops it (and counts) when the writer is behind.
    pub fn log(&self, record: ConnRecord) {
        if self.tx.try_send(record).is_err() && self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!("Connection log writer is behind; dropping records.");
        }
    }
}
