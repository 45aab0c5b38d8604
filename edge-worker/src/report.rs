//! Evaluation counts per flag and variant, reported to the control plane in batches off the
//! request path (`ctx.wait_until`), so guardrails can use them (`per: "evaluations"`), and the
//! share of them the flag's percentage rollout decided (`rollout_evaluations`), which a rollout
//! plan's sample-ratio check compares with the split it configured.
//!
//! Bindings: `CONTROL_PLANE_URL` and `CONTROL_PLANE_TOKEN` (without them nothing is reported),
//! `METRICS_INTERVAL_SECONDS` (default 10).

use std::cell::RefCell;
use std::collections::HashMap;

use flag_core::Evaluation;
use worker::{Context, Date, Env, Fetch, Headers, Method, Request, RequestInit};

const DEFAULT_INTERVAL_SECONDS: u64 = 10;
/// The control plane takes at most this many counters per batch.
const COUNTERS_PER_BATCH: usize = 1_000;
/// The metric names edge counts are reported under.
pub(crate) const EVALUATIONS: &str = "evaluations";
const ROLLOUT_EVALUATIONS: &str = "rollout_evaluations";

/// One flag variant's counts.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Tally {
    evaluations: u64,
    /// Those the flag's fallthrough rollout decided.
    rollout_evaluations: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.evaluations += other.evaluations;
        self.rollout_evaluations += other.rollout_evaluations;
    }
}

#[derive(Default)]
struct Counts {
    by_variant: HashMap<(String, String), Tally>,
    /// When the oldest unreported count was made, in ms since the epoch.
    since: Option<u64>,
    /// Names this isolate's batches, so a retried batch counts once.
    isolate: Option<String>,
    sent: u64,
}

thread_local! {
    static COUNTS: RefCell<Counts> = RefCell::default();
}

/// Counts one evaluation that served a variant.
pub(crate) fn served(flag: &str, evaluation: &Evaluation<'_>) {
    let Some(variant) = evaluation.variant else {
        return;
    };
    let tally = Tally {
        evaluations: 1,
        rollout_evaluations: u64::from(evaluation.by_fallthrough_rollout()),
    };
    COUNTS.with(|counts| {
        let mut counts = counts.borrow_mut();
        counts.since.get_or_insert_with(|| Date::now().as_millis());
        counts.by_variant.entry((flag.to_owned(), variant.to_owned())).or_default().add(tally);
    });
}

/// Sends the counts in the background once the interval since the oldest has passed.
pub(crate) fn flush_if_due(env: &Env, context: &Context) {
    let (Ok(url), Ok(token)) = (env.var("CONTROL_PLANE_URL"), env.secret("CONTROL_PLANE_TOKEN"))
    else {
        return;
    };
    let interval_ms = env
        .var("METRICS_INTERVAL_SECONDS")
        .ok()
        .and_then(|seconds| seconds.to_string().parse().ok())
        .unwrap_or(DEFAULT_INTERVAL_SECONDS)
        * 1000;
    let Some(batches) = COUNTS.with(|counts| take_due(&mut counts.borrow_mut(), interval_ms))
    else {
        return;
    };
    let Ok(environment) = env.var("ENVIRONMENT").map(|e| e.to_string()) else {
        return;
    };
    let address = format!(
        "{}/api/v1/environments/{environment}/metrics",
        url.to_string().trim_end_matches('/')
    );
    let token = token.to_string();
    context.wait_until(async move {
        for (body, counted) in batches {
            let Err((error, retry)) = send(&address, &token, body).await else {
                continue;
            };
            worker::console_error!("reporting evaluation counts: {error}");
            // The network or the control plane failed: counted again next time, under a new
            // batch id. A refusal (say, of an archived flag) would be refused again: dropped.
            if retry {
                COUNTS.with(|counts| {
                    let mut counts = counts.borrow_mut();
                    counts.since.get_or_insert_with(|| Date::now().as_millis());
                    for (key, tally) in counted {
                        counts.by_variant.entry(key).or_default().add(tally);
                    }
                });
            }
        }
    });
}

type Batch = (String, Vec<((String, String), Tally)>);

fn take_due(counts: &mut Counts, interval_ms: u64) -> Option<Vec<Batch>> {
    let since = counts.since?;
    if Date::now().as_millis().saturating_sub(since) < interval_ms {
        return None;
    }
    counts.since = None;
    let isolate = counts
        .isolate
        .get_or_insert_with(|| {
            format!("edge-{:016x}", (worker::js_sys::Math::random() * 2f64.powi(53)) as u64)
        })
        .clone();
    let all: Vec<_> = counts.by_variant.drain().collect();
    let mut batches = Vec::new();
    for chunk in all.chunks(COUNTERS_PER_BATCH) {
        counts.sent += 1;
        let counters: Vec<_> = chunk
            .iter()
            .map(|((flag, variant), tally)| {
                let mut counts = serde_json::json!({EVALUATIONS: tally.evaluations});
                if tally.rollout_evaluations > 0 {
                    counts[ROLLOUT_EVALUATIONS] = tally.rollout_evaluations.into();
                }
                serde_json::json!({"flag": flag, "variant": variant, "counts": counts})
            })
            .collect();
        let body = serde_json::json!({"batch": format!("{isolate}-{}", counts.sent), "counters": counters});
        batches.push((body.to_string(), chunk.to_vec()));
    }
    Some(batches)
}

/// Posts one batch; an error says whether sending it again could succeed.
async fn send(address: &str, token: &str, body: String) -> Result<(), (String, bool)> {
    let transient = |error: worker::Error| (error.to_string(), true);
    let headers = Headers::new();
    headers.set("authorization", &format!("Bearer {token}")).map_err(transient)?;
    headers.set("content-type", "application/json").map_err(transient)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let request = Request::new_with_init(address, &init).map_err(transient)?;
    let mut response = Fetch::Request(request).send().await.map_err(transient)?;
    match response.status_code() {
        200..=299 => Ok(()),
        status => {
            let detail = response.text().await.unwrap_or_default();
            let retry = status >= 500 || status == 429;
            Err((format!("the control plane answered {status}: {detail}"), retry))
        }
    }
}
