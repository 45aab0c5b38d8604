//! flagd flag definitions as Rollgate flags, bucket for bucket: `fractional` keeps flagd's hash
//! (the snapshot's `flagd` algorithm), so every unit is served what flagd served it.
//!
//! What flagd evaluates: a `DISABLED` flag answers as if it did not exist; otherwise its
//! `targeting` (JSONLogic) names a variant, and when it names none (`null`, or no targeting),
//! `defaultVariant` is served. The targeting becomes a list of rules, first match wins: each
//! branch of an `if` chain a rule per alternative of its condition, nested `if`s under their
//! parents' conditions, and the last branch the fallthrough. A `fractional` becomes a rollout
//! under the `flagd` algorithm, with rules before it for the units flagd does not hash as the
//! rollout does (no targeting key, an empty attribute). What cannot be carried exactly is
//! reported with the reason, and the flag skipped.

use flag_core::TARGETING_KEY;
use flag_core::bucketing::{BUCKETS, flagd_bucket};
use flag_core::wire::{Algorithm, Condition, Rollout, Rule, Serve, Weight};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::import::{
    Alternatives, Conversion, ImportedFlag, Skipped, all_of, membership, plain_number, test,
};
use crate::model::check_key;
use crate::model::flag::{FlagDefinition, FlagState};

/// The most rules one flag's targeting may take; `or`s inside `and`s multiply.
const MAX_RULES: usize = 64;
/// How deep targeting and `$ref`s may nest.
const MAX_DEPTH: usize = 32;
/// How large one flag's targeting may grow once its `$ref`s are resolved.
const MAX_NODES: usize = 10_000;

const FRACTIONAL_NOTE: &str = "`fractional` is carried as flagd buckets it since April 2026 ((murmur3 × total weight) >> 32); a flagd older than that used a percentage of the hash, so if yours is older, some units change variant: see docs/import.md";

#[derive(Deserialize)]
struct File {
    flags: Map<String, Value>,
    #[serde(rename = "$evaluators", default)]
    evaluators: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Flag {
    state: String,
    variants: Map<String, Value>,
    default_variant: Option<String>,
    #[serde(default)]
    targeting: Value,
    #[serde(default)]
    metadata: Map<String, Value>,
}

/// Converts a flagd flag definitions file (JSON; the CLI turns YAML into JSON first).
pub fn convert(json: &[u8]) -> Result<Conversion, String> {
    let file: File = serde_json::from_slice(json)
        .map_err(|e| format!("not a flagd flag definitions file: {e}"))?;
    let mut conversion = Conversion::default();
    for (key, value) in &file.flags {
        match flag(key, value, &file.evaluators) {
            Ok(Some(flag)) => conversion.flags.push(flag),
            Ok(None) => conversion.left_out.push(Skipped {
                key: key.clone(),
                reason: "DISABLED in flagd, which answers as if it did not exist, as Rollgate does for a flag it does not have".into(),
            }),
            Err(reason) => conversion.skipped.push(Skipped { key: key.clone(), reason }),
        }
    }
    conversion.settle();
    Ok(conversion)
}

/// The flag, `None` if flagd has it disabled.
fn flag(
    key: &str,
    value: &Value,
    evaluators: &Map<String, Value>,
) -> Result<Option<ImportedFlag>, String> {
    check_key("flag", key).map_err(|e| format!("not a Rollgate flag key: {e}"))?;
    let flag: Flag =
        serde_json::from_value(value.clone()).map_err(|e| format!("not a flagd flag: {e}"))?;
    match flag.state.as_str() {
        "ENABLED" => {}
        "DISABLED" => return Ok(None),
        other => return Err(format!("state `{other}` is neither ENABLED nor DISABLED")),
    }
    let kind = kind(&flag.variants)?;
    let default = flag.default_variant.clone().ok_or(
        "it has no defaultVariant: flagd then answers with the app's default, which a Rollgate flag cannot",
    )?;
    if !flag.variants.contains_key(&default) {
        return Err(format!("its defaultVariant `{default}` is not one of its variants"));
    }
    let mut budget = MAX_NODES;
    let targeting = resolve(&flag.targeting, evaluators, 0, &mut budget)?;
    let converter = Targeting { flag_key: key, variants: &flag.variants, default: &default };
    let branches = converter.branches(&targeting, 0)?;
    let mut notes = Vec::new();
    if branches.iter().any(|b| matches!(b.outcome, Outcome::Fractional(_))) {
        notes.push(FRACTIONAL_NOTE.to_owned());
    }
    let (rules, fallthrough) = converter.lower(branches)?;
    let description = match flag.metadata.get("description") {
        Some(Value::String(text)) => text.chars().take(2000).collect(),
        _ => String::new(),
    };
    let definition = FlagDefinition {
        key: key.to_owned(),
        kind: kind.to_owned(),
        variants: flag.variants.clone().into_iter().collect(),
        off_variant: default,
        salt: None,
        description,
        owner: String::new(),
        tags: vec!["flagd".into()],
        client_visible: false,
    };
    let state = FlagState { enabled: true, prerequisites: Vec::new(), rules, fallthrough };
    Ok(Some(ImportedFlag { definition, state, notes }))
}

/// The Rollgate type all of a flag's variants share.
fn kind(variants: &Map<String, Value>) -> Result<&'static str, String> {
    let kind_of = |value: &Value| match value {
        Value::Bool(_) => Some("boolean"),
        Value::String(_) => Some("string"),
        Value::Number(_) => Some("number"),
        Value::Object(_) => Some("object"),
        _ => None,
    };
    let mut kinds = variants.values().map(kind_of);
    let first = kinds.next().ok_or("it has no variants")?;
    match first {
        Some(kind) if kinds.all(|k| k == Some(kind)) => Ok(kind),
        _ => Err("its variants are not all booleans, strings, numbers or objects alike".into()),
    }
}

/// The targeting with each `{"$ref": name}` replaced by the shared evaluator it names, within
/// `budget` nodes.
fn resolve(
    value: &Value,
    evaluators: &Map<String, Value>,
    depth: usize,
    budget: &mut usize,
) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("its targeting nests deeper than {MAX_DEPTH} (a `$ref` cycle?)"));
    }
    *budget = budget.checked_sub(1).ok_or_else(|| {
        format!("its targeting, its `$ref`s resolved, is larger than {MAX_NODES} nodes")
    })?;
    Ok(match value {
        Value::Object(object) => {
            if let (1, Some(reference)) = (object.len(), object.get("$ref")) {
                let name = reference.as_str().ok_or("a `$ref` that is not a name")?;
                let evaluator = evaluators
                    .get(name)
                    .ok_or_else(|| format!("`$ref` to `{name}`, which `$evaluators` lacks"))?;
                return resolve(evaluator, evaluators, depth + 1, budget);
            }
            let mut resolved = Map::new();
            for (key, value) in object {
                resolved.insert(key.clone(), resolve(value, evaluators, depth + 1, budget)?);
            }
            Value::Object(resolved)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(v, evaluators, depth + 1, budget))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// One entry of the decision list the targeting becomes: where all `conditions` hold (and no
/// earlier branch's did), flagd serves `outcome`. The last branch has no conditions.
struct Branch {
    conditions: Vec<Condition>,
    outcome: Outcome,
}

#[derive(Clone)]
enum Outcome {
    Variant(String),
    /// Targeting named no variant: `defaultVariant`.
    Default,
    Fractional(Fractional),
}

/// A `fractional`: what it hashes, and the variants' weights in bucket order.
#[derive(Clone)]
struct Fractional {
    key: BucketKey,
    weights: Vec<(String, u32)>,
}

#[derive(Clone)]
enum BucketKey {
    /// No key given: the flag's key followed by the targeting key; a unit without one (or with
    /// an empty one) gets `defaultVariant`.
    Implicit,
    /// `{"var": attribute}`: the attribute's value; without it, as `Implicit`.
    Attribute(String),
    /// `{"cat": [text…, {"var": attribute}]}`: `prefix` then the attribute's value, or the
    /// prefix alone without it (JSONLogic's `cat` reads a missing value as "").
    Prefixed { prefix: String, attribute: String },
    /// A fixed text: every unit lands in the same bucket.
    Constant(String),
}

struct Targeting<'f> {
    flag_key: &'f str,
    variants: &'f Map<String, Value>,
    default: &'f str,
}

impl Targeting<'_> {
    /// The decision list of an expression that names a variant.
    fn branches(&self, expression: &Value, depth: usize) -> Result<Vec<Branch>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("its targeting nests deeper than {MAX_DEPTH}"));
        }
        let always = |outcome| Ok(vec![Branch { conditions: Vec::new(), outcome }]);
        let Some((operator, arguments)) = operation(expression) else {
            return match expression {
                Value::Null => always(Outcome::Default),
                Value::Object(object) if object.is_empty() => always(Outcome::Default),
                Value::String(name) => always(self.variant(name)?),
                other => Err(format!("its targeting answers `{other}`, which names no variant")),
            };
        };
        match operator {
            "if" | "?:" => {
                let mut branches = Vec::new();
                let mut pairs = arguments.chunks_exact(2);
                for pair in pairs.by_ref() {
                    let then = self.branches(pair[1], depth + 1)?;
                    for alternative in self.condition(pair[0], false, depth + 1)? {
                        let always_holds = alternative.is_empty();
                        for branch in &then {
                            let mut conditions = alternative.clone();
                            conditions.extend(branch.conditions.iter().cloned());
                            branches.push(Branch { conditions, outcome: branch.outcome.clone() });
                        }
                        if branches.len() > MAX_RULES {
                            return Err(format!(
                                "its targeting would take more than {MAX_RULES} rules"
                            ));
                        }
                        // The branch's last entry catches every unit the alternative holds
                        // for; one that always holds leaves nothing for what follows.
                        if always_holds {
                            return Ok(branches);
                        }
                    }
                }
                let otherwise = match pairs.remainder() {
                    [otherwise] => self.branches(otherwise, depth + 1)?,
                    _ => vec![Branch { conditions: Vec::new(), outcome: Outcome::Default }],
                };
                branches.extend(otherwise);
                Ok(branches)
            }
            "fractional" => always(Outcome::Fractional(self.fractional(&arguments)?)),
            other => Err(format!(
                "its targeting names its variant with `{other}`, which Rollgate rules cannot"
            )),
        }
    }

    fn variant(&self, name: &str) -> Result<Outcome, String> {
        if self.variants.contains_key(name) {
            Ok(Outcome::Variant(name.to_owned()))
        } else {
            Err(format!(
                "its targeting names `{name}`, which is not one of its variants: flagd answers an error there"
            ))
        }
    }

    fn fractional(&self, arguments: &[&Value]) -> Result<Fractional, String> {
        let (key, buckets) = match arguments {
            [Value::Array(_), ..] => (BucketKey::Implicit, arguments),
            [Value::String(text), rest @ ..] => (BucketKey::Constant(text.clone()), rest),
            [first, rest @ ..] => (bucket_key(first, self.flag_key)?, rest),
            [] => return Err("a `fractional` without variants".into()),
        };
        let mut weights = Vec::new();
        for bucket in buckets {
            let (name, weight) = match bucket.as_array().map(Vec::as_slice) {
                Some([Value::String(name)]) => (name, 1),
                Some([Value::String(name), Value::Number(weight)]) => {
                    let weight = weight
                        .as_i64()
                        .ok_or("a `fractional` weight that is not a whole number")?;
                    (
                        name,
                        u32::try_from(weight.max(0))
                            .map_err(|_| "a `fractional` weight above 4294967295")?,
                    )
                }
                _ => return Err("a `fractional` bucket that is not [variant, weight]".into()),
            };
            self.variant(name)?;
            weights.push((name.clone(), weight));
        }
        let total: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err(
                "a `fractional` whose weights sum to 0, which flagd answers with its default"
                    .into(),
            );
        }
        if total > u64::from(BUCKETS) {
            return Err(format!(
                "a `fractional` whose weights sum to {total}, above the {BUCKETS} Rollgate splits"
            ));
        }
        Ok(Fractional { key, weights })
    }

    /// A condition, negated or not, as alternatives; an error for one Rollgate cannot say.
    fn condition(
        &self,
        expression: &Value,
        negated: bool,
        depth: usize,
    ) -> Result<Alternatives, String> {
        if depth > MAX_DEPTH {
            return Err(format!("its targeting nests deeper than {MAX_DEPTH}"));
        }
        let unsupported = |why: &str| Err(format!("condition `{expression}`: {why}"));
        if let Some(name) = path_read(expression) {
            return unsupported(&format!(
                "reads `{name}`, which is not an attribute Rollgate has (neither flagd's `$flagd` properties nor nested ones are)"
            ));
        }
        let Some((operator, arguments)) = operation(expression) else {
            return match expression {
                Value::Bool(holds) => {
                    Ok(if *holds != negated { vec![Vec::new()] } else { Vec::new() })
                }
                _ => unsupported("not a test Rollgate has"),
            };
        };
        let too_many = || format!("its conditions would take more than {MAX_RULES} rules");
        let both = |first: Alternatives, second: Alternatives| {
            all_of(&first, &second, MAX_RULES).ok_or_else(too_many)
        };
        let either = |mut first: Alternatives, second: Alternatives| {
            first.extend(second);
            if first.len() > MAX_RULES {
                return Err(too_many());
            }
            Ok(first)
        };
        match (operator, arguments.as_slice()) {
            // JSONLogic's `and` and `or` of nothing are null: false.
            ("and" | "or", []) => Ok(if negated { vec![Vec::new()] } else { Vec::new() }),
            ("and" | "or", _) => {
                // `and` (or a negated `or`) needs all; `or` (or a negated `and`) any.
                let all = (operator == "and") != negated;
                let mut result = if all { vec![Vec::new()] } else { Vec::new() };
                for argument in &arguments {
                    let next = self.condition(argument, negated, depth + 1)?;
                    result = if all { both(result, next)? } else { either(result, next)? };
                }
                Ok(result)
            }
            ("!", [inner]) => self.condition(inner, !negated, depth + 1),
            ("!!", [inner]) => self.condition(inner, negated, depth + 1),
            ("==" | "===" | "!=" | "!==", [a, b]) => {
                let (attribute, value) = match (attribute(a), attribute(b)) {
                    (Some(attribute), None) => (attribute, *b),
                    (None, Some(attribute)) => (attribute, *a),
                    _ => return unsupported("compares other than an attribute with a value"),
                };
                let negated = negated != operator.starts_with('!');
                let loose = operator.len() == 2;
                if loose && !loosely_plain(value) {
                    // JSONLogic's loose equality converts these (a missing attribute equals
                    // false, 0 and "", true equals 1 and "true"); `===` says what is meant.
                    return unsupported(
                        "loose `==` with null, a boolean, 0, 1, \"\", \"true\" or \"false\", which JSONLogic converts between types: write `===`",
                    );
                }
                if value.is_null() {
                    let op = if negated { "exists" } else { "not_exists" };
                    return Ok(vec![vec![test(&attribute, op, Vec::new())]]);
                }
                let Some(values) = members(value, loose) else {
                    return unsupported(
                        "compares with a value that is not a string, number or boolean",
                    );
                };
                Ok(membership(&attribute, values, negated))
            }
            ("in", [needle, haystack]) => {
                match (attribute(needle), needle, attribute(haystack), haystack) {
                    (Some(attribute), _, None, Value::Array(values)) => {
                        let values =
                            values.iter().map(|v| members(v, false)).collect::<Option<Vec<_>>>();
                        let Some(values) = values else {
                            return unsupported(
                                "a list with other than strings, numbers and booleans",
                            );
                        };
                        Ok(membership(&attribute, values.concat(), negated))
                    }
                    (None, Value::String(text), Some(attribute), _) if !negated => {
                        Ok(vec![vec![test(&attribute, "contains", vec![json!(text)])]])
                    }
                    _ => unsupported("an `in` Rollgate has no operator for"),
                }
            }
            ("starts_with" | "ends_with", [a, Value::String(text)]) if !negated => {
                let Some(attribute) = attribute(a) else {
                    return unsupported("tests other than an attribute");
                };
                Ok(vec![vec![test(&attribute, operator, vec![json!(text)])]])
            }
            ("sem_ver", [a, Value::String(op), Value::String(version)]) if !negated => {
                let Some(attribute) = attribute(a) else {
                    return unsupported("compares other than an attribute's version");
                };
                semver(&attribute, op, version).ok_or_else(|| {
                    format!(
                        "condition `{expression}`: not a comparison of versions Rollgate can make"
                    )
                })
            }
            ("<" | "<=" | ">" | ">=", [a, b]) => {
                let (attribute, number, op) =
                    match (attribute(a), b.as_f64(), attribute(b), a.as_f64()) {
                        (Some(attribute), Some(number), _, _) => (attribute, number, operator),
                        (_, _, Some(attribute), Some(number)) => {
                            (attribute, number, flip(operator))
                        }
                        _ => return unsupported("compares other than an attribute with a number"),
                    };
                let op = if negated { complement(op) } else { op };
                Ok(compare(&attribute, op, number))
            }
            ("<" | "<=", [low, middle, high]) if !negated => {
                let (Some(low), Some(attribute), Some(high)) =
                    (low.as_f64(), attribute(middle), high.as_f64())
                else {
                    return unsupported("compares other than an attribute between two numbers");
                };
                both(compare(&attribute, flip(operator), low), compare(&attribute, operator, high))
            }
            _ => unsupported("not a test Rollgate has, or not negated"),
        }
    }

    /// The rules and the fallthrough for a decision list.
    fn lower(&self, branches: Vec<Branch>) -> Result<(Vec<Rule>, Serve), String> {
        let mut entries = Vec::new();
        let count = branches.len();
        for (index, branch) in branches.into_iter().enumerate() {
            entries.extend(self.serves(branch, index + 1 == count)?);
        }
        // Branches end in one without conditions; it, or its expansion's last, is the
        // fallthrough.
        let (last_conditions, fallthrough) = entries.pop().ok_or("its targeting serves nothing")?;
        debug_assert!(last_conditions.is_empty());
        if entries.len() > MAX_RULES {
            return Err(format!("its targeting would take more than {MAX_RULES} rules"));
        }
        let rules = entries
            .into_iter()
            .map(|(conditions, serve)| Rule { conditions, segments: Vec::new(), serve })
            .collect();
        Ok((rules, fallthrough))
    }

    /// What one branch serves, as entries in order: for a `fractional`, first the units flagd
    /// does not hash as the rollout does, then the rollout under the branch's own conditions.
    fn serves(&self, branch: Branch, last: bool) -> Result<Vec<(Vec<Condition>, Serve)>, String> {
        let Branch { conditions, outcome } = branch;
        let with =
            |more: Vec<Condition>| conditions.iter().cloned().chain(more).collect::<Vec<_>>();
        let default = || Serve::Variant(self.default.to_owned());
        let fractional = match outcome {
            Outcome::Variant(name) => return Ok(vec![(conditions, Serve::Variant(name))]),
            Outcome::Default => return Ok(vec![(conditions, default())]),
            Outcome::Fractional(fractional) => fractional,
        };
        let fixed = |key: &str| Serve::Variant(fractional.variant_of(key).to_owned());
        // Without a targeting key (or with an empty one) flagd serves its default.
        let no_targeting_key = |mut before: Vec<Condition>| {
            let mut missing = before.clone();
            missing.push(test(TARGETING_KEY, "not_exists", Vec::new()));
            before.push(test(TARGETING_KEY, "in", vec![json!("")]));
            vec![(with(missing), default()), (with(before), default())]
        };
        let implicit = self.rollout(&fractional, self.flag_key, TARGETING_KEY);
        Ok(match &fractional.key {
            BucketKey::Constant(key) => vec![(conditions.clone(), fixed(key))],
            BucketKey::Implicit => {
                let mut entries = no_targeting_key(Vec::new());
                entries.push((conditions.clone(), implicit));
                entries
            }
            BucketKey::Attribute(attribute) => {
                // An empty value is hashed as it is; none at all, as if no key were given.
                let missing = || vec![test(attribute, "not_exists", Vec::new())];
                let mut entries =
                    vec![(with(vec![test(attribute, "in", vec![json!("")])]), fixed(""))];
                if attribute != TARGETING_KEY {
                    entries.extend(no_targeting_key(missing()));
                    entries.push((with(missing()), implicit));
                } else {
                    entries.push((with(missing()), default()));
                }
                entries.push((conditions.clone(), self.rollout(&fractional, "", attribute)));
                // A value that is not text is no key to flagd: its default. (Rollgate's rollout
                // skips a unit it cannot key, which must not reach the branches after this one.)
                if !last {
                    entries.push((conditions.clone(), default()));
                }
                entries
            }
            BucketKey::Prefixed { prefix, attribute } => vec![
                (with(vec![test(attribute, "not_exists", Vec::new())]), fixed(prefix)),
                (with(vec![test(attribute, "in", vec![json!("")])]), fixed(prefix)),
                (conditions.clone(), self.rollout(&fractional, prefix, attribute)),
            ],
        })
    }

    /// The rollout hashing `prefix` then the attribute: two variants as a percentage (which
    /// rollout plans move), more as weights.
    fn rollout(&self, fractional: &Fractional, prefix: &str, attribute: &str) -> Serve {
        let total: u32 = fractional.weights.iter().map(|(_, w)| w).sum();
        let mut rollout = Rollout {
            bucket_by: (attribute != TARGETING_KEY).then(|| attribute.to_owned()),
            algorithm: Some(Algorithm::Flagd { prefix: prefix.to_owned() }),
            ..Rollout::default()
        };
        // `(hash × total) >> 32 < first` is `(hash × 100000) >> 32 < first × 100000 / total`
        // when that is whole.
        match fractional.weights.as_slice() {
            [(inside, first), (outside, _)]
                if inside != outside
                    && u64::from(*first) * u64::from(BUCKETS) % u64::from(total) == 0 =>
            {
                let percent = u64::from(*first) * u64::from(BUCKETS) / u64::from(total);
                rollout.percent = Some(u32::try_from(percent).expect("at most BUCKETS"));
                rollout.inside = Some(inside.clone());
                rollout.outside = Some(outside.clone());
            }
            weights => {
                rollout.weights = Some(
                    weights
                        .iter()
                        .map(|(variant, weight)| Weight {
                            variant: variant.clone(),
                            weight: *weight,
                        })
                        .collect(),
                );
            }
        }
        Serve::Rollout(rollout)
    }
}

impl Fractional {
    /// The variant flagd picks for the text it hashes.
    fn variant_of(&self, key: &str) -> &str {
        let total: u32 = self.weights.iter().map(|(_, w)| w).sum();
        let bucket = flagd_bucket(key.as_bytes(), total);
        let mut end = 0;
        for (variant, weight) in &self.weights {
            end += weight;
            if bucket < end {
                return variant;
            }
        }
        unreachable!("the bucket is below the total of the weights")
    }
}

/// `{"operator": arguments}`: the operator and its arguments (a single one unwrapped).
fn operation(expression: &Value) -> Option<(&str, Vec<&Value>)> {
    let object = expression.as_object()?;
    let (operator, arguments) = object.iter().next().filter(|_| object.len() == 1)?;
    let arguments = match arguments {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    Some((operator.as_str(), arguments))
}

/// The context attribute `{"var": name}` reads: a top-level one (flagd's `$flagd` properties
/// and nested paths are not attributes Rollgate has).
fn attribute(expression: &Value) -> Option<String> {
    let (operator, arguments) = operation(expression)?;
    match (operator, arguments.as_slice()) {
        ("var", [Value::String(name)]) if !name.is_empty() && !name.contains('.') => {
            Some(name.clone())
        }
        _ => None,
    }
}

/// A `{"var": "a.b"}` directly among a test's arguments.
fn path_read(expression: &Value) -> Option<String> {
    let (operator, arguments) = operation(expression)?;
    if matches!(operator, "and" | "or" | "!" | "!!") {
        return None;
    }
    arguments.iter().find_map(|argument| match operation(argument)? {
        ("var", name) => name.first()?.as_str().filter(|n| n.contains('.')).map(str::to_owned),
        _ => None,
    })
}

/// The key a `fractional` hashes, from its first argument.
fn bucket_key(expression: &Value, flag_key: &str) -> Result<BucketKey, String> {
    if let Some(attribute) = attribute(expression) {
        return Ok(BucketKey::Attribute(attribute));
    }
    let unsupported =
        || format!("a `fractional` keyed by `{expression}`, which Rollgate cannot hash");
    let Some(("cat", parts)) = operation(expression) else {
        return Err(unsupported());
    };
    let (last, fixed) = parts.split_last().ok_or_else(unsupported)?;
    let mut prefix = String::new();
    for part in fixed {
        match (part, operation(part)) {
            (Value::String(text), _) => prefix.push_str(text),
            (_, Some(("var", name))) if name.as_slice() == [&json!("$flagd.flagKey")] => {
                prefix.push_str(flag_key);
            }
            _ => return Err(unsupported()),
        }
    }
    let attribute = attribute(last).ok_or_else(unsupported)?;
    Ok(BucketKey::Prefixed { prefix, attribute })
}

/// Whether loose `==` with `value` means what `===` does but for numbers written as text.
fn loosely_plain(value: &Value) -> bool {
    match value {
        Value::String(text) => !matches!(text.as_str(), "" | "true" | "false"),
        Value::Number(number) => number.as_f64().is_some_and(|n| n != 0.0 && n != 1.0),
        _ => false,
    }
}

/// The values an attribute equals `value` at: with JSONLogic's loose `==`, a number also as the
/// text it is written as, and text that is a number written plainly also as that number.
fn members(value: &Value, loose: bool) -> Option<Vec<Value>> {
    let mut values = vec![value.clone()];
    match value {
        Value::String(text) if loose => values.extend(plain_number(text)),
        Value::Number(number) if loose => values.push(json!(number.to_string())),
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
        _ => return None,
    }
    Some(values)
}

/// `attribute op number`, where JSONLogic reads a missing attribute as 0.
fn compare(attribute: &str, op: &str, number: f64) -> Alternatives {
    let (name, holds_at_zero) = match op {
        "<" => ("lt", 0.0 < number),
        "<=" => ("lte", 0.0 <= number),
        ">" => ("gt", 0.0 > number),
        _ => ("gte", 0.0 >= number),
    };
    let mut alternatives = vec![vec![test(attribute, name, vec![json!(number)])]];
    if holds_at_zero {
        alternatives.push(vec![test(attribute, "not_exists", Vec::new())]);
    }
    alternatives
}

/// `a op b` as `b flip(op) a`.
fn flip(op: &str) -> &'static str {
    match op {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        _ => "<=",
    }
}

/// `!(a op b)` as `a complement(op) b`.
fn complement(op: &str) -> &'static str {
    match op {
        "<" => ">=",
        "<=" => ">",
        ">" => "<=",
        _ => "<",
    }
}

/// flagd's `sem_ver` as Rollgate's version operators. flagd reads `v1.2` as 1.2.0 and ignores
/// build metadata; `^` is the same major version, `~` the same major and minor.
fn semver(attribute: &str, op: &str, version: &str) -> Option<Alternatives> {
    let version = version.strip_prefix(['v', 'V']).unwrap_or(version);
    let version = version.split('+').next().unwrap_or_default();
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, format!("-{pre}")),
        None => (version, String::new()),
    };
    // Digits without leading zeros, as semantic versions have them.
    let number = |n: &str| {
        let plain = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        (plain && (n == "0" || !n.starts_with('0'))).then(|| n.parse::<u64>().ok()).flatten()
    };
    let mut numbers = core.split('.').map(number).collect::<Option<Vec<_>>>()?;
    if numbers.is_empty() || numbers.len() > 3 {
        return None;
    }
    numbers.resize(3, 0);
    let [major, minor, patch] = [numbers[0], numbers[1], numbers[2]];
    let exact = format!("{major}.{minor}.{patch}{pre}");
    let one = |op: &str, v: &str| vec![test(attribute, op, vec![json!(v)])];
    // Versions from `low` (the least with that major, or major and minor) up to below `high`.
    let range = |low: String, high: String| {
        vec![one("semver_eq", &low), [one("semver_gt", &low), one("semver_lt", &high)].concat()]
    };
    Some(match op {
        "=" => vec![one("semver_eq", &exact)],
        "!=" => vec![one("semver_lt", &exact), one("semver_gt", &exact)],
        "<" => vec![one("semver_lt", &exact)],
        "<=" => vec![one("semver_lt", &exact), one("semver_eq", &exact)],
        ">" => vec![one("semver_gt", &exact)],
        ">=" => vec![one("semver_gt", &exact), one("semver_eq", &exact)],
        "^" => range(format!("{major}.0.0-0"), format!("{}.0.0-0", major.checked_add(1)?)),
        "~" => {
            range(format!("{major}.{minor}.0-0"), format!("{major}.{}.0-0", minor.checked_add(1)?))
        }
        _ => return None,
    })
}
