//! The HTTP API, one module per resource, and what they share: authorization, ETags, reasons.

pub mod audit;
pub mod counters;
pub mod dashboard;
pub mod edges;
pub mod environments;
pub mod flags;
pub mod health;
pub mod ofrep;
pub mod ofrep_events;
pub mod openapi;
pub mod plans;
pub mod segments;
pub mod snapshot;
pub mod stream;
pub mod tokens;
pub mod webhooks;

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use crate::AppState;
use crate::error::ApiError;
use crate::model::token::{Scope, Token};
use crate::transport::ClientAddress;

/// The token a request presents: `Authorization: Bearer <token>` or, as OFREP also allows,
/// `X-API-Key: <token>`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        // The scheme name is case-insensitive (RFC 9110).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|value| value.to_str().ok()))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// The scope a route needs, as a type, so authorization is an extractor.
pub(crate) trait Needs: Send + Sync {
    const SCOPE: Scope;
}

pub(crate) struct Client;
pub(crate) struct Read;
pub(crate) struct Release;
pub(crate) struct Admin;

impl Needs for Client {
    const SCOPE: Scope = Scope::Client;
}

impl Needs for Read {
    const SCOPE: Scope = Scope::Read;
}

impl Needs for Release {
    const SCOPE: Scope = Scope::Release;
}

impl Needs for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// The caller's token, checked to have the scope `N` needs: 401 without a known token, 403 below
/// the scope. As a request-parts extractor it runs before any body is read, so callers without
/// the right token learn nothing from a body's errors.
pub(crate) struct Authorized<N> {
    pub(crate) token: Arc<Token>,
    scope: PhantomData<N>,
}

impl<N> Authorized<N> {
    /// 403 unless the token may act on `environment`.
    pub(crate) fn reach(&self, environment: &str) -> Result<(), ApiError> {
        if self.token.reaches(environment) {
            Ok(())
        } else {
            Err(ApiError::OtherEnvironment(environment.to_owned()))
        }
    }
}

impl<N: Needs> FromRequestParts<AppState> for Authorized<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = presented_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let Some(token) = state.service.tokens.find(presented) else {
            let client = parts.extensions.get::<ConnectInfo<ClientAddress>>();
            if let Some(ConnectInfo(ClientAddress(address))) = client
                && let Some(wait) = state.brake.failed(address.ip())
            {
                return Err(ApiError::TooManyFailures(wait));
            }
            return Err(ApiError::Unauthorized);
        };
        if token.scope < N::SCOPE {
            return Err(ApiError::Forbidden(N::SCOPE.as_str()));
        }
        Ok(Self { token, scope: PhantomData })
    }
}

/// A request's headers, names and values together, beyond which the answer is 431. hyper's
/// own bound depends on how the bytes happen to arrive (somewhere between 400 and 800 KB);
/// this one does not.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Middleware: refuses a request whose headers are over `MAX_HEADER_BYTES`.
pub(crate) async fn limit_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    if size > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge(MAX_HEADER_BYTES).into_response();
    }
    next.run(request).await
}

/// Middleware: a refused request may leave its body unread, and then hyper closes the
/// connection after the answer. Saying so (`Connection: close`) has the client open a new
/// connection for its next request instead of losing it on this one.
pub(crate) async fn close_after_refusal(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
    let headers = request.headers();
    let declared = headers.get(CONTENT_LENGTH).and_then(|length| length.to_str().ok());
    let has_body = declared.is_some_and(|length| length.trim() != "0")
        || headers.contains_key(TRANSFER_ENCODING);
    let mut response = next.run(request).await;
    let status = response.status();
    if has_body && (status.is_client_error() || status.is_server_error()) {
        response.headers_mut().insert(CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
}

/// CORS for OFREP, so pages from an environment's allowed origins can evaluate with a client
/// token. Other paths and other origins get no `Access-Control-Allow-Origin`, so browsers keep
/// them from pages. Credentials (cookies) are never allowed: the token travels in a header.
pub(crate) fn cors(tokens: crate::auth::Tokens) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed = move |origin: &HeaderValue, parts: &Parts| {
        let path = parts.uri.path();
        let in_path = path
            .strip_prefix("/api/v1/environments/")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(_, rest)| rest.starts_with("ofrep/"))
            .map(|(environment, _)| environment.to_owned());
        if in_path.is_none() && !path.starts_with("/ofrep/") {
            return false;
        }
        // The environment the answer is for, where the request names it (its path, its
        // token, its stream token): then that environment's origins only. A preflight names
        // none, so any environment's origins pass it, and the request itself is held to its own.
        let environment = in_path
            .or_else(|| {
                let token = tokens.find(presented_token(&parts.headers)?)?;
                token.environment.clone()
            })
            .or_else(|| ofrep_events::stream_token_environment(parts.uri.query()?));
        match environment {
            Some(environment) => tokens.allowed_in(&environment, origin.as_bytes()),
            None => tokens.allowed_anywhere(origin.as_bytes()),
        }
    };
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(allowed))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::ETAG])
        .max_age(std::time::Duration::from_secs(600))
}

/// The answer for a path no route matches.
pub(crate) async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NoRoute(shown_path(&uri))
}

/// The answer for a route asked with a method it does not take (axum adds `Allow`).
pub(crate) async fn method_not_allowed(uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(shown_path(&uri))
}

/// A request's path as an answer repeats it: at most 128 characters.
fn shown_path(uri: &axum::http::Uri) -> String {
    let path = uri.path();
    match path.char_indices().nth(128) {
        Some((end, _)) => format!("{}…", &path[..end]),
        None => path.to_owned(),
    }
}

/// A flag's or segment's ETag.
pub(crate) fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// The revisions `If-Match` accepts: `None` without the header or with `*`. Tags that are not
/// revisions match nothing, so the change fails with 412 as RFC 9110 asks.
pub(crate) fn if_match_revisions(headers: &HeaderMap) -> Option<Vec<u64>> {
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

/// RFC 9110 weak comparison against a comma-separated If-None-Match list, or `*`.
pub(crate) fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(axum::http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A reason the audit log can show: required for rollouts and kills.
pub(crate) fn required_reason(reason: String) -> Result<String, ApiError> {
    required_text("reason", &reason)
}

/// `text` trimmed, or 400 naming `field` if nothing is left, or it is too long, or it holds
/// control characters (`model::check_text`).
pub(crate) fn required_text(field: &str, text: &str) -> Result<String, ApiError> {
    crate::model::check_text(field, text).map_err(|refusal| ApiError::Body {
        status: StatusCode::BAD_REQUEST,
        detail: refusal.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;
    use axum::http::header::{IF_MATCH, IF_NONE_MATCH};

    use super::{if_match_revisions, none_match};

    fn headers(name: axum::http::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, value.parse().unwrap());
        headers
    }

    #[test]
    fn if_none_match_lists() {
        assert!(none_match(&headers(IF_NONE_MATCH, "\"7\""), "\"7\""));
        assert!(none_match(&headers(IF_NONE_MATCH, "\"5\", W/\"7\""), "\"7\""));
        assert!(none_match(&headers(IF_NONE_MATCH, "*"), "\"7\""));
        assert!(!none_match(&headers(IF_NONE_MATCH, "\"6\""), "\"7\""));
        assert!(!none_match(&headers(IF_NONE_MATCH, "7"), "\"7\""));
        assert!(!none_match(&HeaderMap::new(), "\"7\""));
    }

    #[test]
    fn if_match_lists() {
        assert_eq!(if_match_revisions(&HeaderMap::new()), None);
        assert_eq!(if_match_revisions(&headers(IF_MATCH, "*")), None);
        assert_eq!(if_match_revisions(&headers(IF_MATCH, "\"3\", \"4\"")), Some(vec![3, 4]));
        assert_eq!(if_match_revisions(&headers(IF_MATCH, "W/\"3\"")), Some(vec![]));
    }
}
