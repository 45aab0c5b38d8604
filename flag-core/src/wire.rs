//! The snapshot format, schema 1: the only definition of it.
//!
//! These types mirror the JSON one to one and check only its shape. Meaning (known operators,
//! existing variants and segments, percent ranges, acyclic prerequisites) is checked when
//! [`crate::Engine`] compiles a snapshot, so that every error can name its JSON path.
//! docs/snapshot-format.md is the human description of the same format.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keyset::KeySet;
// utoipa's derives expand to these unqualified.
#[cfg(feature = "openapi")]
#[allow(unused_imports)]
use std::{borrow::ToOwned, boxed::Box, format, string::ToString, vec};

/// The schema version this crate reads and writes.
pub const SCHEMA: u32 = 1;

/// Everything an evaluator needs for one environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Always [`SCHEMA`]; any other value is rejected.
    pub schema: u32,
    /// The environment's name, e.g. `production`.
    pub environment: String,
    /// Grows by one with every change the control plane commits.
    pub version: u64,
    /// Flags, in the order `evaluate_all` reports them.
    #[serde(default)]
    pub flags: Vec<Flag>,
    /// Segments that rules refer to by key.
    #[serde(default)]
    pub segments: Vec<Segment>,
}

/// One feature flag.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// Unique within the snapshot.
    pub key: String,
    /// `boolean`, `string`, `number` or `object`; every variant value must be of this type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Variant name to value.
    #[serde(deserialize_with = "unique_map")]
    pub variants: BTreeMap<String, Value>,
    /// Served while the flag is killed or a prerequisite fails.
    pub off_variant: String,
    /// `false` is the kill switch.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seeds rg1 bucketing; defaults to the flag key. Flags sharing a salt expose the same units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Each named flag must serve the named variant, or this flag serves `off_variant`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
    /// Looked at in order; the first that matches decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What a unit gets when no rule matched.
    pub fallthrough: Serve,
    /// Whether browsers may evaluate it with a client token. Flags not marked so are invisible
    /// to client tokens, as if they did not exist.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub client_visible: bool,
}

/// A flag that must serve a given variant first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Prerequisite {
    /// The other flag's key.
    pub flag: String,
    /// The variant it must serve.
    pub variant: String,
}

/// A targeting rule: every condition holds and, if segments are listed, the unit is in one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// All must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The unit must be a member of at least one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    /// What the rule serves when it matches.
    pub serve: Serve,
}

/// A test of one context attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The context attribute; `targetingKey` is the unit's key. `before` and `after` without an
    /// attribute compare the caller's `now`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// One of the operators in docs/snapshot-format.md.
    pub op: String,
    /// Operands; how many and of which type depends on `op`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Value>,
}

/// A fixed variant, or a rollout that buckets units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Serve {
    /// Everyone gets this variant.
    Variant(String),
    /// Units are bucketed, with rg1 unless the rollout names another algorithm.
    Rollout(Rollout),
}

/// Percentage exposure or weighted variants, bucketed with rg1 or the `algorithm` named.
///
/// Exactly one of `percent` (with `inside` and `outside`) and `weights` is given; under
/// `unleash`, also `percent` with `outside` and `weights` (the units inside are split by them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// The attribute whose value is the unit key; defaults to `targetingKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
    /// Exposure in thousandths of a percent, 0..=100000 (5% is 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Served to units inside the exposure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside: Option<String>,
    /// Served to the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside: Option<String>,
    /// Variants and their weights, in bucket order: summing to 100000 under rg1, to any total
    /// from 1 to 100000 under the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<Weight>>,
    /// Another system's bucketing, so flags imported from it keep their cohorts; rg1 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// `internal`, `alpha`, `beta`, `ga` or free text. Informative only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

/// A bucketing algorithm other than rg1 (docs/snapshot-format.md, "Imported bucketing").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Algorithm {
    /// Unleash's: a flexible rollout's `murmur3("{group_id}:{unit}", 0) % 100 + 1` for
    /// `percent`, its variants' `murmur3("{group_id}:{unit}", 86028157) % total + 1` for
    /// `weights`.
    Unleash {
        /// Unleash's `groupId`, by default the feature's name.
        group_id: String,
        /// The attributes whose first present value is the unit (Unleash's stickiness:
        /// `default` is the user's id, then the session's), replacing `bucket_by`.
        stickiness: Vec<String>,
    },
    /// flagd's `fractional`: `(murmur3(prefix + unit, 0) × total) >> 32`.
    Flagd {
        /// Hashed before the unit: flagd's default `bucketBy` is the flag key followed by the
        /// targeting key.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        prefix: String,
    },
}

/// One variant's share of a weighted rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Weight {
    /// The variant's name.
    pub variant: String,
    /// Its share: thousandths of a percent under rg1, parts of the weights' total otherwise.
    pub weight: u32,
}

/// A named set of units.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Unique within the snapshot.
    pub key: String,
    /// Targeting keys that are members, unless excluded.
    #[serde(default, skip_serializing_if = "KeySet::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub included: KeySet,
    /// Targeting keys that are never members; exclusion wins over everything.
    #[serde(default, skip_serializing_if = "KeySet::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub excluded: KeySet,
    /// If present, a unit matching all of them is a member too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn yes() -> bool {
    true
}

/// A JSON object into a map, rejecting a key given twice instead of keeping the last.
fn unique_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, Value>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeMap<String, Value>;
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("an object of variant names to values")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((name, value)) = map.next_entry::<String, Value>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(alloc::format!(
                        "duplicate variant `{name}`"
                    )));
                }
                out.insert(name, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Visitor)
}
