//! Routing proof: every file in `events/` reaches exactly the functions it is meant for,
//! evaluated with EventBridge's own pattern matcher (TestEventPattern, served by the
//! emulator) against the event patterns declared in `template.yaml`.
//!
//! A sample is meant for the function whose folder holds it, unless `events/routing.json`
//! lists the exact set of functions it must reach (several, or none when a rule's pattern
//! filters it out on purpose). Scheduled samples are routed by a schedule, not a pattern:
//! they must match no pattern, and their function must have a schedule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use autopilot_harness::{TestEnv, repo_root, template_path};
use serde_norway::Value as Yaml;

fn to_json(v: &Yaml) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

/// function binary → its EventBridge patterns, and whether it has a schedule.
fn triggers() -> BTreeMap<String, (Vec<serde_json::Value>, bool)> {
    let text = std::fs::read_to_string(template_path()).unwrap();
    let raw: Yaml = serde_norway::from_str(&text).unwrap();
    let resources = raw["Resources"].as_mapping().unwrap();
    let mut out = BTreeMap::new();
    for (logical, res) in resources {
        if res["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let bin = res["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut patterns = Vec::new();
        let mut scheduled = false;
        for (_, e) in res["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
        {
            match e["Type"].as_str() {
                Some("EventBridgeRule" | "CloudWatchEvent") => {
                    patterns.push(to_json(&e["Properties"]["Pattern"]))
                }
                Some("Schedule" | "ScheduleV2") => scheduled = true,
                _ => {}
            }
        }
        // A standalone EventBridge Scheduler schedule targeting this function.
        let logical = logical.as_str().unwrap();
        scheduled |= resources.values().any(|r| {
            r["Type"].as_str() == Some("AWS::Scheduler::Schedule")
                && format!("{:?}", r["Properties"]["Target"]).contains(logical)
        });
        out.insert(bin, (patterns, scheduled));
    }
    out
}

fn samples() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(repo_root().join("events")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "json") {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo_root())
        .unwrap_or(p)
        .to_string_lossy()
        .replace("/./", "/")
        .trim_start_matches("./")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sample_reaches_exactly_its_functions() {
    let env = TestEnv::new().await.unwrap();
    let events = aws_sdk_eventbridge::Client::new(&env.sdk().await);
    let triggers = triggers();
    let extra: BTreeMap<String, Vec<String>> =
        std::fs::read(repo_root().join("events/routing.json"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_default();
    let all = samples();
    assert!(all.len() >= 30, "{}", all.len());
    let mut checked = 0;
    let mut wrong = Vec::new();
    for path in &all {
        let name = rel(path);
        let folder = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !triggers.contains_key(&folder) {
            // Samples for a function that is not in the template yet are not routable.
            continue;
        }
        let raw = std::fs::read_to_string(path).unwrap();
        let ev: serde_json::Value = serde_json::from_str(&raw).unwrap();
        let want: BTreeSet<String> = match extra.get(&name) {
            Some(exact) => exact.iter().cloned().collect(),
            None => BTreeSet::from([folder.clone()]),
        };
        let mut got = BTreeSet::new();
        for (bin, (patterns, _)) in &triggers {
            for p in patterns {
                let out = events
                    .test_event_pattern()
                    .event_pattern(p.to_string())
                    .event(&raw)
                    .send()
                    .await
                    .unwrap();
                if out.result {
                    got.insert(bin.clone());
                }
            }
        }
        if ev["detail-type"] == "Scheduled Event" {
            if !got.is_empty() || !triggers[&folder].1 {
                wrong.push(format!(
                    "{name}: scheduled; rule patterns matched {got:?}; {folder} has a schedule: {}",
                    triggers[&folder].1
                ));
            }
        } else if got != want {
            wrong.push(format!("{name}: reaches {got:?}, meant for {want:?}"));
        }
        checked += 1;
    }
    assert!(
        wrong.is_empty(),
        "routing mismatches:\n{}",
        wrong.join("\n")
    );
    assert!(checked >= 16, "checked {checked}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_matcher_is_real() {
    // Guards the proof itself: a pattern that cannot match must not match.
    let env = TestEnv::new().await.unwrap();
    let events = aws_sdk_eventbridge::Client::new(&env.sdk().await);
    let raw = std::fs::read_to_string(
        repo_root().join("events/opsitem-creator/guardduty-finding-high.json"),
    )
    .unwrap();
    let yes = serde_json::json!({"source": ["aws.guardduty"], "detail": {"severity": [{"numeric": [">=", 7]}]}});
    let no = serde_json::json!({"source": ["aws.guardduty"], "detail": {"severity": [{"numeric": [">=", 9]}]}});
    let hit = events
        .test_event_pattern()
        .event_pattern(yes.to_string())
        .event(&raw)
        .send()
        .await
        .unwrap();
    let miss = events
        .test_event_pattern()
        .event_pattern(no.to_string())
        .event(&raw)
        .send()
        .await
        .unwrap();
    assert!(hit.result && !miss.result);
}
