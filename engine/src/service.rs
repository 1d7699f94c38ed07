//! `netmix service install|uninstall|run`: netmix as a Windows service (the windows-service
//! crate). On Linux the systemd unit does this job (scripts/systemd/netmix.service).
//!
//! - `install --config FILE` registers the service `netmix` (automatic start, runs as
//!   LocalSystem) whose command line is `"<this netmix.exe>" service run --config "<FILE>"`,
//!   with FILE made absolute (a service starts in `System32`) and checked first: a config that
//!   would not load is refused before anything is registered.
//! - `uninstall` stops the service if it runs and removes it.
//! - `run` is what the service manager starts: it reports Running, serves until the manager
//!   says Stop (or the system shuts down), then drains like Ctrl-C does and reports Stopped.
//!
//! The argument handling is plain code with unit tests on every platform; only the calls into
//! the service manager are Windows-only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The service's name (`sc query netmix`).
pub const SERVICE_NAME: &str = "netmix";
/// The name the Services console shows.
pub const DISPLAY_NAME: &str = "netmix (every network at once)";

/// What `service install` will register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// The executable the service manager starts.
    pub executable: PathBuf,
    /// Its arguments.
    pub arguments: Vec<OsString>,
    /// The config file, absolute.
    pub config: PathBuf,
}

/// The plan for `service install --config <config>` run as `exe` from `cwd`.
///
/// # Errors
/// One line: the config does not exist or does not load (with the config error's words).
pub fn install_plan(exe: &Path, config: &Path, cwd: &Path) -> Result<InstallPlan, String> {
    let config = if config.is_absolute() {
        config.to_path_buf()
    } else {
        cwd.join(config)
    };
    if !config.is_file() {
        return Err(format!(
            "{}: no such config file (the service needs one: netmix service install --config <file>)",
            config.display()
        ));
    }
    Config::load(&config).map_err(|e| format!("config error: {e}"))?;
    Ok(InstallPlan {
        executable: exe.to_path_buf(),
        arguments: run_arguments(&config),
        config,
    })
}

/// The command line after the executable: `service run --config <config>`.
pub fn run_arguments(config: &Path) -> Vec<OsString> {
    vec![
        "service".into(),
        "run".into(),
        "--config".into(),
        config.as_os_str().to_owned(),
    ]
}

#[cfg(windows)]
pub use windows::{install, run, uninstall};

#[cfg(windows)]
mod windows {
    use std::ffi::OsString;
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use windows_service::service::{
        ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
        ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_service::{define_windows_service, service_dispatcher};

    use super::{DISPLAY_NAME, InstallPlan, SERVICE_NAME};

    /// Registers the service (needs an administrator).
    ///
    /// # Errors
    /// What the service manager said.
    pub fn install(plan: &InstallPlan) -> Result<(), String> {
        let manager = ServiceManager::local_computer(
            None::<&str>,
            ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
        )
        .map_err(|e| format!("cannot open the service manager (run as administrator): {e}"))?;
        let info = ServiceInfo {
            name: OsString::from(SERVICE_NAME),
            display_name: OsString::from(DISPLAY_NAME),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: plan.executable.clone(),
            launch_arguments: plan.arguments.clone(),
            dependencies: vec![],
            account_name: None,
            account_password: None,
        };
        let service = manager
            .create_service(&info, ServiceAccess::CHANGE_CONFIG)
            .map_err(|e| format!("cannot create the service: {e}"))?;
        let _ = service.set_description(
            "Sends each new connection out through one of the machine's network interfaces.",
        );
        Ok(())
    }

    /// Stops (if running) and removes the service.
    ///
    /// # Errors
    /// What the service manager said.
    pub fn uninstall() -> Result<(), String> {
        let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
            .map_err(|e| {
            format!("cannot open the service manager (run as administrator): {e}")
        })?;
        let service = manager
            .open_service(
                SERVICE_NAME,
                ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
            )
            .map_err(|e| format!("no service {SERVICE_NAME}: {e}"))?;
        if let Ok(status) = service.query_status()
            && status.current_state != ServiceState::Stopped
        {
            let _ = service.stop();
        }
        service
            .delete()
            .map_err(|e| format!("cannot remove the service: {e}"))
    }

    static CONFIG: OnceLock<Option<PathBuf>> = OnceLock::new();

    /// Hands the process to the service manager (returns when the service has stopped).
    ///
    /// # Errors
    /// When not started by the service manager.
    pub fn run(config: Option<PathBuf>) -> Result<(), String> {
        let _ = CONFIG.set(config);
        service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
            format!("not started by the service manager ({e}); use `netmix run` in a console")
        })
    }

    define_windows_service!(ffi_service_main, service_main);

    fn service_main(_arguments: Vec<OsString>) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = Mutex::new(Some(stop_tx));
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                if let Some(tx) = stop.lock().ok().and_then(|mut s| s.take()) {
                    let _ = tx.send(());
                }
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(status) = service_control_handler::register(SERVICE_NAME, handler) else {
            return;
        };
        let report = |state, accept, exit| {
            let _ = status.set_service_status(ServiceStatus {
                service_type: ServiceType::OWN_PROCESS,
                current_state: state,
                controls_accepted: accept,
                exit_code: ServiceExitCode::Win32(exit),
                checkpoint: 0,
                wait_hint: Duration::from_secs(10),
                process_id: None,
            });
        };
        let config = match CONFIG.get().cloned().flatten() {
            None => Ok(crate::config::Config::default()),
            Some(path) => crate::config::Config::load(&path).map_err(|e| e.to_string()),
        };
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("config error: {e}");
                report(ServiceState::Stopped, ServiceControlAccept::empty(), 1);
                return;
            }
        };
        crate::telemetry::init();
        report(
            ServiceState::Running,
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            0,
        );
        let result = crate::run_blocking(config, move || async move {
            let _ = stop_rx.await;
            tracing::info!(signal = "service stop", "Shutting down.");
        });
        let code = match result {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e:#}");
                1
            }
        };
        report(ServiceState::Stopped, ServiceControlAccept::empty(), code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("netmix-service-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn install_makes_the_config_absolute_and_runs_it_as_a_service() {
        let dir = scratch("ok");
        std::fs::write(dir.join("netmix.toml"), "strategy = \"round-robin\"\n").unwrap();
        let exe = dir.join("netmix.exe");
        let plan = install_plan(&exe, Path::new("netmix.toml"), &dir).unwrap();
        assert_eq!(plan.config, dir.join("netmix.toml"));
        assert_eq!(plan.executable, exe);
        assert_eq!(
            plan.arguments,
            ["service", "run", "--config"]
                .iter()
                .map(OsString::from)
                .chain([dir.join("netmix.toml").into_os_string()])
                .collect::<Vec<_>>()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn install_refuses_a_config_that_would_not_start() {
        let dir = scratch("bad");
        let exe = dir.join("netmix.exe");
        let e = install_plan(&exe, Path::new("missing.toml"), &dir).unwrap_err();
        assert!(e.contains("missing.toml: no such config file"), "{e}");
        std::fs::write(dir.join("bad.toml"), "[socks]\nlisten = \"nowhere\"\n").unwrap();
        let e = install_plan(&exe, &dir.join("bad.toml"), &dir).unwrap_err();
        assert!(
            e.starts_with("config error: ") && e.contains("socks.listen"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
