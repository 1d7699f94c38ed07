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

#[test]
fn plugins_table_wraps_descriptions_to_the_width() {
    for (columns, width) in [(Some("60"), 60), (None, 80)] {
        let mut cmd = netmix();
        cmd.arg("plugins").env_remove("COLUMNS");
        if let Some(c) = columns {
            cmd.env("COLUMNS", c);
        }
        // Not a terminal here: without COLUMNS the table is laid out for 80 columns.
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("STRATEGY"))
            .skip(1)
            .take_while(|l| !l.starts_with("refused:") && !l.starts_with("selected:"))
            .collect();
        assert!(table.len() >= 8, "{text}");
        for line in &table {
            // A plugin's file path is never cut; everything else fits.
            if !line.trim_start().starts_with("from: ") {
                assert!(
                    line.chars().count() <= width,
                    "{} > {width} columns: {line:?}\n{text}",
                    line.chars().count()
                );
            }
        }
        // The zerotier plugin's long description is there in full, over several lines.
        let start = table
            .iter()
            .position(|l| l.starts_with("zerotier "))
            .unwrap_or_else(|| panic!("zerotier listed (cargo build --workspace):\n{text}"));
        let mut words = Vec::new();
        for line in &table[start..] {
            if line.trim_start().starts_with("from: ") {
                break;
            }
            words.extend(line.split_whitespace());
        }
        assert!(
            words.join(" ").starts_with(
                "zerotier ZeroTier destinations through their network's interface (longest prefix);"
            ),
            "{text}"
        );
        assert!(
            words.join(" ").ends_with("unless an allowed exit node."),
            "{text}"
        );
    }
}
