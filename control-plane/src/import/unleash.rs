//! Unleash features as Rollgate flags, bucket for bucket: flexible rollouts and variants keep
//! Unleash's hashes (the snapshot's `unleash` algorithm), so every unit is served what Unleash
//! served it. Reads both Unleash's export (`/api/admin/features-batch/export`: `features`,
//! `featureStrategies`, `featureEnvironments`, `segments`, `dependencies`) and what it serves
//! SDKs (`/api/client/features`: strategies inline, segments with their constraints).
//!
//! What Unleash evaluates, as its engine (yggdrasil) does: a disabled feature is off; otherwise
//! the first strategy that holds enables it (no strategy: everyone), and its variants, or else
//! the feature's, pick the variant. Each strategy becomes a rule in order; the fallthrough is
//! off. A feature that cannot be carried exactly is skipped, with the reason.

use std::collections::{BTreeMap, HashMap};

use flag_core::wire::{Algorithm, Condition, Prerequisite, Rollout, Rule, Serve, Weight};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::import::{
    Alternatives, Conversion, ImportedFlag, Skipped, all_of, membership, plain_number,
};
use crate::model::check_key;
use crate::model::flag::{FlagDefinition, FlagState};

/// The most rules one strategy may expand to (a `NOT_IN` is two: the attribute missing, or not
/// among the values).
const MAX_RULES_PER_STRATEGY: usize = 16;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    features: Vec<Feature>,
    feature_strategies: Option<Vec<Strategy>>,
    #[serde(default)]
    feature_environments: Vec<FeatureEnvironment>,
    #[serde(default)]
    segments: Vec<Segment>,
    #[serde(default)]
    dependencies: Vec<ExportDependency>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Feature {
    name: String,
    enabled: Option<bool>,
    #[serde(default)]
    description: Option<String>,
    strategies: Option<Vec<Strategy>>,
    variants: Option<Vec<Variant>>,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Strategy {
    /// The feature's name, in an export.
    feature_name: Option<String>,
    name: String,
    #[serde(default)]
    parameters: HashMap<String, Value>,
    #[serde(default)]
    constraints: Vec<Constraint>,
    #[serde(default)]
    variants: Vec<Variant>,
    #[serde(default)]
    segments: Vec<i64>,
    sort_order: Option<i64>,
    #[serde(default)]
    disabled: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Constraint {
    context_name: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
    value: Option<String>,
    #[serde(default)]
    inverted: bool,
    #[serde(default)]
    case_insensitive: bool,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Variant {
    name: String,
    weight: u32,
    stickiness: Option<String>,
    payload: Option<Payload>,
    #[serde(default)]
    overrides: Vec<Value>,
}

#[derive(Deserialize, Clone)]
struct Payload {
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeatureEnvironment {
    feature_name: String,
    environment: Option<String>,
    enabled: bool,
    #[serde(default)]
    variants: Vec<Variant>,
}

#[derive(Deserialize)]
struct Segment {
    id: i64,
    name: Option<String>,
    /// Absent in Unleash's export, which names segments only.
    constraints: Option<Vec<Constraint>>,
}

/// A dependency as `/api/client/features` writes it, on the dependent feature.
#[derive(Deserialize, Clone)]
struct Dependency {
    feature: String,
    enabled: Option<bool>,
    #[serde(default)]
    variants: Vec<String>,
}

/// Dependencies as the export writes them: `feature` depends on each of `dependencies`.
#[derive(Deserialize)]
struct ExportDependency {
    feature: String,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

/// Converts an Unleash file. `source_environment` picks the environment of an export that
/// holds several.
pub fn convert(json: &[u8], source_environment: Option<&str>) -> Result<Conversion, String> {
    let file: File = serde_json::from_slice(json)
        .map_err(|e| format!("not an Unleash export or client features document: {e}"))?;
    let segments: HashMap<i64, &Segment> = file.segments.iter().map(|s| (s.id, s)).collect();
    let mut conversion = Conversion::default();
    let features: Vec<Result<Source<'_>, String>> = file
        .features
        .iter()
        .map(|feature| Source::of(feature, &file, source_environment))
        .collect();
    let parents: HashMap<&str, &Source<'_>> = features
        .iter()
        .filter_map(|source| source.as_ref().ok())
        .map(|source| (source.name, source))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (feature, source) in file.features.iter().zip(&features) {
        let converted = if seen.insert(feature.name.as_str()) {
            source.clone().and_then(|source| flag(&source, &segments, &parents))
        } else {
            Err("a second feature of the same name".into())
        };
        match converted {
            Ok(flag) => conversion.flags.push(flag),
            Err(reason) => conversion.skipped.push(Skipped { key: feature.name.clone(), reason }),
        }
    }
    conversion.settle();
    Ok(conversion)
}

/// One feature as Unleash would evaluate it in the chosen environment.
#[derive(Clone)]
struct Source<'f> {
    name: &'f str,
    description: String,
    enabled: bool,
    strategies: Vec<Strategy>,
    variants: Vec<Variant>,
    dependencies: Vec<Dependency>,
}

impl<'f> Source<'f> {
    fn of(feature: &'f Feature, file: &'f File, environment: Option<&str>) -> Result<Self, String> {
        let description = feature.description.clone().unwrap_or_default();
        let Some(exported) = &file.feature_strategies else {
            // `/api/client/features`: everything is on the feature.
            return Ok(Self {
                name: &feature.name,
                description,
                enabled: feature.enabled.unwrap_or(false),
                strategies: feature.strategies.clone().unwrap_or_default(),
                variants: feature.variants.clone().unwrap_or_default(),
                dependencies: feature
                    .dependencies
                    .iter()
                    .map(|d| Dependency {
                        feature: d.feature.clone(),
                        enabled: d.enabled,
                        variants: d.variants.clone(),
                    })
                    .collect(),
            });
        };
        let environments: Vec<&FeatureEnvironment> = file
            .feature_environments
            .iter()
            .filter(|e| e.feature_name == feature.name)
            .filter(|e| environment.is_none_or(|wanted| e.environment.as_deref() == Some(wanted)))
            .collect();
        let state = match environments.as_slice() {
            [one] => one,
            [] => return Err("the export has no environment state for it".into()),
            _ => {
                return Err(
                    "the export holds several environments: pick one with --source-environment"
                        .into(),
                );
            }
        };
        let mut strategies: Vec<Strategy> = exported
            .iter()
            .filter(|s| s.feature_name.as_deref() == Some(feature.name.as_str()))
            .cloned()
            .collect();
        strategies.sort_by_key(|s| s.sort_order.unwrap_or(0));
        let dependencies = file
            .dependencies
            .iter()
            .filter(|d| d.feature == feature.name)
            .flat_map(|d| &d.dependencies)
            .map(|d| Dependency {
                feature: d.feature.clone(),
                enabled: d.enabled,
                variants: d.variants.clone(),
            })
            .collect();
        Ok(Self {
            name: &feature.name,
            description,
            enabled: state.enabled,
            strategies,
            variants: state.variants.clone(),
            dependencies,
        })
    }

    fn has_variants(&self) -> bool {
        !self.variants.is_empty() || self.strategies.iter().any(|s| !s.variants.is_empty())
    }
}

/// The on and off variants: `on`/`off` for a feature without variants, otherwise its variants
/// (valued by their payloads, or their names) and `disabled`.
const ON: &str = "on";
const OFF: &str = "off";
const DISABLED: &str = "disabled";

fn flag(
    source: &Source<'_>,
    segments: &HashMap<i64, &Segment>,
    parents: &HashMap<&str, &Source<'_>>,
) -> Result<ImportedFlag, String> {
    check_key("flag", source.name).map_err(|e| format!("not a Rollgate flag key: {e}"))?;
    let mut notes = Vec::new();
    let with_variants = source.has_variants();
    let (kind, off) = if with_variants { ("string", DISABLED) } else { ("boolean", OFF) };
    let mut variants = BTreeMap::new();
    if with_variants {
        variants.insert(DISABLED.to_owned(), json!(DISABLED));
        let all = source.variants.iter().chain(source.strategies.iter().flat_map(|s| &s.variants));
        for variant in all {
            if !variant.overrides.is_empty() {
                return Err(format!(
                    "variant `{}` has overrides, which are not imported",
                    variant.name
                ));
            }
            let value = variant.payload.as_ref().map_or(&variant.name, |p| &p.value);
            match variants.get(&variant.name) {
                Some(existing) if existing != &json!(value) => {
                    return Err(format!("variant `{}` has two different payloads", variant.name));
                }
                _ => {
                    variants.insert(variant.name.clone(), json!(value));
                }
            }
        }
    } else {
        variants.insert(ON.to_owned(), json!(true));
        variants.insert(OFF.to_owned(), json!(false));
    }

    let strategies: Vec<&Strategy> =
        source.strategies.iter().filter(|s| s.disabled != Some(true)).collect();
    let mut rules = Vec::new();
    let mut fallthrough = Serve::Variant(off.to_owned());
    for (index, strategy) in strategies.iter().enumerate() {
        let last = index + 1 == strategies.len();
        if strategy.name == "flexibleRollout" && strategy.parameter("rollout").is_none() {
            // Unleash's engine takes a flexible rollout without a percentage as off.
            notes.push(format!(
                "strategy {} has no rollout percentage: off, as in Unleash",
                index + 1
            ));
            continue;
        }
        let serve = serve(source, strategy, last)?;
        if random_for_anonymous(source, strategy) {
            notes.push(format!(
                "strategy {}: a unit with neither a user nor a session id is decided at random in Unleash; here it gets `{off}` (or, where the flag's own rollout decides, an error: the app's default)",
                index + 1
            ));
        }
        // The last strategy without constraints is the flag's own rollout, which rollout plans
        // and `rollgate rollout` then move.
        if last
            && strategy.constraints.is_empty()
            && strategy.segments.is_empty()
            && strategy.name != "userWithId"
        {
            fallthrough = serve;
            continue;
        }
        let mut constraints = strategy.constraints.clone();
        if strategy.name == "userWithId" {
            let ids = strategy.parameter("userIds").unwrap_or_default();
            let values =
                ids.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned);
            constraints.insert(
                0,
                Constraint {
                    context_name: "userId".into(),
                    operator: "IN".into(),
                    values: values.collect(),
                    value: None,
                    inverted: false,
                    case_insensitive: false,
                },
            );
        }
        for id in &strategy.segments {
            let segment =
                segments.get(id).ok_or_else(|| format!("segment {id} is not in the file"))?;
            let Some(more) = &segment.constraints else {
                return Err(format!(
                    "segment `{}`'s constraints are not in an export: import from /api/client/features instead",
                    segment.name.as_deref().unwrap_or("?")
                ));
            };
            constraints.extend(more.iter().cloned());
        }
        rules.extend(expand(&constraints, serve)?);
    }
    if strategies.is_empty() {
        // No strategy: Unleash enables the feature for everyone.
        fallthrough = serve(source, &Strategy::default_for(), true)?;
    }

    let mut prerequisites = Vec::new();
    for dependency in &source.dependencies {
        let name = &dependency.feature;
        let parent = parents
            .get(name.as_str())
            .ok_or_else(|| format!("it depends on `{name}`, which is not in the file"))?;
        if !parent.dependencies.is_empty() {
            return Err(format!(
                "it depends on `{name}`, which has dependencies of its own: Unleash's engine then evaluates it as off"
            ));
        }
        if parent
            .strategies
            .iter()
            .any(|s| s.name == "flexibleRollout" && s.parameter("groupId").is_none())
        {
            return Err(format!(
                "it depends on `{name}`, whose flexible rollout has no group id: Unleash's engine then hashes it under this feature's name"
            ));
        }
        let parent_has_variants = parent.has_variants();
        let variant = match (dependency.enabled.unwrap_or(true), dependency.variants.as_slice()) {
            (false, _) if !parent_has_variants => OFF.to_owned(),
            (true, _) if !parent_has_variants => ON.to_owned(),
            (true, [one]) => one.clone(),
            _ => {
                return Err(format!(
                    "it depends on `{name}` being enabled or not, or on several of its variants, which for a feature with variants one prerequisite cannot say"
                ));
            }
        };
        prerequisites.push(Prerequisite { flag: name.clone(), variant });
    }

    let definition = FlagDefinition {
        key: source.name.to_owned(),
        kind: kind.to_owned(),
        variants,
        off_variant: off.to_owned(),
        salt: None,
        description: source.description.chars().take(2000).collect(),
        owner: String::new(),
        tags: vec!["unleash".into()],
        client_visible: false,
    };
    let state = FlagState { enabled: source.enabled, prerequisites, rules, fallthrough };
    Ok(ImportedFlag { definition, state, notes })
}

impl Strategy {
    fn default_for() -> Self {
        Self {
            feature_name: None,
            name: "default".into(),
            parameters: HashMap::new(),
            constraints: Vec::new(),
            variants: Vec::new(),
            segments: Vec::new(),
            sort_order: None,
            disabled: None,
        }
    }

    fn parameter(&self, name: &str) -> Option<String> {
        match self.parameters.get(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }
}

/// Whether Unleash would decide at random for a unit with neither a user nor a session id: a
/// `default` stickiness on a rollout below 100% or on the variants that split it.
fn random_for_anonymous(source: &Source<'_>, strategy: &Strategy) -> bool {
    let default = |stickiness: Option<String>| stickiness.as_deref().is_none_or(|s| s == "default");
    let gate = strategy.name == "flexibleRollout"
        && strategy.parameter("rollout").as_deref() != Some("100")
        && default(strategy.parameter("stickiness"));
    let split = if !strategy.variants.is_empty() {
        default(strategy.parameter("stickiness"))
    } else {
        source.variants.first().is_some_and(|v| default(v.stickiness.clone()))
    };
    gate || split
}

/// Unleash's stickiness as context attributes: its user id is OpenFeature's targeting key.
fn stickiness(name: Option<&str>) -> Result<Vec<String>, String> {
    Ok(match name.unwrap_or("default") {
        "default" => vec![flag_core::TARGETING_KEY.into(), "sessionId".into()],
        "userId" => vec![flag_core::TARGETING_KEY.into()],
        "random" => {
            return Err("its stickiness is `random`, which no importer can reproduce".into());
        }
        other => vec![other.to_owned()],
    })
}

/// What a strategy serves the units it enables: `on`, or a variant by Unleash's variant hash.
fn serve(source: &Source<'_>, strategy: &Strategy, last: bool) -> Result<Serve, String> {
    let (on, off) = if source.has_variants() { (None, DISABLED) } else { (Some(ON), OFF) };
    let group = strategy.parameter("groupId").unwrap_or_else(|| source.name.to_owned());
    let strategy_stickiness = strategy.parameter("stickiness");
    // The strategy's variants hash with its group and stickiness; the feature's with the
    // feature's name and the first variant's stickiness.
    let split = if !strategy.variants.is_empty() {
        Some((group.clone(), strategy_stickiness.clone(), &strategy.variants))
    } else if !source.variants.is_empty() {
        let stickiness = source.variants[0].stickiness.clone();
        Some((source.name.to_owned(), stickiness, &source.variants))
    } else {
        None
    };
    let weights = |variants: &[Variant]| -> Result<Vec<Weight>, String> {
        if variants.iter().map(|v| u64::from(v.weight)).sum::<u64>() == 0 {
            return Err("its variants' weights sum to 0".into());
        }
        Ok(variants.iter().map(|v| Weight { variant: v.name.clone(), weight: v.weight }).collect())
    };
    let unleash =
        |group: String, stickiness: Vec<String>| Algorithm::Unleash { group_id: group, stickiness };
    match strategy.name.as_str() {
        "default" | "userWithId" => Ok(match (&split, on) {
            (None, Some(on)) => Serve::Variant(on.to_owned()),
            (Some((group, split_stickiness, variants)), _) => Serve::Rollout(Rollout {
                weights: Some(weights(variants)?),
                algorithm: Some(unleash(group.clone(), stickiness(split_stickiness.as_deref())?)),
                ..Rollout::default()
            }),
            // Enabled without a variant to pick: Unleash's variant is `disabled` too.
            (None, None) => Serve::Variant(DISABLED.to_owned()),
        }),
        "flexibleRollout" => {
            let text = strategy.parameter("rollout").unwrap_or_default();
            let percent: u32 = text.parse().ok().filter(|p| *p <= 100).ok_or_else(|| {
                format!("rollout `{text}` is not 0 to 100, which Unleash evaluates as off")
            })?;
            if percent < 100 && !last {
                return Err("a flexible rollout below 100% comes before another strategy: units outside it would try the next strategy in Unleash, but Rollgate's first matching rule decides".into());
            }
            let gate = stickiness(strategy_stickiness.as_deref())?;
            let default_stickiness = strategy_stickiness.as_deref().is_none_or(|s| s == "default");
            if percent == 100 && default_stickiness && split.is_none() {
                // Everyone, a unit without either id too (Unleash picks it a random hash, and
                // any hash is in at 100%).
                return Ok(Serve::Variant(on.unwrap_or(DISABLED).to_owned()));
            }
            let mut rollout = Rollout {
                percent: Some(percent * 1000),
                outside: Some(off.to_owned()),
                algorithm: Some(unleash(group.clone(), gate.clone())),
                ..Rollout::default()
            };
            match (&split, on) {
                (None, Some(on)) => rollout.inside = Some(on.to_owned()),
                (None, None) => rollout.inside = Some(DISABLED.to_owned()),
                (Some((split_group, split_stickiness, variants)), _) => {
                    if *split_group != group || stickiness(split_stickiness.as_deref())? != gate {
                        return Err("its rollout and the feature's variants hash different units (group or stickiness), which one rollout cannot".into());
                    }
                    rollout.weights = Some(weights(variants)?);
                }
            }
            Ok(Serve::Rollout(rollout))
        }
        other => Err(format!("strategy `{other}` has no Rollgate equivalent")),
    }
}

/// The rules for one strategy: its constraints as conditions, a `NOT_IN` (or an inverted
/// `IN`) as two rules, and `userWithId`'s ids as an `in` on the targeting key.
fn expand(constraints: &[Constraint], serve: Serve) -> Result<Vec<Rule>, String> {
    let mut alternatives: Alternatives = vec![Vec::new()];
    for constraint in constraints {
        let Some(options) = conditions(constraint)? else {
            // A constraint that never holds: the strategy never enables anyone.
            return Ok(Vec::new());
        };
        alternatives =
            all_of(&alternatives, &options, MAX_RULES_PER_STRATEGY).ok_or_else(|| {
                format!("its constraints would take more than {MAX_RULES_PER_STRATEGY} rules")
            })?;
    }
    Ok(alternatives
        .into_iter()
        .map(|conditions| Rule { conditions, segments: Vec::new(), serve: serve.clone() })
        .collect())
}

/// A constraint as alternatives, each a set of conditions that must all hold; `None` if it can
/// never hold.
fn conditions(constraint: &Constraint) -> Result<Option<Alternatives>, String> {
    let operator = constraint.operator.as_str();
    let name = match constraint.context_name.as_str() {
        "userId" => flag_core::TARGETING_KEY.to_owned(),
        other => other.to_owned(),
    };
    // Unleash's `currentTime` is the time of the evaluation: the caller's `now` in Rollgate.
    let now = name == "currentTime" && operator.starts_with("DATE_");
    let condition = |op: &str, values: Vec<Value>| Condition {
        attribute: (!now).then(|| name.clone()),
        op: op.to_owned(),
        values,
    };
    let strings = || constraint.values.iter().map(|v| json!(v)).collect::<Vec<_>>();
    // Unleash compares the text; an app may send the attribute as a JSON number, so a value
    // that is a number written plainly matches that number too.
    let members = || {
        let numbers = constraint.values.iter().filter_map(|v| plain_number(v));
        strings().into_iter().chain(numbers).collect::<Vec<_>>()
    };
    // Unleash's engine reads these operators' `value` only; without one it cannot compile the
    // feature, and serves it off.
    let single = || {
        constraint.value.clone().ok_or_else(|| {
            format!(
                "`{operator}` on `{}` has no `value`: Unleash serves the feature off",
                constraint.context_name
            )
        })
    };
    let unsupported =
        |why: &str| Err(format!("constraint `{operator}` on `{}`: {why}", constraint.context_name));
    let in_set = !matches!(operator, "NOT_IN") ^ constraint.inverted;
    match operator {
        // IN of nothing never holds (NOT_IN of nothing always does).
        "IN" | "NOT_IN" if constraint.values.is_empty() && in_set => Ok(None),
        // Unleash's engine compares IN exactly, whatever `caseInsensitive` says.
        "IN" | "NOT_IN" => Ok(Some(membership(&name, members(), !in_set))),
        _ if constraint.inverted => unsupported("inverted, which Rollgate has no operator for"),
        "STR_CONTAINS" | "STR_STARTS_WITH" | "STR_ENDS_WITH" => {
            let op = match (operator, constraint.case_insensitive) {
                ("STR_CONTAINS", false) => "contains",
                ("STR_CONTAINS", true) => "contains_ignore_case",
                ("STR_STARTS_WITH", false) => "starts_with",
                ("STR_STARTS_WITH", true) => "starts_with_ignore_case",
                (_, false) => "ends_with",
                (_, true) => "ends_with_ignore_case",
            };
            if constraint.values.is_empty() {
                return unsupported(
                    "no values, which Unleash cannot compile: it serves the feature off",
                );
            }
            Ok(Some(vec![vec![condition(op, strings())]]))
        }
        "NUM_EQ" | "NUM_GT" | "NUM_GTE" | "NUM_LT" | "NUM_LTE" => {
            let text = single()?;
            let number: f64 = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
            let op = match operator {
                "NUM_EQ" => "eq",
                "NUM_GT" => "gt",
                "NUM_GTE" => "gte",
                "NUM_LT" => "lt",
                _ => "lte",
            };
            Ok(Some(vec![vec![condition(op, vec![json!(number)])]]))
        }
        "DATE_AFTER" | "DATE_BEFORE" => {
            let op = if operator == "DATE_AFTER" { "after" } else { "before" };
            Ok(Some(vec![vec![condition(op, vec![json!(single()?)])]]))
        }
        "SEMVER_EQ" | "SEMVER_GT" | "SEMVER_LT" => {
            let version = single()?;
            if version.starts_with('v') {
                return unsupported("a `v` before the version, which Unleash evaluates as never");
            }
            let op = match operator {
                "SEMVER_EQ" => "semver_eq",
                "SEMVER_GT" => "semver_gt",
                _ => "semver_lt",
            };
            Ok(Some(vec![vec![condition(op, vec![json!(version)])]]))
        }
        _ => unsupported("no Rollgate operator"),
    }
}
