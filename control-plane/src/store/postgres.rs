//! The PostgreSQL backend, for control planes that run as several replicas on one database.
//!
//! Every write transaction first takes one transaction-scoped advisory lock that all replicas
//! share, so writes commit one at a time across the whole cluster, as they do on SQLite:
//! versions stay contiguous, and checks that read before they write (`If-Match`, taken names,
//! quotas) hold without serialization failures to retry. Within a process, one task takes
//! write jobs in the order they are submitted and runs a committed job's `after` before taking
//! the next, so commits and what follows them happen in one order and a caller hanging up
//! interrupts neither. Reads run on a connection pool, each in a `REPEATABLE READ`, read-only
//! transaction: one committed state.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use flag_core::wire;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, IsolationLevel, NoTls, Row};

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

/// Versioned migrations, applied in order; `schema_migrations` records those applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, include_str!("../../migrations/postgres/0002_snapshots.sql")),
    (3, include_str!("../../migrations/postgres/0003_metric_quota.sql")),
    (4, include_str!("../../migrations/postgres/0004_plan_stage_percentages.sql")),
    (5, include_str!("../../migrations/postgres/0005_browsers.sql")),
];

/// Advisory lock keys ("rollgate" in ASCII, then one more per purpose).
const WRITE_LOCK: i64 = 0x726f_6c6c_6761_7465;
const MIGRATION_LOCK: i64 = WRITE_LOCK + 1;
const LEADER_LOCK: i64 = WRITE_LOCK + 2;

/// How often a process that does not lead tries the leader lock.
const LEADER_RETRY: Duration = Duration::from_millis(250);

/// How long the commit listener waits before connecting again.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// How long a request waits for a connection to the database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per process: the writer's, and reads'.
const POOL_SIZE: usize = 16;

pub struct PostgresStore {
    /// To the writer task; dropping the store ends it.
    writes: mpsc::UnboundedSender<WriteRequest>,
    pool: Pool,
    /// Woken by every commit other processes may need to follow (`Store::commits`).
    commits: Arc<Notify>,
    /// Whether the listener is listening.
    listening: Arc<AtomicBool>,
    /// Whether this process holds the leader lock.
    leading: watch::Sender<bool>,
    /// The listener and the leader lock's holder.
    tasks: [AbortHandle; 2],
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.tasks.iter().for_each(AbortHandle::abort);
    }
}

struct WriteRequest {
    job: WriteJob,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/database`) and applies migrations.
    /// Call it inside a tokio runtime: the writer task and after-commit actions run there.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Failed(format!("the database URL: {e}")))?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(StoreError::Failed(
                "sslmode=require: TLS to PostgreSQL is not supported yet; reach the database \
                 over a private network or a local TLS proxy (docs/deploy.md)"
                    .into(),
            ));
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            // While the database is down, a request fails in seconds rather than waiting.
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Failed(format!("the connection pool: {e}")))?;
        migrate(&pool).await?;
        let (writes, requests) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(pool.clone(), requests));
        let commits = Arc::new(Notify::new());
        let listening = Arc::new(AtomicBool::new(false));
        let listener =
            tokio::spawn(listen(config.clone(), Arc::clone(&commits), Arc::clone(&listening)))
                .abort_handle();
        let leading = watch::Sender::new(false);
        let leader = tokio::spawn(lead(config, leading.clone())).abort_handle();
        Ok(Self { writes, pool, commits, listening, leading, tasks: [listener, leader] })
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn write(&self, job: WriteJob) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest { job, reply })
            .map_err(|_| StoreError::Failed("the writer task has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Failed("the writer task has stopped".into()))?
    }

    async fn read(&self, job: ReadJob) -> Result<Erased, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let value = AssertUnwindSafe(job(&mut Pg(&transaction)))
            .catch_unwind()
            .await
            .map_err(|_| StoreError::Failed("a transaction's work panicked".into()))?;
        // A read transaction has nothing to keep: ending it either way is the same.
        transaction.rollback().await?;
        Ok(value)
    }

    fn commits(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.commits))
    }

    fn leadership(&self) -> Option<watch::Receiver<bool>> {
        Some(self.leading.subscribe())
    }

    fn following(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }
}

/// Takes the leader lock when it is free and holds it for as long as its connection lives: a
/// process that dies (even by `kill -9`) closes the connection, and PostgreSQL frees the lock
/// for the next one to take within `LEADER_RETRY`.
async fn lead(mut config: tokio_postgres::Config, leading: watch::Sender<bool>) {
    // Notice a dead server within about a minute rather than the system's two hours.
    config.keepalives_idle(Duration::from_secs(30));
    loop {
        match config.connect(NoTls).await {
            Ok((client, connection)) => {
                let connection = tokio::spawn(connection);
                let won = loop {
                    match client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK]).await
                    {
                        Ok(row) if row.get::<_, bool>(0) => break true,
                        Ok(_) => tokio::time::sleep(LEADER_RETRY).await,
                        Err(error) => {
                            tracing::warn!(error = %StoreError::from(error), "taking the leader lock");
                            break false;
                        }
                    }
                };
                if won {
                    tracing::info!("leading: the scheduler, edge pushes and webhooks run here");
                    leading.send_replace(true);
                    let _ = connection.await;
                    leading.send_replace(false);
                    tracing::warn!("no longer leading: the leader lock's connection closed");
                }
            }
            Err(error) => {
                tracing::warn!(error = %StoreError::from(error), "taking the leader lock")
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Listens for commits on a connection of its own, for as long as the store lives. After each
/// (re)connection it wakes `commits` once, since commits may have gone unheard meanwhile.
async fn listen(config: tokio_postgres::Config, commits: Arc<Notify>, listening: Arc<AtomicBool>) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let heard = Arc::clone(&commits);
                // Ends when the connection does, or once `client` is dropped.
                let messages = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => heard.notify_one(),
                            Ok(_) => {}
                            Err(error) => return Err(StoreError::from(error)),
                        }
                    }
                    Ok(())
                });
                match client.batch_execute("LISTEN rollgate_changes").await {
                    Ok(()) => {
                        listening.store(true, Ordering::SeqCst);
                        commits.notify_one();
                        if let Ok(Err(error)) = messages.await {
                            tracing::warn!(%error, "listening for commits");
                        }
                        listening.store(false, Ordering::SeqCst);
                    }
                    Err(error) => {
                        tracing::warn!(error = %StoreError::from(error), "listening for commits");
                        messages.abort();
                    }
                }
            }
            Err(error) => tracing::warn!(error = %StoreError::from(error), "listening for commits"),
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Applies the migrations a database lacks. Replicas that start together take turns; the
/// later ones find nothing to do.
async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let applied: i64 = transaction
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
        .await?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if applied > known {
        return Err(StoreError::Failed(format!(
            "the database is at schema version {applied}, newer than this rollgate's {known}: \
             run a newer rollgate"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
        transaction.batch_execute(sql).await?;
        transaction
            .execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version])
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// Takes write requests in order until the store is dropped.
async fn run_writer(pool: Pool, mut requests: mpsc::UnboundedReceiver<WriteRequest>) {
    while let Some(WriteRequest { job, reply }) = requests.recv().await {
        let outcome = write_one(&pool, job).await;
        // The caller may have stopped waiting; the write and its `after` happened anyway.
        let _ = reply.send(outcome);
    }
}

async fn write_one(pool: &Pool, job: WriteJob) -> Result<Outcome, StoreError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]).await?;
    // A job that panics or fails drops the transaction, which rolls it back.
    let ended = AssertUnwindSafe(job(&mut Pg(&transaction)))
        .catch_unwind()
        .await
        .map_err(|_| StoreError::Failed("a transaction's work panicked".into()))?;
    let (value, after) = match ended {
        Ended::Commit { value, after } => (value, after),
        Ended::Rollback(error) => {
            transaction.rollback().await?;
            return Ok(Outcome::RolledBack(error));
        }
    };
    transaction.commit().await?;
    // Committed: the after-commit action must not take the writer down with it.
    if catch_unwind(AssertUnwindSafe(after)).is_err() {
        tracing::error!("an after-commit action panicked");
    }
    Ok(Outcome::Committed(value))
}

/// A transaction as a job's `Tx`.
struct Pg<'t, 'c>(&'t Transaction<'c>);

type Parameters<'p> = [&'p (dyn ToSql + Sync)];

impl Pg<'_, '_> {
    async fn rows(&self, sql: &str, parameters: &Parameters<'_>) -> Result<Vec<Row>, StoreError> {
        let statement = self.0.prepare_cached(sql).await?;
        Ok(self.0.query(&statement, parameters).await?)
    }

    async fn optional(
        &self,
        sql: &str,
        parameters: &Parameters<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let statement = self.0.prepare_cached(sql).await?;
        Ok(self.0.query_opt(&statement, parameters).await?)
    }

    async fn one(&self, sql: &str, parameters: &Parameters<'_>) -> Result<Row, StoreError> {
        let statement = self.0.prepare_cached(sql).await?;
        Ok(self.0.query_one(&statement, parameters).await?)
    }

    /// Tells every process, once this transaction commits, that there is something to catch
    /// up with (several in one transaction arrive as one).
    async fn notify(&self) -> Result<(), StoreError> {
        self.execute("SELECT pg_notify('rollgate_changes', '')::text", &[]).await.map(drop)
    }

    /// The number of rows changed.
    async fn execute(&self, sql: &str, parameters: &Parameters<'_>) -> Result<u64, StoreError> {
        let statement = self.0.prepare_cached(sql).await?;
        Ok(self.0.execute(&statement, parameters).await?)
    }
}

#[async_trait::async_trait]
impl Tx for Pg<'_, '_> {
    async fn environments(&mut self) -> Result<Vec<Environment>, StoreError> {
        let rows = self
            .rows("SELECT name, version, allowed_origins FROM environments ORDER BY name", &[])
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Environment {
                    name: row.get(0),
                    version: unsigned(row.get(1)),
                    allowed_origins: from_json(row.get(2))?,
                })
            })
            .collect()
    }

    async fn set_allowed_origins(
        &mut self,
        environment: &str,
        origins: &[String],
    ) -> Result<bool, StoreError> {
        let origins = serde_json::json!(origins).to_string();
        let updated = self
            .execute(
                "UPDATE environments SET allowed_origins = $2 WHERE name = $1",
                &[&environment, &origins],
            )
            .await?;
        Ok(updated == 1)
    }

    async fn environment_version(&mut self, name: &str) -> Result<Option<u64>, StoreError> {
        let row =
            self.optional("SELECT version FROM environments WHERE name = $1", &[&name]).await?;
        Ok(row.map(|row| unsigned(row.get(0))))
    }

    async fn insert_environment(&mut self, name: &str, at: Timestamp) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO environments (name, version, created_at) VALUES ($1, 0, $2)
             ON CONFLICT DO NOTHING",
                &[&name, &at],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn bump_version(&mut self, environment: &str) -> Result<u64, StoreError> {
        // Every replica hears of the new version when the transaction commits.
        let row = self
            .one(
                "WITH bumped AS (
                     UPDATE environments SET version = version + 1 WHERE name = $1
                     RETURNING version
                 )
                 SELECT version, pg_notify('rollgate_changes', '')::text FROM bumped",
                &[&environment],
            )
            .await?;
        Ok(unsigned(row.get(0)))
    }

    async fn put_snapshot(
        &mut self,
        environment: &str,
        version: u64,
        json: &[u8],
    ) -> Result<(), StoreError> {
        let version = signed(version);
        self.execute(
            "INSERT INTO snapshots (environment, version, body) VALUES ($1, $2, $3)
             ON CONFLICT (environment, version) DO UPDATE SET body = excluded.body",
            &[&environment, &version, &json],
        )
        .await?;
        self.execute(
            "DELETE FROM snapshots WHERE environment = $1 AND version <= $2",
            &[&environment, &(version - signed(KEPT_SNAPSHOTS))],
        )
        .await?;
        Ok(())
    }

    async fn snapshots_after(
        &mut self,
        environment: &str,
        version: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows = self
            .rows(
                "SELECT version, body FROM snapshots WHERE environment = $1 AND version > $2
                 ORDER BY version",
                &[&environment, &signed(version)],
            )
            .await?;
        Ok(rows.iter().map(|row| (unsigned(row.get(0)), row.get(1))).collect())
    }

    async fn flags(&mut self) -> Result<Vec<StoredFlag>, StoreError> {
        let rows = self
            .rows(
                "SELECT definition, revision, created_at, updated_at FROM flags WHERE NOT archived
                 ORDER BY key",
                &[],
            )
            .await?;
        rows.iter().map(stored_flag).collect()
    }

    async fn flag(&mut self, key: &str) -> Result<Option<StoredFlag>, StoreError> {
        let row = self
            .optional(
                "SELECT definition, revision, created_at, updated_at FROM flags
                 WHERE key = $1 AND NOT archived",
                &[&key],
            )
            .await?;
        row.as_ref().map(stored_flag).transpose()
    }

    async fn insert_flag(
        &mut self,
        definition: &FlagDefinition,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let inserted = self.execute(
            "INSERT INTO flags (key, definition, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT DO NOTHING",
            &[&definition.key, &to_json(definition)?, &at],
        ).await?;
        Ok(inserted == 1)
    }

    async fn update_flag(
        &mut self,
        definition: &FlagDefinition,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE flags SET definition = $2, updated_at = $3 WHERE key = $1",
            &[&definition.key, &to_json(definition)?, &at],
        )
        .await?;
        Ok(())
    }

    async fn archive_flag(&mut self, key: &str, at: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "UPDATE flags SET archived = true, updated_at = $2 WHERE key = $1",
            &[&key, &at],
        )
        .await?;
        Ok(())
    }

    async fn bump_flag_revision(&mut self, key: &str, at: Timestamp) -> Result<u64, StoreError> {
        let row = self
            .one(
                "UPDATE flags SET revision = revision + 1, updated_at = $2 WHERE key = $1
             RETURNING revision",
                &[&key, &at],
            )
            .await?;
        Ok(unsigned(row.get(0)))
    }

    async fn flag_states(&mut self, flag: &str) -> Result<BTreeMap<String, FlagState>, StoreError> {
        let rows = self
            .rows("SELECT environment, state FROM flag_states WHERE flag = $1", &[&flag])
            .await?;
        rows.iter().map(|row| Ok((row.get(0), from_json(row.get(1))?))).collect()
    }

    async fn flag_state(
        &mut self,
        environment: &str,
        flag: &str,
    ) -> Result<Option<FlagState>, StoreError> {
        let row = self
            .optional(
                "SELECT state FROM flag_states WHERE environment = $1 AND flag = $2",
                &[&environment, &flag],
            )
            .await?;
        row.map(|row| from_json(row.get(0))).transpose()
    }

    async fn put_flag_state(
        &mut self,
        environment: &str,
        flag: &str,
        state: &FlagState,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO flag_states (environment, flag, state, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (environment, flag) DO UPDATE SET state = excluded.state,
                                                          updated_at = excluded.updated_at",
            &[&environment, &flag, &to_json(state)?, &at],
        )
        .await?;
        Ok(())
    }

    async fn environment_flags(
        &mut self,
        environment: &str,
    ) -> Result<Vec<(FlagDefinition, FlagState)>, StoreError> {
        let rows = self
            .rows(
                "SELECT f.definition, s.state FROM flags f JOIN flag_states s ON s.flag = f.key
                 WHERE s.environment = $1 AND NOT f.archived ORDER BY f.key",
                &[&environment],
            )
            .await?;
        rows.iter().map(|row| Ok((from_json(row.get(0))?, from_json(row.get(1))?))).collect()
    }

    async fn segments(&mut self) -> Result<Vec<SegmentRecord>, StoreError> {
        let rows = self
            .rows("SELECT definition, revision FROM segments WHERE NOT archived ORDER BY key", &[])
            .await?;
        rows.iter().map(segment_record).collect()
    }

    async fn segment(&mut self, key: &str) -> Result<Option<SegmentRecord>, StoreError> {
        let row = self
            .optional(
                "SELECT definition, revision FROM segments WHERE key = $1 AND NOT archived",
                &[&key],
            )
            .await?;
        row.as_ref().map(segment_record).transpose()
    }

    async fn insert_segment(
        &mut self,
        segment: &wire::Segment,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let inserted = self.execute(
            "INSERT INTO segments (key, definition, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT DO NOTHING",
            &[&segment.key, &to_json(segment)?, &at],
        ).await?;
        Ok(inserted == 1)
    }

    async fn update_segment(
        &mut self,
        segment: &wire::Segment,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE segments SET definition = $2, updated_at = $3 WHERE key = $1",
            &[&segment.key, &to_json(segment)?, &at],
        )
        .await?;
        Ok(())
    }

    async fn archive_segment(&mut self, key: &str, at: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "UPDATE segments SET archived = true, updated_at = $2 WHERE key = $1",
            &[&key, &at],
        )
        .await?;
        Ok(())
    }

    async fn bump_segment_revision(&mut self, key: &str, at: Timestamp) -> Result<u64, StoreError> {
        let row = self
            .one(
                "UPDATE segments SET revision = revision + 1, updated_at = $2 WHERE key = $1
             RETURNING revision",
                &[&key, &at],
            )
            .await?;
        Ok(unsigned(row.get(0)))
    }

    async fn append_audit(&mut self, at: Timestamp, entry: &AuditEntry) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO audit (at, actor, action, environment, flag, segment, reason, before, after)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &at,
                &entry.actor,
                &entry.action,
                &entry.environment,
                &entry.flag,
                &entry.segment,
                &entry.reason,
                &entry.before.as_ref().map(|v| v.to_string()),
                &entry.after.as_ref().map(|v| v.to_string()),
            ],
        )
        .await?;
        Ok(())
    }

    async fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::from(query.limit.unwrap_or(u32::MAX));
        let rows = self
            .rows(
                &format!(
                    "SELECT id, at, actor, action, environment, flag, segment, reason, before,
                            after
                     FROM audit
                     WHERE ($1::text IS NULL OR flag = $1)
                       AND ($2::text IS NULL OR environment = $2)
                       AND ($3::timestamptz IS NULL OR at >= $3)
                       AND ($4::text IS NULL OR segment = $4)
                     ORDER BY id {} LIMIT $5",
                    order(query.newest_first)
                ),
                &[&query.flag, &query.environment, &query.since, &query.segment, &limit],
            )
            .await?;
        let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
        Ok(rows
            .iter()
            .map(|row| AuditRecord {
                id: row.get(0),
                at: row.get(1),
                actor: row.get(2),
                action: row.get(3),
                environment: row.get(4),
                flag: row.get(5),
                segment: row.get(6),
                reason: row.get(7),
                before: json(row.get(8)),
                after: json(row.get(9)),
            })
            .collect())
    }

    async fn tokens(&mut self) -> Result<Vec<StoredToken>, StoreError> {
        let rows = self
            .rows(
                "SELECT name, scope, environment, hash, created_at FROM tokens ORDER BY name",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let token = Token {
                    name: row.get(0),
                    scope: scope(row.get(1))?,
                    environment: row.get(2),
                    hash: row.get(3),
                };
                Ok(StoredToken { token, created_at: row.get(4) })
            })
            .collect()
    }

    async fn insert_token(&mut self, token: &Token, at: Timestamp) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO tokens (name, scope, environment, hash, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&token.name, &token.scope.as_str(), &token.environment, &token.hash, &at],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn delete_token(&mut self, name: &str) -> Result<Option<Token>, StoreError> {
        let row = self
            .optional(
                "DELETE FROM tokens WHERE name = $1 RETURNING scope, environment, hash",
                &[&name],
            )
            .await?;
        row.map(|row| {
            Ok(Token {
                name: name.to_owned(),
                scope: scope(row.get(0))?,
                environment: row.get(1),
                hash: row.get(2),
            })
        })
        .transpose()
    }

    async fn readers_revision(&mut self) -> Result<u64, StoreError> {
        let row =
            self.one("SELECT value FROM counters WHERE name = 'readers_revision'", &[]).await?;
        Ok(unsigned(row.get(0)))
    }

    async fn bump_readers_revision(&mut self) -> Result<u64, StoreError> {
        // As for versions: every replica hears of it at the commit.
        let row = self
            .one(
                "WITH bumped AS (
                     UPDATE counters SET value = value + 1 WHERE name = 'readers_revision'
                     RETURNING value
                 )
                 SELECT value, pg_notify('rollgate_changes', '')::text FROM bumped",
                &[],
            )
            .await?;
        Ok(unsigned(row.get(0)))
    }

    async fn edges(&mut self) -> Result<Vec<EdgeRecord>, StoreError> {
        let rows = self
            .rows(
                "SELECT name, url, environment, applied_version, applied_readers_revision,
                        acked_at, last_error
                 FROM edges ORDER BY name",
                &[],
            )
            .await?;
        Ok(rows.iter().map(edge_record).collect())
    }

    async fn insert_edge(&mut self, edge: &NewEdge, at: Timestamp) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO edges (name, url, environment, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
                &[&edge.name, &edge.url, &edge.environment, &at],
            )
            .await?;
        if inserted == 1 {
            // The leading process pushes to it.
            self.notify().await?;
        }
        Ok(inserted == 1)
    }

    async fn delete_edge(&mut self, name: &str) -> Result<Option<EdgeRecord>, StoreError> {
        let row = self
            .optional(
                "DELETE FROM edges WHERE name = $1
             RETURNING name, url, environment, applied_version, applied_readers_revision,
                       acked_at, last_error",
                &[&name],
            )
            .await?;
        if row.is_some() {
            self.notify().await?;
        }
        Ok(row.as_ref().map(edge_record))
    }

    async fn record_push(
        &mut self,
        name: &str,
        outcome: &PushOutcome,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        match outcome {
            PushOutcome::Acknowledged { version, readers_revision } => {
                self.execute(
                    "UPDATE edges SET applied_version = $2, applied_readers_revision = $3,
                                      acked_at = $4, last_error = NULL
                     WHERE name = $1",
                    &[&name, &signed(*version), &signed(*readers_revision), &at],
                )
                .await?
            }
            PushOutcome::Failed(error) => {
                self.execute("UPDATE edges SET last_error = $2 WHERE name = $1", &[&name, error])
                    .await?
            }
        };
        Ok(())
    }

    async fn webhooks(&mut self) -> Result<Vec<WebhookRecord>, StoreError> {
        let rows = self
            .rows(
                "SELECT w.name, w.url, w.environment, w.created_at,
                        (SELECT count(*) FROM deliveries d WHERE d.webhook = w.name
                           AND d.delivered_at IS NULL AND d.failed_at IS NULL),
                        (SELECT count(*) FROM deliveries d WHERE d.webhook = w.name
                           AND d.failed_at IS NOT NULL),
                        (SELECT d.last_error FROM deliveries d WHERE d.webhook = w.name
                           AND d.last_error IS NOT NULL ORDER BY d.id DESC LIMIT 1)
                 FROM webhooks w ORDER BY w.name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| WebhookRecord {
                name: row.get(0),
                url: row.get(1),
                environment: row.get(2),
                created_at: row.get(3),
                pending: unsigned(row.get(4)),
                failed: unsigned(row.get(5)),
                last_error: row.get(6),
            })
            .collect())
    }

    async fn insert_webhook(
        &mut self,
        webhook: &NewWebhook,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO webhooks (name, url, environment, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
                &[&webhook.name, &webhook.url, &webhook.environment, &at],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn delete_webhook(&mut self, name: &str) -> Result<Option<NewWebhook>, StoreError> {
        let row = self
            .optional(
                "DELETE FROM webhooks WHERE name = $1 RETURNING name, url, environment",
                &[&name],
            )
            .await?;
        Ok(row.map(|row| NewWebhook { name: row.get(0), url: row.get(1), environment: row.get(2) }))
    }

    async fn insert_delivery(
        &mut self,
        webhook: &str,
        url: &str,
        event: &str,
        payload: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO deliveries (webhook, url, event, payload, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[&webhook, &url, &event, &payload, &at],
        )
        .await?;
        // The leading process sends it.
        self.notify().await
    }

    async fn fail_deliveries(
        &mut self,
        webhook: &str,
        error: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE deliveries SET failed_at = $2, last_error = $3
             WHERE webhook = $1 AND delivered_at IS NULL AND failed_at IS NULL",
            &[&webhook, &at, &error],
        )
        .await?;
        Ok(())
    }

    async fn pending_deliveries(&mut self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let rows = self
            .rows(
                "SELECT id, webhook, url, event, payload, attempts FROM deliveries
                 WHERE delivered_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Delivery {
                id: row.get(0),
                webhook: row.get(1),
                url: row.get(2),
                event: row.get(3),
                payload: row.get(4),
                attempts: row.get::<_, i32>(5).unsigned_abs(),
            })
            .collect())
    }

    async fn record_delivery(
        &mut self,
        id: i64,
        outcome: &DeliveryOutcome,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        match outcome {
            DeliveryOutcome::Delivered => {
                self.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, delivered_at = $2
                     WHERE id = $1",
                    &[&id, &at],
                )
                .await?
            }
            DeliveryOutcome::Failed { error, give_up } => {
                self.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, last_error = $2,
                            failed_at = CASE WHEN $3::boolean THEN $4::timestamptz END
                     WHERE id = $1",
                    &[&id, error, give_up, &at],
                )
                .await?
            }
        };
        Ok(())
    }

    async fn insert_plan(
        &mut self,
        flag: &str,
        environment: &str,
        at: Timestamp,
    ) -> Result<Option<i64>, StoreError> {
        // A failed statement would abort the whole transaction, so a second active plan is
        // skipped rather than refused by the unique index.
        let row = self
            .optional(
                "INSERT INTO plans (flag, environment, status, body, created_at, updated_at)
             VALUES ($1, $2, 'running', '{}', $3, $3)
             ON CONFLICT (flag, environment) WHERE status IN ('running', 'held') DO NOTHING
             RETURNING id",
                &[&flag, &environment, &at],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn save_plan(&mut self, plan: &Plan, at: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "UPDATE plans SET status = $2, body = $3, updated_at = $4 WHERE id = $1",
            &[&plan.id, &plan.status.as_str(), &to_json(plan)?, &at],
        )
        .await?;
        Ok(())
    }

    async fn plan(&mut self, id: i64) -> Result<Option<Plan>, StoreError> {
        let row = self.optional("SELECT body FROM plans WHERE id = $1", &[&id]).await?;
        row.map(|row| from_json(row.get(0))).transpose()
    }

    async fn plans(&mut self, query: &PlanQuery) -> Result<Vec<Plan>, StoreError> {
        let rows = self
            .rows(
                "SELECT body FROM plans
                 WHERE ($1::text IS NULL OR flag = $1) AND ($2::text IS NULL OR environment = $2)
                   AND (NOT $3::boolean OR status IN ('running', 'held'))
                 ORDER BY id DESC",
                &[&query.flag, &query.environment, &query.active],
            )
            .await?;
        rows.iter().map(|row| from_json(row.get(0))).collect()
    }

    async fn insert_decision(&mut self, decision: &Decision) -> Result<i64, StoreError> {
        let row = self
            .one(
                "INSERT INTO decisions (at, plan, flag, environment, action, from_stage, to_stage,
                                    decision, rationale, decided_by, metrics)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                &[
                    &decision.at,
                    &decision.plan,
                    &decision.flag,
                    &decision.environment,
                    &decision.action,
                    &decision.from_stage,
                    &decision.to_stage,
                    &decision.decision,
                    &decision.rationale,
                    &decision.decided_by,
                    &decision.metrics.to_string(),
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn decisions(&mut self, query: &DecisionQuery) -> Result<Vec<Decision>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT id, at, plan, flag, environment, action, from_stage, to_stage,
                            decision, rationale, decided_by, metrics
                     FROM decisions
                     WHERE ($1::text IS NULL OR flag = $1)
                       AND ($2::text IS NULL OR environment = $2)
                       AND ($3::bigint IS NULL OR plan = $3)
                       AND ($4::timestamptz IS NULL OR at >= $4)
                     ORDER BY id {} LIMIT $5",
                    order(query.newest_first)
                ),
                &[
                    &query.flag,
                    &query.environment,
                    &query.plan,
                    &query.since,
                    &i64::from(query.limit.unwrap_or(u32::MAX)),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Decision {
                id: row.get(0),
                at: row.get(1),
                plan: row.get(2),
                flag: row.get(3),
                environment: row.get(4),
                action: row.get(5),
                from_stage: row.get(6),
                to_stage: row.get(7),
                decision: row.get(8),
                rationale: row.get(9),
                decided_by: row.get(10),
                metrics: serde_json::from_str(row.get(11)).unwrap_or_default(),
            })
            .collect())
    }

    async fn insert_metric_batch(
        &mut self,
        environment: &str,
        id: &str,
        minute: i64,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO metric_batches (environment, id, minute) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
                &[&environment, &id, &minute],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn add_metric_count(
        &mut self,
        environment: &str,
        flag: &str,
        row: &CountRow,
    ) -> Result<bool, StoreError> {
        // `xmax = 0` only on a row this statement inserted, not one it updated.
        let inserted = self
            .one(
                "INSERT INTO metric_counts (environment, flag, minute, variant, metric, value)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (environment, flag, minute, variant, metric)
             DO UPDATE SET value = metric_counts.value + excluded.value
             RETURNING xmax = 0",
                &[&environment, &flag, &row.minute, &row.variant, &row.metric, &signed(row.value)],
            )
            .await?;
        Ok(inserted.get(0))
    }

    async fn charge_metric_rows(
        &mut self,
        token: &str,
        minute: i64,
        rows: u64,
    ) -> Result<u64, StoreError> {
        self.execute("DELETE FROM metric_quota WHERE minute < $1", &[&minute]).await?;
        let total = self
            .one(
                "INSERT INTO metric_quota (token, minute, added) VALUES ($1, $2, $3)
                 ON CONFLICT (token, minute)
                 DO UPDATE SET added = metric_quota.added + excluded.added
                 RETURNING added",
                &[&token, &minute, &signed(rows)],
            )
            .await?;
        Ok(total.get::<_, i64>(0).unsigned_abs())
    }

    async fn metric_names(
        &mut self,
        environment: &str,
        flag: &str,
        after_minute: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .rows(
                "SELECT DISTINCT metric FROM metric_counts
                 WHERE environment = $1 AND flag = $2 AND minute > $3 ORDER BY metric",
                &[&environment, &flag, &after_minute],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn metric_counts(
        &mut self,
        environment: &str,
        flag: &str,
        after_minute: i64,
        until_minute: i64,
    ) -> Result<Vec<CountRow>, StoreError> {
        let rows = self
            .rows(
                "SELECT variant, metric, minute, value FROM metric_counts
                 WHERE environment = $1 AND flag = $2 AND minute > $3 AND minute <= $4",
                &[&environment, &flag, &after_minute, &until_minute],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| CountRow {
                variant: row.get(0),
                metric: row.get(1),
                minute: row.get(2),
                value: unsigned(row.get(3)),
            })
            .collect())
    }

    async fn prune_metrics(
        &mut self,
        counts_before: i64,
        batches_before: i64,
    ) -> Result<(), StoreError> {
        self.execute("DELETE FROM metric_counts WHERE minute < $1", &[&counts_before]).await?;
        self.execute("DELETE FROM metric_batches WHERE minute < $1", &[&batches_before]).await?;
        Ok(())
    }
}

fn stored_flag(row: &Row) -> Result<StoredFlag, StoreError> {
    Ok(StoredFlag {
        definition: from_json(row.get(0))?,
        revision: unsigned(row.get(1)),
        created_at: row.get(2),
        updated_at: row.get(3),
    })
}

fn segment_record(row: &Row) -> Result<SegmentRecord, StoreError> {
    Ok(SegmentRecord { segment: from_json(row.get(0))?, revision: unsigned(row.get(1)) })
}

fn edge_record(row: &Row) -> EdgeRecord {
    let counter = |index| row.get::<_, Option<i64>>(index).map(unsigned);
    EdgeRecord {
        name: row.get(0),
        url: row.get(1),
        environment: row.get(2),
        applied_version: counter(3),
        applied_readers_revision: counter(4),
        acked_at: row.get(5),
        last_error: row.get(6),
    }
}

fn scope(stored: &str) -> Result<Scope, StoreError> {
    Scope::parse(stored).ok_or_else(|| StoreError::Failed(format!("stored scope `{stored}`")))
}

/// Versions, revisions and counts: `bigint`s the schema keeps from going negative.
fn unsigned(stored: i64) -> u64 {
    stored.unsigned_abs()
}

/// Times are `timestamptz`, which keeps microseconds: a `Timestamp`'s milliseconds come back
/// as they went in.
impl ToSql for Timestamp {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.datetime().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <DateTime<Utc> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Timestamp {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        DateTime::<Utc>::from_sql(ty, raw).map(Timestamp::from_datetime)
    }

    fn accepts(ty: &Type) -> bool {
        <DateTime<Utc> as FromSql<'_>>::accepts(ty)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        // The server's own message says more than the driver's summary.
        let Some(server) = error.as_db_error() else {
            // No answer from the server: the connection failed or closed.
            return match error.source() {
                Some(cause) => Self::Unavailable(format!("PostgreSQL: {error}: {cause}")),
                None => Self::Unavailable(format!("PostgreSQL: {error}")),
            };
        };
        let code = server.code();
        let unreachable = code.code().starts_with("08")
            || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW]
                .contains(code);
        let message = format!("PostgreSQL: {server}");
        if unreachable { Self::Unavailable(message) } else { Self::Failed(message) }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            // A new connection could not be made, whatever the server said.
            deadpool_postgres::PoolError::Backend(error) => match Self::from(error) {
                Self::Failed(message) | Self::Unavailable(message) => Self::Unavailable(message),
            },
            other => Self::Unavailable(format!("PostgreSQL connection pool: {other}")),
        }
    }
}
