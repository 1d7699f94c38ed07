//! `lab-lookup NAME...` — resolves each name with `tokio::net::lookup_host` (the system
//! resolver, getaddrinfo: /etc/hosts, then resolv.conf's servers out of the default route) and
//! prints one line per name: the microseconds it took and the number of addresses (0 when it
//! failed). The DNS benchmark runs it inside the lab's client namespace (`ip netns exec`, so
//! the namespace's resolv.conf applies) as the reference netmix's own resolution is measured
//! against.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    for name in std::env::args().skip(1) {
        let started = std::time::Instant::now();
        let found = tokio::net::lookup_host((name.as_str(), 0))
            .await
            .map(|a| a.count())
            .unwrap_or(0);
        println!("{} {found}", started.elapsed().as_micros());
    }
}
