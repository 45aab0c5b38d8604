//! The audit log: who changed what, when, and why.

use serde::Serialize;
use serde_json::Value;

use crate::model::time::Timestamp;

/// One audited change.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    #[schema(value_type = String)]
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub environment: Option<String>,
    pub flag: Option<String>,
    pub segment: Option<String>,
    pub reason: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// A change to record, in the transaction that makes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub environment: Option<String>,
    pub flag: Option<String>,
    pub segment: Option<String>,
    pub reason: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl AuditEntry {
    /// `action` by `actor`, about nothing in particular yet.
    pub fn new(actor: &str, action: &str) -> Self {
        Self { actor: actor.to_owned(), action: action.to_owned(), ..Self::default() }
    }
}

/// Which audit records to return: empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub flag: Option<String>,
    pub segment: Option<String>,
    pub environment: Option<String>,
    /// Records at or after it.
    pub since: Option<Timestamp>,
    /// At most this many, from the oldest matching, or from the newest if `newest_first`.
    pub limit: Option<u32>,
    pub newest_first: bool,
}
