//! The ConnectionManager actor: the one place that holds the current set of interfaces.
//!
//! Interface actors send it their latest [`InterfaceView`]; it keeps the newest per interface,
//! drops retired ones, and publishes an immutable snapshot to the [`Router`] (an `ArcSwap`
//! store, so a connection never waits on an actor to pick its interface). `GetInterfaces`
//! answers the CLI and the dashboard from the same set.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::iface::{InterfaceChanged, InterfaceView};
use crate::router::Router;

/// Asks for the current interfaces (retired ones excluded), ordered by id.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Arc<InterfaceView>>")]
pub struct GetInterfaces;

/// Holds the latest view of every live interface.
pub struct ConnectionManager {
    views: BTreeMap<u32, Arc<InterfaceView>>,
    router: Arc<Router>,
    last_publish: Instant,
    publish_pending: bool,
}

impl ConnectionManager {
    /// A manager publishing to `router`.
    pub fn new(router: Arc<Router>) -> Self {
        Self {
            views: BTreeMap::new(),
            router,
            last_publish: Instant::now(),
            publish_pending: false,
        }
    }

    fn publish(&mut self) {
        self.publish_pending = false;
        self.last_publish = Instant::now();
        self.router.publish(self.views.values().cloned().collect());
    }
}

/// Counter-only changes are published at most this often.
const PUBLISH_GAP: Duration = Duration::from_millis(5);

impl Actor for ConnectionManager {
    type Context = Context<Self>;
}

impl Handler<InterfaceChanged> for ConnectionManager {
    type Result = ();

    fn handle(&mut self, msg: InterfaceChanged, ctx: &mut Self::Context) {
        let view = msg.0;
        // Membership and health changes go out at once; counter updates (connections opening
        // and closing, thousands a second under load) are folded into one publish per
        // PUBLISH_GAP, so the router's snapshot is at most that stale.
        let urgent = match self.views.get(&view.id) {
            None => true,
            Some(old) => {
                view.retired
                    || old.health != view.health
                    || old.link_up != view.link_up
                    || old.addrs != view.addrs
            }
        };
        if view.retired {
            self.views.remove(&view.id);
        } else {
            self.views.insert(view.id, view);
        }
        if urgent || self.last_publish.elapsed() >= PUBLISH_GAP {
            self.publish();
        } else if !self.publish_pending {
            self.publish_pending = true;
            ctx.run_later(PUBLISH_GAP, |act, _| act.publish());
        }
    }
}

impl Handler<GetInterfaces> for ConnectionManager {
    type Result = MessageResult<GetInterfaces>;

    fn handle(&mut self, _: GetInterfaces, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.views.values().cloned().collect())
    }
}
