//! [`StrategyError`]: the one error type that crosses the plugin boundary.
//!
//! It carries strings, not boxed error objects: a string outlives the plugin call, needs no
//! vtable pointing into the plugin, and is all the engine does with an error anyway (log it, show
//! it, fall back to its built-in choice).

use std::fmt;

use abi_stable::{StableAbi, std_types::RString};

/// Why a strategy could not be built or could not answer.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub enum StrategyError {
    /// The strategy's options are invalid (constructor only); the message says which key.
    InvalidConfig(RString),
    /// No interface fits this connection (e.g. every candidate is down or was tried).
    NoCandidate,
    /// A model (ONNX, learned table) failed to load or to evaluate.
    Model(RString),
    /// The plugin panicked; the message is the panic payload. The plugin object may be in an
    /// inconsistent state afterwards.
    Panicked(RString),
    /// Anything else.
    Other(RString),
}

impl StrategyError {
    /// An [`StrategyError::InvalidConfig`] with this message.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::InvalidConfig(msg.into().into())
    }

    /// A [`StrategyError::Model`] with this message.
    pub fn model(msg: impl Into<String>) -> Self {
        Self::Model(msg.into().into())
    }

    /// A [`StrategyError::Other`] with this message.
    pub fn other(msg: impl Into<String>) -> Self {
        Self::Other(msg.into().into())
    }
}

impl fmt::Display for StrategyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(m) => write!(f, "invalid strategy options: {m}"),
            Self::NoCandidate => f.write_str("no usable interface for this connection"),
            Self::Model(m) => write!(f, "strategy model error: {m}"),
            Self::Panicked(m) => write!(f, "strategy panicked: {m}"),
            Self::Other(m) => write!(f, "strategy error: {m}"),
        }
    }
}

impl std::error::Error for StrategyError {}

/// Squeezes `text` onto one line of at most `max_chars` characters: line breaks and runs of
/// whitespace become one space, and a cut is marked with `…`.
///
/// Used for everything that reaches a log line from a plugin or a loader error (abi_stable's
/// layout errors are tens of kilobytes of text).
pub fn one_line(text: &str, max_chars: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max_chars {
        return joined;
    }
    let mut cut: String = joined.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_trims() {
        assert_eq!(one_line("  a\n\n  b\r\n c  ", 100), "a b c");
        assert_eq!(one_line("abcdef ghij", 8), "abcdef …");
        assert_eq!(one_line("abcdef ghij", 7), "abcdef…");
        assert_eq!(one_line("abcdefghij", 5), "abcd…");
        assert_eq!(one_line("abc def", 7), "abc def");
        let long = "x\n".repeat(30_000);
        let cut = one_line(&long, 200);
        assert!(!cut.contains('\n'));
        assert!(cut.chars().count() <= 200, "{}", cut.chars().count());
    }

    #[test]
    fn display() {
        assert_eq!(
            StrategyError::invalid_config("ttl_secs: expected an integer").to_string(),
            "invalid strategy options: ttl_secs: expected an integer"
        );
        assert_eq!(
            StrategyError::NoCandidate.to_string(),
            "no usable interface for this connection"
        );
    }
}
