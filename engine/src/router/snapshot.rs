//! The snapshot: every interface's state and handles as of the last change, and the same
//! usable interfaces in the plugin ABI's types, built once per change by the
//! [`ConnectionManager`](crate::manager::ConnectionManager) and read by everyone else (router,
//! prober, dashboard, CLI) without asking an actor.

use std::collections::HashMap;
use std::sync::Arc;

use abi_stable::std_types::{ROption, RString, RVec};
use netmix_plugin_api as api;

use crate::health::state::Health;
use crate::iface::{Handles, InterfaceKind, InterfaceState};

/// ZeroTier facts by OS interface name (the network's `portDeviceName`), as the
/// [`ZeroTierAgent`](crate::zerotier::ZeroTierAgent) publishes them: only routes that pass
/// README §A4's checks, none at all for a network whose status is not OK.
pub type ZeroTierFacts = HashMap<String, api::ZeroTierInfo>;

/// One interface: its state (data) and its handles (counters and event queue), side by side.
#[derive(Debug, Clone)]
pub struct Member {
    /// The latest state.
    pub state: Arc<InterfaceState>,
    /// Live counters and the event queue.
    pub handles: Handles,
}

/// The interfaces as of one change.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every interface that is not retired, ordered by id (present or not, any health: the
    /// prober must reach Down ones to bring them back).
    pub all: Vec<Member>,
    /// Indexes into `all` of the interfaces new connections may use: the usable ones, or every
    /// present one when none is usable (the last interfaces are never all ejected).
    usable: Vec<usize>,
    /// The usable interfaces in the ABI's types, for strategies' `rebuild`.
    pub ffi: api::Snapshot,
}

impl Snapshot {
    /// Builds snapshot number `generation` from `members` (any order) and the ZeroTier facts.
    pub fn build(generation: u64, mut members: Vec<Member>, zerotier: &ZeroTierFacts) -> Self {
        members.retain(|m| !m.state.retired);
        members.sort_by_key(|m| m.state.id);
        let any_usable = members.iter().any(|m| m.state.is_usable());
        let usable: Vec<usize> = (0..members.len())
            .filter(|&i| {
                let s = &members[i].state;
                if any_usable {
                    s.is_usable()
                } else {
                    s.is_present()
                }
            })
            .collect();
        let interfaces = usable
            .iter()
            .map(|&i| {
                to_ffi(
                    &members[i],
                    !any_usable,
                    zerotier.get(&members[i].state.name),
                )
            })
            .collect();
        Self {
            ffi: api::Snapshot {
                generation,
                interfaces,
                ext: api::ExtFields::new(),
            },
            all: members,
            usable,
        }
    }

    /// The generation this snapshot was built as.
    pub fn generation(&self) -> u64 {
        self.ffi.generation
    }

    /// The interfaces new connections may use, by id.
    pub fn usable(&self) -> impl Iterator<Item = &Member> {
        self.usable.iter().map(|&i| &self.all[i])
    }

    /// The member with `id`, whatever its health.
    pub fn member(&self, id: u32) -> Option<&Member> {
        self.all.iter().find(|m| m.state.id == id)
    }

    /// The usable member with `id`.
    pub fn usable_member(&self, id: u32) -> Option<&Member> {
        self.usable().find(|m| m.state.id == id)
    }
}

/// The ABI's name for an interface kind.
pub fn kind_to_ffi(kind: InterfaceKind) -> api::InterfaceKind {
    match kind {
        InterfaceKind::Physical => api::InterfaceKind::Physical,
        InterfaceKind::Tether => api::InterfaceKind::Tether,
        InterfaceKind::Virtual => api::InterfaceKind::Virtual,
        InterfaceKind::ZeroTier => api::InterfaceKind::ZeroTier,
        InterfaceKind::Loopback => api::InterfaceKind::Loopback,
    }
}

fn to_ffi(
    m: &Member,
    all_down: bool,
    zerotier: Option<&api::ZeroTierInfo>,
) -> api::InterfaceSnapshot {
    let v = &m.state;
    let state = match v.health {
        // When every interface is Down they are offered anyway, as Degraded.
        Health::Down | Health::Degraded => api::LinkState::Degraded,
        Health::Up if all_down => api::LinkState::Degraded,
        Health::Up => api::LinkState::Up,
    };
    let us = |d: std::time::Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
    api::InterfaceSnapshot {
        id: v.id,
        name: RString::from(v.name.as_str()),
        kind: kind_to_ffi(v.kind),
        state,
        addrs: v
            .addrs
            .iter()
            .map(|n| api::IpNetC::new(n.addr(), n.prefix_len()))
            .collect(),
        latency_ewma_us: v.latency_ewma_us.map_or(ROption::RNone, ROption::RSome),
        latency_samples_us: v.recent_latency_us.iter().copied().collect::<RVec<_>>(),
        jitter_us: v.jitter_us,
        connect_timeout_us: us(v.connect_timeout),
        successes: v.successes,
        failures: v.failures,
        throughput_up_bps: v.up_bps,
        throughput_down_bps: v.down_bps,
        capacity_up_bps: v.peak_up_bps,
        capacity_down_bps: v.peak_down_bps,
        weight: v.weight,
        metered: v.metered,
        // Only for an interface a joined network names as its device.
        zerotier: zerotier.cloned().map_or(ROption::RNone, ROption::RSome),
        live: m.handles.live.clone(),
        ext: api::ExtFields::new(),
    }
}
