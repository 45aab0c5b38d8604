//! Rollgate's flag evaluator: the snapshot format, targeting rules, segments and rg1
//! percentage bucketing.
//!
//! ```text
//! let engine = Engine::from_json(snapshot_json)?;          // validates and compiles, once
//! let context = Context::with_targeting_key("user-1").with("country", "SE");
//! let evaluation = engine.evaluate("checkout-v2", &context); // never fails, never allocates
//! ```
//!
//! The crate does no IO, reads no clock and draws no randomness: callers pass `now` in the
//! [`Context`]. It is `no_std` + `alloc` so that the same evaluator runs natively and in
//! WebAssembly. The snapshot format and rg1 are public contracts, see docs/snapshot-format.md.

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;
// utoipa's derives name std's types.
#[cfg(feature = "openapi")]
extern crate std;

pub mod bucketing;
mod compile;
mod condition;
mod context;
mod error;
mod eval;
pub mod json;
mod keyset;
pub mod ofrep;
mod semver;
mod text;
mod timestamp;
#[cfg(feature = "wasm")]
mod wasm;
pub mod wire;

pub use compile::MAX_PREREQUISITE_EVALUATIONS;
pub use context::{Context, ContextError, TARGETING_KEY};
pub use error::{ConfigError, Problem};
pub use eval::{Engine, ErrorCode, Evaluation, FlagType, KeyedEvaluation, Reason};
pub use keyset::KeySet;
