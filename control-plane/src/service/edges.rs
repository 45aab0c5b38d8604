//! Edges: registered by admins; each gets a push task the moment its registration commits.

use crate::model::Refusal;
use crate::model::audit::AuditEntry;
use crate::model::edge::{EdgeRecord, NewEdge};
use crate::service::{Error, Service};

/// Every edge, by name.
pub async fn list(service: &Service) -> Result<Vec<EdgeRecord>, Error> {
    service.read(|tx| Box::pin(async move { Ok(tx.edges().await?) })).await
}

/// Registers an edge deployment of an environment; pushes to it begin once it commits.
pub async fn register(service: &Service, edge: NewEdge, actor: &str) -> Result<EdgeRecord, Error> {
    if !service.edges.has_secret() {
        return Err(no_secret());
    }
    service.targets.check_url("url", &edge.url)?;
    let edge = edge.checked()?;
    let actor = actor.to_owned();
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                if tx.environment_version(&edge.environment).await?.is_none() {
                    let environment = &edge.environment;
                    return Err(Refusal::NotFound(format!("environment `{environment}`")).into());
                }
                if !tx.insert_edge(&edge, now).await? {
                    return Err(Refusal::Conflict(format!("edge `{}`", edge.name)).into());
                }
                let record = EdgeRecord::new(edge);
                let entry = AuditEntry {
                    environment: Some(record.environment.clone()),
                    after: Some(record.audited()),
                    ..AuditEntry::new(&actor, "edge.create")
                };
                tx.append_audit(now, &entry).await?;
                effects.edges_added.push(record.clone());
                Ok(record)
            })
        })
        .await
}

/// Forgets an edge: no more pushes go to it.
pub async fn remove(service: &Service, name: &str, actor: &str) -> Result<(), Error> {
    let (name, actor) = (name.to_owned(), actor.to_owned());
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let record = tx
                    .delete_edge(&name)
                    .await?
                    .ok_or_else(|| Refusal::NotFound(format!("edge `{name}`")))?;
                let entry = AuditEntry {
                    environment: Some(record.environment.clone()),
                    before: Some(record.audited()),
                    ..AuditEntry::new(&actor, "edge.delete")
                };
                tx.append_audit(now, &entry).await?;
                effects.edges_removed.push(name);
                Ok(())
            })
        })
        .await
}

pub(crate) fn no_secret() -> Error {
    Refusal::Unprocessable(
        "no push secret is configured: start rollgate with --push-secret or ROLLGATE_PUSH_SECRET"
            .into(),
    )
    .into()
}
