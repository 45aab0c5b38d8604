//! Realistic snapshots and contexts for Rollgate's benchmarks (see benches/benches/).

pub mod heap;

use flag_core::Context;
use serde_json::{Value, json};

/// The reference flag: `country in [SE, NO]`, then a 25% rollout.
pub fn reference_flag(key: &str) -> Value {
    json!({
        "key": key, "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
        "rules": [{
            "conditions": [{"attribute": "country", "op": "in", "values": ["SE", "NO"]}],
            "serve": {"rollout": {"percent": 25_000, "inside": "on", "outside": "off", "stage": "beta"}}
        }],
        "fallthrough": {"variant": "off"}
    })
}

/// A snapshot of `count` reference flags, `flag-0` to `flag-{count-1}`.
pub fn reference_snapshot(count: usize) -> Vec<u8> {
    let flags: Vec<_> = (0..count).map(|i| reference_flag(&format!("flag-{i}"))).collect();
    json!({"schema": 1, "environment": "production", "version": 1, "flags": flags})
        .to_string()
        .into_bytes()
}

/// `count` distinct users, built beforehand as an app would per request. Every one is in SE or
/// NO, so every evaluation passes the condition and hashes: the expensive path.
pub fn users(count: usize) -> Vec<Context> {
    (0..count)
        .map(|i| {
            Context::with_targeting_key(format!("user-{i:08}@example.com"))
                .with("country", if i % 2 == 0 { "SE" } else { "NO" })
                .with("plan", "pro")
                .with("appVersion", "3.14.1")
        })
        .collect()
}

/// A large snapshot: `flags` flags with several rules each, and `segments` segments of
/// `keys_per_segment` unit keys each.
pub fn large_snapshot(flags: usize, segments: usize, keys_per_segment: usize) -> Vec<u8> {
    let segments: Vec<_> = (0..segments)
        .map(|s| {
            let included: Vec<String> = (0..keys_per_segment).map(|k| format!("user-{:08}", s * 7_919 + k)).collect();
            json!({"key": format!("segment-{s}"), "included": included, "excluded": ["user-00000000"],
                   "conditions": [{"attribute": "email", "op": "ends_with", "values": [format!("@tenant{s}.example.com")]}]})
        })
        .collect();
    let flags: Vec<_> = (0..flags)
        .map(|f| {
            json!({
                "key": format!("flag-{f}"), "type": "string", "off_variant": "control",
                "variants": {"control": "control", "treatment": "treatment", "holdout": "holdout"},
                "rules": [
                    {"segments": [format!("segment-{}", f % segments.len().max(1))], "serve": {"variant": "treatment"}},
                    {"conditions": [{"attribute": "country", "op": "in", "values": ["SE", "NO", "DK", "FI", "IS"]},
                                    {"attribute": "appVersion", "op": "semver_gt", "values": ["3.2.0"]}],
                     "serve": {"rollout": {"percent": (f * 37) % 100_001, "inside": "treatment", "outside": "control", "stage": "beta"}}},
                    {"conditions": [{"attribute": "signup", "op": "after", "values": ["2026-01-01T00:00:00Z"]}],
                     "serve": {"variant": "holdout"}}
                ],
                "fallthrough": {"rollout": {"weights": [{"variant": "control", "weight": 50_000}, {"variant": "treatment", "weight": 50_000}]}}
            })
        })
        .collect();
    json!({"schema": 1, "environment": "production", "version": 1, "flags": flags, "segments": segments})
        .to_string()
        .into_bytes()
}
