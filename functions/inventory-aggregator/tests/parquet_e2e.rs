#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End-to-end with `OUTPUT_FORMATS=json,parquet`: the real binary against the emulator writes
//! Parquet snapshot files holding exactly the JSON snapshot rows, lists them in the manifest,
//! under keys the Parquet DDL projects, and a run cut into continuations writes the same bytes.

mod ddl;
mod pyarrow;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use autopilot_harness::TestEnv;
use autopilot_harness::runtime_api::{InvokeOptions, Sandbox};
use serde_json::{Value, json};

fn trigger(id: &str, time: &str) -> Vec<u8> {
    json!({"version":"0","id":id,"detail-type":"Scheduled Event","source":"aws.events",
        "account":"123456789012","time":time,"region":"us-east-1",
        "resources":["arn:aws:events:us-east-1:123456789012:rule/inventory"],"detail":{}})
    .to_string()
    .into_bytes()
}

async fn sandbox(env: &TestEnv, vars: &[(&str, &str)]) -> (Sandbox, String) {
    let mut spec = env
        .function(
            "inventory-aggregator",
            Path::new(env!("CARGO_BIN_EXE_inventory-aggregator")),
        )
        .unwrap();
    for (k, v) in vars {
        spec.env.insert((*k).into(), (*v).into());
    }
    let bucket = spec.env["INVENTORY_BUCKET"].clone();
    let sb = Sandbox::spawn(spec).await.unwrap();
    sb.init_duration().await.unwrap();
    (sb, bucket)
}

/// Invokes, then delivers continuations (as the audit-bus rule would) until complete.
async fn run_to_completion(sb: &Sandbox, payload: Vec<u8>, deadline: Option<Duration>) -> usize {
    let mut payload = payload;
    for n in 1..=300 {
        let opts = InvokeOptions {
            deadline_in: deadline,
            ..Default::default()
        };
        let out = match sb.invoke(&payload, opts).await.unwrap().outcome {
            Ok(out) => out,
            Err(e) => panic!("{e:?}\n{}", sb.logs().join("\n")),
        };
        match out["status"].as_str() {
            Some("continuing") => payload = out["continuation"].to_string().into_bytes(),
            Some("complete") => return n,
            other => panic!("unexpected status {other:?}: {out}"),
        }
    }
    panic!("run did not complete");
}

async fn objects(env: &TestEnv, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let s3 = autopilot_shared::clients::s3(&env.sdk().await);
    let mut out = BTreeMap::new();
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
        for o in resp.contents() {
            let key = o.key().unwrap().to_owned();
            let got = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            if key.ends_with(".parquet") {
                assert_eq!(got.content_type(), Some("application/vnd.apache.parquet"));
            }
            let body = got.body.collect().await.unwrap().into_bytes().to_vec();
            out.insert(key[prefix.len() + 1..].to_owned(), body);
        }
        token = resp.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return out;
        }
    }
}

fn manifest_of(objs: &BTreeMap<String, Vec<u8>>) -> Value {
    let (_, v) = objs
        .iter()
        .find(|(k, _)| k.ends_with("/manifest.json"))
        .unwrap();
    serde_json::from_slice(v).unwrap()
}

fn uniq(p: &str) -> String {
    format!("{p}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parquet_snapshots_hold_exactly_the_json_rows() {
    let env = TestEnv::new().await.unwrap();
    // 120 nodes: three pages (parts) per type; 100 nodes per file → two parts per file, so
    // every type has a full file and a remainder file.
    env.control
        .seed_fleet(json!({"tenant": env.tenant, "count": 120, "seed": 5, "windows_fraction": 0.5}))
        .await
        .unwrap();
    let vars = |prefix: &str| {
        vec![
            ("OUTPUT_PREFIX".to_owned(), prefix.to_owned()),
            ("OUTPUT_FORMATS".to_owned(), "json,parquet".to_owned()),
            ("PARQUET_NODES_PER_FILE".to_owned(), "100".to_owned()),
        ]
    };
    let prefix = uniq("pq");
    let v = vars(&prefix);
    let v: Vec<(&str, &str)> = v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (sb, bucket) = sandbox(&env, &v).await;
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = trigger(&uuid::Uuid::new_v4().to_string(), &time);
    assert_eq!(run_to_completion(&sb, event.clone(), None).await, 1);
    let objs = objects(&env, &bucket, &prefix).await;
    let manifest = manifest_of(&objs);
    let run_dir = format!(
        "dt={}/run={}/accountid=123456789012/region=us-east-1",
        manifest["dt"].as_str().unwrap(),
        manifest["runId"].as_str().unwrap()
    );

    let ssm = aws_sdk_ssm::Client::new(&env.sdk().await);
    let mut listed = Vec::new();
    let mut checked_rows = 0;
    for t in manifest["types"].as_array().unwrap() {
        let type_name = t["typeName"].as_str().unwrap();
        let parts = t["parts"].as_u64().unwrap();
        let files: Vec<String> = t["parquet"]
            .as_array()
            .map(|a| a.iter().map(|k| k.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        assert_eq!(files.len() as u64, parts.div_ceil(2), "{type_name}");
        if parts == 0 {
            continue;
        }
        if type_name == "AWS:Application" {
            // 50 + 50 + 20 nodes: a file of two parts, then the remainder.
            assert_eq!((parts, files.len()), (3, 2));
        }
        let expected_keys: Vec<String> = (0..files.len())
            .map(|i| {
                format!("{prefix}/snapshots-parquet/{type_name}/{run_dir}/part-{i:05}.parquet")
            })
            .collect();
        assert_eq!(files, expected_keys);
        listed.extend(files.iter().cloned());

        // JSON rows, in part order.
        let json_rows: Vec<serde_json::Map<String, Value>> = (0..parts)
            .flat_map(|p| {
                let key = format!("snapshots/{type_name}/{run_dir}/part-{p:05}.json");
                String::from_utf8(objs[&key].clone())
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        let bytes: Vec<Vec<u8>> = files
            .iter()
            .map(|k| objs[&k[prefix.len() + 1..]].clone())
            .collect();
        let read = pyarrow::read(&bytes);
        let pq_rows: Vec<_> = read.iter().flat_map(pyarrow::rows).collect();
        assert_eq!(pq_rows.len(), json_rows.len(), "{type_name}");
        for (i, (p, j)) in pq_rows.iter().zip(&json_rows).enumerate() {
            let defined: BTreeMap<&str, &str> = p
                .iter()
                .filter_map(|(c, v)| v.as_deref().map(|v| (c.as_str(), v)))
                .collect();
            let want: BTreeMap<&str, &str> = j
                .iter()
                .map(|(c, v)| (c.as_str(), v.as_str().unwrap()))
                .collect();
            assert_eq!(defined, want, "{type_name} row {i}");
        }
        checked_rows += json_rows.len();

        // Columns: GetInventorySchema's attributes in its order, then the row columns.
        let schema = ssm
            .get_inventory_schema()
            .type_name(type_name)
            .send()
            .await
            .unwrap();
        let attrs: Vec<&str> = schema.schemas()[0]
            .attributes()
            .iter()
            .map(|a| a.name())
            .collect();
        for f in &read {
            let names: Vec<&str> = f["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(&names[..attrs.len()], &attrs[..], "{type_name}");
            assert!(names.contains(&"resourceId") && names.contains(&"runId"));
        }
    }
    assert!(checked_rows > 1000, "only {checked_rows} rows compared");
    let written: Vec<String> = objs
        .keys()
        .filter(|k| k.ends_with(".parquet"))
        .map(|k| format!("{prefix}/{k}"))
        .collect();
    listed.sort();
    assert_eq!(written, listed, "the manifest lists every Parquet object");

    // Every Parquet key falls under a Parquet table's projection; each table sees data.
    for mut t in ddl::load_parquet() {
        for v in t.props.values_mut() {
            *v = ddl::substitute(v, &bucket, &prefix, "123456789012", "us-east-1");
        }
        t.location = ddl::substitute(&t.location, &bucket, &prefix, "123456789012", "us-east-1");
        let mut hits = 0;
        for key in &written {
            let url = format!("s3://{bucket}/{key}");
            if url.starts_with(&t.location) {
                let values = ddl::match_key(&t, &url).unwrap();
                assert!(
                    values.iter().all(|(c, v)| ddl::projected(&t, c, v)),
                    "{url}"
                );
                hits += 1;
            }
        }
        assert_eq!(hits, 2, "{}", t.name);
    }

    // The same trigger cut into continuations (files spanning invocations) writes the same
    // Parquet bytes.
    let cut = uniq("pqcut");
    let mut v = vars(&cut);
    // ~1 s of work per invocation, 19 s to finish the page in flight and the final files
    // (a loaded CI machine needs more than a few seconds for those).
    v.push(("CHECKPOINT_MARGIN_SECONDS".into(), "19".into()));
    v.push(("TYPE_CONCURRENCY".into(), "1".into()));
    let v: Vec<(&str, &str)> = v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (sb, _) = sandbox(&env, &v).await;
    let invocations = run_to_completion(&sb, event, Some(Duration::from_secs(20))).await;
    assert!(invocations > 1, "the run was not cut");
    let size = |ext: &str| -> usize {
        objs.iter()
            .filter(|(k, _)| k.starts_with("snapshots") && k.ends_with(ext))
            .map(|(_, v)| v.len())
            .sum()
    };
    eprintln!(
        "snapshots: json {} bytes, parquet {} bytes; cut run took {invocations} invocations",
        size(".json"),
        size(".parquet")
    );
    let cut_objs = objects(&env, &bucket, &cut).await;
    let parquet = |o: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        o.iter()
            .filter(|(k, _)| k.ends_with(".parquet"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (a, b) = (parquet(&objs), parquet(&cut_objs));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, va) in &a {
        assert!(*va == b[k], "{k} differs after {invocations} invocations");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_only_by_default_writes_no_parquet() {
    let env = TestEnv::new().await.unwrap();
    env.control
        .seed_fleet(json!({"tenant": env.tenant, "count": 10, "seed": 3}))
        .await
        .unwrap();
    let prefix = uniq("jsononly");
    let (sb, bucket) = sandbox(&env, &[("OUTPUT_PREFIX", &prefix)]).await;
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    run_to_completion(&sb, trigger(&uuid::Uuid::new_v4().to_string(), &time), None).await;
    let objs = objects(&env, &bucket, &prefix).await;
    assert!(objs.keys().any(|k| k.starts_with("snapshots/")));
    assert!(!objs.keys().any(|k| k.contains("parquet")));
    assert!(
        manifest_of(&objs)["types"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("parquet").is_none())
    );
}
