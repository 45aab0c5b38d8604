//! OFREP, the OpenFeature Remote Evaluation Protocol (open-feature/protocol,
//! `service/openapi.yaml`), for server apps that evaluate through the control plane.
//!
//! `/ofrep/v1/evaluate/flags[/{key}]` evaluates in the environment the read token is bound to;
//! `/api/v1/environments/{env}/ofrep/v1/evaluate/flags[/{key}]` in the one named. Evaluation
//! runs on the engine the publisher holds: a request never touches the store.

use std::hash::{DefaultHasher, Hash, Hasher};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flag_core::{Context, ContextError, Engine, ErrorCode, KeyedEvaluation, Reason};
use serde::Deserialize;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{Authorized, Read, none_match};
use crate::error::ApiError;

/// OFREP's request body. Other members are ignored, as the protocol may add some.
#[derive(Deserialize)]
struct EvaluationRequest {
    #[serde(default)]
    context: Option<Value>,
}

pub(crate) async fn post_single(
    caller: Authorized<Read>,
    State(state): State<AppState>,
    Path(flag): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let environment = bound_environment(&caller)?;
    single(&caller, &state, &environment, &flag, &body)
}

pub(crate) async fn post_single_in(
    caller: Authorized<Read>,
    State(state): State<AppState>,
    Path((environment, flag)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    single(&caller, &state, &environment, &flag, &body)
}

pub(crate) async fn post_bulk(
    caller: Authorized<Read>,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let environment = bound_environment(&caller)?;
    bulk(&caller, &state, &environment, &headers, &body)
}

pub(crate) async fn post_bulk_in(
    caller: Authorized<Read>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    bulk(&caller, &state, &environment, &headers, &body)
}

fn bound_environment(caller: &Authorized<Read>) -> Result<String, ApiError> {
    caller.token.environment.clone().ok_or(ApiError::Unbound)
}

fn single(
    caller: &Authorized<Read>,
    state: &AppState,
    environment: &str,
    flag: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let current = crate::api::snapshot::current(caller, state, environment)?;
    let context = match context(state, body) {
        Ok(context) => context,
        Err((code, details)) => {
            return Ok(failure(StatusCode::BAD_REQUEST, Some(flag), code, &details));
        }
    };
    let evaluation = current.published.engine.evaluate(flag, &context);
    match evaluation.reason {
        Reason::Error(ErrorCode::FlagNotFound) => Ok(failure(
            StatusCode::NOT_FOUND,
            Some(flag),
            ErrorCode::FlagNotFound,
            &format!("no flag `{flag}` in environment `{environment}`"),
        )),
        Reason::Error(code) => {
            Ok(failure(StatusCode::BAD_REQUEST, Some(flag), code, &details(code)))
        }
        _ => Ok(Json(KeyedEvaluation { key: flag, evaluation }).into_response()),
    }
}

fn bulk(
    caller: &Authorized<Read>,
    state: &AppState,
    environment: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let current = crate::api::snapshot::current(caller, state, environment)?;
    // The answer depends on the snapshot and the context alone, so a repeated request is
    // recognised without parsing or evaluating anything.
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    let etag = format!("\"{}-{:016x}\"", current.version(), hasher.finish());
    if none_match(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    let context = match context(state, body) {
        Ok(context) => context,
        Err((code, details)) => return Ok(failure(StatusCode::BAD_REQUEST, None, code, &details)),
    };
    let flags = Bulk { engine: &current.published.engine, context: &context };
    let json = serde_json::to_vec(&flags)
        .map_err(|e| crate::store::StoreError::Internal(e.to_string()))?;
    Ok(([(ETAG, etag), (CONTENT_TYPE, "application/json".into())], json).into_response())
}

/// The request's context, with the server's clock for `before` and `after`; or why not.
fn context(state: &AppState, body: &[u8]) -> Result<Context, (ErrorCode, String)> {
    let request: EvaluationRequest = serde_json::from_slice(body).map_err(|error| {
        (ErrorCode::ParseError, format!("the body is not an OFREP request: {error}"))
    })?;
    let context =
        Context::from_value(request.context.unwrap_or_else(|| json!({}))).map_err(|error| {
            match error {
                ContextError::Parse(details) => (ErrorCode::ParseError, details),
                ContextError::Invalid(details) => (ErrorCode::InvalidContext, details.to_owned()),
                other => (ErrorCode::InvalidContext, other.to_string()),
            }
        })?;
    Ok(context.with_now(state.clock.now().timestamp_millis()))
}

fn details(code: ErrorCode) -> String {
    match code {
        ErrorCode::TargetingKeyMissing => {
            "only a percentage rollout decides this flag, and the context has no targetingKey"
                .into()
        }
        other => format!("evaluation failed: {}", other.as_str()),
    }
}

/// OFREP's failure shape: `{key, errorCode, errorDetails}` (no `key` for a bulk request).
fn failure(status: StatusCode, key: Option<&str>, code: ErrorCode, details: &str) -> Response {
    let mut body = json!({"errorCode": code.as_str(), "errorDetails": details});
    if let Some(key) = key {
        body["key"] = json!(key);
    }
    (status, Json(body)).into_response()
}

/// `{"flags": [...]}`, serialized straight from the engine's iterator.
struct Bulk<'e> {
    engine: &'e Engine,
    context: &'e Context,
}

impl Serialize for Bulk<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Flags<'e>(&'e Bulk<'e>);
        impl Serialize for Flags<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.engine.evaluate_all(self.0.context))
            }
        }
        let mut response = serializer.serialize_struct("BulkEvaluation", 1)?;
        response.serialize_field("flags", &Flags(self))?;
        response.end()
    }
}
