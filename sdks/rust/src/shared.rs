//! What the evaluation path, the sync task and the app's handle share: the engine, the
//! provider's status and its events, and the counts waiting to be reported.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use flag_core::Engine;
use open_feature::provider::ProviderStatus;
use tokio::sync::{Notify, broadcast, watch};

use crate::metrics::Counts;

/// OpenFeature's provider events (specification, section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderEventKind {
    /// The provider has a snapshot and its source is reachable.
    Ready,
    /// A new snapshot is served; `flags_changed` names the flags whose answers may differ.
    ConfigurationChanged,
    /// The control plane cannot be reached: the last snapshot is served, and may be outdated.
    Stale,
    /// A snapshot arrived that flag-core refused; the last good one is still served.
    Error,
}

impl ProviderEventKind {
    /// The specification's name, e.g. `PROVIDER_READY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "PROVIDER_READY",
            Self::ConfigurationChanged => "PROVIDER_CONFIGURATION_CHANGED",
            Self::Stale => "PROVIDER_STALE",
            Self::Error => "PROVIDER_ERROR",
        }
    }
}

/// One provider event with its details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    pub kind: ProviderEventKind,
    /// For `ConfigurationChanged`: the keys of added, removed and changed flags, and of flags
    /// that depend on them (through segments or prerequisites).
    pub flags_changed: Vec<String>,
    /// Why, in words: the error, the lost connection.
    pub message: Option<String>,
    /// The snapshot version served after the event, if any.
    pub version: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    NotReady,
    Ready,
    Stale,
    Error,
}

pub(crate) struct Shared {
    pub(crate) engine: ArcSwapOption<Engine>,
    status: Mutex<Status>,
    events: broadcast::Sender<ProviderEvent>,
    /// Woken when a first snapshot is served, for `initialize`.
    pub(crate) served: Notify,
    pub(crate) counts: Counts,
    /// Woken to report counts now (`flush`), and to stop the tasks.
    pub(crate) flush: Notify,
    pub(crate) stop: Stop,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            engine: ArcSwapOption::empty(),
            status: Mutex::new(Status::NotReady),
            events: broadcast::channel(256).0,
            served: Notify::new(),
            counts: Counts::default(),
            flush: Notify::new(),
            stop: Stop::default(),
        }
    }

    pub(crate) fn status(&self) -> Status {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, kind: ProviderEventKind, flags_changed: Vec<String>, message: Option<String>) {
        let version = self.engine.load().as_ref().map(|engine| engine.version());
        // No subscriber is not an error.
        let _ = self.events.send(ProviderEvent { kind, flags_changed, message, version });
    }

    /// Moves to `to`; an event is sent only when the status changes, as the specification asks.
    fn move_to(&self, to: Status, message: Option<String>) {
        let from =
            std::mem::replace(&mut *self.status.lock().unwrap_or_else(PoisonError::into_inner), to);
        if from == to {
            return;
        }
        let kind = match to {
            Status::Ready => ProviderEventKind::Ready,
            Status::Stale => ProviderEventKind::Stale,
            Status::Error => ProviderEventKind::Error,
            Status::NotReady => return,
        };
        self.emit(kind, Vec::new(), message);
    }

    /// Serves `engine`; `changed` are the flags whose answers may differ from the last one's.
    pub(crate) fn install(&self, engine: Engine, changed: Option<Vec<String>>) {
        self.engine.store(Some(Arc::new(engine)));
        self.served.notify_waiters();
        self.move_to(Status::Ready, None);
        if let Some(changed) = changed {
            self.emit(ProviderEventKind::ConfigurationChanged, changed, None);
        }
    }

    /// The control plane answered: what is served is current.
    pub(crate) fn reachable(&self) {
        if self.engine.load().is_some() && self.status() != Status::Error {
            self.move_to(Status::Ready, None);
        }
    }

    /// The control plane cannot be reached.
    pub(crate) fn unreachable(&self, why: String) {
        if self.engine.load().is_some() && self.status() == Status::Ready {
            self.move_to(Status::Stale, Some(why));
        }
    }

    /// A snapshot flag-core refused: each one is reported, even while in error already.
    pub(crate) fn refused(&self, why: String) {
        tracing::warn!(error = %why, "rollgate: a snapshot was refused; the last good one is served");
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = Status::Error;
        self.emit(ProviderEventKind::Error, Vec::new(), Some(why));
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ProviderEvent> {
        self.events.subscribe()
    }
}

/// The app's side of a provider it gave to OpenFeature: events, status, tracking, shutdown.
#[derive(Clone)]
pub struct ProviderHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ProviderHandle {
    /// Events from now on. OpenFeature's Rust SDK has no event API yet, so they come from here.
    pub fn events(&self) -> broadcast::Receiver<ProviderEvent> {
        self.shared.subscribe()
    }

    /// The provider's status, as OpenFeature names it.
    pub fn status(&self) -> ProviderStatus {
        self.shared.status().into()
    }

    /// The version of the snapshot served, if any.
    pub fn version(&self) -> Option<u64> {
        self.shared.engine.load().as_ref().map(|engine| engine.version())
    }

    /// Counts `count` of `metric` (e.g. `requests`, `errors`) for the units served `variant` of
    /// `flag`: what a rollout plan's guardrails compare. Reported with the next batch. Returns
    /// whether it was counted: a metric name the API refuses (1 to 64 of `a-z 0-9 _ . -`), a zero
    /// count, or a flag the served snapshot lacks is not, since it would get the whole batch
    /// refused.
    pub fn track(&self, flag: &str, variant: &str, metric: &str, count: u64) -> bool {
        let known = self
            .shared
            .engine
            .load()
            .as_ref()
            .is_some_and(|engine| engine.flag_type(flag).is_some());
        if !known || count == 0 || !crate::metrics::is_metric_name(metric) {
            tracing::warn!(
                flag,
                variant,
                metric,
                count,
                "rollgate: not counted: an unknown flag, a zero count or a metric name the API refuses"
            );
            return false;
        }
        self.shared.counts.add(flag, variant, metric, count);
        true
    }

    /// Reports the counts now rather than at the next interval, and waits until it is tried.
    /// Without a reporter (metrics off, not started, or shut down) there is nothing to wait for.
    pub async fn flush(&self) {
        if !self.shared.counts.enabled.load(Ordering::Relaxed) || self.shared.stop.is_stopped() {
            return;
        }
        let done = self.shared.counts.reported.notified();
        self.shared.flush.notify_one();
        done.await;
    }

    /// Reports what is counted, then stops following the control plane. Evaluation goes on
    /// with the last snapshot.
    pub async fn shutdown(&self) {
        self.flush().await;
        self.shared.stop.stop();
    }
}

impl From<Status> for ProviderStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::NotReady => ProviderStatus::NotReady,
            Status::Ready => ProviderStatus::Ready,
            Status::Stale => ProviderStatus::STALE,
            Status::Error => ProviderStatus::Error,
        }
    }
}

/// A stop signal the tasks wait on; set once.
pub(crate) struct Stop(watch::Sender<bool>);

impl Default for Stop {
    fn default() -> Self {
        Self(watch::channel(false).0)
    }
}

impl Stop {
    pub(crate) fn stop(&self) {
        self.0.send_replace(true);
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once `stop` was called.
    pub(crate) async fn stopped(&self) {
        let mut receiver = self.0.subscribe();
        // The sender lives as long as `self`, so waiting ends only by a stop.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}
