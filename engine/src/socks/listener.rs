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
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                warned_full = false;
                permit
            }
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max = limit.available_permits(),
                        "Connection limit reached; new clients wait."
                    );
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
