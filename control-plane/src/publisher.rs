//! The current snapshot of every environment, held in memory so reads never touch the store,
//! and the stream of new versions that subscribers follow.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use crate::store::{Published, Store, StoreError};

/// Recent versions kept per environment, so a subscriber that reconnects with `Last-Event-ID`
/// gets exactly the versions it missed. One further behind gets the current snapshot, which
/// holds every change: a snapshot is the whole state, never a delta.
const RECENT_VERSIONS: usize = 64;

/// A published snapshot as the API serves it.
#[derive(Debug)]
pub struct Current {
    pub published: Published,
    /// `"<version>"`, the snapshot's ETag.
    pub etag: String,
    /// The Server-Sent Events frame carrying it, rendered once for every subscriber.
    pub event: Bytes,
}

impl Current {
    fn new(published: Published) -> Self {
        let version = published.version;
        let mut event = Vec::with_capacity(published.json.len() + 48);
        event.extend_from_slice(format!("id: {version}\nevent: snapshot\ndata: ").as_bytes());
        // serde_json writes no newlines, so the document fits one `data:` line.
        event.extend_from_slice(&published.json);
        event.extend_from_slice(b"\n\n");
        Self { etag: format!("\"{version}\""), event: event.into(), published }
    }

    pub fn version(&self) -> u64 {
        self.published.version
    }
}

#[derive(Clone)]
pub struct Publisher {
    environments: Arc<RwLock<HashMap<String, Channel>>>,
    /// Counts every new version, and every other change edges must hear of (token changes).
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self { environments: Arc::default(), changes: Arc::new(watch::channel(0).0) }
    }
}

struct Channel {
    /// Oldest first; the last is current.
    recent: VecDeque<Arc<Current>>,
    sender: broadcast::Sender<Arc<Current>>,
}

/// What a new subscriber gets: the versions it has not seen yet, then every new one.
pub struct Subscription {
    pub backlog: Vec<Arc<Current>>,
    pub receiver: broadcast::Receiver<Arc<Current>>,
}

impl Publisher {
    /// Loads every environment's snapshot from the store.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let publisher = Self::default();
        for environment in store.environments().await? {
            publisher.publish(store.snapshot(&environment.name).await?);
        }
        Ok(publisher)
    }

    /// Makes `snapshot` current and sends it to subscribers, unless a newer version already is.
    pub fn publish(&self, snapshot: Published) {
        let mut environments = self.write();
        let channel = environments.entry(snapshot.environment.clone()).or_insert_with(|| Channel {
            recent: VecDeque::with_capacity(RECENT_VERSIONS),
            sender: broadcast::channel(RECENT_VERSIONS).0,
        });
        if channel.recent.back().is_some_and(|current| current.version() >= snapshot.version) {
            return;
        }
        let current = Arc::new(Current::new(snapshot));
        if channel.recent.len() == RECENT_VERSIONS {
            channel.recent.pop_front();
        }
        channel.recent.push_back(Arc::clone(&current));
        // No receivers is not an error: nobody is subscribed.
        let _ = channel.sender.send(current);
        drop(environments);
        self.nudge();
    }

    /// Tells edge pushers that something they send changed.
    pub fn nudge(&self) {
        self.changes.send_modify(|count| *count += 1);
    }

    /// Wakes on every `nudge` (and so every new version).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Publishes each snapshot.
    pub fn publish_all(&self, snapshots: impl IntoIterator<Item = Published>) {
        for snapshot in snapshots {
            self.publish(snapshot);
        }
    }

    /// The current snapshot of an environment.
    pub fn current(&self, environment: &str) -> Option<Arc<Current>> {
        self.read().get(environment).and_then(|channel| channel.recent.back().cloned())
    }

    /// Every environment's name.
    pub fn environments(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Follows an environment from the version after `seen` (from the current one without
    /// `seen`). Taken under the publishing lock, so nothing falls between backlog and receiver.
    pub fn subscribe(&self, environment: &str, seen: Option<u64>) -> Option<Subscription> {
        let environments = self.read();
        let channel = environments.get(environment)?;
        let current = channel.recent.back()?;
        let backlog = match seen {
            Some(seen) if seen == current.version() => Vec::new(),
            Some(seen)
                if channel.recent.front().is_some_and(|oldest| oldest.version() <= seen + 1)
                    && seen < current.version() =>
            {
                channel.recent.iter().filter(|c| c.version() > seen).cloned().collect()
            }
            _ => vec![Arc::clone(current)],
        };
        Some(Subscription { backlog, receiver: channel.sender.subscribe() })
    }

    /// Ends every subscription, so open streams finish and the server can shut down.
    pub fn close(&self) {
        self.write().clear();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Channel>> {
        self.environments.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Channel>> {
        self.environments.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
