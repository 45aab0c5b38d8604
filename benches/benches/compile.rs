//! Compiling a large snapshot: 10,000 flags and 100 segments of 10,000 keys each.
//! Peak memory is measured by benches/src/bin/compile_memory.rs, apart from this timing.

use std::hint::black_box;

use benches::large_snapshot;
use criterion::{Criterion, criterion_group, criterion_main};
use flag_core::Engine;

fn compile(c: &mut Criterion) {
    let json = large_snapshot(10_000, 100, 10_000);

    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("10,000 flags + 100 segments x 10,000 keys", |b| {
        b.iter(|| black_box(Engine::from_json(black_box(&json)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
