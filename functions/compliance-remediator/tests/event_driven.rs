//! End to end, event-driven paths of the real `compliance-remediator` binary against the
//! emulator: an SSM compliance change remediates that one node; the command's status event and
//! a later COMPLIANT report are what make it "remediated"; failures are retried to the limit
//! and never reported as success; a Config rule change runs its mapped runbook once; a sweep cut
//! short by its deadline continues from its checkpoint without remediating anything twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use autopilot_harness::{InvokeOptions, TestEnv};
use common::*;
use serde_json::{Value, json};

fn compliance_event(env: &TestEnv, node: &str, status: &str) -> Value {
    let mut ev = sample(env, "ssm-compliance-noncompliant-patch.json");
    ev["detail"]["resource-id"] = json!(node);
    ev["detail"]["compliance-status"] = json!(status);
    ev["resources"] = json!([format!(
        "arn:aws:ssm:us-east-1:{}:managed-instance/{node}",
        account_for(env)
    )]);
    ev
}

fn command_event(env: &TestEnv, node: &str, command_id: &str, status: &str) -> Value {
    let mut ev = sample(env, "command-invocation-failed.json");
    ev["detail"]["instance-id"] = json!(node);
    ev["detail"]["command-id"] = json!(command_id);
    ev["detail"]["status"] = json!(status);
    ev
}

/// The one command the emulator holds for `node` (its id).
async fn command_for(env: &TestEnv, node: &str) -> Vec<String> {
    let s = env.control.state("commands", &env.tenant).await.unwrap();
    s["Commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["InstanceIds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i == node)
        })
        .map(|c| c["CommandId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn compliance_change_remediates_one_node_and_only_a_compliant_recheck_verifies_it() {
    let env = TestEnv::new().await.unwrap();
    seed_count(&env, 21, 40).await;
    let candidates = noncompliant_online(&env).await;
    assert!(candidates.len() >= 3, "{candidates:?}");
    let (node, exempt) = (candidates[0].clone(), candidates[1].clone());
    env.control
        .call("POST", "fleet/node", Some(json!({"tenant": env.tenant, "instance_id": exempt, "tags": {"autopilot:exempt": "true"}})))
        .await
        .unwrap();
    let (sb, _) = sandbox(&env, &policy(100, ""), &[("DRY_RUN", "false")]).await;

    let ev = compliance_event(&env, &node, "non_compliant");
    let r = invoke(&sb, &ev).await;
    assert_eq!(r["decision"], "remediated", "{r}");
    assert_eq!(calls(&env, "ssm:SendCommand").await, 1);
    assert_eq!(
        commands(&env).await,
        vec![vec![node.clone()]],
        "only that node"
    );
    let cmd = command_for(&env, &node).await;
    assert_eq!(cmd.len(), 1);
    let a = attempt(&env, &node, "Patch")
        .await
        .expect("attempt recorded");
    assert_eq!(a["status"], "pending");
    assert_eq!(a["command_id"], json!(cmd[0]));

    // At-least-once: the same event again answers from the idempotency store.
    let again = invoke(&sb, &ev).await;
    assert_eq!(again["replayed"], true, "{again}");
    // A new event for the same node within the cooldown plans nothing.
    let later = invoke(&sb, &compliance_event(&env, &node, "non_compliant")).await;
    assert_eq!(later["decision"], "recorded", "{later}");
    assert_eq!(calls(&env, "ssm:SendCommand").await, 1);

    // The exempt node is never remediated.
    let r = invoke(&sb, &compliance_event(&env, &exempt, "non_compliant")).await;
    assert_eq!(r["decision"], "recorded", "{r}");
    assert_eq!(calls(&env, "ssm:SendCommand").await, 1);
    assert!(attempt(&env, &exempt, "Patch").await.is_none());

    // The command reports Success: not remediated until compliance re-checks.
    let r = invoke(&sb, &command_event(&env, &node, &cmd[0], "Success")).await;
    assert_eq!(r["decision"], "recorded", "{r}");
    assert_eq!(
        attempt(&env, &node, "Patch").await.unwrap()["status"],
        "succeeded"
    );
    // A status event of some other command does not touch the record.
    let r = invoke(
        &sb,
        &command_event(
            &env,
            &node,
            "0b7c1d3e-0000-4000-8000-000000000000",
            "Failed",
        ),
    )
    .await;
    assert_eq!(r["decision"], "ignored", "{r}");
    assert_eq!(
        attempt(&env, &node, "Patch").await.unwrap()["status"],
        "succeeded"
    );

    let r = invoke(&sb, &compliance_event(&env, &node, "compliant")).await;
    assert_eq!(r["decision"], "recorded", "{r}");
    assert_eq!(
        attempt(&env, &node, "Patch").await.unwrap()["status"],
        "remediated"
    );
    // A COMPLIANT report for a node nothing was attempted on verifies nothing.
    let other = &candidates[2];
    let r = invoke(&sb, &compliance_event(&env, other, "compliant")).await;
    assert_eq!(r["decision"], "ignored", "{r}");
    assert!(attempt(&env, other, "Patch").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_remediation_is_retried_to_the_limit_and_never_reported_as_success() {
    let env = TestEnv::new().await.unwrap();
    seed_count(&env, 22, 40).await;
    let candidates = noncompliant_online(&env).await;
    let node = candidates[0].clone();
    let mut pol = policy(100, "");
    pol["retryAfterMinutes"] = json!(0);
    pol["maxAttempts"] = json!(2);
    let (sb, _) = sandbox(&env, &pol, &[("DRY_RUN", "false")]).await;

    for round in 1..=2u64 {
        let r = invoke(&sb, &compliance_event(&env, &node, "non_compliant")).await;
        assert_eq!(r["decision"], "remediated", "round {round}: {r}");
        assert_eq!(calls(&env, "ssm:SendCommand").await, round);
        let cmd = command_for(&env, &node).await;
        let r = invoke(
            &sb,
            &command_event(&env, &node, cmd.last().unwrap(), "Failed"),
        )
        .await;
        assert_eq!(r["decision"], "recorded", "{r}");
        let a = attempt(&env, &node, "Patch").await.unwrap();
        assert_eq!(a["status"], "failed", "{a}");
        assert_eq!(a["attempts"], json!(round as f64), "{a}");
    }
    // The limit is reached: reported, not retried, and never called a success.
    let r = invoke(&sb, &compliance_event(&env, &node, "non_compliant")).await;
    assert_eq!(r["decision"], "recorded", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("RetryLimit"), "{r}");
    assert_eq!(calls(&env, "ssm:SendCommand").await, 2);
    assert_eq!(
        attempt(&env, &node, "Patch").await.unwrap()["status"],
        "failed"
    );

    // A node that went offline before its command ran is not a failed remediation: the
    // attempt is given back.
    let second = candidates[1].clone();
    let r = invoke(&sb, &compliance_event(&env, &second, "non_compliant")).await;
    assert_eq!(r["decision"], "remediated", "{r}");
    let cmd = command_for(&env, &second).await;
    env.control
        .call(
            "POST",
            "fleet/node",
            Some(json!({"tenant": env.tenant, "instance_id": second, "state": "stopped"})),
        )
        .await
        .unwrap();
    let r = invoke(&sb, &command_event(&env, &second, &cmd[0], "TimedOut")).await;
    assert_eq!(r["decision"], "recorded", "{r}");
    let a = attempt(&env, &second, "Patch").await.unwrap();
    assert_eq!(a["status"], "undeliverable", "{a}");
    assert_eq!(a["attempts"], json!(0.0), "{a}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_rule_change_runs_the_mapped_runbook_once() {
    let env = TestEnv::new().await.unwrap();
    seed_count(&env, 23, 10).await;
    let node = noncompliant_online(&env).await[0].clone();
    let mut pol = policy(100, "");
    pol["configRules"] = json!({"ec2-imdsv2-check": {
        "runbook": "AWSConfigRemediation-EnforceEC2InstanceIMDSv2",
        "parameters": {"InstanceId": ["{{ resource_id }}"], "AutomationAssumeRole": ["{{ automation_role }}"]},
    }});
    let (sb, _) = sandbox(&env, &pol, &[("DRY_RUN", "false")]).await;
    let mut ev = sample(&env, "config-rule-noncompliant.json");
    ev["detail"]["resourceId"] = json!(node);
    let r = invoke(&sb, &ev).await;
    assert_eq!(r["decision"], "remediated", "{r}");
    let autos = env.control.state("automations", &env.tenant).await.unwrap();
    let list = autos["AutomationExecutions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{autos}");
    assert_eq!(
        list[0]["DocumentName"],
        "AWSConfigRemediation-EnforceEC2InstanceIMDSv2"
    );
    assert_eq!(list[0]["Parameters"]["InstanceId"], json!([node]));
    assert!(
        list[0]["Parameters"]["AutomationAssumeRole"][0]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:iam::"),
        "{autos}"
    );
    // Replayed and re-reported: still one execution.
    assert_eq!(invoke(&sb, &ev).await["replayed"], true);
    let mut again = sample(&env, "config-rule-noncompliant.json");
    again["detail"]["resourceId"] = json!(node);
    let r = invoke(&sb, &again).await;
    assert_eq!(r["decision"], "recorded", "{r}");
    let autos = env.control.state("automations", &env.tenant).await.unwrap();
    assert_eq!(autos["AutomationExecutions"].as_array().unwrap().len(), 1);
    // A rule with no mapped runbook is reported, not fixed.
    let mut unmapped = sample(&env, "config-rule-noncompliant.json");
    unmapped["detail"]["resourceId"] = json!(node);
    unmapped["detail"]["configRuleName"] = json!("s3-bucket-logging-enabled");
    let r = invoke(&sb, &unmapped).await;
    assert_eq!(r["decision"], "recorded", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("NoAction"), "{r}");
    assert_eq!(calls(&env, "ssm:StartAutomationExecution").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_cut_by_its_deadline_continues_without_remediating_twice() {
    let env = TestEnv::new().await.unwrap();
    seed(&env, 24).await;
    // The continuation event travels on the audit bus: a rule for this sweep sends it to a queue
    // of the test's own, as the template's rule sends it to the function.
    let sweep = sweep_event(&env);
    let sweep_id = sweep["id"].as_str().unwrap().to_owned();
    let sdk = env.sdk().await;
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let sqs = |target: &'static str, body: Value| {
        let control = &env.control;
        async move { control.aws_json(target, body).await.unwrap() }
    };
    let queue_name = format!("continuations-{}", &sweep_id[..8]);
    let queue = sqs("AmazonSQS.CreateQueue", json!({"QueueName": queue_name})).await["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{queue_name}");
    let bus = env.template.physical_name("AuditBus").unwrap();
    let rule = format!("continuation-{}", &sweep_id[..8]);
    events
        .put_rule()
        .event_bus_name(&bus)
        .name(&rule)
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
        .rule(&rule)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // 60 s left against the template's 90 s margin: every invocation runs one step (the least
    // it runs, so a continuation always makes progress) and checkpoints the rest.
    let short = InvokeOptions {
        deadline_in: Some(Duration::from_secs(60)),
        ..InvokeOptions::default()
    };
    let (sb, bucket) = sandbox(&env, &policy(500, ""), &[("DRY_RUN", "false")]).await;
    let r = invoke_with(&sb, &sweep, short.clone()).await;
    let s = &r["summary"];
    let left = s["checkpointedSteps"].as_u64().unwrap();
    assert!(left >= 1, "{r}");
    let rep = report(&env, &bucket, s["reportKey"].as_str().unwrap()).await;
    let planned: BTreeSet<String> = rep["plan"]["patchBatches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b.as_array().unwrap().iter())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let batches = rep["plan"]["patchBatches"].as_array().unwrap().len() as u64;
    assert!(batches >= 2, "{batches}");
    assert_eq!(
        calls(&env, "ssm:SendCommand").await,
        1,
        "one step before the cut"
    );

    let mut continuations = 0;
    let mut remaining = left;
    while remaining > 0 {
        let got = sqs(
            "AmazonSQS.ReceiveMessage",
            json!({"QueueUrl": queue, "MaxNumberOfMessages": 1, "WaitTimeSeconds": 5}),
        )
        .await;
        let msg = got["Messages"]
            .get(0)
            .expect("a continuation event on the audit bus");
        let cont: Value = serde_json::from_str(msg["Body"].as_str().unwrap()).unwrap();
        assert_eq!(cont["detail"]["sweepId"], json!(sweep_id));
        let r = invoke_with(&sb, &cont, short.clone()).await;
        assert_eq!(r["decision"], "continued", "{r}");
        // A repeat delivery of the same continuation runs nothing again.
        assert_eq!(
            invoke_with(&sb, &cont, short.clone()).await["replayed"],
            true
        );
        sqs(
            "AmazonSQS.DeleteMessage",
            json!({"QueueUrl": queue, "ReceiptHandle": msg["ReceiptHandle"]}),
        )
        .await;
        remaining = r["summary"]["checkpointedSteps"].as_u64().unwrap();
        continuations += 1;
        assert!(continuations <= left, "each continuation makes progress");
    }
    let sent = commands(&env).await;
    assert_eq!(sent.len() as u64, batches, "one command per planned batch");
    let sent_nodes: Vec<&String> = sent.iter().flatten().collect();
    let unique: BTreeSet<String> = sent_nodes.iter().map(|s| (*s).clone()).collect();
    assert_eq!(sent_nodes.len(), unique.len(), "no node patched twice");
    assert_eq!(unique, planned, "the continued sweep ran exactly the plan");
    events
        .remove_targets()
        .event_bus_name(&bus)
        .rule(&rule)
        .ids("queue")
        .send()
        .await
        .unwrap();
    events
        .delete_rule()
        .event_bus_name(&bus)
        .name(&rule)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn not_applicable_and_stopped_nodes_are_never_remediated() {
    let env = TestEnv::new().await.unwrap();
    seed_count(&env, 25, 40).await;
    let candidates = noncompliant_online(&env).await;
    let (na, stopped, normal) = (
        candidates[0].clone(),
        candidates[1].clone(),
        candidates[2].clone(),
    );
    // Third-party patch tools report NotApplicable patches as NON_COMPLIANT items: nothing is
    // missing on that node.
    env.control
        .call(
            "POST",
            "fleet/node",
            Some(
                json!({"tenant": env.tenant, "instance_id": na, "compliance": {"Patch": [
            {"Id": "KB5040001", "Title": "KB5040001", "Severity": "LOW", "Status": "NON_COMPLIANT",
             "Details": {"PatchState": "NotApplicable"}}]}}),
            ),
        )
        .await
        .unwrap();
    env.control
        .call(
            "POST",
            "fleet/node",
            Some(json!({"tenant": env.tenant, "instance_id": stopped, "state": "stopped"})),
        )
        .await
        .unwrap();
    let (sb, bucket) = sandbox(&env, &policy(100, ""), &[("DRY_RUN", "false")]).await;
    for node in [&na, &stopped] {
        let r = invoke(&sb, &compliance_event(&env, node, "non_compliant")).await;
        assert_eq!(r["decision"], "recorded", "{node}: {r}");
        assert!(attempt(&env, node, "Patch").await.is_none(), "{node}");
    }
    assert_eq!(calls(&env, "ssm:SendCommand").await, 0);

    // The sweep skips them with their reasons and patches the others.
    let r = invoke(&sb, &sweep_event(&env)).await;
    let rep = report(&env, &bucket, r["summary"]["reportKey"].as_str().unwrap()).await;
    let reason = |node: &str| {
        rep["plan"]["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["resourceId"] == node && x["complianceType"] == "Patch")
            .map(|x| x["reason"].as_str().unwrap().to_owned())
    };
    assert_eq!(reason(&na).as_deref(), Some("not-applicable-only"), "{rep}");
    assert_eq!(
        reason(&stopped).as_deref(),
        Some("node-not-online"),
        "{rep}"
    );
    let sent: BTreeSet<String> = commands(&env).await.into_iter().flatten().collect();
    assert!(sent.contains(&normal), "{sent:?}");
    assert!(!sent.contains(&na) && !sent.contains(&stopped), "{sent:?}");
}
