//! The wasm-bindgen API for JavaScript hosts:
//!
//! ```js
//! const engine = new Engine(snapshotJson);          // throws on a bad snapshot, saying where
//! engine.evaluate("checkout-v2", {targetingKey: "user-1"}, Date.now());
//! engine.evaluateAll({targetingKey: "user-1"});    // [{key, value, variant, reason, ...}, ...]
//! ```
//!
//! Contexts may be objects or JSON text (a JS string is always read as JSON text); an omitted
//! context is an empty one. Results are the OFREP-shaped objects that [`crate::Evaluation`]'s
//! `Serialize` gives, so native and WebAssembly results compare as JSON. A snapshot error names
//! its JSON path, or for malformed JSON its line and column.

use alloc::string::{String, ToString};

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::{Context, ContextError, Engine, ErrorCode, Evaluation};

/// A compiled snapshot.
#[wasm_bindgen(js_name = Engine)]
pub struct WasmEngine(Engine);

#[wasm_bindgen(js_class = Engine)]
impl WasmEngine {
    /// Compiles a snapshot given as JSON text.
    #[wasm_bindgen(constructor)]
    pub fn new(snapshot: &str) -> Result<WasmEngine, JsError> {
        Engine::from_json(snapshot.as_bytes()).map(Self).map_err(|e| JsError::new(&e.to_string()))
    }

    /// The snapshot's version.
    #[wasm_bindgen(getter)]
    pub fn version(&self) -> f64 {
        self.0.version() as f64
    }

    /// The snapshot's environment.
    #[wasm_bindgen(getter)]
    pub fn environment(&self) -> String {
        self.0.environment().into()
    }

    /// Evaluates one flag; `now` is Unix milliseconds for `before` and `after`.
    pub fn evaluate(&self, key: &str, context: JsValue, now: Option<f64>) -> JsValue {
        match to_context(&context, now) {
            Ok(context) => to_js(&self.0.evaluate(key, &context)),
            Err(code) => to_js(&Evaluation::error(code)),
        }
    }

    /// Evaluates every flag, as an array of results that carry their `key`.
    #[wasm_bindgen(js_name = evaluateAll)]
    pub fn evaluate_all(&self, context: JsValue, now: Option<f64>) -> JsValue {
        match to_context(&context, now) {
            Ok(context) => to_js(&SerializeIter(self.0.evaluate_all(&context))),
            Err(code) => to_js(&Evaluation::error(code)),
        }
    }
}

fn to_context(context: &JsValue, now: Option<f64>) -> Result<Context, ErrorCode> {
    // Only a missing argument means "no context"; `null` is as invalid as the JSON text `null`.
    let json = if context.is_undefined() {
        String::from("{}")
    } else if let Some(text) = context.as_string() {
        text
    } else {
        js_sys::JSON::stringify(context).map_err(|_| ErrorCode::ParseError)?.into()
    };
    let context = Context::from_json(json.as_bytes()).map_err(|e| match e {
        ContextError::Invalid(_) => ErrorCode::InvalidContext,
        _ => ErrorCode::ParseError,
    })?;
    Ok(match now {
        Some(now) => context.with_now(now as i64),
        None => context,
    })
}

fn to_js(value: &impl Serialize) -> JsValue {
    serde_json::to_string(value)
        .ok()
        .and_then(|json| js_sys::JSON::parse(&json).ok())
        .unwrap_or(JsValue::NULL)
}

/// Serializes an iterator as a JSON array without collecting it.
struct SerializeIter<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for SerializeIter<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}
