//! At-least-once delivery: every side-effecting sample, 100 deliveries (one SIGKILLed between
//! its idempotency claim and completion, rounds of 20 concurrent, the rest sequential) leave
//! exactly the side effects of one delivery on a reference tenant: Automation executions,
//! incident OpsItems (status, severity, impact, the mirrored timeline's entries), commands.
//! Notifications may repeat after a crash, never go missing.
//!
//! The samples run as one incident lifecycle, so that the status samples follow runbooks this
//! function started: the critical alarm opens an incident whose runbook then fails
//! (escalation), the GuardDuty finding opens one whose runbook succeeds (resolution), the
//! Health issue opens a third, the instance's termination annotates the one keyed by the
//! instance, and the Spot interruption only notifies.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Instant;

use autopilot_harness::reliability::{self, Pool};
use autopilot_harness::{InvokeOptions, Sandbox, TestEnv};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_incident-response");
const FUNCTION: &str = "incident-response";

/// The side-effecting samples in lifecycle order, the runbook a status sample reports on, and
/// what one delivery decides.
const LIFECYCLE: [(&str, Option<&str>, &str); 7] = [
    ("alarm-critical.json", None, "opened"),
    (
        "automation-failed.json",
        Some("AWS-RestartEC2Instance"),
        "escalated",
    ),
    ("guardduty-finding-high.json", None, "opened"),
    (
        "automation-success.json",
        Some("AWSSupport-ContainEC2Instance"),
        "resolved",
    ),
    ("health-issue.json", None, "opened"),
    ("ec2-terminated.json", None, "annotated"),
    ("ec2-spot-interruption.json", None, "notified"),
];
/// Samples that no response plan acts on (no idempotency record, no side effect).
const NO_SIDE_EFFECTS: [&str; 1] = ["guardduty-finding-low.json"];

/// The tenant's execution of `document` (each plan starts it once per incident).
async fn execution_of(env: &TestEnv, document: &str) -> String {
    let s = env.control.state("automations", &env.tenant).await.unwrap();
    let runs: Vec<&Value> = s["AutomationExecutions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["DocumentName"] == document)
        .collect();
    assert_eq!(runs.len(), 1, "{document}: {runs:?}");
    runs[0]["AutomationExecutionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A status sample about the tenant's own execution of `document`, which the emulator is told
/// has ended with the sample's status.
async fn status_event(env: &TestEnv, mut event: Value, document: &str) -> Value {
    let id = execution_of(env, document).await;
    let status = event["detail"]["Status"].as_str().unwrap().to_owned();
    env.control
        .call(
            "POST",
            &format!("automations/{id}"),
            Some(json!({"tenant": env.tenant, "status": status})),
        )
        .await
        .unwrap();
    let account = reliability::test_account(env);
    event["detail"]["ExecutionId"] = json!(id);
    event["detail"]["Definition"] = json!(document);
    event["resources"] = json!([
        format!("arn:aws:ssm:us-east-1:{account}:automation-execution/{id}"),
        format!("arn:aws:ssm:us-east-1:{account}:automation-definition/{document}:1"),
    ]);
    event
}

fn sample<'a>(samples: &'a [(String, Value)], name: &str) -> &'a Value {
    &samples.iter().find(|(n, _)| n == name).unwrap().1
}

async fn once(sb: &Sandbox, event: &Value) -> Value {
    let r = sb
        .invoke(
            &serde_json::to_vec(event).unwrap(),
            InvokeOptions::default(),
        )
        .await
        .unwrap();
    r.outcome.unwrap_or_else(|e| panic!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_deliveries_of_every_sample_have_one_delivery_s_side_effects() {
    let started = Instant::now();
    let replayed = TestEnv::new().await.unwrap();
    let reference = TestEnv::new().await.unwrap();
    let mut pool = Pool::new(&replayed, FUNCTION, Path::new(BIN), 20, &[])
        .await
        .unwrap();
    let single = reference.sandbox(FUNCTION, Path::new(BIN)).await.unwrap();
    // moto loads its Parameter Store backend on the first call (~1.8 s); the crashed delivery's
    // response-plan read would pay it on top of the injected latency and miss the claim before
    // its deadline. Warm it from the reference tenant (moto's backends are not per tenant).
    let _ = aws_sdk_ssm::Client::new(&reference.sdk().await)
        .get_parameter()
        .name("/autopilot-test/replay-warm-up")
        .send()
        .await;
    let samples = reliability::fresh_samples(&replayed, FUNCTION).unwrap();
    let references = reliability::fresh_samples(&reference, FUNCTION).unwrap();
    // A new sample must be placed in the lifecycle (or declared side-effect free).
    let mut covered: Vec<&str> = LIFECYCLE.iter().map(|(n, _, _)| *n).collect();
    covered.extend(NO_SIDE_EFFECTS);
    covered.sort_unstable();
    let names: Vec<&str> = samples.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        covered, names,
        "every sample is in LIFECYCLE or NO_SIDE_EFFECTS"
    );

    let (mut deliveries, mut claimed, mut extra_notifications) = (0, 0, 0u64);
    for (name, follows, decision) in LIFECYCLE {
        let (mut event, mut reference_event) = (
            sample(&samples, name).clone(),
            sample(&references, name).clone(),
        );
        if let Some(document) = follows {
            event = status_event(&replayed, event, document).await;
            reference_event = status_event(&reference, reference_event, document).await;
        }
        let run = reliability::replay(&replayed, &mut pool, &event, 100, 20)
            .await
            .unwrap();
        if !run.failures.is_empty() {
            // Sequential deliveries and retries run in the first sandbox: its last error lines
            // name the failing operation and AWS's error.
            let logs = pool.sandboxes[0].logs();
            let errors: Vec<&String> = logs
                .iter()
                .filter(|l| l.contains("ERROR") || l.contains("error"))
                .collect();
            for line in errors.iter().rev().take(5).rev() {
                eprintln!("{name}: {line}");
            }
        }
        assert!(
            run.failures.is_empty(),
            "{name}: {:?} after {:?}",
            run.failures,
            run.retryable_errors
        );
        deliveries += run.deliveries;
        claimed += usize::from(run.claimed_before_kill);
        let r = once(&single, &reference_event).await;
        assert_eq!(r["results"][0]["decision"], decision, "{name}: {r}");

        let mut got = reliability::side_effects(&replayed).await.unwrap();
        let mut want = reliability::side_effects(&reference).await.unwrap();
        // Notifications are at-least-once (as SNS itself): a crash after the publish and before
        // completion repeats it, a crash before it must not lose it. Everything else: exactly
        // once.
        let sent = got["sns_publish"].take().as_u64().unwrap();
        let wanted = want["sns_publish"].take().as_u64().unwrap();
        assert!(
            sent >= wanted,
            "{name}: a notification was lost ({sent} < {wanted})"
        );
        extra_notifications += sent - wanted;
        assert_eq!(got, want, "{name}: 100 deliveries differ from one");
        eprintln!(
            "{FUNCTION} {name}: {} deliveries (+{} retries, {:?}), claim before kill: {}",
            run.deliveries, run.retries, run.retryable_errors, run.claimed_before_kill
        );
    }
    // The lifecycle did what it is meant to: two runbooks, three incidents, one escalated,
    // one resolved, one annotated.
    let effects = reliability::side_effects(&reference).await.unwrap();
    assert_eq!(effects["automations"].as_array().unwrap().len(), 2);
    let items = effects["opsitems"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{effects}");
    let kinds = |i: &Value| -> Vec<String> {
        i["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(items.iter().any(|i| kinds(i).contains(&"escalated".into())));
    assert!(items.iter().any(|i| i["status"] == "Resolved"));
    // The termination annotates the open incident keyed by the instance (the Health issue's;
    // the alarm's incident is keyed by the alarm).
    let annotated: Vec<&Value> = items
        .iter()
        .filter(|i| kinds(i).contains(&"annotation".into()))
        .collect();
    assert_eq!(annotated.len(), 1, "{effects:#}");
    assert!(
        annotated[0]["title"]
            .as_str()
            .unwrap()
            .starts_with("AWS Health")
    );
    // The samples declared side-effect free are: no record, no OpsItem, runbook or notification.
    let before = reliability::side_effects(&replayed).await.unwrap();
    let puts = replayed
        .control
        .calls(&replayed.tenant, "dynamodb:PutItem")
        .await
        .unwrap();
    for name in NO_SIDE_EFFECTS {
        for _ in 0..2 {
            let r = once(&pool.sandboxes[0], sample(&samples, name)).await;
            assert_eq!(r["results"][0]["decision"], "ignored", "{name}: {r}");
        }
    }
    assert_eq!(reliability::side_effects(&replayed).await.unwrap(), before);
    assert_eq!(
        replayed
            .control
            .calls(&replayed.tenant, "dynamodb:PutItem")
            .await
            .unwrap(),
        puts,
        "an ignored sample wrote to DynamoDB"
    );
    eprintln!(
        "{FUNCTION}: {deliveries} deliveries, {extra_notifications} repeated notification(s), {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(deliveries, 100 * LIFECYCLE.len());
    // Every crashed delivery claims first: the claim comes after the (warm, held-back)
    // response-plan read, ~1.5 s into a 3 s deadline, or right after the ledger read of a
    // status event.
    assert_eq!(
        claimed,
        LIFECYCLE.len(),
        "every crash must land after the claim"
    );
}
