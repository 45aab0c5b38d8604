//! Flags from other systems, as Rollgate flags that serve every unit what the old system did
//! (docs/import.md). A conversion without IO: the CLI reads the file, converts it, shows the
//! report, and writes the flags through the API.

pub mod unleash;

use crate::model::flag::{FlagDefinition, FlagState};

/// One converted flag: its definition and its state in the target environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedFlag {
    pub definition: FlagDefinition,
    pub state: FlagState,
    /// What the old system had that the flag carries differently, for the report.
    pub notes: Vec<String>,
}

/// What a conversion made of a file: the flags it could express, and those it could not, each
/// with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversion {
    pub flags: Vec<ImportedFlag>,
    pub skipped: Vec<Skipped>,
}

/// A flag the conversion could not express exactly, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

impl Conversion {
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
        for skipped in &self.skipped {
            lines.push(format!("skip    {}  {}", skipped.key, skipped.reason));
        }
        lines.push(format!(
            "{} to import, {} that cannot be expressed",
            self.flags.len(),
            self.skipped.len()
        ));
        lines.join("\n")
    }
}
