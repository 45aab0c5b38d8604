//! OFREP event streams (open-feature/protocol, ADR-0008 and `service/event-streams.yaml`): a
//! bulk evaluation advertises `eventStreams`, and `GET /ofrep/v1/events` tells its clients to
//! evaluate again, with a `refetchEvaluation` event per new version of their environment.
//!
//! A browser's `EventSource` sends no headers, so the advertised URL carries a stream token:
//! the read token's name, the environment, and an HMAC of both keyed with the read token's
//! stored digest. It grants change notifications and nothing else (no flag, no value), stays the
//! same for a token and environment (so bulk answers keep their ETags), holds on every replica
//! (they share the digests), and dies with the read token. A client that can send headers may
//! present its read token instead, as on the other OFREP paths.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::AppState;
use crate::api::{Authorized, Client, stream};
use crate::error::ApiError;
use crate::model::Refusal;
use crate::model::token::Token;
use crate::transport::ClientAddress;

/// Seconds of client inactivity (a hidden tab) after which a client should close its stream.
pub(crate) const INACTIVITY_DELAY_SECONDS: u64 = 120;

const PATH: &str = "/ofrep/v1/events";

/// The `eventStreams` a bulk answer for `token` in `environment` carries, as JSON. The URL is
/// absolute when the request named its host, else the endpoint form the client resolves.
pub(crate) fn event_streams(
    headers: &HeaderMap,
    token: &Token,
    environment: &str,
) -> Option<String> {
    let request_uri = format!("{PATH}?token={}", stream_token(token, environment)?);
    let (host, https) = origin(headers);
    let stream = match host {
        Some(host) => serde_json::json!({
            "type": "sse",
            "url": format!("{}://{host}{request_uri}", if https { "https" } else { "http" }),
            "inactivityDelaySec": INACTIVITY_DELAY_SECONDS,
        }),
        None => serde_json::json!({
            "type": "sse",
            "endpoint": {"requestUri": request_uri},
            "inactivityDelaySec": INACTIVITY_DELAY_SECONDS,
        }),
    };
    Some(serde_json::json!([stream]).to_string())
}

/// Feeds `hasher` what `event_streams` depends on, so a bulk ETag can stand for the advertised
/// URL without the HMAC and JSON being made for a 304.
pub(crate) fn hash_event_streams(
    headers: &HeaderMap,
    token: &Token,
    environment: &str,
    hasher: &mut impl Hasher,
) {
    (origin(headers), &token.name, &token.hash, environment).hash(hasher);
}

/// The host the request named (if it is one) and whether a proxy says it came over HTTPS.
fn origin(headers: &HeaderMap) -> (Option<&str>, bool) {
    let host = headers.get("host").and_then(|host| host.to_str().ok()).filter(|host| is_host(host));
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|proto| proto.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    (host, https)
}

/// A host and optional port, nothing that could bend the URL it goes into.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

/// `name~environment~mac`; token names and environment names never hold `~`.
fn stream_token(token: &Token, environment: &str) -> Option<String> {
    let mac = mac(token, environment)?.finalize().into_bytes();
    Some(format!("{}~{environment}~{}", token.name, hex::encode(mac)))
}

fn mac(token: &Token, environment: &str) -> Option<Hmac<Sha256>> {
    let key = hex::decode(&token.hash).ok()?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).ok()?;
    mac.update(b"rollgate ofrep events\n");
    mac.update(token.name.as_bytes());
    mac.update(b"\n");
    mac.update(environment.as_bytes());
    Some(mac)
}

/// The environment a stream URL's query names, unverified: enough to pick the origins its
/// answer may go to (CORS), since a stream token whose MAC fails gets 401 anyway.
pub(crate) fn stream_token_environment(query: &str) -> Option<String> {
    let (_, presented) =
        url::form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "token")?;
    presented.split('~').nth(1).map(str::to_owned)
}

/// The token and environment a stream token names, if its MAC holds and the token reaches it.
fn verified(state: &AppState, presented: &str) -> Option<(Arc<Token>, String)> {
    let mut fields = presented.splitn(3, '~');
    let (name, environment, signature) = (fields.next()?, fields.next()?, fields.next()?);
    let token = state.service.tokens.named(name)?;
    let signature = hex::decode(signature).ok()?;
    mac(&token, environment)?.verify_slice(&signature).ok()?;
    token.reaches(environment).then(|| (token, environment.to_owned()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// The stream token from a bulk answer's `eventStreams` URL. Without it, the request's read
    /// token (bound to an environment) is used.
    token: Option<String>,
}

/// Who follows the events, and of which environment.
pub(crate) struct Watcher {
    token: Arc<Token>,
    environment: String,
}

impl FromRequestParts<AppState> for Watcher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(query) = Query::<EventsQuery>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Refusal::Malformed(rejection.body_text()))?;
        let Some(presented) = query.token else {
            let caller = Authorized::<Client>::from_request_parts(parts, state).await?;
            let environment = caller.token.environment.clone().ok_or(ApiError::Unbound)?;
            return Ok(Self { token: caller.token, environment });
        };
        match verified(state, &presented) {
            Some((token, environment)) => Ok(Self { token, environment }),
            // Guessing stream tokens counts against the same brake as guessing read tokens.
            None => match parts.extensions.get::<ConnectInfo<ClientAddress>>() {
                Some(ConnectInfo(ClientAddress(address))) => match state.brake.failed(address.ip())
                {
                    Some(wait) => Err(ApiError::TooManyFailures(wait)),
                    None => Err(ApiError::Unauthorized),
                },
                None => Err(ApiError::Unauthorized),
            },
        }
    }
}

/// `GET /ofrep/v1/events`: from now on (or, with `Last-Event-ID`, from the version after it),
/// a `refetchEvaluation` event per new version of the environment, its id the version and its
/// `etag` the version quoted. Keep-alive comments when idle; the stream ends when the read token
/// is deleted.
#[utoipa::path(get, path = "/ofrep/v1/events", tag = "ofrep", params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "The last event id received: the version it named")), security((), ("bearer" = []), ("api_key" = [])), responses((status = 200, description = "Server-Sent Events: `refetchEvaluation` per new version", body = String, content_type = "text/event-stream"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_events(
    watcher: Watcher,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Watcher { token, environment } = watcher;
    let service = &state.service;
    let missing = || Refusal::NotFound(format!("environment `{environment}`"));
    let mut current = service.publisher.current(&environment).ok_or_else(missing)?.version();
    let seen: Option<u64> = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    // Seen on another replica, not yet here: catch up, so no event repeats an earlier one.
    if seen.is_some_and(|seen| within_reach(seen, current)) {
        service.catch_up().await?;
        current = service.publisher.current(&environment).ok_or_else(missing)?.version();
    }
    // A client that has the current version hears of the next one. Any other (a new stream,
    // whose client may have evaluated just before a change; one that missed versions) hears of
    // the current one at once: one re-fetch, however many versions it missed.
    let from = if seen == Some(current) { current } else { current.saturating_sub(1) };
    let subscription = service.publisher.subscribe(&environment, Some(from)).ok_or_else(missing)?;
    stream::event_stream(&state, &token, subscription, refetch)
}

fn refetch(version: u64, _snapshot_event: Bytes) -> Bytes {
    Bytes::from(format!(
        "id: {version}\nevent: message\ndata: {{\"type\":\"refetchEvaluation\",\"etag\":\"\\\"{version}\\\"\"}}\n\n"
    ))
}

/// Whether a client's `version` is one another replica may have made and this one, at `current`,
/// not heard of yet: worth a catch-up. A version far beyond is made up, and costs no store read.
pub(crate) fn within_reach(version: u64, current: u64) -> bool {
    version > current && version - current <= 1024
}

/// The version an OFREP client's `flagConfigEtag` names (`"12"`, `12` or `W/"12"`), if any.
pub(crate) fn named_version(flag_config_etag: &str) -> Option<u64> {
    let tag = flag_config_etag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.trim_matches('"').parse().ok()
}
