//! Fixtures for unit tests of the connection path: a [`ServeContext`] whose one interface is
//! the loopback, so that real sockets go through the real path on any machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;

use super::conn::ServeContext;
use crate::config::Config;
use crate::events::Events;
use crate::iface::{
    Handles, InterfaceKind, InterfaceParams, InterfaceState, Rescan, ScannedInterface,
};
use crate::router::{Member, Router, Snapshot, ZeroTierFacts};

/// Counts the rescans the path asks for.
struct Rescans(Arc<AtomicUsize>);

impl Actor for Rescans {
    type Context = Context<Self>;
}

impl Handler<Rescan> for Rescans {
    type Result = ();
    fn handle(&mut self, _: Rescan, _: &mut Context<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The loopback interface (`lo`, 127.0.0.1/8) as a router member, Up.
pub(crate) fn loopback_member() -> Member {
    let scanned = ScannedInterface {
        name: "lo".to_owned(),
        index: 1,
        addrs: vec!["127.0.0.1/8".parse().expect("a prefix")],
        up: true,
        loopback: true,
        kind: InterfaceKind::Loopback,
        eligible: Ok(()),
    };
    let params = InterfaceParams::from_config(&Config::default());
    Member {
        state: Arc::new(InterfaceState::new(1, &scanned, (1, false), &params)),
        handles: Handles::detached(),
    }
}

/// A context for `config` whose router knows the loopback interface only (returned too, for
/// its counters). Call it inside an actix `System` (`#[actix::test]`).
pub(crate) fn loopback_context(config: &Config) -> (Arc<ServeContext>, Member) {
    let member = loopback_member();
    let router = Arc::new(Router::new(Events::new()));
    router.publish(Snapshot::build(
        1,
        vec![member.clone()],
        &ZeroTierFacts::new(),
    ));
    let rescan = Rescans(Arc::default()).start().recipient();
    let ctx = ServeContext::new(
        config,
        router,
        Arc::new(crate::dns::Dns::new(config)),
        rescan,
        Events::new(),
        None,
        None,
    );
    (Arc::new(ctx), member)
}
