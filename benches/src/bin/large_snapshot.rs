//! Writes the benchmarks' large snapshot (10,000 flags, 100 segments of 10,000 keys each) to
//! stdout, for benchmarks in other languages: `cargo run --release -p benches --bin large_snapshot`.

use std::io::Write;

use benches::large_snapshot;

fn main() -> std::io::Result<()> {
    std::io::stdout().lock().write_all(&large_snapshot(10_000, 100, 10_000))
}
