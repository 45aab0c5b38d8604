//! API tokens: random, stored only as hashes, compared in constant time, each with one scope.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use edge_worker::config::Access;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::model::token::{Scope, Token};

/// How long `generate`'s tokens are: a token given by hand (`ROLLGATE_ADMIN_TOKEN`) must be at
/// least this long.
pub const TOKEN_LENGTH: usize = 3 + 32;

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

/// Who may read, as the store has it at a readers revision: every token, and the origins each
/// environment's pages may call from.
#[derive(Debug, Default)]
pub struct Readers {
    pub tokens: Vec<Token>,
    pub allowed_origins: HashMap<String, Vec<String>>,
}

/// Every token, in memory, so authenticating a request never waits on the store. The service
/// keeps it in step with the store: each token change is applied right after it commits.
#[derive(Clone, Default)]
pub struct Tokens {
    by_digest: Arc<RwLock<HashMap<[u8; 32], Known>>>,
    /// Written with `by_digest`, under its lock.
    allowed_origins: Arc<RwLock<HashMap<String, Vec<String>>>>,
    /// The store's readers revision: grows with every change of tokens or allowed origins.
    revision: Arc<AtomicU64>,
}

struct Known {
    token: Arc<Token>,
    /// Becomes `true` when the token is deleted: what its open streams wait for.
    revoked: watch::Sender<bool>,
}

impl Tokens {
    /// The known token called `name`, if any.
    pub fn named(&self, name: &str) -> Option<Arc<Token>> {
        self.read()
            .values()
            .find(|known| known.token.name == name)
            .map(|known| Arc::clone(&known.token))
    }

    /// The token presented, if it is known.
    pub fn find(&self, presented: &str) -> Option<Arc<Token>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let by_digest = self.read();
        let (stored, known) = by_digest.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then(|| Arc::clone(&known.token))
    }

    /// Turns `true` when `token` is deleted; `None` if it already is.
    pub fn revocation(&self, token: &Token) -> Option<watch::Receiver<bool>> {
        let digest = digest_of(token)?;
        self.read().get(&digest).map(|known| known.revoked.subscribe())
    }

    /// The readers revision, and who may evaluate at an edge of `environment`: the hex SHA-256
    /// of every read and client token that reaches it, and its allowed origins.
    pub fn readers(&self, environment: &str) -> (u64, Access) {
        let by_digest = self.read();
        let digests = |scope: Scope| {
            let mut digests: Vec<String> = by_digest
                .values()
                .filter(|known| known.token.scope == scope && known.token.reaches(environment))
                .map(|known| known.token.hash.clone())
                .collect();
            digests.sort();
            digests
        };
        let access = Access {
            readers: digests(Scope::Read),
            clients: digests(Scope::Client),
            allowed_origins: self.allowed_origins(environment),
        };
        (self.revision.load(Ordering::SeqCst), access)
    }

    /// Whether some environment lets pages from `origin` call it.
    pub fn allowed_anywhere(&self, origin: &[u8]) -> bool {
        let origins = self.allowed_origins.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        origins.values().flatten().any(|allowed| allowed.as_bytes() == origin)
    }

    /// Whether `environment` lets pages from `origin` call it.
    pub fn allowed_in(&self, environment: &str, origin: &[u8]) -> bool {
        let origins = self.allowed_origins.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        origins
            .get(environment)
            .is_some_and(|allowed| allowed.iter().any(|allowed| allowed.as_bytes() == origin))
    }

    /// The origins whose pages may call OFREP for `environment` (CORS).
    pub fn allowed_origins(&self, environment: &str) -> Vec<String> {
        let origins = self.allowed_origins.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        origins.get(environment).cloned().unwrap_or_default()
    }

    /// The readers revision the tokens are at.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    /// Makes the tokens the store's at `revision`, unless a later revision is already applied.
    /// A token that is gone no longer authenticates, and whatever waits on its revocation
    /// ends; one that stays keeps its open streams.
    pub fn replace_all(&self, revision: u64, readers: Readers) {
        let mut by_digest = self.write();
        if revision < self.revision.load(Ordering::SeqCst) {
            return;
        }
        let Readers { tokens, allowed_origins } = readers;
        *self.allowed_origins.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            allowed_origins;
        let mut wanted: HashMap<[u8; 32], Token> = HashMap::new();
        for token in tokens {
            match digest_of(&token) {
                Some(digest) => drop(wanted.insert(digest, token)),
                None => tracing::warn!(
                    token = %token.name,
                    "stored token hash is not SHA-256 hex; ignored"
                ),
            }
        }
        by_digest.retain(|digest, known| {
            let keep = wanted.get(digest).is_some_and(|token| *token == *known.token);
            if !keep {
                known.revoked.send_replace(true);
            }
            keep
        });
        for (digest, token) in wanted {
            by_digest.entry(digest).or_insert_with(|| Known {
                token: Arc::new(token),
                revoked: watch::channel(false).0,
            });
        }
        self.revision.store(revision, Ordering::SeqCst);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], Known>> {
        self.by_digest.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], Known>> {
        self.by_digest.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Failed authentications an address may make in a `BRAKE_WINDOW` before its further unknown
/// tokens get 429.
pub const BRAKE_FAILURES: u32 = 20;
pub const BRAKE_WINDOW: Duration = Duration::from_secs(10);
/// Addresses remembered before the expired ones are forgotten.
const BRAKE_ADDRESSES: usize = 4096;

/// A brake on guessing tokens: counts each address's unknown tokens, and once one has made
/// `BRAKE_FAILURES` in a window, refuses its further unknown tokens until the window ends.
/// Known tokens are never braked, from any address.
#[derive(Default)]
pub struct Brake {
    /// When each address's window began, and its failures in it.
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Brake {
    /// Records an unknown token from `address`; `Some(wait)` if the address is braked, for how
    /// long.
    pub fn failed(&self, address: IpAddr) -> Option<Duration> {
        let address = guesser(address);
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if failures.len() >= BRAKE_ADDRESSES {
            failures.retain(|_, (began, _)| now.duration_since(*began) < BRAKE_WINDOW);
        }
        let (began, count) = failures.entry(address).or_insert((now, 0));
        if now.duration_since(*began) >= BRAKE_WINDOW {
            (*began, *count) = (now, 0);
        }
        if *count >= BRAKE_FAILURES {
            return Some(BRAKE_WINDOW.saturating_sub(now.duration_since(*began)));
        }
        *count += 1;
        None
    }
}

/// Who is guessing: an IPv4 address, or an IPv6 address's /64, which one host commonly holds
/// whole.
fn guesser(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

fn digest_of(token: &Token) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&token.hash, &mut digest).ok()?;
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(token: &Token) -> Readers {
        Readers { tokens: vec![token.clone()], ..Readers::default() }
    }

    #[test]
    fn tokens_are_random_128_bit_and_hash_stably() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LENGTH);
        assert!(a.starts_with("rg_") && a[3..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash(&a), hash(&a));
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let stored =
            Token { name: "ci".into(), scope: Scope::Read, environment: None, hash: hash(&a) };
        let tokens = Tokens::default();
        tokens.replace_all(1, only(&stored));
        assert_eq!(tokens.find(&a).as_deref(), Some(&stored));
        assert_eq!(tokens.find(&b), None);
        let mut revoked = tokens.revocation(&stored).unwrap();
        assert!(!*revoked.borrow_and_update());
        tokens.replace_all(2, only(&stored));
        assert!(!*revoked.borrow_and_update(), "a token that stays keeps its streams");
        tokens.replace_all(3, Readers::default());
        assert_eq!(tokens.find(&a), None);
        assert!(*revoked.borrow_and_update(), "whoever held the token learns it is gone");
        assert!(tokens.revocation(&stored).is_none());
        tokens.replace_all(2, only(&stored));
        assert_eq!(tokens.find(&a), None, "an older revision undoes nothing");
        assert_eq!(tokens.revision(), 3);
    }

    #[test]
    fn the_brake_holds_an_address_after_its_failures_and_no_other() {
        let brake = Brake::default();
        let (guesser, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..BRAKE_FAILURES {
            assert_eq!(brake.failed(guesser), None);
        }
        let wait = brake.failed(guesser).expect("braked");
        assert!(wait > Duration::ZERO && wait <= BRAKE_WINDOW);
        assert_eq!(brake.failed(other), None, "another address is not braked");

        let (v6, same_64, other_64): (IpAddr, IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::ffff:2".parse().unwrap(),
            "2001:db8:0:1::1".parse().unwrap(),
        );
        for _ in 0..BRAKE_FAILURES {
            assert_eq!(brake.failed(v6), None);
        }
        assert!(brake.failed(same_64).is_some(), "an IPv6 /64 counts as one address");
        assert_eq!(brake.failed(other_64), None);
    }
}
