//! Adapter: the ledger table (DynamoDB) — per-item occurrence counts and affected
//! resources, updated atomically, and the dedup → open item index.
//!
//! Items: `opsitem#<id>` {occurrences, resources (string set), last_event, dedup} and
//! `dedup#<lower-case dedup>` {ops_item_id, status}. AWS matches dedup strings ignoring case.

use std::collections::HashMap;

use autopilot_shared::dynamo::{get_consistent, s};
use autopilot_shared::error::AwsCallError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

pub struct Ledger {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
}

/// Counts and resources of one item after an update.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub occurrences: i64,
    pub resources: Vec<String>,
}

fn tally(item: &HashMap<String, AttributeValue>) -> Tally {
    let occurrences = item
        .get("occurrences")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut resources: Vec<String> = item
        .get("resources")
        .and_then(|v| v.as_ss().ok())
        .cloned()
        .unwrap_or_default();
    resources.sort();
    Tally {
        occurrences,
        resources,
    }
}

impl Ledger {
    pub fn new(ddb: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            ddb,
            table: table.into(),
        }
    }

    pub async fn record_created(
        &self,
        id: &str,
        dedup: &str,
        resources: &[String],
        event_id: &str,
        now: &str,
    ) -> Result<(), AwsCallError> {
        let mut put = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&format!("opsitem#{id}")))
            .item("occurrences", AttributeValue::N("1".into()))
            .item("last_event", s(event_id))
            .item("dedup", s(dedup))
            .item("first_seen", s(now))
            .item("last_seen", s(now));
        if !resources.is_empty() {
            put = put.item("resources", AttributeValue::Ss(resources.to_vec()));
        }
        put.send()
            .await
            .map_err(|e| AwsCallError::from_sdk("PutItem", e))?;
        self.set_index(dedup, id, "Open").await
    }

    /// Counts one more occurrence of item `id` for `event_id`, at most once per event even
    /// when the same event is retried. `base` seeds the count for items the ledger never saw.
    pub async fn count_repeat(
        &self,
        id: &str,
        dedup: &str,
        base: i64,
        resources: &[String],
        event_id: &str,
        now: &str,
    ) -> Result<Tally, AwsCallError> {
        let mut expr = "SET last_event = :eid, dedup = :dedup, last_seen = :now, occurrences = if_not_exists(occurrences, :base) + :one".to_owned();
        let mut req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&format!("opsitem#{id}")))
            .condition_expression("attribute_not_exists(last_event) OR last_event <> :eid")
            .expression_attribute_values(":eid", s(event_id))
            .expression_attribute_values(":dedup", s(dedup))
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":base", AttributeValue::N(base.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::AllNew);
        if !resources.is_empty() {
            expr.push_str(" ADD resources :res");
            req = req.expression_attribute_values(":res", AttributeValue::Ss(resources.to_vec()));
        }
        match req.update_expression(expr).send().await {
            Ok(out) => Ok(tally(&out.attributes.unwrap_or_default())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                // This event was already counted (a retry after a partial failure).
                let item = get_consistent(&self.ddb, &self.table, &format!("opsitem#{id}")).await?;
                Ok(tally(&item.unwrap_or_default()))
            }
            Err(e) => Err(AwsCallError::from_sdk("UpdateItem", e)),
        }
    }

    pub async fn open_item_for(&self, dedup: &str) -> Result<Option<String>, AwsCallError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&format!("dedup#{}", dedup.to_lowercase())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("GetItem", e))?;
        let item = out.item.unwrap_or_default();
        let open = item
            .get("status")
            .and_then(|v| v.as_s().ok())
            .is_some_and(|st| st == "Open");
        Ok(item
            .get("ops_item_id")
            .and_then(|v| v.as_s().ok())
            .filter(|_| open)
            .cloned())
    }

    pub async fn set_index(&self, dedup: &str, id: &str, status: &str) -> Result<(), AwsCallError> {
        self.ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&format!("dedup#{}", dedup.to_lowercase())))
            .item("ops_item_id", s(id))
            .item("status", s(status))
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("PutItem", e))?;
        Ok(())
    }
}
