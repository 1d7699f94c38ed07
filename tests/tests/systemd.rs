//! The systemd unit `scripts/systemd/netmix.service`: `systemd-analyze verify` accepts it (with
//! `ExecStart=` pointed at the built binary, since verify checks that the binary exists) and
//! reports nothing about it, `systemd-analyze security --offline` rates it no worse than 2.0
//! ("OK"), and it runs netmix unprivileged with no capabilities.
//!
//! Needs `systemd-analyze` (Debian package `systemd`): without it the test fails saying so.
//! The binary is the one the other tests run (`netmix_bin`: `target/debug/netmix` unless
//! `NETMIX_BIN` / `NETMIX_PROFILE` say otherwise).

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use netmix_integration::netmix_bin;

/// `ExecStart=` as shipped.
const EXEC_START: &str = "ExecStart=/opt/netmix/netmix run --config /etc/netmix/netmix.toml";

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/systemd/netmix.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `systemd-analyze` on PATH; panics naming the package when it is missing.
fn systemd_analyze() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "systemd-analyze is missing: install Debian's `systemd` package \
                 (apt-get install systemd); this test does not skip"
            )
        })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The lines of the unit with comments and blank lines removed.
fn settings(unit: &str) -> Vec<&str> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .collect()
}

/// The unit in a fresh folder, `ExecStart=` naming the built binary.
struct UnitCopy {
    dir: PathBuf,
    path: PathBuf,
}

impl UnitCopy {
    fn new() -> UnitCopy {
        let unit = unit_text();
        assert!(
            unit.lines().any(|l| l == EXEC_START),
            "the unit has `{EXEC_START}`"
        );
        let bin = netmix_bin();
        let bin = bin.canonicalize().unwrap_or(bin);
        let rewritten = unit.replace(
            EXEC_START,
            &format!(
                "ExecStart={} run --config /etc/netmix/netmix.toml",
                bin.display()
            ),
        );
        let dir = std::env::temp_dir().join(format!("netmix-systemd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("netmix.service");
        std::fs::write(&path, rewritten).unwrap();
        UnitCopy { dir, path }
    }
}

impl Drop for UnitCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    let analyze = systemd_analyze();
    let copy = UnitCopy::new();

    let out = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&copy.path)
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze verify");
    let said = text(&out);
    assert!(out.status.success(), "systemd-analyze verify:\n{said}");
    // verify only warns about an unknown or misspelled key (exit status 0): nothing it says
    // may be about this unit.
    let about_unit: Vec<&str> = said.lines().filter(|l| l.contains("netmix")).collect();
    assert!(
        about_unit.is_empty(),
        "systemd-analyze verify complains about the unit:\n{said}"
    );

    // Exposure ≤ 2.0 of 10 ("OK"); --threshold counts in tenths.
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&copy.path)
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze security");
    let said = text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze security --offline=yes --threshold=20:\n{said}"
    );
    assert!(said.contains("Overall exposure level"), "{said}");
}

#[test]
fn the_unit_runs_netmix_unprivileged_with_no_capabilities() {
    let unit = unit_text();
    let lines = settings(&unit);
    assert!(
        lines.contains(&"DynamicUser=yes")
            || lines.iter().any(|l| l
                .strip_prefix("User=")
                .is_some_and(|u| !u.is_empty() && u != "root")),
        "DynamicUser=yes or an unprivileged User=:\n{unit}"
    );
    // SO_BINDTODEVICE on a fresh socket needs no capability (see the unit's comment), and
    // nothing else netmix does needs one.
    assert!(lines.contains(&"CapabilityBoundingSet="), "{unit}");
    assert!(lines.contains(&"AmbientCapabilities="), "{unit}");
    for l in &lines {
        for key in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
            if let Some(v) = l.strip_prefix(key) {
                assert_eq!(v, "", "`{l}`: netmix needs no capability");
            }
        }
    }
    for setting in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_UNIX",
        EXEC_START,
    ] {
        assert!(lines.contains(&setting), "`{setting}` in the unit:\n{unit}");
    }
    assert!(
        unit.contains("SO_BINDTODEVICE") && unit.contains("CAP_NET_RAW"),
        "the unit explains the SO_BINDTODEVICE finding"
    );
}
