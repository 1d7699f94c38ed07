//! Building blocks shared by netmix's strategy plugins.
//!
//! A plugin is a `cdylib` that exports one abi_stable root module (`export_strategy!`), so a
//! plugin cannot link another plugin crate: both root-module symbols would end up in one
//! library. What several plugins need lives here instead, in a plain library that exports
//! nothing of its own:
//!
//! - [`capacity`]: the `capacity` strategy (shares connections in proportion to each link's
//!   measured capacity).
//! - [`latency`]: the `latency` strategy (load-aware lowest latency).
//!
//! Both implement [`netmix_plugin_api::StrategyImpl`]: `plan` turns a snapshot into per-link
//! constants (capacity, latency, penalties, the text of the reason), and `pick` only combines
//! them with each link's live in-flight count ([`InterfaceSnapshot::active_conns`], which the
//! engine raises the moment it starts connecting through a link, so a burst of simultaneous
//! connections spreads without any bookkeeping here). Their `plan_labeled` builds a plan over a
//! subset of the interfaces with a label in front of every reason: the `zerotier` plugin's
//! base strategy is one of them over the non-ZeroTier interfaces. The `capacity` and `latency`
//! plugins wrap [`capacity::Capacity`] and [`latency::Latency`].

pub mod capacity;
pub mod latency;

use netmix_plugin_api::{
    ConnMeta, InterfaceSnapshot, IpFamily,
    abi_stable::std_types::{ROption, RVec},
};

/// Candidates a pick sorts on the stack; more go to the heap.
const INLINE_CANDIDATES: usize = 16;

/// A plan writes each link's reason text in advance for the in-flight counts below this; a
/// pick then only copies it (and writes it for larger counts).
const PRECOMPUTED_REASONS: u32 = 16;

/// Runs `f` on zeroed scratch slices of `n` values each: on the stack for up to
/// [`INLINE_CANDIDATES`], so that a pick allocates nothing but its answer.
fn with_scratch<A: Copy + Default, B: Copy + Default, R>(
    n: usize,
    f: impl FnOnce(&mut [A], &mut [B]) -> R,
) -> R {
    if n <= INLINE_CANDIDATES {
        let mut a = [A::default(); INLINE_CANDIDATES];
        let mut b = [B::default(); INLINE_CANDIDATES];
        f(&mut a[..n], &mut b[..n])
    } else {
        f(&mut vec![A::default(); n], &mut vec![B::default(); n])
    }
}

/// One candidate of a pick: what its reason needs, by candidate position.
#[derive(Debug, Clone, Copy, Default)]
struct Candidate {
    /// Its score (latency) or expected completion (capacity).
    score: f64,
    /// Connections in flight on it, as read for this pick.
    queued: u32,
    /// Its index in the plan.
    link: u32,
}

/// `head`, `n` in decimal and `tail`, in one allocation.
fn reason(head: &str, n: u32, tail: &str) -> String {
    let mut s = String::with_capacity(head.len() + tail.len() + 10);
    s.push_str(head);
    push_decimal(&mut s, u64::from(n));
    s.push_str(tail);
    s
}

/// Appends `n` in decimal (what `write!(s, "{n}")` does, without the formatting machinery:
/// a pick builds its reason with this).
fn push_decimal(s: &mut String, mut n: u64) {
    if n < 10 {
        s.push(char::from(b'0' + n as u8));
        return;
    }
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[start..] {
        s.push(char::from(d));
    }
}

/// Most links a plan keeps (the positions a [`SortKey`] can carry); more are left out.
const MAX_LINKS: usize = 1 << 16;

/// How a pick orders its candidates: one integer compared as a whole (a short array of them
/// sorts faster than the candidates with a chain of comparisons). The high bits are the
/// primary key, the low 16 bits the candidate's position, which is its order in the plan:
/// plans keep their links sorted by id, so equal primaries order by id.
///
/// A float primary (a positive `f64`'s bits, which order like the number) loses its lowest 16
/// mantissa bits: values within 2^-36 of each other (relative) count as equal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey(u64);

impl SortKey {
    fn new(primary: u64, position: usize) -> Self {
        debug_assert!(position < MAX_LINKS);
        Self((primary & !0xffff) | position as u64)
    }

    /// An exact integer primary (a count).
    fn count(n: u32) -> u64 {
        u64::from(n) << 16
    }

    fn position(self) -> usize {
        (self.0 & 0xffff) as usize
    }
}

/// What [`ConnMeta::fits`] needs to know about an interface, kept by a plan: the same test,
/// on stored facts, and inlined into the pick loop (`ConnMeta::fits` is a call into
/// `netmix-plugin-api` per interface and connection).
#[derive(Debug, Clone, Copy, Default)]
struct Fit {
    id: u32,
    v4: bool,
    v6: bool,
}

impl Fit {
    fn of(iface: &InterfaceSnapshot) -> Self {
        Self {
            id: iface.id,
            v4: iface.has_family(IpFamily::V4),
            v6: iface.has_family(IpFamily::V6),
        }
    }

    /// [`ConnMeta::fits`]: not tried yet and, when the destination address is known, with a
    /// source address of its family.
    #[inline]
    fn fits(&self, conn: &ConnMeta) -> bool {
        !conn.tried.contains(&self.id)
            && match &conn.addr {
                ROption::RSome(a) => match a.family {
                    IpFamily::V4 => self.v4,
                    IpFamily::V6 => self.v6,
                },
                ROption::RNone => true,
            }
    }
}

/// The ids of the candidates in `keys` order, for [`netmix_plugin_api::Choice::order`]: one
/// allocation of the right size.
fn order_of(keys: &[SortKey], id_at: impl Fn(usize) -> u32) -> RVec<u32> {
    let mut order = RVec::with_capacity(keys.len());
    for key in keys {
        order.push(id_at(key.position()));
    }
    order
}

/// The usable interfaces (not `Down`; the engine leaves Down ones out of the snapshot anyway)
/// sorted by id, at most [`MAX_LINKS`]: the links of a plan, in [`SortKey`] position order.
fn usable<'a>(
    interfaces: impl IntoIterator<Item = &'a InterfaceSnapshot>,
) -> Vec<&'a InterfaceSnapshot> {
    let mut usable: Vec<&InterfaceSnapshot> =
        interfaces.into_iter().filter(|i| i.is_usable()).collect();
    usable.sort_by_key(|i| i.id);
    usable.truncate(MAX_LINKS);
    usable
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr};

    use netmix_plugin_api::IpNetC;

    #[test]
    fn scratch_and_reason() {
        assert_eq!(
            with_scratch(3, |a: &mut [u32], b: &mut [u8]| a.len() + b.len()),
            6
        );
        let sum = with_scratch(40, |a: &mut [u32], _: &mut [u8]| a.iter().sum::<u32>());
        assert_eq!(sum, 0);
        assert_eq!(reason("a(", 12, ")"), "a(12)");
        for n in [0, 7, 10, 99, 1234567, u64::MAX] {
            let mut s = String::new();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn sort_keys_order_by_primary_then_id() {
        let a = SortKey::new(SortKey::count(1), 9);
        let b = SortKey::new(SortKey::count(2), 1);
        let c = SortKey::new(SortKey::count(2), 3);
        assert!(a < b && b < c);
        assert_eq!(c.position(), 3);
        assert_eq!(
            SortKey::new(SortKey::count(u32::MAX), 0).0 >> 16,
            u64::from(u32::MAX)
        );
        // Positive floats order like their bits, to within 2^-36.
        assert!(SortKey::new(0.5f64.to_bits(), 2) < SortKey::new(1.5f64.to_bits(), 1));
        assert!(SortKey::new(1.0f64.to_bits(), 0) < SortKey::new(1.000_000_001f64.to_bits(), 0));
    }

    #[test]
    fn fit_is_conn_meta_fits() {
        let v4 = IpNetC::new(Ipv4Addr::new(198, 18, 0, 2), 24);
        let v6 = IpNetC::new("2001:db8::2".parse::<Ipv6Addr>().unwrap(), 64);
        let mut ifaces = Vec::new();
        for (id, addrs) in [(1, vec![]), (2, vec![v4]), (3, vec![v6]), (4, vec![v4, v6])] {
            let mut i = InterfaceSnapshot::new(id, "x");
            i.addrs.extend(addrs);
            ifaces.push(i);
        }
        let mut conns = vec![
            ConnMeta::for_host("example.com", 443),
            ConnMeta::for_addr(Ipv4Addr::new(192, 0, 2, 1), 80),
            ConnMeta::for_addr("2001:db8::1".parse::<Ipv6Addr>().unwrap(), 80),
        ];
        for c in conns.clone() {
            let mut tried = c;
            tried.tried.extend([2, 3]);
            conns.push(tried);
        }
        for conn in &conns {
            for iface in &ifaces {
                assert_eq!(
                    Fit::of(iface).fits(conn),
                    conn.fits(iface),
                    "{conn:?} {iface:?}"
                );
            }
        }
    }
}

/// Test helpers shared by the strategies' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::Ipv4Addr;
    use std::sync::atomic::Ordering;

    use netmix_plugin_api::{ConnMeta, InterfaceSnapshot, Snapshot, StrategyImpl};

    /// A TCP connection to the lab target from client port `port` (distinct connections).
    pub fn conn(port: u16) -> ConnMeta {
        let mut c = ConnMeta::for_addr(Ipv4Addr::new(198, 19, 0, 1), 80);
        c.client_port = port;
        c
    }

    /// The first choice of `n` picks in a burst from one plan, counted per interface index
    /// (`ifs[i].id == i`); each pick is counted in flight on its first choice at once, as the
    /// engine counts a connection from the start of its connect.
    pub fn burst<S: StrategyImpl>(s: &S, ifs: &[InterfaceSnapshot], n: u16) -> Vec<u32> {
        let plan = s.plan(&Snapshot::of(ifs.to_vec())).unwrap();
        let mut counts = vec![0; ifs.len()];
        for port in 0..n {
            let first = s.pick(&plan, &conn(port)).unwrap().first().unwrap();
            ifs[first as usize]
                .live
                .active
                .fetch_add(1, Ordering::Relaxed);
            counts[first as usize] += 1;
        }
        counts
    }
}
