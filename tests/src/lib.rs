//! The netmix network-namespace test lab.
//!
//! netmix sends each outgoing connection out through one of the machine's network
//! interfaces, so its end-to-end tests need a machine with several uplinks. A [`Lab`] builds
//! one out of Linux network namespaces (root / `CAP_NET_ADMIN` required, see
//! [`require_root`]):
//!
//! ```text
//!   client namespace (netmix runs here)            internet namespace
//!   ┌──────────────────────────────┐               ┌───────────────────────────────┐
//!   │ lo 127.0.0.1  (SOCKS port)   │               │ lo 127.0.0.1, 198.19.0.1/32,  │
//!   │                              │               │  2001:db8:ffff::1/128,        │
//!   │                              │               │  DNS 198.19.0.53/32,          │
//!   │                              │               │      2001:db8:ffff::53/128    │
//!   │ wan0 198.18.10.2/24 ─────────┼── veth ───────┼─ up0 198.18.10.1/24           │
//!   │      2001:db8:10::2/64       │               │      2001:db8:10::1/64        │
//!   │ wan1 198.18.11.2/24 ─────────┼── veth ───────┼─ up1 198.18.11.1/24           │
//!   │ wanK 198.18.{10+K}.2/24 ─────┼── veth ───────┼─ upK 198.18.{10+K}.1/24       │
//!   │      2001:db8:{10+K}::2/64   │               │      2001:db8:{10+K}::1/64    │
//!   │                              │               │ target servers on both        │
//!   │ main table: no default route │               │  targets: 80 http, 7 echo,    │
//!   │  (opt-in: one per link,      │               │  9 who-am-I, 10 silent,       │
//!   │   metric 100·(K+1))          │               │  11 refused; UDP 7 echo,      │
//!   │ table 100+K: default via     │               │  9 who-am-I; DNS on 53 (opt.) │
//!   │   198.18.{10+K}.1 dev wanK   │               └───────────────────────────────┘
//!   │   and 2001:db8:{10+K}::1     │
//!   │ rules (v4 and v6): from the  │
//!   │   link's address and oif     │
//!   │   wanK → table 100+K         │
//!   └──────────────────────────────┘
//! ```
//!
//! Only a socket bound to a link (by source address or `SO_BINDTODEVICE`) gets out of the
//! client namespace over IPv4, exactly what netmix must do (unbound IPv6 sockets get out
//! through the link whose address the kernel picks as their source; see [`lab`]), unless a
//! test installs main-table default routes ([`Lab::set_main_default_routes`]). Each link can be rate limited (`tbf` on
//! both veth ends), delayed (NFQUEUE + the `lab-delay` helper, since the lab kernel has no
//! netem), taken down, or black-holed while a test runs.
//!
//! Modules:
//! - [`lab`]: namespaces, links and faults;
//! - [`ns`]: `in_ns` and running commands inside a namespace;
//! - [`servers`]: the target servers in the internet namespace;
//! - [`dns_server`]: an authoritative DNS server in the internet namespace that logs queries;
//! - [`engine`]: starting and stopping the `netmix` binary inside the client namespace;
//! - [`socks`]: a tiny raw SOCKS5 client for exact protocol assertions;
//! - [`client`]: who-am-I through netmix, per-link counting;
//! - [`zerotier_standin`]: a stand-in ZeroTier One API and a "ZeroTier site" namespace.
//! - [`web`]: raw HTTP, WebSocket and `/metrics` checks against the real dashboard.
//!
//! The lab is Linux-only (network namespaces, veth, NFQUEUE): elsewhere this crate compiles
//! to nothing, so `cargo build --target x86_64-pc-windows-gnu --workspace` works.
#![cfg(target_os = "linux")]
#![forbid(unsafe_code)]

pub mod client;
pub mod dns_server;
pub mod engine;
pub mod lab;
pub mod ns;
pub mod servers;
pub mod soak;
pub mod socks;
pub mod web;
pub mod zerotier_standin;

use std::time::Duration;

pub use client::{DASHBOARD, Sample, WhoAmI, api, ask, iface_json, spread, steady_stream, whoami};
pub use dns_server::{DEFAULT_DNS_TTL, DNS_PORT, DNS_SERVER, DNS_SERVER6, DnsQuery, DnsServer};
pub use engine::{
    Engine, lab_config, netmix_bin, process_cpu, run_netmix, spawn_engine,
    spawn_with_connection_log,
};
pub use lab::{
    Lab, Link, LinkSpec, TARGET, TARGET6, connect_tokio_in, require_root, set_lab_delay_bin,
};
pub use ns::{command_in, in_ns, run_in, sh};
pub use servers::{
    Datagram, ECHO_PORT, HTTP_PORT, REFUSED_PORT, SILENT_PORT, Servers, UDP_ECHO_PORT,
    UDP_WHOAMI_PORT, WHOAMI_PORT, bytes_body,
};
pub use socks::{Reply, Target, socks5_command, socks5_connect, udp_unwrap, udp_wrap};
pub use zerotier_standin::{StandIn, ZtSite, network_json, peer_json};

/// How long [`assert_eventually!`] waits: `$NETMIX_TEST_PATIENCE_MS`, default 10 000 ms.
pub fn patience() -> Duration {
    let ms = std::env::var("NETMIX_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Polls `cond` every 50 ms until it holds or [`patience`] runs out, then panics with the
/// message (format arguments allowed).
///
/// This one sleeps the thread, so use it from synchronous code or from async code whose
/// condition does not depend on tasks of the same (current-thread) runtime; otherwise use
/// [`assert_eventually_async!`].
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = ::std::time::Instant::now() + $crate::patience();
        loop {
            if $cond {
                break;
            }
            if ::std::time::Instant::now() >= deadline {
                panic!(
                    "condition `{}` still false after {:?}: {}",
                    stringify!($cond),
                    $crate::patience(),
                    format!($($msg)+)
                );
            }
            ::std::thread::sleep(::std::time::Duration::from_millis(50));
        }
    }};
}

/// Like [`assert_eventually!`] but waits with `tokio::time::sleep`; usable only inside async
/// code (it expands to an `.await`).
#[macro_export]
macro_rules! assert_eventually_async {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = ::std::time::Instant::now() + $crate::patience();
        loop {
            if $cond {
                break;
            }
            if ::std::time::Instant::now() >= deadline {
                panic!(
                    "condition `{}` still false after {:?}: {}",
                    stringify!($cond),
                    $crate::patience(),
                    format!($($msg)+)
                );
            }
            ::tokio::time::sleep(::std::time::Duration::from_millis(50)).await;
        }
    }};
}
