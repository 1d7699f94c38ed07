//! The routes, one function per route, and the guards every request passes: `Host` allow-list,
//! WebSocket `Origin` check, bearer token for state changes.
//!
//! Each route matches its path first and its method second, so that a known path with the wrong
//! method ends as 405 and an unknown path as 404 (see `handlers::handle_rejection`).

use std::convert::Infallible;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::host::Authority;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::WebContext;
use crate::handlers::{self, Forbidden, Unauthorized};

/// Largest accepted request body, in bytes (`POST /api/strategy` needs a few dozen).
pub(crate) const MAX_BODY_BYTES: u64 = 4096;

/// Fires (turns `true`, or its sender drops) when [`crate::serve`] shuts down, to end live
/// WebSockets; `None` when the routes are used without [`crate::serve`].
pub(crate) type Stop = Option<watch::Receiver<bool>>;

/// `?limit=N` on list endpoints.
#[derive(Debug, Deserialize)]
pub(crate) struct LimitQuery {
    /// How many items, newest first; each endpoint has a default and a maximum.
    pub limit: Option<usize>,
}

/// `?connections=N` on `/ws`.
#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    /// Send only the newest `N` connections in each feed message (default: all of them).
    pub connections: Option<usize>,
}

/// Every route behind the Host guard, with rejections mapped to JSON, security headers added and
/// each request traced.
pub(crate) fn all(
    ctx: WebContext,
    stop: Stop,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let allowed: Arc<[String]> = ctx.config.allowed_hosts.clone().into();
    host_guard(allowed)
        .and(api(ctx, stop))
        .recover(handlers::handle_rejection)
        .unify()
        .with(warp::reply::with::headers(security_headers()))
        // One debug line per request: a client's 4xx is not the operator's problem (warp's
        // own tracing says WARN for each), and the line must not be a way to flood the log.
        .with(warp::log::custom(|info| {
            tracing::debug!(
                target: "netmix_web::request",
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                elapsed_ms = info.elapsed().as_millis() as u64,
                "Dashboard request."
            );
        }))
}

/// The routes themselves, without guard or recovery. Boxed to keep the filter type (and compile
/// times) small.
fn api(ctx: WebContext, stop: Stop) -> BoxedFilter<(Response,)> {
    page()
        .or(asset())
        .unify()
        .or(feed(ctx.clone()))
        .unify()
        .or(interfaces(ctx.clone()))
        .unify()
        .or(zerotier(ctx.clone()))
        .unify()
        .or(connections(ctx.clone()))
        .unify()
        .or(events(ctx.clone()))
        .unify()
        .or(strategy(ctx.clone()))
        .unify()
        .or(set_strategy(ctx.clone()))
        .unify()
        .or(metrics(ctx.clone()))
        .unify()
        .or(pac(ctx.clone()))
        .unify()
        .or(live(ctx, stop))
        .unify()
        .boxed()
}

/// GET /
pub(crate) fn page() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path::end().and(warp::get()).map(handlers::page)
}

/// GET /static/app.js, GET /static/style.css
pub(crate) fn asset() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("static" / String)
        .and(warp::get())
        .and_then(|name: String| async move {
            handlers::asset(&name).ok_or_else(warp::reject::not_found)
        })
}

/// GET /api/feed
pub(crate) fn feed(
    ctx: WebContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "feed")
        .and(warp::get())
        .and(with_ctx(ctx))
        .map(handlers::feed)
}

/// GET /api/interfaces
pub(crate) fn interfaces(
    ctx: WebContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "interfaces")
        .and(warp::get())
        .and(with_ctx(ctx))
        .map(handlers::interfaces)
}

/// GET /api/zerotier
pub(crate) fn zerotier(
    ctx: WebContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "zerotier")
        .and(warp::get())
        .and(with_ctx(ctx))
        .map(handlers::zerotier)
}

/// GET /api/connections?limit=N
pub(crate) fn connections(
    ctx: WebContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "connections")
        .and(warp::get())
        .and(warp::query::<LimitQuery>())
        .and(with_ctx(ctx))
        .map(handlers::connections)
}

/// GET /api/events?limit=N
pub(crate) fn events(
    ctx: WebContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "events")
        .and(warp::get())
        .and(warp::query::<LimitQuery>())
        .and(with_ctx(ctx))
        .map(handlers::events)
}

/// GET /api/strategy
pub(crate) fn strategy(
    ctx: WebContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "strategy")
        .and(warp::get())
        .and(with_ctx(ctx))
        .map(handlers::strategy)
}

/// POST /api/strategy with `{"name": "…"}` and `Authorization: Bearer <token>`
///
/// The token is checked before the body is read, so an unauthenticated client learns nothing
/// about body validation.
pub(crate) fn set_strategy(
    ctx: WebContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let token: Arc<str> = ctx.config.token.as_str().into();
    warp::path!("api" / "strategy")
        .and(warp::post())
        .and(bearer(token))
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and(with_ctx(ctx))
        .and_then(handlers::set_strategy)
}

/// GET /metrics
pub(crate) fn metrics(
    ctx: WebContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_ctx(ctx))
        .map(handlers::metrics)
}

/// GET /proxy.pac (no token: browsers and operating systems fetch PAC files plainly)
pub(crate) fn pac(
    ctx: WebContext,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("proxy.pac")
        .and(warp::get())
        .and(with_ctx(ctx))
        .map(handlers::pac)
}

/// GET /ws?connections=N (WebSocket upgrade)
pub(crate) fn live(
    ctx: WebContext,
    stop: Stop,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let allowed: Arc<[String]> = ctx.config.allowed_hosts.clone().into();
    let feeds = Arc::new(tokio::sync::Semaphore::new(crate::MAX_LIVE_FEEDS));
    warp::path!("ws")
        .and(warp::get())
        .and(origin_guard(allowed))
        .and(warp::query::<WsQuery>())
        .and(warp::ws())
        .and(with_ctx(ctx))
        .map(
            move |query: WsQuery, upgrade: warp::ws::Ws, ctx: WebContext| {
                let Ok(slot) = feeds.clone().try_acquire_owned() else {
                    return handlers::error(
                        warp::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "too many live feeds (at most {}); close another dashboard tab",
                            crate::MAX_LIVE_FEEDS
                        ),
                    );
                };
                let stop = stop.clone();
                upgrade
                    .max_message_size(64 * 1024)
                    .on_upgrade(move |socket| async move {
                        crate::ws::run(socket, ctx, query.connections, stop).await;
                        drop(slot);
                    })
                    .into_response()
            },
        )
}

/// Hands each request a clone of the context.
fn with_ctx(ctx: WebContext) -> impl Filter<Extract = (WebContext,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// Rejects (403) a request whose `Host` header, or failing that the authority of its URI (HTTP/2),
/// is not in `allowed`. A request with neither is refused too.
pub(crate) fn host_guard(
    allowed: Arc<[String]>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    // `host::optional` rejects when header and URI disagree; we trust the header in that case.
    let uri_authority = warp::host::optional().or(warp::any().map(|| None)).unify();
    warp::header::optional::<String>(header::HOST.as_str())
        .and(uri_authority)
        .and_then(move |host: Option<String>, authority: Option<Authority>| {
            let allowed = allowed.clone();
            async move {
                let host = host.or_else(|| authority.map(|a| a.as_str().to_owned()));
                match host {
                    Some(host) if is_allowed_host(&allowed, &host) => Ok(()),
                    Some(host) => {
                        tracing::debug!(%host, "Refused a request for a host that is not allowed.");
                        Err(warp::reject::custom(Forbidden(format!(
                            "host {host:?} is not allowed (DNS rebinding protection); \
                             use one of: {}",
                            allowed.join(", ")
                        ))))
                    }
                    None => Err(warp::reject::custom(Forbidden(
                        "a Host header is required".to_owned(),
                    ))),
                }
            }
        })
        .untuple_one()
}

/// Rejects (403) a request whose `Origin` header is present and is not `http://<allowed host>`.
/// Browsers always send `Origin` on WebSocket upgrades; non-browser clients may omit it.
pub(crate) fn origin_guard(
    allowed: Arc<[String]>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>(header::ORIGIN.as_str())
        .and_then(move |origin: Option<String>| {
            let allowed = allowed.clone();
            async move {
                match origin {
                    None => Ok(()),
                    Some(origin) if is_allowed_origin(&allowed, &origin) => Ok(()),
                    Some(origin) => {
                        tracing::debug!(%origin, "Refused a WebSocket from a foreign origin.");
                        Err(warp::reject::custom(Forbidden(format!(
                            "origin {origin:?} is not allowed"
                        ))))
                    }
                }
            }
        })
        .untuple_one()
}

/// Rejects (401) a request without `Authorization: Bearer <token>`. An empty configured token
/// refuses everyone.
pub(crate) fn bearer(token: Arc<str>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>(header::AUTHORIZATION.as_str())
        .and_then(move |value: Option<String>| {
            let token = token.clone();
            async move {
                let Some(value) = value else {
                    return Err(warp::reject::custom(Unauthorized(
                        "missing Authorization: Bearer <token> header",
                    )));
                };
                let presented = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
                    .unwrap_or_default();
                if !token.is_empty() && constant_time_eq(presented.as_bytes(), token.as_bytes()) {
                    Ok(())
                } else {
                    tracing::debug!("Refused a state change with a wrong token.");
                    Err(warp::reject::custom(Unauthorized("wrong token")))
                }
            }
        })
        .untuple_one()
}

/// Header values (authorities) compare case-insensitively: `LocalHost:5000` is `localhost:5000`.
fn is_allowed_host(allowed: &[String], host: &str) -> bool {
    allowed.iter().any(|a| a.eq_ignore_ascii_case(host))
}

fn is_allowed_origin(allowed: &[String], origin: &str) -> bool {
    origin
        .strip_prefix("http://")
        .is_some_and(|host| is_allowed_host(allowed, host))
}

/// Compares without an early exit, so response timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Headers on every response: a CSP that allows only this origin (the page has no inline script
/// or style), no framing (clickjacking of the strategy switch), no sniffing, no caching of live
/// data.
fn security_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["127.0.0.1:5000".into(), "localhost:5000".into()]
    }

    #[test]
    fn hosts_compare_case_insensitively_and_exactly() {
        assert!(is_allowed_host(&allowed(), "LOCALHOST:5000"));
        assert!(!is_allowed_host(&allowed(), "localhost"));
        assert!(!is_allowed_host(&allowed(), "localhost:50000"));
        assert!(!is_allowed_host(&allowed(), "evil.example:5000"));
    }

    #[test]
    fn origins_must_be_http_and_allowed() {
        assert!(is_allowed_origin(&allowed(), "http://localhost:5000"));
        assert!(!is_allowed_origin(&allowed(), "https://localhost:5000"));
        assert!(!is_allowed_origin(&allowed(), "http://evil.example:5000"));
        assert!(!is_allowed_origin(&allowed(), "null"));
    }

    #[test]
    fn constant_time_eq_matches_only_equal_inputs() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
