//! Importing from Unleash, with Unleash's own engine (`unleash-yggdrasil`) as the oracle:
//! generated features (strategies in order, constraints, rollouts with group ids and
//! stickiness, strategy and feature variants) are imported, and 100,000 contexts evaluated by
//! both engines must be served the same. Also the refusals, the report, and a hand-written
//! export.

use std::collections::HashMap;

use control_plane::import::{Conversion, unleash};
use control_plane::model::flag::wire_flag;
use flag_core::{Context, Engine, ErrorCode, Reason};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use unleash_yggdrasil::{ClientFeatures, Context as UnleashContext, EngineState, UpdateMessage};

const CONFIGURATIONS: u32 = 20;
const CONTEXTS: usize = 100_000;
const COUNTRIES: [&str; 4] = ["SE", "NO", "DE", "US"];

fn constraint() -> impl Strategy<Value = Value> {
    let countries = proptest::sample::subsequence(COUNTRIES.to_vec(), 1..=3);
    prop_oneof![
        (countries.clone(), any::<bool>()).prop_map(|(values, inverted)| json!(
            {"contextName": "country", "operator": "IN", "values": values, "inverted": inverted})),
        (countries, any::<bool>()).prop_map(|(values, inverted)| json!(
            {"contextName": "country", "operator": "NOT_IN", "values": values, "inverted": inverted})),
        prop_oneof![Just("STR_CONTAINS"), Just("STR_STARTS_WITH"), Just("STR_ENDS_WITH")]
            .prop_flat_map(|operator| (Just(operator), prop_oneof![Just("a"), Just("b@x"), Just(".ORG"), Just("c")], any::<bool>()))
            .prop_map(|(operator, value, case_insensitive)| json!(
                {"contextName": "email", "operator": operator, "values": [value], "caseInsensitive": case_insensitive})),
        (prop_oneof![Just("NUM_EQ"), Just("NUM_GT"), Just("NUM_GTE"), Just("NUM_LT"), Just("NUM_LTE")], 0u32..100)
            .prop_map(|(operator, value)| json!(
                {"contextName": "age", "operator": operator, "value": value.to_string()})),
        (prop_oneof![Just("SEMVER_EQ"), Just("SEMVER_GT"), Just("SEMVER_LT")], 0u32..3, 0u32..3)
            .prop_map(|(operator, minor, patch)| json!(
                {"contextName": "version", "operator": operator, "value": format!("1.{minor}.{patch}")})),
        proptest::sample::subsequence(vec!["user-1", "user-2", "user-3"], 1..=2).prop_map(|values| json!(
            {"contextName": "userId", "operator": "IN", "values": values})),
    ]
}

fn variants() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(1u32..=1000, 0..3).prop_map(|weights| {
        weights
            .into_iter()
            .enumerate()
            .map(|(i, weight)| json!({"name": format!("v{i}"), "weight": weight, "weightType": "fix",
                "stickiness": "default", "payload": {"type": "string", "value": format!("payload {i}")}}))
            .collect()
    })
}

/// A feature: up to two constrained `default` strategies, then a flexible rollout or another
/// `default`, with strategy or feature variants.
fn features() -> impl Strategy<Value = Value> {
    let rollout = (
        0u32..=100,
        proptest::option::of("[a-z0-9]{0,8}"),
        prop_oneof![Just("default"), Just("userId"), Just("sessionId"), Just("country")],
        proptest::collection::vec(constraint(), 0..2),
        variants(),
    )
        .prop_map(|(percent, group, stickiness, constraints, variants)| {
            let mut parameters = json!({"rollout": percent.to_string(), "stickiness": stickiness});
            if let Some(group) = group {
                parameters["groupId"] = json!(group);
            }
            // Variants hash with the strategy's stickiness.
            let variants: Vec<Value> = variants
                .into_iter()
                .map(|mut v| {
                    v["stickiness"] = json!(stickiness);
                    v
                })
                .collect();
            json!({"name": "flexibleRollout", "parameters": parameters, "constraints": constraints,
                   "variants": variants})
        })
        .boxed();
    let constrained = (proptest::collection::vec(constraint(), 1..3), variants())
        .prop_map(|(constraints, variants)| json!({"name": "default", "constraints": constraints, "variants": variants}));
    (
        proptest::collection::vec(constrained, 0..3),
        prop_oneof![rollout.clone(), rollout, Just(json!({"name": "default"}))],
        variants(),
        prop_oneof![Just(true), Just(true), Just(true), Just(false)],
    )
        .prop_map(|(mut strategies, last, feature_variants, enabled)| {
            strategies.push(last);
            json!({"name": "feature", "type": "release", "enabled": enabled,
                   "strategies": strategies, "variants": feature_variants})
        })
}

/// A context as Unleash and as Rollgate see it. Unleash's properties are strings; Rollgate's
/// attributes are typed, so `age` is a number there.
fn contexts(random: &mut StdRng) -> (UnleashContext, Context) {
    let user =
        random.random_bool(0.85).then(|| format!("user-{}", random.random_range(0..2_000u32)));
    let session =
        random.random_bool(0.5).then(|| format!("s-{}", random.random_range(0..1_000_000u32)));
    let country = random.random_bool(0.8).then(|| COUNTRIES[random.random_range(0..4)].to_owned());
    let emails = ["ana@x.org", "Bob@X.com", "cy@abc.ORG", "dee@c.io"];
    let email = random.random_bool(0.7).then(|| emails[random.random_range(0..4)].to_owned());
    let age = random.random_bool(0.7).then(|| random.random_range(0..100u32));
    let version = random
        .random_bool(0.7)
        .then(|| format!("1.{}.{}", random.random_range(0..3u32), random.random_range(0..3u32)));
    let mut properties = HashMap::new();
    let mut attributes = serde_json::Map::new();
    for (name, value) in [("country", &country), ("email", &email), ("version", &version)] {
        if let Some(value) = value {
            properties.insert(name.to_owned(), value.clone());
            attributes.insert(name.into(), json!(value));
        }
    }
    if let Some(age) = age {
        properties.insert("age".into(), age.to_string());
        attributes.insert("age".into(), json!(age));
    }
    if let Some(user) = &user {
        attributes.insert("targetingKey".into(), json!(user));
    }
    if let Some(session) = &session {
        attributes.insert("sessionId".into(), json!(session));
    }
    let unleash = UnleashContext {
        user_id: user,
        session_id: session,
        properties: Some(properties),
        ..UnleashContext::default()
    };
    (unleash, Context::from_json(Value::Object(attributes).to_string().as_bytes()).unwrap())
}

/// The flag the conversion made, compiled as an edge would.
fn engine(conversion: &Conversion) -> Engine {
    let flag = &conversion.flags[0];
    let wire = wire_flag(flag.definition.clone(), flag.state.clone());
    let snapshot = json!({"schema": 1, "environment": "e", "version": 1, "flags": [wire]});
    Engine::from_json(snapshot.to_string().as_bytes()).unwrap()
}

/// Whether Unleash would pick at random for this context: a `default` stickiness (or variant
/// hash) with neither id.
fn random_in_unleash(context: &UnleashContext) -> bool {
    context.user_id.is_none() && context.session_id.is_none()
}

#[test]
fn imported_unleash_features_serve_every_context_as_unleash_does() {
    let mut runner = TestRunner::new(Config { cases: CONFIGURATIONS, ..Config::default() });
    let totals = std::cell::Cell::new((0usize, 0usize, 0usize));
    runner
        .run(&features(), |feature| {
            let document = json!({"version": 2, "features": [feature]});
            let conversion = unleash::convert(document.to_string().as_bytes(), None).unwrap();
            let (imported, skipped, compared) = totals.get();
            if conversion.flags.is_empty() {
                totals.set((imported, skipped + 1, compared));
                return Ok(());
            }
            let state = EngineState::default();
            let features: ClientFeatures = serde_json::from_value(document).unwrap();
            state.take_state(UpdateMessage::FullResponse(features));
            let engine = engine(&conversion);
            let with_variants = conversion.flags[0].definition.kind == "string";
            let mut random = StdRng::seed_from_u64(7);
            let mut count = 0;
            for _ in 0..CONTEXTS {
                let (unleash_context, context) = contexts(&mut random);
                if random_in_unleash(&unleash_context) {
                    continue;
                }
                let enabled = state.is_enabled("feature", &unleash_context, &None);
                let expected = if with_variants {
                    state.get_variant("feature", &unleash_context, &None).name
                } else if enabled {
                    "on".to_owned()
                } else {
                    "off".to_owned()
                };
                let evaluation = engine.evaluate("feature", &context);
                // Where the flag's own rollout cannot bucket a unit (no stickiness attribute),
                // Rollgate answers an error and the app its default: Unleash's off.
                let got = match evaluation.variant {
                    Some(variant) => variant,
                    None if evaluation.reason == Reason::Error(ErrorCode::TargetingKeyMissing) => {
                        conversion.flags[0].definition.off_variant.as_str()
                    }
                    None => "none",
                };
                prop_assert_eq!(
                    got,
                    expected.as_str(),
                    "{} for {:?}",
                    conversion.flags[0].definition.key,
                    unleash_context
                );
                count += 1;
            }
            totals.set((imported + 1, skipped, compared + count));
            Ok(())
        })
        .unwrap();
    let (imported, skipped, compared) = totals.get();
    assert!(imported >= CONFIGURATIONS as usize / 2, "{imported} imported, {skipped} skipped");
    eprintln!(
        "unleash import oracle: {imported} features imported ({skipped} skipped as inexpressible), {compared} contexts, 0 mismatches"
    );
}

#[test]
fn a_hand_written_export_converts_strategy_by_strategy() {
    let export = include_bytes!("../fixtures/unleash-export.json");
    let conversion = unleash::convert(export, Some("production")).unwrap();
    let flags: HashMap<&str, &control_plane::import::ImportedFlag> =
        conversion.flags.iter().map(|f| (f.definition.key.as_str(), f)).collect();
    let state = |key: &str| serde_json::to_value(&flags[key].state).unwrap();

    // The last strategy without constraints is the flag's own rollout, which plans move.
    assert_eq!(
        state("new-checkout"),
        json!({"enabled": true, "fallthrough": {"rollout": {
            "algorithm": {"name": "unleash", "group_id": "new-checkout", "stickiness": ["targetingKey", "sessionId"]},
            "percent": 25000, "inside": "on", "outside": "off"}}})
    );
    // NOT_IN holds for a unit without the attribute too: two rules. The variants are a string
    // flag of their payloads, and the dependency a prerequisite.
    let banner = &flags["checkout-banner"];
    assert_eq!(banner.definition.kind, "string");
    assert_eq!(banner.definition.variants["green"], json!("Try the new checkout"));
    assert_eq!(banner.definition.off_variant, "disabled");
    let banner_state = state("checkout-banner");
    let conditions: Vec<&Value> =
        banner_state["rules"].as_array().unwrap().iter().map(|r| &r["conditions"]).collect();
    assert_eq!(
        conditions,
        [
            &json!([{"attribute": "country", "op": "not_exists"}]),
            &json!([{"attribute": "country", "op": "not_in", "values": ["US"]}])
        ]
    );
    assert_eq!(banner_state["prerequisites"], json!([{"flag": "new-checkout", "variant": "on"}]));
    assert_eq!(
        banner_state["rules"][0]["serve"]["rollout"]["algorithm"]["group_id"],
        "checkout-banner"
    );
    let search = state("search-beta");
    assert_eq!(
        search["rules"][0]["conditions"],
        json!([{"attribute": "targetingKey", "op": "in", "values": ["ana", "bob", "cy"]}])
    );
    assert_eq!(
        search["rules"][1]["conditions"],
        json!([{"attribute": "email", "op": "ends_with", "values": ["@example.com"]},
               {"attribute": "appVersion", "op": "semver_gt", "values": ["2.3.0"]}])
    );
    assert_eq!(conversion.skipped.len(), 1);
    assert_eq!(conversion.skipped[0].key, "legacy-pricing");

    // Not Unleash at all, and an export of several environments without a choice.
    assert!(unleash::convert(b"[1, 2]", None).is_err());
    let mut two = serde_json::from_slice::<Value>(export).unwrap();
    let mut staging = two["featureEnvironments"][0].clone();
    staging["environment"] = json!("staging");
    two["featureEnvironments"].as_array_mut().unwrap().push(staging);
    let conversion = unleash::convert(two.to_string().as_bytes(), None).unwrap();
    let skipped = conversion.skipped.iter().find(|s| s.key == "new-checkout").unwrap();
    assert!(skipped.reason.contains("--source-environment"), "{}", skipped.reason);
}

mod over_http {
    use reqwest::{Method, StatusCode};
    use serde_json::{Value, json};

    use crate::support::{RELEASE, start};

    fn flag(key: &str, percent: u32) -> Value {
        json!({
            "definition": {"key": key, "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"},
            "state": {"enabled": true, "fallthrough": {"rollout": {
                "algorithm": {"name": "flagd", "prefix": key}, "percent": percent, "inside": "on", "outside": "off"}}},
        })
    }

    const PRODUCTION: &str = "/api/v1/environments/production/import";
    const STAGING: &str = "/api/v1/environments/staging/import";

    /// A whole system's flags in one body: past the 1 MiB other requests may have, up to 16 MiB.
    #[tokio::test]
    async fn an_import_may_be_larger_than_other_requests() {
        let server = start().await;
        let flags: Vec<Value> = (0..600)
            .map(|i| {
                let mut flag = flag(&format!("flag-{i}"), 10_000);
                flag["definition"]["description"] = json!("d".repeat(2000));
                flag
            })
            .collect();
        let body = json!({"flags": flags, "reason": "a big import"});
        assert!(body.to_string().len() > control_plane::MAX_BODY_BYTES);
        let (status, answer) =
            server.call(Method::POST, PRODUCTION, Some(RELEASE), Some(body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["created"].as_array().unwrap().len(), 600);

        let many = control_plane::service::flags::MAX_IMPORT_FLAGS + 1;
        let flags: Vec<Value> = (0..many).map(|i| flag(&format!("g-{i}"), 1)).collect();
        let body = json!({"flags": flags, "reason": "too many"});
        let (status, answer) = server.call(Method::POST, STAGING, Some(RELEASE), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["detail"].as_str().unwrap().contains("at most 10000"), "{answer}");

        let huge = json!({"flags": [], "reason": "x".repeat(control_plane::MAX_IMPORT_BODY_BYTES)});
        let (status, _) = server.call(Method::POST, STAGING, Some(RELEASE), Some(huge)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn an_import_is_one_change_whole_or_refused_whole() {
        let server = start().await;
        let body = |flags: Vec<Value>| Some(json!({"flags": flags, "reason": "from flagd"}));
        // An archived flag keeps its key: the import that names it changes nothing.
        let definition = &flag("retired", 0)["definition"];
        let (status, _) = server
            .call(Method::POST, "/api/v1/flags", Some(RELEASE), Some(definition.clone()))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = server
            .call(Method::DELETE, "/api/v1/flags/retired?reason=gone", Some(RELEASE), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let before = server.observable_state().await;
        let (status, answer) = server
            .call(
                Method::POST,
                PRODUCTION,
                Some(RELEASE),
                body(vec![flag("a", 25_000), flag("retired", 10_000)]),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains("archived flag has the key `retired`"),
            "{answer}"
        );
        assert_eq!(server.observable_state().await, before, "`a` was not created either");

        // One the evaluator refuses (a variant the flag lacks), or the same key twice: nothing.
        let mut bad = flag("b", 10_000);
        bad["state"]["fallthrough"] = json!({"variant": "maybe"});
        let (status, answer) = server
            .call(Method::POST, PRODUCTION, Some(RELEASE), body(vec![flag("a", 25_000), bad]))
            .await;
        assert!(status.is_client_error(), "{status} {answer}");
        let (status, _) = server
            .call(Method::POST, PRODUCTION, Some(RELEASE), body(vec![flag("a", 1), flag("a", 2)]))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = server.call(Method::POST, PRODUCTION, Some(RELEASE), body(vec![])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let nowhere = "/api/v1/environments/nowhere/import";
        let (status, _) =
            server.call(Method::POST, nowhere, Some(RELEASE), body(vec![flag("a", 1)])).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(server.observable_state().await, before);

        // Production, then staging from its own export: the second adopts what the first made.
        let (status, answer) = server
            .call(Method::POST, PRODUCTION, Some(RELEASE), body(vec![flag("a", 25_000)]))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["created"], json!(["a"]));
        let (status, answer) =
            server.call(Method::POST, STAGING, Some(RELEASE), body(vec![flag("a", 50_000)])).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            (answer["created"].clone(), answer["adopted"].clone()),
            (json!([]), json!(["a"]))
        );
        let (_, record) = server.call(Method::GET, "/api/v1/flags/a", Some(RELEASE), None).await;
        let percent =
            |env: &str| record["environments"][env]["fallthrough"]["rollout"]["percent"].clone();
        assert_eq!((percent("production"), percent("staging")), (json!(25_000), json!(50_000)));
        let (_, audit) =
            server.call(Method::GET, "/api/v1/audit?flag=a", Some(RELEASE), None).await;
        assert!(audit.to_string().contains("from flagd"), "{audit}");

        // Once set up in an environment, a flag is not imported over.
        let before = server.observable_state().await;
        let (status, answer) =
            server.call(Method::POST, STAGING, Some(RELEASE), body(vec![flag("a", 60_000)])).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            answer["detail"].as_str().unwrap().contains("already set up in `staging`"),
            "{answer}"
        );
        let mut other = flag("a", 60_000);
        other["definition"]["description"] = json!("another");
        let (status, answer) =
            server.call(Method::POST, PRODUCTION, Some(RELEASE), body(vec![other])).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert!(answer["detail"].as_str().unwrap().contains("another definition"), "{answer}");
        assert_eq!(server.observable_state().await, before);
    }
}
