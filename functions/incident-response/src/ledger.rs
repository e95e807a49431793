//! Adapter: the ledger table (DynamoDB) — the incident record and its timeline, and the
//! indexes that make every step retry-safe.
//!
//! Items (partition key `pk`):
//! - `incident#<id>`: plan, resource_key, title, impact, status (open/resolved), planned
//!   runbook count, succeeded (string set of execution ids), backend_ref, timeline (list of
//!   JSON entries) and entry_ids (string set, so a retried step never appends twice);
//! - `incident-open#<plan>#<resource_key>`: the incident of (plan, resource) — at most one open;
//! - `incident-resource#<resource_key>`: open incident ids of a resource (string set);
//! - `execution#<automation execution id>`: the incident and runbook it belongs to, its
//!   recorded terminal status (with the impact an escalation raised the incident to), and
//!   `handled` once the follow-up to that status completed.

use std::collections::BTreeSet;

use autopilot_shared::dynamo::{Item, get_consistent, is_condition_failed, n, s};
use autopilot_shared::error::AwsCallError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::decide::{ExecutionRecord, IncidentRecord, IncidentState, OpenIncident};

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Deterministic (event id + step), so a retried step is recognised.
    pub id: String,
    pub at: String,
    pub kind: String,
    pub text: String,
}

/// The incident item, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRow {
    pub record: IncidentRecord,
    pub plan: String,
    pub resource_key: String,
    pub title: String,
    pub topic: Option<String>,
    pub backend_ref: Option<String>,
    pub timeline: Vec<Entry>,
}

pub struct Ledger {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
}

fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &Item, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn open_key(plan: &str, resource_key: &str) -> String {
    format!("incident-open#{plan}#{resource_key}")
}

impl Ledger {
    pub fn new(ddb: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            ddb,
            table: table.into(),
        }
    }

    async fn get(&self, pk: &str) -> Result<Option<Item>, AwsCallError> {
        get_consistent(&self.ddb, &self.table, pk).await
    }

    pub async fn get_open(
        &self,
        plan: &str,
        resource_key: &str,
    ) -> Result<Option<IncidentState>, AwsCallError> {
        Ok(self
            .get(&open_key(plan, resource_key))
            .await?
            .and_then(|i| {
                Some(IncidentState {
                    incident_id: get_s(&i, "incident_id")?,
                    open: get_s(&i, "status").as_deref() == Some("open"),
                    resolved_at: get_s(&i, "resolved_at")
                        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                })
            }))
    }

    /// Makes `incident_id` the open incident of (plan, resource). `Some(other)` when another
    /// incident holds it (a concurrent event won): the caller joins that one.
    pub async fn claim_open(
        &self,
        plan: &str,
        resource_key: &str,
        incident_id: &str,
    ) -> Result<Option<String>, AwsCallError> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&open_key(plan, resource_key)))
            .item("incident_id", s(incident_id))
            .item("status", s("open"))
            .condition_expression("attribute_not_exists(pk) OR incident_id = :id OR #st <> :open")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":id", s(incident_id))
            .expression_attribute_values(":open", s("open"))
            .send()
            .await;
        match res {
            Ok(_) => Ok(None),
            Err(e) if is_condition_failed(&e) => Ok(self
                .get_open(plan, resource_key)
                .await?
                .map(|st| st.incident_id)),
            Err(e) => Err(AwsCallError::from_sdk("PutItem", e)),
        }
    }

    /// Creates the incident item once; a retry leaves the existing one as it is.
    pub async fn create_incident(&self, o: &OpenIncident, now: &str) -> Result<(), AwsCallError> {
        let mut put = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&format!("incident#{}", o.incident_id)))
            .item("plan", s(&o.plan))
            .item("resource_key", s(&o.resource_key))
            .item("title", s(&o.title))
            .item("impact", n(o.impact))
            .item("status", s("open"))
            .item("planned", n(o.runbooks.len()))
            .item("opened_at", s(now))
            .condition_expression("attribute_not_exists(pk)");
        if let Some(t) = &o.topic {
            put = put.item("topic", s(t));
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(AwsCallError::from_sdk("PutItem", e)),
        }
    }

    pub async fn incident(&self, id: &str) -> Result<Option<IncidentRow>, AwsCallError> {
        Ok(self.get(&format!("incident#{id}")).await?.map(|i| {
            let timeline = i
                .get("timeline")
                .and_then(|v| v.as_l().ok())
                .map(|l| {
                    l.iter()
                        .filter_map(|v| v.as_s().ok())
                        .filter_map(|t| serde_json::from_str(t).ok())
                        .collect()
                })
                .unwrap_or_default();
            let succeeded: BTreeSet<String> = i
                .get("succeeded")
                .and_then(|v| v.as_ss().ok())
                .map(|v| v.iter().cloned().collect())
                .unwrap_or_default();
            IncidentRow {
                record: IncidentRecord {
                    incident_id: id.to_owned(),
                    open: get_s(&i, "status").as_deref() == Some("open"),
                    impact: get_n(&i, "impact")
                        .and_then(|v| u8::try_from(v).ok())
                        .unwrap_or(3),
                    planned: get_n(&i, "planned")
                        .and_then(|v| usize::try_from(v).ok())
                        .unwrap_or(0),
                    succeeded,
                },
                plan: get_s(&i, "plan").unwrap_or_default(),
                resource_key: get_s(&i, "resource_key").unwrap_or_default(),
                title: get_s(&i, "title").unwrap_or_default(),
                topic: get_s(&i, "topic"),
                backend_ref: get_s(&i, "backend_ref"),
                timeline,
            }
        }))
    }

    async fn update(
        &self,
        pk: &str,
        expr: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<(), AwsCallError> {
        let mut req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .update_expression(expr);
        for (k, v) in values {
            req = req.expression_attribute_values(*k, v.clone());
        }
        req.send()
            .await
            .map_err(|e| AwsCallError::from_sdk("UpdateItem", e))?;
        Ok(())
    }

    pub async fn set_backend_ref(&self, id: &str, r: &str) -> Result<(), AwsCallError> {
        self.update(
            &format!("incident#{id}"),
            "SET backend_ref = :r",
            &[(":r", s(r))],
        )
        .await
    }

    pub async fn set_impact(&self, id: &str, impact: u8) -> Result<(), AwsCallError> {
        self.update(
            &format!("incident#{id}"),
            "SET impact = :i",
            &[(":i", n(impact))],
        )
        .await
    }

    pub async fn add_succeeded(&self, id: &str, execution_id: &str) -> Result<(), AwsCallError> {
        self.update(
            &format!("incident#{id}"),
            "ADD succeeded :e",
            &[(":e", AttributeValue::Ss(vec![execution_id.to_owned()]))],
        )
        .await
    }

    pub async fn add_resource_open(
        &self,
        resource_key: &str,
        id: &str,
    ) -> Result<(), AwsCallError> {
        self.update(
            &format!("incident-resource#{resource_key}"),
            "ADD open_incidents :i",
            &[(":i", AttributeValue::Ss(vec![id.to_owned()]))],
        )
        .await
    }

    pub async fn open_for_resource(&self, resource_key: &str) -> Result<Vec<String>, AwsCallError> {
        Ok(self
            .get(&format!("incident-resource#{resource_key}"))
            .await?
            .and_then(|i| {
                i.get("open_incidents")
                    .and_then(|v| v.as_ss().ok())
                    .cloned()
            })
            .unwrap_or_default())
    }

    /// Marks the incident resolved: its item, the (plan, resource) index, the resource index.
    pub async fn resolve(&self, row: &IncidentRow, now: &str) -> Result<(), AwsCallError> {
        let id = &row.record.incident_id;
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&format!("incident#{id}")))
            .update_expression("SET #st = :r, resolved_at = :now")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":r", s("resolved"))
            .expression_attribute_values(":now", s(now))
            .send()
            .await;
        res.map_err(|e| AwsCallError::from_sdk("UpdateItem", e))?;
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&open_key(&row.plan, &row.resource_key)))
            .update_expression("SET #st = :r, resolved_at = :now")
            .condition_expression("incident_id = :id")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":r", s("resolved"))
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":id", s(id))
            .send()
            .await;
        match res {
            Ok(_) => {}
            Err(e) if is_condition_failed(&e) => {}
            Err(e) => return Err(AwsCallError::from_sdk("UpdateItem", e)),
        }
        self.update(
            &format!("incident-resource#{}", row.resource_key),
            "DELETE open_incidents :i",
            &[(":i", AttributeValue::Ss(vec![id.clone()]))],
        )
        .await
    }

    /// Appends entries not yet on the timeline; returns the whole timeline afterwards.
    pub async fn append(&self, id: &str, entries: &[Entry]) -> Result<Vec<Entry>, AwsCallError> {
        let pk = format!("incident#{id}");
        for e in entries {
            let json = serde_json::to_string(e).unwrap_or_default();
            let res = self
                .ddb
                .update_item()
                .table_name(&self.table)
                .key("pk", s(&pk))
                .update_expression(
                    "SET timeline = list_append(if_not_exists(timeline, :empty), :e) ADD entry_ids :eid",
                )
                .condition_expression("attribute_not_exists(entry_ids) OR NOT contains(entry_ids, :eids)")
                .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
                .expression_attribute_values(":e", AttributeValue::L(vec![s(&json)]))
                .expression_attribute_values(":eid", AttributeValue::Ss(vec![e.id.clone()]))
                .expression_attribute_values(":eids", s(&e.id))
                .send()
                .await;
            match res {
                Ok(_) => {}
                Err(err) if is_condition_failed(&err) => {}
                Err(err) => return Err(AwsCallError::from_sdk("UpdateItem", err)),
            }
        }
        Ok(self
            .incident(id)
            .await?
            .map(|r| r.timeline)
            .unwrap_or_default())
    }

    pub async fn record_execution(
        &self,
        execution_id: &str,
        incident_id: &str,
        document: &str,
    ) -> Result<(), AwsCallError> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&format!("execution#{execution_id}")))
            .item("incident_id", s(incident_id))
            .item("document", s(document))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(AwsCallError::from_sdk("PutItem", e)),
        }
    }

    pub async fn execution(
        &self,
        execution_id: &str,
    ) -> Result<Option<ExecutionRecord>, AwsCallError> {
        Ok(self
            .get(&format!("execution#{execution_id}"))
            .await?
            .and_then(|i| {
                Some(ExecutionRecord {
                    execution_id: execution_id.to_owned(),
                    incident_id: get_s(&i, "incident_id")?,
                    document: get_s(&i, "document").unwrap_or_default(),
                    status: get_s(&i, "status"),
                    handled: i
                        .get("handled")
                        .and_then(|v| v.as_bool().ok())
                        .copied()
                        .unwrap_or(false),
                    escalated_to: get_n(&i, "escalated_to").and_then(|v| u8::try_from(v).ok()),
                })
            }))
    }

    /// Records the terminal status once, with the impact an escalation raises the incident
    /// to; `false` when one was already recorded.
    pub async fn set_execution_status(
        &self,
        execution_id: &str,
        status: &str,
        escalated_to: Option<u8>,
    ) -> Result<bool, AwsCallError> {
        let mut req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&format!("execution#{execution_id}")))
            .update_expression(if escalated_to.is_some() {
                "SET #st = :s, escalated_to = :i"
            } else {
                "SET #st = :s"
            })
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(#st)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":s", s(status));
        if let Some(i) = escalated_to {
            req = req.expression_attribute_values(":i", n(i));
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(AwsCallError::from_sdk("UpdateItem", e)),
        }
    }

    /// Marks the follow-up of the recorded status complete: later deliveries of it are ignored.
    pub async fn set_execution_handled(&self, execution_id: &str) -> Result<(), AwsCallError> {
        self.update(
            &format!("execution#{execution_id}"),
            "SET handled = :t",
            &[(":t", AttributeValue::Bool(true))],
        )
        .await
    }
}
