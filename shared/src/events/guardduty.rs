//! Amazon GuardDuty "GuardDuty Finding" events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardDutyFinding {
    pub id: String,
    #[serde(default)]
    pub arn: Option<String>,
    #[serde(rename = "type")]
    pub finding_type: String,
    /// 1.0–8.9 (10 for attack sequences); a number in real events.
    pub severity: f64,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub resource: GuardDutyResource,
    #[serde(default)]
    pub service: Option<GuardDutyService>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardDutyResource {
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub instance_details: Option<InstanceDetails>,
    #[serde(default)]
    pub access_key_details: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetails {
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<KeyValueTag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValueTag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardDutyService {
    #[serde(default, deserialize_with = "super::lenient::opt_u64_or_string")]
    pub count: Option<u64>,
    #[serde(default)]
    pub archived: Option<bool>,
}

impl GuardDutyFinding {
    /// GuardDuty's own bands: Low < 4.0 ≤ Medium < 7.0 ≤ High < 9.0 ≤ Critical.
    pub fn severity_label(&self) -> &'static str {
        match self.severity {
            s if s >= 9.0 => "CRITICAL",
            s if s >= 7.0 => "HIGH",
            s if s >= 4.0 => "MEDIUM",
            _ => "LOW",
        }
    }

    pub fn instance_id(&self) -> Option<&str> {
        self.resource
            .instance_details
            .as_ref()?
            .instance_id
            .as_deref()
    }
}
