//! API tokens as stored: a name, a scope, an optional environment, and the SHA-256 of the
//! secret. Generating, hashing and looking tokens up is `auth`'s.

use serde::{Deserialize, Serialize};

use crate::model::time::Timestamp;

/// What a token may do. Each scope includes the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// OFREP for browsers: safe to ship in a page. Evaluates only the flags marked
    /// `client_visible`, in the one environment it is bound to.
    Client,
    /// Snapshots, the stream and OFREP: what edges and apps get.
    Read,
    /// Flags, segments, rollouts and kills: release managers.
    Release,
    /// Tokens and environments.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Read => "read",
            Self::Release => "release",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "client" => Some(Self::Client),
            "read" => Some(Self::Read),
            "release" => Some(Self::Release),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A stored token: its name (recorded as the actor of its changes), scope, the environment it
/// is bound to if any, and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub scope: Scope,
    pub environment: Option<String>,
    pub hash: String,
}

impl Token {
    /// Whether this token may act on `environment`.
    pub fn reaches(&self, environment: &str) -> bool {
        self.environment.as_deref().is_none_or(|bound| bound == environment)
    }

    /// What the audit log records of a token: never its hash.
    pub fn audited(&self) -> serde_json::Value {
        serde_json::json!({"name": self.name, "scope": self.scope, "environment": self.environment})
    }
}

/// A token as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub token: Token,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_include_the_ones_below() {
        assert!(Scope::Admin > Scope::Release && Scope::Release > Scope::Read);
        assert!(Scope::Read > Scope::Client);
        for scope in [Scope::Client, Scope::Read, Scope::Release, Scope::Admin] {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("root"), None);
    }
}
