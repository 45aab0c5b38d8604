//! Environments: each with its own flag states and snapshot version.

use crate::model::audit::AuditEntry;
use crate::model::flag::{DEFAULT_ENVIRONMENTS, Environment, FlagState};
use crate::model::{Refusal, check_key};
use crate::service::{Error, Service, snapshots};

/// The actor recorded for changes the service makes by itself.
pub const SYSTEM_ACTOR: &str = "rollgate";

/// Every environment with its current version, by name.
pub async fn list(service: &Service) -> Result<Vec<Environment>, Error> {
    service.read(|tx| Box::pin(async move { Ok(tx.environments().await?) })).await
}

/// Adds an environment; every live flag gets its initial state there.
pub async fn create(service: &Service, name: &str, actor: &str) -> Result<Environment, Error> {
    check_key("environment", name)?;
    let (name, actor) = (name.to_owned(), actor.to_owned());
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                if !tx.insert_environment(&name, now).await? {
                    return Err(Refusal::Conflict(format!("environment `{name}`")).into());
                }
                for flag in tx.flags().await? {
                    let state = FlagState::initial(&flag.definition);
                    tx.put_flag_state(&name, &flag.definition.key, &state, now).await?;
                }
                let entry = AuditEntry {
                    environment: Some(name.clone()),
                    ..AuditEntry::new(&actor, "environment.create")
                };
                tx.append_audit(now, &entry).await?;
                let published = snapshots::publish(tx, effects, &name).await?;
                Ok(Environment { name, version: published.version })
            })
        })
        .await
}

/// Creates `staging` and `production` unless they exist: what every installation starts with.
pub(crate) async fn create_defaults(service: &Service) -> Result<(), Error> {
    for name in DEFAULT_ENVIRONMENTS {
        match create(service, name, SYSTEM_ACTOR).await {
            Ok(_) | Err(Error::Refused(Refusal::Conflict(_))) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
