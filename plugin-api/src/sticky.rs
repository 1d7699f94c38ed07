//! Per-site stickiness: a destination keeps the interface it last used for a while.
//!
//! Some services tie a session to the client's address (banks, game servers, strict CDNs);
//! when consecutive connections to one host leave through different interfaces they see the
//! address change and log the user out. [`SiteTable`] remembers, per site, the interface a
//! connection used and for how long that memory lasts (a sliding TTL: every use extends it).
//!
//! One implementation serves both users of the idea: the engine's `sticky_ttl_secs`, which
//! applies over whatever strategy is selected, and the `sticky` example plugin.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use abi_stable::std_types::ROption;

use crate::ConnMeta;

/// Expired entries are swept once the table holds this many.
pub const SWEEP_AT: usize = 4096;

/// What the table remembers about one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The interface the site is bound to.
    pub interface: u32,
    /// When the binding was made.
    pub since: Instant,
    /// When it was last used (the TTL counts from here).
    pub last_used: Instant,
}

/// Sites and the interfaces they are bound to, safe to share between threads (the critical
/// section is one hash-map operation).
#[derive(Debug)]
pub struct SiteTable {
    ttl: Duration,
    sites: Mutex<HashMap<String, Binding>>,
}

/// The site a connection goes to: the host name (lowercase) when the client gave one, else the
/// address, else the empty string.
pub fn site_key(conn: &ConnMeta) -> String {
    match (&conn.host, &conn.addr) {
        (ROption::RSome(h), _) => h.as_str().to_ascii_lowercase(),
        (ROption::RNone, ROption::RSome(a)) => a.to_string(),
        (ROption::RNone, ROption::RNone) => String::new(),
    }
}

impl SiteTable {
    /// A table whose bindings last `ttl` after their last use.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            sites: Mutex::new(HashMap::new()),
        }
    }

    /// How long a binding lasts after its last use.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The live binding of `site` at `now`, if any (an expired one is forgotten).
    pub fn get(&self, site: &str, now: Instant) -> Option<Binding> {
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        match sites.get(site) {
            Some(b) if now.saturating_duration_since(b.last_used) < self.ttl => Some(*b),
            Some(_) => {
                sites.remove(site);
                None
            }
            None => None,
        }
    }

    /// Records that `site` used `interface` at `now`: extends a binding to the same interface,
    /// replaces one to another. Sweeps expired entries when the table is large.
    pub fn bind(&self, site: &str, interface: u32, now: Instant) {
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        if sites.len() >= SWEEP_AT {
            let ttl = self.ttl;
            sites.retain(|_, b| now.saturating_duration_since(b.last_used) < ttl);
        }
        match sites.get_mut(site) {
            Some(b) if b.interface == interface => b.last_used = now,
            _ => {
                sites.insert(
                    site.to_owned(),
                    Binding {
                        interface,
                        since: now,
                        last_used: now,
                    },
                );
            }
        }
    }

    /// Looks up `site`'s live binding at `now` and binds the site to `choose(that binding)`, in
    /// one step (one lock; one hash lookup when the site is known). Choosing the bound
    /// interface again extends the binding; another one replaces it. Returns the binding now in
    /// force.
    pub fn stick(
        &self,
        site: &str,
        now: Instant,
        choose: impl FnOnce(Option<&Binding>) -> u32,
    ) -> Binding {
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        let ttl = self.ttl;
        let live = |b: &Binding| now.saturating_duration_since(b.last_used) < ttl;
        if let Some(b) = sites.get_mut(site) {
            let current = *b;
            let interface = choose(Some(&current).filter(|b| live(b)));
            if interface == b.interface && live(b) {
                b.last_used = now;
            } else {
                *b = Binding {
                    interface,
                    since: now,
                    last_used: now,
                };
            }
            return *b;
        }
        if sites.len() >= SWEEP_AT {
            sites.retain(|_, b| live(b));
        }
        let b = Binding {
            interface: choose(None),
            since: now,
            last_used: now,
        };
        sites.insert(site.to_owned(), b);
        b
    }

    /// Sites remembered (expired ones not swept yet included).
    pub fn len(&self) -> usize {
        self.sites
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_slide_and_expire() {
        let t0 = Instant::now();
        let table = SiteTable::new(Duration::from_secs(10));
        assert_eq!(table.get("a", t0), None);
        table.bind("a", 2, t0);
        let s = Duration::from_secs;
        assert_eq!(table.get("a", t0 + s(9)).map(|b| b.interface), Some(2));
        table.bind("a", 2, t0 + s(9));
        let b = table.get("a", t0 + s(18)).unwrap();
        assert_eq!((b.interface, b.since), (2, t0), "a use extends the binding");
        table.bind("a", 3, t0 + s(18));
        assert_eq!(table.get("a", t0 + s(19)).unwrap().since, t0 + s(18));
        assert_eq!(table.get("a", t0 + s(40)), None);
        assert!(table.is_empty(), "an expired binding is forgotten");
    }

    #[test]
    fn stick_reuses_extends_and_replaces_in_one_step() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let table = SiteTable::new(s(10));
        let b = table.stick("a", t0, |bound| {
            assert!(bound.is_none());
            2
        });
        assert_eq!((b.interface, b.since), (2, t0));
        let b = table.stick("a", t0 + s(9), |bound| bound.unwrap().interface);
        assert_eq!((b.interface, b.since, b.last_used), (2, t0, t0 + s(9)));
        let b = table.stick("a", t0 + s(12), |bound| {
            assert_eq!(bound.unwrap().interface, 2, "still live: used 3 s ago");
            3
        });
        assert_eq!((b.interface, b.since), (3, t0 + s(12)), "replaced");
        let b = table.stick("a", t0 + s(30), |bound| {
            assert!(bound.is_none(), "expired");
            3
        });
        assert_eq!(b.since, t0 + s(30), "an expired binding starts anew");
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn large_tables_are_swept() {
        let t0 = Instant::now();
        let table = SiteTable::new(Duration::from_secs(1));
        for i in 0..SWEEP_AT {
            table.bind(&i.to_string(), 1, t0);
        }
        table.bind("late", 1, t0 + Duration::from_secs(5));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn site_keys() {
        assert_eq!(
            site_key(&ConnMeta::for_host("Example.COM", 1)),
            "example.com"
        );
        let by_addr = ConnMeta::for_addr(std::net::Ipv4Addr::new(192, 0, 2, 1), 80);
        assert_eq!(site_key(&by_addr), "192.0.2.1");
    }
}
