//! AWS SDK configuration, loaded once per cold start.
//!
//! Honours `AWS_ENDPOINT_URL` (the local emulator) through the SDK's own endpoint
//! resolution, uses adaptive retries (throttling during fleet-wide paging is the most common
//! failure against SSM), and switches S3 to path-style addressing when an endpoint override
//! is set, because `bucket.localhost` does not resolve. Every client carries
//! [`ThrottleObserver`], so throttling the SDK absorbs by retrying still shows as a metric.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::error::is_throttling_code;

/// Default attempts per call, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Loads the shared SDK configuration. `AWS_MAX_ATTEMPTS` overrides the attempt count.
pub async fn load_sdk_config() -> SdkConfig {
    let attempts = std::env::var("AWS_MAX_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(DEFAULT_MAX_ATTEMPTS);
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::adaptive()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(20))
                .build(),
        )
        .load()
        .await
}

pub fn ssm(cfg: &SdkConfig) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::config::Builder::from(cfg)
        .interceptor(ThrottleObserver)
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

pub fn dynamodb(cfg: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(cfg)
        .interceptor(ThrottleObserver)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

pub fn eventbridge(cfg: &SdkConfig) -> aws_sdk_eventbridge::Client {
    let conf = aws_sdk_eventbridge::config::Builder::from(cfg)
        .interceptor(ThrottleObserver)
        .build();
    aws_sdk_eventbridge::Client::from_conf(conf)
}

pub fn sns(cfg: &SdkConfig) -> aws_sdk_sns::Client {
    let conf = aws_sdk_sns::config::Builder::from(cfg)
        .interceptor(ThrottleObserver)
        .build();
    aws_sdk_sns::Client::from_conf(conf)
}

pub fn s3(cfg: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style = cfg.endpoint_url().is_some();
    let conf = aws_sdk_s3::config::Builder::from(cfg)
        .force_path_style(path_style)
        .interceptor(ThrottleObserver)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Counts every attempt answered with throttling into [`crate::metrics::record_throttle`]
/// (the SDK's retry loop hides these from the caller; the count makes them visible), and
/// every S3 object written into [`crate::metrics::record_object_written`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ThrottleObserver;

impl Intercept for ThrottleObserver {
    fn name(&self) -> &'static str {
        "ThrottleObserver"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let written = matches!(context.output_or_error(), Some(Ok(_)))
            && cfg
                .load::<Metadata>()
                .is_some_and(|m| m.service() == "S3" && m.name() == "PutObject");
        if written {
            crate::metrics::record_object_written();
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(resp) = context.response() {
            let status = resp.status().as_u16();
            let header = resp.headers().get("x-amzn-ErrorType");
            // Non-streaming bodies (every error body) are in memory once deserialized.
            let body = resp.body().bytes().unwrap_or_default();
            if is_throttling_response(status, header, body) {
                crate::metrics::record_throttle();
            }
        }
        Ok(())
    }
}

/// Whether a raw response is throttling, from the wire formats AWS uses: HTTP 429, the
/// `x-amzn-ErrorType` header or `__type`/`code` of JSON protocols (`ns#Code`, `Code:uri`),
/// `<Code>` of the XML protocols (query, S3).
pub fn is_throttling_response(status: u16, error_type: Option<&str>, body: &[u8]) -> bool {
    if status == 429 {
        return true;
    }
    if status < 400 {
        return false;
    }
    let bare = |code: &str| {
        let code = code.split(':').next().unwrap_or(code);
        code.rsplit('#').next().unwrap_or(code).trim().to_owned()
    };
    if let Some(code) = error_type
        && is_throttling_code(&bare(code))
    {
        return true;
    }
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) {
        return ["__type", "code"]
            .iter()
            .filter_map(|k| doc.get(*k).and_then(|v| v.as_str()))
            .any(|c| is_throttling_code(&bare(c)));
    }
    let text = String::from_utf8_lossy(body);
    text.split("<Code>")
        .skip(1)
        .filter_map(|rest| rest.split("</Code>").next())
        .any(|c| is_throttling_code(c.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_throttling_wire_formats() {
        let ddb = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}"#;
        assert!(is_throttling_response(400, None, ddb));
        assert!(is_throttling_response(
            400,
            Some("ThrottlingException:http://x"),
            b""
        ));
        let s3 = b"<Error><Code>SlowDown</Code><Message>reduce</Message></Error>";
        assert!(is_throttling_response(503, None, s3));
        let query = b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code></Error></ErrorResponse>";
        assert!(is_throttling_response(400, None, query));
        assert!(is_throttling_response(429, None, b""));
    }

    #[test]
    fn other_errors_are_not_throttling() {
        let exists = br#"{"__type":"OpsItemAlreadyExistsException","OpsItemId":"oi-1"}"#;
        assert!(!is_throttling_response(
            400,
            Some("OpsItemAlreadyExistsException"),
            exists
        ));
        let internal = b"<Error><Code>InternalError</Code></Error>";
        assert!(!is_throttling_response(500, None, internal));
        // A successful body that happens to mention a throttling code is data, not an error.
        assert!(!is_throttling_response(
            200,
            None,
            br#"{"code":"Throttling"}"#
        ));
    }
}
