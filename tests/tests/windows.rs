//! netmix.exe under Wine (issue 15): the Windows build runs `netmix run` in a lab namespace,
//! relays a SOCKS5 and an HTTP CONNECT connection from a Linux client to a loopback server,
//! and answers the dashboard's `/api/interfaces`.
//!
//! What Wine cannot show: real per-interface routing. Wine hands netmix the Linux interfaces
//! (names like `wan0`, indexes Linux's) and turns `IP_UNICAST_IF` into its own emulation, so
//! this test relays to loopback only; binding to a link is tested on Linux.
//!
//! Needs `target/x86_64-pc-windows-gnu/debug/netmix.exe` (scripts/test.sh builds it:
//! `cargo build --target x86_64-pc-windows-gnu --workspace --exclude netmix-integration`) and
//! Wine (scripts/wine/runner.sh). Fails, never skips, when either is missing.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use netmix_integration::{Engine, Lab, Target, api, socks5_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn windows_exe() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let exe = target.join("x86_64-pc-windows-gnu/debug/netmix.exe");
    assert!(
        exe.is_file(),
        "{} is missing: build it first (cargo build --target x86_64-pc-windows-gnu --workspace \
         --exclude netmix-integration; scripts/test.sh does)",
        exe.display()
    );
    exe
}

/// A server on 127.0.0.1 in the lab's client namespace that answers each connection with
/// `hello` and echoes one line back.
fn loopback_server(lab: &Lab) -> SocketAddr {
    let listener = lab.in_client(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten().take(8) {
            let _ = s.write_all(b"hello\n");
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
        }
    });
    addr
}

fn free_port(lab: &Lab) -> u16 {
    lab.in_client(|| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netmix_exe_relays_socks5_and_http_connect_under_wine() {
    let exe = windows_exe();
    let runner = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/wine/runner.sh");
    let lab = Lab::with_links(1);
    let server = loopback_server(&lab);
    let (socks, dashboard) = (free_port(&lab), free_port(&lab));
    let config = format!(
        "strategy = \"round-robin\"\n[socks]\nlisten = \"127.0.0.1:{socks}\"\n\n[interfaces]\n\
         include = [\"wan*\"]\n\n[dashboard]\nlisten = \"127.0.0.1:{dashboard}\"\n\n[zerotier]\nenabled = false\n"
    );
    let exe = exe.display().to_string();
    let engine = Engine::spawn_program(
        &lab,
        &runner,
        &[&exe, "run", "--config", "Z:{config}"],
        &config,
    );
    eprintln!(
        "windows smoke test: netmix.exe runs under Wine; what Wine cannot show: real \
         per-interface routing (IP_UNICAST_IF is Wine's emulation), so it relays to loopback only"
    );

    // SOCKS5.
    let s = lab.connect_client(engine.socks_addr()).await;
    let mut r = tokio::time::timeout(
        Duration::from_secs(20),
        socks5_connect(s, Target::Ip(server), None),
    )
    .await
    .expect("SOCKS5 exchange timed out")
    .expect("SOCKS5 exchange");
    assert_eq!(
        r.code,
        0,
        "SOCKS5 CONNECT through netmix.exe\n{}",
        engine.logs()
    );
    let mut hello = [0u8; 6];
    r.stream.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello\n");
    r.stream.write_all(b"socks5\n").await.unwrap();
    let mut back = [0u8; 7];
    r.stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"socks5\n", "bytes relayed both ways");

    // HTTP CONNECT, on the same port.
    let mut h = lab.connect_client(engine.socks_addr()).await;
    h.write_all(format!("CONNECT {server} HTTP/1.1\r\nHost: {server}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(20), h.read_exact(&mut byte))
            .await
            .expect("CONNECT answer")
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{head}\n{}",
        engine.logs()
    );
    h.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello\n");
    h.write_all(b"connect\n").await.unwrap();
    let mut back = [0u8; 8];
    h.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"connect\n");

    // The dashboard's read API.
    let list = api(
        &lab,
        SocketAddr::from((Ipv4Addr::LOCALHOST, dashboard)),
        "/api/interfaces",
    )
    .await;
    let names: Vec<&str> = list
        .as_array()
        .expect("an interface list")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(
        names.contains(&"wan0"),
        "Wine reports the Linux interface names: {names:?}"
    );
    assert!(
        engine.logs().contains("netmix is ready"),
        "{}",
        engine.logs()
    );
}
