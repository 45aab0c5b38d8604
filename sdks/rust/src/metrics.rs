//! Counts per flag, variant and metric, and the task that reports them in batches to
//! `POST /api/v1/environments/{env}/metrics`. Each batch has an id, so a batch sent again after
//! a lost answer counts once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::shared::Shared;

/// The API's limits on a batch (docs/api.md, Limits).
const COUNTERS_PER_BATCH: usize = 1000;
const METRICS_PER_COUNTER: usize = 32;
const MAX_COUNT: u64 = 1_000_000_000;
/// How long a batch may take, and the longest `Retry-After` heeded.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A metric name the API takes: 1 to 64 of `a-z 0-9 _ . -`. Anything else would get the
/// whole batch refused.
pub(crate) fn is_metric_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// foldhash: these maps are hashed on every evaluation, and their keys are not attacker-chosen.
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;
type ByMetric = Map<u64>;

#[derive(Default)]
pub(crate) struct Counts {
    /// flag → variant → metric → count. Nested, so counting an existing key allocates nothing.
    counts: Mutex<Map<Map<ByMetric>>>,
    /// Off when no reporter runs: then nothing is counted.
    pub(crate) enabled: AtomicBool,
    /// Woken after each reporting attempt.
    pub(crate) reported: Notify,
}

#[derive(Debug, Serialize)]
struct Counter {
    flag: String,
    variant: String,
    counts: ByMetric,
}

#[derive(Debug, Serialize)]
struct Batch {
    batch: String,
    counters: Vec<Counter>,
}

impl Counts {
    pub(crate) fn add(&self, flag: &str, variant: &str, metric: &str, count: u64) {
        if count == 0 || !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let variants = match counts.get_mut(flag) {
            Some(variants) => variants,
            None => counts.entry(flag.to_owned()).or_default(),
        };
        let metrics = match variants.get_mut(variant) {
            Some(metrics) => metrics,
            None => variants.entry(variant.to_owned()).or_default(),
        };
        match metrics.get_mut(metric) {
            Some(n) => *n = n.saturating_add(count),
            None => {
                metrics.insert(metric.to_owned(), count);
            }
        }
    }

    /// Up to a batch's worth of counters, taken out; a count over the API's limit leaves the rest.
    fn take(&self) -> Vec<Counter> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut taken = Vec::new();
        for (flag, variants) in counts.iter_mut() {
            for (variant, metrics) in variants.iter_mut() {
                if taken.len() == COUNTERS_PER_BATCH {
                    break;
                }
                let mut sent = ByMetric::default();
                for (metric, n) in metrics.iter_mut().take(METRICS_PER_COUNTER) {
                    let now = (*n).min(MAX_COUNT);
                    *n -= now;
                    sent.insert(metric.clone(), now);
                }
                metrics.retain(|_, n| *n > 0);
                taken.push(Counter { flag: flag.clone(), variant: variant.clone(), counts: sent });
            }
            variants.retain(|_, metrics| !metrics.is_empty());
        }
        counts.retain(|_, variants| !variants.is_empty());
        taken
    }
}

/// Reports every `interval`, on `flush`, and once more when stopped.
pub(crate) async fn report(
    shared: Arc<Shared>,
    client: reqwest::Client,
    url: String,
    token: String,
    interval: Duration,
) {
    let sender = format!("{:016x}", rand::random::<u64>());
    let mut sequence = 0u64;
    let mut pending: Option<Batch> = None;
    // After a 429, nothing is sent before the time its `Retry-After` names.
    let mut not_before = Instant::now();
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            () = shared.flush.notified() => false,
            () = shared.stop.stopped() => true,
        };
        // Everything counted so far, a batch at a time, until a batch must wait.
        while Instant::now() >= not_before {
            if pending.is_none() {
                let counters = shared.counts.take();
                if counters.is_empty() {
                    break;
                }
                sequence += 1;
                pending = Some(Batch { batch: format!("{sender}:{sequence}"), counters });
            }
            let Some(batch) = &pending else { break };
            match send(&client, &url, &token, batch).await {
                Sent::Done => pending = None,
                Sent::Later => break,
                Sent::After(wait) => {
                    not_before = Instant::now() + wait.min(LONGEST_RETRY_AFTER);
                    break;
                }
            }
        }
        shared.counts.reported.notify_waiters();
        if stopping {
            return;
        }
    }
}

enum Sent {
    /// Counted, or refused for good (it would be refused again).
    Done,
    /// Not counted yet: send the same batch again later.
    Later,
    /// Over a quota: send the same batch again, not before this long.
    After(Duration),
}

async fn send(client: &reqwest::Client, url: &str, token: &str, batch: &Batch) -> Sent {
    match client.post(url).bearer_auth(token).timeout(SEND_TIMEOUT).json(batch).send().await {
        Ok(response) if response.status().is_success() => Sent::Done,
        Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
            let seconds = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(1);
            tracing::debug!(seconds, "rollgate: over a metrics quota; the batch waits");
            Sent::After(Duration::from_secs(seconds))
        }
        Ok(response) if response.status().is_server_error() => {
            tracing::debug!(status = %response.status(), "rollgate: metrics not counted yet; sent again later");
            Sent::Later
        }
        Ok(response) => {
            let status = response.status();
            let problem = response.text().await.unwrap_or_default();
            tracing::warn!(%status, %problem, "rollgate: the control plane refused a metrics batch; dropped");
            Sent::Done
        }
        Err(error) => {
            tracing::debug!(%error, "rollgate: metrics not sent; sent again later");
            Sent::Later
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_are_taken_once() {
        let counts = Counts::default();
        counts.enabled.store(true, Ordering::Relaxed);
        counts.add("banner", "new", "evaluations", 2);
        counts.add("banner", "new", "evaluations", 3);
        counts.add("banner", "new", "errors", 1);
        counts.add("banner", "old", "evaluations", 0);
        let taken = counts.take();
        assert_eq!(taken.len(), 1);
        let expected: ByMetric =
            [("evaluations".to_owned(), 5), ("errors".to_owned(), 1)].into_iter().collect();
        assert_eq!(taken[0].counts, expected);
        assert!(counts.take().is_empty());
    }

    #[test]
    fn counts_over_the_limit_go_in_several_batches() {
        let counts = Counts::default();
        counts.enabled.store(true, Ordering::Relaxed);
        counts.add("f", "v", "evaluations", MAX_COUNT + 5);
        assert_eq!(counts.take()[0].counts["evaluations"], MAX_COUNT);
        assert_eq!(counts.take()[0].counts["evaluations"], 5);
        for metric in 0..METRICS_PER_COUNTER + 1 {
            counts.add("g", "v", &format!("m{metric}"), 1);
        }
        assert_eq!(counts.take()[0].counts.len(), METRICS_PER_COUNTER);
        assert_eq!(counts.take()[0].counts.len(), 1);
        for i in 0..COUNTERS_PER_BATCH + 1 {
            counts.add(&format!("flag-{i}"), "v", "evaluations", 1);
        }
        assert_eq!(counts.take().len(), COUNTERS_PER_BATCH);
        assert_eq!(counts.take().len(), 1);
    }

    #[test]
    fn metric_names_are_the_apis() {
        assert!(is_metric_name("requests") && is_metric_name("p99.latency_ms-2"));
        for bad in ["", "Errors", "checkoutCompleted", "a b", &"x".repeat(65)] {
            assert!(!is_metric_name(bad), "{bad}");
        }
    }

    #[test]
    fn nothing_is_counted_without_a_reporter() {
        let counts = Counts::default();
        counts.add("f", "v", "evaluations", 1);
        assert!(counts.take().is_empty());
    }
}
