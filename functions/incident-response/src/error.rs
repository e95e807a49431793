//! The function's errors, each with a stable `error_type` and a retry verdict.

use autopilot_shared::config::ConfigError;
use autopilot_shared::error::{AwsCallError, ErrorKind, diagnostic};
use autopilot_shared::events::EventError;
use autopilot_shared::idempotency::IdempotencyError;
use autopilot_shared::params::ParamError;
use lambda_runtime::Diagnostic;

use crate::plans::PlansError;

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("response plans could not be loaded")]
    PlansUnavailable(#[source] ParamError),
    #[error(transparent)]
    PlansInvalid(#[from] PlansError),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    #[error(transparent)]
    Aws(#[from] AwsCallError),
}

impl ErrorKind for IncidentError {
    fn error_type(&self) -> &'static str {
        match self {
            IncidentError::Event(e) => e.error_type(),
            IncidentError::Config(e) => e.error_type(),
            IncidentError::PlansUnavailable(_) => "ResponsePlansUnavailable",
            IncidentError::PlansInvalid(_) => "ResponsePlansInvalid",
            IncidentError::Idempotency(e) => e.error_type(),
            IncidentError::Aws(e) if e.is_throttling() => "AwsThrottled",
            IncidentError::Aws(_) => "AwsCallFailed",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            IncidentError::Event(_) | IncidentError::Config(_) | IncidentError::PlansInvalid(_) => {
                false
            }
            IncidentError::PlansUnavailable(e) => e.retryable(),
            IncidentError::Idempotency(e) => e.retryable(),
            IncidentError::Aws(e) => e.retryable,
        }
    }
}

impl From<IncidentError> for Diagnostic {
    fn from(e: IncidentError) -> Self {
        diagnostic(&e)
    }
}
