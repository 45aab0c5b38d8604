//! OFREP, the OpenFeature Remote Evaluation Protocol (open-feature/protocol,
//! `service/openapi.yaml`): request bodies in, status codes and response bodies out. Hosts
//! (the control plane, the edge worker) add transport, auth and ETags; the answers are the same
//! everywhere because they are made here.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::{Context, ContextError, Engine, ErrorCode, Evaluation, KeyedEvaluation, Reason};

/// An HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 200, or 400 / 404 with OFREP's failure shape.
    pub status: u16,
    /// JSON.
    pub body: Vec<u8>,
}

/// OFREP's request body. Other members are ignored, as the protocol may add some.
#[derive(Deserialize)]
struct EvaluationRequest {
    #[serde(default)]
    context: Option<Value>,
}

/// Told each flag and its evaluation (before the audience's view of it), for hosts that count
/// evaluations; called only where a variant was served.
pub type Served<'s> = &'s mut dyn FnMut(&str, &Evaluation<'_>);

/// Who asks, which decides what an answer may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// A server with a read token: every flag, with every detail of its evaluation.
    Server,
    /// A browser with a client token, which anyone can read out of a page: only flags marked
    /// `client_visible` (any other is answered as if it did not exist), and of each only its key,
    /// value, variant, reason and error code, so no answer tells of rules, segments or other
    /// flags.
    Client,
}

impl Audience {
    fn sees(self, engine: &Engine, flag: &str) -> bool {
        self == Self::Server || engine.is_client_visible(flag)
    }

    /// What this audience is shown of an evaluation.
    fn shown(self, evaluation: Evaluation<'_>) -> Evaluation<'_> {
        match self {
            Self::Server => evaluation,
            Self::Client => Evaluation {
                // A failed prerequisite would point at another flag.
                reason: match evaluation.reason {
                    Reason::PrerequisiteFailed => Reason::Default,
                    reason => reason,
                },
                rule_index: None,
                bucket_key_missing: false,
                ..evaluation
            },
        }
    }
}

/// `POST /ofrep/v1/evaluate/flags/{flag}`. `now_millis` is the host's clock, for `before` and
/// `after`.
pub fn single(engine: &Engine, flag: &str, request: &[u8], now_millis: Option<i64>) -> Answer {
    single_counted(engine, flag, request, now_millis, Audience::Server, &mut |_,
                                                                              _: &Evaluation<
        '_,
    >| {})
}

/// `single` for `audience`, telling `served` the variant served, if one was.
pub fn single_counted(
    engine: &Engine,
    flag: &str,
    request: &[u8],
    now_millis: Option<i64>,
    audience: Audience,
    served: Served<'_>,
) -> Answer {
    let context = match context(request, now_millis) {
        Ok(context) => context,
        Err((code, details)) => return failure(400, Some(flag), code, &details),
    };
    let evaluation = if audience.sees(engine, flag) {
        engine.evaluate(flag, &context)
    } else {
        Evaluation::error(ErrorCode::FlagNotFound)
    };
    match evaluation.reason {
        Reason::Error(ErrorCode::FlagNotFound) => failure(
            404,
            Some(flag),
            ErrorCode::FlagNotFound,
            &format!("no flag `{flag}` in environment `{}`", engine.environment()),
        ),
        Reason::Error(code) => failure(400, Some(flag), code, details(code, audience)),
        _ => {
            if evaluation.variant.is_some() {
                served(flag, &evaluation);
            }
            let evaluation = audience.shown(evaluation);
            Answer { status: 200, body: to_json(&KeyedEvaluation { key: flag, evaluation }) }
        }
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every flag, in snapshot order, each a success or a failure.
pub fn bulk(engine: &Engine, request: &[u8], now_millis: Option<i64>) -> Answer {
    bulk_counted(engine, request, now_millis, Audience::Server, &mut |_, _: &Evaluation<'_>| {})
}

/// `bulk` for `audience`, telling `served` each flag's variant, where one was served.
pub fn bulk_counted(
    engine: &Engine,
    request: &[u8],
    now_millis: Option<i64>,
    audience: Audience,
    served: Served<'_>,
) -> Answer {
    match context(request, now_millis) {
        Ok(context) => {
            let bulk = Bulk { engine, context: &context, audience, served: RefCell::new(served) };
            Answer { status: 200, body: to_json(&bulk) }
        }
        Err((code, details)) => failure(400, None, code, &details),
    }
}

impl Answer {
    /// Adds `eventStreams` (OFREP ADR-0008), given as JSON, to a bulk success
    /// (`{"flags":[...]}` becomes `{"flags":[...],"eventStreams":[...]}`), without parsing the
    /// flags again. Any other answer is left as it is.
    pub fn add_event_streams(&mut self, streams_json: &str) {
        if self.status == 200 && self.body.last() == Some(&b'}') {
            self.body.pop();
            self.body.extend_from_slice(b",\"eventStreams\":");
            self.body.extend_from_slice(streams_json.as_bytes());
            self.body.push(b'}');
        }
    }
}

/// OFREP's failure shape, `{key, errorCode, errorDetails}` (no `key` for bulk requests), for
/// hosts' own failures too, e.g. GENERAL "no configuration yet".
pub fn failure(status: u16, key: Option<&str>, code: ErrorCode, details: &str) -> Answer {
    let mut body = serde_json::Map::new();
    if let Some(key) = key {
        body.insert("key".into(), key.into());
    }
    body.insert("errorCode".into(), code.as_str().into());
    body.insert("errorDetails".into(), details.into());
    Answer { status, body: to_json(&body) }
}

/// The request's context, with the host's clock; or OFREP's reason why not.
fn context(request: &[u8], now_millis: Option<i64>) -> Result<Context, (ErrorCode, String)> {
    let request: EvaluationRequest = serde_json::from_slice(request).map_err(|error| {
        (ErrorCode::ParseError, format!("the body is not an OFREP request: {error}"))
    })?;
    let context = match request.context {
        Some(value) => Context::from_value(value).map_err(|error| match error {
            ContextError::Parse(details) => (ErrorCode::ParseError, details),
            ContextError::Invalid(details) => (ErrorCode::InvalidContext, details.to_owned()),
        })?,
        None => Context::new(),
    };
    Ok(match now_millis {
        Some(now) => context.with_now(now),
        None => context,
    })
}

fn details(code: ErrorCode, audience: Audience) -> &'static str {
    match (code, audience) {
        (ErrorCode::TargetingKeyMissing, Audience::Server) => {
            "only a percentage rollout decides this flag, and the context has no targetingKey"
        }
        (ErrorCode::TargetingKeyMissing, Audience::Client) => "the context has no targetingKey",
        _ => "evaluation failed",
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serializing values that are already JSON cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `{"flags": [...]}`, serialized straight from the engine's iterator.
struct Bulk<'e> {
    engine: &'e Engine,
    context: &'e Context,
    audience: Audience,
    served: RefCell<Served<'e>>,
}

impl Serialize for Bulk<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Flags<'b, 'e>(&'b Bulk<'e>);
        impl Serialize for Flags<'_, '_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let Bulk { engine, context, audience, .. } = *self.0;
                let mut served = self.0.served.borrow_mut();
                let evaluations = engine
                    .evaluate_all(context)
                    .filter(|keyed| audience.sees(engine, keyed.key))
                    .inspect(|keyed| {
                        if keyed.evaluation.variant.is_some() {
                            served(keyed.key, &keyed.evaluation);
                        }
                    })
                    .map(|keyed| KeyedEvaluation {
                        key: keyed.key,
                        evaluation: audience.shown(keyed.evaluation),
                    });
                serializer.collect_seq(evaluations)
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("flags", &Flags(self))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn engine() -> Engine {
        let snapshot = json!({"schema": 1, "environment": "production", "version": 3, "flags": [
            {"key": "banner", "type": "string", "variants": {"a": "A", "b": "B"}, "off_variant": "a",
             "fallthrough": {"rollout": {"percent": 50000, "inside": "b", "outside": "a"}}},
            {"key": "dark", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
             "fallthrough": {"variant": "on"}}
        ]});
        Engine::from_json(snapshot.to_string().as_bytes()).unwrap()
    }

    fn answer(answer: Answer) -> (u16, Value) {
        (answer.status, serde_json::from_slice(&answer.body).unwrap())
    }

    #[test]
    fn single_answers_and_failures() {
        let engine = engine();
        let (status, body) = answer(single(&engine, "dark", br#"{"context": {}}"#, None));
        assert_eq!(
            (status, body),
            (200, json!({"key": "dark", "value": true, "variant": "on", "reason": "STATIC"}))
        );
        let cases: [(&str, &[u8], u16, &str); 5] = [
            ("banner", b"{", 400, "PARSE_ERROR"),
            ("banner", br#"{"context": []}"#, 400, "INVALID_CONTEXT"),
            ("banner", br#"{"context": {"targetingKey": 1}}"#, 400, "INVALID_CONTEXT"),
            ("banner", br#"{}"#, 400, "TARGETING_KEY_MISSING"),
            ("nope", br#"{"context": {"targetingKey": "u"}}"#, 404, "FLAG_NOT_FOUND"),
        ];
        for (flag, request, status, code) in cases {
            let (actual, body) = answer(single(&engine, flag, request, None));
            assert_eq!((actual, body["errorCode"].as_str()), (status, Some(code)), "{body}");
            assert_eq!(body["key"], flag);
        }
    }

    #[test]
    fn bulk_lists_every_flag_and_reports_per_flag_failures() {
        let engine = engine();
        let (status, body) = answer(bulk(&engine, br#"{"context": {}}"#, Some(0)));
        assert_eq!(status, 200);
        assert_eq!(body["flags"][0]["errorCode"], "TARGETING_KEY_MISSING");
        assert_eq!(body["flags"][1]["value"], true);
        let mut streamed = bulk(&engine, br#"{"context": {}}"#, Some(0));
        streamed.add_event_streams(r#"[{"type":"sse","url":"https://edge/ofrep/v1/events"}]"#);
        let (_, body) = answer(streamed);
        assert_eq!(body["flags"][1]["value"], true);
        assert_eq!(body["eventStreams"][0]["type"], "sse");
        let mut failed = bulk(&engine, b"[", None);
        let before = failed.clone();
        failed.add_event_streams("[]");
        assert_eq!(failed, before, "a failure carries no streams");
        let (status, body) = answer(bulk(&engine, b"[", None));
        assert_eq!((status, body.get("key")), (400, None));
        assert_eq!(body["errorCode"], "PARSE_ERROR");
    }

    #[test]
    fn clients_see_only_client_visible_flags_and_nothing_of_how_they_were_decided() {
        let snapshot = json!({"schema": 1, "environment": "production", "version": 3,
        "segments": [{"key": "staff", "conditions": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"]}]}],
        "flags": [
            {"key": "secret-gate", "type": "boolean", "variants": {"on": true, "off": false},
             "off_variant": "off", "fallthrough": {"variant": "off"}},
            {"key": "banner", "type": "string", "variants": {"a": "A", "b": "B"}, "off_variant": "a",
             "client_visible": true, "rules": [{"segments": ["staff"], "serve": {"variant": "b"}}],
             "fallthrough": {"variant": "a"}},
            {"key": "promo", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
             "client_visible": true, "prerequisites": [{"flag": "secret-gate", "variant": "on"}],
             "fallthrough": {"variant": "on"}}
        ]});
        let engine = Engine::from_json(snapshot.to_string().as_bytes()).unwrap();
        let staff = br#"{"context": {"targetingKey": "u1", "email": "ann@example.com"}}"#;
        let client = |request| {
            answer(bulk_counted(&engine, request, None, Audience::Client, &mut |_,
                                                                                _: &Evaluation<
                '_,
            >| {}))
        };

        let (_, server) = answer(bulk(&engine, staff, None));
        assert_eq!(server["flags"][1]["ruleIndex"], 0);
        assert_eq!(server["flags"][2]["metadata"]["prerequisiteFailed"], true);
        let (status, body) = client(staff);
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"flags": [
                {"key": "banner", "value": "B", "variant": "b", "reason": "TARGETING_MATCH"},
                {"key": "promo", "value": false, "variant": "off", "reason": "DEFAULT"}
            ]})
        );

        let single = |flag| {
            answer(single_counted(
                &engine,
                flag,
                staff,
                None,
                Audience::Client,
                &mut |_, _: &Evaluation<'_>| {},
            ))
        };
        let (hidden_status, hidden) = single("secret-gate");
        let (missing_status, missing) = single("no-such-flag");
        assert_eq!((hidden_status, missing_status), (404, 404));
        assert_eq!(hidden["errorCode"], "FLAG_NOT_FOUND");
        assert_eq!(
            hidden["errorDetails"].as_str().unwrap().replace("secret-gate", "no-such-flag"),
            missing["errorDetails"]
        );
        assert_eq!(
            single("banner").1,
            json!({"key": "banner", "value": "B", "variant": "b", "reason": "TARGETING_MATCH"})
        );
    }

    #[test]
    fn counted_answers_tell_each_served_evaluation() {
        let engine = engine();
        let counted = |requests: &[(Option<&str>, &[u8])]| {
            let mut served = alloc::vec::Vec::new();
            let mut count = |flag: &str, evaluation: &Evaluation<'_>| {
                let by = if evaluation.by_fallthrough_rollout() { "rollout" } else { "other" };
                served.push(format!("{flag}={} by {by}", evaluation.variant.unwrap()));
            };
            for (flag, request) in requests {
                match flag {
                    Some(flag) => {
                        single_counted(&engine, flag, request, None, Audience::Server, &mut count)
                    }
                    None => bulk_counted(&engine, request, None, Audience::Server, &mut count),
                };
            }
            served
        };
        let anonymous: &[u8] = br#"{"context": {}}"#;
        // The banner needs a targeting key: nothing served, nothing counted.
        assert_eq!(
            counted(&[(Some("dark"), anonymous), (Some("banner"), b"{}"), (None, anonymous)]),
            ["dark=on by other", "dark=on by other"]
        );
        let user: &[u8] = br#"{"context": {"targetingKey": "u"}}"#;
        let served = counted(&[(Some("banner"), user), (None, user)]);
        assert_eq!(served.len(), 3);
        assert!(served[0].ends_with("by rollout") && served[1].ends_with("by rollout"));
        assert_eq!(served[2], "dark=on by other");
    }
}
