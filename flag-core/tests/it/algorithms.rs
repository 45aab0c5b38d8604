//! Imported bucketing (docs/snapshot-format.md, "Imported bucketing"): Unleash's and flagd's
//! algorithms, each checked against its formula computed with the `murmur3` crate, pinned by
//! vectors, and held to rg1's nesting promise.
#![allow(clippy::int_plus_one, reason = "Unleash's formula, written as Unleash writes it")]

use flag_core::{Context, Engine, Reason};
use proptest::prelude::*;
use serde_json::{Value, json};

/// One flag, `f`, whose fallthrough is `rollout`, over variants a, b, c, on and off.
fn engine(rollout: Value) -> Engine {
    let flag = json!({"key": "f", "type": "string", "off_variant": "off",
        "variants": {"a": "A", "b": "B", "c": "C", "on": "ON", "off": "OFF"},
        "fallthrough": {"rollout": rollout}});
    let snapshot = json!({"schema": 1, "environment": "e", "version": 1, "flags": [flag]});
    Engine::from_json(snapshot.to_string().as_bytes()).unwrap()
}

fn served(engine: &Engine, context: &Context) -> Option<String> {
    engine.evaluate("f", context).variant.map(str::to_owned)
}

fn user(key: &str) -> Context {
    Context::with_targeting_key(key)
}

/// The `murmur3` crate's MurmurHash3 x86_32: the oracle for flag-core's own.
fn oracle(data: &str, seed: u32) -> u32 {
    murmur3::murmur3_32(&mut data.as_bytes(), seed).unwrap()
}

/// The first variant whose running weight reaches `target` (Unleash) or exceeds `bucket`
/// (flagd): the same thing with `target = bucket + 1`.
fn by_weights(weights: &[(&str, u32)], bucket: u32) -> String {
    let mut running = 0;
    for (variant, weight) in weights {
        running += weight;
        if bucket < running {
            return (*variant).to_owned();
        }
    }
    unreachable!("the bucket is below the total")
}

const UNLEASH: &str = "unleash";

fn unleash(group: &str) -> Value {
    json!({"name": UNLEASH, "group_id": group, "stickiness": ["targetingKey", "sessionId"]})
}

#[test]
fn unleash_flexible_rollout_takes_hashes_up_to_the_percentage() {
    let engine = engine(json!({"algorithm": unleash("checkout"), "percent": 25_000,
        "inside": "on", "outside": "off"}));
    let mut inside = 0;
    for i in 0..10_000 {
        let key = format!("user-{i}");
        let expected = oracle(&format!("checkout:{key}"), 0) % 100 + 1 <= 25;
        let got = served(&engine, &user(&key));
        assert_eq!(got.as_deref(), Some(if expected { "on" } else { "off" }), "{key}");
        inside += usize::from(expected);
    }
    assert!((2_300..2_700).contains(&inside), "{inside} of 10,000 inside 25%");
}

#[test]
fn unleash_stickiness_takes_the_first_attribute_present_and_never_picks_at_random() {
    let engine = engine(json!({"algorithm": unleash("g"), "percent": 50_000,
        "inside": "on", "outside": "off"}));
    let session_only = Context::from_json(br#"{"sessionId": "s-42"}"#).unwrap();
    let expected = if oracle("g:s-42", 0) % 100 < 50 { "on" } else { "off" };
    assert_eq!(served(&engine, &session_only).as_deref(), Some(expected));
    // Both: the targeting key (Unleash's userId) wins.
    let both = Context::from_json(br#"{"targetingKey": "u-7", "sessionId": "s-42"}"#).unwrap();
    let expected = if oracle("g:u-7", 0) % 100 < 50 { "on" } else { "off" };
    assert_eq!(served(&engine, &both).as_deref(), Some(expected));
    // Neither: Unleash would pick at random; Rollgate buckets no one at random.
    let neither = engine.evaluate("f", &Context::from_json(b"{}").unwrap());
    assert!(neither.bucket_key_missing, "{neither:?}");
}

#[test]
fn unleash_variants_hash_with_their_own_seed_over_their_total() {
    let weights = [("a", 333), ("b", 333), ("c", 334)];
    let engine = engine(json!({"algorithm": unleash("promo"),
        "weights": weights.map(|(variant, weight)| json!({"variant": variant, "weight": weight}))}));
    for i in 0..5_000 {
        let key = format!("user-{i}");
        let target = oracle(&format!("promo:{key}"), 86_028_157) % 1000 + 1;
        assert_eq!(served(&engine, &user(&key)), Some(by_weights(&weights, target - 1)), "{key}");
        assert_eq!(engine.evaluate("f", &user(&key)).reason, Reason::Split);
    }
}

#[test]
fn an_unleash_rollout_with_variants_gates_then_splits() {
    let weights = [("a", 500), ("b", 500)];
    let engine = engine(json!({"algorithm": unleash("promo"), "percent": 40_000, "outside": "off",
        "weights": weights.map(|(variant, weight)| json!({"variant": variant, "weight": weight}))}));
    for i in 0..5_000 {
        let key = format!("user-{i}");
        let expected = if oracle(&format!("promo:{key}"), 0) % 100 + 1 <= 40 {
            by_weights(&weights, oracle(&format!("promo:{key}"), 86_028_157) % 1000)
        } else {
            "off".to_owned()
        };
        assert_eq!(served(&engine, &user(&key)), Some(expected), "{key}");
    }
}

#[test]
fn flagd_fractional_scales_the_hash_onto_the_weights() {
    // flagd's testbed `fractional-flag`: bucketBy `cat($flagd.flagKey, user.name)`.
    let weights = [("a", 25), ("b", 25), ("c", 25), ("on", 25)];
    let engine = engine(json!({"algorithm": {"name": "flagd", "prefix": "fractional-flag"},
        "bucket_by": "name",
        "weights": weights.map(|(variant, weight)| json!({"variant": variant, "weight": weight}))}));
    let jack = Context::from_json(br#"{"name": "jack"}"#).unwrap();
    // murmur3("fractional-flagjack") = 2,682,799,072; × 100 >> 32 = 62: the third quarter.
    assert_eq!(served(&engine, &jack).as_deref(), Some("c"));
    for i in 0..5_000 {
        let name = format!("user-{i}");
        let context = Context::from_json(json!({"name": name}).to_string().as_bytes()).unwrap();
        let bucket = (u64::from(oracle(&format!("fractional-flag{name}"), 0)) * 100) >> 32;
        assert_eq!(served(&engine, &context), Some(by_weights(&weights, bucket as u32)), "{name}");
    }
    // By default the unit is the targeting key, after the flag key (the importer's prefix).
    let by_key = engine_with_flagd_percent(25_000);
    for i in 0..5_000 {
        let key = format!("user-{i}");
        let inside = (u64::from(oracle(&format!("f{key}"), 0)) * 100_000) >> 32 < 25_000;
        let expected = if inside { "on" } else { "off" };
        assert_eq!(served(&by_key, &user(&key)).as_deref(), Some(expected), "{key}");
    }
}

fn engine_with_flagd_percent(percent: u32) -> Engine {
    engine(json!({"algorithm": {"name": "flagd", "prefix": "f"}, "percent": percent,
        "inside": "on", "outside": "off"}))
}

fn engine_with_unleash_percent(percent: u32) -> Engine {
    engine(json!({"algorithm": unleash("g"), "percent": percent, "inside": "on", "outside": "off"}))
}

/// Pinned: the algorithms are public contracts; these answers may never change.
#[test]
fn imported_bucketing_vectors() {
    let unleash = engine_with_unleash_percent(25_000);
    let flagd = engine_with_flagd_percent(25_000);
    // Unleash: murmur3("g:user-1", 0) % 100 + 1 = 5, then 44, 51, 24, 82; inside at most 25.
    // flagd: murmur3("fuser-1", 0) × 100000 >> 32 = 33332, then 3525, 84373, 74422, 560;
    // inside below 25000.
    let vectors = [
        ("user-1", "on", "off"),
        ("user-2", "off", "on"),
        ("user-3", "off", "off"),
        ("user-5", "on", "off"),
        ("user-6", "off", "on"),
    ];
    for (key, at_unleash, at_flagd) in vectors {
        assert_eq!(served(&unleash, &user(key)).as_deref(), Some(at_unleash), "unleash {key}");
        assert_eq!(served(&flagd, &user(key)).as_deref(), Some(at_flagd), "flagd {key}");
    }
}

#[test]
fn malformed_imported_rollouts_are_refused() {
    for (rollout, why) in [
        (
            json!({"algorithm": unleash("g"), "bucket_by": "email", "percent": 5_000, "inside": "on", "outside": "off"}),
            "stickiness",
        ),
        (
            json!({"algorithm": {"name": UNLEASH, "group_id": "g", "stickiness": []}, "percent": 5_000, "inside": "on", "outside": "off"}),
            "1 to 4",
        ),
        (
            json!({"algorithm": {"name": "flagd"}, "weights": [{"variant": "a", "weight": 0}]}),
            "1 to 100000",
        ),
        (
            json!({"algorithm": {"name": "flagd"}, "percent": 5_000, "outside": "off", "weights": [{"variant": "a", "weight": 1}]}),
            "not both",
        ),
        (
            json!({"percent": 5_000, "outside": "off", "weights": [{"variant": "a", "weight": 100_000}]}),
            "not both",
        ),
        (
            json!({"algorithm": unleash("g"), "percent": 5_000, "inside": "on", "outside": "off", "weights": [{"variant": "a", "weight": 1}]}),
            "exclude",
        ),
        (
            json!({"algorithm": unleash("g"), "percent": 12_500, "inside": "on", "outside": "off"}),
            "whole percentage",
        ),
    ] {
        let flag = json!({"key": "f", "type": "string", "off_variant": "off",
            "variants": {"a": "A", "on": "ON", "off": "OFF"}, "fallthrough": {"rollout": rollout}});
        let snapshot = json!({"schema": 1, "environment": "e", "version": 1, "flags": [flag]});
        let error = Engine::from_json(snapshot.to_string().as_bytes()).unwrap_err().to_string();
        assert!(error.contains(why), "{rollout}: {error}");
    }
    let unknown = json!({"schema": 1, "environment": "e", "version": 1, "flags": [{"key": "f",
        "type": "boolean", "off_variant": "off", "variants": {"on": true, "off": false},
        "fallthrough": {"rollout": {"algorithm": {"name": "launchdarkly"}, "percent": 1, "inside": "on", "outside": "off"}}}]});
    assert!(Engine::from_json(unknown.to_string().as_bytes()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// rg1's promise holds for imported algorithms too: raising the percent only adds units.
    #[test]
    fn raising_an_imported_percent_never_removes_a_unit(
        units in proptest::collection::vec("[a-z0-9-]{1,24}", 1..40),
        low in 0u32..=100_000, high in 0u32..=100_000,
    ) {
        let (low, high) = (low.min(high), low.max(high));
        // Unleash's percentages are whole.
        let whole = |percent: u32| percent / 1000 * 1000;
        for (lower, higher) in [
            (engine_with_unleash_percent(whole(low)), engine_with_unleash_percent(whole(high))),
            (engine_with_flagd_percent(low), engine_with_flagd_percent(high)),
        ] {
            for unit in &units {
                let before = served(&lower, &user(unit)) == Some("on".to_owned());
                let after = served(&higher, &user(unit)) == Some("on".to_owned());
                prop_assert!(!before || after, "{} left between {} and {}", unit, low, high);
            }
        }
    }
}
