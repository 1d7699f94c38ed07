//! A plugin's log lines, written through the engine's log (`tracing`) with the plugin's name.
//!
//! [`export_strategy!`](crate::export_strategy) hands the engine's [`HostMod`](crate::HostMod)
//! to this module when the engine builds the strategy; from then on [`error`], [`warn`],
//! [`info`], [`debug`] and [`trace`] reach the engine's log as
//! `WARN netmix::plugin: <message> plugin=<name>`, filtered by the user's `RUST_LOG` like the
//! engine's own lines. Each line is squeezed onto one line of at most [`MAX_MESSAGE_CHARS`].
//!
//! Outside the engine (a plugin's unit tests through its `rlib`), nothing is attached: `error`
//! and `warn` go to stderr, the rest is dropped.

use std::fmt::Display;
use std::sync::OnceLock;

use abi_stable::std_types::RStr;

use crate::{HostMod_Ref, LogLevel, error::one_line};

/// Longest message passed to the engine, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// The plugin's name and the engine's services, set once per library (each plugin file has its
/// own copy of this static).
static HOST: OnceLock<(&'static str, HostMod_Ref)> = OnceLock::new();

/// Remembers where this library's log lines go (the first call wins). Called by
/// [`crate::guard::construct`].
pub fn attach(plugin: &'static str, host: HostMod_Ref) {
    let _ = HOST.set((plugin, host));
}

/// Writes `message` at `level`.
pub fn write(level: LogLevel, message: impl Display) {
    let text = one_line(&message.to_string(), MAX_MESSAGE_CHARS);
    match HOST.get() {
        Some((plugin, host)) => (host.log())(RStr::from_str(plugin), level, RStr::from_str(&text)),
        None if level <= LogLevel::Warn => eprintln!("{level}: {text}"),
        None => {}
    }
}

/// Something an operator must act on.
pub fn error(message: impl Display) {
    write(LogLevel::Error, message);
}

/// Something went wrong and was recovered from (a fallback, a model that did not load).
pub fn warn(message: impl Display) {
    write(LogLevel::Warn, message);
}

/// A lifecycle or state change.
pub fn info(message: impl Display) {
    write(LogLevel::Info, message);
}

/// Detail for debugging.
pub fn debug(message: impl Display) {
    write(LogLevel::Debug, message);
}

/// Per-decision detail.
pub fn trace(message: impl Display) {
    write(LogLevel::Trace, message);
}
