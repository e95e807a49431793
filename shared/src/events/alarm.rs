//! CloudWatch "CloudWatch Alarm State Change" events: metric, metric-math and composite alarms.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmStateChange {
    pub alarm_name: String,
    pub state: AlarmState,
    #[serde(default)]
    pub previous_state: Option<AlarmState>,
    #[serde(default)]
    pub configuration: AlarmConfiguration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmState {
    pub value: AlarmStateValue,
    #[serde(default)]
    pub reason: Option<String>,
    /// CloudWatch sends this as a JSON document encoded in a string; kept verbatim.
    #[serde(default)]
    pub reason_data: Option<String>,
    /// `2026-03-14T13:10:02.985+0000` (not RFC 3339); parse with [`super::parse_aws_time`].
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub actions_suppressed_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmStateValue {
    Ok,
    Alarm,
    InsufficientData,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmConfiguration {
    #[serde(default)]
    pub description: Option<String>,
    /// Metric and metric-math alarms.
    #[serde(default)]
    pub metrics: Vec<AlarmMetric>,
    /// Composite alarms.
    #[serde(default)]
    pub alarm_rule: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmMetric {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub metric_stat: Option<MetricStat>,
    #[serde(default)]
    pub return_data: Option<bool>,
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricStat {
    pub metric: Metric,
    #[serde(default)]
    pub period: Option<Value>,
    #[serde(default)]
    pub stat: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
}

/// What kind of alarm produced the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmKind {
    Metric,
    MetricMath,
    Composite,
}

impl AlarmStateChange {
    pub fn kind(&self) -> AlarmKind {
        if self.configuration.alarm_rule.is_some() {
            AlarmKind::Composite
        } else if self
            .configuration
            .metrics
            .iter()
            .any(|m| m.expression.is_some())
        {
            AlarmKind::MetricMath
        } else {
            AlarmKind::Metric
        }
    }

    /// Values of well-known resource dimensions (InstanceId, AutoScalingGroupName...) across
    /// every metric of the alarm, deduplicated, in order of appearance.
    pub fn dimension_values(&self, dimension: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in &self.configuration.metrics {
            if let Some(v) = m
                .metric_stat
                .as_ref()
                .and_then(|s| s.metric.dimensions.get(dimension))
                && !out.contains(&v.as_str())
            {
                out.push(v);
            }
        }
        out
    }
}
