//! What each route does, and the mapping of every rejection to a JSON error with the right status.

use std::convert::Infallible;
use std::time::Duration;

use serde::Serialize;
use warp::http::StatusCode;
use warp::http::header::{self, HeaderValue};
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::WebContext;
use crate::filters::LimitQuery;
use crate::models::{ErrorBody, MAX_CONNECTIONS, MAX_EVENTS, SetStrategyRequest, StrategyDto};

/// Connections returned by `GET /api/connections` without `?limit`.
pub(crate) const DEFAULT_CONNECTIONS_LIMIT: usize = 100;
/// Events returned by `GET /api/events` without `?limit`.
pub(crate) const DEFAULT_EVENTS_LIMIT: usize = 100;
/// How long `POST /api/strategy` waits for the engine to publish a feed that shows the new
/// strategy, so the reply reflects the engine's state rather than the request.
const STRATEGY_PUBLISH_WAIT: Duration = Duration::from_millis(1000);

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");

// === rejections ===

/// 403: Host or Origin not allowed.
#[derive(Debug)]
pub(crate) struct Forbidden(pub String);
impl warp::reject::Reject for Forbidden {}

/// 401: missing or wrong token.
#[derive(Debug)]
pub(crate) struct Unauthorized(pub &'static str);
impl warp::reject::Reject for Unauthorized {}

/// 400: malformed body or refused by the engine (message shown to the user).
#[derive(Debug)]
pub(crate) struct BadRequest(pub String);
impl warp::reject::Reject for BadRequest {}

/// 500: something on our side broke.
#[derive(Debug)]
pub(crate) struct Internal(pub String);
impl warp::reject::Reject for Internal {}

// === pages ===

/// GET /
pub(crate) fn page() -> Response {
    with_content_type(INDEX_HTML, "text/html; charset=utf-8")
}

/// The embedded file `name` under `/static/`, if there is one.
pub(crate) fn asset(name: &str) -> Option<Response> {
    match name {
        "app.js" => Some(with_content_type(APP_JS, "text/javascript; charset=utf-8")),
        "style.css" => Some(with_content_type(STYLE_CSS, "text/css; charset=utf-8")),
        _ => None,
    }
}

fn with_content_type(body: &'static str, content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

// === JSON API ===

/// GET /api/feed
pub(crate) fn feed(ctx: WebContext) -> Response {
    json(&*ctx.snapshot())
}

/// GET /api/interfaces
pub(crate) fn interfaces(ctx: WebContext) -> Response {
    json(&ctx.snapshot().interfaces)
}

/// GET /api/zerotier: the ZeroTier service, networks and peers (`null` when the agent is off).
pub(crate) fn zerotier(ctx: WebContext) -> Response {
    json(&ctx.snapshot().zerotier)
}

/// GET /api/connections?limit=N
pub(crate) fn connections(query: LimitQuery, ctx: WebContext) -> Response {
    let feed = ctx.snapshot();
    let n = clamp_limit(query.limit, DEFAULT_CONNECTIONS_LIMIT, MAX_CONNECTIONS);
    json(&feed.connections[..n.min(feed.connections.len())])
}

/// GET /api/events?limit=N
pub(crate) fn events(query: LimitQuery, ctx: WebContext) -> Response {
    let feed = ctx.snapshot();
    let n = clamp_limit(query.limit, DEFAULT_EVENTS_LIMIT, MAX_EVENTS);
    json(&feed.events[..n.min(feed.events.len())])
}

/// GET /api/strategy
pub(crate) fn strategy(ctx: WebContext) -> Response {
    json(&ctx.snapshot().strategy)
}

/// POST /api/strategy (already authenticated).
///
/// Answers with the strategy state from the first feed that shows the new strategy active, or,
/// if the engine has not published one within [`STRATEGY_PUBLISH_WAIT`], the latest state with
/// `active` set to the requested name (the engine accepted the switch).
#[tracing::instrument(skip_all)]
pub(crate) async fn set_strategy(body: Bytes, ctx: WebContext) -> Result<Response, Rejection> {
    let request: SetStrategyRequest = serde_json::from_slice(&body)
        .map_err(|err| warp::reject::custom(BadRequest(format!("invalid request body: {err}"))))?;
    let name = request.name.trim().to_owned();
    if name.is_empty() {
        return Err(warp::reject::custom(BadRequest(
            "strategy name is empty".to_owned(),
        )));
    }

    let control = ctx.control.clone();
    let requested = name.clone();
    let outcome = tokio::task::spawn_blocking(move || control.set_strategy(&requested))
        .await
        .map_err(|err| warp::reject::custom(Internal(format!("strategy switch failed: {err}"))))?;
    if let Err(message) = outcome {
        tracing::info!(strategy = %name, error = %message, "Dashboard strategy switch refused.");
        return Err(warp::reject::custom(BadRequest(message)));
    }
    tracing::info!(strategy = %name, "Strategy switched from the dashboard.");

    let mut feed = ctx.feed.clone();
    let published = tokio::time::timeout(STRATEGY_PUBLISH_WAIT, async {
        feed.wait_for(|f| f.strategy.active == name)
            .await
            .map(|f| f.strategy.clone())
    })
    .await;
    let strategy = match published {
        Ok(Ok(strategy)) => strategy,
        _ => StrategyDto {
            active: name,
            ..ctx.snapshot().strategy.clone()
        },
    };
    Ok(json(&strategy))
}

/// GET /metrics
pub(crate) fn metrics(ctx: WebContext) -> Response {
    let text = crate::metrics::render(&ctx.snapshot());
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// GET /proxy.pac: the PAC file for the proxy port, or 404 (plain text) when the engine did not
/// say where its proxy listens.
pub(crate) fn pac(ctx: WebContext) -> Response {
    let (status, body, content_type) = match ctx.config.proxy {
        Some(proxy) => (
            StatusCode::OK,
            crate::pac::render(proxy),
            crate::pac::CONTENT_TYPE,
        ),
        None => (
            StatusCode::NOT_FOUND,
            "no PAC file: this dashboard was not told the proxy's listen address\n".to_owned(),
            "text/plain; charset=utf-8",
        ),
    };
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `limit` if given (capped at `max`), else `default`.
fn clamp_limit(limit: Option<usize>, default: usize, max: usize) -> usize {
    limit.unwrap_or(default).min(max)
}

fn json<T: Serialize + ?Sized>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(body.into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => {
            tracing::error!(error = %err, "Could not encode a dashboard response.");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

// === rejection mapping ===

/// Turns every rejection into `{"error": "…"}` with its status. Our own rejections are checked
/// first: when several routes reject the same request, warp keeps all their reasons, and "wrong
/// token" from the POST route must win over "method not allowed" from the GET route of the same
/// path.
pub(crate) async fn handle_rejection(err: Rejection) -> Result<Response, Infallible> {
    use warp::reject::{
        InvalidHeader, InvalidQuery, LengthRequired, MethodNotAllowed, MissingHeader,
        PayloadTooLarge, UnsupportedMediaType,
    };

    let response = if let Some(Forbidden(message)) = err.find() {
        error(StatusCode::FORBIDDEN, message.clone())
    } else if let Some(Unauthorized(message)) = err.find() {
        let mut response = error(StatusCode::UNAUTHORIZED, *message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"netmix\""),
        );
        response
    } else if let Some(BadRequest(message)) = err.find() {
        error(StatusCode::BAD_REQUEST, message.clone())
    } else if let Some(Internal(message)) = err.find() {
        tracing::error!(error = %message, "Dashboard request failed.");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    } else if err.find::<PayloadTooLarge>().is_some() {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {} bytes",
                crate::filters::MAX_BODY_BYTES
            ),
        )
    } else if err.find::<LengthRequired>().is_some() {
        error(
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required",
        )
    } else if let Some(e) = err.find::<InvalidQuery>() {
        error(StatusCode::BAD_REQUEST, e.to_string())
    } else if let Some(e) = err.find::<UnsupportedMediaType>() {
        error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())
    } else if let Some(e) = err.find::<warp::ws::MissingConnectionUpgrade>() {
        error(StatusCode::BAD_REQUEST, e.to_string())
    } else if let Some(e) = err.find::<InvalidHeader>() {
        error(StatusCode::BAD_REQUEST, e.to_string())
    } else if let Some(e) = err.find::<MissingHeader>() {
        error(StatusCode::BAD_REQUEST, e.to_string())
    } else if err.find::<MethodNotAllowed>().is_some() {
        error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if err.is_not_found() {
        error(StatusCode::NOT_FOUND, "not found")
    } else {
        tracing::warn!(rejection = ?err, "Unhandled dashboard rejection.");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_cap() {
        assert_eq!(clamp_limit(None, 100, 1000), 100);
        assert_eq!(clamp_limit(Some(5), 100, 1000), 5);
        assert_eq!(clamp_limit(Some(0), 100, 1000), 0);
        assert_eq!(clamp_limit(Some(50_000), 100, 1000), 1000);
    }

    #[test]
    fn embedded_page_has_no_external_resource() {
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(
                !text.contains("https://"),
                "external URL in an embedded file"
            );
            assert!(
                !text.contains("http://"),
                "external URL in an embedded file"
            );
        }
        assert!(
            !INDEX_HTML.contains("<script>"),
            "inline script would break the CSP"
        );
        assert!(
            !INDEX_HTML.contains("style="),
            "inline style would break the CSP"
        );
    }
}
