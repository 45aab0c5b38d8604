//! Flags: create, list, get, update and archive the shared definition; and a release manager's
//! changes to one flag in one environment: its state, rollout, kill, unkill.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::ETAG;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flag_core::wire::{self, Serve};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{Authorized, Release, etag, if_match_revisions, required_reason};
use crate::error::{ApiError, AppJson, AppQuery};
use crate::model::flag::{FlagDefinition, FlagRecord, FlagState};
use crate::model::percent::Percent;
use crate::service::flags::{self, Import, Note, Rollout, StateChanged};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutRequest {
    /// Exposure, a percentage from 0 to 100 with at most three decimals (25 is 25%; 2.5 or
    /// "2.5%" also work).
    #[schema(value_type = f64, minimum = 0, maximum = 100)]
    percent: Percent,
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
    let note = Note {
        actor: caller.token.name.clone(),
        reason: Some(required_reason(request.reason)?),
        if_revision: if_match_revisions(&headers),
    };
    let RolloutRequest { percent, stage, variant, .. } = request;
    let rollout = Rollout { percent, stage, variant };
    let changed = flags::roll_out(&state.service, &environment, &flag, rollout, note).await?;
    Ok(state_response(environment, flag, changed))
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
    let (service, actor) = (&state.service, &caller.token.name);
    let changed = if enabled {
        flags::unkill(service, &environment, &flag, actor, &reason).await?
    } else {
        flags::kill(service, &environment, &flag, actor, &reason).await?
    };
    Ok(state_response(environment, flag, changed))
}

fn state_response(environment: String, flag: String, changed: StateChanged) -> Response {
    let StateChanged { version, state, revision } = changed;
    let body = FlagStateResponse { environment, flag, version, state };
    ([(ETAG, etag(revision))], Json(body)).into_response()
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
    let note =
        Note { reason, if_revision: if_match_revisions(&headers), ..Note::by(&caller.token.name) };
    let changed = flags::set_state(&state.service, &environment, &flag, new_state, note).await?;
    Ok(state_response(environment, flag, changed))
}

/// Flags from another system (`rollgate import` converts them), with why.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportRequest {
    flags: Vec<ImportedFlag>,
    reason: Option<String>,
}

/// One flag to import: its definition, and its state in the environment.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportedFlag {
    definition: FlagDefinition,
    state: FlagState,
}

/// What an import did.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ImportResponse {
    environment: String,
    /// The snapshot version the import is in.
    version: u64,
    /// Flags created (serving their `off_variant` in every other environment).
    created: Vec<String>,
    /// Flags that existed with the same definition, not yet set up in this environment.
    adopted: Vec<String>,
}

/// `POST /api/v1/environments/{env}/import`: creates flags converted from another system and
/// sets their states in the environment, in one change: all of them or, with 409, none.
#[utoipa::path(post, path = "/api/v1/environments/{environment}/import", tag = "flags", params(("environment" = String, Path, description = "An environment, e.g. production")), request_body = ImportRequest, responses((status = 200, description = "OK", body = ImportResponse), (status = 409, description = "A key is taken: by another definition, a flag set up in the environment, or an archived flag", body = crate::error::Problem, content_type = "application/problem+json"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_import(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    AppJson(request): AppJson<ImportRequest>,
) -> Result<Json<ImportResponse>, ApiError> {
    caller.reach(&environment)?;
    let reason = request.reason.map(required_reason).transpose()?;
    let flags = request
        .flags
        .into_iter()
        .map(|flag| Import { definition: flag.definition, state: flag.state })
        .collect();
    let note = Note { reason, ..Note::by(&caller.token.name) };
    let imported = flags::import(&state.service, &environment, flags, note).await?;
    Ok(Json(ImportResponse {
        environment,
        version: imported.version,
        created: imported.created,
        adopted: imported.adopted,
    }))
}

/// `POST /api/v1/flags`: a new flag in every environment, serving `off_variant` to everyone.
#[utoipa::path(post, path = "/api/v1/flags", tag = "flags", request_body = FlagDefinition, responses((status = 201, description = "Created", body = FlagRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_flag(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    AppJson(definition): AppJson<FlagDefinition>,
) -> Result<Response, ApiError> {
    let record = flags::create(&state.service, definition, &caller.token.name).await?;
    Ok((StatusCode::CREATED, [(ETAG, etag(record.revision))], Json(record)).into_response())
}

/// Which flags to list. Empty fields match every flag.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FlagParams {
    /// Text found in the key or the description, ignoring case.
    q: Option<String>,
    /// A tag the flag has.
    tag: Option<String>,
    /// The flag's owner.
    owner: Option<String>,
    /// A rollout stage label, e.g. `beta`: flags whose fallthrough is a rollout at that stage,
    /// in `env` if given, else in any environment.
    stage: Option<String>,
    #[serde(rename = "env")]
    environment: Option<String>,
}

/// `GET /api/v1/flags`: every flag with its metadata and its state in each environment, by key.
#[utoipa::path(get, path = "/api/v1/flags", tag = "flags", params(FlagParams), responses((status = 200, description = "OK", body = Vec<FlagRecord>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_flags(
    _: Authorized<Release>,
    State(state): State<AppState>,
    AppQuery(params): AppQuery<FlagParams>,
) -> Result<Json<Vec<FlagRecord>>, ApiError> {
    let FlagParams { q, tag, owner, stage, environment } = params;
    let query = flags::FlagQuery { text: q, tag, owner, stage, environment };
    Ok(Json(flags::list(&state.service, query).await?))
}

/// `GET /api/v1/flags/{flag}`: a flag's definition and its state in each environment.
#[utoipa::path(get, path = "/api/v1/flags/{flag}", tag = "flags", params(("flag" = String, Path, description = "A flag key")), responses((status = 200, description = "OK", body = FlagRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_flag(
    _: Authorized<Release>,
    State(state): State<AppState>,
    Path(flag): Path<String>,
) -> Result<Response, ApiError> {
    let record = flags::get(&state.service, &flag).await?;
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
    let note = Note { if_revision: if_match_revisions(&headers), ..Note::by(&caller.token.name) };
    let record = flags::update(&state.service, definition, note).await?;
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
    let note = Note {
        actor: caller.token.name.clone(),
        reason: query.reason.map(required_reason).transpose()?,
        if_revision: if_match_revisions(&headers),
    };
    flags::archive(&state.service, &flag, note).await?;
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
