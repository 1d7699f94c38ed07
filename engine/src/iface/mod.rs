//! Interfaces: one [`InterfaceActor`] per network interface, the [`Discovery`] actor that starts
//! and retires them as interfaces come and go, and outbound socket binding.
//!
//! Each `InterfaceActor` owns its interface's state and numbers. Whenever they change it sends an
//! immutable [`InterfaceView`] to the [`ConnectionManager`](crate::manager::ConnectionManager),
//! which publishes the set to the router. Relay tasks report connection events to the actor
//! with `do_send`; they never wait on it.

pub mod bind;
mod discovery;
pub mod scan;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

pub use discovery::{Discovery, Rescan};
pub use scan::{InterfaceKind, ScannedInterface};

/// Whether new connections may use an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Usable.
    Up,
    /// The OS says the link is down (or it has no usable address).
    Down,
}

/// Counters an interface accumulates from the connections it carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InterfaceStats {
    /// Relayed connections open now.
    pub active: u32,
    /// Outbound connects that succeeded.
    pub successes: u64,
    /// Outbound connects that failed on the interface's side.
    pub failures: u64,
    /// Bytes sent to destinations (client → destination).
    pub bytes_up: u64,
    /// Bytes received from destinations (destination → client).
    pub bytes_down: u64,
}

/// An immutable picture of one interface, as the router and the dashboard see it.
#[derive(Debug, Clone)]
pub struct InterfaceView {
    /// Stable for the life of the interface; a vanished-and-returned interface gets a new id.
    pub id: u32,
    /// OS name.
    pub name: String,
    /// OS index.
    pub index: u32,
    /// Kind guessed from the name.
    pub kind: InterfaceKind,
    /// Usable or not.
    pub state: LinkState,
    /// Source addresses, both families.
    pub addrs: Vec<IpAddr>,
    /// Relative share for weight-aware strategies.
    pub weight: u32,
    /// Costs money per byte.
    pub metered: bool,
    /// The interface vanished: no new connections; open ones drain.
    pub retired: bool,
    /// Counters.
    pub stats: InterfaceStats,
    /// The actor to report connection events to.
    pub actor: Addr<InterfaceActor>,
}

impl InterfaceView {
    /// The source address to bind for `dest`: the first address of the same family.
    pub fn source_for(&self, dest: &SocketAddr) -> Option<IpAddr> {
        self.addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == dest.is_ipv4())
    }

    /// May new connections go out through it.
    pub fn is_usable(&self) -> bool {
        self.state == LinkState::Up && !self.retired && !self.addrs.is_empty()
    }
}

// === messages ===

/// Discovery saw the interface again; its link state or addresses may have changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LinkUpdated(pub ScannedInterface);

/// The interface vanished: take no new connections, stop once the open ones are done.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Retire;

/// A relay connected through this interface.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ConnOpened;

/// An outbound connect through this interface failed on the interface's side.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ConnFailed;

/// A relay through this interface ended.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ConnClosed {
    /// Client → destination bytes.
    pub bytes_up: u64,
    /// Destination → client bytes.
    pub bytes_down: u64,
}

/// Event for the connection manager: an interface's view changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct InterfaceChanged(pub Arc<InterfaceView>);

// === impl InterfaceActor ===

/// Owns one interface's state and counters.
pub struct InterfaceActor {
    view: InterfaceView,
    manager: Recipient<InterfaceChanged>,
}

impl InterfaceActor {
    /// Starts the actor for a newly discovered interface.
    pub fn spawn(
        id: u32,
        scanned: &ScannedInterface,
        weight: u32,
        metered: bool,
        manager: Recipient<InterfaceChanged>,
    ) -> Addr<Self> {
        let scanned = scanned.clone();
        Self::create(move |ctx| {
            let view = InterfaceView {
                id,
                name: scanned.name.clone(),
                index: scanned.index,
                kind: scanned.kind,
                state: if scanned.up {
                    LinkState::Up
                } else {
                    LinkState::Down
                },
                addrs: scanned.addrs.clone(),
                weight,
                metered,
                retired: false,
                stats: InterfaceStats::default(),
                actor: ctx.address(),
            };
            Self { view, manager }
        })
    }

    fn publish(&self) {
        self.manager
            .do_send(InterfaceChanged(Arc::new(self.view.clone())));
    }

    fn stop_if_drained(&self, ctx: &mut Context<Self>) {
        if self.view.retired && self.view.stats.active == 0 {
            ctx.stop();
        }
    }
}

impl Actor for InterfaceActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        tracing::info!(
            iface = %self.view.name,
            id = self.view.id,
            kind = self.view.kind.as_str(),
            state = ?self.view.state,
            addrs = ?self.view.addrs,
            "Interface joined."
        );
        self.publish();
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(iface = %self.view.name, "Interface actor stopped.");
    }
}

impl Handler<LinkUpdated> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, msg: LinkUpdated, _ctx: &mut Self::Context) {
        let s = msg.0;
        let state = if s.up { LinkState::Up } else { LinkState::Down };
        if state != self.view.state {
            tracing::info!(iface = %self.view.name, from = ?self.view.state, to = ?state, "Link state changed.");
        }
        if s.addrs != self.view.addrs {
            tracing::info!(iface = %self.view.name, addrs = ?s.addrs, "Addresses changed.");
        }
        self.view.state = state;
        self.view.addrs = s.addrs;
        self.view.index = s.index;
        self.publish();
    }
}

impl Handler<Retire> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        tracing::info!(iface = %self.view.name, open = self.view.stats.active, "Interface vanished; draining.");
        self.view.retired = true;
        self.publish();
        self.stop_if_drained(ctx);
    }
}

impl Handler<ConnOpened> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, _: ConnOpened, _ctx: &mut Self::Context) {
        self.view.stats.active += 1;
        self.view.stats.successes += 1;
        self.publish();
    }
}

impl Handler<ConnFailed> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, _: ConnFailed, _ctx: &mut Self::Context) {
        self.view.stats.failures += 1;
        self.publish();
    }
}

impl Handler<ConnClosed> for InterfaceActor {
    type Result = ();

    fn handle(&mut self, msg: ConnClosed, ctx: &mut Self::Context) {
        let s = &mut self.view.stats;
        s.active = s.active.saturating_sub(1);
        s.bytes_up += msg.bytes_up;
        s.bytes_down += msg.bytes_down;
        self.publish();
        self.stop_if_drained(ctx);
    }
}
