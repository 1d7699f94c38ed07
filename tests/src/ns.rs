//! Running things inside a network namespace.
//!
//! [`in_ns`] runs a closure on a fresh thread that first `setns`'d into the namespace
//! (`/var/run/netns/<ns>`); sockets made there stay in that namespace for their whole life,
//! which is how the test process puts servers and clients inside the lab. External commands
//! go through `ip netns exec` ([`command_in`], [`run_in`], [`sh`]), which also applies the
//! namespace's `/etc/netns/<ns>/` files (e.g. the `hosts` written by
//! [`crate::Lab::set_hosts`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sched::{CloneFlags, setns};

/// A `Command` that runs `args` inside namespace `ns` (`ip netns exec ns args...`).
pub fn command_in(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

/// Runs `args` inside namespace `ns` and returns its output, whatever the exit status.
pub fn run_in(ns: &str, args: &[&str]) -> Output {
    command_in(ns, args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip netns exec {ns} {}`: {e}", args.join(" ")))
}

/// Runs `args` inside namespace `ns`, panics with the command and its stderr on failure,
/// returns its stdout.
pub fn sh(ns: &str, args: &[&str]) -> String {
    check(
        &format!("ip netns exec {ns} {}", args.join(" ")),
        run_in(ns, args),
    )
}

/// Runs `args` in the test's own namespace (used for `ip netns add/del` and `ip -n`).
pub(crate) fn host(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", args.join(" ")));
    check(&args.join(" "), out)
}

/// [`sh`] with `cmd` split on whitespace (lab names and addresses contain none).
pub(crate) fn sh_words(ns: &str, cmd: &str) -> String {
    sh(ns, &cmd.split_whitespace().collect::<Vec<_>>())
}

/// `ip -n <ns> <cmd>`, with `cmd` split on whitespace (lab names contain none).
pub(crate) fn ip_n(ns: &str, cmd: &str) -> String {
    let mut args = vec!["ip", "-n", ns];
    args.extend(cmd.split_whitespace());
    host(&args)
}

fn check(what: &str, out: Output) -> String {
    if !out.status.success() {
        panic!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn netns_path(ns: &str) -> PathBuf {
    Path::new("/var/run/netns").join(ns)
}

/// Runs `f` on a fresh thread that has first joined network namespace `ns`, and returns its
/// result (a panic in `f` is propagated). Sockets created in `f` belong to `ns` for their
/// whole life, whatever thread uses them later.
pub fn in_ns<T, F>(ns: &str, f: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = netns_path(ns);
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let fd =
                File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            setns(&fd, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Writes a sysctl of the current thread's network namespace (/proc/sys/net is per netns).
pub(crate) fn write_net_sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/net/{}", key.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
}
