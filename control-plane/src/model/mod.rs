//! The domain: what Rollgate stores and serves, and the rules that need no IO. Every other
//! layer speaks these types; this module uses nothing else of the crate, so the store, the plans
//! and the service can all depend on it without depending on each other.

pub mod audit;
pub mod criteria;
pub mod edge;
pub mod flag;
pub mod metrics;
pub mod percent;
pub mod plan;
pub mod sample_ratio;
pub mod sequential;
pub mod time;
pub mod token;
pub mod webhook;

/// Why a request was refused: the caller's change or query is at fault, not the system. Each
/// kind maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    /// A change that something in progress stands in the way of, e.g. a manual rollout while
    /// a plan runs: 409, like `Conflict`.
    #[error("{0}")]
    Blocked(String),
    /// A key or value that cannot be taken as given, e.g. a key with a space in it.
    #[error("{0}")]
    Malformed(String),
    /// A change that cannot apply to things as they are, e.g. a rollout without a variant to
    /// expose, or archiving a flag a plan still drives.
    #[error("{0}")]
    Unprocessable(String),
    /// The resource changed since the revision the caller named.
    #[error("{0}")]
    Stale(String),
    /// The change would give a snapshot that flag-core rejects.
    #[error("the change gives an invalid snapshot: {0}")]
    Invalid(flag_core::ConfigError),
    /// The caller's token may use the route but not on this resource, e.g. a stage only named
    /// tokens may advance.
    #[error("{0}")]
    Forbidden(String),
    /// Over a quota: nothing was stored; the same again may pass after `retry_after` seconds.
    #[error("{detail}")]
    OverQuota { detail: String, retry_after: u64 },
}

impl Refusal {
    /// Makes an `Invalid` refusal's path relative to `prefix` (e.g. `flags.checkout-v2`) when it
    /// lies inside it, so it points into the request that changed that resource.
    pub fn relative_to(self, prefix: &str) -> Self {
        match self {
            Self::Invalid(mut error) => {
                if error.path == prefix {
                    error.path.clear();
                } else if let Some(inner) = error.path.strip_prefix(prefix)
                    && let Some(inner) =
                        inner.strip_prefix('.').or(inner.starts_with('[').then_some(inner))
                {
                    error.path = inner.to_owned();
                }
                Self::Invalid(error)
            }
            other => other,
        }
    }
}

/// Keys appear in URLs and snapshots: 1 to 128 of `A-Z a-z 0-9 . _ -`, starting with a letter
/// or a digit, so no tool normalises one out of a path (`.`, `..`) or reads it as an option.
/// Every key and name in the API keeps this one grammar.
pub fn check_key(what: &str, key: &str) -> Result<(), Refusal> {
    let valid = (1..=128).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_alphanumeric())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Refusal::Malformed(format!(
            "{what} keys are 1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or a digit"
        )))
    }
}

/// The longest reason or rationale, in characters.
pub const MAX_TEXT: usize = 1_000;
/// The longest stage label, in characters: it rides in every snapshot.
pub const MAX_LABEL: usize = 64;

/// A reason or rationale as the audit and decision logs keep it: trimmed, 1 to `MAX_TEXT`
/// characters, no control characters (no NUL, no escape sequences, one line).
pub fn check_text(field: &str, text: &str) -> Result<String, Refusal> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Refusal::Malformed(format!("`{field}` must not be empty")));
    }
    check_chars(field, text, MAX_TEXT)?;
    Ok(text.to_owned())
}

/// A stage label: 1 to `MAX_LABEL` characters, no control characters.
pub fn check_label(field: &str, label: &str) -> Result<(), Refusal> {
    if label.trim().is_empty() {
        return Err(Refusal::Unprocessable(format!("`{field}` must not be empty")));
    }
    check_chars(field, label, MAX_LABEL).map_err(|refusal| match refusal {
        Refusal::Malformed(detail) => Refusal::Unprocessable(detail),
        other => other,
    })
}

fn check_chars(field: &str, text: &str, max: usize) -> Result<(), Refusal> {
    if text.chars().count() > max {
        return Err(Refusal::Malformed(format!("`{field}` is longer than {max} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(Refusal::Malformed(format!(
            "`{field}` must not hold control characters (line breaks, tabs, escapes, NUL)"
        )));
    }
    Ok(())
}
