//! Fault matrix: every AWS operation the function calls for an incident's lifecycle × {throttling
//! 30 %, 5xx 10 %, a short latency spike}. The lifecycle: a critical alarm in ALARM (response
//! plan → runbook, incident OpsItem, timeline, notification), its runbook Failed (escalation),
//! a GuardDuty finding (a second incident and runbook), that runbook's Success (resolution),
//! then the alarm back to OK (no action). Each cell runs the events on a fresh tenant with one
//! seeded fault rule; a failed delivery must carry a retryable error type and is redelivered
//! (as EventBridge/Lambda would) until it succeeds. The tenant's final, id-free emulator state
//! must equal a fault-free tenant's.
//!
//! The SDK runs with one attempt per call (`AWS_MAX_ATTEMPTS=1`): with the deployed attempts
//! the SDK absorbs nearly every injected fault, and the redelivery paths — the ones that can
//! duplicate or half-do work — would go untested. Cells are independent tenants, so they run
//! a few at a time: most of a cell's wall time is injected latency and waiting out a claim.
//!
//! The emulator has no Incident Manager: the second test runs the handler in-process with the
//! Incident Manager backend answered by a stateful stand-in (idempotent by client token, as the
//! service is) that fails its own operations on a schedule, everything else against the
//! emulator.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autopilot_harness::emulator::counter_field;
use autopilot_harness::fault_matrix::{self, Fault, diff, injected, operations};
use autopilot_harness::reliability::{self, without_ids};
use autopilot_harness::{HarnessError, Sandbox, TestEnv, repo_root};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_incident-response");
const FUNCTION: &str = "incident-response";
/// EventBridge retries for up to 24 h; the bound only stops a livelock. An event of the
/// lifecycle makes up to ~8 `dynamodb:UpdateItem` calls, so at 30 % throttling one delivery in
/// ~8 gets through them all: 10 redeliveries were sometimes not enough.
const MAX_REDELIVERIES: usize = 40;
/// Remaining time given to each invocation: an idempotency claim whose completion could not
/// be saved (or released) stays INPROGRESS until this deadline, as in Powertools.
const LEASE: Duration = Duration::from_secs(3);
/// The latency spike: two calls of the operation held this long (enough to reorder nothing
/// here, cheap enough for 10+ cells).
const SPIKE_MS: u64 = 500;
const CELLS_AT_ONCE: usize = 4;

/// One lifecycle step: a sample, and for status samples the runbook it reports on.
struct Step {
    sample: &'static str,
    follows: Option<&'static str>,
    /// What a fault-free delivery decides.
    decision: &'static str,
}

const LIFECYCLE: [Step; 5] = [
    Step {
        sample: "alarm-critical.json",
        follows: None,
        decision: "opened",
    },
    Step {
        sample: "automation-failed.json",
        follows: Some("AWS-RestartEC2Instance"),
        decision: "escalated",
    },
    Step {
        sample: "guardduty-finding-high.json",
        follows: None,
        decision: "opened",
    },
    Step {
        sample: "automation-success.json",
        follows: Some("AWSSupport-ContainEC2Instance"),
        decision: "resolved",
    },
    // The alarm recovers: `alarm-ok` below turns the critical alarm's sample to OK.
    Step {
        sample: "alarm-ok",
        follows: None,
        decision: "ignored",
    },
];

fn label(fault: Fault) -> String {
    match fault {
        Fault::Latency => format!("latency {SPIKE_MS} ms x2"),
        f => f.label().to_owned(),
    }
}

fn rule(fault: Fault, op: &str, tenant: &str, seed: u64) -> Value {
    match fault {
        Fault::Latency => {
            json!({"operation": op, "latency_ms": SPIKE_MS, "max_hits": 2, "tenant": tenant})
        }
        f => f.rule(op, tenant, seed),
    }
}

/// The event of `step` for the tenant: fresh ids, and for a status sample the tenant's own
/// execution of the runbook (which the emulator is told has ended with the sample's status).
async fn event_for(env: &TestEnv, samples: &[(String, Value)], step: &Step) -> Value {
    let find = |name: &str| samples.iter().find(|(n, _)| n == name).unwrap().1.clone();
    if step.sample == "alarm-ok" {
        let mut ev = find("alarm-critical.json");
        ev["id"] = json!(uuid::Uuid::new_v4().to_string());
        ev["detail"]["previousState"]["value"] = json!("ALARM");
        ev["detail"]["state"]["value"] = json!("OK");
        return ev;
    }
    let mut ev = find(step.sample);
    let Some(document) = step.follows else {
        return ev;
    };
    let s = env.control.state("automations", &env.tenant).await.unwrap();
    let id = s["AutomationExecutions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["DocumentName"] == document)
        .and_then(|a| a["AutomationExecutionId"].as_str())
        .unwrap_or_else(|| panic!("no execution of {document}: {s}"))
        .to_owned();
    let status = ev["detail"]["Status"].as_str().unwrap().to_owned();
    env.control
        .call(
            "POST",
            &format!("automations/{id}"),
            Some(json!({"tenant": env.tenant, "status": status})),
        )
        .await
        .unwrap();
    let account = reliability::test_account(env);
    ev["detail"]["ExecutionId"] = json!(id);
    ev["detail"]["Definition"] = json!(document);
    ev["resources"] = json!([
        format!("arn:aws:ssm:us-east-1:{account}:automation-execution/{id}"),
        format!("arn:aws:ssm:us-east-1:{account}:automation-definition/{document}:1"),
    ]);
    ev
}

/// How one cell went.
struct CellRun {
    /// Redeliveries each event needed.
    redeliveries: Vec<usize>,
    /// Error types of the failed deliveries.
    errors: BTreeMap<String, usize>,
    /// Failed deliveries whose error type is not retryable, or events never completed.
    violations: Vec<String>,
    /// The decision of each event's successful delivery.
    decisions: Vec<String>,
    /// Per event: a delivery failed to save (or release) its idempotency record.
    store_errors: Vec<bool>,
    fingerprint: Value,
    counters: Value,
    /// Requests the cell's rule matched (latency included), from the emulator.
    rule_hits: u64,
    wall: Duration,
}

async fn run_cell(fault: Option<(Fault, String, u64)>) -> CellRun {
    let started = Instant::now();
    let env = TestEnv::new().await.unwrap();
    let mut spec = env.function(FUNCTION, Path::new(BIN)).unwrap();
    spec.env.insert("AWS_MAX_ATTEMPTS".into(), "1".into());
    let mut sb = Sandbox::spawn(spec.clone()).await.unwrap();
    sb.init_duration().await.unwrap();
    if let Some((f, op, seed)) = &fault {
        env.control
            .set_faults(json!([rule(*f, op, &env.tenant, *seed)]))
            .await
            .unwrap();
    }
    let samples = reliability::fresh_samples(&env, FUNCTION).unwrap();
    let mut run = CellRun {
        redeliveries: Vec::new(),
        errors: BTreeMap::new(),
        violations: Vec::new(),
        decisions: Vec::new(),
        store_errors: Vec::new(),
        fingerprint: Value::Null,
        counters: Value::Null,
        rule_hits: 0,
        wall: Duration::ZERO,
    };
    for step in &LIFECYCLE {
        let event = event_for(&env, &samples, step).await;
        let bytes = serde_json::to_vec(&event).unwrap();
        let mut timeouts = 0;
        let mut d = loop {
            match fault_matrix::deliver_until_ok(&sb, &bytes, LEASE, MAX_REDELIVERIES).await {
                Ok(d) => break d,
                // Lambda ends an invocation at its deadline and discards the sandbox (after
                // throttling, the SDK's adaptive rate limiter can hold the next calls past
                // it); the event is retried like any failed delivery.
                Err(HarnessError::Timeout(_)) if timeouts < MAX_REDELIVERIES => {
                    timeouts += 1;
                    sb = Sandbox::spawn(spec.clone()).await.unwrap();
                    sb.init_duration().await.unwrap();
                }
                Err(e) => panic!("{}: {e}", step.sample),
            }
        };
        if timeouts > 0 {
            d.errors.insert("InvocationTimedOut".into(), timeouts);
            d.redeliveries += timeouts;
        }
        run.store_errors
            .push(d.errors.contains_key("IdempotencyStoreError"));
        for (t, n) in d.errors {
            *run.errors.entry(t).or_insert(0) += n;
        }
        if let Some(v) = d.violation {
            run.violations.push(format!("{}: {v}", step.sample));
            break;
        }
        run.redeliveries.push(d.redeliveries);
        run.decisions
            .push(d.response.as_ref().map_or_else(String::new, |r| {
                r["results"][0]["decision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            }));
    }
    run.rule_hits = fault_matrix::rule_hits(&env).await.unwrap();
    fault_matrix::clear_faults(&env).await.unwrap();
    run.counters = env.control.counters(&env.tenant).await.unwrap()["counters"].clone();
    run.fingerprint = fingerprint(&env).await;
    run.wall = started.elapsed();
    run
}

/// The harness's side-effect fingerprint (OpsItems with their mirrored timelines, runbooks,
/// notifications) plus every incident OpsItem's OperationalData besides the timeline, every
/// execution's parameters, and the audit events delivered; per-tenant ids replaced.
async fn fingerprint(env: &TestEnv) -> Value {
    let mut doc = reliability::side_effects(env).await.unwrap();
    let account = reliability::test_account(env);
    let plain = |text: &str| without_ids(&text.replace(&account, "<account>"));
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
                // Covered entry by entry by `side_effects`; its entries carry clock times.
                .filter(|(k, _)| *k != "autopilot:timeline")
                .map(|(k, v)| (k.clone(), json!(plain(v["Value"].as_str().unwrap_or_default()))))
                .collect();
            json!({"title": i["Title"], "status": i["Status"], "category": i["Category"], "data": fields})
        })
        .collect();
    data.sort_by_key(Value::to_string);
    doc["opsitem_data"] = json!(data);
    let runs = env.control.state("automations", &env.tenant).await.unwrap();
    let mut parameters: Vec<Value> = runs["AutomationExecutions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| json!({"document": a["DocumentName"], "parameters": a["Parameters"]}))
        .collect();
    parameters.sort_by_key(Value::to_string);
    doc["automation_parameters"] =
        serde_json::from_str(&plain(&json!(parameters).to_string())).unwrap();
    let counters = env.control.counters(&env.tenant).await.unwrap();
    doc["audit_put_events"] = json!(counter_field(&counters, "events:PutEvents", "ok"));
    doc
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_under_every_fault_converges_to_the_fault_free_state() {
    let started = Instant::now();
    // moto loads its Parameter Store backend on the first call (~1.8 s, more on a loaded
    // machine): paid here, not inside the reference's first invocation.
    let warm = TestEnv::new().await.unwrap();
    let _ = aws_sdk_ssm::Client::new(&warm.sdk().await)
        .get_parameter()
        .name("/autopilot-test/fault-matrix-warm-up")
        .send()
        .await;
    // The reference's call counts choose the seeds: it must run without a single failure. An
    // invocation that overran its deadline on a loaded machine is a reason to run it again.
    let mut reference = run_cell(None).await;
    for _ in 0..2 {
        if !reference.errors.contains_key("InvocationTimedOut") {
            break;
        }
        reference = run_cell(None).await;
    }
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
    let want_decisions: Vec<&str> = LIFECYCLE.iter().map(|s| s.decision).collect();
    assert_eq!(
        reference.decisions, want_decisions,
        "the lifecycle's decisions"
    );
    let ops = operations(&reference.counters);
    // The lifecycle must touch OpsCenter, Automation, the stores, the topic and the audit
    // bus; a matrix over fewer operations would prove less than it claims.
    for must in [
        "ssm:CreateOpsItem",
        "ssm:UpdateOpsItem",
        "ssm:StartAutomationExecution",
        "sns:Publish",
        "events:PutEvents",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",
    ] {
        assert!(ops.iter().any(|o| o == must), "{must} not called: {ops:?}");
    }
    let names: Vec<&str> = LIFECYCLE.iter().map(|s| s.sample).collect();
    eprintln!(
        "{FUNCTION}: operations called by {names:?} ({:.1} s fault-free): {ops:?}",
        reference.wall.as_secs_f64()
    );

    let mut want = reference.fingerprint.clone();
    let at_least_once = ["sns_publish", "audit_put_events"];
    let want_extra: Vec<u64> = at_least_once
        .iter()
        .map(|k| want[*k].take().as_u64().unwrap())
        .collect();

    // Every cell, a few at a time.
    let mut cells = Vec::new();
    for op in &ops {
        let calls = counter_field(&json!({ "counters": reference.counters }), op, "calls");
        for fault in Fault::ALL {
            let seed = fault
                .rate()
                .map_or(0, |r| fault_matrix::seed_that_fires(7, r, calls).unwrap());
            cells.push((op.clone(), fault, seed));
        }
    }
    // The slowest cells first (throttling an operation called often: many redeliveries, each
    // slowed by the SDK's adaptive rate limiter), so they do not run last on their own.
    let calls = |op: &str| counter_field(&json!({ "counters": reference.counters }), op, "calls");
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by_key(|&i| {
        let (op, fault, _) = &cells[i];
        std::cmp::Reverse((*fault == Fault::Throttle, calls(op)))
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(CELLS_AT_ONCE));
    let mut handles: BTreeMap<usize, tokio::task::JoinHandle<CellRun>> = BTreeMap::new();
    for i in order {
        let (op, fault, seed) = cells[i].clone();
        // Taken before spawning, so that cells start in this order.
        let permit = gate.clone().acquire_owned().await.unwrap();
        handles.insert(
            i,
            tokio::spawn(async move {
                let run = run_cell(Some((fault, op, seed))).await;
                drop(permit);
                run
            }),
        );
    }

    let mut table = String::new();
    writeln!(
        table,
        "# Fault matrix: {FUNCTION}\n\nEvents per cell: {} (fresh tenant each, OpsCenter backend, \
         SDK attempts 1, redeliveries bounded at {MAX_REDELIVERIES}, a claim held past its {} s \
         deadline waited out, {CELLS_AT_ONCE} cells at a time). Reference: a fault-free tenant. \
         Faults injected = requests the rule throttled, failed or delayed. Notifications and \
         audit events are at-least-once: extras are counted, a missing one fails.\n",
        names.join(" → "),
        LEASE.as_secs()
    )
    .unwrap();
    writeln!(
        table,
        "| operation | fault | seed | outcome | redeliveries per event | faults injected | error types | extra notifications / audit events | state | wall |"
    )
    .unwrap();
    writeln!(
        table,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    let mut failures = Vec::new();
    let (mut total_injected, mut total_redeliveries) = (0u64, 0usize);
    for ((op, fault, seed), (_, handle)) in cells.iter().zip(handles) {
        let run = handle.await.unwrap();
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
        let fault_label = label(*fault);
        writeln!(
            table,
            "| `{op}` | {fault_label} | {} | {outcome} | {:?} | {n_injected} | {:?} | {} / {} | {} | {:.1} s |",
            fault.rate().map_or("-".to_owned(), |_| seed.to_string()),
            run.redeliveries,
            run.errors,
            extra[0],
            extra[1],
            if same { "= fault-free" } else { "DIFFERS" },
            run.wall.as_secs_f64()
        )
        .unwrap();
        if n_injected == 0 {
            failures.push(format!("{op} × {fault_label}: no fault injected"));
        }
        if !run.violations.is_empty() {
            failures.push(format!("{op} × {fault_label}: {:?}", run.violations));
        }
        // A follow-up whose work was done by a delivery that could not save its completion
        // (that delivery's audit event was sent) is answered `ignored` by the next one.
        let decided = run
            .decisions
            .iter()
            .zip(&want_decisions)
            .zip(&run.store_errors)
            .all(|((got, want), store_error)| got == want || (got == "ignored" && *store_error));
        if run.violations.is_empty() && !decided {
            failures.push(format!(
                "{op} × {fault_label}: decisions {:?} != {want_decisions:?}",
                run.decisions
            ));
        }
        if !same {
            let mut d = Vec::new();
            diff("", &got, &want, &mut d);
            failures.push(format!(
                "{op} × {fault_label}: state differs (got != fault-free), {at_least_once:?} extra {extra:?}:\n  {}",
                d.join("\n  ")
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

mod incident_manager {
    //! The Incident Manager backend under faults of its own operations.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use autopilot_harness::TestEnv;
    use autopilot_harness::reliability::{self, is_retryable, without_ids};
    use autopilot_shared::error::ErrorKind;
    use aws_sdk_ssmincidents::operation::create_timeline_event::{
        CreateTimelineEventError, CreateTimelineEventOutput,
    };
    use aws_sdk_ssmincidents::operation::start_incident::{
        StartIncidentError, StartIncidentOutput,
    };
    use aws_sdk_ssmincidents::operation::update_incident_record::{
        UpdateIncidentRecordError, UpdateIncidentRecordOutput,
    };
    use aws_sdk_ssmincidents::types::error::{InternalServerException, ThrottlingException};
    use aws_sdk_ssmincidents::types::{IncidentRecordStatus, ServiceCode};
    use aws_smithy_mocks::{MockResponse, MockResponseInterceptor, RuleMode, mock};
    use aws_smithy_types::error::ErrorMetadata;
    use incident_response::config::Config;
    use incident_response::{Deps, handle};
    use lambda_runtime::{Context, LambdaEvent};
    use serde_json::{Value, json};

    use super::{BIN, FUNCTION, LIFECYCLE, event_for};

    const OPERATIONS: [&str; 3] = [
        "StartIncident",
        "CreateTimelineEvent",
        "UpdateIncidentRecord",
    ];
    const LEASE: Duration = Duration::from_secs(3);
    const MAX_REDELIVERIES: usize = 20;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum ImFault {
        /// Calls 1, 4, 7, … of the operation are throttled (a third).
        Throttle,
        /// Calls 1, 11, 21, … fail with a 5xx (a tenth).
        ServerError,
    }

    /// A stand-in for Incident Manager: incident records, their timelines and updates, each
    /// applied once per client token; `fault` fails calls of one operation.
    #[derive(Default)]
    struct FakeIncidentManager {
        started: BTreeMap<String, String>,
        records: BTreeMap<String, Value>,
        timeline: BTreeMap<String, Vec<Value>>,
        tokens: BTreeSet<String>,
        fault: Option<(&'static str, ImFault)>,
        calls: BTreeMap<&'static str, u64>,
        injected: u64,
    }

    impl FakeIncidentManager {
        fn fails(&mut self, op: &'static str) -> Option<ImFault> {
            let n = self.calls.entry(op).or_insert(0);
            *n += 1;
            let fault = match self.fault {
                Some((o, ImFault::Throttle)) if o == op && *n % 3 == 1 => ImFault::Throttle,
                Some((o, ImFault::ServerError)) if o == op && *n % 10 == 1 => ImFault::ServerError,
                _ => return None,
            };
            self.injected += 1;
            Some(fault)
        }

        /// Records and timelines without ids and clocks, ordered by title.
        fn state(&self) -> Value {
            let mut out: Vec<Value> = self
                .records
                .iter()
                .map(|(arn, r)| {
                    let mut r = r.clone();
                    r["timeline"] = json!(self.timeline.get(arn).cloned().unwrap_or_default());
                    r
                })
                .collect();
            out.sort_by_key(|r| r["title"].to_string());
            json!(out)
        }
    }

    fn throttling() -> ThrottlingException {
        ThrottlingException::builder()
            .message("Rate exceeded")
            .service_code(ServiceCode::SsmIncidents)
            .quota_code("injected")
            .meta(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
            .build()
            .unwrap()
    }

    fn internal() -> InternalServerException {
        InternalServerException::builder()
            .message("injected")
            .meta(
                ErrorMetadata::builder()
                    .code("InternalServerException")
                    .message("injected")
                    .build(),
            )
            .build()
            .unwrap()
    }

    fn client(fake: &Arc<Mutex<FakeIncidentManager>>) -> aws_sdk_ssmincidents::Client {
        let f = fake.clone();
        let start =
            mock!(aws_sdk_ssmincidents::Client::start_incident).then_compute_response(move |req| {
                let mut im = f.lock().unwrap();
                match im.fails("StartIncident") {
                    Some(ImFault::Throttle) => {
                        return MockResponse::Error(StartIncidentError::ThrottlingException(
                            throttling(),
                        ));
                    }
                    Some(ImFault::ServerError) => {
                        return MockResponse::Error(StartIncidentError::InternalServerException(
                            internal(),
                        ));
                    }
                    None => {}
                }
                let token = req.client_token().unwrap_or_default().to_owned();
                let n = im.started.len() + 1;
                let arn = im
                    .started
                    .entry(token)
                    .or_insert_with(|| {
                        format!("arn:aws:ssm-incidents::123456789012:incident-record/plan/{n}")
                    })
                    .clone();
                im.records.entry(arn.clone()).or_insert_with(|| {
                    json!({"title": req.title(), "impact": req.impact(), "status": "OPEN",
                           "related": req.related_items().len()})
                });
                MockResponse::Output(
                    StartIncidentOutput::builder()
                        .incident_record_arn(arn)
                        .build()
                        .unwrap(),
                )
            });
        let f = fake.clone();
        let timeline = mock!(aws_sdk_ssmincidents::Client::create_timeline_event)
            .then_compute_response(move |req| {
                let mut im = f.lock().unwrap();
                match im.fails("CreateTimelineEvent") {
                    Some(ImFault::Throttle) => {
                        return MockResponse::Error(CreateTimelineEventError::ThrottlingException(
                            throttling(),
                        ));
                    }
                    Some(ImFault::ServerError) => {
                        return MockResponse::Error(
                            CreateTimelineEventError::InternalServerException(internal()),
                        );
                    }
                    None => {}
                }
                let arn = req.incident_record_arn().unwrap_or_default().to_owned();
                let token = format!("timeline#{}", req.client_token().unwrap_or_default());
                if im.tokens.insert(token) {
                    let data: Value =
                        serde_json::from_str(req.event_data().unwrap_or_default()).unwrap();
                    im.timeline.entry(arn.clone()).or_default().push(json!({
                        "type": req.event_type(),
                        "kind": data["kind"],
                        "text": without_ids(data["text"].as_str().unwrap_or_default()),
                    }));
                }
                MockResponse::Output(
                    CreateTimelineEventOutput::builder()
                        .incident_record_arn(arn)
                        .event_id("event")
                        .build()
                        .unwrap(),
                )
            });
        let f = fake.clone();
        let update = mock!(aws_sdk_ssmincidents::Client::update_incident_record)
            .then_compute_response(move |req| {
                let mut im = f.lock().unwrap();
                match im.fails("UpdateIncidentRecord") {
                    Some(ImFault::Throttle) => {
                        return MockResponse::Error(
                            UpdateIncidentRecordError::ThrottlingException(throttling()),
                        );
                    }
                    Some(ImFault::ServerError) => {
                        return MockResponse::Error(
                            UpdateIncidentRecordError::InternalServerException(internal()),
                        );
                    }
                    None => {}
                }
                let arn = req.arn().unwrap_or_default().to_owned();
                let token = format!("update#{}", req.client_token().unwrap_or_default());
                if im.tokens.insert(token)
                    && let Some(r) = im.records.get_mut(&arn)
                {
                    if let Some(i) = req.impact() {
                        r["impact"] = json!(i);
                    }
                    if req.status() == Some(&IncidentRecordStatus::Resolved) {
                        r["status"] = json!("RESOLVED");
                    }
                }
                MockResponse::Output(UpdateIncidentRecordOutput::builder().build())
            });
        let interceptor = MockResponseInterceptor::new()
            .rule_mode(RuleMode::MatchAny)
            .with_rule(&start)
            .with_rule(&timeline)
            .with_rule(&update);
        aws_sdk_ssmincidents::Client::from_conf(
            aws_sdk_ssmincidents::Config::builder()
                .behavior_version(aws_sdk_ssmincidents::config::BehaviorVersion::latest())
                .region(aws_sdk_ssmincidents::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_ssmincidents::config::Credentials::new(
                    "AKIDMOCK", "secret", None, None, "mock",
                ))
                // One attempt, as the emulator-bound clients: faults reach the handler.
                .retry_config(aws_sdk_ssmincidents::config::retry::RetryConfig::disabled())
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor)
                .build(),
        )
    }

    fn lambda_event(v: &Value) -> LambdaEvent<Box<serde_json::value::RawValue>> {
        let mut ctx = Context::default();
        let deadline = std::time::SystemTime::now() + LEASE;
        ctx.deadline = deadline
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        LambdaEvent::new(
            serde_json::value::RawValue::from_string(v.to_string()).unwrap(),
            ctx,
        )
    }

    struct ImRun {
        decisions: Vec<String>,
        redeliveries: usize,
        errors: BTreeMap<String, usize>,
        violations: Vec<String>,
        injected: u64,
        incidents: Value,
        emulator: Value,
    }

    async fn run(fault: Option<(&'static str, ImFault)>) -> ImRun {
        let env = TestEnv::new().await.unwrap();
        let fake = Arc::new(Mutex::new(FakeIncidentManager {
            fault,
            ..FakeIncidentManager::default()
        }));
        let mut vars = env.function(FUNCTION, Path::new(BIN)).unwrap().env;
        vars.insert("INCIDENT_BACKEND".into(), "incident-manager".into());
        vars.insert(
            "INCIDENT_RESPONSE_PLAN_ARN".into(),
            "arn:aws:ssm-incidents::123456789012:response-plan/plan".into(),
        );
        let config = Config::from_source(&autopilot_shared::config::Env::new(move |k| {
            vars.get(k).cloned().filter(|v| !v.is_empty())
        }))
        .unwrap();
        let deps =
            Deps::with_incident_client(config, &env.sdk_with_attempts(1).await, client(&fake));
        let samples = reliability::fresh_samples(&env, FUNCTION).unwrap();
        let mut out = ImRun {
            decisions: Vec::new(),
            redeliveries: 0,
            errors: BTreeMap::new(),
            violations: Vec::new(),
            injected: 0,
            incidents: Value::Null,
            emulator: Value::Null,
        };
        'steps: for step in &LIFECYCLE {
            let event = event_for(&env, &samples, step).await;
            let mut attempts = 0;
            loop {
                match handle(&deps, lambda_event(&event)).await {
                    Ok(r) => {
                        out.decisions.push(r.results[0].decision.clone());
                        break;
                    }
                    Err(e) => {
                        let t = e.error_type();
                        *out.errors.entry(t.to_owned()).or_insert(0) += 1;
                        if !is_retryable(t) || attempts == MAX_REDELIVERIES {
                            out.violations.push(format!("{}: {t}: {e}", step.sample));
                            break 'steps;
                        }
                        if t == "IdempotencyAlreadyInProgress" {
                            tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
                        }
                        attempts += 1;
                        out.redeliveries += 1;
                    }
                }
            }
        }
        {
            let im = fake.lock().unwrap();
            out.injected = im.injected;
            out.incidents = im.state();
        }
        out.emulator = reliability::side_effects(&env).await.unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn incident_manager_operations_under_faults_converge_to_the_fault_free_state() {
        let reference = run(None).await;
        assert!(
            reference.violations.is_empty(),
            "{:?}",
            reference.violations
        );
        assert_eq!(reference.redeliveries, 0);
        let want_decisions: Vec<&str> = LIFECYCLE.iter().map(|s| s.decision).collect();
        assert_eq!(reference.decisions, want_decisions);
        // Two incidents: the alarm's escalated to impact 1 (3 timeline events), the finding's
        // resolved (4); no OpsItem.
        let incidents = reference.incidents.as_array().unwrap();
        assert_eq!(incidents.len(), 2, "{:#}", reference.incidents);
        let alarm = &incidents[0];
        assert!(
            alarm["title"]
                .as_str()
                .unwrap()
                .starts_with("Critical alarm")
        );
        assert_eq!(alarm["impact"], 1);
        assert_eq!(alarm["status"], "OPEN");
        assert_eq!(alarm["timeline"].as_array().unwrap().len(), 3);
        let finding = &incidents[1];
        assert_eq!(finding["status"], "RESOLVED");
        assert_eq!(finding["timeline"].as_array().unwrap().len(), 4);
        assert_eq!(reference.emulator["opsitems"], json!([]));
        let mut want_emulator = reference.emulator.clone();
        let want_notifications = want_emulator["sns_publish"].take().as_u64().unwrap();

        let mut failures = Vec::new();
        for op in OPERATIONS {
            for fault in [ImFault::Throttle, ImFault::ServerError] {
                let got = run(Some((op, fault))).await;
                eprintln!(
                    "{FUNCTION} incident-manager {op} × {fault:?}: {} injected, {} redeliveries {:?}",
                    got.injected, got.redeliveries, got.errors
                );
                if got.injected == 0 {
                    failures.push(format!("{op} × {fault:?}: no fault injected"));
                }
                if !got.violations.is_empty() {
                    failures.push(format!("{op} × {fault:?}: {:?}", got.violations));
                    continue;
                }
                if got.decisions != want_decisions {
                    failures.push(format!("{op} × {fault:?}: decisions {:?}", got.decisions));
                }
                // Notifications are at-least-once: a missing one fails, an extra one does not.
                let mut emulator = got.emulator.clone();
                let notifications = emulator["sns_publish"].take().as_u64().unwrap();
                if notifications < want_notifications {
                    failures.push(format!(
                        "{op} × {fault:?}: {notifications} < {want_notifications} notifications"
                    ));
                }
                for (what, g, w) in [
                    ("incidents", &got.incidents, &reference.incidents),
                    ("emulator", &emulator, &want_emulator),
                ] {
                    if g != w {
                        let mut d = Vec::new();
                        super::diff("", g, w, &mut d);
                        failures.push(format!(
                            "{op} × {fault:?}: {what} differ:\n  {}",
                            d.join("\n  ")
                        ));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
