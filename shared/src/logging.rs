//! Structured logging set-up: JSON lines through `tracing`, level from the template
//! (`AWS_LAMBDA_LOG_LEVEL`), format from `AWS_LAMBDA_LOG_FORMAT`.

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    lambda_runtime::tracing::init_default_subscriber();
}
