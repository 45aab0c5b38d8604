//! Writes golden cases for the WebAssembly build: random contexts evaluated by the native
//! engine against every spec fixture's snapshot. flag-core/js/golden.test.mjs replays them
//! through the wasm-bindgen module and requires identical results.
//!
//! Usage: cargo run -p flag-core --example golden -- OUT.json [CONTEXTS_PER_SNAPSHOT]

use std::path::Path;

use flag_core::{Context, ContextError, Engine, ErrorCode, Evaluation};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().expect("usage: golden OUT.json [CONTEXTS_PER_SNAPSHOT]");
    let per_snapshot: usize = args.next().map_or(4_000, |n| n.parse().expect("a number"));
    let mut rng = StdRng::seed_from_u64(0x0726_2026);

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec");
    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    let mut snapshots = Vec::new();
    let mut cases = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let fixture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let snapshot = fixture["snapshot"].to_string();
        let engine = Engine::from_json(snapshot.as_bytes()).unwrap();
        let flags: Vec<String> =
            engine.flag_keys().map(String::from).chain(["no-such-flag".into()]).collect();
        for _ in 0..per_snapshot {
            let (context_json, now) = random_context(&mut rng);
            let flag = flags.choose(&mut rng).unwrap();
            let (single, all) = match parse(&context_json, now) {
                Ok(context) => (
                    serde_json::to_value(engine.evaluate(flag, &context)).unwrap(),
                    serde_json::to_value(engine.evaluate_all(&context).collect::<Vec<_>>())
                        .unwrap(),
                ),
                Err(code) => {
                    let error = serde_json::to_value(Evaluation::error(code)).unwrap();
                    (error.clone(), error)
                }
            };
            cases
                .push(json!({"snapshot": index, "context": context_json, "now": now, "flag": flag,
                              "expect": single, "expectAll": all}));
        }
        snapshots.push(snapshot);
    }
    let golden = json!({"snapshots": snapshots, "cases": cases});
    std::fs::write(&out, serde_json::to_vec(&golden).unwrap()).unwrap();
    eprintln!("wrote {} golden cases to {out}", cases.len());
}

/// The same mapping the wasm API applies to a context it cannot use.
fn parse(json: &str, now: Option<i64>) -> Result<Context, ErrorCode> {
    let context = Context::from_json(json.as_bytes()).map_err(|e| match e {
        ContextError::Invalid(_) => ErrorCode::InvalidContext,
        _ => ErrorCode::ParseError,
    })?;
    Ok(match now {
        Some(now) => context.with_now(now),
        None => context,
    })
}

/// A context as JSON text, drawn from values the fixtures' rules care about, plus noise.
fn random_context(rng: &mut StdRng) -> (String, Option<i64>) {
    if rng.random_ratio(1, 200) {
        let broken = ["{", "[1, 2]", "\"text\"", "{\"targetingKey\": 7}", "null"];
        return (broken.choose(rng).unwrap().to_string(), None);
    }
    let pools: [(&str, Vec<Value>); 12] = [
        (
            "targetingKey",
            vec![json!("alice"), json!("carol"), json!("mallory"), json!(""), json!("user-1")],
        ),
        ("country", vec![json!("SE"), json!("NO"), json!("DK"), json!("se"), json!(3)]),
        (
            "email",
            vec![json!("a@rollgate.dev"), json!("b@example.com"), json!("x@rollgate.dev.evil.com")],
        ),
        ("plan", vec![json!("pro"), json!("free"), json!(null)]),
        (
            "a",
            vec![
                json!("SE"),
                json!("NO"),
                json!(5),
                json!(5.0),
                json!(3),
                json!(true),
                json!(false),
                json!(null),
                json!("rc-1"),
                json!("beta-x"),
                json!("superadmin"),
                json!(["SE"]),
                json!({"k": 1}),
            ],
        ),
        (
            "age",
            vec![json!(17), json!(18), json!(18.5), json!(64), json!(65), json!(65.5), json!("17")],
        ),
        (
            "app",
            vec![
                json!("2.1.0"),
                json!("2.1.0+b"),
                json!("2.0.0-rc.1"),
                json!("1.9.9"),
                json!("10.0.0"),
                json!("2.1"),
            ],
        ),
        (
            "signup",
            vec![
                json!("2025-06-01T12:00:00Z"),
                json!("2026-01-01T00:00:00Z"),
                json!("2026-01-01T01:00:00+02:00"),
                json!("2026-03-01T00:00:00.250Z"),
                json!("yesterday"),
            ],
        ),
        (
            "accountId",
            vec![
                json!(42),
                json!(-7),
                json!("acme"),
                json!(4.5),
                json!(9_007_199_254_740_991u64),
                json!(""),
            ],
        ),
        ("extra", vec![json!({"nested": [1, 2, 3]}), json!("ignored")]),
        ("beta", vec![json!(true), json!(false)]),
        ("ratio", vec![json!(0.25), json!(-1e300)]),
    ];
    let mut context = serde_json::Map::new();
    for (name, values) in &pools {
        if rng.random_bool(0.6) {
            context.insert((*name).into(), values.choose(rng).unwrap().clone());
        }
    }
    if rng.random_bool(0.8) {
        context
            .insert("targetingKey".into(), json!(format!("user-{}", rng.random_range(0..100_000))));
    }
    let now =
        rng.random_bool(0.8).then(|| rng.random_range(1_764_547_200_000..1_798_761_600_000i64));
    (Value::Object(context).to_string(), now)
}
