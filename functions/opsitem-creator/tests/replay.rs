//! At-least-once delivery: every sample, 100 deliveries (one SIGKILLed between its idempotency
//! claim and completion, rounds of 20 concurrent, the rest sequential) leave exactly the side
//! effects of one delivery. Side effects are read from the emulator (OpsItems, occurrence
//! counts, related resources, automations, commands), compared with a second tenant that
//! received each sample once; notifications may repeat after a crash, never go missing.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::TestEnv;
use autopilot_harness::reliability::{self, Pool};

const BIN: &str = env!("CARGO_BIN_EXE_opsitem-creator");
const FUNCTION: &str = "opsitem-creator";

#[tokio::test(flavor = "multi_thread")]
async fn hundred_deliveries_of_every_sample_have_one_delivery_s_side_effects() {
    let replayed = TestEnv::new().await.unwrap();
    let once = TestEnv::new().await.unwrap();
    let mut pool = Pool::new(&replayed, FUNCTION, Path::new(BIN), 20, &[])
        .await
        .unwrap();
    let single = once.sandbox(FUNCTION, Path::new(BIN)).await.unwrap();
    // moto loads its Parameter Store backend on the first call (~1.8 s); the crashed delivery's
    // rules read would pay it on top of the injected latency and miss the claim before its
    // deadline. Warm it from the reference tenant (moto's backends are not per tenant).
    let _ = aws_sdk_ssm::Client::new(&once.sdk().await)
        .get_parameter()
        .name("/autopilot-test/replay-warm-up")
        .send()
        .await;
    let samples = reliability::fresh_samples(&replayed, FUNCTION).unwrap();
    let reference = reliability::fresh_samples(&once, FUNCTION).unwrap();
    let (mut deliveries, mut claimed, mut extra_notifications) = (0, 0, 0u64);
    // REPLAY_ONLY=<file name>[,<file name>…] narrows a local investigation to those samples
    // (in name order, so `new,resolved` replays a finding's lifecycle).
    let only: Option<Vec<String>> = std::env::var("REPLAY_ONLY")
        .ok()
        .map(|o| o.split(',').map(|s| s.trim().to_owned()).collect());
    for ((name, event), (_, reference_event)) in samples.iter().zip(&reference) {
        if only.as_ref().is_some_and(|o| !o.contains(name)) {
            continue;
        }
        let run = reliability::replay(&replayed, &mut pool, event, 100, 20)
            .await
            .unwrap();
        if !run.failures.is_empty() {
            // The sequential deliveries and retries run in the first sandbox: its last error
            // lines name the failing operation and AWS's error.
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
        let r = single
            .invoke(
                &serde_json::to_vec(reference_event).unwrap(),
                autopilot_harness::InvokeOptions::default(),
            )
            .await
            .unwrap();
        assert!(r.outcome.is_ok(), "{name}: {:?}", r.outcome);
        let mut got = reliability::side_effects(&replayed).await.unwrap();
        let mut want = reliability::side_effects(&once).await.unwrap();
        // Notifications are at-least-once (as SNS itself): a crash after the publish and before
        // completion repeats it, a crash before it must not lose it. Everything else: exactly once.
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
    eprintln!(
        "{FUNCTION}: {deliveries} deliveries, {extra_notifications} repeated notification(s)"
    );
    if only.is_none() {
        assert_eq!(deliveries, 100 * samples.len());
        // Every sample has side effects, so every crashed delivery claims first: the claim
        // comes after the (warm, held-back) rules read, ~1.5 s into a 3 s deadline.
        assert_eq!(
            claimed,
            samples.len(),
            "every crash must land after the claim"
        );
    }
}
