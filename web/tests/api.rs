//! The JSON API, the page, and the guards, through `warp::test::request()`.

mod common;

use std::sync::Arc;

use common::{HOST, TOKEN, harness, harness_with, sample_feed};
use netmix_web::models::{ConnectionDto, ErrorBody, EventDto, Feed, InterfaceDto, StrategyDto};
use netmix_web::routes;
use serde::de::DeserializeOwned;
use warp::http::{Response, StatusCode};
use warp::hyper::body::Bytes;

fn get(path: &str) -> warp::test::RequestBuilder {
    warp::test::request()
        .method("GET")
        .path(path)
        .header("host", HOST)
}

fn post_strategy(body: &str) -> warp::test::RequestBuilder {
    warp::test::request()
        .method("POST")
        .path("/api/strategy")
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(body)
}

fn parse<T: DeserializeOwned>(res: &Response<Bytes>) -> T {
    serde_json::from_slice(res.body()).unwrap_or_else(|err| {
        panic!(
            "body is not the expected JSON ({err}): {}",
            String::from_utf8_lossy(res.body())
        )
    })
}

fn error_of(res: &Response<Bytes>) -> String {
    parse::<ErrorBody>(res).error
}

fn content_type(res: &Response<Bytes>) -> &str {
    res.headers()["content-type"].to_str().unwrap()
}

#[tokio::test]
async fn interfaces_feed_and_strategy_mirror_the_watch_channel() {
    let h = harness();
    let api = routes(h.ctx.clone());
    let expected = h.ctx.feed.borrow().clone();

    let res = get("/api/interfaces").reply(&api).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(content_type(&res), "application/json");
    assert_eq!(parse::<Vec<InterfaceDto>>(&res), expected.interfaces);

    let res = get("/api/feed").reply(&api).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(parse::<Feed>(&res), *expected);

    let res = get("/api/strategy").reply(&api).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(parse::<StrategyDto>(&res), expected.strategy);

    // A new snapshot is visible to the next request.
    h.feed.send_replace(Arc::new(sample_feed(2, 3)));
    let res = get("/api/feed").reply(&api).await;
    assert_eq!(parse::<Feed>(&res).version, 2);
}

#[tokio::test]
async fn connections_default_to_100_newest_and_cap_at_1000() {
    let h = harness();
    let api = routes(h.ctx.clone());
    let all = h.ctx.feed.borrow().connections.clone();
    assert_eq!(all.len(), 1000);

    let res = get("/api/connections").reply(&api).await;
    assert_eq!(res.status(), StatusCode::OK);
    let list: Vec<ConnectionDto> = parse(&res);
    assert_eq!(list, all[..100]);

    let list: Vec<ConnectionDto> = parse(&get("/api/connections?limit=7").reply(&api).await);
    assert_eq!(list, all[..7]);

    let list: Vec<ConnectionDto> = parse(&get("/api/connections?limit=0").reply(&api).await);
    assert!(list.is_empty());

    let list: Vec<ConnectionDto> = parse(&get("/api/connections?limit=99999").reply(&api).await);
    assert_eq!(list.len(), 1000);

    let res = get("/api/connections?limit=lots").reply(&api).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(!error_of(&res).is_empty());

    // Fewer connections than the limit.
    h.feed.send_replace(Arc::new(sample_feed(2, 5)));
    let list: Vec<ConnectionDto> = parse(&get("/api/connections?limit=50").reply(&api).await);
    assert_eq!(list.len(), 5);
}

#[tokio::test]
async fn events_default_to_100_and_cap_at_500() {
    let h = harness();
    let api = routes(h.ctx.clone());
    let all = h.ctx.feed.borrow().events.clone();

    let list: Vec<EventDto> = parse(&get("/api/events").reply(&api).await);
    assert_eq!(list, all[..100]);
    let list: Vec<EventDto> = parse(&get("/api/events?limit=3").reply(&api).await);
    assert_eq!(list, all[..3]);
    let list: Vec<EventDto> = parse(&get("/api/events?limit=100000").reply(&api).await);
    assert_eq!(list.len(), 500);
}

#[tokio::test]
async fn page_and_assets_are_served_without_the_token() {
    let h = harness();
    let api = routes(h.ctx.clone());

    let res = get("/").reply(&api).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(content_type(&res), "text/html; charset=utf-8");
    let page = String::from_utf8(res.body().to_vec()).unwrap();
    for id in [
        "id=\"ws-status\"",
        "id=\"strategy-select\"",
        "id=\"strategy-apply\"",
        "id=\"token-input\"",
        "id=\"connections\"",
        "id=\"events\"",
        "id=\"restart-marker\"",
        "id=\"no-connections\"",
        "id=\"no-events\"",
        "/static/app.js",
        "/static/style.css",
    ] {
        assert!(page.contains(id), "page lacks {id}");
    }
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(res.headers()["x-frame-options"], "DENY");

    let res = get("/static/app.js").reply(&api).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(content_type(&res).starts_with("text/javascript"));
    let js = String::from_utf8(res.body().to_vec()).unwrap();
    for hook in [
        "iface-card",
        "data-field",
        "reconnecting",
        "localStorage",
        "Bearer ",
        // Restart marker, failed rows, ZeroTier absent.
        "started_unix_ms",
        "c.tried",
        "not_installed",
    ] {
        assert!(js.contains(hook), "app.js lacks {hook}");
    }

    let res = get("/static/style.css").reply(&api).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(content_type(&res).starts_with("text/css"));

    let res = get("/static/secret.txt").reply(&api).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn no_get_response_contains_the_token() {
    let h = harness();
    let api = routes(h.ctx.clone());
    for path in [
        "/",
        "/static/app.js",
        "/static/style.css",
        "/api/feed",
        "/api/interfaces",
        "/api/connections?limit=1000",
        "/api/events?limit=500",
        "/api/strategy",
        "/metrics",
        "/nope",
    ] {
        let res = get(path).reply(&api).await;
        let body = String::from_utf8_lossy(res.body());
        assert!(!body.contains(TOKEN), "{path} leaks the token");
        for (name, value) in res.headers() {
            assert!(
                !value.to_str().unwrap_or_default().contains(TOKEN),
                "{path} leaks the token in {name}"
            );
        }
    }
    assert!(
        !format!("{:?}", h.ctx).contains(TOKEN),
        "Debug leaks the token"
    );
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_json_errors() {
    let h = harness();
    let api = routes(h.ctx.clone());

    let res = get("/api/nope").reply(&api).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(content_type(&res), "application/json");
    assert_eq!(error_of(&res), "not found");

    let res = warp::test::request()
        .method("DELETE")
        .path("/api/interfaces")
        .header("host", HOST)
        .reply(&api)
        .await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(!error_of(&res).is_empty());

    let res = warp::test::request()
        .method("PUT")
        .path("/api/strategy")
        .header("host", HOST)
        .reply(&api)
        .await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Plain GET on /ws without an upgrade.
    let res = get("/ws").reply(&api).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(!error_of(&res).is_empty());
}

#[tokio::test]
async fn foreign_host_is_refused_on_every_route() {
    let h = harness();
    let api = routes(h.ctx.clone());
    for path in [
        "/",
        "/static/app.js",
        "/api/feed",
        "/api/interfaces",
        "/metrics",
        "/ws",
        "/nope",
    ] {
        for host in ["evil.example:5000", "127.0.0.1:5001", "localhost"] {
            let res = warp::test::request()
                .path(path)
                .header("host", host)
                .reply(&api)
                .await;
            assert_eq!(
                res.status(),
                StatusCode::FORBIDDEN,
                "{path} with Host {host}"
            );
            assert!(error_of(&res).contains("not allowed"));
        }
        // No Host header at all.
        let res = warp::test::request().path(path).reply(&api).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path} without Host");
    }
    // POST with a valid token but a foreign Host: still refused, and the engine is not called.
    let res = post_strategy(r#"{"name":"sticky"}"#)
        .header("host", "evil.example:5000")
        .header("authorization", format!("Bearer {TOKEN}"))
        .reply(&api)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(h.control.calls().is_empty());

    // Allowed hosts compare case-insensitively.
    let res = warp::test::request()
        .path("/api/strategy")
        .header("host", "LocalHost:5000")
        .reply(&api)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn strategy_switch_needs_the_token() {
    let h = harness();
    let api = routes(h.ctx.clone());

    let res = post_strategy(r#"{"name":"sticky"}"#).reply(&api).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(error_of(&res).contains("missing"));
    assert!(res.headers().contains_key("www-authenticate"));

    for header in [
        "Bearer wrong".to_owned(),
        format!("Bearer {}", &TOKEN[..31]),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
        "Bearer ".to_owned(),
    ] {
        let res = post_strategy(r#"{"name":"sticky"}"#)
            .header("authorization", header.as_str())
            .reply(&api)
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(error_of(&res), "wrong token");
    }
    // Even a malformed body gets 401 first: nothing is parsed before authentication.
    let res = post_strategy("{not json").reply(&api).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        h.control.calls().is_empty(),
        "engine called without a valid token"
    );
}

#[tokio::test]
async fn empty_configured_token_refuses_everyone() {
    let mut h = harness();
    h.ctx.config.token = String::new();
    let api = routes(h.ctx.clone());
    let res = post_strategy(r#"{"name":"sticky"}"#)
        .header("authorization", "Bearer ")
        .reply(&api)
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(h.control.calls().is_empty());
}

#[tokio::test]
async fn strategy_switch_with_token_returns_the_published_strategy() {
    let h = harness();
    let api = routes(h.ctx.clone());
    let res = post_strategy(r#"{"name":"sticky"}"#)
        .header("authorization", format!("Bearer {TOKEN}"))
        .reply(&api)
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(res.body())
    );
    let strategy: StrategyDto = parse(&res);
    assert_eq!(strategy.active, "sticky");
    assert_eq!(strategy.available.len(), 3);
    assert_eq!(h.control.calls(), ["sticky"]);
    assert_eq!(h.ctx.feed.borrow().strategy.active, "sticky");

    let res = get("/api/strategy").reply(&api).await;
    assert_eq!(parse::<StrategyDto>(&res).active, "sticky");
}

#[tokio::test(start_paused = true)]
async fn strategy_switch_answers_even_if_the_engine_publishes_late() {
    let h = harness_with(sample_feed(1, 10), false);
    let api = routes(h.ctx.clone());
    let res = post_strategy(r#"{"name":"round-robin"}"#)
        .header("authorization", format!("bearer {TOKEN}"))
        .reply(&api)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let strategy: StrategyDto = parse(&res);
    assert_eq!(strategy.active, "round-robin");
    assert_eq!(strategy.available, h.ctx.feed.borrow().strategy.available);
    assert_eq!(h.control.calls(), ["round-robin"]);
}

#[tokio::test]
async fn bad_strategy_requests_get_400_with_the_reason() {
    let h = harness();
    let api = routes(h.ctx.clone());
    let auth = format!("Bearer {TOKEN}");

    let res = post_strategy(r#"{"name":"quantum"}"#)
        .header("authorization", auth.as_str())
        .reply(&api)
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&res),
        "unknown strategy \"quantum\"; available: round-robin, latency, sticky"
    );
    assert_eq!(h.ctx.feed.borrow().strategy.active, "latency");

    for body in [
        "{not json",
        r#"{"nom":"sticky"}"#,
        r#"{"name":7}"#,
        "",
        r#"{"name":"  "}"#,
    ] {
        let res = post_strategy(body)
            .header("authorization", auth.as_str())
            .reply(&api)
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "body {body:?}");
        assert!(!error_of(&res).is_empty());
    }
    // Only the well-formed request reached the engine.
    assert_eq!(h.control.calls(), ["quantum"]);
}

#[tokio::test]
async fn oversized_body_is_refused_with_413() {
    let h = harness();
    let api = routes(h.ctx.clone());
    let body = format!(r#"{{"name":"{}"}}"#, "x".repeat(5000));
    let res = post_strategy(&body)
        .header("authorization", format!("Bearer {TOKEN}"))
        .reply(&api)
        .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&res).contains("4096"));
    assert!(h.control.calls().is_empty());
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text() {
    let h = harness();
    let api = routes(h.ctx.clone());
    let res = get("/metrics").reply(&api).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        content_type(&res),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(res.body().to_vec()).unwrap();
    assert!(text.contains("netmix_interface_up{interface=\"wan0\",kind=\"physical\"} 1\n"));
    assert!(text.contains("netmix_interface_up{interface=\"zt3jn4wqde\",kind=\"zerotier\"} 0\n"));
}
