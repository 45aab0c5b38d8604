//! The evaluation context: who is asking, as OpenFeature and OFREP describe it.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde_json::Value;

use crate::text::same;

/// Contexts with up to this many attributes are searched linearly.
const LINEAR_SEARCH_MAX: usize = 16;

/// The attribute that holds the unit's key, as OpenFeature names it.
pub const TARGETING_KEY: &str = "targetingKey";

/// Attributes of the unit being evaluated, plus the caller's clock.
///
/// Build it once per request; evaluating against it allocates nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Kept apart: rollouts read it on almost every evaluation.
    targeting_key: Option<Value>,
    /// The other attributes, sorted by name.
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
        let Value::Object(object) = value else {
            return Err(ContextError::Invalid("the context must be a JSON object"));
        };
        let mut targeting_key = None;
        // serde_json's map iterates in name order, so the attributes arrive sorted.
        let mut attributes = Vec::with_capacity(object.len());
        for (name, value) in object {
            if name == TARGETING_KEY {
                if !value.is_string() {
                    return Err(ContextError::Invalid("targetingKey must be a string"));
                }
                targeting_key = Some(value);
            } else {
                attributes.push((name, value));
            }
        }
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
        // Typical contexts are small: comparing lengths first skips most names without
        // reading them. Large ones get a binary search, so no context makes lookups slow.
        if self.attributes.len() <= LINEAR_SEARCH_MAX
            && let Some(i) = self.attributes.iter().position(|(probe, _)| same(probe, name))
        {
            return Ok(i);
        }
        self.attributes.binary_search_by(|(probe, _)| probe.as_str().cmp(name))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builder_and_json_agree() {
        let built = Context::with_targeting_key("u").with("b", 2).with("a", "x").with("b", 3);
        let parsed = Context::from_json(br#"{"b": 3, "targetingKey": "u", "a": "x"}"#).unwrap();
        assert_eq!(built, parsed);
        assert_eq!(built.get("b"), Some(&json!(3)), "a repeated attribute replaces the first");
        assert_eq!(built.get(TARGETING_KEY), Some(&json!("u")));
        assert_eq!(built.targeting_key(), Some("u"));
        assert_eq!(built.get("c"), None);
    }

    #[test]
    fn large_contexts_are_searched_too() {
        let context = (0..100).fold(Context::new(), |c, i| c.with(format!("attr-{i}"), i));
        for i in 0..100 {
            assert_eq!(context.get(&format!("attr-{i}")), Some(&json!(i)));
        }
        assert_eq!(context.get("attr-100"), None);
        let json = serde_json::to_vec(
            &(0..100).map(|i| (format!("attr-{i}"), json!(i))).collect::<serde_json::Map<_, _>>(),
        );
        assert_eq!(Context::from_json(&json.unwrap()).unwrap(), context);
    }

    #[test]
    fn rejects_what_is_not_a_context() {
        assert!(matches!(Context::from_json(b"{"), Err(ContextError::Parse(_))));
        assert!(matches!(Context::from_json(b"[]"), Err(ContextError::Invalid(_))));
        assert!(matches!(Context::from_json(b"null"), Err(ContextError::Invalid(_))));
        assert!(matches!(
            Context::from_json(br#"{"targetingKey": 1}"#),
            Err(ContextError::Invalid(_))
        ));
        assert_eq!(
            Context::from_json(br#"{"targetingKey": null}"#).unwrap_err(),
            ContextError::Invalid("targetingKey must be a string")
        );
    }
}
