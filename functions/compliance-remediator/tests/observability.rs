//! Observability of the real `compliance-remediator` binary: sweep figures in its EMF lines
//! match the seeded fleet and the commands the emulator received; every log line is JSON
//! carrying the request id and event id.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use autopilot_harness::logs::{emf_totals_for, uncorrelated};
use autopilot_harness::{InvokeOptions, Sandbox, TestEnv};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_compliance-remediator");

fn sweep(env: &TestEnv) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/compliance-remediator/scheduler-sweep.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let digits: String = env
        .tenant
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    v["id"] = json!(uuid::Uuid::new_v4().to_string());
    v["account"] = json!(digits[digits.len() - 12..].to_owned());
    v
}

async fn ok_calls(env: &TestEnv, ops: &[&str]) -> u64 {
    let mut n = 0;
    for op in ops {
        n += env.control.ok_calls(&env.tenant, op).await.unwrap();
    }
    n
}

const SENDS: &[&str] = &[
    "ssm:SendCommand",
    "ssm:StartAssociationsOnce",
    "ssm:StartAutomationExecution",
];

#[tokio::test(flavor = "multi_thread")]
async fn sweep_figures_match_the_fleet_and_every_line_is_correlated() {
    let env = TestEnv::new().await.unwrap();
    env.control
        .seed_fleet(
            json!({"tenant": env.tenant, "count": 60, "seed": 9, "noncompliant_fraction": 0.4,
            "offline_fraction": 0.1, "stopped_fraction": 0.05}),
        )
        .await
        .unwrap();
    let fleet = env
        .control
        .call("GET", &format!("fleet?tenant={}", env.tenant), None)
        .await
        .unwrap();
    let compliance = env.control.state("compliance", &env.tenant).await.unwrap();
    let non_compliant: BTreeSet<&String> = compliance["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, types)| {
            types
                .as_object()
                .unwrap()
                .values()
                .any(|t| t["Status"] == "NON_COMPLIANT")
        })
        .map(|(id, _)| id)
        .collect();
    assert!(!non_compliant.is_empty());

    let policy = json!({
        "patch": {"enabled": true, "rebootOption": "NoReboot", "maxConcurrency": "10%", "maxErrors": "10%", "batchSize": 50},
        "association": {"enabled": true},
        "exemptionTag": {"key": "autopilot:exempt"},
        "budget": {"maxNodes": 500},
        "cooldownMinutes": 360, "retryAfterMinutes": 60, "maxAttempts": 3,
        "changeCalendar": "",
    });
    let name = format!("/autopilot-test/{}/remediation-policy", env.tenant);
    aws_sdk_ssm::Client::new(&env.sdk().await)
        .put_parameter()
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
    spec.env.insert("DRY_RUN".into(), "false".into());
    let sb = Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();

    let first = sweep(&env);
    let second = sweep(&env);
    let mut invocations = Vec::new();
    let mut sent = Vec::new();
    for ev in [&first, &first, &second] {
        let inv = sb
            .invoke(&serde_json::to_vec(ev).unwrap(), InvokeOptions::default())
            .await
            .unwrap();
        inv.outcome.as_ref().unwrap_or_else(|e| panic!("{e:?}"));
        invocations.push((inv.request_id, ev["id"].as_str().unwrap().to_owned()));
        sent.push(ok_calls(&env, SENDS).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = sb.logs();

    let sweep1 = emf_totals_for(&logs, &invocations[0].0);
    let scanned = fleet["count"].as_f64().unwrap();
    assert_eq!(sweep1.get("NodesScanned"), Some(&scanned), "{sweep1:?}");
    assert_eq!(
        sweep1.get("NodesNonCompliant"),
        Some(&(non_compliant.len() as f64)),
        "{sweep1:?}"
    );
    assert_eq!(sweep1.get("Swept"), Some(&1.0), "{sweep1:?}");
    assert!(sent[0] > 0);
    assert_eq!(
        sweep1.get("SideEffects"),
        Some(&(sent[0] as f64)),
        "{sweep1:?}"
    );
    // The report is the one object a sweep writes.
    assert_eq!(sweep1.get("ObjectsWritten"), Some(&1.0), "{sweep1:?}");

    let replay = emf_totals_for(&logs, &invocations[1].0);
    assert_eq!(replay.get("DuplicateSuppressed"), Some(&1.0), "{replay:?}");
    assert_eq!(sent[1], sent[0], "a replay sends nothing");
    assert_eq!(replay.get("SideEffects"), None, "{replay:?}");

    // The next sweep re-checks: every node patched by the first now reports COMPLIANT.
    let patched: BTreeSet<String> =
        env.control.state("commands", &env.tenant).await.unwrap()["Commands"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| {
                c["InstanceIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_owned())
            })
            .collect();
    let sweep2 = emf_totals_for(&logs, &invocations[2].0);
    assert!(!patched.is_empty());
    assert_eq!(
        sweep2.get("NodesRemediated"),
        Some(&(patched.len() as f64)),
        "{sweep2:?}"
    );

    let bad = uncorrelated(&logs, &invocations);
    assert!(bad.is_empty(), "uncorrelated lines: {bad:#?}");
}
