//! Adapter: the side effects — Run Command (AWS-RunPatchBaseline Install), State Manager
//! (StartAssociationsOnce) and Automation (StartAutomationExecution with a deterministic token).

use std::collections::HashMap;

use autopilot_shared::error::AwsCallError;
use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey};
use sha2::{Digest, Sha256};

use crate::plan::AutomationRun;
use crate::policy::PatchAction;
use crate::retry::throttled;

pub const PATCH_DOCUMENT: &str = "AWS-RunPatchBaseline";
/// SendCommand's `Comment` holds at most 100 characters.
const COMMENT_MAX: usize = 100;
const COMMENT_PREFIX: &str = "ssm-autopilot compliance sweep ";

/// A patch command found in Run Command's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    pub command_id: String,
    pub nodes: Vec<String>,
}

/// The `Comment` of a sweep's patch commands: it is how a retried step finds a command an
/// earlier delivery sent but did not record. A sweep id too long for it is hashed.
pub fn patch_comment(sweep_id: &str) -> String {
    let plain = format!("{COMMENT_PREFIX}{sweep_id}");
    if plain.chars().count() <= COMMENT_MAX {
        return plain;
    }
    let digest = Sha256::digest(sweep_id.as_bytes());
    let hex: String = digest.iter().take(24).map(|b| format!("{b:02x}")).collect();
    format!("{COMMENT_PREFIX}sha256:{hex}")
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
    /// the attempt in the ledger before calling, so a retry after a crash does not resend.
    pub async fn patch(
        &self,
        nodes: &[String],
        action: &PatchAction,
        sweep_id: &str,
    ) -> Result<String, AwsCallError> {
        let comment = patch_comment(sweep_id);
        let out = self
            .ssm
            .send_command()
            .document_name(PATCH_DOCUMENT)
            .set_instance_ids(Some(nodes.to_vec()))
            .parameters("Operation", vec!["Install".to_owned()])
            .parameters("RebootOption", vec![action.reboot_option.clone()])
            .max_concurrency(&action.max_concurrency)
            .max_errors(&action.max_errors)
            .timeout_seconds(action.timeout_seconds)
            .comment(comment)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("SendCommand", e))?;
        Ok(out
            .command()
            .and_then(|c| c.command_id())
            .unwrap_or_default()
            .to_owned())
    }

    /// The patch commands this sweep sent since `since` (epoch seconds), from ListCommands
    /// filtered by time and document and matched on the sweep's comment.
    pub async fn sent_patch_commands(
        &self,
        sweep_id: &str,
        since: i64,
    ) -> Result<Vec<SentCommand>, AwsCallError> {
        let comment = patch_comment(sweep_id);
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
                    .map(|c| SentCommand {
                        command_id: c.command_id().unwrap_or_default().to_owned(),
                        nodes: c.instance_ids().to_vec(),
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

    pub async fn associations(&self, ids: &[String]) -> Result<(), AwsCallError> {
        self.ssm
            .start_associations_once()
            .set_association_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("StartAssociationsOnce", e))?;
        Ok(())
    }

    pub async fn automation(
        &self,
        run: &AutomationRun,
        token: &str,
    ) -> Result<String, AwsCallError> {
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
            .map_err(|e| AwsCallError::from_sdk("StartAutomationExecution", e))?;
        Ok(out.automation_execution_id().unwrap_or_default().to_owned())
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
    fn patch_comments_name_the_sweep_within_100_chars() {
        let id = "6f1c2a9e-0d1b-4c8e-9a57-3e2b1d0c9f88";
        assert_eq!(
            patch_comment(id),
            format!("ssm-autopilot compliance sweep {id}")
        );
        let long_a = format!("{}a", "x".repeat(120));
        let long_b = format!("{}b", "x".repeat(120));
        assert!(patch_comment(&long_a).chars().count() <= 100);
        // Truncation would make the two sweeps' commands indistinguishable.
        assert_ne!(patch_comment(&long_a), patch_comment(&long_b));
        assert_eq!(patch_comment(&long_a), patch_comment(&long_a));
    }
}
