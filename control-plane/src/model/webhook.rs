//! Webhooks: where an environment's plan notifications go, and the outbox of deliveries.

use serde::{Deserialize, Serialize};

use crate::model::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub name: String,
    pub url: String,
    pub environment: String,
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

/// A webhook URL as anyone but an admin sees it: its scheme, host and port. The rest is masked,
/// since a webhook's path can be its secret (Slack's is).
pub fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => {
            let port = url.port().map(|port| format!(":{port}")).unwrap_or_default();
            format!("{}://{}{port}/…", url.scheme(), url.host_str().unwrap_or_default())
        }
        Err(_) => "…".into(),
    }
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
