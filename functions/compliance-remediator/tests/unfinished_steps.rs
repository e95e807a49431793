//! A patch step left unfinished by a failed or killed delivery is finished by the redelivery:
//! every planned node gets exactly one command per sweep and every attempt record ends up
//! linked to it. The oracles are the emulator's commands and counters and the ledger rows.
//!
//! Cases: the attempt records partly throttled (the step fails between recording and sending);
//! the process killed while recording; the process killed after SendCommand reached SSM and
//! before the records were linked, with the nodes still non-compliant on redelivery (the same
//! plan) and already patched (a different plan); an association step under the same
//! throttling (each association run once, every record linked).

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use autopilot_harness::fault_matrix::deliver_until_ok;
use autopilot_harness::{FunctionSpec, InvokeOptions, TestEnv};
use common::*;
use serde_json::{Value, json};

const FLEET_SEED: u64 = 31;
const FLEET_SIZE: usize = 20;
/// Remaining time of a delivery that gets killed: its idempotency claim holds until then.
const KILLED_LEASE: Duration = Duration::from_secs(8);
/// Remaining time of the other deliveries (a claim left in progress is waited out until then).
const LEASE: Duration = Duration::from_secs(12);

struct Tenant {
    env: TestEnv,
    spec: FunctionSpec,
    planned: Vec<String>,
}

async fn tenant() -> Tenant {
    let env = TestEnv::new().await.unwrap();
    seed_count(&env, FLEET_SEED, FLEET_SIZE).await;
    let planned = noncompliant_online(&env).await;
    assert!(planned.len() >= 4, "fleet too small: {planned:?}");
    let name = format!("/autopilot-test/{}/remediation-policy", env.tenant);
    aws_sdk_ssm::Client::new(&env.sdk().await)
        .put_parameter()
        .name(&name)
        .value(policy(100, "").to_string())
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let mut spec = env
        .function("compliance-remediator", Path::new(BIN))
        .unwrap();
    for (k, v) in [
        ("POLICY_PARAMETER", name.as_str()),
        ("DRY_RUN", "false"),
        // Faults reach the function instead of the SDK's retries.
        ("AWS_MAX_ATTEMPTS", "1"),
        ("CHECKPOINT_MARGIN_SECONDS", "1"),
    ] {
        spec.env.insert(k.into(), v.into());
    }
    Tenant { env, spec, planned }
}

/// Delivers `event` to a fresh sandbox until it succeeds; returns the redeliveries needed.
async fn deliver(t: &Tenant, event: &Value) -> usize {
    let sb = ready(&t.spec).await;
    let d = deliver_until_ok(&sb, &serde_json::to_vec(event).unwrap(), LEASE, 10)
        .await
        .unwrap();
    assert!(d.violation.is_none(), "{:?} {:?}", d.violation, d.errors);
    eprintln!(
        "delivered after {} redeliveries: {:?}",
        d.redeliveries, d.errors
    );
    d.redeliveries
}

/// The patch commands in the emulator: command id → target nodes.
async fn sent(env: &TestEnv) -> BTreeMap<String, Vec<String>> {
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

/// Every planned node is in exactly one command, no other node is, and each node's record
/// counts one attempt linked to the command that reached it.
async fn assert_each_node_commanded_once_and_linked(t: &Tenant) -> BTreeMap<String, Vec<String>> {
    let commands = sent(&t.env).await;
    let mut reached: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (cid, nodes) in &commands {
        for n in nodes {
            reached.entry(n.as_str()).or_default().push(cid.as_str());
        }
    }
    let mut planned: Vec<&str> = t.planned.iter().map(String::as_str).collect();
    planned.sort_unstable();
    assert_eq!(
        reached.keys().copied().collect::<Vec<_>>(),
        planned,
        "commanded nodes differ from the plan: {commands:?}"
    );
    for (node, cids) in &reached {
        assert_eq!(cids.len(), 1, "{node} commanded more than once: {cids:?}");
        let rec = attempt(&t.env, node, "Patch").await.unwrap();
        assert_eq!(rec["command_id"], json!(cids[0]), "{node}: {rec}");
        assert_eq!(rec["attempts"], json!(1.0), "{node}: {rec}");
        // Remediated once a later delivery of the sweep re-checked the node COMPLIANT.
        assert!(
            rec["status"] == "pending" || rec["status"] == "remediated",
            "{node}: {rec}"
        );
    }
    commands
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patch_step_whose_records_partly_failed_is_finished_by_its_redeliveries() {
    let t = tenant().await;
    // Seed 7 throttles the 2nd, 4th, 7th and 9th UpdateItem: the step records some attempts,
    // fails, and (before the fix) the give-back met the same fault and stranded them.
    add_rule(
        &t.env,
        json!({"operation": "dynamodb:UpdateItem", "throttle_rate": 0.3, "seed": 7}),
    )
    .await;
    let redeliveries = deliver(&t, &sweep_event(&t.env)).await;
    let counters = t.env.control.counters(&t.env.tenant).await.unwrap()["counters"].clone();
    assert!(
        counters["dynamodb:UpdateItem"]["throttled"]
            .as_u64()
            .unwrap()
            > 0
            && redeliveries > 0,
        "no delivery failed: the case did not happen"
    );
    let commands = assert_each_node_commanded_once_and_linked(&t).await;
    assert_eq!(commands.len(), 1, "{commands:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_killed_while_recording_commands_every_planned_node_on_redelivery() {
    let t = tenant().await;
    let event = sweep_event(&t.env);
    // The first attempt record is held: the process dies with some attempts recorded
    // (the held one lands later) and nothing sent.
    let watch = add_rule(
        &t.env,
        json!({"operation": "dynamodb:UpdateItem", "latency_ms": 3000, "max_hits": 1}),
    )
    .await;
    kill_when_held(&t.spec, &t.env, &event, KILLED_LEASE, watch).await;
    assert_eq!(calls(&t.env, "ssm:SendCommand").await, 0);
    let mut recorded = 0;
    for n in &t.planned {
        recorded += usize::from(attempt(&t.env, n, "Patch").await.is_some());
    }
    assert!(
        recorded > 0,
        "the kill should leave records and nothing sent"
    );
    deliver(&t, &event).await;
    let commands = assert_each_node_commanded_once_and_linked(&t).await;
    assert_eq!(commands.len(), 1, "{commands:?}");
}

/// Kills a sweep while its SendCommand is held in the emulator (the command is created), then
/// redelivers it: no second command, every record linked to the first one.
async fn killed_between_send_and_link(patch_effect: bool) {
    let t = tenant().await;
    t.env
        .control
        .call(
            "POST",
            "commands/config",
            Some(json!({"tenant": t.env.tenant, "patch_effect": patch_effect})),
        )
        .await
        .unwrap();
    let event = sweep_event(&t.env);
    let watch = add_rule(
        &t.env,
        json!({"operation": "ssm:SendCommand", "latency_ms": 3000, "max_hits": 1}),
    )
    .await;
    kill_when_held(&t.spec, &t.env, &event, KILLED_LEASE, watch).await;
    assert_eq!(calls(&t.env, "ssm:SendCommand").await, 1);
    for n in &t.planned {
        let rec = attempt(&t.env, n, "Patch").await.unwrap();
        assert!(
            rec.get("command_id").is_none(),
            "linked before the kill: {rec}"
        );
    }
    deliver(&t, &event).await;
    assert_eq!(
        calls(&t.env, "ssm:SendCommand").await,
        1,
        "a second command"
    );
    assert_each_node_commanded_once_and_linked(&t).await;
    // Found through Run Command's history, not guessed.
    assert!(calls(&t.env, "ssm:ListCommands").await > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_send_before_link_nodes_unpatched_the_redelivery_links_the_same_plan() {
    killed_between_send_and_link(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_send_before_link_nodes_patched_the_redelivery_links_what_it_no_longer_plans()
{
    killed_between_send_and_link(true).await;
}

/// Two associations over three online nodes each, reported NON_COMPLIANT on those nodes;
/// returns (association id → its nodes).
async fn associations(t: &Tenant) -> BTreeMap<String, Vec<String>> {
    let ssm = aws_sdk_ssm::Client::new(&t.env.sdk().await);
    let mut out = BTreeMap::new();
    for nodes in [&t.planned[0..3], &t.planned[3..6]] {
        let created = ssm
            .create_association()
            .name("AWS-GatherSoftwareInventory")
            .targets(
                aws_sdk_ssm::types::Target::builder()
                    .key("InstanceIds")
                    .set_values(Some(nodes.to_vec()))
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
        for node in nodes {
            t.env
                .control
                .call(
                    "POST",
                    "fleet/node",
                    Some(json!({"tenant": t.env.tenant, "instance_id": node,
                        "compliance": {"Association": [{"Id": aid, "Title": "AWS-GatherSoftwareInventory",
                            "Severity": "UNSPECIFIED", "Status": "NON_COMPLIANT",
                            "Details": {"DocumentName": "AWS-GatherSoftwareInventory"}}]}})),
                )
                .await
                .unwrap();
        }
        out.insert(aid, nodes.to_vec());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_association_step_whose_records_partly_failed_runs_each_association_once() {
    let mut t = tenant().await;
    assert!(t.planned.len() >= 6, "fleet too small: {:?}", t.planned);
    let assoc = associations(&t).await;
    // Associations only: the patch steps would take the faults first.
    let mut pol = policy(100, "");
    pol["patch"]["enabled"] = json!(false);
    aws_sdk_ssm::Client::new(&t.env.sdk().await)
        .put_parameter()
        .name(&t.spec.env["POLICY_PARAMETER"])
        .value(pol.to_string())
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    t.planned = assoc.values().flatten().cloned().collect();
    add_rule(
        &t.env,
        json!({"operation": "dynamodb:UpdateItem", "throttle_rate": 0.3, "seed": 7}),
    )
    .await;
    let redeliveries = deliver(&t, &sweep_event(&t.env)).await;
    assert!(
        redeliveries > 0,
        "no delivery failed: the case did not happen"
    );
    let runs = t
        .env
        .control
        .state("association-runs", &t.env.tenant)
        .await
        .unwrap();
    let mut ran: Vec<&str> = runs["Runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["AssociationId"].as_str().unwrap())
        .collect();
    ran.sort_unstable();
    assert_eq!(
        ran,
        assoc.keys().map(String::as_str).collect::<Vec<_>>(),
        "each association run exactly once"
    );
    assert_eq!(calls(&t.env, "ssm:SendCommand").await, 0);
    for node in &t.planned {
        let rec = attempt(&t.env, node, "Association").await.unwrap();
        assert_association_linked(node, &rec);
    }
}

/// The association ids each node reports, NON_COMPLIANT unless listed in `compliant`.
async fn report_associations(
    t: &Tenant,
    by_node: &BTreeMap<String, Vec<String>>,
    compliant: &[String],
) {
    for (node, ids) in by_node {
        let items: Vec<Value> = ids
            .iter()
            .map(|aid| {
                let status = if compliant.contains(aid) {
                    "COMPLIANT"
                } else {
                    "NON_COMPLIANT"
                };
                json!({"Id": aid, "Title": "AWS-GatherSoftwareInventory", "Severity": "UNSPECIFIED",
                       "Status": status, "Details": {"DocumentName": "AWS-GatherSoftwareInventory"}})
            })
            .collect();
        t.env
            .control
            .call(
                "POST",
                "fleet/node",
                Some(json!({"tenant": t.env.tenant, "instance_id": node,
                            "compliance": {"Association": items}})),
            )
            .await
            .unwrap();
    }
}

/// Creates an association on `node`; returns its id.
async fn associate(t: &Tenant, node: &str) -> String {
    let created = aws_sdk_ssm::Client::new(&t.env.sdk().await)
        .create_association()
        .name("AWS-GatherSoftwareInventory")
        .targets(
            aws_sdk_ssm::types::Target::builder()
                .key("InstanceIds")
                .values(node)
                .build(),
        )
        .send()
        .await
        .unwrap();
    created
        .association_description()
        .and_then(|d| d.association_id())
        .unwrap()
        .to_owned()
}

/// Association ids in the emulator's run history, one entry per run, sorted.
async fn association_runs(env: &TestEnv) -> Vec<String> {
    let runs = env
        .control
        .state("association-runs", &env.tenant)
        .await
        .unwrap();
    let mut ran: Vec<String> = runs["Runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["AssociationId"].as_str().unwrap().to_owned())
        .collect();
    ran.sort();
    ran
}

/// How the plan differs on redelivery from the first delivery's.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// An association of the first batch is compliant now: the rest moves up a batch, the
    /// unrun one joins ids whose nodes are all linked already.
    FirstBatchIdDropped,
    /// An association on a node no earlier delivery claimed: the step mixes sent and fresh
    /// claims.
    NewAssociationOnANewNode,
}

/// 11 associations (two StartAssociationsOnce batches: 10 + 1), one per node; the first delivery
/// runs the first batch and fails on the second call (an injected 5xx); the plan changes;
/// the redelivery must run every association not yet run exactly once and none again.
async fn association_plan_changes_between_deliveries(change: Change) {
    let t = tenant().await;
    let nodes = online(&t.env).await;
    assert!(nodes.len() >= 12, "fleet too small: {nodes:?}");
    let mut pol = policy(100, "");
    pol["patch"]["enabled"] = json!(false);
    put_policy(&t.env, &pol).await;
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ids = Vec::new();
    for node in &nodes[..11] {
        let aid = associate(&t, node).await;
        by_node.entry(node.clone()).or_default().push(aid.clone());
        ids.push(aid);
    }
    ids.sort();
    report_associations(&t, &by_node, &[]).await;
    // Seed 10 at 50 %: the first call passes, the second fails (the emulator's dice).
    add_rule(
        &t.env,
        json!({"operation": "ssm:StartAssociationsOnce", "error_rate": 0.5, "seed": 10, "max_hits": 2}),
    )
    .await;
    let event = sweep_event(&t.env);
    let sb = ready(&t.spec).await;
    let first = sb
        .invoke(
            &serde_json::to_vec(&event).unwrap(),
            InvokeOptions::default(),
        )
        .await
        .unwrap()
        .outcome;
    let err = first.expect_err("the second batch's call fails");
    assert!(
        autopilot_harness::reliability::is_retryable(&err.error_type),
        "{err:?}"
    );
    assert_eq!(
        association_runs(&t.env).await,
        ids[..10].to_vec(),
        "the first delivery ran the first batch only"
    );
    let mut planned = ids.clone();
    match change {
        Change::FirstBatchIdDropped => {
            report_associations(&t, &by_node, &ids[..1]).await;
        }
        Change::NewAssociationOnANewNode => {
            let node = &nodes[11];
            let aid = associate(&t, node).await;
            let fresh = BTreeMap::from([(node.clone(), vec![aid.clone()])]);
            report_associations(&t, &fresh, &[]).await;
            planned.push(aid);
            planned.sort();
        }
    }
    deliver(&t, &event).await;
    assert_eq!(
        association_runs(&t.env).await,
        planned,
        "{change:?}: each association the sweep planned run exactly once"
    );
    let mut still_planned: Vec<String> = by_node
        .iter()
        .filter(|(_, aids)| matches!(change, Change::NewAssociationOnANewNode) || aids[0] != ids[0])
        .map(|(n, _)| n.clone())
        .collect();
    if matches!(change, Change::NewAssociationOnANewNode) {
        still_planned.push(nodes[11].clone());
    }
    for node in by_node.keys().chain([&nodes[11]]) {
        let Some(rec) = attempt(&t.env, node, "Association").await else {
            assert!(!still_planned.contains(node), "{node}: no record");
            continue;
        };
        // The node compliant on redelivery: its claim settled, never counted twice.
        if !still_planned.contains(node) {
            assert!(rec["attempts"].as_f64().unwrap() <= 1.0, "{node}: {rec}");
            continue;
        }
        assert_association_linked(node, &rec);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivery_whose_plan_dropped_an_association_still_runs_the_unrun_one_once() {
    association_plan_changes_between_deliveries(Change::FirstBatchIdDropped).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivery_with_sent_and_fresh_association_claims_runs_no_association_twice() {
    association_plan_changes_between_deliveries(Change::NewAssociationOnANewNode).await;
}
