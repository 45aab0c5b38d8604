//! Peak heap while compiling 10,000 flags and 100 segments of 10,000 keys each, measured with a
//! tracking allocator: `cargo run --release -p benches --bin compile_memory`.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use benches::large_snapshot;
use flag_core::Engine;

struct PeakTracking;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator and only updates two atomics.
unsafe impl GlobalAlloc for PeakTracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: PeakTracking = PeakTracking;

fn main() {
    let json = large_snapshot(10_000, 100, 10_000);
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let engine = Engine::from_json(&json).expect("the benchmark snapshot compiles");
    let elapsed = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let kept = IN_USE.load(Ordering::Relaxed) - before;
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
