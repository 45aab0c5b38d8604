//! Webhooks: where an environment's plan notifications go. Admins manage them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::AppState;
use crate::api::{Admin, Authorized, Release};
use crate::error::{ApiError, AppJson};
use crate::model::token::Scope;
use crate::model::webhook::{NewWebhook, WebhookRecord, masked_url};
use crate::service::webhooks;

/// `GET /api/v1/webhooks`: each with its pending and failed deliveries. Only admins see whole
/// URLs; others see their scheme and host.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", responses((status = 200, description = "OK", body = Vec<WebhookRecord>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_webhooks(
    caller: Authorized<Release>,
    State(state): State<AppState>,
) -> Result<Json<Vec<WebhookRecord>>, ApiError> {
    let mut webhooks = webhooks::list(&state.service).await?;
    if caller.token.scope < Scope::Admin {
        for webhook in &mut webhooks {
            webhook.url = masked_url(&webhook.url);
        }
    }
    Ok(Json(webhooks))
}

/// `POST /api/v1/webhooks`.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = NewWebhook, responses((status = 201, description = "Created", body = WebhookRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_webhook(
    caller: Authorized<Admin>,
    State(state): State<AppState>,
    AppJson(webhook): AppJson<NewWebhook>,
) -> Result<(StatusCode, Json<WebhookRecord>), ApiError> {
    let created = webhooks::create(&state.service, webhook, &caller.token.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `DELETE /api/v1/webhooks/{webhook}`: its undelivered notifications are dropped.
#[utoipa::path(delete, path = "/api/v1/webhooks/{webhook}", tag = "webhooks", params(("webhook" = String, Path, description = "A webhook's name")), responses((status = 204, description = "Done"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_webhook(
    caller: Authorized<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    webhooks::delete(&state.service, &name, &caller.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}
