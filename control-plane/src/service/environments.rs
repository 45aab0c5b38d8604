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
                Ok(Environment { name, version: published.version, allowed_origins: vec![] })
            })
        })
        .await
}

/// The most origins an environment may allow.
pub const MAX_ALLOWED_ORIGINS: usize = 100;

/// Sets the origins whose pages may call `environment` with a client token (CORS). Edges get
/// them with the next readers revision, as with a token change.
pub async fn set_allowed_origins(
    service: &Service,
    environment: &str,
    origins: Vec<String>,
    actor: &str,
) -> Result<Environment, Error> {
    if origins.len() > MAX_ALLOWED_ORIGINS {
        return Err(Refusal::Unprocessable(format!(
            "`allowed_origins`: at most {MAX_ALLOWED_ORIGINS}"
        ))
        .into());
    }
    let mut allowed = Vec::with_capacity(origins.len());
    for (index, origin) in origins.iter().enumerate() {
        let origin = check_origin(origin)
            .map_err(|why| Refusal::Unprocessable(format!("`allowed_origins[{index}]`: {why}")))?;
        if !allowed.contains(&origin) {
            allowed.push(origin);
        }
    }
    let (environment, actor) = (environment.to_owned(), actor.to_owned());
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let before = tx.environments().await?.into_iter().find(|e| e.name == environment);
                let Some(before) = before else {
                    return Err(Refusal::NotFound(format!("environment `{environment}`")).into());
                };
                if before.allowed_origins == allowed {
                    return Ok(before);
                }
                tx.set_allowed_origins(&environment, &allowed).await?;
                let entry = AuditEntry {
                    environment: Some(environment.clone()),
                    before: Some(serde_json::json!({"allowed_origins": before.allowed_origins})),
                    after: Some(serde_json::json!({"allowed_origins": allowed})),
                    ..AuditEntry::new(&actor, "environment.allowed_origins")
                };
                tx.append_audit(now, &entry).await?;
                effects.readers(tx).await?;
                Ok(Environment { allowed_origins: allowed, ..before })
            })
        })
        .await
}

/// An origin as browsers send it in `Origin`: `https://host` or `http://host:port`, lower case,
/// no path. Returned as browsers spell it, so comparing is exact.
fn check_origin(origin: &str) -> Result<String, String> {
    let url = url::Url::parse(origin).map_err(|_| format!("`{origin}` is not an origin"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("`{origin}` is not an http or https origin"));
    }
    let serialized = url.origin().ascii_serialization();
    if origin.trim_end_matches('/') != serialized {
        return Err(format!(
            "`{origin}` is not an origin as browsers send it (scheme, host and port only, lower case): `{serialized}`"
        ));
    }
    Ok(serialized)
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
