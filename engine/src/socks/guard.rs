//! Defences of the SOCKS front against clients that never finish or keep guessing.
//!
//! - [`HandshakePool`]: connections still in their handshake are bounded apart from the
//!   connection cap. When the pool is full a new connection evicts the *oldest* pending
//!   handshake, so a crowd of silent or slow-drip connections (all from 127.0.0.1, as every
//!   local client is) can never keep a good client waiting: it is served at once, and the
//!   silent ones lose their place.
//! - [`AuthGuard`]: failed logins per client address. After a few, each further failure is
//!   answered only after a growing delay (250 ms doubling up to 8 s), and the failures are
//!   reported in an INFO line at most once a minute per client.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

// === impl HandshakePool ===

/// Pending handshakes, oldest first.
#[derive(Debug)]
pub struct HandshakePool {
    capacity: usize,
    pending: Mutex<(u64, VecDeque<(u64, CancellationToken)>)>,
}

/// A place in the pool; leaving it (drop) frees it. `evicted` fires when a newer connection
/// took it.
#[derive(Debug)]
pub struct Place<'a> {
    pool: &'a HandshakePool,
    id: u64,
    /// Cancelled when this handshake is evicted.
    pub evicted: CancellationToken,
}

impl HandshakePool {
    /// A pool of `capacity` places (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            pending: Mutex::new((0, VecDeque::new())),
        }
    }

    /// The default size for a connection cap: a quarter of it, at most 256, at least 8.
    pub fn for_max_connections(max: usize) -> Self {
        Self::new((max / 4).clamp(8, 256))
    }

    /// Takes a place, evicting the oldest pending handshake when the pool is full.
    pub fn enter(&self) -> Place<'_> {
        let evicted = CancellationToken::new();
        let mut guard = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, queue) = &mut *guard;
        if queue.len() >= self.capacity
            && let Some((_, oldest)) = queue.pop_front()
        {
            oldest.cancel();
        }
        *next += 1;
        let id = *next;
        queue.push_back((id, evicted.clone()));
        Place {
            pool: self,
            id,
            evicted,
        }
    }

    /// Handshakes pending now.
    pub fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut guard = self
            .pool
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(pos) = guard.1.iter().position(|(id, _)| *id == self.id) {
            guard.1.remove(pos);
        }
    }
}

// === impl AuthGuard ===

/// Failures allowed before answers slow down.
const FREE_FAILURES: u32 = 3;
/// A client's failures are forgotten after this long without one.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Longest delay before a failure answer.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Clients remembered at most (the oldest-window entries are swept past it).
const MAX_CLIENTS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    logged: Option<Instant>,
}

/// Failed logins per client address.
#[derive(Debug, Default)]
pub struct AuthGuard {
    clients: Mutex<HashMap<IpAddr, Failures>>,
}

impl AuthGuard {
    /// Records a failed login from `client` at `now`; returns how long to wait before
    /// answering, and logs (at most once a minute per client) at INFO.
    pub fn failed(&self, client: IpAddr, now: Instant) -> Duration {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, f| now.duration_since(f.last) < FAILURE_WINDOW);
        }
        let f = clients.entry(client).or_insert(Failures {
            count: 0,
            last: now,
            logged: None,
        });
        if now.duration_since(f.last) >= FAILURE_WINDOW {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        let delay = backoff(f.count);
        if f.logged
            .is_none_or(|t| now.duration_since(t) >= FAILURE_WINDOW)
        {
            f.logged = Some(now);
            tracing::info!(
                %client,
                failures = f.count,
                delay_ms = delay.as_millis() as u64,
                "SOCKS authentication failed (further failures from this client are answered more slowly)."
            );
        }
        delay
    }

    /// A successful login from `client`: its failures are forgotten (not when it was last
    /// reported: the INFO line stays at most once a minute).
    pub fn succeeded(&self, client: IpAddr) {
        if let Some(f) = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&client)
        {
            f.count = 0;
        }
    }
}

/// The delay after the `n`th recent failure.
fn backoff(n: u32) -> Duration {
    if n <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (n - FREE_FAILURES - 1).min(10);
    (Duration::from_millis(250) * 2u32.pow(doublings)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pool_evicts_the_oldest() {
        let pool = HandshakePool::new(2);
        let a = pool.enter();
        let b = pool.enter();
        assert!(!a.evicted.is_cancelled());
        let c = pool.enter();
        assert!(a.evicted.is_cancelled(), "the oldest lost its place");
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert_eq!(pool.len(), 2);
        drop(b);
        assert_eq!(pool.len(), 1);
        let d = pool.enter();
        assert!(!c.evicted.is_cancelled() && !d.evicted.is_cancelled());
        drop(a); // an evicted place leaving does not disturb the others
        assert_eq!(pool.len(), 2);
        assert_eq!(HandshakePool::for_max_connections(4096).capacity, 256);
        assert_eq!(HandshakePool::for_max_connections(10).capacity, 8);
    }

    #[test]
    fn failures_slow_down_and_success_forgets() {
        let g = AuthGuard::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        let delays: Vec<u64> = (0..8)
            .map(|i| g.failed(ip, t0 + Duration::from_secs(i)).as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 0, 250, 500, 1000, 2000, 4000]);
        assert_eq!(backoff(40), MAX_DELAY);
        g.succeeded(ip);
        assert_eq!(g.failed(ip, t0 + Duration::from_secs(9)), Duration::ZERO);
        // A minute without failures forgets them too.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for i in 0..5 {
            g.failed(other, t0 + Duration::from_secs(i));
        }
        assert_eq!(
            g.failed(other, t0 + Duration::from_secs(120)),
            Duration::ZERO
        );
    }
}
