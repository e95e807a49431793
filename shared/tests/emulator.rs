//! Integration tests of `autopilot-shared` against the local AWS emulator (moto server +
//! the project's SSM extension, `tests/emulator/`) over real HTTP:
//!
//! - the idempotency store on DynamoDB (`IdempotencyTable` from template.yaml);
//! - the parameter cache on moto's Parameter Store;
//! - the audit emitter on the `AuditBus` EventBridge bus, with delivery checked through an
//!   EventBridge rule that targets an SQS queue (read with raw awsJson requests, because
//!   `aws-sdk-sqs` is not a workspace dependency);
//! - the SDK clients (`clients::s3` path-style, `load_sdk_config` in a child process so that
//!   environment variables can be set without `unsafe`).
//!
//! Per-entry PutEvents failures cannot be produced by the emulator: those tests use
//! `aws-smithy-mocks`.
//!
//! Every test has its own `TestEnv` (its own tenant: counters and fault rules are per
//! tenant); moto-backed state (DynamoDB, EventBridge, SQS, S3, parameters) is shared, so
//! every key, parameter, bucket, queue and rule name carries a fresh uuid.

// `allow-expect-in-tests` covers `#[test]` functions only, not this crate's helpers, which
// fail the calling test by design.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the calling test on purpose"
)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use autopilot_harness::TestEnv;
use autopilot_shared::audit::{AuditEmitter, AuditError, AuditEvent, EmitReport, MAX_EVENT_BYTES};
use autopilot_shared::clients;
use autopilot_shared::idempotency::{
    Claim, Execution, GuardError, IdempotencyError, IdempotencyKey, IdempotencyStore,
};
use autopilot_shared::params::{ParamError, ParameterCache};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_eventbridge::operation::put_events::{PutEventsInput, PutEventsOutput};
use aws_sdk_eventbridge::types::{PutEventsResultEntry, Target};
use aws_sdk_ssm::types::ParameterType;
use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, create_mock_http_client, mock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

// ------------------------------------------------------------------ helpers

async fn env() -> TestEnv {
    TestEnv::new()
        .await
        .expect("test environment (emulator + template)")
}

fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn idempotency_table(env: &TestEnv) -> String {
    env.template
        .physical_name("IdempotencyTable")
        .expect("IdempotencyTable in template.yaml")
}

async fn store(env: &TestEnv, attempts: u32, expires_after: Duration) -> IdempotencyStore {
    let cfg = env.sdk_with_attempts(attempts).await;
    IdempotencyStore::new(
        clients::dynamodb(&cfg),
        idempotency_table(env).await,
        expires_after,
    )
}

/// A key for a fresh event (unique across tests and runs).
fn fresh_key(payload: &Value) -> IdempotencyKey {
    IdempotencyKey::new(
        "emulator-test",
        &format!("evt-{}", uid()),
        payload.to_string().as_bytes(),
    )
}

fn in_secs(secs: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(secs)
}

/// The stored record of `key`, read directly from the table.
async fn record(
    env: &TestEnv,
    key: &IdempotencyKey,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    let ddb = clients::dynamodb(&env.sdk().await);
    ddb.get_item()
        .table_name(idempotency_table(env).await)
        .key("id", AttributeValue::S(key.as_str().to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
}

fn attr_s<'a>(
    item: &'a std::collections::HashMap<String, AttributeValue>,
    k: &str,
) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// Counter `field` (`calls`, `ok`, `throttled`, …) of `op` for this test's tenant.
async fn counter(env: &TestEnv, op: &str, field: &str) -> u64 {
    let c = env.control.counters(&env.tenant).await.expect("counters");
    autopilot_harness::emulator::counter_field(&c, op, field)
}

/// Adds fault rules for this test's tenant only (never touches other tests' rules).
async fn add_fault(env: &TestEnv, mut rule: Value) {
    rule["tenant"] = json!(env.tenant);
    env.control
        .set_faults(json!([rule]))
        .await
        .expect("set faults");
}

async fn clear_my_faults(env: &TestEnv) {
    env.control
        .call("DELETE", "faults", Some(json!({ "tenant": env.tenant })))
        .await
        .expect("clear faults");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Outcome {
    ops_item_id: String,
    actions: Vec<String>,
}

// ------------------------------------------------------------------ idempotency

/// One round of `TASKS` simultaneous claims of a fresh key: (acquired, already in progress,
/// successful PutItem calls in the round).
async fn claim_race(env: &TestEnv, store: &IdempotencyStore, tasks: usize) -> (usize, usize, u64) {
    let key = fresh_key(&json!({"detail": {"instance": "i-0123456789abcdef0", "n": uid()}}));
    let deadline = in_secs(60);
    let (calls_before, ok_before) = (
        counter(env, "dynamodb:PutItem", "calls").await,
        counter(env, "dynamodb:PutItem", "ok").await,
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, key, barrier) = (store.clone(), key.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store.claim(&key, deadline).await
        }));
    }
    let (mut acquired, mut in_progress) = (0, 0);
    for h in handles {
        match h.await.expect("task") {
            Ok(Claim::Acquired) => acquired += 1,
            Err(e @ IdempotencyError::AlreadyInProgress { .. }) => {
                assert!(e.retryable(), "{e}");
                assert_eq!(e.error_type(), "IdempotencyAlreadyInProgress");
                in_progress += 1;
            }
            other => panic!("unexpected claim result: {other:?}"),
        }
    }
    let calls = counter(env, "dynamodb:PutItem", "calls").await - calls_before;
    let ok_puts = counter(env, "dynamodb:PutItem", "ok").await - ok_before;
    assert_eq!(calls, tasks as u64, "one conditional PutItem per claim");
    // Acquired exactly when the conditional write succeeded, never otherwise.
    assert_eq!(
        acquired as u64, ok_puts,
        "acquired {acquired}, in progress {in_progress}"
    );
    let item = record(env, &key).await.expect("record written");
    assert_eq!(attr_s(&item, "status"), Some("INPROGRESS"));
    assert!(item.contains_key("in_progress_expiration"), "{item:?}");
    assert!(item.contains_key("expiration"), "{item:?}");
    (acquired, in_progress, ok_puts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicate_claims_acquire_exactly_once() {
    let env = env().await;
    let store = store(&env, 1, Duration::from_secs(3600)).await;
    const TASKS: usize = 16;
    // moto's DynamoDB evaluates a condition and writes without a lock, so under load two
    // simultaneous conditional puts can both succeed there (never on DynamoDB). A round in
    // which the emulator let several writes through is repeated; the invariants of the code
    // (Acquired iff the conditional write succeeded) are checked in every round.
    let mut rounds = Vec::new();
    for _ in 0..4 {
        let (acquired, in_progress, ok_puts) = claim_race(&env, &store, TASKS).await;
        rounds.push((acquired, in_progress, ok_puts));
        if ok_puts == 1 {
            assert_eq!((acquired, in_progress), (1, TASKS - 1));
            break;
        }
        eprintln!("emulator let {ok_puts} of {TASKS} simultaneous conditional PutItems succeed");
    }
    assert!(
        rounds.contains(&(1, TASKS - 1, 1)),
        "no round had exactly one winner: {rounds:?}"
    );
}

#[tokio::test]
async fn expired_in_progress_record_can_be_claimed_again() {
    let env = env().await;
    let store = store(&env, 1, Duration::from_secs(3600)).await;
    let key = fresh_key(&json!({"n": 1}));

    // A crashed invocation: claimed with a deadline that has passed, never completed.
    let past = SystemTime::now() - Duration::from_secs(5);
    assert_eq!(
        store.claim(&key, past).await.expect("first claim"),
        Claim::Acquired
    );
    assert_eq!(
        store.claim(&key, in_secs(60)).await.expect("reclaim"),
        Claim::Acquired
    );

    // The new owner's lock is live: a third claim must wait.
    let err = store
        .claim(&key, in_secs(60))
        .await
        .expect_err("lock is live");
    assert!(
        matches!(err, IdempotencyError::AlreadyInProgress { .. }),
        "{err:?}"
    );
    assert!(err.retryable());
}

#[tokio::test]
async fn same_event_with_another_payload_is_a_mismatch() {
    let env = env().await;
    let store = store(&env, 1, Duration::from_secs(3600)).await;
    let event_id = format!("evt-{}", uid());
    let original = IdempotencyKey::new("emulator-test", &event_id, br#"{"a":1,"b":{"c":2}}"#);
    let reordered =
        IdempotencyKey::new("emulator-test", &event_id, br#"{ "b": {"c": 2}, "a": 1 }"#);
    let changed = IdempotencyKey::new("emulator-test", &event_id, br#"{"a":1,"b":{"c":3}}"#);
    assert_eq!(original.as_str(), changed.as_str());

    assert_eq!(
        store.claim(&original, in_secs(60)).await.expect("claim"),
        Claim::Acquired
    );
    let err = store
        .claim(&changed, in_secs(60))
        .await
        .expect_err("payload mismatch");
    assert!(
        matches!(err, IdempotencyError::PayloadMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(err.error_type(), "IdempotencyPayloadMismatch");
    assert!(!err.retryable());
    // Canonicalised payloads match: a re-serialised copy is a duplicate, not a mismatch.
    let dup = store
        .claim(&reordered, in_secs(60))
        .await
        .expect_err("in progress");
    assert!(
        matches!(dup, IdempotencyError::AlreadyInProgress { .. }),
        "{dup:?}"
    );

    // A release with the other payload must not free the original's lock.
    store.release(&changed).await.expect("release is a no-op");
    assert!(record(&env, &original).await.is_some());

    store
        .complete(&original, &json!({"ok": true}))
        .await
        .expect("complete");
    let err = store
        .claim(&changed, in_secs(60))
        .await
        .expect_err("still a mismatch");
    assert!(
        matches!(err, IdempotencyError::PayloadMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(
        store.claim(&reordered, in_secs(60)).await.expect("replay"),
        Claim::Completed(json!({"ok": true}))
    );
}

#[tokio::test]
async fn completed_result_is_replayed_and_handler_runs_once() {
    let env = env().await;
    let store = store(&env, 1, Duration::from_secs(3600)).await;

    // claim / complete / claim.
    let key = fresh_key(&json!({"k": "v"}));
    let result = json!({"opsItemId": "oi-0123456789ab", "nested": {"list": [1, 2, 3]}});
    assert_eq!(
        store.claim(&key, in_secs(60)).await.expect("claim"),
        Claim::Acquired
    );
    store.complete(&key, &result).await.expect("complete");
    assert_eq!(
        store.claim(&key, in_secs(60)).await.expect("repeat"),
        Claim::Completed(result.clone())
    );
    let item = record(&env, &key).await.expect("record");
    assert_eq!(attr_s(&item, "status"), Some("COMPLETE"));
    assert!(!item.contains_key("in_progress_expiration"), "{item:?}");

    // execute: 20 sequential deliveries of one event run the handler once.
    let key = fresh_key(&json!({"k": "other"}));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut outcomes = Vec::new();
    for i in 0..20 {
        let runs = runs.clone();
        let exec = store
            .execute(&key, in_secs(60), || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(Outcome {
                    ops_item_id: format!("oi-{i:012}"),
                    actions: vec!["notify".into(), "tag".into()],
                })
            })
            .await
            .expect("execute");
        assert_eq!(exec.is_replay(), i > 0, "delivery {i}: {exec:?}");
        outcomes.push(exec);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let first = Outcome {
        ops_item_id: "oi-000000000000".into(),
        actions: vec!["notify".into(), "tag".into()],
    };
    assert_eq!(outcomes[0], Execution::Fresh(first.clone()));
    for o in &outcomes[1..] {
        assert_eq!(o, &Execution::Replayed(first.clone()));
    }
}

#[tokio::test]
async fn failed_handler_releases_the_claim() {
    let env = env().await;
    let store = store(&env, 1, Duration::from_secs(3600)).await;
    let key = fresh_key(&json!({"fail": "once"}));
    let runs = AtomicUsize::new(0);

    let err = store
        .execute(&key, in_secs(60), || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<Outcome, _>("upstream exploded".to_owned())
        })
        .await
        .expect_err("handler fails");
    assert!(
        matches!(&err, GuardError::Handler(m) if m == "upstream exploded"),
        "{err:?}"
    );
    assert!(
        record(&env, &key).await.is_none(),
        "the INPROGRESS record must be deleted"
    );

    let out = store
        .execute(&key, in_secs(60), || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(Outcome {
                ops_item_id: "oi-1".into(),
                actions: vec![],
            })
        })
        .await
        .expect("retry runs");
    assert!(!out.is_replay());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(counter(&env, "dynamodb:DeleteItem", "ok").await, 1);
}

#[tokio::test]
async fn completed_record_past_expiry_is_claimable_again() {
    let env = env().await;
    // Control: a record within its expiry answers repeats.
    let long = store(&env, 1, Duration::from_secs(3600)).await;
    let key = fresh_key(&json!({"expiry": "long"}));
    long.execute(&key, in_secs(60), || async { Ok::<_, String>(json!(1)) })
        .await
        .expect("run");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        long.claim(&key, in_secs(60)).await.expect("claim"),
        Claim::Completed(json!(1))
    );

    // Expires immediately: after more than a second the record is stale, although it is
    // still in the table (DynamoDB TTL deletion is not relied on).
    let short = store(&env, 1, Duration::ZERO).await;
    let key = fresh_key(&json!({"expiry": "zero"}));
    let runs = AtomicUsize::new(0);
    let run = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(json!({"run": true}))
    };
    assert!(
        !short
            .execute(&key, in_secs(60), run)
            .await
            .expect("first")
            .is_replay()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let item = record(&env, &key).await.expect("record still stored");
    assert_eq!(attr_s(&item, "status"), Some("COMPLETE"));
    assert!(
        !short
            .execute(&key, in_secs(60), run)
            .await
            .expect("second")
            .is_replay()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        short.claim(&key, in_secs(60)).await.expect("claim"),
        Claim::Acquired
    );
}

#[tokio::test]
async fn throttled_store_is_a_retryable_store_error() {
    let env = env().await;
    let store = store(&env, 1, Duration::from_secs(3600)).await;
    let key = fresh_key(&json!({"throttle": true}));
    add_fault(
        &env,
        json!({"operation": "dynamodb:PutItem", "throttle_rate": 1.0}),
    )
    .await;

    let err = store.claim(&key, in_secs(60)).await.expect_err("throttled");
    match &err {
        IdempotencyError::Store { op, retryable, .. } => {
            assert_eq!(*op, "PutItem");
            assert!(*retryable);
        }
        other => panic!("expected Store, got {other:?}"),
    }
    assert!(err.retryable());
    assert_eq!(err.error_type(), "IdempotencyStoreError");

    let ran = AtomicUsize::new(0);
    let err = store
        .execute(&key, in_secs(60), || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(json!(null))
        })
        .await
        .expect_err("throttled");
    assert!(
        matches!(
            err,
            GuardError::Idempotency(IdempotencyError::Store {
                retryable: true,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the handler must not run without a claim"
    );
    assert_eq!(counter(&env, "dynamodb:PutItem", "throttled").await, 2);
    assert_eq!(counter(&env, "dynamodb:PutItem", "ok").await, 0);

    // Faults are applied before the operation: nothing was written, the event is claimable.
    clear_my_faults(&env).await;
    assert_eq!(
        store.claim(&key, in_secs(60)).await.expect("claim"),
        Claim::Acquired
    );
}

#[tokio::test]
async fn missing_table_is_a_permanent_store_error() {
    let env = env().await;
    let cfg = env.sdk_with_attempts(1).await;
    let store = IdempotencyStore::new(
        clients::dynamodb(&cfg),
        format!("no-such-table-{}", uid()),
        Duration::from_secs(60),
    );
    let err = store
        .claim(&fresh_key(&json!({})), in_secs(60))
        .await
        .expect_err("no table");
    assert!(
        matches!(
            err,
            IdempotencyError::Store {
                op: "PutItem",
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.retryable());
}

// ------------------------------------------------------------------ parameters

async fn put_param(ssm: &aws_sdk_ssm::Client, name: &str, value: &str, ty: ParameterType) {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(ty)
        .overwrite(true)
        .send()
        .await
        .expect("PutParameter");
}

#[tokio::test]
async fn string_and_secure_string_parameters() {
    let env = env().await;
    let cfg = env.sdk().await;
    let ssm = clients::ssm(&cfg);
    let base = format!("/autopilot-test/{}", uid());
    let secret = format!("hunter2-{}", uid());
    put_param(
        &ssm,
        &format!("{base}/plain"),
        "plain-value",
        ParameterType::String,
    )
    .await;
    put_param(
        &ssm,
        &format!("{base}/secret"),
        &secret,
        ParameterType::SecureString,
    )
    .await;

    let cache = ParameterCache::new(ssm, Duration::from_secs(60));
    let plain = cache.get(&format!("{base}/plain")).await.expect("plain");
    assert_eq!(plain.expose(), "plain-value");
    assert!(!plain.is_secure());
    assert_eq!(plain.version(), 1);
    assert!(format!("{plain:?}").contains("plain-value"), "{plain:?}");

    let sec = cache.get(&format!("{base}/secret")).await.expect("secret");
    assert_eq!(sec.expose(), secret, "SecureString must be read decrypted");
    assert!(sec.is_secure());
    let dbg = format!("{sec:?}");
    assert!(!dbg.contains(&secret) && !dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("redacted"), "{dbg}");
}

#[derive(Debug, PartialEq, Deserialize)]
struct Policy {
    severity: u8,
    actions: Vec<String>,
}

#[tokio::test]
async fn parameters_are_cached_for_the_ttl() {
    let env = env().await;
    let cfg = env.sdk().await;
    let ssm = clients::ssm(&cfg);
    let name = format!("/autopilot-test/{}/cached", uid());
    put_param(&ssm, &name, "v1", ParameterType::String).await;

    let ttl = Duration::from_millis(300);
    let cache = ParameterCache::new(ssm.clone(), ttl);
    let started = Instant::now();
    assert_eq!(cache.get(&name).await.expect("get").expose(), "v1");
    put_param(&ssm, &name, "v2", ParameterType::String).await;
    let again = cache.get(&name).await.expect("get");
    if started.elapsed() < ttl {
        assert_eq!(
            again.expose(),
            "v1",
            "within the TTL the cached value is returned"
        );
        assert_eq!(counter(&env, "ssm:GetParameter", "calls").await, 1);
    }
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let fresh = cache.get(&name).await.expect("get");
    assert_eq!(fresh.expose(), "v2");
    assert_eq!(fresh.version(), 2);
    let calls = counter(&env, "ssm:GetParameter", "calls").await;
    assert!((2..=3).contains(&calls), "calls = {calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_gets_share_one_request() {
    let env = env().await;
    let cfg = env.sdk().await;
    let ssm = clients::ssm(&cfg);
    let name = format!("/autopilot-test/{}/shared", uid());
    put_param(&ssm, &name, "value", ParameterType::String).await;
    let cache = Arc::new(ParameterCache::new(ssm, Duration::from_secs(60)));
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (cache, name) = (cache.clone(), name.clone());
        handles.push(tokio::spawn(async move {
            cache.get(&name).await.map(|v| v.expose().to_owned())
        }));
    }
    for h in handles {
        assert_eq!(h.await.expect("task").expect("get"), "value");
    }
    assert_eq!(counter(&env, "ssm:GetParameter", "calls").await, 1);
}

#[tokio::test]
async fn missing_parameters_and_documents() {
    let env = env().await;
    let cfg = env.sdk().await;
    let ssm = clients::ssm(&cfg);
    let base = format!("/autopilot-test/{}", uid());
    let cache = ParameterCache::new(ssm.clone(), Duration::from_secs(60));

    let missing = format!("{base}/missing");
    let err = cache.get(&missing).await.expect_err("not found");
    assert!(
        matches!(&err, ParamError::NotFound(n) if *n == missing),
        "{err:?}"
    );
    assert!(!err.retryable());
    assert!(
        cache
            .get_optional(&missing)
            .await
            .expect("optional")
            .is_none()
    );
    assert!(
        cache
            .get_document::<Policy>(&missing)
            .await
            .expect("doc")
            .is_none()
    );

    put_param(
        &ssm,
        &format!("{base}/json"),
        r#"{"severity": 2, "actions": ["a", "b"]}"#,
        ParameterType::String,
    )
    .await;
    put_param(
        &ssm,
        &format!("{base}/yaml"),
        "severity: 3\nactions:\n  - c\n",
        ParameterType::String,
    )
    .await;
    put_param(
        &ssm,
        &format!("{base}/secure-yaml"),
        "severity: 4\nactions: []\n",
        ParameterType::SecureString,
    )
    .await;
    put_param(
        &ssm,
        &format!("{base}/bad"),
        "severity: s3cr3t-value\nactions: []\n",
        ParameterType::SecureString,
    )
    .await;

    let json_doc = cache
        .get_document::<Policy>(&format!("{base}/json"))
        .await
        .expect("json");
    assert_eq!(
        json_doc,
        Some(Policy {
            severity: 2,
            actions: vec!["a".into(), "b".into()]
        })
    );
    let yaml_doc = cache
        .get_document::<Policy>(&format!("{base}/yaml"))
        .await
        .expect("yaml");
    assert_eq!(
        yaml_doc,
        Some(Policy {
            severity: 3,
            actions: vec!["c".into()]
        })
    );
    let secure_doc = cache
        .get_document::<Policy>(&format!("{base}/secure-yaml"))
        .await
        .expect("secure");
    assert_eq!(
        secure_doc,
        Some(Policy {
            severity: 4,
            actions: vec![]
        })
    );

    let err = cache
        .get_document::<Policy>(&format!("{base}/bad"))
        .await
        .expect_err("invalid");
    assert!(matches!(err, ParamError::Invalid { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err:?}");
}

#[tokio::test]
async fn throttled_parameter_read_is_retryable() {
    let env = env().await;
    let cfg = env.sdk_with_attempts(1).await;
    let cache = ParameterCache::new(clients::ssm(&cfg), Duration::from_secs(60));
    add_fault(
        &env,
        json!({"operation": "ssm:GetParameter", "throttle_rate": 1.0}),
    )
    .await;
    let err = cache
        .get(&format!("/autopilot-test/{}/x", uid()))
        .await
        .expect_err("throttled");
    assert!(matches!(err, ParamError::Read { .. }), "{err:?}");
    assert!(err.retryable());
    clear_my_faults(&env).await;
}

// ------------------------------------------------------------------ audit

/// An SQS queue subscribed (by an EventBridge rule matching one `source`) to the audit bus.
/// SQS is driven with raw awsJson1.0 requests over loopback.
struct AuditSink {
    endpoint: String,
    tenant: String,
    events: aws_sdk_eventbridge::Client,
    bus: String,
    rule: String,
    queue_url: String,
}

impl AuditSink {
    async fn new(env: &TestEnv, source: &str) -> Self {
        let bus = env
            .template
            .physical_name("AuditBus")
            .expect("AuditBus in template.yaml");
        let name = format!("audit-test-{}", uid());
        let created = sqs_call(
            &env.endpoint,
            &env.tenant,
            "CreateQueue",
            json!({ "QueueName": name }),
        )
        .await;
        let queue_url = created["QueueUrl"].as_str().expect("QueueUrl").to_owned();
        let events = clients::eventbridge(&env.sdk().await);
        events
            .put_rule()
            .name(&name)
            .event_bus_name(&bus)
            .event_pattern(json!({ "source": [source] }).to_string())
            .send()
            .await
            .expect("PutRule");
        events
            .put_targets()
            .rule(&name)
            .event_bus_name(&bus)
            .targets(
                Target::builder()
                    .id("queue")
                    .arn(format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"))
                    .build()
                    .expect("target"),
            )
            .send()
            .await
            .expect("PutTargets");
        Self {
            endpoint: env.endpoint.clone(),
            tenant: env.tenant.clone(),
            events,
            bus,
            rule: name,
            queue_url,
        }
    }

    /// Receives until `n` events arrived (or 15 s passed); returns the EventBridge events.
    async fn receive(&self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_secs(15);
        while out.len() < n && Instant::now() < until {
            let body = json!({"QueueUrl": self.queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1});
            let got = sqs_call(&self.endpoint, &self.tenant, "ReceiveMessage", body).await;
            for m in got["Messages"].as_array().into_iter().flatten() {
                let raw = m["Body"].as_str().expect("Body");
                out.push(serde_json::from_str::<Value>(raw).expect("event JSON"));
                let del = json!({"QueueUrl": self.queue_url, "ReceiptHandle": m["ReceiptHandle"]});
                sqs_call(&self.endpoint, &self.tenant, "DeleteMessage", del).await;
            }
        }
        out
    }

    async fn remove(self) {
        let _ = self
            .events
            .remove_targets()
            .rule(&self.rule)
            .event_bus_name(&self.bus)
            .ids("queue")
            .send()
            .await;
        let _ = self
            .events
            .delete_rule()
            .name(&self.rule)
            .event_bus_name(&self.bus)
            .send()
            .await;
        let _ = sqs_call(
            &self.endpoint,
            &self.tenant,
            "DeleteQueue",
            json!({"QueueUrl": self.queue_url}),
        )
        .await;
    }
}

/// One awsJson1.0 SQS call over plain HTTP/1.1 (std sockets on a blocking thread). moto does
/// not verify signatures; the credential scope names the service and the tenant.
async fn sqs_call(endpoint: &str, tenant: &str, op: &str, body: Value) -> Value {
    let authority = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let tenant = tenant.to_owned();
    let op = op.to_owned();
    tokio::task::spawn_blocking(move || {
        let body = body.to_string();
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-amz-json-1.0\r\n\
             X-Amz-Target: AmazonSQS.{op}\r\nX-Amz-Date: 20250101T000000Z\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={tenant}/20250101/{REGION}/sqs/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut sock = std::net::TcpStream::connect(&authority).expect("connect to emulator");
        sock.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        sock.write_all(req.as_bytes()).expect("send");
        let mut resp = Vec::new();
        sock.read_to_end(&mut resp).expect("read");
        let text = String::from_utf8_lossy(&resp).into_owned();
        let (head, payload) = text.split_once("\r\n\r\n").expect("HTTP response");
        let status = head.split_whitespace().nth(1).unwrap_or_default();
        assert_eq!(status, "200", "SQS {op}: {text}");
        let payload = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(payload)
        } else {
            payload.to_owned()
        };
        if payload.trim().is_empty() { Value::Null } else { serde_json::from_str(&payload).expect("SQS JSON") }
    })
    .await
    .expect("sqs call")
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test]
async fn audit_events_are_batched_and_delivered() {
    let env = env().await;
    let source = format!("ssm-autopilot.test-{}", uid());
    let sink = AuditSink::new(&env, &source).await;
    let emitter = AuditEmitter::new(
        clients::eventbridge(&env.sdk_with_attempts(1).await),
        env.template.physical_name("AuditBus").expect("bus"),
        source.clone(),
    );
    let events: Vec<AuditEvent> = (0..25)
        .map(|i| {
            AuditEvent::new(
                "Autopilot Decision",
                json!({"seq": i, "decision": "create"}),
            )
            .with_resources([format!(
                "arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-{i:017x}"
            )])
        })
        .collect();
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";
    let report = emitter.emit(&events, Some(trace)).await.expect("emit");
    assert_eq!(
        report,
        EmitReport {
            sent: 25,
            failed: 0,
            truncated: 0,
            calls: 3
        }
    );
    assert_eq!(counter(&env, "events:PutEvents", "calls").await, 3);
    assert_eq!(counter(&env, "events:PutEvents", "ok").await, 3);

    let got = sink.receive(25).await;
    let seqs: BTreeSet<u64> = got
        .iter()
        .filter_map(|e| e["detail"]["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (0..25).collect::<BTreeSet<u64>>(), "{got:?}");
    for e in &got {
        assert_eq!(e["source"], json!(source));
        assert_eq!(e["detail-type"], json!("Autopilot Decision"));
        assert_eq!(e["resources"].as_array().map(Vec::len), Some(1), "{e}");
    }
    assert_eq!(got.len(), 25, "each event exactly once");
    sink.remove().await;
}

#[tokio::test]
async fn oversize_audit_event_is_truncated_and_delivered() {
    let env = env().await;
    let source = format!("ssm-autopilot.test-{}", uid());
    let sink = AuditSink::new(&env, &source).await;
    let emitter = AuditEmitter::new(
        clients::eventbridge(&env.sdk_with_attempts(1).await),
        env.template.physical_name("AuditBus").expect("bus"),
        source.clone(),
    );
    let blob = "x".repeat(MAX_EVENT_BYTES + 10_000);
    let events = [
        AuditEvent::new(
            "Autopilot Decision",
            json!({"decision": "suppress", "facts": blob}),
        ),
        AuditEvent::new(
            "Autopilot Decision",
            json!({"decision": "create", "small": true}),
        ),
    ];
    let report = emitter.emit(&events, None).await.expect("emit");
    assert_eq!(
        report,
        EmitReport {
            sent: 2,
            failed: 0,
            truncated: 1,
            calls: 1
        }
    );

    let got = sink.receive(2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let truncated = got
        .iter()
        .find(|e| e["detail"]["truncated"] == json!(true))
        .expect("truncated marker");
    assert_eq!(truncated["detail"]["decision"], json!("suppress"));
    let original = truncated["detail"]["originalBytes"]
        .as_u64()
        .expect("originalBytes");
    assert!(original > MAX_EVENT_BYTES as u64, "{original}");
    assert!(
        got.iter()
            .any(|e| e["detail"] == json!({"decision": "create", "small": true}))
    );
    sink.remove().await;
}

#[tokio::test]
async fn throttled_put_events_is_a_call_error() {
    let env = env().await;
    let emitter = AuditEmitter::new(
        clients::eventbridge(&env.sdk_with_attempts(1).await),
        env.template.physical_name("AuditBus").expect("bus"),
        format!("ssm-autopilot.test-{}", uid()),
    );
    add_fault(
        &env,
        json!({"operation": "events:PutEvents", "throttle_rate": 1.0}),
    )
    .await;
    let err = emitter
        .emit(&[AuditEvent::new("t", json!({"a": 1}))], None)
        .await
        .expect_err("throttled");
    match &err {
        AuditError::Call(e) => {
            let code = aws_smithy_types::error::metadata::ProvideErrorMetadata::code(e.as_ref());
            assert_eq!(code, Some("ThrottlingException"), "{e:?}");
        }
        other => panic!("expected AuditError::Call, got {other:?}"),
    }
    assert_eq!(err.error_type(), "AuditDeliveryFailed");
    // Each of the emitter's 3 rounds retried the throttled call.
    assert_eq!(counter(&env, "events:PutEvents", "throttled").await, 3);
    clear_my_faults(&env).await;
}

#[tokio::test]
async fn a_throttled_put_events_call_is_retried_in_the_next_round() {
    let env = env().await;
    let source = format!("ssm-autopilot.test-{}", uid());
    let sink = AuditSink::new(&env, &source).await;
    let emitter = AuditEmitter::new(
        clients::eventbridge(&env.sdk_with_attempts(1).await),
        env.template.physical_name("AuditBus").expect("bus"),
        source.clone(),
    );
    add_fault(
        &env,
        json!({"operation": "events:PutEvents", "throttle_rate": 1.0, "max_hits": 1}),
    )
    .await;
    let report = emitter
        .emit(&[AuditEvent::new("t", json!({"a": 1}))], None)
        .await
        .expect("delivered on the second round");
    assert_eq!((report.sent, report.calls), (1, 2), "{report:?}");
    assert_eq!(counter(&env, "events:PutEvents", "throttled").await, 1);
    assert_eq!(counter(&env, "events:PutEvents", "ok").await, 1);
    assert_eq!(sink.receive(1).await.len(), 1);
    clear_my_faults(&env).await;
    sink.remove().await;
}

/// An EventBridge client answered by `rules` (aws-smithy-mocks), without the `test-util`
/// feature of the SDK crate.
fn mocked_eventbridge(
    mode: RuleMode,
    rules: &[&aws_smithy_mocks::Rule],
) -> aws_sdk_eventbridge::Client {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(mode);
    for r in rules {
        interceptor = interceptor.with_rule(r);
    }
    let conf = aws_sdk_eventbridge::Config::builder()
        .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
        .region(aws_sdk_eventbridge::config::Region::new(REGION))
        .credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
            "AKIDMOCK", "secret", None, None, "mock",
        ))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        .build();
    aws_sdk_eventbridge::Client::from_conf(conf)
}

fn seqs_of(req: &PutEventsInput) -> Vec<u64> {
    req.entries()
        .iter()
        .filter_map(|e| e.detail())
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|d| d["seq"].as_u64())
        .collect()
}

fn ok_entry() -> PutEventsResultEntry {
    PutEventsResultEntry::builder().event_id(uid()).build()
}

fn failed_entry(code: &str) -> PutEventsResultEntry {
    PutEventsResultEntry::builder()
        .error_code(code)
        .error_message("mocked")
        .build()
}

#[tokio::test]
async fn only_failed_entries_are_sent_again() {
    let seen: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let (s1, s2) = (seen.clone(), seen.clone());
    let first = mock!(aws_sdk_eventbridge::Client::put_events).then_compute_output(move |req| {
        s1.lock().expect("lock").push(seqs_of(req));
        PutEventsOutput::builder()
            .failed_entry_count(1)
            .entries(ok_entry())
            .entries(failed_entry("InternalFailure"))
            .entries(ok_entry())
            .build()
    });
    let second = mock!(aws_sdk_eventbridge::Client::put_events).then_compute_output(move |req| {
        s2.lock().expect("lock").push(seqs_of(req));
        let mut out = PutEventsOutput::builder().failed_entry_count(0);
        for _ in req.entries() {
            out = out.entries(ok_entry());
        }
        out.build()
    });
    let emitter = AuditEmitter::new(
        mocked_eventbridge(RuleMode::Sequential, &[&first, &second]),
        "bus",
        "ssm-autopilot.test",
    );
    let events: Vec<AuditEvent> = (0..3)
        .map(|i| AuditEvent::new("t", json!({"seq": i})))
        .collect();

    let report = emitter.emit(&events, None).await.expect("emit");
    assert_eq!(
        report,
        EmitReport {
            sent: 3,
            failed: 0,
            truncated: 0,
            calls: 2
        }
    );
    assert_eq!(*seen.lock().expect("lock"), vec![vec![0, 1, 2], vec![1]]);
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

#[tokio::test]
async fn entries_failing_every_round_or_permanently_are_reported() {
    // A retryable code on every round: sent again until the rounds run out.
    let seen: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let s = seen.clone();
    let always = mock!(aws_sdk_eventbridge::Client::put_events).then_compute_output(move |req| {
        s.lock().expect("lock").push(seqs_of(req));
        let mut out = PutEventsOutput::builder();
        for i in 0..req.entries().len() {
            out = out.entries(if i == 0 {
                failed_entry("ThrottlingException")
            } else {
                ok_entry()
            });
        }
        out.failed_entry_count(1).build()
    });
    let emitter = AuditEmitter::new(
        mocked_eventbridge(RuleMode::MatchAny, &[&always]),
        "bus",
        "ssm-autopilot.test",
    );
    let events: Vec<AuditEvent> = (0..2)
        .map(|i| AuditEvent::new("t", json!({"seq": i})))
        .collect();
    let err = emitter.emit(&events, None).await.expect_err("undelivered");
    match err {
        AuditError::Undelivered { failed, report } => {
            assert_eq!(failed, 1);
            assert_eq!(
                report,
                EmitReport {
                    sent: 1,
                    failed: 1,
                    truncated: 0,
                    calls: 3
                }
            );
        }
        other => panic!("expected Undelivered, got {other:?}"),
    }
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![vec![0, 1], vec![0], vec![0]]
    );

    // A non-retryable code is not sent again.
    let permanent = mock!(aws_sdk_eventbridge::Client::put_events).then_output(|| {
        PutEventsOutput::builder()
            .failed_entry_count(1)
            .entries(failed_entry("MalformedDetail"))
            .entries(ok_entry())
            .build()
    });
    let emitter = AuditEmitter::new(
        mocked_eventbridge(RuleMode::Sequential, &[&permanent]),
        "bus",
        "ssm-autopilot.test",
    );
    let err = emitter.emit(&events, None).await.expect_err("undelivered");
    assert!(
        matches!(
            err,
            AuditError::Undelivered {
                failed: 1,
                report: EmitReport {
                    sent: 1,
                    calls: 1,
                    ..
                }
            }
        ),
        "{err:?}"
    );
    assert_eq!(permanent.num_calls(), 1);
}

// ------------------------------------------------------------------ clients

#[tokio::test]
async fn s3_client_uses_path_style_on_a_hostname_endpoint() {
    let env = env().await;
    // `localhost` rather than 127.0.0.1: the endpoint rules would pick path-style on their
    // own for an IP address, while `<bucket>.localhost` does not resolve here.
    let port = env
        .endpoint
        .rsplit(':')
        .next()
        .expect("port")
        .trim_end_matches('/');
    let cfg = env
        .sdk_with_attempts(1)
        .await
        .into_builder()
        .endpoint_url(format!("http://localhost:{port}"))
        .build();
    let s3 = clients::s3(&cfg);
    let bucket = format!("autopilot-test-{}", uid());
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    s3.put_object()
        .bucket(&bucket)
        .key("reports/run-1.json")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            br#"{"ok":true}"#,
        ))
        .send()
        .await
        .expect("PutObject");
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("reports/run-1.json")
        .send()
        .await
        .expect("GetObject");
    let bytes = got.body.collect().await.expect("body").into_bytes();
    assert_eq!(&bytes[..], br#"{"ok":true}"#);
    assert_eq!(counter(&env, "s3:PutObject", "ok").await, 1);
    assert_eq!(counter(&env, "s3:GetObject", "ok").await, 1);

    // Control: without path-style the SDK addresses `<bucket>.localhost`, which fails
    // wherever that name does not resolve (checked first, so the test holds elsewhere too).
    let virtual_host = format!("{bucket}.localhost:{port}");
    let resolves = tokio::task::spawn_blocking(move || {
        std::net::ToSocketAddrs::to_socket_addrs(virtual_host.as_str()).is_ok()
    })
    .await
    .expect("resolve");
    if !resolves {
        let plain = aws_sdk_s3::Client::new(&cfg);
        let err = plain
            .get_object()
            .bucket(&bucket)
            .key("reports/run-1.json")
            .send()
            .await
            .expect_err("a virtual-hosted request cannot reach the emulator");
        assert!(
            matches!(err, aws_sdk_s3::error::SdkError::DispatchFailure(_)),
            "{err:?}"
        );
    }
}

const CHILD_MARKER: &str = "AUTOPILOT_SHARED_EMULATOR_CHILD";

/// Runs `load_sdk_config` in a child process of this test binary with the environment a
/// Lambda function gets locally (`AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`, …).
#[tokio::test]
async fn load_sdk_config_honours_the_environment() {
    let env = env().await;
    add_fault(
        &env,
        json!({"operation": "ssm:GetParameter", "throttle_rate": 1.0}),
    )
    .await;
    let exe = std::env::current_exe().expect("test binary");
    let (endpoint, tenant) = (env.endpoint.clone(), env.tenant.clone());
    let bucket = format!("autopilot-test-{}", uid());
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(exe);
        cmd.args([
            "child_load_sdk_config",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env(CHILD_MARKER, &bucket)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", &tenant)
            .env("AWS_SECRET_ACCESS_KEY", autopilot_harness::SECRET_KEY)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "2")
            .output()
    })
    .await
    .expect("spawn")
    .expect("child test");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{log}");
    assert!(
        log.contains("1 passed"),
        "the child test did not run:\n{log}"
    );
    // The calls reached the emulator under our tenant, and AWS_MAX_ATTEMPTS was honoured.
    assert_eq!(counter(&env, "s3:PutObject", "ok").await, 1);
    assert_eq!(counter(&env, "ssm:GetParameter", "throttled").await, 2);
    clear_my_faults(&env).await;
}

/// The child half of `load_sdk_config_honours_the_environment`; does nothing unless run by it.
#[tokio::test]
#[ignore = "run by load_sdk_config_honours_the_environment in a child process"]
async fn child_load_sdk_config() {
    let Ok(bucket) = std::env::var(CHILD_MARKER) else {
        return;
    };
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("endpoint");
    let cfg = clients::load_sdk_config().await;
    assert_eq!(cfg.endpoint_url(), Some(endpoint.as_str()));
    assert_eq!(cfg.region().map(|r| r.as_ref()), Some(REGION));
    assert_eq!(cfg.retry_config().map(|r| r.max_attempts()), Some(2));

    let s3 = clients::s3(&cfg);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    s3.put_object()
        .bucket(&bucket)
        .key("k")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"v"))
        .send()
        .await
        .expect("PutObject");

    let cache = ParameterCache::new(clients::ssm(&cfg), Duration::from_secs(60));
    let err = cache
        .get(&format!("/autopilot-test/{bucket}"))
        .await
        .expect_err("throttled");
    assert!(err.retryable(), "{err:?}");
}
