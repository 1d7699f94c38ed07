//! Health: the [`HealthProber`] actor that measures every interface through itself, and the
//! pure pieces each interface uses to judge its health ([`state`]) and keep numbers ([`stats`]).
//!
//! Probes are TCP connects to the configured `health.probe_targets` from a socket bound to the
//! interface (a host name resolved through that interface, see [`crate::dns`]): the connect time is the latency sample, and a failure counts against the link.
//! With no targets (the default) nothing is sent; passive health — the outcome of every relayed
//! connection — still feeds the same state machine. The OS's link state arrives through
//! discovery.

pub mod state;
pub mod stats;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::config::{HealthConfig, split_host_port};
use crate::dns::Dns;
use crate::iface::bind::connect_via;
use crate::iface::{Outcome, Source};
use crate::router::{Member, Router};

/// Runs one probe round now (tests and the CLI; the timer does the same).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ProbeNow;

/// Probes every present interface through itself on an interval.
pub struct HealthProber {
    targets: Vec<String>,
    interval: Duration,
    timeout: Duration,
    router: Arc<Router>,
    dns: Arc<Dns>,
}

impl HealthProber {
    /// A prober (not started) for `[health]`. Does nothing when there are no targets.
    pub fn new(config: &HealthConfig, router: Arc<Router>, dns: Arc<Dns>) -> Self {
        Self {
            targets: config.probe_targets.clone(),
            interval: Duration::from_millis(config.probe_interval_ms),
            timeout: Duration::from_millis(config.probe_timeout_ms),
            router,
            dns,
        }
    }

    fn round(&self, ctx: &mut Context<Self>) {
        let targets = self.targets.clone();
        let timeout = self.timeout;
        let snapshot = self.router.snapshot();
        let dns = self.dns.clone();
        let fut = async move {
            for target in &targets {
                let Some((host, port)) = split_host_port(target) else {
                    continue;
                };
                for member in snapshot.all.iter().filter(|m| m.state.is_present()) {
                    let member = member.clone();
                    let (dns, host) = (dns.clone(), host.to_owned());
                    tokio::spawn(async move {
                        // A name resolves through the interface probed (its DNS path is part
                        // of what the probe measures); the answer is cached for the others.
                        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                            Ok(ip) => vec![SocketAddr::new(ip, port)],
                            Err(_) => match dns
                                .resolve(&host, std::slice::from_ref(&member), &[], timeout)
                                .await
                            {
                                Ok(answer) => answer
                                    .addrs
                                    .iter()
                                    .map(|ip| SocketAddr::new(*ip, port))
                                    .collect(),
                                Err(failure) => {
                                    tracing::debug!(iface = %member.state.name, target = %host, "Probe target does not resolve: {failure}.");
                                    // Only when the query went through this interface and
                                    // failed there (not a local stub's failure).
                                    if let crate::dns::Failure::Unanswered(_, ids) = &failure
                                        && ids.contains(&member.state.id)
                                    {
                                        member.handles.failed(Source::Probe, Outcome::Failed);
                                    }
                                    return;
                                }
                            },
                        };
                        if let Some(&dest) =
                            addrs.iter().find(|a| member.state.source_for(a).is_some())
                        {
                            probe(member, dest, timeout).await;
                        }
                    });
                }
            }
        };
        ctx.spawn(fut.into_actor(self));
    }
}

/// One TCP-connect probe through `iface`; the result goes to the interface's actor.
async fn probe(member: Member, dest: SocketAddr, timeout: Duration) {
    let started = Instant::now();
    let outcome = match connect_via(&member.state, dest, timeout).await {
        Ok(_stream) => Outcome::Connected(started.elapsed()),
        Err(e) if !e.is_interface_side() => Outcome::Connected(started.elapsed()),
        Err(e) if e.is_link_failure() => Outcome::LinkFailed,
        Err(_) => Outcome::Failed,
    };
    tracing::trace!(iface = %member.state.name, %dest, ?outcome, "Probe.");
    match outcome {
        Outcome::Connected(rtt) => member.handles.connected(Source::Probe, rtt),
        failed => member.handles.failed(Source::Probe, failed),
    }
}

impl Actor for HealthProber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.targets.is_empty() {
            tracing::info!("No health probe targets configured; health is passive only.");
            return;
        }
        tracing::info!(targets = ?self.targets, interval_ms = self.interval.as_millis() as u64, "Health probing started.");
        self.round(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.round(ctx));
    }
}

impl Handler<ProbeNow> for HealthProber {
    type Result = ();

    fn handle(&mut self, _: ProbeNow, ctx: &mut Self::Context) {
        self.round(ctx);
    }
}
