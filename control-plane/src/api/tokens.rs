//! API tokens, for admins: list, create (the secret is shown once, in the response), delete.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{Admin, Authorized};
use crate::auth;
use crate::error::{ApiError, AppJson};
use crate::model::time::Timestamp;
use crate::model::token::{Scope, StoredToken, Token};
use crate::service::tokens;
use crate::store::StoreError;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    name: String,
    scope: Scope,
    /// Binds a read token to one environment; a client token must be bound.
    environment: Option<String>,
}

/// A token as listed: never its secret or hash.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenInfo {
    name: String,
    scope: Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<String>,
    #[schema(value_type = String)]
    created_at: Timestamp,
}

impl From<StoredToken> for TokenInfo {
    fn from(stored: StoredToken) -> Self {
        let StoredToken { token, created_at } = stored;
        Self { name: token.name, scope: token.scope, environment: token.environment, created_at }
    }
}

/// A new token, with its secret: the only time anyone sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedToken {
    #[serde(flatten)]
    info: TokenInfo,
    token: String,
}

/// `GET /api/v1/tokens`.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, description = "OK", body = Vec<TokenInfo>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_tokens(
    _: Authorized<Admin>,
    State(state): State<AppState>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(tokens::list(&state.service).await?.into_iter().map(TokenInfo::from).collect()))
}

/// `POST /api/v1/tokens`.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenRequest, responses((status = 201, description = "Created; the token is shown this once", body = CreatedToken), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_token(
    caller: Authorized<Admin>,
    State(state): State<AppState>,
    AppJson(request): AppJson<TokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    if request.environment.is_some() && request.scope > Scope::Read {
        return Err(ApiError::Body {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: "only read and client tokens are bound to an environment".into(),
        });
    }
    let secret = auth::generate().map_err(|error| StoreError::Failed(error.to_string()))?;
    let token = Token {
        name: request.name,
        scope: request.scope,
        environment: request.environment,
        hash: auth::hash(&secret),
    };
    let stored = tokens::create(&state.service, token, &caller.token.name).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info: stored.into(), token: secret })))
}

/// `DELETE /api/v1/tokens/{name}`: the token stops working at once, and its open streams end.
#[utoipa::path(delete, path = "/api/v1/tokens/{token}", tag = "tokens", params(("token" = String, Path, description = "A token's name")), responses((status = 204, description = "Done"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_token(
    caller: Authorized<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    tokens::delete(&state.service, &name, &caller.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}
