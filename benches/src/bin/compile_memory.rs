//! Peak heap while compiling 10,000 flags and 100 segments of 10,000 keys each, measured with a
//! tracking allocator: `cargo run --release -p benches --bin compile_memory`.

use std::time::Instant;

use benches::heap::{self, Tracking};
use benches::large_snapshot;
use flag_core::Engine;

#[global_allocator]
static HEAP: Tracking = Tracking;

fn main() {
    let json = large_snapshot(10_000, 100, 10_000);
    let before = heap::in_use();
    heap::reset_peak();
    let started = Instant::now();
    let engine = Engine::from_json(&json).expect("the benchmark snapshot compiles");
    let elapsed = started.elapsed();
    let peak = heap::peak() - before;
    let kept = heap::in_use() - before;
    assert_eq!(engine.flag_keys().len(), 10_000);
    eprintln!(
        "compile 10,000 flags + 100 segments x 10,000 keys: input {:.1} MB, peak heap while compiling {:.1} MB \
         (beyond the input), engine {:.1} MB, {:.0} ms with the tracking allocator",
        json.len() as f64 / 1e6,
        peak as f64 / 1e6,
        kept as f64 / 1e6,
        elapsed.as_secs_f64() * 1e3
    );
}
