//! At-least-once delivery: every side-effecting sample of `events/compliance-remediator/`, in
//! the order of a remediation's life (a node's compliance change → its command fails → a Config
//! rule change → an enforcing sweep → a verifying sweep), gets 100 deliveries (one SIGKILLed
//! between its idempotency claim and completion, rounds of 20 concurrent, the rest
//! sequential). The emulator's state after each sample — commands and their target nodes,
//! automation executions, association runs, ledger records, reports — must equal a second
//! tenant's with the same seeded fleet that received each sample once; audit events may
//! repeat, never go missing.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use autopilot_harness::fault_matrix::diff;
use autopilot_harness::reliability::{self, AuditCapture, Pool};
use autopilot_harness::{InvokeOptions, TestEnv};
use common::*;
use serde_json::{Value, json};

const FUNCTION: &str = "compliance-remediator";
const AUDIT_SOURCE: &str = "ssm-autopilot.compliance-remediator";
/// The node the samples name.
const SAMPLE_NODE: &str = "i-0fedcba9876543210";
const FLEET_SEED: u64 = 61;
/// Two patch batches (≤ 50 nodes each) in the enforcing sweep.
const FLEET_SIZE: usize = 200;
const DELIVERIES: usize = 100;
const CONCURRENCY: usize = 20;
/// A remediation's life: each sample acts on what the ones before it did.
const ORDER: [&str; 5] = [
    "ssm-compliance-noncompliant-patch.json",
    "command-invocation-failed.json",
    "config-rule-noncompliant.json",
    "scheduled-sweep.json",
    "scheduler-sweep.json",
];

/// The same fleet in every tenant: the seeded one, the samples' node (online, missing a
/// patch), and one association whose nodes report NON_COMPLIANT, so the sweep re-applies it.
/// Returns the name of the tenant's (enforcing) policy document.
async fn prepare(env: &TestEnv) -> String {
    seed_count(env, FLEET_SEED, FLEET_SIZE).await;
    env.control
        .call(
            "POST",
            "fleet/node",
            Some(
                json!({"tenant": env.tenant, "instance_id": SAMPLE_NODE, "create": true,
                "ping_status": "Online", "state": "running",
                "compliance": {"Patch": [{"Id": "KB5040442", "Title": "KB5040442",
                    "Severity": "CRITICAL", "Status": "NON_COMPLIANT",
                    "Details": {"PatchState": "Missing"}}]}}),
            ),
        )
        .await
        .unwrap();
    let mut online: Vec<String> = noncompliant_online(env).await;
    online.sort();
    let assoc_nodes: Vec<String> = online
        .iter()
        .filter(|n| n.as_str() != SAMPLE_NODE)
        .take(3)
        .cloned()
        .collect();
    let ssm = aws_sdk_ssm::Client::new(&env.sdk().await);
    let created = ssm
        .create_association()
        .name("AWS-GatherSoftwareInventory")
        .targets(
            aws_sdk_ssm::types::Target::builder()
                .key("InstanceIds")
                .set_values(Some(assoc_nodes.clone()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let aid = created
        .association_description()
        .and_then(|d| d.association_id())
        .unwrap()
        .to_owned();
    for node in &assoc_nodes {
        env.control
            .call(
                "POST",
                "fleet/node",
                Some(json!({"tenant": env.tenant, "instance_id": node,
                    "compliance": {"Association": [{"Id": aid, "Title": "AWS-GatherSoftwareInventory",
                        "Severity": "UNSPECIFIED", "Status": "NON_COMPLIANT",
                        "Details": {"DocumentName": "AWS-GatherSoftwareInventory"}}]}})),
            )
            .await
            .unwrap();
    }
    let mut pol = policy(500, "");
    pol["configRules"] = json!({"ec2-imdsv2-check": {
        "runbook": "AWSConfigRemediation-EnforceEC2InstanceIMDSv2",
        "parameters": {"InstanceId": ["{{ resource_id }}"], "AutomationAssumeRole": ["{{ automation_role }}"]},
    }});
    put_policy(env, &pol).await
}

/// The samples in [`ORDER`], addressed to the tenant.
fn samples(env: &TestEnv) -> Vec<(String, Value)> {
    let all: BTreeMap<String, Value> = reliability::fresh_samples(env, FUNCTION)
        .unwrap()
        .into_iter()
        .collect();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let mut want: Vec<&str> = ORDER.to_vec();
    want.sort();
    assert_eq!(
        names, want,
        "a sample was added or removed: give it its place in ORDER"
    );
    ORDER
        .iter()
        .map(|n| ((*n).to_owned(), all[*n].clone()))
        .collect()
}

/// The command status sample names the command the tenant's emulator sent to its node.
async fn address(env: &TestEnv, name: &str, mut event: Value) -> Value {
    if name == "command-invocation-failed.json" {
        let s = env.control.state("commands", &env.tenant).await.unwrap();
        let cmd = s["Commands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["InstanceIds"] == json!([SAMPLE_NODE]))
            .map(|c| c["CommandId"].clone())
            .expect("the compliance change sent a command to the sample's node");
        event["detail"]["command-id"] = cmd;
    }
    event
}

/// Everything the samples can change, free of ids and clocks.
async fn state(env: &TestEnv) -> Value {
    let mut doc = reliability::side_effects(env).await.unwrap();
    doc["command_targets"] = json!(command_targets(env).await);
    let autos = env.control.state("automations", &env.tenant).await.unwrap();
    let mut runs: Vec<Value> = autos["AutomationExecutions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json!({"document": a["DocumentName"], "parameters": a["Parameters"]}))
        .collect();
    runs.sort_by_key(Value::to_string);
    doc["automation_runs"] = json!(runs);
    let assoc = env
        .control
        .state("association-runs", &env.tenant)
        .await
        .unwrap();
    let mut applied: Vec<Value> = assoc["Runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut t: Vec<String> = r["Targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            t.sort();
            json!({"name": r["Name"], "targets": t})
        })
        .collect();
    applied.sort_by_key(Value::to_string);
    doc["association_targets"] = json!(applied);
    doc["ledger"] = ledger_records(env).await;
    doc
}

/// Audit events of the tenant's account, by detail type.
fn by_type(events: &[Value], account: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in events {
        if e["detail"]["account"] == account {
            *m.entry(e["detail-type"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_deliveries_of_every_sample_have_one_delivery_s_side_effects() {
    let started = std::time::Instant::now();
    let replayed = TestEnv::new().await.unwrap();
    let once = TestEnv::new().await.unwrap();
    let replayed_policy = prepare(&replayed).await;
    let once_policy = prepare(&once).await;
    // The samples default to dry-run (as a first deploy): these tenants enforce.
    let replayed_vars = [
        ("POLICY_PARAMETER", replayed_policy.as_str()),
        ("DRY_RUN", "false"),
    ];
    let once_vars = [
        ("POLICY_PARAMETER", once_policy.as_str()),
        ("DRY_RUN", "false"),
    ];
    let replayed_audit = AuditCapture::start(&replayed, AUDIT_SOURCE).await.unwrap();
    let once_audit = AuditCapture::start(&once, AUDIT_SOURCE).await.unwrap();
    let mut pool = Pool::new(
        &replayed,
        FUNCTION,
        Path::new(BIN),
        CONCURRENCY,
        &replayed_vars,
    )
    .await
    .unwrap();
    let single = Pool::new(&once, FUNCTION, Path::new(BIN), 1, &once_vars)
        .await
        .unwrap();
    // REPLAY_ONLY=<file name>[,<file name>…] narrows a local investigation to those samples
    // (the earlier ones still run, once, so that the later ones find their state).
    let only: Option<Vec<String>> = std::env::var("REPLAY_ONLY")
        .ok()
        .map(|o| o.split(',').map(|s| s.trim().to_owned()).collect());
    let (mut deliveries, mut claimed, mut with_effects) = (0, 0, 0);
    let mut before = state(&once).await;
    for ((name, event), (_, reference_event)) in samples(&replayed).into_iter().zip(samples(&once))
    {
        let event = address(&replayed, &name, event).await;
        let reference_event = address(&once, &name, reference_event).await;
        let n = if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            1
        } else {
            DELIVERIES
        };
        let run = reliability::replay(&replayed, &mut pool, &event, n, CONCURRENCY)
            .await
            .unwrap();
        if !run.failures.is_empty() {
            for line in pool.sandboxes[0]
                .logs()
                .iter()
                .filter(|l| l.contains("ERROR"))
                .rev()
                .take(5)
            {
                eprintln!("{name}: {line}");
            }
        }
        assert!(
            run.failures.is_empty(),
            "{name}: {:?} after {:?}",
            run.failures,
            run.retryable_errors
        );
        let r = single.sandboxes[0]
            .invoke(
                &serde_json::to_vec(&reference_event).unwrap(),
                InvokeOptions::default(),
            )
            .await
            .unwrap();
        assert!(r.outcome.is_ok(), "{name}: {:?}", r.outcome);
        let got = state(&replayed).await;
        let want = state(&once).await;
        if got != want {
            let mut d = Vec::new();
            diff("", &got, &want, &mut d);
            panic!(
                "{name}: {n} deliveries differ from one (got != want):\n  {}",
                d.join("\n  ")
            );
        }
        // Honest: every sample changes the state; an unchanged one would prove nothing.
        assert_ne!(want, before, "{name}: one delivery had no side effect");
        before = want;
        with_effects += 1;
        deliveries += run.deliveries;
        claimed += usize::from(run.claimed_before_kill);
        eprintln!(
            "{FUNCTION} {name}: {} deliveries (+{} retries, {:?}), claim before kill: {}",
            run.deliveries, run.retries, run.retryable_errors, run.claimed_before_kill
        );
    }
    // Every kind of side effect was exercised: the compared state is not hollow.
    let ledger = before["ledger"].as_object().unwrap();
    let statuses: Vec<&str> = ledger
        .values()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert!(
        before["command_targets"].as_array().unwrap().len() >= 3
            && before["automation_runs"].as_array().unwrap().len() == 1
            && !before["association_targets"].as_array().unwrap().is_empty()
            && statuses.contains(&"failed")
            && statuses.contains(&"remediated"),
        "a side effect kind is missing from the final state: {before}"
    );
    // Audit events are at-least-once: a crash after one is published repeats it; none is lost.
    let want = by_type(&once_audit.drain(&once).await.unwrap(), &account_for(&once));
    let expected: u64 = want.values().sum();
    let got = by_type(
        &reliability::drain_at_least(&replayed_audit, &replayed, expected as usize)
            .await
            .unwrap(),
        &account_for(&replayed),
    );
    for (t, n) in &want {
        let g = got.get(t).copied().unwrap_or(0);
        assert!(g >= *n, "audit {t}: {g} < {n} (lost): {got:?} vs {want:?}");
    }
    eprintln!(
        "{FUNCTION}: {deliveries} deliveries of {with_effects} samples, {claimed} crashes after the claim, audit {got:?} (once: {want:?}), {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if only.is_none() {
        assert_eq!(deliveries, DELIVERIES * ORDER.len());
        assert_eq!(
            claimed,
            ORDER.len(),
            "every crash must land after the claim"
        );
    }
}
