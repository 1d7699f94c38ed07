//! The Linux archive (`scripts/package.sh`), used the way a user would: unpacked into an
//! empty folder, its `netmix` run from there with an empty `HOME`.
//!
//! - The archive holds one folder, `netmix-<version>/`, with the binary, every shipped strategy
//!   plugin in `plugins/`, the onnx model, `configs/`, `README.md` and the systemd unit.
//! - `netmix plugins` (built-in default config) lists every shipped strategy, each loaded from
//!   the unpacked `plugins/` folder.
//! - `netmix run` on the built-in defaults (only the two listen addresses moved to free ports),
//!   inside a lab namespace: a SOCKS5 CONNECT to a TCP server on 127.0.0.1 and the dashboard's
//!   `/api/interfaces` both answer.
//! - The packed onnx strategy runs its built-in model, and the packed model file loads too,
//!   given the ONNX Runtime library (`NETMIX_ORT_LIB`; the archive does not hold it).
//!
//! Packs the debug build the suite already has (`scripts/package.sh --no-build --linux-only
//! --debug`: the release archive's layout, without a release build's minutes), so
//! `cargo build --workspace --bins --lib` must come first (scripts/test.sh does it).
//! The lab tests need root.

#![cfg(target_os = "linux")]

mod onnx_common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use netmix_integration::client::api_over;
use netmix_integration::{ECHO_PORT, Engine, Lab, TARGET, assert_eventually_async, require_root};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_socks::tcp::Socks5Stream;

/// The workspace version (this crate's is `version.workspace = true`).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every shipped strategy: its name in `netmix plugins` and its file in `plugins/`.
const SHIPPED: [(&str, &str); 6] = [
    ("capacity", "libnetmix_strategy_capacity.so"),
    ("latency", "libnetmix_strategy_latency.so"),
    ("onnx", "libnetmix_strategy_onnx.so"),
    ("round-robin", "libnetmix_strategy_round_robin.so"),
    ("sticky", "libnetmix_strategy_sticky.so"),
    ("zerotier", "libnetmix_strategy_zerotier.so"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Linux archive, packed once per test run from the debug outputs.
fn archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let bin = target_dir().join("debug/netmix");
        assert!(
            bin.is_file(),
            "{} is missing: build first: cargo build --workspace --bins --lib",
            bin.display()
        );
        let out = Command::new(workspace().join("scripts/package.sh"))
            .args(["--no-build", "--linux-only", "--debug"])
            .current_dir(workspace())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/package.sh");
        assert!(
            out.status.success(),
            "scripts/package.sh --no-build --linux-only --debug failed ({}):\n{}",
            out.status,
            text(&out)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(printed.lines().last().unwrap_or_default().trim());
        assert_eq!(
            path,
            workspace().join(format!("dist/netmix-{VERSION}-x86_64-linux.tar.gz")),
            "{}",
            text(&out)
        );
        assert!(path.is_file(), "{} was not written", path.display());
        path
    })
}

/// An empty folder under the temp dir (mode 0755, so that netmix accepts plugins below it),
/// removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("netmix-package-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The archive unpacked into a fresh folder, and an empty home folder for the user.
struct Unpacked {
    root: TempDir,
    home: TempDir,
}

impl Unpacked {
    fn new(tag: &str) -> Unpacked {
        let root = TempDir::new(&format!("{tag}-unpacked"));
        let out = Command::new("tar")
            .arg("-xzf")
            .arg(archive())
            .arg("-C")
            .arg(&root.0)
            .output()
            .expect("run tar");
        assert!(out.status.success(), "tar -xzf: {}", text(&out));
        Unpacked {
            root,
            home: TempDir::new(&format!("{tag}-home")),
        }
    }

    /// `netmix-<version>/` inside the unpacked folder.
    fn top(&self) -> PathBuf {
        self.root.0.join(format!("netmix-{VERSION}"))
    }

    fn bin(&self) -> PathBuf {
        self.top().join("netmix")
    }

    /// The unpacked `netmix` with `args`, run from the unpacked folder with the empty home and
    /// no `NETMIX_ORT_LIB`.
    fn netmix(&self, args: &[&str]) -> Output {
        Command::new(self.bin())
            .args(args)
            .current_dir(self.top())
            .env("HOME", &self.home.0)
            .env("XDG_STATE_HOME", self.home.0.join(".local/state"))
            .env_remove("NETMIX_ORT_LIB")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run the unpacked netmix")
    }

    /// `netmix run --config <config_toml>` inside the lab's client namespace, as
    /// [`Engine::spawn_program`] runs it, through `env` so that it starts in the unpacked
    /// folder with the empty home and `ort_lib` as `NETMIX_ORT_LIB` (unset when `None`).
    fn spawn(&self, lab: &Lab, config_toml: &str, ort_lib: Option<&Path>) -> Engine {
        let top = self.top();
        let home = format!("HOME={}", self.home.0.display());
        let bin = self.bin();
        let mut args = vec![
            "-C",
            top.to_str().expect("utf-8 path"),
            "-u",
            "NETMIX_ORT_LIB",
        ];
        let ort = ort_lib.map(|p| format!("NETMIX_ORT_LIB={}", p.display()));
        args.push(&home);
        if let Some(ort) = &ort {
            args.push(ort);
        }
        args.extend([
            bin.to_str().expect("utf-8 path"),
            "run",
            "--config",
            "{config}",
        ]);
        let engine = Engine::spawn_program(lab, Path::new("/usr/bin/env"), &args, config_toml);
        // `ip netns exec` and `env` both exec: the process is the unpacked netmix itself.
        let exe = std::fs::read_link(format!("/proc/{}/exe", engine.pid())).expect("exe link");
        assert_eq!(exe, bin, "the engine runs the unpacked binary");
        engine
    }
}

/// Two ports free on 127.0.0.1 inside the lab's client namespace (bound, then released).
fn free_ports(lab: &Lab) -> (u16, u16) {
    lab.in_client(|| {
        let a = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let b = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        )
    })
}

/// The built-in defaults with only the SOCKS and dashboard addresses moved (and `extra`).
fn config(socks: u16, dashboard: u16, extra: &str) -> String {
    format!(
        "{extra}\n[socks]\nlisten = \"127.0.0.1:{socks}\"\n\n[dashboard]\nlisten = \"127.0.0.1:{dashboard}\"\n"
    )
}

/// A SOCKS5 CONNECT through `socks` to `dest` (inside the client namespace), one line sent,
/// one line read back.
async fn socks_line(lab: &Lab, socks: SocketAddr, dest: SocketAddr, line: &str) -> String {
    let stream = lab.connect_client(socks).await;
    let mut s = Socks5Stream::connect_with_socket(stream, dest)
        .await
        .unwrap_or_else(|e| panic!("SOCKS5 CONNECT to {dest} through {socks}: {e}"));
    s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("an answer within 5 s")
            .expect("read through the proxy");
        assert!(
            n > 0,
            "the connection through {socks} closed early: {got:?}"
        );
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).trim_end().to_owned()
}

#[test]
fn the_archive_holds_one_folder_with_binary_plugins_model_configs_and_readme() {
    let u = Unpacked::new("layout");
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&u.root.0), [format!("netmix-{VERSION}")]);
    let top = u.top();
    // The licence files go along (MIT OR Apache-2.0: LICENSE-MIT, LICENSE-APACHE).
    let mut expected: Vec<String> = names(&workspace())
        .into_iter()
        .filter(|n| {
            ["LICENSE", "LICENCE", "COPYING"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .chain(
            [
                "README.md",
                "configs",
                "models",
                "netmix",
                "plugins",
                "systemd",
            ]
            .map(String::from),
        )
        .collect();
    expected.sort();
    for licence in ["LICENSE-APACHE", "LICENSE-MIT"] {
        assert!(
            expected.iter().any(|n| n == licence),
            "{licence} in the repository"
        );
    }
    assert_eq!(names(&top), expected);
    let meta = std::fs::metadata(u.bin()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "the binary");

    // Every shipped plugin crate (plugins/*, a cdylib, not a fixture) is packed, and nothing else.
    let mut shipped_crates: Vec<String> = std::fs::read_dir(workspace().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "fixtures"))
        .filter(|p| {
            std::fs::read_to_string(p.join("Cargo.toml")).is_ok_and(|t| t.contains("\"cdylib\""))
        })
        .map(|p| {
            format!(
                "libnetmix_strategy_{}.so",
                p.file_name().unwrap().to_string_lossy().replace('-', "_")
            )
        })
        .collect();
    shipped_crates.sort();
    let files: Vec<&str> = SHIPPED.iter().map(|(_, f)| *f).collect();
    assert_eq!(shipped_crates, files, "SHIPPED lists every plugin crate");
    assert_eq!(names(&top.join("plugins")), files);
    for f in &files {
        let mode = std::fs::metadata(top.join("plugins").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o022, 0, "{f} writable by group or others: {mode:o}");
    }

    // The onnx model, byte for byte the one the plugin has built in.
    let model = std::fs::read(top.join("models/onnx/default.onnx")).expect("packed model");
    assert_eq!(
        model,
        std::fs::read(workspace().join("plugins/onnx/model/default.onnx")).unwrap(),
        "models/onnx/default.onnx is plugins/onnx/model/default.onnx"
    );

    let mut configs: Vec<String> = names(&workspace().join("configs"));
    configs.retain(|n| n.ends_with(".toml"));
    assert_eq!(names(&top.join("configs")), configs);
    assert_eq!(
        std::fs::read(top.join("README.md")).unwrap(),
        std::fs::read(workspace().join("README.md")).unwrap()
    );
    assert_eq!(
        std::fs::read(top.join("systemd/netmix.service")).unwrap(),
        std::fs::read(workspace().join("scripts/systemd/netmix.service")).unwrap()
    );

    // Owned by root in the archive, whoever packed it.
    let listing = Command::new("tar")
        .args(["-tvzf"])
        .arg(archive())
        .output()
        .expect("tar -tvzf");
    assert!(listing.status.success(), "{}", text(&listing));
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        assert!(line.contains(" root/root "), "not root-owned: {line}");
    }
}

#[test]
fn netmix_plugins_lists_every_shipped_strategy_from_the_unpacked_folder() {
    let u = Unpacked::new("plugins");
    let out = u.netmix(&["plugins"]);
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    let dir = u.top().join("plugins");
    let lines: Vec<&str> = listing.lines().collect();
    assert!(
        lines.contains(&format!("plugins folder: {}", dir.display()).as_str()),
        "{listing}"
    );
    for (name, file) in SHIPPED {
        // "<name>  <description...>", then "      from: <path>" under it.
        let row = lines
            .iter()
            .position(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(" "))
            })
            .unwrap_or_else(|| panic!("strategy {name} not listed:\n{listing}"));
        let from = lines[row..]
            .iter()
            .find_map(|l| l.trim().strip_prefix("from: "))
            .unwrap_or_else(|| panic!("no `from:` line for {name}:\n{listing}"));
        assert_eq!(
            Path::new(from),
            dir.join(file),
            "{name} from the unpacked plugins/ folder:\n{listing}"
        );
        assert!(Path::new(from).starts_with(&u.root.0));
    }
    assert!(!listing.contains("refused:"), "{listing}");
    assert!(lines.contains(&"selected: capacity"), "{listing}");
    assert!(lines.contains(&"answering: capacity"), "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netmix_run_on_the_defaults_serves_socks5_and_the_dashboard() {
    require_root();
    let u = Unpacked::new("run");
    let lab = Lab::with_links(1);
    let (socks, dashboard) = free_ports(&lab);
    let engine = u.spawn(&lab, &config(socks, dashboard, ""), None);

    // A TCP server on 127.0.0.1 inside the namespace: answers each line with "got: <line>".
    let server = lab.in_client(|| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
    let dest = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            let Ok(conn) = conn else { break };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_ok() {
                    let mut conn = conn;
                    let _ = conn.write_all(format!("got: {line}").as_bytes());
                }
            });
        }
    });
    let answer = socks_line(&lab, engine.socks_addr(), dest, "hello").await;
    assert_eq!(answer, "got: hello", "{}", engine.logs());

    let dash = SocketAddr::from((Ipv4Addr::LOCALHOST, dashboard));
    let mut seen: serde_json::Value;
    assert_eventually_async!(
        {
            seen = match lab
                .try_connect_client(dash, std::time::Duration::from_secs(1))
                .await
            {
                Ok(s) => api_over(s, dash, "/api/interfaces").await,
                Err(_) => serde_json::Value::Null,
            };
            seen.as_array()
                .is_some_and(|a| a.iter().any(|i| i["name"] == "wan0"))
        },
        "the dashboard on {dash} lists wan0: {seen}\n{}",
        engine.logs()
    );
    let logs = engine.logs();
    assert!(!logs.contains("refused"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packed_onnx_strategy_runs_its_model() {
    require_root();
    let lib = onnx_common::ort_library();
    let u = Unpacked::new("onnx");

    // Selected, it answers (no fallback) when listed from the package.
    let onnx_toml = u.home.0.join("onnx.toml");
    std::fs::write(&onnx_toml, "strategy = \"onnx\"\n").unwrap();
    let out = u.netmix(&["plugins", "--config", onnx_toml.to_str().unwrap()]);
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    assert!(listing.lines().any(|l| l == "answering: onnx"), "{listing}");

    let lab = Lab::with_links(1);
    let _servers = lab.start_servers().await;
    let model_file = u.top().join("models/onnx/default.onnx");
    for (options, ready) in [
        (
            String::new(),
            "ONNX model ready: the built-in model with ONNX Runtime".to_owned(),
        ),
        (
            format!("[strategies.onnx]\nmodel = \"{}\"\n", model_file.display()),
            format!(
                "ONNX model ready: model {} with ONNX Runtime",
                model_file.display()
            ),
        ),
    ] {
        let (socks, dashboard) = free_ports(&lab);
        let mut toml = config(socks, dashboard, "strategy = \"onnx\"");
        toml.push_str(&options);
        let engine = u.spawn(&lab, &toml, Some(&lib));
        let echo = socks_line(
            &lab,
            engine.socks_addr(),
            SocketAddr::from((TARGET, ECHO_PORT)),
            "through wan0",
        )
        .await;
        assert_eq!(echo, "through wan0", "{}", engine.logs());
        assert_eventually_async!(
            engine.logs().contains(&ready),
            "`{ready}` in the log:\n{}",
            engine.logs()
        );
        let logs = engine.logs();
        assert!(!logs.contains("falling back"), "{logs}");
        assert!(!logs.contains("refused"), "{logs}");
    }
}
