//! The Discovery actor: rescans the machine's interfaces on an interval (hot-plug), starts an
//! [`InterfaceActor`] for each new eligible interface, tells known ones about link and address
//! changes, and retires the ones that vanished (their open connections drain).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::scan::{ScannedInterface, scan};
use super::{InterfaceActor, InterfaceParams, LinkUpdated, Membership, Retire};
use crate::config::InterfaceFilter;
use crate::events::Events;

/// Rescan now (a relay saw an interface vanish or go down).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Rescan;

struct Known {
    last: ScannedInterface,
    actor: Addr<InterfaceActor>,
}

/// Keeps the set of [`InterfaceActor`]s in step with the machine.
pub struct Discovery {
    filter: InterfaceFilter,
    params: InterfaceParams,
    interval: Duration,
    manager: Membership,
    events: Events,
    known: HashMap<String, Known>,
    next_id: u32,
    scan_failed: bool,
    last_scan: Option<Instant>,
    rescan_pending: bool,
}

/// Rescans asked for by relays closer together than this are folded into one.
const MIN_RESCAN_GAP: Duration = Duration::from_millis(200);

impl Discovery {
    /// A discovery actor (not started) that rescans every `interval`.
    pub fn new(
        filter: InterfaceFilter,
        params: InterfaceParams,
        interval: Duration,
        manager: Membership,
        events: Events,
    ) -> Self {
        Self {
            filter,
            params,
            interval,
            manager,
            events,
            known: HashMap::new(),
            next_id: 1,
            scan_failed: false,
            last_scan: None,
            rescan_pending: false,
        }
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let scanned = match scan(&self.filter) {
            Ok(list) => {
                if self.scan_failed {
                    tracing::warn!("Interface scan works again.");
                    self.scan_failed = false;
                }
                list
            }
            Err(error) => {
                if !self.scan_failed {
                    tracing::error!(%error, "Cannot list network interfaces; keeping the last known set.");
                    self.scan_failed = true;
                }
                return;
            }
        };
        let mut seen = Vec::with_capacity(scanned.len());
        for iface in scanned {
            if iface.eligible.is_err() {
                continue;
            }
            seen.push(iface.name.clone());
            match self.known.get_mut(&iface.name) {
                Some(known) if known.last == iface => {}
                Some(known) => {
                    known.actor.do_send(LinkUpdated(iface.clone()));
                    known.last = iface;
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let settings = self.filter.settings(&iface.name);
                    let weight = settings.map_or(1, |s| s.weight);
                    let metered = settings.is_some_and(|s| s.metered);
                    let actor = InterfaceActor::spawn(
                        id,
                        &iface,
                        (weight, metered),
                        self.params,
                        self.manager.clone(),
                        self.events.clone(),
                    );
                    self.known
                        .insert(iface.name.clone(), Known { last: iface, actor });
                }
            }
        }
        self.known.retain(|name, known| {
            let keep = seen.contains(name);
            if !keep {
                known.actor.do_send(Retire);
            }
            keep
        });
    }
}

impl Actor for Discovery {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.rescan();
        if self.known.is_empty() {
            tracing::warn!("No usable network interface yet; waiting for one to appear.");
        }
        ctx.run_interval(self.interval, |act, _| act.rescan());
    }
}

/// Asks how many interfaces discovery has started actors for.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct KnownCount;

impl Handler<KnownCount> for Discovery {
    type Result = usize;

    fn handle(&mut self, _: KnownCount, _ctx: &mut Self::Context) -> usize {
        self.known.len()
    }
}

impl Handler<Rescan> for Discovery {
    type Result = ();

    fn handle(&mut self, _: Rescan, ctx: &mut Self::Context) {
        let since = self.last_scan.map_or(MIN_RESCAN_GAP, |t| t.elapsed());
        if since >= MIN_RESCAN_GAP {
            self.rescan();
        } else if !self.rescan_pending {
            // Fold a burst of requests into one rescan at the end of the gap.
            self.rescan_pending = true;
            ctx.run_later(MIN_RESCAN_GAP - since, |act, _| {
                act.rescan_pending = false;
                act.rescan();
            });
        }
    }
}
