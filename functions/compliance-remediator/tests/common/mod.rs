//! Helpers shared by the compliance-remediator end-to-end tests: sample events addressed to a
//! test's own tenant, sandboxes with a test policy, and readers of the emulator's state.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use autopilot_harness::{FunctionSpec, InvokeOptions, Sandbox, TestEnv};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_compliance-remediator");

/// The emulated account of a tenant: digits derived from its access key id, so tests do not
/// share ledger rows (DynamoDB is not tenant-isolated in the emulator).
pub fn account_for(env: &TestEnv) -> String {
    let digits: String = env
        .tenant
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    digits[digits.len() - 12..].to_owned()
}

/// A sample from `events/compliance-remediator/` with a fresh id and the tenant's account.
pub fn sample(env: &TestEnv, file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/compliance-remediator")
        .join(file);
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["id"] = json!(uuid::Uuid::new_v4().to_string());
    v["account"] = json!(account_for(env));
    v
}

pub fn sweep_event(env: &TestEnv) -> Value {
    sample(env, "scheduler-sweep.json")
}

/// A sandbox with the template's environment plus `overrides`, and the test's own policy.
pub async fn sandbox(
    env: &TestEnv,
    policy: &Value,
    overrides: &[(&str, &str)],
) -> (Sandbox, String) {
    let spec = spec_with_policy(env, policy, overrides).await;
    let bucket = spec.env["REPORT_BUCKET"].clone();
    let sb = Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();
    (sb, bucket)
}

/// Stores `policy` as the tenant's own remediation policy document; returns its name.
pub async fn put_policy(env: &TestEnv, policy: &Value) -> String {
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
    name
}

/// The template's environment for the function plus `overrides`, reading the test's policy.
pub async fn spec_with_policy(
    env: &TestEnv,
    policy: &Value,
    overrides: &[(&str, &str)],
) -> FunctionSpec {
    let name = put_policy(env, policy).await;
    let mut spec = env
        .function("compliance-remediator", Path::new(BIN))
        .unwrap();
    spec.env.insert("POLICY_PARAMETER".into(), name);
    for (k, v) in overrides {
        spec.env.insert((*k).into(), (*v).into());
    }
    spec
}

pub fn policy(max_nodes: usize, calendar: &str) -> Value {
    json!({
        "patch": {"enabled": true, "rebootOption": "NoReboot", "maxConcurrency": "10%", "maxErrors": "10%", "batchSize": 50},
        "association": {"enabled": true},
        "exemptionTag": {"key": "autopilot:exempt"},
        "budget": {"maxNodes": max_nodes},
        "cooldownMinutes": 360, "retryAfterMinutes": 60, "maxAttempts": 3,
        "changeCalendar": calendar,
    })
}

pub async fn invoke(sb: &Sandbox, ev: &Value) -> Value {
    invoke_with(sb, ev, InvokeOptions::default()).await
}

pub async fn invoke_with(sb: &Sandbox, ev: &Value, opts: InvokeOptions) -> Value {
    match sb
        .invoke(&serde_json::to_vec(ev).unwrap(), opts)
        .await
        .unwrap()
        .outcome
    {
        Ok(v) => v,
        Err(e) => panic!("{e:?}"),
    }
}

pub async fn report(env: &TestEnv, bucket: &str, key: &str) -> Value {
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

pub async fn seed(env: &TestEnv, seed: u64) -> Value {
    seed_count(env, seed, 220).await
}

pub async fn seed_count(env: &TestEnv, seed: u64, count: usize) -> Value {
    env.control
        .seed_fleet(json!({
            "tenant": env.tenant, "count": count, "seed": seed, "hybrid_fraction": 0.2,
            "noncompliant_fraction": 0.45, "not_applicable_fraction": 0.3,
            "offline_fraction": 0.1, "stopped_fraction": 0.08,
        }))
        .await
        .unwrap()
}

/// Like [`seed_count`] with a chosen share of nodes missing patches; the same seed gives the
/// same node ids and compliance in every tenant.
pub async fn seed_noncompliant(env: &TestEnv, seed: u64, count: usize, fraction: f64) -> Value {
    env.control
        .seed_fleet(json!({
            "tenant": env.tenant, "count": count, "seed": seed, "hybrid_fraction": 0.2,
            "noncompliant_fraction": fraction, "not_applicable_fraction": 0.3,
            "offline_fraction": 0.1, "stopped_fraction": 0.05,
        }))
        .await
        .unwrap()
}

/// Node ids the patch commands in the emulator were sent to, per command.
pub async fn commands(env: &TestEnv) -> Vec<Vec<String>> {
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

/// Online nodes whose Patch compliance is NON_COMPLIANT in the emulator.
pub async fn noncompliant_online(env: &TestEnv) -> Vec<String> {
    let compliance = env.control.state("compliance", &env.tenant).await.unwrap();
    online(env)
        .await
        .into_iter()
        .filter(|id| compliance["Resources"][id]["Patch"]["Status"] == "NON_COMPLIANT")
        .collect()
}

/// Online nodes of the tenant's fleet.
pub async fn online(env: &TestEnv) -> Vec<String> {
    let fleet = env
        .control
        .call("GET", &format!("fleet?tenant={}", env.tenant), None)
        .await
        .unwrap();
    fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["PingStatus"] == "Online")
        .map(|n| n["InstanceId"].as_str().unwrap().to_owned())
        .collect()
}

/// The node's association record is linked to an association run and counted once.
pub fn assert_association_linked(node: &str, rec: &Value) {
    assert!(
        rec["command_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("associations:")),
        "{node} not linked: {rec}"
    );
    assert_eq!(rec["attempts"], json!(1.0), "{node}: {rec}");
}

/// The ledger's remediation record of (node, type) for the tenant's account.
pub async fn attempt(env: &TestEnv, node: &str, compliance_type: &str) -> Option<Value> {
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk().await);
    let pk = format!("remediation#{}#{node}#{compliance_type}", account_for(env));
    let item = ddb
        .get_item()
        .table_name(env.template.physical_name("LedgerTable").unwrap())
        .key("pk", AttributeValue::S(pk))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item?;
    let mut out = serde_json::Map::new();
    for (k, v) in item {
        let v = match v {
            AttributeValue::S(s) => json!(s),
            AttributeValue::N(n) => json!(n.parse::<f64>().unwrap()),
            AttributeValue::Bool(b) => json!(b),
            other => json!(format!("{other:?}")),
        };
        out.insert(k, v);
    }
    Some(Value::Object(out))
}

pub async fn calls(env: &TestEnv, op: &str) -> u64 {
    env.control.ok_calls(&env.tenant, op).await.unwrap()
}

/// The tenant's remediation records (ledger), free of ids and clocks so that two tenants that
/// did the same remediations compare equal: (node, type) → status, attempts and what the
/// record is linked to — `command` (an emulated command that targeted the node), `automation`
/// (an execution of the node), `associations`, `none`, or `dangling` (an id nothing matches).
pub async fn ledger_records(env: &TestEnv) -> Value {
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk().await);
    let table = env.template.physical_name("LedgerTable").unwrap();
    let prefix = format!("remediation#{}#", account_for(env));
    let cmds = env.control.state("commands", &env.tenant).await.unwrap();
    let autos = env.control.state("automations", &env.tenant).await.unwrap();
    let targets = |list: &Value, id_field: &str, id: &str| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|c| c[id_field] == id)
            .flat_map(|c| {
                let ids = if id_field == "CommandId" {
                    &c["InstanceIds"]
                } else {
                    &c["Parameters"]["InstanceId"]
                };
                ids.as_array().cloned().unwrap_or_default()
            })
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let mut out = serde_json::Map::new();
    let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
    loop {
        let page = ddb
            .scan()
            .table_name(&table)
            .filter_expression("begins_with(pk, :p)")
            .expression_attribute_values(":p", AttributeValue::S(prefix.clone()))
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
            let pk = text("pk").unwrap_or_default();
            let key = pk.trim_start_matches(&prefix).to_owned();
            let node = key.split('#').next().unwrap_or_default().to_owned();
            let link = match text("command_id") {
                None => "none",
                Some(c) if c.starts_with("associations:") => "associations",
                Some(c) if targets(&cmds["Commands"], "CommandId", &c).contains(&node) => "command",
                Some(c)
                    if targets(&autos["AutomationExecutions"], "AutomationExecutionId", &c)
                        .contains(&node) =>
                {
                    "automation"
                }
                Some(_) => "dangling",
            };
            let attempts = item
                .get("attempts")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<f64>().ok());
            out.insert(
                key,
                json!({"status": text("status"), "attempts": attempts, "link": link}),
            );
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    Value::Object(out)
}

/// Patch command targets as sorted node lists, sorted (command ids and order differ per tenant).
pub async fn command_targets(env: &TestEnv) -> Vec<Vec<String>> {
    let mut all: Vec<Vec<String>> = commands(env)
        .await
        .into_iter()
        .map(|mut c| {
            c.sort();
            c
        })
        .collect();
    all.sort();
    all
}

/// A sandbox past its init, ready for its first invocation.
pub async fn ready(spec: &FunctionSpec) -> Sandbox {
    let sb = Sandbox::spawn(spec.clone()).await.unwrap();
    sb.init_duration().await.unwrap();
    sb
}

/// Adds a fault rule for the test's tenant; returns its id.
pub async fn add_rule(env: &TestEnv, mut rule: Value) -> u64 {
    rule["tenant"] = json!(env.tenant);
    let r = env
        .control
        .call("POST", "faults", Some(rule))
        .await
        .unwrap();
    r["rules"][0]["id"].as_u64().unwrap()
}

/// How many requests fault rule `id` has matched.
pub async fn hits(env: &TestEnv, id: u64) -> u64 {
    let rules = env.control.call("GET", "faults", None).await.unwrap();
    rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map_or(0, |r| r["hits"].as_u64().unwrap_or(0))
}

/// Waits until rule `id` has matched a request (it is being held in the emulator).
pub async fn until_hit(env: &TestEnv, id: u64) {
    let started = Instant::now();
    while hits(env, id).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "rule {id} never matched"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Delivers `event` to a fresh sandbox with `deadline` left and SIGKILLs the process the
/// moment `due` (polled every 5 ms) says so; returns once the killed delivery's deadline has
/// passed, as Lambda's retry would wait. Fails (instead of waiting on a live process) when
/// `due` never held before the deadline; `what` names the kill point in messages.
pub async fn kill_when(
    spec: &FunctionSpec,
    event: &Value,
    deadline: Duration,
    what: &str,
    mut due: impl AsyncFnMut() -> bool,
) {
    let sb = ready(spec).await;
    let bytes = serde_json::to_vec(event).unwrap();
    let opts = InvokeOptions {
        deadline_in: Some(deadline),
        ..InvokeOptions::default()
    };
    let started = Instant::now();
    let (outcome, killed) = tokio::join!(sb.invoke(&bytes, opts), async {
        while started.elapsed() < deadline {
            if due().await {
                sb.kill();
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    });
    // A delivery that finished is still waiting for its next event: end it either way.
    sb.kill();
    sb.wait_exit().await;
    assert!(
        killed,
        "{what} never came before the deadline: {:?}",
        outcome.map(|i| i.outcome)
    );
    eprintln!(
        "killed at {what}, {:.1} s into the delivery",
        started.elapsed().as_secs_f64()
    );
    let until = started + deadline + Duration::from_millis(500);
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
}

/// [`kill_when`] rule `watch` (a latency rule holding the request in the emulator, where it
/// still takes effect) has matched.
pub async fn kill_when_held(
    spec: &FunctionSpec,
    env: &TestEnv,
    event: &Value,
    deadline: Duration,
    watch: u64,
) {
    let what = format!("the request held by rule {watch}");
    kill_when(spec, event, deadline, &what, async || {
        hits(env, watch).await >= 1
    })
    .await;
}
