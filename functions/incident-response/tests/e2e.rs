//! End to end: the real `incident-response` binary behind a Lambda Runtime API, against the
//! local emulator (OpsCenter backend). Every assertion reads the emulator's state or call
//! counters, not only the function's own report.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::{InvokeOptions, Sandbox, TestEnv};
use futures::future::join_all;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_incident-response");

fn sample(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/incident-response")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A 12-digit account of the test's own: ledger keys never collide with another test's.
fn account_for(env: &TestEnv) -> String {
    let digits: String = env
        .tenant
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    digits[digits.len() - 12..].to_owned()
}

fn event(env: &TestEnv, name: &str) -> Value {
    let mut v = sample(name);
    v["id"] = json!(uuid::Uuid::new_v4().to_string());
    v["account"] = json!(account_for(env));
    v
}

fn status_event(env: &TestEnv, file: &str, execution_id: &str) -> Value {
    let mut v = event(env, file);
    v["detail"]["ExecutionId"] = json!(execution_id);
    v["resources"][0] = json!(format!(
        "arn:aws:ssm:us-east-1:{}:automation-execution/{execution_id}",
        account_for(env)
    ));
    v
}

async fn invoke(sb: &Sandbox, ev: &Value) -> Result<Value, autopilot_harness::FunctionError> {
    sb.invoke(&serde_json::to_vec(ev).unwrap(), InvokeOptions::default())
        .await
        .unwrap()
        .outcome
}

async fn automations(env: &TestEnv) -> Vec<Value> {
    let s = env.control.state("automations", &env.tenant).await.unwrap();
    s["AutomationExecutions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn items(env: &TestEnv) -> Vec<Value> {
    let s = env.control.state("opsitems", &env.tenant).await.unwrap();
    s["OpsItems"].as_array().cloned().unwrap_or_default()
}

fn data<'a>(item: &'a Value, key: &str) -> &'a str {
    item["OperationalData"][key]["Value"]
        .as_str()
        .unwrap_or_default()
}

fn timeline(item: &Value) -> Vec<Value> {
    serde_json::from_str(data(item, "autopilot:timeline")).unwrap_or_default()
}

async fn sandbox_with(env: &TestEnv, vars: &[(&str, &str)]) -> Sandbox {
    let mut spec = env.function("incident-response", Path::new(BIN)).unwrap();
    for (k, v) in vars {
        spec.env.insert((*k).into(), (*v).into());
    }
    let sb = Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();
    sb
}

#[tokio::test(flavor = "multi_thread")]
async fn high_guardduty_finding_runs_the_runbook_once_across_twenty_replays() {
    let env = TestEnv::new().await.unwrap();
    let ev = event(&env, "guardduty-finding-high.json");
    let payload = serde_json::to_vec(&ev).unwrap();

    // 10 concurrent deliveries (10 execution environments), then 10 sequential ones.
    let mut sandboxes = Vec::new();
    for _ in 0..10 {
        sandboxes.push(
            env.sandbox("incident-response", Path::new(BIN))
                .await
                .unwrap(),
        );
    }
    let concurrent = join_all(
        sandboxes
            .iter()
            .map(|s| s.invoke(&payload, InvokeOptions::default())),
    )
    .await;
    let mut opened = 0;
    for inv in concurrent {
        match inv.unwrap().outcome {
            Ok(r) => {
                assert_eq!(r["results"][0]["decision"], "opened", "{r}");
                opened += 1;
            }
            Err(e) => assert_eq!(e.error_type, "IdempotencyAlreadyInProgress", "{e:?}"),
        }
    }
    assert!(opened >= 1);
    for _ in 0..10 {
        let r = invoke(&sandboxes[0], &ev).await.unwrap();
        assert_eq!(r["replayed"], true, "{r}");
        assert_eq!(r["results"][0]["decision"], "opened");
    }

    let runs = automations(&env).await;
    assert_eq!(runs.len(), 1, "exactly one execution: {runs:?}");
    assert_eq!(runs[0]["DocumentName"], "AWSSupport-ContainEC2Instance");
    assert_eq!(
        runs[0]["Parameters"]["InstanceId"],
        json!(["i-0abcdef1234567890"])
    );
    assert!(
        runs[0]["Parameters"]["AutomationAssumeRole"][0]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:iam::")
    );
    let all = items(&env).await;
    assert_eq!(all.len(), 1, "exactly one incident");
    assert_eq!(all[0]["Severity"], "1");
    assert_eq!(all[0]["Category"], "Security");
    let tl = timeline(&all[0]);
    assert_eq!(tl.len(), 2, "{tl:?}");
    assert_eq!(tl[1]["kind"], "runbook-started");
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:CreateOpsItem")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "sns:Publish")
            .await
            .unwrap(),
        1
    );

    // A new finding for the same instance joins the open incident instead of opening another.
    let r = invoke(&sandboxes[1], &event(&env, "guardduty-finding-high.json"))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "appended", "{r}");
    assert_eq!(items(&env).await.len(), 1);
    assert_eq!(automations(&env).await.len(), 1);
    assert_eq!(timeline(&items(&env).await[0]).len(), 3);
}

async fn open_incident(env: &TestEnv, sb: &Sandbox) -> (String, String) {
    let r = invoke(sb, &event(env, "guardduty-finding-high.json"))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "opened", "{r}");
    (
        r["results"][0]["executions"][0]
            .as_str()
            .unwrap()
            .to_owned(),
        r["results"][0]["backendRef"].as_str().unwrap().to_owned(),
    )
}

async fn set_status(env: &TestEnv, id: &str, status: &str) {
    env.control
        .call(
            "POST",
            &format!("automations/{id}"),
            Some(json!({"tenant": env.tenant, "status": status})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_runbook_escalates_and_success_resolves() {
    let env = TestEnv::new().await.unwrap();
    // Impact 3 in a custom plan, so that the escalation to 2 shows in the OpsItem severity.
    let name = format!("/autopilot-test/{}/response-plans", env.tenant);
    let plans = "plans:\n  - name: gd\n    match: {kind: guardduty, minSeverity: 7}\n    impact: 3\n    title: \"GD {{ finding_type }}\"\n    runbooks:\n      - document: AWSSupport-ContainEC2Instance\n        parameters: {InstanceId: \"{{ instance_id }}\"}\n";
    let ssm = aws_sdk_ssm::Client::new(&env.sdk().await);
    ssm.put_parameter()
        .name(&name)
        .value(plans)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let sb = sandbox_with(&env, &[("RESPONSE_PLANS_PARAMETER", &name)]).await;

    let (exec, item_id) = open_incident(&env, &sb).await;
    assert_eq!(items(&env).await[0]["Severity"], "2");
    set_status(&env, &exec, "Failed").await;
    let r = invoke(&sb, &status_event(&env, "automation-failed.json", &exec))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "escalated", "{r}");
    assert_eq!(r["results"][0]["impact"], 2);
    let item = items(&env)
        .await
        .into_iter()
        .find(|i| i["OpsItemId"] == item_id.as_str())
        .unwrap();
    assert_eq!(item["Severity"], "1", "impact 2 is critical severity");
    assert_eq!(data(&item, "autopilot:impact"), "2");
    assert_eq!(item["Status"], "Open");
    assert!(timeline(&item).iter().any(|e| e["kind"] == "escalated"));
    // One notification for the opening, one for the escalation.
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "sns:Publish")
            .await
            .unwrap(),
        2
    );

    // A later Success for the failed execution does not flip it silently.
    let r = invoke(&sb, &status_event(&env, "automation-success.json", &exec))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "noted", "{r}");
    let item = items(&env)
        .await
        .into_iter()
        .find(|i| i["OpsItemId"] == item_id.as_str())
        .unwrap();
    assert_eq!(item["Status"], "Open");

    // Another incident (another instance) whose runbook succeeds is resolved.
    let mut ev = event(&env, "guardduty-finding-high.json");
    ev["detail"]["resource"]["instanceDetails"]["instanceId"] = json!("i-0fedcba9876543210");
    let r = invoke(&sb, &ev).await.unwrap();
    assert_eq!(r["results"][0]["decision"], "opened", "{r}");
    let exec2 = r["results"][0]["executions"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let item2 = r["results"][0]["backendRef"].as_str().unwrap().to_owned();
    set_status(&env, &exec2, "Success").await;
    let r = invoke(&sb, &status_event(&env, "automation-success.json", &exec2))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "resolved", "{r}");
    let all = items(&env).await;
    let resolved = all
        .iter()
        .find(|i| i["OpsItemId"] == item2.as_str())
        .unwrap();
    assert_eq!(resolved["Status"], "Resolved");
    assert!(timeline(resolved).iter().any(|e| e["kind"] == "resolved"));
    let first = all
        .iter()
        .find(|i| i["OpsItemId"] == item_id.as_str())
        .unwrap();
    assert_eq!(first["Status"], "Open", "the other incident is untouched");

    // Status events of executions this function did not start are ignored.
    let r = invoke(&sb, &event(&env, "automation-failed.json"))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "ignored", "{r}");
    assert_eq!(items(&env).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_calendar_defers_disruptive_runbook_open_calendar_runs_it() {
    let env = TestEnv::new().await.unwrap();
    let calendar = "prod-change-freeze";
    env.control
        .call(
            "POST",
            "calendars",
            Some(json!({"tenant": env.tenant, "name": calendar, "state": "CLOSED"})),
        )
        .await
        .unwrap();
    let sb = sandbox_with(&env, &[("CHANGE_CALENDAR_NAME", calendar)]).await;
    let r = invoke(&sb, &event(&env, "alarm-critical.json"))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "opened", "{r}");
    assert_eq!(
        r["results"][0]["deferred"],
        json!(["AWS-RestartEC2Instance"])
    );
    assert!(
        automations(&env).await.is_empty(),
        "nothing ran while CLOSED"
    );
    let all = items(&env).await;
    assert_eq!(all.len(), 1);
    let tl = timeline(&all[0]);
    assert!(
        tl.iter()
            .any(|e| e["kind"] == "runbook-deferred"
                && e["text"].as_str().unwrap().contains(calendar)),
        "{tl:?}"
    );
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:GetCalendarState")
            .await
            .unwrap(),
        1
    );

    env.control
        .call(
            "POST",
            "calendars",
            Some(json!({"tenant": env.tenant, "name": calendar, "state": "OPEN"})),
        )
        .await
        .unwrap();
    let mut ev = event(&env, "alarm-critical.json");
    ev["detail"]["alarmName"] = json!("critical-db-status-check-failed");
    let r = invoke(&sb, &ev).await.unwrap();
    assert_eq!(r["results"][0]["decision"], "opened", "{r}");
    let runs = automations(&env).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["DocumentName"], "AWS-RestartEC2Instance");
}

#[tokio::test(flavor = "multi_thread")]
async fn non_incidents_exemptions_and_bad_input() {
    let env = TestEnv::new().await.unwrap();
    let sb = env
        .sandbox("incident-response", Path::new(BIN))
        .await
        .unwrap();
    let cases = [
        ("guardduty-finding-low.json", "ignored"),
        ("ec2-terminated.json", "ignored"),
        ("ec2-spot-interruption.json", "notified"),
        ("health-issue.json", "opened"),
        ("ec2-terminated.json", "annotated"),
    ];
    for (file, want) in cases {
        let r = invoke(&sb, &event(&env, file)).await.unwrap();
        assert_eq!(r["results"][0]["decision"], want, "{file}: {r}");
    }
    let all = items(&env).await;
    assert_eq!(all.len(), 1, "only the Health issue is an incident");
    assert!(timeline(&all[0]).iter().any(|e| e["kind"] == "annotation"));

    // Exemption tag on the managed node (looked up through Systems Manager).
    env.control
        .call(
            "POST",
            "fleet/node",
            Some(
                json!({"tenant": env.tenant, "instance_id": "i-0abcdef1234567890", "create": true,
                        "tags": {"autopilot:incident-exempt": "true"}}),
            ),
        )
        .await
        .unwrap();
    let r = invoke(&sb, &event(&env, "alarm-critical.json"))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "exempt", "{r}");
    assert!(automations(&env).await.is_empty());
    assert_eq!(items(&env).await.len(), 1);
    assert!(
        env.control
            .ok_calls(&env.tenant, "events:PutEvents")
            .await
            .unwrap()
            >= 1
    );

    // A GuardDuty finding whose instance id would be rejected never reaches a runbook.
    let mut bad = event(&env, "guardduty-finding-high.json");
    bad["detail"]["resource"]["instanceDetails"]["instanceId"] = json!("i-123;reboot");
    let err = invoke(&sb, &bad).await.unwrap_err();
    assert!(!err.error_type.is_empty());
    let err = invoke(&sb, &json!({"hello": "world"})).await.unwrap_err();
    assert_eq!(err.error_type, "MalformedEvent");
    assert_eq!(
        env.control
            .calls(&env.tenant, "ssm:StartAutomationExecution")
            .await
            .unwrap(),
        0
    );
}
