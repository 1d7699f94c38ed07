//! No other local user's file or folder can make netmix run code: each way a plugin file
//! could be planted or swapped is refused in one line, and the file's ELF constructor never
//! runs (the `constructor` fixture leaves a mark when it does). A truncated plugin is refused
//! instead of crashing the process when mapped.
//!
//! Needs root (files owned by another user are made with `chown`) and the fixtures built with
//! the same `CARGO_TARGET_DIR` and profile: `cargo build -p netmix-fixture-constructor
//! -p netmix-strategy-round-robin`.

#![cfg(unix)]

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::lib_path;
use netmix_plugin_api::host::{PluginLoadError, load_plugin};

/// Another user: `nobody`.
const OTHER_UID: u32 = 65534;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "plugin-api's trust tests make files owned by another user (chown): run them as root"
    );
}

fn scratch(name: &str) -> PathBuf {
    common::scratch_dir("netmix-plugin-api-trust", name)
}

fn mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

/// A copy of the constructor fixture at `dst`, mode 0644, owned by root.
fn plant(dst: &Path) -> PathBuf {
    fs::copy(lib_path("fixture_constructor"), dst).unwrap();
    mode(dst, 0o644);
    dst.to_path_buf()
}

/// Loads `file` with the constructor's mark pointed into `dir`; returns the refusal and whether
/// the constructor ran.
fn try_load(file: &Path, dir: &Path) -> (Result<String, PluginLoadError>, bool) {
    let mark = dir.join("constructor-ran");
    let _ = fs::remove_file(&mark);
    // SAFETY: the environment is only read, in this test binary, by the fixture's constructor
    // inside the load below, and every test that sets it holds `SERIAL` around set and load.
    unsafe {
        std::env::set_var("NETMIX_TEST_CONSTRUCTOR_MARK", &mark);
    }
    let result = load_plugin(file).map(|p| p.name);
    (result, mark.exists())
}

fn assert_refused(file: &Path, dir: &Path, cause: &str) {
    let (result, ran) = try_load(file, dir);
    let err = result.expect_err("must be refused");
    let shown = err.to_string();
    assert!(
        !shown.contains('\n') && shown.len() < 400,
        "one line: {shown}"
    );
    assert!(
        shown.starts_with(&format!("{}: refused: ", file.display())),
        "names the file and refuses: {shown}"
    );
    assert!(shown.contains(cause), "says why ({cause}): {shown}");
    assert!(
        !ran,
        "the file's constructor ran although it was refused: {shown}"
    );
}

/// Only one test may set the environment variable at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_safe_file_loads_and_its_constructor_runs() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The positive control: the fixture's constructor does run when a file is accepted, so
    // "did not run" below means something.
    let dir = scratch("safe");
    let file = plant(&dir.join("libctor.so"));
    let (result, ran) = try_load(&file, &dir);
    assert!(
        ran,
        "the constructor of an accepted file runs inside dlopen"
    );
    let err = result.expect_err("it is not a netmix plugin");
    assert!(err.to_string().contains("not a netmix plugin"), "{err}");
}

#[test]
fn a_symlink_in_an_open_folder_to_another_users_file_is_refused() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = scratch("symlink-in-open-folder");
    let theirs = base.join("theirs");
    fs::create_dir(&theirs).unwrap();
    mode(&theirs, 0o755);
    let target = plant(&theirs.join("libctor.so"));
    chown(&target, OTHER_UID);
    chown(&theirs, OTHER_UID);
    let open = base.join("plugins");
    fs::create_dir(&open).unwrap();
    mode(&open, 0o777);
    let link = open.join("libnetmix_strategy_evil.so");
    symlink(&target, &link).unwrap();
    assert_refused(&link, &base, "its folder");
    // With the folder closed, the link still leads to another user's file and folder.
    mode(&open, 0o755);
    assert_refused(&link, &base, "belongs to uid 65534");
}

#[test]
fn a_plugins_folder_owned_by_another_user_is_refused() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = scratch("other-users-folder");
    let dir = base.join("plugins");
    fs::create_dir(&dir).unwrap();
    mode(&dir, 0o755);
    let file = plant(&dir.join("libctor.so"));
    chown(&dir, OTHER_UID);
    assert_refused(&file, &base, "belongs to uid 65534");
    // Their file in our folder, likewise.
    chown(&dir, 0);
    chown(&file, OTHER_UID);
    assert_refused(&file, &base, "the file belongs to uid 65534");
}

#[test]
fn a_safe_folder_inside_an_open_one_is_refused() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = scratch("safe-in-open");
    let open = base.join("shared");
    let dir = open.join("plugins");
    fs::create_dir_all(&dir).unwrap();
    mode(&dir, 0o755);
    mode(&open, 0o777);
    let file = plant(&dir.join("libctor.so"));
    // Anyone could rename `plugins` away and put their own in its place.
    assert_refused(&file, &base, "above it");
    // A root-owned sticky folder (like /tmp) is fine: others cannot rename our entries.
    mode(&open, 0o1777);
    let (_, ran) = try_load(&file, &base);
    assert!(ran, "accepted under a root-owned sticky folder");
}

#[test]
fn a_plugins_folder_that_is_a_symlink_in_an_open_folder_is_refused() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = scratch("symlinked-folder");
    let real = base.join("real");
    fs::create_dir(&real).unwrap();
    mode(&real, 0o755);
    plant(&real.join("libctor.so"));
    let open = base.join("open");
    fs::create_dir(&open).unwrap();
    mode(&open, 0o777);
    symlink(&real, open.join("plugins")).unwrap();
    // The link could be pointed anywhere by anyone.
    assert_refused(&open.join("plugins").join("libctor.so"), &base, "above it");
}

#[test]
fn truncated_plugins_are_refused_without_crashing() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("truncated");
    let whole = fs::read(lib_path("strategy_round_robin")).unwrap();
    for cut in [4 << 10, 64 << 10, whole.len() / 2] {
        let file = dir.join(format!("libnetmix_strategy_cut{cut}.so"));
        fs::write(&file, &whole[..cut]).unwrap();
        mode(&file, 0o644);
        // A crash (SIGBUS on mapping) would end this test process here.
        assert_refused(&file, &dir, "refused: ");
    }
    let file = dir.join("libnetmix_strategy_whole.so");
    fs::write(&file, &whole).unwrap();
    mode(&file, 0o644);
    assert_eq!(load_plugin(&file).unwrap().name, "round-robin");
}
