//! What the control plane sends an edge, and what the edge makes of it. Plain Rust, no Workers
//! types, so it is tested natively.
//!
//! An edge configuration is an *envelope*: the environment's snapshot, the SHA-256 digests of
//! the tokens that may read it, and two counters that only grow: the snapshot `version` and the
//! `readers_revision`. The control plane signs the envelope's bytes with HMAC-SHA256 under a
//! secret the edge holds. An edge takes an envelope only if the signature holds, it is for the
//! edge's environment, flag-core compiles it, and it is newer than what the edge has.
//!
//! Browsers: client tokens (`clients`) evaluate only the flags marked `client_visible`, and
//! pages may call the edge from the `allowed_origins` (CORS). Both are part of who may read, so
//! they move with the readers revision too.

use std::collections::HashSet;

use flag_core::ofrep::Audience;
use flag_core::{Engine, wire};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header carrying the envelope's signature: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-rollgate-signature";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    environment: String,
    version: u64,
    readers_revision: u64,
    /// Hex SHA-256 of each token that may evaluate here.
    readers: Vec<String>,
    /// Hex SHA-256 of each client token: browsers, shown client-visible flags only.
    #[serde(default)]
    clients: Vec<String>,
    /// Origins whose pages may call this edge, e.g. `https://app.example.com`.
    #[serde(default)]
    allowed_origins: Vec<String>,
    snapshot: wire::Snapshot,
}

/// Who may evaluate at an edge, as of a readers revision: what an envelope carries besides
/// the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Hex SHA-256 of each read token of the environment.
    pub readers: Vec<String>,
    /// Hex SHA-256 of each client token of the environment.
    pub clients: Vec<String>,
    /// Origins whose pages may call the edge.
    pub allowed_origins: Vec<String>,
}

/// A verified, compiled configuration.
pub struct Config {
    pub environment: String,
    pub version: u64,
    pub readers_revision: u64,
    readers: HashSet<[u8; 32]>,
    clients: HashSet<[u8; 32]>,
    allowed_origins: Vec<String>,
    /// The event-stream key of each reader and client, hashed (see `stream_key`).
    stream_keys: HashSet<[u8; 32]>,
    pub engine: Engine,
}

/// Why an envelope was refused; each maps to one HTTP status.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No signature, or one that does not hold: 401.
    Unsigned(&'static str),
    /// Signed, but unusable: 422.
    Invalid(String),
    /// Not newer than what the edge has: 422.
    Stale { have: (u64, u64), got: (u64, u64) },
}

/// Why a push was refused, as the edge's answer names it (its problem document's `refusal`
/// member), so the control plane acts on it without reading the prose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefusalKind {
    Unsigned,
    Invalid,
    Stale,
}

/// The edge's answer to a refused push: an RFC 9457 problem with the refusal's kind, and for a
/// stale push the position the edge has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalAnswer {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub status: u16,
    pub detail: String,
    pub refusal: RefusalKind,
    /// `[version, readers_revision]` the edge has, for a stale push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub have: Option<(u64, u64)>,
}

impl Refusal {
    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::Unsigned(_) => RefusalKind::Unsigned,
            Self::Invalid(_) => RefusalKind::Invalid,
            Self::Stale { .. } => RefusalKind::Stale,
        }
    }

    /// What the edge answers.
    pub fn answer(&self) -> RefusalAnswer {
        RefusalAnswer {
            problem_type: "about:blank".into(),
            status: self.status(),
            detail: self.detail(),
            refusal: self.kind(),
            have: match self {
                Self::Stale { have, .. } => Some(*have),
                _ => None,
            },
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Unsigned(_) => 401,
            Self::Invalid(_) | Self::Stale { .. } => 422,
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Self::Unsigned(why) => (*why).to_owned(),
            Self::Invalid(why) => why.clone(),
            Self::Stale { have, got } => format!(
                "stale: this edge has version {} (readers revision {}); the push has version {} (readers revision {})",
                have.0, have.1, got.0, got.1
            ),
        }
    }
}

/// Builds an envelope around a snapshot already serialized as JSON (the control plane's side).
pub fn envelope(
    environment: &str,
    version: u64,
    readers_revision: u64,
    access: &Access,
    snapshot_json: &[u8],
) -> Vec<u8> {
    let mut head = serde_json::json!({
        "environment": environment,
        "version": version,
        "readers_revision": readers_revision,
        "readers": access.readers,
    });
    // Only when used, so edges from before browsers were served take the envelopes of
    // environments that serve none.
    if !access.clients.is_empty() {
        head["clients"] = access.clients.clone().into();
    }
    if !access.allowed_origins.is_empty() {
        head["allowed_origins"] = access.allowed_origins.clone().into();
    }
    let head = head.to_string();
    // Splice the snapshot in as it is, rather than parsing and serializing it again.
    let mut envelope = Vec::with_capacity(head.len() + snapshot_json.len() + 16);
    envelope.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    envelope.extend_from_slice(b",\"snapshot\":");
    envelope.extend_from_slice(snapshot_json);
    envelope.push(b'}');
    envelope
}

/// The signature header's value for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, body).finalize().into_bytes()))
}

/// Checks `signature` (the header's value) against `body`, in constant time.
pub fn verify(secret: &[u8], body: &[u8], signature: Option<&str>) -> Result<(), Refusal> {
    if secret.is_empty() {
        return Err(Refusal::Unsigned("this edge has no push secret configured"));
    }
    let signature = signature.ok_or(Refusal::Unsigned("the push is not signed"))?;
    let digest = signature
        .strip_prefix("sha256=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or(Refusal::Unsigned("the signature is not sha256=<hex>"))?;
    mac(secret, body)
        .verify_slice(&digest)
        .map_err(|_| Refusal::Unsigned("the signature does not match the body"))
}

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    mac
}

impl Config {
    /// Parses and compiles an envelope whose signature was already verified.
    pub fn from_envelope(body: &[u8], environment: &str) -> Result<Self, Refusal> {
        flag_core::json::unique_keys(body)
            .map_err(|error| Refusal::Invalid(format!("not an edge envelope: {error}")))?;
        let envelope: Envelope = serde_json::from_slice(body)
            .map_err(|error| Refusal::Invalid(format!("not an edge envelope: {error}")))?;
        if envelope.environment != environment || envelope.snapshot.environment != environment {
            return Err(Refusal::Invalid(format!(
                "the envelope is for environment `{}`; this edge serves `{environment}`",
                envelope.environment
            )));
        }
        if envelope.snapshot.version != envelope.version {
            return Err(Refusal::Invalid(
                "the envelope and its snapshot disagree on the version".into(),
            ));
        }
        let readers = digests("reader", &envelope.readers)?;
        let clients = digests("client", &envelope.clients)?;
        let stream_keys = readers
            .iter()
            .chain(&clients)
            .map(|digest| Sha256::digest(stream_key(digest, environment)).into())
            .collect();
        let engine = Engine::from_snapshot(envelope.snapshot)
            .map_err(|error| Refusal::Invalid(format!("the snapshot does not compile: {error}")))?;
        Ok(Self {
            environment: envelope.environment,
            version: envelope.version,
            readers_revision: envelope.readers_revision,
            readers,
            clients,
            allowed_origins: envelope.allowed_origins,
            stream_keys,
            engine,
        })
    }

    /// The counters that order configurations.
    pub fn position(&self) -> (u64, u64) {
        (self.version, self.readers_revision)
    }

    /// Whether this configuration may replace one at `have`: neither counter goes back, and
    /// at least one moves on. So a delayed or replayed envelope never undoes a newer one (a
    /// revoked token stays revoked).
    pub fn supersedes(&self, have: Option<(u64, u64)>) -> Result<(), Refusal> {
        let got = self.position();
        match have {
            Some(have) if !newer(got, Some(have)) => Err(Refusal::Stale { have, got }),
            _ => Ok(()),
        }
    }

    /// Whom `token` evaluates for, if it may evaluate here at all.
    pub fn audience(&self, token: &str) -> Option<Audience> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if holds(&self.readers, &digest) {
            Some(Audience::Server)
        } else if holds(&self.clients, &digest) {
            Some(Audience::Client)
        } else {
            None
        }
    }

    /// The key an event-stream URL carries for `token` (a browser's `EventSource` sends no
    /// headers). It opens the event stream and nothing else; see `stream_key`.
    pub fn stream_key_for(&self, token: &str) -> String {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        hex::encode(stream_key(&digest, &self.environment))
    }

    /// Whether `key` is the event-stream key of a reader or client.
    pub fn opens_stream(&self, key: &str) -> bool {
        let mut decoded = [0u8; 32];
        if hex::decode_to_slice(key, &mut decoded).is_err() {
            return false;
        }
        holds(&self.stream_keys, &Sha256::digest(decoded).into())
    }

    /// Whether pages from `origin` may call this edge.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|allowed| allowed == origin)
    }
}

/// Whether a configuration at `got` may replace one at `have`: neither counter lower, one
/// higher.
pub fn newer(got: (u64, u64), have: Option<(u64, u64)>) -> bool {
    have.is_none_or(|have| got.0 >= have.0 && got.1 >= have.1 && got != have)
}

/// An event-stream key: HMAC-SHA256 keyed with the token's digest. It reveals neither, and only
/// who has the token or its digest (the edge, the control plane, whoever reads envelopes) can
/// make one; it opens the event stream and nothing else.
fn stream_key(token_digest: &[u8; 32], environment: &str) -> [u8; 32] {
    let mut mac = mac(token_digest, b"rollgate event stream\0");
    mac.update(environment.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Set lookup by a hash, then a constant-time comparison of the entry found.
fn holds(set: &HashSet<[u8; 32]>, digest: &[u8; 32]) -> bool {
    set.get(digest).is_some_and(|stored| bool::from(stored.ct_eq(digest)))
}

fn digests(what: &str, hex_digests: &[String]) -> Result<HashSet<[u8; 32]>, Refusal> {
    hex_digests
        .iter()
        .map(|text| {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(text, &mut digest).map_err(|_| {
                Refusal::Invalid(format!("{what} `{text}` is not a SHA-256 hex digest"))
            })?;
            Ok(digest)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"push-secret-for-tests";

    #[test]
    fn built_envelopes_parse() {
        let snapshot = br#"{"schema":1,"environment":"production","version":9,"flags":[]}"#;
        let readers = vec![hex::encode(Sha256::digest(b"rg_reader"))];
        let access = Access { readers, ..Access::default() };
        let built = super::envelope("production", 9, 4, &access, snapshot);
        // Without browsers, an envelope is what edges from before them take.
        assert!(!String::from_utf8_lossy(&built).contains("clients"));
        let config = Config::from_envelope(&built, "production").unwrap();
        assert_eq!(config.position(), (9, 4));
        assert_eq!(config.audience("rg_reader"), Some(Audience::Server));

        let access = Access {
            clients: vec![hex::encode(Sha256::digest(b"rg_page"))],
            allowed_origins: vec!["https://app.example.com".into()],
            ..access
        };
        let built = super::envelope("production", 9, 5, &access, snapshot);
        let config = Config::from_envelope(&built, "production").unwrap();
        assert_eq!(config.audience("rg_reader"), Some(Audience::Server));
        assert_eq!(config.audience("rg_page"), Some(Audience::Client));
        assert_eq!(config.audience("rg_other"), None);
        assert!(config.allows_origin("https://app.example.com"));
        assert!(!config.allows_origin("https://app.example.com.evil.test"));
        assert!(!config.allows_origin("http://app.example.com"));
    }

    #[test]
    fn stream_keys_open_the_stream_for_their_environment_only() {
        let snapshot = br#"{"schema":1,"environment":"production","version":9,"flags":[]}"#;
        let access = Access {
            readers: vec![hex::encode(Sha256::digest(b"rg_reader"))],
            clients: vec![hex::encode(Sha256::digest(b"rg_page"))],
            ..Access::default()
        };
        let built = super::envelope("production", 9, 4, &access, snapshot);
        let config = Config::from_envelope(&built, "production").unwrap();
        let key = config.stream_key_for("rg_reader");
        assert!(config.opens_stream(&key));
        assert!(config.opens_stream(&config.stream_key_for("rg_page")));
        assert!(!config.opens_stream(&config.stream_key_for("rg_other")));
        assert!(!config.opens_stream("rg_reader"));
        assert!(!config.opens_stream(""));
        let staging = hex::encode(stream_key(&Sha256::digest(b"rg_reader").into(), "staging"));
        assert!(!config.opens_stream(&staging));
    }

    fn envelope(version: u64, readers_revision: u64) -> Vec<u8> {
        let reader = hex::encode(Sha256::digest(b"rg_reader"));
        json!({
            "environment": "production", "version": version, "readers_revision": readers_revision,
            "readers": [reader],
            "snapshot": {"schema": 1, "environment": "production", "version": version, "flags": [
                {"key": "dark", "type": "boolean", "variants": {"on": true, "off": false},
                 "off_variant": "off", "fallthrough": {"variant": "on"}}
            ]}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn signatures_hold_only_for_the_signed_body_and_secret() {
        let body = envelope(3, 1);
        let signature = sign(SECRET, &body);
        assert_eq!(verify(SECRET, &body, Some(&signature)), Ok(()));
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert_eq!(verify(SECRET, &tampered, Some(&signature)).unwrap_err().status(), 401);
        assert_eq!(verify(b"other", &body, Some(&signature)).unwrap_err().status(), 401);
        assert_eq!(verify(SECRET, &body, None).unwrap_err().status(), 401);
        assert_eq!(verify(SECRET, &body, Some("sha256=zz")).unwrap_err().status(), 401);
        assert_eq!(verify(b"", &body, Some(&signature)).unwrap_err().status(), 401);
    }

    #[test]
    fn envelopes_compile_and_admit_their_readers() {
        let config = Config::from_envelope(&envelope(3, 1), "production").unwrap();
        assert_eq!(config.position(), (3, 1));
        assert_eq!(config.audience("rg_reader"), Some(Audience::Server));
        assert_eq!(config.audience("rg_other"), None);
        assert_eq!(config.engine.evaluate("dark", &flag_core::Context::new()).variant, Some("on"));
        let refused = Config::from_envelope(&envelope(3, 1), "staging").err().unwrap();
        assert_eq!(refused.status(), 422);
        assert_eq!(Config::from_envelope(b"{}", "production").err().unwrap().status(), 422);
    }

    #[test]
    fn only_newer_envelopes_supersede() {
        let config = Config::from_envelope(&envelope(5, 2), "production").unwrap();
        assert!(config.supersedes(None).is_ok());
        assert!(config.supersedes(Some((4, 2))).is_ok());
        assert!(config.supersedes(Some((5, 1))).is_ok());
        for have in [(5, 2), (6, 2), (5, 3), (6, 1)] {
            assert_eq!(config.supersedes(Some(have)).unwrap_err().status(), 422, "{have:?}");
        }
    }

    #[test]
    fn a_refusal_answers_its_kind_and_for_a_stale_push_the_position_held() {
        let config = Config::from_envelope(&envelope(5, 2), "production").unwrap();
        let stale = config.supersedes(Some((6, 2))).unwrap_err().answer();
        let text = serde_json::to_string(&stale).unwrap();
        let read: RefusalAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!((read.refusal, read.have, read.status), (RefusalKind::Stale, Some((6, 2)), 422));
        let unsigned = verify(SECRET, b"{}", None).unwrap_err().answer();
        assert_eq!(
            (unsigned.refusal, unsigned.have, unsigned.status),
            (RefusalKind::Unsigned, None, 401)
        );
        assert!(!serde_json::to_string(&unsigned).unwrap().contains("have"));
    }

    #[test]
    fn an_envelope_naming_a_key_twice_is_refused() {
        let body = String::from_utf8(envelope(5, 2)).unwrap();
        let twice = body.replacen(r#""version":5"#, r#""version":5,"version":6"#, 1);
        let refused = Config::from_envelope(twice.as_bytes(), "production").err().unwrap();
        assert_eq!(refused.status(), 422);
        assert!(refused.detail().contains("duplicate key `version`"), "{}", refused.detail());
    }
}
