//! `decide()` cost: the lesson's VirtualService with and without the dark-launch header, a
//! table of 50 rules where the request matches the last, and the lesson's VirtualService
//! while another thread swaps tables 10,000 times a second.
//!
//! Run: `cargo bench --bench decide`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use weir_router::{ConfigSource, LiveTable, RequestHead, WeightChange};

fn lesson() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/payment-svc.yaml"
    ))
    .unwrap()
}

/// The lesson's config with 49 header/uri rules in front of the split.
fn fifty_rules() -> String {
    let text = lesson();
    let mut rules = String::new();
    for i in 0..49 {
        rules.push_str(&format!(
            "  - name: r{i}\n    match:\n    - uri:\n        prefix: /svc{i}/\n      headers:\n        x-tenant:\n          exact: \"t{i}\"\n    route:\n    - destination:\n        host: payment-svc\n        subset: v1\n"
        ));
    }
    text.replace("  http:\n", &format!("  http:\n{rules}"))
}

fn live(text: String) -> LiveTable {
    LiveTable::from_sources(&[ConfigSource::new("bench.yaml", text)])
        .expect("valid")
        .0
}

fn bench(c: &mut Criterion) {
    let lesson_live = live(lesson());
    // Requests as a sidecar receives them: origin-form, Host and a few usual headers.
    let request = |canary: bool| {
        let mut b = http::Request::get("/pay")
            .header("host", "payment-svc")
            .header("user-agent", "curl/8.5.0")
            .header("accept", "*/*")
            .header("x-request-id", "0f1c2a3b-4d5e-6f70-8192-a3b4c5d6e7f8");
        if canary {
            b = b.header("x-canary", "true");
        }
        b.body(()).unwrap()
    };
    let plain = request(false);
    let canary = request(true);
    let mut value = 0u64;

    c.bench_function("decide/lesson/no-header", |b| {
        b.iter(|| {
            value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let table = lesson_live.load();
            let d = table
                .decide(&RequestHead::of(black_box(&plain)), value)
                .unwrap();
            black_box(d.cluster.endpoints.len())
        })
    });
    c.bench_function("decide/lesson/x-canary", |b| {
        b.iter(|| {
            value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let table = lesson_live.load();
            let d = table
                .decide(&RequestHead::of(black_box(&canary)), value)
                .unwrap();
            black_box(d.cluster.endpoints.len())
        })
    });
    c.bench_function("decide/lesson/random-value", |b| {
        b.iter(|| {
            let table = lesson_live.load();
            let d = table
                .decide_random(&RequestHead::of(black_box(&plain)))
                .unwrap();
            black_box(d.cluster.endpoints.len())
        })
    });

    let fifty = live(fifty_rules());
    let last = http::Request::get("/svc48/x")
        .header("host", "payment-svc")
        .header("x-tenant", "other")
        .body(())
        .unwrap();
    c.bench_function("decide/50-rules/last", |b| {
        b.iter(|| {
            value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let table = fifty.load();
            let d = table
                .decide(&RequestHead::of(black_box(&last)), value)
                .unwrap();
            black_box(d.rule.index)
        })
    });

    // A writer swapping the weights back and forth 10,000 times a second: ten times the
    // design's 1,000 swaps/s. (Unpaced, on a 2-core machine the writer mostly measures CPU
    // stolen from the reader, not the cost of the swap to readers.)
    let shared = Arc::new(live(lesson()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let shared = shared.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (a, b) = if i.is_multiple_of(2) {
                    (95, 5)
                } else {
                    (90, 10)
                };
                let change = WeightChange {
                    virtual_service: "payment-svc".into(),
                    weights: [("v1".to_string(), a), ("v2".to_string(), b)].into(),
                    ..WeightChange::default()
                };
                shared.set_weights(&change).unwrap();
                i += 1;
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            i
        })
    };
    c.bench_function("decide/lesson/concurrent-writer", |b| {
        b.iter(|| {
            value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let table = shared.load();
            let d = table
                .decide(&RequestHead::of(black_box(&plain)), value)
                .unwrap();
            black_box(d.cluster.endpoints.len())
        })
    });
    stop.store(true, Ordering::Relaxed);
    let swaps = writer.join().unwrap();
    eprintln!("concurrent writer published {swaps} tables during the run");
}

criterion_group!(benches, bench);
criterion_main!(benches);
