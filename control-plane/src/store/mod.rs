//! Persistence: the `Store` trait and its backends (SQLite now, PostgreSQL later).
//!
//! Every change goes through one transaction that mutates the rows, rebuilds the snapshot of
//! each affected environment, has flag-core compile it, bumps the environment's version and
//! appends the audit record. A change flag-core rejects is rolled back: nothing stored changes.

pub mod sqlite;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use flag_core::{Engine, wire};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Token;
use crate::plans::criteria::Counts;
use crate::plans::{Decision, DecisionFilter, Plan};

/// Where flags, segments, environments, tokens and the audit log live.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every environment, by name.
    async fn environments(&self) -> Result<Vec<Environment>, StoreError>;

    /// Adds an environment; every existing flag gets its default state there.
    async fn create_environment(&self, name: &str, actor: &str) -> Result<Published, StoreError>;

    /// Adds a flag to every environment, serving `off_variant` to everyone.
    async fn create_flag(&self, flag: FlagDefinition, actor: &str) -> Result<Changed, StoreError>;

    /// Every flag that is not archived, by key.
    async fn flags(&self) -> Result<Vec<FlagDefinition>, StoreError>;

    /// A flag with its state in each environment.
    async fn flag(&self, key: &str) -> Result<FlagRecord, StoreError>;

    /// Replaces a flag's definition (its key stays), republishing every environment.
    async fn update_flag(
        &self,
        flag: FlagDefinition,
        note: ChangeNote,
    ) -> Result<Changed, StoreError>;

    /// Takes a flag out of every snapshot. Its key stays taken, and its history stays in the
    /// audit log.
    async fn archive_flag(&self, key: &str, note: ChangeNote) -> Result<Changed, StoreError>;

    /// Changes a flag's state in one environment: `change` sees the definition and edits the
    /// state inside the transaction, so concurrent changes never overwrite each other. With
    /// `note.if_revision`, the flag must still be at one of those revisions (else `Stale`).
    async fn change_flag_state(
        &self,
        environment: &str,
        flag: &str,
        change: StateChange,
        note: ChangeNote,
    ) -> Result<StateChanged, StoreError>;

    /// Replaces a flag's state in one environment.
    async fn set_flag_state(
        &self,
        environment: &str,
        flag: &str,
        state: FlagState,
        actor: &str,
    ) -> Result<Published, StoreError> {
        let change: StateChange = Box::new(move |_, current| {
            *current = state;
            Ok(())
        });
        let note = ChangeNote::new(actor, "flag.state");
        Ok(self.change_flag_state(environment, flag, change, note).await?.published)
    }

    /// Adds a segment, which every environment's snapshot carries.
    async fn create_segment(
        &self,
        segment: wire::Segment,
        actor: &str,
    ) -> Result<Changed, StoreError>;

    /// Every segment that is not archived, by key.
    async fn segments(&self) -> Result<Vec<SegmentRecord>, StoreError>;

    /// One segment.
    async fn segment(&self, key: &str) -> Result<SegmentRecord, StoreError>;

    /// Replaces a segment (its key stays), republishing every environment.
    async fn update_segment(
        &self,
        segment: wire::Segment,
        note: ChangeNote,
    ) -> Result<Changed, StoreError>;

    /// Takes a segment out of every snapshot; refused (`Invalid`) while a flag refers to it.
    async fn archive_segment(&self, key: &str, note: ChangeNote) -> Result<Changed, StoreError>;

    /// The current snapshot of an environment.
    async fn snapshot(&self, environment: &str) -> Result<Published, StoreError>;

    /// Audit records matching `filter`, oldest first.
    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Every token, by name.
    async fn tokens(&self) -> Result<Vec<StoredToken>, StoreError>;

    /// Stores a token by its hash; the name must be new, and its environment must exist.
    async fn create_token(&self, token: Token, actor: &str) -> Result<StoredToken, StoreError>;

    /// Deletes a token: it stops working at once.
    async fn delete_token(&self, name: &str, actor: &str) -> Result<(), StoreError>;

    /// Grows with every token created or deleted: edges compare it to know whose tokens are
    /// current.
    async fn readers_revision(&self) -> Result<u64, StoreError>;

    /// Every registered edge, by name.
    async fn edges(&self) -> Result<Vec<EdgeRecord>, StoreError>;

    /// Registers an edge deployment of an environment.
    async fn create_edge(&self, edge: NewEdge, actor: &str) -> Result<EdgeRecord, StoreError>;

    /// Forgets an edge: no more pushes go to it.
    async fn delete_edge(&self, name: &str, actor: &str) -> Result<(), StoreError>;

    /// Records what an edge acknowledged, or why a push to it failed. Not audited: the
    /// control plane's own bookkeeping.
    async fn record_push(&self, name: &str, outcome: PushOutcome) -> Result<(), StoreError>;

    /// Starts a plan for a flag in an environment: `create` builds it (it gets the new plan's
    /// id) and applies its first stage to the flag's state. `Conflict` if the flag already has
    /// an active plan there.
    async fn create_plan(
        &self,
        environment: &str,
        flag: &str,
        create: PlanCreate,
    ) -> Result<PlanChanged, StoreError>;

    /// Changes a plan, and with it the flag's state, in one transaction with the decision and
    /// the notifications it records. `change` returning `None` changes nothing.
    async fn change_plan(
        &self,
        id: i64,
        change: PlanChange,
    ) -> Result<Option<PlanChanged>, StoreError>;

    /// Plans matching `filter`, newest first.
    async fn plans(&self, filter: PlanFilter) -> Result<Vec<Plan>, StoreError>;

    async fn plan(&self, id: i64) -> Result<Plan, StoreError>;

    /// Decision log records matching `filter`, oldest first.
    async fn decisions(&self, filter: DecisionFilter) -> Result<Vec<Decision>, StoreError>;

    /// Adds a batch of counters to the current minute. Every flag and variant must exist, else
    /// nothing is counted. A batch whose id was already counted is not counted again
    /// (`Ok(false)`).
    async fn record_metrics(
        &self,
        environment: &str,
        batch: MetricBatch,
    ) -> Result<bool, StoreError>;

    /// A flag's counters per minute since `since_minute` (exclusive), up to the current minute.
    async fn metric_counts(
        &self,
        environment: &str,
        flag: &str,
        since_minute: i64,
    ) -> Result<Counts, StoreError>;

    /// Forgets counters from before `minute`, and batch ids from a day before it.
    async fn prune_metrics(&self, minute: i64) -> Result<(), StoreError>;

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError>;

    async fn create_webhook(
        &self,
        webhook: NewWebhook,
        actor: &str,
    ) -> Result<WebhookRecord, StoreError>;

    async fn delete_webhook(&self, name: &str, actor: &str) -> Result<(), StoreError>;

    /// Notifications not yet delivered nor given up on, oldest first.
    async fn pending_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError>;

    async fn record_delivery(&self, id: i64, outcome: DeliveryOutcome) -> Result<(), StoreError>;
}

/// Builds a new plan, given its id, the flag's definition, the segments that exist and now;
/// edits the flag's state to its first stage.
pub type PlanCreate = Box<
    dyn FnOnce(
            i64,
            &FlagDefinition,
            &BTreeSet<String>,
            &str,
            &mut FlagState,
        ) -> Result<(Plan, Step), StoreError>
        + Send,
>;

/// Changes a plan and the flag's state, given the flag's definition and now.
pub type PlanChange = Box<
    dyn FnOnce(&mut Plan, &FlagDefinition, &mut FlagState, &str) -> Result<Option<Step>, StoreError>
        + Send,
>;

/// What a plan change records besides the plan and the flag's state.
#[derive(Debug, Clone)]
pub struct Step {
    /// The decision log's `action`: `start`, `advance`, `approve`, `hold`, ...
    pub action: &'static str,
    /// The audit log's action, if the flag's state changes.
    pub audit_action: &'static str,
    pub from_stage: Option<String>,
    pub to_stage: Option<String>,
    /// `proceed`, `hold` or `rollback`.
    pub decision: &'static str,
    pub rationale: String,
    pub decided_by: String,
    pub metrics: Value,
    /// Sent to every webhook of the environment once the change commits.
    pub notifications: Vec<Notification>,
}

/// A webhook payload for one event.
#[derive(Debug, Clone)]
pub struct Notification {
    pub event: &'static str,
    pub payload: Value,
}

/// A plan change as committed.
#[derive(Debug, Clone)]
pub struct PlanChanged {
    pub plan: Plan,
    pub decision: Decision,
    /// The new snapshot, if the flag's state changed.
    pub published: Option<Published>,
    /// Whether any webhook has a notification to deliver.
    pub notified: bool,
}

/// Which plans to list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlanFilter {
    pub flag: Option<String>,
    #[serde(rename = "env")]
    pub environment: Option<String>,
    /// Only running and held plans.
    #[serde(default)]
    pub active: bool,
}

/// Counters reported by an app or an edge.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricBatch {
    /// Makes a retried batch count once: up to 128 characters, unique per sender.
    pub batch: Option<String>,
    pub counters: Vec<CounterReport>,
}

/// Counts for one flag variant, by metric name, e.g. `{"requests": 1200, "errors": 3}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CounterReport {
    pub flag: String,
    pub variant: String,
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub name: String,
    pub url: String,
    pub environment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WebhookRecord {
    pub name: String,
    pub url: String,
    pub environment: String,
    pub created_at: String,
    /// Notifications still to deliver.
    pub pending: u64,
    /// Notifications given up on after every retry failed.
    pub failed: u64,
    pub last_error: Option<String>,
}

/// One notification to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub webhook: String,
    pub url: String,
    pub event: String,
    pub payload: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed this time; `give_up` when no retry is left.
    Failed {
        error: String,
        give_up: bool,
    },
}

/// An edge to register.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEdge {
    pub name: String,
    /// Where the edge worker listens; pushes go to `{url}/rollgate/v1/push`.
    pub url: String,
    pub environment: String,
}

/// A registered edge and the last configuration it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EdgeRecord {
    pub name: String,
    pub url: String,
    pub environment: String,
    pub applied_version: Option<u64>,
    pub applied_readers_revision: Option<u64>,
    pub acked_at: Option<String>,
    pub last_error: Option<String>,
}

/// How a push to an edge went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Acknowledged { version: u64, readers_revision: u64 },
    Failed(String),
}

/// An edit of a flag's state, given the flag's definition; an error aborts the change.
pub type StateChange =
    Box<dyn FnOnce(&FlagDefinition, &mut FlagState) -> Result<(), StoreError> + Send>;

/// Who makes a change and why, as the audit log records it, and the revisions of the flag the
/// change was made against (`None`: whatever it is now).
#[derive(Debug, Clone)]
pub struct ChangeNote {
    pub actor: String,
    pub action: &'static str,
    pub reason: Option<String>,
    pub if_revision: Option<Vec<u64>>,
}

impl ChangeNote {
    /// A change by `actor`, with no reason given and no revision to match.
    pub fn new(actor: &str, action: &'static str) -> Self {
        Self { actor: actor.to_owned(), action, reason: None, if_revision: None }
    }
}

/// A change to a flag's or segment's definition as committed: the snapshots it gave, one per
/// environment, and the resource's new revision.
#[derive(Debug, Clone)]
pub struct Changed {
    pub published: Vec<Published>,
    pub revision: u64,
}

/// A flag state change as committed.
#[derive(Debug, Clone)]
pub struct StateChanged {
    pub published: Published,
    pub state: FlagState,
    /// The flag's new revision.
    pub revision: u64,
}

/// An environment and its current snapshot version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Environment {
    pub name: String,
    pub version: u64,
}

/// A snapshot as served: flag-core's wire format, already serialized, and the engine compiled
/// from it.
#[derive(Debug, Clone)]
pub struct Published {
    pub environment: String,
    pub version: u64,
    pub json: Bytes,
    pub engine: Arc<Engine>,
}

/// Two publications are the same if they carry the same document.
impl PartialEq for Published {
    fn eq(&self, other: &Self) -> bool {
        (&self.environment, self.version, &self.json)
            == (&other.environment, other.version, &other.json)
    }
}

/// A segment and its revision, served as its ETag.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SegmentRecord {
    #[serde(flatten)]
    pub segment: wire::Segment,
    #[serde(skip)]
    pub revision: u64,
}

/// A token as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub token: Token,
    pub created_at: String,
}

/// What a flag is, the same in every environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagDefinition {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub variants: BTreeMap<String, Value>,
    pub off_variant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
}

impl FlagDefinition {
    /// For a flag of two variants, the one that is not `off_variant`: what a rollout exposes
    /// unless told otherwise.
    pub fn sole_other_variant(&self) -> Option<String> {
        let mut others = self.variants.keys().filter(|v| **v != self.off_variant);
        match (others.next(), others.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        }
    }
}

/// How a flag behaves in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagState {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<wire::Prerequisite>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<wire::Rule>,
    pub fallthrough: wire::Serve,
}

impl FlagState {
    /// A new flag's state: enabled, no rules, `off_variant` for everyone.
    pub fn initial(definition: &FlagDefinition) -> Self {
        Self {
            enabled: true,
            prerequisites: Vec::new(),
            rules: Vec::new(),
            fallthrough: wire::Serve::Variant(definition.off_variant.clone()),
        }
    }
}

/// A flag's definition and its state in each environment. The definition's fields are spelled
/// out rather than flattened, so the API description can say the record has both.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FlagRecord {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub variants: BTreeMap<String, Value>,
    pub off_variant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Grows with every change to the flag; served as its ETag.
    #[serde(skip)]
    pub revision: u64,
    pub environments: BTreeMap<String, FlagState>,
}

impl FlagRecord {
    pub fn new(
        definition: FlagDefinition,
        revision: u64,
        environments: BTreeMap<String, FlagState>,
    ) -> Self {
        let FlagDefinition { key, kind, variants, off_variant, salt } = definition;
        Self { key, kind, variants, off_variant, salt, revision, environments }
    }
}

/// Which audit records to return. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    pub flag: Option<String>,
    pub segment: Option<String>,
    #[serde(rename = "env")]
    pub environment: Option<String>,
    /// RFC 3339 with milliseconds in UTC, as stored: records at or after it.
    pub since: Option<String>,
    /// At most this many, the oldest matching first.
    pub limit: Option<u32>,
}

/// One audited change.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub environment: Option<String>,
    pub flag: Option<String>,
    pub segment: Option<String>,
    pub reason: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    /// A key that cannot name a flag or environment.
    #[error("{0}")]
    BadKey(String),
    /// A change that cannot apply to the flag as it is, e.g. a rollout without a variant to expose.
    #[error("{0}")]
    Refused(String),
    /// The resource changed since the revision the caller named.
    #[error("{0}")]
    Stale(String),
    /// The change would give a snapshot that flag-core rejects.
    #[error("the change gives an invalid snapshot: {0}")]
    Invalid(flag_core::ConfigError),
    #[error("storage failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// Makes an `Invalid` error's path relative to `prefix` (e.g. `flags.checkout-v2`) when it
    /// lies inside it, so it points into the request that changed that resource.
    pub fn relative_to(self, prefix: &str) -> Self {
        match self {
            Self::Invalid(mut error) => {
                if error.path == prefix {
                    error.path.clear();
                } else if let Some(inner) = error.path.strip_prefix(prefix)
                    && let Some(inner) =
                        inner.strip_prefix('.').or(inner.starts_with('[').then_some(inner))
                {
                    error.path = inner.to_owned();
                }
                Self::Invalid(error)
            }
            other => other,
        }
    }
}
