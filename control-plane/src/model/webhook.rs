//! Webhooks: where an environment's plan notifications go, and the outbox of deliveries.

use serde::{Deserialize, Serialize};

use crate::model::time::Timestamp;
use crate::model::{Refusal, check_http_url, check_key};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub name: String,
    pub url: String,
    pub environment: String,
}

impl NewWebhook {
    pub fn check(&self) -> Result<(), Refusal> {
        check_http_url("url", &self.url)?;
        check_key("webhook", &self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WebhookRecord {
    pub name: String,
    pub url: String,
    pub environment: String,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    /// Notifications still to deliver.
    pub pending: u64,
    /// Notifications given up on after every retry failed.
    pub failed: u64,
    pub last_error: Option<String>,
}

/// One notification to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub webhook: String,
    pub url: String,
    pub event: String,
    pub payload: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed this time; `give_up` when no retry is left.
    Failed {
        error: String,
        give_up: bool,
    },
}
