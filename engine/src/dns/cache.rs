//! The answer cache every interface shares: a name's addresses until their TTL runs out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The longest an answer is kept, whatever its TTL says.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Names to addresses, each until its TTL; at most `capacity` names (0: nothing is kept).
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    entries: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    addrs: Vec<IpAddr>,
    until: Instant,
}

/// Names are case-insensitive, and `example.com.` is `example.com`.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Cache {
    /// An empty cache for `capacity` names.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
        }
    }

    /// `name`'s addresses, if cached and still valid at `now`.
    pub fn get(&self, name: &str, now: Instant) -> Option<Vec<IpAddr>> {
        self.entries
            .get(&key(name))
            .filter(|e| e.until > now)
            .map(|e| e.addrs.clone())
    }

    /// Keeps `addrs` for `name` until `until` (at most a day). When full, expired entries go
    /// first, then the one that expires soonest.
    pub fn insert(&mut self, name: &str, addrs: &[IpAddr], until: Instant) {
        if self.capacity == 0 || addrs.is_empty() {
            return;
        }
        let now = Instant::now();
        if until <= now {
            return;
        }
        let key = key(name);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| e.until > now);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(
            key,
            Entry {
                addrs: addrs.to_vec(),
                until: until.min(now + MAX_TTL),
            },
        );
    }

    /// How many names are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_answer_lasts_its_ttl_and_names_ignore_case() {
        let mut cache = Cache::new(4);
        let now = Instant::now();
        cache.insert(
            "Example.COM.",
            &[ip("198.19.0.1")],
            now + Duration::from_secs(30),
        );
        assert_eq!(cache.get("example.com", now), Some(vec![ip("198.19.0.1")]));
        assert_eq!(
            cache.get("example.com", now + Duration::from_secs(31)),
            None
        );
        cache.insert("gone.example", &[ip("198.19.0.2")], now);
        assert_eq!(
            cache.get("gone.example", now),
            None,
            "a TTL of 0 is not kept"
        );
    }

    #[test]
    fn a_full_cache_drops_what_expires_soonest() {
        let mut cache = Cache::new(2);
        let now = Instant::now();
        cache.insert("a", &[ip("198.19.0.1")], now + Duration::from_secs(10));
        cache.insert("b", &[ip("198.19.0.2")], now + Duration::from_secs(100));
        cache.insert("c", &[ip("198.19.0.3")], now + Duration::from_secs(50));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a", now), None);
        assert!(cache.get("b", now).is_some() && cache.get("c", now).is_some());
        let mut off = Cache::new(0);
        off.insert("a", &[ip("198.19.0.1")], now + Duration::from_secs(10));
        assert!(off.is_empty());
    }
}
