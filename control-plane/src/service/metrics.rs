//! Metric counts from apps and edges, summed per minute of the control plane's clock, which
//! guardrails read.

use std::collections::{BTreeMap, HashMap};

use crate::model::Refusal;
use crate::model::flag::FlagDefinition;
use crate::model::metrics::{CountRow, MetricBatch};
use crate::model::plan::MAX_SECONDS;
use crate::service::{Error, Service};

/// Adds a batch of counters to the current minute. The batch is checked whole: every flag and
/// variant must exist, else nothing is counted. A batch whose id was already counted is not
/// counted again (`Ok(false)`). Counting wakes the scheduler, so guardrails act on it at once.
pub async fn record(
    service: &Service,
    environment: &str,
    batch: MetricBatch,
) -> Result<bool, Error> {
    batch.check()?;
    let environment = environment.to_owned();
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
                for report in batch.counters {
                    for (metric, value) in report.counts {
                        let row =
                            CountRow { variant: report.variant.clone(), metric, minute, value };
                        tx.add_metric_count(&environment, &report.flag, &row).await?;
                    }
                }
                effects.measured = true;
                Ok(true)
            })
        })
        .await
}

/// A flag's counters summed over the `window_seconds` ending now, per variant and metric.
pub async fn sums(
    service: &Service,
    environment: &str,
    flag: &str,
    window_seconds: u64,
) -> Result<BTreeMap<String, BTreeMap<String, u64>>, Error> {
    if !(60..=MAX_SECONDS).contains(&window_seconds) {
        return Err(Refusal::Malformed("`window_seconds` is 60 to 7776000 (90 days)".into()).into());
    }
    let minute = service.clock.timestamp().minute();
    let since = minute - window_seconds.div_ceil(60) as i64;
    let (environment, flag) = (environment.to_owned(), flag.to_owned());
    let rows = service
        .read(move |tx| {
            Box::pin(async move { Ok(tx.metric_counts(&environment, &flag, since, minute).await?) })
        })
        .await?;
    let mut variants: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for row in rows {
        *variants.entry(row.variant).or_default().entry(row.metric).or_default() += row.value;
    }
    Ok(variants)
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
