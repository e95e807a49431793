//! Adapter: the side effects — Run Command (AWS-RunPatchBaseline Install), State Manager
//! (StartAssociationsOnce) and Automation (StartAutomationExecution with a deterministic token).

use std::collections::HashMap;

use autopilot_shared::error::AwsCallError;
use sha2::{Digest, Sha256};

use crate::plan::AutomationRun;
use crate::policy::PatchAction;

pub const PATCH_DOCUMENT: &str = "AWS-RunPatchBaseline";

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
        let comment: String = format!("ssm-autopilot compliance sweep {sweep_id}")
            .chars()
            .take(100)
            .collect();
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
}
