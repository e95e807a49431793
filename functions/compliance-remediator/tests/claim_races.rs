//! Claims between deliveries of different events, through the real binary and the emulator:
//!
//! - a sweep and a compliance event that both read the ledger before either claimed the node
//!   (one of them held in the emulator between its ledger read and its claim): the node gets
//!   one command, and the delivery that claimed second skips it (`claimed-concurrently`);
//! - a sweep whose delivery died for good with its claims unlinked (its SendCommand failed
//!   with an unknown outcome and no retry came; or it was killed between send and link): once
//!   the claims are older than the function's timeout, a later sweep looks the dead sweep's
//!   command up (one ListCommands for all its claims) and links it, or takes the void claims
//!   afresh without counting the dead attempt;
//! - a command status event that arrives before its command is linked (the delivery was
//!   killed between send and link): the event links the claim and its Failed outcome is kept.
//!
//! The oracles are the emulator's Run Command history and counters and the ledger rows.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use autopilot_harness::fault_matrix::deliver_until_ok;
use autopilot_harness::{FunctionSpec, InvokeOptions, TestEnv};
use common::*;
use serde_json::{Value, json};

const FLEET_SEED: u64 = 31;
const FLEET_SIZE: usize = 20;
/// Remaining time of a delivery that dies; the function's timeout in the stale-claim cases.
const DEADLINE: Duration = Duration::from_secs(8);
/// How long the delivery that claims second is held at its claim: the other delivery runs to
/// its end meanwhile (a 20-node sweep takes 1–3 s on a loaded machine).
const CLAIM_HOLD_MS: u64 = 8000;

struct Tenant {
    env: TestEnv,
    spec: FunctionSpec,
    /// Online nodes missing patches: what an enforcing sweep plans.
    planned: Vec<String>,
}

async fn tenant(max_nodes: usize, overrides: &[(&str, &str)]) -> Tenant {
    let env = TestEnv::new().await.unwrap();
    seed_count(&env, FLEET_SEED, FLEET_SIZE).await;
    let planned = noncompliant_online(&env).await;
    assert!(planned.len() >= 4, "fleet too small: {planned:?}");
    let mut env_vars = vec![("DRY_RUN", "false")];
    env_vars.extend_from_slice(overrides);
    let spec = spec_with_policy(&env, &policy(max_nodes, ""), &env_vars).await;
    // The nodes stay non-compliant after a command: a later sweep plans them again.
    env.control
        .call(
            "POST",
            "commands/config",
            Some(json!({"tenant": env.tenant, "patch_effect": false})),
        )
        .await
        .unwrap();
    Tenant { env, spec, planned }
}

fn compliance_event(env: &TestEnv, node: &str) -> Value {
    let mut ev = sample(env, "ssm-compliance-noncompliant-patch.json");
    ev["detail"]["resource-id"] = json!(node);
    ev["detail"]["compliance-status"] = json!("non_compliant");
    ev["resources"] = json!([format!(
        "arn:aws:ssm:us-east-1:{}:managed-instance/{node}",
        account_for(env)
    )]);
    ev
}

/// The emulator's patch commands: (command id, target nodes).
async fn sent(env: &TestEnv) -> Vec<(String, Vec<String>)> {
    let s = env.control.state("commands", &env.tenant).await.unwrap();
    s["Commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["InstanceIds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_owned())
                .collect();
            (c["CommandId"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

async fn commands_reaching(env: &TestEnv, node: &str) -> Vec<String> {
    sent(env)
        .await
        .into_iter()
        .filter(|(_, nodes)| nodes.iter().any(|n| n == node))
        .map(|(c, _)| c)
        .collect()
}

/// Delivers `second` and, once its ledger read is done and its first claim is held in the
/// emulator, delivers `first` to its end on another sandbox; then lets the held claim go on.
/// Both deliveries planned from the same ledger. Returns (`second`'s answer, `first`'s).
async fn race(t: &Tenant, second: &Value, first: &Value) -> (Value, Value) {
    let (held, other) = tokio::join!(ready(&t.spec), ready(&t.spec));
    // The read is held so that the claim's hold can be armed after the delivery's other
    // writes (its lease) and before its claim.
    let read = add_rule(
        &t.env,
        json!({"operation": "dynamodb:BatchGetItem", "latency_ms": 2000, "max_hits": 1}),
    )
    .await;
    let second_done = AtomicBool::new(false);
    tokio::join!(
        async {
            let r = invoke(&held, second).await;
            second_done.store(true, Ordering::SeqCst);
            r
        },
        async {
            until_hit(&t.env, read).await;
            let claim = add_rule(
                &t.env,
                json!({"operation": "dynamodb:UpdateItem", "latency_ms": CLAIM_HOLD_MS, "max_hits": 1}),
            )
            .await;
            until_hit(&t.env, claim).await;
            let r = invoke(&other, first).await;
            assert!(
                !second_done.load(Ordering::SeqCst),
                "the held delivery ended first: the deliveries did not interleave"
            );
            r
        }
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_that_read_before_a_sweep_claimed_its_node_skips_it_and_sends_nothing() {
    let t = tenant(100, &[]).await;
    let node = t.planned[0].clone();
    let sweep = sweep_event(&t.env);
    let (event_r, sweep_r) = race(&t, &compliance_event(&t.env, &node), &sweep).await;
    assert_eq!(sweep_r["decision"], "swept", "{sweep_r}");
    let reaching = commands_reaching(&t.env, &node).await;
    assert_eq!(reaching.len(), 1, "{node} commanded {reaching:?}");
    assert_eq!(
        calls(&t.env, "ssm:SendCommand").await,
        1,
        "the sweep's one command"
    );
    assert_eq!(event_r["decision"], "recorded", "{event_r}");
    assert_eq!(
        event_r["summary"]["skipped"]["claimed-concurrently"],
        json!(1),
        "{event_r}"
    );
    assert_eq!(event_r["summary"]["executed"], json!([]), "{event_r}");
    let rec = attempt(&t.env, &node, "Patch").await.unwrap();
    assert_eq!(rec["sweep_id"], sweep["id"], "{rec}");
    assert_eq!(rec["command_id"], json!(reaching[0]), "{rec}");
    assert_eq!(
        rec["attempts"],
        json!(1.0),
        "the lost claim counts nothing: {rec}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_that_read_before_an_event_claimed_the_node_skips_it_and_reports_the_skip() {
    // One node per sweep (the budget): its only claim is the one held.
    let t = tenant(1, &[]).await;
    let sb = ready(&t.spec).await;
    let mut dry = sweep_event(&t.env);
    dry["detail"] = json!("{\"dryRun\": true}");
    let r = invoke(&sb, &dry).await;
    let bucket = t.spec.env["REPORT_BUCKET"].clone();
    let rep = report(&t.env, &bucket, r["summary"]["reportKey"].as_str().unwrap()).await;
    let node = rep["plan"]["patchBatches"][0][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rep["plan"]["targets"].as_array().unwrap().len(), 1, "{rep}");
    let event = compliance_event(&t.env, &node);
    let (sweep_r, event_r) = race(&t, &sweep_event(&t.env), &event).await;
    assert_eq!(event_r["decision"], "remediated", "{event_r}");
    let reaching = commands_reaching(&t.env, &node).await;
    assert_eq!(reaching.len(), 1, "{node} commanded {reaching:?}");
    assert_eq!(calls(&t.env, "ssm:SendCommand").await, 1);
    let s = &sweep_r["summary"];
    assert_eq!(s["skipped"]["claimed-concurrently"], json!(1), "{sweep_r}");
    assert_eq!(s["executed"], json!([]), "{sweep_r}");
    let rep = report(&t.env, &bucket, s["reportKey"].as_str().unwrap()).await;
    assert_eq!(rep["skippedAtClaim"][0]["resourceId"], json!(node), "{rep}");
    assert_eq!(rep["skippedAtClaim"][0]["reason"], "claimed-concurrently");
    let rec = attempt(&t.env, &node, "Patch").await.unwrap();
    assert_eq!(rec["sweep_id"], event["id"], "{rec}");
    assert_eq!(rec["attempts"], json!(1.0), "{rec}");
}

/// A sweep killed with its SendCommand in flight: the command goes out, no record is linked.
/// Returns the sweep event and its command id.
async fn killed_between_send_and_link(t: &Tenant) -> (Value, String) {
    let sweep = sweep_event(&t.env);
    let watch = add_rule(
        &t.env,
        json!({"operation": "ssm:SendCommand", "latency_ms": 3000, "max_hits": 1}),
    )
    .await;
    kill_when_held(&t.spec, &t.env, &sweep, DEADLINE, watch).await;
    let cmds = sent(&t.env).await;
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    for n in &t.planned {
        let rec = attempt(&t.env, n, "Patch").await.unwrap();
        assert!(
            rec.get("command_id").is_none(),
            "linked before the kill: {rec}"
        );
    }
    (sweep, cmds[0].0.clone())
}

/// Waits until the claims of the planned nodes are older than the function's timeout (the
/// recorded claim time is in whole seconds).
async fn until_stale(t: &Tenant) {
    let mut newest = 0.0_f64;
    for n in &t.planned {
        let rec = attempt(&t.env, n, "Patch").await.unwrap();
        newest = newest.max(rec["last_attempt_at"].as_f64().unwrap());
    }
    let stale_at = newest + DEADLINE.as_secs_f64() + 1.5;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64((stale_at - now).max(0.0))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_sweep_links_a_dead_sweeps_claims_to_the_command_it_sent() {
    let t = tenant(100, &[("FUNCTION_TIMEOUT_SECONDS", "8")]).await;
    let (dead, cid) = killed_between_send_and_link(&t).await;
    until_stale(&t).await;
    let lookups = calls(&t.env, "ssm:ListCommands").await;
    let sb = ready(&t.spec).await;
    let r = invoke(&sb, &sweep_event(&t.env)).await;
    assert_eq!(r["decision"], "swept", "{r}");
    assert_eq!(
        calls(&t.env, "ssm:SendCommand").await,
        1,
        "the nodes were commanded again"
    );
    assert_eq!(
        calls(&t.env, "ssm:ListCommands").await - lookups,
        1,
        "one look-up for the dead sweep, not one per node"
    );
    for n in &t.planned {
        let rec = attempt(&t.env, n, "Patch").await.unwrap();
        assert_eq!(rec["command_id"], json!(cid), "{n} not linked: {rec}");
        assert_eq!(rec["sweep_id"], dead["id"], "{n}: {rec}");
        assert_eq!(rec["attempts"], json!(1.0), "{n}: {rec}");
    }
    assert_eq!(
        r["summary"]["skipped"]["earlier-command"],
        json!(t.planned.len()),
        "{r}"
    );
    assert_eq!(r["summary"]["executed"], json!([]), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_sweep_takes_a_dead_sweeps_void_claims_afresh_without_counting_them() {
    let t = tenant(100, &[("FUNCTION_TIMEOUT_SECONDS", "8")]).await;
    // The dead sweep's send fails with an unknown outcome (the claims stay for a look-up)
    // and no retry ever comes.
    add_rule(
        &t.env,
        json!({"operation": "ssm:SendCommand", "error_rate": 1.0, "max_hits": 1}),
    )
    .await;
    let dead = sweep_event(&t.env);
    let sb = ready(&t.spec).await;
    let out = sb
        .invoke(
            &serde_json::to_vec(&dead).unwrap(),
            InvokeOptions {
                deadline_in: Some(DEADLINE),
                ..InvokeOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(out.outcome.is_err(), "{:?}", out.outcome);
    assert_eq!(calls(&t.env, "ssm:SendCommand").await, 0);
    for n in &t.planned {
        let rec = attempt(&t.env, n, "Patch").await.unwrap();
        assert_eq!(rec["sweep_id"], dead["id"], "{n}: {rec}");
    }
    until_stale(&t).await;
    let lookups = calls(&t.env, "ssm:ListCommands").await;
    let later = sweep_event(&t.env);
    let r = invoke(&sb, &later).await;
    assert_eq!(r["decision"], "swept", "{r}");
    let cmds = sent(&t.env).await;
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let mut reached = cmds[0].1.clone();
    reached.sort();
    let mut planned = t.planned.clone();
    planned.sort();
    assert_eq!(reached, planned, "every void claim taken afresh");
    assert_eq!(calls(&t.env, "ssm:ListCommands").await - lookups, 1);
    for n in &t.planned {
        let rec = attempt(&t.env, n, "Patch").await.unwrap();
        assert_eq!(rec["sweep_id"], later["id"], "{n}: {rec}");
        assert_eq!(rec["command_id"], json!(cmds[0].0), "{n}: {rec}");
        assert_eq!(
            rec["attempts"],
            json!(1.0),
            "the dead attempt counted: {rec}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_status_that_arrives_before_the_link_links_the_claim_and_is_kept() {
    let t = tenant(100, &[]).await;
    let (sweep, cid) = killed_between_send_and_link(&t).await;
    let node = t.planned[0].clone();
    let mut ev = sample(&t.env, "command-invocation-failed.json");
    ev["detail"]["instance-id"] = json!(node);
    ev["detail"]["command-id"] = json!(cid);
    ev["detail"]["status"] = json!("Failed");
    let sb = ready(&t.spec).await;
    let r = invoke(&sb, &ev).await;
    assert_eq!(r["decision"], "recorded", "{r}");
    let rec = attempt(&t.env, &node, "Patch").await.unwrap();
    assert_eq!(rec["status"], "failed", "{rec}");
    assert_eq!(rec["command_id"], json!(cid), "{rec}");
    // The killed sweep's redelivery links the rest and sends nothing again.
    let d = deliver_until_ok(
        &sb,
        &serde_json::to_vec(&sweep).unwrap(),
        Duration::from_secs(30),
        5,
    )
    .await
    .unwrap();
    assert!(d.violation.is_none(), "{:?} {:?}", d.violation, d.errors);
    assert_eq!(calls(&t.env, "ssm:SendCommand").await, 1);
    for n in &t.planned {
        let rec = attempt(&t.env, n, "Patch").await.unwrap();
        assert_eq!(rec["command_id"], json!(cid), "{n}: {rec}");
        assert_eq!(rec["attempts"], json!(1.0), "{n}: {rec}");
    }
    let rec = attempt(&t.env, &node, "Patch").await.unwrap();
    assert_eq!(rec["status"], "failed", "the failure was lost: {rec}");
}

/// A tenant with one non-compliant node whose Config rule maps to a runbook, the function's
/// timeout 8 s, and the Change Calendar `calendar` (empty: none).
async fn runbook_tenant(calendar: &str) -> (TestEnv, FunctionSpec, String) {
    let env = TestEnv::new().await.unwrap();
    seed_count(&env, FLEET_SEED, FLEET_SIZE).await;
    let node = noncompliant_online(&env).await[0].clone();
    let mut pol = policy(100, calendar);
    pol["configRules"] = json!({"ec2-imdsv2-check": {
        "runbook": "AWSConfigRemediation-EnforceEC2InstanceIMDSv2",
        "parameters": {"InstanceId": ["{{ resource_id }}"]},
    }});
    let spec = spec_with_policy(
        &env,
        &pol,
        &[("DRY_RUN", "false"), ("FUNCTION_TIMEOUT_SECONDS", "8")],
    )
    .await;
    (env, spec, node)
}

fn config_event(env: &TestEnv, node: &str) -> Value {
    let mut ev = sample(env, "config-rule-noncompliant.json");
    ev["detail"]["resourceId"] = json!(node);
    ev
}

const RUNBOOK_KEY: &str = "config:ec2-imdsv2-check";

/// Delivers `ev` and kills it with its StartAutomationExecution held in the emulator (the
/// execution starts, the record is never linked); returns the record as the kill left it.
async fn killed_with_the_runbook_started(
    env: &TestEnv,
    spec: &FunctionSpec,
    ev: &Value,
    node: &str,
) -> Value {
    let watch = add_rule(
        env,
        json!({"operation": "ssm:StartAutomationExecution", "latency_ms": 3000, "max_hits": 1}),
    )
    .await;
    kill_when_held(spec, env, ev, DEADLINE, watch).await;
    assert_eq!(calls(env, "ssm:StartAutomationExecution").await, 1);
    let rec = attempt(env, node, RUNBOOK_KEY).await.unwrap();
    assert!(
        rec.get("command_id").is_none(),
        "linked before the kill: {rec}"
    );
    rec
}

/// Sleeps until a claim taken at `rec`'s time is older than the function's timeout.
async fn until_claim_outlived_the_timeout(rec: &Value) {
    let stale_at = rec["last_attempt_at"].as_f64().unwrap() + DEADLINE.as_secs_f64() + 1.5;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64((stale_at - now).max(0.0))).await;
}

/// A later event for the node starts no second execution: it meets the cooldown of the claim
/// `rec` (an attempt of unknown outcome), which it leaves as it was.
async fn a_later_event_meets_the_cooldown(
    env: &TestEnv,
    spec: &FunctionSpec,
    node: &str,
    rec: &Value,
) {
    let sb = ready(spec).await;
    let r = invoke(&sb, &config_event(env, node)).await;
    assert_eq!(r["decision"], "recorded", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("Cooldown"), "{r}");
    assert_eq!(
        calls(env, "ssm:StartAutomationExecution").await,
        1,
        "the runbook ran twice"
    );
    let after = attempt(env, node, RUNBOOK_KEY).await.unwrap();
    assert_eq!(after["attempts"], rec["attempts"], "{after}");
    assert_eq!(after["sweep_id"], rec["sweep_id"], "{after}");
}

/// A Config rule event whose delivery was killed with its StartAutomationExecution in flight
/// and never retried: once the claim is older than the function's timeout, a later event for
/// the node starts no second execution. A runbook cannot be looked up like a command and may
/// not be safe to run twice, so its dead claim stays an attempt of unknown outcome and holds
/// the cooldown.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_deliverys_runbook_claim_holds_the_cooldown_instead_of_running_twice() {
    let (env, spec, node) = runbook_tenant("").await;
    let rec = killed_with_the_runbook_started(&env, &spec, &config_event(&env, &node), &node).await;
    until_claim_outlived_the_timeout(&rec).await;
    a_later_event_meets_the_cooldown(&env, &spec, &node, &rec).await;
}

/// The same, when the killed event's own redelivery no longer plans the runbook (the Change
/// Calendar closed meanwhile): it keeps its claim instead of giving it back, so the later
/// event still meets the cooldown.
#[tokio::test(flavor = "multi_thread")]
async fn a_redelivery_that_no_longer_plans_its_runbook_keeps_the_claim() {
    let cal = "autopilot-freeze";
    let (env, spec, node) = runbook_tenant(cal).await;
    let set = |state: &str| json!({"tenant": env.tenant, "name": cal, "state": state, "next_transition_time": "2030-01-01T00:00:00Z"});
    env.control
        .call("POST", "calendars", Some(set("OPEN")))
        .await
        .unwrap();
    let ev = config_event(&env, &node);
    let rec = killed_with_the_runbook_started(&env, &spec, &ev, &node).await;
    env.control
        .call("POST", "calendars", Some(set("CLOSED")))
        .await
        .unwrap();
    let sb = ready(&spec).await;
    let r = invoke(&sb, &ev).await;
    assert_eq!(r["replayed"], false, "{r}");
    let kept = attempt(&env, &node, RUNBOOK_KEY).await.unwrap();
    assert_eq!(
        kept["sweep_id"], ev["id"],
        "the claim was given back: {kept}"
    );
    assert_eq!(calls(&env, "ssm:StartAutomationExecution").await, 1);
    env.control
        .call("POST", "calendars", Some(set("OPEN")))
        .await
        .unwrap();
    until_claim_outlived_the_timeout(&rec).await;
    a_later_event_meets_the_cooldown(&env, &spec, &node, &rec).await;
}
