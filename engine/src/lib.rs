//! netmix: a local SOCKS5 proxy that sends each new connection out through one of the
//! machine's network interfaces, chosen by a routing strategy.
//!
//! # Layout
//!
//! ```text
//! client ─SOCKS5─▶ SocksListener (actor) ─ per client: tokio task (socks::conn) ─▶ destination
//!                        │ Router::pick(meta) → interfaces in order    ▲ socket bound to the
//!                        ▼                                             │ chosen interface
//!                     Router ◀── Snapshot (ArcSwap) ── ConnectionManager (actor) ◀─ ZeroTierAgent
//!                        │ rebuild thread: Strategy::rebuild   ▲ InterfaceJoined / Changed
//!            Discovery (actor) ──starts/updates/retires──▶ InterfaceActor ×N ◀── Observed (batched)
//! ```
//!
//! One snapshot, built once per change by the ConnectionManager: every interface's state (plain
//! data) and its handles (live counters, event queue) side by side, plus the strategies' ABI
//! view. The router, the prober, the dashboard feed and the CLI all read it.
//!
//! - [`config`]: the TOML file, defaults and validation.
//! - [`iface`]: interface discovery (hot-plug), one actor per interface, outbound binding.
//! - [`manager`]: the single holder of the interface set; builds the snapshot.
//! - [`router`]: the snapshot, strategies and the per-connection choice (never an actor
//!   round-trip).
//! - [`socks`]: the proxy listener actor, the handshakes (SOCKS5, SOCKS4, HTTP), the shared
//!   connection path, the relay tasks, and SOCKS5 BIND and UDP ASSOCIATE.
//! - [`zerotier`]: the ZeroTier agent (local ZeroTier One API → networks, routes, peers for
//!   the router's snapshot and the dashboard).
//!
//! # Runtimes
//!
//! One tokio multi-thread runtime drives everything: [`run_blocking`] builds it and hands it to
//! actix (`System::with_tokio_rt`). Actors live on the actix thread's `LocalSet`; everything
//! they `tokio::spawn` — every client connection and relay — runs on the runtime's worker
//! threads, so the data path never waits for the actor thread.

// No unsafe code, except the one Windows socket option socket2 does not wrap
// (`IP_UNICAST_IF`, iface/bind.rs), allowed there alone with its SAFETY note.
#![deny(unsafe_code)]

pub mod batch;
pub mod check;
pub mod config;
pub mod connlog;
pub mod dns;
pub mod events;
pub mod feed;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod iface;
pub mod manager;
pub mod mptcp;
pub mod router;
pub mod service;
pub mod shutdown;
pub mod socks;
pub mod telemetry;
pub mod units;
pub mod zerotier;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::Batched;
use crate::config::{Config, InterfaceFilter};
use crate::events::{EventKind, Events};
use crate::feed::{ConnEvent, DashboardFeed, RouterControl};
use crate::health::HealthProber;
use crate::iface::{Discovery, InterfaceParams};
use crate::manager::ConnectionManager;
use crate::router::Router;
use crate::socks::{ServeContext, SocksListener};

/// Runs the engine until `shutdown` completes, then waits up to the configured grace period
/// for open connections. Must be called inside an actix `System` (see [`run_blocking`]).
///
/// # Errors
/// When the SOCKS listener cannot bind.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listen = config.socks.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (socks.listen)"))?;
    let local = listener.local_addr().context("listener address")?;
    socks::listener::nodelay_for_accepted(&listener);
    // Both ports are bound before anything else starts, so that once the SOCKS port answers the
    // dashboard does too (clients and tests may ask it right away; connections wait in the
    // backlog until it serves).
    let dashboard_listener = if config.dashboard.enabled {
        let at = config.dashboard.listen;
        Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (dashboard.listen)"))?,
        )
    } else {
        None
    };

    let events = Events::new();
    // Subscribed before anything can happen, so the dashboard sees start-up events too.
    let early_events = events.subscribe();
    let router = Arc::new(load_strategies(&config, &events).router);
    let manager = ConnectionManager::new(router.clone()).start();
    let discovery = Discovery::new(
        InterfaceFilter::new(&config),
        InterfaceParams::from_config(&config),
        Duration::from_millis(config.discovery.rescan_interval_ms),
        ConnectionManager::membership(&manager),
        events.clone(),
    )
    .start();

    // Serve clients only once the interfaces of the first scan are in the snapshot (bounded:
    // a machine with none still serves, answering "network unreachable").
    let found = discovery.send(iface::KnownCount).await.unwrap_or(0);
    let joined = tokio::time::Instant::now();
    while router.snapshot().all.len() < found && joined.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let dns = Arc::new(dns::Dns::new(&config));
    let prober = HealthProber::new(&config.health, router.clone(), dns.clone()).start();

    let zerotier_state = zerotier::ZtHandle::default();
    let zerotier_agent = config.zerotier.enabled.then(|| {
        zerotier::ZeroTierAgent::new(
            config.zerotier.clone(),
            manager.clone().recipient(),
            zerotier_state.clone(),
        )
        .start()
    });

    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let feed = if let Some(dashboard_listener) = dashboard_listener {
        Some(
            start_dashboard(
                &config,
                (dashboard_listener, local),
                manager.clone(),
                router.clone(),
                early_events,
                config.zerotier.enabled.then(|| zerotier_state.clone()),
                (&token, &tracker),
            )
            .await?,
        )
    } else {
        None
    };
    let conn_log = match &config.connection_log {
        Some(path) => Some(connlog::ConnLog::open(path).await.with_context(|| {
            format!(
                "cannot open the connection log {} (connection_log)",
                path.display()
            )
        })?),
        None => None,
    };
    let serve_router = router.clone();
    let serve = Arc::new(ServeContext::new(
        &config,
        router,
        dns,
        discovery.clone().recipient(),
        events.clone(),
        feed.as_ref().map(|(_, inbox)| inbox.clone()),
        conn_log,
    ));
    let listener_actor = SocksListener::new(
        listener,
        serve,
        socks::listener::effective_max_connections(config.socks.max_connections),
        tracker.clone(),
        token.clone(),
    )
    .start();
    match serve_router.fallback_reason() {
        None => {
            tracing::info!(listen = %local, strategy = %serve_router.active_name(), "netmix is ready.")
        }
        Some(why) => tracing::warn!(
            listen = %local,
            strategy = %serve_router.active_name(),
            "netmix is ready, but not with the configured strategy: {why}."
        ),
    }

    shutdown.await;
    token.cancel();
    tracker.close();
    let grace = Duration::from_secs(config.shutdown_grace_period_secs);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            open = tracker.len(),
            grace_secs = grace.as_secs(),
            "Grace period over; closing open connections."
        );
    }
    drop((
        listener_actor,
        discovery,
        manager,
        prober,
        feed,
        zerotier_agent,
    ));
    tracing::info!("Stopped.");
    Ok(())
}

/// Binds the dashboard, loads or creates its token, starts the feed actor and serves the web
/// crate's routes until shutdown. `proxy` is the proxy port's bound address (`socks.listen`,
/// with the real port when the config says 0), which the dashboard's `/proxy.pac` names.
async fn start_dashboard(
    config: &Config,
    (listener, proxy): (tokio::net::TcpListener, std::net::SocketAddr),
    manager: Addr<ConnectionManager>,
    router: Arc<Router>,
    events: tokio::sync::broadcast::Receiver<events::Event>,
    zerotier: Option<zerotier::ZtHandle>,
    (token, tracker): (&CancellationToken, &TaskTracker),
) -> anyhow::Result<(Addr<DashboardFeed>, Batched<ConnEvent>)> {
    let d = &config.dashboard;
    let local = listener.local_addr().context("dashboard address")?;
    let token_path = d
        .token_path()
        .map_err(|e| anyhow::anyhow!("dashboard token: {e}"))?;
    let (secret, created) = netmix_web::load_or_create_token(&token_path).with_context(|| {
        format!(
            "cannot read or create the dashboard token {}",
            token_path.display()
        )
    })?;
    if created {
        // Printed once, on the terminal only, never logged again.
        let private = if cfg!(windows) {
            "readable by you: it has your profile folder's permissions"
        } else {
            "mode 0600"
        };
        eprintln!(
            "netmix: dashboard token (needed to switch strategy from the page): {secret}\n\
             netmix: stored in {} ({private})",
            token_path.display()
        );
    }
    let mut allowed_hosts = netmix_web::WebConfig::loopback_hosts(local.port());
    allowed_hosts.push(local.to_string());
    allowed_hosts.extend(d.allowed_hosts.iter().cloned());
    if !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "The dashboard listens beyond loopback; anyone who can reach it sees your connections.");
    }
    let (feed, rx) = DashboardFeed::new(manager, router.clone(), events);
    let feed = feed.with_zerotier(zerotier).start_with_inbox();
    let ctx = netmix_web::WebContext {
        feed: rx,
        control: Arc::new(RouterControl(router)),
        config: netmix_web::WebConfig {
            token: secret,
            allowed_hosts,
            proxy: Some(proxy),
        },
    };
    let stop = token.clone();
    tracker.spawn(netmix_web::serve(ctx, listener, async move {
        stop.cancelled().await
    }));
    tracing::info!(url = %format!("http://{local}/"), "Dashboard ready.");
    Ok(feed)
}

/// The strategies a config gets: the router with every loaded plugin and the configured
/// strategy selected (or the built-in standing in, with the reason), and what the plugin scan
/// refused or replaced. `netmix run`, `check-config` and `netmix plugins` all start from this,
/// so they say the same.
pub struct Strategies {
    /// The router, the configured strategy selected or the built-in standing in.
    pub router: Router,
    /// The plugin folders searched.
    pub dirs: Vec<std::path::PathBuf>,
    /// Plugin files refused, one line each.
    pub refused: Vec<netmix_plugin_api::host::PluginLoadError>,
    /// Shipped plugins replaced by the user's: (shipped file, user's file).
    pub replaced: Vec<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Loads the plugin folders and selects the configured strategy (see [`Strategies`]); logs
/// every refused file in one line and the fallback, loudly, when the strategy cannot start.
pub fn load_strategies(config: &Config, events: &Events) -> Strategies {
    let scan = router::plugins::scan(config);
    for refused in &scan.refused {
        tracing::warn!("Plugin refused: {refused}");
        events.emit(
            EventKind::PluginError,
            None,
            format!("plugin refused: {refused}"),
        );
    }
    for plugin in &scan.loaded {
        tracing::info!(strategy = %plugin.name, file = %plugin.path.display(), "Plugin loaded.");
    }
    for (shipped, by) in &scan.replaced {
        tracing::info!(shipped = %shipped.display(), by = %by.display(), "Shipped plugin replaced by your own of the same name.");
    }
    let plugins = scan
        .loaded
        .into_iter()
        .map(|p| {
            let options = config.strategy_options(&p.name);
            (p, options)
        })
        .collect();
    let router = Router::with_plugins(events.clone(), plugins)
        .with_stickiness(Duration::from_secs(config.sticky_ttl_secs));
    router.select_or_fallback(&config.strategy);
    Strategies {
        router,
        dirs: scan.dirs,
        refused: scan.refused,
        replaced: scan.replaced,
    }
}

/// Builds the runtime and the actix System, then runs [`run`] on it.
///
/// # Errors
/// Runtime construction or [`run`] errors.
pub fn run_blocking<F, Fut>(config: Config, shutdown: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("netmix-worker")
        .build()
        .context("cannot start the async runtime")?;
    let system = actix::System::with_tokio_rt(move || runtime);
    system.block_on(async move { run(config, shutdown()).await })
}
