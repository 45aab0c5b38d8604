//! `GET /api/v1/environments/{env}/stream`: Server-Sent Events, one `snapshot` event per version,
//! each carrying the whole snapshot with its version as the event id.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::AppState;
use crate::api::{Authorized, Read};
use crate::error::ApiError;
use crate::publisher::{Current, Publisher};

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Starts with the current snapshot, or, given `Last-Event-ID`, with the versions after it.
/// Sends a comment line when idle, so proxies and clients see the connection is alive.
#[utoipa::path(get, path = "/api/v1/environments/{environment}/stream", tag = "snapshots", params(("environment" = String, Path, description = "An environment, e.g. production"), ("Last-Event-ID" = Option<String>, Header, description = "The last version received")), responses((status = 200, description = "Server-Sent Events: each event a snapshot", body = String, content_type = "text/event-stream"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_stream(
    caller: Authorized<Read>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let current = crate::api::snapshot::current(&caller, &state, &environment)?;
    let seen = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let subscription = state.publisher.subscribe(&environment, seen).ok_or_else(|| {
        ApiError::from(crate::store::StoreError::NotFound(format!("environment `{environment}`")))
    })?;
    let mut keep_alive = tokio::time::interval_at(
        Instant::now() + state.settings.keep_alive,
        state.settings.keep_alive,
    );
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let follower = Follower {
        backlog: subscription.backlog.into(),
        receiver: subscription.receiver,
        // An id from the future (say, from before a restore) gets the current snapshot.
        sent: seen.filter(|seen| *seen <= current.version()).unwrap_or(0),
        keep_alive,
        publisher: state.publisher.clone(),
        environment,
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

/// One subscriber's position in the stream.
struct Follower {
    backlog: VecDeque<Arc<Current>>,
    receiver: tokio::sync::broadcast::Receiver<Arc<Current>>,
    /// The last version sent: nothing at or below it is sent again.
    sent: u64,
    keep_alive: Interval,
    publisher: Publisher,
    environment: String,
    _subscribed: crate::metrics::Subscribed,
}

impl Follower {
    /// The next frame to write; `None` ends the stream (the server is shutting down).
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(snapshot) = self.backlog.pop_front() {
                if snapshot.version() > self.sent {
                    self.sent = snapshot.version();
                    self.keep_alive.reset();
                    return Some(snapshot.event.clone());
                }
                continue;
            }
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(snapshot) => self.backlog.push_back(snapshot),
                    // Too slow to take every version: the current one holds all of them.
                    Err(RecvError::Lagged(_)) => {
                        self.backlog.extend(self.publisher.current(&self.environment));
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(KEEP_ALIVE)),
            }
        }
    }
}
