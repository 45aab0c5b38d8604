//! The Store contract: what every backend must do, whatever its database. Each test takes a
//! fresh `&dyn Store`; `backend!` runs them all against one backend.
//!
//! The contract is `Store`'s documentation: a write job commits only if it says so; a
//! committed job's `after` runs once, in commit order, before `write` returns and even if the
//! caller stopped waiting; reads see one committed state and cannot write; and each `Tx`
//! method does what its documentation says, to the millisecond for times.

use control_plane::model::audit::{AuditEntry, AuditQuery};
use control_plane::model::edge::{NewEdge, PushOutcome};
use control_plane::model::flag::{FlagDefinition, FlagState};
use control_plane::model::metrics::CountRow;
use control_plane::model::plan::{Decision, DecisionQuery, Plan, PlanQuery, Status};
use control_plane::model::time::Timestamp;
use control_plane::model::token::{Scope, Token};
use control_plane::model::webhook::{DeliveryOutcome, NewWebhook};
use control_plane::store::{self, Committed, Store, StoreError, Tx};
use flag_core::wire;
use futures_util::future::BoxFuture;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::checkout;

macro_rules! backend {
    ($backend:ident, $open:path) => {
        mod $backend {
            backend!(@tests $open;
                a_job_that_fails_leaves_nothing,
                after_runs_in_commit_order_before_write_returns,
                after_runs_when_the_caller_stops_waiting,
                reads_see_one_committed_state_and_cannot_write,
                versions_grow_by_one_whoever_writes,
                the_latest_snapshots_are_kept_by_version,
                flags_are_live_or_archived_and_their_keys_stay_taken,
                states_are_per_environment_and_snapshots_see_live_flags,
                segments_are_live_or_archived_with_revisions,
                the_audit_log_filters_by_resource_and_time_oldest_first,
                tokens_are_unique_and_deletes_return_them,
                edges_record_acknowledgements_and_failures,
                webhooks_queue_deliveries_until_delivered_or_given_up,
                a_flag_has_one_active_plan_per_environment,
                decisions_are_appended_and_filtered,
                metric_counts_add_up_and_are_pruned,
                metric_quota_charges_add_up_per_token_and_minute
            );
        }
    };
    (@tests $open:path; $($test:ident),*) => {
        $(
            #[tokio::test]
            async fn $test() {
                let (_keep, store) = $open().await;
                super::$test(store.as_ref()).await;
            }
        )*
    };
}

backend!(sqlite, crate::contract::open_sqlite);
backend!(postgres, crate::contract::open_postgres);

pub(crate) async fn open_sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollgate.db");
    let store = control_plane::store::sqlite::SqliteStore::open(&path).await.unwrap();
    (dir, Arc::new(store))
}

pub(crate) async fn open_postgres() -> ((), Arc<dyn Store>) {
    let url = crate::support::postgres_database().await;
    let store = control_plane::store::postgres::PostgresStore::open(&url).await.unwrap();
    ((), Arc::new(store))
}

/// Runs `work` in a write transaction that commits.
async fn write<T, W>(store: &dyn Store, work: W) -> T
where
    T: Send + 'static,
    W: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, StoreError>> + Send + 'static,
{
    store::write(store, move |tx| {
        Box::pin(async move { Ok::<_, StoreError>(Committed::alone(work(tx).await?)) })
    })
    .await
    .unwrap()
}

async fn read<T, W>(store: &dyn Store, work: W) -> T
where
    T: Send + 'static,
    W: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, StoreError>> + Send + 'static,
{
    store::read(store, work).await.unwrap()
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

const T0: &str = "2026-11-22T10:00:00.000Z";

/// An environment named `name`, at version 0.
async fn environment(store: &dyn Store, name: &'static str) {
    write(store, move |tx| Box::pin(async move { tx.insert_environment(name, at(T0)).await }))
        .await;
}

fn flag(key: &str) -> FlagDefinition {
    FlagDefinition { key: key.into(), ..checkout() }
}

pub(crate) async fn a_job_that_fails_leaves_nothing(store: &dyn Store) {
    let failed: Result<(), StoreError> = store::write(store, |tx| {
        Box::pin(async move {
            assert!(tx.insert_environment("qa", at(T0)).await?);
            assert!(tx.insert_flag(&flag("banner"), at(T0)).await?);
            tx.append_audit(at(T0), &AuditEntry::new("ana", "flag.create")).await?;
            Err(StoreError::Failed("refused".into()))
        })
    })
    .await;
    assert!(failed.is_err());
    let (environments, flags, audit) = read(store, |tx| {
        Box::pin(async move {
            Ok((
                tx.environments().await?,
                tx.flags().await?,
                tx.audit(&AuditQuery::default()).await?,
            ))
        })
    })
    .await;
    assert!(environments.is_empty() && flags.is_empty() && audit.is_empty());
}

pub(crate) async fn after_runs_in_commit_order_before_write_returns(store: &dyn Store) {
    environment(store, "production").await;
    let applied: Arc<Mutex<Vec<u64>>> = Arc::default();
    let writes = (0..40).map(|_| {
        let applied = Arc::clone(&applied);
        async move {
            let record = Arc::clone(&applied);
            let version = store::write(store, move |tx| {
                Box::pin(async move {
                    let version = tx.bump_version("production").await?;
                    let after = Box::new(move || record.lock().unwrap().push(version));
                    Ok::<_, StoreError>(Committed { value: version, after })
                })
            })
            .await
            .unwrap();
            (version, applied)
        }
    });
    for (version, applied) in futures_util::future::join_all(writes).await {
        assert!(applied.lock().unwrap().contains(&version), "applied before write returned");
    }
    let applied = applied.lock().unwrap().clone();
    assert_eq!(applied, (1..=40).collect::<Vec<_>>(), "once each, in commit order");
}

pub(crate) async fn after_runs_when_the_caller_stops_waiting(store: &dyn Store) {
    environment(store, "production").await;
    let (ran, after_ran) = tokio::sync::oneshot::channel();
    let write = store::write(store, move |tx| {
        Box::pin(async move {
            let version = tx.bump_version("production").await?;
            let after = Box::new(move || ran.send(version).unwrap());
            Ok::<_, StoreError>(Committed { value: (), after })
        })
    });
    // Polled once, then dropped: the caller hung up.
    assert!(futures_util::FutureExt::now_or_never(write).is_none());
    let version = tokio::time::timeout(Duration::from_secs(10), after_ran).await.unwrap().unwrap();
    assert_eq!(version, 1);
    let stored = read(store, |tx| Box::pin(tx.environment_version("production"))).await;
    assert_eq!(stored, Some(1), "committed");
}

pub(crate) async fn reads_see_one_committed_state_and_cannot_write(store: &dyn Store) {
    environment(store, "production").await;
    let wrote: Result<bool, StoreError> =
        store::read(store, |tx| Box::pin(tx.insert_environment("qa", at(T0)))).await;
    assert!(wrote.is_err(), "a read transaction refuses to write");
    let names = read(store, |tx| Box::pin(tx.environments())).await;
    assert_eq!(names.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["production"]);
}

pub(crate) async fn versions_grow_by_one_whoever_writes(store: &dyn Store) {
    environment(store, "production").await;
    environment(store, "staging").await;
    let taken =
        write(store, |tx| Box::pin(async move { tx.insert_environment("staging", at(T0)).await }))
            .await;
    assert!(!taken, "a name is taken once");
    let bumps = (0..20).map(|_| write(store, |tx| Box::pin(tx.bump_version("production"))));
    let mut versions = futures_util::future::join_all(bumps).await;
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    let environments = read(store, |tx| Box::pin(tx.environments())).await;
    let versions: Vec<_> = environments.iter().map(|e| (e.name.as_str(), e.version)).collect();
    assert_eq!(versions, [("production", 20), ("staging", 0)]);
}

pub(crate) async fn the_latest_snapshots_are_kept_by_version(store: &dyn Store) {
    use control_plane::store::KEPT_SNAPSHOTS;
    let last = KEPT_SNAPSHOTS + 10;
    write(store, move |tx| {
        Box::pin(async move {
            for version in 1..=last {
                tx.put_snapshot("production", version, format!("{{\"v\":{version}}}").as_bytes())
                    .await?;
            }
            tx.put_snapshot("staging", 1, b"{}").await
        })
    })
    .await;
    let after = |version| {
        read(store, move |tx| {
            Box::pin(async move { tx.snapshots_after("production", version).await })
        })
    };
    let kept = after(0).await;
    let versions: Vec<u64> = kept.iter().map(|(version, _)| *version).collect();
    assert_eq!(
        versions,
        (last - KEPT_SNAPSHOTS + 1..=last).collect::<Vec<_>>(),
        "the latest, oldest first"
    );
    assert_eq!(kept.last().unwrap().1, format!("{{\"v\":{last}}}").into_bytes());
    assert_eq!(after(last - 2).await.len(), 2);
    assert!(after(last).await.is_empty());
    let staging =
        read(store, |tx| Box::pin(async move { tx.snapshots_after("staging", 0).await })).await;
    assert_eq!(staging, [(1, b"{}".to_vec())], "each environment keeps its own");
}

pub(crate) async fn flags_are_live_or_archived_and_their_keys_stay_taken(store: &dyn Store) {
    let (now, later) = (at(T0), at("2026-11-22T10:00:01.000Z"));
    let (first, again, revision, stored) = write(store, move |tx| {
        Box::pin(async move {
            let first = tx.insert_flag(&flag("a"), now).await?;
            let again = tx.insert_flag(&flag("a"), now).await?;
            tx.insert_flag(&flag("b"), now).await?;
            let mut renamed = flag("a");
            renamed.off_variant = "on".into();
            tx.update_flag(&renamed, later).await?;
            let revision = tx.bump_flag_revision("a", later).await?;
            Ok((first, again, revision, tx.flag("a").await?.unwrap()))
        })
    })
    .await;
    assert_eq!((first, again, revision), (true, false, 2));
    assert_eq!((stored.definition.off_variant.as_str(), stored.revision), ("on", 2));

    let (live, archived, taken) = write(store, move |tx| {
        Box::pin(async move {
            tx.archive_flag("a", later).await?;
            let keys: Vec<_> = tx.flags().await?.into_iter().map(|f| f.definition.key).collect();
            Ok((keys, tx.flag("a").await?, tx.insert_flag(&flag("a"), later).await?))
        })
    })
    .await;
    assert_eq!(live, ["b"]);
    assert_eq!(archived, None, "an archived flag is not live");
    assert!(!taken, "an archived flag's key stays taken");
}

pub(crate) async fn states_are_per_environment_and_snapshots_see_live_flags(store: &dyn Store) {
    environment(store, "production").await;
    environment(store, "staging").await;
    let (production, staging, all, joined) = write(store, |tx| {
        Box::pin(async move {
            for key in ["a", "b"] {
                tx.insert_flag(&flag(key), at(T0)).await?;
                for environment in ["production", "staging"] {
                    tx.put_flag_state(environment, key, &FlagState::initial(&flag(key)), at(T0))
                        .await?;
                }
            }
            let mut killed = FlagState::initial(&flag("a"));
            killed.enabled = false;
            tx.put_flag_state("production", "a", &killed, at(T0)).await?;
            tx.archive_flag("b", at(T0)).await?;
            Ok((
                tx.flag_state("production", "a").await?.unwrap(),
                tx.flag_state("staging", "a").await?.unwrap(),
                tx.flag_states("a").await?,
                tx.environment_flags("production").await?,
            ))
        })
    })
    .await;
    assert!(!production.enabled && staging.enabled, "replaced in one environment only");
    assert_eq!(all.keys().collect::<Vec<_>>(), ["production", "staging"]);
    assert_eq!(joined.len(), 1, "archived flags are left out");
    assert_eq!((joined[0].0.key.as_str(), joined[0].1.enabled), ("a", false));
    let none = read(store, |tx| Box::pin(tx.flag_state("qa", "a"))).await;
    assert_eq!(none, None);
}

pub(crate) async fn segments_are_live_or_archived_with_revisions(store: &dyn Store) {
    let segment = |key: &str, keys: &[&str]| -> wire::Segment {
        serde_json::from_value(json!({"key": key, "included": keys})).unwrap()
    };
    let (updated, revision, live, taken) = write(store, move |tx| {
        Box::pin(async move {
            assert!(tx.insert_segment(&segment("staff", &["u1"]), at(T0)).await?);
            tx.insert_segment(&segment("beta", &[]), at(T0)).await?;
            tx.update_segment(&segment("staff", &["u1", "u2"]), at(T0)).await?;
            let revision = tx.bump_segment_revision("staff", at(T0)).await?;
            let updated = tx.segment("staff").await?.unwrap();
            tx.archive_segment("beta", at(T0)).await?;
            let live: Vec<_> = tx.segments().await?.into_iter().map(|s| s.segment.key).collect();
            Ok((updated, revision, live, tx.insert_segment(&segment("beta", &[]), at(T0)).await?))
        })
    })
    .await;
    assert_eq!((updated.segment.included.len(), updated.revision, revision), (2, 2, 2));
    assert_eq!(live, ["staff"]);
    assert!(!taken);
}

pub(crate) async fn the_audit_log_filters_by_resource_and_time_oldest_first(store: &dyn Store) {
    let entries = [
        ("2026-11-22T10:00:00.000Z", Some("a"), Some("production")),
        // Written later, but earlier in time: `since` compares times, not insertion order.
        ("2026-11-22T09:59:59.999Z", Some("b"), Some("staging")),
        ("2026-11-22T10:00:00.001Z", Some("a"), Some("staging")),
    ];
    write(store, move |tx| {
        Box::pin(async move {
            for (time, flag, environment) in entries {
                let entry = AuditEntry {
                    flag: flag.map(Into::into),
                    environment: environment.map(Into::into),
                    reason: Some("why".into()),
                    before: Some(json!({"enabled": true})),
                    ..AuditEntry::new("ana", "flag.kill")
                };
                tx.append_audit(at(time), &entry).await?;
            }
            Ok(())
        })
    })
    .await;
    let query = |query: AuditQuery| {
        read(store, move |tx| {
            Box::pin(async move {
                Ok(tx
                    .audit(&query)
                    .await?
                    .into_iter()
                    .map(|r| r.at.to_string())
                    .collect::<Vec<_>>())
            })
        })
    };
    let all = query(AuditQuery::default()).await;
    assert_eq!(all, [entries[0].0, entries[1].0, entries[2].0], "by id, times to the ms");
    let since = query(AuditQuery { since: Some(at(T0)), ..AuditQuery::default() }).await;
    assert_eq!(since, [entries[0].0, entries[2].0]);
    let a = query(AuditQuery { flag: Some("a".into()), ..AuditQuery::default() }).await;
    assert_eq!(a.len(), 2);
    let staging = query(AuditQuery {
        environment: Some("staging".into()),
        limit: Some(1),
        ..AuditQuery::default()
    })
    .await;
    assert_eq!(staging, [entries[1].0]);
    let newest =
        query(AuditQuery { newest_first: true, limit: Some(2), ..AuditQuery::default() }).await;
    assert_eq!(newest, [entries[2].0, entries[1].0], "the newest, newest first");
    let records =
        read(store, |tx| Box::pin(async move { tx.audit(&AuditQuery::default()).await })).await;
    assert_eq!(records[0].before, Some(json!({"enabled": true})));
    assert_eq!((records[0].reason.as_deref(), records[0].after.as_ref()), (Some("why"), None));
}

pub(crate) async fn tokens_are_unique_and_deletes_return_them(store: &dyn Store) {
    environment(store, "production").await;
    let token = |name: &str, hash: &str| Token {
        name: name.into(),
        scope: Scope::Read,
        environment: Some("production".into()),
        hash: hash.into(),
    };
    let (inserted, same_name, same_hash, revisions) = write(store, move |tx| {
        Box::pin(async move {
            let inserted = tx.insert_token(&token("edge", "aa"), at(T0)).await?;
            let same_name = tx.insert_token(&token("edge", "bb"), at(T0)).await?;
            let same_hash = tx.insert_token(&token("app", "aa"), at(T0)).await?;
            let before = tx.readers_revision().await?;
            let after = tx.bump_readers_revision().await?;
            Ok((inserted, same_name, same_hash, (before, after)))
        })
    })
    .await;
    assert_eq!((inserted, same_name, same_hash), (true, false, false));
    assert_eq!(revisions.1, revisions.0 + 1);
    let (listed, deleted, again) = write(store, |tx| {
        Box::pin(async move {
            let listed = tx.tokens().await?;
            Ok((listed, tx.delete_token("edge").await?, tx.delete_token("edge").await?))
        })
    })
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].token.clone(), listed[0].created_at), (token("edge", "aa"), at(T0)));
    assert_eq!((deleted, again), (Some(token("edge", "aa")), None));
}

pub(crate) async fn edges_record_acknowledgements_and_failures(store: &dyn Store) {
    environment(store, "production").await;
    let edge = NewEdge {
        name: "eu".into(),
        url: "http://127.0.0.1:9".into(),
        environment: "production".into(),
    };
    let acked = at("2026-11-22T10:00:05.250Z");
    let (inserted, again, edges) = write(store, move |tx| {
        Box::pin(async move {
            let inserted = tx.insert_edge(&edge, at(T0)).await?;
            let again = tx.insert_edge(&edge, at(T0)).await?;
            tx.record_push("eu", &PushOutcome::Failed("refused".into()), at(T0)).await?;
            let failed = tx.edges().await?;
            let ok = PushOutcome::Acknowledged { version: 7, readers_revision: 3 };
            tx.record_push("eu", &ok, acked).await?;
            Ok((inserted, again, [failed, tx.edges().await?]))
        })
    })
    .await;
    assert_eq!((inserted, again), (true, false));
    assert_eq!(edges[0][0].last_error.as_deref(), Some("refused"));
    let record = &edges[1][0];
    assert_eq!(
        (record.applied_version, record.applied_readers_revision, record.acked_at),
        (Some(7), Some(3), Some(acked))
    );
    assert_eq!(record.last_error, None);
    let removed = write(store, |tx| Box::pin(tx.delete_edge("eu"))).await;
    assert_eq!(removed.map(|edge| edge.name), Some("eu".into()));
    assert!(read(store, |tx| Box::pin(tx.edges())).await.is_empty());
}

pub(crate) async fn webhooks_queue_deliveries_until_delivered_or_given_up(store: &dyn Store) {
    environment(store, "production").await;
    let webhook = NewWebhook {
        name: "slack".into(),
        url: "https://hooks.example/x".into(),
        environment: "production".into(),
    };
    let pending = write(store, move |tx| {
        Box::pin(async move {
            assert!(tx.insert_webhook(&webhook, at(T0)).await?);
            assert!(!tx.insert_webhook(&webhook, at(T0)).await?);
            for event in ["plan.started", "plan.advanced", "plan.held"] {
                tx.insert_delivery("slack", "https://hooks.example/x", event, "{}", at(T0)).await?;
            }
            tx.pending_deliveries(10).await
        })
    })
    .await;
    let events: Vec<_> = pending.iter().map(|d| d.event.as_str()).collect();
    assert_eq!(events, ["plan.started", "plan.advanced", "plan.held"], "oldest first");
    let ids: Vec<i64> = pending.iter().map(|d| d.id).collect();
    let (left, webhooks) = write(store, move |tx| {
        Box::pin(async move {
            tx.record_delivery(ids[0], &DeliveryOutcome::Delivered, at(T0)).await?;
            let retry = DeliveryOutcome::Failed { error: "503".into(), give_up: false };
            tx.record_delivery(ids[1], &retry, at(T0)).await?;
            let give_up = DeliveryOutcome::Failed { error: "410".into(), give_up: true };
            tx.record_delivery(ids[2], &give_up, at(T0)).await?;
            Ok((tx.pending_deliveries(10).await?, tx.webhooks().await?))
        })
    })
    .await;
    assert_eq!((left.len(), left[0].attempts), (1, 1), "only the one to retry is pending");
    assert_eq!((webhooks[0].pending, webhooks[0].failed), (1, 1));
    assert_eq!(webhooks[0].last_error.as_deref(), Some("410"));
    let (deleted, left) = write(store, |tx| {
        Box::pin(async move {
            let deleted = tx.delete_webhook("slack").await?;
            tx.fail_deliveries("slack", "webhook deleted", at(T0)).await?;
            Ok((deleted, tx.pending_deliveries(10).await?))
        })
    })
    .await;
    assert_eq!(deleted.map(|w| w.url), Some("https://hooks.example/x".into()));
    assert!(left.is_empty());
}

fn plan(id: i64, status: Status) -> Plan {
    serde_json::from_value(json!({
        "id": id, "flag": "checkout-v2", "environment": "production", "template": null,
        "variant": "on", "control": "off", "auto_advance": true,
        "stages": [{"name": "all", "percent": 100}], "status": status, "stage": 0,
        "stage_started_at": T0, "approvals": [], "installed_rule": null,
        "created_by": "ana", "created_at": T0
    }))
    .unwrap()
}

pub(crate) async fn a_flag_has_one_active_plan_per_environment(store: &dyn Store) {
    environment(store, "production").await;
    environment(store, "staging").await;
    let (first, second, elsewhere) = write(store, |tx| {
        Box::pin(async move {
            tx.insert_flag(&checkout(), at(T0)).await?;
            let first = tx.insert_plan("checkout-v2", "production", at(T0)).await?.unwrap();
            tx.save_plan(&plan(first, Status::Running), at(T0)).await?;
            let second = tx.insert_plan("checkout-v2", "production", at(T0)).await?;
            let elsewhere = tx.insert_plan("checkout-v2", "staging", at(T0)).await?.unwrap();
            let mut staging = plan(elsewhere, Status::Held);
            staging.environment = "staging".into();
            tx.save_plan(&staging, at(T0)).await?;
            Ok((first, second, elsewhere))
        })
    })
    .await;
    assert_eq!(second, None, "one active plan per flag and environment");
    assert_ne!(elsewhere, first);
    let (next, active, production) = write(store, move |tx| {
        Box::pin(async move {
            tx.save_plan(&plan(first, Status::Completed), at(T0)).await?;
            let next = tx.insert_plan("checkout-v2", "production", at(T0)).await?;
            if let Some(id) = next {
                tx.save_plan(&plan(id, Status::Running), at(T0)).await?;
            }
            let active = PlanQuery { active: true, ..PlanQuery::default() };
            let production =
                PlanQuery { environment: Some("production".into()), ..PlanQuery::default() };
            Ok((next, tx.plans(&active).await?.len(), tx.plans(&production).await?))
        })
    })
    .await;
    assert!(next.is_some(), "a completed plan is not active");
    assert_eq!(active, 2, "the new one and staging's");
    assert_eq!(
        production.last().map(|plan| (plan.id, plan.status)),
        Some((first, Status::Completed))
    );
    let stored = read(store, move |tx| Box::pin(tx.plan(first))).await.unwrap();
    assert_eq!(stored, plan(first, Status::Completed));
}

pub(crate) async fn decisions_are_appended_and_filtered(store: &dyn Store) {
    environment(store, "production").await;
    let decision = |plan: i64, action: &str| Decision {
        id: 0,
        at: at(T0),
        plan,
        flag: "checkout-v2".into(),
        environment: "production".into(),
        action: action.into(),
        from_stage: Some("canary".into()),
        to_stage: None,
        decision: "proceed".into(),
        rationale: "healthy".into(),
        decided_by: "schedule".into(),
        metrics: json!([{"criterion": "errors/requests <= 2%"}]),
    };
    let (ids, of_second) = write(store, move |tx| {
        Box::pin(async move {
            tx.insert_flag(&checkout(), at(T0)).await?;
            let plans = [tx.insert_plan("checkout-v2", "production", at(T0)).await?.unwrap(), {
                tx.save_plan(&plan(1, Status::Completed), at(T0)).await?;
                tx.insert_plan("checkout-v2", "production", at(T0)).await?.unwrap()
            }];
            let mut ids = Vec::new();
            for (plan, action) in [(plans[0], "start"), (plans[1], "start"), (plans[1], "advance")]
            {
                ids.push(tx.insert_decision(&decision(plan, action)).await?);
            }
            let newest = DecisionQuery { newest_first: true, limit: Some(1), ..Default::default() };
            let newest = tx.decisions(&newest).await?;
            assert_eq!((newest.len(), newest[0].action.as_str()), (1, "advance"));
            let later =
                DecisionQuery { since: Some(at("2026-11-22T10:00:00.001Z")), ..Default::default() };
            assert!(tx.decisions(&later).await?.is_empty(), "all were decided at T0");
            let query = DecisionQuery { plan: Some(plans[1]), ..DecisionQuery::default() };
            Ok((ids, tx.decisions(&query).await?))
        })
    })
    .await;
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    let actions: Vec<_> = of_second.iter().map(|d| d.action.as_str()).collect();
    assert_eq!(actions, ["start", "advance"], "oldest first");
    let mut expected = decision(of_second[1].plan, "advance");
    expected.id = ids[2];
    assert_eq!(of_second[1], expected, "stored as given, with its new id");
}

pub(crate) async fn metric_counts_add_up_and_are_pruned(store: &dyn Store) {
    let row = |variant: &str, metric: &str, minute: i64, value: u64| CountRow {
        variant: variant.into(),
        metric: metric.into(),
        minute,
        value,
    };
    let (fresh, repeated, counts) = write(store, move |tx| {
        Box::pin(async move {
            let fresh = tx.insert_metric_batch("production", "app-1:1", 100).await?;
            let repeated = tx.insert_metric_batch("production", "app-1:1", 101).await?;
            let elsewhere = tx.insert_metric_batch("staging", "app-1:1", 101).await?;
            assert!(elsewhere, "an id counts once per environment");
            let mut new_rows = Vec::new();
            for (minute, value) in [(99, 5), (100, 7), (100, 3), (101, 1)] {
                let added = row("on", "requests", minute, value);
                new_rows.push(tx.add_metric_count("production", "checkout-v2", &added).await?);
            }
            assert_eq!(new_rows, [true, true, false, true], "a count in a minute is one row");
            tx.add_metric_count("staging", "checkout-v2", &row("on", "requests", 100, 50)).await?;
            tx.add_metric_count("production", "checkout-v2", &row("off", "errors", 101, 1)).await?;
            tx.add_metric_count("production", "search", &row("on", "latency", 100, 1)).await?;
            let names = tx.metric_names("production", "checkout-v2", 99).await?;
            assert_eq!(names, ["errors", "requests"], "after the minute given, of the flag only");
            Ok((fresh, repeated, tx.metric_counts("production", "checkout-v2", 99, 100).await?))
        })
    })
    .await;
    assert_eq!((fresh, repeated), (true, false));
    assert_eq!(counts, [row("on", "requests", 100, 10)], "summed per minute, in the range only");
    let (left, batch_again) = write(store, |tx| {
        Box::pin(async move {
            tx.prune_metrics(101, 101).await?;
            let left = tx.metric_counts("production", "checkout-v2", i64::MIN, i64::MAX).await?;
            Ok((left, tx.insert_metric_batch("production", "app-1:1", 102).await?))
        })
    })
    .await;
    let minutes: BTreeMap<(String, i64), u64> =
        left.into_iter().map(|row| ((row.variant, row.minute), row.value)).collect();
    assert_eq!(minutes, BTreeMap::from([(("off".into(), 101), 1), (("on".into(), 101), 1)]));
    assert!(batch_again, "a pruned batch id may be used again");
}

pub(crate) async fn metric_quota_charges_add_up_per_token_and_minute(store: &dyn Store) {
    let totals = write(store, |tx| {
        Box::pin(async move {
            Ok([
                tx.charge_metric_rows("app", 100, 40).await?,
                tx.charge_metric_rows("app", 100, 2).await?,
                tx.charge_metric_rows("other-app", 100, 5).await?,
            ])
        })
    })
    .await;
    assert_eq!(totals, [40, 42, 5], "per token and minute");
    let refused: Result<(), StoreError> = store::write(store, |tx| {
        Box::pin(async move {
            tx.charge_metric_rows("app", 100, 1000).await?;
            Err(StoreError::Failed("over the quota".into()))
        })
    })
    .await;
    assert!(refused.is_err());
    let totals = write(store, |tx| {
        Box::pin(async move {
            Ok([
                tx.charge_metric_rows("app", 100, 0).await?,
                tx.charge_metric_rows("app", 101, 3).await?,
            ])
        })
    })
    .await;
    assert_eq!(totals, [42, 3], "a refused charge rolls back; a new minute starts at 0");
    let forgotten =
        write(store, |tx| Box::pin(async move { tx.charge_metric_rows("app", 100, 0).await }))
            .await;
    assert_eq!(forgotten, 0, "a charge forgets earlier minutes");
}
