//! The compiled engine and evaluation. Evaluation never fails and never allocates.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::bucketing::{
    BUCKETS, Murmur3, UNLEASH_VARIANT_SEED, bucket_of_hash, unleash_normalized,
};
use crate::condition::Condition;
use crate::context::Context;
use crate::keyset::KeySet;

/// A compiled snapshot, ready to evaluate. Build it with [`Engine::from_json`].
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) environment: String,
    pub(crate) version: u64,
    /// Flag keys, numbered like `flags`.
    pub(crate) flag_keys: KeySet,
    pub(crate) flags: Vec<Flag>,
    pub(crate) segments: Vec<Segment>,
}

/// The result of evaluating one flag for one context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation<'e> {
    /// The served value; `None` with an error reason, where the caller's default applies.
    pub value: Option<&'e Value>,
    /// The served variant's name.
    pub variant: Option<&'e str>,
    /// Why this value was served.
    pub reason: Reason,
    /// The index of the rule that decided, if a rule did.
    pub rule_index: Option<usize>,
    /// A rollout was passed over because the unit had no key to bucket by.
    pub bucket_key_missing: bool,
}

/// Why a value was served, as OpenFeature and OFREP name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The flag has no rules or prerequisites: everyone gets the fallthrough variant.
    Static,
    /// A rule matched and served a fixed variant.
    TargetingMatch,
    /// A rollout bucketed the unit, in a rule or the fallthrough.
    Split,
    /// The flag is killed: `off_variant` was served before any rule was looked at.
    Disabled,
    /// No rule matched: the fallthrough variant was served.
    Default,
    /// A prerequisite flag did not serve its required variant: `off_variant` was served.
    PrerequisiteFailed,
    /// No value: the caller should use its default.
    Error(ErrorCode),
}

/// OpenFeature's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No flag has that key.
    FlagNotFound,
    /// Only a rollout could decide, and the unit has no key to bucket by.
    TargetingKeyMissing,
    /// The flag's type is not the one asked for.
    TypeMismatch,
    /// The context could not be parsed (reported by hosts, never by the engine itself).
    ParseError,
    /// The context is not a valid context (reported by hosts).
    InvalidContext,
    /// Anything else (reported by hosts).
    General,
}

/// A flag's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagType {
    /// `true` or `false`.
    Boolean,
    /// Any string.
    String,
    /// Any JSON number.
    Number,
    /// A JSON object.
    Object,
}

#[derive(Debug, Clone)]
pub(crate) struct Flag {
    pub(crate) kind: FlagType,
    /// Sorted by name, so `VariantId`s follow the JSON names' order.
    pub(crate) variants: Vec<(Box<str>, Value)>,
    pub(crate) off_variant: VariantId,
    pub(crate) enabled: bool,
    /// `salt + ":"` already hashed, so bucketing only hashes the unit key.
    pub(crate) salt_hash: Murmur3,
    pub(crate) prerequisites: Vec<(FlagId, VariantId)>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) fallthrough: Serve,
    pub(crate) client_visible: bool,
}

pub(crate) type FlagId = usize;
pub(crate) type VariantId = usize;
pub(crate) type SegmentId = usize;

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) conditions: Vec<Condition>,
    pub(crate) segments: Vec<SegmentId>,
    pub(crate) serve: Serve,
}

#[derive(Debug, Clone)]
pub(crate) enum Serve {
    Variant(VariantId),
    Percent { unit: Unit, percent: u32, inside: Inside, outside: VariantId },
    Weights { unit: Unit, split: Split },
}

/// Which attribute names a unit, and how it is hashed onto buckets.
#[derive(Debug, Clone)]
pub(crate) enum Unit {
    /// rg1: the flag's salt, `:` and the attribute's value (the salt is hashed once, in
    /// `Flag::salt_hash`).
    Rg1 { bucket_by: Box<str> },
    /// Unleash: the first attribute present, after the group and `:`.
    Unleash { group: Box<str>, stickiness: Box<[Box<str>]> },
    /// flagd: the prefix, then the attribute's value.
    Flagd { prefix: Box<str>, bucket_by: Box<str> },
}

/// What the units inside a percentage get: a variant, or (Unleash) a split among variants.
#[derive(Debug, Clone)]
pub(crate) enum Inside {
    Variant(VariantId),
    Split(Split),
}

/// Variants over buckets `0..total`: cumulative upper bounds, and the first entry whose bound
/// exceeds the bucket wins.
#[derive(Debug, Clone)]
pub(crate) struct Split {
    pub(crate) total: u32,
    pub(crate) bounds: Vec<(u32, VariantId)>,
}

impl Split {
    fn pick(&self, bucket: u32) -> Option<VariantId> {
        self.bounds.iter().find(|(bound, _)| bucket < *bound).map(|&(_, variant)| variant)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) included: KeySet,
    pub(crate) excluded: KeySet,
    pub(crate) conditions: Vec<Condition>,
}

/// What one step of evaluation decided, before values are looked up.
struct Outcome {
    variant: Option<VariantId>,
    reason: Reason,
    rule_index: Option<usize>,
    bucket_key_missing: bool,
}

impl Engine {
    /// The environment the snapshot is for.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The snapshot's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Flag keys in snapshot order.
    pub fn flag_keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.flag_keys.iter()
    }

    /// The type of a flag, if it exists.
    pub fn flag_type(&self, flag_key: &str) -> Option<FlagType> {
        self.flag_keys.get(flag_key).map(|id| self.flags[id].kind)
    }

    /// Whether the flag exists and is marked `client_visible`.
    pub fn is_client_visible(&self, flag_key: &str) -> bool {
        self.flag_keys.get(flag_key).is_some_and(|id| self.flags[id].client_visible)
    }

    /// Evaluates one flag. Unknown flags give `Reason::Error(ErrorCode::FlagNotFound)`.
    pub fn evaluate(&self, flag_key: &str, context: &Context) -> Evaluation<'_> {
        match self.flag_keys.get(flag_key) {
            Some(id) => self.evaluation(id, self.decide(id, context)),
            None => Evaluation::error(ErrorCode::FlagNotFound),
        }
    }

    /// Evaluates one flag, requiring it to be of type `expected`.
    pub fn evaluate_as(
        &self,
        flag_key: &str,
        context: &Context,
        expected: FlagType,
    ) -> Evaluation<'_> {
        match self.flag_type(flag_key) {
            Some(kind) if kind != expected => Evaluation::error(ErrorCode::TypeMismatch),
            _ => self.evaluate(flag_key, context),
        }
    }

    /// Evaluates every flag, in snapshot order, lazily.
    pub fn evaluate_all<'e>(
        &'e self,
        context: &'e Context,
    ) -> impl ExactSizeIterator<Item = KeyedEvaluation<'e>> + Clone + 'e {
        (0..self.flags.len()).map(move |id| KeyedEvaluation {
            key: self.flag_keys.key(id),
            evaluation: self.evaluation(id, self.decide(id, context)),
        })
    }

    #[inline]
    fn evaluation(&self, id: FlagId, outcome: Outcome) -> Evaluation<'_> {
        let variant = outcome.variant.map(|v| &self.flags[id].variants[v]);
        Evaluation {
            value: variant.map(|(_, value)| value),
            variant: variant.map(|(name, _)| &**name),
            reason: outcome.reason,
            rule_index: outcome.rule_index,
            bucket_key_missing: outcome.bucket_key_missing,
        }
    }

    fn decide(&self, id: FlagId, context: &Context) -> Outcome {
        let flag = &self.flags[id];
        let fixed = |variant, reason| Outcome {
            variant: Some(variant),
            reason,
            rule_index: None,
            bucket_key_missing: false,
        };
        if !flag.enabled {
            return fixed(flag.off_variant, Reason::Disabled);
        }
        // Compilation bounds the prerequisite tree, so this recursion is shallow and finite.
        for &(prerequisite, required) in &flag.prerequisites {
            if self.decide(prerequisite, context).variant != Some(required) {
                return fixed(flag.off_variant, Reason::PrerequisiteFailed);
            }
        }
        let mut bucket_key_missing = false;
        for (index, rule) in flag.rules.iter().enumerate() {
            if !self.rule_matches(rule, context) {
                continue;
            }
            match self.serve(flag, &rule.serve, context) {
                Some(variant) => {
                    let reason = if matches!(rule.serve, Serve::Variant(_)) {
                        Reason::TargetingMatch
                    } else {
                        Reason::Split
                    };
                    return Outcome {
                        variant: Some(variant),
                        reason,
                        rule_index: Some(index),
                        bucket_key_missing,
                    };
                }
                None => bucket_key_missing = true,
            }
        }
        let reason = match flag.fallthrough {
            Serve::Variant(_) if flag.rules.is_empty() && flag.prerequisites.is_empty() => {
                Reason::Static
            }
            Serve::Variant(_) => Reason::Default,
            _ => Reason::Split,
        };
        match self.serve(flag, &flag.fallthrough, context) {
            Some(variant) => {
                Outcome { variant: Some(variant), reason, rule_index: None, bucket_key_missing }
            }
            None => Outcome {
                variant: None,
                reason: Reason::Error(ErrorCode::TargetingKeyMissing),
                rule_index: None,
                bucket_key_missing: true,
            },
        }
    }

    #[inline]
    fn rule_matches(&self, rule: &Rule, context: &Context) -> bool {
        rule.conditions.iter().all(|c| c.holds(context))
            && (rule.segments.is_empty()
                || rule.segments.iter().any(|&s| self.segments[s].contains(context)))
    }

    /// The variant a serve picks; `None` when it must bucket and the unit has no key.
    #[inline]
    fn serve(&self, flag: &Flag, serve: &Serve, context: &Context) -> Option<VariantId> {
        match serve {
            Serve::Variant(variant) => Some(*variant),
            Serve::Percent { unit, percent, inside, outside } => {
                if unit_bucket(flag, unit, context, BUCKETS, Hash::Gate)? >= *percent {
                    return Some(*outside);
                }
                match inside {
                    Inside::Variant(variant) => Some(*variant),
                    Inside::Split(split) => {
                        split.pick(unit_bucket(flag, unit, context, split.total, Hash::Split)?)
                    }
                }
            }
            // The weights sum to `total` > bucket, so some bound always exceeds it.
            Serve::Weights { unit, split } => {
                split.pick(unit_bucket(flag, unit, context, split.total, Hash::Split)?)
            }
        }
    }
}

impl Segment {
    #[inline]
    fn contains(&self, context: &Context) -> bool {
        if let Some(key) = context.targeting_key() {
            if self.excluded.contains(key) {
                return false;
            }
            if self.included.contains(key) {
                return true;
            }
        }
        !self.conditions.is_empty() && self.conditions.iter().all(|c| c.holds(context))
    }
}

/// Which of an algorithm's hashes: the one a percentage compares, or the one that splits units
/// among weighted variants (Unleash's differ by seed; rg1's and flagd's are one).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hash {
    Gate,
    Split,
}

/// The unit's bucket in `0..total` (`BUCKETS` for a percentage), or `None` if it has no usable
/// key: a unit without a key is never bucketed at random.
#[inline]
fn unit_bucket(flag: &Flag, unit: &Unit, context: &Context, total: u32, hash: Hash) -> Option<u32> {
    let mut digits = itoa::Buffer::new();
    match unit {
        Unit::Rg1 { bucket_by } => {
            let mut hasher = flag.salt_hash;
            hasher.write(unit_key(context, bucket_by, &mut digits)?.as_bytes());
            Some(bucket_of_hash(hasher.finish()))
        }
        Unit::Unleash { group, stickiness } => {
            let present = |name: &str| unit_key(context, name, &mut itoa::Buffer::new()).is_some();
            let attribute = stickiness.iter().map(AsRef::as_ref).find(|name| present(name))?;
            let key = unit_key(context, attribute, &mut digits)?;
            Some(match hash {
                // At most `percent`: 25% takes hashes 1 to 25, buckets 999 to 24999.
                Hash::Gate => unleash_normalized(group, key, 100, 0) * 1000 - 1,
                Hash::Split => unleash_normalized(group, key, total, UNLEASH_VARIANT_SEED) - 1,
            })
        }
        Unit::Flagd { prefix, bucket_by } => {
            let mut hasher = Murmur3::new(0);
            hasher.write(prefix.as_bytes());
            hasher.write(unit_key(context, bucket_by, &mut digits)?.as_bytes());
            Some(((u64::from(hasher.finish()) * u64::from(total)) >> 32) as u32)
        }
    }
}

/// The unit key in attribute `name`: a string, or an integer's digits; "" is none.
#[inline]
fn unit_key<'a>(context: &'a Context, name: &str, digits: &'a mut itoa::Buffer) -> Option<&'a str> {
    let key = match context.get(name)? {
        Value::String(s) => s.as_str(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => digits.format(u),
            (None, Some(i)) => digits.format(i),
            _ => return None,
        },
        _ => return None,
    };
    (!key.is_empty()).then_some(key)
}

impl Evaluation<'_> {
    /// An evaluation that served nothing.
    pub fn error(code: ErrorCode) -> Self {
        Self {
            value: None,
            variant: None,
            reason: Reason::Error(code),
            rule_index: None,
            bucket_key_missing: false,
        }
    }

    /// Whether the flag's own percentage rollout (its fallthrough) decided, not a rule: what a
    /// sample-ratio check compares with the rollout's configured split.
    pub fn by_fallthrough_rollout(&self) -> bool {
        self.reason == Reason::Split && self.rule_index.is_none()
    }
}

impl Reason {
    /// The OpenFeature name, e.g. `TARGETING_MATCH`; every error is `ERROR`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Static => "STATIC",
            Self::TargetingMatch => "TARGETING_MATCH",
            Self::Split => "SPLIT",
            Self::Disabled => "DISABLED",
            Self::Default => "DEFAULT",
            Self::PrerequisiteFailed => "PREREQUISITE_FAILED",
            Self::Error(_) => "ERROR",
        }
    }

    /// The name OpenFeature clients know: one of its standard reasons. A failed prerequisite
    /// is `DEFAULT` there (its `off_variant` is a pre-configured fallback), because some SDKs
    /// reject reasons outside the standard list; serialized evaluations say
    /// `"metadata": {"prerequisiteFailed": true}` beside it.
    pub fn openfeature_name(&self) -> &'static str {
        match self {
            Self::PrerequisiteFailed => "DEFAULT",
            other => other.as_str(),
        }
    }

    /// The error code, for `Reason::Error`.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Error(code) => Some(*code),
            _ => None,
        }
    }
}

impl ErrorCode {
    /// The OpenFeature name, e.g. `FLAG_NOT_FOUND`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::FlagNotFound => "FLAG_NOT_FOUND",
            Self::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            Self::TypeMismatch => "TYPE_MISMATCH",
            Self::ParseError => "PARSE_ERROR",
            Self::InvalidContext => "INVALID_CONTEXT",
            Self::General => "GENERAL",
        }
    }
}

impl FlagType {
    /// Parses the snapshot's `type` field.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "boolean" => Some(Self::Boolean),
            "string" => Some(Self::String),
            "number" => Some(Self::Number),
            "object" => Some(Self::Object),
            _ => None,
        }
    }

    /// Whether `value` is of this type.
    pub fn admits(&self, value: &Value) -> bool {
        match self {
            Self::Boolean => value.is_boolean(),
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Object => value.is_object(),
        }
    }
}

/// Serializes as OFREP's evaluation fields: `value`, `variant`, `reason` (OpenFeature's name),
/// `errorCode`, plus `ruleIndex`, `bucketKeyMissing` and `metadata` when they apply.
impl Serialize for Evaluation<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.serialize_fields(&mut map)?;
        map.end()
    }
}

#[derive(serde::Serialize)]
struct PrerequisiteFailed {
    #[serde(rename = "prerequisiteFailed")]
    prerequisite_failed: bool,
}

/// An evaluation with its flag key, serialized as `{"key": ..., ...the evaluation's fields}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyedEvaluation<'e> {
    /// The flag's key.
    pub key: &'e str,
    /// Its evaluation.
    pub evaluation: Evaluation<'e>,
}

impl Serialize for KeyedEvaluation<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("key", self.key)?;
        self.evaluation.serialize_fields(&mut map)?;
        map.end()
    }
}

impl Evaluation<'_> {
    fn serialize_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if let Some(value) = self.value {
            map.serialize_entry("value", value)?;
        }
        if let Some(variant) = self.variant {
            map.serialize_entry("variant", variant)?;
        }
        map.serialize_entry("reason", self.reason.openfeature_name())?;
        if let Some(code) = self.reason.error_code() {
            map.serialize_entry("errorCode", code.as_str())?;
        }
        if let Some(index) = self.rule_index {
            map.serialize_entry("ruleIndex", &index)?;
        }
        if self.bucket_key_missing {
            map.serialize_entry("bucketKeyMissing", &true)?;
        }
        if self.reason == Reason::PrerequisiteFailed {
            map.serialize_entry("metadata", &PrerequisiteFailed { prerequisite_failed: true })?;
        }
        Ok(())
    }
}
