//! Flags: their shared definitions, and a release manager's changes to one flag in one
//! environment (its state, a rollout, a kill).

use std::collections::BTreeMap;

use crate::model::audit::AuditEntry;
use crate::model::flag::{FlagDefinition, FlagRecord, FlagState, StoredFlag};
use crate::model::percent::Percent;
use crate::model::plan::{Plan, PlanQuery, Status};
use crate::model::time::Timestamp;
use crate::model::{Refusal, check_key};
use crate::plans;
use crate::service::{Effects, Error, Service, plans::commit_step, snapshots};
use crate::store::Tx;

/// Who makes a change and why, as the audit log records it, and the revisions of the resource
/// the change was made against (`None`: whatever it is now).
#[derive(Debug, Clone)]
pub struct Note {
    pub actor: String,
    pub reason: Option<String>,
    pub if_revision: Option<Vec<u64>>,
}

impl Note {
    /// A change by `actor` with no reason given and no revision to match.
    pub fn by(actor: &str) -> Self {
        Self { actor: actor.to_owned(), reason: None, if_revision: None }
    }
}

/// A flag's state in an environment after a change.
#[derive(Debug, Clone)]
pub struct StateChanged {
    /// The snapshot version the change is in.
    pub version: u64,
    pub state: FlagState,
    /// The flag's new revision.
    pub revision: u64,
}

/// A rollout to set: see `FlagState::roll_out`.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub percent: Percent,
    pub stage: Option<String>,
    pub variant: Option<String>,
}

/// Live flags with their states, by key: those `query` matches.
pub async fn list(service: &Service, query: FlagQuery) -> Result<Vec<FlagRecord>, Error> {
    let needle = query.text.as_deref().map(str::to_lowercase);
    service
        .read(move |tx| {
            Box::pin(async move {
                let mut records = Vec::new();
                for stored in tx.flags().await? {
                    let states = tx.flag_states(&stored.definition.key).await?;
                    let record = FlagRecord::new(stored, states);
                    if query.matches(&record, needle.as_deref()) {
                        records.push(record);
                    }
                }
                Ok(records)
            })
        })
        .await
}

/// Which flags to list; empty fields match every flag.
#[derive(Debug, Clone, Default)]
pub struct FlagQuery {
    /// Found in the key or the description, ignoring case.
    pub text: Option<String>,
    pub tag: Option<String>,
    pub owner: Option<String>,
    /// A rollout's stage label, in `environment` if given, else in any.
    pub stage: Option<String>,
    pub environment: Option<String>,
}

impl FlagQuery {
    fn matches(&self, record: &FlagRecord, needle: Option<&str>) -> bool {
        let text = needle.is_none_or(|needle| {
            record.key.to_lowercase().contains(needle)
                || record.description.to_lowercase().contains(needle)
        });
        let tag = self.tag.as_ref().is_none_or(|tag| record.tags.contains(tag));
        let owner = self.owner.as_ref().is_none_or(|owner| record.owner == *owner);
        let stage = self.stage.as_deref().is_none_or(|stage| match &self.environment {
            Some(environment) => record.stage(environment) == Some(stage),
            None => record.environments.keys().any(|env| record.stage(env) == Some(stage)),
        });
        text && tag && owner && stage
    }
}

/// A flag with its state in each environment.
pub async fn get(service: &Service, key: &str) -> Result<FlagRecord, Error> {
    let key = key.to_owned();
    service.read(|tx| Box::pin(async move { record(tx, &key).await })).await
}

/// Adds a flag to every environment, serving `off_variant` to everyone.
pub async fn create(
    service: &Service,
    definition: FlagDefinition,
    actor: &str,
) -> Result<FlagRecord, Error> {
    check_key("flag", &definition.key)?;
    definition.check_metadata()?;
    let (actor, prefix) = (actor.to_owned(), format!("flags.{}", definition.key));
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let entry = AuditEntry::new(&actor, "flag.create");
                if !insert_everywhere(tx, now, &definition, entry).await? {
                    return Err(Refusal::Conflict(format!("flag `{}`", definition.key)).into());
                }
                snapshots::publish_all(tx, effects).await?;
                record(tx, &definition.key).await
            })
        })
        .await
        .map_err(|error| error.relative_to(&prefix))
}

/// Stores a new flag, serving `off_variant` in every environment, and audits its creation
/// (`entry`, which gets the flag and its definition); `false` if its key is taken, by a live or
/// an archived flag.
async fn insert_everywhere(
    tx: &mut dyn Tx,
    now: Timestamp,
    definition: &FlagDefinition,
    entry: AuditEntry,
) -> Result<bool, Error> {
    if !tx.insert_flag(definition, now).await? {
        return Ok(false);
    }
    let state = FlagState::initial(definition);
    for environment in tx.environments().await? {
        tx.put_flag_state(&environment.name, &definition.key, &state, now).await?;
    }
    let entry = AuditEntry {
        flag: Some(definition.key.clone()),
        after: serde_json::to_value(definition).ok(),
        ..entry
    };
    tx.append_audit(now, &entry).await?;
    Ok(true)
}

/// Replaces a flag's definition (its key stays) in every environment.
pub async fn update(
    service: &Service,
    definition: FlagDefinition,
    note: Note,
) -> Result<FlagRecord, Error> {
    definition.check_metadata()?;
    let prefix = format!("flags.{}", definition.key);
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let key = definition.key.clone();
                let before = live(tx, &key, &note).await?;
                tx.update_flag(&definition, now).await?;
                tx.bump_flag_revision(&key, now).await?;
                let entry = AuditEntry {
                    flag: Some(key.clone()),
                    reason: note.reason,
                    before: serde_json::to_value(&before.definition).ok(),
                    after: serde_json::to_value(&definition).ok(),
                    ..AuditEntry::new(&note.actor, "flag.update")
                };
                tx.append_audit(now, &entry).await?;
                snapshots::publish_all(tx, effects).await?;
                record(tx, &key).await
            })
        })
        .await
        .map_err(|error| error.relative_to(&prefix))
}

/// Takes a flag out of every snapshot. Its key stays taken, and its history stays in the
/// audit log. Refused while a plan drives it.
pub async fn archive(service: &Service, key: &str, note: Note) -> Result<(), Error> {
    let key = key.to_owned();
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let active = PlanQuery { flag: Some(key.clone()), active: true, ..PlanQuery::default() };
                if let Some(plan) = tx.plans(&active).await?.pop() {
                    return Err(Refusal::Unprocessable(format!(
                        "flag `{key}` has an active rollout plan ({}, in `{}`); roll it back or complete it first",
                        plan.id, plan.environment
                    ))
                    .into());
                }
                let before = live(tx, &key, &note).await?;
                tx.archive_flag(&key, now).await?;
                tx.bump_flag_revision(&key, now).await?;
                let entry = AuditEntry {
                    flag: Some(key.clone()),
                    reason: note.reason,
                    before: serde_json::to_value(&before.definition).ok(),
                    ..AuditEntry::new(&note.actor, "flag.archive")
                };
                tx.append_audit(now, &entry).await?;
                snapshots::publish_all(tx, effects).await
            })
        })
        .await
}

/// A flag from another system: its definition, and its state in the environment imported to.
#[derive(Debug, Clone)]
pub struct Import {
    pub definition: FlagDefinition,
    pub state: FlagState,
}

/// What an import did, in the snapshot version that carries it.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub version: u64,
    /// Flags it created (off in every other environment).
    pub created: Vec<String>,
    /// Flags that existed with the same definition, untouched in this environment since they
    /// were created (an import of another environment, say), whose state it set.
    pub adopted: Vec<String>,
}

/// The most flags one import takes, which bounds how long its change holds the store (5,000
/// took 0.35 s in a release build on SQLite).
pub const MAX_IMPORT_FLAGS: usize = 10_000;

/// Brings flags from another system into one environment in one change, so an import is
/// whole or nothing even if the client goes away half-way: each flag is created, or adopted
/// (see `Imported`), and its state set, audited with `note`. A key taken otherwise (by another
/// definition, a flag already set up in the environment, or an archived flag) refuses it all.
pub async fn import(
    service: &Service,
    environment: &str,
    flags: Vec<Import>,
    note: Note,
) -> Result<Imported, Error> {
    let mut keys = std::collections::HashSet::new();
    for flag in &flags {
        check_key("flag", &flag.definition.key)?;
        flag.definition.check_metadata()?;
        flag.state.check_labels()?;
        if !keys.insert(flag.definition.key.clone()) {
            let key = &flag.definition.key;
            return Err(Refusal::Malformed(format!("flag `{key}` is in the import twice")).into());
        }
    }
    if flags.is_empty() {
        return Err(Refusal::Malformed("no flags to import".into()).into());
    }
    if flags.len() > MAX_IMPORT_FLAGS {
        return Err(Refusal::Malformed(format!(
            "{} flags: an import takes at most {MAX_IMPORT_FLAGS}",
            flags.len()
        ))
        .into());
    }
    let environment = environment.to_owned();
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                if tx.environment_version(&environment).await?.is_none() {
                    return Err(Refusal::NotFound(format!("environment `{environment}`")).into());
                }
                let mut imported = Imported::default();
                let audited = |action| AuditEntry {
                    reason: note.reason.clone(),
                    ..AuditEntry::new(&note.actor, action)
                };
                for Import { definition, state } in flags {
                    let key = definition.key.clone();
                    let initial = FlagState::initial(&definition);
                    if insert_everywhere(tx, now, &definition, audited("flag.create")).await? {
                        imported.created.push(key.clone());
                    } else {
                        let stored = tx.flag(&key).await?.ok_or_else(|| {
                            Refusal::Blocked(format!(
                                "an archived flag has the key `{key}`; nothing imported"
                            ))
                        })?;
                        if stored.definition != definition {
                            return Err(Refusal::Blocked(format!(
                                "flag `{key}` exists with another definition; nothing imported"
                            ))
                            .into());
                        }
                        if tx.flag_state(&environment, &key).await?.as_ref() != Some(&initial) {
                            return Err(Refusal::Blocked(format!(
                                "flag `{key}` is already set up in `{environment}`; nothing imported"
                            ))
                            .into());
                        }
                        imported.adopted.push(key);
                    }
                    let mut target = FlagInEnvironment {
                        environment: environment.clone(),
                        definition,
                        state: initial,
                        revision: 0,
                    };
                    target.store(tx, now, state, audited("flag.state")).await?;
                }
                // One version for the whole import; a created flag is in every environment.
                if imported.created.is_empty() {
                    imported.version = snapshots::publish(tx, effects, &environment).await?.version;
                } else {
                    snapshots::publish_all(tx, effects).await?;
                    let version = tx.environment_version(&environment).await?;
                    imported.version = version.unwrap_or_default();
                }
                Ok(imported)
            })
        })
        .await
}

/// Replaces a flag's state in one environment.
pub async fn set_state(
    service: &Service,
    environment: &str,
    flag: &str,
    state: FlagState,
    note: Note,
) -> Result<StateChanged, Error> {
    state.check_labels()?;
    edit_state(service, environment, flag, "flag.state", note, move |_, current, plan| {
        refuse_while_running(plan)?;
        *current = state;
        Ok(())
    })
    .await
}

/// Makes the flag's fallthrough a percent rollout in one environment.
pub async fn roll_out(
    service: &Service,
    environment: &str,
    flag: &str,
    rollout: Rollout,
    note: Note,
) -> Result<StateChanged, Error> {
    edit_state(
        service,
        environment,
        flag,
        "flag.rollout",
        note,
        move |definition, current, plan| {
            refuse_while_running(plan)?;
            current.roll_out(
                definition,
                rollout.percent,
                rollout.stage.clone(),
                rollout.variant,
            )?;
            // Under a held plan, the plan's stage label no longer describes a manual exposure.
            if plan.is_some() && rollout.stage.is_none() {
                current.clear_stage_label();
            }
            Ok(())
        },
    )
    .await
}

/// A running plan owns its flag's audience: changes of exposure by hand wait until it is held,
/// rolled back or completed.
fn refuse_while_running(plan: Option<&Plan>) -> Result<(), Refusal> {
    match plan {
        Some(plan) if plan.status == Status::Running => Err(Refusal::Blocked(format!(
            "plan {} is rolling out `{}` in `{}` (stage `{}`): hold it first (`rollgate plan \
             hold {}`), or roll it back or complete it",
            plan.id,
            plan.flag,
            plan.environment,
            plan.current().name,
            plan.id
        ))),
        _ => Ok(()),
    }
}

/// Serves `off_variant` to everyone in one environment, at once, whatever else is going on: it
/// ignores `If-Match`, and holds the flag's running plan in the same transaction.
pub async fn kill(
    service: &Service,
    environment: &str,
    flag: &str,
    actor: &str,
    reason: &str,
) -> Result<StateChanged, Error> {
    let (environment, flag) = (environment.to_owned(), flag.to_owned());
    let (actor, reason) = (actor.to_owned(), reason.to_owned());
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let mut target = FlagInEnvironment::load(tx, &environment, &flag, None).await?;
                let changed = kill_in(tx, now, effects, &mut target, &actor, &reason).await?;
                let running =
                    PlanQuery { flag: Some(flag), environment: Some(environment), active: true };
                for mut plan in tx.plans(&running).await? {
                    if let Some(step) = plans::hold_for_kill(&mut plan, &actor, &reason) {
                        let unchanged = target.state.clone();
                        commit_step(tx, now, effects, plan, &mut target, unchanged, step).await?;
                    }
                }
                Ok(changed)
            })
        })
        .await
}

/// Evaluates the flag's rules again in one environment.
pub async fn unkill(
    service: &Service,
    environment: &str,
    flag: &str,
    actor: &str,
    reason: &str,
) -> Result<StateChanged, Error> {
    let note = Note { reason: Some(reason.to_owned()), ..Note::by(actor) };
    edit_state(service, environment, flag, "flag.unkill", note, |_, current, _| {
        current.enabled = true;
        Ok(())
    })
    .await
}

/// The one way a flag is killed, by a person, a plan's rollback or a guardrail: `enabled`
/// off, audited as `flag.kill`, published.
pub(crate) async fn kill_in(
    tx: &mut dyn Tx,
    now: Timestamp,
    effects: &mut Effects,
    target: &mut FlagInEnvironment,
    actor: &str,
    reason: &str,
) -> Result<StateChanged, Error> {
    let mut state = target.state.clone();
    state.enabled = false;
    let entry =
        AuditEntry { reason: Some(reason.to_owned()), ..AuditEntry::new(actor, "flag.kill") };
    target.save(tx, now, effects, state, entry).await
}

/// Edits a flag's state in one environment inside the transaction, so concurrent changes
/// compose instead of overwriting each other. With `note.if_revision`, the flag must still be
/// at one of those revisions.
async fn edit_state<F>(
    service: &Service,
    environment: &str,
    flag: &str,
    action: &'static str,
    note: Note,
    edit: F,
) -> Result<StateChanged, Error>
where
    F: FnOnce(&FlagDefinition, &mut FlagState, Option<&Plan>) -> Result<(), Refusal>
        + Send
        + 'static,
{
    let (environment, flag) = (environment.to_owned(), flag.to_owned());
    let prefix = format!("flags.{flag}");
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let mut target =
                    FlagInEnvironment::load(tx, &environment, &flag, Some(&note)).await?;
                check_revision("flag", &flag, target.revision, &note)?;
                let active = PlanQuery {
                    flag: Some(flag.clone()),
                    environment: Some(environment.clone()),
                    active: true,
                };
                let plan = tx.plans(&active).await?.into_iter().next();
                let mut state = target.state.clone();
                edit(&target.definition, &mut state, plan.as_ref())?;
                let entry =
                    AuditEntry { reason: note.reason, ..AuditEntry::new(&note.actor, action) };
                target.save(tx, now, effects, state, entry).await
            })
        })
        .await
        .map_err(|error| error.relative_to(&prefix))
}

/// A flag's definition and its state in one environment, read inside a change.
pub(crate) struct FlagInEnvironment {
    pub(crate) environment: String,
    pub(crate) definition: FlagDefinition,
    pub(crate) state: FlagState,
    pub(crate) revision: u64,
}

impl FlagInEnvironment {
    /// Without the flag, 404, or 412 if `note` names revisions (see `missing`).
    pub(crate) async fn load(
        tx: &mut dyn Tx,
        environment: &str,
        flag: &str,
        note: Option<&Note>,
    ) -> Result<Self, Error> {
        let found = match tx.flag(flag).await? {
            Some(stored) => tx.flag_state(environment, flag).await?.map(|state| (stored, state)),
            None => None,
        };
        let Some((stored, state)) = found else {
            if tx.environment_version(environment).await?.is_none() {
                return Err(Refusal::NotFound(format!("environment `{environment}`")).into());
            }
            return Err(missing("flag", flag, note).into());
        };
        Ok(Self {
            environment: environment.to_owned(),
            definition: stored.definition,
            state,
            revision: stored.revision,
        })
    }

    /// Stores `state`, bumps the flag's revision, publishes the environment and audits the
    /// change (`entry`, which gets the environment, the flag and the states before and after).
    pub(crate) async fn save(
        &mut self,
        tx: &mut dyn Tx,
        now: Timestamp,
        effects: &mut Effects,
        state: FlagState,
        entry: AuditEntry,
    ) -> Result<StateChanged, Error> {
        self.store(tx, now, state, entry).await?;
        let published = snapshots::publish(tx, effects, &self.environment).await?;
        let state = self.state.clone();
        Ok(StateChanged { version: published.version, state, revision: self.revision })
    }

    /// `save` without publishing, for a change that publishes once for many flags.
    async fn store(
        &mut self,
        tx: &mut dyn Tx,
        now: Timestamp,
        state: FlagState,
        entry: AuditEntry,
    ) -> Result<(), Error> {
        let key = &self.definition.key;
        tx.put_flag_state(&self.environment, key, &state, now).await?;
        self.revision = tx.bump_flag_revision(key, now).await?;
        let entry = AuditEntry {
            environment: Some(self.environment.clone()),
            flag: Some(key.clone()),
            before: serde_json::to_value(&self.state).ok(),
            after: serde_json::to_value(&state).ok(),
            ..entry
        };
        tx.append_audit(now, &entry).await?;
        self.state = state;
        Ok(())
    }
}

/// A live flag with its state in every environment.
async fn record(tx: &mut dyn Tx, key: &str) -> Result<FlagRecord, Error> {
    let stored = tx.flag(key).await?.ok_or_else(|| Refusal::NotFound(format!("flag `{key}`")))?;
    let environments: BTreeMap<_, _> = tx.flag_states(key).await?;
    Ok(FlagRecord::new(stored, environments))
}

/// A live flag, once its revision is checked against `note.if_revision`.
async fn live(tx: &mut dyn Tx, key: &str, note: &Note) -> Result<StoredFlag, Error> {
    let stored = tx.flag(key).await?.ok_or_else(|| missing("flag", key, Some(note)))?;
    check_revision("flag", key, stored.revision, note)?;
    Ok(stored)
}

/// A resource that does not exist (or no longer does): 404, or 412 when the change named
/// revisions, since none can match (RFC 9110, `If-Match`).
pub(crate) fn missing(noun: &str, key: &str, note: Option<&Note>) -> Refusal {
    if note.is_some_and(|note| note.if_revision.is_some()) {
        Refusal::Stale(format!(
            "{noun} `{key}` does not exist, so it is at none of the revisions If-Match names"
        ))
    } else {
        Refusal::NotFound(format!("{noun} `{key}`"))
    }
}

/// Refuses a change made against another revision than the resource's.
pub(crate) fn check_revision(
    noun: &str,
    key: &str,
    revision: u64,
    note: &Note,
) -> Result<(), Refusal> {
    match &note.if_revision {
        Some(accepted) if !accepted.contains(&revision) => Err(Refusal::Stale(format!(
            "{noun} `{key}` changed since; it is at revision {revision} (ETag \"{revision}\")"
        ))),
        _ => Ok(()),
    }
}
