//! Pushing configurations to edges. Each registered edge has a task that, whenever its
//! environment's snapshot or the set of tokens changes, posts the newest signed envelope to the
//! edge, retrying with exponential backoff until the edge acknowledges it. A newer change
//! replaces a push still being retried: an edge only ever needs the latest envelope.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edge_worker::config::{RefusalAnswer, RefusalKind, SIGNATURE_HEADER, envelope, sign};
use tokio::task::AbortHandle;

use crate::auth::Tokens;
use crate::clock::Clock;
use crate::model::edge::{EdgeRecord, PushOutcome};
use crate::outbound::{self, Targets};
use crate::publisher::Publisher;
use crate::store::{self, Committed, Store, StoreError};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an edge's answer read, and kept as the reason a push failed.
const ANSWER_LIMIT: usize = 64 << 10;
const ERROR_EXCERPT: usize = 512;

/// A signed envelope and its position (version, readers revision).
pub struct Envelope {
    pub body: Bytes,
    pub signature: String,
    pub position: (u64, u64),
}

/// The edges' push tasks, and what they push: the publisher's snapshots, the tokens' readers,
/// signed with the secret.
#[derive(Clone)]
pub struct Edges(Arc<Inner>);

struct Inner {
    secret: Option<Vec<u8>>,
    targets: Targets,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    publisher: Publisher,
    tokens: Tokens,
    client: reqwest::Client,
    /// Every registered edge, and its push task where this process leads.
    tasks: Mutex<HashMap<String, (EdgeRecord, Option<AbortHandle>)>>,
}

impl Edges {
    /// Without a secret, edges cannot be registered or fed.
    pub fn new(
        secret: Option<Vec<u8>>,
        targets: Targets,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        publisher: Publisher,
        tokens: Tokens,
    ) -> Self {
        let client = targets.client(PUSH_TIMEOUT);
        let tasks = Mutex::default();
        Self(Arc::new(Inner { secret, targets, store, clock, publisher, tokens, client, tasks }))
    }

    pub fn has_secret(&self) -> bool {
        self.0.secret.is_some()
    }

    /// Starts (or restarts) pushing to `edge`, where this process leads; elsewhere keeps it
    /// for when it does.
    pub fn start(&self, edge: EdgeRecord) {
        let task = self.leads().then(|| tokio::spawn(push_loop(self.clone(), edge.clone())));
        let previous =
            self.lock().insert(edge.name.clone(), (edge, task.map(|t| t.abort_handle())));
        if let Some((_, Some(previous))) = previous {
            previous.abort();
        }
    }

    /// Stops pushing to the edge named `name`.
    pub fn stop(&self, name: &str) {
        if let Some((_, Some(task))) = self.lock().remove(name) {
            task.abort();
        }
    }

    /// Stops every push task (at shutdown).
    pub fn stop_all(&self) {
        for (_, (_, task)) in self.lock().drain() {
            task.inspect(AbortHandle::abort);
        }
    }

    /// Makes the registered edges `edges`, as another process may have changed them: starts
    /// the new ones, stops the ones gone, leaves the rest pushing.
    pub fn sync(&self, edges: Vec<EdgeRecord>) {
        let known: Vec<String> = self.lock().keys().cloned().collect();
        for name in &known {
            if !edges.iter().any(|edge| edge.name == *name) {
                self.stop(name);
            }
        }
        for edge in edges {
            if !known.contains(&edge.name) {
                self.start(edge);
            }
        }
    }

    /// Pushes to every edge from here if `leading`, else from nowhere here.
    pub fn lead(&self, leading: bool) {
        let mut tasks = self.lock();
        for (edge, task) in tasks.values_mut() {
            match (leading, &task) {
                (true, None) => {
                    *task = Some(tokio::spawn(push_loop(self.clone(), edge.clone())).abort_handle())
                }
                (false, Some(running)) => {
                    running.abort();
                    *task = None;
                }
                _ => {}
            }
        }
    }

    fn leads(&self) -> bool {
        self.0.store.leadership().is_none_or(|leading| *leading.borrow())
    }

    /// The environment's current envelope, signed; `None` without a secret or environment.
    pub fn current_envelope(&self, environment: &str) -> Option<Envelope> {
        let secret = self.0.secret.as_deref()?;
        let snapshot = self.0.publisher.current(environment)?;
        let (readers_revision, readers) = self.0.tokens.readers(environment);
        let body: Bytes = envelope(
            environment,
            snapshot.version(),
            readers_revision,
            &readers,
            &snapshot.published.json,
        )
        .into();
        let signature = sign(secret, &body);
        Some(Envelope { body, signature, position: (snapshot.version(), readers_revision) })
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (EdgeRecord, Option<AbortHandle>)>> {
        self.0.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn push_loop(edges: Edges, edge: EdgeRecord) {
    let mut changes = edges.0.publisher.changes();
    let mut acknowledged = edge.applied_version.zip(edge.applied_readers_revision);
    let mut backoff = MIN_BACKOFF;
    loop {
        changes.mark_unchanged();
        let pending = edges
            .current_envelope(&edge.environment)
            .filter(|envelope| acknowledged.is_none_or(|have| have != envelope.position));
        if let Some(envelope) = pending {
            let outcome = push(&edges, &edge, &envelope).await;
            let failed = matches!(outcome, PushOutcome::Failed(_));
            if failed {
                tracing::warn!(edge = %edge.name, "push failed; retrying in {backoff:?}");
            } else {
                acknowledged = Some(envelope.position);
                backoff = MIN_BACKOFF;
            }
            if let Err(error) = edges.record(&edge.name, outcome).await {
                tracing::error!(edge = %edge.name, %error, "recording a push");
            }
            if failed {
                // Retry after the backoff, or at once if something newer comes first.
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    changed = changes.changed() => if changed.is_err() { return },
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn push(edges: &Edges, edge: &EdgeRecord, envelope: &Envelope) -> PushOutcome {
    let url = format!("{}/rollgate/v1/push", edge.url);
    // The allowed ranges may have changed since the edge was registered.
    if let Err(refusal) = edges.0.targets.check_url("url", &url) {
        return PushOutcome::Failed(format!("the edge is not reached: {refusal}"));
    }
    let request = edges
        .0
        .client
        .post(url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, &envelope.signature)
        .body(envelope.body.clone());
    let (version, readers_revision) = envelope.position;
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            let error = outbound::failure(error);
            tracing::warn!(edge = %edge.name, %error, "could not reach the edge");
            return PushOutcome::Failed(format!("the edge is not reached: {error}"));
        }
    };
    let status = response.status();
    if status.is_success() {
        return PushOutcome::Acknowledged { version, readers_revision };
    }
    let answer = outbound::read_limited(response, ANSWER_LIMIT).await;
    let refusal = serde_json::from_slice::<RefusalAnswer>(&answer);
    // The edge already has this or something newer (as after a leader change): nothing to retry.
    if matches!(&refusal, Ok(refusal) if refusal.refusal == RefusalKind::Stale) {
        tracing::debug!(edge = %edge.name, "the edge has this version already");
        return PushOutcome::Acknowledged { version, readers_revision };
    }
    // Its status is logged; what it says is kept (an excerpt), never logged.
    tracing::warn!(edge = %edge.name, %status, "the edge refused a push");
    match refusal {
        Ok(refusal) => PushOutcome::Failed(format!(
            "the edge answered {status}: {:?}, {}",
            refusal.refusal,
            outbound::excerpt(&refusal.detail, ERROR_EXCERPT)
        )),
        Err(_) => PushOutcome::Failed(format!(
            "the edge answered {status}: {}",
            outbound::excerpt(&String::from_utf8_lossy(&answer), ERROR_EXCERPT)
        )),
    }
}

impl Edges {
    /// Records what an edge acknowledged, or why a push to it failed: the control plane's own
    /// bookkeeping, not audited.
    async fn record(&self, name: &str, outcome: PushOutcome) -> Result<(), StoreError> {
        let (name, now) = (name.to_owned(), self.0.clock.timestamp());
        store::write(self.0.store.as_ref(), move |tx| {
            Box::pin(async move {
                tx.record_push(&name, &outcome, now).await?;
                Ok(Committed::alone(()))
            })
        })
        .await
    }
}
