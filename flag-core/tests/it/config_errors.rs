//! Snapshots that must be rejected, each with the JSON path of the culprit.

use flag_core::{Engine, Problem};
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "schema": 1, "environment": "production", "version": 1,
        "segments": [{"key": "staff", "included": ["alice"]}],
        "flags": [
            {"key": "a", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
             "fallthrough": {"variant": "off"}},
            {"key": "b", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
             "rules": [
                {"conditions": [{"attribute": "country", "op": "in", "values": ["SE", "NO"]}], "serve": {"variant": "on"}},
                {"segments": ["staff"], "conditions": [{"attribute": "plan", "op": "eq", "values": ["pro"]}],
                 "serve": {"rollout": {"percent": 25000, "inside": "on", "outside": "off"}}}
             ],
             "fallthrough": {"rollout": {"weights": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}}
        ]
    })
}

fn rejection(edit: impl FnOnce(&mut Value)) -> (String, Problem) {
    let mut snapshot = base();
    edit(&mut snapshot);
    let error = Engine::from_json(snapshot.to_string().as_bytes())
        .expect_err("snapshot should be rejected");
    (error.path, error.problem)
}

#[test]
fn the_base_snapshot_compiles() {
    let engine = Engine::from_json(base().to_string().as_bytes()).unwrap();
    assert_eq!((engine.environment(), engine.version()), ("production", 1));
    assert_eq!(engine.flag_keys().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn each_error_names_its_json_path() {
    type Edit = fn(&mut Value);
    type Expected = fn(&Problem) -> bool;
    let cases: Vec<(Edit, &str, Expected)> = vec![
        (
            |s| s["flags"][1]["rules"][0]["conditions"][0]["op"] = json!("matches"),
            "flags[1].rules[0].conditions[0].op",
            |p| matches!(p, Problem::UnknownOperator(o) if o == "matches"),
        ),
        (
            |s| s["flags"][1]["rules"][1]["segments"][0] = json!("nobody"),
            "flags[1].rules[1].segments[0]",
            |p| matches!(p, Problem::UnknownSegment(_)),
        ),
        (
            |s| s["flags"][1]["key"] = json!("a"),
            "flags[1].key",
            |p| matches!(p, Problem::DuplicateKey(k) if k == "a"),
        ),
        (
            |s| s["segments"].as_array_mut().unwrap().push(json!({"key": "staff"})),
            "segments[1].key",
            |p| matches!(p, Problem::DuplicateKey(_)),
        ),
        (
            |s| s["flags"][1]["rules"][1]["serve"]["rollout"]["percent"] = json!(100001),
            "flags[1].rules[1].serve.rollout.percent",
            |p| matches!(p, Problem::PercentOutOfRange(100_001)),
        ),
        (
            |s| s["flags"][1]["fallthrough"]["rollout"]["weights"][1]["weight"] = json!(49999),
            "flags[1].fallthrough.rollout.weights",
            |p| matches!(p, Problem::WeightsSum(99_999)),
        ),
        (
            |s| {
                s["flags"][1]["fallthrough"]["rollout"]["weights"][1]["weight"] =
                    json!(4294967295u32)
            },
            "flags[1].fallthrough.rollout.weights",
            |p| matches!(p, Problem::WeightsSum(_)),
        ),
        (
            |s| s["flags"][0]["variants"]["on"] = json!("yes"),
            "flags[0].variants.on",
            |p| matches!(p, Problem::WrongType(_)),
        ),
        (
            |s| s["flags"][0]["type"] = json!("integer"),
            "flags[0].type",
            |p| matches!(p, Problem::UnknownType(_)),
        ),
        (
            |s| s["flags"][0]["off_variant"] = json!("maybe"),
            "flags[0].off_variant",
            |p| matches!(p, Problem::UnknownVariant(_)),
        ),
        (
            |s| s["flags"][1]["rules"][0]["serve"] = json!({"variant": "maybe"}),
            "flags[1].rules[0].serve.variant",
            |p| matches!(p, Problem::UnknownVariant(_)),
        ),
        (
            |s| {
                s["flags"][1]["rules"][0]["conditions"][0] =
                    json!({"attribute": "age", "op": "lt", "values": ["18"]})
            },
            "flags[1].rules[0].conditions[0].values[0]",
            |p| matches!(p, Problem::WrongType(_)),
        ),
        (
            |s| {
                s["flags"][1]["rules"][0]["conditions"][0] =
                    json!({"attribute": "age", "op": "lt", "values": [1, 2]})
            },
            "flags[1].rules[0].conditions[0].values",
            |p| matches!(p, Problem::BadOperands(_)),
        ),
        (
            |s| {
                s["flags"][1]["rules"][0]["conditions"][0] =
                    json!({"attribute": "v", "op": "semver_gt", "values": ["1.2"]})
            },
            "flags[1].rules[0].conditions[0].values[0]",
            |p| matches!(p, Problem::WrongType(_)),
        ),
        (
            |s| {
                s["flags"][1]["rules"][0]["conditions"][0] =
                    json!({"op": "after", "values": ["2026-13-01T00:00:00Z"]})
            },
            "flags[1].rules[0].conditions[0].values[0]",
            |p| matches!(p, Problem::WrongType(_)),
        ),
        (
            |s| s["flags"][1]["rules"][0]["conditions"][0] = json!({"op": "eq", "values": ["x"]}),
            "flags[1].rules[0].conditions[0].attribute",
            |p| matches!(p, Problem::BadOperands(_)),
        ),
        (
            |s| {
                s["flags"][1]["rules"][0]["conditions"][0] =
                    json!({"attribute": "a", "op": "in", "values": []})
            },
            "flags[1].rules[0].conditions[0].values",
            |p| matches!(p, Problem::BadOperands(_)),
        ),
        (
            |s| {
                s["flags"][1]["rules"][0]["conditions"][0] =
                    json!({"attribute": "a", "op": "in", "values": [{"x": 1}]})
            },
            "flags[1].rules[0].conditions[0].values[0]",
            |p| matches!(p, Problem::WrongType(_)),
        ),
        (
            |s| {
                s["flags"][1]["rules"][0]["conditions"][0] =
                    json!({"attribute": "a", "op": "exists", "values": [1]})
            },
            "flags[1].rules[0].conditions[0].values",
            |p| matches!(p, Problem::BadOperands(_)),
        ),
        (
            |s| s["flags"][1]["fallthrough"] = json!({"rollout": {"percent": 5000}}),
            "flags[1].fallthrough.rollout",
            |p| matches!(p, Problem::RolloutShape(_)),
        ),
        (
            |s| s["flags"][1]["fallthrough"] = json!({"rollout": {"percent": 5000, "inside": "on", "outside": "off", "weights": []}}),
            "flags[1].fallthrough.rollout",
            |p| matches!(p, Problem::RolloutShape(_)),
        ),
        (
            |s| s["flags"][1]["fallthrough"] = json!({"rollout": {}}),
            "flags[1].fallthrough.rollout",
            |p| matches!(p, Problem::RolloutShape(_)),
        ),
        (
            |s| s["flags"][0]["prerequisites"] = json!([{"flag": "zzz", "variant": "on"}]),
            "flags[0].prerequisites[0].flag",
            |p| matches!(p, Problem::UnknownFlag(_)),
        ),
        (
            |s| s["flags"][0]["prerequisites"] = json!([{"flag": "b", "variant": "maybe"}]),
            "flags[0].prerequisites[0].variant",
            |p| matches!(p, Problem::UnknownVariant(_)),
        ),
        (
            |s| s["flags"][0]["prerequisites"] = json!([{"flag": "a", "variant": "on"}]),
            "flags[0].prerequisites[0]",
            |p| matches!(p, Problem::PrerequisiteCycle(k) if k == "a"),
        ),
        (
            |s| {
                s["flags"][0]["prerequisites"] = json!([{"flag": "b", "variant": "on"}]);
                s["flags"][1]["prerequisites"] = json!([{"flag": "a", "variant": "on"}]);
            },
            "flags[1].prerequisites[0]",
            |p| matches!(p, Problem::PrerequisiteCycle(k) if k == "a"),
        ),
        (|s| s["schema"] = json!(2), "schema", |p| matches!(p, Problem::UnsupportedSchema(2))),
        // Shape errors come from serde, still with their path.
        (
            |s| s["flags"][1]["rules"][0]["priority"] = json!(1),
            "flags[1].rules[0].priority",
            |p| matches!(p, Problem::Syntax(m) if m.contains("priority")),
        ),
        (
            |s| s["flags"][0]["enabled"] = json!("yes"),
            "flags[0].enabled",
            |p| matches!(p, Problem::Syntax(_)),
        ),
        (
            |s| s["flags"][1]["fallthrough"]["rollout"]["weights"][0]["weight"] = json!(-1),
            "flags[1].fallthrough.rollout.weights[0].weight",
            |p| matches!(p, Problem::Syntax(_)),
        ),
        (
            |s| s["segments"][0]["included"][0] = json!(7),
            "segments[0].included[0]",
            |p| matches!(p, Problem::Syntax(_)),
        ),
        (
            |s| _ = s.as_object_mut().unwrap().remove("version"),
            "",
            |p| matches!(p, Problem::Syntax(m) if m.contains("version")),
        ),
    ];
    for (i, (edit, path, expected)) in cases.into_iter().enumerate() {
        let (actual_path, problem) = rejection(edit);
        assert_eq!(actual_path, path, "case {i}: {problem}");
        assert!(expected(&problem), "case {i} at {path}: unexpected problem {problem:?}");
    }
}

#[test]
fn duplicate_variant_names_are_rejected_not_overwritten() {
    let json = br#"{"schema":1,"environment":"e","version":1,"flags":[{"key":"a","type":"boolean",
        "variants":{"on":true,"on":false},"off_variant":"on","fallthrough":{"variant":"on"}}]}"#;
    let error = Engine::from_json(json).unwrap_err();
    assert_eq!(error.path, "flags[0].variants.on");
    assert!(error.to_string().contains("duplicate key `on`"), "{error}");
}

#[test]
fn a_key_named_twice_anywhere_is_rejected_with_its_path() {
    let json = br#"{"schema":1,"environment":"e","version":1,"flags":[{"key":"a","type":"object",
        "variants":{"on":{"color":"red","color":"blue"},"off":{}},"off_variant":"off",
        "fallthrough":{"variant":"on"}}]}"#;
    let error = Engine::from_json(json).unwrap_err();
    assert_eq!(
        (error.path.as_str(), error.problem),
        ("flags[0].variants.on.color", Problem::DuplicateKey("color".into()))
    );
    let twice = br#"{"schema":1,"environment":"e","environment":"f","version":1,"flags":[]}"#;
    assert_eq!(Engine::from_json(twice).unwrap_err().path, "environment");
}

#[test]
fn malformed_json_and_trailing_garbage_are_rejected() {
    for bad in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"\xff",
        br#"{"schema":1,"environment":"e","version":1} x"#,
    ] {
        assert!(
            matches!(Engine::from_json(bad), Err(e) if matches!(e.problem, Problem::Syntax(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn prerequisite_trees_are_bounded() {
    let flag = |key: String, prerequisites: Value| {
        json!({"key": key, "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
               "prerequisites": prerequisites, "fallthrough": {"variant": "on"}})
    };
    // A diamond ladder: each level requires both flags of the next, so evaluations double per level.
    let levels = 7;
    let mut flags = vec![flag("l0-a".into(), json!([])), flag("l0-b".into(), json!([]))];
    for level in 1..=levels {
        for side in ["a", "b"] {
            let below = json!([{"flag": format!("l{}-a", level - 1), "variant": "on"},
                               {"flag": format!("l{}-b", level - 1), "variant": "on"}]);
            flags.push(flag(format!("l{level}-{side}"), below));
        }
    }
    let snapshot = json!({"schema": 1, "environment": "e", "version": 1, "flags": flags});
    let error = Engine::from_json(snapshot.to_string().as_bytes()).unwrap_err();
    assert!(matches!(error.problem, Problem::PrerequisitesTooLarge(_)), "{error}");
    // Level 5 costs 2 + 2*cost(4) = 62 <= 64 evaluations: allowed.
    let (allowed, _) = flags.split_at(2 * 6);
    let snapshot = json!({"schema": 1, "environment": "e", "version": 1, "flags": allowed});
    Engine::from_json(snapshot.to_string().as_bytes()).unwrap();
}

#[test]
fn a_long_prerequisite_chain_is_rejected_without_overflowing_the_stack() {
    let flags: Vec<Value> = (0..100_000)
        .map(|i| {
            let prerequisites = if i == 0 { json!([]) } else { json!([{"flag": format!("f{}", i - 1), "variant": "on"}]) };
            json!({"key": format!("f{i}"), "type": "boolean", "variants": {"on": true}, "off_variant": "on",
                   "prerequisites": prerequisites, "fallthrough": {"variant": "on"}})
        })
        .collect();
    let snapshot = json!({"schema": 1, "environment": "e", "version": 1, "flags": flags});
    let error = Engine::from_json(snapshot.to_string().as_bytes()).unwrap_err();
    assert!(matches!(error.problem, Problem::PrerequisitesTooLarge(_)), "{error}");
}
