//! Evaluation speed: the reference flag over 1,000 rotating users.

use std::hint::black_box;

use benches::{reference_snapshot, users};
use criterion::{Criterion, criterion_group, criterion_main};
use flag_core::Engine;
use flag_core::bucketing::murmur3_x86_32;

fn evaluate(c: &mut Criterion) {
    let engine = Engine::from_json(&reference_snapshot(1)).unwrap();
    let users = users(1_000);
    let mut cycle = users.iter().cycle();
    c.bench_function("evaluate: country in [SE, NO] then 25% rollout", |b| {
        b.iter(|| black_box(engine.evaluate(black_box("flag-0"), cycle.next().unwrap())))
    });

    // Reference points: the same lookup work without the condition or without the hash.
    let parts = serde_json::json!({"schema": 1, "environment": "production", "version": 1, "flags": [
        {"key": "flag-0", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
         "fallthrough": {"variant": "on"}},
        {"key": "flag-1", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
         "rules": [{"conditions": [{"attribute": "country", "op": "in", "values": ["SE", "NO"]}], "serve": {"variant": "on"}}],
         "fallthrough": {"variant": "off"}}
    ]});
    let parts = Engine::from_json(parts.to_string().as_bytes()).unwrap();
    let mut cycle = users.iter().cycle();
    c.bench_function("evaluate: static flag", |b| {
        b.iter(|| black_box(parts.evaluate(black_box("flag-0"), cycle.next().unwrap())))
    });
    let mut cycle = users.iter().cycle();
    c.bench_function("evaluate: country in [SE, NO], no rollout", |b| {
        b.iter(|| black_box(parts.evaluate(black_box("flag-1"), cycle.next().unwrap())))
    });

    let engine = Engine::from_json(&reference_snapshot(50)).unwrap();
    let mut cycle = users.iter().cycle();
    c.bench_function("evaluate_all: 50 reference flags", |b| {
        b.iter(|| {
            for result in engine.evaluate_all(cycle.next().unwrap()) {
                black_box(result);
            }
        })
    });

    let key = b"checkout-v2:user-00000042@ex.com";
    let key = &key[..31];
    c.bench_function("murmur3_x86_32: 31-byte key", |b| {
        b.iter(|| black_box(murmur3_x86_32(black_box(key), 0)))
    });
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
