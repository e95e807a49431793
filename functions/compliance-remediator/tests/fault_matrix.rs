//! Fault matrix: every AWS operation an enforcing sweep and its follow-up sweep call (plan,
//! send patch commands and association runs, then verify) × {throttling 30 %, 5xx 10 %, a
//! 1.5 s latency spike}. Each cell runs both sweeps on a fresh tenant with the same seeded
//! fleet and one seeded fault rule; a failed delivery must carry a retryable error type and is
//! redelivered until it succeeds. The final state (commands and their targets, association
//! runs, ledger attempts, compliance) must equal a fault-free tenant's. Cells run a few at a
//! time, each on its own tenant.
//!
//! The SDK runs with one attempt per call (`AWS_MAX_ATTEMPTS=1`) so that injected faults reach
//! the function instead of being absorbed by the SDK's retries.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autopilot_harness::fault_matrix::{self, Fault, diff, injected, operations};
use autopilot_harness::{TestEnv, reliability, repo_root};
use common::*;
use serde_json::{Value, json};

const FUNCTION: &str = "compliance-remediator";
const FLEET_SEED: u64 = 31;
const FLEET_SIZE: usize = 20;
const MAX_REDELIVERIES: usize = 10;
/// Remaining time given to each invocation (a claim left INPROGRESS holds until then). The
/// throttled UpdateItem cell's sweep sometimes needs more than 8 s on a loaded machine.
const LEASE: Duration = Duration::from_secs(20);
const CELLS_AT_ONCE: usize = 3;

struct CellRun {
    redeliveries: Vec<usize>,
    errors: BTreeMap<String, usize>,
    violations: Vec<String>,
    fingerprint: Value,
    counters: Value,
    rule_hits: u64,
}

async fn run_cell(fault: Option<(Fault, String, u64)>) -> CellRun {
    let env = TestEnv::new().await.unwrap();
    seed_count(&env, FLEET_SEED, FLEET_SIZE).await;
    let nodes = noncompliant_online(&env).await;
    let (sb, _) = sandbox(
        &env,
        &policy(100, ""),
        &[
            ("DRY_RUN", "false"),
            ("AWS_MAX_ATTEMPTS", "1"),
            ("CHECKPOINT_MARGIN_SECONDS", "1"),
        ],
    )
    .await;
    // Setup calls (seeding, the policy parameter) are not the function's.
    env.control
        .call("DELETE", &format!("counters?tenant={}", env.tenant), None)
        .await
        .unwrap();
    if let Some((f, op, seed)) = fault {
        env.control
            .set_faults(json!([f.rule(&op, &env.tenant, seed)]))
            .await
            .unwrap();
    }
    let mut run = CellRun {
        redeliveries: Vec::new(),
        errors: BTreeMap::new(),
        violations: Vec::new(),
        fingerprint: Value::Null,
        counters: Value::Null,
        rule_hits: 0,
    };
    // The first sweep sends; the second verifies what the first sent.
    for (n, event) in [sweep_event(&env), sweep_event(&env)].iter().enumerate() {
        let bytes = serde_json::to_vec(event).unwrap();
        let d = fault_matrix::deliver_until_ok(&sb, &bytes, LEASE, MAX_REDELIVERIES)
            .await
            .unwrap();
        for (t, k) in d.errors {
            *run.errors.entry(t).or_insert(0) += k;
        }
        if let Some(v) = d.violation {
            run.violations.push(format!("sweep {n}: {v}"));
        }
        run.redeliveries.push(d.redeliveries);
    }
    if !run.violations.is_empty() {
        // Why each delivery failed, from the function's own log.
        for line in sb.logs().iter().filter(|l| l.contains("invocation failed")) {
            eprintln!("  {line}");
        }
    }
    run.rule_hits = fault_matrix::rule_hits(&env).await.unwrap();
    fault_matrix::clear_faults(&env).await.unwrap();
    run.counters = env.control.counters(&env.tenant).await.unwrap()["counters"].clone();
    run.fingerprint = fingerprint(&env, &nodes).await;
    run
}

/// Side effects without ids: the harness fingerprint, the node sets of the patch commands,
/// the ledger's attempt per candidate node (status, attempts) and each node's Patch status.
async fn fingerprint(env: &TestEnv, nodes: &[String]) -> Value {
    let mut doc = reliability::side_effects(env).await.unwrap();
    let mut targets: Vec<Vec<String>> = commands(env)
        .await
        .into_iter()
        .map(|mut c| {
            c.sort();
            c
        })
        .collect();
    targets.sort();
    doc["command_targets"] = json!(targets);
    let compliance = env.control.state("compliance", &env.tenant).await.unwrap();
    let mut attempts = serde_json::Map::new();
    for node in nodes {
        let a = attempt(env, node, "Patch").await;
        attempts.insert(
            node.clone(),
            json!({
                "status": a.as_ref().map(|a| a["status"].clone()),
                "attempts": a.as_ref().map(|a| a["attempts"].clone()),
                "patch": compliance["Resources"][node]["Patch"]["Status"],
            }),
        );
    }
    doc["attempts"] = Value::Object(attempts);
    doc
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_under_every_fault_converges_to_the_fault_free_state() {
    let started = Instant::now();
    let reference = run_cell(None).await;
    assert!(
        reference.violations.is_empty() && reference.errors.is_empty(),
        "fault-free run failed: {:?} {:?}",
        reference.violations,
        reference.errors
    );
    let ops = operations(&reference.counters);
    for must in ["ssm:SendCommand", "ssm:ListComplianceItems", "s3:PutObject"] {
        assert!(ops.iter().any(|o| o == must), "{must} not called: {ops:?}");
    }
    assert!(
        reference.fingerprint["commands"].as_u64().unwrap() > 0,
        "the fault-free sweep sent nothing: {}",
        reference.fingerprint
    );
    eprintln!("{FUNCTION}: operations called by two sweeps: {ops:?}");

    let mut table = String::new();
    writeln!(
        table,
        "# Fault matrix: {FUNCTION}\n\nEvents per cell: an enforcing sweep then a verifying sweep \
         of a seeded {FLEET_SIZE}-node fleet (fresh tenant each, SDK attempts 1, redeliveries \
         bounded at {MAX_REDELIVERIES}, a claim held past its {} s deadline waited out, \
         {CELLS_AT_ONCE} cells at a time). \
         Reference: a fault-free tenant. Reports in S3 are at-least-once: extras are counted.\n",
        LEASE.as_secs()
    )
    .unwrap();
    writeln!(
        table,
        "| operation | fault | seed | outcome | redeliveries per event | faults injected | error types | extra reports | state |"
    )
    .unwrap();
    writeln!(
        table,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    let mut want = reference.fingerprint.clone();
    let want_reports = want["s3_put_object"].take().as_u64().unwrap();
    let mut failures = Vec::new();
    let (mut cells, mut total_injected, mut total_redeliveries) = (0, 0u64, 0usize);
    // `FAULT_MATRIX_ONLY=<op>,<op>` runs only those operations' cells (to study one).
    let only: Vec<String> = std::env::var("FAULT_MATRIX_ONLY")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let ops: Vec<&String> = ops
        .iter()
        .filter(|o| only.is_empty() || only.contains(o))
        .collect();
    let calls = |op: &str| reference.counters[op]["calls"].as_u64().unwrap_or(0);
    // Every cell on its own tenant, a few at a time: most of a cell's wall time is waiting
    // (latency, a claim's lease). The slowest (throttling an often-called operation) start first.
    let mut order: Vec<(String, Fault)> = ops
        .iter()
        .flat_map(|op| Fault::ALL.map(|f| ((*op).clone(), f)))
        .collect();
    order.sort_by_key(|(op, f)| std::cmp::Reverse((*f == Fault::Throttle, calls(op))));
    let gate = Arc::new(tokio::sync::Semaphore::new(CELLS_AT_ONCE));
    let mut handles = BTreeMap::new();
    for (op, fault) in order {
        let seed = fault.rate().map_or(0, |r| {
            fault_matrix::seed_that_fires(7, r, calls(&op)).unwrap()
        });
        // Taken before spawning, so that cells start in this order.
        let permit = gate.clone().acquire_owned().await.unwrap();
        let cell = (op.clone(), fault.label());
        let run = tokio::spawn(async move {
            eprintln!("cell {op} × {}", fault.label());
            let run = run_cell(Some((fault, op, seed))).await;
            drop(permit);
            run
        });
        handles.insert(cell, (seed, run));
    }
    for op in ops {
        for fault in Fault::ALL {
            let (seed, run) = handles.remove(&(op.clone(), fault.label())).unwrap();
            let run = run.await.unwrap();
            cells += 1;
            let n_injected = match fault {
                Fault::Latency => run.rule_hits,
                _ => injected(&run.counters, op),
            };
            total_injected += n_injected;
            let redeliveries: usize = run.redeliveries.iter().sum();
            total_redeliveries += redeliveries;
            let mut got = run.fingerprint.clone();
            let extra = got["s3_put_object"].take().as_u64().unwrap() as i64 - want_reports as i64;
            let same = got == want && extra >= 0;
            let outcome = if !run.violations.is_empty() {
                "FAILED".to_owned()
            } else if redeliveries == 0 {
                "completed first time".to_owned()
            } else {
                format!("completed after {redeliveries} redelivery(ies)")
            };
            writeln!(
                table,
                "| `{op}` | {} | {} | {outcome} | {:?} | {n_injected} | {:?} | {extra} | {} |",
                fault.label(),
                fault.rate().map_or("-".to_owned(), |_| seed.to_string()),
                run.redeliveries,
                run.errors,
                if same { "= fault-free" } else { "DIFFERS" }
            )
            .unwrap();
            if n_injected == 0 {
                failures.push(format!("{op} × {}: no fault injected", fault.label()));
            }
            if !run.violations.is_empty() {
                failures.push(format!("{op} × {}: {:?}", fault.label(), run.violations));
            }
            if !same {
                let mut d = Vec::new();
                diff("", &got, &want, &mut d);
                failures.push(format!(
                    "{op} × {}: state differs (got != fault-free), extra reports {extra}:\n  {}",
                    fault.label(),
                    d.join("\n  ")
                ));
            }
        }
    }
    writeln!(
        table,
        "\n{cells} cells, {total_injected} faults injected, {total_redeliveries} redeliveries, \
         wall {:.1} s.",
        started.elapsed().as_secs_f64()
    )
    .unwrap();
    let dir = repo_root().join("target/reliability");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("fault-matrix-{FUNCTION}.md")), &table).unwrap();
    println!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
