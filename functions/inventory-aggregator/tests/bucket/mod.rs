//! What the reliability tests compare: a fleet seeded identically on every tenant, and the
//! objects a run left under an output prefix.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use autopilot_harness::TestEnv;
use serde_json::{Value, json};

/// The same fleet of `nodes` on every tenant: a fixed seed and a fixed creation time (capture
/// times derive from it), 2026-03-13T12:00:00Z, so the samples' runs see fresh and stale nodes.
pub async fn seed_fleet(env: &TestEnv, nodes: u64) {
    env.control
        .seed_fleet(
            json!({"tenant": env.tenant, "count": nodes, "seed": 5, "now": 1_773_403_200,
            "windows_fraction": 0.3, "offline_fraction": 0.2}),
        )
        .await
        .unwrap();
}

pub fn uniq(p: &str) -> String {
    format!("{p}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Every object under `prefix/`, keyed relative to it: a manifest's bytes, every other
/// object's ETag (moto's, as S3's for a single PutObject, is the MD5 of the bytes stored), so
/// that comparing hundreds of objects costs one listing instead of a GET each.
pub async fn objects(env: &TestEnv, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let s3 = autopilot_shared::clients::s3(&env.sdk().await);
    let mut out = BTreeMap::new();
    let mut manifests = Vec::new();
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
            let key = o.key().unwrap();
            let rel = key[prefix.len() + 1..].to_owned();
            if rel.ends_with("/manifest.json") {
                manifests.push((key.to_owned(), rel));
            } else {
                let etag = o.e_tag().unwrap_or_default().trim_matches('"');
                assert!(!etag.is_empty(), "{key} has no ETag to compare");
                out.insert(rel, format!("md5:{etag}").into_bytes());
            }
        }
        token = resp.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    for (key, rel) in manifests {
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec();
        out.insert(rel, body);
    }
    out
}

/// A manifest without what differs between two deliveries of one run by design: wall-clock
/// `timing`, and the destination (the output prefix, also the start of the diff's key).
fn comparable_manifest(bytes: &[u8]) -> Value {
    let mut m: Value = serde_json::from_slice(bytes).unwrap();
    let o = m.as_object_mut().unwrap();
    o.remove("timing");
    o.remove("destination");
    if let Some(key) = m["diff"]["key"].as_str() {
        let rel = key.split_once('/').map(|(_, r)| r.to_owned());
        m["diff"]["key"] = json!(rel);
    }
    m
}

/// Where two outputs differ: keys only in one of them, objects whose bytes (manifests: whose
/// comparable content) differ. Empty when they are the same.
pub fn differences(
    got: &BTreeMap<String, Vec<u8>>,
    want: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("extra {k}"));
    }
    for k in want.keys().filter(|k| !got.contains_key(*k)) {
        out.push(format!("missing {k}"));
    }
    for (k, g) in got {
        let Some(w) = want.get(k) else { continue };
        let same = if k.ends_with("/manifest.json") {
            comparable_manifest(g) == comparable_manifest(w)
        } else {
            g == w
        };
        if !same {
            out.push(format!("differs {k}"));
        }
    }
    out
}

pub fn assert_same_output(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>) {
    assert!(!want.is_empty(), "the reference wrote nothing");
    let d = differences(got, want);
    assert!(
        d.is_empty(),
        "{} of {} objects differ from the reference:\n  {}",
        d.len(),
        want.len(),
        d.iter().take(20).cloned().collect::<Vec<_>>().join("\n  ")
    );
}
