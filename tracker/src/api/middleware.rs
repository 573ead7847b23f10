//! Layers every request passes: counting and timing, the rate limit, the time limit, and
//! the tracker's signature on answers nodes act on.

use std::sync::atomic::Ordering;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use medley_api::ErrorCode;
use medley_api::signed::{ANSWER_SIGNATURE_HEADER, ANSWER_TIME_HEADER, signed_answer};

use super::Shared;
use super::error::ApiError;

/// Counts the answer by outcome and times it by route.
pub(crate) async fn count(State(app): State<Shared>, req: Request, next: Next) -> Response {
    // The route pattern, not the path: ids would make a series per song.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    app.metrics
        .latency
        .get_or_create(&[("route", route)])
        .observe(started.elapsed().as_secs_f64());
    let counter = match res.status().as_u16() {
        500.. => &app.metrics.server_error,
        400.. => &app.metrics.client_error,
        _ => &app.metrics.ok,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    res
}

/// Signs a successful answer with the tracker's key, over its path, time and body (see
/// [`medley_api::signed::signed_answer`]), in `x-medley-tracker-time` and
/// `x-medley-tracker-signature`.
pub(crate) async fn sign_response(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let res = next.run(req).await;
    if !res.status().is_success() {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let time = medley_core::unix_now_ms();
    let signature = app
        .state
        .sign_statement(&signed_answer(&path, time, &bytes));
    for (name, value) in [
        (ANSWER_TIME_HEADER, time.to_string()),
        (ANSWER_SIGNATURE_HEADER, hex::encode(signature)),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            parts.headers.insert(name, v);
        }
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Ends a request that takes longer than `request_timeout_secs`, reading its body included,
/// with `408 timeout`: a client that sends slowly cannot hold a connection and a task.
pub(crate) async fn time_limit(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let limit = std::time::Duration::from_secs(app.state.config().request_timeout_secs);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Timeout,
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Refuses a request with `429 rate_limited` and `Retry-After` when its client address is
/// over `rate_limit_per_sec` (bursts up to `rate_limit_burst`); other clients are unaffected.
pub(crate) async fn rate_limit(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let (Some(limiter), Some(ip)) = (&app.limiter, client)
        && let Err(not_until) = limiter.check_key(&ip)
    {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut res = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("too many requests from {ip}; retry in {secs} s"),
        )
        .into_response();
        if let Ok(v) = header::HeaderValue::from_str(&secs.max(1).to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return res;
    }
    next.run(req).await
}
