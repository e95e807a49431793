#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End-to-end: the real binary against the emulator (seeded fleet, S3, DynamoDB).

mod ddl;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use autopilot_harness::TestEnv;
use autopilot_harness::runtime_api::{InvokeOptions, Sandbox};
use serde_json::{Value, json};

const BIN: &str = "inventory-aggregator";

fn trigger(id: &str, time: &str) -> Vec<u8> {
    json!({"version":"0","id":id,"detail-type":"Scheduled Event","source":"aws.events",
        "account":"123456789012","time":time,"region":"us-east-1",
        "resources":["arn:aws:events:us-east-1:123456789012:rule/inventory"],"detail":{}})
    .to_string()
    .into_bytes()
}

async fn sandbox(env: &TestEnv, vars: &[(&str, &str)]) -> (Sandbox, String) {
    let mut spec = env
        .function(BIN, Path::new(env!("CARGO_BIN_EXE_inventory-aggregator")))
        .unwrap();
    for (k, v) in vars {
        spec.env.insert((*k).into(), (*v).into());
    }
    let bucket = spec.env["INVENTORY_BUCKET"].clone();
    let sb = Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();
    (sb, bucket)
}

/// Invokes, then re-delivers continuations (as the audit-bus rule would) until complete.
async fn run_to_completion(
    sb: &Sandbox,
    payload: Vec<u8>,
    opts: impl Fn() -> InvokeOptions,
) -> Vec<Value> {
    let mut payload = payload;
    let mut responses = Vec::new();
    let mut redeliveries = 0;
    for _ in 0..200 {
        let inv = sb.invoke(&payload, opts()).await.unwrap();
        let out = match inv.outcome {
            Ok(out) => out,
            // Lambda redelivers a failed async invocation; the run resumes from its checkpoint.
            Err(e) if e.error_type == "AwsThrottled" && redeliveries < 10 => {
                redeliveries += 1;
                continue;
            }
            Err(e) => panic!("{e:?}\n{}", sb.logs().join("\n")),
        };
        responses.push(out.clone());
        match out["status"].as_str() {
            Some("continuing") => payload = out["continuation"].to_string().into_bytes(),
            Some("complete") => return responses,
            other => panic!("unexpected status {other:?}: {out}"),
        }
    }
    panic!("run did not complete");
}

async fn objects(env: &TestEnv, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    use futures::{StreamExt, TryStreamExt};
    let s3 = autopilot_shared::clients::s3(&env.sdk().await);
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let resp = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("{prefix}/"))
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        keys.extend(resp.contents().iter().map(|o| o.key().unwrap().to_owned()));
        token = resp.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    // Concurrent reads: thousands of sequential GETs against the emulator dominated the test.
    futures::stream::iter(keys)
        .map(|key| {
            let s3 = s3.clone();
            async move {
                let body = s3
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await?
                    .body
                    .collect()
                    .await
                    .unwrap()
                    .into_bytes()
                    .to_vec();
                Ok::<_, aws_sdk_s3::error::SdkError<_>>((key[prefix.len() + 1..].to_owned(), body))
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await
        .unwrap()
}

fn manifest_of(objs: &BTreeMap<String, Vec<u8>>) -> (String, Value) {
    let (k, v) = objs
        .iter()
        .filter(|(k, _)| k.ends_with("/manifest.json"))
        .max_by_key(|(k, _)| (*k).clone())
        .unwrap();
    (k.clone(), serde_json::from_slice(v).unwrap())
}

/// Every object identical, manifests identical apart from wall-clock `timing`.
fn assert_same_output(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, va) in a {
        let vb = &b[k];
        if k.ends_with("/manifest.json") {
            let mut ma: Value = serde_json::from_slice(va).unwrap();
            let mut mb: Value = serde_json::from_slice(vb).unwrap();
            ma.as_object_mut().unwrap().remove("timing");
            mb.as_object_mut().unwrap().remove("timing");
            // The destination names the prefix; everything else must match.
            ma.as_object_mut().unwrap().remove("destination");
            mb.as_object_mut().unwrap().remove("destination");
            // The diff's key starts with the run's own output prefix.
            for m in [&mut ma, &mut mb] {
                if let Some(key) = m["diff"]["key"].as_str() {
                    let rel = key
                        .split_once('/')
                        .map(|(_, r)| r.to_owned())
                        .unwrap_or_default();
                    m["diff"]["key"] = Value::String(rel);
                }
            }
            assert_eq!(ma, mb, "{k}");
        } else {
            assert!(va == vb, "{k} differs");
        }
    }
}

fn expected_rds_bytes(node: &str, item: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in item["Content"].as_array().unwrap() {
        let mut row: BTreeMap<String, String> = entry
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        row.insert("resourceId".into(), node.into());
        row.insert(
            "captureTime".into(),
            item["CaptureTime"].as_str().unwrap().into(),
        );
        row.insert(
            "schemaVersion".into(),
            item["SchemaVersion"].as_str().unwrap().into(),
        );
        out.extend(serde_json::to_vec(&row).unwrap());
        out.push(b'\n');
    }
    out
}

fn now_rfc(offset_h: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(offset_h))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn uniq(p: &str) -> String {
    format!("{p}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_of_500_lands_in_rds_layout_with_snapshot_manifest_diff_and_ddl_matches() {
    let env = TestEnv::new().await.unwrap();
    env.control
        .seed_fleet(
            json!({"tenant": env.tenant, "count": 500, "seed": 7, "offline_fraction": 0.2,
        "tags": {"Environment": ["prod", "dev"]}}),
        )
        .await
        .unwrap();
    let prefix = uniq("inv500");
    let (sb, bucket) = sandbox(
        &env,
        &[("OUTPUT_PREFIX", &prefix), ("ENTRIES_TYPES", "AWS:File")],
    )
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    let t1 = now_rfc(0);
    let resp = run_to_completion(&sb, trigger(&id, &t1), InvokeOptions::default).await;
    assert_eq!(resp.len(), 1);

    // Replay: answered from the idempotency store, nothing rewritten.
    let puts = env
        .control
        .calls(&env.tenant, "s3:PutObject")
        .await
        .unwrap();
    let again = sb
        .invoke(&trigger(&id, &t1), InvokeOptions::default())
        .await
        .unwrap()
        .outcome
        .unwrap();
    assert_eq!(again["replayed"], true);
    assert_eq!(
        env.control
            .calls(&env.tenant, "s3:PutObject")
            .await
            .unwrap(),
        puts
    );

    let state = env.control.state("inventory", &env.tenant).await.unwrap();
    let inv = state["Inventory"].as_object().unwrap();
    assert_eq!(inv.len(), 500);
    let objs = objects(&env, &bucket, &prefix).await;
    let mut rds = 0;
    for (node, types) in inv {
        for (tname, item) in types.as_object().unwrap() {
            let key = format!(
                "{tname}/accountid=123456789012/region=us-east-1/resourcetype=ManagedInstanceInventory/{node}.json"
            );
            let got = objs.get(&key).unwrap_or_else(|| panic!("missing {key}"));
            assert!(*got == expected_rds_bytes(node, item), "{key} differs");
            rds += 1;
        }
    }
    let rds_written = objs
        .keys()
        .filter(|k| k.contains("/resourcetype=ManagedInstanceInventory/"))
        .count();
    assert_eq!(rds_written, rds, "no extra Resource Data Sync objects");

    // GetInventory pages of 50 per type; ListInventoryEntries only for the configured type.
    let counters = env.control.counters(&env.tenant).await.unwrap();
    let c = |op: &str| autopilot_harness::emulator::counter_field(&counters, op, "calls");
    let types = inv
        .values()
        .flat_map(|t| t.as_object().unwrap().keys().cloned())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(c("ssm:ListInventoryEntries"), 500);
    assert!(
        c("ssm:GetInventory") <= (types.len() as u64 + 6) * 10 + 10,
        "GetInventory calls {}",
        c("ssm:GetInventory")
    );

    let (mkey, manifest) = manifest_of(&objs);
    assert!(mkey.starts_with(&format!("manifests/dt={}/run=", &t1[..10])));
    assert_eq!(manifest["nodeCount"], 500);
    let app = manifest["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["typeName"] == "AWS:Application")
        .unwrap();
    let app_rows: usize = inv
        .values()
        .map(|t| t["AWS:Application"]["Content"].as_array().unwrap().len())
        .sum();
    assert_eq!(app["rows"], app_rows);
    assert_eq!(app["nodes"], 500);
    let file = manifest["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["typeName"] == "AWS:File")
        .unwrap();
    assert_eq!(file["source"], "ListInventoryEntries");
    let t1_time = chrono::DateTime::parse_from_rfc3339(&t1).unwrap();
    let stale = inv
        .values()
        .filter(|t| {
            let ct = chrono::DateTime::parse_from_rfc3339(
                t["AWS:InstanceInformation"]["CaptureTime"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            t1_time.signed_duration_since(ct) > chrono::Duration::hours(24)
        })
        .count();
    assert!(stale > 0);
    assert_eq!(manifest["freshness"]["staleNodes"], stale);
    assert!(manifest["diff"]["previousRunId"].is_null());
    let run_dir = mkey
        .trim_start_matches("manifests/")
        .trim_end_matches("/manifest.json")
        .to_owned();
    assert!(objs.contains_key(&format!("diffs/{run_dir}/diff.json")));
    assert!(
        objs.keys()
            .any(|k| k.starts_with("snapshots/AWS:Application/dt=")
                && k.contains(&run_dir[run_dir.find("run=").unwrap()..]))
    );

    // Every written key falls under a DDL table's projection, and every table sees data.
    let tables: Vec<ddl::Table> = ddl::load_all()
        .into_iter()
        .map(|mut t| {
            for v in t.props.values_mut() {
                *v = ddl::substitute(v, &bucket, &prefix, "123456789012", "us-east-1");
            }
            t.location =
                ddl::substitute(&t.location, &bucket, &prefix, "123456789012", "us-east-1");
            t
        })
        .collect();
    let mut hits: HashMap<String, usize> = HashMap::new();
    for key in objs.keys() {
        let url = format!("s3://{bucket}/{prefix}/{key}");
        for t in &tables {
            if url.starts_with(&t.location) {
                let values = ddl::match_key(t, &url)
                    .unwrap_or_else(|| panic!("{url} not under {}'s template", t.name));
                for (col, v) in &values {
                    assert!(
                        ddl::projected(t, col, v),
                        "{}: {col}={v} not projected",
                        t.name
                    );
                }
                *hits.entry(t.name.clone()).or_default() += 1;
            }
        }
    }
    for t in &tables {
        assert!(
            hits.get(&t.name).copied().unwrap_or(0) > 0 || t.name == "inventory_diffs",
            "{} matched no key",
            t.name
        );
    }

    // Second run after a node's applications changed: the diff says what changed.
    let node = inv.keys().next().unwrap().clone();
    let mut apps: Vec<Value> = inv[&node]["AWS:Application"]["Content"]
        .as_array()
        .unwrap()
        .clone();
    let removed = apps.remove(0);
    let upgraded_name = apps[0]["Name"].as_str().unwrap().to_owned();
    apps[0]["Version"] = json!("999.0");
    apps.push(json!({"Name": "zz-new-tool", "Version": "1.0.0"}));
    env.control
        .call(
            "POST",
            "fleet/node",
            Some(json!({"tenant": env.tenant, "instance_id": node,
        "inventory": {"AWS:Application": apps}})),
        )
        .await
        .unwrap();
    run_to_completion(
        &sb,
        trigger(&uuid::Uuid::new_v4().to_string(), &now_rfc(1)),
        InvokeOptions::default,
    )
    .await;
    let objs2 = objects(&env, &bucket, &prefix).await;
    let (mkey2, m2) = manifest_of(&objs2);
    assert_ne!(mkey2, mkey);
    assert_eq!(m2["diff"]["previousRunId"], manifest["runId"]);
    assert_eq!(m2["diff"]["nodesChanged"], 1);
    let diff_key = m2["diff"]["key"]
        .as_str()
        .unwrap()
        .trim_start_matches(&format!("{prefix}/"))
        .to_owned();
    let diff: Vec<Value> = String::from_utf8(objs2[&diff_key].clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(diff.len(), 1);
    assert_eq!(diff[0]["resourceId"], node);
    assert_eq!(diff[0]["removed"][0]["name"], removed["Name"]);
    assert_eq!(diff[0]["upgraded"][0]["name"], upgraded_name.as_str());
    assert_eq!(diff[0]["added"][0]["name"], "zz-new-tool");
}

/// Objects under `prefix` right now (keys only, first 1000).
async fn key_count(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> i32 {
    s3.list_objects_v2()
        .bucket(bucket)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .unwrap()
        .key_count()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_deadline_cut_runs_resume_to_identical_objects() {
    // 120 nodes: three GetInventory pages per type (50, 50, 20), so a kill lands mid-type.
    // The ≥ 500-node scale is covered by the fleet_of_500 test.
    let env = TestEnv::new().await.unwrap();
    env.control
        .seed_fleet(
            json!({"tenant": env.tenant, "count": 120, "seed": 11, "windows_fraction": 0.5}),
        )
        .await
        .unwrap();
    let event = trigger(&uuid::Uuid::new_v4().to_string(), &now_rfc(0));

    let base = uniq("base");
    let (sb, bucket) = sandbox(&env, &[("OUTPUT_PREFIX", &base)]).await;
    let t = std::time::Instant::now();
    let uninterrupted = run_to_completion(&sb, event.clone(), InvokeOptions::default).await;
    assert_eq!(uninterrupted.len(), 1);
    eprintln!("uninterrupted run: {:?}", t.elapsed());
    let expected = objects(&env, &bucket, &base).await;
    let full_pages = env
        .control
        .calls(&env.tenant, "ssm:GetInventory")
        .await
        .unwrap();

    // Crash: SIGKILL in the middle of a page (after the first page's 50 node objects and its
    // snapshot part, before the second page's part), then the same trigger is redelivered
    // once the crashed invocation's deadline has passed, as Lambda's retry would.
    let killed = uniq("killed");
    let (sb, _) = sandbox(
        &env,
        &[
            ("OUTPUT_PREFIX", &killed),
            ("MAX_CONCURRENCY", "2"),
            ("TYPE_CONCURRENCY", "1"),
            ("CHECKPOINT_MARGIN_SECONDS", "1"),
        ],
    )
    .await;
    let sb = std::sync::Arc::new(sb);
    let started = std::time::Instant::now();
    // Long enough to reach the kill point on a loaded machine; the redelivery waits it out.
    let deadline = Duration::from_secs(15);
    let runner = {
        let (sb, ev) = (sb.clone(), event.clone());
        tokio::spawn(async move {
            sb.invoke(
                &ev,
                InvokeOptions {
                    deadline_in: Some(deadline),
                    ..Default::default()
                },
            )
            .await
        })
    };
    let s3 = autopilot_shared::clients::s3(&env.sdk().await);
    loop {
        assert!(
            !runner.is_finished() && started.elapsed() < deadline,
            "the invocation ended before the kill point; nothing to kill"
        );
        if key_count(&s3, &bucket, &killed).await >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    sb.kill();
    assert!(runner.await.unwrap().is_err(), "the invocation was killed");
    let partial = objects(&env, &bucket, &killed).await;
    assert!(
        !partial.keys().any(|k| k.ends_with("manifest.json")),
        "no manifest before the run completes"
    );
    assert!(
        partial.len() < expected.len() / 2,
        "killed early in the run"
    );
    let before = env
        .control
        .calls(&env.tenant, "ssm:GetInventory")
        .await
        .unwrap();
    // A redelivery while the crashed invocation still holds the run is refused (retryable).
    let (sb2, _) = sandbox(&env, &[("OUTPUT_PREFIX", &killed)]).await;
    if started.elapsed() + Duration::from_secs(1) < deadline {
        let busy = sb2
            .invoke(&event, InvokeOptions::default())
            .await
            .unwrap()
            .outcome
            .unwrap_err();
        assert!(
            ["IdempotencyAlreadyInProgress", "RunInProgress"].contains(&busy.error_type.as_str()),
            "{busy:?}"
        );
    }
    tokio::time::sleep(deadline.saturating_sub(started.elapsed()) + Duration::from_millis(300))
        .await;
    let resumed = run_to_completion(&sb2, event.clone(), InvokeOptions::default).await;
    assert_eq!(resumed.len(), 1);
    let resumed_pages = env
        .control
        .calls(&env.tenant, "ssm:GetInventory")
        .await
        .unwrap()
        - before;
    assert!(
        resumed_pages < full_pages,
        "resumed from the checkpoint ({resumed_pages} < {full_pages})"
    );
    let got = objects(&env, &bucket, &killed).await;
    assert_same_output(&expected, &got);
    assert_eq!(
        manifest_of(&got).1["timing"]["invocations"].as_u64(),
        Some(2),
        "the crashed invocation and the redelivery"
    );

    // Deadline: each invocation gets ~1 s of work, checkpoints and hands over to a
    // continuation event (the audit-bus rule's job is modelled by re-invoking with it).
    // The margin leaves 19 s to finish the page in flight and, in the last invocation, the
    // snapshot, manifest and diff: on a loaded CI machine that overran 5 s + the grace.
    let cut = uniq("cut");
    let (sb3, _) = sandbox(
        &env,
        &[
            ("OUTPUT_PREFIX", &cut),
            ("CHECKPOINT_MARGIN_SECONDS", "19"),
            ("MAX_CONCURRENCY", "4"),
        ],
    )
    .await;
    let t = std::time::Instant::now();
    let responses = run_to_completion(&sb3, event.clone(), || InvokeOptions {
        deadline_in: Some(Duration::from_secs(20)),
        ..Default::default()
    })
    .await;
    eprintln!(
        "deadline-cut run: {} invocations, {:?}",
        responses.len(),
        t.elapsed()
    );
    assert!(responses.len() > 1, "the run was split over invocations");
    for r in &responses[..responses.len() - 1] {
        assert_eq!(r["status"], "continuing");
        assert_eq!(r["continuation"]["detail"]["reason"], "continuation");
    }
    let got = objects(&env, &bucket, &cut).await;
    assert_same_output(&expected, &got);
    assert_eq!(
        manifest_of(&got).1["timing"]["invocations"].as_u64(),
        Some(responses.len() as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_percent_throttling_gives_identical_output() {
    let env = TestEnv::new().await.unwrap();
    env.control
        .seed_fleet(json!({"tenant": env.tenant, "count": 120, "seed": 3}))
        .await
        .unwrap();
    let event = trigger(&uuid::Uuid::new_v4().to_string(), &now_rfc(0));
    let vars = |p: &str| {
        vec![
            ("OUTPUT_PREFIX".to_owned(), p.to_owned()),
            ("ENTRIES_TYPES".to_owned(), "AWS:Service".to_owned()),
        ]
    };
    let calm = uniq("calm");
    let v = vars(&calm);
    let (sb, bucket) = sandbox(
        &env,
        &v.iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    run_to_completion(&sb, event.clone(), InvokeOptions::default).await;

    env.control.set_faults(json!([
        {"operation": "ssm:GetInventory", "throttle_rate": 0.3, "seed": 1, "tenant": env.tenant},
        {"operation": "ssm:ListInventoryEntries", "throttle_rate": 0.3, "seed": 2, "tenant": env.tenant}
    ])).await.unwrap();
    let stormy = uniq("stormy");
    let v = vars(&stormy);
    let (sb, _) = sandbox(
        &env,
        &v.iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    run_to_completion(&sb, event.clone(), InvokeOptions::default).await;
    env.control
        .call("DELETE", "faults", Some(json!({"tenant": env.tenant})))
        .await
        .unwrap();
    let counters = env.control.counters(&env.tenant).await.unwrap();
    for op in ["ssm:GetInventory", "ssm:ListInventoryEntries"] {
        assert!(
            autopilot_harness::emulator::counter_field(&counters, op, "throttled") > 0,
            "{op} was throttled"
        );
    }
    assert_same_output(
        &objects(&env, &bucket, &calm).await,
        &objects(&env, &bucket, &stormy).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn targets_are_read_through_assumed_roles_into_one_bucket() {
    let env = TestEnv::new().await.unwrap();
    // The emulator gives sessions of an assumed role the tenant `<RoleArn>@<region>`.
    let targets = [
        (
            format!("arn:aws:iam::111111111111:role/{}", uniq("reader")),
            "111111111111",
            "us-east-1",
            30,
        ),
        (
            format!("arn:aws:iam::222222222222:role/{}", uniq("reader")),
            "222222222222",
            "eu-west-1",
            60,
        ),
    ];
    for (i, (role, _, region, count)) in targets.iter().enumerate() {
        env.control
            .seed_fleet(
                json!({"tenant": format!("{role}@{region}"), "count": count, "seed": 20 + i}),
            )
            .await
            .unwrap();
    }
    let targets_json = json!(
        targets
            .iter()
            .map(|(role, _, region, _)| json!({"roleArn": role, "region": region}))
            .collect::<Vec<_>>()
    )
    .to_string();
    let prefix = uniq("targets");
    let (sb, bucket) = sandbox(
        &env,
        &[
            ("OUTPUT_PREFIX", &prefix),
            ("TARGETS", &targets_json),
            ("CHECKPOINT_MARGIN_SECONDS", "19"),
        ],
    )
    .await;
    let first = sb
        .invoke(
            &trigger(&uuid::Uuid::new_v4().to_string(), &now_rfc(0)),
            InvokeOptions::default(),
        )
        .await
        .unwrap()
        .outcome
        .unwrap();
    assert_eq!(first["status"], "dispatched", "{first}");
    let dispatched = first["dispatched"].as_array().unwrap().clone();
    assert_eq!(dispatched.len(), 2);

    // The first target in one invocation; the second cut by ~1 s deadlines into
    // continuations, each resuming that target's own checkpoint.
    let a = run_to_completion(
        &sb,
        dispatched[0].to_string().into_bytes(),
        InvokeOptions::default,
    )
    .await;
    assert_eq!(a.len(), 1);
    // 20 s deadlines with a 19 s margin: ~1 s of work each, and room to finish the page in
    // flight and the run's final files when the machine is loaded (3 s + the grace was overrun).
    let b = run_to_completion(&sb, dispatched[1].to_string().into_bytes(), || {
        InvokeOptions {
            deadline_in: Some(Duration::from_secs(20)),
            ..Default::default()
        }
    })
    .await;
    assert!(b.len() > 1, "the second target continued over invocations");

    let objs = objects(&env, &bucket, &prefix).await;
    let mut rds = 0;
    for (role, account, region, count) in &targets {
        let tenant = format!("{role}@{region}");
        let state = env.control.state("inventory", &tenant).await.unwrap();
        let inv = state["Inventory"].as_object().unwrap();
        assert_eq!(inv.len(), *count as usize);
        for (node, types) in inv {
            for (tname, item) in types.as_object().unwrap() {
                let key = format!(
                    "{tname}/accountid={account}/region={region}/resourcetype=ManagedInstanceInventory/{node}.json"
                );
                let got = objs.get(&key).unwrap_or_else(|| panic!("missing {key}"));
                assert!(*got == expected_rds_bytes(node, item), "{key} differs");
                rds += 1;
            }
        }
        // Read with the assumed role's session (its tenant), not the function's own keys.
        assert!(
            env.control
                .calls(&tenant, "ssm:GetInventory")
                .await
                .unwrap()
                > 0
        );
    }
    assert_eq!(
        objs.keys()
            .filter(|k| k.contains("/resourcetype=ManagedInstanceInventory/"))
            .count(),
        rds,
        "no other Resource Data Sync objects"
    );
    assert_eq!(
        env.control
            .calls(&env.tenant, "ssm:GetInventory")
            .await
            .unwrap(),
        0
    );
    assert!(
        env.control
            .calls(&env.tenant, "sts:AssumeRole")
            .await
            .unwrap()
            >= 2
    );
    // One manifest per target run, each naming its account and region.
    let mut manifests: Vec<(String, String, u64)> = objs
        .iter()
        .filter(|(k, _)| k.ends_with("/manifest.json"))
        .map(|(_, v)| {
            let m: Value = serde_json::from_slice(v).unwrap();
            (
                m["accountId"].as_str().unwrap().to_owned(),
                m["region"].as_str().unwrap().to_owned(),
                m["nodeCount"].as_u64().unwrap(),
            )
        })
        .collect();
    manifests.sort();
    assert_eq!(
        manifests,
        vec![
            ("111111111111".into(), "us-east-1".into(), 30),
            ("222222222222".into(), "eu-west-1".into(), 60)
        ]
    );
}
