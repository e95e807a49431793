//! The function's errors, each with a stable `error_type` and a retry verdict.

use autopilot_shared::config::ConfigError;
use autopilot_shared::error::{AwsCallError, ErrorKind, diagnostic};
use autopilot_shared::events::EventError;
use autopilot_shared::idempotency::IdempotencyError;
use lambda_runtime::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    #[error("the event carries no {0}")]
    MissingContext(&'static str),
    #[error("run {0} is being worked on by another invocation")]
    RunBusy(String),
    #[error("stored object {key} is not valid: {reason}")]
    CorruptObject { key: String, reason: String },
    #[error("checkpoint of run {run} is not valid: {reason}")]
    CorruptCheckpoint { run: String, reason: String },
    #[error("inventory pages are not ordered by node id ({0}); the diff needs them sorted")]
    Unordered(String),
}

impl ErrorKind for InventoryError {
    fn error_type(&self) -> &'static str {
        match self {
            InventoryError::Event(e) => e.error_type(),
            InventoryError::Config(e) => e.error_type(),
            InventoryError::Idempotency(e) => e.error_type(),
            InventoryError::Aws(e) if e.is_throttling() => "AwsThrottled",
            InventoryError::Aws(_) => "AwsCallFailed",
            InventoryError::MissingContext(_) => "MissingEventContext",
            InventoryError::RunBusy(_) => "RunInProgress",
            InventoryError::CorruptObject { .. } => "CorruptObject",
            InventoryError::CorruptCheckpoint { .. } => "CorruptCheckpoint",
            InventoryError::Unordered(_) => "UnorderedInventory",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            InventoryError::Event(_)
            | InventoryError::Config(_)
            | InventoryError::MissingContext(_)
            | InventoryError::CorruptObject { .. }
            | InventoryError::CorruptCheckpoint { .. }
            | InventoryError::Unordered(_) => false,
            InventoryError::Idempotency(e) => e.retryable(),
            InventoryError::Aws(e) => e.retryable,
            InventoryError::RunBusy(_) => true,
        }
    }
}

impl From<InventoryError> for Diagnostic {
    fn from(e: InventoryError) -> Self {
        diagnostic(&e)
    }
}

pub fn aws<E, R>(
    op: &'static str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> InventoryError
where
    E: std::error::Error
        + aws_smithy_types::error::metadata::ProvideErrorMetadata
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    InventoryError::Aws(AwsCallError::from_sdk(op, e))
}
