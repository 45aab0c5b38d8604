//! Every failure a client sees, as RFC 9457 `application/problem+json`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a bearer token is required, or the one given is unknown")]
    Unauthorized,
    #[error("this token's scope does not allow that; it needs `{0}`")]
    Forbidden(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::Store(StoreError::NotFound(_)) => (StatusCode::NOT_FOUND, "Not found"),
            Self::Store(StoreError::Conflict(_)) => (StatusCode::CONFLICT, "Conflict"),
            Self::Store(StoreError::BadKey(_)) => (StatusCode::BAD_REQUEST, "Bad request"),
            Self::Store(StoreError::Invalid(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid change")
            }
            Self::Store(StoreError::Internal(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
            }
        };
        let mut body = json!({"type": "about:blank", "title": title, "status": status.as_u16()});
        match &self {
            // Internal details stay in the log.
            Self::Store(StoreError::Internal(detail)) => tracing::error!(%detail, "internal error"),
            Self::Store(StoreError::Invalid(error)) => {
                body["detail"] = json!(error.to_string());
                body["path"] = json!(error.path);
            }
            other => body["detail"] = json!(other.to_string()),
        }
        let mut response = (status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, "application/problem+json".parse().expect("static"));
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        response
    }
}
