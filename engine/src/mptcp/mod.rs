//! Multipath TCP (Linux): the kernel path manager's endpoints, and what a connection's
//! subflows carry.
//!
//! - [`pm`]: the in-kernel path manager over generic netlink ("mptcp_pm"): endpoints, limits.
//! - [`info`]: per-connection subflows (`MPTCP_INFO`, `MPTCP_SUBFLOW_ADDRS`, `MPTCP_TCPINFO`).

#[cfg(target_os = "linux")]
pub mod info;
#[cfg(target_os = "linux")]
pub mod pm;
