//! `lab-delay QUEUE DELAY_MS`: the lab's stand-in for `tc netem delay` (NFQUEUE, Linux only;
//! see lab_delay_linux.rs). Elsewhere it says so and exits.

#[cfg(target_os = "linux")]
#[path = "lab_delay_linux.rs"]
mod linux;

#[cfg(target_os = "linux")]
fn main() -> anyhow::Result<()> {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("lab-delay needs Linux (it is an NFQUEUE helper for the network-namespace lab)");
    std::process::exit(1);
}
