//! End to end: the real `opsitem-creator` binary behind a Lambda Runtime API, against the
//! local emulator. Every assertion reads the emulator's state or call counters, never only
//! the function's own report.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::logs::emf_totals;
use autopilot_harness::{InvokeOptions, Sandbox, TestEnv};
use futures::future::join_all;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_opsitem-creator");

fn sample(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/opsitem-creator")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A 12-digit account of the test's own, so dedup strings and ledger keys never collide
/// with another test's (DynamoDB in the emulator is shared by all tenants).
fn account_for(env: &TestEnv) -> String {
    let digits: String = env
        .tenant
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    digits[digits.len() - 12..].to_owned()
}

/// The sample as a new delivery: fresh event id, the test's account.
fn event(env: &TestEnv, name: &str) -> Value {
    let mut v = sample(name);
    v["id"] = json!(uuid::Uuid::new_v4().to_string());
    v["account"] = json!(account_for(env));
    v
}

async fn invoke(sb: &Sandbox, ev: &Value) -> Result<Value, autopilot_harness::FunctionError> {
    sb.invoke(&serde_json::to_vec(ev).unwrap(), InvokeOptions::default())
        .await
        .unwrap()
        .outcome
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

#[tokio::test(flavor = "multi_thread")]
async fn alarm_lifecycle_create_repeat_append_resolve_recur() {
    let env = TestEnv::new().await.unwrap();
    let sb = env
        .sandbox("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();

    let r = invoke(&sb, &event(&env, "alarm-metric-alarm.json"))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "created", "{r}");
    let id = r["results"][0]["opsItemId"].as_str().unwrap().to_owned();
    assert_eq!(items(&env).await.len(), 1);

    let r = invoke(&sb, &event(&env, "alarm-metric-alarm.json"))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "updated", "{r}");
    let all = items(&env).await;
    assert_eq!(all.len(), 1, "a repeat must not create a second item");
    assert_eq!(data(&all[0], "autopilot:occurrences"), "2");
    let before: Vec<Value> = serde_json::from_str(data(&all[0], "/aws/resources")).unwrap();

    let r = invoke(&sb, &event(&env, "alarm-metric-alarm-second-instance.json"))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["opsItemId"], id.as_str());
    let all = items(&env).await;
    assert_eq!(all.len(), 1);
    assert_eq!(data(&all[0], "autopilot:occurrences"), "3");
    let after: Vec<Value> = serde_json::from_str(data(&all[0], "/aws/resources")).unwrap();
    assert!(
        after.len() > before.len(),
        "second instance appended: {before:?} -> {after:?}"
    );
    assert!(before.iter().all(|b| after.contains(b)));

    let r = invoke(&sb, &event(&env, "alarm-metric-ok.json"))
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"], "resolved", "{r}");
    let all = items(&env).await;
    assert_eq!(all[0]["Status"], "Resolved");
    assert!(data(&all[0], "autopilot:resolution").contains("Resolved by ssm-autopilot"));

    let r = invoke(&sb, &event(&env, "alarm-metric-alarm.json"))
        .await
        .unwrap();
    assert_eq!(
        r["results"][0]["decision"], "created",
        "a resolved item does not block a new one: {r}"
    );
    let all = items(&env).await;
    assert_eq!(all.len(), 2);
    assert_ne!(r["results"][0]["opsItemId"], id.as_str());
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:CreateOpsItem")
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_one_event_twenty_times_counts_it_once() {
    let env = TestEnv::new().await.unwrap();
    let first = event(&env, "alarm-metric-alarm.json");
    let repeat = event(&env, "alarm-metric-alarm.json");
    let sb = env
        .sandbox("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();
    invoke(&sb, &first).await.unwrap();

    // 10 concurrent deliveries (10 execution environments), then 10 sequential ones.
    let mut sandboxes = Vec::new();
    for _ in 0..10 {
        sandboxes.push(
            env.sandbox("opsitem-creator", Path::new(BIN))
                .await
                .unwrap(),
        );
    }
    let payload = serde_json::to_vec(&repeat).unwrap();
    let concurrent = join_all(
        sandboxes
            .iter()
            .map(|s| s.invoke(&payload, InvokeOptions::default())),
    )
    .await;
    let mut in_progress = 0;
    for inv in concurrent {
        match inv.unwrap().outcome {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.error_type, "IdempotencyAlreadyInProgress", "{e:?}");
                in_progress += 1;
            }
        }
    }
    for _ in 0..10 {
        let r = invoke(&sb, &repeat).await.unwrap();
        assert_eq!(r["results"][0]["occurrences"], 2, "{r}");
    }
    let all = items(&env).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        data(&all[0], "autopilot:occurrences"),
        "2",
        "exactly one increment"
    );
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:UpdateOpsItem")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:CreateOpsItem")
            .await
            .unwrap(),
        1
    );
    eprintln!("concurrent duplicates told to retry later: {in_progress}");
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_create_still_creates_exactly_once() {
    let env = TestEnv::new().await.unwrap();
    env.control
        .set_faults(json!([{"operation": "ssm:CreateOpsItem", "throttle_rate": 0.5, "seed": 11, "tenant": env.tenant}]))
        .await
        .unwrap();
    let sb = env
        .sandbox("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();
    let ev = event(&env, "guardduty-finding-high.json");
    // Lambda retries a failed async invocation; model that with a bounded loop.
    let mut outcome = None;
    for _ in 0..5 {
        match invoke(&sb, &ev).await {
            Ok(r) => {
                outcome = Some(r);
                break;
            }
            Err(e) => assert!(
                e.error_type == "AwsThrottled",
                "only throttling may fail this: {e:?}"
            ),
        }
    }
    let r = outcome.expect("created within Lambda's retries");
    assert_eq!(r["results"][0]["decision"], "created", "{r}");
    assert_eq!(items(&env).await.len(), 1);
    let c = env.control.counters(&env.tenant).await.unwrap();
    assert!(
        autopilot_harness::emulator::counter_field(&c, "ssm:CreateOpsItem", "throttled") > 0,
        "{c}"
    );
    assert_eq!(
        autopilot_harness::emulator::counter_field(&c, "ssm:CreateOpsItem", "ok"),
        1
    );
    // A later delivery of the same event changes nothing.
    let again = invoke(&sb, &ev).await.unwrap();
    assert_eq!(again["replayed"], true);
    assert_eq!(items(&env).await.len(), 1);
    env.control
        .call("DELETE", "faults", Some(json!({"tenant": env.tenant})))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sample_gives_its_expected_outcome() {
    let env = TestEnv::new().await.unwrap();
    let sb = env
        .sandbox("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();
    let cases = [
        ("alarm-metric-alarm.json", "created"),
        ("alarm-metric-math.json", "created"),
        ("alarm-composite.json", "created"),
        ("ec2-stopped.json", "created"),
        ("ec2-terminated.json", "updated"),
        ("ec2-spot-interruption.json", "created"),
        ("health-ec2-scheduled-change.json", "created"),
        ("guardduty-finding-high.json", "created"),
        ("securityhub-finding-new.json", "created"),
        ("securityhub-finding-resolved.json", "resolved"),
        ("ssm-compliance-noncompliant.json", "created"),
        ("ssm-compliance-compliant.json", "resolved"),
        ("automation-failed.json", "created"),
        ("automation-timedout.json", "created"),
        ("alarm-metric-ok.json", "resolved"),
    ];
    for (file, want) in cases {
        let r = invoke(&sb, &event(&env, file))
            .await
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        assert_eq!(r["results"][0]["decision"], want, "{file}: {r}");
    }
    let all = items(&env).await;
    let created = cases.iter().filter(|(_, w)| *w == "created").count();
    assert_eq!(all.len(), created);
    for item in &all {
        assert!(item["Title"].as_str().unwrap().len() <= 1024);
        assert!(data(item, "/aws/dedup").contains("dedupString"));
        assert_eq!(item["Source"], "ssm-autopilot");
    }
    // One notification per new item, through the template's topic.
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "sns:Publish")
            .await
            .unwrap(),
        created as u64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_inputs_are_rejected_without_side_effects() {
    let env = TestEnv::new().await.unwrap();
    let sb = env
        .sandbox("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/malformed");
    let mut tried = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "json" || e == "txt") {
            continue;
        }
        let raw = std::fs::read(&path).unwrap();
        let inv = sb
            .invoke(&raw, InvokeOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let err = inv.outcome.expect_err(&path.display().to_string());
        assert!(!err.error_type.is_empty(), "{}", path.display());
        tried += 1;
    }
    assert!(tried >= 15);
    // The sandbox survived every input, and nothing reached AWS.
    let r = invoke(&sb, &event(&env, "ec2-stopped.json")).await.unwrap();
    assert_eq!(r["results"][0]["decision"], "created");
    let c = env.control.counters(&env.tenant).await.unwrap();
    let root = c.get("counters").unwrap_or(&c);
    let ops: Vec<&String> = root.as_object().unwrap().keys().collect();
    assert_eq!(
        autopilot_harness::emulator::counter_field(&c, "ssm:CreateOpsItem", "calls"),
        1,
        "only the valid event acted: {ops:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_reached_fails_once_without_retry_storm() {
    let env = TestEnv::new().await.unwrap();
    env.control
        .call(
            "POST",
            "quota",
            Some(json!({"tenant": env.tenant, "opsitems": 0})),
        )
        .await
        .unwrap();
    let sb = env
        .sandbox("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();
    let r = invoke(&sb, &event(&env, "ec2-stopped.json")).await.unwrap();
    assert_eq!(r["results"][0]["decision"], "failed", "{r}");
    assert!(
        r["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("OpsItemLimitExceeded")
    );
    assert_eq!(
        env.control
            .calls(&env.tenant, "ssm:CreateOpsItem")
            .await
            .unwrap(),
        1,
        "no SDK retry storm"
    );
    assert!(
        env.control
            .ok_calls(&env.tenant, "events:PutEvents")
            .await
            .unwrap()
            >= 1,
        "the failure is audited"
    );
    assert!(items(&env).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_come_from_parameter_store() {
    let env = TestEnv::new().await.unwrap();
    let name = format!("/autopilot-test/{}/opsitem-rules", env.tenant);
    let rules = "rules:\n  - name: only-prod\n    match: {kind: alarm, fields: {/alarmName: {prefix: prod-}}}\n    title: \"PROD {{ alarm_name }}\"\n    severity: '1'\n    category: Performance\n";
    let ssm = aws_sdk_ssm::Client::new(&env.sdk().await);
    ssm.put_parameter()
        .name(&name)
        .value(rules)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let mut spec = env.function("opsitem-creator", Path::new(BIN)).unwrap();
    spec.env.insert("RULES_PARAMETER".into(), name);
    let sb = Sandbox::spawn(spec).await.unwrap();
    let r = invoke(&sb, &event(&env, "alarm-metric-alarm.json"))
        .await
        .unwrap();
    assert_eq!(
        r["results"][0]["decision"], "ignored",
        "alarm name lacks the prefix: {r}"
    );
    let mut ev = event(&env, "alarm-metric-alarm.json");
    ev["detail"]["alarmName"] = json!("prod-latency");
    let r = invoke(&sb, &ev).await.unwrap();
    assert_eq!(r["results"][0]["decision"], "created", "{r}");
    let all = items(&env).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["Title"], "PROD prod-latency");
    assert_eq!(all[0]["Severity"], "1");
    assert_eq!(all[0]["Category"], "Performance");
    // Read once, then served from the cache.
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:GetParameter")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_logs_are_structured_and_correlated() {
    let env = TestEnv::new().await.unwrap();
    let sb = env
        .sandbox("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();
    let alarm = event(&env, "alarm-metric-alarm.json");
    let first = sb
        .invoke(
            &serde_json::to_vec(&alarm).unwrap(),
            InvokeOptions::default(),
        )
        .await
        .unwrap();
    let again = sb
        .invoke(
            &serde_json::to_vec(&alarm).unwrap(),
            InvokeOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(again.outcome.as_ref().unwrap()["replayed"], true);
    // Let the last lines reach the collector.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = sb.logs();
    let totals = emf_totals(&logs);
    assert_eq!(totals.get("Created"), Some(&1.0), "{totals:?}");
    assert_eq!(totals.get("DuplicateSuppressed"), Some(&1.0), "{totals:?}");
    assert_eq!(totals.get("ColdStart"), Some(&1.0), "{totals:?}");
    assert_eq!(totals.get("EventsReceived"), Some(&2.0), "{totals:?}");

    let event_id = alarm["id"].as_str().unwrap();
    let mut app_lines = 0;
    for line in &logs {
        let doc: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let text = doc.to_string();
        assert!(
            text.contains(&first.request_id) || text.contains(&again.request_id),
            "no request id: {line}"
        );
        if doc.get("_aws").is_none() {
            app_lines += 1;
            assert!(text.contains(event_id), "no event id: {line}");
        }
    }
    assert!(app_lines >= 2, "expected decision log lines, got {logs:?}");
}
