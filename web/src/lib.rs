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
//! - `pac`: the proxy auto-config file for [`WebConfig::proxy`].
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
//! | `GET /api/zerotier` | [`models::ZeroTierDto`] (`"service": "not_installed"` without ZeroTier One) or `null` (ZeroTier agent off) |
//! | `GET /api/connections?limit=N` | newest connections (default 100, max 1000) |
//! | `GET /api/events?limit=N` | newest events (default 100, max 500) |
//! | `GET /api/strategy` | [`models::StrategyDto`] |
//! | `POST /api/strategy` | `{"name": "…"}` with `Authorization: Bearer <token>` |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /proxy.pac` | proxy auto-config for [`WebConfig::proxy`] (no token); 404 when it is `None` |
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
mod pac;
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
pub use pac::render as render_pac;
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
    /// Where the proxy port (SOCKS5, SOCKS4/4a, HTTP) listens, for `GET /proxy.pac`; an
    /// unspecified address (`0.0.0.0`, `::`) is named as loopback there. `None`: no PAC file
    /// (404).
    pub proxy: Option<std::net::SocketAddr>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("token", &"MASKED")
            .field("allowed_hosts", &self.allowed_hosts)
            .field("proxy", &self.proxy)
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
    /// Token, allowed hosts and proxy address.
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
///         proxy: Some("127.0.0.1:1080".parse().unwrap()),
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
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let addr = listener
        .local_addr()
        .map_or_else(|_| "(unknown)".to_owned(), |a| a.to_string());
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = warp::service(filters::all(ctx, Some(stop_rx)));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut turned_away = RateLimited::new(std::time::Duration::from_secs(10));
    tracing::info!(%addr, "Dashboard listening.");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::debug!(%error, "Dashboard accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over the cap: close at once (the proxy's descriptors are not the dashboard's to
        // take), and say so now and then, not per connection.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            if let Some(dropped) = turned_away.hit() {
                tracing::warn!(
                    %peer,
                    dropped,
                    max = MAX_CONNECTIONS,
                    "Dashboard connections at the cap; closing new ones."
                );
            }
            continue;
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(64 * 1024);
        let conn = http
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            )
            .with_upgrades();
        let mut stop = stop_tx.subscribe();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = async { let _ = stop.wait_for(|stopped| *stopped).await; } => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "Dashboard connection ended with an error.");
            }
            drop(slot);
        });
    }
    drop(listener);
    // Live feeds and connections are told to stop; requests in flight get a moment.
    let _ = stop_tx.send(true);
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
    tracing::info!(%addr, "Dashboard stopped.");
}

/// Most dashboard connections served at once (the page, its API polls and its live feed take a
/// few each; the rest is headroom). Connections past it are closed at once. The engine keeps
/// this many descriptors in reserve, so the dashboard can never starve the proxy.
pub const MAX_CONNECTIONS: usize = 64;

/// How long shutdown waits for dashboard requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Most live feeds (`/ws`) at once; more get 503.
pub const MAX_LIVE_FEEDS: usize = 16;

/// A client must send a request's headers within this, or the connection is closed; it also
/// bounds how long an idle keep-alive connection stays open.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Counts events and lets one log line through per period: `hit` returns the number of events
/// since the last line when a line is due.
struct RateLimited {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    count: u64,
}

impl RateLimited {
    fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            last: None,
            count: 0,
        }
    }

    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}
