//! Adapter: the ledger table (DynamoDB, key `pk`).
//!
//! Items (account-scoped, so one table serves many accounts):
//! - `exception#<account>#<node>#<type|*>` {expires_at (epoch seconds), reason} — written by
//!   operators; an exception stops remediation until it expires (checked in code: TTL lags).
//! - `remediation#<account>#<node>#<type>` {attempts, last_attempt_at, status, sweep_id,
//!   command_id} — written BEFORE a command is sent, so a retry after a crash sees the attempt
//!   and the cooldown holds (SendCommand has no idempotency token). A record carrying a sweep's
//!   id but no `command_id` is that sweep's claim: a redelivery of the sweep finishes it.
//! - `association-runs#<account>#<sweep-id>` {ids} — associations a sweep has run once.
//! - `checkpoint#<sweep-id>` {work} — the rest of a sweep that ran out of time.
//! - `deferral#<sweep-id>` {reason, calendar, deferred, next_transition}.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use autopilot_shared::error::AwsCallError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValuesOnConditionCheckFailure,
};
use futures::{StreamExt, TryStreamExt, stream};

use crate::plan::{Attempt, AttemptStatus, Key, LedgerState};
use crate::retry::throttled;

/// BatchGetItem reads at most 100 keys per call.
const BATCH_GET: usize = 100;
/// Retries of the write that records association runs (the runs cannot be taken back).
const RECORD_ROUNDS: u32 = 4;
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

fn association_runs_pk(account: &str, sweep_id: &str) -> String {
    format!("association-runs#{account}#{sweep_id}")
}

/// A record is `sweep`'s unfinished claim when that sweep wrote it and linked nothing to it:
/// whether the delivery that wrote it got its command out is not known from the record.
pub fn is_own_claim(record_sweep: &str, has_reference: bool, sweep: &str) -> bool {
    !sweep.is_empty() && record_sweep == sweep && !has_reference
}

/// How the keys of one step stood once the step claimed them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// Recorded by this call: nothing was sent for them yet.
    pub fresh: Vec<Key>,
    /// Claimed by an earlier delivery of this sweep, nothing linked: the send may or may not
    /// have gone out; the value is when they were claimed.
    pub own: Vec<(Key, i64)>,
    /// Claimed by this sweep and linked to what it started (command or execution id).
    pub sent: Vec<(Key, String)>,
}

enum ClaimOutcome {
    Fresh,
    Own(i64),
    Sent(String),
}

fn claim_outcome(item: &HashMap<String, AttributeValue>) -> ClaimOutcome {
    match text(item, "command_id").filter(|c| !c.is_empty()) {
        Some(c) => ClaimOutcome::Sent(c.to_owned()),
        None => ClaimOutcome::Own(num(item, "last_attempt_at").unwrap_or(0)),
    }
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
        Ok(self
            .load_for_sweep(account, exception_keys, attempt_keys, "")
            .await?
            .0)
    }

    /// As [`Ledger::load`], for a delivery of `sweep_id`: the records that sweep claimed
    /// without linking anything (an earlier delivery failed or died mid-step) are returned
    /// apart, with their claim time, instead of as attempts. They are the sweep's own work in
    /// flight, not someone else's attempt holding a cooldown.
    pub async fn load_for_sweep(
        &self,
        account: &str,
        exception_keys: &[Key],
        attempt_keys: &[Key],
        sweep_id: &str,
    ) -> Result<(LedgerState, BTreeMap<Key, i64>), AwsCallError> {
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
        let mut own = BTreeMap::new();
        for item in items.into_iter().flatten() {
            let Some((exception, key)) = text(&item, "pk").and_then(|pk| wanted.get(pk)) else {
                continue;
            };
            if *exception {
                if let Some(exp) = num(&item, "expires_at") {
                    state.exceptions.insert(key.clone(), exp);
                }
            } else if is_own_claim(
                text(&item, "sweep_id").unwrap_or_default(),
                text(&item, "command_id").is_some_and(|c| !c.is_empty()),
                sweep_id,
            ) {
                own.insert(key.clone(), num(&item, "last_attempt_at").unwrap_or(0));
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
        Ok((state, own))
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

    /// Records an attempt for each key before anything is sent (concurrently). A key this
    /// sweep already claimed is not counted again: it comes back as `own` (nothing linked yet)
    /// or `sent`. When one write fails the step fails as a whole and nothing is given back:
    /// the records written carry this sweep's id, so its retry takes them as its own claims.
    pub async fn begin_attempts(
        &self,
        account: &str,
        keys: &[Key],
        sweep_id: &str,
        now: i64,
    ) -> Result<Claims, AwsCallError> {
        let recorded = stream::iter(keys.iter().cloned())
            .map(|k| async move {
                let outcome = self.claim_one(account, &k, sweep_id, now).await;
                outcome.map(|o| (k, o))
            })
            .buffered(self.concurrency)
            .collect::<Vec<Result<(Key, ClaimOutcome), AwsCallError>>>()
            .await;
        let mut claims = Claims::default();
        for r in recorded {
            match r? {
                (k, ClaimOutcome::Fresh) => claims.fresh.push(k),
                (k, ClaimOutcome::Own(at)) => claims.own.push((k, at)),
                (k, ClaimOutcome::Sent(c)) => claims.sent.push((k, c)),
            }
        }
        Ok(claims)
    }

    async fn claim_one(
        &self,
        account: &str,
        k: &Key,
        sweep_id: &str,
        now: i64,
    ) -> Result<ClaimOutcome, AwsCallError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&remediation_pk(account, k)))
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
            // The record as it stood tells an unfinished claim from a sent one.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(ClaimOutcome::Fresh),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => match c.item() {
                    Some(item) => Ok(claim_outcome(item)),
                    None => Ok(claim_outcome(&self.record(account, k).await?)),
                },
                _ => Err(AwsCallError::from_sdk("UpdateItem", e)),
            },
        }
    }

    /// A remediation record as stored (empty when there is none).
    async fn record(
        &self,
        account: &str,
        k: &Key,
    ) -> Result<HashMap<String, AttributeValue>, AwsCallError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&remediation_pk(account, k)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("GetItem", e))?;
        Ok(out.item.unwrap_or_default())
    }

    /// Links this sweep's records to the command (or execution) started for them. A record
    /// another sweep has claimed since is left alone.
    pub async fn link(
        &self,
        account: &str,
        keys: &[Key],
        reference: &str,
        sweep_id: &str,
    ) -> Result<(), AwsCallError> {
        let results = stream::iter(keys.iter())
            .map(|k| self.link_one(account, k, reference, sweep_id))
            .buffer_unordered(self.concurrency)
            .collect::<Vec<Result<(), AwsCallError>>>()
            .await;
        // Every link was tried: what one delivery could write stays written.
        results.into_iter().collect()
    }

    async fn link_one(
        &self,
        account: &str,
        k: &Key,
        reference: &str,
        sweep_id: &str,
    ) -> Result<(), AwsCallError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&remediation_pk(account, k)))
            .update_expression("SET command_id = :c")
            .condition_expression("sweep_id = :sid")
            .expression_attribute_values(":c", s(reference))
            .expression_attribute_values(":sid", s(sweep_id))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                tracing::warn!(node = %k.resource_id, "record claimed by another sweep: not linked");
                Ok(())
            }
            Err(e) => Err(AwsCallError::from_sdk("UpdateItem", e)),
        }
    }

    /// Gives this sweep's unlinked claims back when nothing was started for them (a call
    /// rejected outright, or a claim the sweep no longer plans). The record stays (history),
    /// but no longer holds a cooldown or this sweep's claim; a linked or foreign one is kept.
    pub async fn abandon(
        &self,
        account: &str,
        keys: &[Key],
        sweep_id: &str,
    ) -> Result<(), AwsCallError> {
        // One at a time: concurrent give-backs under 30 % throttling overran the invocation's
        // deadline in the fault matrix (likely the SDK's adaptive rate limiter backing off).
        for k in keys {
            self.abandon_call(account, k, sweep_id).await?;
        }
        Ok(())
    }

    async fn abandon_call(
        &self,
        account: &str,
        k: &Key,
        sweep_id: &str,
    ) -> Result<(), AwsCallError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&remediation_pk(account, k)))
            .update_expression(
                "SET #st = :st, attempts = attempts - :one, last_attempt_at = :zero, sweep_id = :none",
            )
            .condition_expression("sweep_id = :sid AND attribute_not_exists(command_id)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(&status_str(AttemptStatus::Undeliverable)))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":none", s(""))
            .expression_attribute_values(":sid", s(sweep_id))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(AwsCallError::from_sdk("UpdateItem", e)),
        }
    }

    /// Association ids this sweep has already run (StartAssociationsOnce has no token).
    pub async fn association_runs(
        &self,
        account: &str,
        sweep_id: &str,
    ) -> Result<BTreeSet<String>, AwsCallError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&association_runs_pk(account, sweep_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("GetItem", e))?;
        Ok(out
            .item
            .as_ref()
            .and_then(|i| i.get("ids"))
            .and_then(|v| v.as_ss().ok())
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default())
    }

    pub async fn record_association_runs(
        &self,
        account: &str,
        sweep_id: &str,
        ids: &[String],
        now: i64,
    ) -> Result<(), AwsCallError> {
        if ids.is_empty() {
            return Ok(());
        }
        // The runs happened: losing this write would make the retry run them again, so any
        // retryable failure is retried here (ADD to a set is idempotent).
        let mut round = 0;
        loop {
            let res = self
                .ddb
                .update_item()
                .table_name(&self.table)
                .key("pk", s(&association_runs_pk(account, sweep_id)))
                .update_expression("ADD ids :ids SET expires_at = :exp")
                .expression_attribute_values(":ids", AttributeValue::Ss(ids.to_vec()))
                .expression_attribute_values(":exp", n(now + RECORD_DAYS * 86_400))
                .send()
                .await
                .map_err(|e| AwsCallError::from_sdk("UpdateItem", e));
            match res {
                Err(e) if e.retryable && round < RECORD_ROUNDS => {
                    round += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 << round)).await;
                }
                other => return other.map(|_| ()),
            }
        }
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
        let out = stream::iter(keys.iter())
            .map(|k| self.status_one(account, k, status, attempts_delta, command))
            .buffer_unordered(self.concurrency)
            .collect::<Vec<Result<Option<(Key, Attempt)>, AwsCallError>>>()
            .await;
        // Every record was tried before the first failure is reported: a retry has less to do.
        let out: Vec<Option<(Key, Attempt)>> = out.into_iter().collect::<Result<_, _>>()?;
        Ok(out.into_iter().flatten().collect())
    }

    async fn status_one(
        &self,
        account: &str,
        k: &Key,
        status: AttemptStatus,
        attempts_delta: i64,
        command: Option<&str>,
    ) -> Result<Option<(Key, Attempt)>, AwsCallError> {
        let mut cond = "attribute_exists(pk)".to_owned();
        let mut req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&remediation_pk(account, k)))
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
                    k.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_record_is_sent_once_it_carries_a_reference() {
        let mut item = HashMap::from([
            ("sweep_id".to_owned(), s("s1")),
            ("last_attempt_at".to_owned(), n(1_700)),
        ]);
        assert!(matches!(claim_outcome(&item), ClaimOutcome::Own(1_700)));
        item.insert("command_id".to_owned(), s("c-1"));
        assert!(matches!(claim_outcome(&item), ClaimOutcome::Sent(c) if c == "c-1"));
        // An empty reference links nothing.
        item.insert("command_id".to_owned(), s(""));
        assert!(matches!(claim_outcome(&item), ClaimOutcome::Own(1_700)));
    }
}
