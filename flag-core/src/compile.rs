//! Snapshot JSON to [`Engine`]: every check that evaluation must not have to make.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use crate::bucketing::{BUCKETS, Murmur3};
use crate::condition::Condition;
use crate::context::TARGETING_KEY;
use crate::error::{ConfigError, Path, Problem, at};
use crate::eval::{
    Engine, Flag, FlagId, FlagType, Inside, Rule, Segment, Serve, Split, Unit, VariantId,
};
use crate::keyset::KeySet;
use crate::wire::{self, SCHEMA};

/// How many flag evaluations one flag's prerequisites may expand to, repeats included.
/// Bounds evaluation time and recursion depth whatever the snapshot.
pub const MAX_PREREQUISITE_EVALUATIONS: usize = 64;

impl Engine {
    /// Parses, validates and compiles a snapshot.
    ///
    /// Natively, a snapshot that is not valid JSON of the right shape is parsed again while
    /// tracking the path, so the error names it (tracking costs an allocation per object key,
    /// so only a failed parse pays it). In WebAssembly the tracking parser would double the
    /// module, so such errors give serde_json's line and column instead. Errors found when
    /// compiling (operators, references, ranges, cycles) name their path everywhere.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        crate::json::unique_keys(json)?;
        #[cfg(not(target_arch = "wasm32"))]
        let snapshot: wire::Snapshot =
            serde_json::from_slice(json).map_err(|_| syntax_error_with_path(json))?;
        #[cfg(target_arch = "wasm32")]
        let snapshot: wire::Snapshot =
            serde_json::from_slice(json).map_err(|e| at("", Problem::Syntax(e.to_string())))?;
        Self::from_snapshot(snapshot)
    }

    /// Validates and compiles an already parsed snapshot.
    pub fn from_snapshot(snapshot: wire::Snapshot) -> Result<Self, ConfigError> {
        if snapshot.schema != SCHEMA {
            return Err(at("schema", Problem::UnsupportedSchema(snapshot.schema)));
        }
        let root = Path::Root;
        let (segments_path, flags_path) = (root.field("segments"), root.field("flags"));
        let mut segment_keys = KeySet::new();
        let mut segments = Vec::with_capacity(snapshot.segments.len());
        for (i, segment) in snapshot.segments.into_iter().enumerate() {
            let path = segments_path.index(i);
            let (_, new) = segment_keys
                .insert(&segment.key)
                .ok_or_else(|| at(path.field("key"), Problem::TooManyKeys))?;
            if !new {
                return Err(at(path.field("key"), Problem::DuplicateKey(segment.key)));
            }
            segments.push(Segment {
                conditions: compile_conditions(&segment.conditions, &path)?,
                included: segment.included,
                excluded: segment.excluded,
            });
        }

        let mut flag_keys = KeySet::new();
        for (i, flag) in snapshot.flags.iter().enumerate() {
            let path = flags_path.index(i);
            let (_, new) = flag_keys
                .insert(&flag.key)
                .ok_or_else(|| at(path.field("key"), Problem::TooManyKeys))?;
            if !new {
                return Err(at(path.field("key"), Problem::DuplicateKey(flag.key.clone())));
            }
        }
        // Flags are compiled by value, so each wire flag is freed as soon as it is compiled.
        // Prerequisites name other flags' variants, so they are resolved once all are compiled.
        let mut flags = Vec::with_capacity(snapshot.flags.len());
        let mut prerequisites = Vec::with_capacity(snapshot.flags.len());
        for (i, mut flag) in snapshot.flags.into_iter().enumerate() {
            prerequisites.push(core::mem::take(&mut flag.prerequisites));
            flags.push(compile_flag(flag, &flags_path.index(i), &segment_keys)?);
        }
        for (i, wanted) in prerequisites.into_iter().enumerate() {
            for (j, prerequisite) in wanted.into_iter().enumerate() {
                let (flag_path, list_path);
                flag_path = flags_path.index(i);
                list_path = flag_path.field("prerequisites");
                let path = list_path.index(j);
                let other = flag_keys.get(&prerequisite.flag).ok_or_else(|| {
                    at(path.field("flag"), Problem::UnknownFlag(prerequisite.flag))
                })?;
                let required = variant_id(
                    &flags[other].variants,
                    &prerequisite.variant,
                    &path.field("variant"),
                )?;
                flags[i].prerequisites.push((other, required));
            }
        }
        check_prerequisite_trees(&flags, &flag_keys)?;

        Ok(Self {
            environment: snapshot.environment,
            version: snapshot.version,
            flag_keys,
            flags,
            segments,
        })
    }
}

/// Parses `json`, known to be invalid, again while tracking the path, to say where it fails.
#[cfg(not(target_arch = "wasm32"))]
fn syntax_error_with_path(json: &[u8]) -> ConfigError {
    use alloc::string::String;
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let error = match serde_path_to_error::deserialize::<_, wire::Snapshot>(&mut deserializer) {
        Ok(_) => deserializer.end().err().map(|e| ("".into(), e.to_string())),
        Err(e) => Some((e.path().to_string(), e.into_inner().to_string())),
    };
    // Both parses run the same deserializer, so the second fails too; the fallback is defensive.
    let (path, message) =
        error.unwrap_or_else(|| (String::new(), String::from("invalid snapshot")));
    at(if path == "." { String::new() } else { path }, Problem::Syntax(message))
}

fn compile_flag(
    flag: wire::Flag,
    path: &Path<'_>,
    segment_keys: &KeySet,
) -> Result<Flag, ConfigError> {
    let kind = FlagType::from_name(&flag.kind)
        .ok_or_else(|| at(path.field("type"), Problem::UnknownType(flag.kind.clone())))?;
    let mut variants = Vec::with_capacity(flag.variants.len());
    for (name, value) in flag.variants {
        if !kind.admits(&value) {
            let variants_path = path.field("variants");
            return Err(at(variants_path.field(&name), Problem::WrongType(type_name(kind))));
        }
        variants.push((name.into_boxed_str(), value));
    }
    let variant = |name: &str, at_path: &Path<'_>| variant_id(&variants, name, at_path);

    let rules_path = path.field("rules");
    let mut rules = Vec::with_capacity(flag.rules.len());
    for (i, rule) in flag.rules.iter().enumerate() {
        let rule_path = rules_path.index(i);
        let segments_path = rule_path.field("segments");
        let mut segments = Vec::with_capacity(rule.segments.len());
        for (j, key) in rule.segments.iter().enumerate() {
            let id = segment_keys
                .get(key)
                .ok_or_else(|| at(segments_path.index(j), Problem::UnknownSegment(key.clone())))?;
            segments.push(id);
        }
        rules.push(Rule {
            conditions: compile_conditions(&rule.conditions, &rule_path)?,
            segments,
            serve: compile_serve(&rule.serve, &rule_path.field("serve"), &variant)?,
        });
    }

    let salt = flag.salt.as_deref().unwrap_or(&flag.key);
    let mut salt_hash = Murmur3::new(0);
    salt_hash.write(salt.as_bytes());
    salt_hash.write(b":");

    Ok(Flag {
        kind,
        off_variant: variant(&flag.off_variant, &path.field("off_variant"))?,
        fallthrough: compile_serve(&flag.fallthrough, &path.field("fallthrough"), &variant)?,
        variants,
        enabled: flag.enabled,
        salt_hash,
        prerequisites: Vec::new(),
        rules,
        client_visible: flag.client_visible,
    })
}

fn compile_conditions(
    conditions: &[wire::Condition],
    path: &Path<'_>,
) -> Result<Vec<Condition>, ConfigError> {
    let path = path.field("conditions");
    conditions.iter().enumerate().map(|(i, c)| Condition::compile(c, &path.index(i))).collect()
}

type VariantLookup<'a> = dyn Fn(&str, &Path<'_>) -> Result<VariantId, ConfigError> + 'a;

fn compile_serve(
    serve: &wire::Serve,
    path: &Path<'_>,
    variant: &VariantLookup<'_>,
) -> Result<Serve, ConfigError> {
    let rollout = match serve {
        wire::Serve::Variant(name) => {
            return Ok(Serve::Variant(variant(name, &path.field("variant"))?));
        }
        wire::Serve::Rollout(rollout) => rollout,
    };
    let path = path.field("rollout");
    let shape = |problem| Err(at(path, Problem::RolloutShape(problem)));
    let bucket_by = || -> Box<str> { rollout.bucket_by.as_deref().unwrap_or(TARGETING_KEY).into() };
    let unit = match &rollout.algorithm {
        None => Unit::Rg1 { bucket_by: bucket_by() },
        Some(wire::Algorithm::Unleash { group_id, stickiness }) => {
            if rollout.bucket_by.is_some() {
                return shape(
                    "an `unleash` rollout names its units in `algorithm.stickiness`, not `bucket_by`",
                );
            }
            if stickiness.is_empty()
                || stickiness.len() > 4
                || stickiness.iter().any(|name| name.is_empty())
            {
                return shape("`algorithm.stickiness` names 1 to 4 attributes");
            }
            let stickiness = stickiness.iter().map(|name| name.as_str().into()).collect();
            Unit::Unleash { group: group_id.as_str().into(), stickiness }
        }
        Some(wire::Algorithm::Flagd { prefix }) => {
            Unit::Flagd { prefix: prefix.as_str().into(), bucket_by: bucket_by() }
        }
    };
    let rg1 = rollout.algorithm.is_none();
    let split = |weights: &[wire::Weight]| -> Result<Split, ConfigError> {
        let weights_path = path.field("weights");
        let mut bounds = Vec::with_capacity(weights.len());
        let mut total: u64 = 0;
        for (i, weight) in weights.iter().enumerate() {
            total += u64::from(weight.weight);
            let id = variant(&weight.variant, &weights_path.index(i).field("variant"))?;
            bounds.push((u32::try_from(total).unwrap_or(u32::MAX), id));
        }
        if rg1 && total != u64::from(BUCKETS) {
            return Err(at(weights_path, Problem::WeightsSum(total)));
        }
        if !rg1 && !(1..=u64::from(BUCKETS)).contains(&total) {
            return Err(at(
                weights_path,
                Problem::RolloutShape("weights sum to 1 to 100000 under an imported algorithm"),
            ));
        }
        Ok(Split { total: total as u32, bounds })
    };
    let unleash = matches!(unit, Unit::Unleash { .. });
    match (rollout.percent, &rollout.weights) {
        (Some(percent), weights) => {
            if percent > BUCKETS {
                return Err(at(path.field("percent"), Problem::PercentOutOfRange(percent)));
            }
            if unleash && percent % 1000 != 0 {
                return shape(
                    "an `unleash` rollout's percent is a whole percentage (a multiple of 1000), as Unleash's are",
                );
            }
            let Some(outside) = &rollout.outside else {
                return shape("a percent rollout names an `outside` variant");
            };
            let inside = match (&rollout.inside, weights) {
                (Some(inside), None) => Inside::Variant(variant(inside, &path.field("inside"))?),
                (None, Some(weights)) if unleash => Inside::Split(split(weights)?),
                (None, Some(_)) => {
                    return shape(
                        "a rollout has either `percent` or `weights`, not both (but under `unleash`, whose weights split the units inside)",
                    );
                }
                (Some(_), Some(_)) => return shape("`inside` and `weights` exclude each other"),
                (None, None) => {
                    return shape("a percent rollout names both `inside` and `outside` variants");
                }
            };
            Ok(Serve::Percent {
                unit,
                percent,
                inside,
                outside: variant(outside, &path.field("outside"))?,
            })
        }
        (None, Some(weights)) => {
            if rollout.inside.is_some() || rollout.outside.is_some() {
                return shape("`inside` and `outside` go with `percent`, not with `weights`");
            }
            Ok(Serve::Weights { unit, split: split(weights)? })
        }
        (None, None) => {
            shape("a rollout needs `percent` (with `inside` and `outside`) or `weights`")
        }
    }
}

fn variant_id(
    variants: &[(Box<str>, serde_json::Value)],
    name: &str,
    path: &Path<'_>,
) -> Result<VariantId, ConfigError> {
    variants
        .iter()
        .position(|(v, _)| **v == *name)
        .ok_or_else(|| at(path, Problem::UnknownVariant(name.to_string())))
}

fn type_name(kind: FlagType) -> &'static str {
    match kind {
        FlagType::Boolean => "a boolean, as the flag's type says",
        FlagType::String => "a string, as the flag's type says",
        FlagType::Number => "a number, as the flag's type says",
        FlagType::Object => "an object, as the flag's type says",
    }
}

/// Rejects prerequisite cycles and trees that expand past [`MAX_PREREQUISITE_EVALUATIONS`].
fn check_prerequisite_trees(flags: &[Flag], keys: &KeySet) -> Result<(), ConfigError> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Unvisited,
        InProgress,
        Done(usize),
    }
    let mut states = alloc::vec![State::Unvisited; flags.len()];
    // Iterative depth-first search: a long chain in a hostile snapshot must not overflow the stack.
    for root in 0..flags.len() {
        let mut stack: Vec<(FlagId, usize)> = alloc::vec![(root, 0)];
        while let Some(&mut (flag, ref mut next)) = stack.last_mut() {
            if *next == 0 {
                if let State::Done(_) = states[flag] {
                    stack.pop();
                    continue;
                }
                states[flag] = State::InProgress;
            }
            if let Some(&(child, _)) = flags[flag].prerequisites.get(*next) {
                *next += 1;
                match states[child] {
                    State::InProgress => {
                        return Err(at(
                            format!("flags[{flag}].prerequisites[{}]", *next - 1),
                            Problem::PrerequisiteCycle(keys.key(child).to_string()),
                        ));
                    }
                    State::Unvisited => stack.push((child, 0)),
                    State::Done(_) => {}
                }
                continue;
            }
            let mut cost: usize = 0;
            for &(child, _) in &flags[flag].prerequisites {
                // Every child is done by now: an unfinished one would have been a cycle.
                let child_cost = if let State::Done(c) = states[child] { c } else { 0 };
                cost = cost.saturating_add(1).saturating_add(child_cost);
            }
            if cost > MAX_PREREQUISITE_EVALUATIONS {
                return Err(at(
                    format!("flags[{flag}].prerequisites"),
                    Problem::PrerequisitesTooLarge(MAX_PREREQUISITE_EVALUATIONS),
                ));
            }
            states[flag] = State::Done(cost);
            stack.pop();
        }
    }
    Ok(())
}
