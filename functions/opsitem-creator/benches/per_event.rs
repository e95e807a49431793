//! Per-event CPU without I/O: classification + decision + OpsItem content, for every sample.
//! Baseline in the same run: parsing the same bytes into an untyped `serde_json::Value`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;

use autopilot_shared::events::{classify, classify_raw};
use criterion::{Criterion, criterion_group, criterion_main};
use opsitem_creator::decide::plan;
use opsitem_creator::rules::default_rules;

fn samples() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/opsitem-creator");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn per_event(c: &mut Criterion) {
    let rules = default_rules().unwrap();
    let states = vec!["stopped".to_owned(), "terminated".to_owned()];
    let all = samples();
    c.bench_function("baseline: serde_json::Value parse, all samples", |b| {
        b.iter(|| {
            for (_, raw) in &all {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(raw)).unwrap());
            }
        })
    });
    c.bench_function("classify + plan, all samples", |b| {
        b.iter(|| {
            for (_, raw) in &all {
                let ev = classify_raw(black_box(raw)).unwrap();
                black_box(plan(
                    &ev,
                    &rules,
                    &states,
                    Some("arn:aws:sns:us-east-1:123456789012:t"),
                ));
            }
        })
    });
    c.bench_function("classify only, all samples", |b| {
        b.iter(|| {
            for (_, raw) in &all {
                black_box(classify(black_box(raw)).unwrap());
            }
        })
    });
    let mut group = c.benchmark_group("classify + plan");
    for (name, raw) in &all {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                let ev = classify_raw(black_box(raw)).unwrap();
                black_box(plan(&ev, &rules, &states, None))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, per_event);
criterion_main!(benches);
