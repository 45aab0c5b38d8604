//! control-plane's integration tests: a real SQLite file in a temporary directory, and the
//! service on a real loopback listener.

mod balanced;
mod browsers;
mod changes;
mod cli;
mod contract;
mod crash;
mod disconnects;
mod edges;
mod hardening;
mod import;
mod import_flagd;
mod layers;
mod matrix;
mod ofrep;
mod openapi;
mod outside;
mod plans;
mod replicas;
mod resources;
mod server;
mod sse;
mod stream;
mod support;
