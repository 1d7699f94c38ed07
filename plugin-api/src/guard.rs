//! Panic safety for plugin authors: [`StrategyImpl`], the adapter that turns it into the FFI
//! trait object, and [`export_strategy!`](crate::export_strategy).
//!
//! A panic that unwinds out of an `extern "C"` function aborts the whole engine. abi_stable's
//! trait objects are `extern "C"` underneath, so every call into plugin code goes through
//! [`std::panic::catch_unwind`] here and a panic comes back as [`StrategyError::Panicked`].
//! Authors never implement [`Strategy`] themselves, so they cannot forget.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, RResult, RStr, RString},
};
use arc_swap::ArcSwapOption;

use crate::{
    Answer, Choice, ConnMeta, ConnOutcome, HostMod_Ref, Snapshot, Strategy, Strategy_TO,
    StrategyBox, StrategyError, StrategyMod, StrategyMod_Ref,
    error::one_line,
    paths::{History, MultipathPolicy},
};

/// Longest panic message passed back to the engine, in characters.
const MAX_PANIC_MESSAGE_CHARS: usize = 300;

/// A routing strategy in plain Rust: what plugin authors implement.
///
/// Export it with [`export_strategy!`](crate::export_strategy). The adapter calls
/// [`plan`](Self::plan) when the interfaces change and keeps the result where every
/// [`pick`](Self::pick) reads it without a lock (an `ArcSwap`): the slow work goes in `plan`,
/// `pick` stays a few hundred nanoseconds at most. Calls come from many engine threads at once,
/// hence `&self` and `Send + Sync`: keep mutable state in atomics or a mutex (a mutex poisoned by
/// an earlier panic should be recovered with `into_inner`, not unwrapped).
pub trait StrategyImpl: Send + Sync + 'static {
    /// What [`plan`](Self::plan) prepares from a snapshot for [`pick`](Self::pick): a sorted
    /// order, a cycle, scores. [`Snapshot`] itself will do for a simple strategy.
    type Plan: Send + Sync + 'static;

    /// Prepares for a new snapshot (see [`Strategy::rebuild`]). An error keeps the previous
    /// plan.
    fn plan(&self, snapshot: &Snapshot) -> Result<Self::Plan, StrategyError>;

    /// Orders the candidates for one connection, best first (see [`Strategy::pick`]), from
    /// the current plan. [`crate::candidates`] and [`crate::order_by_key`] do the usual
    /// filtering; [`crate::InterfaceSnapshot::active_conns`] is live.
    fn pick(&self, plan: &Self::Plan, conn: &ConnMeta) -> Result<Choice, StrategyError>;

    /// Feedback about a connection (see [`Strategy::observe`]). The default ignores it.
    fn observe(&self, outcome: &ConnOutcome) -> Result<(), StrategyError> {
        let _ = outcome;
        Ok(())
    }

    /// New in 1.1: whether this strategy's TCP connections go multipath when the engine has
    /// multipath on (see [`crate::paths`]). The adapter applies it after every `pick`, from
    /// what each destination's last connection moved, and says so in the reason. The
    /// default: never (single-path, as in 1.0).
    fn multipath(&self) -> MultipathPolicy {
        MultipathPolicy::Never
    }
}

/// The text of a panic payload (`&str` and `String` payloads; anything else is described).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "panic with a non-string payload"
    };
    one_line(text, MAX_PANIC_MESSAGE_CHARS)
}

thread_local! {
    /// Set while plugin code runs under [`guarded`]: its panics are caught and reported to the
    /// engine as errors, so the default hook's stderr dump would only be noise.
    static IN_GUARD: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once per copy of std — each plugin library has its own) a panic hook that stays
/// quiet for panics [`guarded`] will catch and defers to the previous hook for all others.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_GUARD.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into [`StrategyError::Panicked`] (reported once by the engine,
/// not printed by the panic hook).
pub fn guarded<R>(f: impl FnOnce() -> Result<R, StrategyError>) -> RResult<R, StrategyError> {
    install_quiet_hook();
    let outer = IN_GUARD.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_GUARD.with(|g| g.set(outer));
    match result {
        Ok(Ok(value)) => ROk(value),
        Ok(Err(err)) => RErr(err),
        Err(payload) => RErr(StrategyError::Panicked(panic_message(&*payload).into())),
    }
}

/// The adapter between a [`StrategyImpl`] and the FFI trait [`Strategy`]: every call is
/// [`guarded`], and the plan is swapped in atomically, so `rebuild` never stalls `pick`.
pub struct Guarded<T: StrategyImpl> {
    name: &'static str,
    inner: T,
    plan: ArcSwapOption<T::Plan>,
    /// The last snapshot's [`Snapshot::multipath_available`].
    multipath: AtomicBool,
    /// What each destination's last connection moved, for [`StrategyImpl::multipath`].
    history: History,
}

impl<T: StrategyImpl> std::fmt::Debug for Guarded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Strategy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: StrategyImpl> Guarded<T> {
    /// Wraps `inner`, which will report `name` from [`Strategy::name`]. It has no plan until
    /// the first `rebuild`.
    pub fn new(name: &'static str, inner: T) -> Self {
        Self {
            name,
            inner,
            plan: ArcSwapOption::empty(),
            multipath: AtomicBool::new(false),
            history: History::new(),
        }
    }

    /// Wraps `inner` and boxes it as the engine's trait object. No plugin file is involved,
    /// which makes this the way to test a strategy in-process through the ABI surface, or to
    /// build a strategy into the engine.
    pub fn boxed(name: &'static str, inner: T) -> StrategyBox {
        Strategy_TO::from_value(Self::new(name, inner), TD_Opaque)
    }
}

impl<T: StrategyImpl> Guarded<T> {
    /// The inner strategy's pick from the current plan (unguarded: callers wrap it).
    fn pick_planned(&self, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        match self.plan.load().as_deref() {
            Some(plan) => self.inner.pick(plan, conn),
            None => Err(StrategyError::other("pick before the first rebuild")),
        }
    }
}

impl<T: StrategyImpl> Strategy for Guarded<T> {
    fn name(&self) -> RString {
        self.name.into()
    }

    fn rebuild(&self, snapshot: &Snapshot) -> RResult<(), StrategyError> {
        guarded(|| {
            let plan = self.inner.plan(snapshot)?;
            self.plan.store(Some(Arc::new(plan)));
            self.multipath
                .store(snapshot.multipath_available(), Ordering::Relaxed);
            Ok(())
        })
    }

    fn pick(&self, conn: &ConnMeta) -> RResult<Choice, StrategyError> {
        guarded(|| self.pick_planned(conn))
    }

    fn observe(&self, outcome: &ConnOutcome) -> RResult<(), StrategyError> {
        guarded(|| {
            if self.inner.multipath() != MultipathPolicy::Never {
                self.history.observe(outcome);
            }
            self.inner.observe(outcome)
        })
    }

    fn answer(&self, conn: &ConnMeta) -> RResult<Answer, StrategyError> {
        guarded(|| {
            let mut choice = self.pick_planned(conn)?;
            let available = self.multipath.load(Ordering::Relaxed);
            let paths = self
                .history
                .decide(self.inner.multipath(), available, conn, &mut choice);
            Ok(Answer::new(choice, paths))
        })
    }
}

/// Runs a plugin's constructor under [`guarded`] and boxes the result; remembers the engine's
/// services for [`crate::log`]. Used by [`export_strategy!`](crate::export_strategy) for
/// `StrategyMod::new`.
pub fn construct<T, F>(
    name: &'static str,
    options_toml: RStr<'_>,
    host: HostMod_Ref,
    new: F,
) -> RResult<StrategyBox, StrategyError>
where
    T: StrategyImpl,
    F: FnOnce(&str) -> Result<T, StrategyError>,
{
    crate::log::attach(name, host);
    guarded(|| new(options_toml.as_str()).map(|inner| Guarded::boxed(name, inner)))
}

/// Builds the root module from the three exported functions. Used by
/// [`export_strategy!`](crate::export_strategy).
pub fn root_module(
    name: extern "C" fn() -> RStr<'static>,
    description: extern "C" fn() -> RStr<'static>,
    new: extern "C" fn(RStr<'_>, HostMod_Ref) -> RResult<StrategyBox, StrategyError>,
) -> StrategyMod_Ref {
    StrategyMod {
        name,
        description,
        new,
    }
    .leak_into_prefix()
}

/// Decodes a strategy's options (the TOML text given to the constructor) into `T`; empty text
/// is an empty table, so `#[serde(default)]` fields get their defaults. Errors are
/// [`StrategyError::InvalidConfig`] on one line. Add `#[serde(deny_unknown_fields)]` to `T` so a
/// typo is reported instead of ignored.
#[cfg(feature = "options")]
pub fn parse_options<T: serde::de::DeserializeOwned>(
    options_toml: &str,
) -> Result<T, StrategyError> {
    toml::from_str(options_toml)
        .map_err(|e| StrategyError::invalid_config(one_line(&e.to_string(), 200)))
}

/// Exports a [`StrategyImpl`] as a netmix strategy plugin (the dynamic library's root module).
///
/// ```ignore
/// netmix_plugin_api::export_strategy! {
///     name: "round-robin",
///     description: "Weighted round-robin over the usable interfaces.",
///     new: |options: &str| -> Result<RoundRobin, StrategyError> { RoundRobin::from_options(options) },
/// }
/// ```
///
/// `name` is the name users write in the config; `new` is any expression callable as
/// `FnOnce(&str) -> Result<T, StrategyError>` where `T: StrategyImpl` (a closure or a path such
/// as `RoundRobin::from_options`); it receives the options as TOML text (see
/// [`parse_options`](crate::parse_options)). The constructor and every later call run under
/// `catch_unwind`. Use it once per crate, at most; the crate needs `abi_stable` as a direct
/// dependency (see the crate docs).
#[macro_export]
macro_rules! export_strategy {
    (
        name: $name:literal,
        description: $description:literal,
        new: $new:expr $(,)?
    ) => {
        const _: () = {
            extern "C" fn __netmix_strategy_name() -> $crate::abi_stable::std_types::RStr<'static> {
                $crate::abi_stable::std_types::RStr::from_str($name)
            }

            extern "C" fn __netmix_strategy_description()
            -> $crate::abi_stable::std_types::RStr<'static> {
                $crate::abi_stable::std_types::RStr::from_str($description)
            }

            extern "C" fn __netmix_strategy_new(
                options_toml: $crate::abi_stable::std_types::RStr<'_>,
                host: $crate::HostMod_Ref,
            ) -> $crate::abi_stable::std_types::RResult<$crate::StrategyBox, $crate::StrategyError>
            {
                $crate::guard::construct($name, options_toml, host, $new)
            }

            #[$crate::abi_stable::export_root_module]
            fn __netmix_strategy_root_module() -> $crate::StrategyMod_Ref {
                $crate::guard::root_module(
                    __netmix_strategy_name,
                    __netmix_strategy_description,
                    __netmix_strategy_new,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InterfaceSnapshot;

    struct Boom;

    impl StrategyImpl for Boom {
        type Plan = ();
        fn plan(&self, _: &Snapshot) -> Result<(), StrategyError> {
            Ok(())
        }
        fn pick(&self, _: &(), _: &ConnMeta) -> Result<Choice, StrategyError> {
            panic!("boom in pick\nsecond line")
        }
        fn observe(&self, _: &ConnOutcome) -> Result<(), StrategyError> {
            std::panic::panic_any(42_u32)
        }
    }

    struct First;

    impl StrategyImpl for First {
        type Plan = Snapshot;
        fn plan(&self, s: &Snapshot) -> Result<Snapshot, StrategyError> {
            if s.interfaces.iter().any(|i| i.name.as_str() == "bad") {
                return Err(StrategyError::other("bad snapshot"));
            }
            Ok(s.clone())
        }
        fn pick(&self, plan: &Snapshot, c: &ConnMeta) -> Result<Choice, StrategyError> {
            let order = crate::order_by_key(&plan.interfaces, c, |i| i.id);
            if order.is_empty() {
                return Err(StrategyError::NoCandidate);
            }
            Ok(Choice::new(order, "first"))
        }
    }

    fn outcome() -> ConnOutcome {
        ConnOutcome::new(1, ConnMeta::for_host("h", 1), crate::OutcomeStage::Closed)
    }

    fn snapshot(names: &[(u32, &str)]) -> Snapshot {
        Snapshot::of(
            names
                .iter()
                .map(|&(id, n)| InterfaceSnapshot::new(id, n))
                .collect::<Vec<_>>(),
        )
    }

    fn host() -> HostMod_Ref {
        extern "C" fn log(_: RStr<'_>, _: crate::LogLevel, _: RStr<'_>) {}
        crate::HostMod { log }.leak_into_prefix()
    }

    #[test]
    fn panics_become_errors() {
        let strategy = Guarded::boxed("boom", Boom);
        strategy.rebuild(&snapshot(&[(1, "eth0")])).unwrap();
        let err = strategy.pick(&ConnMeta::for_host("h", 1)).unwrap_err();
        assert_eq!(
            err,
            StrategyError::Panicked("boom in pick second line".into())
        );
        let err = strategy.observe(&outcome()).unwrap_err();
        assert_eq!(
            err,
            StrategyError::Panicked("panic with a non-string payload".into())
        );
        assert_eq!(strategy.name().as_str(), "boom");
    }

    #[test]
    fn constructor_panic_and_error() {
        let r = construct(
            "x",
            RStr::from_str(""),
            host(),
            |_: &str| -> Result<First, _> { panic!("{}", String::from("ctor")) },
        );
        assert!(matches!(r, RErr(StrategyError::Panicked(m)) if m == "ctor"));
        let r = construct(
            "x",
            RStr::from_str("bad"),
            host(),
            |o: &str| -> Result<First, _> { Err(StrategyError::invalid_config(o)) },
        );
        assert!(matches!(r, RErr(StrategyError::InvalidConfig(m)) if m == "bad"));
    }

    #[test]
    fn picks_read_the_latest_plan_and_a_failed_rebuild_keeps_the_old_one() {
        let s = construct("first", RStr::from_str(""), host(), |_: &str| Ok(First)).unwrap();
        let conn = ConnMeta::for_host("h", 1);
        assert!(
            matches!(s.pick(&conn), RErr(StrategyError::Other(_))),
            "no plan before the first rebuild"
        );
        s.rebuild(&snapshot(&[(2, "a"), (1, "b")])).unwrap();
        assert_eq!(s.pick(&conn).unwrap().order.as_slice(), &[1, 2]);
        assert!(s.rebuild(&snapshot(&[(3, "bad")])).is_err());
        assert_eq!(s.pick(&conn).unwrap().order.as_slice(), &[1, 2]);
        s.rebuild(&snapshot(&[])).unwrap();
        assert_eq!(s.pick(&conn).unwrap_err(), StrategyError::NoCandidate);
        assert!(s.observe(&outcome()).is_ok());
    }

    #[cfg(feature = "options")]
    #[test]
    fn options() {
        #[derive(serde::Deserialize, Default, Debug)]
        #[serde(default, deny_unknown_fields)]
        struct Opts {
            ttl_secs: u64,
        }
        assert_eq!(parse_options::<Opts>("").unwrap().ttl_secs, 0);
        assert_eq!(parse_options::<Opts>("ttl_secs = 5").unwrap().ttl_secs, 5);
        let err = parse_options::<Opts>("ttl_secs = \"x\"\n").unwrap_err();
        let StrategyError::InvalidConfig(msg) = err else {
            panic!("{err:?}")
        };
        assert!(!msg.contains('\n'), "{msg}");
        assert!(parse_options::<Opts>("tll_secs = 5").is_err());
    }
}
