//! Environments: listed for release managers, created by admins.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::AppState;
use crate::api::{Admin, Authorized, Release};
use crate::error::{ApiError, AppJson};
use crate::store::Environment;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvironmentRequest {
    name: String,
}

/// `GET /api/v1/environments`: each environment with its current snapshot version.
pub(crate) async fn list_environments(
    _: Authorized<Release>,
    State(state): State<AppState>,
) -> Result<Json<Vec<Environment>>, ApiError> {
    Ok(Json(state.store.environments().await?))
}

/// `POST /api/v1/environments`: a new environment where every flag starts in its initial state.
pub(crate) async fn post_environment(
    caller: Authorized<Admin>,
    State(state): State<AppState>,
    AppJson(request): AppJson<EnvironmentRequest>,
) -> Result<(StatusCode, Json<Environment>), ApiError> {
    let published = state.store.create_environment(&request.name, &caller.token.name).await?;
    let environment =
        Environment { name: published.environment.clone(), version: published.version };
    state.publisher.publish(published);
    Ok((StatusCode::CREATED, Json(environment)))
}
