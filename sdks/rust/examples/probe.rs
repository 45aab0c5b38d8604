//! An app that uses the provider through OpenFeature and answers on stdout, for the end-to-end
//! tests (tests/e2e/providers.test.mjs) and the kill-propagation benchmark. It is configured by
//! `ROLLGATE_URL`, `ROLLGATE_TOKEN`, `ROLLGATE_ENV` and optionally `ROLLGATE_BOOTSTRAP`,
//! `ROLLGATE_SAVE_TO` and `ROLLGATE_METRICS_MS`.
//!
//! Each provider event is a line `{"event": "PROVIDER_READY", "version": 3, ...}`. Each line on
//! stdin is a request, answered by a line with the same `id`:
//! - `{"id": 1, "op": "evaluate", "flag": "banner", "type": "string", "context": {...}}`
//!   answers `{"id": 1, "value": ..., "variant": ..., "reason": ..., "errorCode": ...}`;
//! - `{"id": 2, "op": "track", "flag": ..., "variant": ..., "metric": "errors", "count": 1}`;
//! - `{"id": 3, "op": "flush"}` answers once the counts were sent.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationDetails, EvaluationError,
    OpenFeature, StructValue,
};
use rollgate_openfeature::{Options, RollgateProvider};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let setting = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let mut options = Options::new(
        setting("ROLLGATE_URL")?,
        setting("ROLLGATE_TOKEN")?,
        setting("ROLLGATE_ENV")?,
    );
    if let Ok(path) = setting("ROLLGATE_BOOTSTRAP") {
        options = options.bootstrap(path);
    }
    if let Ok(path) = setting("ROLLGATE_SAVE_TO") {
        options = options.save_to(path);
    }
    if let Ok(ms) = setting("ROLLGATE_METRICS_MS") {
        options.metrics_interval = Some(Duration::from_millis(ms.parse()?));
    }
    options.max_backoff = Duration::from_secs(2);
    let provider = RollgateProvider::new(options)?;
    let handle = provider.handle();
    let mut events = handle.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let line = json!({"event": event.kind.as_str(), "version": event.version,
                "flagsChanged": event.flags_changed, "message": event.message});
            println!("{line}");
        }
    });
    OpenFeature::singleton_mut().await.set_provider(provider).await;
    let client = OpenFeature::singleton().await.create_client();
    println!("{}", json!({"started": true, "version": handle.version()}));

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let request: Value = serde_json::from_str(&line)?;
        let id = request["id"].clone();
        let text = |field: &str| request[field].as_str().unwrap_or_default().to_owned();
        let answer = match request["op"].as_str() {
            Some("evaluate") => {
                let (flag, context) = (text("flag"), context(&request["context"]));
                let context = Some(&context);
                let answer = match request["type"].as_str() {
                    Some("boolean") => {
                        answer(client.get_bool_details(&flag, context, None).await, Value::from)
                    }
                    Some("string") => {
                        answer(client.get_string_details(&flag, context, None).await, Value::from)
                    }
                    Some("number") => {
                        answer(client.get_float_details(&flag, context, None).await, Value::from)
                    }
                    Some("integer") => {
                        answer(client.get_int_details(&flag, context, None).await, Value::from)
                    }
                    _ => answer(
                        client.get_struct_details::<StructValue>(&flag, context, None).await,
                        |s| structure(&s),
                    ),
                };
                json!({"id": id, "answer": answer})
            }
            Some("track") => {
                handle.track(
                    &text("flag"),
                    &text("variant"),
                    &text("metric"),
                    request["count"].as_u64().unwrap_or(1),
                );
                json!({"id": id})
            }
            Some("flush") => {
                handle.flush().await;
                json!({"id": id})
            }
            _ => json!({"id": id, "error": "unknown op"}),
        };
        println!("{answer}");
    }
    handle.shutdown().await;
    Ok(())
}

/// An OFREP-shaped answer: value, variant, reason, errorCode, metadata.
fn answer<T>(
    result: Result<EvaluationDetails<T>, EvaluationError>,
    value: impl Fn(T) -> Value,
) -> Value {
    match result {
        Ok(details) => {
            let metadata: serde_json::Map<String, Value> = details
                .flag_metadata
                .values
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        open_feature::FlagMetadataValue::Bool(b) => json!(b),
                        open_feature::FlagMetadataValue::Int(i) => json!(i),
                        open_feature::FlagMetadataValue::Float(f) => json!(f),
                        open_feature::FlagMetadataValue::String(s) => json!(s),
                    };
                    (k.clone(), v)
                })
                .collect();
            json!({"value": value(details.value), "variant": details.variant,
                "reason": details.reason.map(|r| r.to_string()), "metadata": metadata})
        }
        Err(error) => {
            json!({"reason": "ERROR", "errorCode": error.code.to_string(), "errorMessage": error.message})
        }
    }
}

fn structure(value: &StructValue) -> Value {
    fn one(value: &open_feature::Value) -> Value {
        match value {
            open_feature::Value::Bool(b) => json!(b),
            open_feature::Value::Int(i) => json!(i),
            open_feature::Value::Float(f) => json!(f),
            open_feature::Value::String(s) => json!(s),
            open_feature::Value::Array(items) => Value::Array(items.iter().map(one).collect()),
            open_feature::Value::Struct(s) => structure(s),
        }
    }
    Value::Object(value.fields.iter().map(|(k, v)| (k.clone(), one(v))).collect())
}

/// A JSON context as OpenFeature's: objects and arrays travel as JSON structures.
fn context(json: &Value) -> EvaluationContext {
    let mut context = EvaluationContext::default();
    for (name, value) in json.as_object().into_iter().flatten() {
        let field = match value {
            Value::String(s) if name == "targetingKey" => {
                context.targeting_key = Some(s.clone());
                continue;
            }
            Value::Null => continue,
            Value::Bool(b) => EvaluationContextFieldValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => EvaluationContextFieldValue::Int(i),
                None => EvaluationContextFieldValue::Float(n.as_f64().unwrap_or_default()),
            },
            Value::String(s) => EvaluationContextFieldValue::String(s.clone()),
            other => EvaluationContextFieldValue::new_struct(other.clone()),
        };
        context.custom_fields.insert(name.clone(), field);
    }
    context
}
