//! Pushing configurations to edges. Each registered edge has a task that, whenever its
//! environment's snapshot or the set of tokens changes, posts the newest signed envelope to the
//! edge, retrying with exponential backoff until the edge acknowledges it. A newer change
//! replaces a push still being retried: an edge only ever needs the latest envelope.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edge_worker::config::{SIGNATURE_HEADER, envelope, sign};
use tokio::task::AbortHandle;

use crate::AppState;
use crate::store::{EdgeRecord, PushOutcome};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A signed envelope and its position (version, readers revision).
pub struct Envelope {
    pub body: Bytes,
    pub signature: String,
    pub position: (u64, u64),
}

/// The edges' push tasks, and the secret they sign with.
#[derive(Clone)]
pub struct Edges {
    secret: Option<Arc<[u8]>>,
    client: reqwest::Client,
    tasks: Arc<Mutex<HashMap<String, AbortHandle>>>,
}

impl Edges {
    /// Without a secret, edges cannot be registered or fed.
    pub fn new(secret: Option<Vec<u8>>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(PUSH_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .expect("a plain HTTP client always builds");
        Self { secret: secret.map(Into::into), client, tasks: Arc::default() }
    }

    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Starts pushing to every registered edge.
    pub async fn start_all(state: &AppState) -> Result<(), crate::store::StoreError> {
        for edge in state.store.edges().await? {
            state.edges.start(state, edge);
        }
        Ok(())
    }

    /// Starts (or restarts) pushing to `edge`.
    pub fn start(&self, state: &AppState, edge: EdgeRecord) {
        let name = edge.name.clone();
        let task = tokio::spawn(push_loop(state.clone(), edge)).abort_handle();
        if let Some(previous) = self.lock().insert(name, task) {
            previous.abort();
        }
    }

    /// Stops pushing to the edge named `name`.
    pub fn stop(&self, name: &str) {
        if let Some(task) = self.lock().remove(name) {
            task.abort();
        }
    }

    /// Stops every push task (at shutdown).
    pub fn stop_all(&self) {
        for (_, task) in self.lock().drain() {
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortHandle>> {
        self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The environment's current envelope, signed; `None` without a secret or environment.
pub fn current_envelope(state: &AppState, environment: &str) -> Option<Envelope> {
    let secret = state.edges.secret.as_deref()?;
    let snapshot = state.publisher.current(environment)?;
    let (readers_revision, readers) = state.tokens.readers(environment);
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

async fn push_loop(state: AppState, edge: EdgeRecord) {
    let mut changes = state.publisher.changes();
    let mut acknowledged = edge.applied_version.zip(edge.applied_readers_revision);
    let mut backoff = MIN_BACKOFF;
    loop {
        changes.mark_unchanged();
        let pending = current_envelope(&state, &edge.environment)
            .filter(|envelope| acknowledged.is_none_or(|have| have != envelope.position));
        if let Some(envelope) = pending {
            let outcome = push(&state, &edge, &envelope).await;
            let failed = matches!(outcome, PushOutcome::Failed(_));
            if let PushOutcome::Failed(error) = &outcome {
                tracing::warn!(edge = %edge.name, %error, "push failed; retrying in {backoff:?}");
            } else {
                acknowledged = Some(envelope.position);
                backoff = MIN_BACKOFF;
            }
            if let Err(error) = state.store.record_push(&edge.name, outcome).await {
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

async fn push(state: &AppState, edge: &EdgeRecord, envelope: &Envelope) -> PushOutcome {
    let request = state
        .edges
        .client
        .post(format!("{}/rollgate/v1/push", edge.url))
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, &envelope.signature)
        .body(envelope.body.clone());
    let (version, readers_revision) = envelope.position;
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            PushOutcome::Acknowledged { version, readers_revision }
        }
        Ok(response) => {
            let status = response.status();
            let detail = response.text().await.unwrap_or_default();
            // The edge already has this or something newer: nothing to retry.
            if status.as_u16() == 422 && detail.contains("stale") {
                return PushOutcome::Acknowledged { version, readers_revision };
            }
            PushOutcome::Failed(format!("the edge answered {status}: {detail}"))
        }
        Err(error) => PushOutcome::Failed(format!("could not reach the edge: {error}")),
    }
}
