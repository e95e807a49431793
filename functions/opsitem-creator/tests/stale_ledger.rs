//! Auto-resolve when the ledger's dedup index is stale: it names an OpsItem that OpsCenter does
//! not have (deleted, or written for another account's OpsCenter) or one that is no longer
//! open while another item with the same dedup string is. OpsCenter is the truth; the index
//! only saves a search. The real binary against the emulator; assertions read OpsCenter.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use autopilot_harness::reliability::test_account;
use autopilot_harness::{InvokeOptions, Sandbox, TestEnv};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_opsitem-creator");

/// A Security Hub sample as a new delivery of a finding of the test's own (the finding id is
/// the dedup identity, and the ledger table is shared by every test).
fn finding(env: &TestEnv, name: &str, finding_id: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/opsitem-creator")
        .join(name);
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["id"] = json!(uuid::Uuid::new_v4().to_string());
    v["account"] = json!(test_account(env));
    v["detail"]["findings"][0]["Id"] = json!(finding_id);
    v
}

async fn invoke(sb: &Sandbox, ev: &Value) -> Value {
    let out = sb
        .invoke(&serde_json::to_vec(ev).unwrap(), InvokeOptions::default())
        .await
        .unwrap()
        .outcome;
    match out {
        Ok(v) => v,
        Err(e) => panic!("{}: {}", e.error_type, e.error_message),
    }
}

async fn status(env: &TestEnv, id: &str) -> String {
    let s = env.control.state("opsitems", &env.tenant).await.unwrap();
    s["OpsItems"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["OpsItemId"] == id)
        .map(|i| i["Status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Points the ledger's dedup index at `id`, marked open, as a stale write would leave it.
async fn index_points_at(env: &TestEnv, dedup: &str, id: &str) {
    let table = env.template.physical_name("LedgerTable").unwrap();
    aws_sdk_dynamodb::Client::new(&env.sdk().await)
        .put_item()
        .table_name(table)
        .item(
            "pk",
            AttributeValue::S(format!("dedup#{}", dedup.to_lowercase())),
        )
        .item("ops_item_id", AttributeValue::S(id.to_owned()))
        .item("status", AttributeValue::S("Open".to_owned()))
        .send()
        .await
        .unwrap();
}

fn unique_finding() -> String {
    format!(
        "arn:aws:securityhub:us-east-1:123456789012:security-control/EC2.8/finding/{}",
        uuid::Uuid::new_v4()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn index_naming_a_missing_opsitem_still_resolves_the_open_one() {
    let env = TestEnv::new().await.unwrap();
    let sb = env
        .sandbox("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();
    let fid = unique_finding();
    let r = invoke(&sb, &finding(&env, "securityhub-finding-new.json", &fid)).await;
    assert_eq!(r["results"][0]["decision"], "created", "{r}");
    let id = r["results"][0]["opsItemId"].as_str().unwrap().to_owned();
    let dedup = r["results"][0]["dedup"].as_str().unwrap().to_owned();
    // An id OpsCenter answers OpsItemNotFoundException for.
    index_points_at(&env, &dedup, "oi-000000000000").await;

    let r = invoke(
        &sb,
        &finding(&env, "securityhub-finding-resolved.json", &fid),
    )
    .await;
    assert_eq!(r["results"][0]["decision"], "resolved", "{r}");
    assert_eq!(r["results"][0]["opsItemId"], id.as_str());
    assert_eq!(status(&env, &id).await, "Resolved");

    // The index is repaired: a redelivery finds nothing open and says so.
    let r = invoke(
        &sb,
        &finding(&env, "securityhub-finding-resolved.json", &fid),
    )
    .await;
    assert_eq!(r["results"][0]["decision"], "ignored", "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn index_naming_a_resolved_opsitem_resolves_the_open_successor() {
    let env = TestEnv::new().await.unwrap();
    let sb = env
        .sandbox("opsitem-creator", Path::new(BIN))
        .await
        .unwrap();
    let fid = unique_finding();
    let r = invoke(&sb, &finding(&env, "securityhub-finding-new.json", &fid)).await;
    let first = r["results"][0]["opsItemId"].as_str().unwrap().to_owned();
    let dedup = r["results"][0]["dedup"].as_str().unwrap().to_owned();
    let r = invoke(
        &sb,
        &finding(&env, "securityhub-finding-resolved.json", &fid),
    )
    .await;
    assert_eq!(r["results"][0]["decision"], "resolved", "{r}");
    let r = invoke(&sb, &finding(&env, "securityhub-finding-new.json", &fid)).await;
    assert_eq!(r["results"][0]["decision"], "created", "{r}");
    let second = r["results"][0]["opsItemId"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    // As if the successor's index write had been lost: the index still names the first item.
    index_points_at(&env, &dedup, &first).await;

    let r = invoke(
        &sb,
        &finding(&env, "securityhub-finding-resolved.json", &fid),
    )
    .await;
    assert_eq!(r["results"][0]["decision"], "resolved", "{r}");
    assert_eq!(r["results"][0]["opsItemId"], second.as_str());
    assert_eq!(status(&env, &second).await, "Resolved");
}
