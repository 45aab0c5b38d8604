//! Flags: create, list, get, update and archive the shared definition; and a release manager's
//! changes to one flag in one environment: its state, rollout, kill, unkill.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::ETAG;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flag_core::wire::{self, Rollout, Serve};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{Authorized, Release, etag, if_match_revisions, required_reason};
use crate::error::{ApiError, AppJson, AppQuery};
use crate::store::{
    ChangeNote, Changed, FlagDefinition, FlagRecord, FlagState, StateChange, StoreError,
};

#[derive(Deserialize, utoipa::ToSchema)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonRequest {
    reason: String,
}

/// A flag's whole state in one environment, and why it changes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateRequest {
    enabled: bool,
    #[serde(default)]
    prerequisites: Vec<wire::Prerequisite>,
    #[serde(default)]
    rules: Vec<wire::Rule>,
    fallthrough: Serve,
    reason: Option<String>,
}

/// Why a flag or segment is archived, as a query parameter (DELETE takes no body).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ArchiveQuery {
    pub(crate) reason: Option<String>,
}

/// A flag's state in an environment after a change, with the snapshot version it is in.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct FlagStateResponse {
    environment: String,
    flag: String,
    version: u64,
    state: FlagState,
}

/// `PUT /api/v1/environments/{env}/flags/{flag}/rollout`: the fallthrough becomes a percent
/// rollout. The exposed variant is the one named, else the existing rollout's, else, for a flag of
/// two variants, the one that is not `off_variant`.
#[utoipa::path(put, path = "/api/v1/environments/{environment}/flags/{flag}/rollout", tag = "flags", params(("environment" = String, Path, description = "An environment, e.g. production"), ("flag" = String, Path, description = "A flag key")), request_body = RolloutRequest, responses((status = 200, description = "OK", body = FlagStateResponse), (status = 412, description = "If-Match names another revision", body = crate::error::Problem, content_type = "application/problem+json"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_rollout(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path((environment, flag)): Path<(String, String)>,
    headers: HeaderMap,
    AppJson(request): AppJson<RolloutRequest>,
) -> Result<Response, ApiError> {
    caller.reach(&environment)?;
    let if_revision = if_match_revisions(&headers);
    let reason = required_reason(request.reason)?;
    if request.percent > flag_core::bucketing::BUCKETS {
        return Err(ApiError::Body {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: format!(
                "`percent` is in thousandths of a percent, 0 to {} (100%); got {}",
                flag_core::bucketing::BUCKETS,
                request.percent
            ),
        });
    }
    let change: StateChange = Box::new(move |definition, current| {
        let existing = match &current.fallthrough {
            Serve::Rollout(rollout) if rollout.percent.is_some() => Some(rollout.clone()),
            _ => None,
        };
        let inside = request
            .variant
            .or_else(|| existing.as_ref().and_then(|r| r.inside.clone()))
            .or_else(|| definition.sole_other_variant())
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
        ChangeNote {
            actor: caller.token.name.clone(),
            action: "flag.rollout",
            reason: Some(reason),
            if_revision,
        },
    )
    .await
}

/// `POST .../kill`: serve `off_variant` to everyone, at once, whatever else is going on.
#[utoipa::path(post, path = "/api/v1/environments/{environment}/flags/{flag}/kill", tag = "flags", params(("environment" = String, Path, description = "An environment, e.g. production"), ("flag" = String, Path, description = "A flag key")), request_body = ReasonRequest, responses((status = 200, description = "OK", body = FlagStateResponse), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_kill(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path((environment, flag)): Path<(String, String)>,
    AppJson(request): AppJson<ReasonRequest>,
) -> Result<Response, ApiError> {
    set_enabled(caller, state, environment, flag, request, false).await
}

/// `POST .../unkill`: evaluate the flag's rules again.
#[utoipa::path(post, path = "/api/v1/environments/{environment}/flags/{flag}/unkill", tag = "flags", params(("environment" = String, Path, description = "An environment, e.g. production"), ("flag" = String, Path, description = "A flag key")), request_body = ReasonRequest, responses((status = 200, description = "OK", body = FlagStateResponse), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
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
    caller.reach(&environment)?;
    let reason = required_reason(request.reason)?;
    let change: StateChange = Box::new(move |_, current| {
        current.enabled = enabled;
        Ok(())
    });
    let action = if enabled { "flag.unkill" } else { "flag.kill" };
    let response = change_state(
        &state,
        environment.clone(),
        flag.clone(),
        change,
        // A kill ignores If-Match: it must win over whatever else happened.
        ChangeNote {
            actor: caller.token.name.clone(),
            action,
            reason: Some(reason.clone()),
            if_revision: None,
        },
    )
    .await?;
    if !enabled {
        crate::plans::engine::hold_after_kill(
            &state,
            &environment,
            &flag,
            &caller.token.name,
            &reason,
        )
        .await;
    }
    Ok(response)
}

async fn change_state(
    state: &AppState,
    environment: String,
    flag: String,
    change: StateChange,
    note: ChangeNote,
) -> Result<Response, ApiError> {
    let changed = state
        .store
        .change_flag_state(&environment, &flag, change, note)
        .await
        .map_err(|error| error.relative_to(&format!("flags.{flag}")))?;
    let version = changed.published.version;
    state.publisher.publish(changed.published);
    let body = FlagStateResponse { environment, flag, version, state: changed.state };
    Ok(([(ETAG, etag(changed.revision))], Json(body)).into_response())
}

/// `PUT /api/v1/environments/{env}/flags/{flag}`: replaces the flag's rules, prerequisites,
/// fallthrough and `enabled` in one environment. Honours `If-Match`.
#[utoipa::path(put, path = "/api/v1/environments/{environment}/flags/{flag}", tag = "flags", params(("environment" = String, Path, description = "An environment, e.g. production"), ("flag" = String, Path, description = "A flag key")), request_body = StateRequest, responses((status = 200, description = "OK", body = FlagStateResponse), (status = 412, description = "If-Match names another revision", body = crate::error::Problem, content_type = "application/problem+json"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_state(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path((environment, flag)): Path<(String, String)>,
    headers: HeaderMap,
    AppJson(request): AppJson<StateRequest>,
) -> Result<Response, ApiError> {
    caller.reach(&environment)?;
    let reason = request.reason.map(required_reason).transpose()?;
    let new_state = FlagState {
        enabled: request.enabled,
        prerequisites: request.prerequisites,
        rules: request.rules,
        fallthrough: request.fallthrough,
    };
    let change: StateChange = Box::new(move |_, current| {
        *current = new_state;
        Ok(())
    });
    let note = ChangeNote {
        actor: caller.token.name.clone(),
        action: "flag.state",
        reason,
        if_revision: if_match_revisions(&headers),
    };
    change_state(&state, environment, flag, change, note).await
}

/// `POST /api/v1/flags`: a new flag in every environment, serving `off_variant` to everyone.
#[utoipa::path(post, path = "/api/v1/flags", tag = "flags", request_body = FlagDefinition, responses((status = 201, description = "Created", body = FlagRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_flag(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    AppJson(definition): AppJson<FlagDefinition>,
) -> Result<Response, ApiError> {
    let key = definition.key.clone();
    let changed = state
        .store
        .create_flag(definition, &caller.token.name)
        .await
        .map_err(|error| error.relative_to(&format!("flags.{key}")))?;
    state.publisher.publish_all(changed.published);
    let record = state.store.flag(&key).await?;
    Ok((StatusCode::CREATED, [(ETAG, etag(record.revision))], Json(record)).into_response())
}

/// `GET /api/v1/flags`: every flag's definition, by key.
#[utoipa::path(get, path = "/api/v1/flags", tag = "flags", responses((status = 200, description = "OK", body = Vec<FlagDefinition>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_flags(
    _: Authorized<Release>,
    State(state): State<AppState>,
) -> Result<Json<Vec<FlagDefinition>>, ApiError> {
    Ok(Json(state.store.flags().await?))
}

/// `GET /api/v1/flags/{flag}`: a flag's definition and its state in each environment.
#[utoipa::path(get, path = "/api/v1/flags/{flag}", tag = "flags", params(("flag" = String, Path, description = "A flag key")), responses((status = 200, description = "OK", body = FlagRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_flag(
    _: Authorized<Release>,
    State(state): State<AppState>,
    Path(flag): Path<String>,
) -> Result<Response, ApiError> {
    let record = state.store.flag(&flag).await?;
    Ok(([(ETAG, etag(record.revision))], Json(record)).into_response())
}

/// `PUT /api/v1/flags/{flag}`: replaces the definition (type, variants, `off_variant`, salt) in
/// every environment. Honours `If-Match`. A new salt reshuffles who is in every rollout.
#[utoipa::path(put, path = "/api/v1/flags/{flag}", tag = "flags", params(("flag" = String, Path, description = "A flag key")), request_body = FlagDefinition, responses((status = 200, description = "OK", body = FlagRecord), (status = 412, description = "If-Match names another revision", body = crate::error::Problem, content_type = "application/problem+json"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_flag(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path(flag): Path<String>,
    headers: HeaderMap,
    AppJson(definition): AppJson<FlagDefinition>,
) -> Result<Response, ApiError> {
    if definition.key != flag {
        return Err(key_mismatch("flag", &flag, &definition.key));
    }
    let note = ChangeNote {
        actor: caller.token.name.clone(),
        action: "flag.update",
        reason: None,
        if_revision: if_match_revisions(&headers),
    };
    let changed = state
        .store
        .update_flag(definition, note)
        .await
        .map_err(|error| error.relative_to(&format!("flags.{flag}")))?;
    state.publisher.publish_all(changed.published);
    let record = state.store.flag(&flag).await?;
    Ok(([(ETAG, etag(record.revision))], Json(record)).into_response())
}

/// `DELETE /api/v1/flags/{flag}?reason=`: archives the flag. Refused with 422 while another
/// flag has it as a prerequisite.
#[utoipa::path(delete, path = "/api/v1/flags/{flag}", tag = "flags", params(("flag" = String, Path, description = "A flag key"), ArchiveQuery), responses((status = 204, description = "Done"), (status = 412, description = "If-Match names another revision", body = crate::error::Problem, content_type = "application/problem+json"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_flag(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path(flag): Path<String>,
    AppQuery(query): AppQuery<ArchiveQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let note = ChangeNote {
        actor: caller.token.name.clone(),
        action: "flag.archive",
        reason: query.reason.map(required_reason).transpose()?,
        if_revision: if_match_revisions(&headers),
    };
    let Changed { published, .. } = state.store.archive_flag(&flag, note).await?;
    state.publisher.publish_all(published);
    Ok(StatusCode::NO_CONTENT)
}

/// A body naming another resource than its URL.
pub(crate) fn key_mismatch(noun: &str, in_path: &str, in_body: &str) -> ApiError {
    ApiError::Body {
        status: StatusCode::BAD_REQUEST,
        detail: format!(
            "the body's `key` is `{in_body}` but the URL names {noun} `{in_path}`; a key cannot change"
        ),
    }
}
