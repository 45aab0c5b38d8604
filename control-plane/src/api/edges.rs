//! Edges: registered by admins, listed with what each has applied, and the signed envelope an
//! edge pulls when pushes stop reaching it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use edge_worker::config::SIGNATURE_HEADER;
use serde::Serialize;

use crate::AppState;
use crate::api::{Admin, Authorized, Read, Release, none_match};
use crate::error::{ApiError, AppJson};
use crate::model::edge::{EdgeRecord, NewEdge};
use crate::service::edges;

/// An edge as listed: what it has applied, and how far behind its environment it is.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct EdgeStatus {
    #[serde(flatten)]
    edge: EdgeRecord,
    /// Versions the edge is behind (`null` until it acknowledged one).
    lag: Option<u64>,
}

/// `GET /api/v1/edges`.
#[utoipa::path(get, path = "/api/v1/edges", tag = "edges", responses((status = 200, description = "OK", body = Vec<EdgeStatus>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_edges(
    _: Authorized<Release>,
    State(state): State<AppState>,
) -> Result<Json<Vec<EdgeStatus>>, ApiError> {
    let statuses = edges::list(&state.service)
        .await?
        .into_iter()
        .map(|edge| {
            let current = state.service.publisher.current(&edge.environment).map(|c| c.version());
            let lag = edge
                .applied_version
                .zip(current)
                .map(|(applied, current)| current.saturating_sub(applied));
            EdgeStatus { edge, lag }
        })
        .collect();
    Ok(Json(statuses))
}

/// `POST /api/v1/edges`: registers an edge; the current configuration goes to it at once.
#[utoipa::path(post, path = "/api/v1/edges", tag = "edges", request_body = NewEdge, responses((status = 201, description = "Created", body = EdgeRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_edge(
    caller: Authorized<Admin>,
    State(state): State<AppState>,
    AppJson(edge): AppJson<NewEdge>,
) -> Result<(StatusCode, Json<EdgeRecord>), ApiError> {
    let edge = edges::register(&state.service, edge, &caller.token.name).await?;
    Ok((StatusCode::CREATED, Json(edge)))
}

/// `DELETE /api/v1/edges/{edge}`.
#[utoipa::path(delete, path = "/api/v1/edges/{edge}", tag = "edges", params(("edge" = String, Path, description = "An edge's name")), responses((status = 204, description = "Done"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_edge(
    caller: Authorized<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    edges::remove(&state.service, &name, &caller.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/environments/{env}/edge-config`: the signed envelope, with
/// `"<version>.<readers revision>"` as ETag, for an edge's backstop pull.
#[utoipa::path(get, path = "/api/v1/environments/{environment}/edge-config", tag = "edges", params(("environment" = String, Path, description = "An environment, e.g. production")), responses((status = 200, description = "The signed envelope (docs/edge.md)", body = serde_json::Value), (status = 304, description = "Not modified: the If-None-Match tag is current"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_edge_config(
    caller: Authorized<Read>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::api::snapshot::current(&caller, &state, &environment)?;
    let envelope =
        state.service.edges.current_envelope(&environment).ok_or_else(edges::no_secret)?;
    let etag = format!("\"{}.{}\"", envelope.position.0, envelope.position.1);
    if none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    let headers = [
        (ETAG, etag),
        (CONTENT_TYPE, "application/json".to_owned()),
        (SIGNATURE_HEADER.parse().expect("a valid header name"), envelope.signature),
    ];
    Ok((headers, envelope.body).into_response())
}
