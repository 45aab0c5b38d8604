//! Webhooks: where an environment's plan notifications go. Admins manage them.

use crate::model::audit::AuditEntry;
use crate::model::webhook::{NewWebhook, WebhookRecord};
use crate::model::{Refusal, check_key};
use crate::service::{Error, Service};

/// Every webhook with its pending and failed deliveries, by name.
pub async fn list(service: &Service) -> Result<Vec<WebhookRecord>, Error> {
    service.read(|tx| Box::pin(async move { Ok(tx.webhooks().await?) })).await
}

pub async fn create(
    service: &Service,
    webhook: NewWebhook,
    actor: &str,
) -> Result<WebhookRecord, Error> {
    service.targets.check_url("url", &webhook.url)?;
    check_key("webhook", &webhook.name)?;
    let actor = actor.to_owned();
    service
        .change(move |tx, now, _| {
            Box::pin(async move {
                if tx.environment_version(&webhook.environment).await?.is_none() {
                    let environment = &webhook.environment;
                    return Err(Refusal::NotFound(format!("environment `{environment}`")).into());
                }
                if !tx.insert_webhook(&webhook, now).await? {
                    return Err(Refusal::Conflict(format!("webhook `{}`", webhook.name)).into());
                }
                let entry = AuditEntry {
                    environment: Some(webhook.environment.clone()),
                    after: Some(serde_json::json!({"name": webhook.name, "url": webhook.url})),
                    ..AuditEntry::new(&actor, "webhook.create")
                };
                tx.append_audit(now, &entry).await?;
                let NewWebhook { name, url, environment } = webhook;
                let (pending, failed, last_error) = (0, 0, None);
                Ok(WebhookRecord {
                    name,
                    url,
                    environment,
                    created_at: now,
                    pending,
                    failed,
                    last_error,
                })
            })
        })
        .await
}

/// Deletes a webhook; its undelivered notifications are given up on.
pub async fn delete(service: &Service, name: &str, actor: &str) -> Result<(), Error> {
    let (name, actor) = (name.to_owned(), actor.to_owned());
    service
        .change(move |tx, now, _| {
            Box::pin(async move {
                let webhook = tx
                    .delete_webhook(&name)
                    .await?
                    .ok_or_else(|| Refusal::NotFound(format!("webhook `{name}`")))?;
                tx.fail_deliveries(&name, "webhook deleted", now).await?;
                let entry = AuditEntry {
                    environment: Some(webhook.environment.clone()),
                    before: Some(serde_json::json!({"name": webhook.name, "url": webhook.url})),
                    ..AuditEntry::new(&actor, "webhook.delete")
                };
                tx.append_audit(now, &entry).await?;
                Ok(())
            })
        })
        .await
}
