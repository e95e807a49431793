//! Observability of the real `incident-response` binary: the figures in its EMF lines match
//! what the emulator saw, and every log line is JSON carrying the request id and event id.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::logs::{emf_totals, emf_totals_for, uncorrelated};
use autopilot_harness::{InvokeOptions, TestEnv};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_incident-response");

fn event(env: &TestEnv, name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/incident-response")
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
async fn emf_figures_match_the_emulator_and_every_line_is_correlated() {
    let env = TestEnv::new().await.unwrap();
    let sb = env
        .sandbox("incident-response", Path::new(BIN))
        .await
        .unwrap();
    let finding = event(&env, "guardduty-finding-high.json");
    let low = event(&env, "guardduty-finding-low.json");
    let mut invocations = Vec::new();
    for ev in [&finding, &finding, &low] {
        let inv = sb
            .invoke(&serde_json::to_vec(ev).unwrap(), InvokeOptions::default())
            .await
            .unwrap();
        inv.outcome.as_ref().unwrap();
        invocations.push((inv.request_id, ev["id"].as_str().unwrap().to_owned()));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = sb.logs();

    let started =
        env.control.state("automations", &env.tenant).await.unwrap()["AutomationExecutions"]
            .as_array()
            .unwrap()
            .len();
    assert!(started > 0);
    let first = emf_totals_for(&logs, &invocations[0].0);
    assert_eq!(first.get("Opened"), Some(&1.0), "{first:?}");
    assert_eq!(
        first.get("SideEffects"),
        Some(&(started as f64)),
        "{first:?}"
    );
    assert_eq!(first.get("ColdStart"), Some(&1.0), "{first:?}");
    let repeat = emf_totals_for(&logs, &invocations[1].0);
    assert_eq!(repeat.get("DuplicateSuppressed"), Some(&1.0), "{repeat:?}");
    assert_eq!(repeat.get("SideEffects"), None, "{repeat:?}");
    let low_figures = emf_totals_for(&logs, &invocations[2].0);
    assert_eq!(low_figures.get("Ignored"), Some(&1.0), "{low_figures:?}");
    let totals = emf_totals(&logs);
    assert_eq!(totals.get("EventsReceived"), Some(&3.0), "{totals:?}");
    assert_eq!(totals.get("ColdStart"), Some(&1.0), "{totals:?}");

    let bad = uncorrelated(&logs, &invocations);
    assert!(bad.is_empty(), "uncorrelated lines: {bad:#?}");
    assert!(logs.len() > 6, "{logs:#?}");
}
