//! The soak (issue 16): netmix over three flapping links under load for 30 minutes (root, lab):
//!
//! ```sh
//! cargo build --release --workspace
//! NETMIX_PROFILE=release cargo bench -p netmix-integration --bench soak [-- --minutes N --seed S]
//! ```
//!
//! Prints the report of `netmix_integration::soak::run_soak`.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let minutes = value("--minutes").unwrap_or(30.0);
    let seed = value("--seed").map_or(0x5eed, |s| s as u64);
    println!(
        "netmix soak, {minutes} min, seed {seed:#x} — {}",
        netmix_integration::netmix_bin().display()
    );
    let report = netmix_integration::soak::run_soak(Duration::from_secs_f64(minutes * 60.0), seed);
    println!("{report}");
}
