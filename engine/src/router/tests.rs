//! Router unit tests: snapshots built from plain data (no actor runs here).

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use netmix_plugin_api::{Choice, ConnMeta, StrategyError, StrategyImpl, guard::Guarded};

use super::*;
use crate::config::Config;
use crate::health::state::Health;
use crate::iface::{Handles, InterfaceParams, InterfaceState, ScannedInterface};

fn state(id: u32, health: Health) -> InterfaceState {
    let scanned = ScannedInterface {
        name: format!("wan{id}"),
        index: id,
        addrs: vec![format!("198.18.{}.2/24", 10 + id).parse().unwrap()],
        up: true,
        loopback: false,
        kind: InterfaceKind::Physical,
        eligible: Ok(()),
    };
    let params = InterfaceParams::from_config(&Config::default());
    let mut s = InterfaceState::new(id, &scanned, (1, false), &params);
    s.health = health;
    s
}

fn member(id: u32, health: Health) -> Member {
    Member {
        state: Arc::new(state(id, health)),
        handles: Handles::detached(),
    }
}

fn snapshot(generation: u64, members: Vec<Member>) -> Snapshot {
    Snapshot::build(generation, members, &ZeroTierFacts::new())
}

fn meta() -> ConnMeta {
    ConnMeta::for_addr(Ipv4Addr::new(198, 19, 0, 1), 80)
}

fn ids(d: &Decision) -> Vec<u32> {
    d.order.iter().map(|m| m.state.id).collect()
}

#[test]
fn down_interfaces_get_no_new_connections() {
    let router = Router::new(Events::new());
    router.publish(snapshot(
        1,
        vec![
            member(1, Health::Up),
            member(2, Health::Down),
            member(3, Health::Degraded),
        ],
    ));
    for _ in 0..6 {
        let d = router.pick(&meta());
        assert!(!ids(&d).contains(&2), "{:?}", ids(&d));
        assert_eq!(d.order.len(), 2);
        assert_eq!(d.strategy, BUILTIN);
    }
}

#[test]
fn the_last_interfaces_are_never_all_ejected() {
    let router = Router::new(Events::new());
    router.publish(snapshot(
        1,
        vec![member(1, Health::Down), member(2, Health::Down)],
    ));
    let d = router.pick(&meta());
    assert_eq!(
        d.order.len(),
        2,
        "with every interface Down, all are still tried"
    );
    // A plugin sees them as Degraded, not Down, so it does not refuse them.
    let snapshot = router.snapshot();
    assert!(
        snapshot
            .ffi
            .interfaces
            .iter()
            .all(|i| i.state == api::LinkState::Degraded)
    );
    assert_eq!(snapshot.all.len(), 2, "the prober still sees both");
}

#[test]
fn the_builtin_is_weighted_round_robin_and_a_repick_skips_what_was_tried() {
    let router = Router::new(Events::new());
    router.publish(snapshot(
        1,
        (1..=3).map(|i| member(i, Health::Up)).collect(),
    ));
    let mut firsts: Vec<u32> = (0..30).map(|_| ids(&router.pick(&meta()))[0]).collect();
    firsts.sort_unstable();
    firsts.dedup_by(|a, b| a == b);
    assert_eq!(firsts, vec![1, 2, 3]);
    let mut conn = meta();
    conn.tried.push(2);
    for _ in 0..6 {
        let d = router.pick(&conn);
        assert!(!ids(&d).contains(&2), "{:?}", ids(&d));
        assert_eq!(d.order.len(), 2);
    }
}

/// A strategy that records when each snapshot reached its `plan`, prefers the highest id,
/// and fails on demand.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(u64, Instant)>>,
    fail_picks: std::sync::atomic::AtomicBool,
}

struct Probe(Arc<Recorder>);

impl StrategyImpl for Probe {
    type Plan = api::Snapshot;
    fn plan(&self, s: &api::Snapshot) -> Result<api::Snapshot, StrategyError> {
        self.0
            .seen
            .lock()
            .unwrap()
            .push((s.generation, Instant::now()));
        Ok(s.clone())
    }
    fn pick(&self, plan: &api::Snapshot, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        if self.0.fail_picks.load(Ordering::Relaxed) {
            return Err(StrategyError::other("told to fail"));
        }
        let mut order = api::order_by_key(&plan.interfaces, conn, |i| std::cmp::Reverse(i.id));
        order.truncate(1);
        Ok(Choice::new(order, "highest id"))
    }
}

fn probe_router() -> (Router, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let router = Router::with_strategy(
        Events::new(),
        "probe",
        Guarded::boxed("probe", Probe(recorder.clone())),
    );
    (router, recorder)
}

/// Waits (bounded) until the recorder saw `generation`; returns how long that took.
fn reached(recorder: &Recorder, generation: u64, since: Instant) -> Option<Duration> {
    let deadline = since + Duration::from_secs(2);
    while Instant::now() < deadline {
        let seen = recorder.seen.lock().unwrap().clone();
        if let Some((_, at)) = seen.iter().find(|(g, _)| *g == generation) {
            return Some(at.duration_since(since));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    None
}

#[test]
fn a_published_snapshot_reaches_the_strategy_rebuild_at_once() {
    let (router, recorder) = probe_router();
    let mut delays = Vec::new();
    for generation in 1..=5 {
        let t0 = Instant::now();
        router.publish(snapshot(
            generation,
            (1..=generation as u32)
                .map(|i| member(i, Health::Up))
                .collect(),
        ));
        delays.push(reached(&recorder, generation, t0).expect("rebuild never came"));
    }
    delays.sort();
    assert!(
        delays[2] <= Duration::from_millis(10),
        "median publish → rebuild {:?} (all: {delays:?})",
        delays[2]
    );
    // The strategy's answer is used, then the fallback fills in what it left out.
    let d = router.pick(&meta());
    assert_eq!(ids(&d)[0], 5);
    assert_eq!(d.order.len(), 5);
    assert_eq!(d.strategy, "probe");
}

#[test]
fn a_failing_strategy_is_replaced_by_the_builtin_and_said_once() {
    let events = Events::new();
    let mut feed = events.subscribe();
    let recorder = Arc::new(Recorder::default());
    let router = Router::with_strategy(
        events,
        "probe",
        Guarded::boxed("probe", Probe(recorder.clone())),
    );
    router.publish(snapshot(
        1,
        vec![member(1, Health::Up), member(2, Health::Up)],
    ));
    recorder.fail_picks.store(true, Ordering::Relaxed);
    for _ in 0..3 {
        let d = router.pick(&meta());
        assert_eq!(d.strategy, "round-robin (fallback)");
        assert!(
            d.reason.starts_with("fallback (probe failed)"),
            "{}",
            d.reason
        );
        assert_eq!(d.order.len(), 2);
    }
    assert_eq!(router.plugin_errors(), 3);
    let mut errors = 0;
    while let Ok(e) = feed.try_recv() {
        if e.kind == EventKind::PluginError {
            errors += 1;
            assert!(e.message.contains("told to fail"), "{}", e.message);
        }
    }
    assert_eq!(errors, 1, "reported once");
}

#[test]
fn stickiness_moves_the_remembered_interface_first() {
    let router = Router::new(Events::new()).with_stickiness(Duration::from_secs(60));
    router.publish(snapshot(
        1,
        (1..=3).map(|i| member(i, Health::Up)).collect(),
    ));
    let conn = ConnMeta::for_host("Example.com", 443);
    router.remember(&conn, 2);
    for _ in 0..6 {
        let d = router.pick(&ConnMeta::for_host("example.com", 443));
        assert_eq!(ids(&d)[0], 2);
        assert!(
            d.reason.starts_with("sticky: example.com → wan2"),
            "{}",
            d.reason
        );
    }
    let other = router.pick(&ConnMeta::for_host("other.example", 443));
    assert!(!other.reason.starts_with("sticky"));
}

/// A writer the log test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn plugin_log_lines_carry_the_name_and_stay_one_line() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let hostile = format!("first\nINFO forged line\n{}", "x".repeat(10_000));
    tracing::subscriber::with_default(subscriber, || {
        (host_services().log())(
            RStr::from_str("evil\nname"),
            LogLevel::Warn,
            RStr::from_str(&hostile),
        );
        (host_services().log())(
            RStr::from_str("p"),
            LogLevel(200),
            RStr::from_str("odd level"),
        );
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("netmix::plugin"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("first INFO forged line"), "{}", lines[0]);
    assert!(lines[0].contains("plugin=evil name"), "{}", lines[0]);
    assert!(
        lines[0].len() < 800,
        "cut to one short line: {}",
        lines[0].len()
    );
    assert!(
        lines[1].contains("TRACE") && lines[1].contains("odd level"),
        "{}",
        lines[1]
    );
}
