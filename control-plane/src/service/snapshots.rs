//! Snapshots: an environment's flags and segments assembled into flag-core's wire format and
//! compiled. A change publishes a new version of every environment it touches, inside its
//! transaction: a snapshot flag-core rejects rolls the change back.

use std::sync::Arc;

use flag_core::wire;

use crate::model::Refusal;
use crate::model::flag::{Published, wire_flag};
use crate::service::{Effects, Error, Service};
use crate::store::Tx;

/// Bumps the environment's version and publishes its new snapshot once the change commits.
pub(crate) async fn publish(
    tx: &mut dyn Tx,
    effects: &mut Effects,
    environment: &str,
) -> Result<Published, Error> {
    let version = tx.bump_version(environment).await?;
    let published = compile(assemble(tx, environment, version).await?)?;
    tx.put_snapshot(environment, version, &published.json).await?;
    effects.publish(published.clone());
    Ok(published)
}

/// The snapshots of `environment` published after `version` and still kept, oldest first:
/// what another process committed that this one has not yet published.
pub(crate) async fn published_after(
    tx: &mut dyn Tx,
    environment: &str,
    version: u64,
) -> Result<Vec<Published>, Error> {
    let mut published = Vec::new();
    for (version, json) in tx.snapshots_after(environment, version).await? {
        let snapshot: wire::Snapshot = serde_json::from_slice(&json).map_err(|e| {
            crate::store::StoreError::Failed(format!(
                "stored snapshot {environment} v{version}: {e}"
            ))
        })?;
        published.push(compile(snapshot)?);
    }
    Ok(published)
}

/// `publish`es every environment, in name order.
pub(crate) async fn publish_all(tx: &mut dyn Tx, effects: &mut Effects) -> Result<(), Error> {
    for environment in tx.environments().await? {
        publish(tx, effects, &environment.name).await?;
    }
    Ok(())
}

/// The current snapshot of an environment, read and compiled from the store: what the
/// publisher should hold.
pub async fn stored(service: &Service, environment: &str) -> Result<Published, Error> {
    let environment = environment.to_owned();
    service.read(|tx| Box::pin(async move { current(tx, &environment).await })).await
}

/// The current snapshot of an environment, as stored.
pub(crate) async fn current(tx: &mut dyn Tx, environment: &str) -> Result<Published, Error> {
    let version = tx
        .environment_version(environment)
        .await?
        .ok_or_else(|| Refusal::NotFound(format!("environment `{environment}`")))?;
    compile(assemble(tx, environment, version).await?)
}

/// The wire snapshot of an environment at `version`, flags and segments in key order.
async fn assemble(
    tx: &mut dyn Tx,
    environment: &str,
    version: u64,
) -> Result<wire::Snapshot, Error> {
    let flags = tx
        .environment_flags(environment)
        .await?
        .into_iter()
        .map(|(definition, state)| wire_flag(definition, state))
        .collect();
    let segments = tx.segments().await?.into_iter().map(|record| record.segment).collect();
    Ok(wire::Snapshot {
        schema: wire::SCHEMA,
        environment: environment.to_owned(),
        version,
        flags,
        segments,
    })
}

/// Compiles a snapshot. A rejection names the flag or segment at fault by its key, as in
/// `flags.checkout-v2.rules[0]`, rather than by its place in the snapshot.
fn compile(snapshot: wire::Snapshot) -> Result<Published, Error> {
    let json = serde_json::to_vec(&snapshot)
        .map_err(|e| crate::store::StoreError::Failed(e.to_string()))?;
    let engine = flag_core::Engine::from_snapshot(snapshot.clone()).map_err(|mut error| {
        error.path = keyed_path(&error.path, &snapshot);
        Refusal::Invalid(error)
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
