//! Engine events for people: interface state changes, failovers, plugin errors, fallbacks.
//!
//! Anyone holding an [`Events`] can emit; the dashboard feed subscribes. A `broadcast`
//! channel never blocks the emitter, and a slow subscriber loses the oldest events rather than
//! holding memory.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An interface joined.
    InterfaceJoined,
    /// An interface vanished.
    InterfaceGone,
    /// Health became Up.
    InterfaceUp,
    /// Health became Degraded.
    InterfaceDegraded,
    /// Health became Down.
    InterfaceDown,
    /// A connection moved on to another interface after a failed connect.
    Failover,
    /// A strategy plugin failed to load or returned an error.
    PluginError,
    /// The built-in strategy answered in place of the selected one.
    Fallback,
    /// The active strategy changed.
    StrategyChanged,
}

impl EventKind {
    /// snake_case name for the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InterfaceJoined => "iface_joined",
            Self::InterfaceGone => "iface_gone",
            Self::InterfaceUp => "iface_up",
            Self::InterfaceDegraded => "iface_degraded",
            Self::InterfaceDown => "iface_down",
            Self::Failover => "failover",
            Self::PluginError => "plugin_error",
            Self::Fallback => "fallback",
            Self::StrategyChanged => "strategy_changed",
        }
    }
}

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// In words.
    pub message: String,
    /// The interface concerned, if one.
    pub interface: Option<String>,
}

/// The engine-wide event channel.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A channel keeping up to 1024 unread events per subscriber.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
        }
    }

    /// Emits an event (dropped when nobody listens).
    pub fn emit(&self, kind: EventKind, interface: Option<&str>, message: impl Into<String>) {
        let _ = self.tx.send(Event {
            unix_ms: unix_ms(),
            kind,
            message: message.into(),
            interface: interface.map(str::to_owned),
        });
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
