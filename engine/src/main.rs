//! The `netmix` command: parses the CLI, loads the config, and hands over to the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netmix::config::{Config, InterfaceFilter};
use netmix::units;

/// Exit code for a bad command line or config (BSD sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

/// netmix makes every network a computer has work at once: a local SOCKS5 proxy that sends
/// each new connection out through one of the machine's interfaces.
#[derive(Parser, Debug)]
#[command(name = "netmix", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy (SOCKS5 on 127.0.0.1:1080 unless the config says otherwise).
    Run {
        /// Config file (TOML). Without it the built-in defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List the interfaces discovery sees and whether netmix would use each.
    Interfaces {
        /// Config file whose include/exclude rules to apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print each interface's state and numbers from a running netmix (its dashboard API).
    Status {
        /// Config file of the running instance (for `dashboard.listen`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List the strategy plugins found in the plugins folder, and why any file was refused.
    Plugins {
        /// Config file whose `plugins.dir` to search.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file and exit 0 when it is valid.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Windows: install, remove or run netmix as a service (Linux: the systemd unit).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(Subcommand, Debug)]
enum ServiceAction {
    /// Register the `netmix` service (automatic start) running `service run --config FILE`.
    Install {
        /// The config file the service runs with (made absolute, checked first).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Stop and remove the `netmix` service.
    Uninstall,
    /// What the service manager starts (not for a console: use `netmix run`).
    Run {
        /// Config file (TOML). Without it the built-in defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// `netmix service …`: the Windows service manager's side.
fn service(action: ServiceAction) -> ExitCode {
    let result = match action {
        ServiceAction::Install { config } => {
            let (exe, cwd) = (std::env::current_exe(), std::env::current_dir());
            let (Ok(exe), Ok(cwd)) = (exe, cwd) else {
                eprintln!("netmix: cannot tell where netmix.exe or the current folder is");
                return ExitCode::FAILURE;
            };
            match netmix::service::install_plan(&exe, &config, &cwd) {
                Err(e) => {
                    eprintln!("netmix: {e}");
                    return ExitCode::from(EX_USAGE);
                }
                Ok(plan) => install_service(&plan).map(|()| {
                    println!(
                        "Installed the service {} (automatic start) with {}; start it with `sc start {}`.",
                        netmix::service::SERVICE_NAME,
                        plan.config.display(),
                        netmix::service::SERVICE_NAME
                    );
                }),
            }
        }
        ServiceAction::Uninstall => uninstall_service().map(|()| {
            println!("Removed the service {}.", netmix::service::SERVICE_NAME);
        }),
        ServiceAction::Run { config } => run_service(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netmix: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(windows)]
fn install_service(plan: &netmix::service::InstallPlan) -> Result<(), String> {
    netmix::service::install(plan)
}
#[cfg(windows)]
fn uninstall_service() -> Result<(), String> {
    netmix::service::uninstall()
}
#[cfg(windows)]
fn run_service(config: Option<PathBuf>) -> Result<(), String> {
    netmix::service::run(config)
}

#[cfg(not(windows))]
const NOT_WINDOWS: &str = "`netmix service` is for Windows. On Linux run netmix with the \
                           systemd unit (scripts/systemd/netmix.service, see README \"Install\")";
#[cfg(not(windows))]
fn install_service(_: &netmix::service::InstallPlan) -> Result<(), String> {
    Err(NOT_WINDOWS.to_owned())
}
#[cfg(not(windows))]
fn uninstall_service() -> Result<(), String> {
    Err(NOT_WINDOWS.to_owned())
}
#[cfg(not(windows))]
fn run_service(_: Option<PathBuf>) -> Result<(), String> {
    Err(NOT_WINDOWS.to_owned())
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::default()),
        Some(path) => Config::load(path).map_err(|e| {
            eprintln!("netmix: config error: {e}");
            ExitCode::from(EX_USAGE)
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            netmix::telemetry::init();
            raise_fd_limit();
            match netmix::run_blocking(config, netmix::shutdown::signal) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("netmix: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Interfaces { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            print_interfaces(&config)
        }
        Command::Status { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            print_status(&config)
        }
        Command::Plugins { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            print_plugins(&config)
        }
        Command::Service { action } => service(action),
        Command::CheckConfig { file } => {
            let problems = netmix::check::check(&file);
            if problems.is_empty() {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    eprintln!("netmix: config error: {p}");
                }
                ExitCode::from(EX_USAGE)
            }
        }
    }
}

fn print_interfaces(config: &Config) -> ExitCode {
    let filter = InterfaceFilter::new(config);
    let list = match netmix::iface::scan::scan_with_addressless(&filter) {
        Ok(list) => list,
        Err(e) => {
            eprintln!("netmix: cannot list interfaces: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{:<16} {:>5}  {:<9} {:<5} {:<40} USED",
        "NAME", "INDEX", "KIND", "STATE", "ADDRESSES"
    );
    for i in &list {
        let addrs = i
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let used = match i.usable() {
            Ok(()) => "yes".to_owned(),
            Err(why) => format!("no: {why}"),
        };
        println!(
            "{:<16} {:>5}  {:<9} {:<5} {:<40} {used}",
            i.name,
            i.index,
            i.kind.as_str(),
            if i.up { "up" } else { "down" },
            if addrs.is_empty() {
                NO_ADDRESS_YET.to_owned()
            } else {
                addrs
            },
        );
    }
    ExitCode::SUCCESS
}

/// The address column of an interface without a usable address (no DHCP answer yet, say).
const NO_ADDRESS_YET: &str = "no address yet";

/// Width of the STRATEGY column of `netmix plugins`.
const STRATEGY_COLUMN: usize = 16;

/// One strategy of `netmix plugins`: the name, its description wrapped to the output width,
/// and where it comes from on a line of its own under the description (a path is never cut).
fn print_plugin_row(name: &str, description: &str, source: &str, width: usize) {
    for line in units::two_columns(name, STRATEGY_COLUMN, description, width) {
        println!("{line}");
    }
    println!("{:w$}from: {source}", "", w = STRATEGY_COLUMN + 1);
}

fn print_plugins(config: &Config) -> ExitCode {
    let scan = netmix::router::plugins::scan(config);
    if scan.dirs.is_empty() {
        println!("plugins folders: (none)");
    }
    for dir in &scan.dirs {
        println!("plugins folder: {}", dir.display());
    }
    let width = units::output_width();
    println!("{:<w$} DESCRIPTION", "STRATEGY", w = STRATEGY_COLUMN);
    for p in &scan.loaded {
        let file = p.path.display().to_string();
        print_plugin_row(&p.name, &p.description, &file, width);
    }
    if !scan
        .loaded
        .iter()
        .any(|p| p.name == netmix::router::BUILTIN)
    {
        print_plugin_row(
            netmix::router::BUILTIN,
            "weighted round-robin (built in)",
            "built-in",
            width,
        );
    }
    for refused in &scan.refused {
        println!("refused: {refused}");
    }
    println!("selected: {}", config.strategy);
    // The same start-up `run` makes, quietly: which strategy would answer, and why not the
    // selected one when it would not.
    let quiet = tracing_subscriber::registry();
    let answering = tracing::subscriber::with_default(quiet, || {
        let router = netmix::load_strategies(config, &netmix::events::Events::new()).router;
        match router.fallback_reason() {
            None => router.active_name(),
            Some(why) => format!("{} ({why})", router.active_name()),
        }
    });
    println!("answering: {answering}");
    ExitCode::SUCCESS
}

fn print_status(config: &Config) -> ExitCode {
    let addr = config.dashboard.listen;
    let unreachable = |e: String| {
        eprintln!(
            "netmix: cannot reach the running netmix at http://{addr}/ ({e}); is it running with the dashboard enabled?"
        );
        ExitCode::FAILURE
    };
    let strategy: netmix_web::StrategyDto = match http_get_json(addr, "/api/strategy") {
        Ok(s) => s,
        Err(e) => return unreachable(e),
    };
    let interfaces: Vec<netmix_web::InterfaceDto> = match http_get_json(addr, "/api/interfaces") {
        Ok(list) => list,
        Err(e) => return unreachable(e),
    };
    print!("{}", status_text(&strategy, &interfaces));
    ExitCode::SUCCESS
}

/// What `netmix status` prints: the active strategy, then one line per interface with units
/// (KiB/MiB, kbit/s/Mbit/s) and `—` for what is not measured yet.
fn status_text(
    strategy: &netmix_web::StrategyDto,
    interfaces: &[netmix_web::InterfaceDto],
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let active = if strategy.active.is_empty() {
        units::UNKNOWN
    } else {
        strategy.active.as_str()
    };
    let _ = write!(out, "strategy: {active}");
    if strategy.fallback_active {
        let _ = write!(out, " (built-in fallback answering");
        if let Some(e) = &strategy.last_error {
            let _ = write!(out, ": {e}");
        }
        out.push(')');
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<12} {:<9} {:>9} {:>9} {:>7} {:>6} {:>10} {:>10} {:>12} {:>12}",
        "INTERFACE",
        "HEALTH",
        "LATENCY",
        "JITTER",
        "SUCCESS",
        "ACTIVE",
        "SENT",
        "RECEIVED",
        "UP",
        "DOWN"
    );
    for i in interfaces {
        // No jitter either before the first latency sample.
        let jitter = i.latency_ms.map(|_| i.jitter_ms);
        let _ = writeln!(
            out,
            "{:<12} {:<9} {:>9} {:>9} {:>7} {:>6} {:>10} {:>10} {:>12} {:>12}",
            i.name,
            i.health,
            units::millis(i.latency_ms),
            units::millis(jitter),
            units::percent(i.success_rate),
            i.active,
            units::bytes(i.bytes_up),
            units::bytes(i.bytes_down),
            units::bits_per_second(i.up_bps),
            units::bits_per_second(i.down_bps),
        );
    }
    if interfaces.is_empty() {
        out.push_str("(no interface yet)\n");
    }
    out
}

/// GETs a JSON document from the local dashboard (reqwest on a one-off runtime; 5 s limit).
fn http_get_json<T: serde::de::DeserializeOwned>(
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let response = client
            .get(format!("http://{addr}{path}"))
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status: {status}"));
        }
        // Whoever answers on that port (another user's program, if netmix is not running)
        // cannot make this read without end.
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_STATUS_BODY {
                return Err(format!(
                    "the answer is larger than {} MiB; is that netmix?",
                    MAX_STATUS_BODY >> 20
                ));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))
    })
}

/// Largest dashboard answer `netmix status` reads.
const MAX_STATUS_BODY: usize = 4 << 20;

/// Every relayed connection needs two file descriptors: raise the soft limit to the hard one
/// (commonly 1024 → 524288), and with the privilege for it the hard one to at least 65536, so
/// that tens of thousands of connections do not hit EMFILE.
fn raise_fd_limit() {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        const WANTED: u64 = 65_536;
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return;
        };
        let raised = hard < WANTED && setrlimit(Resource::RLIMIT_NOFILE, WANTED, WANTED).is_ok();
        if !raised
            && soft < hard
            && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        {
            tracing::warn!(%error, soft, "Cannot raise the open-files limit.");
        }
        if let Ok((now, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
            tracing::debug!(from = soft, to = now, "Open-files limit.");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A one-shot HTTP server on loopback answering `body` (chunked, 64 KiB chunks).
    fn serve_once(body: Vec<u8>) -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            for chunk in body.chunks(64 << 10) {
                if write!(s, "{:x}\r\n", chunk.len()).is_err()
                    || s.write_all(chunk).is_err()
                    || s.write_all(b"\r\n").is_err()
                {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n");
        });
        addr
    }

    fn iface(name: &str) -> netmix_web::InterfaceDto {
        netmix_web::InterfaceDto {
            id: 1,
            name: name.to_owned(),
            kind: "physical".to_owned(),
            health: "up".to_owned(),
            link_up: true,
            addrs: vec!["198.18.10.2".to_owned()],
            weight: 1,
            metered: false,
            latency_ms: None,
            jitter_ms: 0.0,
            latency_history: Vec::new(),
            successes: 0,
            failures: 0,
            success_rate: None,
            active: 0,
            bytes_up: 0,
            bytes_down: 0,
            up_bps: 0,
            down_bps: 0,
            peak_down_bps: 0,
            connect_timeout_ms: 5000,
            ejections: 0,
        }
    }

    #[test]
    fn status_prints_units_dashes_and_the_strategy() {
        let mut busy = iface("wan0");
        busy.latency_ms = Some(12.34);
        busy.jitter_ms = 1.5;
        busy.success_rate = Some(1.0);
        busy.bytes_up = 1536;
        busy.bytes_down = 3 * 1024 * 1024;
        busy.up_bps = 1_200;
        busy.down_bps = 12_500_000;
        let fresh = iface("wan1");
        let strategy = netmix_web::StrategyDto {
            active: "round-robin".to_owned(),
            ..netmix_web::StrategyDto::default()
        };
        let text = status_text(&strategy, &[busy, fresh]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "strategy: round-robin");
        let wan0 = lines.iter().find(|l| l.starts_with("wan0")).unwrap();
        for want in [
            "12.3 ms",
            "1.50 ms",
            "100%",
            "1.50 KiB",
            "3.00 MiB",
            "1.20 kbit/s",
            "12.5 Mbit/s",
        ] {
            assert!(wan0.contains(want), "{want} in {wan0}");
        }
        let wan1 = lines.iter().find(|l| l.starts_with("wan1")).unwrap();
        assert_eq!(
            wan1.matches('—').count(),
            3,
            "latency, jitter, success unknown: {wan1}"
        );
        assert!(
            !wan1.contains("0.0ms") && !wan1.contains("0.00 ms"),
            "{wan1}"
        );
        assert!(wan1.contains("0 B") && wan1.contains("0 bit/s"), "{wan1}");

        let fallback = netmix_web::StrategyDto {
            active: "round-robin".to_owned(),
            fallback_active: true,
            last_error: Some("latency: panicked".to_owned()),
            ..netmix_web::StrategyDto::default()
        };
        let text = status_text(&fallback, &[]);
        assert!(
            text.starts_with(
                "strategy: round-robin (built-in fallback answering: latency: panicked)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_reads_the_dashboard_and_refuses_a_huge_answer() {
        let ok = serve_once(br#"[{"a":1}]"#.to_vec());
        let v: serde_json::Value = http_get_json(ok, "/api/interfaces").unwrap();
        assert_eq!(v[0]["a"], 1);

        let huge = serve_once(vec![b' '; MAX_STATUS_BODY + (1 << 20)]);
        let err = http_get_json::<serde_json::Value>(huge, "/api/interfaces").unwrap_err();
        assert!(err.contains("larger than 4 MiB"), "{err}");
    }
}
