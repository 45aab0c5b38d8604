//! Conditions: one context attribute tested by one operator, compiled once, matched per call.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use serde_json::Value;

use crate::context::Context;
use crate::error::{ConfigError, Path, Problem, at};
use crate::keyset::KeySet;
use crate::semver::Version;
use crate::timestamp::parse_rfc3339_millis;
use crate::wire;

/// A compiled condition. Matching never fails: an attribute that is missing, null or of another
/// type than the operator wants makes the condition false (only `not_exists` holds then).
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    /// `None` only for `before` and `after`, which then compare the caller's clock.
    attribute: Option<Box<str>>,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Eq(Scalar),
    Neq(Scalar),
    In(ScalarSet),
    NotIn(ScalarSet),
    StartsWith(Vec<Box<str>>),
    EndsWith(Vec<Box<str>>),
    Contains(Vec<Box<str>>),
    /// The `_ignore_case` operators: strings compared after Unicode lowercasing, as Unleash's
    /// `caseInsensitive` does.
    InIgnoreCase(Vec<Box<str>>),
    NotInIgnoreCase(Vec<Box<str>>),
    StartsWithIgnoreCase(Vec<Box<str>>),
    EndsWithIgnoreCase(Vec<Box<str>>),
    ContainsIgnoreCase(Vec<Box<str>>),
    Lt(f64),
    Lte(f64),
    Gt(f64),
    Gte(f64),
    SemverEq(OwnedVersion),
    SemverLt(OwnedVersion),
    SemverGt(OwnedVersion),
    Before(i64),
    After(i64),
    Exists,
    NotExists,
}

#[derive(Debug, Clone)]
enum Scalar {
    String(Box<str>),
    Number(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Default)]
struct ScalarSet {
    strings: KeySet,
    numbers: Vec<f64>,
    bools: Vec<bool>,
}

#[derive(Debug, Clone)]
struct OwnedVersion {
    core: [u64; 3],
    pre: Box<str>,
}

impl Condition {
    pub(crate) fn compile(wire: &wire::Condition, path: &Path<'_>) -> Result<Self, ConfigError> {
        let values = path.field("values");
        let values_path = || values;
        let value_path = |i: usize| values.index(i);
        let one = || match wire.values.as_slice() {
            [value] => Ok(value),
            _ => Err(at(
                values_path(),
                Problem::BadOperands("this operator takes exactly one value"),
            )),
        };
        let many = || {
            if wire.values.is_empty() {
                Err(at(
                    values_path(),
                    Problem::BadOperands("this operator takes one or more values"),
                ))
            } else {
                Ok(wire.values.iter().enumerate())
            }
        };
        let strings = || -> Result<Vec<Box<str>>, ConfigError> {
            many()?
                .map(|(i, v)| {
                    v.as_str()
                        .map(Box::from)
                        .ok_or_else(|| at(value_path(i), Problem::WrongType("a string")))
                })
                .collect()
        };
        let number =
            || one()?.as_f64().ok_or_else(|| at(value_path(0), Problem::WrongType("a number")));
        let version = || {
            let text = one()?.as_str().unwrap_or_default();
            Version::parse(text)
                .map(|v| OwnedVersion { core: v.core(), pre: v.pre().into() })
                .ok_or_else(|| {
                    at(value_path(0), Problem::WrongType("a semantic version such as 1.2.3"))
                })
        };
        let timestamp = || {
            one()?
                .as_str()
                .and_then(parse_rfc3339_millis)
                .ok_or_else(|| at(value_path(0), Problem::WrongType("an RFC 3339 timestamp")))
        };
        let scalar = |i: usize, value: &Value| {
            Scalar::from_json(value)
                .ok_or_else(|| at(value_path(i), Problem::WrongType("a string, number or boolean")))
        };
        let scalar_set = || {
            let mut set = ScalarSet::default();
            for (i, value) in many()? {
                match scalar(i, value)? {
                    Scalar::String(s) => {
                        set.strings
                            .insert(&s)
                            .ok_or_else(|| at(values_path(), Problem::TooManyKeys))?;
                    }
                    Scalar::Number(n) => set.numbers.push(n),
                    Scalar::Bool(b) => set.bools.push(b),
                }
            }
            Ok(set)
        };
        let none = || {
            if wire.values.is_empty() {
                Ok(())
            } else {
                Err(at(values_path(), Problem::BadOperands("this operator takes no values")))
            }
        };

        let test = match wire.op.as_str() {
            "eq" => Test::Eq(scalar(0, one()?)?),
            "neq" => Test::Neq(scalar(0, one()?)?),
            "in" => Test::In(scalar_set()?),
            "not_in" => Test::NotIn(scalar_set()?),
            "starts_with" => Test::StartsWith(strings()?),
            "ends_with" => Test::EndsWith(strings()?),
            "contains" => Test::Contains(strings()?),
            "in_ignore_case" => Test::InIgnoreCase(strings()?),
            "not_in_ignore_case" => Test::NotInIgnoreCase(strings()?),
            "starts_with_ignore_case" => Test::StartsWithIgnoreCase(strings()?),
            "ends_with_ignore_case" => Test::EndsWithIgnoreCase(strings()?),
            "contains_ignore_case" => Test::ContainsIgnoreCase(strings()?),
            "lt" => Test::Lt(number()?),
            "lte" => Test::Lte(number()?),
            "gt" => Test::Gt(number()?),
            "gte" => Test::Gte(number()?),
            "semver_eq" => Test::SemverEq(version()?),
            "semver_lt" => Test::SemverLt(version()?),
            "semver_gt" => Test::SemverGt(version()?),
            "before" => Test::Before(timestamp()?),
            "after" => Test::After(timestamp()?),
            "exists" => none().map(|()| Test::Exists)?,
            "not_exists" => none().map(|()| Test::NotExists)?,
            other => {
                return Err(at(path.field("op"), Problem::UnknownOperator(String::from(other))));
            }
        };
        let compares_clock = matches!(test, Test::Before(_) | Test::After(_));
        if wire.attribute.is_none() && !compares_clock {
            return Err(at(
                path.field("attribute"),
                Problem::BadOperands(
                    "missing attribute; only before and after may omit it to compare the clock",
                ),
            ));
        }
        Ok(Self { attribute: wire.attribute.as_deref().map(Box::from), test })
    }

    #[inline]
    pub(crate) fn holds(&self, context: &Context) -> bool {
        let Some(name) = &self.attribute else {
            return match (&self.test, context.now_millis()) {
                (Test::Before(t), Some(now)) => now < *t,
                (Test::After(t), Some(now)) => now > *t,
                _ => false,
            };
        };
        let value = context.get(name).filter(|v| !v.is_null());
        let Some(value) = value else { return matches!(self.test, Test::NotExists) };
        let text = value.as_str();
        let number = value.as_f64();
        match &self.test {
            Test::Eq(s) => s.matches(value),
            Test::Neq(s) => !s.matches(value),
            Test::In(set) => set.contains(value),
            Test::NotIn(set) => !set.contains(value),
            Test::StartsWith(p) => text.is_some_and(|t| p.iter().any(|p| t.starts_with(&**p))),
            Test::EndsWith(p) => text.is_some_and(|t| p.iter().any(|p| t.ends_with(&**p))),
            Test::Contains(p) => text.is_some_and(|t| p.iter().any(|p| t.contains(&**p))),
            Test::InIgnoreCase(s) => text.is_some_and(|t| s.iter().any(|s| any_case::eq(t, s))),
            Test::NotInIgnoreCase(s) => !text.is_some_and(|t| s.iter().any(|s| any_case::eq(t, s))),
            Test::StartsWithIgnoreCase(p) => {
                text.is_some_and(|t| p.iter().any(|p| any_case::starts_with(t, p)))
            }
            Test::EndsWithIgnoreCase(p) => {
                text.is_some_and(|t| p.iter().any(|p| any_case::ends_with(t, p)))
            }
            Test::ContainsIgnoreCase(p) => {
                text.is_some_and(|t| p.iter().any(|p| any_case::contains(t, p)))
            }
            Test::Lt(n) => number.is_some_and(|x| x < *n),
            Test::Lte(n) => number.is_some_and(|x| x <= *n),
            Test::Gt(n) => number.is_some_and(|x| x > *n),
            Test::Gte(n) => number.is_some_and(|x| x >= *n),
            Test::SemverEq(v) => v.compare(text).is_some_and(|o| o.is_eq()),
            Test::SemverLt(v) => v.compare(text).is_some_and(|o| o.is_lt()),
            Test::SemverGt(v) => v.compare(text).is_some_and(|o| o.is_gt()),
            Test::Before(t) => text.and_then(parse_rfc3339_millis).is_some_and(|x| x < *t),
            Test::After(t) => text.and_then(parse_rfc3339_millis).is_some_and(|x| x > *t),
            Test::Exists => true,
            Test::NotExists => false,
        }
    }
}

impl Scalar {
    fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(Self::String(s.as_str().into())),
            Value::Number(n) => n.as_f64().map(Self::Number),
            Value::Bool(b) => Some(Self::Bool(*b)),
            _ => None,
        }
    }

    #[inline]
    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Self::String(s), Value::String(v)) => crate::text::same(s, v),
            (Self::Number(n), Value::Number(v)) => v.as_f64() == Some(*n),
            (Self::Bool(b), Value::Bool(v)) => b == v,
            _ => false,
        }
    }
}

impl ScalarSet {
    #[inline]
    fn contains(&self, value: &Value) -> bool {
        match value {
            Value::String(v) => self.strings.contains(v),
            Value::Number(v) => v.as_f64().is_some_and(|v| self.numbers.contains(&v)),
            Value::Bool(v) => self.bools.contains(v),
            _ => false,
        }
    }
}

impl OwnedVersion {
    /// How the attribute's version compares to this one, if the attribute is a version.
    fn compare(&self, attribute: Option<&str>) -> Option<core::cmp::Ordering> {
        let theirs = Version::parse(attribute?)?;
        Some(theirs.precedence(&Version::from_parts(self.core, &self.pre)))
    }
}

/// Comparisons of strings lowercased character by character (`char::to_lowercase`), without
/// allocating.
mod any_case {
    fn lower(text: &str) -> impl Iterator<Item = char> + '_ {
        text.chars().flat_map(char::to_lowercase)
    }

    fn lower_reversed(text: &str) -> impl Iterator<Item = char> + '_ {
        text.chars().rev().flat_map(|c| c.to_lowercase().rev())
    }

    pub(super) fn eq(a: &str, b: &str) -> bool {
        lower(a).eq(lower(b))
    }

    pub(super) fn starts_with(text: &str, prefix: &str) -> bool {
        let mut text = lower(text);
        lower(prefix).all(|c| text.next() == Some(c))
    }

    pub(super) fn ends_with(text: &str, suffix: &str) -> bool {
        let mut text = lower_reversed(text);
        lower_reversed(suffix).all(|c| text.next() == Some(c))
    }

    pub(super) fn contains(text: &str, needle: &str) -> bool {
        needle.is_empty() || text.char_indices().any(|(at, _)| starts_with(&text[at..], needle))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn compares_without_regard_to_case() {
            assert!(eq("Ana@Example.COM", "ana@example.com"));
            assert!(!eq("ana", "anna"));
            assert!(eq("ÅSA", "åsa"));
            assert!(starts_with("Stockholm", "STO") && !starts_with("St", "Sto"));
            assert!(ends_with("ana@Example.com", "@EXAMPLE.COM") && !ends_with("com", ".com"));
            assert!(contains("The Beta Testers", "beta t") && !contains("beta", "alpha"));
            assert!(contains("anything", ""));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::Path;

    fn holds(op: &str, values: Value, context: Value) -> bool {
        let wire: wire::Condition =
            serde_json::from_value(json!({"attribute": "a", "op": op, "values": values})).unwrap();
        let condition = Condition::compile(&wire, &Path::Root).unwrap();
        let context = Context::from_json(context.to_string().as_bytes()).unwrap();
        condition.holds(&context)
    }

    #[test]
    fn ignore_case_operators_hold_for_strings_of_any_case_and_never_for_a_missing_attribute() {
        let (se, number, missing) = (json!({"a": "se"}), json!({"a": 5}), json!({}));
        assert!(holds("in_ignore_case", json!(["SE", "NO"]), se.clone()));
        assert!(!holds("in_ignore_case", json!(["SE"]), number.clone()));
        assert!(!holds("in_ignore_case", json!(["SE"]), missing.clone()));
        assert!(!holds("not_in_ignore_case", json!(["SE"]), se.clone()));
        assert!(holds("not_in_ignore_case", json!(["NO"]), se.clone()));
        assert!(holds("not_in_ignore_case", json!(["SE"]), number));
        assert!(!holds("not_in_ignore_case", json!(["SE"]), missing.clone()));
        let email = json!({"a": "Ana@Example.com"});
        assert!(holds("ends_with_ignore_case", json!(["@EXAMPLE.COM"]), email.clone()));
        assert!(holds("starts_with_ignore_case", json!(["ANA@"]), email.clone()));
        assert!(holds("contains_ignore_case", json!(["example"]), email.clone()));
        assert!(!holds("contains_ignore_case", json!(["exampel"]), email));
        assert!(!holds("contains_ignore_case", json!(["a"]), missing));
    }
}
