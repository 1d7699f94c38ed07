//! The SocksListener actor: owns the listening socket and its accept loop.
//!
//! The actor starts the loop as a task on the multi-thread runtime (never on the actor thread,
//! where it would queue behind actor messages) and aborts it when stopped; every accepted
//! client gets its own tokio task (`TaskTracker::spawn`). A semaphore caps concurrent clients: at the cap the loop stops accepting and
//! new clients wait in the kernel backlog instead of being dropped.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::conn::{ServeContext, serve};

/// File descriptors kept for everything but relayed connections, at most an eighth of the
/// limit: the dashboard's capped connections and live feeds (so it can never starve the proxy),
/// probes, the ZeroTier client, logs, plugin files; on Linux the relay's splice pipes, two each.
#[cfg_attr(not(unix), allow(dead_code))]
const FD_RESERVE: usize = 64
    + netmix_web::MAX_CONNECTIONS
    + netmix_web::MAX_LIVE_FEEDS
    + if cfg!(any(target_os = "linux", target_os = "android")) {
        2 * SPLICE_PIPES
    } else {
        0
    };

#[cfg(any(target_os = "linux", target_os = "android"))]
const SPLICE_PIPES: usize = super::splice::MAX_PIPES;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[cfg_attr(not(unix), allow(dead_code))]
const SPLICE_PIPES: usize = 0;

/// How many relayed connections an open-files limit leaves room for: two sockets each (the
/// client's and the outbound one) after a reserve for everything else. (Windows has no such
/// limit.)
#[cfg_attr(not(unix), allow(dead_code))]
pub fn connections_for_fd_limit(limit: u64) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let reserve = FD_RESERVE.min(limit / 8);
    (limit - reserve) / 2
}

/// The connection cap to enforce: the configured one, lowered (with a warning) to what the
/// process's open-files limit allows, so that clients past it wait in the backlog instead of
/// being accepted and then failing for want of a socket.
pub fn effective_max_connections(configured: usize) -> usize {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit};
        if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let room = connections_for_fd_limit(soft);
            if room < configured {
                tracing::warn!(
                    configured,
                    open_files_limit = soft,
                    using = room,
                    "socks.max_connections is more than the open-files limit allows (2 sockets per \
                     connection); raise the limit (ulimit -n, LimitNOFILE=) to use more."
                );
                return room;
            }
        }
    }
    configured
}

/// Whether accepted sockets inherit TCP_NODELAY from the listening socket (Linux copies the
/// listener's TCP options into each accepted socket).
pub const ACCEPTED_INHERIT_NODELAY: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Sets TCP_NODELAY on the listening socket where accepted sockets inherit it, which saves one
/// system call per client (the SOCKS replies and relayed small writes must not wait for Nagle).
pub fn nodelay_for_accepted(listener: &TcpListener) {
    if ACCEPTED_INHERIT_NODELAY
        && let Err(error) = socket2::SockRef::from(listener).set_tcp_nodelay(true)
    {
        tracing::debug!(%error, "TCP_NODELAY on the listener refused; set per client instead.");
    }
}

/// Accepts SOCKS5 clients until shutdown.
pub struct SocksListener {
    listener: Option<TcpListener>,
    serve: Arc<ServeContext>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    accept_task: Option<tokio::task::JoinHandle<()>>,
}

impl SocksListener {
    /// A listener actor (not started) for an already bound socket.
    pub fn new(
        listener: TcpListener,
        serve: Arc<ServeContext>,
        max_connections: usize,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            listener: Some(listener),
            serve,
            limit: Arc::new(Semaphore::new(max_connections)),
            tracker,
            shutdown,
            accept_task: None,
        }
    }
}

impl Actor for SocksListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let accept = accept_loop(
            listener,
            self.serve.clone(),
            self.limit.clone(),
            self.tracker.clone(),
            self.shutdown.clone(),
        );
        // The loop runs on the multi-thread runtime, not on the actor thread, so that accepting
        // never queues behind actor messages; the actor owns it and aborts it when stopped.
        let _ = ctx;
        self.accept_task = Some(tokio::spawn(accept));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    serve_ctx: Arc<ServeContext>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(5);
    let mut warned_full = false;
    let max = limit.available_permits();
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                warned_full = false;
                permit
            }
            Err(_) => {
                if !warned_full {
                    tracing::warn!(max, "Connection limit reached; new clients wait.");
                    warned_full = true;
                }
                tokio::select! {
                    p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    () = shutdown.cancelled() => return,
                }
            }
        };
        // accept() is cancel safe: a connection is either returned or left in the backlog.
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let ctx = serve_ctx.clone();
                tracker.spawn(
                    async move {
                        serve(stream, peer, ctx).await;
                        drop(permit);
                    }
                    .instrument(tracing::debug_span!("conn", %peer)),
                );
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "Accept failed.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_where_claimed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        nodelay_for_accepted(&listener);
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        if ACCEPTED_INHERIT_NODELAY {
            assert!(accepted.nodelay().unwrap());
        }
    }

    #[test]
    fn two_sockets_per_connection_after_a_reserve() {
        assert_eq!(connections_for_fd_limit(20_000), (20_000 - FD_RESERVE) / 2);
        assert_eq!(
            connections_for_fd_limit(1024),
            (1024 - 128) / 2,
            "an eighth"
        );
        assert_eq!(connections_for_fd_limit(256), (256 - 32) / 2);
        assert_eq!(connections_for_fd_limit(0), 0);
        assert!(connections_for_fd_limit(u64::MAX) > 1 << 40);
    }
}
