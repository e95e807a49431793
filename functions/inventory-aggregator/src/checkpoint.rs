//! Run checkpoints in the ledger table (`pk` = `inventory-run#<destination>#<run-id>`): the
//! types chosen at the start, each type's cursor (last completed GetInventory NextToken, parts
//! written, counts), a lease held by the invocation working on the run, and completion.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use autopilot_shared::dynamo::{get_consistent, n, s};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::error::{InventoryError, aws};
use crate::plan::{RunSpec, TypeCursor};

pub const STATUS_COLLECTING: &str = "collecting";
pub const STATUS_COMPLETE: &str = "complete";

/// The run's state as read when an invocation takes it over.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub status: String,
    /// (type name, schema version) fixed at the run's start, so every continuation processes
    /// the same types.
    pub types: Vec<(String, String)>,
    pub cursors: BTreeMap<String, TypeCursor>,
    pub started_at_ms: i64,
    pub invocations: u64,
    pub result: Option<String>,
}

pub struct Checkpoints {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Checkpoints {
    pub fn new(ddb: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { ddb, table }
    }

    pub fn key(destination: &str, run_id: &str) -> String {
        format!("inventory-run#{destination}#{run_id}")
    }

    /// Creates the run (first invocation) or takes it over (continuation, retry after a crash
    /// once the previous holder's deadline has passed). `RunBusy` while another invocation holds it.
    pub async fn claim(
        &self,
        pk: &str,
        spec: &RunSpec,
        types: impl AsyncFnOnce() -> Result<Vec<(String, String)>, InventoryError>,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<RunState, InventoryError> {
        let existing = get_consistent(&self.ddb, &self.table, pk).await?;
        if existing.is_none() {
            let types = types().await?;
            let types_json = serde_json::to_string(&types).unwrap_or_default();
            let spec_json = serde_json::to_string(spec).unwrap_or_default();
            let created = self
                .ddb
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pk))
                .item("kind", s("inventory-run"))
                .item("spec", s(&spec_json))
                .item("types", s(&types_json))
                .item("cursors", AttributeValue::M(Default::default()))
                .item("status", s(STATUS_COLLECTING))
                .item("startedAt", n(now_ms()))
                .item("invocations", n(0))
                .item("leaseUntil", n(0))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            if let Err(e) = created {
                let lost_race = e
                    .as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception());
                if !lost_race {
                    return Err(aws("PutItem", e));
                }
            }
        }
        let now = now_ms();
        let claimed = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .update_expression("SET leaseUntil = :l, #o = :o ADD invocations :one")
            .condition_expression("attribute_exists(pk) AND (leaseUntil < :now OR #o = :o)")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":l", n(lease_until_ms))
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let item = match claimed {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                return Err(InventoryError::RunBusy(spec.run_id.clone()));
            }
            Err(e) => return Err(aws("UpdateItem", e)),
        };
        parse_state(&spec.run_id, &item)
    }

    /// Records one type's progress (only this type's entry: types progress concurrently).
    pub async fn save_cursor(
        &self,
        pk: &str,
        type_name: &str,
        cursor: &TypeCursor,
    ) -> Result<(), InventoryError> {
        self.ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .update_expression("SET cursors.#t = :c")
            .expression_attribute_names("#t", type_name)
            .expression_attribute_values(
                ":c",
                s(&serde_json::to_string(cursor).unwrap_or_default()),
            )
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(())
    }

    /// The run's finish time, fixed the first time the run reaches its end so that a retried
    /// finalisation writes the same manifest.
    pub async fn finished_at(&self, pk: &str) -> Result<i64, InventoryError> {
        let out = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .update_expression("SET finishedAt = if_not_exists(finishedAt, :now)")
            .expression_attribute_values(":now", n(now_ms()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(out
            .attributes()
            .and_then(|a| a.get("finishedAt"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(now_ms))
    }

    pub async fn complete(&self, pk: &str, result: &str) -> Result<(), InventoryError> {
        self.ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .update_expression("SET #s = :s, #r = :r, leaseUntil = :zero")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#r", "result")
            .expression_attribute_values(":s", s(STATUS_COMPLETE))
            .expression_attribute_values(":r", s(result))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(())
    }

    /// Lets the continuation take the run over at once.
    pub async fn release(&self, pk: &str) -> Result<(), InventoryError> {
        self.ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .update_expression("SET leaseUntil = :zero")
            .expression_attribute_values(":zero", n(0))
            .send()
            .await
            .map_err(|e| aws("UpdateItem", e))?;
        Ok(())
    }
}

fn parse_state(
    run: &str,
    item: &std::collections::HashMap<String, AttributeValue>,
) -> Result<RunState, InventoryError> {
    let bad = |reason: String| InventoryError::CorruptCheckpoint {
        run: run.to_owned(),
        reason,
    };
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let types: Vec<(String, String)> = serde_json::from_str(&text("types").unwrap_or_default())
        .map_err(|e| bad(format!("types: {e}")))?;
    let mut cursors = BTreeMap::new();
    if let Some(AttributeValue::M(m)) = item.get("cursors") {
        for (t, v) in m {
            let json = v
                .as_s()
                .map_err(|_| bad(format!("cursor {t} is not a string")))?;
            let c: TypeCursor =
                serde_json::from_str(json).map_err(|e| bad(format!("cursor {t}: {e}")))?;
            cursors.insert(t.clone(), c);
        }
    }
    Ok(RunState {
        status: text("status").unwrap_or_else(|| STATUS_COLLECTING.into()),
        types,
        cursors,
        started_at_ms: num("startedAt"),
        invocations: num("invocations").max(0) as u64,
        result: text("result"),
    })
}
