//! Fault matrix: every AWS operation two runs call (the scheduled trigger, then the on-demand
//! one, whose diff reads the first run back) × {throttling 30 %, 5xx 10 %, a 1.5 s latency
//! spike}. Each cell runs on a fresh tenant with the same fleet and one seeded fault rule; a
//! failed delivery must carry a retryable error type and is redelivered (as Lambda's retry
//! would) until it succeeds, continuations followed as the audit-bus rule would. The cell's
//! bucket (keys, the bytes' MD5, manifests without timing) must equal a fault-free tenant's.
//!
//! The SDK runs with one attempt per call (`AWS_MAX_ATTEMPTS=1`), so every injected fault fails
//! the invocation and the resume paths (checkpoint, lease, idempotency) do the recovering. A
//! rate rule is armed for the first [`WINDOW`] calls of its operation: a page's objects are
//! written at once, and at 30 % throttling a page of 50 nodes with no failed write (0.7^50)
//! never comes without the SDK's retries.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bucket;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use autopilot_harness::fault_matrix::{self, Fault, injected, operations};
use autopilot_harness::reliability::{self, is_retryable};
use autopilot_harness::{FunctionSpec, InvokeOptions, Sandbox, TestEnv, repo_root};
use futures::StreamExt;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_inventory-aggregator");
const FUNCTION: &str = "inventory-aggregator";
const MAX_REDELIVERIES: usize = 20;
/// Remaining time of each invocation: a lease or idempotency claim a failed delivery could
/// not give back is held until then.
const LEASE: Duration = Duration::from_secs(5);
/// Calls of an operation a rate rule is armed for.
const WINDOW: u64 = 12;
/// Cells run at once (each on its own tenant, prefix and sandbox).
const PARALLEL: usize = 6;
/// One GetInventory page per type, ~45 objects per run: the emulator's S3 is the cost of a
/// cell (1,184 PutObjects for two runs of 55 nodes took 17 s on the loaded machine). Pages
/// and their checkpoints under faults are the replay suite's and e2e's part.
const NODES: u64 = 3;

/// How one cell went.
#[derive(Default)]
struct CellRun {
    /// Redeliveries each trigger needed.
    redeliveries: Vec<usize>,
    /// Invocations per trigger (continuations included).
    invocations: Vec<usize>,
    errors: BTreeMap<String, usize>,
    violations: Vec<String>,
    objects: BTreeMap<String, Vec<u8>>,
    counters: Value,
    rule_hits: u64,
    wall: Duration,
}

/// Delivers `event` until its run answers `complete`: a failure is redelivered after a
/// retryable error (a claim still held waited out until its deadline), a `continuing`
/// answer is followed by its continuation event.
async fn deliver_run(sb: &mut Sandbox, spec: &FunctionSpec, event: &Value, run: &mut CellRun) {
    let mut payload = serde_json::to_vec(event).unwrap();
    let (mut redeliveries, mut invocations) = (0, 0);
    let mut claimed_at = Instant::now();
    let name = event["detail-type"].as_str().unwrap_or_default().to_owned();
    loop {
        let started = Instant::now();
        invocations += 1;
        let opts = InvokeOptions {
            deadline_in: Some(LEASE),
            ..InvokeOptions::default()
        };
        let outcome = match sb.invoke(&payload, opts).await {
            Ok(inv) => inv.outcome,
            // No answer by the deadline (plus the harness's grace; seen on a machine at load 12):
            // as Lambda does on a timeout, a new sandbox gets the retry.
            Err(e) => {
                eprintln!("{name}: no answer: {e}");
                *sb = Sandbox::spawn(spec.clone()).await.unwrap();
                sb.init_duration().await.unwrap();
                Err(autopilot_harness::FunctionError {
                    error_type: "Timeout".into(),
                    error_message: e.to_string(),
                })
            }
        };
        let e = match outcome {
            Ok(out) if out["status"] == "continuing" && invocations < 50 => {
                payload = out["continuation"].to_string().into_bytes();
                continue;
            }
            Ok(out) => {
                if out["status"] != "complete" {
                    run.violations.push(format!("{name}: {out}"));
                }
                break;
            }
            Err(e) => e,
        };
        *run.errors.entry(e.error_type.clone()).or_insert(0) += 1;
        eprintln!("{name}: {}: {}", e.error_type, e.error_message);
        if !is_retryable(&e.error_type) && e.error_type != "Timeout" {
            run.violations.push(format!(
                "{name}: non-retryable {}: {}",
                e.error_type, e.error_message
            ));
            break;
        }
        if redeliveries == MAX_REDELIVERIES {
            run.violations.push(format!(
                "{name}: still failing after {MAX_REDELIVERIES} redeliveries: {}: {}",
                e.error_type, e.error_message
            ));
            break;
        }
        if e.error_type == "IdempotencyAlreadyInProgress" || e.error_type == "RunInProgress" {
            let until = claimed_at + LEASE + Duration::from_millis(300);
            tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
        } else {
            claimed_at = started;
        }
        redeliveries += 1;
    }
    run.redeliveries.push(redeliveries);
    run.invocations.push(invocations);
}

async fn run_cell(rule: Option<Value>, events: Vec<Value>) -> CellRun {
    let started = Instant::now();
    let env = TestEnv::new().await.unwrap();
    bucket::seed_fleet(&env, NODES).await;
    let prefix = bucket::uniq("fm");
    let mut spec = env.function(FUNCTION, Path::new(BIN)).unwrap();
    spec.env.insert("AWS_MAX_ATTEMPTS".into(), "1".into());
    spec.env.insert("OUTPUT_PREFIX".into(), prefix.clone());
    // The template's 60 s margin is more than a test invocation's whole deadline.
    spec.env
        .insert("CHECKPOINT_MARGIN_SECONDS".into(), "1".into());
    let bucket_name = spec.env["INVENTORY_BUCKET"].clone();
    let mut sb = Sandbox::spawn(spec.clone()).await.unwrap();
    sb.init_duration().await.unwrap();
    if let Some(mut rule) = rule {
        rule["tenant"] = json!(env.tenant);
        env.control.set_faults(json!([rule])).await.unwrap();
    }
    let mut run = CellRun::default();
    for event in &events {
        deliver_run(&mut sb, &spec, event, &mut run).await;
    }
    run.rule_hits = fault_matrix::rule_hits(&env).await.unwrap();
    fault_matrix::clear_faults(&env).await.unwrap();
    run.counters = env.control.counters(&env.tenant).await.unwrap()["counters"].clone();
    run.objects = bucket::objects(&env, &bucket_name, &prefix).await;
    run.wall = started.elapsed();
    run
}

struct Cell {
    op: String,
    fault: Fault,
    seed: u64,
    rule: Value,
}

/// A failure after the pages are collected (here finalize's listing of the earlier manifests)
/// gives the run back: the retry resumes at once instead of meeting the failed invocation's
/// lease until its deadline (`RunInProgress`; deployed, that is up to 15 minutes, and both of
/// Lambda's retries would meet it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_while_finalising_gives_the_run_back() {
    let env = TestEnv::new().await.unwrap();
    bucket::seed_fleet(&env, NODES).await;
    let mut spec = env.function(FUNCTION, Path::new(BIN)).unwrap();
    spec.env.insert("AWS_MAX_ATTEMPTS".into(), "1".into());
    spec.env
        .insert("OUTPUT_PREFIX".into(), bucket::uniq("give-back"));
    let sb = Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();
    env.control
        .set_faults(
            json!([{"operation": "s3:ListObjectsV2", "throttle_rate": 1.0,
            "max_hits": 1, "tenant": env.tenant}]),
        )
        .await
        .unwrap();
    let (_, event) = reliability::fresh_samples(&env, FUNCTION)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "scheduled-run.json")
        .unwrap();
    let bytes = serde_json::to_vec(&event).unwrap();
    let first = sb.invoke(&bytes, InvokeOptions::default()).await.unwrap();
    let e = first.outcome.unwrap_err();
    assert_eq!(e.error_type, "AwsThrottled", "{e:?}");
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "s3:ListObjectsV2")
            .await
            .unwrap(),
        0,
        "failed in finalize"
    );
    let retry = sb.invoke(&bytes, InvokeOptions::default()).await.unwrap();
    let out = retry
        .outcome
        .unwrap_or_else(|e| panic!("the retry must resume the run at once: {e:?}"));
    assert_eq!(out["status"], "complete", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_under_every_fault_converges_to_the_fault_free_bucket() {
    let started = Instant::now();
    // One set of events for every cell: the output prefix (part of every idempotency and
    // ledger key) keeps the cells apart, and equal events make equal run ids.
    let env = TestEnv::new().await.unwrap();
    let mut events: Vec<Value> = reliability::fresh_samples(&env, FUNCTION)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    events.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    let reference = run_cell(None, events.clone()).await;
    assert!(
        reference.violations.is_empty() && reference.errors.is_empty(),
        "fault-free run failed: {:?} {:?}",
        reference.violations,
        reference.errors
    );
    assert!(reference.invocations.iter().all(|n| *n == 1));
    let ops = operations(&reference.counters);
    for must in [
        "ssm:GetInventorySchema",
        "ssm:GetInventory",
        "s3:PutObject",
        "s3:GetObject",
        "s3:ListObjectsV2",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "events:PutEvents",
    ] {
        assert!(ops.iter().any(|o| o == must), "{must} not called: {ops:?}");
    }
    let calls = |op: &str| {
        autopilot_harness::emulator::counter_field(
            &json!({ "counters": reference.counters }),
            op,
            "calls",
        )
    };
    eprintln!(
        "{FUNCTION}: operations called by two runs: {:?} ({:.1} s)",
        ops.iter().map(|o| (o, calls(o))).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );

    let mut cells = Vec::new();
    for op in &ops {
        for fault in Fault::ALL {
            let window = calls(op).min(WINDOW);
            let seed = fault
                .rate()
                .map_or(0, |r| fault_matrix::seed_that_fires(7, r, window).unwrap());
            let mut rule = fault.rule(op, "", seed);
            rule.as_object_mut().unwrap().remove("tenant");
            if fault.rate().is_some() {
                rule["max_hits"] = json!(WINDOW);
            }
            cells.push(Cell {
                op: op.clone(),
                fault,
                seed,
                rule,
            });
        }
    }
    // A pool, not batches: a cell that waits out a lease or a latency spike does not hold up
    // the others (most of a cell's time is waiting, so more cells than cores run at once).
    let mut runs: Vec<(usize, CellRun)> = futures::stream::iter(cells.iter().enumerate())
        .map(|(i, c)| {
            let events = events.clone();
            async move { (i, run_cell(Some(c.rule.clone()), events).await) }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    runs.sort_by_key(|(i, _)| *i);
    let runs: Vec<CellRun> = runs.into_iter().map(|(_, r)| r).collect();

    let mut table = String::new();
    writeln!(
        table,
        "# Fault matrix: {FUNCTION}\n\nPer cell: a fresh tenant with the same {}-node fleet, the \
         scheduled trigger then the on-demand one (the second run diffs against the first), SDK \
         attempts 1, redeliveries bounded at {MAX_REDELIVERIES} per trigger, a claim held past \
         its {} s deadline waited out, continuations followed. Rate rules are armed for the \
         first {WINDOW} calls of their operation. Reference: a fault-free tenant; a cell passes \
         when its bucket holds the same keys and bytes (manifests without timing). Faults \
         injected = requests the rule throttled, failed or delayed.\n",
        NODES,
        LEASE.as_secs()
    )
    .unwrap();
    writeln!(
        table,
        "| operation | fault | seed | outcome | redeliveries per trigger | invocations per trigger | faults injected | error types | bucket | wall |"
    )
    .unwrap();
    writeln!(
        table,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    let mut failures = Vec::new();
    let (mut total_injected, mut total_redeliveries) = (0u64, 0usize);
    for (cell, run) in cells.iter().zip(&runs) {
        let label = cell.fault.label();
        let n_injected = match cell.fault {
            Fault::Latency => run.rule_hits,
            _ => injected(&run.counters, &cell.op),
        };
        total_injected += n_injected;
        let redeliveries: usize = run.redeliveries.iter().sum();
        total_redeliveries += redeliveries;
        let d = bucket::differences(&run.objects, &reference.objects);
        let outcome = if !run.violations.is_empty() {
            "FAILED".to_owned()
        } else if redeliveries == 0 {
            "completed first time".to_owned()
        } else {
            format!("completed after {redeliveries} redelivery(ies)")
        };
        writeln!(
            table,
            "| `{}` | {label} | {} | {outcome} | {:?} | {:?} | {n_injected} | {:?} | {} | {:.1} s |",
            cell.op,
            cell.fault
                .rate()
                .map_or("-".to_owned(), |_| cell.seed.to_string()),
            run.redeliveries,
            run.invocations,
            run.errors,
            if d.is_empty() {
                "= fault-free".to_owned()
            } else {
                format!("{} objects differ", d.len())
            },
            run.wall.as_secs_f64()
        )
        .unwrap();
        if n_injected == 0 {
            failures.push(format!("{} × {label}: no fault injected", cell.op));
        }
        if !run.violations.is_empty() {
            failures.push(format!("{} × {label}: {:?}", cell.op, run.violations));
        }
        if !d.is_empty() {
            failures.push(format!(
                "{} × {label}: bucket differs from the fault-free one:\n  {}",
                cell.op,
                d.iter().take(10).cloned().collect::<Vec<_>>().join("\n  ")
            ));
        }
    }
    let wall = started.elapsed();
    writeln!(
        table,
        "\n{} cells, {total_injected} faults injected, {total_redeliveries} redeliveries, \
         wall {:.1} s.",
        cells.len(),
        wall.as_secs_f64()
    )
    .unwrap();
    let dir = repo_root().join("target/reliability");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("fault-matrix-{FUNCTION}.md")), &table).unwrap();
    println!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
