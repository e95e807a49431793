//! What a patch step leaves in the ledger when SendCommand fails: the claims stay when the
//! outcome is unknown (a 5xx, an answer without a command id), so the redelivery looks the
//! command up by its comment before sending again, and are given back only when SSM rejected
//! the call. The emulator answers its injected 5xx with retryable codes and never drops an id,
//! so SSM is answered by aws-smithy-mocks here; the ledger is the emulator's DynamoDB table.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use autopilot_harness::TestEnv;
use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::config::retry::RetryConfig;
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use aws_smithy_types::body::SdkBody;
use compliance_remediator::error::RemediatorError;
use compliance_remediator::ledger::Ledger;
use compliance_remediator::plan::{Key, PATCH};
use compliance_remediator::policy::PatchAction;
use compliance_remediator::remediate::{Remediator, SideEffectError};
use compliance_remediator::work::{Runner, Step, Work};

const NODE: &str = "i-0123456789abcdef0";

fn json(status: u16, body: &str) -> HttpResponse {
    let mut r = HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body.to_owned()));
    r.headers_mut()
        .insert("content-type", "application/x-amz-json-1.1");
    r
}

/// An SSM client for 3 attempts (as deployed), answered by `send` and `list`.
fn ssm(send: &Rule, list: &Rule) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "AKIDMOCK", "secret", None, None, "mock",
        ))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .http_client(create_mock_http_client())
        .interceptor(
            MockResponseInterceptor::new()
                .rule_mode(RuleMode::MatchAny)
                .with_rule(send)
                .with_rule(list),
        )
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

/// Runs one patch step for [`NODE`] against SendCommand answering `status`/`body`; returns
/// the step's error, SendCommand's call count and whether the claim is still the sweep's own.
async fn patch_step(status: u16, body: &'static str) -> (RemediatorError, usize, bool) {
    let env = TestEnv::new().await.unwrap();
    let ledger = Ledger::new(
        autopilot_shared::clients::dynamodb(&env.sdk_with_attempts(1).await),
        env.template.physical_name("LedgerTable").unwrap(),
        4,
    );
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .sequence()
        .http_response(move || json(status, body))
        .repeatedly()
        .build();
    let list = mock!(aws_sdk_ssm::Client::list_commands)
        .sequence()
        .http_response(|| json(200, r#"{"Commands":[]}"#))
        .repeatedly()
        .build();
    let remediator = Remediator::new(ssm(&send, &list));
    // DynamoDB is shared by every test: a fresh account keeps the records apart.
    let account = env.tenant.clone();
    let work = Work {
        sweep_id: uuid::Uuid::new_v4().to_string(),
        account: account.clone(),
        patch: PatchAction {
            enabled: true,
            reboot_option: "NoReboot".into(),
            max_concurrency: "10".into(),
            max_errors: "1".into(),
            batch_size: 50,
            timeout_seconds: 600,
        },
        steps: vec![Step::Patch {
            nodes: vec![NODE.into()],
        }],
        // No record read: the claim is conditional on there being none.
        read: Some(BTreeMap::new()),
    };
    let own = BTreeMap::new();
    let runner = Runner {
        ledger: &ledger,
        remediator: &remediator,
        function: "stack-ComplianceRemediatorFunction",
        now: chrono::Utc::now().timestamp(),
        deadline: SystemTime::now() + Duration::from_secs(60),
        margin: Duration::from_secs(1),
        own: &own,
        stale_after: Duration::from_secs(900),
        lease: None,
    };
    let err = runner.run(&work).await.unwrap_err();
    let key = Key::new(NODE, PATCH);
    let (_, own_after) = ledger
        .load_for_sweep(&account, &[], std::slice::from_ref(&key), &work.sweep_id)
        .await
        .unwrap();
    (err, send.num_calls(), own_after.contains_key(&key))
}

#[tokio::test]
async fn a_send_command_answering_500_keeps_the_claim_for_the_lookup() {
    let (err, calls, kept) = patch_step(
        500,
        r#"{"__type":"InternalServerError","message":"mocked"}"#,
    )
    .await;
    assert!(
        matches!(
            err,
            RemediatorError::SideEffect(SideEffectError::Unknown(_))
        ),
        "{err:?}"
    );
    assert_eq!(calls, 1, "sent once");
    assert!(kept, "the claim must stay: the command may have gone out");
}

#[tokio::test]
async fn a_send_command_answering_503_without_a_code_keeps_the_claim() {
    // An unknown 5xx code is not "retryable" by name, but its outcome is just as unknown.
    let (err, calls, kept) = patch_step(503, "{}").await;
    assert!(
        matches!(
            err,
            RemediatorError::SideEffect(SideEffectError::Unknown(_))
        ),
        "{err:?}"
    );
    assert_eq!(calls, 1);
    assert!(kept);
}

#[tokio::test]
async fn a_command_id_missing_from_the_answer_keeps_the_claim() {
    let (err, calls, kept) = patch_step(200, r#"{"Command":{}}"#).await;
    assert!(
        matches!(
            err,
            RemediatorError::SideEffect(SideEffectError::MissingId { .. })
        ),
        "{err:?}"
    );
    assert_eq!(calls, 1);
    assert!(
        kept,
        "the command went out: the retry links it from the history"
    );
}

#[tokio::test]
async fn an_invalid_instance_id_gives_the_claim_back() {
    let (err, calls, kept) =
        patch_step(400, r#"{"__type":"InvalidInstanceId","message":"mocked"}"#).await;
    assert!(
        matches!(
            err,
            RemediatorError::SideEffect(SideEffectError::Rejected(_))
        ),
        "{err:?}"
    );
    assert_eq!(calls, 1);
    assert!(
        !kept,
        "nothing ran: a later sweep may claim the node afresh"
    );
}
