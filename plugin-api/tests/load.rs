//! Loads the real plugin files (`cdylib`s of `plugins/`) through [`host`] and drives them
//! through the ABI, the way the engine does.
//!
//! The plugins must be built first, with the same `CARGO_TARGET_DIR` and profile as the test
//! (`cargo build -p netmix-strategy-round-robin -p netmix-strategy-capacity
//! -p netmix-strategy-latency -p netmix-strategy-sticky -p netmix-fixture-panicky
//! -p netmix-fixture-abi-mismatch -p netmix-fixture-not-a-plugin`): this test finds them next to its own executable.

mod common;

use common::{ifaces, lib_name, lib_path};
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError, atomic::Ordering},
};

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    std_types::{RSome, RStr},
};
use netmix_plugin_api::{
    ConnMeta, ConnOutcome, ExtFields, HostMod, HostMod_Ref, InterfaceSnapshot, LogLevel,
    OutcomeStage, Snapshot, StrategyBox, StrategyError,
    host::{LoadedPlugin, load_dir, load_plugin},
};

/// Every line the plugins logged through [`host`]: (plugin, level, message).
static LOGGED: Mutex<Vec<(String, LogLevel, String)>> = Mutex::new(Vec::new());

/// The engine's services, as a test provides them: log lines are kept in [`LOGGED`] (and
/// shown on stderr).
fn host() -> HostMod_Ref {
    extern "C" fn log(plugin: RStr<'_>, level: LogLevel, message: RStr<'_>) {
        eprintln!("{level} [{plugin}] {message}");
        LOGGED.lock().unwrap_or_else(PoisonError::into_inner).push((
            plugin.to_string(),
            level,
            message.to_string(),
        ));
    }
    HostMod { log }.leak_into_prefix()
}

/// An instance of `plugin` with `options`, built the way the engine builds one.
fn instantiate(plugin: &LoadedPlugin, options: &str) -> Result<StrategyBox, StrategyError> {
    plugin.instantiate(options, host())
}

fn load(stem: &str) -> LoadedPlugin {
    let path = lib_path(stem);
    load_plugin(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn scratch_dir(name: &str) -> PathBuf {
    common::scratch_dir("netmix-plugin-api-load", name)
}

/// Copies `src` to `dir/name` with Unix `mode` (ignored elsewhere).
fn copy_into(dir: &Path, src: &Path, name: &str, mode: u32) -> PathBuf {
    let dst = dir.join(name);
    fs::copy(src, &dst).unwrap();
    #[cfg(unix)]
    fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).unwrap();
    #[cfg(not(unix))]
    let _ = mode;
    dst
}

/// Hands `ifs` to the strategy as the engine does when the interfaces change.
fn rebuild(s: &StrategyBox, ifs: &[InterfaceSnapshot]) {
    s.rebuild(&Snapshot::of(ifs.to_vec())).unwrap();
}

fn pick(s: &StrategyBox, conn: &ConnMeta) -> Result<u32, StrategyError> {
    s.pick(conn)
        .into_result()
        .map(|c| c.first().expect("non-empty order"))
}

fn count_firsts(s: &StrategyBox, ifs: &[InterfaceSnapshot], n: usize) -> HashMap<u32, usize> {
    rebuild(s, ifs);
    let conn = ConnMeta::for_host("example.com", 443);
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(pick(s, &conn).unwrap()).or_default() += 1;
    }
    counts
}

/// Counts a connection in flight on interface `id` of `ifs`, as the engine does from the
/// moment it starts connecting (the strategy's plan shares these counters).
fn start_connect(ifs: &[InterfaceSnapshot], id: u32) {
    let iface = ifs.iter().find(|i| i.id == id).expect("known id");
    iface.live.active.fetch_add(1, Ordering::Relaxed);
}

fn assert_one_line_naming(err: &impl std::fmt::Display, path: &Path, needle: &str) {
    let shown = err.to_string();
    eprintln!("{shown}");
    assert!(!shown.contains('\n'), "not one line: {shown}");
    assert!(shown.chars().count() < 500, "too long: {shown}");
    assert!(
        shown.starts_with(&path.display().to_string()),
        "no file name: {shown}"
    );
    assert!(shown.contains(needle), "expected {needle:?} in: {shown}");
}

#[test]
fn round_robin_is_exact_through_the_abi() {
    let plugin = load("strategy_round_robin");
    assert_eq!(plugin.name, "round-robin");
    assert!(!plugin.description.is_empty());

    let s = instantiate(&plugin, "").unwrap();
    assert_eq!(s.name().as_str(), "round-robin");
    assert!(
        matches!(
            pick(&s, &ConnMeta::for_host("h", 1)),
            Err(StrategyError::Other(_))
        ),
        "no pick before the first rebuild"
    );
    let c = count_firsts(&s, &ifaces(&[1, 1, 1]), 30);
    assert_eq!((c[&1], c[&2], c[&3]), (10, 10, 10));

    let s = instantiate(&plugin, "").unwrap();
    let c = count_firsts(&s, &ifaces(&[1, 2, 3]), 30);
    assert_eq!((c[&1], c[&2], c[&3]), (5, 10, 15));

    let choice = s.pick(&ConnMeta::for_host("h", 1)).unwrap();
    assert_eq!(choice.order.as_slice(), &[3, 2, 1]);
    assert_eq!(choice.reason, "round-robin 1/6 (weight 3)");

    let err = instantiate(&plugin, "bogus = 1").unwrap_err();
    assert!(matches!(err, StrategyError::InvalidConfig(_)), "{err}");
}

#[test]
fn latency_prefers_fast_then_spreads() {
    let plugin = load("strategy_latency");
    assert_eq!(plugin.name, "latency");
    let s = instantiate(&plugin, "tolerance_pct = 10").unwrap();
    let mut ifs = ifaces(&[1, 1, 1]);
    for (i, ms) in [30, 5, 20].into_iter().enumerate() {
        ifs[i].latency_ewma_us = RSome(ms * 1000);
    }
    rebuild(&s, &ifs);
    let conn = ConnMeta::for_host("example.com", 443);
    let choice = s.pick(&conn).unwrap();
    assert_eq!(choice.order.as_slice(), &[2, 3, 1]);
    assert_eq!(choice.reason, "latency 5.0ms×(1+0 active)");

    // Connections pile onto the fastest link (the engine counts each from the start of its
    // connect, without a rebuild): it stops being first.
    let mut firsts = Vec::new();
    for _ in 0..12 {
        let first = pick(&s, &conn).unwrap();
        start_connect(&ifs, first);
        firsts.push(first);
    }
    assert_eq!(firsts[0], 2);
    assert!(firsts.contains(&3), "never spread: {firsts:?}");
    assert!(ifs[1].active_conns() > ifs[2].active_conns(), "{firsts:?}");

    assert!(matches!(
        instantiate(&plugin, "tolerance_pct = -5.0"),
        Err(StrategyError::InvalidConfig(_))
    ));
}

#[test]
fn capacity_shares_by_measured_capacity() {
    let plugin = load("strategy_capacity");
    assert_eq!(plugin.name, "capacity");
    let s = instantiate(&plugin, "").unwrap();
    let mut ifs = ifaces(&[1, 1]);
    ifs[0].capacity_down_bps = 10_000_000;
    ifs[1].capacity_down_bps = 30_000_000;
    rebuild(&s, &ifs);
    let conn = ConnMeta::for_host("example.com", 443);
    let mut counts = [0; 2];
    for _ in 0..20 {
        let first = pick(&s, &conn).unwrap();
        start_connect(&ifs, first);
        counts[first as usize - 1] += 1;
    }
    assert_eq!(counts, [5, 15], "10:30 of 20");
    assert!(matches!(
        instantiate(&plugin, "unit_bytes = 0"),
        Err(StrategyError::InvalidConfig(_))
    ));
}

#[test]
fn sticky_stays_sticky() {
    let plugin = load("strategy_sticky");
    assert_eq!(plugin.name, "sticky");
    let s = instantiate(&plugin, "ttl_secs = 60").unwrap();
    let ifs = ifaces(&[1, 1, 1]);
    for (iface, active) in ifs.iter().zip([3, 1, 2]) {
        iface.live.active.store(active, Ordering::Relaxed);
    }
    rebuild(&s, &ifs);
    let bank = ConnMeta::for_host("bank.example", 443);
    assert_eq!(pick(&s, &bank).unwrap(), 2);
    ifs[1].live.active.store(9, Ordering::Relaxed);
    for _ in 0..5 {
        let c = s.pick(&bank).unwrap();
        assert_eq!(c.first(), Some(2));
        assert!(
            c.reason.starts_with("sticky: bank.example → wan2"),
            "{}",
            c.reason
        );
    }
    let other = ConnMeta::for_host("news.example", 443);
    assert_eq!(pick(&s, &other).unwrap(), 3);
    // wan2 goes Down: the engine leaves it out of the next snapshot.
    rebuild(&s, &[ifs[0].clone(), ifs[2].clone()]);
    assert_eq!(pick(&s, &bank).unwrap(), 3);

    assert!(matches!(
        instantiate(&plugin, "ttl_secs = 0"),
        Err(StrategyError::InvalidConfig(_))
    ));
}

#[test]
fn panics_come_back_as_errors() {
    let plugin = load("fixture_panicky");
    assert_eq!(plugin.name, "panicky");
    let s = instantiate(&plugin, "").unwrap();
    assert!(
        LOGGED.lock().unwrap().contains(&(
            "panicky".to_owned(),
            LogLevel::Warn,
            "panicky fixture constructed".to_owned()
        )),
        "the constructor's log line reaches the host with the plugin's name: {:?}",
        LOGGED.lock().unwrap()
    );
    rebuild(&s, &ifaces(&[1]));
    let conn = ConnMeta::for_host("h", 1);
    for _ in 0..3 {
        let err = pick(&s, &conn).unwrap_err();
        assert!(
            matches!(&err, StrategyError::Panicked(m) if m.contains("deliberate panic")),
            "{err:?}"
        );
    }
    let outcome = ConnOutcome {
        interface: 1,
        conn,
        stage: OutcomeStage::Closed,
        connect_us: 1_000,
        bytes_up: 10,
        bytes_down: 20,
        duration_us: 5_000,
        ext: ExtFields::new(),
    };
    assert!(matches!(
        s.observe(&outcome).into_result(),
        Err(StrategyError::Panicked(_))
    ));
    let err = instantiate(&plugin, "panic_in_new = true").unwrap_err();
    assert!(
        matches!(&err, StrategyError::Panicked(m) if m.contains("in new")),
        "{err:?}"
    );
    // Still alive, and the other strategies still work.
    assert!(instantiate(&plugin, "").is_ok());
}

#[test]
fn abi_mismatch_is_refused_in_one_line() {
    let path = lib_path("fixture_abi_mismatch");
    let err = load_plugin(&path).unwrap_err();
    assert_one_line_naming(&err, &path, "ABI mismatch");
    assert!(err.reason.chars().count() <= netmix_plugin_api::host::MAX_REASON_CHARS);
}

#[test]
fn non_plugins_are_refused() {
    let path = lib_path("fixture_not_a_plugin");
    let err = load_plugin(&path).unwrap_err();
    assert_one_line_naming(
        &err,
        &path,
        "not a netmix plugin (no abi_stable root module)",
    );

    let dir = scratch_dir("garbage");
    let garbage = dir.join(lib_name("libgarbage"));
    fs::write(&garbage, b"this is not a library file\n".repeat(100)).unwrap();
    #[cfg(unix)]
    fs::set_permissions(&garbage, fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_plugin(&garbage).unwrap_err();
    assert_one_line_naming(&err, &garbage, "refused: not a complete library file");

    let missing = dir.join(lib_name("libmissing"));
    let err = load_plugin(&missing).unwrap_err();
    assert_one_line_naming(
        &err,
        &missing,
        if cfg!(windows) {
            "(os error 2)"
        } else {
            "No such file"
        },
    );
}

#[cfg(unix)]
#[test]
fn writable_by_others_is_refused() {
    let src = lib_path("strategy_round_robin");
    let dir = scratch_dir("group-writable");
    let file = copy_into(&dir, &src, "libnetmix_strategy_round_robin.so", 0o664);
    let err = load_plugin(&file).unwrap_err();
    assert_one_line_naming(&err, &file, "writable by group or others");

    let open_dir = scratch_dir("world-writable-dir");
    let file = copy_into(&open_dir, &src, "libnetmix_strategy_round_robin.so", 0o644);
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let err = load_plugin(&file).unwrap_err();
    assert_one_line_naming(&err, &file, "its folder");
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(load_plugin(&file).unwrap().name, "round-robin");
}

#[test]
fn load_dir_reports_every_file() {
    let dir = scratch_dir("mixed");
    copy_into(
        &dir,
        &lib_path("strategy_round_robin"),
        &lib_name("a_round_robin"),
        0o644,
    );
    copy_into(
        &dir,
        &lib_path("fixture_abi_mismatch"),
        &lib_name("b_abi_mismatch"),
        0o644,
    );
    copy_into(
        &dir,
        &lib_path("strategy_latency"),
        &lib_name("c_latency"),
        0o644,
    );
    copy_into(
        &dir,
        &lib_path("fixture_not_a_plugin"),
        &lib_name("d_not_a_plugin"),
        0o644,
    );
    // Group-writable: refused on Unix (Windows has no such mode bits; see host::trust).
    copy_into(
        &dir,
        &lib_path("strategy_sticky"),
        &lib_name("e_sticky"),
        0o664,
    );
    fs::write(dir.join("README.txt"), "ignored").unwrap();

    let (loaded, errors) = load_dir(&dir);
    let names: Vec<&str> = loaded.iter().map(|p| p.name.as_str()).collect();
    // Each file is its own module (no per-type caching): distinct names, in file order.
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    if cfg!(unix) {
        assert_eq!(names, ["round-robin", "latency"]);
        assert_eq!(errors.len(), 3, "{shown:#?}");
        assert!(
            shown[2].contains(&format!("{}: refused", lib_name("e_sticky"))),
            "{}",
            shown[2]
        );
    } else {
        assert_eq!(names, ["round-robin", "latency", "sticky"]);
        assert_eq!(errors.len(), 2, "{shown:#?}");
    }
    assert!(
        shown[0].contains(&format!("{}: ABI mismatch", lib_name("b_abi_mismatch"))),
        "{}",
        shown[0]
    );
    assert!(
        shown[1].contains(&format!(
            "{}: not a netmix plugin",
            lib_name("d_not_a_plugin")
        )),
        "{}",
        shown[1]
    );
    for plugin in &loaded {
        assert!(instantiate(plugin, "").is_ok(), "{}", plugin.name);
    }
}
