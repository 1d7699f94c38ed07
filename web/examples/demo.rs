//! Serves the dashboard over a changing fake feed, for looking at the page without an engine.
//!
//! ```text
//! cargo run -p netmix-web --example demo [ADDR]      # default 127.0.0.1:5055
//! ```
//!
//! The strategy switch works (token `demo-token`); the feed changes twice a second.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netmix_web::models::{EventDto, Feed};
use netmix_web::{Control, WebConfig, WebContext, serve};
use tokio::sync::watch;

const TOKEN: &str = "demo-token";

/// Switches the fake engine's strategy (seen in the next published feed).
struct DemoControl {
    active: Arc<Mutex<String>>,
}

impl Control for DemoControl {
    fn set_strategy(&self, name: &str) -> Result<(), String> {
        if !common::STRATEGIES.contains(&name) {
            return Err(format!("unknown strategy {name:?}"));
        }
        *self.active.lock().unwrap() = name.to_owned();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5055".to_owned())
        .parse()
        .expect("ADDR like 127.0.0.1:5055");
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let port = listener.local_addr()?.port();

    let active = Arc::new(Mutex::new("latency".to_owned()));
    let (tx, rx) = watch::channel(Arc::new(Feed::default()));
    let ctx = WebContext {
        feed: rx,
        control: Arc::new(DemoControl {
            active: active.clone(),
        }),
        config: WebConfig {
            token: TOKEN.to_owned(),
            allowed_hosts: WebConfig::loopback_hosts(port),
            proxy: Some(SocketAddr::from(([127, 0, 0, 1], 1080))),
        },
    };

    tokio::spawn(async move {
        let mut version = 1;
        let mut previous = String::new();
        loop {
            let mut feed = common::sample_feed(version, 1000);
            let current = active.lock().unwrap().clone();
            if !previous.is_empty() && current != previous {
                feed.events.insert(
                    0,
                    EventDto {
                        unix_ms: feed.events[0].unix_ms + 1,
                        kind: "strategy_changed".into(),
                        message: format!("strategy changed from {previous} to {current}"),
                        interface: None,
                    },
                );
            }
            feed.strategy.active = current.clone();
            previous = current;
            if tx.send(Arc::new(feed)).is_err() {
                break;
            }
            version += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    println!("netmix dashboard demo on http://127.0.0.1:{port}/  (token: {TOKEN})");
    serve(ctx, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
