//! At-least-once delivery: every trigger sample, 100 deliveries — one SIGKILLed mid-run (after
//! its first Resource Data Sync objects were written, before any checkpoint), rounds of 20
//! concurrent deliveries (half of the slots deliver the run's continuation event, so that the
//! run lease behind the idempotency guard meets a second invocation of the same run), the rest
//! sequential; retryable failures are redelivered until Ok. The bucket must then hold exactly
//! the keys and bytes (by MD5) one delivery of each sample writes on a reference tenant with
//! the same fleet (manifests compared without their wall-clock `timing` and destination): no
//! second snapshot, diff or manifest, nothing missing.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bucket;

use std::path::Path;
use std::time::{Duration, Instant};

use autopilot_harness::reliability::{self, CrashPoint, Pool, ReplayPlan};
use autopilot_harness::{InvokeOptions, TestEnv};
use inventory_aggregator::handler::continuation_event;
use inventory_aggregator::plan::RunSpec;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_inventory-aggregator");
const FUNCTION: &str = "inventory-aggregator";
/// Two GetInventory pages per type (50 + 5), ~11 types: ~590 objects per run.
const NODES: u64 = 55;

/// The run's identity as the handler derives it from a trigger (`spec_for`).
fn spec_of(event: &Value) -> RunSpec {
    let time = chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    RunSpec::new(
        event["id"].as_str().unwrap(),
        time,
        event["account"].as_str().unwrap(),
        "us-east-1",
        event["detail"]["reason"].as_str().map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_deliveries_of_every_trigger_write_one_delivery_s_objects() {
    let started = Instant::now();
    let replayed = TestEnv::new().await.unwrap();
    let once = TestEnv::new().await.unwrap();
    for env in [&replayed, &once] {
        bucket::seed_fleet(env, NODES).await;
    }
    // In time order: the later run diffs against the earlier one, so the diff's reads of the
    // previous run are replayed too. Both tenants get the same events (the destination, part
    // of every idempotency and ledger key, keeps them apart).
    let mut samples = reliability::fresh_samples(&replayed, FUNCTION).unwrap();
    samples.sort_by(|a, b| a.1["time"].as_str().cmp(&b.1["time"].as_str()));
    assert_eq!(samples.len(), 2, "on-demand and scheduled triggers");

    // Reference: one delivery of each sample.
    let ref_prefix = bucket::uniq("replay-ref");
    let mut spec = once.function(FUNCTION, Path::new(BIN)).unwrap();
    spec.env.insert("OUTPUT_PREFIX".into(), ref_prefix.clone());
    let bucket_name = spec.env["INVENTORY_BUCKET"].clone();
    let single = autopilot_harness::Sandbox::spawn(spec).await.unwrap();
    single.init_duration().await.unwrap();
    let mut puts_per_run = Vec::new();
    for (name, event) in &samples {
        let before = once
            .control
            .calls(&once.tenant, "s3:PutObject")
            .await
            .unwrap();
        let r = single
            .invoke(
                &serde_json::to_vec(event).unwrap(),
                InvokeOptions::default(),
            )
            .await
            .unwrap();
        let out = r.outcome.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(out["status"], "complete", "{name}: {out}");
        puts_per_run.push(
            once.control
                .calls(&once.tenant, "s3:PutObject")
                .await
                .unwrap()
                - before,
        );
    }

    let prefix = bucket::uniq("replay");
    let mut pool = Pool::new(
        &replayed,
        FUNCTION,
        Path::new(BIN),
        20,
        &[
            ("OUTPUT_PREFIX", prefix.as_str()),
            // The crashed delivery's 6 s must not all be margin (the template's is 60 s).
            ("CHECKPOINT_MARGIN_SECONDS", "1"),
        ],
    )
    .await
    .unwrap();
    // Killed once 20 objects of the first pages were written: every GetInventory is held back
    // 1.5 s, so no page is checkpointed yet and the run is far from its manifest.
    let crash = CrashPoint {
        operation: "s3:PutObject".into(),
        calls: 20,
        settle: Duration::ZERO,
        hold: vec!["ssm:GetInventory".into()],
        hold_ms: 1500,
        deadline: Duration::from_secs(6),
    };
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    let (mut deliveries, mut continuations) = (0, 0);
    for ((name, event), puts) in samples.iter().zip(&puts_per_run) {
        let plan = ReplayPlan {
            crash: crash.clone(),
            siblings: vec![continuation_event(&spec_of(event), 1)],
            // The run's last listing (finalize: the previous manifests) held 1.5 s: the
            // invocation that resumed the run still holds its lease when the other event's
            // first delivery of the round tries to claim it.
            first_round_faults: vec![json!({"operation": "s3:ListObjectsV2", "latency_ms": 1500})],
        };
        let t = Instant::now();
        let run = reliability::replay_with(&replayed, &mut pool, event, 100, 20, &plan)
            .await
            .unwrap();
        if !run.failures.is_empty() {
            for line in pool.sandboxes[0].logs().iter().rev().take(5).rev() {
                eprintln!("{name}: {line}");
            }
        }
        assert!(
            run.failures.is_empty(),
            "{name}: {:?} after {:?}",
            run.failures,
            run.retryable_errors
        );
        // The idempotency guard refuses concurrent duplicates of one event, the run lease the
        // concurrent invocation of the same run through the other event; both retryably.
        for kind in ["IdempotencyAlreadyInProgress", "RunInProgress"] {
            assert!(
                run.retryable_errors.get(kind).copied().unwrap_or(0) > 0,
                "{name}: no {kind}: {:?}",
                run.retryable_errors
            );
        }
        assert!(
            run.claimed_before_kill && run.crash_calls >= 20 && run.crash_calls < *puts,
            "{name}: the kill must land mid-run ({} of {puts} objects written)",
            run.crash_calls
        );
        eprintln!(
            "{FUNCTION} {name}: {} deliveries + {} continuation deliveries (+{} retries, {:?}), \
             killed after {} of {puts} PutObjects, {:.1} s",
            run.deliveries,
            run.sibling_deliveries,
            run.retries,
            run.retryable_errors,
            run.crash_calls,
            t.elapsed().as_secs_f64()
        );
        deliveries += run.deliveries;
        continuations += run.sibling_deliveries;
        for (k, v) in run.retryable_errors {
            *errors.entry(k).or_default() += v;
        }
    }
    assert_eq!(deliveries, 100 * samples.len());

    let got = bucket::objects(&replayed, &bucket_name, &prefix).await;
    let want = bucket::objects(&once, &bucket_name, &ref_prefix).await;
    bucket::assert_same_output(&got, &want);
    // One manifest and one diff per run, every run resumed after its crash.
    let manifests: Vec<Value> = got
        .iter()
        .filter(|(k, _)| k.ends_with("/manifest.json"))
        .map(|(_, v)| serde_json::from_slice(v).unwrap())
        .collect();
    assert_eq!(manifests.len(), samples.len());
    assert_eq!(
        got.keys().filter(|k| k.ends_with("/diff.json")).count(),
        samples.len()
    );
    for m in &manifests {
        assert!(
            m["timing"]["invocations"].as_u64().unwrap() >= 2,
            "the crashed invocation and the one that resumed it: {}",
            m["timing"]
        );
    }
    eprintln!(
        "{FUNCTION}: {deliveries} deliveries + {continuations} continuation deliveries, {} \
         objects identical to one delivery each, {errors:?}, {:.1} s",
        got.len(),
        started.elapsed().as_secs_f64()
    );
}
