//! `/ws`: pushes the [`Feed`] as JSON text messages to one dashboard.
//!
//! Unlike warp's chat example (a map of per-user mpsc senders), every socket here owns a clone of
//! the engine's `watch` receiver: a slow tab skips intermediate snapshots instead of queueing
//! them, and nothing has to be unregistered when it leaves.
//!
//! Rate: a changed feed is sent at once unless the previous message went out less than
//! [`MIN_SEND_INTERVAL`] ago (then when that interval ends); with no change the current feed is
//! re-sent after [`MAX_SILENCE`], which lets the page detect a dead connection.

use std::future::pending;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::time::{Instant, MissedTickBehavior};
use warp::ws::{Message, WebSocket};

use crate::WebContext;
use crate::filters::Stop;
use crate::models::Feed;

/// Shortest gap between two messages on one socket.
pub(crate) const MIN_SEND_INTERVAL: Duration = Duration::from_millis(250);
/// Longest gap between two messages on one socket.
pub(crate) const MAX_SILENCE: Duration = Duration::from_secs(1);
/// A client that cannot take a message for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// WebSocket close code "going away", sent on shutdown or when the engine stops publishing.
const CLOSE_GOING_AWAY: u16 = 1001;

/// Runs one dashboard connection until the client leaves, a send fails, the feed's sender is
/// dropped, or `stop` fires.
///
/// `max_connections` trims each message's connection list to the newest N (the page shows a
/// bounded window and need not parse the rest).
pub(crate) async fn run(
    socket: WebSocket,
    ctx: WebContext,
    max_connections: Option<usize>,
    stop: Stop,
) {
    let (mut tx, mut rx) = socket.split();
    let mut feed = ctx.feed.clone();
    let mut stop = pin!(stopped(stop));
    let mut throttle = pin!(tokio::time::sleep(Duration::ZERO));
    // A change arrived while the throttle was running.
    let mut pending_change = false;
    let mut last_sent = Instant::now() - MIN_SEND_INTERVAL;
    // The first tick completes at once, which sends the current feed on connect.
    let mut heartbeat = tokio::time::interval(MAX_SILENCE);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tracing::debug!("Dashboard WebSocket opened.");

    loop {
        let send_now = tokio::select! {
            () = &mut stop => {
                close(&mut tx, "server shutting down").await;
                break;
            }
            changed = feed.changed(), if !pending_change => {
                if changed.is_err() {
                    close(&mut tx, "engine stopped").await;
                    break;
                }
                pending_change = true;
                throttle.as_mut().reset(last_sent + MIN_SEND_INTERVAL);
                false
            }
            () = &mut throttle, if pending_change => true,
            _ = heartbeat.tick() => true,
            incoming = rx.next() => match incoming {
                // Pings are answered by tungstenite itself; the page sends nothing else.
                Some(Ok(message)) if !message.is_close() => false,
                _ => break,
            },
        };
        if !send_now {
            continue;
        }
        pending_change = false;
        let snapshot = feed.borrow_and_update().clone();
        let text = match encode(&snapshot, max_connections) {
            Ok(text) => text,
            Err(err) => {
                tracing::error!(error = %err, "Could not encode the dashboard feed.");
                break;
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::text(text))).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "Dashboard WebSocket send failed.");
                break;
            }
            Err(_) => {
                tracing::debug!("Dashboard WebSocket too slow; dropped it.");
                break;
            }
        }
        last_sent = Instant::now();
        heartbeat.reset();
    }
    tracing::debug!("Dashboard WebSocket closed.");
}

/// The feed as JSON, with at most `max_connections` connections.
fn encode(feed: &Arc<Feed>, max_connections: Option<usize>) -> serde_json::Result<String> {
    match max_connections {
        Some(n) if n < feed.connections.len() => {
            let trimmed = Feed {
                version: feed.version,
                uptime_ms: feed.uptime_ms,
                started_unix_ms: feed.started_unix_ms,
                interfaces: feed.interfaces.clone(),
                strategy: feed.strategy.clone(),
                totals: feed.totals.clone(),
                connections: feed.connections[..n].to_vec(),
                events: feed.events.clone(),
                zerotier: feed.zerotier.clone(),
            };
            serde_json::to_string(&trimmed)
        }
        _ => serde_json::to_string(&**feed),
    }
}

async fn close<S>(tx: &mut S, reason: &'static str)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tx.send(Message::close_with(CLOSE_GOING_AWAY, reason)),
    )
    .await;
}

/// Completes when `stop` turns `true` or its sender drops; never when `stop` is `None`.
async fn stopped(stop: Stop) {
    match stop {
        Some(mut stop) => {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
        None => pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ConnectionDto;

    fn conn(id: u64) -> ConnectionDto {
        ConnectionDto {
            id,
            client: "127.0.0.1:1".into(),
            protocol: "socks5".into(),
            destination: "example.com:443".into(),
            interface: None,
            tried: Vec::new(),
            strategy: "s".into(),
            reason: "r".into(),
            state: "open".into(),
            error: None,
            bytes_up: 0,
            bytes_down: 0,
            started_unix_ms: 0,
            duration_ms: 0,
            retries: 0,
        }
    }

    #[test]
    fn encode_trims_connections_to_the_newest() {
        let feed = Arc::new(Feed {
            version: 3,
            started_unix_ms: 1_764_000_000_000,
            connections: (0..10).rev().map(conn).collect(),
            ..Feed::default()
        });
        let trimmed: Feed = serde_json::from_str(&encode(&feed, Some(2)).unwrap()).unwrap();
        assert_eq!(trimmed.version, 3);
        assert_eq!(
            trimmed.started_unix_ms, 1_764_000_000_000,
            "kept when trimming"
        );
        assert_eq!(
            trimmed.connections.iter().map(|c| c.id).collect::<Vec<_>>(),
            [9, 8]
        );
        let full: Feed = serde_json::from_str(&encode(&feed, None).unwrap()).unwrap();
        assert_eq!(full, *feed);
    }
}
