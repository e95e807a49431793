//! Every sample in `events/` and every fixture in `tests/fixtures/` goes through the classifier.

// Test-only crate: panicking on unexpected results is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use autopilot_shared::events::{EventError, classify};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.extension().is_some_and(|e| e == "json" || e == "txt") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The kind a sample's file name promises.
fn expected_kind(name: &str) -> &'static str {
    let table: [(&str, &str); 13] = [
        ("alarm-", "alarm"),
        ("ec2-spot", "spot-interruption"),
        ("ec2-", "ec2-state-change"),
        ("guardduty-", "guardduty"),
        ("securityhub-", "securityhub"),
        ("ssm-compliance-", "ssm-compliance"),
        ("automation-", "automation-status"),
        ("health-", "health"),
        ("scheduled-", "scheduled"),
        ("scheduler-", "scheduled"),
        ("config-rule-", "config-compliance"),
        ("command-invocation-", "command-status"),
        ("on-demand", "request"),
    ];
    table
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, k)| *k)
        .unwrap_or("?")
}

#[test]
fn every_sample_event_classifies_as_its_name_says() {
    // Samples live in events/<function>/; files at the top of events/ are manifests.
    let root = repo().join("events");
    let samples: Vec<PathBuf> = files(&root)
        .into_iter()
        .filter(|p| p.parent() != Some(root.as_path()))
        .collect();
    assert!(
        samples.len() >= 30,
        "expected the full sample set, found {}",
        samples.len()
    );
    for path in samples {
        let raw = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let ev = classify(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(ev.kind(), expected_kind(name), "{}", path.display());
        assert!(ev.id().is_some(), "{} has no id", path.display());
    }
}

#[test]
fn quirk_fixtures_parse_and_look_alikes_are_unsupported() {
    let look_alikes = [
        "automation-step-status-change",
        "command-status-change-not-invocation",
        "state-manager-",
    ];
    for path in files(&repo().join("tests/fixtures/events")) {
        let raw = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let got = classify(&raw);
        if look_alikes.iter().any(|p| name.starts_with(p)) {
            assert!(
                matches!(got, Err(EventError::Unsupported { .. })),
                "{name}: {got:?}"
            );
        } else {
            let ev = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(ev.kind(), expected_kind(name), "{name}");
        }
    }
}

#[test]
fn every_hostile_input_is_rejected_with_a_typed_error() {
    let corpus = files(&repo().join("tests/fixtures/malformed"));
    assert!(corpus.len() >= 15);
    for path in corpus {
        let raw = std::fs::read(&path).unwrap();
        let err = classify(&raw).expect_err(&path.display().to_string());
        assert!(!err.error_type().is_empty());
        // Error text is bounded: hostile input must not be echoed at length into logs.
        assert!(
            err.to_string().chars().count() < 300,
            "{}: {}",
            path.display(),
            err
        );
        assert!(
            !err.to_string().chars().any(char::is_control),
            "{}: control characters in {err:?}",
            path.display()
        );
    }
}
