//! OpenFeature's evaluation context as flag-core's: the targeting key, the attributes as JSON
//! values, and the clock for `before` and `after` conditions.

use std::time::{SystemTime, UNIX_EPOCH};

use flag_core::Context;
use open_feature::{EvaluationContext, EvaluationContextFieldValue, StructValue, Value};
use serde_json::{Map, Number, Value as Json};
use time::format_description::well_known::Rfc3339;

/// The context flag-core evaluates, with the current time as `now`, as OFREP servers do.
#[allow(
    clippy::disallowed_methods,
    reason = "the app's wall clock is the one conditions compare with"
)]
pub(crate) fn context(context: &EvaluationContext) -> Context {
    let mut converted = match &context.targeting_key {
        Some(key) => Context::with_targeting_key(key.as_str()),
        None => Context::new(),
    };
    for (name, value) in &context.custom_fields {
        // The unit's key is OpenFeature's targeting key, never a field that shares its name.
        if name == flag_core::TARGETING_KEY {
            continue;
        }
        if let Some(value) = field(value) {
            converted = converted.with(name.as_str(), value);
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    converted.with_now(i64::try_from(now).unwrap_or(i64::MAX))
}

/// A field as JSON; `None` for what JSON cannot hold (a NaN, a structure of an unknown type).
fn field(value: &EvaluationContextFieldValue) -> Option<Json> {
    Some(match value {
        EvaluationContextFieldValue::Bool(b) => Json::Bool(*b),
        EvaluationContextFieldValue::Int(i) => Json::from(*i),
        EvaluationContextFieldValue::Float(f) => Json::Number(Number::from_f64(*f)?),
        EvaluationContextFieldValue::String(s) => Json::String(s.clone()),
        // Timestamps compare as RFC 3339 text (docs/snapshot-format.md, `before` and `after`).
        EvaluationContextFieldValue::DateTime(at) => Json::String(at.format(&Rfc3339).ok()?),
        EvaluationContextFieldValue::Struct(any) => {
            if let Some(json) = any.downcast_ref::<Json>() {
                json.clone()
            } else {
                structure(any.downcast_ref::<StructValue>()?)
            }
        }
    })
}

fn structure(value: &StructValue) -> Json {
    Json::Object(
        value.fields.iter().filter_map(|(k, v)| Some((k.clone(), json(v)?))).collect::<Map<_, _>>(),
    )
}

fn json(value: &Value) -> Option<Json> {
    Some(match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => Json::Number(Number::from_f64(*f)?),
        Value::String(s) => Json::String(s.clone()),
        Value::Array(items) => Json::Array(items.iter().filter_map(json).collect()),
        Value::Struct(s) => structure(s),
    })
}

/// A flag's JSON value as OpenFeature's; JSON `null` has no OpenFeature form and is left out.
pub(crate) fn value(json: &Json) -> Option<Value> {
    Some(match json {
        Json::Null => return None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().filter_map(value).collect()),
        Json::Object(fields) => Value::Struct(StructValue {
            fields: fields.iter().filter_map(|(k, v)| Some((k.clone(), value(v)?))).collect(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_json_and_the_clock_is_set() {
        let at = time::OffsetDateTime::from_unix_timestamp(1_764_581_400).unwrap();
        let context = EvaluationContext::default()
            .with_targeting_key("user-1")
            .with_custom_field("country", "SE")
            .with_custom_field("orders", 3)
            .with_custom_field("score", 0.5)
            .with_custom_field("beta", true)
            .with_custom_field("signedUp", EvaluationContextFieldValue::DateTime(at))
            .with_custom_field("nan", f64::NAN);
        let converted = super::context(&context);
        assert_eq!(converted.targeting_key(), Some("user-1"));
        assert_eq!(converted.get("country"), Some(&Json::from("SE")));
        assert_eq!(converted.get("orders"), Some(&Json::from(3)));
        assert_eq!(converted.get("score"), Some(&Json::from(0.5)));
        assert_eq!(converted.get("beta"), Some(&Json::Bool(true)));
        assert_eq!(converted.get("signedUp"), Some(&Json::from("2025-12-01T09:30:00Z")));
        assert_eq!(converted.get("nan"), None);
        assert!(converted.now_millis().is_some());
    }

    #[test]
    fn object_values_keep_their_shape() {
        let json = serde_json::json!({"color": "orange", "rounded": true, "radius": 4, "ratio": 1.5, "none": null});
        let Some(Value::Struct(s)) = value(&json) else { panic!("an object is a structure") };
        assert_eq!(s.fields.len(), 4);
        assert_eq!(s.fields["radius"], Value::Int(4));
        assert_eq!(s.fields["ratio"], Value::Float(1.5));
    }
}
