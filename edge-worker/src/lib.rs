//! Rollgate's edge: a Cloudflare Worker that answers OFREP from a flag-core `Engine` held in the
//! isolate, fed by signed pushes from the control plane and kept durably in a Durable Object.
//! See ARCHITECTURE.md.

pub mod config;
#[cfg(target_arch = "wasm32")]
mod freshness;
pub mod regions;
#[cfg(target_arch = "wasm32")]
mod report;
#[cfg(target_arch = "wasm32")]
mod worker_entry;
