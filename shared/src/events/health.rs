//! AWS Health "AWS Health Event" events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthEvent {
    pub event_arn: String,
    pub service: String,
    pub event_type_code: String,
    /// `issue`, `accountNotification`, `scheduledChange` or `investigation`.
    pub event_type_category: String,
    #[serde(default)]
    pub status_code: Option<String>,
    /// RFC 1123, e.g. `Wed, 14 Jan 2026 10:00:00 GMT`.
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
    #[serde(default)]
    pub event_region: Option<String>,
    #[serde(default)]
    pub event_description: Vec<HealthDescription>,
    #[serde(default)]
    pub affected_entities: Vec<AffectedEntity>,
    #[serde(default)]
    pub affected_account: Option<String>,
    /// Sent as strings ("1").
    #[serde(default, deserialize_with = "super::lenient::opt_u64_or_string")]
    pub page: Option<u64>,
    #[serde(default, deserialize_with = "super::lenient::opt_u64_or_string")]
    pub total_pages: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthDescription {
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub latest_description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffectedEntity {
    pub entity_value: String,
    #[serde(default)]
    pub tags: Option<Value>,
}

impl HealthEvent {
    pub fn description(&self) -> Option<&str> {
        self.event_description
            .iter()
            .find_map(|d| d.latest_description.as_deref())
    }
}
