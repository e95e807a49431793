//! Idempotency records on DynamoDB, with the semantics of Powertools for AWS Lambda.
//!
//! EventBridge → Lambda delivery is at-least-once, so every side effect is guarded:
//! - the key is the function name plus a hash of the event id (stable across retries);
//! - a claim writes an INPROGRESS record whose lock lasts until the invocation's deadline,
//!   so a crashed invocation's record becomes claimable again once its deadline passes;
//! - a completed record stores the handler's result, returned on every repeat until it expires;
//! - expiry is checked in code, because DynamoDB TTL deletion can lag by up to 48 hours;
//! - the same key with a different payload hash is a validation error;
//! - a failed handler deletes its INPROGRESS record so that a retry can run;
//! - a concurrent duplicate gets a retryable "already in progress" error.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::sha256_hex;
use crate::dynamo::{n, s};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use serde::Serialize;
use serde::de::DeserializeOwned;

const STATUS_IN_PROGRESS: &str = "INPROGRESS";
const STATUS_COMPLETE: &str = "COMPLETE";
/// Results above this are not stored (DynamoDB items are limited to 400 KB).
const MAX_STORED_RESULT: usize = 300 * 1024;

/// The identity of one logical event for one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: String,
    payload_hash: String,
}

impl IdempotencyKey {
    /// `event_key` identifies the event (the EventBridge id); `payload` is hashed after
    /// canonicalisation (sorted keys) so that re-serialised copies of one event still match.
    pub fn new(function: &str, event_key: &str, payload: &[u8]) -> Self {
        let canonical = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .map(|v| {
                let mut out = Vec::with_capacity(payload.len());
                write_canonical(&v, &mut out);
                out
            });
        let payload_hash = sha256_hex(canonical.as_deref().unwrap_or(payload));
        Self {
            key: format!("{function}#{}", &sha256_hex(event_key.as_bytes())[..32]),
            payload_hash,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }
}

/// JSON with object keys sorted at every level, whatever map type serde_json was built with.
fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                if let Some(child) = m.get(k) {
                    write_canonical(child, out);
                }
            }
            out.push(b'}');
        }
        serde_json::Value::Array(a) => {
            out.push(b'[');
            for (i, child) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(child, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("event {key} is already being processed by another invocation")]
    AlreadyInProgress { key: String },
    #[error("event {key} was seen before with a different payload")]
    PayloadMismatch { key: String },
    #[error("idempotency store call {op} failed")]
    Store {
        op: &'static str,
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("stored idempotency record {key} is unreadable")]
    Corrupt { key: String },
}

impl IdempotencyError {
    pub fn error_type(&self) -> &'static str {
        match self {
            IdempotencyError::AlreadyInProgress { .. } => "IdempotencyAlreadyInProgress",
            IdempotencyError::PayloadMismatch { .. } => "IdempotencyPayloadMismatch",
            IdempotencyError::Store { .. } => "IdempotencyStoreError",
            IdempotencyError::Corrupt { .. } => "IdempotencyRecordCorrupt",
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            IdempotencyError::AlreadyInProgress { .. } => true,
            IdempotencyError::Store { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

fn store_err<E, R>(op: &'static str, e: aws_sdk_dynamodb::error::SdkError<E, R>) -> IdempotencyError
where
    E: std::error::Error
        + aws_smithy_types::error::metadata::ProvideErrorMetadata
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    IdempotencyError::Store {
        op,
        retryable: crate::error::sdk_error_is_retryable(&e),
        source: Box::new(e),
    }
}

/// Outcome of a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This invocation owns the event and must complete or release it.
    Acquired,
    /// The event was already handled; this is the stored result.
    Completed(serde_json::Value),
}

/// Whether a guarded call ran now or was answered from the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Execution<T> {
    Fresh(T),
    Replayed(T),
}

impl<T> Execution<T> {
    pub fn into_inner(self) -> T {
        match self {
            Execution::Fresh(t) | Execution::Replayed(t) => t,
        }
    }
    pub fn is_replay(&self) -> bool {
        matches!(self, Execution::Replayed(_))
    }
}

/// Error of [`IdempotencyStore::execute`]: the store's, or the guarded handler's.
#[derive(Debug, thiserror::Error)]
pub enum GuardError<E> {
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    #[error(transparent)]
    Handler(E),
}

/// Idempotency records in one DynamoDB table (partition key `id`, TTL attribute `expiration`).
#[derive(Clone)]
pub struct IdempotencyStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    expires_after: Duration,
}

fn epoch_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn epoch_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl IdempotencyStore {
    /// `expires_after`: how long a completed record answers repeats (Powertools default 1 h).
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        expires_after: Duration,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            expires_after,
        }
    }

    /// Claims `key` until `deadline` (the invocation's deadline).
    pub async fn claim(
        &self,
        key: &IdempotencyKey,
        deadline: SystemTime,
    ) -> Result<Claim, IdempotencyError> {
        // A record can vanish between a failed condition and our read of it; try again then.
        for _ in 0..3 {
            let now = SystemTime::now();
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("id", s(&key.key))
                .item("status", s(STATUS_IN_PROGRESS))
                .item("expiration", n(epoch_secs(now + self.expires_after)))
                .item("in_progress_expiration", n(epoch_millis(deadline)))
                .item("payload_hash", s(&key.payload_hash))
                .condition_expression(
                    "attribute_not_exists(#id) OR #exp < :now OR (#st = :inprogress AND #ipe < :now_ms)",
                )
                .expression_attribute_names("#id", "id")
                .expression_attribute_names("#exp", "expiration")
                .expression_attribute_names("#st", "status")
                .expression_attribute_names("#ipe", "in_progress_expiration")
                .expression_attribute_values(":now", n(epoch_secs(now)))
                .expression_attribute_values(":now_ms", n(epoch_millis(now)))
                .expression_attribute_values(":inprogress", s(STATUS_IN_PROGRESS))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            let old = match put {
                Ok(_) => return Ok(Claim::Acquired),
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => c.item.clone(),
                    _ => return Err(store_err("PutItem", e)),
                },
            };
            let old = match old {
                Some(item) => Some(item),
                None => self.read(key).await?,
            };
            if let Some(item) = old {
                return self.existing(key, &item);
            }
        }
        Err(IdempotencyError::AlreadyInProgress {
            key: key.key.clone(),
        })
    }

    fn existing(
        &self,
        key: &IdempotencyKey,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<Claim, IdempotencyError> {
        let attr = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str);
        if attr("payload_hash") != Some(key.payload_hash.as_str()) {
            return Err(IdempotencyError::PayloadMismatch {
                key: key.key.clone(),
            });
        }
        match attr("status") {
            Some(STATUS_COMPLETE) => {
                let data = attr("data").unwrap_or("null");
                serde_json::from_str(data)
                    .map(Claim::Completed)
                    .map_err(|_| IdempotencyError::Corrupt {
                        key: key.key.clone(),
                    })
            }
            Some(STATUS_IN_PROGRESS) => Err(IdempotencyError::AlreadyInProgress {
                key: key.key.clone(),
            }),
            _ => Err(IdempotencyError::Corrupt {
                key: key.key.clone(),
            }),
        }
    }

    async fn read(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<HashMap<String, AttributeValue>>, IdempotencyError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(&key.key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_err("GetItem", e))?;
        Ok(out.item)
    }

    /// Marks `key` complete with the handler's result.
    pub async fn complete(
        &self,
        key: &IdempotencyKey,
        result: &serde_json::Value,
    ) -> Result<(), IdempotencyError> {
        let mut data = serde_json::to_string(result).unwrap_or_else(|_| "null".to_owned());
        if data.len() > MAX_STORED_RESULT {
            data = r#"{"resultNotStored":"too large"}"#.to_owned();
        }
        let now = SystemTime::now();
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", s(&key.key))
            .update_expression("SET #st = :complete, #data = :data, #exp = :exp REMOVE #ipe")
            .condition_expression("#ph = :ph")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#data", "data")
            .expression_attribute_names("#exp", "expiration")
            .expression_attribute_names("#ipe", "in_progress_expiration")
            .expression_attribute_names("#ph", "payload_hash")
            .expression_attribute_values(":complete", s(STATUS_COMPLETE))
            .expression_attribute_values(":data", s(&data))
            .expression_attribute_values(":exp", n(epoch_secs(now + self.expires_after)))
            .expression_attribute_values(":ph", s(&key.payload_hash))
            .send()
            .await
            .map_err(|e| store_err("UpdateItem", e))?;
        Ok(())
    }

    /// Deletes our INPROGRESS record after a failure so that a retry can run.
    pub async fn release(&self, key: &IdempotencyKey) -> Result<(), IdempotencyError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", s(&key.key))
            .condition_expression("#st = :inprogress AND #ph = :ph")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#ph", "payload_hash")
            .expression_attribute_values(":inprogress", s(STATUS_IN_PROGRESS))
            .expression_attribute_values(":ph", s(&key.payload_hash))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(store_err("DeleteItem", e)),
        }
    }

    /// Runs `f` at most once per key: claims, runs, stores the result; on a repeat returns
    /// the stored result without running `f`; on failure releases the claim.
    pub async fn execute<T, E, F, Fut>(
        &self,
        key: &IdempotencyKey,
        deadline: SystemTime,
        f: F,
    ) -> Result<Execution<T>, GuardError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.claim(key, deadline).await? {
            Claim::Completed(v) => {
                serde_json::from_value(v)
                    .map(Execution::Replayed)
                    .map_err(|_| {
                        GuardError::Idempotency(IdempotencyError::Corrupt {
                            key: key.key.clone(),
                        })
                    })
            }
            Claim::Acquired => match f().await {
                Ok(t) => {
                    let v = serde_json::to_value(&t).unwrap_or(serde_json::Value::Null);
                    self.complete(key, &v).await?;
                    Ok(Execution::Fresh(t))
                }
                Err(e) => {
                    if let Err(re) = self.release(key).await {
                        tracing::warn!(error = %re, key = key.as_str(), "could not release idempotency record");
                    }
                    Err(GuardError::Handler(e))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_payload_order_insensitive() {
        let a = IdempotencyKey::new("fn", "evt-1", br#"{"a":1,"b":2}"#);
        let b = IdempotencyKey::new("fn", "evt-1", br#"{ "b": 2, "a": 1 }"#);
        let c = IdempotencyKey::new("fn", "evt-1", br#"{"a":1,"b":3}"#);
        let d = IdempotencyKey::new("other", "evt-1", br#"{"a":1,"b":2}"#);
        assert_eq!(a, b);
        assert_eq!(a.as_str(), c.as_str());
        assert_ne!(a.payload_hash, c.payload_hash);
        assert_ne!(a.as_str(), d.as_str());
        assert!(a.as_str().starts_with("fn#"));
    }
}
