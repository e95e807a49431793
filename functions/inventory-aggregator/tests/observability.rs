//! Observability of the real `inventory-aggregator` binary: run figures in its EMF lines match
//! what reached S3 in the emulator; every log line is JSON carrying the request id and event id.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::logs::{emf_totals_for, uncorrelated};
use autopilot_harness::{InvokeOptions, Sandbox, TestEnv};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_inventory-aggregator");

#[tokio::test(flavor = "multi_thread")]
async fn run_figures_match_s3_and_every_line_is_correlated() {
    let env = TestEnv::new().await.unwrap();
    env.control
        .seed_fleet(json!({"tenant": env.tenant, "count": 40, "seed": 5, "offline_fraction": 0.2}))
        .await
        .unwrap();
    let prefix = format!("obs-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut spec = env
        .function("inventory-aggregator", Path::new(BIN))
        .unwrap();
    spec.env.insert("OUTPUT_PREFIX".into(), prefix.clone());
    let bucket = spec.env["INVENTORY_BUCKET"].clone();
    let sb = Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();

    let id = uuid::Uuid::new_v4().to_string();
    let trigger = json!({"version":"0","id":id,"detail-type":"Scheduled Event","source":"aws.events",
        "account":"123456789012","time":chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region":"us-east-1","resources":[],"detail":{}});
    let mut invocations = Vec::new();
    let mut puts = Vec::new();
    for _ in 0..2 {
        let inv = sb
            .invoke(
                &serde_json::to_vec(&trigger).unwrap(),
                InvokeOptions::default(),
            )
            .await
            .unwrap();
        let out = inv.outcome.as_ref().unwrap_or_else(|e| panic!("{e:?}"));
        assert_ne!(out["status"], "continuing", "{out}");
        invocations.push((inv.request_id, id.clone()));
        puts.push(
            env.control
                .ok_calls(&env.tenant, "s3:PutObject")
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = sb.logs();

    // Rows of the Resource Data Sync layout, as read back from S3.
    let s3 = autopilot_shared::clients::s3(&env.sdk().await);
    let mut rows = 0usize;
    let mut nodes = std::collections::BTreeSet::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(format!("{prefix}/"))
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        for o in page.contents() {
            let key = o.key().unwrap();
            if key.contains("/snapshots/")
                || !key.contains("/resourcetype=ManagedInstanceInventory/")
            {
                continue;
            }
            let body = s3
                .get_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            rows += body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            nodes.insert(
                key.rsplit('/')
                    .next()
                    .unwrap()
                    .trim_end_matches(".json")
                    .to_owned(),
            );
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let run = emf_totals_for(&logs, &invocations[0].0);
    assert!(rows > 0);
    assert_eq!(run.get("RunsCompleted"), Some(&1.0), "{run:?}");
    assert_eq!(run.get("RowsWritten"), Some(&(rows as f64)), "{run:?}");
    assert_eq!(
        run.get("NodesCollected"),
        Some(&(nodes.len() as f64)),
        "{run:?}"
    );
    assert_eq!(
        run.get("ObjectsWritten"),
        Some(&(puts[0] as f64)),
        "{run:?}"
    );
    assert!(run.contains_key("StaleNodes"), "{run:?}");
    let replay = emf_totals_for(&logs, &invocations[1].0);
    assert_eq!(replay.get("DuplicateSuppressed"), Some(&1.0), "{replay:?}");
    assert_eq!(puts[1], puts[0], "a replay writes nothing");
    assert_eq!(replay.get("ObjectsWritten"), None, "{replay:?}");

    let bad = uncorrelated(&logs, &invocations);
    assert!(bad.is_empty(), "uncorrelated lines: {bad:#?}");
}
