//! Metric counts from apps and edges, summed per minute of the control plane's clock, which
//! guardrails read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::Refusal;
use crate::model::flag::FlagDefinition;
use crate::model::metrics::{
    CountRow, MAX_METRIC_NAMES, MAX_ROWS_PER_MINUTE, METRIC_NAMES_WINDOW_MINUTES, MetricBatch,
};
use crate::model::plan::MAX_SECONDS;
use crate::model::time::Timestamp;
use crate::service::{Error, Service};
use crate::store::Tx;

fn seconds_to_next_minute(now: Timestamp) -> u64 {
    let into_minute = now.millis().rem_euclid(60_000) as u64;
    (60_000 - into_minute).div_ceil(1000)
}

/// Adds a batch of counters, reported with `token`, to the current minute. The batch is checked
/// whole: every flag and variant must exist, and the quotas hold, else nothing is counted. A
/// batch whose id was already counted is not counted again (`Ok(false)`). Counting wakes the
/// scheduler, so guardrails act on it at once.
///
/// Counts for a row that exists this minute are summed into it and cost no quota, so a fleet of
/// edges reporting the same flags shares a few rows a minute.
pub async fn record(
    service: &Service,
    environment: &str,
    token: &str,
    batch: MetricBatch,
) -> Result<bool, Error> {
    batch.check()?;
    let (environment, token) = (environment.to_owned(), token.to_owned());
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                if tx.environment_version(&environment).await?.is_none() {
                    return Err(Refusal::NotFound(format!("environment `{environment}`")).into());
                }
                let minute = now.minute();
                if let Some(id) = &batch.batch
                    && !tx.insert_metric_batch(&environment, id, minute).await?
                {
                    return Ok(false);
                }
                let mut definitions: HashMap<String, Option<FlagDefinition>> = HashMap::new();
                for report in &batch.counters {
                    if !definitions.contains_key(&report.flag) {
                        let definition = match tx.flag_state(&environment, &report.flag).await? {
                            Some(_) => tx.flag(&report.flag).await?.map(|flag| flag.definition),
                            None => None,
                        };
                        definitions.insert(report.flag.clone(), definition);
                    }
                }
                batch.check_flags(|flag| definitions.get(flag).and_then(Option::as_ref))?;
                // Written first, then checked: a refusal rolls the whole batch back.
                let mut new_rows = 0;
                let mut flags_with_new_rows = BTreeSet::new();
                for report in batch.counters {
                    for (metric, value) in report.counts {
                        let row =
                            CountRow { variant: report.variant.clone(), metric, minute, value };
                        if tx.add_metric_count(&environment, &report.flag, &row).await? {
                            new_rows += 1;
                            flags_with_new_rows.insert(report.flag.clone());
                        }
                    }
                }
                for flag in &flags_with_new_rows {
                    check_metric_names(tx, &environment, flag, minute).await?;
                }
                // Charged in the database, so the quota holds across replicas; a refusal rolls
                // the charge back with the rest.
                let added = tx.charge_metric_rows(&token, minute, new_rows).await?;
                if added > MAX_ROWS_PER_MINUTE {
                    return Err(Refusal::OverQuota {
                        detail: format!(
                            "token `{token}` may add {MAX_ROWS_PER_MINUTE} metric rows a minute; \
                             it added {} this minute, and the batch would add {new_rows}",
                            added - new_rows
                        ),
                        retry_after: seconds_to_next_minute(now),
                    }
                    .into());
                }
                effects.measured = true;
                Ok(true)
            })
        })
        .await
}

/// Refuses a flag more than `MAX_METRIC_NAMES` metric names in the last hour.
async fn check_metric_names(
    tx: &mut dyn Tx,
    environment: &str,
    flag: &str,
    minute: i64,
) -> Result<(), Error> {
    let since = minute - METRIC_NAMES_WINDOW_MINUTES;
    let names = tx.metric_names(environment, flag, since).await?;
    if names.len() > MAX_METRIC_NAMES {
        return Err(Refusal::OverQuota {
            detail: format!(
                "flag `{flag}` may have {MAX_METRIC_NAMES} metric names in an hour; with this \
                 batch it would have {}",
                names.len()
            ),
            retry_after: 60 * METRIC_NAMES_WINDOW_MINUTES as u64,
        }
        .into());
    }
    Ok(())
}

/// Counts per variant and metric.
pub type Counts = BTreeMap<String, BTreeMap<String, u64>>;

/// A flag's counters over the `window_seconds` ending now, per minute (the minute's start,
/// oldest first; only minutes with counts).
pub async fn by_minute(
    service: &Service,
    environment: &str,
    flag: &str,
    window_seconds: u64,
) -> Result<BTreeMap<i64, Counts>, Error> {
    let rows = rows(service, environment, flag, window_seconds).await?;
    let mut minutes: BTreeMap<i64, Counts> = BTreeMap::new();
    for row in rows {
        let counts = minutes.entry(row.minute).or_default();
        *counts.entry(row.variant).or_default().entry(row.metric).or_default() += row.value;
    }
    Ok(minutes)
}

/// A flag's counters summed over the `window_seconds` ending now, per variant and metric.
pub async fn sums(
    service: &Service,
    environment: &str,
    flag: &str,
    window_seconds: u64,
) -> Result<Counts, Error> {
    let rows = rows(service, environment, flag, window_seconds).await?;
    let mut variants: Counts = BTreeMap::new();
    for row in rows {
        *variants.entry(row.variant).or_default().entry(row.metric).or_default() += row.value;
    }
    Ok(variants)
}

async fn rows(
    service: &Service,
    environment: &str,
    flag: &str,
    window_seconds: u64,
) -> Result<Vec<CountRow>, Error> {
    if !(60..=MAX_SECONDS).contains(&window_seconds) {
        return Err(Refusal::Malformed("`window_seconds` is 60 to 7776000 (90 days)".into()).into());
    }
    let minute = service.clock.timestamp().minute();
    let since = minute - window_seconds.div_ceil(60) as i64;
    let (environment, flag) = (environment.to_owned(), flag.to_owned());
    service
        .read(move |tx| {
            Box::pin(async move { Ok(tx.metric_counts(&environment, &flag, since, minute).await?) })
        })
        .await
}

/// Forgets counts older than the longest window, and batch ids a day older still.
pub(crate) async fn prune(service: &Service) -> Result<(), Error> {
    let horizon = service.clock.timestamp().minute() - (MAX_SECONDS / 60) as i64;
    service
        .change(move |tx, _, _| {
            Box::pin(async move { Ok(tx.prune_metrics(horizon, horizon - 24 * 60).await?) })
        })
        .await
}
