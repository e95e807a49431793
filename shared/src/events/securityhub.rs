//! AWS Security Hub "Security Hub Findings - Imported" events (ASFF findings).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityHubFindings {
    pub findings: Vec<AsffFinding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffFinding {
    pub id: String,
    #[serde(default)]
    pub product_arn: Option<String>,
    #[serde(default)]
    pub generator_id: Option<String>,
    #[serde(default)]
    pub aws_account_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub severity: Option<AsffSeverity>,
    #[serde(default)]
    pub resources: Vec<AsffResource>,
    #[serde(default)]
    pub workflow: Option<AsffWorkflow>,
    #[serde(default)]
    pub record_state: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffSeverity {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::opt_f64_or_string")]
    pub normalized: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffResource {
    #[serde(rename = "Type")]
    pub resource_type: String,
    pub id: String,
    #[serde(default)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffWorkflow {
    pub status: String,
}

impl AsffFinding {
    pub fn workflow_status(&self) -> Option<&str> {
        self.workflow.as_ref().map(|w| w.status.as_str())
    }

    /// A finding is closed when its workflow is RESOLVED/SUPPRESSED or its record archived.
    pub fn is_closed(&self) -> bool {
        matches!(self.workflow_status(), Some("RESOLVED" | "SUPPRESSED"))
            || self.record_state.as_deref() == Some("ARCHIVED")
    }

    pub fn severity_label(&self) -> &str {
        self.severity
            .as_ref()
            .and_then(|s| s.label.as_deref())
            .unwrap_or("INFORMATIONAL")
    }
}
