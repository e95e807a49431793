//! Adapter: the per-sweep JSON report in S3 (`<prefix>/<date>/<sweep-id>.json`).

use serde::Serialize;

use crate::plan::{Fleet, Plan};
use crate::work::Executed;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    pub sweep_id: &'a str,
    pub event_id: &'a str,
    pub account: &'a str,
    pub region: &'a str,
    pub event_time: String,
    pub dry_run: bool,
    pub calendar: Option<CalendarState>,
    pub nodes_scanned: usize,
    pub nodes_online: usize,
    /// Listed but not Online (stopped, connection lost): skipped, never failures.
    pub nodes_not_online: &'a std::collections::BTreeMap<String, String>,
    pub nodes_exempt: usize,
    pub findings: usize,
    pub plan: &'a Plan,
    pub executed: &'a [Executed],
    /// Planned keys not acted on because another delivery claimed them first (or another
    /// sweep's command had reached them).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub skipped_at_claim: &'a [crate::plan::Skip],
    /// Work left for a continuation invocation (the sweep ran short of time).
    pub checkpointed_steps: usize,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CalendarState {
    pub name: String,
    pub open: bool,
    pub next_transition: Option<String>,
}

impl Report<'_> {
    pub fn scanned(fleet: &Fleet) -> usize {
        fleet.online.len() + fleet.not_online.len()
    }
}

pub fn key(prefix: &str, date: &str, sweep_id: &str, part: Option<&str>) -> String {
    match part {
        None => format!("{prefix}/{date}/{sweep_id}.json"),
        Some(p) => format!("{prefix}/{date}/{sweep_id}.{p}.json"),
    }
}

pub async fn write(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), crate::error::RemediatorError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .map_err(|e| {
            crate::error::RemediatorError::Aws(autopilot_shared::error::AwsCallError::from_sdk(
                "PutObject",
                e,
            ))
        })?;
    Ok(())
}
