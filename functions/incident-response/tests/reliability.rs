//! Product-wide reliability contract for the real `incident-response` binary against the emulator:
//! hostile input (every file of `tests/fixtures/malformed/`) is rejected with a typed error, no
//! AWS call, bounded memory and a surviving sandbox;
//! and a SecureString configuration value never reaches a log line, an audit event or a response.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::reliability;

const BIN: &str = env!("CARGO_BIN_EXE_incident-response");

#[tokio::test(flavor = "multi_thread")]
async fn hostile_corpus_is_rejected_without_aws_calls_in_bounded_memory() {
    let problems = reliability::hostile_corpus_problems("incident-response", Path::new(BIN))
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_string_configuration_never_reaches_logs_or_audit_events() {
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/default_plans.yaml");
    let problems = reliability::secret_problems(&reliability::SecretContract {
        binary: "incident-response",
        path: Path::new(BIN),
        param_env: "RESPONSE_PLANS_PARAMETER",
        default_document: &default,
        audit_source: "ssm-autopilot.incident-response",
        rejected_document: "plans:\n  - name: \"{secret}#\"\n    match: {kind: alarm}\n    impact: 2\n    title: t\n",
        rejected_error_type: "ResponsePlansInvalid",
        unparseable_error_type: "ResponsePlansUnavailable",
    })
    .await
    .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}
