//! The router: an immutable snapshot of the usable interfaces (rebuilt when the set or a
//! number changes) and the strategy that orders them for each new connection.
//!
//! `publish` runs on the ConnectionManager's thread; `pick` runs on relay tasks and only reads
//! the snapshot through an `ArcSwap`, so a connection never waits for an actor to choose.

mod round_robin;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::iface::InterfaceView;
pub use round_robin::RoundRobin;

/// What a strategy knows about a new connection.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    /// The host name the client asked for, if it gave a name.
    pub host: Option<String>,
    /// The destination address (resolved when the client gave a name).
    pub addr: Option<IpAddr>,
    /// Destination port.
    pub port: u16,
    /// The client's address.
    pub client: SocketAddr,
}

/// The strategy's answer: interfaces to try in order, and why.
#[derive(Debug, Clone)]
pub struct Decision {
    /// First pick, then fallbacks. Empty when no interface is usable.
    pub order: Vec<Arc<InterfaceView>>,
    /// Short reason for logs and the dashboard.
    pub reason: String,
}

/// The interfaces as of the last change, plus what strategies precompute from them.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Usable interfaces, ordered by id.
    pub interfaces: Vec<Arc<InterfaceView>>,
    /// The weighted round-robin sequence (indexes into `interfaces`).
    rr_sequence: Vec<usize>,
}

impl Snapshot {
    fn build(all: Vec<Arc<InterfaceView>>) -> Self {
        let interfaces: Vec<_> = all.into_iter().filter(|v| v.is_usable()).collect();
        let weights: Vec<u32> = interfaces.iter().map(|v| v.weight).collect();
        Self {
            rr_sequence: round_robin::smooth_sequence(&weights),
            interfaces,
        }
    }
}

/// Picks the interfaces for each connection from the latest snapshot.
#[derive(Debug, Default)]
pub struct Router {
    snapshot: ArcSwap<Snapshot>,
    round_robin: RoundRobin,
}

impl Router {
    /// A router with no interfaces yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the snapshot (called by the ConnectionManager on every change).
    pub fn publish(&self, interfaces: Vec<Arc<InterfaceView>>) {
        self.snapshot.store(Arc::new(Snapshot::build(interfaces)));
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Orders the usable interfaces for a new connection.
    pub fn pick(&self, _conn: &ConnMeta) -> Decision {
        let snapshot = self.snapshot.load();
        self.round_robin.pick(&snapshot)
    }
}
