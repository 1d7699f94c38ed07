//! The ConnectionManager actor: the one place that holds the current set of interfaces.
//!
//! Interface actors send it their latest [`InterfaceView`]; it keeps the newest per interface,
//! drops retired ones, and publishes an immutable snapshot to the [`Router`] (an `ArcSwap`
//! store, so a connection never waits on an actor to pick its interface). `GetInterfaces`
//! answers the CLI and the dashboard from the same set.

use std::collections::BTreeMap;
use std::sync::Arc;

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
}

impl ConnectionManager {
    /// A manager publishing to `router`.
    pub fn new(router: Arc<Router>) -> Self {
        Self {
            views: BTreeMap::new(),
            router,
        }
    }
}

impl Actor for ConnectionManager {
    type Context = Context<Self>;
}

impl Handler<InterfaceChanged> for ConnectionManager {
    type Result = ();

    fn handle(&mut self, msg: InterfaceChanged, _ctx: &mut Self::Context) {
        let view = msg.0;
        if view.retired {
            self.views.remove(&view.id);
        } else {
            self.views.insert(view.id, view);
        }
        self.router.publish(self.views.values().cloned().collect());
    }
}

impl Handler<GetInterfaces> for ConnectionManager {
    type Result = MessageResult<GetInterfaces>;

    fn handle(&mut self, _: GetInterfaces, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.views.values().cloned().collect())
    }
}
