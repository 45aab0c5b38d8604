//! The HTTP API, one module per resource.

pub mod audit;
pub mod flags;
pub mod snapshot;

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::AppState;
use crate::auth::{self, Scope, Token};
use crate::error::ApiError;

/// The caller's token, if it has at least `needed`: 401 without a known token, 403 below scope.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<Token, ApiError> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        // The scheme name is case-insensitive (RFC 9110).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
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

/// The scope a route needs, as a type, so authorization is an extractor.
pub(crate) trait Needs: Send + Sync {
    const SCOPE: Scope;
}

pub(crate) struct Read;
pub(crate) struct Release;

impl Needs for Read {
    const SCOPE: Scope = Scope::Read;
}

impl Needs for Release {
    const SCOPE: Scope = Scope::Release;
}

/// The caller's token, checked to have the scope `N` needs. As a request-parts extractor it runs
/// before any body is read, so callers without the right token learn nothing from a body's errors.
pub(crate) struct Authorized<N> {
    pub(crate) token: Token,
    scope: PhantomData<N>,
}

impl<N: Needs> FromRequestParts<AppState> for Authorized<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = authorize(state, &parts.headers, N::SCOPE).await?;
        Ok(Self { token, scope: PhantomData })
    }
}
