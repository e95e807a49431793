//! Adapter: the ledger table (DynamoDB, key `pk`).
//!
//! Items (account-scoped, so one table serves many accounts):
//! - `exception#<account>#<node>#<type|*>` {expires_at (epoch seconds), reason} — written by
//!   operators; an exception stops remediation until it expires (checked in code: TTL lags).
//! - `remediation#<account>#<node>#<type>` {attempts, last_attempt_at, status, sweep_id,
//!   command_id} — written BEFORE a command is sent, so a retry after a crash sees the attempt
//!   and the cooldown holds (SendCommand has no idempotency token). A record carrying a sweep's
//!   id but no `command_id` is that sweep's claim: a redelivery of the sweep finishes it.
//!   `rev` counts the claims taken (and renewed): a claim is conditional on the `rev` the
//!   planner read, so two deliveries that planned the same node cannot both claim it.
//!   `renewed_at`: when a delivery re-took its own old claim (see [`Seen::held_at`]).
//! - `association-runs#<account>#<sweep-id>` {ids} — associations a sweep has run once.
//! - `sweep-lease#<sweep-id>` {holder, lease_until (epoch ms), stage running|continued|done,
//!   emitted, version, work} — one live delivery per sweep ([`crate::lease`],
//!   [`crate::lease_store`]): held until the holder's deadline, handed with the checkpoint
//!   (`work`, the rest of a sweep that ran out of time) to the continuation's token, given back
//!   when the delivery ends.
//! - `checkpoint#<sweep-id>` {work} — where checkpoints were kept before the lease record held
//!   them; read only by a continuation whose lease record has none.
//! - `deferral#<sweep-id>` {reason, calendar, deferred, next_transition}.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use autopilot_shared::dynamo::{get_consistent, n, s, unless_condition_failed};
use autopilot_shared::error::AwsCallError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValuesOnConditionCheckFailure,
};
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};

use crate::plan::{ASSOCIATION, Attempt, AttemptStatus, Key, LedgerState, PATCH};
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

/// A remediation record as the planner read it: what claiming it is conditional on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    /// Claims taken so far (`rev`); 0 for a record written before claims were counted.
    #[serde(default)]
    pub rev: u64,
    /// When its claim was taken or last renewed (epoch seconds).
    #[serde(default)]
    pub held_at: i64,
    /// When its claim was first taken (`last_attempt_at`): where a look-up of its command starts.
    #[serde(default)]
    pub claimed_at: i64,
    /// Set when the record is another sweep's unlinked claim older than any invocation can
    /// live: that sweep's id. Its delivery died for good; the claim is void unless the sweep's
    /// command is found in Run Command's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_of: Option<String>,
}

/// What a claim requires of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A checkpoint written before records were versioned: only another sweep's id.
    Unchecked,
    /// There was no record.
    Absent,
    /// The record still at the claim count read.
    Rev(u64),
}

impl Expect {
    pub fn of(seen: Option<&BTreeMap<Key, Seen>>, k: &Key) -> Self {
        match seen {
            None => Expect::Unchecked,
            Some(m) => m.get(k).map_or(Expect::Absent, |s| Expect::Rev(s.rev)),
        }
    }

    /// The condition expression (`:rev` bound when it names it).
    fn condition(self) -> &'static str {
        match self {
            Expect::Unchecked => "(attribute_not_exists(sweep_id) OR sweep_id <> :sid)",
            Expect::Absent => "attribute_not_exists(pk)",
            Expect::Rev(0) => {
                "attribute_exists(pk) AND attribute_not_exists(rev) \
                 AND (attribute_not_exists(sweep_id) OR sweep_id <> :sid)"
            }
            Expect::Rev(_) => "rev = :rev AND (attribute_not_exists(sweep_id) OR sweep_id <> :sid)",
        }
    }
}

/// How a stored remediation record stands for a delivery of `sweep` at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// This sweep's own unfinished claim.
    Own,
    /// Another sweep's unfinished claim older than `stale_after` (no live invocation holds it).
    Stale,
    /// An attempt: it counts and holds its cooldown.
    Attempt,
}

/// `stale_after` 0 never calls a claim stale. A given-back claim has no sweep id; a linked one
/// has a reference; only a pending claim is one in flight.
pub fn standing(
    record_sweep: &str,
    has_reference: bool,
    pending: bool,
    held_at: i64,
    sweep: &str,
    now: i64,
    stale_after: i64,
) -> Standing {
    if is_own_claim(record_sweep, has_reference, sweep) {
        Standing::Own
    } else if !record_sweep.is_empty()
        && !has_reference
        && pending
        && stale_after > 0
        && now - held_at > stale_after
    {
        Standing::Stale
    } else {
        Standing::Attempt
    }
}

/// Whether a dead claim of `key` may be void: a patch command is found in Run Command's
/// history by the sweep's comment, and an association run repeats safely.
pub fn voidable(key: &Key) -> bool {
    key.compliance_type == PATCH || key.compliance_type == ASSOCIATION
}

/// A dead claim as the planner sees it: not an attempt, no cooldown (like a given-back one).
pub fn void(a: Attempt) -> Attempt {
    Attempt {
        attempts: a.attempts.saturating_sub(1),
        last_attempt_at: 0,
        status: AttemptStatus::Undeliverable,
        ..a
    }
}

/// Whether a delivery holding its own claim since `held_at` must renew it before acting: past
/// `renew_after` another sweep may soon take it as stale.
pub fn needs_renewal(held_at: i64, now: i64, renew_after: Option<i64>) -> bool {
    renew_after.is_some_and(|after| now - held_at > after)
}

/// What loading the ledger for a delivery found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub state: LedgerState,
    /// This sweep's unfinished claims → claim time.
    pub own: BTreeMap<Key, i64>,
    /// Every remediation record read, as read.
    pub seen: BTreeMap<Key, Seen>,
}

fn held_at(item: &HashMap<String, AttributeValue>) -> i64 {
    num(item, "last_attempt_at")
        .unwrap_or(0)
        .max(num(item, "renewed_at").unwrap_or(0))
}

fn reference(item: &HashMap<String, AttributeValue>) -> Option<&str> {
    text(item, "command_id").filter(|c| !c.is_empty())
}

/// Sorts the records read into exceptions, attempts, own claims and stale claims (void).
fn sort_records(
    items: impl IntoIterator<Item = HashMap<String, AttributeValue>>,
    wanted: &BTreeMap<String, (bool, Key)>,
    sweep_id: &str,
    now: i64,
    stale_after: i64,
) -> Loaded {
    let mut out = Loaded::default();
    for item in items {
        let Some((exception, key)) = text(&item, "pk").and_then(|pk| wanted.get(pk)) else {
            continue;
        };
        if *exception {
            if let Some(exp) = num(&item, "expires_at") {
                out.state.exceptions.insert(key.clone(), exp);
            }
            continue;
        }
        let record_sweep = text(&item, "sweep_id").unwrap_or_default();
        let status = text(&item, "status").and_then(parse_status);
        let standing = match standing(
            record_sweep,
            reference(&item).is_some(),
            status == Some(AttemptStatus::Pending),
            held_at(&item),
            sweep_id,
            now,
            stale_after,
        ) {
            // A runbook the dead delivery may have started cannot be looked up, and may not be
            // safe to run twice: its claim stays an attempt of unknown outcome (it holds the
            // cooldown, then counts).
            Standing::Stale if !voidable(key) => Standing::Attempt,
            other => other,
        };
        out.seen.insert(
            key.clone(),
            Seen {
                rev: num(&item, "rev").unwrap_or(0).max(0) as u64,
                held_at: held_at(&item),
                claimed_at: num(&item, "last_attempt_at").unwrap_or(0),
                stale_of: (standing == Standing::Stale).then(|| record_sweep.to_owned()),
            },
        );
        if standing == Standing::Own {
            out.own
                .insert(key.clone(), num(&item, "last_attempt_at").unwrap_or(0));
        } else if let Some(status) = status {
            let a = Attempt {
                attempts: num(&item, "attempts").unwrap_or(0).max(0) as u32,
                last_attempt_at: num(&item, "last_attempt_at").unwrap_or(0),
                status,
                sweep_id: record_sweep.to_owned(),
            };
            let a = if standing == Standing::Stale {
                void(a)
            } else {
                a
            };
            out.state.attempts.insert(key.clone(), a);
        }
    }
    out
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
    /// Claimed by another delivery since the plan read them: not this delivery's to send.
    pub lost: Vec<Key>,
}

#[derive(Debug, PartialEq)]
enum ClaimOutcome {
    Fresh,
    Own(i64),
    Sent(String),
    Lost,
}

/// A claim refused: the record as it stood (`None`: gone) decides whose it is. Only this
/// sweep's record is its own claim or send; any other was claimed concurrently.
fn conflict(item: Option<&HashMap<String, AttributeValue>>, sweep_id: &str) -> ClaimOutcome {
    let Some(item) = item.filter(|i| text(i, "sweep_id") == Some(sweep_id)) else {
        return ClaimOutcome::Lost;
    };
    match reference(item) {
        Some(c) => ClaimOutcome::Sent(c.to_owned()),
        None => ClaimOutcome::Own(num(item, "last_attempt_at").unwrap_or(0)),
    }
}

fn attempt_of(item: &HashMap<String, AttributeValue>, status: AttemptStatus) -> Attempt {
    Attempt {
        attempts: num(item, "attempts").unwrap_or(0).max(0) as u32,
        last_attempt_at: num(item, "last_attempt_at").unwrap_or(0),
        status,
        sweep_id: text(item, "sweep_id").unwrap_or_default().to_owned(),
    }
}

fn epoch_now() -> i64 {
    chrono::Utc::now().timestamp()
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
        let l = self
            .load_claims(account, exception_keys, attempt_keys, sweep_id, 0, 0)
            .await?;
        Ok((l.state, l.own))
    }

    /// As [`Ledger::load_for_sweep`], keeping every record as read (what claims are
    /// conditional on); another sweep's unlinked patch or association claim older than
    /// `stale_after` seconds at `now` is void: not an attempt, no cooldown (see
    /// [`Seen::stale_of`]); a runbook's stays an attempt (see [`voidable`]).
    pub async fn load_claims(
        &self,
        account: &str,
        exception_keys: &[Key],
        attempt_keys: &[Key],
        sweep_id: &str,
        now: i64,
        stale_after: i64,
    ) -> Result<Loaded, AwsCallError> {
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
        Ok(sort_records(
            items.into_iter().flatten(),
            &wanted,
            sweep_id,
            now,
            stale_after,
        ))
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
    ///
    /// Each claim requires the record as `seen` by the plan (`None`: a checkpoint from before
    /// records were versioned); one claimed by another delivery since comes back as `lost`.
    /// Over a void claim ([`Seen::stale_of`]) the attempt replaces the dead one instead of
    /// adding to it. An own claim held longer than `renew_after` seconds is renewed first.
    pub async fn begin_attempts(
        &self,
        account: &str,
        keys: &[Key],
        sweep_id: &str,
        now: i64,
        seen: Option<&BTreeMap<Key, Seen>>,
        renew_after: Option<i64>,
    ) -> Result<Claims, AwsCallError> {
        let recorded = stream::iter(keys.iter().cloned())
            .map(|k| async move {
                let expect = Expect::of(seen, &k);
                let void = seen
                    .and_then(|m| m.get(&k))
                    .is_some_and(|s| s.stale_of.is_some());
                let outcome = self
                    .claim_one(account, &k, sweep_id, now, expect, void, renew_after)
                    .await;
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
                (k, ClaimOutcome::Lost) => claims.lost.push(k),
            }
        }
        Ok(claims)
    }

    #[allow(clippy::too_many_arguments)]
    async fn claim_one(
        &self,
        account: &str,
        k: &Key,
        sweep_id: &str,
        now: i64,
        expect: Expect,
        void: bool,
        renew_after: Option<i64>,
    ) -> Result<ClaimOutcome, AwsCallError> {
        let mut req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&remediation_pk(account, k)))
            .update_expression(
                "SET attempts = if_not_exists(attempts, :zero) + :inc, last_attempt_at = :now, \
                 #st = :pending, sweep_id = :sid, node = :node, compliance_type = :ct, \
                 account = :acct, expires_at = :exp, rev = if_not_exists(rev, :zero) + :one \
                 REMOVE command_id, renewed_at",
            )
            .condition_expression(expect.condition())
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":inc", n(i64::from(!void)))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":pending", s(&status_str(AttemptStatus::Pending)))
            .expression_attribute_values(":sid", s(sweep_id))
            .expression_attribute_values(":node", s(&k.resource_id))
            .expression_attribute_values(":ct", s(&k.compliance_type))
            .expression_attribute_values(":acct", s(account))
            .expression_attribute_values(":exp", n(now + RECORD_DAYS * 86_400))
            // The record as it stood tells an unfinished claim from a sent one.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Expect::Rev(r @ 1..) = expect {
            req = req.expression_attribute_values(":rev", n(i64::try_from(r).unwrap_or(i64::MAX)));
        }
        let old = match req.send().await {
            Ok(_) => return Ok(ClaimOutcome::Fresh),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => match c.item() {
                    Some(item) => Some(item.clone()),
                    None => self.get(&remediation_pk(account, k)).await?,
                },
                _ => return Err(AwsCallError::from_sdk("UpdateItem", e)),
            },
        };
        let outcome = conflict(old.as_ref(), sweep_id);
        let Some(item) = old.filter(|_| matches!(outcome, ClaimOutcome::Own(_))) else {
            return Ok(outcome);
        };
        if needs_renewal(held_at(&item), epoch_now(), renew_after) {
            let rev = num(&item, "rev").unwrap_or(0).max(0) as u64;
            if !self.renew(account, k, sweep_id, rev).await? {
                return Ok(ClaimOutcome::Lost);
            }
        }
        Ok(outcome)
    }

    /// Re-takes this sweep's own unlinked claim (read at claim count `rev`) so that no other
    /// sweep takes it as stale while this delivery finishes it; false when it is no longer so.
    pub async fn renew(
        &self,
        account: &str,
        k: &Key,
        sweep_id: &str,
        rev: u64,
    ) -> Result<bool, AwsCallError> {
        let mut req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&remediation_pk(account, k)))
            .update_expression("SET rev = if_not_exists(rev, :zero) + :one, renewed_at = :now")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(epoch_now()))
            .expression_attribute_values(":sid", s(sweep_id));
        let cond = "sweep_id = :sid AND attribute_not_exists(command_id)";
        req = if rev == 0 {
            req.condition_expression(format!("{cond} AND attribute_not_exists(rev)"))
        } else {
            req.condition_expression(format!("{cond} AND rev = :rev"))
                .expression_attribute_values(":rev", n(i64::try_from(rev).unwrap_or(i64::MAX)))
        };
        let renewed = unless_condition_failed("UpdateItem", req.send().await)?.is_some();
        if !renewed {
            tracing::warn!(node = %k.resource_id, "own claim taken by another sweep");
        }
        Ok(renewed)
    }

    /// One item by key, read consistently (`None` when there is none).
    async fn get(&self, pk: &str) -> Result<Option<HashMap<String, AttributeValue>>, AwsCallError> {
        get_consistent(&self.ddb, &self.table, pk).await
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
        if unless_condition_failed("UpdateItem", res)?.is_none() {
            tracing::warn!(node = %k.resource_id, "record claimed by another sweep: not linked");
        }
        Ok(())
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
        // A record no longer this sweep's unlinked claim is not this sweep's to give back.
        unless_condition_failed("UpdateItem", res).map(|_| ())
    }

    /// Association ids this sweep has already run (StartAssociationsOnce has no token).
    pub async fn association_runs(
        &self,
        account: &str,
        sweep_id: &str,
    ) -> Result<BTreeSet<String>, AwsCallError> {
        let item = self.get(&association_runs_pk(account, sweep_id)).await?;
        Ok(item
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
        let res = req.condition_expression(cond).send().await;
        Ok(unless_condition_failed("UpdateItem", res)?.map(|o| {
            (
                k.clone(),
                attempt_of(&o.attributes.unwrap_or_default(), status),
            )
        }))
    }

    /// The sweep whose unlinked claim the record of `k` is (pending, no reference), if any.
    pub async fn unlinked_claim(
        &self,
        account: &str,
        k: &Key,
    ) -> Result<Option<String>, AwsCallError> {
        let item = self.get(&remediation_pk(account, k)).await?;
        Ok(item.as_ref().and_then(|i| {
            let sweep = text(i, "sweep_id").filter(|s| !s.is_empty())?;
            let pending = text(i, "status").and_then(parse_status) == Some(AttemptStatus::Pending);
            (pending && reference(i).is_none()).then(|| sweep.to_owned())
        }))
    }

    /// Links `sweep_id`'s unlinked claim of `k` to `command` and records its outcome in one
    /// write; `None` when the record is no longer that claim (linked or re-claimed since).
    pub async fn link_with_status(
        &self,
        account: &str,
        k: &Key,
        command: &str,
        sweep_id: &str,
        status: AttemptStatus,
        attempts_delta: i64,
    ) -> Result<Option<(Key, Attempt)>, AwsCallError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&remediation_pk(account, k)))
            .update_expression("SET command_id = :cmd, #st = :st, attempts = attempts + :d")
            .condition_expression(
                "sweep_id = :sid AND attribute_not_exists(command_id) AND #st = :pending",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":cmd", s(command))
            .expression_attribute_values(":st", s(&status_str(status)))
            .expression_attribute_values(":d", n(attempts_delta))
            .expression_attribute_values(":sid", s(sweep_id))
            .expression_attribute_values(":pending", s(&status_str(AttemptStatus::Pending)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        Ok(unless_condition_failed("UpdateItem", res)?.map(|o| {
            (
                k.clone(),
                attempt_of(&o.attributes.unwrap_or_default(), status),
            )
        }))
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
        Ok(self
            .get(pk)
            .await?
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
        assert_eq!(conflict(Some(&item), "s1"), ClaimOutcome::Own(1_700));
        item.insert("command_id".to_owned(), s("c-1"));
        assert_eq!(
            conflict(Some(&item), "s1"),
            ClaimOutcome::Sent("c-1".into())
        );
        // An empty reference links nothing.
        item.insert("command_id".to_owned(), s(""));
        assert_eq!(conflict(Some(&item), "s1"), ClaimOutcome::Own(1_700));
    }

    #[test]
    fn a_refused_claim_of_another_sweeps_record_is_lost_whatever_it_holds() {
        let mut item = HashMap::from([
            ("sweep_id".to_owned(), s("s2")),
            ("last_attempt_at".to_owned(), n(1_700)),
        ]);
        assert_eq!(conflict(Some(&item), "s1"), ClaimOutcome::Lost);
        item.insert("command_id".to_owned(), s("c-2"));
        assert_eq!(conflict(Some(&item), "s1"), ClaimOutcome::Lost);
        // Read back after the refusal and gone (TTL): not ours either.
        assert_eq!(conflict(None, "s1"), ClaimOutcome::Lost);
    }

    #[test]
    fn a_claim_requires_the_record_as_read() {
        let k = Key::new("i-1", "Patch");
        let seen = BTreeMap::from([(
            k.clone(),
            Seen {
                rev: 4,
                ..Seen::default()
            },
        )]);
        assert_eq!(Expect::of(Some(&seen), &k), Expect::Rev(4));
        assert_eq!(
            Expect::of(Some(&seen), &Key::new("i-2", "Patch")),
            Expect::Absent
        );
        assert_eq!(Expect::of(None, &k), Expect::Unchecked);
        assert_eq!(Expect::Absent.condition(), "attribute_not_exists(pk)");
        assert!(Expect::Rev(4).condition().starts_with("rev = :rev AND"));
        assert!(
            Expect::Rev(0)
                .condition()
                .contains("attribute_not_exists(rev)")
        );
        // Every version keeps refusing a record this sweep already holds.
        for e in [Expect::Unchecked, Expect::Rev(0), Expect::Rev(4)] {
            assert!(e.condition().contains("sweep_id <> :sid"), "{e:?}");
        }
    }

    #[test]
    fn only_another_sweeps_pending_unlinked_claim_past_the_timeout_is_stale() {
        let now = 10_000;
        let st =
            |rec: &str, linked, pending, at| standing(rec, linked, pending, at, "s1", now, 900);
        assert_eq!(st("s0", false, true, now - 901), Standing::Stale);
        assert_eq!(
            st("s0", false, true, now - 900),
            Standing::Attempt,
            "may still be alive"
        );
        assert_eq!(
            st("s0", true, true, now - 5_000),
            Standing::Attempt,
            "linked: sent"
        );
        assert_eq!(
            st("s0", false, false, now - 5_000),
            Standing::Attempt,
            "an outcome came"
        );
        assert_eq!(
            st("", false, true, now - 5_000),
            Standing::Attempt,
            "given back"
        );
        assert_eq!(st("s1", false, true, now - 5_000), Standing::Own);
        assert_eq!(
            standing("s0", false, true, 0, "s1", now, 0),
            Standing::Attempt,
            "no timeout: never stale"
        );
    }

    #[test]
    fn a_void_claim_counts_no_attempt_and_holds_no_cooldown() {
        let a = Attempt {
            attempts: 2,
            last_attempt_at: 9_000,
            status: AttemptStatus::Pending,
            sweep_id: "s0".into(),
        };
        let v = void(a);
        assert_eq!(v.attempts, 1);
        assert_eq!(v.last_attempt_at, 0);
        assert_eq!(v.status, AttemptStatus::Undeliverable);
        assert_eq!(v.sweep_id, "s0");
    }

    #[test]
    fn records_are_sorted_into_own_stale_and_attempts_each_kept_as_read() {
        let k = |n: &str| Key::new(n, "Patch");
        let wanted: BTreeMap<String, (bool, Key)> = ["i-own", "i-stale", "i-fresh", "i-sent"]
            .iter()
            .map(|n| (remediation_pk("a", &k(n)), (false, k(n))))
            .collect();
        let rec = |node: &str, sweep: &str, at: i64, cmd: Option<&str>| {
            let mut m = HashMap::from([
                ("pk".to_owned(), s(&remediation_pk("a", &k(node)))),
                ("sweep_id".to_owned(), s(sweep)),
                ("last_attempt_at".to_owned(), n(at)),
                ("attempts".to_owned(), n(1)),
                ("rev".to_owned(), n(3)),
                ("status".to_owned(), s("pending")),
            ]);
            if let Some(c) = cmd {
                m.insert("command_id".to_owned(), s(c));
            }
            m
        };
        let mut renewed = rec("i-fresh", "s0", 100, None);
        // Renewed by its own sweep's redelivery: alive again.
        renewed.insert("renewed_at".to_owned(), n(9_500));
        let items = vec![
            rec("i-own", "s1", 100, None),
            rec("i-stale", "s0", 100, None),
            renewed,
            rec("i-sent", "s0", 100, Some("c-0")),
        ];
        let l = sort_records(items, &wanted, "s1", 10_000, 900);
        assert_eq!(l.own, BTreeMap::from([(k("i-own"), 100)]));
        assert_eq!(l.seen[&k("i-stale")].stale_of.as_deref(), Some("s0"));
        assert_eq!(l.seen[&k("i-stale")].claimed_at, 100);
        assert_eq!(l.seen[&k("i-fresh")].stale_of, None);
        assert_eq!(l.seen[&k("i-fresh")].held_at, 9_500);
        assert_eq!(l.seen[&k("i-sent")].stale_of, None);
        assert!(l.seen.values().all(|s| s.rev == 3));
        assert_eq!(l.state.attempts[&k("i-stale")].attempts, 0, "void");
        assert_eq!(l.state.attempts[&k("i-fresh")].attempts, 1);
        assert!(!l.state.attempts.contains_key(&k("i-own")));
    }

    #[test]
    fn a_dead_runbook_claim_stays_an_attempt_while_patch_and_association_claims_are_void() {
        let keys = [
            Key::new("i-1", "Patch"),
            Key::new("i-1", "Association"),
            Key::new("i-1", "Custom:Hardening"),
            Key::new("i-1", "config:ec2-imdsv2-check"),
        ];
        let wanted: BTreeMap<String, (bool, Key)> = keys
            .iter()
            .map(|k| (remediation_pk("a", k), (false, k.clone())))
            .collect();
        let items = keys.iter().map(|k| {
            HashMap::from([
                ("pk".to_owned(), s(&remediation_pk("a", k))),
                ("sweep_id".to_owned(), s("s0")),
                ("last_attempt_at".to_owned(), n(100)),
                ("attempts".to_owned(), n(1)),
                ("status".to_owned(), s("pending")),
            ])
        });
        let l = sort_records(items, &wanted, "s1", 10_000, 900);
        for k in &keys[..2] {
            assert_eq!(l.seen[k].stale_of.as_deref(), Some("s0"), "{k:?}");
            assert_eq!(l.state.attempts[k].attempts, 0, "{k:?} void");
        }
        for k in &keys[2..] {
            assert_eq!(l.seen[k].stale_of, None, "{k:?}");
            let a = &l.state.attempts[k];
            assert_eq!((a.attempts, a.last_attempt_at), (1, 100), "{k:?} kept");
            assert_eq!(a.status, AttemptStatus::Pending, "{k:?}");
        }
    }

    #[test]
    fn the_planner_plans_a_node_whose_claim_is_void_and_waits_out_a_live_one() {
        use crate::plan::{Finding, Fleet, Input, Reason, plan};
        let k = |n: &str| Key::new(n, "Patch");
        let wanted: BTreeMap<String, (bool, Key)> = ["i-dead", "i-live"]
            .iter()
            .map(|n| (remediation_pk("a", &k(n)), (false, k(n))))
            .collect();
        let claim = |node: &str, at: i64| {
            HashMap::from([
                ("pk".to_owned(), s(&remediation_pk("a", &k(node)))),
                ("sweep_id".to_owned(), s("s0")),
                ("last_attempt_at".to_owned(), n(at)),
                ("attempts".to_owned(), n(1)),
                ("status".to_owned(), s("pending")),
            ])
        };
        let now = 100_000;
        let l = sort_records(
            vec![claim("i-dead", now - 1_000), claim("i-live", now - 100)],
            &wanted,
            "s1",
            now,
            900,
        );
        let findings: Vec<Finding> = ["i-dead", "i-live"]
            .iter()
            .map(|id| Finding {
                patch_states: vec!["Missing".into()],
                ..Finding::new(id, "Patch")
            })
            .collect();
        let mut policy = crate::policy::default_policy().unwrap();
        policy.budget.max_percent = None;
        let fleet = Fleet {
            online: ["i-dead", "i-live"]
                .iter()
                .map(|n| (*n).to_owned())
                .collect(),
            ..Fleet::default()
        };
        let p = plan(&Input {
            findings: &findings,
            policy: &policy,
            ledger: &l.state,
            fleet: &fleet,
            now,
            calendar_open: None,
            verify: true,
            automation_role: None,
        });
        assert_eq!(p.patch_batches, vec![vec!["i-dead".to_owned()]]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].resource_id, "i-live");
        assert_eq!(p.skipped[0].reason, Reason::Cooldown);
        assert!(
            p.verified.is_empty(),
            "a void claim is not a remediation to verify"
        );
    }

    #[test]
    fn an_own_claim_is_renewed_only_when_it_could_pass_for_stale() {
        assert!(!needs_renewal(1_000, 1_500, Some(840)));
        assert!(needs_renewal(1_000, 1_841, Some(840)));
        assert!(!needs_renewal(0, 1_000_000, None));
    }
}
