//! Product-wide reliability contract for the real `compliance-remediator` binary against the emulator:
//! hostile input (every file of `tests/fixtures/malformed/`) is rejected with a typed error, no
//! AWS call, bounded memory and a surviving sandbox;
//! and a SecureString configuration value never reaches a log line, an audit event or a response.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::TestEnv;
use autopilot_harness::reliability;

const BIN: &str = env!("CARGO_BIN_EXE_compliance-remediator");

#[tokio::test(flavor = "multi_thread")]
async fn hostile_corpus_is_rejected_without_aws_calls_in_bounded_memory() {
    let env = TestEnv::new().await.unwrap();
    let sb = env
        .sandbox("compliance-remediator", Path::new(BIN))
        .await
        .unwrap();
    let run = reliability::run_hostile_corpus(&env, &sb).await.unwrap();
    assert!(
        run.outcomes.len() >= 29,
        "corpus has {} files",
        run.outcomes.len()
    );
    let problems = run.violations();
    assert!(problems.is_empty(), "{problems:#?}");
    eprintln!(
        "compliance-remediator: {} hostile inputs rejected, peak RSS {} KiB",
        run.outcomes.len(),
        run.peak_rss_kib.unwrap_or(0)
    );
}

/// The documented default document with the secret in a YAML comment: a valid configuration
/// whose stored value holds the secret, so any logging of the value shows it.
fn secret_document(secret: &str) -> String {
    let default = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/default_policy.yaml"),
    )
    .unwrap();
    format!("# api-token: {secret}\n{default}")
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_string_configuration_never_reaches_logs_or_audit_events() {
    let env = TestEnv::new().await.unwrap();
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let events: Vec<serde_json::Value> = reliability::fresh_samples(&env, "compliance-remediator")
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let valid = secret_document(&secret);
    // The same secret inside a document that does not parse: the error path must not quote it.
    let invalid = format!("rules: [unclosed {secret}\n  - {{ : ");
    for document in [valid.as_str(), invalid.as_str()] {
        let scan = reliability::scan_for_secret(
            &env,
            &reliability::SecretCase {
                binary: "compliance-remediator",
                path: Path::new(BIN),
                param_env: "POLICY_PARAMETER",
                document,
                secret: &secret,
                audit_source: "ssm-autopilot.compliance-remediator",
                events: &events,
            },
        )
        .await
        .unwrap();
        assert!(scan.log_lines > 0 && scan.invocations == events.len());
        assert!(scan.leaks.is_empty(), "secret leaked: {:#?}", scan.leaks);
        eprintln!(
            "compliance-remediator: {} invocations, {} log lines, {} audit events scanned, 0 leaks",
            scan.invocations, scan.log_lines, scan.audit_events
        );
    }
}
