//! Heap held by the Rust in-process provider for the 10,000-flag snapshot (100 segments of
//! 10,000 keys each), bootstrapped from a file and following an unreachable control plane:
//! `cargo run --release -p benches --bin provider_memory`.

use std::time::Duration;

use benches::heap::{self, Tracking};
use benches::large_snapshot;
use open_feature::EvaluationContext;
use open_feature::provider::FeatureProvider;
use rollgate_openfeature::{Options, ProviderEventKind, RollgateProvider};

#[global_allocator]
static HEAP: Tracking = Tracking;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let path =
        std::env::temp_dir().join(format!("rollgate-provider-memory-{}.json", std::process::id()));
    let json = large_snapshot(10_000, 100, 10_000);
    std::fs::write(&path, &json).expect("a temporary file");
    drop(json);

    let before = heap::in_use();
    heap::reset_peak();
    // Port 9 (discard) on loopback: nothing answers, so the provider serves the file, goes
    // STALE once its first attempts fail, and holds what it holds in the steady state.
    let mut options =
        Options::new("http://127.0.0.1:9", "rg_benchmark", "production").bootstrap(&path);
    options.metrics_interval = None;
    let mut provider = RollgateProvider::new(options).expect("the benchmark snapshot compiles");
    let mut events = provider.handle().events();
    provider.initialize(&EvaluationContext::default()).await;
    let stale = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(event) = events.recv().await {
            if event.kind == ProviderEventKind::Stale {
                return;
            }
        }
    });
    stale.await.expect("STALE within 10 s");
    let held = heap::in_use() - before;
    let peak = heap::peak() - before;
    let answer = provider
        .resolve_string_value("flag-7", &EvaluationContext::default().with_targeting_key("user-1"))
        .await;
    assert!(answer.is_ok());
    std::fs::remove_file(&path).expect("the temporary file");
    eprintln!(
        "Rust provider, 10,000 flags + 100 segments x 10,000 keys: heap held {:.1} MB (engine and digest), peak while loading {:.1} MB",
        held as f64 / 1e6,
        peak as f64 / 1e6
    );
}
