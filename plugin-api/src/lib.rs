//! The stable ABI between the netmix engine and its routing-strategy plugins.
//!
//! # Place in the architecture
//!
//! ```text
//!  engine Router ──(snapshot of every interface, one connection)──▶ Strategy::pick ──▶ Choice
//!        │                                                              (inside a .so/.dll)
//!        └── ConnectionManager ──(what happened to the connection)──▶ Strategy::observe
//! ```
//!
//! The engine loads each strategy plugin (a `cdylib`) with [`host::load_plugin`], instantiates it
//! from the per-strategy config table with [`host::LoadedPlugin::instantiate`], and calls
//! [`Strategy::pick`] for every outgoing connection. This crate is the only thing the engine and
//! the plugins share. Everything that crosses the boundary is an `abi_stable` type, so a plugin
//! built by another compiler version, or against an older (compatible) `netmix-plugin-api`, still
//! loads; anything incompatible is refused at load time with a one-line reason instead of
//! crashing later.
//!
//! # Writing a plugin
//!
//! Implement the plain-Rust [`StrategyImpl`] trait and export it with [`export_strategy!`]. The
//! macro wraps every call (the constructor too) in `catch_unwind`, so a panic in your code becomes
//! [`StrategyError::Panicked`] instead of aborting the engine. Do not implement the FFI trait
//! [`Strategy`] yourself.
//!
//! ```no_run
//! use netmix_plugin_api::{Choice, ConnMeta, InterfaceSnapshot, StrategyError, StrategyImpl};
//!
//! struct FirstUsable;
//!
//! impl StrategyImpl for FirstUsable {
//!     fn pick(&self, ifs: &[InterfaceSnapshot], conn: &ConnMeta) -> Result<Choice, StrategyError> {
//!         let order = netmix_plugin_api::order_by_key(ifs, conn, |i| i.id);
//!         Ok(Choice::new(order, "first usable"))
//!     }
//! }
//!
//! netmix_plugin_api::export_strategy! {
//!     name: "first-usable",
//!     description: "Always the usable interface with the lowest id.",
//!     new: |_options: &str| Ok::<_, StrategyError>(FirstUsable),
//! }
//! ```
//!
//! The plugin's `Cargo.toml` needs `crate-type = ["cdylib", "rlib"]` and, besides this crate,
//! `abi_stable = { version = "0.11.3", default-features = false }`: abi_stable's
//! `#[export_root_module]` attribute (used by the macro) names `::abi_stable` by absolute path.
//!
//! # Layout
//!
//! - [`types`]: the `#[repr(C)]` data that crosses the boundary (snapshots, connection, choice).
//! - [`error`]: [`StrategyError`], the only error type of the ABI.
//! - [`guard`]: [`StrategyImpl`], the panic-catching adapter and [`export_strategy!`].
//! - [`host`]: loading plugin files (used by the engine and by `netmix plugins`).
//! - this file: the FFI trait [`Strategy`] and the root module [`StrategyMod`].
//!
//! # Unsafe code
//!
//! This crate contains no `unsafe` of its own, but it cannot say `#![forbid(unsafe_code)]`:
//! abi_stable's derive and attribute macros expand to `unsafe` blocks inside this crate.

// abi_stable's derive macros emit `impl` blocks inside function bodies.
#![allow(non_local_definitions)]
// `StrategyMod_Ref` is abi_stable's naming convention for prefix references.
#![allow(non_camel_case_types)]

pub mod error;
pub mod guard;
pub mod host;
pub mod types;

pub use abi_stable;

pub use error::StrategyError;
#[cfg(feature = "options")]
pub use guard::parse_options;
pub use guard::{StrategyImpl, panic_message};
pub use types::{
    Choice, ConnMeta, ConnOutcome, ExtFields, InterfaceKind, InterfaceSnapshot, IpAddrC, IpFamily,
    IpNetC, LinkState, OutcomeStage, ZeroTierInfo, ZtRoute, candidates, order_by_key,
};

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROk, RResult, RSlice, RStr, RString},
};

/// An instance of a strategy, as the engine holds it: an owned FFI-safe trait object.
pub type StrategyBox = Strategy_TO<'static, RBox<()>>;

/// A routing strategy, seen through the FFI boundary.
///
/// Plugin authors implement [`StrategyImpl`] instead and let [`export_strategy!`] build this
/// trait object, so that no panic can cross the boundary. The engine calls the methods of
/// [`StrategyBox`] directly.
///
/// `Debug` is a supertrait so that the engine can print what it holds; the adapter prints the
/// strategy's name.
///
/// # Evolution
///
/// Methods are only ever added at the end of the trait, each with a default body (see below).
/// A plugin built against an older `netmix-plugin-api` has a shorter vtable: calling a newer
/// method on it runs the default body inside the engine, so old plugins keep loading and working.
#[sabi_trait]
pub trait Strategy: Send + Sync + std::fmt::Debug {
    /// The strategy's name (the name users write in the config, e.g. `"round-robin"`).
    fn name(&self) -> RString;

    /// Orders the candidate interfaces for one new connection: best first, fallbacks after.
    ///
    /// Called once per connection on the engine's hot path, from many threads at once: it must
    /// be cheap, must not block and must not do I/O. `interfaces` is the current snapshot of
    /// every known interface, including unusable ones (state `Down`) and ones already tried
    /// for this connection (`conn.tried`); skip those. The engine ignores ids that are not in
    /// the snapshot and falls back to its built-in choice if this returns an error or an empty
    /// order.
    fn pick(
        &self,
        interfaces: RSlice<'_, InterfaceSnapshot>,
        conn: &ConnMeta,
    ) -> RResult<Choice, StrategyError>;

    /// Feedback about a connection this strategy routed (connected, failed, or closed), so
    /// that learning strategies can learn. Called off the hot path; the default does nothing.
    ///
    /// The `#[sabi(last_prefix_field)]` attribute marks the last method of the first compatible
    /// version of this interface (0.1.0 here; for 1.x it would be 1.0.0). Methods added in later
    /// minor versions go *below* it and must have a default body, so that calling them on a
    /// plugin built against an older version runs that body instead of panicking. The attribute
    /// only moves, to the then-last method, when the major version is bumped.
    #[sabi(last_prefix_field)]
    fn observe(&self, outcome: &ConnOutcome) -> RResult<(), StrategyError> {
        let _ = outcome;
        ROk(())
    }
}

/// The root module of a strategy plugin: what [`export_strategy!`] exports and
/// [`host::load_plugin`] loads.
///
/// This is a prefix type: the engine sees a reference ([`StrategyMod_Ref`]) whose accessors
/// check, at run time, whether the plugin's module has a field. Fields after the last prefix
/// field may be added in minor versions.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = StrategyMod_Ref)))]
#[sabi(missing_field(panic))]
pub struct StrategyMod {
    /// The name users put in the config to select this strategy (e.g. `"round-robin"`).
    pub name: extern "C" fn() -> RStr<'static>,

    /// A one-sentence description, shown by `netmix plugins` and on the dashboard.
    pub description: extern "C" fn() -> RStr<'static>,

    /// Builds an instance from the strategy's config table serialized as TOML text (the empty
    /// string when the config has no table for it). Invalid options are
    /// [`StrategyError::InvalidConfig`].
    ///
    /// The `#[sabi(last_prefix_field)]` attribute means that this is the last field of this
    /// struct in the first compatible version of the library (0.1.0, 0.2.0, 1.0.0, ...): fields
    /// added in later minor versions go below it and must carry
    /// `#[sabi(missing_field(option))]` (or `missing_field(default)`), overriding the
    /// struct-wide `missing_field(panic)`, because a plugin built against an older version does
    /// not have them. The attribute moves to the then-last field only when the major version is
    /// bumped.
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(options_toml: RStr<'_>) -> RResult<StrategyBox, StrategyError>,
}

impl RootModule for StrategyMod_Ref {
    declare_root_module_statics! {StrategyMod_Ref}

    const BASE_NAME: &'static str = "netmix_strategy";
    const NAME: &'static str = "netmix strategy";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The version of `netmix-plugin-api` this crate is (what a plugin was built against, and what
/// the engine expects).
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
