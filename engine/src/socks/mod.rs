//! The proxy front: the [`SocksListener`] actor accepts clients on one port; each client is
//! served by a plain tokio task ([`conn::serve`]) that tells SOCKS5, SOCKS4/4a and HTTP apart
//! by the first byte, reads the request with that protocol's front end (`handshake`,
//! `socks4`, `http`), and hands it to the shared connection path (`path`: resolve, pick,
//! bound connect with failover), whose [`session`] record every sink reads; then relay.
//! SOCKS5 BIND (`bind`) and UDP ASSOCIATE ([`udp`]) share the same resolve, deny and pick
//! steps and the same record.

pub(crate) mod bind;
pub mod conn;
pub mod guard;
pub mod handshake;
pub mod http;
pub(crate) mod listener;
pub(crate) mod path;
pub mod relay;
pub(crate) mod session;
pub mod socks4;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod splice;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod udp;
pub mod upstream;

pub use conn::ServeContext;
pub use listener::SocksListener;
