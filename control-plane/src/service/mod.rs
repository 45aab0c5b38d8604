//! The change path: one function per change (flags, segments, states, rollouts, kills,
//! environments, tokens, edges, webhooks, metrics, plan actions and the scheduler's
//! transitions), and the reads the API needs.
//!
//! Every change is one store transaction. Its work checks the domain's rules, writes, and
//! names its `Effects`: the snapshots it published, the tokens and edges it added or removed,
//! the tasks to wake. The store applies those effects to the in-memory copies right after the
//! commit, in commit order, whether or not the request that asked for the change still waits.
//! So a handler can be cancelled at any `.await` without losing anything that committed, and
//! no handler does work after a commit.

pub mod audit;
pub mod edges;
pub mod environments;
pub mod flags;
pub mod metrics;
pub mod plans;
pub mod segments;
pub mod snapshots;
pub mod tokens;
pub mod webhooks;

use std::ops::Deref;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::auth::{Readers, Tokens};
use crate::clock::Clock;
use crate::edges::Edges;
use crate::model::Refusal;
use crate::model::edge::EdgeRecord;
use crate::model::flag::Published;
use crate::model::time::Timestamp;
use crate::outbound::Targets;
use crate::publisher::Publisher;
use crate::store::{self, Committed, Store, StoreError, Tx};

/// Why a change or a read did not happen: the request was refused, or storage failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// A refusal's snapshot path made relative to `prefix`; see `Refusal::relative_to`.
    pub fn relative_to(self, prefix: &str) -> Self {
        match self {
            Self::Refused(refusal) => Self::Refused(refusal.relative_to(prefix)),
            other => other,
        }
    }
}

/// The store and the in-memory copies every commit keeps current. Cloned cheaply.
#[derive(Clone)]
pub struct Service(Arc<Inner>);

pub struct Inner {
    store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Each environment's current snapshot and its recent versions.
    pub publisher: Publisher,
    /// Every token, for authentication.
    pub tokens: Tokens,
    /// The edges' push tasks.
    pub edges: Edges,
    /// Which addresses edges and webhooks may be at.
    pub targets: Targets,
    /// Makes the plan scheduler run now, e.g. when metrics arrive.
    scheduler: Notify,
    /// Makes the webhook sender look for new notifications now.
    deliveries: Arc<Notify>,
}

impl Deref for Service {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// What a committed change means for the in-memory copies.
#[derive(Default)]
pub(crate) struct Effects {
    published: Vec<Published>,
    /// Who may read at a readers revision, after a change of tokens or allowed origins.
    readers: Option<(u64, Readers)>,
    edges_added: Vec<EdgeRecord>,
    edges_removed: Vec<String>,
    /// The outbox has new notifications.
    notified: bool,
    /// Metrics arrived: guardrails may have something to say.
    measured: bool,
}

impl Effects {
    fn publish(&mut self, published: Published) {
        self.published.push(published);
    }

    /// After a change of tokens or allowed origins: bumps the readers revision, and takes who
    /// may read as of it.
    async fn readers(&mut self, tx: &mut dyn Tx) -> Result<(), Error> {
        let revision = tx.bump_readers_revision().await?;
        self.readers = Some((revision, readers(tx).await?));
        Ok(())
    }

    /// What other processes committed that this one has not applied yet: their snapshots,
    /// to publish before this change's, and their tokens.
    async fn missed(&mut self, tx: &mut dyn Tx, service: &Service) -> Result<(), Error> {
        for environment in tx.environments().await? {
            let known = service.publisher.current(&environment.name).map_or(0, |c| c.version());
            if environment.version > known {
                let missed = snapshots::published_after(tx, &environment.name, known).await?;
                self.published.extend(missed);
            }
        }
        let revision = tx.readers_revision().await?;
        if revision > service.tokens.revision() {
            self.readers = Some((revision, readers(tx).await?));
        }
        Ok(())
    }
}

impl Service {
    /// A service for `store`: every environment's snapshot and every token loaded into memory,
    /// the default environments created on first start, and a push task per registered edge.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        push_secret: Option<Vec<u8>>,
        targets: Targets,
    ) -> Result<Self, Error> {
        let publisher = Publisher::default();
        let tokens = Tokens::default();
        let edges = Edges::new(
            push_secret,
            targets.clone(),
            store.clone(),
            clock.clone(),
            publisher.clone(),
            tokens.clone(),
        );
        let service = Self(Arc::new(Inner {
            store,
            clock,
            publisher,
            tokens,
            edges,
            targets,
            scheduler: Notify::new(),
            deliveries: Arc::new(Notify::new()),
        }));
        environments::create_defaults(&service).await?;
        let (snapshots, tokens, readers_revision, edges) = service
            .read(|tx| {
                Box::pin(async move {
                    // The kept versions too, so that a subscriber coming from another
                    // replica (or from before a restart) resumes here without a gap.
                    let mut snapshots = Vec::new();
                    for environment in tx.environments().await? {
                        let kept = snapshots::published_after(tx, &environment.name, 0).await?;
                        let newest = kept.last().map(|published| published.version);
                        snapshots.extend(kept);
                        // A store from before snapshots were kept has none of them.
                        if newest != Some(environment.version) {
                            snapshots.push(snapshots::current(tx, &environment.name).await?);
                        }
                    }
                    Ok((
                        snapshots,
                        readers(tx).await?,
                        tx.readers_revision().await?,
                        tx.edges().await?,
                    ))
                })
            })
            .await?;
        service.publisher.publish_all(snapshots);
        service.tokens.replace_all(readers_revision, tokens);
        for edge in edges {
            service.edges.start(edge);
        }
        if let Some(commits) = service.store.commits() {
            tokio::spawn(follow(Arc::downgrade(&service.0), commits));
        }
        if let Some(leadership) = service.store.leadership() {
            tokio::spawn(lead(Arc::downgrade(&service.0), leadership));
        }
        Ok(service)
    }

    /// Whether this process runs what must run once: the plan scheduler, edge pushes and
    /// webhook deliveries. Always, unless other processes serve the same database.
    pub fn leads(&self) -> bool {
        self.store.leadership().is_none_or(|leading| *leading.borrow())
    }

    /// Applies what other processes committed since this one last looked: every snapshot
    /// version it has not published, in order, and the tokens if they changed.
    pub async fn catch_up(&self) -> Result<(), Error> {
        let service = self.clone();
        let (effects, edges) = self
            .read(move |tx| {
                Box::pin(async move {
                    let mut effects = Effects::default();
                    effects.missed(tx, &service).await?;
                    Ok((effects, tx.edges().await?))
                })
            })
            .await?;
        self.apply(effects);
        self.edges.sync(edges);
        // Another process may have queued notifications for the leading one to send.
        self.deliveries.notify_one();
        Ok(())
    }

    /// The store answers.
    pub async fn ready(&self) -> Result<(), Error> {
        self.read(|tx| Box::pin(async move { Ok(tx.environments().await.map(drop)?) })).await
    }

    /// Wakes the webhook sender.
    pub fn deliveries(&self) -> Arc<Notify> {
        Arc::clone(&self.deliveries)
    }

    /// The store, for the tasks that keep their own books (edge acknowledgements, webhook
    /// attempts).
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Runs `work` as one write transaction at `now`; once it commits, its effects are applied.
    async fn change<T, W>(&self, work: W) -> Result<T, Error>
    where
        T: Send + 'static,
        W: for<'t> FnOnce(
                &'t mut dyn Tx,
                Timestamp,
                &'t mut Effects,
            ) -> BoxFuture<'t, Result<T, Error>>
            + Send
            + 'static,
    {
        let service = self.clone();
        store::write(self.store.as_ref(), move |tx| {
            Box::pin(async move {
                let now = service.clock.timestamp();
                let mut effects = Effects::default();
                // Writes are serialized across processes: what others committed is all in.
                // A store no other process writes has nothing to miss.
                if service.store.commits().is_some() {
                    effects.missed(tx, &service).await?;
                }
                let value = work(tx, now, &mut effects).await?;
                let after = Box::new(move || service.apply(effects));
                Ok(Committed { value, after })
            })
        })
        .await
    }

    /// Runs `work` as one read transaction.
    async fn read<T, W>(&self, work: W) -> Result<T, Error>
    where
        T: Send + 'static,
        W: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, Error>> + Send + 'static,
    {
        store::read(self.store.as_ref(), work).await
    }

    /// Brings the in-memory copies up to a commit. Runs right after it, in commit order.
    fn apply(&self, effects: Effects) {
        let Effects { published, readers, edges_added, edges_removed, notified, measured } =
            effects;
        self.publisher.publish_all(published);
        if let Some((revision, readers)) = readers {
            // Also ends every stream opened with a token now gone.
            self.tokens.replace_all(revision, readers);
            // Edges get the new set of readers.
            self.publisher.nudge();
        }
        for edge in edges_added {
            self.edges.start(edge);
        }
        for name in edges_removed {
            self.edges.stop(&name);
        }
        if notified {
            self.deliveries.notify_one();
        }
        if measured {
            self.scheduler.notify_one();
        }
    }
}

/// Who may read, as stored: every token, and each environment's allowed origins.
async fn readers(tx: &mut dyn Tx) -> Result<Readers, Error> {
    let tokens = tx.tokens().await?.into_iter().map(|stored| stored.token).collect();
    let allowed_origins = tx
        .environments()
        .await?
        .into_iter()
        .map(|environment| (environment.name, environment.allowed_origins))
        .collect();
    Ok(Readers { tokens, allowed_origins })
}

/// Catches up each time another process commits, for as long as the service lives.
async fn follow(service: std::sync::Weak<Inner>, commits: Arc<Notify>) {
    loop {
        commits.notified().await;
        let Some(inner) = service.upgrade() else { return };
        if let Err(error) = Service(inner).catch_up().await {
            tracing::warn!(%error, "catching up with other processes' commits");
            // Try again shortly: the permit makes the next `notified` return at once.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            commits.notify_one();
        }
    }
}

/// Starts and stops the edge pushes as this process gains and loses the lead, for as long as
/// the service lives.
async fn lead(service: std::sync::Weak<Inner>, mut leadership: tokio::sync::watch::Receiver<bool>) {
    loop {
        let leading = *leadership.borrow_and_update();
        let Some(inner) = service.upgrade() else { return };
        inner.edges.lead(leading);
        drop(inner);
        if leadership.changed().await.is_err() {
            return;
        }
    }
}
