//! The evaluation context: who is asking, as OpenFeature and OFREP describe it.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cmp::Ordering;

use serde_json::Value;

/// The attribute that holds the unit's key, as OpenFeature names it.
pub const TARGETING_KEY: &str = "targetingKey";

/// Attributes of the unit being evaluated, plus the caller's clock.
///
/// Build it once per request; evaluating against it allocates nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Kept apart: rollouts read it on almost every evaluation.
    targeting_key: Option<Value>,
    /// The other attributes, sorted by [`by_length_then_bytes`] for a binary search that
    /// rarely compares bytes.
    attributes: Vec<(String, Value)>,
    now_millis: Option<i64>,
}

/// Why a JSON document is not an evaluation context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// Not JSON at all: OFREP's PARSE_ERROR.
    #[error("context is not valid JSON: {0}")]
    Parse(String),
    /// JSON, but not an object, or `targetingKey` is not a string: OFREP's INVALID_CONTEXT.
    #[error("invalid context: {0}")]
    Invalid(&'static str),
}

impl Context {
    /// An empty context: no targeting key, no attributes, no clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context whose targeting key is `key`.
    pub fn with_targeting_key(key: impl Into<String>) -> Self {
        Self::new().with(TARGETING_KEY, Value::String(key.into()))
    }

    /// Sets an attribute.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let (name, value) = (name.into(), value.into());
        if name == TARGETING_KEY {
            self.targeting_key = Some(value);
            return self;
        }
        match self.position(&name) {
            Ok(i) => self.attributes[i].1 = value,
            Err(i) => self.attributes.insert(i, (name, value)),
        }
        self
    }

    /// Sets the clock the `before` and `after` operators compare against, in Unix milliseconds.
    pub fn with_now(mut self, now_millis: i64) -> Self {
        self.now_millis = Some(now_millis);
        self
    }

    /// A context from a JSON object such as OFREP's `context` member.
    pub fn from_json(json: &[u8]) -> Result<Self, ContextError> {
        let value: Value =
            serde_json::from_slice(json).map_err(|e| ContextError::Parse(e.to_string()))?;
        Self::from_value(value)
    }

    /// A context from an already parsed JSON value.
    pub fn from_value(value: Value) -> Result<Self, ContextError> {
        let Value::Object(mut object) = value else {
            return Err(ContextError::Invalid("the context must be a JSON object"));
        };
        let targeting_key = object.remove(TARGETING_KEY);
        if targeting_key.as_ref().is_some_and(|key| !key.is_string()) {
            return Err(ContextError::Invalid("targetingKey must be a string"));
        }
        // The object's keys are already unique, so sorting is all that is needed.
        let mut attributes: Vec<(String, Value)> = object.into_iter().collect();
        attributes.sort_unstable_by(|a, b| by_length_then_bytes(&a.0, &b.0));
        Ok(Self { targeting_key, attributes, now_millis: None })
    }

    /// The value of an attribute; `targetingKey` is an attribute like any other.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&Value> {
        if name == TARGETING_KEY {
            return self.targeting_key.as_ref();
        }
        self.position(name).ok().map(|i| &self.attributes[i].1)
    }

    #[inline]
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.attributes.binary_search_by(|(probe, _)| by_length_then_bytes(probe, name))
    }

    /// The unit's key, if it has one.
    #[inline]
    pub fn targeting_key(&self) -> Option<&str> {
        self.targeting_key.as_ref().and_then(Value::as_str)
    }

    /// The caller's clock, if given.
    pub fn now_millis(&self) -> Option<i64> {
        self.now_millis
    }
}

/// Attribute names of different lengths compare without reading their bytes.
#[inline]
fn by_length_then_bytes(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| if crate::text::same(a, b) { Ordering::Equal } else { a.cmp(b) })
}
