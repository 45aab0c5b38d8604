//! API tokens: random, stored only as hashes, compared in constant time, each with one scope.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. Each scope includes the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
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
            Self::Read => "read",
            Self::Release => "release",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
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
}

/// A new token: `rg_` and 128 random bits in hex.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(format!("rg_{}", hex::encode(bytes)))
}

/// The form a token is stored and looked up in.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Every token, in memory, so authenticating a request never waits on the store. The API keeps
/// it in step with the store as tokens are created and deleted.
#[derive(Clone, Default)]
pub struct Tokens {
    by_digest: Arc<RwLock<HashMap<[u8; 32], Arc<Token>>>>,
    /// The store's readers revision: grows with every token change.
    revision: Arc<AtomicU64>,
}

impl Tokens {
    pub fn new(tokens: impl IntoIterator<Item = Token>) -> Self {
        let cache = Self::default();
        for token in tokens {
            cache.insert(token);
        }
        cache
    }

    /// The token presented, if it is known.
    pub fn find(&self, presented: &str) -> Option<Arc<Token>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let by_digest = self.by_digest.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (stored, token) = by_digest.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then(|| Arc::clone(token))
    }

    /// Adds a token; one whose stored hash is not SHA-256 hex could never match and is skipped.
    pub fn insert(&self, token: Token) {
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(&token.hash, &mut digest).is_err() {
            tracing::warn!(token = %token.name, "stored token hash is not SHA-256 hex; ignored");
            return;
        }
        let mut by_digest = self.by_digest.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_digest.insert(digest, Arc::new(token));
    }

    /// The readers revision and the hex SHA-256 of every read token that reaches
    /// `environment`: what an edge of it accepts.
    pub fn readers(&self, environment: &str) -> (u64, Vec<String>) {
        let by_digest = self.by_digest.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut readers: Vec<String> = by_digest
            .values()
            .filter(|token| token.scope == Scope::Read && token.reaches(environment))
            .map(|token| token.hash.clone())
            .collect();
        readers.sort();
        (self.revision.load(Ordering::SeqCst), readers)
    }

    pub fn set_revision(&self, revision: u64) {
        self.revision.fetch_max(revision, Ordering::SeqCst);
    }

    pub fn remove(&self, name: &str) {
        let mut by_digest = self.by_digest.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_digest.retain(|_, token| token.name != name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_128_bit_and_hash_stably() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 32);
        assert!(a.starts_with("rg_") && a[3..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash(&a), hash(&a));
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let stored =
            Token { name: "ci".into(), scope: Scope::Read, environment: None, hash: hash(&a) };
        let tokens = Tokens::new([stored.clone()]);
        assert_eq!(tokens.find(&a).as_deref(), Some(&stored));
        assert_eq!(tokens.find(&b), None);
        tokens.remove("ci");
        assert_eq!(tokens.find(&a), None);
    }

    #[test]
    fn scopes_include_the_ones_below() {
        assert!(Scope::Admin > Scope::Release && Scope::Release > Scope::Read);
        for scope in [Scope::Read, Scope::Release, Scope::Admin] {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("root"), None);
    }
}
