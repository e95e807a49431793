//! Systems Manager events: Configuration Compliance State Change, EC2 Command Invocation
//! Status-change Notification, EC2 Automation Execution Status-change Notification.

use serde::{Deserialize, Serialize};

/// `detail-type: Configuration Compliance State Change`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ComplianceStateChange {
    /// `managed-instance` for nodes.
    #[serde(default)]
    pub resource_type: Option<String>,
    pub resource_id: String,
    /// `compliant` or `non_compliant` (lower case in real events; compared case-insensitively).
    pub compliance_status: String,
    /// `Patch`, `Association` or `Custom:<name>`.
    pub compliance_type: String,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub patch_baseline_id: Option<String>,
    #[serde(default)]
    pub association_id: Option<String>,
}

impl ComplianceStateChange {
    pub fn is_non_compliant(&self) -> bool {
        self.compliance_status.eq_ignore_ascii_case("non_compliant")
            || self.compliance_status.eq_ignore_ascii_case("non-compliant")
    }
}

/// `detail-type: EC2 Command Invocation Status-change Notification`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CommandInvocationStatus {
    pub command_id: String,
    pub document_name: String,
    pub instance_id: String,
    pub status: String,
    #[serde(default)]
    pub requested_date_time: Option<String>,
}

/// `detail-type: EC2 Automation Execution Status-change Notification`.
///
/// Real events use PascalCase keys and `Mar 14, 2026 1:10:02 PM` style times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AutomationExecutionStatus {
    pub execution_id: String,
    pub definition: String,
    pub status: String,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
    #[serde(default)]
    pub executed_by: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::opt_f64_or_string")]
    pub definition_version: Option<f64>,
}

impl AutomationExecutionStatus {
    pub fn outcome(&self) -> AutomationOutcome {
        match self.status.as_str() {
            "Success" | "CompletedWithSuccess" => AutomationOutcome::Succeeded,
            "Failed" | "CompletedWithFailure" => AutomationOutcome::Failed,
            "TimedOut" => AutomationOutcome::TimedOut,
            "Cancelled" | "Cancelling" => AutomationOutcome::Cancelled,
            _ => AutomationOutcome::Running,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutomationOutcome {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}
