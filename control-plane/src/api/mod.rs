//! The HTTP API, one module per resource.

pub mod snapshot;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use crate::AppState;
use crate::auth::{self, Scope, Token};
use crate::error::ApiError;

/// The caller's token, if it has at least `needed`: 401 without a known token, 403 below scope.
pub(crate) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<Token, ApiError> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let token = state
        .store
        .token(&auth::hash(presented))
        .await?
        .filter(|token| auth::matches(presented, token))
        .ok_or(ApiError::Unauthorized)?;
    if token.scope < needed {
        return Err(ApiError::Forbidden(needed.as_str()));
    }
    Ok(token)
}
