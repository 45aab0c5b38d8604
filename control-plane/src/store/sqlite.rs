//! The SQLite backend: one file, WAL, `synchronous=FULL`, so an acknowledged write survives
//! kill -9 and power loss. One connection serializes writers; calls run on tokio's blocking pool.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flag_core::wire;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};
use serde_json::Value;

use crate::auth::{Scope, Token};
use crate::clock::Clock;
use crate::plans::criteria::Counts;
use crate::plans::{Decision, DecisionFilter, Plan};
use crate::store::{
    AuditFilter, AuditRecord, ChangeNote, Changed, Delivery, DeliveryOutcome, EdgeRecord,
    Environment, FlagDefinition, FlagRecord, FlagState, MetricBatch, NewEdge, NewWebhook,
    PlanChange, PlanChanged, PlanCreate, PlanFilter, Published, PushOutcome, SegmentRecord,
    StateChange, StateChanged, Step, Store, StoreError, StoredToken, WebhookRecord,
};

/// Environments every installation starts with.
pub const DEFAULT_ENVIRONMENTS: [&str; 2] = ["staging", "production"];

/// The actor recorded for changes the service makes by itself.
const SYSTEM_ACTOR: &str = "rollgate";

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/0001_initial.sql")),
        M::up(include_str!("../../migrations/0002_tokens.sql")),
        M::up(include_str!("../../migrations/0003_audit_reason.sql")),
        M::up(include_str!("../../migrations/0004_flag_revision.sql")),
        M::up(include_str!("../../migrations/0005_segments_and_token_environments.sql")),
        M::up(include_str!("../../migrations/0006_edges.sql")),
        M::up(include_str!("../../migrations/0007_rollout_plans.sql")),
    ])
}

pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    clock: Arc<dyn Clock>,
}

impl SqliteStore {
    /// Opens (or creates) the database, applies migrations and creates the default
    /// environments on first start.
    pub async fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let connection = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut connection = Connection::open(&path)?;
            let mode: String =
                connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Internal(format!("SQLite refused WAL mode (got {mode})")));
            }
            connection.pragma_update(None, "synchronous", "FULL")?;
            connection.pragma_update(None, "foreign_keys", "ON")?;
            connection.busy_timeout(Duration::from_secs(5))?;
            migrations()
                .to_latest(&mut connection)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            Ok(connection)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        let store = Self { connection: Arc::new(Mutex::new(connection)), clock };
        for name in DEFAULT_ENVIRONMENTS {
            match store.create_environment(name, SYSTEM_ACTOR).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(store)
    }

    /// Runs `change` in one immediate transaction, committed only if it returns Ok.
    async fn write<T, F>(&self, change: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let now = self.clock.timestamp();
        self.in_transaction(TransactionBehavior::Immediate, move |transaction| {
            change(transaction, &now)
        })
        .await
    }

    /// Runs `query` in one read transaction, so it sees a single committed state.
    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.in_transaction(TransactionBehavior::Deferred, query).await
    }

    /// Runs `body` on the blocking pool in a transaction, committed if `body` returns Ok (for a
    /// read, committing just ends it).
    async fn in_transaction<T, F>(
        &self,
        behavior: TransactionBehavior,
        body: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .map_err(|_| StoreError::Internal("connection lock poisoned".into()))?;
            let transaction = connection.transaction_with_behavior(behavior)?;
            let result = body(&transaction)?;
            transaction.commit()?;
            Ok(result)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn environments(&self) -> Result<Vec<Environment>, StoreError> {
        self.read(|tx| {
            let mut statement =
                tx.prepare("SELECT name, version FROM environments ORDER BY name")?;
            let rows = statement.query_map([], |row| {
                Ok(Environment { name: row.get(0)?, version: unsigned_at(row, 1)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn create_environment(&self, name: &str, actor: &str) -> Result<Published, StoreError> {
        check_key("environment", name)?;
        let (name, actor) = (name.to_owned(), actor.to_owned());
        self.write(move |tx, now| {
            let inserted = tx.execute(
                "INSERT INTO environments (name, version, created_at) VALUES (?1, 0, ?2) ON CONFLICT DO NOTHING",
                params![name, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("environment `{name}`")));
            }
            let definitions = flag_definitions(tx)?;
            for definition in &definitions {
                insert_state(tx, &name, &definition.key, &FlagState::initial(definition), now)?;
            }
            append_audit(tx, now, Entry { actor: &actor, action: "environment.create", environment: Some(&name), ..Entry::default() })?;
            publish(tx, &name)
        })
        .await
    }

    async fn create_flag(&self, flag: FlagDefinition, actor: &str) -> Result<Changed, StoreError> {
        check_key("flag", &flag.key)?;
        let actor = actor.to_owned();
        self.write(move |tx, now| {
            let inserted = tx.execute(
                "INSERT INTO flags (key, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT DO NOTHING",
                params![flag.key, to_json(&flag)?, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("flag `{}`", flag.key)));
            }
            let state = FlagState::initial(&flag);
            for environment in environment_names(tx)? {
                insert_state(tx, &environment, &flag.key, &state, now)?;
            }
            let entry = Entry {
                actor: &actor,
                action: "flag.create",
                flag: Some(&flag.key),
                after: serde_json::to_value(&flag).ok(),
                ..Entry::default()
            };
            append_audit(tx, now, entry)?;
            Ok(Changed { published: publish_all(tx)?, revision: 1 })
        })
        .await
    }

    async fn flags(&self) -> Result<Vec<FlagDefinition>, StoreError> {
        self.read(flag_definitions).await
    }

    async fn flag(&self, key: &str) -> Result<FlagRecord, StoreError> {
        let key = key.to_owned();
        self.read(move |tx| {
            let row: Option<(String, u64)> = tx
                .query_row(
                    "SELECT definition, revision FROM flags WHERE key = ?1 AND archived = 0",
                    params![key],
                    |row| Ok((row.get(0)?, unsigned_at(row, 1)?)),
                )
                .optional()?;
            let Some((definition, revision)) = row else {
                return Err(StoreError::NotFound(format!("flag `{key}`")));
            };
            let definition: FlagDefinition = from_json(&definition)?;
            let mut statement =
                tx.prepare("SELECT environment, state FROM flag_states WHERE flag = ?1")?;
            let rows = statement.query_map(params![key], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut environments = std::collections::BTreeMap::new();
            for row in rows {
                let (environment, state) = row?;
                environments.insert(environment, from_json(&state)?);
            }
            Ok(FlagRecord::new(definition, revision, environments))
        })
        .await
    }

    async fn update_flag(
        &self,
        flag: FlagDefinition,
        note: ChangeNote,
    ) -> Result<Changed, StoreError> {
        let definition =
            serde_json::to_value(&flag).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.write(move |tx, now| redefine(tx, now, FLAGS, &flag.key, Some(definition), &note))
            .await
    }

    async fn archive_flag(&self, key: &str, note: ChangeNote) -> Result<Changed, StoreError> {
        let key = key.to_owned();
        self.write(move |tx, now| {
            let active: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, environment FROM plans WHERE flag = ?1 AND status IN ('running', 'held') LIMIT 1",
                    params![key],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            if let Some((plan, environment)) = active {
                return Err(StoreError::Refused(format!(
                    "flag `{key}` has an active rollout plan ({plan}, in `{environment}`); roll it back or complete it first"
                )));
            }
            redefine(tx, now, FLAGS, &key, None, &note)
        })
        .await
    }

    async fn change_flag_state(
        &self,
        environment: &str,
        flag: &str,
        change: StateChange,
        note: ChangeNote,
    ) -> Result<StateChanged, StoreError> {
        let (environment, flag) = (environment.to_owned(), flag.to_owned());
        self.write(move |tx, now| {
            let current = FlagInEnvironment::load(tx, &environment, &flag)?;
            check_revision("flag", &flag, current.revision, &note)?;
            let mut state = current.state.clone();
            change(&current.definition, &mut state)?;
            let change = StateWrite {
                actor: &note.actor,
                action: note.action,
                reason: note.reason.as_deref(),
            };
            let (published, revision) = current.save(tx, now, &state, change)?;
            Ok(StateChanged { published, state, revision })
        })
        .await
    }

    async fn snapshot(&self, environment: &str) -> Result<Published, StoreError> {
        let environment = environment.to_owned();
        self.read(move |tx| {
            let version = environment_version(tx, &environment)?;
            compile(assemble(tx, &environment, version)?)
        })
        .await
    }

    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |tx| {
            let mut statement = tx.prepare(
                "SELECT id, at, actor, action, environment, flag, segment, reason, before, after FROM audit
                 WHERE (?1 IS NULL OR flag = ?1) AND (?2 IS NULL OR environment = ?2) AND (?3 IS NULL OR at >= ?3)
                   AND (?4 IS NULL OR segment = ?4)
                 ORDER BY id LIMIT ?5",
            )?;
            let limit = filter.limit.unwrap_or(u32::MAX);
            let arguments =
                params![filter.flag, filter.environment, filter.since, filter.segment, limit];
            let json = |text: Option<String>| text.and_then(|t| serde_json::from_str::<Value>(&t).ok());
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
        })
        .await
    }

    async fn create_segment(
        &self,
        segment: wire::Segment,
        actor: &str,
    ) -> Result<Changed, StoreError> {
        check_key("segment", &segment.key)?;
        let actor = actor.to_owned();
        self.write(move |tx, now| {
            let inserted = tx.execute(
                "INSERT INTO segments (key, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT DO NOTHING",
                params![segment.key, to_json(&segment)?, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("segment `{}`", segment.key)));
            }
            let entry = Entry {
                actor: &actor,
                action: "segment.create",
                segment: Some(&segment.key),
                after: serde_json::to_value(&segment).ok(),
                ..Entry::default()
            };
            append_audit(tx, now, entry)?;
            Ok(Changed { published: publish_all(tx)?, revision: 1 })
        })
        .await
    }

    async fn segments(&self) -> Result<Vec<SegmentRecord>, StoreError> {
        self.read(segment_records).await
    }

    async fn segment(&self, key: &str) -> Result<SegmentRecord, StoreError> {
        let key = key.to_owned();
        self.read(move |tx| {
            let row: Option<(String, u64)> = tx
                .query_row(
                    "SELECT definition, revision FROM segments WHERE key = ?1 AND archived = 0",
                    params![key],
                    |row| Ok((row.get(0)?, unsigned_at(row, 1)?)),
                )
                .optional()?;
            let (definition, revision) =
                row.ok_or_else(|| StoreError::NotFound(format!("segment `{key}`")))?;
            Ok(SegmentRecord { segment: from_json(&definition)?, revision })
        })
        .await
    }

    async fn update_segment(
        &self,
        segment: wire::Segment,
        note: ChangeNote,
    ) -> Result<Changed, StoreError> {
        let definition =
            serde_json::to_value(&segment).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.write(move |tx, now| {
            redefine(tx, now, SEGMENTS, &segment.key, Some(definition), &note)
        })
        .await
    }

    async fn archive_segment(&self, key: &str, note: ChangeNote) -> Result<Changed, StoreError> {
        let key = key.to_owned();
        self.write(move |tx, now| redefine(tx, now, SEGMENTS, &key, None, &note)).await
    }

    async fn tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        self.read(|tx| {
            let mut statement = tx.prepare(
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
            let mut tokens = Vec::new();
            for row in rows {
                let (name, scope, environment, hash, created_at) = row?;
                let scope = Scope::parse(&scope)
                    .ok_or_else(|| StoreError::Internal(format!("stored scope `{scope}`")))?;
                tokens.push(StoredToken {
                    token: Token { name, scope, environment, hash },
                    created_at,
                });
            }
            Ok(tokens)
        })
        .await
    }

    async fn create_token(&self, token: Token, actor: &str) -> Result<StoredToken, StoreError> {
        check_key("token", &token.name)?;
        let actor = actor.to_owned();
        self.write(move |tx, now| {
            if let Some(environment) = &token.environment {
                environment_version(tx, environment)?;
            }
            let inserted = tx.execute(
                "INSERT INTO tokens (name, scope, environment, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![token.name, token.scope.as_str(), token.environment, token.hash, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("token `{}` (or one with the same secret)", token.name)));
            }
            let after = serde_json::json!({"name": token.name, "scope": token.scope, "environment": token.environment});
            append_audit(tx, now, Entry { actor: &actor, action: "token.create", environment: token.environment.as_deref(), after: Some(after), ..Entry::default() })?;
            Ok(StoredToken { token, created_at: now.to_owned() })
        })
        .await
    }

    async fn delete_token(&self, name: &str, actor: &str) -> Result<(), StoreError> {
        let (name, actor) = (name.to_owned(), actor.to_owned());
        self.write(move |tx, now| {
            let row: Option<(String, Option<String>)> = tx
                .query_row(
                    "DELETE FROM tokens WHERE name = ?1 RETURNING scope, environment",
                    params![name],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let (scope, environment) =
                row.ok_or_else(|| StoreError::NotFound(format!("token `{name}`")))?;
            let before =
                serde_json::json!({"name": name, "scope": scope, "environment": environment});
            append_audit(
                tx,
                now,
                Entry {
                    actor: &actor,
                    action: "token.delete",
                    environment: environment.as_deref(),
                    before: Some(before),
                    ..Entry::default()
                },
            )
        })
        .await
    }

    async fn readers_revision(&self) -> Result<u64, StoreError> {
        self.read(|tx| {
            Ok(tx.query_row(
                "SELECT coalesce(max(id), 0) FROM audit WHERE action IN ('token.create', 'token.delete')",
                [],
                |row| unsigned_at(row, 0),
            )?)
        })
        .await
    }

    async fn edges(&self) -> Result<Vec<EdgeRecord>, StoreError> {
        self.read(|tx| {
            let mut statement = tx.prepare(
                "SELECT name, url, environment, applied_version, applied_readers_revision, acked_at, last_error
                 FROM edges ORDER BY name",
            )?;
            let rows = statement.query_map([], |row| {
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
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn create_edge(&self, edge: NewEdge, actor: &str) -> Result<EdgeRecord, StoreError> {
        check_key("edge", &edge.name)?;
        let url = edge.url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.contains(char::is_whitespace)
        {
            return Err(StoreError::BadKey(format!(
                "edge url `{url}` must be an http:// or https:// URL"
            )));
        }
        let actor = actor.to_owned();
        self.write(move |tx, now| {
            environment_version(tx, &edge.environment)?;
            let inserted = tx.execute(
                "INSERT INTO edges (name, url, environment, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![edge.name, url, edge.environment, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("edge `{}`", edge.name)));
            }
            let after = serde_json::json!({"name": edge.name, "url": url, "environment": edge.environment});
            append_audit(tx, now, Entry { actor: &actor, action: "edge.create", environment: Some(&edge.environment), after: Some(after), ..Entry::default() })?;
            Ok(EdgeRecord {
                name: edge.name,
                url,
                environment: edge.environment,
                applied_version: None,
                applied_readers_revision: None,
                acked_at: None,
                last_error: None,
            })
        })
        .await
    }

    async fn delete_edge(&self, name: &str, actor: &str) -> Result<(), StoreError> {
        let (name, actor) = (name.to_owned(), actor.to_owned());
        self.write(move |tx, now| {
            let row: Option<(String, String)> = tx
                .query_row(
                    "DELETE FROM edges WHERE name = ?1 RETURNING url, environment",
                    params![name],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let (url, environment) =
                row.ok_or_else(|| StoreError::NotFound(format!("edge `{name}`")))?;
            let before = serde_json::json!({"name": name, "url": url, "environment": environment});
            append_audit(
                tx,
                now,
                Entry {
                    actor: &actor,
                    action: "edge.delete",
                    environment: Some(&environment),
                    before: Some(before),
                    ..Entry::default()
                },
            )
        })
        .await
    }

    async fn record_push(&self, name: &str, outcome: PushOutcome) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(move |tx, now| {
            match outcome {
                PushOutcome::Acknowledged { version, readers_revision } => tx.execute(
                    "UPDATE edges SET applied_version = ?2, applied_readers_revision = ?3, acked_at = ?4, last_error = NULL
                     WHERE name = ?1",
                    params![name, signed(version), signed(readers_revision), now],
                )?,
                PushOutcome::Failed(error) => {
                    tx.execute("UPDATE edges SET last_error = ?2 WHERE name = ?1", params![name, error])?
                }
            };
            Ok(())
        })
        .await
    }

    async fn create_plan(
        &self,
        environment: &str,
        flag: &str,
        create: PlanCreate,
    ) -> Result<PlanChanged, StoreError> {
        let (environment, flag) = (environment.to_owned(), flag.to_owned());
        self.write(move |tx, now| {
            let current = FlagInEnvironment::load(tx, &environment, &flag)?;
            let inserted = tx.query_row(
                "INSERT INTO plans (flag, environment, status, body, created_at, updated_at)
                 VALUES (?1, ?2, 'running', '{}', ?3, ?3) RETURNING id",
                params![flag, environment, now],
                |row| row.get::<_, i64>(0),
            );
            let id = match inserted {
                Err(error) if is_unique_violation(&error) => {
                    return Err(StoreError::Conflict(format!(
                        "an active plan for flag `{flag}` in `{environment}`"
                    )));
                }
                other => other?,
            };
            let segments: BTreeSet<String> =
                segment_records(tx)?.into_iter().map(|record| record.segment.key).collect();
            let mut state = current.state.clone();
            let (plan, step) = create(id, &current.definition, &segments, now, &mut state)?;
            commit_step(tx, now, plan, &current, &state, step)
        })
        .await
    }

    async fn change_plan(
        &self,
        id: i64,
        change: PlanChange,
    ) -> Result<Option<PlanChanged>, StoreError> {
        self.write(move |tx, now| {
            let mut plan = load_plan(tx, id)?;
            let current = FlagInEnvironment::load(tx, &plan.environment, &plan.flag)?;
            let mut state = current.state.clone();
            match change(&mut plan, &current.definition, &mut state, now)? {
                Some(step) => commit_step(tx, now, plan, &current, &state, step).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn plans(&self, filter: PlanFilter) -> Result<Vec<Plan>, StoreError> {
        self.read(move |tx| {
            let mut statement = tx.prepare(
                "SELECT body FROM plans
                 WHERE (?1 IS NULL OR flag = ?1) AND (?2 IS NULL OR environment = ?2)
                   AND (?3 = 0 OR status IN ('running', 'held'))
                 ORDER BY id DESC",
            )?;
            let rows = statement
                .query_map(params![filter.flag, filter.environment, filter.active], |row| {
                    row.get::<_, String>(0)
                })?;
            rows.map(|body| from_json(&body?)).collect()
        })
        .await
    }

    async fn plan(&self, id: i64) -> Result<Plan, StoreError> {
        self.read(move |tx| load_plan(tx, id)).await
    }

    async fn decisions(&self, filter: DecisionFilter) -> Result<Vec<Decision>, StoreError> {
        self.read(move |tx| {
            let mut statement = tx.prepare(
                "SELECT id, at, plan, flag, environment, action, from_stage, to_stage, decision, rationale, decided_by, metrics
                 FROM decisions
                 WHERE (?1 IS NULL OR flag = ?1) AND (?2 IS NULL OR environment = ?2) AND (?3 IS NULL OR plan = ?3)
                 ORDER BY id",
            )?;
            let rows = statement.query_map(
                params![filter.flag, filter.environment, filter.plan],
                |row| {
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
                        metrics: serde_json::from_str(&metrics).unwrap_or(Value::Null),
                    })
                },
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn record_metrics(
        &self,
        environment: &str,
        batch: MetricBatch,
    ) -> Result<bool, StoreError> {
        let environment = environment.to_owned();
        self.write(move |tx, now| {
            environment_version(tx, &environment)?;
            let minute = minute_of(now)?;
            if let Some(id) = &batch.batch {
                let fresh = tx.execute(
                    "INSERT INTO metric_batches (id, minute) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![id, minute],
                )?;
                if fresh == 0 {
                    return Ok(false);
                }
            }
            let mut definitions = std::collections::HashMap::new();
            for (index, report) in batch.counters.iter().enumerate() {
                if !definitions.contains_key(&report.flag) {
                    let definition =
                        FlagInEnvironment::load(tx, &environment, &report.flag).map_err(|error| {
                            match error {
                                StoreError::NotFound(what) => StoreError::Refused(format!(
                                    "`counters[{index}].flag`: {what} not found"
                                )),
                                other => other,
                            }
                        })?;
                    definitions.insert(report.flag.clone(), definition.definition);
                }
                if !definitions[&report.flag].variants.contains_key(&report.variant) {
                    return Err(StoreError::Refused(format!(
                        "`counters[{index}].variant`: flag `{}` has no variant `{}`",
                        report.flag, report.variant
                    )));
                }
                for (metric, value) in &report.counts {
                    tx.execute(
                        "INSERT INTO metric_counts (environment, flag, variant, metric, minute, value)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT DO UPDATE SET value = value + excluded.value",
                        params![environment, report.flag, report.variant, metric, minute, signed(*value)],
                    )?;
                }
            }
            Ok(true)
        })
        .await
    }

    async fn metric_counts(
        &self,
        environment: &str,
        flag: &str,
        since_minute: i64,
    ) -> Result<Counts, StoreError> {
        let (environment, flag) = (environment.to_owned(), flag.to_owned());
        let minute = self.clock.minute();
        self.read(move |tx| {
            let mut statement = tx.prepare(
                "SELECT variant, metric, minute, value FROM metric_counts
                 WHERE environment = ?1 AND flag = ?2 AND minute > ?3 AND minute <= ?4",
            )?;
            let rows = statement
                .query_map(params![environment, flag, since_minute, minute], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, unsigned_at(row, 3)?))
                })?;
            Ok(Counts { minute, first_minute: i64::MIN, rows: rows.collect::<Result<_, _>>()? })
        })
        .await
    }

    async fn prune_metrics(&self, minute: i64) -> Result<(), StoreError> {
        self.write(move |tx, _| {
            tx.execute("DELETE FROM metric_counts WHERE minute < ?1", params![minute])?;
            tx.execute("DELETE FROM metric_batches WHERE minute < ?1", params![minute - 24 * 60])?;
            Ok(())
        })
        .await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.read(|tx| {
            let mut statement = tx.prepare(
                "SELECT w.name, w.url, w.environment, w.created_at,
                        (SELECT count(*) FROM deliveries d WHERE d.webhook = w.name AND d.delivered_at IS NULL AND d.failed_at IS NULL),
                        (SELECT count(*) FROM deliveries d WHERE d.webhook = w.name AND d.failed_at IS NOT NULL),
                        (SELECT d.last_error FROM deliveries d WHERE d.webhook = w.name AND d.last_error IS NOT NULL ORDER BY d.id DESC LIMIT 1)
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
        })
        .await
    }

    async fn create_webhook(
        &self,
        webhook: NewWebhook,
        actor: &str,
    ) -> Result<WebhookRecord, StoreError> {
        check_key("webhook", &webhook.name)?;
        let actor = actor.to_owned();
        self.write(move |tx, now| {
            environment_version(tx, &webhook.environment)?;
            let inserted = tx.execute(
                "INSERT INTO webhooks (name, url, environment, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![webhook.name, webhook.url, webhook.environment, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("webhook `{}`", webhook.name)));
            }
            let after = serde_json::json!({"name": webhook.name, "url": webhook.url});
            let entry = Entry {
                actor: &actor,
                action: "webhook.create",
                environment: Some(&webhook.environment),
                after: Some(after),
                ..Entry::default()
            };
            append_audit(tx, now, entry)?;
            Ok(WebhookRecord {
                name: webhook.name,
                url: webhook.url,
                environment: webhook.environment,
                created_at: now.to_owned(),
                pending: 0,
                failed: 0,
                last_error: None,
            })
        })
        .await
    }

    async fn delete_webhook(&self, name: &str, actor: &str) -> Result<(), StoreError> {
        let (name, actor) = (name.to_owned(), actor.to_owned());
        self.write(move |tx, now| {
            let row: Option<(String, String)> = tx
                .query_row(
                    "DELETE FROM webhooks WHERE name = ?1 RETURNING url, environment",
                    params![name],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let (url, environment) =
                row.ok_or_else(|| StoreError::NotFound(format!("webhook `{name}`")))?;
            // Its pending notifications go with it.
            tx.execute(
                "UPDATE deliveries SET failed_at = ?2, last_error = 'webhook deleted'
                 WHERE webhook = ?1 AND delivered_at IS NULL AND failed_at IS NULL",
                params![name, now],
            )?;
            let entry = Entry {
                actor: &actor,
                action: "webhook.delete",
                environment: Some(&environment),
                before: Some(serde_json::json!({"name": name, "url": url})),
                ..Entry::default()
            };
            append_audit(tx, now, entry)
        })
        .await
    }

    async fn pending_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        self.read(move |tx| {
            let mut statement = tx.prepare(
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
        })
        .await
    }

    async fn record_delivery(&self, id: i64, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        self.write(move |tx, now| {
            match outcome {
                DeliveryOutcome::Delivered => tx.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, delivered_at = ?2 WHERE id = ?1",
                    params![id, now],
                )?,
                DeliveryOutcome::Failed { error, give_up } => tx.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2,
                            failed_at = CASE WHEN ?3 THEN ?4 END
                     WHERE id = ?1",
                    params![id, error, give_up, now],
                )?,
            };
            Ok(())
        })
        .await
    }
}

/// A flag's definition and its state in one environment, read inside a write.
struct FlagInEnvironment {
    environment: String,
    definition: FlagDefinition,
    state: FlagState,
    revision: u64,
}

/// Who changes a flag's state and why, for the audit log.
struct StateWrite<'a> {
    actor: &'a str,
    action: &'a str,
    reason: Option<&'a str>,
}

impl FlagInEnvironment {
    fn load(tx: &Transaction<'_>, environment: &str, flag: &str) -> Result<Self, StoreError> {
        let row: Option<(String, String, u64)> = tx
            .query_row(
                "SELECT f.definition, s.state, f.revision FROM flag_states s JOIN flags f ON f.key = s.flag
                 WHERE s.environment = ?1 AND s.flag = ?2 AND f.archived = 0",
                params![environment, flag],
                |row| Ok((row.get(0)?, row.get(1)?, unsigned_at(row, 2)?)),
            )
            .optional()?;
        let Some((definition, state, revision)) = row else {
            environment_version(tx, environment)?;
            return Err(StoreError::NotFound(format!("flag `{flag}`")));
        };
        Ok(Self {
            environment: environment.to_owned(),
            definition: from_json(&definition)?,
            state: from_json(&state)?,
            revision,
        })
    }

    /// Stores `state`, bumps the flag's revision, publishes the environment and audits the
    /// change; returns the snapshot and the new revision.
    fn save(
        &self,
        tx: &Transaction<'_>,
        now: &str,
        state: &FlagState,
        change: StateWrite<'_>,
    ) -> Result<(Published, u64), StoreError> {
        let (environment, flag) = (&self.environment, &self.definition.key);
        tx.execute(
            "UPDATE flag_states SET state = ?3, updated_at = ?4 WHERE environment = ?1 AND flag = ?2",
            params![environment, flag, to_json(state)?, now],
        )?;
        let revision = bump(tx, FLAGS, flag, now)?;
        let published = publish(tx, environment)?;
        let entry = Entry {
            actor: change.actor,
            action: change.action,
            environment: Some(environment),
            flag: Some(flag),
            segment: None,
            reason: change.reason,
            before: serde_json::to_value(&self.state).ok(),
            after: serde_json::to_value(state).ok(),
        };
        append_audit(tx, now, entry)?;
        Ok((published, revision))
    }
}

/// Writes a plan, the flag's state if `step` changed it, the decision and the notifications.
fn commit_step(
    tx: &Transaction<'_>,
    now: &str,
    plan: Plan,
    flag: &FlagInEnvironment,
    state: &FlagState,
    step: Step,
) -> Result<PlanChanged, StoreError> {
    tx.execute(
        "UPDATE plans SET status = ?2, body = ?3, updated_at = ?4 WHERE id = ?1",
        params![plan.id, plan.status.as_str(), to_json(&plan)?, now],
    )?;
    let published = if *state == flag.state {
        None
    } else {
        let change = StateWrite {
            actor: &step.decided_by,
            action: step.audit_action,
            reason: Some(&step.rationale),
        };
        Some(flag.save(tx, now, state, change)?.0)
    };
    let id = tx.query_row(
        "INSERT INTO decisions (at, plan, flag, environment, action, from_stage, to_stage, decision, rationale, decided_by, metrics)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING id",
        params![
            now,
            plan.id,
            plan.flag,
            plan.environment,
            step.action,
            step.from_stage,
            step.to_stage,
            step.decision,
            step.rationale,
            step.decided_by,
            step.metrics.to_string()
        ],
        |row| row.get(0),
    )?;
    let mut notified = false;
    let mut webhooks =
        tx.prepare("SELECT name, url FROM webhooks WHERE environment = ?1 ORDER BY name")?;
    let webhooks: Vec<(String, String)> = webhooks
        .query_map(params![plan.environment], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for notification in &step.notifications {
        for (name, url) in &webhooks {
            tx.execute(
                "INSERT INTO deliveries (webhook, url, event, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, url, notification.event, notification.payload.to_string(), now],
            )?;
            notified = true;
        }
    }
    let decision = Decision {
        id,
        at: now.to_owned(),
        plan: plan.id,
        flag: plan.flag.clone(),
        environment: plan.environment.clone(),
        action: step.action.to_owned(),
        from_stage: step.from_stage,
        to_stage: step.to_stage,
        decision: step.decision.to_owned(),
        rationale: step.rationale,
        decided_by: step.decided_by,
        metrics: step.metrics,
    };
    Ok(PlanChanged { plan, decision, published, notified })
}

fn load_plan(tx: &Transaction<'_>, id: i64) -> Result<Plan, StoreError> {
    let body: Option<String> = tx
        .query_row("SELECT body FROM plans WHERE id = ?1", params![id], |row| row.get(0))
        .optional()?;
    from_json(&body.ok_or_else(|| StoreError::NotFound(format!("plan {id}")))?)
}

/// The current minute of `now` (RFC 3339), as metric counts are keyed.
fn minute_of(now: &str) -> Result<i64, StoreError> {
    let at = chrono::DateTime::parse_from_rfc3339(now)
        .map_err(|e| StoreError::Internal(format!("clock gave `{now}`: {e}")))?;
    Ok(at.timestamp().div_euclid(60))
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// The two kinds of shared definitions, each a table with `key`, `definition`, `archived` and
/// `revision`.
#[derive(Clone, Copy)]
struct Resource {
    table: &'static str,
    noun: &'static str,
}

const FLAGS: Resource = Resource { table: "flags", noun: "flag" };
const SEGMENTS: Resource = Resource { table: "segments", noun: "segment" };

/// Replaces a flag's or segment's definition (`Some`) or archives it (`None`), audits the
/// change, and republishes every environment.
fn redefine(
    tx: &Transaction<'_>,
    now: &str,
    resource: Resource,
    key: &str,
    definition: Option<Value>,
    note: &ChangeNote,
) -> Result<Changed, StoreError> {
    let before = current_definition(tx, resource, key, note)?;
    let table = resource.table;
    match &definition {
        Some(definition) => tx.execute(
            &format!("UPDATE {table} SET definition = ?2 WHERE key = ?1"),
            params![key, definition.to_string()],
        )?,
        None => {
            tx.execute(&format!("UPDATE {table} SET archived = 1 WHERE key = ?1"), params![key])?
        }
    };
    let is_flag = table == FLAGS.table;
    let entry = Entry {
        actor: &note.actor,
        action: note.action,
        flag: is_flag.then_some(key),
        segment: (!is_flag).then_some(key),
        reason: note.reason.as_deref(),
        before: Some(before),
        after: definition,
        environment: None,
    };
    append_audit(tx, now, entry)?;
    Ok(Changed { published: publish_all(tx)?, revision: bump(tx, resource, key, now)? })
}

/// A live resource's stored definition, once its revision is checked against `note.if_revision`.
fn current_definition(
    tx: &Transaction<'_>,
    resource: Resource,
    key: &str,
    note: &ChangeNote,
) -> Result<Value, StoreError> {
    let Resource { table, noun } = resource;
    let row: Option<(String, u64)> = tx
        .query_row(
            &format!("SELECT definition, revision FROM {table} WHERE key = ?1 AND archived = 0"),
            params![key],
            |row| Ok((row.get(0)?, unsigned_at(row, 1)?)),
        )
        .optional()?;
    let (definition, revision) =
        row.ok_or_else(|| StoreError::NotFound(format!("{noun} `{key}`")))?;
    check_revision(noun, key, revision, note)?;
    from_json(&definition)
}

fn check_revision(
    noun: &str,
    key: &str,
    revision: u64,
    note: &ChangeNote,
) -> Result<(), StoreError> {
    match &note.if_revision {
        Some(accepted) if !accepted.contains(&revision) => Err(StoreError::Stale(format!(
            "{noun} `{key}` changed since; it is at revision {revision} (ETag \"{revision}\")"
        ))),
        _ => Ok(()),
    }
}

/// Moves a resource past the revision it was read at, returning the new one.
fn bump(tx: &Transaction<'_>, resource: Resource, key: &str, now: &str) -> Result<u64, StoreError> {
    let table = resource.table;
    Ok(tx.query_row(
        &format!("UPDATE {table} SET revision = revision + 1, updated_at = ?2 WHERE key = ?1 RETURNING revision"),
        params![key, now],
        |row| unsigned_at(row, 0),
    )?)
}

fn segment_records(tx: &Transaction<'_>) -> Result<Vec<SegmentRecord>, StoreError> {
    let mut statement =
        tx.prepare("SELECT definition, revision FROM segments WHERE archived = 0 ORDER BY key")?;
    let rows =
        statement.query_map([], |row| Ok((row.get::<_, String>(0)?, unsigned_at(row, 1)?)))?;
    let mut segments = Vec::new();
    for row in rows {
        let (definition, revision) = row?;
        segments.push(SegmentRecord { segment: from_json(&definition)?, revision });
    }
    Ok(segments)
}

/// Republishes every environment, in name order.
fn publish_all(tx: &Transaction<'_>) -> Result<Vec<Published>, StoreError> {
    environment_names(tx)?.iter().map(|environment| publish(tx, environment)).collect()
}

/// Bumps the environment's version and returns its new snapshot, after flag-core has accepted
/// it. An error here rolls the whole transaction back.
fn publish(tx: &Transaction<'_>, environment: &str) -> Result<Published, StoreError> {
    let version: u64 = tx.query_row(
        "UPDATE environments SET version = version + 1 WHERE name = ?1 RETURNING version",
        params![environment],
        |row| unsigned_at(row, 0),
    )?;
    compile(assemble(tx, environment, version)?)
}

/// Compiles a snapshot. A rejection names the flag or segment at fault by its key, as in
/// `flags.checkout-v2.rules[0]`, rather than by its place in the snapshot.
fn compile(snapshot: wire::Snapshot) -> Result<Published, StoreError> {
    let json = to_json(&snapshot)?;
    let engine = flag_core::Engine::from_snapshot(snapshot.clone()).map_err(|mut error| {
        error.path = keyed_path(&error.path, &snapshot);
        StoreError::Invalid(error)
    })?;
    Ok(Published {
        environment: snapshot.environment,
        version: snapshot.version,
        json: json.into(),
        engine: Arc::new(engine),
    })
}

/// `flags[3].variants` as `flags.checkout-v2.variants`.
fn keyed_path(path: &str, snapshot: &wire::Snapshot) -> String {
    let keyed = path.split_once(']').and_then(|(head, tail)| {
        let (collection, index) = head.split_once('[')?;
        let index: usize = index.parse().ok()?;
        let key = match collection {
            "flags" => &snapshot.flags.get(index)?.key,
            "segments" => &snapshot.segments.get(index)?.key,
            _ => return None,
        };
        Some(format!("{collection}.{key}{tail}"))
    });
    keyed.unwrap_or_else(|| path.to_owned())
}

/// The wire snapshot of an environment as stored, flags in key order.
fn assemble(
    tx: &Transaction<'_>,
    environment: &str,
    version: u64,
) -> Result<wire::Snapshot, StoreError> {
    let mut statement = tx.prepare(
        "SELECT f.definition, s.state FROM flags f JOIN flag_states s ON s.flag = f.key
         WHERE s.environment = ?1 AND f.archived = 0 ORDER BY f.key",
    )?;
    let rows = statement.query_map(params![environment], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut flags = Vec::new();
    for row in rows {
        let (definition, state) = row?;
        let definition: FlagDefinition = from_json(&definition)?;
        let state: FlagState = from_json(&state)?;
        flags.push(wire::Flag {
            key: definition.key,
            kind: definition.kind,
            variants: definition.variants,
            off_variant: definition.off_variant,
            enabled: state.enabled,
            salt: definition.salt,
            prerequisites: state.prerequisites,
            rules: state.rules,
            fallthrough: state.fallthrough,
        });
    }
    let segments = segment_records(tx)?.into_iter().map(|record| record.segment).collect();
    Ok(wire::Snapshot {
        schema: wire::SCHEMA,
        environment: environment.to_owned(),
        version,
        flags,
        segments,
    })
}

fn environment_version(tx: &Transaction<'_>, environment: &str) -> Result<u64, StoreError> {
    tx.query_row("SELECT version FROM environments WHERE name = ?1", params![environment], |row| {
        unsigned_at(row, 0)
    })
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("environment `{environment}`")))
}

/// A counter as SQLite's signed integer; counters never come near `i64::MAX`.
fn signed(counter: u64) -> i64 {
    i64::try_from(counter).unwrap_or(i64::MAX)
}

/// Versions and counts: SQLite integers that are never negative (the schema checks versions).
fn unsigned_at(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    row.get::<_, i64>(index).map(|version| version.unsigned_abs())
}

fn environment_names(tx: &Transaction<'_>) -> Result<Vec<String>, StoreError> {
    let mut statement = tx.prepare("SELECT name FROM environments ORDER BY name")?;
    let rows = statement.query_map([], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn flag_definitions(tx: &Transaction<'_>) -> Result<Vec<FlagDefinition>, StoreError> {
    let mut statement =
        tx.prepare("SELECT definition FROM flags WHERE archived = 0 ORDER BY key")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    rows.map(|row| from_json(&row?)).collect()
}

fn insert_state(
    tx: &Transaction<'_>,
    environment: &str,
    flag: &str,
    state: &FlagState,
    now: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO flag_states (environment, flag, state, updated_at) VALUES (?1, ?2, ?3, ?4)",
        params![environment, flag, to_json(state)?, now],
    )?;
    Ok(())
}

/// One audit record to append, in the transaction of the change it describes.
#[derive(Default)]
struct Entry<'a> {
    actor: &'a str,
    action: &'a str,
    environment: Option<&'a str>,
    flag: Option<&'a str>,
    segment: Option<&'a str>,
    reason: Option<&'a str>,
    before: Option<Value>,
    after: Option<Value>,
}

fn append_audit(tx: &Transaction<'_>, now: &str, entry: Entry<'_>) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, environment, flag, segment, reason, before, after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            now,
            entry.actor,
            entry.action,
            entry.environment,
            entry.flag,
            entry.segment,
            entry.reason,
            entry.before.map(|v| v.to_string()),
            entry.after.map(|v| v.to_string())
        ],
    )?;
    Ok(())
}

/// Keys appear in URLs and snapshots: 1 to 128 of `A-Z a-z 0-9 . _ -`.
fn check_key(what: &str, key: &str) -> Result<(), StoreError> {
    let valid = (1..=128).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::BadKey(format!("{what} keys are 1 to 128 of A-Z a-z 0-9 . _ -")))
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Internal(format!("stored JSON is unreadable: {e}")))
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Internal(error.to_string())
    }
}
