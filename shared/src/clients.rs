//! AWS SDK configuration, loaded once per cold start.
//!
//! Honours `AWS_ENDPOINT_URL` (the local emulator) through the SDK's own endpoint
//! resolution, uses adaptive retries (throttling during fleet-wide paging is the most common
//! failure against SSM), and switches S3 to path-style addressing when an endpoint override
//! is set, because `bucket.localhost` does not resolve.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

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
    aws_sdk_ssm::Client::new(cfg)
}

pub fn dynamodb(cfg: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(cfg)
}

pub fn eventbridge(cfg: &SdkConfig) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(cfg)
}

pub fn sns(cfg: &SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(cfg)
}

pub fn s3(cfg: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style = cfg.endpoint_url().is_some();
    let conf = aws_sdk_s3::config::Builder::from(cfg)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
