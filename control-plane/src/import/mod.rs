//! Flags from other systems, as Rollgate flags that serve every unit what the old system did
//! (docs/import.md). A conversion without IO: the CLI reads the file, converts it, shows the
//! report, and sends the flags to the server's import, which writes them in one change.

pub mod flagd;
pub mod unleash;

use flag_core::wire::{self, Condition};
use serde_json::Value;

use crate::model::flag::{FlagDefinition, FlagState, wire_flag};

/// A test of the old system as alternatives, each a set of conditions that must all hold: `[]`
/// never holds, `[[]]` always does.
pub(crate) type Alternatives = Vec<Vec<Condition>>;

/// A condition on `attribute`.
pub(crate) fn test(attribute: &str, op: &str, values: Vec<Value>) -> Condition {
    Condition { attribute: Some(attribute.to_owned()), op: op.to_owned(), values }
}

/// The attribute among `values`, or (negated) not. Rollgate's `not_in` does not hold for a
/// missing attribute, but both Unleash's `NOT_IN` and JSONLogic's negation do: two rules.
pub(crate) fn membership(attribute: &str, values: Vec<Value>, negated: bool) -> Alternatives {
    match (values.is_empty(), negated) {
        (true, false) => Vec::new(),
        (true, true) => vec![Vec::new()],
        (false, false) => vec![vec![test(attribute, "in", values)]],
        (false, true) => vec![
            vec![test(attribute, "not_exists", Vec::new())],
            vec![test(attribute, "not_in", values)],
        ],
    }
}

/// The number `text` writes plainly (`42`, `2.5`; not `042` or `1e3`): apps may send as a
/// JSON number what the old system compared as text.
pub(crate) fn plain_number(text: &str) -> Option<Value> {
    let number = text.parse::<f64>().ok().filter(|n| n.is_finite() && n.to_string() == text)?;
    Some(Value::from(number))
}

/// Both: each alternative of `first` with each of `second`, leaving out those no unit meets;
/// `None` if that takes more than `max`.
pub(crate) fn all_of(
    first: &Alternatives,
    second: &Alternatives,
    max: usize,
) -> Option<Alternatives> {
    if first.len() * second.len() > 4 * max {
        return None;
    }
    let mut product = Vec::new();
    for a in first {
        for b in second {
            let conditions: Vec<Condition> = a.iter().chain(b).cloned().collect();
            if !contradictory(&conditions) {
                product.push(conditions);
            }
        }
    }
    (product.len() <= max).then_some(product)
}

/// Whether the conditions require an attribute both missing and tested, which no unit meets.
fn contradictory(conditions: &[Condition]) -> bool {
    conditions.iter().any(|missing| {
        missing.op == "not_exists"
            && conditions.iter().any(|c| c.attribute == missing.attribute && c.op != "not_exists")
    })
}

/// One converted flag: its definition and its state in the target environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedFlag {
    pub definition: FlagDefinition,
    pub state: FlagState,
    /// What the old system had that the flag carries differently, for the report.
    pub notes: Vec<String>,
}

/// What a conversion made of a file: the flags it could express, those it could not, each with
/// why, and those left out because not having them serves what the old system did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversion {
    pub flags: Vec<ImportedFlag>,
    pub skipped: Vec<Skipped>,
    pub left_out: Vec<Skipped>,
}

/// A flag the conversion did not import, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

impl Conversion {
    /// Skips, until none is left, each flag that depends on one not imported, whose metadata
    /// or labels the API would refuse, or that does not compile: so what is imported is
    /// exactly what the report lists, and the server does not refuse the import for it.
    pub fn settle(&mut self) {
        loop {
            let keys: std::collections::HashSet<String> =
                self.flags.iter().map(|f| f.definition.key.clone()).collect();
            let fault = self.flags.iter().enumerate().find_map(|(index, flag)| {
                let missing = flag.state.prerequisites.iter().find(|p| !keys.contains(&p.flag));
                if let Some(missing) = missing {
                    return Some((
                        index,
                        format!("it depends on `{}`, which is not imported", missing.flag),
                    ));
                }
                let checked =
                    flag.definition.check_metadata().and_then(|()| flag.state.check_labels());
                checked.err().map(|refusal| (index, refusal.to_string()))
            });
            let fault = fault.or_else(|| self.compile_fault());
            let Some((index, reason)) = fault else {
                return;
            };
            let flag = self.flags.remove(index);
            self.skipped.push(Skipped { key: flag.definition.key, reason });
        }
    }

    /// The first flag the evaluator refuses, compiled together as an environment would be.
    fn compile_fault(&self) -> Option<(usize, String)> {
        let flags = self
            .flags
            .iter()
            .map(|flag| wire_flag(flag.definition.clone(), flag.state.clone()))
            .collect();
        let snapshot = wire::Snapshot {
            schema: wire::SCHEMA,
            environment: "import".into(),
            version: 1,
            flags,
            segments: Vec::new(),
        };
        let error = flag_core::Engine::from_snapshot(snapshot).err()?;
        // `flags[3].rules[0]…`: the flag at fault; anything else, the first.
        let index = error
            .path
            .strip_prefix("flags[")
            .and_then(|rest| rest.split(']').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
            .min(self.flags.len().saturating_sub(1));
        Some((index, format!("Rollgate cannot evaluate it: {error}")))
    }

    /// The report the CLI prints: each flag imported, with its notes, then each skipped one.
    pub fn report(&self) -> String {
        let mut lines = Vec::new();
        for flag in &self.flags {
            lines.push(format!(
                "import  {}  ({} rules)",
                flag.definition.key,
                flag.state.rules.len()
            ));
            for note in &flag.notes {
                lines.push(format!("          note: {note}"));
            }
        }
        for left_out in &self.left_out {
            lines.push(format!("leave   {}  {}", left_out.key, left_out.reason));
        }
        for skipped in &self.skipped {
            lines.push(format!("skip    {}  {}", skipped.key, skipped.reason));
        }
        let left_out = match self.left_out.len() {
            0 => String::new(),
            n => format!(", {n} left out"),
        };
        lines.push(format!(
            "{} to import, {} that cannot be expressed{left_out}",
            self.flags.len(),
            self.skipped.len()
        ));
        lines.join("\n")
    }
}
