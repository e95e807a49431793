//! End to end: the real `compliance-remediator` binary behind a Lambda Runtime API, against
//! the local emulator and a seeded fleet. Assertions read the emulator's counters and state
//! (commands, ledger, S3 reports), not only the function's own answer.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use autopilot_harness::TestEnv;
use common::*;
use serde_json::{Value, json};

fn planned_patch_nodes(rep: &Value) -> BTreeSet<String> {
    rep["plan"]["patchBatches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b.as_array().unwrap().iter())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_plans_only_then_enforce_runs_exactly_the_plan() {
    let env = TestEnv::new().await.unwrap();
    seed(&env, 42).await;
    let fleet = env
        .control
        .call("GET", &format!("fleet?tenant={}", env.tenant), None)
        .await
        .unwrap();
    let nodes = fleet["nodes"].as_array().unwrap();
    let compliance = env.control.state("compliance", &env.tenant).await.unwrap();
    let noncompliant_online: Vec<String> = nodes
        .iter()
        .filter(|n| n["PingStatus"] == "Online")
        .map(|n| n["InstanceId"].as_str().unwrap().to_owned())
        .filter(|id| compliance["Resources"][id]["Patch"]["Status"] == "NON_COMPLIANT")
        .collect();
    assert!(
        noncompliant_online.len() > 70,
        "{}",
        noncompliant_online.len()
    );
    let not_online: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n["PingStatus"] != "Online")
        .map(|n| n["InstanceId"].as_str().unwrap().to_owned())
        .collect();
    assert!(!not_online.is_empty());
    // One node carries the exemption tag; another has an exception in the ledger (and a
    // third an expired one, which must not protect it).
    let exempt = noncompliant_online[0].clone();
    let excepted = noncompliant_online[1].clone();
    let expired = noncompliant_online[2].clone();
    env.control
        .call("POST", "fleet/node", Some(json!({"tenant": env.tenant, "instance_id": exempt, "tags": {"autopilot:exempt": "yes"}})))
        .await
        .unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk().await);
    let table = env.template.physical_name("LedgerTable").unwrap();
    let now = chrono::Utc::now().timestamp();
    for (node, exp) in [(&excepted, now + 86_400), (&expired, now - 60)] {
        ddb.put_item()
            .table_name(&table)
            .item(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!(
                    "exception#{}#{node}#Patch",
                    account_for(&env)
                )),
            )
            .item(
                "expires_at",
                aws_sdk_dynamodb::types::AttributeValue::N(exp.to_string()),
            )
            .send()
            .await
            .unwrap();
    }

    // Budget large enough for every candidate: more than one batch of 50.
    let pol = policy(500, "");
    let (dry, bucket) = sandbox(&env, &pol, &[("DRY_RUN", "true")]).await;
    let r = invoke(&dry, &sweep_event(&env)).await;
    let s = &r["summary"];
    assert_eq!(s["dryRun"], true, "{r}");
    assert_eq!(
        env.control
            .calls(&env.tenant, "ssm:SendCommand")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        env.control
            .calls(&env.tenant, "ssm:StartAssociationsOnce")
            .await
            .unwrap(),
        0
    );
    let dry_report = report(&env, &bucket, s["reportKey"].as_str().unwrap()).await;
    let planned = planned_patch_nodes(&dry_report);
    assert!(planned.len() > 50, "{}", planned.len());
    assert!(dry_report["plan"]["patchBatches"].as_array().unwrap().len() >= 2);
    assert!(!planned.contains(&exempt) && !planned.contains(&excepted));
    assert!(
        planned.contains(&expired),
        "an expired exception does not protect"
    );
    assert!(
        planned.is_disjoint(&not_online),
        "offline/stopped nodes are never planned"
    );
    let skipped = dry_report["plan"]["skipped"].as_array().unwrap();
    let reason_of = |node: &str| {
        skipped
            .iter()
            .find(|x| x["resourceId"] == node && x["complianceType"] == "Patch")
            .map(|x| x["reason"].as_str().unwrap().to_owned())
    };
    assert_eq!(reason_of(&exempt).as_deref(), Some("exempt-tag"));
    assert_eq!(reason_of(&excepted).as_deref(), Some("exception"));
    assert!(skipped.iter().any(|x| x["reason"] == "node-not-online"));

    let (enforce, _) = sandbox(&env, &pol, &[("DRY_RUN", "false")]).await;
    let r = invoke(&enforce, &sweep_event(&env)).await;
    let s = &r["summary"];
    assert_eq!(s["dryRun"], false, "{r}");
    let rep = report(&env, &bucket, s["reportKey"].as_str().unwrap()).await;
    assert_eq!(
        planned_patch_nodes(&rep),
        planned,
        "enforce runs the plan dry-run showed"
    );
    let sent = commands(&env).await;
    let batches = rep["plan"]["patchBatches"].as_array().unwrap().len() as u64;
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:SendCommand")
            .await
            .unwrap(),
        batches
    );
    assert!(sent.iter().all(|c| !c.is_empty() && c.len() <= 50));
    let sent_nodes: Vec<&String> = sent.iter().flatten().collect();
    let unique: BTreeSet<String> = sent_nodes.iter().map(|s| (*s).clone()).collect();
    assert_eq!(sent_nodes.len(), unique.len(), "no node patched twice");
    assert_eq!(unique, planned);
    assert!(!unique.contains(&exempt) && !unique.contains(&excepted));
    assert!(unique.is_disjoint(&not_online));

    // The next sweep verifies: patched nodes now re-check COMPLIANT (the emulator's patch
    // effect), and nothing is re-sent within the cooldown.
    let r = invoke(&enforce, &sweep_event(&env)).await;
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:SendCommand")
            .await
            .unwrap(),
        batches,
        "{r}"
    );
    assert_eq!(
        r["summary"]["verified"].as_u64().unwrap() as usize,
        planned.len(),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn budget_caps_a_sweep_and_a_replayed_sweep_event_remediates_once() {
    let env = TestEnv::new().await.unwrap();
    seed(&env, 7).await;
    let (sb, bucket) = sandbox(&env, &policy(30, ""), &[("DRY_RUN", "false")]).await;
    let ev = sweep_event(&env);
    let r = invoke(&sb, &ev).await;
    let s = &r["summary"];
    assert_eq!(s["plannedNodes"], 30, "{r}");
    assert!(s["deferred"]["budget"].as_u64().unwrap() > 0, "{r}");
    let rep = report(&env, &bucket, s["reportKey"].as_str().unwrap()).await;
    let sent: usize = commands(&env).await.iter().map(Vec::len).sum();
    let runs = env
        .control
        .state("association-runs", &env.tenant)
        .await
        .unwrap();
    let assoc_nodes = rep["plan"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["action"] == "association")
        .count();
    assert!(sent <= 30 && sent + assoc_nodes >= 1);
    let calls = env
        .control
        .ok_calls(&env.tenant, "ssm:SendCommand")
        .await
        .unwrap();

    let again = invoke(&sb, &ev).await;
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:SendCommand")
            .await
            .unwrap(),
        calls
    );
    let runs_after = env
        .control
        .state("association-runs", &env.tenant)
        .await
        .unwrap();
    assert_eq!(runs["Runs"], runs_after["Runs"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_change_calendar_runs_nothing_and_records_the_deferral() {
    let env = TestEnv::new().await.unwrap();
    seed(&env, 9).await;
    let cal = "autopilot-freeze";
    env.control
        .call("POST", "calendars", Some(json!({"tenant": env.tenant, "name": cal, "state": "CLOSED", "next_transition_time": "2030-01-01T00:00:00Z"})))
        .await
        .unwrap();
    let (sb, _) = sandbox(&env, &policy(500, cal), &[("DRY_RUN", "false")]).await;
    let ev = sweep_event(&env);
    let r = invoke(&sb, &ev).await;
    assert!(
        r["summary"]["deferred"]["change-calendar-closed"]
            .as_u64()
            .unwrap()
            > 0,
        "{r}"
    );
    assert_eq!(r["summary"]["calendar"]["open"], false);
    assert_eq!(
        env.control
            .calls(&env.tenant, "ssm:SendCommand")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        env.control
            .calls(&env.tenant, "ssm:StartAssociationsOnce")
            .await
            .unwrap(),
        0
    );
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk().await);
    let item = ddb
        .get_item()
        .table_name(env.template.physical_name("LedgerTable").unwrap())
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!(
                "deferral#{}",
                ev["id"].as_str().unwrap()
            )),
        )
        .send()
        .await
        .unwrap()
        .item
        .expect("deferral recorded");
    let d: Value = serde_json::from_str(item["deferral"].as_s().unwrap()).unwrap();
    assert_eq!(d["reason"], "change-calendar-closed");
    assert_eq!(d["calendar"], cal);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_list_calls_give_the_same_plan() {
    let env = TestEnv::new().await.unwrap();
    seed(&env, 11).await;
    let (sb, bucket) = sandbox(&env, &policy(500, ""), &[("DRY_RUN", "true")]).await;
    let clean = invoke(&sb, &sweep_event(&env)).await;
    let clean = report(
        &env,
        &bucket,
        clean["summary"]["reportKey"].as_str().unwrap(),
    )
    .await;
    let ops = [
        "ssm:DescribeInstanceInformation",
        "ssm:ListResourceComplianceSummaries",
        "ssm:ListComplianceItems",
        "ssm:ListAssociations",
    ];
    let rules: Vec<Value> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| json!({"operation": op, "throttle_rate": 0.3, "seed": 100 + i, "tenant": env.tenant}))
        .collect();
    env.control.set_faults(json!(rules)).await.unwrap();
    let throttled = invoke(&sb, &sweep_event(&env)).await;
    env.control
        .call("DELETE", "faults", Some(json!({"tenant": env.tenant})))
        .await
        .unwrap();
    let throttled = report(
        &env,
        &bucket,
        throttled["summary"]["reportKey"].as_str().unwrap(),
    )
    .await;
    let c = env.control.counters(&env.tenant).await.unwrap();
    let hits: u64 = ops
        .iter()
        .map(|op| autopilot_harness::emulator::counter_field(&c, op, "throttled"))
        .sum();
    assert!(hits > 0, "{c}");
    assert_eq!(clean["plan"], throttled["plan"]);
    assert_eq!(clean["findings"], throttled["findings"]);
}
