//! An in-process [OpenFeature](https://openfeature.dev) provider for Rollgate.
//!
//! Flags are evaluated by `flag_core::Engine` inside the app, with no network on the evaluation
//! path. A background task follows the control plane's snapshot stream (`GET
//! /api/v1/environments/{env}/stream`, resuming with `Last-Event-ID`), falls back to polling the
//! snapshot with `If-None-Match`, and swaps in each new engine atomically. Served variants are
//! counted and reported to the metrics endpoint in batches, off the evaluation path.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use open_feature::{EvaluationContext, OpenFeature};
//! use rollgate_openfeature::{Options, RollgateProvider};
//!
//! let provider = RollgateProvider::new(
//!     Options::new("http://127.0.0.1:8080", "rg_...", "production")
//!         .bootstrap("/var/lib/shop/flags.json"),
//! )?;
//! let rollgate = provider.handle();
//! OpenFeature::singleton_mut().await.set_provider(provider).await;
//! let client = OpenFeature::singleton().await.create_client();
//! let context = EvaluationContext::default().with_targeting_key("user-42");
//! let on = client.get_bool_value("checkout-v2", Some(&context), None).await.unwrap_or(false);
//! rollgate.track("checkout-v2", if on { "on" } else { "off" }, "requests", 1);
//! # Ok(()) }
//! ```
//!
//! The guarantees, the options, the events and the metrics are in docs/sdks.md.

mod context;
mod metrics;
mod provider;
mod shared;
mod sync;

use std::path::PathBuf;
use std::time::Duration;

pub use provider::RollgateProvider;
pub use shared::{ProviderEvent, ProviderEventKind, ProviderHandle};

/// Where the provider gets its snapshots and sends its counts, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control plane, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// A `read` token that reaches `environment`.
    pub token: String,
    /// The environment whose flags to serve.
    pub environment: String,
    /// A snapshot file to serve until the control plane answers (see [`Options::bootstrap`]).
    pub bootstrap: Option<PathBuf>,
    /// A file to write each new snapshot to, for the next start's bootstrap.
    pub save_to: Option<PathBuf>,
    /// How long `initialize` waits for a first snapshot when there is none yet.
    pub initialize_timeout: Duration,
    /// The longest wait between reconnection attempts (they start at 250 ms and double, with jitter).
    pub max_backoff: Duration,
    /// A stream that sends nothing, not even its keep-alive, for this long is taken as dead.
    pub stream_idle_timeout: Duration,
    /// How often counts are reported; `None` reports nothing.
    pub metrics_interval: Option<Duration>,
}

impl Options {
    /// Defaults: no files, 5 s to initialize, at most 30 s between attempts, streams dead after
    /// 45 s of silence (the server sends a keep-alive every 15 s), counts reported every 10 s.
    pub fn new(
        url: impl Into<String>,
        token: impl Into<String>,
        environment: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_owned(),
            token: token.into(),
            environment: environment.into(),
            bootstrap: None,
            save_to: None,
            initialize_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(45),
            metrics_interval: Some(Duration::from_secs(10)),
        }
    }

    /// Serves the snapshot in `path` (the body of `GET .../snapshot`) from the start, so an app
    /// that starts while the control plane is down still has its flags. A file that cannot be
    /// read or compiled fails [`RollgateProvider::new`].
    pub fn bootstrap(mut self, path: impl Into<PathBuf>) -> Self {
        self.bootstrap = Some(path.into());
        self
    }

    /// Writes each new snapshot to `path` (atomically), so it can bootstrap the next start.
    pub fn save_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.save_to = Some(path.into());
        self
    }
}

/// Why a provider could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bootstrap file could not be read.
    #[error("cannot read the bootstrap snapshot {path}: {source}")]
    Bootstrap { path: PathBuf, source: std::io::Error },
    /// The bootstrap file is not a snapshot flag-core accepts.
    #[error("the bootstrap snapshot {path} is invalid: {message}")]
    InvalidBootstrap { path: PathBuf, message: String },
    /// The HTTP client could not be built.
    #[error("cannot make an HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}
