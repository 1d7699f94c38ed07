//! Shutdown signal: SIGINT or SIGTERM; on Windows Ctrl-C, Ctrl-Break, the console window
//! closing, logoff and system shutdown. Logged by name.

/// Completes on the first SIGINT or SIGTERM (Windows: the console events above).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("Cannot install signal handlers; stop netmix with SIGKILL.");
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "Shutting down.");
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_logoff, ctrl_shutdown};
        let (Ok(mut c), Ok(mut b), Ok(mut close), Ok(mut logoff), Ok(mut down)) = (
            ctrl_c(),
            ctrl_break(),
            ctrl_close(),
            ctrl_logoff(),
            ctrl_shutdown(),
        ) else {
            tracing::error!("Cannot install console handlers; stop netmix with the Task Manager.");
            return std::future::pending().await;
        };
        // A console close, logoff or shutdown gives the process a few seconds (Windows ends
        // it after about 5 s); the grace period should be shorter than that.
        let name = tokio::select! {
            _ = c.recv() => "Ctrl-C",
            _ = b.recv() => "Ctrl-Break",
            _ = close.recv() => "console closed",
            _ = logoff.recv() => "logoff",
            _ = down.recv() => "system shutdown",
        };
        tracing::info!(signal = name, "Shutting down.");
    }
    #[cfg(not(any(unix, windows)))]
    {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!(signal = "Ctrl-C", "Shutting down.");
        } else {
            std::future::pending::<()>().await;
        }
    }
}
