//! AWS Config "Config Rules Compliance Change" events.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRuleComplianceChange {
    pub resource_id: String,
    pub resource_type: String,
    pub config_rule_name: String,
    #[serde(default, rename = "configRuleARN")]
    pub config_rule_arn: Option<String>,
    #[serde(default)]
    pub aws_account_id: Option<String>,
    #[serde(default)]
    pub aws_region: Option<String>,
    #[serde(default)]
    pub message_type: Option<String>,
    pub new_evaluation_result: EvaluationResult,
    #[serde(default)]
    pub old_evaluation_result: Option<EvaluationResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationResult {
    /// COMPLIANT, NON_COMPLIANT, NOT_APPLICABLE or INSUFFICIENT_DATA.
    pub compliance_type: String,
    #[serde(default)]
    pub annotation: Option<String>,
    #[serde(default)]
    pub result_recorded_time: Option<String>,
}
