//! The ABI's extension discipline, tested against real plugin files: a 1.0 plugin (the
//! `netmix-fixture-v1-0` fixture, which exports the layout 1.0 shipped), the 1.1 plugins of this
//! workspace, and a "1.2" layout declared below.
//!
//! 1.1 itself is the first real use of the discipline: it appended `Strategy::answer` (the
//! choice plus single-path or multipath). The module `v1_2` below declares the root module, the
//! FFI trait and the host services as a 1.2 release would: the 1.1 items unchanged, then one
//! item appended after each (`StrategyMod::capabilities`, `Strategy::explain` with a default
//! body, `HostMod::resolve`), all optional.
//!
//! What abi_stable (0.11) accepts, which these tests pin down:
//!
//! - **A plugin of a later 1.x loads into an earlier engine.** The loader compares the
//!   engine's layout (the interface) with the plugin's (the implementation); a prefix type of
//!   the implementation may have *more* fields than the interface's, never fewer. The engine
//!   just does not see what was appended; a later plugin reads the services the earlier engine
//!   lacks as absent (`missing_field(option)` accessors return `None`).
//! - **An engine of a later 1.x cannot load an earlier plugin through its own, longer
//!   layout**: abi_stable refuses it ("too many fields"). It loads it through the earlier
//!   layout, which it keeps for that purpose (`netmix_plugin_api::v1_0` in this engine; here
//!   the real `netmix_plugin_api::StrategyMod_Ref` also plays the 1.1 copy a 1.2 crate would
//!   keep as `v1_1`), and answers the newer questions itself: an appended field is `None`, an
//!   appended method runs its default body in the engine (for 1.0 plugins:
//!   `netmix_plugin_api::v1_0::Upgraded`, whose `answer` is `pick`, single-path).
//! - Inserting anything before the last prefix field is refused.
//!
//! How the copies can be compared at all: abi_stable matches types by name, by the package that
//! defines them (the derives below run in an integration test of `netmix-plugin-api`, so
//! `CARGO_PKG_NAME` is `netmix-plugin-api`, as in the library) and by the major version of
//! that package. So the copies keep the names of the originals (`StrategyMod`, `Strategy`,
//! `HostMod`) in modules of their own; everything else they mention (`Snapshot`, `ConnMeta`,
//! ...) is the real type. Copying the `#[sabi_trait]` works: its vtable compares equal on the
//! methods they share.
//!
//! Needs the plugin files built with the same `CARGO_TARGET_DIR` and profile as this test:
//! `cargo build -p netmix-strategy-round-robin -p netmix-fixture-abi-mismatch -p
//! netmix-fixture-v1-0`.

// abi_stable's derive macros emit `impl` blocks inside function bodies.
#![allow(non_local_definitions)]
// `StrategyMod_Ref` is abi_stable's naming convention for prefix references.
#![allow(non_camel_case_types)]
// The derive gives `StrategyMod_Ref` an accessor named like the field `new`, taking `self`.
#![allow(clippy::wrong_self_convention)]

mod common;

use common::{ifaces, lib_path};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use abi_stable::{
    StableAbi,
    abi_stability::abi_checking::check_layout_compatibility,
    library::{LibraryError, lib_header_from_path},
    prefix_type::PrefixTypeTrait,
    std_types::{RStr, RString},
};
use netmix_plugin_api::{
    ConnMeta, HostMod, HostMod_Ref, LogLevel, Paths, Snapshot, StrategyBox, StrategyMod_Ref,
    host::load_plugin,
};

/// The root module, the trait and the host services as a 1.2 release would declare them.
#[allow(dead_code)] // accessors the tests do not call
mod v1_2 {
    use abi_stable::{
        StableAbi, declare_root_module_statics,
        library::RootModule,
        sabi_trait,
        sabi_types::VersionStrings,
        std_types::{RBox, ROk, ROption, RResult, RStr, RString},
    };
    use netmix_plugin_api::{
        Answer, Choice, ConnMeta, ConnOutcome, IpAddrC, LogLevel, Snapshot, StrategyError,
    };

    /// What [`Strategy::explain`]'s default body answers.
    pub fn explain_default(conn: &ConnMeta) -> RString {
        format!(
            "no explanation for {} (plugin built against 1.1)",
            conn.host_or_addr()
        )
        .into()
    }

    /// A copy of `netmix_plugin_api::Strategy` with one method appended (new in 1.2).
    #[sabi_trait]
    pub trait Strategy: Send + Sync + std::fmt::Debug {
        fn name(&self) -> RString;

        fn rebuild(&self, snapshot: &Snapshot) -> RResult<(), StrategyError>;

        fn pick(&self, conn: &ConnMeta) -> RResult<Choice, StrategyError>;

        #[sabi(last_prefix_field)]
        fn observe(&self, outcome: &ConnOutcome) -> RResult<(), StrategyError> {
            let _ = outcome;
            ROk(())
        }

        fn answer(&self, conn: &ConnMeta) -> RResult<Answer, StrategyError> {
            self.pick(conn).map(Answer::single)
        }

        /// New in 1.2: why the strategy would route `conn` the way it does. Called on an
        /// object whose vtable lacks it, this default body runs instead.
        fn explain(&self, conn: &ConnMeta) -> RString {
            explain_default(conn)
        }
    }

    /// The 1.2 trait object.
    pub type StrategyBox = Strategy_TO<'static, RBox<()>>;

    /// A copy of `netmix_plugin_api::HostMod` with one service appended (new in 1.2).
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = HostMod_Ref)))]
    #[sabi(missing_field(panic))]
    pub struct HostMod {
        #[sabi(last_prefix_field)]
        pub log: extern "C" fn(plugin: RStr<'_>, level: LogLevel, message: RStr<'_>),

        /// New in 1.2: the engine's DNS cache. An engine of 1.1 does not offer it.
        #[sabi(missing_field(option))]
        pub resolve: extern "C" fn(host: RStr<'_>) -> ROption<IpAddrC>,
    }

    /// A copy of `netmix_plugin_api::StrategyMod` with one field appended (new in 1.2).
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = StrategyMod_Ref)))]
    #[sabi(missing_field(panic))]
    pub struct StrategyMod {
        pub name: extern "C" fn() -> RStr<'static>,

        pub description: extern "C" fn() -> RStr<'static>,

        #[sabi(last_prefix_field)]
        pub new: extern "C" fn(
            options_toml: RStr<'_>,
            host: HostMod_Ref,
        ) -> RResult<StrategyBox, StrategyError>,

        /// New in 1.2: feature bits the plugin supports. A 1.1 plugin does not have it.
        #[sabi(missing_field(option))]
        pub capabilities: extern "C" fn() -> u64,
    }

    impl RootModule for StrategyMod_Ref {
        declare_root_module_statics! {StrategyMod_Ref}

        const BASE_NAME: &'static str = "netmix_strategy";
        const NAME: &'static str = "netmix strategy";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.2.0");
    }
}

/// A root module that breaks the rule: a field inserted *before* the last prefix field.
#[allow(dead_code)] // only its layout is compared
mod inserted {
    use abi_stable::{
        StableAbi,
        std_types::{RResult, RStr},
    };
    use netmix_plugin_api::{HostMod_Ref, StrategyBox, StrategyError};

    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = StrategyMod_Ref)))]
    #[sabi(missing_field(panic))]
    pub struct StrategyMod {
        pub name: extern "C" fn() -> RStr<'static>,

        /// Inserted in the middle: every later field moves.
        pub homepage: extern "C" fn() -> RStr<'static>,

        pub description: extern "C" fn() -> RStr<'static>,

        #[sabi(last_prefix_field)]
        pub new: extern "C" fn(
            options_toml: RStr<'_>,
            host: HostMod_Ref,
        ) -> RResult<StrategyBox, StrategyError>,
    }
}

/// A plugin loaded by a 1.2 engine: through the 1.2 layout when the plugin has it, else
/// through the 1.1 layout the engine keeps.
enum Loaded {
    V1_2(v1_2::StrategyMod_Ref),
    V1_1(StrategyMod_Ref),
}

/// A strategy instance held by a 1.2 engine.
enum Instance {
    V1_2(v1_2::StrategyBox),
    V1_1(StrategyBox),
}

impl Loaded {
    /// Tries the newest layout first, then the older one; reports both refusals if neither
    /// fits.
    fn load(path: &Path) -> Result<(Self, Option<LibraryError>), String> {
        let header = lib_header_from_path(path).map_err(|e| e.to_string())?;
        match header.init_root_module::<v1_2::StrategyMod_Ref>() {
            Ok(module) => Ok((Self::V1_2(module), None)),
            Err(newest) => match header.init_root_module::<StrategyMod_Ref>() {
                Ok(module) => Ok((Self::V1_1(module), Some(newest))),
                Err(older) => Err(format!("1.2: {newest}; 1.1: {older}")),
            },
        }
    }

    fn name(&self) -> RStr<'static> {
        match self {
            Self::V1_2(m) => (m.name())(),
            Self::V1_1(m) => (m.name())(),
        }
    }

    /// The 1.2 field: absent on a 1.1 plugin.
    fn capabilities(&self) -> Option<u64> {
        match self {
            Self::V1_2(m) => m.capabilities().map(|f| f()),
            Self::V1_1(_) => None,
        }
    }

    fn instantiate(&self, options: &str) -> Instance {
        let options = RStr::from_str(options);
        match self {
            Self::V1_2(m) => Instance::V1_2((m.new())(options, host_v1_2()).unwrap()),
            Self::V1_1(m) => Instance::V1_1((m.new())(options, host()).unwrap()),
        }
    }
}

impl Instance {
    fn rebuild(&self, snapshot: &Snapshot) {
        match self {
            Self::V1_2(s) => s.rebuild(snapshot).unwrap(),
            Self::V1_1(s) => s.rebuild(snapshot).unwrap(),
        }
    }

    fn pick(&self, conn: &ConnMeta) -> netmix_plugin_api::Choice {
        match self {
            Self::V1_2(s) => s.pick(conn).unwrap(),
            Self::V1_1(s) => s.pick(conn).unwrap(),
        }
    }

    /// The 1.2 method: on a 1.1 plugin, its default body, run in the engine.
    fn explain(&self, conn: &ConnMeta) -> RString {
        match self {
            Self::V1_2(s) => s.explain(conn),
            Self::V1_1(_) => v1_2::explain_default(conn),
        }
    }
}

/// Log lines that reached [`log`].
static LOGGED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn log(plugin: RStr<'_>, level: LogLevel, message: RStr<'_>) {
    LOGGED.fetch_add(1, Ordering::Relaxed);
    eprintln!("{level} [{plugin}] {message}");
}

/// The services of a 1.1 engine.
fn host() -> HostMod_Ref {
    HostMod { log }.leak_into_prefix()
}

/// The services of a 1.2 engine.
fn host_v1_2() -> v1_2::HostMod_Ref {
    extern "C" fn resolve(
        _: RStr<'_>,
    ) -> abi_stable::std_types::ROption<netmix_plugin_api::IpAddrC> {
        abi_stable::std_types::RNone
    }
    v1_2::HostMod { log, resolve }.leak_into_prefix()
}

#[test]
fn a_1_2_engine_runs_a_1_1_plugin_through_the_1_1_layout() {
    let path = lib_path("strategy_round_robin");
    let (plugin, refusal) = Loaded::load(&path).unwrap_or_else(|e| panic!("{e}"));

    // abi_stable refuses the longer 1.2 layout for a 1.1 plugin...
    let refusal = refusal.expect("the 1.2 layout does not fit a 1.1 plugin");
    assert!(
        matches!(refusal, LibraryError::AbiInstability(_)),
        "{refusal}"
    );
    assert!(refusal.to_string().contains("too many fields"), "{refusal}");
    // ...and the 1.1 layout loads it.
    assert!(matches!(plugin, Loaded::V1_1(_)));
    assert_eq!(plugin.name().as_str(), "round-robin");
    assert_eq!(
        plugin.capabilities(),
        None,
        "the appended field reads as absent"
    );

    let strategy = plugin.instantiate("");
    strategy.rebuild(&Snapshot::of(ifaces(&[1, 2, 3])));
    let conn = ConnMeta::for_host("example.com", 443);
    let firsts: Vec<u32> = (0..6)
        .map(|_| strategy.pick(&conn).first().unwrap())
        .collect();
    assert_eq!(firsts, [3, 2, 1, 3, 2, 3], "the smooth 1:2:3 cycle");
    let choice = strategy.pick(&conn);
    assert_eq!(choice.order.as_slice(), &[3, 2, 1]);
    assert_eq!(choice.reason, "round-robin 1/6 (weight 3)");
    assert_eq!(
        strategy.explain(&conn),
        v1_2::explain_default(&conn),
        "the appended method's default body answers"
    );

    // The same file, loaded again by a 1.1 engine in the same process.
    let plugin = load_plugin(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plugin.name, "round-robin");
}

#[test]
fn a_1_1_engine_accepts_the_layout_of_a_later_1_x_plugin() {
    let v1_1 = <StrategyMod_Ref as StableAbi>::LAYOUT;
    let v1_2 = <v1_2::StrategyMod_Ref as StableAbi>::LAYOUT;
    // The root module with an appended field, whose trait object has an appended method and
    // whose host services have an appended field: what the loader checks, engine first.
    check_layout_compatibility(v1_1, v1_2)
        .unwrap_or_else(|e| panic!("a 1.1 engine must accept a 1.2 plugin: {e}"));
    // The other way round is refused (see the first test).
    let err = check_layout_compatibility(v1_2, v1_1).unwrap_err();
    assert!(err.to_string().contains("too many fields"), "{err}");

    let inserted = <inserted::StrategyMod_Ref as StableAbi>::LAYOUT;
    assert!(
        check_layout_compatibility(v1_1, inserted).is_err(),
        "a field inserted before the last prefix field must be refused"
    );
}

/// What a 1.2 plugin sees of a 1.1 engine, at run time: the objects the engine built, read
/// through the plugin's longer types. The loader has checked the layouts (previous test);
/// crossing the FFI boundary is a reinterpretation of the same pointer, which `transmute`
/// stands in for here.
#[test]
fn a_later_plugin_reads_what_this_engine_lacks_as_absent() {
    let before = LOGGED.load(Ordering::Relaxed);
    let engine_host: HostMod_Ref = host();
    // SAFETY: both are `PrefixRef`s (one pointer) to a `HostMod` prefix type whose 1.1 fields
    // are identical (checked above); the 1.2 accessors check the field count of the value.
    let seen_by_plugin: v1_2::HostMod_Ref = unsafe { std::mem::transmute(engine_host) };
    assert!(
        seen_by_plugin.resolve().is_none(),
        "a 1.1 engine offers no `resolve`"
    );
    (seen_by_plugin.log())(
        RStr::from_str("test"),
        LogLevel::Info,
        RStr::from_str("through the 1.2 view"),
    );
    assert_eq!(LOGGED.load(Ordering::Relaxed), before + 1);

    // The same for a trait object: a strategy built against 1.1 (the real round-robin plugin),
    // called through the 1.2 trait, runs the default body of the appended method.
    let plugin = load_plugin(&lib_path("strategy_round_robin")).unwrap();
    let old: StrategyBox = plugin.instantiate("", host()).unwrap();
    // SAFETY: both are `Strategy_TO<'static, RBox<()>>`: an erased box and a prefix-type
    // vtable whose 1.1 methods are identical (checked above); the 1.2 method checks the
    // vtable's length and falls back to its default body.
    let seen_as_1_1: v1_2::StrategyBox = unsafe { std::mem::transmute(old) };
    seen_as_1_1.rebuild(&Snapshot::of(ifaces(&[1]))).unwrap();
    let conn = ConnMeta::for_host("example.com", 443);
    assert_eq!(seen_as_1_1.pick(&conn).unwrap().first(), Some(1));
    assert_eq!(seen_as_1_1.explain(&conn), v1_2::explain_default(&conn));
}

/// The real case of this engine (1.1): a plugin file built with the 1.0 layout loads through
/// the kept 1.0 layout, routes with its own `pick`, and is single-path (the default body of
/// `answer`), even with multipath available.
#[test]
fn this_engine_loads_a_1_0_plugin_and_answers_single_path_for_it() {
    let path = lib_path("fixture_v1_0");
    // The current layout refuses the file: its trait has one method fewer.
    let header = lib_header_from_path(&path).unwrap();
    let Err(err) = header.init_root_module::<StrategyMod_Ref>() else {
        panic!("the 1.1 layout must not fit a 1.0 plugin");
    };
    assert!(err.to_string().contains("too many fields"), "{err}");

    let plugin = load_plugin(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plugin.name, "legacy-1-0");
    assert_eq!(plugin.module.abi(), "1.0");
    let strategy = plugin.instantiate("", host()).unwrap();
    assert_eq!(strategy.name(), "legacy-1-0");
    let mut snapshot = Snapshot::of(ifaces(&[1, 1, 1]));
    snapshot.ext.set(Snapshot::EXT_MULTIPATH, "mptcp");
    strategy.rebuild(&snapshot).unwrap();
    let conn = ConnMeta::for_host("example.com", 443);
    let answer = strategy.answer(&conn).unwrap();
    assert_eq!(answer.choice, strategy.pick(&conn).unwrap());
    assert_eq!(answer.choice.order.as_slice(), &[1, 2, 3]);
    assert_eq!(answer.choice.reason, "legacy 1.0: lowest id");
    assert_eq!(answer.paths, Paths::Single);

    // A 1.1 plugin of the same engine, for contrast: the capacity strategy goes multipath for
    // a destination it has not seen, and says so.
    let capacity = load_plugin(&lib_path("strategy_capacity")).unwrap();
    assert_eq!(capacity.module.abi(), "1.1");
    let strategy = capacity.instantiate("", host()).unwrap();
    strategy.rebuild(&snapshot).unwrap();
    let answer = strategy.answer(&conn).unwrap();
    assert_eq!(answer.paths, Paths::Multi, "{}", answer.choice.reason);
    assert!(
        answer
            .choice
            .reason
            .ends_with("· multipath (new destination)"),
        "{}",
        answer.choice.reason
    );
}

#[test]
fn the_1_0_layout_kept_is_the_prefix_of_this_one() {
    let v1_0 = <netmix_plugin_api::v1_0::StrategyMod_Ref as StableAbi>::LAYOUT;
    let v1_1 = <StrategyMod_Ref as StableAbi>::LAYOUT;
    check_layout_compatibility(v1_0, v1_1)
        .unwrap_or_else(|e| panic!("a 1.0 engine must accept a 1.1 plugin: {e}"));
    let err = check_layout_compatibility(v1_1, v1_0).unwrap_err();
    assert!(err.to_string().contains("too many fields"), "{err}");
}

#[test]
fn an_incompatible_layout_is_refused_in_one_line() {
    let path = lib_path("fixture_abi_mismatch");
    let err = load_plugin(&path).unwrap_err();
    let shown = err.to_string();
    eprintln!("{shown}");
    assert!(!shown.contains('\n'), "not one line: {shown}");
    assert!(shown.chars().count() < 300, "too long: {shown}");
    assert!(
        shown.starts_with(&format!("{}: ABI mismatch: ", path.display())),
        "{shown}"
    );
    assert!(!shown.contains("version mismatch"), "{shown}");
}
