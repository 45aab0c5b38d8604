//! Environments: listed for release managers, created by admins.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::AppState;
use crate::api::{Admin, Authorized, Release};
use crate::error::{ApiError, AppJson};
use crate::model::flag::Environment;
use crate::service::environments;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvironmentRequest {
    name: String,
}

/// `GET /api/v1/environments`: each environment with its current snapshot version.
#[utoipa::path(get, path = "/api/v1/environments", tag = "environments", responses((status = 200, description = "OK", body = Vec<Environment>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_environments(
    _: Authorized<Release>,
    State(state): State<AppState>,
) -> Result<Json<Vec<Environment>>, ApiError> {
    Ok(Json(environments::list(&state.service).await?))
}

/// `POST /api/v1/environments`: a new environment where every flag starts in its initial state.
#[utoipa::path(post, path = "/api/v1/environments", tag = "environments", request_body = EnvironmentRequest, responses((status = 201, description = "Created", body = Environment), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_environment(
    caller: Authorized<Admin>,
    State(state): State<AppState>,
    AppJson(request): AppJson<EnvironmentRequest>,
) -> Result<(StatusCode, Json<Environment>), ApiError> {
    let environment =
        environments::create(&state.service, &request.name, &caller.token.name).await?;
    Ok((StatusCode::CREATED, Json(environment)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowedOriginsRequest {
    /// Origins as browsers send them, e.g. `https://app.example.com`; `[]` allows none.
    allowed_origins: Vec<String>,
}

/// `PUT /api/v1/environments/{environment}/allowed-origins`: the origins whose pages may call
/// OFREP with a client token (CORS), here and at the environment's edges.
#[utoipa::path(put, path = "/api/v1/environments/{environment}/allowed-origins", tag = "environments", params(("environment" = String, Path, description = "An environment's name")), request_body = AllowedOriginsRequest, responses((status = 200, description = "OK", body = Environment), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_allowed_origins(
    caller: Authorized<Admin>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    AppJson(request): AppJson<AllowedOriginsRequest>,
) -> Result<Json<Environment>, ApiError> {
    let updated = environments::set_allowed_origins(
        &state.service,
        &environment,
        request.allowed_origins,
        &caller.token.name,
    )
    .await?;
    Ok(Json(updated))
}
