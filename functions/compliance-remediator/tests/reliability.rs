//! Product-wide reliability contract for the real `compliance-remediator` binary against the emulator:
//! hostile input (every file of `tests/fixtures/malformed/`) is rejected with a typed error, no
//! AWS call, bounded memory and a surviving sandbox;
//! and a SecureString configuration value never reaches a log line, an audit event or a response.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::reliability;

const BIN: &str = env!("CARGO_BIN_EXE_compliance-remediator");

#[tokio::test(flavor = "multi_thread")]
async fn hostile_corpus_is_rejected_without_aws_calls_in_bounded_memory() {
    let problems = reliability::hostile_corpus_problems("compliance-remediator", Path::new(BIN))
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_string_configuration_never_reaches_logs_or_audit_events() {
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/default_policy.yaml");
    // The default policy with the secret in a Config rule's name and in its runbook, which
    // validation refuses.
    let rejected = std::fs::read_to_string(&default)
        .unwrap()
        .replace("ec2-imdsv2-check:", "{secret}:")
        .replace(
            "runbook: AWSConfigRemediation-EnforceEC2InstanceIMDSv2",
            "runbook: \"AWS-X; {secret}\"",
        );
    assert!(rejected.matches("{secret}").count() == 2, "{rejected}");
    let problems = reliability::secret_problems(&reliability::SecretContract {
        binary: "compliance-remediator",
        path: Path::new(BIN),
        param_env: "POLICY_PARAMETER",
        default_document: &default,
        audit_source: "ssm-autopilot.compliance-remediator",
        rejected_document: &rejected,
        rejected_error_type: "PolicyInvalid",
        unparseable_error_type: "PolicyUnavailable",
    })
    .await
    .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}
