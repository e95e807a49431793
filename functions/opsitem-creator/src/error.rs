//! The function's errors, each with a stable `error_type` and a retry verdict.

use autopilot_shared::config::ConfigError;
use autopilot_shared::error::{AwsCallError, ErrorKind, diagnostic};
use autopilot_shared::events::EventError;
use autopilot_shared::idempotency::IdempotencyError;
use autopilot_shared::params::ParamError;
use lambda_runtime::Diagnostic;

use crate::rules::RulesError;

#[derive(Debug, thiserror::Error)]
pub enum OpsItemError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("rules could not be loaded")]
    RulesUnavailable(#[source] ParamError),
    #[error(transparent)]
    RulesInvalid(#[from] RulesError),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    #[error(transparent)]
    Aws(#[from] AwsCallError),
}

impl ErrorKind for OpsItemError {
    fn error_type(&self) -> &'static str {
        match self {
            OpsItemError::Event(e) => e.error_type(),
            OpsItemError::Config(e) => e.error_type(),
            OpsItemError::RulesUnavailable(_) => "RulesUnavailable",
            OpsItemError::RulesInvalid(_) => "RulesInvalid",
            OpsItemError::Idempotency(e) => e.error_type(),
            OpsItemError::Aws(e) if e.is_throttling() => "AwsThrottled",
            OpsItemError::Aws(_) => "AwsCallFailed",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            OpsItemError::Event(_) | OpsItemError::Config(_) | OpsItemError::RulesInvalid(_) => {
                false
            }
            OpsItemError::RulesUnavailable(e) => e.retryable(),
            OpsItemError::Idempotency(e) => e.retryable(),
            OpsItemError::Aws(e) => e.retryable,
        }
    }
}

impl From<OpsItemError> for Diagnostic {
    fn from(e: OpsItemError) -> Self {
        diagnostic(&e)
    }
}
