//! Why a snapshot was rejected. Only compiling can fail; evaluation never does.

use alloc::string::String;
use core::fmt;

/// A snapshot that cannot be compiled, with the JSON path of the offending element,
/// e.g. `flags[3].rules[1].conditions[0].op`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Where in the snapshot; empty for the document itself.
    pub path: String,
    /// What is wrong there.
    pub problem: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.path, self.problem)
        }
    }
}

/// What is wrong with one element of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Not JSON, or not the shape of a snapshot (a missing field, an unknown field, a wrong type).
    #[error("{0}")]
    Syntax(String),
    /// `schema` is not one this build reads.
    #[error("unsupported schema {0}; this evaluator reads schema 1")]
    UnsupportedSchema(u32),
    /// Two flags, two segments or two variants share a key.
    #[error("duplicate key `{0}`")]
    DuplicateKey(String),
    /// A rule names a segment the snapshot does not have.
    #[error("unknown segment `{0}`")]
    UnknownSegment(String),
    /// A prerequisite names a flag the snapshot does not have.
    #[error("unknown flag `{0}`")]
    UnknownFlag(String),
    /// A variant name that the flag does not define.
    #[error("unknown variant `{0}`")]
    UnknownVariant(String),
    /// A flag type other than boolean, string, number and object.
    #[error("unknown flag type `{0}`; expected boolean, string, number or object")]
    UnknownType(String),
    /// An operator this evaluator does not know.
    #[error("unknown operator `{0}`")]
    UnknownOperator(String),
    /// A value of the wrong JSON type.
    #[error("expected {0}")]
    WrongType(&'static str),
    /// An operator given the wrong number of values, or a condition missing its attribute.
    #[error("{0}")]
    BadOperands(&'static str),
    /// A percent outside 0..=100000.
    #[error("percent {0} is outside 0..=100000 (thousandths of a percent)")]
    PercentOutOfRange(u32),
    /// Weighted variants whose weights do not add up to 100000.
    #[error("weights sum to {0} thousandths of a percent, not 100000 (100%)")]
    WeightsSum(u64),
    /// A rollout with neither or both of `percent` and `weights`, or a percent without variants.
    #[error("{0}")]
    RolloutShape(&'static str),
    /// Prerequisites that lead back to the flag itself.
    #[error("prerequisite cycle through `{0}`")]
    PrerequisiteCycle(String),
    /// More keys in one set (flag keys, segment keys, an `in` list) than a set holds: 4 GiB.
    #[error("more than 4 GiB of keys")]
    TooManyKeys,
    /// A flag whose prerequisites, followed all the way down, evaluate too many flags.
    #[error("prerequisites expand to more than {0} flag evaluations")]
    PrerequisitesTooLarge(usize),
}

/// Shorthand for building an error at a path.
pub(crate) fn at(path: impl fmt::Display, problem: Problem) -> ConfigError {
    ConfigError { path: alloc::string::ToString::to_string(&path), problem }
}

/// Where in the snapshot compilation is: a borrowed chain that costs nothing to extend and is
/// formatted (`flags[3].rules[1].conditions[0].op`) only when an error needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    pub(crate) fn field(&'a self, name: &'a str) -> Self {
        Self::Field(self, name)
    }

    pub(crate) fn index(&'a self, index: usize) -> Self {
        Self::Index(self, index)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => Ok(()),
            Self::Field(Self::Root, name) => f.write_str(name),
            Self::Field(parent, name) => write!(f, "{parent}.{name}"),
            Self::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}
