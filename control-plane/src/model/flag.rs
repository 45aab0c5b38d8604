//! Flags, their state in each environment, segments, environments, and the snapshots made of
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use flag_core::Engine;
use flag_core::wire::{self, Rollout, Serve};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::percent::Percent;
use crate::model::time::Timestamp;
use crate::model::{Refusal, check_key, check_label};

/// What a flag is, the same in every environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagDefinition {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub variants: BTreeMap<String, Value>,
    pub off_variant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// What the flag is for, in a sentence or two.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Who answers for it: a person or a team.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Labels to find it by, e.g. `checkout` or `experiment`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Whether browsers may evaluate it with a client token; other flags are invisible to them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_visible: bool,
}

/// The longest description, and the most tags a flag may have.
pub const MAX_DESCRIPTION: usize = 2_000;
pub const MAX_TAGS: usize = 20;

impl FlagDefinition {
    /// Refuses metadata that would not display or search well: control characters, an
    /// overlong description, a tag or owner that is not a label.
    pub fn check_metadata(&self) -> Result<(), Refusal> {
        if self.description.chars().count() > MAX_DESCRIPTION {
            return Err(Refusal::Unprocessable(format!(
                "`description`: at most {MAX_DESCRIPTION} characters"
            )));
        }
        if self.description.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Refusal::Unprocessable(
                "`description`: no control characters but line breaks".into(),
            ));
        }
        if !self.owner.is_empty() {
            check_label("owner", &self.owner)?;
        }
        if self.tags.len() > MAX_TAGS {
            return Err(Refusal::Unprocessable(format!("`tags`: at most {MAX_TAGS}")));
        }
        for (index, tag) in self.tags.iter().enumerate() {
            // Key-like, so a tag fits a URL's query and a command line as it is.
            check_key("tag", tag)
                .map_err(|refusal| Refusal::Unprocessable(format!("`tags[{index}]`: {refusal}")))?;
        }
        Ok(())
    }

    /// For a flag of two variants, the one that is not `off_variant`: what a rollout exposes
    /// unless told otherwise.
    pub fn sole_other_variant(&self) -> Option<String> {
        let mut others = self.variants.keys().filter(|v| **v != self.off_variant);
        match (others.next(), others.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        }
    }
}

/// A live flag's definition as stored, with its revision (its ETag).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFlag {
    pub definition: FlagDefinition,
    pub revision: u64,
    pub created_at: Timestamp,
    /// Its last change: to the definition, or to its state in any environment.
    pub updated_at: Timestamp,
}

/// How a flag behaves in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagState {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<wire::Prerequisite>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<wire::Rule>,
    pub fallthrough: wire::Serve,
}

/// A flag as the snapshot carries it: its definition and its state in one environment.
pub fn wire_flag(definition: FlagDefinition, state: FlagState) -> wire::Flag {
    wire::Flag {
        key: definition.key,
        kind: definition.kind,
        variants: definition.variants,
        off_variant: definition.off_variant,
        enabled: state.enabled,
        salt: definition.salt,
        prerequisites: state.prerequisites,
        rules: state.rules,
        fallthrough: state.fallthrough,
        client_visible: definition.client_visible,
    }
}

impl FlagState {
    /// A new flag's state: enabled, no rules, `off_variant` for everyone.
    pub fn initial(definition: &FlagDefinition) -> Self {
        Self {
            enabled: true,
            prerequisites: Vec::new(),
            rules: Vec::new(),
            fallthrough: wire::Serve::Variant(definition.off_variant.clone()),
        }
    }

    /// Refuses stage labels the snapshot should not carry: empty, long, or with control
    /// characters.
    pub fn check_labels(&self) -> Result<(), Refusal> {
        let serves = self.rules.iter().map(|rule| &rule.serve).chain([&self.fallthrough]);
        for (index, serve) in serves.enumerate() {
            if let Serve::Rollout(Rollout { stage: Some(stage), .. }) = serve {
                let field = if index < self.rules.len() {
                    format!("rules[{index}].serve.rollout.stage")
                } else {
                    "fallthrough.rollout.stage".to_owned()
                };
                check_label(&field, stage)?;
            }
        }
        Ok(())
    }

    /// Drops the fallthrough rollout's stage label.
    pub fn clear_stage_label(&mut self) {
        if let Serve::Rollout(rollout) = &mut self.fallthrough {
            rollout.stage = None;
        }
    }

    /// Makes the fallthrough a percent rollout. The exposed variant is `variant`, else the
    /// existing rollout's, else, for a flag of two variants, the one that is not `off_variant`.
    /// The stage label, the bucketing attribute and the variant everyone else gets stay unless
    /// given.
    pub fn roll_out(
        &mut self,
        definition: &FlagDefinition,
        percent: Percent,
        stage: Option<String>,
        variant: Option<String>,
    ) -> Result<(), Refusal> {
        let existing = match &self.fallthrough {
            Serve::Rollout(rollout) if rollout.percent.is_some() => Some(rollout.clone()),
            _ => None,
        };
        // Who is bucketed, and how, stays: an imported flag keeps its old system's cohorts.
        let (bucket_by, algorithm) = match &self.fallthrough {
            Serve::Rollout(rollout) => (rollout.bucket_by.clone(), rollout.algorithm.clone()),
            Serve::Variant(_) => (None, None),
        };
        let inside = variant
            .or_else(|| existing.as_ref().and_then(|r| r.inside.clone()))
            .or_else(|| definition.sole_other_variant())
            .ok_or_else(|| Refusal::Unprocessable("name the `variant` to roll out".into()))?;
        let outside = existing
            .as_ref()
            .and_then(|r| r.outside.clone())
            .unwrap_or_else(|| definition.off_variant.clone());
        self.fallthrough = Serve::Rollout(Rollout {
            bucket_by,
            percent: Some(percent.thousandths()),
            inside: Some(inside),
            outside: Some(outside),
            weights: None,
            algorithm,
            stage: stage.or_else(|| existing.and_then(|r| r.stage)),
        });
        self.check_labels()
    }
}

/// A flag's definition and its state in each environment. The definition's fields are spelled
/// out rather than flattened, so the API description can say the record has both.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FlagRecord {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub variants: BTreeMap<String, Value>,
    pub off_variant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_visible: bool,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    /// Its last change: to the definition, or to its state in any environment.
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
    /// Grows with every change to the flag; served as its ETag.
    #[serde(skip)]
    pub revision: u64,
    pub environments: BTreeMap<String, FlagState>,
}

impl FlagRecord {
    pub fn new(flag: StoredFlag, environments: BTreeMap<String, FlagState>) -> Self {
        let StoredFlag { definition, revision, created_at, updated_at } = flag;
        let FlagDefinition {
            key,
            kind,
            variants,
            off_variant,
            salt,
            description,
            owner,
            tags,
            client_visible,
        } = definition;
        Self {
            key,
            kind,
            variants,
            off_variant,
            salt,
            description,
            owner,
            tags,
            client_visible,
            created_at,
            updated_at,
            revision,
            environments,
        }
    }

    /// Its state's stage label in `environment`, if its fallthrough is a labelled rollout.
    pub fn stage(&self, environment: &str) -> Option<&str> {
        match &self.environments.get(environment)?.fallthrough {
            wire::Serve::Rollout(rollout) => rollout.stage.as_deref(),
            wire::Serve::Variant(_) => None,
        }
    }
}

/// A segment and its revision, served as its ETag.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SegmentRecord {
    #[serde(flatten)]
    pub segment: wire::Segment,
    #[serde(skip)]
    pub revision: u64,
}

/// An environment, its current snapshot version, and the origins whose pages may call it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Environment {
    pub name: String,
    pub version: u64,
    /// Origins (`https://app.example.com`) whose pages may evaluate its client-visible flags
    /// with a client token, at its edges and here (CORS).
    pub allowed_origins: Vec<String>,
}

/// Environments every installation starts with.
pub const DEFAULT_ENVIRONMENTS: [&str; 2] = ["staging", "production"];

/// A snapshot as served: flag-core's wire format, already serialized, and the engine compiled
/// from it.
#[derive(Debug, Clone)]
pub struct Published {
    pub environment: String,
    pub version: u64,
    pub json: Bytes,
    pub engine: Arc<Engine>,
}

/// Two publications are the same if they carry the same document.
impl PartialEq for Published {
    fn eq(&self, other: &Self) -> bool {
        (&self.environment, self.version, &self.json)
            == (&other.environment, other.version, &other.json)
    }
}
