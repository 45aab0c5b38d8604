//! control-plane's integration tests: a real SQLite file in a temporary directory, and the
//! service on a real loopback listener.

mod server;
mod store;
mod support;
mod matrix;
mod ofrep;
mod stream;
mod resources;
