//! Any bytes: split into a snapshot and a context; compile, then evaluate every flag and a
//! missing one. Neither step may panic, and evaluation must be deterministic.
#![no_main]

use flag_core::{Context, Engine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A 0xFF byte (never in UTF-8 JSON) separates the snapshot from the context.
    let (snapshot, context) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{\"targetingKey\": \"user-1\"}"[..]),
    };
    let Ok(engine) = Engine::from_json(snapshot) else { return };
    let Ok(context) = Context::from_json(context) else { return };
    let context = context.with_now(1_795_000_000_000);
    for result in engine.evaluate_all(&context) {
        let again = engine.evaluate(result.key, &context);
        assert_eq!(again, result.evaluation);
        let _ = serde_json::to_string(&result);
    }
    let _ = engine.evaluate("no such flag", &context);
});
