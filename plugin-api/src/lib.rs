//! The stable ABI between the netmix engine and its routing-strategy plugins.
//!
//! # Place in the architecture
//!
//! ```text
//!  engine Router ──(snapshot, on every change, off the hot path)──▶ Strategy::rebuild
//!        ├───────(one connection, on the hot path)───────────────▶ Strategy::pick ──▶ Choice
//!        └───────(what happened to the connection)───────────────▶ Strategy::observe
//!                                                                   (inside a .so/.dll)
//! ```
//!
//! The engine loads each strategy plugin (a `cdylib`) with [`host::load_plugin`], instantiates it
//! from the per-strategy config table with [`host::LoadedPlugin::instantiate`], calls [`Strategy::rebuild`]
//! whenever the interfaces change and [`Strategy::pick`] for every outgoing connection. This crate is the only thing the engine and
//! the plugins share. Everything that crosses the boundary is an `abi_stable` type, so a plugin
//! built by another compiler version still loads; anything incompatible is refused at load time
//! with a one-line reason instead of crashing later. How 1.x grows without refusing plugins
//! built against an earlier 1.x is in [Evolution](#evolution-within-1x).
//!
//! # Writing a plugin
//!
//! Implement the plain-Rust [`StrategyImpl`] trait and export it with [`export_strategy!`]. The
//! macro wraps every call (the constructor too) in `catch_unwind`, so a panic in your code becomes
//! [`StrategyError::Panicked`] instead of aborting the engine, and keeps what `plan` prepares
//! where `pick` reads it without a lock. Do not implement the FFI trait [`Strategy`] yourself.
//!
//! ```no_run
//! use netmix_plugin_api::{Choice, ConnMeta, Snapshot, StrategyError, StrategyImpl};
//!
//! struct FirstUsable;
//!
//! impl StrategyImpl for FirstUsable {
//!     // What `plan` prepares when the interfaces change: here, the ids in order.
//!     type Plan = Snapshot;
//!
//!     fn plan(&self, snapshot: &Snapshot) -> Result<Snapshot, StrategyError> {
//!         Ok(snapshot.clone())
//!     }
//!
//!     fn pick(&self, plan: &Snapshot, conn: &ConnMeta) -> Result<Choice, StrategyError> {
//!         let order = netmix_plugin_api::order_by_key(&plan.interfaces, conn, |i| i.id);
//!         netmix_plugin_api::log::debug(format_args!("{} candidates", order.len()));
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
//! - [`log`]: a plugin's log lines, written through the engine's log with the plugin's name.
//! - [`sticky`]: the per-site stickiness table (the engine's `sticky_ttl_secs` and the `sticky`
//!   example plugin share it).
//! - [`host`]: loading plugin files (used by the engine and by `netmix plugins`).
//! - this file: the FFI trait [`Strategy`] and the root module [`StrategyMod`].
//!
//! # Evolution within 1.x
//!
//! The ABI only grows by appending: a field after the last prefix field of a prefix type
//! ([`StrategyMod`], [`HostMod`], with `#[sabi(missing_field(option))]`), a method after the last
//! prefix method of [`Strategy`] (with a default body), a new type, a new value of an open set.
//! What abi_stable 0.11's loader then accepts, pinned by `plugin-api/tests/evolution.rs` with a
//! "1.1" layout and the real 1.0 round-robin plugin:
//!
//! - **A plugin built against a later 1.y loads into an engine of 1.x (y ≥ x).** The loader
//!   lets the plugin's prefix types be longer than the engine's; the plugin reads what the
//!   engine does not offer as absent (`missing_field(option)` accessors return `None`).
//! - **A plugin built against an earlier 1.y is refused by the engine's longer layout**
//!   ("too many fields"). So an engine of 1.x keeps the 1.0 (and every later minor's) copies of
//!   the root module and trait in a `v1_0` module, loads each plugin with its newest layout and
//!   falls back to the older ones, and answers the newer questions itself: an appended field is
//!   `None`, an appended method is its default body (which also holds when the default body runs
//!   against a shorter vtable, as the test shows).
//! - Anything else (an inserted, removed or retyped field) is refused in one line.
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
pub mod log;
pub mod paths;
pub mod sticky;
pub mod types;
pub mod v1_0;

pub use abi_stable;

pub use error::StrategyError;
#[cfg(feature = "options")]
pub use guard::parse_options;
pub use guard::{StrategyImpl, panic_message};
pub use types::{
    Answer, Choice, ClientProtocol, ConnMeta, ConnOutcome, ExtFields, InterfaceKind,
    InterfaceSnapshot, IpAddrC, IpFamily, IpNetC, LinkState, LiveCounters, LogLevel, OutcomeStage,
    Paths, Snapshot, Transport, ZeroTierInfo, ZtRoute, candidates, order_by_key,
};

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROk, RResult, RStr, RString},
};

/// An instance of a strategy, as the engine holds it: an owned FFI-safe trait object.
pub type StrategyBox = Strategy_TO<'static, RBox<()>>;

/// A routing strategy, seen through the FFI boundary.
///
/// Plugin authors implement [`StrategyImpl`] instead and let [`export_strategy!`] build this
/// trait object, so that no panic can cross the boundary and `rebuild` never stalls `pick`. The
/// engine calls the methods of [`StrategyBox`] directly.
///
/// The engine's calls:
///
/// 1. [`rebuild`](Strategy::rebuild) once before the first `pick`, then whenever the snapshot
///    changes (an interface joins, leaves, changes health, a new latency or capacity figure),
///    from one engine thread at a time, off the connection path. The slow work goes here.
/// 2. [`pick`](Strategy::pick) for every new connection, from many threads at once, between
///    and during rebuilds: it reads what `rebuild` prepared plus the live counters.
/// 3. [`observe`](Strategy::observe) as connections connect, fail and close.
///
/// `Debug` is a supertrait so that the engine can print what it holds; the adapter prints the
/// strategy's name.
///
/// # Evolution
///
/// Methods are only ever added at the end of the trait, each with a default body; see
/// [the crate docs](crate#evolution-within-1x) for how an engine then still runs plugins built
/// against an earlier 1.x.
#[sabi_trait]
pub trait Strategy: Send + Sync + std::fmt::Debug {
    /// The strategy's name (the name users write in the config, e.g. `"round-robin"`).
    fn name(&self) -> RString;

    /// Prepares for the interfaces in `snapshot`, replacing what the previous call prepared.
    /// An error keeps the previous preparation (the engine logs it once).
    fn rebuild(&self, snapshot: &Snapshot) -> RResult<(), StrategyError>;

    /// Orders the candidate interfaces for one new connection: best first, fallbacks after.
    ///
    /// Called on the engine's hot path: must be cheap, must not block and must not do I/O.
    /// Candidates are the interfaces of the last snapshot that fit `conn` (see
    /// [`ConnMeta::fits`]: not in `conn.tried`, of the destination's family). The engine
    /// ignores ids that are not candidates, and answers with its built-in choice if this
    /// returns an error or no candidate.
    fn pick(&self, conn: &ConnMeta) -> RResult<Choice, StrategyError>;

    /// Feedback about a connection this strategy routed (connected, failed, or closed), so
    /// that learning strategies can learn. Called off the hot path; the default does nothing.
    ///
    /// The `#[sabi(last_prefix_field)]` attribute marks the last method of the first compatible
    /// version of this interface (1.0.0). Methods added in later minor versions go *below* it
    /// and must have a default body, which is what an engine answers for a plugin built against
    /// an earlier version (see [the crate docs](crate#evolution-within-1x)). The attribute only
    /// moves, to the then-last method, when the major version is bumped.
    #[sabi(last_prefix_field)]
    fn observe(&self, outcome: &ConnOutcome) -> RResult<(), StrategyError> {
        let _ = outcome;
        ROk(())
    }

    /// New in 1.1: [`pick`](Strategy::pick)'s answer plus how the connection uses the links
    /// ([`Paths`]: single-path, or multipath over every link when the engine has multipath
    /// on). Same rules as `pick` (hot path, no I/O); the engine calls this one instead of
    /// `pick`. The default, which is also what the engine answers for a plugin built against
    /// 1.0, is `pick` with [`Paths::Single`].
    fn answer(&self, conn: &ConnMeta) -> RResult<Answer, StrategyError> {
        self.pick(conn).map(Answer::single)
    }
}

/// What the engine offers a plugin: handed to [`StrategyMod::new`] and kept by
/// [`export_strategy!`] for [`log`].
///
/// A prefix type, like the root module: the engine builds it once, and fields added in later
/// minor versions go after the last prefix field with `#[sabi(missing_field(option))]`, so a
/// plugin built against a later version sees a service this engine lacks as `None`.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostMod_Ref)))]
#[sabi(missing_field(panic))]
pub struct HostMod {
    /// Writes one log line through the engine's log, attributed to `plugin` (the strategy's
    /// name). Never blocks for long and never panics.
    #[sabi(last_prefix_field)]
    pub log: extern "C" fn(plugin: RStr<'_>, level: LogLevel, message: RStr<'_>),
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
    /// string when the config has no table for it), given the engine's services. Invalid
    /// options are [`StrategyError::InvalidConfig`].
    ///
    /// The `#[sabi(last_prefix_field)]` attribute means that this is the last field of this
    /// struct in the first compatible version of the library (1.0.0): fields added in later
    /// minor versions go below it and must carry `#[sabi(missing_field(option))]` (or
    /// `missing_field(default)`), overriding the struct-wide `missing_field(panic)`, because a
    /// plugin built against an earlier version does not have them (and is loaded through the
    /// earlier layout: see [the crate docs](crate#evolution-within-1x)). The attribute moves to
    /// the then-last field only when the major version is bumped.
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(
        options_toml: RStr<'_>,
        host: HostMod_Ref,
    ) -> RResult<StrategyBox, StrategyError>,
}

impl RootModule for StrategyMod_Ref {
    declare_root_module_statics! {StrategyMod_Ref}

    const BASE_NAME: &'static str = "netmix_strategy";
    const NAME: &'static str = "netmix strategy";
    /// Checked at load: a plugin of another major version is refused.
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The version of `netmix-plugin-api` this crate is (what a plugin was built against, and what
/// the engine expects). abi_stable checks it at load: same major version, any minor.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
