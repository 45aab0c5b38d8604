//! Evaluation allocates nothing: a counting global allocator watches this thread.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use flag_core::{Context, Engine};

struct CountingAllocator;

thread_local! {
    // `const` and Drop-free, so touching it from inside the allocator never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; counting touches only a const thread-local Cell.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 1);
}

#[test]
fn evaluating_every_fixture_case_allocates_nothing() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec");
    let mut evaluations = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let fixture: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        let engine = Engine::from_json(fixture["snapshot"].to_string().as_bytes()).unwrap();
        let contexts: Vec<Context> =
            fixture["cases"].as_array().unwrap().iter().map(crate::spec::fixture_context).collect();
        let flags: Vec<&str> = fixture["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["flag"].as_str().unwrap())
            .collect();
        let count = allocations_during(|| {
            for context in &contexts {
                for flag in &flags {
                    std::hint::black_box(engine.evaluate(flag, context));
                }
                for result in engine.evaluate_all(context) {
                    std::hint::black_box(result);
                }
                evaluations += flags.len() + engine.flag_keys().len();
            }
        });
        assert_eq!(count, 0, "evaluation allocated {count} times");
    }
    assert!(evaluations > 5_000, "only {evaluations} evaluations");
}

#[test]
fn long_keys_semver_tags_and_integer_keys_allocate_nothing() {
    let snapshot = serde_json::json!({
        "schema": 1, "environment": "e", "version": 1,
        "flags": [{"key": "f", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
            "rules": [{"conditions": [{"attribute": "app", "op": "semver_lt", "values": ["2.0.0-rc.very-long-prerelease-tag.17"]}],
                       "serve": {"rollout": {"bucket_by": "accountId", "percent": 50000, "inside": "on", "outside": "off"}}}],
            "fallthrough": {"rollout": {"percent": 50000, "inside": "on", "outside": "off"}}}]
    });
    let engine = Engine::from_json(snapshot.to_string().as_bytes()).unwrap();
    let context = Context::with_targeting_key("k".repeat(10_000))
        .with("app", "2.0.0-rc.very-long-prerelease-tag.9+build.1234567890")
        .with("accountId", -9_007_199_254_740_991i64);
    let evaluation = engine.evaluate("f", &context);
    assert_eq!(
        evaluation.reason,
        flag_core::Reason::Split,
        "the semver rule and its integer-keyed rollout decided"
    );
    assert_eq!(evaluation.rule_index, Some(0));
    assert_eq!(allocations_during(|| _ = std::hint::black_box(engine.evaluate("f", &context))), 0);
}
