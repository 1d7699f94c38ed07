//! Building blocks shared by netmix's strategy plugins.
//!
//! A plugin is a `cdylib` that exports one abi_stable root module (`export_strategy!`), so a
//! plugin cannot link another plugin crate: both root-module symbols would end up in one
//! library. What several plugins need lives here instead, in a plain library that exports
//! nothing of its own:
//!
//! - [`ledger`]: the connections a strategy picked and the engine has not reported closed yet,
//!   counted per interface. The engine's `active_conns` reaches the snapshot a few
//!   milliseconds late; without its own count a strategy sends a burst of simultaneous
//!   connections all to one link.
//! - [`capacity`]: the `capacity` strategy (shares connections in proportion to each link's
//!   measured capacity).
//! - [`latency`]: the `latency` strategy (load-aware lowest latency).
//!
//! The `capacity` and `latency` plugins wrap [`capacity::Capacity`] and [`latency::Latency`].

pub mod capacity;
pub mod latency;
pub mod ledger;

use netmix_plugin_api::{Choice, ConnMeta, InterfaceSnapshot, StrategyError, candidates};

/// A strategy that orders the interfaces it is given for a connection, best first.
pub trait Scorer {
    /// Orders `usable` (already filtered: not Down, not tried, right address family) for
    /// `conn` and counts the connection on the first.
    ///
    /// # Errors
    /// [`StrategyError::NoCandidate`] when `usable` is empty.
    fn pick_among(
        &self,
        usable: &[&InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError>;

    /// Orders the snapshot's usable interfaces for `conn` (see
    /// [`netmix_plugin_api::candidates`]).
    ///
    /// # Errors
    /// [`StrategyError::NoCandidate`] when no interface is usable.
    fn pick(
        &self,
        interfaces: &[InterfaceSnapshot],
        conn: &ConnMeta,
    ) -> Result<Choice, StrategyError> {
        let usable: Vec<&InterfaceSnapshot> = candidates(interfaces, conn).collect();
        self.pick_among(&usable, conn)
    }
}
