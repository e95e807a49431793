//! End to end: the real `compliance-remediator` binary behind a Lambda Runtime API, against
//! the local emulator and a seeded fleet. Assertions read the emulator's counters and state
//! (commands, ledger, S3 reports), not only the function's own answer.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use autopilot_harness::{InvokeOptions, Sandbox, TestEnv};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_compliance-remediator");

fn account_for(env: &TestEnv) -> String {
    let digits: String = env
        .tenant
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    digits[digits.len() - 12..].to_owned()
}

fn sweep_event(env: &TestEnv) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/compliance-remediator/scheduler-sweep.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["id"] = json!(uuid::Uuid::new_v4().to_string());
    v["account"] = json!(account_for(env));
    v
}

/// A sandbox with the template's environment plus `overrides`, and the test's own policy.
async fn sandbox(env: &TestEnv, policy: &Value, overrides: &[(&str, &str)]) -> (Sandbox, String) {
    let name = format!("/autopilot-test/{}/remediation-policy", env.tenant);
    let ssm = aws_sdk_ssm::Client::new(&env.sdk().await);
    ssm.put_parameter()
        .name(&name)
        .value(policy.to_string())
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let mut spec = env
        .function("compliance-remediator", Path::new(BIN))
        .unwrap();
    spec.env.insert("POLICY_PARAMETER".into(), name);
    for (k, v) in overrides {
        spec.env.insert((*k).into(), (*v).into());
    }
    let bucket = spec.env["REPORT_BUCKET"].clone();
    let sb = Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();
    (sb, bucket)
}

fn policy(max_nodes: usize, calendar: &str) -> Value {
    json!({
        "patch": {"enabled": true, "rebootOption": "NoReboot", "maxConcurrency": "10%", "maxErrors": "10%", "batchSize": 50},
        "association": {"enabled": true},
        "exemptionTag": {"key": "autopilot:exempt"},
        "budget": {"maxNodes": max_nodes},
        "cooldownMinutes": 360, "retryAfterMinutes": 60, "maxAttempts": 3,
        "changeCalendar": calendar,
    })
}

async fn invoke(sb: &Sandbox, ev: &Value) -> Value {
    match sb
        .invoke(&serde_json::to_vec(ev).unwrap(), InvokeOptions::default())
        .await
        .unwrap()
        .outcome
    {
        Ok(v) => v,
        Err(e) => panic!("{e:?}"),
    }
}

async fn report(env: &TestEnv, bucket: &str, key: &str) -> Value {
    let sdk = env.sdk().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap()
}

async fn seed(env: &TestEnv, seed: u64) -> Value {
    env.control
        .seed_fleet(json!({
            "tenant": env.tenant, "count": 220, "seed": seed, "hybrid_fraction": 0.2,
            "noncompliant_fraction": 0.45, "not_applicable_fraction": 0.3,
            "offline_fraction": 0.1, "stopped_fraction": 0.08,
        }))
        .await
        .unwrap()
}

/// Node ids the patch commands in the emulator were sent to, per command.
async fn commands(env: &TestEnv) -> Vec<Vec<String>> {
    let s = env.control.state("commands", &env.tenant).await.unwrap();
    s["Commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["DocumentName"], "AWS-RunPatchBaseline");
            assert_eq!(c["Parameters"]["Operation"], json!(["Install"]));
            c["InstanceIds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

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
