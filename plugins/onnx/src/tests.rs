//! Unit tests. The ones that run the model need the ONNX Runtime library
//! (`./scripts/setup-onnx.sh`, or `$NETMIX_ORT_LIB`): without it they fail with that message,
//! they never pass silently.

use abi_stable::std_types::RSome;
use netmix_plugin_api::{ExtFields, OutcomeStage};

use super::*;

fn iface(id: u32, latency_ms: u32) -> InterfaceSnapshot {
    let mut s = InterfaceSnapshot::new(id, &format!("wan{id}"));
    s.latency_ewma_us = RSome(latency_ms * 1000);
    s.successes = 20;
    s
}

/// The lab's evaluation pair: 1 = 5 ms narrow, 2 = 40 ms wide.
fn lab_pair() -> Vec<InterfaceSnapshot> {
    let mut narrow = iface(1, 5);
    narrow.capacity_down_bps = 4_000_000;
    let mut wide = iface(2, 40);
    wide.capacity_down_bps = 48_000_000;
    vec![narrow, wide]
}

fn closed(iface: u32, host: &str, port: u16, bytes: u64, ms: u64) -> ConnOutcome {
    let mut conn = ConnMeta::for_host(host, 80);
    conn.client_port = port;
    ConnOutcome {
        interface: iface,
        conn,
        stage: OutcomeStage::Closed,
        connect_us: 5_000,
        bytes_up: 100,
        bytes_down: bytes,
        duration_us: ms * 1000,
        ext: ExtFields::new(),
    }
}

/// Teaches `s` what the lab looks like: files.lab is 2 MB, api.lab 2 KB, and both links'
/// capacities (as the plugin measures them from big transfers).
fn teach(s: &Onnx) {
    s.observe(&closed(1, "files.lab", 1, 2_000_000, 4_000))
        .unwrap();
    s.observe(&closed(2, "files.lab", 2, 2_000_000, 400))
        .unwrap();
    for port in 3..6 {
        s.observe(&closed(1, "api.lab", port, 2_200, 10)).unwrap();
    }
}

/// Plans for `ifs` and picks for `conn`, as the engine's rebuild then pick do.
fn pick(s: &Onnx, ifs: &[InterfaceSnapshot], conn: &ConnMeta) -> Result<Choice, StrategyError> {
    s.pick(&s.plan(&Snapshot::of(ifs.to_vec()))?, conn)
}

fn no_explore(extra: &str) -> Onnx {
    Onnx::from_options(&format!("epsilon = 0.0\nexplore_after_secs = 0\n{extra}")).unwrap()
}

fn library() -> PathBuf {
    model::find_library(None).unwrap_or_else(|e| {
        panic!("this test runs real inference and needs the ONNX Runtime library: {e}")
    })
}

#[test]
fn shipped_model_runs_in_onnxruntime_and_picks_by_completion_time() {
    let lib = library();
    let s = no_explore(&format!("library = {:?}", lib.display().to_string()));
    s.wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    teach(&s);
    let ifs = lab_pair();
    let big = pick(&s, &ifs, &ConnMeta::for_host("files.lab", 80)).unwrap();
    assert_eq!(
        big.first(),
        Some(2),
        "a 2 MB download goes to the wide link: {big:?}"
    );
    assert!(big.reason.starts_with("onnx wan2 ~"), "{}", big.reason);
    let small = pick(&s, &ifs, &ConnMeta::for_host("api.lab", 80)).unwrap();
    assert_eq!(
        small.first(),
        Some(1),
        "a 2 KB request goes to the 5 ms link: {small:?}"
    );
    assert!(small.reason.starts_with("onnx wan1 ~"), "{}", small.reason);

    // The model's predictions themselves, through onnxruntime.
    let Some(Ok(m)) = s.model.get() else {
        unreachable!()
    };
    let mut rows = Vec::new();
    let usable: Vec<&InterfaceSnapshot> = ifs.iter().collect();
    s.state
        .lock()
        .unwrap()
        .rows(&usable, &ConnMeta::for_host("files.lab", 80), &mut rows);
    let mut out = Vec::new();
    m.predict(&rows, &mut out).unwrap();
    let (narrow, wide) = (m.target.to_ms(out[0]), m.target.to_ms(out[1]));
    assert!(
        narrow > 2.0 * wide && narrow > 1000.0,
        "2 MB: narrow {narrow:.0} ms vs wide {wide:.0} ms"
    );
}

#[test]
fn missing_library_or_model_falls_back_to_latency() {
    let s = no_explore("library = \"/nonexistent/libonnxruntime.so.1.31.1\"");
    let err = s.wait_ready(Duration::from_secs(10)).unwrap_err();
    assert!(
        err.contains(
            "/nonexistent/libonnxruntime.so.1.31.1 (from option `library`) does not exist"
        ),
        "{err}"
    );
    teach(&s);
    let c = pick(&s, &lab_pair(), &ConnMeta::for_host("files.lab", 80)).unwrap();
    assert_eq!(c.first(), Some(1), "latency fallback: the 5 ms link");
    assert_eq!(c.reason, "latency fallback wan1 5.0ms×(1+0 active)");

    let lib = library();
    let s = no_explore(&format!(
        "library = {:?}\nmodel = \"/nonexistent/model.onnx\"",
        lib.display().to_string()
    ));
    let err = s.wait_ready(Duration::from_secs(30)).unwrap_err();
    assert!(
        err.starts_with("model file /nonexistent/model.onnx does not exist"),
        "{err}"
    );
    let c = pick(&s, &lab_pair(), &ConnMeta::for_host("api.lab", 80)).unwrap();
    assert!(c.reason.starts_with("latency fallback"), "{}", c.reason);
}

#[test]
fn a_model_with_other_features_is_refused() {
    let lib = library();
    // The shipped model with its feature list edited: same bytes length is not needed, the
    // metadata is a protobuf string, so rewrite one feature name of the same length.
    let mut bytes = model::DEFAULT_MODEL.to_vec();
    let from = b"jitter_ms";
    let to = b"jolter_ms";
    let pos = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the shipped model names its features");
    bytes[pos..pos + from.len()].copy_from_slice(to);
    let path = std::env::temp_dir().join(format!("netmix-onnx-bad-{}.onnx", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let s = no_explore(&format!(
        "library = {:?}\nmodel = {:?}",
        lib.display().to_string(),
        path.display().to_string()
    ));
    let err = s.wait_ready(Duration::from_secs(30)).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert!(
        err.contains("jolter_ms") && err.contains("retrain"),
        "{err}"
    );
    assert!(!err.contains('\n'));
}

#[test]
fn formula_mode_needs_no_model() {
    let s = no_explore("mode = \"formula\"\nlibrary = \"/nonexistent\"");
    s.wait_ready(Duration::ZERO).unwrap();
    teach(&s);
    let ifs = lab_pair();
    let big = pick(&s, &ifs, &ConnMeta::for_host("files.lab", 80)).unwrap();
    assert_eq!(big.first(), Some(2), "{big:?}");
    assert!(big.reason.starts_with("formula wan2 ~"), "{}", big.reason);
    let small = pick(&s, &ifs, &ConnMeta::for_host("api.lab", 80)).unwrap();
    assert_eq!(small.first(), Some(1), "{small:?}");
}

#[test]
fn exploration_samples_other_links() {
    // ε = 1 among all: both links get picked.
    let s = Onnx::from_options(
        "mode = \"formula\"\nepsilon = 1.0\nexplore_within_pct = 1e9\nexplore_after_secs = 0\nseed = 7",
    )
    .unwrap();
    teach(&s);
    let ifs = lab_pair();
    let mut firsts = [0; 3];
    for _ in 0..200 {
        let c = pick(&s, &ifs, &ConnMeta::for_host("api.lab", 80)).unwrap();
        firsts[c.first().unwrap() as usize] += 1;
    }
    assert!(firsts[1] > 50 && firsts[2] > 50, "{firsts:?}");

    // A link not picked for explore_after_secs is sampled once, within the budget.
    let s = Onnx::from_options(
        "mode = \"formula\"\nepsilon = 0.0\nexplore_after_secs = 1\nexplore_budget_ms = 100",
    )
    .unwrap();
    teach(&s);
    let small = ConnMeta::for_host("api.lab", 80);
    assert_eq!(pick(&s, &ifs, &small).unwrap().first(), Some(1));
    {
        let mut last = s.last_picked.lock().unwrap();
        last.insert(2, Instant::now() - Duration::from_secs(5));
    }
    let c = pick(&s, &ifs, &small).unwrap();
    assert_eq!(c.first(), Some(2), "{c:?}");
    assert!(
        c.reason.contains("explore (not picked for 5s)"),
        "{}",
        c.reason
    );
    assert_eq!(pick(&s, &ifs, &small).unwrap().first(), Some(1));
    // Not when it would cost more than the budget (a big download on the narrow link).
    let files = ConnMeta::for_host("files.lab", 80);
    s.last_picked
        .lock()
        .unwrap()
        .insert(1, Instant::now() - Duration::from_secs(5));
    assert_eq!(pick(&s, &ifs, &files).unwrap().first(), Some(2));
}

#[test]
fn options_and_edge_cases() {
    assert!(Onnx::from_options("epsilon = 2.0").is_err());
    assert!(Onnx::from_options("sessions = 0").is_err());
    assert!(Onnx::from_options("modle = \"x\"").is_err());
    assert!(Onnx::from_options("mode = \"magic\"").is_err());
    let s = no_explore("mode = \"formula\"");
    let mut conn = ConnMeta::for_host("h", 1);
    conn.tried.push(1);
    assert_eq!(
        pick(&s, &[iface(1, 5)], &conn).unwrap_err(),
        StrategyError::NoCandidate
    );
    let mut down = iface(2, 1);
    down.state = LinkState::Down;
    let c = pick(&s, &[iface(1, 30), down], &ConnMeta::for_host("h", 1)).unwrap();
    assert_eq!(c.order.as_slice(), &[1]);
}
