//! How often guardrails roll back healthy releases and catch bad ones: the real criterion code
//! (`Criterion::read`, the same the scheduler runs) over simulated traffic, read every minute
//! for three days through the canary template's stages (5%, 5%, 25%, 100%).
//!
//! Assumptions: 1,000 requests a minute in all (`REQUESTS_PER_MINUTE`), errors independent per
//! request at 1% for the control. As the scheduler does, a stage advances once its hold has
//! passed and the guardrail passes, and a failing reading rolls back, which ends the run.
//! Criteria: the templates' default before sequential guardrails (a fixed threshold: at most 2%
//! errors per request over an hour, from 1,000 requests), their default now (sequential: at most
//! half a point over the control's rate, at 95%), and a strict sequential one (at most 1.1 times
//! the control's rate). Also the sample-ratio check (`model::sample_ratio::read`, as the
//! scheduler reads it every minute, skipping each stage's settling minutes) against variants
//! that get 5% or 10% fewer of the rollout's evaluations than configured.
//!
//! Usage: cargo run --release -p benches --bin guardrail_sim [runs, default 10000]
//! [--sample-ratio-only]

use std::thread;

use control_plane::model::criteria::{Counts, Criterion, Verdict};
use control_plane::model::sample_ratio::{self, ROLLOUT_EVALUATIONS, SETTLING_MINUTES};
use control_plane::plans::templates::{self, TemplateParameters};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution};

const MINUTES: i64 = 3 * 24 * 60;
const CONTROL_RATE: f64 = 0.01;
/// The canary's 25% stage.
const EXPANDED: usize = 2;

/// The canary template's stages: each one's hold in minutes and its exposure (a share).
fn stages() -> Vec<(i64, f64)> {
    templates::expand(templates::CANARY, &TemplateParameters::default())
        .expect("the canary template expands")
        .into_iter()
        .map(|stage| {
            let share = f64::from(stage.percent.thousandths()) / 100_000.0;
            ((stage.hold_seconds / 60) as i64, share)
        })
        .collect()
}

struct Outcome {
    /// The minute of the rollback and the variant's requests by then.
    rolled_back: Option<(i64, u64)>,
    /// The minute the plan reached 25%.
    expanded_at: Option<i64>,
}

/// One plan's three days: a reading every minute, advancing and rolling back as the scheduler
/// does.
fn run(
    criterion: &Criterion,
    variant_rate: f64,
    seed: u64,
    stages: &[(i64, f64)],
    per_minute: u64,
) -> Outcome {
    let mut random = StdRng::seed_from_u64(seed);
    let mut stage = 0;
    let mut counts = Counts::default();
    let mut variant_requests = 0;
    let mut expanded_at = None;
    for minute in 0..MINUTES {
        let (hold, share) = stages[stage];
        counts.minute = minute;
        let exposed = (per_minute as f64 * share).round() as u64;
        for (variant, requests, rate) in
            [("on", exposed, variant_rate), ("off", per_minute - exposed, CONTROL_RATE)]
        {
            let errors =
                Binomial::new(requests, rate).expect("a rate in 0..=1").sample(&mut random);
            counts.add(variant, "requests", minute, requests);
            counts.add(variant, "errors", minute, errors);
        }
        variant_requests += exposed;
        let held = minute + 1 - counts.first_minute >= hold;
        match criterion.read(&counts, "on", "off").verdict {
            Verdict::Fail => {
                return Outcome { rolled_back: Some((minute, variant_requests)), expanded_at };
            }
            Verdict::Pass if held && stage + 1 < stages.len() => {
                // The next stage begins next minute, and its readings with it.
                stage += 1;
                counts = Counts::new(minute + 1, minute + 1);
                if stage == EXPANDED {
                    expanded_at = Some(minute + 1);
                }
            }
            _ => {}
        }
    }
    Outcome { rolled_back: None, expanded_at }
}

/// Runs `runs` plans on two threads; returns each outcome.
fn simulate(criterion: &Criterion, variant_rate: f64, runs: u64, per_minute: u64) -> Vec<Outcome> {
    let stages = stages();
    thread::scope(|scope| {
        let halves: Vec<_> = (0..2)
            .map(|half| {
                let stages = &stages;
                scope.spawn(move || {
                    (0..runs)
                        .filter(|index| index % 2 == half)
                        .map(|index| run(criterion, variant_rate, index + 1, stages, per_minute))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        halves.into_iter().flat_map(|half| half.join().expect("a simulation thread")).collect()
    })
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

/// The minute the sample-ratio check first flags a run, if it does, the variant getting
/// `1 - shortfall` of its configured share; stages follow their holds, as a healthy plan's do.
fn sample_ratio_flagged_at(shortfall: f64, seed: u64, per_minute: u64) -> Option<i64> {
    let mut starts = Vec::new();
    let mut began = 0;
    for (hold, share) in stages() {
        starts.push((began, share));
        began += hold;
    }
    let mut random = StdRng::seed_from_u64(seed + 1);
    let mut counts = Counts::new(-1, -1);
    (0..MINUTES).find(|&minute| {
        let (began, share) =
            *starts.iter().rev().find(|(start, _)| *start <= minute).expect("a stage");
        if began != counts.first_minute {
            counts = Counts::new(minute, began);
        }
        counts.minute = minute;
        let exposed = Binomial::new(per_minute, share * (1.0 - shortfall))
            .expect("a share")
            .sample(&mut random);
        counts.add("on", ROLLOUT_EVALUATIONS, minute, exposed);
        counts.add("off", ROLLOUT_EVALUATIONS, minute, per_minute - exposed);
        let since = began + SETTLING_MINUTES;
        let thousandths = (share * 100_000.0).round() as u32;
        sample_ratio::read(&counts, "on", "off", thousandths, since)
            .is_some_and(|reading| reading.verdict == Verdict::Fail)
    })
}

#[allow(clippy::print_stdout, reason = "the table is this program's output")]
fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let runs: u64 = arguments.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let criteria_too = !arguments.iter().any(|a| a == "--sample-ratio-only");
    let per_minute: u64 = std::env::var("REQUESTS_PER_MINUTE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000);
    let template_default = templates::expand(templates::CANARY, &TemplateParameters::default())
        .expect("the canary template expands")[0]
        .guardrails[0]
        .clone();
    let criteria: [(&str, Criterion); 3] = [
        (
            "fixed: errors/requests <= 2% over 1 h (the default before)",
            serde_json::from_value(serde_json::json!({"metric": "errors", "max": 0.02})).unwrap(),
        ),
        (
            "sequential: errors/requests <= control + 0.5 points, 95% (the default)",
            template_default,
        ),
        (
            "sequential: errors/requests <= 1.1 × control, 95%",
            serde_json::from_value(
                serde_json::json!({"metric": "errors", "max_relative_increase": 0.1}),
            )
            .unwrap(),
        ),
    ];
    println!(
        "{runs} runs per row; 3 days read every minute; the canary's stages; {per_minute} requests/minute; control error rate 1%\n"
    );
    println!(
        "| criterion | variant's error rate | rolled back | median minutes to rollback* | median variant requests by then* | reached 25% | median hours to 25%* |"
    );
    println!("|---|---|---|---|---|---|---|");
    let or_dash = |value: Option<u64>| value.map_or("—".to_owned(), |v| v.to_string());
    for (name, criterion) in criteria.iter().filter(|_| criteria_too) {
        for factor in [1.0, 1.2, 1.5, 2.0] {
            let outcomes = simulate(criterion, CONTROL_RATE * factor, runs, per_minute);
            let share = |count: usize| 100.0 * count as f64 / runs as f64;
            let rolled: Vec<(i64, u64)> = outcomes.iter().filter_map(|o| o.rolled_back).collect();
            let minutes = median(rolled.iter().map(|(minute, _)| *minute as u64 + 1).collect());
            let requests = median(rolled.iter().map(|(_, requests)| *requests).collect());
            let expanded: Vec<u64> =
                outcomes.iter().filter_map(|o| o.expanded_at).map(|m| m as u64).collect();
            let expanded_share = share(expanded.len());
            let hours = median(expanded).map(|minutes| minutes.div_ceil(60));
            let label = if factor == 1.0 {
                "1% (A/A)".to_owned()
            } else {
                format!("{factor}× ({factor}%)")
            };
            println!(
                "| {name} | {label} | {:.2}% | {} | {} | {expanded_share:.2}% | {} |",
                share(rolled.len()),
                or_dash(minutes),
                or_dash(requests),
                or_dash(hours)
            );
        }
    }
    println!("\n\\* medians over the runs that got there.");
    println!("\n| sample-ratio check (99.9%) | flagged | median minutes to flag* |\n|---|---|---|");
    for (label, shortfall) in
        [("no mismatch", 0.0), ("variant 5% short", 0.05), ("variant 10% short", 0.10)]
    {
        let flagged: Vec<u64> = (0..runs)
            .filter_map(|seed| sample_ratio_flagged_at(shortfall, seed, per_minute))
            .map(|minute| minute as u64 + 1)
            .collect();
        let share = 100.0 * flagged.len() as f64 / runs as f64;
        println!("| {label} | {share:.2}% | {} |", or_dash(median(flagged)));
    }
}
