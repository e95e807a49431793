//! Adapter: the side effects — Run Command (AWS-RunPatchBaseline Install), State Manager
//! (StartAssociationsOnce) and Automation (StartAutomationExecution with a deterministic token).
//!
//! SendCommand and StartAssociationsOnce carry no idempotency token, so the SDK's own retry
//! could run one call's side effect twice (a 5xx or timeout after SSM accepted it). They run
//! with one SDK attempt; only throttling, which SSM rejects without effect, is retried here.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use autopilot_shared::error::{AwsCallError, is_throttling_code};
use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey};
use sha2::{Digest, Sha256};

use crate::plan::AutomationRun;
use crate::policy::PatchAction;
use crate::retry::throttled;

pub const PATCH_DOCUMENT: &str = "AWS-RunPatchBaseline";
/// SendCommand's `Comment` holds at most 100 characters.
const COMMENT_MAX: usize = 100;
const COMMENT_PREFIX: &str = "ssm-autopilot compliance sweep ";
/// Calls of a non-idempotent operation while it is throttled, the first included.
const THROTTLE_TRIES: u32 = 6;
const THROTTLE_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const THROTTLE_BACKOFF_MAX: Duration = Duration::from_millis(1600);

/// A patch command found in Run Command's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    pub command_id: String,
    pub nodes: Vec<String>,
}

/// Why a side-effecting call failed, which decides what may happen to the attempts claimed
/// for it: only a definite rejection proves nothing ran.
#[derive(Debug, thiserror::Error)]
pub enum SideEffectError {
    /// A 4xx other than throttling (invalid node, document, parameter): nothing ran.
    #[error("{0} (rejected, nothing ran)")]
    Rejected(#[source] AwsCallError),
    /// Throttled on every try: nothing ran, but the call should be made again later.
    #[error("{0} (throttled on every try)")]
    Throttled(#[source] AwsCallError),
    /// A 5xx, timeout, connection or response failure: the call may have taken effect.
    #[error("{0} (outcome unknown)")]
    Unknown(#[source] AwsCallError),
    /// A success without the id the claims are linked to.
    #[error("{op} succeeded without {field}")]
    MissingId {
        op: &'static str,
        field: &'static str,
    },
}

impl SideEffectError {
    /// Whether the claims of the call may be given back (nothing ran).
    pub fn gives_back(&self) -> bool {
        matches!(self, SideEffectError::Rejected(_))
    }

    /// Whether a redelivery could succeed: all but a definite rejection.
    pub fn retryable(&self) -> bool {
        match self {
            SideEffectError::Rejected(e) => e.retryable,
            _ => true,
        }
    }

    /// The same types as any other AWS failure (what operators alarm on); the message says
    /// which case it was.
    pub fn error_type(&self) -> &'static str {
        match self {
            SideEffectError::Throttled(_) => "AwsThrottled",
            _ => "AwsCallFailed",
        }
    }
}

/// What a failed call's answer says about its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Throttled,
    Rejected,
    Unknown,
}

/// The verdict on a service's error answer: throttling (HTTP 429 or a throttling code) and
/// other 4xx are rejections without effect; anything else may have had one.
pub fn verdict(status: u16, code: Option<&str>) -> Verdict {
    if status == 429 || code.is_some_and(is_throttling_code) {
        Verdict::Throttled
    } else if (400..500).contains(&status) {
        Verdict::Rejected
    } else {
        Verdict::Unknown
    }
}

fn classify<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Verdict {
    match err {
        // The request was never sent.
        SdkError::ConstructionFailure(_) => Verdict::Rejected,
        SdkError::ServiceError(se) => verdict(se.raw().status().as_u16(), se.err().code()),
        _ => Verdict::Unknown,
    }
}

fn side_effect_error<E>(op: &'static str, err: SdkError<E>) -> SideEffectError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let v = classify(&err);
    let mut e = AwsCallError::from_sdk(op, err);
    // By status as well as by code: a 429 or an uncoded 5xx is worth another delivery.
    e.retryable = e.retryable || v != Verdict::Rejected;
    match v {
        Verdict::Throttled => SideEffectError::Throttled(e),
        Verdict::Rejected => SideEffectError::Rejected(e),
        Verdict::Unknown => SideEffectError::Unknown(e),
    }
}

/// Backoff before try `n + 1` (n ≥ 1): doubling from 100 ms to 1.6 s, the upper half jittered
/// so concurrent sweeps do not retry in step.
fn throttle_backoff(n: u32) -> Duration {
    let full = THROTTLE_BACKOFF_FIRST
        .saturating_mul(1 << n.saturating_sub(1).min(8))
        .min(THROTTLE_BACKOFF_MAX);
    let half = full / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    let jitter = u64::try_from(uuid::Uuid::new_v4().as_u128() % u128::from(nanos)).unwrap_or(0);
    half + Duration::from_nanos(jitter)
}

/// One SDK attempt per call (see the module doc); throttled calls are made again here.
async fn without_sdk_retry<T, E, F, Fut>(
    op: &'static str,
    mut call: F,
) -> Result<T, SideEffectError>
where
    F: FnMut(aws_sdk_ssm::config::Builder) -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let mut tries = 1;
    loop {
        let one_attempt = aws_sdk_ssm::config::Builder::default()
            .retry_config(RetryConfig::standard().with_max_attempts(1));
        match call(one_attempt).await {
            Ok(out) => return Ok(out),
            Err(e) => match side_effect_error(op, e) {
                SideEffectError::Throttled(e) if tries < THROTTLE_TRIES => {
                    tracing::debug!(op = e.op, tries, "throttled, backing off");
                    tokio::time::sleep(throttle_backoff(tries)).await;
                    tries += 1;
                }
                other => return Err(other),
            },
        }
    }
}

/// The `Comment` of a sweep's patch commands: it is how a retried step finds a command an
/// earlier delivery sent but did not record. It names the function (a tag of its name) as
/// well as the sweep, so stacks sharing an account never adopt each other's commands; a
/// sweep id too long for it is hashed with the function name.
pub fn patch_comment(function: &str, sweep_id: &str) -> String {
    let tag: String = Sha256::digest(function.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let plain = format!("{COMMENT_PREFIX}{sweep_id} fn:{tag}");
    if plain.chars().count() <= COMMENT_MAX {
        return plain;
    }
    let mut h = Sha256::new();
    h.update(function.as_bytes());
    h.update([0u8]);
    h.update(sweep_id.as_bytes());
    let hex: String = h
        .finalize()
        .iter()
        .take(24)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{COMMENT_PREFIX}sha256:{hex}")
}

/// Whether a patch command (its comment and targets) is the one `sweep_id`'s claim of `node`
/// was made for: sent by this function for that sweep, to that node.
pub fn is_claimed_command(
    function: &str,
    sweep_id: &str,
    comment: &str,
    targets: &[String],
    node: &str,
) -> bool {
    comment == patch_comment(function, sweep_id) && targets.iter().any(|t| t == node)
}

pub struct Remediator {
    ssm: aws_sdk_ssm::Client,
}

/// A UUID (version 4 layout) derived from the inputs, so a retried start returns the same
/// execution instead of starting another (StartAutomationExecution ClientToken semantics).
pub fn client_token(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).to_string()
}

impl Remediator {
    pub fn new(ssm: aws_sdk_ssm::Client) -> Self {
        Self { ssm }
    }

    /// One SendCommand for ≤ 50 nodes. SendCommand has no idempotency token: callers record
    /// the attempt in the ledger before calling, so a retry after a crash does not resend,
    /// and the SDK makes one attempt (see the module doc).
    pub async fn patch(
        &self,
        nodes: &[String],
        action: &PatchAction,
        function: &str,
        sweep_id: &str,
    ) -> Result<String, SideEffectError> {
        let comment = patch_comment(function, sweep_id);
        let out = without_sdk_retry("SendCommand", |one_attempt| {
            self.ssm
                .send_command()
                .document_name(PATCH_DOCUMENT)
                .set_instance_ids(Some(nodes.to_vec()))
                .parameters("Operation", vec!["Install".to_owned()])
                .parameters("RebootOption", vec![action.reboot_option.clone()])
                .max_concurrency(&action.max_concurrency)
                .max_errors(&action.max_errors)
                .timeout_seconds(action.timeout_seconds)
                .comment(comment.clone())
                .customize()
                .config_override(one_attempt)
                .send()
        })
        .await?;
        out.command()
            .and_then(|c| c.command_id())
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or(SideEffectError::MissingId {
                op: "SendCommand",
                field: "a command id",
            })
    }

    /// The patch commands this sweep sent since `since` (epoch seconds), from ListCommands
    /// filtered by time and document and matched on the sweep's comment.
    pub async fn sent_patch_commands(
        &self,
        function: &str,
        sweep_id: &str,
        since: i64,
    ) -> Result<Vec<SentCommand>, AwsCallError> {
        let comment = patch_comment(function, sweep_id);
        let after = chrono::DateTime::from_timestamp(since, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let filter = |key, value: &str| {
            CommandFilter::builder()
                .key(key)
                .value(value)
                .build()
                .map_err(|e| AwsCallError {
                    op: "ListCommands",
                    code: None,
                    retryable: false,
                    source: Box::new(e),
                })
        };
        let filters = vec![
            filter(CommandFilterKey::InvokedAfter, &after)?,
            filter(CommandFilterKey::DocumentName, PATCH_DOCUMENT)?,
        ];
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = throttled(|| async {
                self.ssm
                    .list_commands()
                    .set_filters(Some(filters.clone()))
                    .max_results(50)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("ListCommands", e))
            })
            .await?;
            out.extend(
                page.commands()
                    .iter()
                    .filter(|c| c.comment() == Some(comment.as_str()))
                    .filter_map(|c| {
                        let id = c.command_id().filter(|id| !id.is_empty())?;
                        Some(SentCommand {
                            command_id: id.to_owned(),
                            nodes: c.instance_ids().to_vec(),
                        })
                    }),
            );
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// A patch command by id: its comment and target nodes (`None`: not one of
    /// AWS-RunPatchBaseline, or unknown).
    pub async fn patch_command(
        &self,
        command_id: &str,
    ) -> Result<Option<(String, Vec<String>)>, AwsCallError> {
        let page = match throttled(|| async {
            self.ssm
                .list_commands()
                .command_id(command_id)
                .send()
                .await
                .map_err(|e| AwsCallError::from_sdk("ListCommands", e))
        })
        .await
        {
            Ok(page) => page,
            // Not a command id SSM knows: nothing to link, not a failure to retry.
            Err(e) if e.code.as_deref() == Some("InvalidCommandId") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(page
            .commands()
            .iter()
            .find(|c| {
                c.command_id() == Some(command_id) && c.document_name() == Some(PATCH_DOCUMENT)
            })
            .map(|c| {
                (
                    c.comment().unwrap_or_default().to_owned(),
                    c.instance_ids().to_vec(),
                )
            }))
    }

    /// StartAssociationsOnce has no token either: one SDK attempt, like [`Self::patch`].
    pub async fn associations(&self, ids: &[String]) -> Result<(), SideEffectError> {
        without_sdk_retry("StartAssociationsOnce", |one_attempt| {
            self.ssm
                .start_associations_once()
                .set_association_ids(Some(ids.to_vec()))
                .customize()
                .config_override(one_attempt)
                .send()
        })
        .await?;
        Ok(())
    }

    /// The token makes the SDK's retries safe here, so they stay.
    pub async fn automation(
        &self,
        run: &AutomationRun,
        token: &str,
    ) -> Result<String, SideEffectError> {
        let params: HashMap<String, Vec<String>> = run
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let out = self
            .ssm
            .start_automation_execution()
            .document_name(&run.runbook)
            .set_parameters(Some(params))
            .client_token(token)
            .send()
            .await
            .map_err(|e| side_effect_error("StartAutomationExecution", e))?;
        out.automation_execution_id()
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or(SideEffectError::MissingId {
                op: "StartAutomationExecution",
                field: "an execution id",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_uuids() {
        let a = client_token(&["fn", "evt", "AWS-X", "i-1"]);
        assert_eq!(a, client_token(&["fn", "evt", "AWS-X", "i-1"]));
        assert_ne!(a, client_token(&["fn", "evt", "AWS-X", "i-2"]));
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }

    #[test]
    fn patch_comments_name_the_sweep_and_the_function_within_100_chars() {
        let id = "6f1c2a9e-0d1b-4c8e-9a57-3e2b1d0c9f88";
        let stack_a = "prod-ComplianceRemediatorFunction-AbCdEf123456";
        let stack_b = "test-ComplianceRemediatorFunction-ZyXwVu987654";
        let a = patch_comment(stack_a, id);
        assert!(
            a.starts_with(&format!("ssm-autopilot compliance sweep {id} fn:")),
            "{a}"
        );
        assert!(a.chars().count() <= 100);
        assert_eq!(a, patch_comment(stack_a, id), "deterministic");
        // Two stacks in one account run sweeps of the same id (a shared schedule event).
        assert_ne!(a, patch_comment(stack_b, id));
        let long_a = format!("{}a", "x".repeat(120));
        let long_b = format!("{}b", "x".repeat(120));
        assert!(patch_comment(stack_a, &long_a).chars().count() <= 100);
        // Truncation would make the two sweeps' commands indistinguishable.
        assert_ne!(
            patch_comment(stack_a, &long_a),
            patch_comment(stack_a, &long_b)
        );
        assert_ne!(
            patch_comment(stack_a, &long_a),
            patch_comment(stack_b, &long_a)
        );
        assert_eq!(
            patch_comment(stack_a, &long_a),
            patch_comment(stack_a, &long_a)
        );
    }

    #[test]
    fn a_command_belongs_to_a_claim_only_by_its_sweeps_comment_and_targets() {
        let c = patch_comment("fn", "s1");
        let to = vec!["i-1".to_owned(), "i-2".to_owned()];
        assert!(is_claimed_command("fn", "s1", &c, &to, "i-2"));
        assert!(
            !is_claimed_command("fn", "s2", &c, &to, "i-2"),
            "another sweep"
        );
        assert!(
            !is_claimed_command("other", "s1", &c, &to, "i-2"),
            "another stack"
        );
        assert!(
            !is_claimed_command("fn", "s1", &c, &to, "i-3"),
            "not a target"
        );
        assert!(
            !is_claimed_command("fn", "s1", "", &to, "i-1"),
            "no comment"
        );
    }

    #[test]
    fn only_non_throttling_4xx_is_a_rejection() {
        assert_eq!(verdict(400, Some("InvalidInstanceId")), Verdict::Rejected);
        assert_eq!(verdict(400, Some("ValidationException")), Verdict::Rejected);
        assert_eq!(
            verdict(400, Some("ThrottlingException")),
            Verdict::Throttled
        );
        assert_eq!(verdict(429, None), Verdict::Throttled);
        assert_eq!(verdict(500, Some("InternalServerError")), Verdict::Unknown);
        assert_eq!(verdict(503, None), Verdict::Unknown);
    }

    #[test]
    fn throttle_backoff_doubles_to_a_cap_with_jitter() {
        for n in 1..=8 {
            let full = Duration::from_millis((100u64 << (n - 1)).min(1600));
            let b = throttle_backoff(n);
            assert!(b >= full / 2 && b <= full, "try {n}: {b:?}");
        }
    }

    mod mocked {
        //! The SDK's retry inside one call is what the emulator tests cannot see (they run with
        //! one attempt): here the client is configured for 3 attempts, as in production.
        use super::super::*;
        use aws_sdk_ssm::config::http::HttpResponse;
        use aws_sdk_ssm::config::retry::RetryConfig;
        use aws_smithy_mocks::{
            MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock,
        };
        use aws_smithy_types::body::SdkBody;

        fn client(rules: &[&Rule]) -> aws_sdk_ssm::Client {
            let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::Sequential);
            for r in rules {
                interceptor = interceptor.with_rule(r);
            }
            let conf = aws_sdk_ssm::Config::builder()
                .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
                .region(aws_sdk_ssm::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                    "AKIDMOCK", "secret", None, None, "mock",
                ))
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(3)
                        .with_initial_backoff(Duration::from_millis(1)),
                )
                .http_client(create_mock_http_client())
                .interceptor(interceptor)
                .build();
            aws_sdk_ssm::Client::from_conf(conf)
        }

        fn json(status: u16, body: &str) -> HttpResponse {
            let mut r =
                HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body.to_owned()));
            r.headers_mut()
                .insert("content-type", "application/x-amz-json-1.1");
            r
        }

        fn error(status: u16, code: &str) -> HttpResponse {
            json(
                status,
                &format!(r#"{{"__type":"{code}","message":"mocked"}}"#),
            )
        }

        fn action() -> PatchAction {
            PatchAction {
                enabled: true,
                reboot_option: "NoReboot".into(),
                max_concurrency: "10".into(),
                max_errors: "1".into(),
                batch_size: 50,
                timeout_seconds: 600,
            }
        }

        async fn patch(client: aws_sdk_ssm::Client) -> Result<String, SideEffectError> {
            Remediator::new(client)
                .patch(&["i-0123456789abcdef0".into()], &action(), "fn", "sweep-1")
                .await
        }

        #[tokio::test]
        async fn a_send_command_answering_500_is_made_once_and_its_outcome_is_unknown() {
            let rule = mock!(aws_sdk_ssm::Client::send_command)
                .sequence()
                .http_response(|| error(500, "InternalServerError"))
                .times(3)
                .build();
            let err = patch(client(&[&rule])).await.unwrap_err();
            assert_eq!(rule.num_calls(), 1, "the SDK must not send it again");
            assert!(matches!(err, SideEffectError::Unknown(_)), "{err:?}");
            assert!(!err.gives_back() && err.retryable());
        }

        #[tokio::test]
        async fn a_throttled_send_command_is_made_again_and_yields_the_command_id() {
            let rule = mock!(aws_sdk_ssm::Client::send_command)
                .sequence()
                .http_response(|| error(400, "ThrottlingException"))
                .http_response(|| json(200, r#"{"Command":{"CommandId":"c-1"}}"#))
                .build();
            assert_eq!(patch(client(&[&rule])).await.unwrap(), "c-1");
            assert_eq!(rule.num_calls(), 2);
        }

        #[tokio::test]
        async fn a_send_command_throttled_on_every_try_is_a_retryable_throttling_failure() {
            let rule = mock!(aws_sdk_ssm::Client::send_command)
                .sequence()
                .http_response(|| error(400, "ThrottlingException"))
                .repeatedly()
                .build();
            let err = patch(client(&[&rule])).await.unwrap_err();
            assert_eq!(rule.num_calls(), THROTTLE_TRIES as usize);
            assert!(matches!(err, SideEffectError::Throttled(_)), "{err:?}");
            assert!(!err.gives_back());
            let err = crate::error::RemediatorError::from(err);
            use autopilot_shared::error::ErrorKind;
            assert_eq!(err.error_type(), "AwsThrottled");
            assert!(err.retryable());
        }

        #[tokio::test]
        async fn an_invalid_instance_id_is_a_rejection_made_once() {
            let rule = mock!(aws_sdk_ssm::Client::send_command)
                .sequence()
                .http_response(|| error(400, "InvalidInstanceId"))
                .times(3)
                .build();
            let err = patch(client(&[&rule])).await.unwrap_err();
            assert_eq!(rule.num_calls(), 1);
            assert!(matches!(err, SideEffectError::Rejected(_)), "{err:?}");
            assert!(err.gives_back() && !err.retryable());
        }

        #[tokio::test]
        async fn a_command_without_an_id_is_an_error() {
            let rule = mock!(aws_sdk_ssm::Client::send_command)
                .sequence()
                .http_response(|| json(200, r#"{"Command":{"CommandId":""}}"#))
                .build();
            let err = patch(client(&[&rule])).await.unwrap_err();
            assert!(matches!(err, SideEffectError::MissingId { .. }), "{err:?}");
            assert!(!err.gives_back() && err.retryable());
        }

        #[tokio::test]
        async fn start_associations_once_answering_500_is_made_once() {
            let rule = mock!(aws_sdk_ssm::Client::start_associations_once)
                .sequence()
                .http_response(|| error(500, "InternalServerError"))
                .times(3)
                .build();
            let err = Remediator::new(client(&[&rule]))
                .associations(&["a-1".into()])
                .await
                .unwrap_err();
            assert_eq!(rule.num_calls(), 1);
            assert!(matches!(err, SideEffectError::Unknown(_)), "{err:?}");
            assert!(!err.gives_back());
        }

        #[tokio::test]
        async fn an_automation_without_an_execution_id_is_an_error() {
            let rule = mock!(aws_sdk_ssm::Client::start_automation_execution)
                .sequence()
                .http_response(|| json(200, "{}"))
                .build();
            let run = AutomationRun {
                runbook: "AWS-X".into(),
                resource_id: "i-1".into(),
                compliance_type: "Custom:X".into(),
                parameters: Default::default(),
            };
            let err = Remediator::new(client(&[&rule]))
                .automation(&run, "00000000-0000-4000-8000-000000000000")
                .await
                .unwrap_err();
            assert!(matches!(err, SideEffectError::MissingId { .. }), "{err:?}");
        }
    }
}
