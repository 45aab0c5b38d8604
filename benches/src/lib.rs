//! Criterion benchmarks for Rollgate; see benches/benches/.
