//! The audit log.

use crate::model::audit::{AuditQuery, AuditRecord};
use crate::service::{Error, Service};

/// Audit records matching `query`, oldest first.
pub async fn list(service: &Service, query: AuditQuery) -> Result<Vec<AuditRecord>, Error> {
    service.read(|tx| Box::pin(async move { Ok(tx.audit(&query).await?) })).await
}
