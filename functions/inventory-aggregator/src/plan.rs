//! Pure decisions: the run's identity, per-type progress, the application diff, freshness and
//! the manifest. No I/O.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Identity of one aggregation run; identical for every delivery and continuation of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    pub run_id: String,
    pub dt: String,
    pub scheduled_time: String,
    pub trigger_id: String,
    pub account_id: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Role assumed to read this account's inventory (`None`: the function's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

impl RunSpec {
    /// Run id = scheduled time (sortable, so manifests list in run order) + a hash of the
    /// triggering event id: a redelivered trigger maps to the same run.
    pub fn new(
        trigger_id: &str,
        scheduled: DateTime<Utc>,
        account_id: &str,
        region: &str,
        reason: Option<String>,
    ) -> Self {
        let digest = hex::encode(Sha256::digest(trigger_id.as_bytes()));
        Self {
            run_id: format!("{}-{}", scheduled.format("%Y%m%dT%H%M%SZ"), &digest[..8]),
            dt: scheduled.format("%Y-%m-%d").to_string(),
            scheduled_time: scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            trigger_id: trigger_id.to_owned(),
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            reason,
            role_arn: None,
        }
    }

    /// The run of one target of a multi-target trigger: its own id (the target is part of
    /// the hash), so each target has its own checkpoint, continuation and manifest.
    pub fn for_target(
        trigger_id: &str,
        scheduled: DateTime<Utc>,
        target: &crate::targets::Target,
        reason: Option<String>,
    ) -> Self {
        let key = format!("{trigger_id}|{}|{}", target.account_id, target.region);
        Self {
            trigger_id: trigger_id.to_owned(),
            role_arn: target.role_arn.clone(),
            ..Self::new(&key, scheduled, &target.account_id, &target.region, reason)
        }
    }
}

/// Progress of one inventory type within a run (persisted in the checkpoint after each page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeCursor {
    /// GetInventory NextToken of the next page; `None` before the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    pub pages: u32,
    /// Snapshot parts written (one per non-empty page).
    pub parts: u32,
    pub nodes: u64,
    pub rows: u64,
    pub schema_versions: BTreeSet<String>,
    pub done: bool,
    /// The type's Parquet columns (from GetInventorySchema), fixed when its first file is
    /// written so that every continuation writes files with the same columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet_columns: Option<Vec<String>>,
    /// Parquet snapshot files written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parquet_files: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One node's applications: name → versions (a package may be installed in several versions).
pub type Apps = BTreeMap<String, BTreeSet<String>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppVersion {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppChange {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// What changed on one node since the previous manifested run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDiff {
    pub resource_id: String,
    /// `new` (absent before), `gone` (absent now) or `changed`.
    pub node: String,
    pub added: Vec<AppVersion>,
    pub removed: Vec<AppVersion>,
    pub upgraded: Vec<AppChange>,
    pub downgraded: Vec<AppChange>,
}

fn joined(v: &BTreeSet<String>) -> String {
    v.iter().cloned().collect::<Vec<_>>().join(",")
}

/// Diff of one node's applications; `None` when nothing changed.
pub fn diff_node(node: &str, before: Option<&Apps>, after: Option<&Apps>) -> Option<NodeDiff> {
    let empty = Apps::new();
    let b = before.unwrap_or(&empty);
    let a = after.unwrap_or(&empty);
    let mut d = NodeDiff {
        resource_id: node.to_owned(),
        node: match (before, after) {
            (None, _) => "new",
            (_, None) => "gone",
            _ => "changed",
        }
        .to_owned(),
        ..NodeDiff::default()
    };
    for (name, versions) in a {
        match b.get(name) {
            None => d.added.extend(versions.iter().map(|v| AppVersion {
                name: name.clone(),
                version: v.clone(),
            })),
            Some(old) if old != versions => {
                let change = AppChange {
                    name: name.clone(),
                    from: joined(old),
                    to: joined(versions),
                };
                if compare_versions(&change.to, &change.from) == Ordering::Less {
                    d.downgraded.push(change);
                } else {
                    d.upgraded.push(change);
                }
            }
            Some(_) => {}
        }
    }
    for (name, versions) in b {
        if !a.contains_key(name) {
            d.removed.extend(versions.iter().map(|v| AppVersion {
                name: name.clone(),
                version: v.clone(),
            }));
        }
    }
    let changed = !(d.added.is_empty()
        && d.removed.is_empty()
        && d.upgraded.is_empty()
        && d.downgraded.is_empty());
    changed.then_some(d)
}

/// Numeric-aware version order: `1.10` > `1.9`, `3.0.8` < `3.0.13`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Totals of a diff, kept in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_run_id: Option<String>,
    pub key: String,
    pub nodes_changed: u64,
    pub nodes_new: u64,
    pub nodes_gone: u64,
    pub added: u64,
    pub removed: u64,
    pub upgraded: u64,
    pub downgraded: u64,
}

impl DiffSummary {
    pub fn count(&mut self, d: &NodeDiff) {
        self.nodes_changed += 1;
        match d.node.as_str() {
            "new" => self.nodes_new += 1,
            "gone" => self.nodes_gone += 1,
            _ => {}
        }
        self.added += d.added.len() as u64;
        self.removed += d.removed.len() as u64;
        self.upgraded += d.upgraded.len() as u64;
        self.downgraded += d.downgraded.len() as u64;
    }
}

/// Whether a node's inventory (its newest capture time) is older than the threshold at the
/// run's scheduled time. Unparseable times count as stale: they cannot be shown to be fresh.
pub fn is_stale(capture_time: &str, at: DateTime<Utc>, stale_after: chrono::Duration) -> bool {
    match DateTime::parse_from_rfc3339(capture_time) {
        Ok(t) => at.signed_duration_since(t.with_timezone(&Utc)) > stale_after,
        Err(_) => true,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeSummary {
    pub type_name: String,
    /// Version GetInventorySchema reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    /// Versions the nodes' data carried.
    pub schema_versions: BTreeSet<String>,
    /// `GetInventory` (rows inline) or `ListInventoryEntries` (per node).
    pub source: String,
    pub nodes: u64,
    pub rows: u64,
    pub parts: u32,
    /// Keys of the type's Parquet snapshot files (`OUTPUT_FORMATS` with `parquet`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parquet: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Freshness {
    pub threshold_hours: u64,
    pub reference_time: String,
    pub stale_nodes: u64,
    pub stale: Vec<String>,
}

/// Wall-clock facts; the only part of a manifest that differs between an interrupted and an
/// uninterrupted run of the same trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: i64,
    pub invocations: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    pub run_id: String,
    pub dt: String,
    pub scheduled_time: String,
    pub trigger_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub account_id: String,
    pub region: String,
    pub destination: String,
    pub types: Vec<TypeSummary>,
    pub node_count: u64,
    pub nodes: Vec<String>,
    pub freshness: Freshness,
    pub diff: DiffSummary,
    pub timing: Timing,
}

pub const MANIFEST_FORMAT: &str = "ssm-autopilot/inventory-manifest/v1";

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(list: &[(&str, &str)]) -> Apps {
        let mut a = Apps::new();
        for (n, v) in list {
            a.entry((*n).to_owned())
                .or_default()
                .insert((*v).to_owned());
        }
        a
    }

    #[test]
    fn run_id_is_stable_and_sortable() {
        let t = DateTime::parse_from_rfc3339("2026-03-14T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = RunSpec::new("ev-1", t, "123456789012", "us-east-1", None);
        let b = RunSpec::new("ev-1", t, "123456789012", "us-east-1", None);
        let c = RunSpec::new("ev-2", t, "123456789012", "us-east-1", None);
        assert_eq!(a, b);
        assert_ne!(a.run_id, c.run_id);
        assert!(a.run_id.starts_with("20260314T010000Z-"));
        assert_eq!(a.dt, "2026-03-14");
        assert_eq!(a.scheduled_time, "2026-03-14T01:00:00Z");
    }

    #[test]
    fn diff_finds_added_removed_upgraded_downgraded() {
        let before = apps(&[
            ("curl", "8.3.0"),
            ("nginx", "1.24.0"),
            ("sudo", "1.9.15"),
            ("glibc", "2.34"),
        ]);
        let after = apps(&[
            ("curl", "8.10.1"),
            ("nginx", "1.24.0"),
            ("glibc", "2.30"),
            ("git", "2.40"),
        ]);
        let d = diff_node("i-1", Some(&before), Some(&after)).unwrap();
        assert_eq!(d.node, "changed");
        assert_eq!(
            d.added,
            vec![AppVersion {
                name: "git".into(),
                version: "2.40".into()
            }]
        );
        assert_eq!(
            d.removed,
            vec![AppVersion {
                name: "sudo".into(),
                version: "1.9.15".into()
            }]
        );
        assert_eq!(
            d.upgraded,
            vec![AppChange {
                name: "curl".into(),
                from: "8.3.0".into(),
                to: "8.10.1".into()
            }]
        );
        assert_eq!(d.downgraded.len(), 1);
        assert!(diff_node("i-1", Some(&before), Some(&before)).is_none());
        assert_eq!(diff_node("i-2", None, Some(&after)).unwrap().node, "new");
        let gone = diff_node("i-3", Some(&before), None).unwrap();
        assert_eq!((gone.node.as_str(), gone.removed.len()), ("gone", 4));
        let mut s = DiffSummary::default();
        s.count(&d);
        s.count(&gone);
        assert_eq!((s.nodes_changed, s.nodes_gone, s.removed), (2, 1, 5));
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("3.0.8", "3.0.13"), Ordering::Less);
        assert_eq!(compare_versions("2.0", "2.0"), Ordering::Equal);
    }

    #[test]
    fn staleness_is_relative_to_the_scheduled_time() {
        let at = DateTime::parse_from_rfc3339("2026-03-14T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let h24 = chrono::Duration::hours(24);
        assert!(!is_stale("2026-03-13T13:00:00Z", at, h24));
        assert!(is_stale("2026-03-13T11:00:00Z", at, h24));
        assert!(is_stale("garbage", at, h24));
    }
}
