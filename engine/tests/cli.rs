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
        ("strategy = [\n", "TOML syntax"),
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
    assert!(text.contains("answering: capacity\n"), "{text}");
    for name in ["capacity", "round-robin", "latency", "sticky"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} listed (build the plugins first: cargo build --workspace):\n{text}"
        );
    }
}

#[test]
fn check_config_catches_what_run_would_reject_or_degrade() {
    // `~/` is the HOME below, joined the platform's way.
    static NO_SUCH_FOLDER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::path::Path::new("/tmp/netmix-home")
            .join("netmix-no-such-folder")
            .display()
            .to_string()
    });
    let dir = std::env::temp_dir().join(format!("netmix-cli-deep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text, key, words) in [
        (
            "unknown-strategy",
            "strategy = \"nosuch\"\n",
            "strategy",
            "no strategy named \"nosuch\"",
        ),
        (
            "option-typo",
            "strategy = \"latency\"\n[strategies.latency]\nprobe_wieght = 2\n",
            "strategy",
            "unknown field `probe_wieght`",
        ),
        (
            "other-table-typo",
            "strategy = \"round-robin\"\n[strategies.sticky]\nttl = \"x\"\n",
            "strategies.sticky",
            "",
        ),
        (
            "missing-model",
            "strategy = \"onnx\"\n[strategies.onnx]\nmodel = \"/nonexistent/model.onnx\"\n",
            "strategy",
            "",
        ),
        (
            "no-plugins-folder",
            "[plugins]\ndir = \"~/netmix-no-such-folder\"\n",
            "plugins",
            NO_SUCH_FOLDER.as_str(),
        ),
        (
            "whole-number",
            "[socks]\nmax_connections = \"many\"\n",
            "socks.max_connections",
            "a whole number",
        ),
        (
            "port-range",
            "[socks]\nlisten = \"127.0.0.1:99999\"\n",
            "socks.listen",
            "ports are 1–65535",
        ),
    ] {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = netmix()
            .arg("check-config")
            .arg(&file)
            .env("HOME", "/tmp/netmix-home")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{name}: EX_USAGE\n{err}");
        let lines: Vec<&str> = err.trim_end().lines().collect();
        assert!(!lines.is_empty(), "{name}: says why");
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("{}: {key}: ", file.display())))
            .unwrap_or_else(|| panic!("{name}: a line naming the file and {key}:\n{err}"));
        assert!(line.contains(words), "{name}: {words:?} in {line}");
        assert!(
            !line.contains("expected usize") && !line.contains("(syntax)"),
            "{line}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_ready_line_and_the_dashboard_name_the_fallback_and_why() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = std::env::temp_dir().join(format!("netmix-cli-fallback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad-options.toml");
    // Loopback only, no interfaces, no probes: nothing is sent anywhere.
    std::fs::write(
        &file,
        format!(
            "strategy = \"latency\"\n[strategies.latency]\nprobe_wieght = 2\n\n[socks]\nlisten = \"127.0.0.1:0\"\n\n\
             [interfaces]\ninclude = [\"netmix-none*\"]\n\n[dashboard]\nlisten = \"127.0.0.1:0\"\ntoken_file = '{}'\n\n\
             [zerotier]\nenabled = false\n",
            dir.join("token").display()
        ),
    )
    .unwrap();
    /// Kills the engine however the test ends.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Running(
        netmix()
            .args(["run", "--config"])
            .arg(&file)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let (mut ready, mut dashboard) = (None, None);
    let started = std::time::Instant::now();
    while (ready.is_none() || dashboard.is_none()) && started.elapsed().as_secs() < 20 {
        let Some(Ok(line)) = lines.next() else { break };
        if line.contains("netmix is ready") {
            ready = Some(line.clone());
        }
        if let Some(url) = line.split("url=http://").nth(1) {
            dashboard = url
                .trim_end_matches('/')
                .split('/')
                .next()
                .map(str::to_owned);
        }
    }
    let ready = ready.expect("a ready line");
    assert!(
        ready.contains("strategy=round-robin"),
        "the strategy answering: {ready}"
    );
    assert!(
        ready.contains("not with the configured strategy: strategy \"latency\"")
            && ready.contains("unknown field `probe_wieght`")
            && ready.contains("the built-in round-robin answers instead"),
        "names the fallback and why: {ready}"
    );
    // The dashboard says the same words (once its feed has its first publication).
    let at = dashboard.expect("the dashboard's address");
    let ask = || {
        let mut s = std::net::TcpStream::connect(&at).unwrap();
        write!(
            s,
            "GET /api/strategy HTTP/1.1\r\nHost: {at}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        // The body's JSON object (whatever the framing).
        let body = answer
            .find('{')
            .zip(answer.rfind('}'))
            .map_or("", |(a, b)| &answer[a..=b]);
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        (answer, v)
    };
    let (mut answer, mut v) = ask();
    let asked = std::time::Instant::now();
    while v["active"] == "" && asked.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        (answer, v) = ask();
    }
    assert_eq!(v["fallback_active"], true, "{answer}");
    let why = v["last_error"].as_str().unwrap_or_default();
    assert!(
        ready.contains(why) && why.contains("unknown field `probe_wieght`"),
        "the same words: {why:?} / {ready}"
    );
    drop(child);
    std::fs::remove_dir_all(&dir).ok();
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
