//! The SQLite backend: one file, WAL, `synchronous=FULL`, so an acknowledged write survives
//! kill -9 and power loss.
//!
//! One thread owns the connection that writes. It takes write jobs in the order they are
//! submitted, runs each in an immediate transaction, and runs a committed job's `after` before
//! taking the next: commits and what follows them happen in one order, and nothing a caller
//! does (such as hanging up) can interrupt them. Reads use a second, read-only connection on
//! tokio's blocking pool.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use flag_core::wire;
use futures_util::FutureExt;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use tokio::sync::oneshot;

use crate::model::audit::{AuditEntry, AuditQuery, AuditRecord};
use crate::model::edge::{EdgeRecord, NewEdge, PushOutcome};
use crate::model::flag::{Environment, FlagDefinition, FlagState, SegmentRecord, StoredFlag};
use crate::model::metrics::CountRow;
use crate::model::plan::{Decision, DecisionQuery, Plan, PlanQuery};
use crate::model::time::Timestamp;
use crate::model::token::{Scope, StoredToken, Token};
use crate::model::webhook::{Delivery, DeliveryOutcome, NewWebhook, WebhookRecord};
use crate::store::{
    Ended, Erased, KEPT_SNAPSHOTS, Outcome, ReadJob, Store, StoreError, Tx, WriteJob, from_json,
    order, signed, to_json,
};

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/sqlite/0001_initial.sql")),
        M::up(include_str!("../../migrations/sqlite/0002_tokens.sql")),
        M::up(include_str!("../../migrations/sqlite/0003_audit_reason.sql")),
        M::up(include_str!("../../migrations/sqlite/0004_flag_revision.sql")),
        M::up(include_str!("../../migrations/sqlite/0005_segments_and_token_environments.sql")),
        M::up(include_str!("../../migrations/sqlite/0006_edges.sql")),
        M::up(include_str!("../../migrations/sqlite/0007_rollout_plans.sql")),
        M::up(include_str!("../../migrations/sqlite/0008_counters.sql")),
        M::up(include_str!("../../migrations/sqlite/0009_metric_batches_per_environment.sql")),
        M::up(include_str!("../../migrations/sqlite/0010_snapshots.sql")),
        M::up(include_str!("../../migrations/sqlite/0011_metric_quota.sql")),
        M::up(include_str!("../../migrations/sqlite/0012_plan_stage_percentages.sql")),
        M::up(include_str!("../../migrations/sqlite/0013_browsers.sql")),
    ])
}

pub struct SqliteStore {
    /// To the writer thread; dropping the store ends it.
    writes: mpsc::Sender<WriteRequest>,
    reads: Arc<Mutex<Db>>,
}

struct WriteRequest {
    job: WriteJob,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

impl SqliteStore {
    /// Opens (or creates) the database and applies migrations. Call it inside a tokio runtime:
    /// after-commit actions run in its context.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let runtime = tokio::runtime::Handle::current();
        let (writer, reader) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let mut writer = Connection::open(&path)?;
            let mode: String =
                writer.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Failed(format!("SQLite refused WAL mode (got {mode})")));
            }
            writer.pragma_update(None, "synchronous", "FULL")?;
            writer.pragma_update(None, "foreign_keys", "ON")?;
            writer.busy_timeout(Duration::from_secs(5))?;
            migrations().to_latest(&mut writer).map_err(|e| StoreError::Failed(e.to_string()))?;
            let reader = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(Duration::from_secs(5))?;
            Ok((writer, reader))
        })
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))??;
        let (writes, requests) = mpsc::channel();
        std::thread::Builder::new()
            .name("rollgate-sqlite-writer".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                run_writer(Db(writer), requests);
            })
            .map_err(|e| StoreError::Failed(format!("starting the writer thread: {e}")))?;
        Ok(Self { writes, reads: Arc::new(Mutex::new(Db(reader))) })
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn write(&self, job: WriteJob) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest { job, reply })
            .map_err(|_| StoreError::Failed("the writer thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Failed("the writer thread has stopped".into()))?
    }

    async fn read(&self, job: ReadJob) -> Result<Erased, StoreError> {
        let reads = Arc::clone(&self.reads);
        tokio::task::spawn_blocking(move || {
            let mut db = reads.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            db.0.execute_batch("BEGIN DEFERRED")?;
            let result = run_job(job(&mut *db));
            // A read transaction has nothing to keep: ending it either way is the same.
            db.0.execute_batch("ROLLBACK")?;
            result
        })
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))?
    }
}

/// Takes write requests in order until the store is dropped.
fn run_writer(mut db: Db, requests: mpsc::Receiver<WriteRequest>) {
    while let Ok(WriteRequest { job, reply }) = requests.recv() {
        let outcome = write_one(&mut db, job);
        // The caller may have stopped waiting; the write and its `after` happened anyway.
        let _ = reply.send(outcome);
    }
}

fn write_one(db: &mut Db, job: WriteJob) -> Result<Outcome, StoreError> {
    db.0.execute_batch("BEGIN IMMEDIATE")?;
    let (value, after) = match run_job(job(db)) {
        Ok(Ended::Commit { value, after }) => (value, after),
        Ok(Ended::Rollback(error)) => {
            db.0.execute_batch("ROLLBACK")?;
            return Ok(Outcome::RolledBack(error));
        }
        Err(failure) => {
            db.0.execute_batch("ROLLBACK")?;
            return Err(failure);
        }
    };
    if let Err(error) = db.0.execute_batch("COMMIT") {
        let _ = db.0.execute_batch("ROLLBACK");
        return Err(error.into());
    }
    // Committed: the after-commit action must not take the writer down with it.
    if catch_unwind(AssertUnwindSafe(after)).is_err() {
        tracing::error!("an after-commit action panicked");
    }
    Ok(Outcome::Committed(value))
}

/// Runs a job's future to its end. It awaits only this backend's `Tx` methods, which never
/// wait, so one poll finishes it; a job that waits for anything else is a bug, refused here.
fn run_job<T>(job: futures_util::future::BoxFuture<'_, T>) -> Result<T, StoreError> {
    match catch_unwind(AssertUnwindSafe(|| job.now_or_never())) {
        Ok(Some(result)) => Ok(result),
        Ok(None) => Err(StoreError::Failed("a transaction's work waited on something else".into())),
        Err(_) => Err(StoreError::Failed("a transaction's work panicked".into())),
    }
}

/// A connection as a transaction's `Tx`. It is `Send`, unlike rusqlite's `Transaction`, so
/// jobs written for async backends run on it unchanged.
struct Db(Connection);

#[async_trait::async_trait]
impl Tx for Db {
    async fn environments(&mut self) -> Result<Vec<Environment>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT name, version, allowed_origins FROM environments ORDER BY name",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, unsigned_at(row, 1)?, row.get::<_, String>(2)?))
        })?;
        let mut environments = Vec::new();
        for row in rows {
            let (name, version, allowed_origins) = row?;
            let allowed_origins = from_json(&allowed_origins)?;
            environments.push(Environment { name, version, allowed_origins });
        }
        Ok(environments)
    }

    async fn set_allowed_origins(
        &mut self,
        environment: &str,
        origins: &[String],
    ) -> Result<bool, StoreError> {
        let updated = self.0.execute(
            "UPDATE environments SET allowed_origins = ?2 WHERE name = ?1",
            params![environment, serde_json::json!(origins).to_string()],
        )?;
        Ok(updated == 1)
    }

    async fn environment_version(&mut self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT version FROM environments WHERE name = ?1")?
            .query_row(params![name], |row| unsigned_at(row, 0))
            .optional()?)
    }

    async fn insert_environment(&mut self, name: &str, at: Timestamp) -> Result<bool, StoreError> {
        let inserted = self.0.execute(
            "INSERT INTO environments (name, version, created_at) VALUES (?1, 0, ?2)
             ON CONFLICT DO NOTHING",
            params![name, at],
        )?;
        Ok(inserted == 1)
    }

    async fn bump_version(&mut self, environment: &str) -> Result<u64, StoreError> {
        Ok(self.0.query_row(
            "UPDATE environments SET version = version + 1 WHERE name = ?1 RETURNING version",
            params![environment],
            |row| unsigned_at(row, 0),
        )?)
    }

    async fn put_snapshot(
        &mut self,
        environment: &str,
        version: u64,
        json: &[u8],
    ) -> Result<(), StoreError> {
        let version = signed(version);
        self.0
            .prepare_cached(
                "INSERT INTO snapshots (environment, version, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (environment, version) DO UPDATE SET body = excluded.body",
            )?
            .execute(params![environment, version, json])?;
        self.0
            .prepare_cached("DELETE FROM snapshots WHERE environment = ?1 AND version <= ?2")?
            .execute(params![environment, version - signed(KEPT_SNAPSHOTS)])?;
        Ok(())
    }

    async fn snapshots_after(
        &mut self,
        environment: &str,
        version: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT version, body FROM snapshots WHERE environment = ?1 AND version > ?2
             ORDER BY version",
        )?;
        let rows = statement.query_map(params![environment, signed(version)], |row| {
            Ok((unsigned_at(row, 0)?, row.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn flags(&mut self) -> Result<Vec<StoredFlag>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT definition, revision, created_at, updated_at FROM flags WHERE archived = 0
             ORDER BY key",
        )?;
        let rows = statement.query_map([], stored_flag)?;
        rows.map(|row| row?).collect()
    }

    async fn flag(&mut self, key: &str) -> Result<Option<StoredFlag>, StoreError> {
        self.0
            .prepare_cached(
                "SELECT definition, revision, created_at, updated_at FROM flags
                 WHERE key = ?1 AND archived = 0",
            )?
            .query_row(params![key], stored_flag)
            .optional()?
            .transpose()
    }

    async fn insert_flag(
        &mut self,
        definition: &FlagDefinition,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let inserted = self.0.execute(
            "INSERT INTO flags (key, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT DO NOTHING",
            params![definition.key, to_json(definition)?, at],
        )?;
        Ok(inserted == 1)
    }

    async fn update_flag(
        &mut self,
        definition: &FlagDefinition,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE flags SET definition = ?2, updated_at = ?3 WHERE key = ?1",
            params![definition.key, to_json(definition)?, at],
        )?;
        Ok(())
    }

    async fn archive_flag(&mut self, key: &str, at: Timestamp) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE flags SET archived = 1, updated_at = ?2 WHERE key = ?1",
            params![key, at],
        )?;
        Ok(())
    }

    async fn bump_flag_revision(&mut self, key: &str, at: Timestamp) -> Result<u64, StoreError> {
        Ok(self.0.query_row(
            "UPDATE flags SET revision = revision + 1, updated_at = ?2 WHERE key = ?1
             RETURNING revision",
            params![key, at],
            |row| unsigned_at(row, 0),
        )?)
    }

    async fn flag_states(&mut self, flag: &str) -> Result<BTreeMap<String, FlagState>, StoreError> {
        let mut statement =
            self.0.prepare_cached("SELECT environment, state FROM flag_states WHERE flag = ?1")?;
        let rows = statement.query_map(params![flag], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (environment, state) = row?;
            Ok((environment, from_json(&state)?))
        })
        .collect()
    }

    async fn flag_state(
        &mut self,
        environment: &str,
        flag: &str,
    ) -> Result<Option<FlagState>, StoreError> {
        let state: Option<String> = self
            .0
            .prepare_cached("SELECT state FROM flag_states WHERE environment = ?1 AND flag = ?2")?
            .query_row(params![environment, flag], |row| row.get(0))
            .optional()?;
        state.map(|state| from_json(&state)).transpose()
    }

    async fn put_flag_state(
        &mut self,
        environment: &str,
        flag: &str,
        state: &FlagState,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO flag_states (environment, flag, state, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (environment, flag) DO UPDATE SET state = excluded.state,
                                                          updated_at = excluded.updated_at",
            params![environment, flag, to_json(state)?, at],
        )?;
        Ok(())
    }

    async fn environment_flags(
        &mut self,
        environment: &str,
    ) -> Result<Vec<(FlagDefinition, FlagState)>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT f.definition, s.state FROM flags f JOIN flag_states s ON s.flag = f.key
             WHERE s.environment = ?1 AND f.archived = 0 ORDER BY f.key",
        )?;
        let rows = statement.query_map(params![environment], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (definition, state) = row?;
            Ok((from_json(&definition)?, from_json(&state)?))
        })
        .collect()
    }

    async fn segments(&mut self) -> Result<Vec<SegmentRecord>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT definition, revision FROM segments WHERE archived = 0 ORDER BY key",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, unsigned_at(row, 1)?)))?;
        rows.map(|row| {
            let (definition, revision): (String, u64) = row?;
            Ok(SegmentRecord { segment: from_json(&definition)?, revision })
        })
        .collect()
    }

    async fn segment(&mut self, key: &str) -> Result<Option<SegmentRecord>, StoreError> {
        let row: Option<(String, u64)> = self
            .0
            .prepare_cached(
                "SELECT definition, revision FROM segments WHERE key = ?1 AND archived = 0",
            )?
            .query_row(params![key], |row| Ok((row.get(0)?, unsigned_at(row, 1)?)))
            .optional()?;
        row.map(|(definition, revision)| {
            Ok(SegmentRecord { segment: from_json(&definition)?, revision })
        })
        .transpose()
    }

    async fn insert_segment(
        &mut self,
        segment: &wire::Segment,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let inserted = self.0.execute(
            "INSERT INTO segments (key, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT DO NOTHING",
            params![segment.key, to_json(segment)?, at],
        )?;
        Ok(inserted == 1)
    }

    async fn update_segment(
        &mut self,
        segment: &wire::Segment,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE segments SET definition = ?2, updated_at = ?3 WHERE key = ?1",
            params![segment.key, to_json(segment)?, at],
        )?;
        Ok(())
    }

    async fn archive_segment(&mut self, key: &str, at: Timestamp) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE segments SET archived = 1, updated_at = ?2 WHERE key = ?1",
            params![key, at],
        )?;
        Ok(())
    }

    async fn bump_segment_revision(&mut self, key: &str, at: Timestamp) -> Result<u64, StoreError> {
        Ok(self.0.query_row(
            "UPDATE segments SET revision = revision + 1, updated_at = ?2 WHERE key = ?1
             RETURNING revision",
            params![key, at],
            |row| unsigned_at(row, 0),
        )?)
    }

    async fn append_audit(&mut self, at: Timestamp, entry: &AuditEntry) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO audit (at, actor, action, environment, flag, segment, reason, before, after)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                at,
                entry.actor,
                entry.action,
                entry.environment,
                entry.flag,
                entry.segment,
                entry.reason,
                entry.before.as_ref().map(|v| v.to_string()),
                entry.after.as_ref().map(|v| v.to_string())
            ],
        )?;
        Ok(())
    }

    async fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut statement = self.0.prepare_cached(&format!(
            "SELECT id, at, actor, action, environment, flag, segment, reason, before, after
             FROM audit
             WHERE (?1 IS NULL OR flag = ?1) AND (?2 IS NULL OR environment = ?2)
               AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR segment = ?4)
             ORDER BY id {} LIMIT ?5",
            order(query.newest_first)
        ))?;
        let limit = query.limit.unwrap_or(u32::MAX);
        let arguments = params![query.flag, query.environment, query.since, query.segment, limit];
        let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
        let rows = statement.query_map(arguments, |row| {
            Ok(AuditRecord {
                id: row.get(0)?,
                at: row.get(1)?,
                actor: row.get(2)?,
                action: row.get(3)?,
                environment: row.get(4)?,
                flag: row.get(5)?,
                segment: row.get(6)?,
                reason: row.get(7)?,
                before: json(row.get(8)?),
                after: json(row.get(9)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn tokens(&mut self) -> Result<Vec<StoredToken>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT name, scope, environment, hash, created_at FROM tokens ORDER BY name",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?;
        rows.map(|row| {
            let (name, scope, environment, hash, created_at) = row?;
            let scope = Scope::parse(&scope)
                .ok_or_else(|| StoreError::Failed(format!("stored scope `{scope}`")))?;
            Ok(StoredToken { token: Token { name, scope, environment, hash }, created_at })
        })
        .collect()
    }

    async fn insert_token(&mut self, token: &Token, at: Timestamp) -> Result<bool, StoreError> {
        let inserted = self.0.execute(
            "INSERT INTO tokens (name, scope, environment, hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![token.name, token.scope.as_str(), token.environment, token.hash, at],
        )?;
        Ok(inserted == 1)
    }

    async fn delete_token(&mut self, name: &str) -> Result<Option<Token>, StoreError> {
        let row: Option<(String, Option<String>, String)> = self
            .0
            .query_row(
                "DELETE FROM tokens WHERE name = ?1 RETURNING scope, environment, hash",
                params![name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        row.map(|(scope, environment, hash)| {
            let scope = Scope::parse(&scope)
                .ok_or_else(|| StoreError::Failed(format!("stored scope `{scope}`")))?;
            Ok(Token { name: name.to_owned(), scope, environment, hash })
        })
        .transpose()
    }

    async fn readers_revision(&mut self) -> Result<u64, StoreError> {
        Ok(self.0.query_row(
            "SELECT value FROM counters WHERE name = 'readers_revision'",
            [],
            |row| unsigned_at(row, 0),
        )?)
    }

    async fn bump_readers_revision(&mut self) -> Result<u64, StoreError> {
        Ok(self.0.query_row(
            "UPDATE counters SET value = value + 1 WHERE name = 'readers_revision' RETURNING value",
            [],
            |row| unsigned_at(row, 0),
        )?)
    }

    async fn edges(&mut self) -> Result<Vec<EdgeRecord>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT name, url, environment, applied_version, applied_readers_revision, acked_at,
                    last_error
             FROM edges ORDER BY name",
        )?;
        let rows = statement.query_map([], edge_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn insert_edge(&mut self, edge: &NewEdge, at: Timestamp) -> Result<bool, StoreError> {
        let inserted = self.0.execute(
            "INSERT INTO edges (name, url, environment, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            params![edge.name, edge.url, edge.environment, at],
        )?;
        Ok(inserted == 1)
    }

    async fn delete_edge(&mut self, name: &str) -> Result<Option<EdgeRecord>, StoreError> {
        Ok(self
            .0
            .query_row(
                "DELETE FROM edges WHERE name = ?1
                 RETURNING name, url, environment, applied_version, applied_readers_revision,
                           acked_at, last_error",
                params![name],
                edge_record,
            )
            .optional()?)
    }

    async fn record_push(
        &mut self,
        name: &str,
        outcome: &PushOutcome,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        match outcome {
            PushOutcome::Acknowledged { version, readers_revision } => self.0.execute(
                "UPDATE edges SET applied_version = ?2, applied_readers_revision = ?3,
                                  acked_at = ?4, last_error = NULL
                 WHERE name = ?1",
                params![name, signed(*version), signed(*readers_revision), at],
            )?,
            PushOutcome::Failed(error) => self.0.execute(
                "UPDATE edges SET last_error = ?2 WHERE name = ?1",
                params![name, error],
            )?,
        };
        Ok(())
    }

    async fn webhooks(&mut self) -> Result<Vec<WebhookRecord>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT w.name, w.url, w.environment, w.created_at,
                    (SELECT count(*) FROM deliveries d WHERE d.webhook = w.name
                       AND d.delivered_at IS NULL AND d.failed_at IS NULL),
                    (SELECT count(*) FROM deliveries d WHERE d.webhook = w.name
                       AND d.failed_at IS NOT NULL),
                    (SELECT d.last_error FROM deliveries d WHERE d.webhook = w.name
                       AND d.last_error IS NOT NULL ORDER BY d.id DESC LIMIT 1)
             FROM webhooks w ORDER BY w.name",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(WebhookRecord {
                name: row.get(0)?,
                url: row.get(1)?,
                environment: row.get(2)?,
                created_at: row.get(3)?,
                pending: unsigned_at(row, 4)?,
                failed: unsigned_at(row, 5)?,
                last_error: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn insert_webhook(
        &mut self,
        webhook: &NewWebhook,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let inserted = self.0.execute(
            "INSERT INTO webhooks (name, url, environment, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            params![webhook.name, webhook.url, webhook.environment, at],
        )?;
        Ok(inserted == 1)
    }

    async fn delete_webhook(&mut self, name: &str) -> Result<Option<NewWebhook>, StoreError> {
        Ok(self
            .0
            .query_row(
                "DELETE FROM webhooks WHERE name = ?1 RETURNING name, url, environment",
                params![name],
                |row| {
                    Ok(NewWebhook { name: row.get(0)?, url: row.get(1)?, environment: row.get(2)? })
                },
            )
            .optional()?)
    }

    async fn insert_delivery(
        &mut self,
        webhook: &str,
        url: &str,
        event: &str,
        payload: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO deliveries (webhook, url, event, payload, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![webhook, url, event, payload, at],
        )?;
        Ok(())
    }

    async fn fail_deliveries(
        &mut self,
        webhook: &str,
        error: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE deliveries SET failed_at = ?2, last_error = ?3
             WHERE webhook = ?1 AND delivered_at IS NULL AND failed_at IS NULL",
            params![webhook, at, error],
        )?;
        Ok(())
    }

    async fn pending_deliveries(&mut self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT id, webhook, url, event, payload, attempts FROM deliveries
             WHERE delivered_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT ?1",
        )?;
        let rows = statement.query_map(params![limit], |row| {
            Ok(Delivery {
                id: row.get(0)?,
                webhook: row.get(1)?,
                url: row.get(2)?,
                event: row.get(3)?,
                payload: row.get(4)?,
                attempts: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn record_delivery(
        &mut self,
        id: i64,
        outcome: &DeliveryOutcome,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        match outcome {
            DeliveryOutcome::Delivered => self.0.execute(
                "UPDATE deliveries SET attempts = attempts + 1, delivered_at = ?2 WHERE id = ?1",
                params![id, at],
            )?,
            DeliveryOutcome::Failed { error, give_up } => self.0.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2,
                        failed_at = CASE WHEN ?3 THEN ?4 END
                 WHERE id = ?1",
                params![id, error, give_up, at],
            )?,
        };
        Ok(())
    }

    async fn insert_plan(
        &mut self,
        flag: &str,
        environment: &str,
        at: Timestamp,
    ) -> Result<Option<i64>, StoreError> {
        let inserted = self.0.query_row(
            "INSERT INTO plans (flag, environment, status, body, created_at, updated_at)
             VALUES (?1, ?2, 'running', '{}', ?3, ?3) RETURNING id",
            params![flag, environment, at],
            |row| row.get::<_, i64>(0),
        );
        match inserted {
            // The unique index on active plans.
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                Ok(None)
            }
            other => Ok(Some(other?)),
        }
    }

    async fn save_plan(&mut self, plan: &Plan, at: Timestamp) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE plans SET status = ?2, body = ?3, updated_at = ?4 WHERE id = ?1",
            params![plan.id, plan.status.as_str(), to_json(plan)?, at],
        )?;
        Ok(())
    }

    async fn plan(&mut self, id: i64) -> Result<Option<Plan>, StoreError> {
        let body: Option<String> = self
            .0
            .prepare_cached("SELECT body FROM plans WHERE id = ?1")?
            .query_row(params![id], |row| row.get(0))
            .optional()?;
        body.map(|body| from_json(&body)).transpose()
    }

    async fn plans(&mut self, query: &PlanQuery) -> Result<Vec<Plan>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT body FROM plans
             WHERE (?1 IS NULL OR flag = ?1) AND (?2 IS NULL OR environment = ?2)
               AND (?3 = 0 OR status IN ('running', 'held'))
             ORDER BY id DESC",
        )?;
        let rows = statement
            .query_map(params![query.flag, query.environment, query.active], |row| {
                row.get::<_, String>(0)
            })?;
        rows.map(|body| from_json(&body?)).collect()
    }

    async fn insert_decision(&mut self, decision: &Decision) -> Result<i64, StoreError> {
        Ok(self.0.query_row(
            "INSERT INTO decisions (at, plan, flag, environment, action, from_stage, to_stage,
                                    decision, rationale, decided_by, metrics)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING id",
            params![
                decision.at,
                decision.plan,
                decision.flag,
                decision.environment,
                decision.action,
                decision.from_stage,
                decision.to_stage,
                decision.decision,
                decision.rationale,
                decision.decided_by,
                decision.metrics.to_string()
            ],
            |row| row.get(0),
        )?)
    }

    async fn decisions(&mut self, query: &DecisionQuery) -> Result<Vec<Decision>, StoreError> {
        let mut statement = self.0.prepare_cached(&format!(
            "SELECT id, at, plan, flag, environment, action, from_stage, to_stage, decision,
                    rationale, decided_by, metrics
             FROM decisions
             WHERE (?1 IS NULL OR flag = ?1) AND (?2 IS NULL OR environment = ?2)
               AND (?3 IS NULL OR plan = ?3) AND (?4 IS NULL OR at >= ?4)
             ORDER BY id {} LIMIT ?5",
            order(query.newest_first)
        ))?;
        let limit = query.limit.unwrap_or(u32::MAX);
        let arguments = params![query.flag, query.environment, query.plan, query.since, limit];
        let rows = statement.query_map(arguments, |row| {
            let metrics: String = row.get(11)?;
            Ok(Decision {
                id: row.get(0)?,
                at: row.get(1)?,
                plan: row.get(2)?,
                flag: row.get(3)?,
                environment: row.get(4)?,
                action: row.get(5)?,
                from_stage: row.get(6)?,
                to_stage: row.get(7)?,
                decision: row.get(8)?,
                rationale: row.get(9)?,
                decided_by: row.get(10)?,
                metrics: serde_json::from_str(&metrics).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn insert_metric_batch(
        &mut self,
        environment: &str,
        id: &str,
        minute: i64,
    ) -> Result<bool, StoreError> {
        let inserted = self.0.execute(
            "INSERT INTO metric_batches (environment, id, minute) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![environment, id, minute],
        )?;
        Ok(inserted == 1)
    }

    async fn add_metric_count(
        &mut self,
        environment: &str,
        flag: &str,
        row: &CountRow,
    ) -> Result<bool, StoreError> {
        let key =
            params![environment, flag, row.minute, row.variant, row.metric, signed(row.value)];
        let summed = self
            .0
            .prepare_cached(
                "UPDATE metric_counts SET value = value + ?6
                 WHERE environment = ?1 AND flag = ?2 AND minute = ?3 AND variant = ?4
                   AND metric = ?5",
            )?
            .execute(key)?;
        if summed == 1 {
            return Ok(false);
        }
        self.0
            .prepare_cached(
                "INSERT INTO metric_counts (environment, flag, minute, variant, metric, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(key)?;
        Ok(true)
    }

    async fn charge_metric_rows(
        &mut self,
        token: &str,
        minute: i64,
        rows: u64,
    ) -> Result<u64, StoreError> {
        self.0.prepare_cached("DELETE FROM metric_quota WHERE minute < ?1")?.execute([minute])?;
        let total: i64 = self
            .0
            .prepare_cached(
                "INSERT INTO metric_quota (token, minute, added) VALUES (?1, ?2, ?3)
                 ON CONFLICT (token, minute) DO UPDATE SET added = added + excluded.added
                 RETURNING added",
            )?
            .query_row(params![token, minute, signed(rows)], |row| row.get(0))?;
        Ok(total.unsigned_abs())
    }

    async fn metric_names(
        &mut self,
        environment: &str,
        flag: &str,
        after_minute: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT DISTINCT metric FROM metric_counts
             WHERE environment = ?1 AND flag = ?2 AND minute > ?3 ORDER BY metric",
        )?;
        let rows =
            statement.query_map(params![environment, flag, after_minute], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn metric_counts(
        &mut self,
        environment: &str,
        flag: &str,
        after_minute: i64,
        until_minute: i64,
    ) -> Result<Vec<CountRow>, StoreError> {
        let mut statement = self.0.prepare_cached(
            "SELECT variant, metric, minute, value FROM metric_counts
             WHERE environment = ?1 AND flag = ?2 AND minute > ?3 AND minute <= ?4",
        )?;
        let rows =
            statement.query_map(params![environment, flag, after_minute, until_minute], |row| {
                Ok(CountRow {
                    variant: row.get(0)?,
                    metric: row.get(1)?,
                    minute: row.get(2)?,
                    value: unsigned_at(row, 3)?,
                })
            })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn prune_metrics(
        &mut self,
        counts_before: i64,
        batches_before: i64,
    ) -> Result<(), StoreError> {
        self.0.execute("DELETE FROM metric_counts WHERE minute < ?1", params![counts_before])?;
        self.0.execute("DELETE FROM metric_batches WHERE minute < ?1", params![batches_before])?;
        Ok(())
    }
}

fn edge_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<EdgeRecord> {
    let unsigned = |index| row.get::<_, Option<i64>>(index).map(|n| n.map(i64::unsigned_abs));
    Ok(EdgeRecord {
        name: row.get(0)?,
        url: row.get(1)?,
        environment: row.get(2)?,
        applied_version: unsigned(3)?,
        applied_readers_revision: unsigned(4)?,
        acked_at: row.get(5)?,
        last_error: row.get(6)?,
    })
}

/// Times are stored as RFC 3339 text in UTC with milliseconds: one fixed width, so SQLite's
/// comparisons of it agree with the times'.
impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Timestamp::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("stored time `{text}`").into()))
    }
}

/// Versions and counts: SQLite integers that are never negative (the schema checks versions).
fn unsigned_at(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    row.get::<_, i64>(index).map(|version| version.unsigned_abs())
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Failed(error.to_string())
    }
}

/// A `flags` row (definition, revision, created_at, updated_at); the JSON is read after the row.
fn stored_flag(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredFlag, StoreError>> {
    let definition: String = row.get(0)?;
    let (revision, created_at, updated_at) = (unsigned_at(row, 1)?, row.get(2)?, row.get(3)?);
    Ok(from_json(&definition).map(|definition| StoredFlag {
        definition,
        revision,
        created_at,
        updated_at,
    }))
}
