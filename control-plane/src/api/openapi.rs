//! The API's OpenAPI 3.1 description, generated from the handlers' annotations and the types
//! they take and return; served at `/api/openapi.json` and kept in docs/openapi.json.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rollgate control plane",
        description = "Flags, segments, environments, rollout plans, kill switches, tokens, edges, the audit and decision logs, snapshots and OFREP. docs/api.md explains each endpoint with curl examples.",
        license(name = "Apache-2.0 OR MIT")
    ),
    paths(
        api::health::healthz,
        api::health::readyz,
        api::health::get_metrics,
        api::audit::get_audit,
        api::tokens::list_tokens,
        api::tokens::post_token,
        api::tokens::delete_token,
        api::environments::list_environments,
        api::environments::post_environment,
        api::environments::put_allowed_origins,
        api::flags::list_flags,
        api::flags::post_flag,
        api::flags::get_flag,
        api::flags::put_flag,
        api::flags::delete_flag,
        api::flags::put_state,
        api::flags::post_import,
        api::flags::put_rollout,
        api::flags::post_kill,
        api::flags::post_unkill,
        api::segments::list_segments,
        api::segments::post_segment,
        api::segments::get_segment,
        api::segments::put_segment,
        api::segments::delete_segment,
        api::snapshot::get_snapshot,
        api::stream::get_stream,
        api::edges::list_edges,
        api::edges::post_edge,
        api::edges::delete_edge,
        api::edges::get_edge_config,
        api::ofrep::post_single,
        api::ofrep::post_bulk,
        api::ofrep::post_single_in,
        api::ofrep::post_bulk_in,
        api::ofrep_events::get_events,
        api::counters::post_metrics,
        api::counters::get_metrics,
        api::plans::list_templates,
        api::plans::list_plans,
        api::plans::get_plan,
        api::plans::get_plan_readings,
        api::plans::post_plan,
        api::plans::post_advance,
        api::plans::post_hold,
        api::plans::post_resume,
        api::plans::post_rollback,
        api::plans::post_complete,
        api::plans::list_decisions,
        api::webhooks::list_webhooks,
        api::webhooks::post_webhook,
        api::webhooks::delete_webhook,
    ),
    modifiers(&Security),
    security(("bearer" = [])),
    tags(
        (name = "health"), (name = "flags"), (name = "segments"), (name = "environments"),
        (name = "snapshots"), (name = "ofrep", description = "OpenFeature Remote Evaluation Protocol"),
        (name = "plans", description = "Rollout plans and the decision log"), (name = "metrics"),
        (name = "webhooks"), (name = "edges"), (name = "audit"), (name = "tokens"),
    )
)]
pub struct ApiDoc;

/// Bearer tokens everywhere; OFREP also takes `X-API-Key`.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The description as served and checked in.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/openapi.json`.
pub(crate) async fn get_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
