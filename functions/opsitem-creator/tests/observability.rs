//! Observability of the real `opsitem-creator` binary: throttling the SDK absorbed by retrying
//! still shows up in its EMF lines, counted exactly as the emulator counted it.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::logs::emf_totals;
use autopilot_harness::{InvokeOptions, TestEnv};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_opsitem-creator");

fn event(env: &TestEnv, name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/opsitem-creator")
        .join(name);
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let digits: String = env
        .tenant
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    v["id"] = json!(uuid::Uuid::new_v4().to_string());
    v["account"] = json!(digits[digits.len() - 12..].to_owned());
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn throttles_retried_under_half_throttling_equal_the_emulators_count() {
    let env = TestEnv::new().await.unwrap();
    let mut spec = env.function("opsitem-creator", Path::new(BIN)).unwrap();
    spec.timeout = std::time::Duration::from_secs(120);
    let sb = autopilot_harness::Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();
    env.control
        .set_faults(
            json!([{"operation": "ssm:*", "throttle_rate": 0.5, "seed": 7, "tenant": env.tenant}]),
        )
        .await
        .unwrap();
    let mut invocations = Vec::new();
    let mut gave_up: u32 = 0;
    for name in ["alarm-metric-alarm.json", "alarm-metric-ok.json"] {
        let ev = event(&env, name);
        let inv = sb
            .invoke(&serde_json::to_vec(&ev).unwrap(), InvokeOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", sb.logs().join("\n")));
        eprintln!("{name}: {:?} {:?}", inv.duration, inv.outcome);
        match &inv.outcome {
            Ok(out) => assert_eq!(out["replayed"], false, "{out}"),
            // A call throttled on every attempt surfaces; Lambda would redeliver it.
            Err(e) if e.error_type == "AwsThrottled" => gave_up += 1,
            Err(e) => panic!("{e:?}"),
        }
        invocations.push((inv.request_id, ev["id"].as_str().unwrap().to_owned()));
    }
    env.control
        .call("DELETE", "faults", Some(json!({"tenant": env.tenant})))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let counters = env.control.counters(&env.tenant).await.unwrap();
    let throttled: u64 = counters["counters"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["throttled"].as_u64().unwrap())
        .sum();
    assert!(throttled > 0, "{counters}");
    let logs = sb.logs();
    let totals = emf_totals(&logs);
    assert_eq!(
        totals.get("ThrottlesRetried").copied(),
        Some(throttled as f64),
        "{totals:?} vs {counters}"
    );
    // Only calls that ran out of attempts surface, as Throttled errors.
    assert!(
        (gave_up as usize) < invocations.len(),
        "the SDK retried nothing through"
    );
    assert_eq!(
        totals.get("Throttled").copied().unwrap_or(0.0),
        f64::from(gave_up),
        "{totals:?}"
    );
}
