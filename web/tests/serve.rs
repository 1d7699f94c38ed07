//! `serve` over real TCP: a plain HTTP/1.1 request, a raw WebSocket upgrade, and graceful
//! shutdown that ends `serve` even with an idle keep-alive connection and an open WebSocket.

mod common;

use std::time::Duration;

use common::harness;
use netmix_web::models::InterfaceDto;
use netmix_web::{WebConfig, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Reads one HTTP response head (up to the blank line) and returns it plus any bytes after it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
            return (head, buf[end + 4..].to_vec());
        }
        let n = timeout(Duration::from_secs(3), stream.read(&mut chunk))
            .await
            .expect("response head within 3 s")
            .unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("content-length")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_real_http_and_shuts_down_gracefully() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut h = harness();
    h.ctx.config = WebConfig {
        token: common::TOKEN.to_owned(),
        allowed_hosts: WebConfig::loopback_hosts(addr.port()),
        proxy: Some(common::PROXY),
    };
    let expected = h.ctx.feed.borrow().interfaces.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(h.ctx.clone(), listener, async move {
        let _ = stop_rx.await;
    }));

    // 1. A keep-alive request, answered; the connection stays open and idle.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /api/interfaces HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    idle.write_all(request.as_bytes()).await.unwrap();
    let (head, mut body) = read_head(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len = content_length(&head);
    while body.len() < len {
        let mut chunk = vec![0u8; len - body.len()];
        let n = idle.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        body.extend_from_slice(&chunk[..n]);
    }
    let interfaces: Vec<InterfaceDto> = serde_json::from_slice(&body).unwrap();
    assert_eq!(interfaces, expected);

    // 2. The same over `localhost:<port>` with Connection: close, then a refused Host.
    let mut once = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/strategy HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    once.write_all(request.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    timeout(Duration::from_secs(3), once.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    assert!(all.starts_with(b"HTTP/1.1 200"));

    let mut rebound = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/feed HTTP/1.1\r\nHost: attacker.example:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    rebound.write_all(request.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    timeout(Duration::from_secs(3), rebound.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    assert!(
        all.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&all)
    );

    // 3. A raw WebSocket upgrade from an allowed origin; the first frame arrives.
    let mut ws = TcpStream::connect(addr).await.unwrap();
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    ws.write_all(upgrade.as_bytes()).await.unwrap();
    let (head, first) = read_head(&mut ws).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut frame = first;
    if frame.is_empty() {
        let mut chunk = [0u8; 1024];
        let n = timeout(Duration::from_secs(3), ws.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        frame.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(frame[0], 0x81, "first frame is a final text frame");

    // 4. Shutdown: serve returns although a keep-alive connection and a WebSocket are open,
    // and the WebSocket is closed by the server.
    stop_tx.send(()).unwrap();
    timeout(Duration::from_secs(5), server)
        .await
        .expect("serve did not return after shutdown")
        .unwrap();
    let mut rest = Vec::new();
    timeout(Duration::from_secs(3), ws.read_to_end(&mut rest))
        .await
        .expect("WebSocket still open after shutdown")
        .ok();
    assert!(
        rest.windows(2).any(|w| w[0] == 0x88) || rest.is_empty(),
        "expected a close frame or EOF"
    );
    let mut idle_rest = Vec::new();
    timeout(Duration::from_secs(3), idle.read_to_end(&mut idle_rest))
        .await
        .expect("idle keep-alive connection still open after shutdown")
        .ok();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still accepting"
    );
}

/// Whether the server closes `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn get_status(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = read_head(&mut s).await;
    head.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_silent_ones_closed() {
    let (addr, stop, server) = common::start_serving().await;
    // Silent clients (no request at all, or headers that never end) up to the cap.
    let mut held = Vec::new();
    for i in 0..netmix_web::MAX_CONNECTIONS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /api/feed HTTP/1.1\r\nHost: ")
                .await
                .unwrap();
        }
        held.push(s);
    }
    // Let the server accept them all, then one more is closed at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "a connection past the cap is closed at once"
    );
    // Every silent one is closed by the header timeout, and then good clients are served.
    let deadline = netmix_web::HEADER_TIMEOUT + Duration::from_secs(3);
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            closed_within(s, deadline).await,
            "silent connection {i} still open after {deadline:?}"
        );
    }
    assert_eq!(get_status(addr, "/api/strategy").await, "HTTP/1.1 200 OK");
    stop.send(()).unwrap();
    timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feeds_are_capped() {
    let (addr, stop, server) = common::start_serving().await;
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let mut feeds = Vec::new();
    for _ in 0..netmix_web::MAX_LIVE_FEEDS {
        let mut ws = TcpStream::connect(addr).await.unwrap();
        ws.write_all(upgrade.as_bytes()).await.unwrap();
        let (head, _) = read_head(&mut ws).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        feeds.push(ws);
    }
    let mut one_more = TcpStream::connect(addr).await.unwrap();
    one_more.write_all(upgrade.as_bytes()).await.unwrap();
    let (head, _) = read_head(&mut one_more).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // Closing one frees its place.
    drop(feeds.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut ws = TcpStream::connect(addr).await.unwrap();
        ws.write_all(upgrade.as_bytes()).await.unwrap();
        let (head, _) = read_head(&mut ws).await;
        if head.starts_with("HTTP/1.1 101") {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        again.is_some(),
        "a closed feed's place is given to the next one"
    );
    stop.send(()).unwrap();
    timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
}
