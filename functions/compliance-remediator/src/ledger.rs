//! Adapter: the ledger table (DynamoDB, key `pk`).
//!
//! Items (account-scoped, so one table serves many accounts):
//! - `exception#<account>#<node>#<type|*>` {expires_at (epoch seconds), reason} — written by
//!   operators; an exception stops remediation until it expires (checked in code: TTL lags).
//! - `remediation#<account>#<node>#<type>` {attempts, last_attempt_at, status, sweep_id,
//!   command_id} — written BEFORE a command is sent, so a retry after a crash sees the attempt
//!   and the cooldown holds (SendCommand has no idempotency token).
//! - `checkpoint#<sweep-id>` {work} — the rest of a sweep that ran out of time.
//! - `deferral#<sweep-id>` {reason, calendar, deferred, next_transition}.

use std::collections::{BTreeMap, HashMap};

use autopilot_shared::error::AwsCallError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use futures::{StreamExt, TryStreamExt, stream};

use crate::plan::{Attempt, AttemptStatus, Key, LedgerState};
use crate::retry::throttled;

/// BatchGetItem reads at most 100 keys per call.
const BATCH_GET: usize = 100;
/// Remediation records are kept for 90 days after the last attempt.
const RECORD_DAYS: i64 = 90;

pub struct Ledger {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    concurrency: usize,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn num(item: &HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok().or_else(|| v.as_s().ok()))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|f| f as i64)
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub fn exception_pk(account: &str, key: &Key) -> String {
    format!(
        "exception#{account}#{}#{}",
        key.resource_id, key.compliance_type
    )
}

pub fn remediation_pk(account: &str, key: &Key) -> String {
    format!(
        "remediation#{account}#{}#{}",
        key.resource_id, key.compliance_type
    )
}

fn parse_status(v: &str) -> Option<AttemptStatus> {
    serde_json::from_value(serde_json::Value::String(v.to_owned())).ok()
}

pub fn status_str(s: AttemptStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Ledger {
    pub fn new(
        ddb: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        concurrency: usize,
    ) -> Self {
        Self {
            ddb,
            table: table.into(),
            concurrency,
        }
    }

    /// Exceptions for `exception_keys` (plus the node-wide `*` ones) and remediation records
    /// for `attempt_keys`.
    pub async fn load(
        &self,
        account: &str,
        exception_keys: &[Key],
        attempt_keys: &[Key],
    ) -> Result<LedgerState, AwsCallError> {
        let mut wanted: BTreeMap<String, (bool, Key)> = BTreeMap::new();
        for k in exception_keys {
            let star = Key::new(&k.resource_id, "*");
            wanted.insert(exception_pk(account, k), (true, k.clone()));
            wanted.insert(exception_pk(account, &star), (true, star));
        }
        for k in attempt_keys {
            wanted.insert(remediation_pk(account, k), (false, k.clone()));
        }
        let pks: Vec<String> = wanted.keys().cloned().collect();
        let items: Vec<Vec<HashMap<String, AttributeValue>>> = stream::iter(
            pks.chunks(BATCH_GET)
                .map(<[String]>::to_vec)
                .collect::<Vec<_>>(),
        )
        .map(|chunk| self.batch_get(chunk))
        .buffer_unordered(self.concurrency)
        .try_collect()
        .await?;
        let mut state = LedgerState::default();
        for item in items.into_iter().flatten() {
            let Some((exception, key)) = text(&item, "pk").and_then(|pk| wanted.get(pk)) else {
                continue;
            };
            if *exception {
                if let Some(exp) = num(&item, "expires_at") {
                    state.exceptions.insert(key.clone(), exp);
                }
            } else if let Some(status) = text(&item, "status").and_then(parse_status) {
                state.attempts.insert(
                    key.clone(),
                    Attempt {
                        attempts: num(&item, "attempts").unwrap_or(0).max(0) as u32,
                        last_attempt_at: num(&item, "last_attempt_at").unwrap_or(0),
                        status,
                        sweep_id: text(&item, "sweep_id").unwrap_or_default().to_owned(),
                    },
                );
            }
        }
        Ok(state)
    }

    async fn batch_get(
        &self,
        pks: Vec<String>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, AwsCallError> {
        let mut out = Vec::new();
        let mut pending: Vec<HashMap<String, AttributeValue>> = pks
            .iter()
            .map(|pk| HashMap::from([("pk".to_owned(), s(pk))]))
            .collect();
        let mut rounds = 0;
        while !pending.is_empty() && rounds < 8 {
            rounds += 1;
            let keys = KeysAndAttributes::builder()
                .set_keys(Some(pending.clone()))
                .consistent_read(true)
                .build()
                .map_err(|e| AwsCallError {
                    op: "BatchGetItem",
                    code: None,
                    retryable: false,
                    source: Box::new(e),
                })?;
            let res = throttled(|| async {
                self.ddb
                    .batch_get_item()
                    .request_items(&self.table, keys.clone())
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("BatchGetItem", e))
            })
            .await?;
            if let Some(mut r) = res.responses {
                out.extend(r.remove(&self.table).unwrap_or_default());
            }
            pending = res
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if !pending.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(50 << rounds)).await;
            }
        }
        Ok(out)
    }

    /// Records an attempt for each key before anything is sent. Returns the keys recorded
    /// now; a key this sweep already recorded (a retried step) is left out, so it is not sent twice.
    /// When one record fails, the ones this call wrote are given back (best effort), or the
    /// retried step would skip them as sent and strand their nodes.
    pub async fn begin_attempts(
        &self,
        account: &str,
        keys: &[Key],
        sweep_id: &str,
        now: i64,
    ) -> Result<Vec<Key>, AwsCallError> {
        let recorded = stream::iter(keys.iter().cloned())
            .map(|k| async move {
                let res = self
                    .ddb
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(&remediation_pk(account, &k)))
                    .update_expression(
                        "SET attempts = if_not_exists(attempts, :zero) + :one, last_attempt_at = :now, \
                         #st = :pending, sweep_id = :sid, node = :node, compliance_type = :ct, \
                         account = :acct, expires_at = :exp REMOVE command_id",
                    )
                    .condition_expression("attribute_not_exists(sweep_id) OR sweep_id <> :sid")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":now", n(now))
                    .expression_attribute_values(":pending", s(&status_str(AttemptStatus::Pending)))
                    .expression_attribute_values(":sid", s(sweep_id))
                    .expression_attribute_values(":node", s(&k.resource_id))
                    .expression_attribute_values(":ct", s(&k.compliance_type))
                    .expression_attribute_values(":acct", s(account))
                    .expression_attribute_values(":exp", n(now + RECORD_DAYS * 86_400))
                    .send()
                    .await;
                match res {
                    Ok(_) => Ok(Some(k)),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(AwsCallError::from_sdk("UpdateItem", e)),
                }
            })
            .buffered(self.concurrency)
            .collect::<Vec<Result<Option<Key>, AwsCallError>>>()
            .await;
        let mut fresh = Vec::new();
        let mut failure = None;
        for r in recorded {
            match r {
                Ok(Some(k)) => fresh.push(k),
                Ok(None) => {}
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let Some(e) = failure else {
            return Ok(fresh);
        };
        if let Err(undo) = self.abandon(account, &fresh).await {
            tracing::warn!(error = %undo, "could not give back attempts of a failed step");
        }
        Err(e)
    }

    /// Links the records to the command (or execution) that was started for them.
    pub async fn link(
        &self,
        account: &str,
        keys: &[Key],
        reference: &str,
    ) -> Result<(), AwsCallError> {
        stream::iter(keys.iter())
            .map(|k| async move {
                self.ddb
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(&remediation_pk(account, k)))
                    .update_expression("SET command_id = :c")
                    .expression_attribute_values(":c", s(reference))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsCallError::from_sdk("UpdateItem", e))
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Gives an attempt back when nothing was started (the call failed before any effect).
    /// The record stays (history), but no longer holds a cooldown or this sweep's claim.
    pub async fn abandon(&self, account: &str, keys: &[Key]) -> Result<(), AwsCallError> {
        // One at a time: concurrent give-backs under 30 % throttling overran the invocation's
        // deadline in the fault matrix (likely the SDK's adaptive rate limiter backing off).
        for k in keys {
            self.abandon_call(account, k).await?;
        }
        Ok(())
    }

    async fn abandon_call(&self, account: &str, k: &Key) -> Result<(), AwsCallError> {
        self.ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&remediation_pk(account, k)))
            .update_expression(
                "SET #st = :st, attempts = attempts - :one, last_attempt_at = :zero, sweep_id = :none",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(&status_str(AttemptStatus::Undeliverable)))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":none", s(""))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsCallError::from_sdk("UpdateItem", e))
    }

    /// Sets the status of records that exist (never creates one); `attempts_delta` -1 gives
    /// an attempt back. `command` restricts the update to records of that command.
    /// Returns the records as they are after the update.
    pub async fn set_status(
        &self,
        account: &str,
        keys: &[Key],
        status: AttemptStatus,
        attempts_delta: i64,
        command: Option<&str>,
    ) -> Result<Vec<(Key, Attempt)>, AwsCallError> {
        let out: Vec<Option<(Key, Attempt)>> = stream::iter(keys.iter().cloned())
            .map(|k| async move {
                let mut cond = "attribute_exists(pk)".to_owned();
                let mut req = self
                    .ddb
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(&remediation_pk(account, &k)))
                    .update_expression("SET #st = :st, attempts = attempts + :d")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":st", s(&status_str(status)))
                    .expression_attribute_values(":d", n(attempts_delta))
                    .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
                if let Some(c) = command {
                    cond.push_str(" AND command_id = :cmd");
                    req = req.expression_attribute_values(":cmd", s(c));
                }
                match req.condition_expression(cond).send().await {
                    Ok(o) => {
                        let item = o.attributes.unwrap_or_default();
                        Ok(Some((
                            k,
                            Attempt {
                                attempts: num(&item, "attempts").unwrap_or(0).max(0) as u32,
                                last_attempt_at: num(&item, "last_attempt_at").unwrap_or(0),
                                status,
                                sweep_id: text(&item, "sweep_id").unwrap_or_default().to_owned(),
                            },
                        )))
                    }
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(AwsCallError::from_sdk("UpdateItem", e)),
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        Ok(out.into_iter().flatten().collect())
    }

    pub async fn put_json(&self, pk: &str, attr: &str, value: &str) -> Result<(), AwsCallError> {
        self.ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item(attr, s(value))
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("PutItem", e))?;
        Ok(())
    }

    pub async fn get_json(&self, pk: &str, attr: &str) -> Result<Option<String>, AwsCallError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("GetItem", e))?;
        Ok(out
            .item
            .as_ref()
            .and_then(|i| text(i, attr))
            .map(str::to_owned))
    }
}
