//! flag-core's integration tests: one binary, one module per concern.

mod algorithms;
mod allocations;
mod config_errors;
mod properties;
mod spec;
mod unleash_oracle;
