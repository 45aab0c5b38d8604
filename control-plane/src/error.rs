//! Every failure a client sees, as RFC 9457 `application/problem+json`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::Refusal;
use crate::service;
use crate::store::StoreError;

/// Seconds a client is asked to wait while the database does not answer.
const UNAVAILABLE_RETRY_AFTER: u64 = 2;

/// RFC 9457 problem details, as every error is answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    /// What went wrong and, where it helps, what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For an invalid change: the JSON path of the fault, relative to the request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a bearer token is required, or the one given is unknown")]
    Unauthorized,
    #[error("this token's scope does not allow that; it needs `{0}`")]
    Forbidden(&'static str),
    #[error("this token is bound to another environment than `{0}`")]
    OtherEnvironment(String),
    #[error(
        "this token is bound to no environment: use a read token bound to one, or name the environment in the URL, /api/v1/environments/{{env}}/ofrep/v1/evaluate/flags"
    )]
    Unbound,
    #[error(
        "too many unknown tokens from this address; wait {} s (known tokens are not held up)",
        .0.as_secs().max(1)
    )]
    TooManyFailures(std::time::Duration),
    #[error("no route answers `{0}`; the API is described at /api/openapi.json")]
    NoRoute(String),
    #[error("`{0}` does not take this method; the `Allow` header lists those it takes")]
    MethodNotAllowed(String),
    #[error("the request's headers are over {} KiB", .0 >> 10)]
    HeadersTooLarge(usize),
    /// A body that is not the JSON the route takes: malformed, unknown fields, too large.
    #[error("{detail}")]
    Body { status: StatusCode, detail: String },
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<service::Error> for ApiError {
    fn from(error: service::Error) -> Self {
        match error {
            service::Error::Refused(refusal) => Self::Refused(refusal),
            service::Error::Store(error) => Self::Store(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Self::Forbidden(_)
            | Self::OtherEnvironment(_)
            | Self::Unbound
            | Self::Refused(Refusal::Forbidden(_)) => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::Refused(Refusal::NotFound(_)) | Self::NoRoute(_) => {
                (StatusCode::NOT_FOUND, "Not found")
            }
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            Self::HeadersTooLarge(_) => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "Request header fields too large")
            }
            Self::TooManyFailures(_) | Self::Refused(Refusal::OverQuota { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "Too many requests")
            }
            Self::Refused(Refusal::Conflict(_) | Refusal::Blocked(_)) => {
                (StatusCode::CONFLICT, "Conflict")
            }
            Self::Refused(Refusal::Stale(_)) => {
                (StatusCode::PRECONDITION_FAILED, "Precondition failed")
            }
            Self::Refused(Refusal::Malformed(_)) => (StatusCode::BAD_REQUEST, "Bad request"),
            Self::Body { status, .. } => (*status, "Bad request body"),
            Self::Refused(Refusal::Invalid(_) | Refusal::Unprocessable(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid change")
            }
            Self::Store(StoreError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
            }
            Self::Store(StoreError::Failed(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
            }
        };
        let mut body = Problem {
            kind: "about:blank",
            title,
            status: status.as_u16(),
            detail: None,
            path: None,
        };
        match &self {
            // Internal details stay in the log.
            Self::Store(StoreError::Unavailable(error)) => {
                tracing::warn!(%error, "the database is unavailable");
                body.detail = Some(
                    "the database does not answer; nothing was changed. Try again shortly".into(),
                );
            }
            Self::Store(error) => tracing::error!(%error, "internal error"),
            Self::Refused(Refusal::Invalid(error)) => {
                body.detail = Some(error.to_string());
                body.path = Some(error.path.clone());
            }
            other => body.detail = Some(other.to_string()),
        }
        let mut response = (status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, "application/problem+json".parse().expect("static"));
        let retry_after = match &self {
            Self::TooManyFailures(wait) => {
                Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            Self::Refused(Refusal::OverQuota { retry_after, .. }) => Some(*retry_after),
            Self::Store(StoreError::Unavailable(_)) => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.max(1).into());
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        response
    }
}

/// `Json` whose rejections come back as problems: 400 for malformed JSON, an object that names
/// a key twice (serde_json would keep the last), unknown or missing fields and wrong types; 413
/// over the body limit; 415 without a JSON content type.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::JsonRejection;
        let json = is_json(request.headers());
        let mut body =
            axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
                ApiError::Body { status: rejection.status(), detail: rejection.body_text() }
            })?;
        if !json {
            // No body at all, as from `curl -X POST …/kill`: say which fields are missing, as
            // for `{}`, rather than talk about its type.
            if !body.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::Body {
                    status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    detail: "Expected request with `Content-Type: application/json`".into(),
                });
            }
            body = axum::body::Bytes::from_static(b"{}");
        }
        if let Err(duplicate) = flag_core::json::unique_keys(&body) {
            return Err(ApiError::Body {
                status: StatusCode::BAD_REQUEST,
                detail: format!("the body names a key twice: {duplicate}"),
            });
        }
        match Json::<T>::from_bytes(&body) {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = match &rejection {
                    JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
                        StatusCode::BAD_REQUEST
                    }
                    other => other.status(),
                };
                Err(ApiError::Body { status, detail: rejection.body_text() })
            }
        }
    }
}

/// `application/json`, or another `application/…+json`, as axum's `Json` takes.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|subtype| subtype.ends_with("+json"))
}

/// `Query` whose rejections come back as 400 problems.
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for AppQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::Body {
                status: StatusCode::BAD_REQUEST,
                detail: rejection.body_text(),
            }),
        }
    }
}
