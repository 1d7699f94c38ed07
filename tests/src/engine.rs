//! Starting and stopping the `netmix` binary inside the lab's client namespace.
//!
//! [`spawn_engine`] writes the config to a temp file, runs
//! `ip netns exec <client> <netmix> run --config <file>` with `RUST_LOG=info,netmix=debug`
//! (stdout and stderr go to one log file), and waits until the SOCKS port (the
//! `listen = "127.0.0.1:PORT"` line of the config, default 1080) accepts connections inside
//! the client namespace. `ip netns exec` execs the binary, so [`Engine::pid`] is netmix's own
//! pid. On drop the engine gets SIGTERM, 3 s to exit, then SIGKILL; if the test is panicking,
//! its log is printed to stderr.
//!
//! The binary is `$NETMIX_BIN`, else `<target>/<profile>/netmix` with target =
//! `$CARGO_TARGET_DIR` or the workspace's `target/`, profile = `$NETMIX_PROFILE` or `debug`
//! (and, failing that, the `netmix` next to the running test binary).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::lab::{Lab, require_root};
use crate::ns::{command_in, in_ns};

/// How long [`spawn_engine`] waits for the SOCKS port.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 1080);

static ENGINE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A lab config: round-robin over the interfaces `include` names (a TOML list's items, e.g.
/// `"\"wan*\""`), `extra` TOML at the top level, quick rescans, 1.5 s handshake and connect
/// deadlines.
pub fn lab_config(include: &str, extra: &str) -> String {
    format!(
        "strategy = \"round-robin\"\n{extra}\n[interfaces]\ninclude = [{include}]\n\n[discovery]\nrescan_interval_ms = 300\n\n\
         [timeouts]\nhandshake_ms = 1500\nconnect_ms = 1500\n"
    )
}

/// An engine on [`lab_config`] (all `wan*` links, `extra` TOML) that writes its connection log
/// to a fresh file named by `tag`; the engine and the log's path.
pub fn spawn_with_connection_log(lab: &Lab, tag: &str, extra: &str) -> (Engine, PathBuf) {
    let log = std::env::temp_dir().join(format!("netmix-{tag}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let extra = format!("connection_log = \"{}\"\n{extra}", log.display());
    (spawn_engine(lab, &lab_config("\"wan*\"", &extra)), log)
}

/// Where the netmix binary is; panics with "build it first" if it is missing.
pub fn netmix_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETMIX_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "NETMIX_BIN={} does not exist", p.display());
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = std::env::var("NETMIX_PROFILE").unwrap_or_else(|_| "debug".to_owned());
    let mut candidates = vec![target.join(&profile).join("netmix")];
    // <target>/<profile>/deps/<test binary> → <target>/<profile>/netmix
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.to_owned()))
    {
        candidates.push(dir.join("netmix"));
    }
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "netmix binary not found at {candidates:?}; build it first: cargo build --workspace"
            )
        })
}

/// The SOCKS address from the config's `listen = "..."` line (127.0.0.1:1080 if none).
pub fn listen_addr(config_toml: &str) -> SocketAddr {
    for line in config_toml.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "listen" {
            continue;
        }
        let value = value
            .split('#')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        return value
            .parse()
            .unwrap_or_else(|e| panic!("cannot parse listen address {value:?}: {e}"));
    }
    DEFAULT_LISTEN
}

fn temp_path(what: &str) -> PathBuf {
    let n = ENGINE_COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("netmix-lab-{}-{n}.{what}", std::process::id()))
}

/// A running netmix process inside the lab's client namespace.
pub struct Engine {
    child: Child,
    client_ns: String,
    socks: SocketAddr,
    config_path: PathBuf,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

/// Starts `netmix run --config <file>` in the client namespace and waits for its SOCKS port.
pub fn spawn_engine(lab: &Lab, config_toml: &str) -> Engine {
    Engine::new_with_args(lab, &["run", "--config", "{config}"], config_toml)
}

/// Runs a one-shot netmix subcommand (e.g. `check --config {config}`) in the client
/// namespace and returns its output; `{config}` in `args` becomes the config file's path.
pub fn run_netmix(lab: &Lab, args: &[&str], config_toml: &str) -> Output {
    require_root();
    let config_path = temp_path("toml");
    std::fs::write(&config_path, config_toml).expect("write config");
    let bin = netmix_bin();
    let args = substitute(args, &config_path);
    let mut argv: Vec<&str> = vec![bin.to_str().expect("utf-8 path")];
    argv.extend(args.iter().map(String::as_str));
    let out = command_in(lab.client_ns(), &argv)
        .env("RUST_LOG", engine_log_filter())
        .env("XDG_STATE_HOME", temp_path("state"))
        .stdin(Stdio::null())
        .output()
        .expect("run netmix");
    let _ = std::fs::remove_file(&config_path);
    out
}

/// The engine's log filter: debug for tests (their assertions read the log), or
/// `NETMIX_ENGINE_LOG` (benchmarks use the production default, `info`).
fn engine_log_filter() -> String {
    std::env::var("NETMIX_ENGINE_LOG").unwrap_or_else(|_| "info,netmix=debug".to_owned())
}

fn substitute(args: &[&str], config: &Path) -> Vec<String> {
    let config = config.to_str().expect("utf-8 temp path");
    args.iter().map(|a| a.replace("{config}", config)).collect()
}

impl Engine {
    /// Starts netmix with `args` (`{config}` becomes the config file's path) and waits until
    /// the config's SOCKS port accepts connections; panics with the log if it exits or does
    /// not listen within 20 s.
    pub fn new_with_args(lab: &Lab, args: &[&str], config_toml: &str) -> Engine {
        Engine::spawn_program(lab, &netmix_bin(), args, config_toml)
    }

    /// Like [`Engine::new_with_args`] but runs `program` instead of netmix (a stand-in, or
    /// another build of it).
    pub fn spawn_program(lab: &Lab, program: &Path, args: &[&str], config_toml: &str) -> Engine {
        require_root();
        let bin = program;
        let config_path = temp_path("toml");
        let log_path = temp_path("log");
        std::fs::write(&config_path, config_toml).expect("write config");
        let log = File::create(&log_path).expect("create engine log");
        let args = substitute(args, &config_path);
        let mut argv: Vec<&str> = vec![bin.to_str().expect("utf-8 path")];
        argv.extend(args.iter().map(String::as_str));
        let child = command_in(lab.client_ns(), &argv)
            .env("RUST_LOG", engine_log_filter())
            // The dashboard token goes to a per-engine folder, not the user's home.
            .env("XDG_STATE_HOME", temp_path("state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut engine = Engine {
            child,
            client_ns: lab.client_ns().to_owned(),
            socks: listen_addr(config_toml),
            config_path,
            log_path,
            status: None,
        };
        engine.wait_listening();
        engine
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = self.socks;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                panic!(
                    "netmix exited during startup ({status}); log:\n{}",
                    self.logs()
                );
            }
            let up = in_ns(&self.client_ns, || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            if up {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "netmix did not listen on {addr} within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The SOCKS address, valid inside the client namespace (use [`Lab::connect_client`]).
    pub fn socks_addr(&self) -> SocketAddr {
        self.socks
    }

    /// Everything netmix wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// netmix's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to netmix; panics if it has already been reaped.
    pub fn signal(&self, sig: Signal) {
        assert!(
            self.status.is_none(),
            "netmix already exited ({:?})",
            self.status
        );
        self.send(sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid()));
    }

    fn send(&self, sig: Signal) -> nix::Result<()> {
        kill(
            Pid::from_raw(i32::try_from(self.pid()).expect("pid fits i32")),
            sig,
        )
    }

    /// Waits up to `timeout` for netmix to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.status.is_none() {
                self.status = self.child.try_wait().expect("try_wait");
            }
            if self.status.is_some() || Instant::now() >= deadline {
                return self.status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.wait_exit(Duration::ZERO).is_none() {
            let _ = self.send(Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- netmix log ({}) ----\n{}",
                self.log_path.display(),
                self.logs()
            );
        }
        let _ = std::fs::remove_file(&self.config_path);
        if std::env::var_os("NETMIX_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// CPU time process `pid` has used so far (user + system), from `/proc/<pid>/stat`
/// (USER_HZ = 100, so 10 ms steps).
///
/// # Panics
/// When the process does not exist.
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().expect("tick count"))
        .collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// The resident set of process `pid`, KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// How many file descriptors process `pid` has open.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}
