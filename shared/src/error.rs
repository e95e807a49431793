//! Mapping of typed errors onto Lambda's error response.
//!
//! Every error a handler returns has a stable `error_type` string (what operators alarm
//! on) and says whether a retry could succeed. Non-retryable failures are reported in the
//! response body instead of failing the invocation, so EventBridge and Lambda do not retry
//! what cannot succeed.

use lambda_runtime::Diagnostic;

/// Implemented by every function's error enum.
pub trait ErrorKind: std::error::Error {
    /// Stable identifier, e.g. `ThrottledUpstream`.
    fn error_type(&self) -> &'static str;
    /// Whether the same event could succeed on a later attempt.
    fn retryable(&self) -> bool;
}

/// Builds the Lambda diagnostic for an error, including its source chain in the message.
pub fn diagnostic<E: ErrorKind + ?Sized>(err: &E) -> Diagnostic {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    Diagnostic {
        error_type: err.error_type().to_owned(),
        error_message: message,
    }
}

/// Classifies an SDK error: throttling, timeouts, dispatch failures and 5xx are retryable.
pub fn sdk_error_is_retryable<E, R>(
    err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> bool
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or_default();
            is_throttling_code(code)
                || code.contains("InternalServer")
                || code == "ServiceUnavailable"
        }
        _ => false,
    }
}

pub fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "ProvisionedThroughputExceededException"
            | "RequestThrottledException"
            | "SlowDown"
    )
}

/// A failed AWS call, with what operators and retry logic need: the operation, the
/// service's error code, and whether a later attempt could succeed.
#[derive(Debug, thiserror::Error)]
#[error("{op} failed{}", code.as_deref().map(|c| format!(" with {c}")).unwrap_or_default())]
pub struct AwsCallError {
    pub op: &'static str,
    pub code: Option<String>,
    pub retryable: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl AwsCallError {
    pub fn from_sdk<E, R>(
        op: &'static str,
        err: aws_smithy_runtime_api::client::result::SdkError<E, R>,
    ) -> Self
    where
        E: std::error::Error
            + aws_smithy_types::error::metadata::ProvideErrorMetadata
            + Send
            + Sync
            + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = err
            .as_service_error()
            .and_then(|e| e.code())
            .map(str::to_owned);
        Self {
            op,
            code,
            retryable: sdk_error_is_retryable(&err),
            source: Box::new(err),
        }
    }

    pub fn is_throttling(&self) -> bool {
        self.code.as_deref().is_some_and(is_throttling_code)
    }
}
