//! Importing from flagd, with flagd's Rust engine (`flagd-evaluation-engine`) as the oracle:
//! generated flag definitions (`if` chains, nested, over `in`, `==`, `!=`, `starts_with`,
//! `ends_with`, `sem_ver`, numeric comparisons, `and`, `or`, `!`, shared `$evaluators`, and
//! `fractional` keyed in each way) are imported, and 100,000 contexts evaluated by both
//! engines must be served the same variant.
//!
//! The engine's own `fractional` is flagd's proposed v3 (CBOR-encoded keys), not the v2 of
//! flagd's Go code that Rollgate's `flagd` algorithm follows. With the `flagd` feature of the
//! JSONLogic crate under it (a dev-dependency here), the crate's built-in v2 `fractional` and
//! `sem_ver` take the place of the engine's; `the_oracle_buckets_as_flagds_go_code` checks that
//! the oracle's `fractional` is the Go code's formula.

use std::collections::HashMap;

use control_plane::import::{Conversion, flagd};
use control_plane::model::flag::wire_flag;
use flag_core::{Context, Engine};
use flagd_evaluation_engine::{FeatureFlag, FlagParser, Operator};
use open_feature::EvaluationContext;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

const CONFIGURATIONS: u32 = 24;
const CONTEXTS: usize = 100_000;
const COUNTRIES: [&str; 4] = ["SE", "NO", "DE", "US"];
const EMAILS: [&str; 5] = ["ana@x.org", "bob@example.com", "cy@abc.org", "dee@example.io", ""];
const VERSIONS: [&str; 6] = ["1.0.0", "1.2.0", "1.2.3", "1.3.0-rc.1", "2.0.0", "0.9.1"];

fn var(name: &str) -> Value {
    json!({"var": name})
}

/// A test of one attribute, as flagd configurations write them.
fn leaf() -> BoxedStrategy<Value> {
    let country = proptest::sample::select(COUNTRIES.to_vec());
    let countries = proptest::sample::subsequence(COUNTRIES.to_vec(), 0..=3);
    let suffix = proptest::sample::select(vec!["@example.com", ".org", "x.org", "@"]);
    let age = -5i64..105;
    let version = proptest::sample::select(vec![
        "1.2.0",
        "1.2.3",
        "v1.3",
        "2",
        "1.0.0-rc.1",
        "1.2.3+build.5",
    ]);
    let version_op = proptest::sample::select(vec!["=", "!=", "<", "<=", ">", ">=", "^", "~"]);
    let compare = proptest::sample::select(vec!["<", "<=", ">", ">="]);
    prop_oneof![
        countries.prop_map(|c| json!({"in": [var("country"), c]})),
        (country.clone(), proptest::sample::select(vec!["==", "===", "!=", "!=="]))
            .prop_map(|(c, op)| json!({op: [var("country"), c]})),
        country.prop_map(|c| json!({"==": [c, var("country")]})),
        suffix.clone().prop_map(|s| json!({"ends_with": [var("email"), s]})),
        suffix
            .clone()
            .prop_map(|s| json!({"starts_with": [var("email"), s.trim_start_matches('@')]})),
        suffix.prop_map(|s| json!({"in": [s, var("email")]})),
        (version, version_op).prop_map(|(v, op)| json!({"sem_ver": [var("version"), op, v]})),
        (compare.clone(), age.clone(), any::<bool>()).prop_map(|(op, n, flipped)| if flipped {
            json!({op: [n, var("age")]})
        } else {
            json!({op: [var("age"), n]})
        }),
        (age.clone(), age.clone())
            .prop_map(|(a, b)| json!({"<": [a.min(b), var("age"), a.max(b)]})),
        (age, proptest::sample::select(vec!["==", "!=", "===", "!=="]))
            .prop_filter("loose == with a number JSONLogic converts", |(n, op)| op.len() == 3
                || (*n != 0 && *n != 1))
            .prop_map(|(n, op)| json!({op: [var("age"), n]})),
        (any::<bool>(), proptest::sample::select(vec!["===", "!=="]))
            .prop_map(|(b, op)| json!({op: [var("beta"), b]})),
        proptest::sample::subsequence(vec!["user-1", "user-2", "user-3"], 1..=2)
            .prop_map(|ids| json!({"in": [var("targetingKey"), ids]})),
    ]
    .boxed()
}

/// A condition: a test, or `and`, `or` and `!` of tests.
fn condition() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(2, 6, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..=3).prop_map(|c| json!({"and": c})),
                proptest::collection::vec(inner.clone(), 2..=3).prop_map(|c| json!({"or": c})),
                // `!` of a test with a complement; the others are reported, not imported.
                inner
                    .prop_filter("a negation Rollgate can say", negatable)
                    .prop_map(|c| json!({"!": c})),
            ]
        })
        .boxed()
}

fn negatable(condition: &Value) -> bool {
    let object = condition.as_object().unwrap();
    let (op, args) = object.iter().next().unwrap();
    match op.as_str() {
        "and" | "or" => args.as_array().unwrap().iter().all(negatable),
        "!" => negatable(args),
        "in" => args[1].is_array(),
        "==" | "===" | "!=" | "!==" => true,
        "<" | "<=" | ">" | ">=" => args.as_array().unwrap().len() == 2,
        _ => false,
    }
}

/// A `fractional` keyed in one of the ways flagd allows, over the flag's variants.
fn fractional(variants: Vec<&'static str>) -> BoxedStrategy<Value> {
    let count = variants.len();
    let key = prop_oneof![
        Just(None),
        Just(Some(var("email"))),
        Just(Some(var("targetingKey"))),
        Just(Some(json!({"cat": [{"var": "$flagd.flagKey"}, var("email")]}))),
        Just(Some(json!({"cat": ["salt-", var("country")]}))),
    ];
    (key, proptest::collection::vec(proptest::option::of(0u32..100), 2..=count), Just(variants))
        .prop_filter("weights that sum above 0", |(_, weights, _)| {
            weights.iter().map(|w| w.unwrap_or(1)).sum::<u32>() > 0
        })
        .prop_map(|(key, weights, variants)| {
            let buckets = weights.iter().zip(&variants).map(|(weight, variant)| match weight {
                Some(weight) => json!([variant, weight]),
                None => json!([variant]),
            });
            let mut arguments: Vec<Value> = key.into_iter().collect();
            arguments.extend(buckets);
            json!({"fractional": arguments})
        })
        .boxed()
}

/// What a branch of an `if` serves: a variant, nothing (the default), a `fractional`, or
/// another `if`.
fn outcome(variants: Vec<&'static str>) -> BoxedStrategy<Value> {
    let name = proptest::sample::select(variants.clone()).prop_map(|v| json!(v));
    let simple = prop_oneof![3 => name, 1 => Just(Value::Null), 1 => fractional(variants.clone())];
    let nested = (condition(), simple.clone(), simple.clone())
        .prop_map(|(c, then, otherwise)| json!({"if": [c, then, otherwise]}));
    prop_oneof![4 => simple, 1 => nested].boxed()
}

/// A flagd file with one flag `feature`, and its conditions sometimes in `$evaluators`.
fn files() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just((json!({"on": true, "off": false}), vec!["on", "off"])),
        Just((
            json!({"red": "#f00", "green": "#0f0", "blue": "#00f"}),
            vec!["red", "green", "blue"]
        )),
    ];
    kind.prop_flat_map(|(variants, names)| {
        let chain = (
            proptest::collection::vec((condition(), outcome(names.clone())), 1..=3),
            proptest::option::of(outcome(names.clone())),
            any::<bool>(),
        )
            .prop_map(|(pairs, otherwise, shared)| {
                let mut evaluators = serde_json::Map::new();
                let mut arguments = Vec::new();
                for (i, (condition, then)) in pairs.into_iter().enumerate() {
                    if shared && i == 0 {
                        evaluators.insert("shared".into(), condition);
                        arguments.push(json!({"$ref": "shared"}));
                    } else {
                        arguments.push(condition);
                    }
                    arguments.push(then);
                }
                arguments.extend(otherwise);
                (json!({"if": arguments}), evaluators)
            });
        let targeting = prop_oneof![
            1 => Just((json!({}), serde_json::Map::new())),
            2 => fractional(names.clone()).prop_map(|f| (f, serde_json::Map::new())),
            6 => chain,
        ];
        (
            Just(variants),
            proptest::sample::select(names),
            targeting,
            prop_oneof![9 => Just("ENABLED"), 1 => Just("DISABLED")],
        )
    })
    .prop_map(|(variants, default, (targeting, evaluators), state)| {
        json!({
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "flags": {"feature": {"state": state, "variants": variants, "defaultVariant": default, "targeting": targeting}},
            "$evaluators": evaluators,
        })
    })
}

/// A context as flagd and as Rollgate see it.
fn contexts(random: &mut StdRng) -> (EvaluationContext, Context) {
    let mut attributes = serde_json::Map::new();
    let mut context = EvaluationContext::default();
    let roll = random.random_range(0..100);
    if roll < 90 {
        let key = if roll < 86 {
            format!("user-{}", random.random_range(0..5_000u32))
        } else {
            String::new()
        };
        context = context.with_targeting_key(key.clone());
        attributes.insert("targetingKey".into(), json!(key));
    }
    let mut text = |name: &str, value: Option<&str>, context: &mut EvaluationContext| {
        if let Some(value) = value {
            *context = std::mem::take(context).with_custom_field(name, value);
            attributes.insert(name.into(), json!(value));
        }
    };
    let country = random.random_bool(0.8).then(|| COUNTRIES[random.random_range(0..4)]);
    text("country", country, &mut context);
    let email = random.random_bool(0.7).then(|| EMAILS[random.random_range(0..EMAILS.len())]);
    text("email", email, &mut context);
    let version = random.random_bool(0.7).then(|| VERSIONS[random.random_range(0..VERSIONS.len())]);
    text("version", version, &mut context);
    if random.random_bool(0.7) {
        let age = random.random_range(-2..102i64);
        context = context.with_custom_field("age", age);
        attributes.insert("age".into(), json!(age));
    }
    if random.random_bool(0.5) {
        let beta = random.random_bool(0.5);
        context = context.with_custom_field("beta", beta);
        attributes.insert("beta".into(), json!(beta));
    }
    (context, Context::from_json(Value::Object(attributes).to_string().as_bytes()).unwrap())
}

/// What flagd serves: the variant its targeting names, else `defaultVariant`; `None` for a
/// disabled flag, which flagd answers as if it did not exist.
fn flagd_variant(
    operator: &Operator,
    key: &str,
    flag: &FeatureFlag,
    context: &EvaluationContext,
) -> Option<String> {
    if flag.state == "DISABLED" {
        return None;
    }
    let targeting = flag.targeting.as_ref().filter(|t| !t.is_null() && *t != &json!({}));
    let Some(targeting) = targeting else {
        return Some(flag.default_variant.clone());
    };
    match operator.apply(key, &targeting.to_string(), context) {
        Ok(Some(variant)) => {
            assert!(flag.variants.contains_key(&variant), "flagd named `{variant}`");
            Some(variant)
        }
        Ok(None) => Some(flag.default_variant.clone()),
        Err(error) => panic!("flagd failed: {error}"),
    }
}

fn engine(conversion: &Conversion) -> Engine {
    let flags: Vec<Value> = conversion
        .flags
        .iter()
        .map(|f| serde_json::to_value(wire_flag(f.definition.clone(), f.state.clone())).unwrap())
        .collect();
    let snapshot = json!({"schema": 1, "environment": "e", "version": 1, "flags": flags});
    Engine::from_json(snapshot.to_string().as_bytes()).unwrap()
}

#[test]
fn imported_flagd_flags_serve_every_context_as_flagd_does() {
    let mut runner = TestRunner::new(Config { cases: CONFIGURATIONS, ..Config::default() });
    let operator = Operator::new();
    let totals = std::cell::Cell::new((0usize, 0usize, 0usize, 0usize));
    runner
        .run(&files(), |file| {
            let conversion = flagd::convert(file.to_string().as_bytes()).unwrap();
            let parsed = FlagParser::parse_string(&file.to_string()).unwrap();
            let flag = &parsed.flags["feature"];
            let (imported, skipped, left_out, compared) = totals.get();
            if !conversion.skipped.is_empty() {
                totals.set((imported, skipped + 1, left_out, compared));
                return Ok(());
            }
            let engine = engine(&conversion);
            let mut random = StdRng::seed_from_u64(11);
            for _ in 0..CONTEXTS {
                let (flagd_context, context) = contexts(&mut random);
                let expected = flagd_variant(&operator, "feature", flag, &flagd_context);
                let evaluation = engine.evaluate("feature", &context);
                prop_assert_eq!(
                    evaluation.variant,
                    expected.as_deref(),
                    "for {:?}: {:?}",
                    context,
                    conversion.flags.first().map(|f| &f.state)
                );
            }
            if conversion.left_out.is_empty() {
                totals.set((imported + 1, skipped, left_out, compared + CONTEXTS));
            } else {
                totals.set((imported, skipped, left_out + 1, compared + CONTEXTS));
            }
            Ok(())
        })
        .unwrap();
    let (imported, skipped, left_out, compared) = totals.get();
    assert!(imported >= CONFIGURATIONS as usize / 2, "{imported} imported, {skipped} skipped");
    eprintln!(
        "flagd import oracle: {imported} flags imported, {left_out} disabled and left out, {skipped} skipped as inexpressible; {compared} contexts, 0 mismatches"
    );
}

/// The oracle's `fractional` is flagd's Go code's: `(murmur3(flag key + targeting key) ×
/// total) >> 32`, the first variant whose cumulative weight passes the bucket. Computed here
/// with the `murmur3` crate, for 2,000 users and weights of 3 variants.
#[test]
fn the_oracle_buckets_as_flagds_go_code() {
    let operator = Operator::new();
    let rule = json!({"fractional": [["a", 17], ["b", 50], ["c", 33]]}).to_string();
    for user in 0..2_000 {
        let key = format!("user-{user}");
        let hash = murmur3::murmur3_32(&mut format!("checkout{key}").as_bytes(), 0).unwrap();
        let bucket = (u64::from(hash) * 100) >> 32;
        let expected = match bucket {
            0..17 => "a",
            17..67 => "b",
            _ => "c",
        };
        let context = EvaluationContext::default().with_targeting_key(key);
        let got = operator.apply("checkout", &rule, &context).unwrap();
        assert_eq!(got.as_deref(), Some(expected), "user-{user}");
    }
}

fn fixture() -> &'static [u8] {
    include_bytes!("../fixtures/flagd-flags.json")
}

#[test]
fn a_hand_written_file_converts_branch_by_branch() {
    let conversion = flagd::convert(fixture()).unwrap();
    let flags: HashMap<&str, &control_plane::import::ImportedFlag> =
        conversion.flags.iter().map(|f| (f.definition.key.as_str(), f)).collect();
    let state = |key: &str| serde_json::to_value(&flags[key].state).unwrap();

    // Staff first; then flagd's default for a unit without a targeting key, and the 25% as the
    // flag's own rollout, which plans move.
    let checkout = flags["new-checkout"];
    assert_eq!(checkout.definition.off_variant, "off");
    assert_eq!(checkout.definition.description, "The one-page checkout");
    assert_eq!(
        state("new-checkout"),
        json!({"enabled": true, "rules": [
            {"conditions": [{"attribute": "email", "op": "ends_with", "values": ["@rollgate.example"]}], "serve": {"variant": "on"}},
            {"conditions": [{"attribute": "targetingKey", "op": "not_exists"}], "serve": {"variant": "off"}},
            {"conditions": [{"attribute": "targetingKey", "op": "in", "values": [""]}], "serve": {"variant": "off"}}],
          "fallthrough": {"rollout": {"algorithm": {"name": "flagd", "prefix": "new-checkout"},
            "percent": 25000, "inside": "on", "outside": "off"}}})
    );
    assert!(checkout.notes.iter().any(|n| n.contains("since April 2026")), "{:?}", checkout.notes);

    // Keyed by the flag's key and the email: without an email flagd hashes the key alone.
    let header = state("header-color");
    assert_eq!(
        header["fallthrough"],
        json!({"rollout": {"bucket_by": "email", "algorithm": {"name": "flagd", "prefix": "header-color"},
            "weights": [{"variant": "red", "weight": 50}, {"variant": "blue", "weight": 25}, {"variant": "green", "weight": 25}]}})
    );
    let alone = flag_core::bucketing::flagd_bucket(b"header-color", 100);
    let alone = if alone < 50 {
        "red"
    } else if alone < 75 {
        "blue"
    } else {
        "green"
    };
    assert_eq!(header["rules"][1]["serve"], json!({"variant": alone}));
    assert_eq!(
        header["rules"][1]["conditions"],
        json!([{"attribute": "email", "op": "not_exists"}])
    );

    // `!=` holds for a missing attribute: two rules for one `and`.
    let search = state("search-v2");
    let rules = search["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 5, "{search}");
    assert_eq!(search["fallthrough"], json!({"variant": "off"}));
    assert_eq!(state("max-items"), json!({"enabled": true, "fallthrough": {"variant": "large"}}));
    assert_eq!(flags["max-items"].definition.kind, "number");

    assert_eq!(conversion.left_out.len(), 1);
    assert_eq!(conversion.left_out[0].key, "holiday-banner");
    assert_eq!(conversion.skipped.len(), 1);
    assert_eq!(conversion.skipped[0].key, "flash-sale");
    assert!(conversion.skipped[0].reason.contains("$flagd.timestamp"), "{:?}", conversion.skipped);
    let report = conversion.report();
    for line in [
        "import  new-checkout  (3 rules)",
        "leave   holiday-banner  DISABLED in flagd",
        "skip    flash-sale  condition",
        "4 to import, 1 that cannot be expressed, 1 left out",
    ] {
        assert!(report.contains(line), "{line:?} missing from\n{report}");
    }
}

/// Every flag the hand-written file imports serves 100,000 contexts as flagd does.
#[test]
fn a_hand_written_file_serves_every_context_as_flagd_does() {
    let conversion = flagd::convert(fixture()).unwrap();
    let text = std::str::from_utf8(fixture()).unwrap();
    let parsed = FlagParser::parse_string(text).unwrap();
    let operator = Operator::new();
    let engine = engine(&conversion);
    let mut random = StdRng::seed_from_u64(5);
    let emails = ["ana@rollgate.example", "bo@partner.example", "cy@x.org", ""];
    let keys: Vec<&str> = parsed.flags.keys().map(String::as_str).collect();
    for _ in 0..CONTEXTS / keys.len() {
        let mut attributes = serde_json::Map::new();
        let mut context = EvaluationContext::default();
        if random.random_bool(0.9) {
            let key = format!("user-{}", random.random_range(0..10_000u32));
            context = context.with_targeting_key(key.clone());
            attributes.insert("targetingKey".into(), json!(key));
        }
        let fields = [
            ("email", random.random_bool(0.7).then(|| json!(emails[random.random_range(0..4)]))),
            (
                "country",
                random.random_bool(0.7).then(|| json!(COUNTRIES[random.random_range(0..4)])),
            ),
            (
                "appVersion",
                random
                    .random_bool(0.7)
                    .then(|| json!(format!("3.{}.0", random.random_range(0..4)))),
            ),
            ("age", random.random_bool(0.7).then(|| json!(random.random_range(10..30)))),
            (
                "plan",
                random.random_bool(0.7).then(|| json!(["free", "pro"][random.random_range(0..2)])),
            ),
        ];
        for (name, value) in fields.into_iter().filter_map(|(n, v)| Some((n, v?))) {
            context = match &value {
                Value::String(text) => context.with_custom_field(name, text.as_str()),
                other => context.with_custom_field(name, other.as_i64().unwrap()),
            };
            attributes.insert(name.into(), value);
        }
        let rollgate =
            Context::from_json(Value::Object(attributes).to_string().as_bytes()).unwrap();
        for key in &keys {
            if *key == "flash-sale" {
                continue;
            }
            let expected = flagd_variant(&operator, key, &parsed.flags[*key], &context);
            let served = engine.evaluate(key, &rollgate).variant;
            assert_eq!(served, expected.as_deref(), "{key} for {rollgate:?}");
        }
    }
}

#[test]
fn strict_equality_with_what_loose_equality_converts_is_imported() {
    let file = json!({"flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
        "targeting": {"if": [{"or": [{"===": [{"var": "n"}, 0]}, {"===": [{"var": "b"}, false]}, {"and": []}]}, "on"]}}}});
    let conversion = flagd::convert(file.to_string().as_bytes()).unwrap();
    assert_eq!(conversion.flags.len(), 1, "{conversion:?}");
    let rules = serde_json::to_value(&conversion.flags[0].state.rules).unwrap();
    // `{"and": []}` is null in JSONLogic: it never holds.
    assert_eq!(
        rules,
        json!([{"conditions": [{"attribute": "n", "op": "in", "values": [0]}], "serve": {"variant": "on"}},
               {"conditions": [{"attribute": "b", "op": "in", "values": [false]}], "serve": {"variant": "on"}}])
    );
}

#[test]
fn refusals_say_why() {
    assert!(flagd::convert(b"[1, 2]").unwrap_err().contains("not a flagd flag definitions file"));
    let one = |flag: Value, evaluators: Value| {
        let file = json!({"flags": {"f": flag}, "$evaluators": evaluators});
        let conversion = flagd::convert(file.to_string().as_bytes()).unwrap();
        assert!(conversion.flags.is_empty(), "{conversion:?}");
        conversion.skipped[0].reason.clone()
    };
    let flag = |targeting: Value| json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": targeting});
    let cycle = json!({"a": {"$ref": "b"}, "b": {"$ref": "a"}});
    assert!(one(flag(json!({"if": [{"$ref": "a"}, "on", "off"]})), cycle).contains("nests deeper"));
    assert!(one(flag(json!({"if": [{"$ref": "gone"}, "on"]})), json!({})).contains("`gone`"));
    assert!(one(flag(json!("purple")), json!({})).contains("`purple`"));
    let negated = json!({"if": [{"!": {"starts_with": [{"var": "email"}, "a"]}}, "on"]});
    assert!(one(flag(negated), json!({})).contains("condition"));
    for value in
        [json!(false), json!(true), json!(0), json!(1), json!(""), json!("true"), Value::Null]
    {
        let loose = json!({"if": [{"==": [{"var": "beta"}, value]}, "on"]});
        assert!(one(flag(loose), json!({})).contains("write `===`"), "{value}");
    }
    for version in ["1.02.3", "+1.2.3", "18446744073709551615.0.0"] {
        let caret = json!({"if": [{"sem_ver": [{"var": "v"}, "^", version]}, "on"]});
        assert!(one(flag(caret), json!({})).contains("versions"), "{version}");
    }
    // `$ref`s that multiply: refused, not expanded.
    let mut evaluators = serde_json::Map::new();
    for level in 0..5 {
        let next = if level == 4 {
            json!({"in": [{"var": "c"}, ["x"]]})
        } else {
            json!({"$ref": format!("e{}", level + 1)})
        };
        evaluators.insert(format!("e{level}"), json!({"or": vec![next; 16]}));
    }
    let wide = flag(json!({"if": [{"$ref": "e0"}, "on"]}));
    assert!(one(wide, Value::Object(evaluators)).contains("nodes"));
    let ors: Vec<Value> =
        (0..70).map(|i| json!({"in": [{"var": "c"}, [format!("v{i}")]]})).collect();
    assert!(
        one(flag(json!({"if": [{"or": ors}, "on"]})), json!({})).contains("more than 64 rules")
    );
    let no_default = json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": null});
    assert!(one(no_default, json!({})).contains("no defaultVariant"));
    let mixed =
        json!({"state": "ENABLED", "variants": {"on": true, "n": 1}, "defaultVariant": "on"});
    assert!(one(mixed, json!({})).contains("not all"));
    let float = flag(json!({"fractional": [["on", 2.5], ["off", 1]]}));
    assert!(one(float, json!({})).contains("whole number"));
}

/// docs/import.md's count of users a flagd older than April 2026 served otherwise: its
/// `fractional` took `|int32(hash)| / MaxInt32 × 100` against cumulative percentages.
#[test]
fn an_older_flagds_fractional_served_a_quarter_of_users_otherwise() {
    fn variant(bucket: f64, weights: &[(&'static str, f64)]) -> Option<&'static str> {
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        let mut end = 0.0;
        weights
            .iter()
            .find(|(_, w)| {
                end += w * 100.0 / total;
                bucket < end
            })
            .map(|(name, _)| *name)
    }
    let weights = [("on", 25.0), ("off", 75.0)];
    let moved = (0..100_000)
        .filter(|i| {
            let key = format!("new-checkoutuser-{i}");
            let hash = murmur3::murmur3_32(&mut key.as_bytes(), 0).unwrap();
            let older = f64::from((hash as i32).unsigned_abs()) / f64::from(i32::MAX) * 100.0;
            let current = ((u64::from(hash) * 100) >> 32) as f64;
            variant(older, &weights) != variant(current, &weights)
        })
        .count();
    assert_eq!(moved, 24_912);
}
