//! Object keys and row bytes. Pure and deterministic: a retried or resumed run writes the same
//! keys with the same bytes.
//!
//! ```text
//! <prefix>/<TypeName>/accountid=<a>/region=<r>/resourcetype=ManagedInstanceInventory/<node>.json   (Resource Data Sync)
//! <prefix>/snapshots/<TypeName>/dt=<yyyy-mm-dd>/run=<run-id>/accountid=<a>/region=<r>/part-00000.json
//! <prefix>/snapshots-parquet/<TypeName>/dt=<yyyy-mm-dd>/run=<run-id>/accountid=<a>/region=<r>/part-00000.parquet   (OUTPUT_FORMATS=json,parquet)
//! <prefix>/diffs/dt=<yyyy-mm-dd>/run=<run-id>/diff.json
//! <prefix>/manifests/dt=<yyyy-mm-dd>/run=<run-id>/manifest.json                                  (written last)
//! ```

use std::collections::{BTreeMap, HashMap};

/// The `resourcetype=` partition value Resource Data Sync uses for managed nodes.
pub const RESOURCE_TYPE: &str = "ManagedInstanceInventory";

/// Where one run writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub prefix: String,
    pub account_id: String,
    pub region: String,
    pub dt: String,
    pub run_id: String,
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}/{rest}")
    }
}

impl Scope {
    /// Resource Data Sync key of one node's rows of one type.
    pub fn rds_key(&self, type_name: &str, node: &str) -> String {
        join(
            &self.prefix,
            &format!(
                "{type_name}/accountid={}/region={}/resourcetype={RESOURCE_TYPE}/{node}.json",
                self.account_id, self.region
            ),
        )
    }

    pub fn snapshot_part_key(&self, type_name: &str, part: u32) -> String {
        join(
            &self.prefix,
            &format!(
                "snapshots/{type_name}/dt={}/run={}/accountid={}/region={}/part-{part:05}.json",
                self.dt, self.run_id, self.account_id, self.region
            ),
        )
    }

    /// Parquet snapshot file `file` of a type. A root of its own: the JSON snapshot tables read
    /// their locations recursively and would trip over Parquet files.
    pub fn snapshot_parquet_key(&self, type_name: &str, file: u32) -> String {
        join(
            &self.prefix,
            &format!(
                "snapshots-parquet/{type_name}/dt={}/run={}/accountid={}/region={}/part-{file:05}.parquet",
                self.dt, self.run_id, self.account_id, self.region
            ),
        )
    }

    pub fn diff_key(&self) -> String {
        join(
            &self.prefix,
            &format!("diffs/dt={}/run={}/diff.json", self.dt, self.run_id),
        )
    }

    pub fn manifest_key(&self) -> String {
        join(&self.prefix, &manifest_suffix(&self.dt, &self.run_id))
    }

    /// Prefix under which every manifest of this destination lives.
    pub fn manifests_prefix(&self) -> String {
        join(&self.prefix, "manifests/")
    }
}

pub fn manifest_suffix(dt: &str, run_id: &str) -> String {
    format!("manifests/dt={dt}/run={run_id}/manifest.json")
}

/// One Resource Data Sync row: the entry's attributes plus `resourceId`, `captureTime` and
/// `schemaVersion`, keys sorted, compact JSON (JsonSerDe matches columns case-insensitively,
/// so AWS's DDL columns `resourceid`, `capturetime`, `schemaversion` read these).
pub fn rds_row(
    entry: &HashMap<String, String>,
    node: &str,
    capture_time: &str,
    schema_version: &str,
) -> String {
    let mut row: BTreeMap<&str, &str> = entry
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    row.insert("resourceId", node);
    row.insert("captureTime", capture_time);
    row.insert("schemaVersion", schema_version);
    serde_json::to_string(&row).unwrap_or_default()
}

/// A snapshot row: the Resource Data Sync row plus the run and the node's account and region
/// (the snapshot table is partitioned by `dt` only, so these are columns).
pub fn snapshot_row(
    entry: &HashMap<String, String>,
    node: &str,
    capture_time: &str,
    schema_version: &str,
    scope: &Scope,
) -> String {
    let mut row: BTreeMap<&str, &str> = entry
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    row.insert("resourceId", node);
    row.insert("captureTime", capture_time);
    row.insert("schemaVersion", schema_version);
    row.insert("accountId", &scope.account_id);
    row.insert("region", &scope.region);
    row.insert("runId", &scope.run_id);
    serde_json::to_string(&row).unwrap_or_default()
}

/// Newline-delimited rows; every row ends with a newline (an empty file for zero rows).
pub fn ndjson<I: IntoIterator<Item = String>>(rows: I) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        out.extend_from_slice(r.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(prefix: &str) -> Scope {
        Scope {
            prefix: prefix.into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            dt: "2026-03-14".into(),
            run_id: "20260314T010000Z-abcd1234".into(),
        }
    }

    #[test]
    fn keys_follow_resource_data_sync_and_snapshot_layouts() {
        let s = scope("inv");
        assert_eq!(
            s.rds_key("AWS:Application", "i-0abc"),
            "inv/AWS:Application/accountid=123456789012/region=us-east-1/resourcetype=ManagedInstanceInventory/i-0abc.json"
        );
        assert_eq!(
            s.snapshot_part_key("AWS:Tag", 7),
            "inv/snapshots/AWS:Tag/dt=2026-03-14/run=20260314T010000Z-abcd1234/accountid=123456789012/region=us-east-1/part-00007.json"
        );
        assert_eq!(
            s.snapshot_parquet_key("AWS:Tag", 2),
            "inv/snapshots-parquet/AWS:Tag/dt=2026-03-14/run=20260314T010000Z-abcd1234/accountid=123456789012/region=us-east-1/part-00002.parquet"
        );
        assert_eq!(
            s.manifest_key(),
            "inv/manifests/dt=2026-03-14/run=20260314T010000Z-abcd1234/manifest.json"
        );
        assert_eq!(
            scope("").diff_key(),
            "diffs/dt=2026-03-14/run=20260314T010000Z-abcd1234/diff.json"
        );
    }

    #[test]
    fn rows_are_sorted_compact_and_stable() {
        let entry: HashMap<String, String> = [("Version", "1.0"), ("Name", "curl")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let r = rds_row(&entry, "i-1", "2026-03-14T00:00:00Z", "1.1");
        assert_eq!(
            r,
            r#"{"Name":"curl","Version":"1.0","captureTime":"2026-03-14T00:00:00Z","resourceId":"i-1","schemaVersion":"1.1"}"#
        );
        assert_eq!(ndjson(vec![r.clone(), r.clone()]).len(), 2 * r.len() + 2);
        assert!(ndjson(Vec::<String>::new()).is_empty());
    }
}
