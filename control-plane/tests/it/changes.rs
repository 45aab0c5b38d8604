//! The change path through the service: one transaction per change, validated by flag-core,
//! versioned and audited, and served from memory the moment it commits; a refused change
//! leaves nothing behind.

use std::path::Path;
use std::sync::Arc;

use control_plane::clock::SystemClock;
use control_plane::model::Refusal;
use control_plane::model::audit::AuditQuery;
use control_plane::model::flag::{Environment, FlagState};
use control_plane::service::{self, Error, Service, environments, flags, snapshots};
use control_plane::store::sqlite::SqliteStore;
use flag_core::{Context, Engine, Reason, wire};
use serde_json::json;

use crate::support::checkout;

async fn open(dir: &Path) -> Service {
    let store = SqliteStore::open(&dir.join("rollgate.db")).await.unwrap();
    Service::start(Arc::new(store), Arc::new(SystemClock), None, Default::default()).await.unwrap()
}

fn rollout(percent: u32) -> FlagState {
    serde_json::from_value(json!({
        "enabled": true,
        "fallthrough": {"rollout": {"percent": percent, "inside": "on", "outside": "off", "stage": "beta"}}
    }))
    .unwrap()
}

fn environment(name: &str, version: u64) -> Environment {
    Environment { name: name.into(), version, allowed_origins: vec![] }
}

async fn audit(service: &Service) -> Vec<control_plane::model::audit::AuditRecord> {
    service::audit::list(service, AuditQuery::default()).await.unwrap()
}

async fn set_state(
    service: &Service,
    environment: &str,
    flag: &str,
    state: FlagState,
) -> Result<flags::StateChanged, Error> {
    flags::set_state(service, environment, flag, state, flags::Note::by("ben")).await
}

/// The refusal `result` holds; fails the test if it holds anything else.
fn refusal<T>(result: Result<T, Error>) -> Refusal {
    match result {
        Err(Error::Refused(refusal)) => refusal,
        Err(error) => panic!("expected a refusal, got {error:?}"),
        Ok(_) => panic!("expected a refusal, got a success"),
    }
}

/// What is served: each environment's version, and that it equals the stored snapshot.
async fn served(service: &Service) -> Vec<(String, u64)> {
    let mut served = Vec::new();
    for Environment { name, version, .. } in environments::list(service).await.unwrap() {
        let current = service.publisher.current(&name).unwrap();
        assert_eq!(current.published, snapshots::stored(service, &name).await.unwrap());
        assert_eq!(current.version(), version);
        served.push((name, version));
    }
    served
}

#[tokio::test]
async fn first_start_creates_staging_and_production_once() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(dir.path()).await;
    assert_eq!(
        environments::list(&service).await.unwrap(),
        [environment("production", 1), environment("staging", 1)]
    );
    drop(service);
    let service = open(dir.path()).await;
    assert_eq!(
        environments::list(&service).await.unwrap(),
        [environment("production", 1), environment("staging", 1)],
        "reopening neither duplicates nor bumps anything"
    );
    assert_eq!(audit(&service).await.len(), 2);
}

#[tokio::test]
async fn the_database_file_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).await);
    let connection = rusqlite::Connection::open(dir.path().join("rollgate.db")).unwrap();
    let mode: String = connection.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal", "WAL persists in the file");
}

#[tokio::test]
async fn a_new_flag_reaches_every_environment_serving_off() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(dir.path()).await;
    let record = flags::create(&service, checkout(), "ana").await.unwrap();
    assert_eq!(record.revision, 1);
    assert_eq!(record.environments.len(), 2);
    assert_eq!(served(&service).await, [("production".into(), 2), ("staging".into(), 2)]);

    let snapshot = service.publisher.current("production").unwrap();
    let engine = Engine::from_json(&snapshot.published.json).unwrap();
    assert_eq!(engine.version(), 2);
    let evaluation = engine.evaluate("checkout-v2", &Context::with_targeting_key("user-1"));
    assert_eq!((evaluation.variant, evaluation.reason), (Some("off"), Reason::Static));

    let audit = audit(&service).await;
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
    let service = open(dir.path()).await;
    flags::create(&service, checkout(), "ana").await.unwrap();
    let changed = set_state(&service, "production", "checkout-v2", rollout(25_000)).await.unwrap();
    assert_eq!(changed.version, 3);
    assert_eq!(served(&service).await, [("production".into(), 3), ("staging".into(), 2)]);

    let engine = &service.publisher.current("production").unwrap().published.engine;
    // rg1: checkout-v2:user-2 is bucket 14146, inside 25%; user-1 is 70650, outside.
    assert_eq!(
        engine.evaluate("checkout-v2", &Context::with_targeting_key("user-2")).variant,
        Some("on")
    );
    assert_eq!(
        engine.evaluate("checkout-v2", &Context::with_targeting_key("user-1")).variant,
        Some("off")
    );

    let last = audit(&service).await.pop().unwrap();
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
    let service = open(dir.path()).await;
    flags::create(&service, checkout(), "ana").await.unwrap();
    let before = (served(&service).await, audit(&service).await.len());

    let error =
        set_state(&service, "production", "checkout-v2", rollout(100_001)).await.unwrap_err();
    let Error::Refused(Refusal::Invalid(error)) = error else {
        panic!("expected Invalid, got {error:?}")
    };
    assert_eq!(error.path, "fallthrough.rollout.percent", "relative to the flag changed");

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
        set_state(&service, "production", "checkout-v2", bad_rule).await,
        Err(Error::Refused(Refusal::Invalid(_)))
    ));

    let mut wrong_type = checkout();
    wrong_type.key = "banner".into();
    wrong_type.variants.insert("on".into(), json!("yes"));
    assert!(matches!(
        flags::create(&service, wrong_type, "ana").await,
        Err(Error::Refused(Refusal::Invalid(_)))
    ));

    let after = (served(&service).await, audit(&service).await.len());
    assert_eq!(before, after, "versions, snapshots and the audit log are unchanged");
    assert!(flags::get(&service, "banner").await.is_err(), "the refused flag was not stored");
}

#[tokio::test]
async fn unknown_duplicate_and_malformed_keys_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(dir.path()).await;
    flags::create(&service, checkout(), "ana").await.unwrap();
    assert!(matches!(
        refusal(flags::create(&service, checkout(), "ana").await),
        Refusal::Conflict(_)
    ));
    assert!(matches!(
        refusal(environments::create(&service, "staging", "ana").await),
        Refusal::Conflict(_)
    ));
    assert!(matches!(
        refusal(snapshots::stored(&service, "qa").await),
        Refusal::NotFound(m) if m.contains("qa")
    ));
    assert!(matches!(
        refusal(set_state(&service, "qa", "checkout-v2", rollout(1)).await),
        Refusal::NotFound(m) if m.contains("qa")
    ));
    assert!(matches!(
        refusal(set_state(&service, "production", "nope", rollout(1)).await),
        Refusal::NotFound(m) if m.contains("nope")
    ));
    let mut bad = checkout();
    for key in ["", "has space", "a/b", &"x".repeat(129)] {
        bad.key = key.into();
        assert!(
            matches!(
                refusal(flags::create(&service, bad.clone(), "ana").await),
                Refusal::Malformed(_)
            ),
            "{key:?}"
        );
    }
    assert_eq!(served(&service).await, [("production".into(), 2), ("staging".into(), 2)]);
}

#[tokio::test]
async fn a_new_environment_gets_every_flag_in_its_initial_state() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(dir.path()).await;
    flags::create(&service, checkout(), "ana").await.unwrap();
    let created = environments::create(&service, "qa", "ana").await.unwrap();
    assert_eq!(created, environment("qa", 1));
    let engine = &service.publisher.current("qa").unwrap().published.engine;
    assert_eq!(engine.flag_keys().collect::<Vec<_>>(), ["checkout-v2"]);
    assert_eq!(engine.environment(), "qa");
}

#[tokio::test]
async fn concurrent_changes_each_get_their_own_version() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(dir.path()).await;
    flags::create(&service, checkout(), "ana").await.unwrap();
    let writers: Vec<_> = (0..20u32)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                set_state(&service, "production", "checkout-v2", rollout(i * 1_000)).await
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
    assert_eq!(audit(&service).await.len(), 2 + 1 + 20);
    assert_eq!(served(&service).await[0], ("production".into(), 22));
}
