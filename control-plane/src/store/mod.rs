//! Persistence: the `Store` a backend implements and the `Tx` its transactions offer.
//!
//! Backends hold SQL only. What is valid, what a change means, and what must follow its commit
//! are decided above, in `service`, the same for every backend. A backend's whole promise is
//! in `Store`'s documentation, and `tests/it/contract.rs` checks it.

pub mod postgres;
pub mod sqlite;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use flag_core::wire;
use futures_util::future::BoxFuture;

use crate::model::audit::{AuditEntry, AuditQuery, AuditRecord};
use crate::model::edge::{EdgeRecord, NewEdge, PushOutcome};
use crate::model::flag::{Environment, FlagDefinition, FlagState, SegmentRecord, StoredFlag};
use crate::model::metrics::CountRow;
use crate::model::plan::{Decision, DecisionQuery, Plan, PlanQuery};
use crate::model::time::Timestamp;
use crate::model::token::{StoredToken, Token};
use crate::model::webhook::{Delivery, DeliveryOutcome, NewWebhook, WebhookRecord};

/// Opens the backend `db` names: a `postgres://` (or `postgresql://`) URL, or else an SQLite
/// database file, created if missing.
pub async fn open(db: &str) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres(db) {
        Ok(Arc::new(postgres::PostgresStore::open(db).await?))
    } else {
        Ok(Arc::new(sqlite::SqliteStore::open(std::path::Path::new(db)).await?))
    }
}

/// `db` as logs and errors show it: a URL without its user name and password.
pub fn shown(db: &str) -> String {
    match db.split_once("://") {
        Some((scheme, rest)) if is_postgres(db) => match rest.rsplit_once('@') {
            Some((_, place)) => format!("{scheme}://…@{place}"),
            None => db.to_owned(),
        },
        _ => db.to_owned(),
    }
}

fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// How many of an environment's latest snapshots the store keeps: what a process that missed
/// them (another replica, briefly cut off) can still publish one by one.
pub const KEPT_SNAPSHOTS: u64 = 256;

/// A storage failure: the database could not do what was asked. Never the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Failed(String),
    /// The database cannot be reached (down, restarting, the network): asking again shortly
    /// may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

/// A backend.
///
/// - `write` runs a job in one transaction. The job decides whether it commits. Nothing of a
///   job that does not commit is stored.
/// - A committed job's `after` runs once the commit is durable, before any later commit's
///   `after`, and before `write` returns, whether or not the caller still waits for it: what
///   must follow a commit belongs to the commit, not to the request that asked for it.
/// - A job awaits nothing but its transaction.
/// - `read` runs a job in one transaction that sees a single committed state, and cannot
///   write.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn write(&self, job: WriteJob) -> Result<Outcome, StoreError>;

    async fn read(&self, job: ReadJob) -> Result<Erased, StoreError>;

    /// For a database other processes write too: woken after each commit that publishes a
    /// version, changes tokens or edges, or queues a webhook notification, whichever process
    /// made it, and whenever some may have gone unheard (after a reconnection). `None` where
    /// this process is the only writer.
    fn commits(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// For a database several processes serve: `true` while this process is the one that
    /// runs what must run once (the plan scheduler, edge pushes, webhook deliveries). `None`
    /// where this process is the only one, and so always leads.
    fn leadership(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }

    /// Whether `commits` is hearing other processes' commits right now (always, where there
    /// are none).
    fn following(&self) -> bool {
        true
    }
}

/// A value whose type only the job and its caller know.
pub type Erased = Box<dyn Any + Send>;

/// Work to do in a write transaction.
pub type WriteJob = Box<dyn for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Ended> + Send>;

/// Work to do in a read transaction.
pub type ReadJob = Box<dyn for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Erased> + Send>;

/// What must follow a commit.
pub type After = Box<dyn FnOnce() + Send>;

/// How a write job ended, as the job says.
pub enum Ended {
    Commit { value: Erased, after: After },
    Rollback(Erased),
}

/// What a write gives back: the job's value if it committed, its error if not.
pub enum Outcome {
    Committed(Erased),
    RolledBack(Erased),
}

/// What a write's work gives back to commit: its result, and what must follow the commit.
pub struct Committed<T> {
    pub value: T,
    pub after: After,
}

impl<T> Committed<T> {
    /// A commit nothing needs to follow.
    pub fn alone(value: T) -> Self {
        Self { value, after: Box::new(|| {}) }
    }
}

/// Runs `work` in one write transaction, committed if it returns `Ok`.
pub async fn write<T, E, W>(store: &dyn Store, work: W) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    W: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<Committed<T>, E>> + Send + 'static,
{
    let job: WriteJob = Box::new(move |tx| {
        Box::pin(async move {
            match work(tx).await {
                Ok(Committed { value, after }) => Ended::Commit { value: Box::new(value), after },
                Err(error) => Ended::Rollback(Box::new(error)),
            }
        })
    });
    match store.write(job).await? {
        Outcome::Committed(value) => Ok(*value.downcast().expect("the job's own type")),
        Outcome::RolledBack(error) => Err(*error.downcast().expect("the job's own type")),
    }
}

/// Runs `work` in one read transaction.
pub async fn read<T, E, W>(store: &dyn Store, work: W) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    W: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
{
    let job: ReadJob =
        Box::new(move |tx| Box::pin(async move { Box::new(work(tx).await) as Erased }));
    let result: Box<Result<T, E>> = store.read(job).await?.downcast().expect("the job's type");
    *result
}

/// What a transaction can read and write. Each method is one statement or a few; none
/// decides anything.
#[async_trait::async_trait]
pub trait Tx: Send {
    // Environments.
    /// Every environment with its version, by name.
    async fn environments(&mut self) -> Result<Vec<Environment>, StoreError>;
    async fn environment_version(&mut self, name: &str) -> Result<Option<u64>, StoreError>;
    /// Sets the origins whose pages may call the environment; `false` if there is no such
    /// environment.
    async fn set_allowed_origins(
        &mut self,
        environment: &str,
        origins: &[String],
    ) -> Result<bool, StoreError>;
    /// `false` if the name is taken.
    async fn insert_environment(&mut self, name: &str, at: Timestamp) -> Result<bool, StoreError>;
    /// Adds one to the environment's version and returns it.
    async fn bump_version(&mut self, environment: &str) -> Result<u64, StoreError>;

    // Snapshots, as published.
    /// Keeps an environment's snapshot at `version`, and forgets those `KEPT_SNAPSHOTS` or
    /// more versions older.
    async fn put_snapshot(
        &mut self,
        environment: &str,
        version: u64,
        json: &[u8],
    ) -> Result<(), StoreError>;
    /// An environment's kept snapshots after `version`, oldest first.
    async fn snapshots_after(
        &mut self,
        environment: &str,
        version: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    // Flags: definitions shared by every environment, and a state in each.
    /// Every live (not archived) flag, by key.
    async fn flags(&mut self) -> Result<Vec<StoredFlag>, StoreError>;
    /// A live flag.
    async fn flag(&mut self, key: &str) -> Result<Option<StoredFlag>, StoreError>;
    /// `false` if the key is taken, by a live or an archived flag.
    async fn insert_flag(
        &mut self,
        definition: &FlagDefinition,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    async fn update_flag(
        &mut self,
        definition: &FlagDefinition,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    async fn archive_flag(&mut self, key: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Adds one to the flag's revision and returns it.
    async fn bump_flag_revision(&mut self, key: &str, at: Timestamp) -> Result<u64, StoreError>;
    /// A flag's state in each environment.
    async fn flag_states(&mut self, flag: &str) -> Result<BTreeMap<String, FlagState>, StoreError>;
    async fn flag_state(
        &mut self,
        environment: &str,
        flag: &str,
    ) -> Result<Option<FlagState>, StoreError>;
    /// Inserts or replaces a flag's state in an environment.
    async fn put_flag_state(
        &mut self,
        environment: &str,
        flag: &str,
        state: &FlagState,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Every live flag's definition and its state in `environment`, by key.
    async fn environment_flags(
        &mut self,
        environment: &str,
    ) -> Result<Vec<(FlagDefinition, FlagState)>, StoreError>;

    // Segments, shared by every environment.
    /// Every live segment, by key.
    async fn segments(&mut self) -> Result<Vec<SegmentRecord>, StoreError>;
    async fn segment(&mut self, key: &str) -> Result<Option<SegmentRecord>, StoreError>;
    /// `false` if the key is taken, by a live or an archived segment.
    async fn insert_segment(
        &mut self,
        segment: &wire::Segment,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    async fn update_segment(
        &mut self,
        segment: &wire::Segment,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    async fn archive_segment(&mut self, key: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Adds one to the segment's revision and returns it.
    async fn bump_segment_revision(&mut self, key: &str, at: Timestamp) -> Result<u64, StoreError>;

    // The audit log.
    async fn append_audit(&mut self, at: Timestamp, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Matching records, oldest first.
    async fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    // Tokens.
    /// Every token, by name.
    async fn tokens(&mut self) -> Result<Vec<StoredToken>, StoreError>;
    /// `false` if the name or the hash is taken.
    async fn insert_token(&mut self, token: &Token, at: Timestamp) -> Result<bool, StoreError>;
    async fn delete_token(&mut self, name: &str) -> Result<Option<Token>, StoreError>;
    async fn readers_revision(&mut self) -> Result<u64, StoreError>;
    /// Adds one to the readers revision and returns it.
    async fn bump_readers_revision(&mut self) -> Result<u64, StoreError>;

    // Edges.
    /// Every edge, by name.
    async fn edges(&mut self) -> Result<Vec<EdgeRecord>, StoreError>;
    /// `false` if the name is taken.
    async fn insert_edge(&mut self, edge: &NewEdge, at: Timestamp) -> Result<bool, StoreError>;
    async fn delete_edge(&mut self, name: &str) -> Result<Option<EdgeRecord>, StoreError>;
    async fn record_push(
        &mut self,
        name: &str,
        outcome: &PushOutcome,
        at: Timestamp,
    ) -> Result<(), StoreError>;

    // Webhooks and their outbox.
    /// Every webhook with its pending and failed deliveries, by name.
    async fn webhooks(&mut self) -> Result<Vec<WebhookRecord>, StoreError>;
    /// `false` if the name is taken.
    async fn insert_webhook(
        &mut self,
        webhook: &NewWebhook,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    async fn delete_webhook(&mut self, name: &str) -> Result<Option<NewWebhook>, StoreError>;
    /// Queues a notification for one webhook.
    async fn insert_delivery(
        &mut self,
        webhook: &str,
        url: &str,
        event: &str,
        payload: &str,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Gives up on every undelivered notification of a webhook.
    async fn fail_deliveries(
        &mut self,
        webhook: &str,
        error: &str,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Notifications neither delivered nor given up on, oldest first.
    async fn pending_deliveries(&mut self, limit: u32) -> Result<Vec<Delivery>, StoreError>;
    async fn record_delivery(
        &mut self,
        id: i64,
        outcome: &DeliveryOutcome,
        at: Timestamp,
    ) -> Result<(), StoreError>;

    // Plans and the decision log.
    /// Reserves a new, running plan's id, or `None` if the flag already has an active plan in
    /// the environment. The same transaction must `save_plan` it.
    async fn insert_plan(
        &mut self,
        flag: &str,
        environment: &str,
        at: Timestamp,
    ) -> Result<Option<i64>, StoreError>;
    async fn save_plan(&mut self, plan: &Plan, at: Timestamp) -> Result<(), StoreError>;
    async fn plan(&mut self, id: i64) -> Result<Option<Plan>, StoreError>;
    /// Matching plans, newest first.
    async fn plans(&mut self, query: &PlanQuery) -> Result<Vec<Plan>, StoreError>;
    /// Appends a decision; its `id` is ignored, and the new one returned.
    async fn insert_decision(&mut self, decision: &Decision) -> Result<i64, StoreError>;
    /// Matching decisions, oldest first.
    async fn decisions(&mut self, query: &DecisionQuery) -> Result<Vec<Decision>, StoreError>;

    // Metric counts.
    /// `false` if the batch id was already recorded in the environment.
    async fn insert_metric_batch(
        &mut self,
        environment: &str,
        id: &str,
        minute: i64,
    ) -> Result<bool, StoreError>;
    /// Adds `value` to a count; `true` if the count is new (a new row).
    async fn add_metric_count(
        &mut self,
        environment: &str,
        flag: &str,
        row: &CountRow,
    ) -> Result<bool, StoreError>;
    /// Adds `rows` to the metric rows `token` added in `minute`, forgets earlier minutes', and
    /// returns the minute's total.
    async fn charge_metric_rows(
        &mut self,
        token: &str,
        minute: i64,
        rows: u64,
    ) -> Result<u64, StoreError>;
    /// The metric names a flag has counts of in minutes after `after_minute`.
    async fn metric_names(
        &mut self,
        environment: &str,
        flag: &str,
        after_minute: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// A flag's counts in minutes after `after_minute`, up to `until_minute`.
    async fn metric_counts(
        &mut self,
        environment: &str,
        flag: &str,
        after_minute: i64,
        until_minute: i64,
    ) -> Result<Vec<CountRow>, StoreError>;
    /// Forgets counts from minutes before `counts_before`, and batch ids from minutes before
    /// `batches_before`.
    async fn prune_metrics(
        &mut self,
        counts_before: i64,
        batches_before: i64,
    ) -> Result<(), StoreError>;
}

/// SQL's order of a log's ids.
fn order(newest_first: bool) -> &'static str {
    if newest_first { "DESC" } else { "ASC" }
}

/// A counter as the databases' signed 64-bit integer; counters never come near `i64::MAX`.
fn signed(counter: u64) -> i64 {
    i64::try_from(counter).unwrap_or(i64::MAX)
}

/// Definitions, states, plans: stored as the JSON the service reads back.
fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Failed(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Failed(format!("stored JSON is unreadable: {e}")))
}
