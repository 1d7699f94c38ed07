//! The SOCKS5 front: the [`SocksListener`] actor accepts clients; each client is served by a
//! plain tokio task ([`conn::serve`]): handshake, interface choice, bound connect, relay.

pub mod conn;
pub mod guard;
pub mod handshake;
pub(crate) mod listener;
pub mod relay;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod splice;

pub use conn::ServeContext;
pub use listener::SocksListener;
