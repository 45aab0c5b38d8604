//! OFREP, the OpenFeature Remote Evaluation Protocol (open-feature/protocol,
//! `service/openapi.yaml`), for server apps that evaluate through the control plane.
//!
//! `/ofrep/v1/evaluate/flags[/{key}]` evaluates in the environment the token is bound to;
//! `/api/v1/environments/{env}/ofrep/v1/evaluate/flags[/{key}]` in the one named. Evaluation
//! runs on the engine the publisher holds: a request never touches the store. The answers
//! themselves come from `flag_core::ofrep`, shared with the edge worker. A read token sees every
//! flag; a client token (a browser's) only those marked `client_visible`.

use std::hash::{DefaultHasher, Hash, Hasher};

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flag_core::ofrep;
use serde::Deserialize;

use crate::AppState;
use crate::api::{Authorized, Client, none_match, ofrep_events};
use crate::error::ApiError;
use crate::model::token::Scope;

// The shapes below describe OFREP's JSON for the API description; `flag_core::ofrep` writes it.

/// An evaluation request: the evaluation context, whose `targetingKey` is the unit's key.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct OfrepRequest {
    context: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// One flag's evaluation. In a bulk answer a flag that failed has `reason: ERROR` and an
/// `errorCode`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct OfrepEvaluation {
    key: String,
    value: Option<serde_json::Value>,
    variant: Option<String>,
    /// STATIC, TARGETING_MATCH, SPLIT, DEFAULT, DISABLED or ERROR.
    reason: String,
    error_code: Option<String>,
    /// Which rule decided, if one did.
    rule_index: Option<u32>,
    /// A rollout was passed over because the context had no key to bucket by.
    bucket_key_missing: Option<bool>,
    /// `{"prerequisiteFailed": true}` when a prerequisite decided.
    metadata: Option<std::collections::BTreeMap<String, bool>>,
}

/// Every flag's evaluation.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct OfrepBulk {
    flags: Vec<OfrepEvaluation>,
}

/// OFREP's failure: no `key` for a bulk request.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct OfrepFailure {
    key: Option<String>,
    error_code: String,
    error_details: String,
}

#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{flag}", tag = "ofrep", params(("flag" = String, Path, description = "A flag key")), request_body = OfrepRequest, security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "OK", body = OfrepEvaluation), (status = 400, description = "OFREP failure: PARSE_ERROR, INVALID_CONTEXT, TARGETING_KEY_MISSING", body = OfrepFailure), (status = 404, description = "OFREP failure FLAG_NOT_FOUND, or a problem: no such environment", content((OfrepFailure = "application/json"), (crate::error::Problem = "application/problem+json"))), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_single(
    caller: Authorized<Client>,
    State(state): State<AppState>,
    Path(flag): Path<String>,
    OfrepBody(body): OfrepBody,
) -> Result<Response, ApiError> {
    let environment = bound_environment(&caller)?;
    single(&caller, &state, &environment, &flag, &body)
}

#[utoipa::path(post, path = "/api/v1/environments/{environment}/ofrep/v1/evaluate/flags/{flag}", tag = "ofrep", params(("environment" = String, Path, description = "An environment, e.g. production"), ("flag" = String, Path, description = "A flag key")), request_body = OfrepRequest, security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "OK", body = OfrepEvaluation), (status = 400, description = "OFREP failure: PARSE_ERROR, INVALID_CONTEXT, TARGETING_KEY_MISSING", body = OfrepFailure), (status = 404, description = "OFREP failure FLAG_NOT_FOUND, or a problem: no such environment", content((OfrepFailure = "application/json"), (crate::error::Problem = "application/problem+json"))), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_single_in(
    caller: Authorized<Client>,
    State(state): State<AppState>,
    Path((environment, flag)): Path<(String, String)>,
    OfrepBody(body): OfrepBody,
) -> Result<Response, ApiError> {
    single(&caller, &state, &environment, &flag, &body)
}

/// What a re-fetch that an event stream triggered may say about the configuration it expects
/// (ADR-0008); other query parameters are ignored.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct BulkQuery {
    /// The `etag` of the `refetchEvaluation` event: the version to answer from. A replica that
    /// has not heard of that version yet catches up first.
    flag_config_etag: Option<String>,
    /// The event's `lastModified`; accepted and not needed (versions order changes).
    #[allow(dead_code)]
    flag_config_last_modified: Option<String>,
}

#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", tag = "ofrep", params(BulkQuery), request_body = OfrepRequest, security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "OK", body = OfrepBulk), (status = 304, description = "Not modified: the If-None-Match tag is current"), (status = 400, description = "OFREP failure", body = OfrepFailure), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_bulk(
    caller: Authorized<Client>,
    State(state): State<AppState>,
    query: Query<BulkQuery>,
    headers: HeaderMap,
    OfrepBody(body): OfrepBody,
) -> Result<Response, ApiError> {
    let environment = bound_environment(&caller)?;
    bulk(&caller, &state, &environment, &query, &headers, &body).await
}

#[utoipa::path(post, path = "/api/v1/environments/{environment}/ofrep/v1/evaluate/flags", tag = "ofrep", params(("environment" = String, Path, description = "An environment, e.g. production"), BulkQuery), request_body = OfrepRequest, security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "OK", body = OfrepBulk), (status = 304, description = "Not modified: the If-None-Match tag is current"), (status = 400, description = "OFREP failure", body = OfrepFailure), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_bulk_in(
    caller: Authorized<Client>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    query: Query<BulkQuery>,
    headers: HeaderMap,
    OfrepBody(body): OfrepBody,
) -> Result<Response, ApiError> {
    bulk(&caller, &state, &environment, &query, &headers, &body).await
}

/// An OFREP request's body; one over the body limit gets OFREP's error shape, 413.
pub(crate) struct OfrepBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for OfrepBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        Bytes::from_request(request, state).await.map(Self).map_err(|rejection| {
            let status = rejection.status();
            let details = format!("the request body could not be read: {}", rejection.body_text());
            let code = flag_core::ErrorCode::ParseError;
            json_answer(ofrep::failure(status.as_u16(), None, code, &details), None)
        })
    }
}

fn bound_environment(caller: &Authorized<Client>) -> Result<String, ApiError> {
    caller.token.environment.clone().ok_or(ApiError::Unbound)
}

fn single(
    caller: &Authorized<Client>,
    state: &AppState,
    environment: &str,
    flag: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let current = crate::api::snapshot::current(caller, state, environment)?;
    let now = Some(state.service.clock.now().timestamp_millis());
    let engine = &current.published.engine;
    let answer = ofrep::single_counted(engine, flag, body, now, audience(caller), &mut |_, _| {});
    Ok(json_answer(answer, None))
}

async fn bulk(
    caller: &Authorized<Client>,
    state: &AppState,
    environment: &str,
    query: &BulkQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut current = crate::api::snapshot::current(caller, state, environment)?;
    // An event from another replica named a version this one has not heard of yet.
    let expected = query.flag_config_etag.as_deref().and_then(ofrep_events::named_version);
    if expected.is_some_and(|expected| ofrep_events::within_reach(expected, current.version())) {
        state.service.catch_up().await?;
        current = crate::api::snapshot::current(caller, state, environment)?;
    }
    // The answer depends on the snapshot, the context and the advertised event stream alone,
    // so a repeated request is recognised without parsing or evaluating anything.
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    ofrep_events::hash_event_streams(headers, &caller.token, environment, &mut hasher);
    let etag = format!("\"{}-{:016x}\"", current.version(), hasher.finish());
    if none_match(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    let now = Some(state.service.clock.now().timestamp_millis());
    let engine = &current.published.engine;
    let mut answer = ofrep::bulk_counted(engine, body, now, audience(caller), &mut |_, _| {});
    if answer.status != 200 {
        return Ok(json_answer(answer, None));
    }
    if let Some(streams) = ofrep_events::event_streams(headers, &caller.token, environment) {
        answer.add_event_streams(&streams);
    }
    Ok(json_answer(answer, Some(etag)))
}

/// A client token (a browser's) sees client-visible flags only; any other, every flag.
fn audience(caller: &Authorized<Client>) -> ofrep::Audience {
    match caller.token.scope {
        Scope::Client => ofrep::Audience::Client,
        _ => ofrep::Audience::Server,
    }
}

fn json_answer(answer: ofrep::Answer, etag: Option<String>) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, [(CONTENT_TYPE, "application/json")], answer.body).into_response();
    if let Some(etag) = etag.and_then(|etag| etag.parse().ok()) {
        response.headers_mut().insert(ETAG, etag);
    }
    response
}
