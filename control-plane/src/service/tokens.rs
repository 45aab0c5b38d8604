//! API tokens: created and deleted by admins. A change takes effect at once: in the token
//! table every request is checked against, in the streams opened with a deleted token (they
//! end), and at the edges, whose readers change with the readers revision.

use crate::model::audit::AuditEntry;
use crate::model::token::{Scope, StoredToken, Token};
use crate::model::{Refusal, check_key};
use crate::service::{Error, Service};

/// Every token, by name.
pub async fn list(service: &Service) -> Result<Vec<StoredToken>, Error> {
    service.read(|tx| Box::pin(async move { Ok(tx.tokens().await?) })).await
}

/// Stores a token by its hash; the name must be new, and its environment must exist.
pub async fn create(service: &Service, token: Token, actor: &str) -> Result<StoredToken, Error> {
    check_key("token", &token.name)?;
    if token.scope == Scope::Client && token.environment.is_none() {
        return Err(Refusal::Unprocessable(
            "a client token is bound to one environment: give `environment`".into(),
        )
        .into());
    }
    let actor = actor.to_owned();
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                if let Some(environment) = &token.environment
                    && tx.environment_version(environment).await?.is_none()
                {
                    return Err(Refusal::NotFound(format!("environment `{environment}`")).into());
                }
                if !tx.insert_token(&token, now).await? {
                    return Err(Refusal::Conflict(format!(
                        "token `{}` (or one with the same secret)",
                        token.name
                    ))
                    .into());
                }
                let entry = AuditEntry {
                    environment: token.environment.clone(),
                    after: Some(token.audited()),
                    ..AuditEntry::new(&actor, "token.create")
                };
                tx.append_audit(now, &entry).await?;
                effects.readers(tx).await?;
                Ok(StoredToken { token, created_at: now })
            })
        })
        .await
}

/// Deletes a token: it stops working at once, and its open streams end. The last admin token
/// stays: without it, nothing but editing the database could manage tokens again.
pub async fn delete(service: &Service, name: &str, actor: &str) -> Result<(), Error> {
    let (name, actor) = (name.to_owned(), actor.to_owned());
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let admins: Vec<_> = tx
                    .tokens()
                    .await?
                    .into_iter()
                    .filter(|stored| stored.token.scope == Scope::Admin)
                    .map(|stored| stored.token.name)
                    .collect();
                if admins == [name.as_str()] {
                    return Err(Refusal::Unprocessable(format!(
                        "`{name}` is the last admin token; create another admin token before deleting it"
                    ))
                    .into());
                }
                let token = tx
                    .delete_token(&name)
                    .await?
                    .ok_or_else(|| Refusal::NotFound(format!("token `{name}`")))?;
                let entry = AuditEntry {
                    environment: token.environment.clone(),
                    before: Some(token.audited()),
                    ..AuditEntry::new(&actor, "token.delete")
                };
                tx.append_audit(now, &entry).await?;
                effects.readers(tx).await?;
                Ok(())
            })
        })
        .await
}
