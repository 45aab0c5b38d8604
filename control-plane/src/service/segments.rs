//! Segments: named sets of units that rules target, shared by every environment.

use flag_core::wire;

use crate::model::audit::AuditEntry;
use crate::model::flag::SegmentRecord;
use crate::model::{Refusal, check_key};
use crate::service::flags::{Note, check_revision, missing};
use crate::service::{Error, Service, snapshots};
use crate::store::Tx;

/// Every live segment, by key.
pub async fn list(service: &Service) -> Result<Vec<SegmentRecord>, Error> {
    service.read(|tx| Box::pin(async move { Ok(tx.segments().await?) })).await
}

pub async fn get(service: &Service, key: &str) -> Result<SegmentRecord, Error> {
    let key = key.to_owned();
    service.read(|tx| Box::pin(async move { live(tx, &key, None).await })).await
}

/// Adds a segment, which every environment's snapshot carries.
pub async fn create(
    service: &Service,
    segment: wire::Segment,
    actor: &str,
) -> Result<SegmentRecord, Error> {
    check_key("segment", &segment.key)?;
    let (actor, prefix) = (actor.to_owned(), format!("segments.{}", segment.key));
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                if !tx.insert_segment(&segment, now).await? {
                    return Err(Refusal::Conflict(format!("segment `{}`", segment.key)).into());
                }
                let entry = AuditEntry {
                    segment: Some(segment.key.clone()),
                    after: serde_json::to_value(&segment).ok(),
                    ..AuditEntry::new(&actor, "segment.create")
                };
                tx.append_audit(now, &entry).await?;
                snapshots::publish_all(tx, effects).await?;
                Ok(SegmentRecord { segment, revision: 1 })
            })
        })
        .await
        .map_err(|error| error.relative_to(&prefix))
}

/// Replaces a segment (its key stays) in every environment.
pub async fn update(
    service: &Service,
    segment: wire::Segment,
    note: Note,
) -> Result<SegmentRecord, Error> {
    let prefix = format!("segments.{}", segment.key);
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let before = live(tx, &segment.key, Some(&note)).await?;
                tx.update_segment(&segment, now).await?;
                let revision = tx.bump_segment_revision(&segment.key, now).await?;
                let entry = AuditEntry {
                    segment: Some(segment.key.clone()),
                    reason: note.reason,
                    before: serde_json::to_value(&before.segment).ok(),
                    after: serde_json::to_value(&segment).ok(),
                    ..AuditEntry::new(&note.actor, "segment.update")
                };
                tx.append_audit(now, &entry).await?;
                snapshots::publish_all(tx, effects).await?;
                Ok(SegmentRecord { segment, revision })
            })
        })
        .await
        .map_err(|error| error.relative_to(&prefix))
}

/// Takes a segment out of every snapshot: flag-core refuses it while a rule still targets it.
pub async fn archive(service: &Service, key: &str, note: Note) -> Result<(), Error> {
    let key = key.to_owned();
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let before = live(tx, &key, Some(&note)).await?;
                tx.archive_segment(&key, now).await?;
                tx.bump_segment_revision(&key, now).await?;
                let entry = AuditEntry {
                    segment: Some(key.clone()),
                    reason: note.reason,
                    before: serde_json::to_value(&before.segment).ok(),
                    ..AuditEntry::new(&note.actor, "segment.archive")
                };
                tx.append_audit(now, &entry).await?;
                snapshots::publish_all(tx, effects).await
            })
        })
        .await
}

/// A live segment, its revision checked against `note.if_revision` if given.
async fn live(tx: &mut dyn Tx, key: &str, note: Option<&Note>) -> Result<SegmentRecord, Error> {
    let Some(record) = tx.segment(key).await? else {
        return Err(missing("segment", key, note).into());
    };
    if let Some(note) = note {
        check_revision("segment", key, record.revision, note)?;
    }
    Ok(record)
}
