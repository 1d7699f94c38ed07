//! Helpers for tests that talk to a running netmix: ask the who-am-I server through the proxy,
//! count which link carried what.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::{Engine, Lab, TARGET, Target, WHOAMI_PORT, socks5_connect};

/// One answer of the who-am-I service through netmix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    /// The SOCKS reply code (0 = succeeded).
    pub code: u8,
    /// BND.ADDR/BND.PORT from the reply.
    pub bound: SocketAddr,
    /// The source address the server saw (empty when the connect failed).
    pub seen: String,
}

/// Connects through netmix to the who-am-I service and reads its answer.
///
/// # Panics
/// When the proxy cannot be reached or the SOCKS exchange breaks (not on a failure reply).
pub async fn whoami(lab: &Lab, engine: &Engine) -> WhoAmI {
    let stream = lab.connect_client(engine.socks_addr()).await;
    let target = Target::Ip(SocketAddr::new(TARGET.into(), WHOAMI_PORT));
    let mut reply = tokio::time::timeout(
        Duration::from_secs(20),
        socks5_connect(stream, target, None),
    )
    .await
    .expect("SOCKS exchange timed out")
    .expect("SOCKS exchange");
    let mut seen = String::new();
    if reply.code == 0 {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            reply.stream.read_to_string(&mut seen),
        )
        .await;
    }
    WhoAmI {
        code: reply.code,
        bound: reply.bound,
        seen: seen.trim().to_owned(),
    }
}

/// Makes `n` sequential who-am-I connections and counts them per lab link (by source
/// address); asserts each succeeded and that BND.ADDR matched the link the server saw.
pub async fn spread(lab: &Lab, engine: &Engine, n: usize) -> Vec<usize> {
    let mut counts = vec![0; lab.links().len()];
    for i in 0..n {
        let w = whoami(lab, engine).await;
        assert_eq!(w.code, 0, "connection {i} failed: {w:?}\n{}", engine.logs());
        let ip: IpAddr = w
            .seen
            .parse()
            .unwrap_or_else(|_| panic!("bad answer {w:?}"));
        assert_eq!(
            w.bound.ip(),
            ip,
            "BND.ADDR must be the source the server saw"
        );
        let k = lab
            .link_for_source(ip)
            .unwrap_or_else(|| panic!("{ip} is no lab link"));
        counts[k] += 1;
    }
    counts
}

/// Counts per link name, for messages.
pub fn by_name(lab: &Lab, counts: &[usize]) -> HashMap<String, usize> {
    counts
        .iter()
        .enumerate()
        .map(|(k, c)| (lab.link(k).dev.clone(), *c))
        .collect()
}
