//! The store's change pipeline: one transaction per change, validated by flag-core, versioned
//! and audited; a rejected change leaves nothing behind.

use std::path::Path;
use std::sync::Arc;

use control_plane::clock::SystemClock;
use control_plane::store::sqlite::SqliteStore;
use control_plane::store::{
    AuditFilter, Environment, FlagDefinition, FlagState, Store, StoreError,
};
use flag_core::{Context, Engine, Reason, wire};
use serde_json::json;

async fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join("rollgate.db"), Arc::new(SystemClock)).await.unwrap()
}

fn checkout() -> FlagDefinition {
    serde_json::from_value(json!({
        "key": "checkout-v2", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"
    }))
    .unwrap()
}

fn rollout(percent: u32) -> FlagState {
    serde_json::from_value(json!({
        "enabled": true,
        "fallthrough": {"rollout": {"percent": percent, "inside": "on", "outside": "off", "stage": "beta"}}
    }))
    .unwrap()
}

fn environment(name: &str, version: u64) -> Environment {
    Environment { name: name.into(), version }
}

#[tokio::test]
async fn first_start_creates_staging_and_production_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert_eq!(
        store.environments().await.unwrap(),
        [environment("production", 1), environment("staging", 1)]
    );
    drop(store);
    let store = open(dir.path()).await;
    assert_eq!(
        store.environments().await.unwrap(),
        [environment("production", 1), environment("staging", 1)],
        "reopening neither duplicates nor bumps anything"
    );
    assert_eq!(store.audit(AuditFilter::default()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_database_file_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).await);
    let connection = rusqlite_connection(&dir.path().join("rollgate.db"));
    let mode: String = connection.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal", "WAL persists in the file");
}

fn rusqlite_connection(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[tokio::test]
async fn a_new_flag_reaches_every_environment_serving_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let published = store.create_flag(checkout(), "ana").await.unwrap().published;
    assert_eq!(
        published.iter().map(|p| (p.environment.as_str(), p.version)).collect::<Vec<_>>(),
        [("production", 2), ("staging", 2)]
    );

    let snapshot = store.snapshot("production").await.unwrap();
    assert_eq!(snapshot, published[0]);
    let engine = Engine::from_json(&snapshot.json).unwrap();
    assert_eq!(engine.version(), 2);
    let evaluation = engine.evaluate("checkout-v2", &Context::with_targeting_key("user-1"));
    assert_eq!((evaluation.variant, evaluation.reason), (Some("off"), Reason::Static));

    let audit = store.audit(AuditFilter::default()).await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.action.as_str(), last.flag.as_deref()),
        ("ana", "flag.create", Some("checkout-v2"))
    );
    assert_eq!(last.after, Some(serde_json::to_value(checkout()).unwrap()));
}

#[tokio::test]
async fn a_rollout_bump_versions_one_environment_and_is_audited_with_before_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_flag(checkout(), "ana").await.unwrap();
    let published =
        store.set_flag_state("production", "checkout-v2", rollout(25_000), "ben").await.unwrap();
    assert_eq!(published.version, 3);
    assert_eq!(store.snapshot("staging").await.unwrap().version, 2, "staging is untouched");

    let engine = Engine::from_json(&published.json).unwrap();
    // rg1: checkout-v2:user-2 is bucket 14146, inside 25%; user-1 is 70650, outside.
    assert_eq!(
        engine.evaluate("checkout-v2", &Context::with_targeting_key("user-2")).variant,
        Some("on")
    );
    assert_eq!(
        engine.evaluate("checkout-v2", &Context::with_targeting_key("user-1")).variant,
        Some("off")
    );

    let last = store.audit(AuditFilter::default()).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.action.as_str(), last.environment.as_deref()),
        ("ben", "flag.state", Some("production"))
    );
    assert_eq!(last.before.unwrap()["fallthrough"], json!({"variant": "off"}));
    assert_eq!(last.after.unwrap()["fallthrough"]["rollout"]["percent"], json!(25_000));
}

#[tokio::test]
async fn a_change_flag_core_rejects_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_flag(checkout(), "ana").await.unwrap();
    let before = (
        store.snapshot("production").await.unwrap(),
        store.audit(AuditFilter::default()).await.unwrap().len(),
    );

    let error = store
        .set_flag_state("production", "checkout-v2", rollout(100_001), "ben")
        .await
        .unwrap_err();
    let StoreError::Invalid(error) = error else { panic!("expected Invalid, got {error:?}") };
    assert_eq!(error.path, "flags.checkout-v2.fallthrough.rollout.percent");

    let mut bad_rule = rollout(5_000);
    bad_rule.rules.push(wire::Rule {
        conditions: vec![wire::Condition {
            attribute: Some("country".into()),
            op: "matches".into(),
            values: vec![json!("SE")],
        }],
        segments: vec![],
        serve: wire::Serve::Variant("on".into()),
    });
    assert!(matches!(
        store.set_flag_state("production", "checkout-v2", bad_rule, "ben").await,
        Err(StoreError::Invalid(_))
    ));

    let mut wrong_type = checkout();
    wrong_type.key = "banner".into();
    wrong_type.variants.insert("on".into(), json!("yes"));
    assert!(matches!(store.create_flag(wrong_type, "ana").await, Err(StoreError::Invalid(_))));

    let after = (
        store.snapshot("production").await.unwrap(),
        store.audit(AuditFilter::default()).await.unwrap().len(),
    );
    assert_eq!(before, after, "snapshot, version and audit log are unchanged");
    assert_eq!(
        store.environments().await.unwrap(),
        [environment("production", 2), environment("staging", 2)]
    );
}

#[tokio::test]
async fn unknown_duplicate_and_malformed_keys_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_flag(checkout(), "ana").await.unwrap();
    assert!(matches!(store.create_flag(checkout(), "ana").await, Err(StoreError::Conflict(_))));
    assert!(matches!(
        store.create_environment("staging", "ana").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(store.snapshot("qa").await, Err(StoreError::NotFound(m)) if m.contains("qa")));
    assert!(
        matches!(store.set_flag_state("qa", "checkout-v2", rollout(1), "ben").await, Err(StoreError::NotFound(m)) if m.contains("qa"))
    );
    assert!(
        matches!(store.set_flag_state("production", "nope", rollout(1), "ben").await, Err(StoreError::NotFound(m)) if m.contains("nope"))
    );
    let mut bad = checkout();
    for key in ["", "has space", "a/b", &"x".repeat(129)] {
        bad.key = key.into();
        assert!(
            matches!(store.create_flag(bad.clone(), "ana").await, Err(StoreError::BadKey(_))),
            "{key:?}"
        );
    }
    assert_eq!(
        store.environments().await.unwrap(),
        [environment("production", 2), environment("staging", 2)]
    );
}

#[tokio::test]
async fn a_new_environment_gets_every_flag_in_its_initial_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_flag(checkout(), "ana").await.unwrap();
    let published = store.create_environment("qa", "ana").await.unwrap();
    assert_eq!(published.version, 1);
    let engine = Engine::from_json(&published.json).unwrap();
    assert_eq!(engine.flag_keys().collect::<Vec<_>>(), ["checkout-v2"]);
    assert_eq!(engine.environment(), "qa");
}

#[tokio::test]
async fn concurrent_changes_each_get_their_own_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()).await);
    store.create_flag(checkout(), "ana").await.unwrap();
    let writers: Vec<_> = (0..20u32)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store.set_flag_state("production", "checkout-v2", rollout(i * 1_000), "ben").await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for writer in writers {
        versions.push(writer.await.unwrap().unwrap().version);
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (3..23).collect::<Vec<u64>>(),
        "no two changes share a version, none is lost"
    );
    assert_eq!(store.audit(AuditFilter::default()).await.unwrap().len(), 2 + 1 + 20);
}
