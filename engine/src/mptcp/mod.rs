//! Multipath TCP (Linux): the kernel path manager's endpoints, and what a connection's
//! subflows carry.
//!
//! - [`pm`]: the in-kernel path manager over generic netlink ("mptcp_pm"): endpoints, limits.

#[cfg(target_os = "linux")]
pub mod pm;
