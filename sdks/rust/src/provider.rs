//! The OpenFeature provider: each resolution is one `Engine::evaluate_as` on the snapshot
//! served now, mapped to OpenFeature's types.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use flag_core::{ErrorCode, Evaluation, FlagType, Reason};
use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationError, EvaluationErrorCode, EvaluationReason, EvaluationResult,
    FlagMetadata, StructValue, Value,
};
use serde_json::Value as Json;

use crate::shared::{ProviderHandle, Shared};
use crate::{Error, Options, context, metrics, sync};

/// Rollgate's in-process provider. Give it to OpenFeature with `set_provider`; keep a
/// [`ProviderHandle`] (from [`RollgateProvider::handle`]) for events, tracking and shutdown.
pub struct RollgateProvider {
    metadata: ProviderMetadata,
    shared: Arc<Shared>,
    options: Options,
    started: bool,
    /// The bootstrapped snapshot's digest, for the follower to tell what the first one changes.
    bootstrapped: Option<sync::Digest>,
}

impl RollgateProvider {
    /// A provider for `options`. With a bootstrap file it serves that snapshot at once; the
    /// control plane is first contacted when OpenFeature initializes the provider.
    pub fn new(options: Options) -> Result<Self, Error> {
        let shared = Arc::new(Shared::new());
        let mut bootstrapped = None;
        if let Some(path) = &options.bootstrap {
            let json = std::fs::read(path)
                .map_err(|source| Error::Bootstrap { path: path.clone(), source })?;
            let (engine, digest) = sync::compile(&json).map_err(|error| {
                Error::InvalidBootstrap { path: path.clone(), message: error.to_string() }
            })?;
            if engine.environment() != options.environment {
                let message = format!(
                    "it is `{}`'s snapshot, not `{}`'s",
                    engine.environment(),
                    options.environment
                );
                return Err(Error::InvalidBootstrap { path: path.clone(), message });
            }
            shared.install(engine, None);
            bootstrapped = Some(digest);
        }
        let metadata = ProviderMetadata::new("rollgate");
        Ok(Self { metadata, shared, options, started: false, bootstrapped })
    }

    /// The app's handle on this provider: events, status, tracking, flush and shutdown.
    pub fn handle(&self) -> ProviderHandle {
        ProviderHandle { shared: self.shared.clone() }
    }

    /// Starts following the control plane and reporting counts (once), on the current Tokio
    /// runtime. `initialize` calls it; call it yourself only to use the provider without
    /// OpenFeature.
    pub fn start(&mut self) -> Result<(), Error> {
        if self.started {
            return Ok(());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()?;
        let environment = sync::segment(&self.options.environment);
        if let Some(interval) = self.options.metrics_interval {
            self.shared.counts.enabled.store(true, Ordering::Relaxed);
            let url = format!("{}/api/v1/environments/{environment}/metrics", self.options.url);
            let task = metrics::report(
                self.shared.clone(),
                client.clone(),
                url,
                self.options.token.clone(),
                interval,
            );
            tokio::spawn(task);
        }
        let follow = sync::follow(
            self.shared.clone(),
            client,
            self.options.clone(),
            self.bootstrapped.take(),
        );
        tokio::spawn(follow);
        self.started = true;
        Ok(())
    }

    fn resolve<T>(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
        kind: FlagType,
        convert: impl FnOnce(&Json) -> Option<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let engine = self.shared.engine.load();
        let Some(engine) = engine.as_ref() else {
            return Err(error(EvaluationErrorCode::ProviderNotReady, "no snapshot yet"));
        };
        let evaluation = engine.evaluate_as(flag_key, &context::context(context), kind);
        if let Reason::Error(code) = evaluation.reason {
            return Err(error(error_code(code), details(code)));
        }
        let value = evaluation.value.and_then(convert).ok_or_else(|| {
            error(
                EvaluationErrorCode::TypeMismatch,
                "the flag's value does not fit the type asked for",
            )
        })?;
        if let Some(variant) = evaluation.variant {
            self.shared.counts.add(flag_key, variant, "evaluations", 1);
            // What a rollout plan's sample-ratio check compares with the configured split.
            if evaluation.by_fallthrough_rollout() {
                self.shared.counts.add(flag_key, variant, "rollout_evaluations", 1);
            }
        }
        Ok(ResolutionDetails {
            value,
            variant: evaluation.variant.map(str::to_owned),
            reason: Some(reason(evaluation.reason)),
            flag_metadata: metadata(&evaluation),
        })
    }
}

impl Drop for RollgateProvider {
    /// OpenFeature drops its providers at shutdown: the tasks report once more and end.
    fn drop(&mut self) {
        self.shared.stop.stop();
    }
}

#[async_trait]
impl FeatureProvider for RollgateProvider {
    /// Starts syncing, and waits up to `initialize_timeout` for a first snapshot unless one was
    /// bootstrapped. Without one, evaluations answer `PROVIDER_NOT_READY` until it comes.
    async fn initialize(&mut self, _context: &EvaluationContext) {
        let shared = self.shared.clone();
        let served = shared.served.notified();
        if let Err(error) = self.start() {
            tracing::error!(%error, "rollgate: cannot start syncing");
            return;
        }
        if self.shared.engine.load().is_none() {
            let _ = tokio::time::timeout(self.options.initialize_timeout, served).await;
        }
    }

    fn status(&self) -> ProviderStatus {
        self.shared.status().into()
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(flag_key, context, FlagType::Boolean, Json::as_bool)
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        // 25.0 is an integer too; 2.5 is not.
        let integer = |json: &Json| {
            json.as_i64().or_else(|| {
                json.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
            })
        };
        self.resolve(flag_key, context, FlagType::Number, integer)
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(flag_key, context, FlagType::Number, Json::as_f64)
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(flag_key, context, FlagType::String, |json| json.as_str().map(str::to_owned))
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(flag_key, context, FlagType::Object, |json| match context::value(json)? {
            Value::Struct(s) => Some(s),
            _ => None,
        })
    }
}

fn error(code: EvaluationErrorCode, message: &str) -> EvaluationError {
    EvaluationError { code, message: Some(message.to_owned()) }
}

fn error_code(code: ErrorCode) -> EvaluationErrorCode {
    match code {
        ErrorCode::FlagNotFound => EvaluationErrorCode::FlagNotFound,
        ErrorCode::TargetingKeyMissing => EvaluationErrorCode::TargetingKeyMissing,
        ErrorCode::TypeMismatch => EvaluationErrorCode::TypeMismatch,
        ErrorCode::ParseError => EvaluationErrorCode::ParseError,
        ErrorCode::InvalidContext => EvaluationErrorCode::InvalidContext,
        _ => EvaluationErrorCode::General("GENERAL".to_owned()),
    }
}

/// The same words as the OFREP answers (flag-core's `ofrep` module).
fn details(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::FlagNotFound => "no flag has this key",
        ErrorCode::TargetingKeyMissing => {
            "only a percentage rollout decides this flag, and the context has no targetingKey"
        }
        ErrorCode::TypeMismatch => "the flag is of another type",
        _ => "evaluation failed",
    }
}

/// A failed prerequisite is `DEFAULT` with `prerequisiteFailed` in the metadata, as over OFREP.
fn reason(reason: Reason) -> EvaluationReason {
    match reason {
        Reason::Static => EvaluationReason::Static,
        Reason::TargetingMatch => EvaluationReason::TargetingMatch,
        Reason::Split => EvaluationReason::Split,
        Reason::Disabled => EvaluationReason::Disabled,
        Reason::Default | Reason::PrerequisiteFailed => EvaluationReason::Default,
        _ => EvaluationReason::Unknown,
    }
}

/// `ruleIndex`, `bucketKeyMissing` and `prerequisiteFailed`, where they apply.
fn metadata(evaluation: &Evaluation<'_>) -> Option<FlagMetadata> {
    let mut metadata = FlagMetadata::default();
    if let Some(index) = evaluation.rule_index {
        metadata = metadata.with_value("ruleIndex", i64::try_from(index).unwrap_or(i64::MAX));
    }
    if evaluation.bucket_key_missing {
        metadata = metadata.with_value("bucketKeyMissing", true);
    }
    if evaluation.reason == Reason::PrerequisiteFailed {
        metadata = metadata.with_value("prerequisiteFailed", true);
    }
    (!metadata.values.is_empty()).then_some(metadata)
}
