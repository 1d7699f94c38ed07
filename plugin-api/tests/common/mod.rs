//! Helpers shared by the integration tests that load real plugin files.

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use netmix_plugin_api::InterfaceSnapshot;

/// The built plugin library of package `netmix-<stem>` (`stem` with underscores), in
/// `target/<profile>/`: the test executable lives in `target/<profile>/deps/`. Panics with the
/// command to run when it is missing.
pub fn lib_path(stem: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is in <target>/<profile>/deps");
    let file = format!(
        "{}netmix_{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing: build it first: cargo build -p netmix-{} (with the same \
         CARGO_TARGET_DIR and profile as this test)",
        path.display(),
        stem.replace('_', "-")
    );
    path
}

/// `stem` with this platform's library suffix (`a.so`, `a.dll`).
#[allow(dead_code)] // not every test file names libraries
pub fn lib_name(stem: &str) -> String {
    format!("{stem}{}", std::env::consts::DLL_SUFFIX)
}

/// Healthy interfaces `wan1..` with these weights, ids from 1.
#[allow(dead_code)] // not every test file builds snapshots
pub fn ifaces(weights: &[u32]) -> Vec<InterfaceSnapshot> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let mut s = InterfaceSnapshot::new(i as u32 + 1, &format!("wan{}", i + 1));
            s.weight = w;
            s
        })
        .collect()
}

/// A fresh folder `<target tmp>/<group>/<name>` (and its parent) with mode 0755, owned by the
/// test's user: a folder the plugin loader accepts.
#[allow(dead_code)] // not every test file makes folders
pub fn scratch_dir(group: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(group)
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    #[cfg(unix)]
    for d in [dir.parent().unwrap(), dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}
