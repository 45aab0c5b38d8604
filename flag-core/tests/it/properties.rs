//! rg1's promises, as properties: what a release manager relies on when bumping a percent.

use flag_core::bucketing::{BUCKETS, bucket, murmur3_x86_32};
use flag_core::{Context, Engine};
use proptest::prelude::*;
use serde_json::json;

/// A snapshot with one 0..=100000 rollout flag per given (key, salt, percent).
fn rollout_engine(flags: &[(&str, &str, u32)]) -> Engine {
    let flags: Vec<_> = flags
        .iter()
        .map(|(key, salt, percent)| {
            json!({"key": key, "type": "boolean", "salt": salt, "variants": {"on": true, "off": false},
                   "off_variant": "off",
                   "fallthrough": {"rollout": {"percent": percent, "inside": "on", "outside": "off"}}})
        })
        .collect();
    Engine::from_json(
        json!({"schema": 1, "environment": "e", "version": 1, "flags": flags})
            .to_string()
            .as_bytes(),
    )
    .unwrap()
}

fn exposed(engine: &Engine, flag: &str, unit: &str) -> bool {
    engine.evaluate(flag, &Context::with_targeting_key(unit)).variant == Some("on")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn murmur3_matches_the_reference_crate(data in proptest::collection::vec(any::<u8>(), 0..200), seed in any::<u32>()) {
        let oracle = murmur3::murmur3_32(&mut data.as_slice(), seed).unwrap();
        prop_assert_eq!(murmur3_x86_32(&data, seed), oracle);
    }

    #[test]
    fn bucket_is_in_range_and_deterministic(salt in ".{0,40}", unit in ".{0,40}") {
        let b = bucket(&salt, &unit);
        prop_assert!(b < BUCKETS);
        prop_assert_eq!(b, bucket(&salt, &unit));
    }

    #[test]
    fn raising_the_percent_never_removes_a_unit(
        units in proptest::collection::vec("[a-z0-9-]{1,24}", 1..50),
        low in 0u32..=BUCKETS, high in 0u32..=BUCKETS,
    ) {
        let (low, high) = (low.min(high), low.max(high));
        let engine = rollout_engine(&[("low", "f", low), ("high", "f", high)]);
        for unit in &units {
            prop_assert!(!exposed(&engine, "low", unit) || exposed(&engine, "high", unit), "{} left at {}", unit, high);
        }
    }

    #[test]
    fn evaluation_is_deterministic(unit in ".{1,40}", percent in 0u32..=BUCKETS) {
        let engine = rollout_engine(&[("f", "f", percent)]);
        let again = rollout_engine(&[("f", "f", percent)]);
        let context = Context::with_targeting_key(unit);
        prop_assert_eq!(engine.evaluate("f", &context), again.evaluate("f", &context));
    }
}

const CANARY_STAGES: [u32; 5] = [1_000, 5_000, 10_000, 25_000, 100_000];

fn units(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

#[test]
fn stage_cohorts_nest() {
    let flags: Vec<_> = CANARY_STAGES.iter().map(|&p| (format!("stage-{p}"), p)).collect();
    let spec: Vec<_> = flags.iter().map(|(key, p)| (key.as_str(), "checkout-v2", *p)).collect();
    let engine = rollout_engine(&spec);
    let units = units(20_000);
    for pair in flags.windows(2) {
        let (earlier, later) = (&pair[0].0, &pair[1].0);
        let cohort: Vec<_> = units.iter().filter(|u| exposed(&engine, earlier, u)).collect();
        assert!(!cohort.is_empty());
        for unit in cohort {
            assert!(exposed(&engine, later, unit), "{unit} is in {earlier} but not in {later}");
        }
    }
}

#[test]
fn lowering_then_raising_restores_the_same_cohort() {
    let units = units(20_000);
    let cohort = |percent| {
        let engine = rollout_engine(&[("f", "f", percent)]);
        units.iter().filter(|u| exposed(&engine, "f", u)).cloned().collect::<Vec<_>>()
    };
    let at_25 = cohort(25_000);
    let at_5 = cohort(5_000);
    assert!(at_5.len() < at_25.len());
    assert_eq!(cohort(25_000), at_25, "back at 25% after 5%");
}

#[test]
fn flags_with_the_same_salt_expose_the_same_units() {
    let engine =
        rollout_engine(&[("a", "shared", 30_000), ("b", "shared", 30_000), ("c", "other", 30_000)]);
    let units = units(20_000);
    let exposed_by = |flag| units.iter().filter(|u| exposed(&engine, flag, u)).collect::<Vec<_>>();
    assert_eq!(exposed_by("a"), exposed_by("b"));
    assert_ne!(exposed_by("a"), exposed_by("c"), "a different salt should pick a different cohort");
}

/// 1,000,000 keys into 100 bins; chi-square with 99 degrees of freedom at p = 0.001 is 148.23.
#[test]
fn buckets_are_uniform() {
    const KEYS: usize = 1_000_000;
    const BINS: usize = 100;
    let mut bins = [0u64; BINS];
    for i in 0..KEYS {
        let b = bucket("checkout-v2", &format!("user-{i}"));
        bins[b as usize * BINS / BUCKETS as usize] += 1;
    }
    let expected = (KEYS / BINS) as f64;
    let chi_square: f64 = bins.iter().map(|&n| (n as f64 - expected).powi(2) / expected).sum();
    assert!(
        chi_square < 148.23,
        "chi-square {chi_square:.2} over 99 degrees of freedom: not uniform at p = 0.001"
    );
}
