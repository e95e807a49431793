//! Adapter: the sweep lease record (`sweep-lease#<sweep-id>` in the ledger table), decided by
//! [`crate::lease::decide`] and written as a compare-and-swap on its version. The record also
//! holds the checkpoint (the rest of the sweep), so that handing the sweep to a continuation —
//! checkpoint and lease together — is one conditional write that a delivery which lost its
//! lease cannot make.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use autopilot_shared::dynamo::{get_consistent, n, s, unless_condition_failed};
use autopilot_shared::error::AwsCallError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::RemediatorError;
use crate::lease::{Delivery, LeaseDecision, LeaseRecord, Stage, decide, may_send};
use crate::retry::throttled;

/// A send must have this much lease left: the call (one attempt, throttling retried for up to
/// ~3 s) must not outlive the lease and overlap a delivery that took the sweep over.
const SEND_GUARD_MS: i64 = 1_000;
/// Rounds of read → decide → compare-and-swap before a contended lease counts as busy.
const TAKE_ROUNDS: u32 = 4;
/// Lease records are kept a week (a sweep and its continuations last minutes).
const RECORD_SECONDS: i64 = 7 * 86_400;

pub fn now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn lease_pk(sweep_id: &str) -> String {
    format!("sweep-lease#{sweep_id}")
}

fn parse(item: &HashMap<String, AttributeValue>) -> Option<LeaseRecord> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    Some(LeaseRecord {
        holder: text("holder").unwrap_or_default(),
        until_ms: num("lease_until").unwrap_or(0),
        stage: Stage::parse(&text("stage")?)?,
        emitted: item
            .get("emitted")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        version: num("version").unwrap_or(0),
    })
}

#[derive(Clone)]
pub struct Leases {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
}

/// What a delivery got when it asked for its sweep.
pub enum Acquired {
    /// It holds the sweep. `resume`: run the stored rest of the sweep (`checkpoint`, when the
    /// lease record holds it) instead of planning.
    Held {
        lease: SweepLease,
        resume: bool,
        checkpoint: Option<String>,
    },
    /// Nothing to do: the sweep was handed on ([`LeaseDecision::Continued`]) or finished.
    Stop(LeaseDecision),
}

/// The lease one delivery holds.
pub struct SweepLease {
    store: Leases,
    pk: String,
    pub sweep_id: String,
    pub token: String,
    until_ms: i64,
}

impl Leases {
    pub fn new(ddb: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            ddb,
            table: table.into(),
        }
    }

    async fn read(
        &self,
        pk: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, AwsCallError> {
        throttled(|| get_consistent(&self.ddb, &self.table, pk)).await
    }

    /// Writes the record unless one exists; `Ok(false)` when one does.
    async fn create(
        &self,
        pk: &str,
        attributes: &[(&str, AttributeValue)],
    ) -> Result<bool, AwsCallError> {
        throttled(|| async {
            let mut req = self
                .ddb
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pk))
                .condition_expression("attribute_not_exists(pk)");
            for (k, v) in attributes {
                req = req.item(*k, v.clone());
            }
            Ok(unless_condition_failed("PutItem", req.send().await)?.is_some())
        })
        .await
    }

    /// An UpdateItem on the lease record; `Ok(false)` when its condition did not hold.
    async fn update(
        &self,
        pk: &str,
        expression: &str,
        condition: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<bool, AwsCallError> {
        throttled(|| async {
            let mut req = self
                .ddb
                .update_item()
                .table_name(&self.table)
                .key("pk", s(pk))
                .update_expression(expression)
                .condition_expression(condition);
            // `work` and `version` are reserved words; DynamoDB rejects a name no expression uses.
            for (name, attr) in [("#st", "stage"), ("#w", "work"), ("#v", "version")] {
                if expression.contains(name) || condition.contains(name) {
                    req = req.expression_attribute_names(name, attr);
                }
            }
            for (k, v) in values {
                req = req.expression_attribute_values(*k, v.clone());
            }
            Ok(unless_condition_failed("UpdateItem", req.send().await)?.is_some())
        })
        .await
    }

    /// Takes the sweep for `token` until `until_ms`, or says why not. A live holder is
    /// `SweepInProgress` (retryable); nothing else was written then.
    pub async fn acquire(
        &self,
        sweep_id: &str,
        delivery: Delivery,
        token: &str,
        until_ms: i64,
    ) -> Result<Acquired, RemediatorError> {
        let pk = lease_pk(sweep_id);
        let mut busy_until = until_ms;
        for _ in 0..TAKE_ROUNDS {
            let item = self.read(&pk).await?;
            let record = item.as_ref().and_then(parse);
            let resume = match decide(record.as_ref(), delivery, token, now_ms()) {
                LeaseDecision::Take { resume } => resume,
                LeaseDecision::Busy { until_ms } => {
                    return Err(RemediatorError::SweepInProgress {
                        sweep_id: sweep_id.to_owned(),
                        until_ms,
                    });
                }
                stop => return Ok(Acquired::Stop(stop)),
            };
            let taken = match &record {
                None => {
                    let stage = match delivery {
                        Delivery::Plan => Stage::Running,
                        Delivery::Continue => Stage::Continued,
                    };
                    self.create(
                        &pk,
                        &[
                            ("holder", s(token)),
                            ("lease_until", n(until_ms)),
                            ("stage", s(stage.as_str())),
                            ("emitted", AttributeValue::Bool(false)),
                            ("version", n(1)),
                            ("expires_at", n(until_ms / 1000 + RECORD_SECONDS)),
                        ],
                    )
                    .await?
                }
                Some(r) => {
                    self.update(
                        &pk,
                        "SET holder = :me, lease_until = :until, #v = :next",
                        "#v = :v",
                        &[
                            (":me", s(token)),
                            (":until", n(until_ms)),
                            (":v", n(r.version)),
                            (":next", n(r.version + 1)),
                        ],
                    )
                    .await?
                }
            };
            if taken {
                let checkpoint = if resume {
                    item.as_ref()
                        .and_then(|i| i.get("work"))
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                } else {
                    None
                };
                return Ok(Acquired::Held {
                    lease: SweepLease {
                        store: self.clone(),
                        pk,
                        sweep_id: sweep_id.to_owned(),
                        token: token.to_owned(),
                        until_ms,
                    },
                    resume,
                    checkpoint,
                });
            }
            // Someone wrote in between (or an earlier try of this write landed): decide again.
            busy_until = record.map_or(until_ms, |r| r.until_ms.max(until_ms));
        }
        Err(RemediatorError::SweepInProgress {
            sweep_id: sweep_id.to_owned(),
            until_ms: busy_until,
        })
    }
}

impl SweepLease {
    fn lost(&self) -> RemediatorError {
        RemediatorError::SweepLeaseLost {
            sweep_id: self.sweep_id.clone(),
        }
    }

    /// Before each send: the lease must still be this delivery's, with time left for the call.
    pub async fn check(&self) -> Result<(), RemediatorError> {
        let now = now_ms();
        if now + SEND_GUARD_MS >= self.until_ms {
            return Err(self.lost());
        }
        let record = self.store.read(&self.pk).await?;
        if may_send(
            record.as_ref().and_then(parse).as_ref(),
            &self.token,
            now,
            SEND_GUARD_MS,
        ) {
            Ok(())
        } else {
            Err(self.lost())
        }
    }

    /// Stores the rest of the sweep and hands the lease to the continuation that will carry
    /// `next_token`, in one write that holds only while this delivery has the lease. The
    /// continuation takes it at once; nobody else until this delivery's deadline.
    pub async fn hand_over(&self, work: &str, next_token: &str) -> Result<(), RemediatorError> {
        let ok = self
            .store
            .update(
                &self.pk,
                "SET holder = :next, #st = :continued, emitted = :no, #w = :work \
                 ADD #v :one",
                "holder = :me",
                &[
                    (":next", s(next_token)),
                    (":continued", s(Stage::Continued.as_str())),
                    (":no", AttributeValue::Bool(false)),
                    (":work", s(work)),
                    (":one", n(1)),
                    (":me", s(&self.token)),
                ],
            )
            .await?;
        if ok { Ok(()) } else { Err(self.lost()) }
    }

    /// Takes a hand-over back when publishing the continuation failed. Not if the
    /// continuation took it meanwhile (it set its own deadline): that one is live.
    pub async fn take_back(&self, next_token: &str) {
        let res = self
            .store
            .update(
                &self.pk,
                "SET holder = :me ADD #v :one",
                "holder = :next AND lease_until = :until",
                &[
                    (":me", s(&self.token)),
                    (":one", n(1)),
                    (":next", s(next_token)),
                    (":until", n(self.until_ms)),
                ],
            )
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "hand-over not taken back");
        }
    }

    /// The continuation carrying `next_token` was published: a planning redelivery may stop.
    pub async fn mark_published(&self, next_token: &str) {
        let res = self
            .store
            .update(
                &self.pk,
                "SET emitted = :yes ADD #v :one",
                "holder = :next AND #st = :continued",
                &[
                    (":yes", AttributeValue::Bool(true)),
                    (":one", n(1)),
                    (":next", s(next_token)),
                    (":continued", s(Stage::Continued.as_str())),
                ],
            )
            .await;
        // Unmarked, a planning redelivery resumes the checkpoint itself (under the lease):
        // more work, never a second send.
        if let Err(e) = res {
            tracing::warn!(error = %e, "continuation not marked as published");
        }
    }

    /// Gives the lease back at the end of the invocation: `done` when the sweep has nothing
    /// left to run. A lease this delivery no longer holds (handed over, lost) is left alone.
    pub async fn release(&self, done: bool) {
        let (expression, mut values): (&str, Vec<(&str, AttributeValue)>) = if done {
            (
                "SET holder = :none, lease_until = :zero, #st = :done REMOVE #w ADD #v :one",
                vec![(":done", s(Stage::Done.as_str()))],
            )
        } else {
            (
                "SET holder = :none, lease_until = :zero ADD #v :one",
                Vec::new(),
            )
        };
        values.extend([
            (":none", s("")),
            (":zero", n(0)),
            (":one", n(1)),
            (":me", s(&self.token)),
        ]);
        let res = self
            .store
            .update(&self.pk, expression, "holder = :me", &values)
            .await;
        // Not given back, the lease expires at this delivery's deadline: a retry meets
        // `SweepInProgress` until then, and sends nothing twice.
        if let Err(e) = res {
            tracing::warn!(error = %e, "sweep lease not given back");
        }
    }
}
