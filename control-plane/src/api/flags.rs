//! Flags: create, list and get; and a release manager's changes to one flag in one environment:
//! rollout, kill, unkill.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flag_core::wire::{Rollout, Serve};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{Authorized, Release};
use crate::error::{ApiError, AppJson};
use crate::store::{ChangeNote, FlagDefinition, FlagState, StateChange, StoreError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutRequest {
    /// Exposure in thousandths of a percent (25% is 25000).
    percent: u32,
    stage: Option<String>,
    /// The variant to expose; needed only when the flag has no rollout yet and more than two
    /// variants.
    variant: Option<String>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonRequest {
    reason: String,
}

/// A flag's state in an environment after a change, with the snapshot version it is in.
#[derive(Serialize)]
pub(crate) struct FlagStateResponse {
    environment: String,
    flag: String,
    version: u64,
    state: FlagState,
}

/// `PUT /api/v1/environments/{env}/flags/{flag}/rollout`: the fallthrough becomes a percent
/// rollout. The exposed variant is the one named, else the existing rollout's, else, for a flag of
/// two variants, the one that is not `off_variant`.
pub(crate) async fn put_rollout(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path((environment, flag)): Path<(String, String)>,
    headers: HeaderMap,
    AppJson(request): AppJson<RolloutRequest>,
) -> Result<Response, ApiError> {
    let token = caller.token;
    let if_revision = if_match_revisions(&headers);
    let reason = required_reason(request.reason)?;
    let change: StateChange = Box::new(move |definition, current| {
        let existing = match &current.fallthrough {
            Serve::Rollout(rollout) if rollout.percent.is_some() => Some(rollout.clone()),
            _ => None,
        };
        let inside = request
            .variant
            .or_else(|| existing.as_ref().and_then(|r| r.inside.clone()))
            .or_else(|| {
                let mut others =
                    definition.variants.keys().filter(|v| **v != definition.off_variant);
                match (others.next(), others.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            })
            .ok_or_else(|| StoreError::Refused("name the `variant` to roll out".into()))?;
        let outside = existing
            .as_ref()
            .and_then(|r| r.outside.clone())
            .unwrap_or_else(|| definition.off_variant.clone());
        current.fallthrough = Serve::Rollout(Rollout {
            bucket_by: existing.as_ref().and_then(|r| r.bucket_by.clone()),
            percent: Some(request.percent),
            inside: Some(inside),
            outside: Some(outside),
            weights: None,
            stage: request.stage.or_else(|| existing.and_then(|r| r.stage)),
        });
        Ok(())
    });
    change_state(
        &state,
        environment,
        flag,
        change,
        ChangeNote { actor: token.name, action: "flag.rollout", reason: Some(reason), if_revision },
    )
    .await
}

/// `POST .../kill`: serve `off_variant` to everyone, at once, whatever else is going on.
pub(crate) async fn post_kill(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path((environment, flag)): Path<(String, String)>,
    AppJson(request): AppJson<ReasonRequest>,
) -> Result<Response, ApiError> {
    set_enabled(caller, state, environment, flag, request, false).await
}

/// `POST .../unkill`: evaluate the flag's rules again.
pub(crate) async fn post_unkill(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path((environment, flag)): Path<(String, String)>,
    AppJson(request): AppJson<ReasonRequest>,
) -> Result<Response, ApiError> {
    set_enabled(caller, state, environment, flag, request, true).await
}

async fn set_enabled(
    caller: Authorized<Release>,
    state: AppState,
    environment: String,
    flag: String,
    request: ReasonRequest,
    enabled: bool,
) -> Result<Response, ApiError> {
    let token = caller.token;
    let reason = required_reason(request.reason)?;
    let change: StateChange = Box::new(move |_, current| {
        current.enabled = enabled;
        Ok(())
    });
    let action = if enabled { "flag.unkill" } else { "flag.kill" };
    change_state(
        &state,
        environment,
        flag,
        change,
        // A kill ignores If-Match: it must win over whatever else happened.
        ChangeNote { actor: token.name, action, reason: Some(reason), if_revision: None },
    )
    .await
}

async fn change_state(
    state: &AppState,
    environment: String,
    flag: String,
    change: StateChange,
    note: ChangeNote,
) -> Result<Response, ApiError> {
    let changed = state.store.change_flag_state(&environment, &flag, change, note).await?;
    let version = changed.published.version;
    state.publisher.publish(changed.published);
    let body = FlagStateResponse { environment, flag, version, state: changed.state };
    Ok(([(ETAG, etag(changed.revision))], Json(body)).into_response())
}

/// A flag resource's ETag.
fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// The revisions `If-Match` accepts: `None` without the header or with `*`. Tags that are not
/// revisions match nothing, so the change fails with 412 as RFC 9110 asks.
fn if_match_revisions(headers: &HeaderMap) -> Option<Vec<u64>> {
    let values: Vec<&str> =
        headers.get_all(IF_MATCH).iter().filter_map(|v| v.to_str().ok()).collect();
    if values.is_empty() || values.iter().flat_map(|v| v.split(',')).any(|tag| tag.trim() == "*") {
        return None;
    }
    let revisions = values
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|tag| tag.trim().strip_prefix('"')?.strip_suffix('"')?.parse().ok())
        .collect();
    Some(revisions)
}

fn required_reason(reason: String) -> Result<String, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError::Body {
            status: axum::http::StatusCode::BAD_REQUEST,
            detail: "`reason` must not be empty".into(),
        });
    }
    Ok(reason.to_owned())
}

/// `POST /api/v1/flags`: a new flag in every environment, serving `off_variant` to everyone.
pub(crate) async fn post_flag(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    AppJson(definition): AppJson<FlagDefinition>,
) -> Result<Response, ApiError> {
    let key = definition.key.clone();
    for published in state.store.create_flag(definition, &caller.token.name).await? {
        state.publisher.publish(published);
    }
    let record = state.store.flag(&key).await?;
    Ok((StatusCode::CREATED, [(ETAG, etag(record.revision))], Json(record)).into_response())
}

/// `GET /api/v1/flags`: every flag's definition, by key.
pub(crate) async fn list_flags(
    _: Authorized<Release>,
    State(state): State<AppState>,
) -> Result<Json<Vec<FlagDefinition>>, ApiError> {
    Ok(Json(state.store.flags().await?))
}

/// `GET /api/v1/flags/{flag}`: a flag's definition and its state in each environment.
pub(crate) async fn get_flag(
    _: Authorized<Release>,
    State(state): State<AppState>,
    Path(flag): Path<String>,
) -> Result<Response, ApiError> {
    let record = state.store.flag(&flag).await?;
    Ok(([(ETAG, etag(record.revision))], Json(record)).into_response())
}
