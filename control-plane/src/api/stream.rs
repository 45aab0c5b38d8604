//! `GET /api/v1/environments/{env}/stream`: Server-Sent Events, one `snapshot` event per version,
//! each carrying the whole snapshot with its version as the event id.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::AppState;
use crate::api::{Authorized, Read};
use crate::error::ApiError;
use crate::metrics::Subscribed;
use crate::model::Refusal;
use crate::model::token::Token;
use crate::publisher::Subscription;

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Starts with the current snapshot, or, given `Last-Event-ID`, with the versions after it.
/// Sends a comment line when idle, so proxies and clients see the connection is alive. Ends when
/// the token it was opened with is deleted.
#[utoipa::path(get, path = "/api/v1/environments/{environment}/stream", tag = "snapshots", params(("environment" = String, Path, description = "An environment, e.g. production"), ("Last-Event-ID" = Option<String>, Header, description = "The last version received")), responses((status = 200, description = "Server-Sent Events: each event a snapshot", body = String, content_type = "text/event-stream"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_stream(
    caller: Authorized<Read>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::api::snapshot::current(&caller, &state, &environment)?;
    let seen = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let service = &state.service;
    // A client resuming from a version this process has not published yet had it from another
    // replica: catch up first, so that it gets no version twice.
    let current = service.publisher.current(&environment).map(|current| current.version());
    if let (Some(seen), Some(current)) = (seen, current)
        && seen > current
    {
        service.catch_up().await?;
    }
    let subscription = service
        .publisher
        .subscribe(&environment, seen)
        .ok_or_else(|| Refusal::NotFound(format!("environment `{environment}`")))?;
    event_stream(&state, &caller.token, subscription, |_, snapshot_event| snapshot_event)
}

/// A Server-Sent Events response following `subscription`, each version written by `render`
/// (given the version and its snapshot event), with keep-alive comments when idle. It ends when
/// `token` is deleted or the server shuts down.
pub(crate) fn event_stream(
    state: &AppState,
    token: &Token,
    subscription: Subscription,
    render: fn(u64, Bytes) -> Bytes,
) -> Result<Response, ApiError> {
    // Deleted between authentication and now: as good as unknown.
    let revoked = state.service.tokens.revocation(token).ok_or(ApiError::Unauthorized)?;
    let mut keep_alive = tokio::time::interval_at(
        Instant::now() + state.settings.keep_alive,
        state.settings.keep_alive,
    );
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let follower = Follower {
        subscription,
        keep_alive,
        revoked,
        render,
        _subscribed: state.metrics.subscribed(),
    };
    let events = futures_util::stream::unfold(follower, |mut follower| async move {
        let frame = follower.next_frame().await?;
        Some((Ok::<_, Infallible>(frame), follower))
    });
    Ok((
        [(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache")],
        Body::from_stream(events),
    )
        .into_response())
}

/// One subscriber: where it is in the versions, and what ends it.
struct Follower {
    subscription: Subscription,
    keep_alive: Interval,
    /// Turns `true` when the token is deleted.
    revoked: watch::Receiver<bool>,
    render: fn(u64, Bytes) -> Bytes,
    _subscribed: Subscribed,
}

impl Follower {
    /// The next frame to write; `None` ends the stream (the token was deleted, or the server is
    /// shutting down).
    async fn next_frame(&mut self) -> Option<Bytes> {
        tokio::select! {
            biased;
            revoked = self.revoked.wait_for(|revoked| *revoked) => {
                // Deleted, or its table entry is gone: either way the stream ends.
                drop(revoked);
                None
            }
            next = self.subscription.next() => {
                self.keep_alive.reset();
                next.map(|(version, event)| (self.render)(version, event))
            }
            _ = self.keep_alive.tick() => Some(Bytes::from_static(KEEP_ALIVE)),
        }
    }
}
