//! Product-wide reliability contract for the real `opsitem-creator` binary against the emulator:
//! hostile input (every file of `tests/fixtures/malformed/`) is rejected with a typed error, no
//! AWS call, bounded memory and a surviving sandbox;
//! and a SecureString configuration value never reaches a log line, an audit event or a response.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::reliability;

const BIN: &str = env!("CARGO_BIN_EXE_opsitem-creator");

#[tokio::test(flavor = "multi_thread")]
async fn hostile_corpus_is_rejected_without_aws_calls_in_bounded_memory() {
    let problems = reliability::hostile_corpus_problems("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_string_configuration_never_reaches_logs_or_audit_events() {
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/default_rules.yaml");
    let problems = reliability::secret_problems(&reliability::SecretContract {
        binary: "opsitem-creator",
        path: Path::new(BIN),
        param_env: "RULES_PARAMETER",
        default_document: &default,
        audit_source: "ssm-autopilot.opsitem-creator",
        rejected_document: "rules:\n  - name: {secret}\n    match: {kind: alarm}\n    title: t\n    severity: \"9\"\n",
        rejected_error_type: "RulesInvalid",
        unparseable_error_type: "RulesUnavailable",
    })
    .await
    .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}
