//! Product-wide reliability contract for the real `inventory-aggregator` binary against the emulator:
//! hostile input (every file of `tests/fixtures/malformed/`) is rejected with a typed error, no
//! AWS call, bounded memory and a surviving sandbox.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::reliability;

const BIN: &str = env!("CARGO_BIN_EXE_inventory-aggregator");

#[tokio::test(flavor = "multi_thread")]
async fn hostile_corpus_is_rejected_without_aws_calls_in_bounded_memory() {
    let problems = reliability::hostile_corpus_problems("inventory-aggregator", Path::new(BIN))
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}
