//! The `netmix` command line: `check-config` on good and bad files, exit codes, one-line errors.

use std::path::{Path, PathBuf};
use std::process::Command;

fn netmix() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netmix"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_shipped_config_passes_check_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = netmix().arg("check-config").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

#[test]
fn bad_config_is_refused_in_one_line_naming_file_and_key() {
    let dir = std::env::temp_dir().join(format!("netmix-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, key) in [
        (
            "[socks]\nlisten = \"127.0.0.1:1080\"\nlisen = 1\n",
            "socks.lisen",
        ),
        ("[timeouts]\nconnect_ms = -5\n", "timeouts.connect_ms"),
        ("[socks]\nlisten = \"0.0.0.0:1080\"\n", "socks.listen"),
        (
            "[[interface]]\nname = \"eth0\"\nweight = 0\n",
            "interface[0].weight",
        ),
        ("strategy = [\n", "(syntax)"),
    ] {
        let file = dir.join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = netmix().arg("check-config").arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "EX_USAGE for {text:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&file.display().to_string()),
            "names the file: {err}"
        );
        assert!(
            err.contains(&format!(": {key}: ")),
            "names the key {key}: {err}"
        );
        // `run` refuses the same file the same way, before doing anything.
        let out = netmix()
            .arg("run")
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64));
    }
    let out = netmix()
        .arg("check-config")
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plugins_command_lists_the_built_plugins() {
    // The plugins sit next to the binary in target/<profile>/ (cargo build --workspace).
    let out = netmix().arg("plugins").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("selected: capacity"), "{text}");
    for name in ["capacity", "round-robin", "latency", "sticky"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} listed (build the plugins first: cargo build --workspace):\n{text}"
        );
    }
}
