//! DynamoDB plumbing every ledger, lease and checkpoint table uses: attribute values, the
//! consistent read by key, and conditional-write outcomes.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::AwsCallError;

/// One item as DynamoDB returns it.
pub type Item = HashMap<String, AttributeValue>;

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Whether a write failed only because its condition did not hold.
pub fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(ProvideErrorMetadata::code)
        == Some("ConditionalCheckFailedException")
}

/// A conditional write's outcome: `None` when its condition did not hold (the record is no
/// longer as the writer expected), any other failure an error.
pub fn unless_condition_failed<T, E, R>(
    op: &'static str,
    res: Result<T, SdkError<E, R>>,
) -> Result<Option<T>, AwsCallError>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_condition_failed(&e) => Ok(None),
        Err(e) => Err(AwsCallError::from_sdk(op, e)),
    }
}

/// The item under partition key `pk`, read consistently: a ledger decides on what it reads,
/// so an eventually consistent read could miss a claim written a moment ago.
pub async fn get_consistent(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
) -> Result<Option<Item>, AwsCallError> {
    let out = ddb
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| AwsCallError::from_sdk("GetItem", e))?;
    Ok(out.item)
}
