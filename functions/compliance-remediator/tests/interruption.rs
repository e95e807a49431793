//! Interruption: an enforcing sweep of a ≥ 200-node plan (several patch batches of 50) is
//! SIGKILLed at seeded points of its execution, found through the emulator (the n-th
//! SendCommand request arriving, held back by injected latency): once with a SendCommand in
//! flight (it takes effect; the ledger link is never written), once after a step recorded its
//! attempts and before its SendCommand had any effect. It is redelivered each time its
//! in-progress claim has expired (the invocation's deadline), then until it succeeds. Another
//! sweep is cut by its deadline and finished by continuations, one of them killed and
//! redelivered. The remediations must equal an uninterrupted run on a tenant with the same
//! seeded fleet: every planned node commanded exactly once, none twice, nothing outside the
//! plan, every attempt record linked to its command.
//!
//! `INTERRUPTION_SEED=<n>` replays other kill points (the seed and points are printed).

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use autopilot_harness::fault_matrix::{self, diff};
use autopilot_harness::{FunctionSpec, InvokeOptions, Sandbox, TestEnv};
use common::*;
use serde_json::{Value, json};

const FLEET_SEED: u64 = 71;
/// 255 nodes, 90 % missing patches: 200+ planned (5 batches), and no more than that: every
/// planned node costs two ledger writes, slow in the emulator on a loaded machine.
const FLEET_SIZE: usize = 255;
const NONCOMPLIANT: f64 = 0.9;
const MIN_PLANNED: usize = 200;
/// Least remaining time of a delivery that gets killed: its claim holds until then, so it is
/// waited out. A sweep's kill points need more on a loaded machine (see [`lease_for`]).
const MIN_LEASE: Duration = Duration::from_secs(8);
/// Latency on every SendCommand while a kill is armed: the request that arrived is still in
/// the emulator (and will take effect) when the process dies. Generous: at load 12 on 2 cores
/// the test's own polling can lag by a few hundred milliseconds.
const HOLD_MS: u64 = 1000;
const DEFAULT_SEED: u64 = 20_261_201;

fn seed() -> u64 {
    std::env::var("INTERRUPTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// A small deterministic generator (splitmix64) for the kill points.
fn draw(state: &mut u64, below: u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % below
}

struct Tenant {
    env: TestEnv,
    /// Enforcing, with a 1 s checkpoint margin: a sweep with its lease left runs every step.
    spec: FunctionSpec,
}

async fn tenant(margin_seconds: &str) -> Tenant {
    let env = TestEnv::new().await.unwrap();
    seed_noncompliant(&env, FLEET_SEED, FLEET_SIZE, NONCOMPLIANT).await;
    let spec = spec_with_policy(
        &env,
        &policy(1000, ""),
        &[
            ("DRY_RUN", "false"),
            ("CHECKPOINT_MARGIN_SECONDS", margin_seconds),
        ],
    )
    .await;
    Tenant { env, spec }
}

/// What an uninterrupted sweep of the same fleet did.
struct Reference {
    env: TestEnv,
    spec: FunctionSpec,
    planned: BTreeSet<String>,
    /// How long the uninterrupted sweep took (the machine's load shows in it).
    took: Duration,
}

/// A killed sweep delivery's lease: the kill points lie within the first ~45 % of a sweep
/// (plus the held sends), so 60 % of the uninterrupted sweep's time plus 3 s reaches them.
fn lease_for(reference: &Reference) -> Duration {
    MIN_LEASE.max(reference.took.mul_f64(0.6) + Duration::from_secs(3))
}

/// The patch batches (each sorted, sorted) and planned nodes of a sweep, from its report.
async fn plan_of(t: &Tenant, response: &Value) -> (Vec<Vec<String>>, BTreeSet<String>) {
    let bucket = t.spec.env["REPORT_BUCKET"].clone();
    let key = response["summary"]["reportKey"].as_str().unwrap();
    let rep = report(&t.env, &bucket, key).await;
    let mut batches: Vec<Vec<String>> = rep["plan"]["patchBatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let mut v: Vec<String> = b
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            v.sort();
            v
        })
        .collect();
    batches.sort();
    let planned: BTreeSet<String> = batches.iter().flatten().cloned().collect();
    assert!(planned.len() >= MIN_PLANNED, "{} planned", planned.len());
    assert!(batches.len() >= 4, "{} batches", batches.len());
    (batches, planned)
}

async fn reference() -> Reference {
    let t = tenant("1").await;
    let sb = ready(&t.spec).await;
    let started = Instant::now();
    let r = invoke(&sb, &sweep_event(&t.env)).await;
    let took = started.elapsed();
    eprintln!("uninterrupted sweep: {:.1} s", took.as_secs_f64());
    let (batches, _) = plan_of(&t, &r).await;
    let planned: BTreeSet<String> = batches.iter().flatten().cloned().collect();
    assert_eq!(
        command_targets(&t.env).await,
        batches,
        "the uninterrupted sweep ran its plan"
    );
    Reference {
        env: t.env,
        spec: t.spec,
        planned,
        took,
    }
}

/// Delivers `event` to a fresh sandbox and SIGKILLs it as soon as rule `watch` has seen `at`
/// SendCommand requests; `arm` is added the moment the request before that one arrived (the
/// watch latency holds it), so it decides the `at`-th. Returns once the killed delivery's
/// claim has expired, as Lambda's retry would wait.
async fn kill_at_send(
    spec: &FunctionSpec,
    env: &TestEnv,
    event: &Value,
    lease: Duration,
    watch: u64,
    at: u64,
    arm: Option<Value>,
) {
    let mut arm = arm;
    if at == 1
        && let Some(rule) = arm.take()
    {
        add_rule(env, rule).await;
    }
    let what = format!("SendCommand #{at}");
    kill_when(spec, event, lease, &what, async || {
        let seen = hits(env, watch).await;
        if seen + 1 >= at
            && let Some(rule) = arm.take()
        {
            add_rule(env, rule).await;
        }
        seen >= at
    })
    .await;
    let landed = hits(env, watch).await;
    assert_eq!(
        landed, at,
        "the kill landed late: SendCommand #{landed} arrived before the process died"
    );
}

/// Redelivers `event` (a fresh sandbox: the killed one is gone) until it succeeds.
async fn redeliver(spec: &FunctionSpec, event: &Value) {
    let sb = ready(spec).await;
    let d = fault_matrix::deliver_until_ok(
        &sb,
        &serde_json::to_vec(event).unwrap(),
        Duration::from_secs(120),
        3,
    )
    .await
    .unwrap();
    assert!(d.violation.is_none(), "{:?} {:?}", d.violation, d.errors);
}

/// Every planned node commanded exactly once and nothing else; returns the commands' targets.
async fn assert_exactly_the_plan(env: &TestEnv, planned: &BTreeSet<String>, case: &str) {
    let sent = command_targets(env).await;
    let all: Vec<&String> = sent.iter().flatten().collect();
    let unique: BTreeSet<String> = all.iter().map(|s| (*s).clone()).collect();
    let twice: Vec<&&String> = all
        .iter()
        .filter(|n| all.iter().filter(|m| m == n).count() > 1)
        .collect();
    assert!(twice.is_empty(), "{case}: nodes commanded twice: {twice:?}");
    let missing: Vec<&String> = planned.difference(&unique).collect();
    let extra: Vec<&String> = unique.difference(planned).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{case}: {} planned nodes never commanded {missing:?}, {} commanded outside the plan {extra:?}",
        missing.len(),
        extra.len()
    );
    assert!(
        sent.iter().all(|c| c.len() <= 50),
        "{case}: a command over 50 nodes"
    );
}

/// A verifying sweep in both tenants, then their ledgers compared (`links`: also what each
/// record is linked to).
async fn verifying_sweep(env: &TestEnv, spec: &FunctionSpec) {
    let sb = ready(spec).await;
    invoke(&sb, &sweep_event(env)).await;
}

async fn assert_same_ledger_after_verifying(
    t: &Tenant,
    reference: &Reference,
    links: bool,
    case: &str,
) {
    tokio::join!(
        verifying_sweep(&t.env, &t.spec),
        verifying_sweep(&reference.env, &reference.spec)
    );
    let strip = |mut v: Value| {
        if !links {
            for r in v.as_object_mut().unwrap().values_mut() {
                r.as_object_mut().unwrap().remove("link");
            }
        }
        v
    };
    let got = strip(ledger_records(&t.env).await);
    let want = strip(ledger_records(&reference.env).await);
    let remediated = want
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["status"] == "remediated")
        .count();
    assert_eq!(
        remediated,
        reference.planned.len(),
        "the reference verified its plan"
    );
    if got != want {
        let mut d = Vec::new();
        diff("", &got, &want, &mut d);
        panic!(
            "{case}: ledger after a verifying sweep differs from the uninterrupted run's ({} records):\n  {}",
            d.len(),
            d.join("\n  ")
        );
    }
}

/// Kills a sweep delivery with its `first`-th SendCommand in flight (sent, not yet linked in
/// the ledger), then kills the redelivery after its next patch step recorded its attempts and
/// before its SendCommand (the `second`-th request, which then fails without effect) reached
/// SSM, then redelivers until done.
async fn killed_in_flight_then_before_the_send() -> (Tenant, Reference) {
    let mut state = seed() ^ 0x5eed;
    // Early points (the 1st or 2nd send, then the redelivery's next one) keep the lease, which
    // is waited out twice, short.
    let first = 1 + draw(&mut state, 2);
    let second = first + 1;
    eprintln!(
        "INTERRUPTION_SEED={} → killed with SendCommand #{first} in flight, then before #{second} took effect",
        seed()
    );
    let (reference, t) = tokio::join!(reference(), tenant("1"));
    let watch = add_rule(
        &t.env,
        json!({"operation": "ssm:SendCommand", "latency_ms": HOLD_MS}),
    )
    .await;
    let sweep = sweep_event(&t.env);
    let lease = lease_for(&reference);
    kill_at_send(&t.spec, &t.env, &sweep, lease, watch, first, None).await;
    let lost = json!({"operation": "ssm:SendCommand", "error_rate": 1.0, "max_hits": 1,
                      "latency_ms": 2000});
    kill_at_send(&t.spec, &t.env, &sweep, lease, watch, second, Some(lost)).await;
    fault_matrix::clear_faults(&t.env).await.unwrap();
    assert_eq!(
        calls(&t.env, "ssm:SendCommand").await,
        second - 1,
        "the request the second kill cut off had no effect"
    );
    redeliver(&t.spec, &sweep).await;
    (t, reference)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_killed_twice_mid_execution_commands_and_links_each_planned_node_once() {
    let started = Instant::now();
    let (t, reference) = killed_in_flight_then_before_the_send().await;
    assert_exactly_the_plan(
        &t.env,
        &reference.planned,
        "killed before send / before link",
    )
    .await;
    let ledger = ledger_records(&t.env).await;
    let unlinked: Vec<&String> = ledger
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["link"] != "command")
        .map(|(k, _)| k)
        .collect();
    assert!(
        unlinked.is_empty(),
        "{} records not linked to their command: {unlinked:?}",
        unlinked.len()
    );
    // What the link is for: each command's status event finds its node's record.
    let s = t
        .env
        .control
        .state("commands", &t.env.tenant)
        .await
        .unwrap();
    let sb = ready(&t.spec).await;
    for c in s["Commands"].as_array().unwrap() {
        let node = c["InstanceIds"][0].as_str().unwrap();
        let mut ev = sample(&t.env, "command-invocation-failed.json");
        ev["detail"]["instance-id"] = json!(node);
        ev["detail"]["command-id"] = c["CommandId"].clone();
        ev["detail"]["status"] = json!("Success");
        let r = invoke(&sb, &ev).await;
        assert_eq!(r["decision"], "recorded", "{node}: {r}");
    }
    assert_same_ledger_after_verifying(&t, &reference, true, "killed before send / before link")
        .await;
    eprintln!(
        "killed before a send and before a link: {} planned nodes, {:.1} s",
        reference.planned.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A rule routing this sweep's continuation events from the audit bus to a queue of the
/// test's own, as the template's rule routes them to the function.
struct Continuations {
    queue: String,
}

impl Continuations {
    async fn start(env: &TestEnv, sweep_id: &str) -> Self {
        let name = format!("interrupt-{}", &sweep_id[..8]);
        let queue = env
            .control
            .aws_json("AmazonSQS.CreateQueue", json!({"QueueName": name}))
            .await
            .unwrap()["QueueUrl"]
            .as_str()
            .unwrap()
            .to_owned();
        let events = aws_sdk_eventbridge::Client::new(&env.sdk().await);
        let bus = env.template.physical_name("AuditBus").unwrap();
        events
            .put_rule()
            .event_bus_name(&bus)
            .name(&name)
            .event_pattern(
                json!({"source": ["ssm-autopilot.compliance-remediator"],
                       "detail-type": ["Compliance Sweep Continuation"],
                       "detail": {"sweepId": [sweep_id]}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        events
            .put_targets()
            .event_bus_name(&bus)
            .rule(&name)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(format!("arn:aws:sqs:us-east-1:123456789012:{name}"))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        Self { queue }
    }

    async fn next(&self, env: &TestEnv) -> Value {
        let got = env
            .control
            .aws_json(
                "AmazonSQS.ReceiveMessage",
                json!({"QueueUrl": self.queue, "MaxNumberOfMessages": 1, "WaitTimeSeconds": 5}),
            )
            .await
            .unwrap();
        let msg = got["Messages"]
            .get(0)
            .expect("a continuation event on the audit bus")
            .clone();
        env.control
            .aws_json(
                "AmazonSQS.DeleteMessage",
                json!({"QueueUrl": self.queue, "ReceiptHandle": msg["ReceiptHandle"]}),
            )
            .await
            .unwrap();
        serde_json::from_str(msg["Body"].as_str().unwrap()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_cut_by_its_deadline_and_a_killed_continuation_run_each_batch_once() {
    let started = Instant::now();
    let mut state = seed() ^ 0xc0de;
    // The template's 90 s margin against 60 s left: one step per invocation. No reference
    // tenant here: the other case shows an uninterrupted sweep runs exactly its plan's batches,
    // and this sweep's report holds the same plan (same seeded fleet).
    let t = tenant("90").await;
    let kill_in = 1 + draw(&mut state, 2);
    eprintln!(
        "INTERRUPTION_SEED={} → continuation #{kill_in} killed",
        seed()
    );
    let sweep = sweep_event(&t.env);
    let sweep_id = sweep["id"].as_str().unwrap().to_owned();
    let continuations = Continuations::start(&t.env, &sweep_id).await;
    let short = InvokeOptions {
        deadline_in: Some(Duration::from_secs(60)),
        ..InvokeOptions::default()
    };
    let sb = ready(&t.spec).await;
    let r = invoke_with(&sb, &sweep, short.clone()).await;
    let (batches, planned) = plan_of(&t, &r).await;
    let mut left = r["summary"]["checkpointedSteps"].as_u64().unwrap();
    assert_eq!(left as usize + 1, batches.len(), "cut after one step: {r}");
    assert_eq!(calls(&t.env, "ssm:SendCommand").await, 1);
    let (mut n, mut killed) = (0, 0);
    while left > 0 {
        let cont = continuations.next(&t.env).await;
        assert_eq!(cont["detail"]["sweepId"], json!(sweep_id));
        n += 1;
        let r = if n == kill_in {
            // Killed with its step's SendCommand in flight, then redelivered by Lambda.
            let sent = calls(&t.env, "ssm:SendCommand").await;
            let watch = add_rule(
                &t.env,
                json!({"operation": "ssm:SendCommand", "latency_ms": HOLD_MS}),
            )
            .await;
            // A continuation's first send comes right after it reads the checkpoint.
            kill_at_send(&t.spec, &t.env, &cont, MIN_LEASE, watch, 1, None).await;
            fault_matrix::clear_faults(&t.env).await.unwrap();
            assert_eq!(calls(&t.env, "ssm:SendCommand").await, sent + 1);
            killed += 1;
            let sb = ready(&t.spec).await;
            invoke_with(&sb, &cont, short.clone()).await
        } else {
            invoke_with(&sb, &cont, short.clone()).await
        };
        assert_eq!(r["decision"], "continued", "{r}");
        // A repeat delivery of the same continuation runs nothing again.
        assert_eq!(
            invoke_with(&sb, &cont, short.clone()).await["replayed"],
            true
        );
        left = r["summary"]["checkpointedSteps"].as_u64().unwrap();
        assert!(
            n <= batches.len() as u64 + 1,
            "each continuation makes progress"
        );
    }
    assert_eq!(killed, 1);
    assert_exactly_the_plan(&t.env, &planned, "deadline cut").await;
    // The checkpoint holds the plan's batches: one command per planned batch, as uninterrupted.
    assert_eq!(command_targets(&t.env).await, batches);
    eprintln!(
        "deadline cut + {n} continuations (one killed): {} batches, {:.1} s",
        batches.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A small fleet in 2-node batches: a handful of patch steps, quick to run.
const SMALL_FLEET: usize = 20;
/// The lease-race tenant's checkpoint margin against the deadlines below: a delivery given
/// `CUT` stops after its first step; one given `LONG` runs every step.
const RACE_MARGIN: &str = "10";
const CUT: Duration = Duration::from_secs(8);
const LONG: Duration = Duration::from_secs(40);

async fn small_tenant(margin_seconds: &str) -> Tenant {
    let env = TestEnv::new().await.unwrap();
    seed_noncompliant(&env, FLEET_SEED, SMALL_FLEET, NONCOMPLIANT).await;
    let mut pol = policy(1000, "");
    pol["patch"]["batchSize"] = json!(2);
    let spec = spec_with_policy(
        &env,
        &pol,
        &[
            ("DRY_RUN", "false"),
            ("CHECKPOINT_MARGIN_SECONDS", margin_seconds),
        ],
    )
    .await;
    Tenant { env, spec }
}

async fn invoke_on(
    sb: &Sandbox,
    ev: &Value,
    deadline: Duration,
) -> Result<Value, autopilot_harness::FunctionError> {
    let opts = InvokeOptions {
        deadline_in: Some(deadline),
        ..InvokeOptions::default()
    };
    sb.invoke(&serde_json::to_vec(ev).unwrap(), opts)
        .await
        .unwrap()
        .outcome
}

/// A sweep delivery checkpoints after its first step, publishes its continuation and dies
/// before completing (its idempotency record stays in progress until its deadline). Lambda's
/// retry of the sweep event and the continuation then run at the same time: one holds the
/// sweep (the retry by resuming the checkpoint, not by planning again), the other fails with
/// the retryable `SweepInProgress` and sends nothing; redelivered, it finds the sweep finished.
/// Every planned node is commanded once, and the ledger after a verifying sweep equals an
/// uninterrupted tenant's.
/// Which delivery of the race starts first (the other starts `HEAD_START` later, while the
/// first holds the sweep: every send is held 500 ms).
#[derive(Clone, Copy, Debug, PartialEq)]
enum First {
    Retry,
    Continuation,
}

const HEAD_START: Duration = Duration::from_millis(1000);

async fn after(
    delay: Duration,
    f: impl std::future::Future<Output = Result<Value, autopilot_harness::FunctionError>>,
) -> Result<Value, autopilot_harness::FunctionError> {
    tokio::time::sleep(delay).await;
    f.await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_retried_while_its_continuation_runs_commands_each_node_once() {
    retried_while_its_continuation_runs(First::Continuation).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_retry_that_resumes_the_checkpoint_keeps_its_continuation_out() {
    retried_while_its_continuation_runs(First::Retry).await;
}

async fn retried_while_its_continuation_runs(first: First) {
    let started = Instant::now();
    let case = format!("retry + continuation at once, {first:?} first");
    let case = case.as_str();
    let (reference_tenant, t) = tokio::join!(small_tenant("1"), small_tenant(RACE_MARGIN));
    let sb = ready(&reference_tenant.spec).await;
    invoke(&sb, &sweep_event(&reference_tenant.env)).await;
    let batches = command_targets(&reference_tenant.env).await;
    eprintln!("reference swept, {:.1} s", started.elapsed().as_secs_f64());
    assert!(batches.len() >= 4, "{} batches: {batches:?}", batches.len());
    let reference = Reference {
        planned: batches.iter().flatten().cloned().collect(),
        env: reference_tenant.env,
        spec: reference_tenant.spec,
        took: started.elapsed(),
    };
    let sweep = sweep_event(&t.env);
    let sweep_id = sweep["id"].as_str().unwrap().to_owned();
    let continuations = Continuations::start(&t.env, &sweep_id).await;
    // The continuation's PutEvents is held (it still lands) and the process killed meanwhile.
    let watch = add_rule(
        &t.env,
        json!({"operation": "events:PutEvents", "latency_ms": HOLD_MS, "max_hits": 1}),
    )
    .await;
    kill_at_send(&t.spec, &t.env, &sweep, CUT, watch, 1, None).await;
    fault_matrix::clear_faults(&t.env).await.unwrap();
    assert_eq!(
        calls(&t.env, "ssm:SendCommand").await,
        1,
        "one step before the cut"
    );
    let cont = continuations.next(&t.env).await;
    // Sends held: the holder is still sending while the other delivery starts.
    add_rule(
        &t.env,
        json!({"operation": "ssm:SendCommand", "latency_ms": 500}),
    )
    .await;
    let (a, b) = tokio::join!(ready(&t.spec), ready(&t.spec));
    let (retry_delay, cont_delay) = match first {
        First::Retry => (Duration::ZERO, HEAD_START),
        First::Continuation => (HEAD_START, Duration::ZERO),
    };
    let (retry, continued) = tokio::join!(
        after(retry_delay, invoke_on(&a, &sweep, LONG)),
        after(cont_delay, invoke_on(&b, &cont, LONG))
    );
    fault_matrix::clear_faults(&t.env).await.unwrap();
    let (loser, event) = match (&retry, &continued) {
        // The retry's sweep had continued: it runs the checkpoint, it does not plan again.
        (Ok(r), Err(e)) if first == First::Retry => {
            assert_eq!(r["decision"], "continued", "{r}");
            (e, &cont)
        }
        (Err(e), Ok(r)) if first == First::Continuation => {
            assert_eq!(r["decision"], "continued", "{r}");
            (e, &sweep)
        }
        other => panic!("{case}: exactly one delivery, the first, must hold the sweep: {other:?}"),
    };
    assert_eq!(loser.error_type, "SweepInProgress", "{loser:?}");
    // Redelivered once the holder is done: the sweep ran every step, nothing is sent.
    let sent = calls(&t.env, "ssm:SendCommand").await;
    let again = invoke_on(&ready(&t.spec).await, event, LONG).await.unwrap();
    assert_eq!(again["reason"], "sweep already ran every step", "{again}");
    assert_eq!(calls(&t.env, "ssm:SendCommand").await, sent);
    assert_exactly_the_plan(&t.env, &reference.planned, case).await;
    assert_same_ledger_after_verifying(&t, &reference, true, case).await;
    eprintln!(
        "{case}: {} planned nodes, {:.1} s",
        reference.planned.len(),
        started.elapsed().as_secs_f64()
    );
}
