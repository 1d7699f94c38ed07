//! The 1.0 layout of the root module and the FFI trait, kept so that this engine still loads
//! plugins built against 1.0 (see [the crate docs](crate#evolution-within-1x)).
//!
//! abi_stable refuses a plugin whose prefix types are *shorter* than the engine's ("too many
//! fields"): a 1.0 plugin's [`crate::Strategy`] vtable lacks [`crate::Strategy::answer`]. So
//! [`crate::host::load_plugin`] tries the current layout first and this one second, and wraps a
//! 1.0 instance in [`Upgraded`], which implements the current trait by calling the 1.0 methods
//! and answers what 1.0 cannot say with the current trait's default bodies (`answer` = `pick`,
//! single-path).
//!
//! The copies keep the names of the originals (`Strategy`, `StrategyMod`): abi_stable matches
//! types by name, defining package and major version, so these are the very layouts a plugin
//! built against 1.0 exports. Everything else they mention (`Snapshot`, `ConnMeta`, `Choice`,
//! `HostMod`) is unchanged since 1.0 and is the current type. These items never change.

// The derive gives `StrategyMod_Ref` an accessor named like the field `new`, taking `self`.
#![allow(clippy::wrong_self_convention)]

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_trait::TD_Opaque,
    sabi_types::VersionStrings,
    std_types::{RBox, ROk, RResult, RStr, RString},
};

use crate::{Choice, ConnMeta, ConnOutcome, HostMod_Ref, Snapshot, StrategyBox, StrategyError};

/// The FFI trait as 1.0 declared it.
#[sabi_trait]
pub trait Strategy: Send + Sync + std::fmt::Debug {
    /// See [`crate::Strategy::name`].
    fn name(&self) -> RString;

    /// See [`crate::Strategy::rebuild`].
    fn rebuild(&self, snapshot: &Snapshot) -> RResult<(), StrategyError>;

    /// See [`crate::Strategy::pick`].
    fn pick(&self, conn: &ConnMeta) -> RResult<Choice, StrategyError>;

    /// See [`crate::Strategy::observe`].
    #[sabi(last_prefix_field)]
    fn observe(&self, outcome: &ConnOutcome) -> RResult<(), StrategyError> {
        let _ = outcome;
        ROk(())
    }
}

/// A 1.0 strategy instance.
pub type StrategyBox1_0 = Strategy_TO<'static, RBox<()>>;

/// The root module as 1.0 declared it.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = StrategyMod_Ref)))]
#[sabi(missing_field(panic))]
pub struct StrategyMod {
    /// See [`crate::StrategyMod::name`].
    pub name: extern "C" fn() -> RStr<'static>,

    /// See [`crate::StrategyMod::description`].
    pub description: extern "C" fn() -> RStr<'static>,

    /// See [`crate::StrategyMod::new`].
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(
        options_toml: RStr<'_>,
        host: HostMod_Ref,
    ) -> RResult<StrategyBox1_0, StrategyError>,
}

impl RootModule for StrategyMod_Ref {
    declare_root_module_statics! {StrategyMod_Ref}

    const BASE_NAME: &'static str = "netmix_strategy";
    const NAME: &'static str = "netmix strategy";
    /// What a plugin built against 1.0 says (the loader only compares the major version).
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
}

/// A 1.0 instance behind the current trait: the 1.0 methods are called through, the methods
/// added since answer with their default bodies.
#[derive(Debug)]
pub struct Upgraded(pub StrategyBox1_0);

impl Upgraded {
    /// Boxes a 1.0 instance as the current trait object.
    pub fn boxed(old: StrategyBox1_0) -> StrategyBox {
        crate::Strategy_TO::from_value(Upgraded(old), TD_Opaque)
    }
}

impl crate::Strategy for Upgraded {
    fn name(&self) -> RString {
        self.0.name()
    }

    fn rebuild(&self, snapshot: &Snapshot) -> RResult<(), StrategyError> {
        self.0.rebuild(snapshot)
    }

    fn pick(&self, conn: &ConnMeta) -> RResult<Choice, StrategyError> {
        self.0.pick(conn)
    }

    fn observe(&self, outcome: &ConnOutcome) -> RResult<(), StrategyError> {
        self.0.observe(outcome)
    }
    // `answer`: the default body (`pick`, single-path), as for any plugin built against 1.0.
}
