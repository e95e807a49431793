//! Fault matrix: every AWS operation the function calls for an alarm's lifecycle (ALARM,
//! a repeat on a second instance, OK) × {throttling 30 %, 5xx 10 %, a 1.5 s latency spike}.
//! Each cell runs the events on a fresh tenant with one seeded fault rule; a failed delivery
//! must carry a retryable error type and is redelivered (as EventBridge/Lambda would) until it
//! succeeds. The tenant's final, id-free emulator state must equal a fault-free tenant's.
//!
//! The SDK runs with one attempt per call (`AWS_MAX_ATTEMPTS=1`): with the deployed 5 adaptive
//! attempts the SDK absorbs nearly every injected fault, and the redelivery paths — the ones
//! that can duplicate or half-do work — would go untested.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use autopilot_harness::fault_matrix::{self, Fault, diff, injected, operations};
use autopilot_harness::reliability;
use autopilot_harness::{Sandbox, TestEnv, repo_root};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_opsitem-creator");
const FUNCTION: &str = "opsitem-creator";
/// An alarm's lifecycle: create, repeat (count + new resource), auto-resolve.
const SAMPLES: [&str; 3] = [
    "alarm-metric-alarm.json",
    "alarm-metric-alarm-second-instance.json",
    "alarm-metric-ok.json",
];
const MAX_REDELIVERIES: usize = 10;
/// Remaining time given to each invocation: an idempotency claim whose completion could not
/// be saved stays INPROGRESS until this deadline, as in Powertools.
const LEASE: Duration = Duration::from_secs(5);

/// How one cell went.
struct CellRun {
    /// Redeliveries each event needed.
    redeliveries: Vec<usize>,
    /// Error types of the failed deliveries.
    errors: BTreeMap<String, usize>,
    /// Failed deliveries whose error type is not retryable, or events never completed.
    violations: Vec<String>,
    fingerprint: Value,
    counters: Value,
    /// Requests the cell's rule matched (latency included), from the emulator.
    rule_hits: u64,
}

async fn run_cell(fault: Option<(Fault, &str, u64)>) -> CellRun {
    let env = TestEnv::new().await.unwrap();
    let mut spec = env.function(FUNCTION, Path::new(BIN)).unwrap();
    spec.env.insert("AWS_MAX_ATTEMPTS".into(), "1".into());
    let sb = Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();
    if let Some((f, op, seed)) = fault {
        env.control
            .set_faults(json!([f.rule(op, &env.tenant, seed)]))
            .await
            .unwrap();
    }
    let samples = reliability::fresh_samples(&env, FUNCTION).unwrap();
    let mut event_ids = Vec::new();
    let mut run = CellRun {
        redeliveries: Vec::new(),
        errors: BTreeMap::new(),
        violations: Vec::new(),
        fingerprint: Value::Null,
        counters: Value::Null,
        rule_hits: 0,
    };
    for name in SAMPLES {
        let (_, event) = samples.iter().find(|(n, _)| n == name).unwrap();
        event_ids.push(event["id"].as_str().unwrap_or_default().to_owned());
        let bytes = serde_json::to_vec(event).unwrap();
        let d = fault_matrix::deliver_until_ok(&sb, &bytes, LEASE, MAX_REDELIVERIES)
            .await
            .unwrap();
        for (t, n) in d.errors {
            *run.errors.entry(t).or_insert(0) += n;
        }
        if let Some(v) = d.violation {
            run.violations.push(format!("{name}: {v}"));
        }
        run.redeliveries.push(d.redeliveries);
    }
    run.rule_hits = fault_matrix::rule_hits(&env).await.unwrap();
    fault_matrix::clear_faults(&env).await.unwrap();
    run.counters = env.control.counters(&env.tenant).await.unwrap()["counters"].clone();
    run.fingerprint = fingerprint(&env, &event_ids).await;
    run
}

/// The harness's side-effect fingerprint plus every OpsItem's OperationalData (the tenant's
/// account and the events' ids replaced by placeholders; the function's timestamps come from
/// the events, so they compare as they are), and the audit events delivered.
async fn fingerprint(env: &TestEnv, event_ids: &[String]) -> Value {
    let mut doc = reliability::side_effects(env).await.unwrap();
    let account = reliability::test_account(env);
    let items = env.control.state("opsitems", &env.tenant).await.unwrap();
    let mut data: Vec<Value> = items["OpsItems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let fields: BTreeMap<String, Value> = i["OperationalData"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let mut text = v["Value"]
                        .as_str()
                        .unwrap_or_default()
                        .replace(&account, "<account>");
                    for (n, id) in event_ids.iter().enumerate() {
                        text = text.replace(id, &format!("<event {n}>"));
                    }
                    if k == "/aws/resources" {
                        // Stored sorted; the account placeholder changes the order.
                        let mut list: Vec<Value> = serde_json::from_str(&text).unwrap();
                        list.sort_by_key(Value::to_string);
                        text = Value::Array(list).to_string();
                    }
                    (k.clone(), json!(text))
                })
                .collect();
            json!({"title": i["Title"], "status": i["Status"], "data": fields})
        })
        .collect();
    data.sort_by_key(Value::to_string);
    doc["opsitem_data"] = json!(data);
    let counters = env.control.counters(&env.tenant).await.unwrap();
    doc["audit_put_events"] = json!(autopilot_harness::emulator::counter_field(
        &counters,
        "events:PutEvents",
        "ok"
    ));
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
    assert!(
        reference.redeliveries.iter().all(|n| *n == 0),
        "fault-free run needed redeliveries"
    );
    let ops = operations(&reference.counters);
    // The lifecycle must touch OpsCenter, the stores, the topic and the audit bus; a matrix
    // over fewer operations would prove less than it claims.
    for must in [
        "ssm:CreateOpsItem",
        "ssm:UpdateOpsItem",
        "sns:Publish",
        "events:PutEvents",
    ] {
        assert!(ops.iter().any(|o| o == must), "{must} not called: {ops:?}");
    }
    assert!(ops.iter().any(|o| o.starts_with("dynamodb:")), "{ops:?}");
    eprintln!("{FUNCTION}: operations called by {SAMPLES:?}: {ops:?}");

    let mut table = String::new();
    writeln!(
        table,
        "# Fault matrix: {FUNCTION}\n\nEvents per cell: {} (fresh tenant each, SDK attempts 1, \
         redeliveries bounded at {MAX_REDELIVERIES}, a claim held past its {} s deadline waited out). \
         Reference: a fault-free tenant. Faults injected = requests the rule throttled, failed \
         or delayed. Notifications and audit events are at-least-once: extras are counted, a \
         missing one fails.\n",
        SAMPLES.join(" → "),
        LEASE.as_secs()
    )
    .unwrap();
    writeln!(
        table,
        "| operation | fault | seed | outcome | redeliveries per event | faults injected | error types | extra notifications / audit events | state |"
    )
    .unwrap();
    writeln!(
        table,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    let mut failures = Vec::new();
    let (mut cells, mut total_injected, mut total_redeliveries) = (0, 0u64, 0usize);
    let at_least_once = ["sns_publish", "audit_put_events"];
    let mut want = reference.fingerprint.clone();
    let want_extra: Vec<u64> = at_least_once
        .iter()
        .map(|k| want[*k].take().as_u64().unwrap())
        .collect();
    for op in &ops {
        let calls = autopilot_harness::emulator::counter_field(
            &json!({ "counters": reference.counters }),
            op,
            "calls",
        );
        for fault in Fault::ALL {
            let seed = fault
                .rate()
                .map_or(0, |r| fault_matrix::seed_that_fires(7, r, calls).unwrap());
            let run = run_cell(Some((fault, op, seed))).await;
            cells += 1;
            let n_injected = match fault {
                Fault::Latency => run.rule_hits,
                _ => injected(&run.counters, op),
            };
            total_injected += n_injected;
            let redeliveries: usize = run.redeliveries.iter().sum();
            total_redeliveries += redeliveries;
            let mut got = run.fingerprint.clone();
            let extra: Vec<i64> = at_least_once
                .iter()
                .zip(&want_extra)
                .map(|(k, w)| got[*k].take().as_u64().unwrap() as i64 - *w as i64)
                .collect();
            let same = got == want && extra.iter().all(|e| *e >= 0);
            let outcome = if !run.violations.is_empty() {
                "FAILED".to_owned()
            } else if redeliveries == 0 {
                "completed first time".to_owned()
            } else {
                format!("completed after {redeliveries} redelivery(ies)")
            };
            writeln!(
                table,
                "| `{op}` | {} | {} | {outcome} | {:?} | {n_injected} | {:?} | {} / {} | {} |",
                fault.label(),
                fault.rate().map_or("-".to_owned(), |_| seed.to_string()),
                run.redeliveries,
                run.errors,
                extra[0],
                extra[1],
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
                    "{op} × {}: state differs (got != fault-free), {at_least_once:?} extra {extra:?}:\n  {}",
                    fault.label(),
                    d.join("\n  ")
                ));
            }
        }
    }
    let wall = started.elapsed();
    writeln!(
        table,
        "\n{cells} cells, {total_injected} faults injected, {total_redeliveries} redeliveries, \
         wall {:.1} s.",
        wall.as_secs_f64()
    )
    .unwrap();
    let dir = repo_root().join("target/reliability");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("fault-matrix-{FUNCTION}.md")), &table).unwrap();
    println!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
