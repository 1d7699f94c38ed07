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
