//! The `/ws` live feed through `warp::test::ws()`: delivery, updates, rate, Origin and Host checks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{HOST, harness, sample_feed};
use netmix_web::models::Feed;
use netmix_web::routes;
use tokio::time::{Instant, timeout};
use warp::http::StatusCode;
use warp::test::WsClient;

async fn next_feed(client: &mut WsClient) -> Feed {
    let message = timeout(Duration::from_secs(3), client.recv())
        .await
        .expect("no feed message within 3 s")
        .expect("socket closed");
    assert!(message.is_text(), "feed messages are text");
    serde_json::from_str(message.to_str().unwrap()).expect("message is a Feed")
}

#[tokio::test]
async fn ws_sends_the_feed_and_every_update() {
    let h = harness();
    let mut client = warp::test::ws()
        .path("/ws")
        .header("host", HOST)
        .handshake(routes(h.ctx.clone()))
        .await
        .expect("handshake");

    let first = next_feed(&mut client).await;
    assert_eq!(first, **h.ctx.feed.borrow());

    h.feed.send_replace(Arc::new(sample_feed(2, 10)));
    let mut feed = next_feed(&mut client).await;
    while feed.version < 2 {
        feed = next_feed(&mut client).await;
    }
    assert_eq!(feed, sample_feed(2, 10));
}

#[tokio::test]
async fn ws_trims_connections_on_request() {
    let h = harness();
    let mut client = warp::test::ws()
        .path("/ws?connections=25")
        .header("host", HOST)
        .header("origin", "http://localhost:5000")
        .handshake(routes(h.ctx.clone()))
        .await
        .expect("handshake with an allowed origin");
    let feed = next_feed(&mut client).await;
    assert_eq!(feed.connections.len(), 25);
    assert_eq!(feed.connections, h.ctx.feed.borrow().connections[..25]);
}

#[tokio::test]
async fn ws_repeats_the_feed_every_second_and_throttles_bursts() {
    let h = harness();
    let mut client = warp::test::ws()
        .path("/ws")
        .header("host", HOST)
        .handshake(routes(h.ctx.clone()))
        .await
        .expect("handshake");
    next_feed(&mut client).await;

    // No change: the same feed again after about a second.
    let start = Instant::now();
    let again = next_feed(&mut client).await;
    let gap = start.elapsed();
    assert_eq!(again.version, 1);
    assert!(
        gap >= Duration::from_millis(800) && gap <= Duration::from_millis(1600),
        "{gap:?}"
    );

    // A burst of 20 updates in 200 ms yields a few messages, the last one current.
    let sender = h.feed.clone();
    let burst = tokio::spawn(async move {
        for version in 2..=21 {
            sender.send_replace(Arc::new(sample_feed(version, 5)));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let start = Instant::now();
    let mut received = 0;
    let mut last = 0;
    while last < 21 {
        last = next_feed(&mut client).await.version;
        received += 1;
        assert!(start.elapsed() < Duration::from_secs(2), "update lost");
    }
    burst.await.unwrap();
    assert!(
        received <= 4,
        "{received} messages for a 200 ms burst: not throttled"
    );
}

#[tokio::test]
async fn ws_from_a_foreign_origin_is_refused() {
    let h = harness();
    for origin in [
        "http://evil.example:5000",
        "https://127.0.0.1:5000",
        "null",
        "http://127.0.0.1:5001",
    ] {
        let outcome = warp::test::ws()
            .path("/ws")
            .header("host", HOST)
            .header("origin", origin)
            .handshake(routes(h.ctx.clone()))
            .await;
        assert!(outcome.is_err(), "origin {origin} was accepted");
    }

    // The same refusal seen as an HTTP response: 403 with a JSON error.
    let res = warp::test::request()
        .path("/ws")
        .header("host", HOST)
        .header("origin", "http://evil.example:5000")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .reply(&routes(h.ctx.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(res.body()).contains("origin"));
}

#[tokio::test]
async fn ws_with_a_foreign_host_is_refused() {
    let h = harness();
    let outcome = warp::test::ws()
        .path("/ws")
        .header("host", "rebound.example:5000")
        .handshake(routes(h.ctx.clone()))
        .await;
    assert!(outcome.is_err());
}

#[tokio::test]
async fn ws_closes_when_the_engine_stops_publishing() {
    let h = common::harness_with(sample_feed(1, 10), false);
    let mut client = warp::test::ws()
        .path("/ws")
        .header("host", HOST)
        .handshake(routes(h.ctx.clone()))
        .await
        .expect("handshake");
    next_feed(&mut client).await;
    let common::Harness { ctx, feed, control } = h;
    drop((ctx, feed, control));
    // The only sender is gone: the server closes the socket.
    timeout(Duration::from_secs(3), async {
        while client.recv().await.is_ok() {}
    })
    .await
    .expect("socket still open after the feed ended");
}
