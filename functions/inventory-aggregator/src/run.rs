//! One invocation's share of a run: collect every type page by page (checkpointing after each
//! page) until done or the deadline nears; then finalise: nodes and freshness, the diff, the
//! manifest (last).

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::checkpoint::{RunState, now_ms};
use crate::collect::Inventory;
use crate::error::InventoryError;
use crate::handler::Deps;
use crate::layout::{Scope, ndjson, rds_row, snapshot_row};
use crate::plan::{
    Apps, DiffSummary, Freshness, MANIFEST_FORMAT, Manifest, NodeDiff, RunSpec, Timing, TypeCursor,
    TypeSummary, diff_node, is_stale,
};

/// One node of a page: id, capture time, schema version, and its entries.
type NodeRows = (
    String,
    String,
    String,
    Vec<std::collections::HashMap<String, String>>,
);

pub const APPLICATION: &str = "AWS:Application";
pub const INSTANCE_INFORMATION: &str = "AWS:InstanceInformation";

pub fn scope_of(prefix: &str, spec: &RunSpec) -> Scope {
    Scope {
        prefix: prefix.to_owned(),
        account_id: spec.account_id.clone(),
        region: spec.region.clone(),
        dt: spec.dt.clone(),
        run_id: spec.run_id.clone(),
    }
}

/// Collects until every type is done (`true`) or `stop_at_ms` is reached (`false`).
pub async fn collect(
    deps: &Deps,
    inventory: &Inventory,
    scope: &Scope,
    pk: &str,
    state: &mut RunState,
    stop_at_ms: i64,
) -> Result<bool, InventoryError> {
    let sem = Arc::new(Semaphore::new(deps.config.max_concurrency));
    let pending: Vec<(String, TypeCursor)> = state
        .types
        .iter()
        .map(|(t, _)| (t.clone(), state.cursors.get(t).cloned().unwrap_or_default()))
        .filter(|(_, c)| !c.done)
        .collect();
    let results: Vec<(String, TypeCursor)> = stream::iter(pending)
        .map(|(t, c)| collect_type(deps, inventory, scope, pk, t, c, stop_at_ms, sem.clone()))
        .buffer_unordered(deps.config.type_concurrency)
        .try_collect()
        .await?;
    for (t, c) in results {
        state.cursors.insert(t, c);
    }
    Ok(state
        .types
        .iter()
        .all(|(t, _)| state.cursors.get(t).is_some_and(|c| c.done)))
}

#[allow(clippy::too_many_arguments)]
async fn collect_type(
    deps: &Deps,
    inventory: &Inventory,
    scope: &Scope,
    pk: &str,
    type_name: String,
    mut cursor: TypeCursor,
    stop_at_ms: i64,
    sem: Arc<Semaphore>,
) -> Result<(String, TypeCursor), InventoryError> {
    let inline = !deps.config.entries_types.iter().any(|t| t == &type_name);
    // The next page is read while this page's objects are written: a type's pages follow one
    // token chain, so without the overlap every page would wait for the previous page's writes.
    let mut prefetched: Option<crate::collect::Page> = None;
    while !cursor.done {
        if now_ms() >= stop_at_ms {
            break;
        }
        let page = match prefetched.take() {
            Some(p) => p,
            None => {
                inventory
                    .page(&type_name, cursor.next_token.clone(), inline)
                    .await?
            }
        };
        let prefetch = async {
            match &page.next_token {
                // Near the stop the page would be read again by the continuation: skip it.
                Some(t) if now_ms() < stop_at_ms => inventory
                    .page(&type_name, Some(t.clone()), inline)
                    .await
                    .map(Some),
                _ => Ok(None),
            }
        };
        // `buffered` keeps page order, so the snapshot part's bytes are deterministic.
        let writes = stream::iter(page.items)
            .map(|item| {
                let sem = sem.clone();
                let type_name = &type_name;
                async move {
                    let _permit = sem.acquire_owned().await.ok();
                    let (rows, capture, version) = match item.rows {
                        Some(rows) => (rows, item.capture_time, item.schema_version),
                        None => {
                            let (rows, c, v) = inventory.entries(&item.node, type_name).await?;
                            let capture = if item.capture_time.is_empty() {
                                c.unwrap_or_default()
                            } else {
                                item.capture_time
                            };
                            let version = if item.schema_version.is_empty() {
                                v.unwrap_or_default()
                            } else {
                                item.schema_version
                            };
                            (rows, capture, version)
                        }
                    };
                    let body = ndjson(
                        rows.iter()
                            .map(|r| rds_row(r, &item.node, &capture, &version)),
                    );
                    deps.store
                        .put(&scope.rds_key(type_name, &item.node), body)
                        .await?;
                    Ok::<_, InventoryError>((item.node, capture, version, rows))
                }
            })
            .buffered(deps.config.max_concurrency)
            .try_collect::<Vec<NodeRows>>();
        let (nodes, next) = tokio::try_join!(writes, prefetch)?;
        prefetched = next;
        if !nodes.is_empty() {
            let mut rows = Vec::new();
            for (node, capture, version, entries) in &nodes {
                cursor.nodes += 1;
                cursor.rows += entries.len() as u64;
                if !version.is_empty() {
                    cursor.schema_versions.insert(version.clone());
                }
                rows.extend(
                    entries
                        .iter()
                        .map(|e| snapshot_row(e, node, capture, version, scope)),
                );
                if entries.is_empty() {
                    // A node reporting the type with no entries still appears in the snapshot,
                    // so that node lists and freshness can be read back from it.
                    let empty = std::collections::HashMap::new();
                    rows.push(snapshot_row(&empty, node, capture, version, scope));
                }
            }
            deps.store
                .put(
                    &scope.snapshot_part_key(&type_name, cursor.parts),
                    ndjson(rows),
                )
                .await?;
            cursor.parts += 1;
        }
        cursor.pages += 1;
        cursor.next_token = page.next_token;
        cursor.done = cursor.next_token.is_none();
        if let Some(out) = deps.config.parquet {
            crate::parquet_snapshot::after_page(deps, scope, &type_name, &mut cursor, out).await?;
        }
        deps.checkpoints
            .save_cursor(pk, &type_name, &cursor)
            .await?;
        tracing::debug!(type_name = %type_name, pages = cursor.pages, nodes = cursor.nodes, "page done");
    }
    Ok((type_name, cursor))
}

/// Reads a snapshot part back as (node, row) pairs, in file order.
pub(crate) async fn read_part(
    deps: &Deps,
    key: &str,
) -> Result<Vec<serde_json::Map<String, Value>>, InventoryError> {
    let Some(bytes) = deps.store.get(key).await? else {
        return Err(InventoryError::CorruptObject {
            key: key.to_owned(),
            reason: "missing".into(),
        });
    };
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Map<String, Value> =
            serde_json::from_slice(line).map_err(|e| InventoryError::CorruptObject {
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
        out.push(v);
    }
    Ok(out)
}

fn field<'a>(row: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    row.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Streams one run's AWS:Application snapshot as (node, apps), one part in memory at a time.
struct AppReader<'a> {
    deps: &'a Deps,
    scope: Scope,
    parts: u32,
    next_part: u32,
    buf: VecDeque<(String, Apps)>,
    last: Option<String>,
}

impl<'a> AppReader<'a> {
    fn new(deps: &'a Deps, scope: Scope, parts: u32) -> Self {
        Self {
            deps,
            scope,
            parts,
            next_part: 0,
            buf: VecDeque::new(),
            last: None,
        }
    }

    async fn next(&mut self) -> Result<Option<(String, Apps)>, InventoryError> {
        while self.buf.is_empty() && self.next_part < self.parts {
            let key = self.scope.snapshot_part_key(APPLICATION, self.next_part);
            self.next_part += 1;
            for row in read_part(self.deps, &key).await? {
                let node = field(&row, "resourceId").to_owned();
                let entry = match self.buf.back_mut() {
                    Some((n, apps)) if *n == node => apps,
                    _ => {
                        self.buf.push_back((node, Apps::new()));
                        match self.buf.back_mut() {
                            Some((_, apps)) => apps,
                            None => continue,
                        }
                    }
                };
                let name = field(&row, "Name");
                if !name.is_empty() {
                    entry
                        .entry(name.to_owned())
                        .or_default()
                        .insert(field(&row, "Version").to_owned());
                }
            }
        }
        let next = self.buf.pop_front();
        if let Some((node, _)) = &next {
            if self.last.as_ref().is_some_and(|l| l >= node) {
                return Err(InventoryError::Unordered(format!(
                    "{node} after {}",
                    self.last.clone().unwrap_or_default()
                )));
            }
            self.last = Some(node.clone());
        }
        Ok(next)
    }
}

/// Diff of the run's applications against a previous run, by merging both (node-ordered) streams.
async fn diff(
    current: AppReader<'_>,
    previous: Option<AppReader<'_>>,
    summary: &mut DiffSummary,
) -> Result<Vec<String>, InventoryError> {
    let mut rows = Vec::new();
    let Some(mut prev) = previous else {
        return Ok(rows);
    };
    let mut cur = current;
    let (mut a, mut b) = (cur.next().await?, prev.next().await?);
    let mut emit = |d: Option<NodeDiff>| {
        if let Some(d) = d {
            summary.count(&d);
            rows.push(serde_json::to_string(&d).unwrap_or_default());
        }
    };
    loop {
        match (&a, &b) {
            (None, None) => break,
            (Some((na, aa)), Some((nb, ab))) if na == nb => {
                emit(diff_node(na, Some(ab), Some(aa)));
                a = cur.next().await?;
                b = prev.next().await?;
            }
            (Some((na, aa)), Some((nb, _))) if na < nb => {
                emit(diff_node(na, None, Some(aa)));
                a = cur.next().await?;
            }
            (Some((na, aa)), None) => {
                emit(diff_node(na, None, Some(aa)));
                a = cur.next().await?;
            }
            (_, Some((nb, ab))) => {
                emit(diff_node(nb, Some(ab), None));
                b = prev.next().await?;
            }
        }
    }
    Ok(rows)
}

/// Writes the diff and then the manifest; returns the manifest.
pub async fn finalize(
    deps: &Deps,
    scope: &Scope,
    spec: &RunSpec,
    pk: &str,
    state: &RunState,
) -> Result<Manifest, InventoryError> {
    let finished_ms = deps.checkpoints.finished_at(pk).await?;
    let scheduled: DateTime<Utc> = DateTime::parse_from_rfc3339(&spec.scheduled_time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| InventoryError::MissingContext("scheduled time"))?;
    let stale_after = chrono::Duration::seconds(deps.config.stale_after.as_secs() as i64);

    // Nodes and freshness from AWS:InstanceInformation (refreshed at every inventory collection).
    let mut nodes = Vec::new();
    let mut stale = Vec::new();
    let info_parts = state
        .cursors
        .get(INSTANCE_INFORMATION)
        .map_or(0, |c| c.parts);
    for part in 0..info_parts {
        for row in read_part(deps, &scope.snapshot_part_key(INSTANCE_INFORMATION, part)).await? {
            let node = field(&row, "resourceId").to_owned();
            if is_stale(field(&row, "captureTime"), scheduled, stale_after) {
                stale.push(node.clone());
            }
            nodes.push(node);
        }
    }
    nodes.sort();
    nodes.dedup();
    stale.sort();
    stale.dedup();

    // The previous manifested run of this destination and account/region (with targets, the
    // runs of other targets share the manifests folder): manifests sort by run time.
    let own = scope.manifest_key();
    let mut earlier: Vec<String> = deps
        .store
        .list(&scope.manifests_prefix())
        .await?
        .into_iter()
        .filter(|k| k.ends_with("/manifest.json") && k.as_str() < own.as_str())
        .collect();
    earlier.sort();
    let mut previous: Option<Manifest> = None;
    while let Some(k) = earlier.pop() {
        let Some(bytes) = deps.store.get(&k).await? else {
            continue;
        };
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| InventoryError::CorruptObject {
                key: k.clone(),
                reason: e.to_string(),
            })?;
        if m.account_id == scope.account_id && m.region == scope.region {
            previous = Some(m);
            break;
        }
    }
    let mut summary = DiffSummary {
        previous_run_id: previous.as_ref().map(|m| m.run_id.clone()),
        key: scope.diff_key(),
        ..DiffSummary::default()
    };
    let app_parts = |types: &[TypeSummary]| {
        types
            .iter()
            .find(|t| t.type_name == APPLICATION)
            .map_or(0, |t| t.parts)
    };
    let prev_reader = previous.as_ref().map(|m| {
        let prev_scope = Scope {
            prefix: scope.prefix.clone(),
            account_id: m.account_id.clone(),
            region: m.region.clone(),
            dt: m.dt.clone(),
            run_id: m.run_id.clone(),
        };
        AppReader::new(deps, prev_scope, app_parts(&m.types))
    });
    let cur_reader = AppReader::new(
        deps,
        scope.clone(),
        state.cursors.get(APPLICATION).map_or(0, |c| c.parts),
    );
    let diff_rows = diff(cur_reader, prev_reader, &mut summary).await?;
    deps.store.put(&scope.diff_key(), ndjson(diff_rows)).await?;

    let types = state
        .types
        .iter()
        .map(|(t, version)| {
            let c = state.cursors.get(t).cloned().unwrap_or_default();
            TypeSummary {
                type_name: t.clone(),
                schema_version: (!version.is_empty()).then(|| version.clone()),
                schema_versions: c.schema_versions,
                source: if deps.config.entries_types.iter().any(|e| e == t) {
                    "ListInventoryEntries".into()
                } else {
                    "GetInventory".into()
                },
                nodes: c.nodes,
                rows: c.rows,
                parts: c.parts,
                parquet: crate::parquet_snapshot::keys(scope, t, c.parquet_files),
            }
        })
        .collect();
    let to_rfc = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        run_id: spec.run_id.clone(),
        dt: spec.dt.clone(),
        scheduled_time: spec.scheduled_time.clone(),
        trigger_id: spec.trigger_id.clone(),
        reason: spec.reason.clone(),
        account_id: spec.account_id.clone(),
        region: spec.region.clone(),
        destination: deps.config.destination(),
        types,
        node_count: nodes.len() as u64,
        nodes,
        freshness: Freshness {
            threshold_hours: deps.config.stale_after.as_secs() / 3600,
            reference_time: spec.scheduled_time.clone(),
            stale_nodes: stale.len() as u64,
            stale,
        },
        diff: summary,
        timing: Timing {
            started_at: to_rfc(state.started_at_ms),
            finished_at: to_rfc(finished_ms),
            duration_ms: finished_ms - state.started_at_ms,
            invocations: state.invocations,
        },
    };
    // One line: the manifests table reads it with JsonSerDe.
    let body = serde_json::to_vec(&manifest).unwrap_or_default();
    deps.store
        .put(&own, [body, b"\n".to_vec()].concat())
        .await?;
    Ok(manifest)
}
