//! netmix's web dashboard: a single embedded page, a JSON API, a live WebSocket feed and
//! Prometheus metrics, served by warp.
//!
//! # Place in the architecture
//!
//! The engine's feed actor publishes one consistent [`Feed`] snapshot at a time on a
//! `tokio::sync::watch` channel (a "latest value" channel: slow dashboards skip snapshots instead
//! of queueing them). This crate only *reads* that channel; the one thing it can change, the active
//! routing strategy, goes through the small [`Control`] handle the engine implements. `web` knows
//! nothing of actix or of the engine's types, so the engine depends on it and not the reverse.
//!
//! # Layout
//!
//! - [`models`]: the DTOs (the engine ↔ web contract).
//! - `filters`: one function per route, the Host / Origin / token guards, and [`routes`].
//! - `handlers`: what each route does, and the rejection → JSON error mapping.
//! - `ws`: the `/ws` live feed loop.
//! - `metrics`: the Prometheus text rendering of a [`Feed`].
//! - `token`: [`load_or_create_token`].
//! - `static/`: the page (HTML, JS, CSS), compiled into the binary with `include_str!`.
//!
//! # Routes
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the dashboard page (assets under `/static/`) |
//! | `GET /ws?connections=N` | live [`Feed`] JSON, on change (at most every 250 ms) and at least every second; `N` trims the connection list |
//! | `GET /api/feed` | the whole [`Feed`] |
//! | `GET /api/interfaces` | [`models::InterfaceDto`] list |
//! | `GET /api/zerotier` | [`models::ZeroTierDto`] or `null` (ZeroTier agent off) |
//! | `GET /api/connections?limit=N` | newest connections (default 100, max 1000) |
//! | `GET /api/events?limit=N` | newest events (default 100, max 500) |
//! | `GET /api/strategy` | [`models::StrategyDto`] |
//! | `POST /api/strategy` | `{"name": "…"}` with `Authorization: Bearer <token>` |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//!
//! # Safety
//!
//! - Every request whose `Host` is not one of [`WebConfig::allowed_hosts`] gets 403, which defeats
//!   DNS rebinding (a hostile page whose name resolves to 127.0.0.1 still sends its own name).
//! - A WebSocket upgrade with an `Origin` other than `http://<allowed host>` gets 403.
//! - State changes need the token, sent as a bearer header (never a cookie, so no CSRF). The
//!   token is never part of any response, nor of the page: the user pastes it once, and the page
//!   keeps it in `localStorage`. [`WebConfig`]'s `Debug` masks it.
//! - Every response carries a strict `Content-Security-Policy` (no inline script, no foreign
//!   origin), `X-Frame-Options: DENY` and `nosniff`.
#![forbid(unsafe_code)]

mod filters;
mod handlers;
mod metrics;
pub mod models;
mod token;
mod ws;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use warp::{Filter, Reply};

pub use metrics::render as render_metrics;
pub use models::{
    ConnectionDto, ErrorBody, EventDto, Feed, InterfaceDto, LatencyPoint, SetStrategyRequest,
    StrategyDto, StrategyInfo, Totals, ZeroTierDto, ZtNetworkDto, ZtPeerDto, ZtRouteDto,
};
pub use token::load_or_create_token;

/// The engine's handle for the one state change the dashboard can make.
///
/// The web layer calls it from a blocking thread (`spawn_blocking`), so an implementation may wait
/// briefly (for example for an actor's reply) but should not take long.
pub trait Control: Send + Sync + 'static {
    /// Switch the routing strategy to `name`.
    ///
    /// # Errors
    ///
    /// A one-line, user-facing message (unknown strategy, plugin failed to initialise, …); the
    /// dashboard shows it verbatim with status 400.
    fn set_strategy(&self, name: &str) -> Result<(), String>;
}

/// Dashboard settings the engine derives from its config.
#[derive(Clone)]
pub struct WebConfig {
    /// The secret a client must send as `Authorization: Bearer <token>` to change state. An empty
    /// token refuses every state change.
    pub token: String,
    /// Accepted `Host` header values, with port: `["127.0.0.1:5000", "localhost:5000"]`. Compared
    /// case-insensitively. WebSocket origins must be `http://` followed by one of them.
    pub allowed_hosts: Vec<String>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("token", &"MASKED")
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

impl WebConfig {
    /// The usual allowed hosts for a dashboard bound to `127.0.0.1:<port>`: `127.0.0.1:<port>`,
    /// `localhost:<port>` and `[::1]:<port>`.
    pub fn loopback_hosts(port: u16) -> Vec<String> {
        vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ]
    }
}

/// Everything the routes need; cheap to clone (one per request).
#[derive(Clone)]
pub struct WebContext {
    /// Latest snapshot, published by the engine's feed actor.
    pub feed: watch::Receiver<Arc<Feed>>,
    /// Handle for state changes.
    pub control: Arc<dyn Control>,
    /// Token and allowed hosts.
    pub config: WebConfig,
}

impl fmt::Debug for WebContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebContext")
            .field("feed_version", &self.feed.borrow().version)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WebContext {
    /// The latest published feed.
    pub fn snapshot(&self) -> Arc<Feed> {
        self.feed.borrow().clone()
    }
}

/// Every route, guarded, with errors mapped to JSON and each request traced.
pub fn routes(ctx: WebContext) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    filters::all(ctx, None)
}

/// Serve the dashboard on `listener` until `shutdown` completes, then wait for open requests and
/// WebSockets to finish.
///
/// Binding is the caller's job, so that a busy port is an error it can report rather than a
/// panic inside warp. Live WebSockets end when `ctx.feed`'s sender is dropped or when `shutdown`
/// completes (the feed loop watches it too), so a graceful shutdown does not hang on an open
/// dashboard tab.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
/// use netmix_web::{Control, Feed, WebConfig, WebContext};
///
/// struct Engine;
/// impl Control for Engine {
///     fn set_strategy(&self, name: &str) -> Result<(), String> {
///         Err(format!("unknown strategy {name:?}"))
///     }
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
/// let port = listener.local_addr()?.port();
/// let (feed_tx, feed_rx) = tokio::sync::watch::channel(Arc::new(Feed::default()));
/// let ctx = WebContext {
///     feed: feed_rx,
///     control: Arc::new(Engine),
///     config: WebConfig {
///         token: "0123456789abcdef0123456789abcdef".into(),
///         allowed_hosts: WebConfig::loopback_hosts(port),
///     },
/// };
/// // The engine keeps `feed_tx` and publishes a new `Arc<Feed>` whenever something changes.
/// netmix_web::serve(ctx, listener, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await;
/// # drop(feed_tx);
/// # Ok(())
/// # }
/// ```
pub async fn serve(
    ctx: WebContext,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let addr = listener.local_addr().ok();
    let (stop_tx, stop_rx) = watch::channel(false);
    tracing::info!(addr = ?addr, "Dashboard listening.");
    warp::serve(filters::all(ctx, Some(stop_rx)))
        .incoming(listener)
        .graceful(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .run()
        .await;
    tracing::info!(addr = ?addr, "Dashboard stopped.");
}
