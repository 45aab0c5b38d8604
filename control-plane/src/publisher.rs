//! The current snapshot of every environment, held in memory so reads never touch the store,
//! and the recent versions that stream subscribers follow.
//!
//! Versions arrive in commit order, one by one. A subscriber keeps only its place (the last
//! version it sent) and takes the next version from here when it is ready for it, so a slow
//! subscriber holds up neither the writer nor any other subscriber. One that falls behind the
//! versions kept here skips to the current one: each snapshot holds the whole state.
//!
//! A new version wakes its subscribers a few at a time, about `FAN_OUT_BYTES` of events per
//! batch, yielding between batches: sending a large snapshot to thousands of streams is real
//! work, and a writer's request (a kill, say) must not wait in line behind all of it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use bytes::Bytes;
use tokio::sync::{Notify, watch};

use crate::model::flag::Published;

/// Recent versions kept per environment, so a subscriber that reconnects with `Last-Event-ID`,
/// or that fell a little behind, gets exactly the versions it missed: at most this many, and
/// at most `RECENT_BYTES` of their events (the newest is always kept).
pub const RECENT_VERSIONS: usize = 4096;
pub const RECENT_BYTES: usize = 32 << 20;

/// About how many bytes of events the subscribers woken at a time will send, before other
/// tasks get a turn: one large snapshot, or a few dozen small ones.
const FAN_OUT_BYTES: usize = 256 << 10;

/// A published snapshot as the API serves it.
#[derive(Debug)]
pub struct Current {
    /// Its `json` shares the event's bytes.
    pub published: Published,
    /// `"<version>"`, the snapshot's ETag.
    pub etag: String,
    /// The Server-Sent Events frame carrying it, rendered once for every subscriber.
    pub event: Bytes,
}

impl Current {
    fn new(mut published: Published) -> Self {
        let version = published.version;
        let head = format!("id: {version}\nevent: snapshot\ndata: ");
        let mut event = Vec::with_capacity(head.len() + published.json.len() + 2);
        event.extend_from_slice(head.as_bytes());
        // serde_json writes no newlines, so the document fits one `data:` line.
        event.extend_from_slice(&published.json);
        event.extend_from_slice(b"\n\n");
        let event = Bytes::from(event);
        published.json = event.slice(head.len()..event.len() - 2);
        Self { etag: format!("\"{version}\""), event, published }
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
    /// The task that wakes subscribers, started with the first subscription.
    fan_out: Arc<OnceLock<()>>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self {
            environments: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
            fan_out: Arc::default(),
        }
    }
}

type Environments = RwLock<HashMap<String, Channel>>;

struct Channel {
    current: Arc<Current>,
    /// Contiguous versions' events, oldest first; the last is current's.
    recent: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Each open subscription's wake-up.
    subscribers: Vec<Weak<Notify>>,
    /// The version subscribers were last woken for.
    announced: u64,
}

impl Channel {
    /// The event to send after `sent`: the next version, or the current one for a subscriber
    /// that fell behind the versions kept. `None` when `sent` is current.
    fn after(&self, sent: u64) -> Option<(u64, Bytes)> {
        let current = self.current.version();
        if sent >= current {
            return None;
        }
        let oldest = self.recent.front().map_or(current, |(version, _)| *version);
        if sent + 1 < oldest {
            return Some((current, self.current.event.clone()));
        }
        usize::try_from(sent + 1 - oldest).ok().and_then(|index| self.recent.get(index).cloned())
    }
}

/// A subscriber's place in an environment's versions.
pub struct Subscription {
    publisher: Publisher,
    environment: String,
    /// The last version sent: nothing at or below it is sent again.
    sent: u64,
    /// Notified when there may be a newer version (or the publisher closed).
    wake: Arc<Notify>,
}

impl Subscription {
    /// The next version's event, once there is one. `None`: the publisher closed (shutdown).
    /// Cancel-safe: waiting can be abandoned and resumed without losing a version.
    pub async fn next(&mut self) -> Option<(u64, Bytes)> {
        loop {
            let next = self.publisher.read().get(&self.environment)?.after(self.sent);
            if let Some((version, event)) = next {
                self.sent = version;
                return Some((version, event));
            }
            // A wake-up between the look and here is kept as a permit: none is lost.
            self.wake.notified().await;
        }
    }
}

impl Publisher {
    /// Makes `snapshot` current and wakes its subscribers, unless a newer version already is.
    /// A version that does not follow the current one (after a restore, say) starts the kept
    /// versions afresh, so no resumption spans the gap.
    pub fn publish(&self, snapshot: Published) {
        let mut environments = self.write();
        let current = Arc::new(Current::new(snapshot));
        let version = current.version();
        let event = current.event.clone();
        match environments.get_mut(&current.published.environment) {
            Some(channel) => {
                let last = channel.current.version();
                if last >= version {
                    return;
                }
                if last + 1 != version {
                    channel.recent.clear();
                    channel.bytes = 0;
                }
                channel.current = current;
                channel.bytes += event.len();
                channel.recent.push_back((version, event));
                while channel.recent.len() > RECENT_VERSIONS
                    || (channel.bytes > RECENT_BYTES && channel.recent.len() > 1)
                {
                    if let Some((_, dropped)) = channel.recent.pop_front() {
                        channel.bytes -= dropped.len();
                    }
                }
            }
            None => {
                let environment = current.published.environment.clone();
                let channel = Channel {
                    bytes: event.len(),
                    recent: VecDeque::from([(version, event)]),
                    current,
                    subscribers: Vec::new(),
                    announced: version,
                };
                environments.insert(environment, channel);
            }
        }
        drop(environments);
        self.nudge();
    }

    /// Publishes each snapshot, in order.
    pub fn publish_all(&self, snapshots: impl IntoIterator<Item = Published>) {
        for snapshot in snapshots {
            self.publish(snapshot);
        }
    }

    /// Tells edge pushers (and the subscribers' fan-out) that something they send changed.
    pub fn nudge(&self) {
        self.changes.send_modify(|count| *count += 1);
    }

    /// Wakes on every `nudge` (and so every new version).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The current snapshot of an environment.
    pub fn current(&self, environment: &str) -> Option<Arc<Current>> {
        self.read().get(environment).map(|channel| Arc::clone(&channel.current))
    }

    /// Every environment's name.
    pub fn environments(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Follows an environment from the version after `seen` if it is still kept (a client
    /// resuming with `Last-Event-ID`), else from the current version.
    /// Call it inside a tokio runtime: the first subscription starts the fan-out task.
    pub fn subscribe(&self, environment: &str, seen: Option<u64>) -> Option<Subscription> {
        self.fan_out.get_or_init(|| {
            let environments = Arc::downgrade(&self.environments);
            tokio::spawn(fan_out(environments, self.changes.subscribe()));
        });
        let mut environments = self.write();
        let channel = environments.get_mut(environment)?;
        let current = channel.current.version();
        let oldest = channel.recent.front().map_or(current, |(version, _)| *version);
        let sent = match seen {
            Some(seen) if seen <= current && seen + 1 >= oldest => seen,
            _ => current.saturating_sub(1),
        };
        let wake = Arc::new(Notify::new());
        if channel.subscribers.len() == channel.subscribers.capacity() {
            // Before growing, forget the subscriptions that ended: amortized, a constant cost.
            channel.subscribers.retain(|subscriber| subscriber.strong_count() > 0);
        }
        channel.subscribers.push(Arc::downgrade(&wake));
        Some(Subscription {
            publisher: self.clone(),
            environment: environment.to_owned(),
            sent,
            wake,
        })
    }

    /// Ends every subscription, so open streams finish and the server can shut down.
    pub fn close(&self) {
        let closed: Vec<Channel> = self.write().drain().map(|(_, channel)| channel).collect();
        for subscriber in closed.iter().flat_map(|channel| &channel.subscribers) {
            if let Some(wake) = subscriber.upgrade() {
                wake.notify_one();
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Channel>> {
        read(&self.environments)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Channel>> {
        write(&self.environments)
    }
}

/// Wakes the subscribers of every environment with a new version, a batch at a time, until
/// the publisher is gone.
async fn fan_out(environments: Weak<Environments>, mut changes: watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        let Some(environments) = environments.upgrade() else { return };
        let mut due = Vec::new();
        for channel in write(&environments).values_mut() {
            channel.subscribers.retain(|subscriber| subscriber.strong_count() > 0);
            if channel.current.version() > channel.announced {
                channel.announced = channel.current.version();
                let batch = (FAN_OUT_BYTES / channel.current.event.len()).max(1);
                let subscribers: Vec<_> =
                    channel.subscribers.iter().filter_map(Weak::upgrade).collect();
                due.push((batch, subscribers));
            }
        }
        drop(environments);
        for (batch, subscribers) in due {
            for subscribers in subscribers.chunks(batch) {
                subscribers.iter().for_each(|subscriber| subscriber.notify_one());
                tokio::task::yield_now().await;
            }
        }
    }
}

fn read(environments: &Environments) -> std::sync::RwLockReadGuard<'_, HashMap<String, Channel>> {
    environments.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(environments: &Environments) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Channel>> {
    environments.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn published(version: u64, padding: usize) -> Published {
        let json = format!(
            r#"{{"schema":1,"environment":"production","version":{version},"flags":[],"pad":"{}"}}"#,
            "x".repeat(padding)
        );
        let engine = flag_core::Engine::from_json(
            br#"{"schema":1,"environment":"production","version":1,"flags":[]}"#,
        )
        .unwrap();
        Published {
            environment: "production".into(),
            version,
            json: json.into(),
            engine: Arc::new(engine),
        }
    }

    /// The versions a subscription has ready now, without waiting.
    fn ready(subscription: &mut Subscription) -> Vec<u64> {
        std::iter::from_fn(|| subscription.next().now_or_never().flatten())
            .map(|(version, _)| version)
            .collect()
    }

    #[tokio::test]
    async fn a_subscriber_gets_every_version_once_in_order() {
        let publisher = Publisher::default();
        publisher.publish(published(1, 0));
        let mut subscription = publisher.subscribe("production", None).unwrap();
        assert_eq!(ready(&mut subscription), [1], "the current version first");
        publisher.publish_all((2..=5).map(|version| published(version, 0)));
        publisher.publish(published(4, 0));
        assert_eq!(ready(&mut subscription), [2, 3, 4, 5], "an older version is ignored");
        let (_, event) = publisher
            .subscribe("production", Some(4))
            .unwrap()
            .next()
            .now_or_never()
            .flatten()
            .unwrap();
        assert!(event.starts_with(b"id: 5\nevent: snapshot\ndata: {"));
        assert_eq!(publisher.current("production").unwrap().published.json, published(5, 0).json);
    }

    #[tokio::test]
    async fn resumption_is_exact_within_the_window_and_current_outside_it() {
        let publisher = Publisher::default();
        let last = RECENT_VERSIONS as u64 + 10;
        publisher.publish_all((1..=last).map(|version| published(version, 0)));
        let from = |seen| ready(&mut publisher.subscribe("production", Some(seen)).unwrap());
        assert_eq!(from(last - 3), [last - 2, last - 1, last]);
        let oldest = last - RECENT_VERSIONS as u64 + 1;
        assert_eq!(from(oldest - 1).len(), RECENT_VERSIONS, "the whole window");
        assert_eq!(from(oldest - 2), [last], "behind the window: the current one");
        assert_eq!(from(last + 5), [last], "from the future: the current one");
        assert_eq!(from(last), Vec::<u64>::new());
    }

    #[tokio::test]
    async fn the_window_keeps_to_its_bytes_and_a_lagging_subscriber_skips_to_the_current() {
        let publisher = Publisher::default();
        publisher.publish(published(1, 0));
        let mut lagging = publisher.subscribe("production", None).unwrap();
        assert_eq!(ready(&mut lagging), [1]);
        let big = RECENT_BYTES / 4;
        publisher.publish_all((2..=9).map(|version| published(version, big)));
        let kept = publisher.read()["production"].recent.len();
        assert_eq!(kept, 3, "versions of a quarter of the budget each, and a little more");
        assert_eq!(ready(&mut lagging), [9], "fell behind: skips to the current version");
    }

    #[tokio::test]
    async fn a_gap_in_versions_starts_the_window_afresh() {
        let publisher = Publisher::default();
        publisher.publish_all((1..=3).map(|version| published(version, 0)));
        publisher.publish(published(10, 0));
        let mut resumed = publisher.subscribe("production", Some(2)).unwrap();
        assert_eq!(ready(&mut resumed), [10], "3 to 10 cannot be resumed across the gap");
    }

    #[tokio::test]
    async fn closing_ends_every_subscription() {
        let publisher = Publisher::default();
        publisher.publish(published(1, 0));
        let mut subscription = publisher.subscribe("production", Some(1)).unwrap();
        let mut waiting = Box::pin(subscription.next());
        assert!((&mut waiting).now_or_never().is_none(), "up to date: it waits");
        publisher.close();
        assert_eq!(waiting.now_or_never(), Some(None));
    }

    #[tokio::test]
    async fn a_new_version_wakes_every_waiting_subscriber() {
        let publisher = Publisher::default();
        publisher.publish(published(1, 0));
        let waiting: Vec<_> = (0..100)
            .map(|_| {
                let mut subscription = publisher.subscribe("production", Some(1)).unwrap();
                tokio::spawn(async move { subscription.next().await.map(|(version, _)| version) })
            })
            .collect();
        tokio::task::yield_now().await;
        publisher.publish(published(2, 0));
        for subscriber in waiting {
            let woken = tokio::time::timeout(std::time::Duration::from_secs(10), subscriber);
            assert_eq!(woken.await.unwrap().unwrap(), Some(2));
        }
    }
}
