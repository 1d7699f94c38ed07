//! The ZeroTier agent: asks the local ZeroTier One service which networks this machine has
//! joined, their status, addresses and managed routes, and how its peers are reached, so the
//! router can send ZeroTier destinations through the right `zt…` interface.
//!
//! # Where its facts go ("no stat in two places")
//!
//! The agent is the one owner of everything ZeroTier. After each poll it publishes:
//!
//! - to the [`ConnectionManager`](crate::manager::ConnectionManager), as [`ZeroTierChanged`]: per interface name (`portDeviceName`), a
//!   ready-made plugin-ABI [`ZeroTierInfo`](netmix_plugin_api::ZeroTierInfo) holding only the
//!   routes that pass README §A4's checks (none while the network is not OK) plus the node's
//!   health (online, TCP fallback, direct/relayed peers). The router merges it into each
//!   snapshot as the interface's `zerotier` field, so strategies see it next to the
//!   interface's own numbers, which stay with its InterfaceActor. Only when the facts change
//!   does the router rebuild its snapshot.
//! - to the dashboard feed, via a shared [`ZtHandle`] (an `ArcSwap` of the latest
//!   [`ZtState`]): the whole picture — service state, networks with every route and why it is
//!   (not) used, peers with latency and path.
//!
//! Sending the facts to the InterfaceActors instead would tie them to interfaces that exist:
//! a network whose device is not (yet) up still belongs on the dashboard.
//!
//! # Polling and failures
//!
//! Every `poll_interval_ms` it re-reads the port file and the token (cheap; a restarted service
//! writes a new port and may have a new token), then GETs `/status`, `/network` and `/peer`
//! concurrently. On any failure — no token, nothing listening, 401, bad JSON — it logs once per
//! kind of failure (not once per poll), withdraws every ZeroTier route from the router (stale
//! routes are worse than none), and retries with exponential back-off (0.5 s doubling up to
//! 30 s). The token is an [`token::AuthToken`]: it is never printed.
//!
//! ZeroTier One simply not being installed — no token file in any place [`token::token_files`]
//! names *and* nothing accepting connections on the port — is no failure: the state is
//! [`ServiceState::NotInstalled`] (`"service": "not_installed"` on `/api/zerotier`, no
//! `error`), the log gets one short INFO line and the later polls stay at DEBUG. A token
//! without a service, a service without a readable token, a refused token or an answer that is
//! not the API's are real problems and are warned about.

pub mod api;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use abi_stable::std_types::{RNone, RSome, RString, RVec};
use actix::prelude::*;
use arc_swap::ArcSwap;
use netmix_plugin_api as abi;
use netmix_web::models::{ZeroTierDto, ZtNetworkDto, ZtPeerDto, ZtRouteDto};

use crate::config::ZeroTierConfig;
use crate::manager::ZeroTierChanged;
use crate::router::ZeroTierFacts;
use api::{ApiError, Network, Peer, RouteContext, RouteVerdict, Status};
use token::{AuthToken, Env, Os};

/// First retry delay after a failure.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How the service looked at the last poll.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServiceState {
    /// Not polled yet.
    #[default]
    Starting,
    /// Answered.
    Ok,
    /// ZeroTier One is not installed: no token file in any known place and nothing listening
    /// on its port. Not an error.
    NotInstalled,
    /// No readable token (the message names every path tried).
    NoToken(String),
    /// Nothing answers on the port.
    Unreachable(String),
    /// 401: wrong token.
    Unauthorized,
    /// Answered something the API does not document.
    BadAnswer(String),
}

impl ServiceState {
    fn key(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ok => "ok",
            Self::NotInstalled => netmix_web::models::ZT_NOT_INSTALLED,
            Self::NoToken(_) => "no_token",
            Self::Unreachable(_) => "unreachable",
            Self::Unauthorized => "unauthorized",
            Self::BadAnswer(_) => "bad_answer",
        }
    }

    fn message(&self) -> Option<String> {
        match self {
            Self::Starting | Self::Ok | Self::NotInstalled => None,
            Self::NoToken(m) | Self::Unreachable(m) | Self::BadAnswer(m) => Some(m.clone()),
            Self::Unauthorized => Some("the service refused the token (401)".to_owned()),
        }
    }
}

/// One joined network with the verdict on each of its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkState {
    /// As the service reported it.
    pub network: Network,
    /// Every parsable route and whether netmix uses it.
    pub routes: Vec<RouteVerdict>,
}

/// Everything the agent knows (what the dashboard shows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZtState {
    /// The service's state at the last poll.
    pub service: ServiceState,
    /// The port in use.
    pub port: Option<u16>,
    /// `/status` (default while the service is not answering).
    pub status: Status,
    /// Joined networks.
    pub networks: Vec<NetworkState>,
    /// Known peers (with an address).
    pub peers: Vec<Peer>,
}

/// The agent's latest [`ZtState`], shared with the dashboard feed.
pub type ZtHandle = Arc<ArcSwap<ZtState>>;

impl ZtState {
    /// Builds the state from one successful poll.
    pub fn from_poll(poll: api::Poll, port: u16, allow_default_route: bool) -> Self {
        let ctx = RouteContext {
            online: poll.status.online,
            allow_default_route,
        };
        let networks = poll
            .networks
            .into_iter()
            .map(|network| NetworkState {
                routes: api::route_verdicts(&network, ctx),
                network,
            })
            .collect();
        Self {
            service: ServiceState::Ok,
            port: Some(port),
            status: poll.status,
            networks,
            peers: poll.peers,
        }
    }

    /// The per-interface facts for the router (see the module docs).
    pub fn interface_facts(&self) -> ZeroTierFacts {
        let leaves = self.peers.iter().filter(|p| p.role == "LEAF");
        let direct = leaves.clone().filter(|p| p.is_direct()).count();
        let relayed = leaves.count() - direct;
        let mut out = HashMap::new();
        for n in &self.networks {
            let net = &n.network;
            if net.port_device_name.is_empty() {
                continue;
            }
            let ok = net.status == "OK";
            let routes: RVec<abi::ZtRoute> = n
                .routes
                .iter()
                .filter(|r| ok && r.refused.is_none())
                .map(|r| abi::ZtRoute {
                    target: abi::IpNetC::new(r.target.addr(), r.target.prefix_len()),
                    via: r.via.map_or(RNone, |v| RSome(v.into())),
                })
                .collect();
            let assigned: RVec<abi::IpNetC> = if ok && net.allow_managed {
                api::own_addresses(net)
                    .into_iter()
                    .map(|a| abi::IpNetC::new(a.trunc().addr(), a.prefix_len()))
                    .collect()
            } else {
                RVec::new()
            };
            let allow_default = routes.iter().any(|r| r.target.prefix_len == 0);
            let mut ext = abi::ExtFields::new();
            ext.set("mtu", net.mtu.to_string());
            ext.set("network_type", net.kind.clone());
            ext.set("zerotier_version", self.status.version.clone());
            out.insert(
                net.port_device_name.clone(),
                abi::ZeroTierInfo {
                    network_id: RString::from(net.network_id()),
                    name: RString::from(net.name.as_str()),
                    status: RString::from(net.status.as_str()),
                    routes,
                    assigned,
                    allow_default,
                    peers_direct: u32::try_from(direct).unwrap_or(u32::MAX),
                    peers_relayed: u32::try_from(relayed).unwrap_or(u32::MAX),
                    online: self.status.online,
                    tcp_fallback: self.status.tcp_fallback_active,
                    ext,
                },
            );
        }
        out
    }

    /// The dashboard's view.
    pub fn dto(&self) -> ZeroTierDto {
        ZeroTierDto {
            service: self.service.key().to_owned(),
            error: self.service.message(),
            port: self.port,
            address: self.status.address.clone(),
            version: self.status.version.clone(),
            online: self.status.online,
            tcp_fallback: self.status.tcp_fallback_active,
            networks: self
                .networks
                .iter()
                .map(|n| ZtNetworkDto {
                    id: n.network.network_id().to_owned(),
                    name: n.network.name.clone(),
                    status: n.network.status.clone(),
                    device: n.network.port_device_name.clone(),
                    assigned: n.network.assigned_addresses.clone(),
                    routes: n
                        .routes
                        .iter()
                        .map(|r| ZtRouteDto {
                            target: r.target.to_string(),
                            via: r.via.map(|v| v.to_string()),
                            usable: r.refused.is_none(),
                            note: r.refused.map(str::to_owned),
                        })
                        .collect(),
                })
                .collect(),
            peers: self
                .peers
                .iter()
                .map(|p| ZtPeerDto {
                    address: p.address.clone().unwrap_or_default(),
                    role: p.role.clone(),
                    latency_ms: p.latency_ms(),
                    path: if p.is_direct() { "direct" } else { "relayed" }.to_owned(),
                    version: p.version.clone(),
                })
                .collect(),
        }
    }
}

/// Why there is no API client to poll with.
enum NoClient {
    /// A failure to report as it is.
    Failed(ServiceState),
    /// No token file in any known place (`state` says so): ZeroTier One is not installed
    /// unless something listens on `port`.
    NoTokenFile { port: u16, state: ServiceState },
}

/// Whether anything accepts a TCP connection on `127.0.0.1:port` (nothing is sent).
async fn listening(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The one INFO line when ZeroTier One is not installed.
pub fn not_installed_line(port: u16) -> String {
    format!(
        "ZeroTier not installed (no token file, port {port} closed); the zerotier strategy sees \
         no networks."
    )
}

/// The retry delay after `failures` consecutive failures (≥ 1).
pub fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

/// The actor; see the module docs.
pub struct ZeroTierAgent {
    config: ZeroTierConfig,
    env: Env,
    router: Recipient<ZeroTierChanged>,
    shared: ZtHandle,
    /// The client in use and what it was built from (rebuilt when the port or token changes).
    client: Option<(u16, AuthToken, api::Client)>,
    failures: u32,
    /// The kind of the last failure logged (`None` while healthy), so each is logged once.
    logged: Option<&'static str>,
    facts: ZeroTierFacts,
}

impl ZeroTierAgent {
    /// An agent (not started) that publishes to `router` and `shared`.
    pub fn new(
        config: ZeroTierConfig,
        router: Recipient<ZeroTierChanged>,
        shared: ZtHandle,
    ) -> Self {
        Self {
            env: Env::from_process(config.home.clone()),
            config,
            router,
            shared,
            client: None,
            failures: 0,
            logged: None,
            facts: ZeroTierFacts::new(),
        }
    }

    /// Re-reads the port file and the token; rebuilds the client when either changed.
    fn refresh_client(&mut self) -> Result<api::Client, NoClient> {
        let os = Os::current();
        let home = token::service_home(os, &self.env);
        let port = token::read_port(&home).port;
        let explicit = self.config.token.as_ref().map(|t| t.expose());
        let (tok, source) = token::find_token(explicit, os, &self.env).map_err(|e| {
            let state = ServiceState::NoToken(e.to_string());
            if e.nothing_found() {
                NoClient::NoTokenFile { port, state }
            } else {
                NoClient::Failed(state)
            }
        })?;
        if let Some((p, t, c)) = &self.client
            && *p == port
            && *t == tok
        {
            return Ok(c.clone());
        }
        let client = api::Client::new(port, &tok)
            .map_err(|e| NoClient::Failed(ServiceState::BadAnswer(e)))?;
        tracing::debug!(port, token_from = %source, "ZeroTier API client (re)built.");
        self.client = Some((port, tok, client.clone()));
        Ok(client)
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let client = match self.refresh_client() {
            Ok(c) => c,
            Err(NoClient::Failed(state)) => return self.failed(state, ctx),
            Err(NoClient::NoTokenFile { port, state }) => {
                // No token file anywhere: installed only if something listens on the port.
                ctx.spawn(listening(port).into_actor(self).map(move |open, act, ctx| {
                    act.failed(
                        if open {
                            state
                        } else {
                            ServiceState::NotInstalled
                        },
                        ctx,
                    );
                }));
                return;
            }
        };
        let port = self.client.as_ref().map_or(token::DEFAULT_PORT, |c| c.0);
        ctx.spawn(async move { client.poll().await }.into_actor(self).map(
            move |result, act, ctx| match result {
                Ok(poll) => act.succeeded(poll, port, ctx),
                Err(e) => act.failed(
                    match e {
                        ApiError::Unreachable(m) => {
                            ServiceState::Unreachable(format!("127.0.0.1:{port}: {m}"))
                        }
                        ApiError::Unauthorized => ServiceState::Unauthorized,
                        other => ServiceState::BadAnswer(other.to_string()),
                    },
                    ctx,
                ),
            },
        ));
    }

    fn succeeded(&mut self, poll: api::Poll, port: u16, ctx: &mut Context<Self>) {
        if poll.skipped > 0 {
            tracing::debug!(
                skipped = poll.skipped,
                "ZeroTier API list elements did not parse; skipped."
            );
        }
        let state = ZtState::from_poll(poll, port, self.config.allow_default_route);
        if self.logged.is_some()
            || self.failures > 0
            || self.shared.load().service != ServiceState::Ok
        {
            tracing::info!(
                port,
                version = %state.status.version,
                online = state.status.online,
                networks = state.networks.len(),
                "ZeroTier service answering."
            );
        }
        self.log_changes(&state);
        self.failures = 0;
        self.logged = None;
        self.publish(state);
        ctx.run_later(
            Duration::from_millis(self.config.poll_interval_ms),
            Self::poll,
        );
    }

    fn failed(&mut self, state: ServiceState, ctx: &mut Context<Self>) {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff(self.failures);
        let key = state.key();
        let msg = state.message().unwrap_or_default();
        if self.logged != Some(key) {
            self.logged = Some(key);
            match &state {
                // Simply absent: one short line, no warning (the details are at debug).
                ServiceState::NotInstalled => {
                    tracing::info!("{}", not_installed_line(self.port_in_use()));
                    tracing::debug!(
                        home = %token::service_home(Os::current(), &self.env).display(),
                        "No ZeroTier auth token file in any known place and nothing listening; \
                         looking again with back-off."
                    );
                }
                ServiceState::NoToken(_) => tracing::warn!(
                    "ZeroTier agent: {msg}. netmix works without ZeroTier; retrying with back-off."
                ),
                _ => tracing::warn!(
                    problem = key,
                    error = %msg,
                    "ZeroTier service not usable; netmix works without it and retries with back-off."
                ),
            }
        } else {
            // The details were logged when this kind of failure began.
            tracing::debug!(
                problem = key,
                retry_ms = delay.as_millis() as u64,
                "ZeroTier poll failed again."
            );
        }
        if state == ServiceState::Unauthorized {
            // The service may have restarted with a new token: re-read it next time.
            self.client = None;
        }
        let port = self.client.as_ref().map(|c| c.0);
        self.publish(ZtState {
            service: state,
            port,
            ..ZtState::default()
        });
        ctx.run_later(delay, Self::poll);
    }

    /// The port the service would answer on (from its port file, else the default).
    fn port_in_use(&self) -> u16 {
        token::read_port(&token::service_home(Os::current(), &self.env)).port
    }

    fn log_changes(&self, state: &ZtState) {
        let before = self.shared.load();
        for n in &state.networks {
            let id = n.network.network_id();
            let old = before
                .networks
                .iter()
                .find(|o| o.network.network_id() == id)
                .map(|o| o.network.status.as_str());
            if old != Some(n.network.status.as_str()) {
                tracing::info!(
                    network = id,
                    device = %n.network.port_device_name,
                    status = %n.network.status,
                    usable_routes = n.routes.iter().filter(|r| r.refused.is_none() && n.network.status == "OK").count(),
                    "ZeroTier network status."
                );
            }
        }
        for p in &state.peers {
            let old = before.peers.iter().find(|o| o.address == p.address);
            if let Some(old) = old
                && old.is_direct() != p.is_direct()
            {
                tracing::info!(
                    peer = p.address.as_deref().unwrap_or(""),
                    path = if p.is_direct() { "direct" } else { "relayed" },
                    "ZeroTier peer path changed."
                );
            }
        }
    }

    fn publish(&mut self, state: ZtState) {
        let facts = state.interface_facts();
        if facts != self.facts {
            self.router.do_send(ZeroTierChanged(facts.clone()));
            self.facts = facts;
        }
        if **self.shared.load() != state {
            self.shared.store(Arc::new(state));
        }
    }
}

impl Actor for ZeroTierAgent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.poll(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_poll() -> api::Poll {
        let (networks, _) =
            api::parse_list::<Network>(include_bytes!("testdata/network_list.json")).unwrap();
        let (peers, _) =
            api::parse_list::<Peer>(include_bytes!("testdata/peer_list.json")).unwrap();
        api::Poll {
            status: serde_json::from_slice(include_bytes!("testdata/status.json")).unwrap(),
            networks,
            peers,
            skipped: 0,
        }
    }

    #[test]
    fn facts_per_device_with_only_checked_routes() {
        let state = ZtState::from_poll(sample_poll(), 9993, false);
        let facts = state.interface_facts();
        assert_eq!(facts.len(), 3);
        let a = &facts["ztnnhrtimp"];
        assert_eq!(a.network_id.as_str(), "565799d8f620c5c5");
        assert_eq!(
            a.routes
                .iter()
                .map(|r| r.target.to_string())
                .collect::<Vec<_>>(),
            ["10.147.20.0/24", "192.168.50.0/24"]
        );
        assert_eq!(a.assigned[0].to_string(), "10.147.20.0/24");
        assert!(a.online && !a.tcp_fallback && !a.allow_default);
        // Two LEAF peers: one direct, one relayed (no paths); the PLANET is not counted.
        assert_eq!((a.peers_direct, a.peers_relayed), (1, 1));
        // Exit node: no default route unless netmix's config allows it.
        assert_eq!(facts["ztabcdef01"].routes.len(), 1);
        let allowed = ZtState::from_poll(sample_poll(), 9993, true).interface_facts();
        assert!(allowed["ztabcdef01"].allow_default);
        assert_eq!(allowed["ztabcdef01"].routes.len(), 2);
        // Still joining: no routes, no addresses.
        let joining = &facts["ztqwertyui"];
        assert_eq!(joining.status.as_str(), "REQUESTING_CONFIGURATION");
        assert!(joining.routes.is_empty() && joining.assigned.is_empty());
    }

    #[test]
    fn a_network_that_leaves_ok_has_no_routes() {
        let mut poll = sample_poll();
        poll.networks[0].status = "ACCESS_DENIED".into();
        let facts = ZtState::from_poll(poll, 9993, true).interface_facts();
        let a = &facts["ztnnhrtimp"];
        assert_eq!(a.status.as_str(), "ACCESS_DENIED");
        assert!(a.routes.is_empty() && a.assigned.is_empty());
    }

    #[test]
    fn dto_shows_latency_path_and_route_notes() {
        let dto = ZtState::from_poll(sample_poll(), 4242, false).dto();
        assert_eq!((dto.service.as_str(), dto.port), ("ok", Some(4242)));
        assert_eq!(dto.networks.len(), 3);
        let exit = &dto.networks[1];
        assert!(!exit.routes[1].usable);
        assert!(
            exit.routes[1]
                .note
                .as_deref()
                .unwrap()
                .contains("allow_default_route")
        );
        let unknown = dto
            .peers
            .iter()
            .find(|p| p.address == "a1b2c3d4e5")
            .unwrap();
        assert_eq!(
            (unknown.latency_ms, unknown.path.as_str()),
            (None, "relayed")
        );
        let leaf = dto
            .peers
            .iter()
            .find(|p| p.address == "992fcf1db7")
            .unwrap();
        assert_eq!((leaf.latency_ms, leaf.path.as_str()), (Some(40), "direct"));
    }

    #[test]
    fn not_installed_is_quiet_and_not_an_error() {
        let dto = ZtState {
            service: ServiceState::NotInstalled,
            ..ZtState::default()
        }
        .dto();
        assert!(dto.not_installed());
        assert_eq!(dto.error, None);
        assert!(dto.networks.is_empty() && dto.peers.is_empty());
        // The whole log line (timestamp, level and target included) stays under 160 columns.
        let line = format!(
            "2025-11-24T01:49:07.123456Z  INFO netmix::zerotier: {}",
            not_installed_line(65535)
        );
        assert!(line.len() < 160, "{} columns: {line}", line.len());
        assert!(!line.contains("root"), "{line}");
        // A real problem keeps its message.
        let refused = ZtState {
            service: ServiceState::Unauthorized,
            ..ZtState::default()
        }
        .dto();
        assert_eq!(refused.service, "unauthorized");
        assert!(refused.error.is_some());
    }

    #[tokio::test]
    async fn listening_tells_an_open_port_from_a_closed_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening(port).await);
        drop(listener);
        assert!(!listening(port).await);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(100), BACKOFF_MAX);
    }
}
