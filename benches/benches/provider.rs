//! The Rust in-process provider's cost per evaluation: the reference flag (a condition, then a
//! 25% rollout) over 1,000 rotating users, through OpenFeature's client with the provider,
//! through the provider alone, and with `Engine::evaluate` alone.

use std::hint::black_box;

use benches::reference_snapshot;
use criterion::{Criterion, criterion_group, criterion_main};
use flag_core::{Context, Engine};
use open_feature::provider::FeatureProvider;
use open_feature::{EvaluationContext, OpenFeature};
use rollgate_openfeature::{Options, RollgateProvider};

fn users(count: usize) -> Vec<(Context, EvaluationContext)> {
    (0..count)
        .map(|i| {
            let (key, country) =
                (format!("user-{i:08}@example.com"), if i % 2 == 0 { "SE" } else { "NO" });
            let core = Context::with_targeting_key(key.as_str())
                .with("country", country)
                .with("plan", "pro")
                .with("appVersion", "3.14.1");
            let openfeature = EvaluationContext::default()
                .with_targeting_key(key)
                .with_custom_field("country", country)
                .with_custom_field("plan", "pro")
                .with_custom_field("appVersion", "3.14.1");
            (core, openfeature)
        })
        .collect()
}

fn provider(c: &mut Criterion) {
    let json = reference_snapshot(1);
    let users = users(1_000);
    let engine = Engine::from_json(&json).unwrap();
    let mut cycle = users.iter().cycle();
    c.bench_function("Engine::evaluate alone", |b| {
        b.iter(|| black_box(engine.evaluate(black_box("flag-0"), &cycle.next().unwrap().0)))
    });

    let path =
        std::env::temp_dir().join(format!("rollgate-provider-bench-{}.json", std::process::id()));
    std::fs::write(&path, &json).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Counting is on, as in an app; nothing is sent while the benchmark runs.
    let mut options =
        Options::new("http://127.0.0.1:9", "rg_benchmark", "production").bootstrap(&path);
    options.metrics_interval = Some(std::time::Duration::from_secs(3600));
    let provider = runtime.block_on(async {
        let mut provider = RollgateProvider::new(options.clone()).unwrap();
        provider.start().unwrap();
        provider
    });
    let mut cycle = users.iter().cycle();
    c.bench_function("the provider's resolve_bool_value", |b| {
        b.iter(|| {
            black_box(runtime.block_on(
                provider.resolve_bool_value(black_box("flag-0"), &cycle.next().unwrap().1),
            ))
        })
    });

    let client = runtime.block_on(async {
        let mut provider = RollgateProvider::new(options).unwrap();
        provider.start().unwrap();
        OpenFeature::singleton_mut().await.set_provider(provider).await;
        OpenFeature::singleton().await.create_client()
    });
    let mut cycle = users.iter().cycle();
    c.bench_function("OpenFeature client get_bool_details with the provider", |b| {
        b.iter(|| {
            black_box(runtime.block_on(client.get_bool_details(
                black_box("flag-0"),
                Some(&cycle.next().unwrap().1),
                None,
            )))
        })
    });
    // An empty block_on, to subtract from the two above.
    c.bench_function("block_on of a ready future (harness cost)", |b| {
        b.iter(|| runtime.block_on(async { black_box(1) }))
    });
    std::fs::remove_file(path).unwrap();
}

criterion_group!(benches, provider);
criterion_main!(benches);
