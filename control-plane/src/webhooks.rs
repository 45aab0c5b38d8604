//! Delivers plan notifications from the outbox (the `deliveries` table, written in the same
//! transaction as the decision) to webhooks, with retries and exponential backoff. It runs
//! apart from the decisions themselves, so a failing webhook never delays a rollback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::model::webhook::{Delivery, DeliveryOutcome};
use crate::outbound::{self, Targets};
use crate::store::{self, Committed, Store, StoreError};

/// Attempts per notification before it is given up on (about four minutes of retries).
pub const MAX_ATTEMPTS: u32 = 10;
const TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(60);

/// The wait before attempt `attempt + 1`, after `attempt` failed ones.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_RETRY.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(LAST_RETRY)
}

/// Sends pending notifications until the process ends: at start, when `wake` is notified (a
/// commit queued some) and when a retry is due.
pub fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    targets: Targets,
) -> tokio::task::JoinHandle<()> {
    let mut leadership = store.leadership();
    let outbox = Outbox { store, clock };
    tokio::spawn(async move {
        let client = targets.client(TIMEOUT);
        let mut retry_at: HashMap<i64, Instant> = HashMap::new();
        loop {
            if let Some(leadership) = &mut leadership
                && !*leadership.borrow_and_update()
            {
                // The leading process sends them.
                if leadership.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let next = match outbox.pending(1000).await {
                Ok(pending) => deliver(&outbox, &client, &targets, pending, &mut retry_at).await,
                Err(error) => {
                    tracing::error!(%error, "could not read pending notifications");
                    Some(Instant::now() + Duration::from_secs(1))
                }
            };
            let sleep = tokio::time::sleep_until(
                next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                () = sleep => {}
                () = wake.notified() => {}
            }
        }
    })
}

/// Sends every due delivery at once; returns when the next retry is due.
async fn deliver(
    outbox: &Outbox,
    client: &reqwest::Client,
    targets: &Targets,
    pending: Vec<Delivery>,
    retry_at: &mut HashMap<i64, Instant>,
) -> Option<Instant> {
    let now = Instant::now();
    retry_at.retain(|id, _| pending.iter().any(|delivery| delivery.id == *id));
    let (due, waiting): (Vec<_>, Vec<_>) =
        pending.into_iter().partition(|d| retry_at.get(&d.id).is_none_or(|at| *at <= now));
    let mut next = waiting.iter().filter_map(|d| retry_at.get(&d.id).copied()).min();
    let sent = join_all(due.iter().map(|delivery| send(client, targets, delivery))).await;
    for (delivery, result) in due.iter().zip(sent) {
        let outcome = match result {
            Ok(()) => {
                retry_at.remove(&delivery.id);
                DeliveryOutcome::Delivered
            }
            Err(error) => {
                let attempts = delivery.attempts + 1;
                let give_up = attempts >= MAX_ATTEMPTS;
                tracing::warn!(
                    webhook = %delivery.webhook, event = %delivery.event, attempts, give_up, %error,
                    "webhook delivery failed"
                );
                if !give_up {
                    let at = Instant::now() + backoff(attempts);
                    retry_at.insert(delivery.id, at);
                    next = Some(next.map_or(at, |next| next.min(at)));
                }
                DeliveryOutcome::Failed { error, give_up }
            }
        };
        if let Err(error) = outbox.record(delivery.id, outcome).await {
            tracing::error!(%error, "could not record a webhook delivery");
        }
    }
    next
}

/// Posts one notification. Nothing of the answer but its status is read, and no error names
/// the URL (a Slack webhook's path is its secret).
async fn send(
    client: &reqwest::Client,
    targets: &Targets,
    delivery: &Delivery,
) -> Result<(), String> {
    // The allowed ranges may have changed since the webhook was made.
    targets.check_url("url", &delivery.url).map_err(|refusal| refusal.to_string())?;
    let response = client
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("x-rollgate-event", &delivery.event)
        .header("x-rollgate-delivery", delivery.id.to_string())
        .body(delivery.payload.clone())
        .send()
        .await
        .map_err(outbound::failure)?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {}", response.status()))
    }
}

/// The `deliveries` table: what is pending, and each attempt's outcome (bookkeeping, not
/// audited).
struct Outbox {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Outbox {
    async fn pending(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        store::read(self.store.as_ref(), move |tx| {
            Box::pin(async move { tx.pending_deliveries(limit).await })
        })
        .await
    }

    async fn record(&self, id: i64, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        let now = self.clock.timestamp();
        store::write(self.store.as_ref(), move |tx| {
            Box::pin(async move {
                tx.record_delivery(id, &outcome, now).await?;
                Ok(Committed::alone(()))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(8), Duration::from_secs(60));
        assert_eq!(backoff(40), Duration::from_secs(60));
    }
}
