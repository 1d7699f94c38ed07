//! The ConnectionManager actor: the one place that holds the set of interfaces and builds the
//! snapshot everyone reads.
//!
//! Interface actors send it their [`InterfaceState`] on every change (their handles once, when
//! they join); the ZeroTier agent sends its facts. On every message it builds one
//! [`Snapshot`] (states and handles side by side by id, plus the plugin ABI's view) and
//! publishes it to the [`Router`] — an `ArcSwap` store that connection tasks, the prober, the
//! dashboard feed and the CLI read without asking an actor. It adds no delay of its own: the
//! only debounce between the data path and the snapshot is the interface actors' collection
//! window ([`crate::iface::COLLECT_WINDOW`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::iface::{
    GetLatencyHistory, InterfaceActor, InterfaceChanged, InterfaceJoined, Membership,
};
use crate::router::{Member, Router, Snapshot, ZeroTierFacts};

/// The ZeroTier agent's latest per-interface facts (they replace the previous ones).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ZeroTierChanged(pub ZeroTierFacts);

/// Asks for one interface's latency history (forwarded to its actor).
#[derive(Message, Debug)]
#[rtype(result = "Vec<(std::time::Duration, u32)>")]
pub struct LatencyHistoryOf(pub u32);

/// Holds every live interface and builds the snapshot.
pub struct ConnectionManager {
    members: BTreeMap<u32, Member>,
    actors: BTreeMap<u32, Addr<InterfaceActor>>,
    zerotier: ZeroTierFacts,
    router: Arc<Router>,
    generation: u64,
}

impl ConnectionManager {
    /// A manager publishing to `router`.
    pub fn new(router: Arc<Router>) -> Self {
        Self {
            members: BTreeMap::new(),
            actors: BTreeMap::new(),
            zerotier: ZeroTierFacts::new(),
            router,
            generation: 0,
        }
    }

    /// Where interface actors report to `addr`.
    pub fn membership(addr: &Addr<Self>) -> Membership {
        Membership {
            joined: addr.clone().recipient(),
            changed: addr.clone().recipient(),
        }
    }

    fn publish(&mut self) {
        self.generation += 1;
        let members = self.members.values().cloned().collect();
        self.router
            .publish(Snapshot::build(self.generation, members, &self.zerotier));
    }
}

impl Actor for ConnectionManager {
    type Context = Context<Self>;
}

impl Handler<InterfaceJoined> for ConnectionManager {
    type Result = ();

    fn handle(&mut self, msg: InterfaceJoined, _ctx: &mut Self::Context) {
        let id = msg.state.id;
        self.actors.insert(id, msg.actor);
        self.members.insert(
            id,
            Member {
                state: Arc::new(msg.state),
                handles: msg.handles,
            },
        );
        self.publish();
    }
}

impl Handler<InterfaceChanged> for ConnectionManager {
    type Result = ();

    fn handle(&mut self, msg: InterfaceChanged, _ctx: &mut Self::Context) {
        let state = msg.0;
        let id = state.id;
        if state.retired {
            self.members.remove(&id);
            self.actors.remove(&id);
        } else if let Some(member) = self.members.get_mut(&id) {
            member.state = Arc::new(state);
        } else {
            // A change from an interface that never joined (its join is still in flight, or
            // it was retired): nothing to update.
            return;
        }
        self.publish();
    }
}

impl Handler<ZeroTierChanged> for ConnectionManager {
    type Result = ();

    fn handle(&mut self, msg: ZeroTierChanged, _ctx: &mut Self::Context) {
        // A network that leaves status OK loses its routes for the very next connection.
        self.zerotier = msg.0;
        self.publish();
    }
}

impl Handler<LatencyHistoryOf> for ConnectionManager {
    type Result = ResponseFuture<Vec<(std::time::Duration, u32)>>;

    fn handle(&mut self, msg: LatencyHistoryOf, _ctx: &mut Self::Context) -> Self::Result {
        let actor = self.actors.get(&msg.0).cloned();
        Box::pin(async move {
            match actor {
                Some(a) => a.send(GetLatencyHistory).await.unwrap_or_default(),
                None => Vec::new(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use netmix_plugin_api::{
        self as api, Choice, ConnMeta, StrategyError, StrategyImpl, guard::Guarded,
    };

    use super::*;
    use crate::config::Config;
    use crate::events::Events;
    use crate::iface::{InterfaceKind, InterfaceParams, ScannedInterface, Source};

    /// Records when its plan first saw each success count of interface 1.
    struct Successes(Arc<Mutex<Vec<(u64, Instant)>>>);

    impl StrategyImpl for Successes {
        type Plan = ();
        fn plan(&self, s: &api::Snapshot) -> Result<(), StrategyError> {
            if let Some(i) = s.get(1) {
                let mut seen = self.0.lock().unwrap();
                if seen.last().is_none_or(|&(n, _)| n != i.successes) {
                    seen.push((i.successes, Instant::now()));
                }
            }
            Ok(())
        }
        fn pick(&self, _: &(), _: &ConnMeta) -> Result<Choice, StrategyError> {
            Err(StrategyError::NoCandidate)
        }
    }

    #[actix::test]
    async fn a_measurement_reaches_the_strategy_within_one_debounce() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = Arc::new(Router::with_strategy(
            Events::new(),
            "successes",
            Guarded::boxed("successes", Successes(seen.clone())),
        ));
        let manager = ConnectionManager::new(router.clone()).start();
        let scanned = ScannedInterface {
            name: "wan1".into(),
            index: 1,
            addrs: vec!["198.18.10.2/24".parse().unwrap()],
            up: true,
            loopback: false,
            kind: InterfaceKind::Physical,
            eligible: Ok(()),
        };
        let _actor = InterfaceActor::spawn(
            1,
            &scanned,
            (1, false),
            InterfaceParams::from_config(&Config::default()),
            ConnectionManager::membership(&manager),
            Events::new(),
        );
        // Wait for the join to reach the snapshot.
        let joined = Instant::now();
        while router.snapshot().member(1).is_none() {
            assert!(joined.elapsed() < Duration::from_secs(2), "never joined");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let handles = router.snapshot().member(1).unwrap().handles.clone();
        // Five connect samples, one at a time: each must reach the plugin's rebuild (data path
        // → batch → actor → manager → router → rebuild thread) within one collection window.
        let mut delays = Vec::new();
        for n in 1..=5_u64 {
            let sent = Instant::now();
            handles.connected(Source::Connection, Duration::from_millis(7));
            let arrived = loop {
                if let Some(&(_, at)) = seen.lock().unwrap().iter().find(|(s, _)| *s == n) {
                    break at;
                }
                assert!(
                    sent.elapsed() < Duration::from_secs(2),
                    "sample {n} never rebuilt"
                );
                tokio::time::sleep(Duration::from_micros(500)).await;
            };
            delays.push(arrived.duration_since(sent));
        }
        delays.sort();
        assert!(
            delays[2] <= Duration::from_millis(10),
            "connect sample → strategy rebuild, median {:?} (all {delays:?})",
            delays[2]
        );
        let snapshot = router.snapshot();
        let state = &snapshot.member(1).unwrap().state;
        assert_eq!(state.successes, 5);
        assert_eq!(state.latency_ewma_us, Some(7_000));
    }
}
