//! The function's errors, each with a stable `error_type` and a retry verdict.

use autopilot_shared::config::ConfigError;
use autopilot_shared::error::{AwsCallError, ErrorKind, diagnostic};
use autopilot_shared::events::EventError;
use autopilot_shared::idempotency::IdempotencyError;
use autopilot_shared::params::ParamError;
use lambda_runtime::Diagnostic;

use crate::policy::PolicyError;
use crate::remediate::SideEffectError;

#[derive(Debug, thiserror::Error)]
pub enum RemediatorError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("remediation policy could not be loaded")]
    PolicyUnavailable(#[source] ParamError),
    #[error(transparent)]
    PolicyInvalid(#[from] PolicyError),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    /// A side-effecting call that failed other than by throttling (see the `From` impl).
    #[error(transparent)]
    SideEffect(SideEffectError),
    #[error("sweep report could not be written")]
    Report(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("continuation event could not be published")]
    Continuation(#[source] autopilot_shared::audit::AuditError),
    #[error("no checkpoint for sweep continuation")]
    CheckpointMissing,
    /// Another live delivery of the sweep holds its lease (a retry of the planning event and
    /// a continuation, say): nothing was sent; a later retry finds it given back or expired.
    #[error("sweep {sweep_id} is held by another delivery until {until_ms} (epoch ms)")]
    SweepInProgress { sweep_id: String, until_ms: i64 },
    /// This delivery's lease expired or was taken over before a send: the send was not made.
    #[error("sweep {sweep_id} is no longer held by this delivery: nothing more is sent")]
    SweepLeaseLost { sweep_id: String },
}

/// Throttled on every try is an AWS throttling failure like any other (its type and metric);
/// the rest keep what they say about the call's effect.
impl From<SideEffectError> for RemediatorError {
    fn from(e: SideEffectError) -> Self {
        match e {
            SideEffectError::Throttled(e) => RemediatorError::Aws(e),
            other => RemediatorError::SideEffect(other),
        }
    }
}

impl ErrorKind for RemediatorError {
    fn error_type(&self) -> &'static str {
        match self {
            RemediatorError::Event(e) => e.error_type(),
            RemediatorError::Config(e) => e.error_type(),
            RemediatorError::PolicyUnavailable(_) => "PolicyUnavailable",
            RemediatorError::PolicyInvalid(_) => "PolicyInvalid",
            RemediatorError::Idempotency(e) => e.error_type(),
            RemediatorError::Aws(e) if e.is_throttling() => "AwsThrottled",
            RemediatorError::Aws(_) => "AwsCallFailed",
            RemediatorError::SideEffect(e) => e.error_type(),
            RemediatorError::Report(_) => "ReportWriteFailed",
            RemediatorError::Continuation(_) => "ContinuationFailed",
            RemediatorError::CheckpointMissing => "CheckpointMissing",
            // One type for both: another delivery carries the sweep, retry later.
            RemediatorError::SweepInProgress { .. } | RemediatorError::SweepLeaseLost { .. } => {
                "SweepInProgress"
            }
        }
    }

    fn retryable(&self) -> bool {
        match self {
            RemediatorError::Event(_)
            | RemediatorError::Config(_)
            | RemediatorError::PolicyInvalid(_)
            | RemediatorError::CheckpointMissing => false,
            RemediatorError::PolicyUnavailable(e) => e.retryable(),
            RemediatorError::Idempotency(e) => e.retryable(),
            RemediatorError::Aws(e) => e.retryable,
            RemediatorError::SideEffect(e) => e.retryable(),
            RemediatorError::Report(_)
            | RemediatorError::Continuation(_)
            | RemediatorError::SweepInProgress { .. }
            | RemediatorError::SweepLeaseLost { .. } => true,
        }
    }
}

impl From<RemediatorError> for Diagnostic {
    fn from(e: RemediatorError) -> Self {
        diagnostic(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_held_elsewhere_is_a_retryable_sweep_in_progress() {
        let busy = RemediatorError::SweepInProgress {
            sweep_id: "s".into(),
            until_ms: 1,
        };
        let lost = RemediatorError::SweepLeaseLost {
            sweep_id: "s".into(),
        };
        for e in [busy, lost] {
            assert_eq!(e.error_type(), "SweepInProgress");
            assert!(e.retryable());
            let d: Diagnostic = e.into();
            assert_eq!(d.error_type, "SweepInProgress");
        }
    }
}
