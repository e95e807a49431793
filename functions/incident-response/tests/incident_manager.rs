//! The Incident Manager backend: the handler in-process, SSM / DynamoDB / SNS / EventBridge
//! against the emulator, Incident Manager answered by aws-smithy-mocks (the emulator has none).

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use autopilot_harness::TestEnv;
use aws_sdk_ssmincidents::operation::create_timeline_event::CreateTimelineEventOutput;
use aws_sdk_ssmincidents::operation::start_incident::{StartIncidentInput, StartIncidentOutput};
use aws_sdk_ssmincidents::operation::update_incident_record::UpdateIncidentRecordOutput;
use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, create_mock_http_client, mock};
use incident_response::config::Config;
use incident_response::{Deps, handle};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_incident-response");
const ARN: &str = "arn:aws:ssm-incidents::123456789012:incident-record/plan/abc";

fn lambda_event(v: &Value) -> LambdaEvent<Box<serde_json::value::RawValue>> {
    let mut ctx = Context::default();
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(30);
    ctx.deadline = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    LambdaEvent::new(
        serde_json::value::RawValue::from_string(v.to_string()).unwrap(),
        ctx,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn incident_manager_backend_starts_one_incident_and_escalates_it() {
    let env = TestEnv::new().await.unwrap();
    let starts: Arc<Mutex<Vec<StartIncidentInput>>> = Arc::default();
    let seen = starts.clone();
    let start =
        mock!(aws_sdk_ssmincidents::Client::start_incident).then_compute_output(move |req| {
            seen.lock().unwrap().push(req.clone());
            StartIncidentOutput::builder()
                .incident_record_arn(ARN)
                .build()
                .unwrap()
        });
    let timeline = mock!(aws_sdk_ssmincidents::Client::create_timeline_event)
        .match_requests(|r| r.incident_record_arn() == Some(ARN))
        .then_output(|| {
            CreateTimelineEventOutput::builder()
                .incident_record_arn(ARN)
                .event_id("e")
                .build()
                .unwrap()
        });
    let update = mock!(aws_sdk_ssmincidents::Client::update_incident_record)
        .match_requests(|r| r.arn() == Some(ARN) && r.impact() == Some(1))
        .then_output(|| UpdateIncidentRecordOutput::builder().build());
    let interceptor = MockResponseInterceptor::new()
        .rule_mode(RuleMode::MatchAny)
        .with_rule(&start)
        .with_rule(&timeline)
        .with_rule(&update);
    let incidents = aws_sdk_ssmincidents::Client::from_conf(
        aws_sdk_ssmincidents::Config::builder()
            .behavior_version(aws_sdk_ssmincidents::config::BehaviorVersion::latest())
            .region(aws_sdk_ssmincidents::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ssmincidents::config::Credentials::new(
                "AKIDMOCK", "secret", None, None, "mock",
            ))
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build(),
    );

    let mut vars = env
        .function("incident-response", Path::new(BIN))
        .unwrap()
        .env;
    vars.insert("INCIDENT_BACKEND".into(), "incident-manager".into());
    vars.insert(
        "INCIDENT_RESPONSE_PLAN_ARN".into(),
        "arn:aws:ssm-incidents::123456789012:response-plan/plan".into(),
    );
    let config = Config::from_source(&autopilot_shared::config::Env::new(move |k| {
        vars.get(k).cloned().filter(|v| !v.is_empty())
    }))
    .unwrap();
    let deps = Deps::with_incident_client(config, &env.sdk().await, incidents);

    let digits: String = env
        .tenant
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let account = &digits[digits.len() - 12..];
    let mut ev: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../events/incident-response/guardduty-finding-high.json"),
        )
        .unwrap(),
    )
    .unwrap();
    ev["id"] = json!(uuid::Uuid::new_v4().to_string());
    ev["account"] = json!(account);

    let r = handle(&deps, lambda_event(&ev)).await.unwrap();
    assert_eq!(r.results[0].decision, "opened");
    assert_eq!(r.results[0].backend_ref.as_deref(), Some(ARN));
    let again = handle(&deps, lambda_event(&ev)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(start.num_calls(), 1, "one StartIncident");
    {
        let s = starts.lock().unwrap();
        let req = &s[0];
        assert_eq!(req.impact(), Some(2));
        assert!(uuid::Uuid::parse_str(req.client_token().unwrap()).is_ok());
        assert_eq!(req.trigger_details().unwrap().source(), "aws.guardduty");
        assert!(req.related_items().iter().any(|i| {
            matches!(i.identifier().and_then(|x| x.value()),
                Some(aws_sdk_ssmincidents::types::ItemValue::Arn(a)) if a.ends_with("instance/i-0abcdef1234567890"))
        }));
    }
    assert!(
        timeline.num_calls() >= 2,
        "opened + runbook-started mirrored"
    );
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:StartAutomationExecution")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        env.control
            .calls(&env.tenant, "ssm:CreateOpsItem")
            .await
            .unwrap(),
        0
    );

    // The runbook fails → UpdateIncidentRecord raises the impact to 1.
    let exec = r.results[0].executions[0].clone();
    let mut st: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../events/incident-response/automation-failed.json"),
        )
        .unwrap(),
    )
    .unwrap();
    st["id"] = json!(uuid::Uuid::new_v4().to_string());
    st["account"] = json!(account);
    st["detail"]["ExecutionId"] = json!(exec);
    let r = handle(&deps, lambda_event(&st)).await.unwrap();
    assert_eq!(r.results[0].decision, "escalated");
    assert_eq!(update.num_calls(), 1);
}
