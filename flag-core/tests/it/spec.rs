//! Replays the spec fixtures in tests/spec: each holds a snapshot and cases whose expected
//! results were written by hand (rollout buckets computed independently, with Python's mmh3).

use std::path::Path;

use flag_core::{Context, Engine};
use serde_json::Value;

#[test]
fn every_fixture_case_matches_its_expectation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut checked = 0;
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let fixture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let engine = Engine::from_json(fixture["snapshot"].to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in fixture["cases"].as_array().unwrap() {
            let description =
                format!("{}: {}", path.file_name().unwrap().display(), case["description"]);
            let context = fixture_context(case);
            let flag = case["flag"].as_str().unwrap();
            let actual = serde_json::to_value(engine.evaluate(flag, &context)).unwrap();
            assert_eq!(actual, case["expect"], "{description}");
            if let Some(from_all) = engine.evaluate_all(&context).find(|r| r.key == flag) {
                assert_eq!(
                    from_all.evaluation,
                    engine.evaluate(flag, &context),
                    "{description}: evaluate_all"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} fixture cases ran");
}

/// The case's context, with its optional `now` (RFC 3339) as the clock.
pub(crate) fn fixture_context(case: &Value) -> Context {
    let context = Context::from_value(case["context"].clone()).unwrap();
    match case.get("now").and_then(Value::as_str) {
        Some(now) => {
            context.with_now(chrono::DateTime::parse_from_rfc3339(now).unwrap().timestamp_millis())
        }
        None => context,
    }
}
