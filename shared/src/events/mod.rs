//! Typed EventBridge events handled by ssm-autopilot and the classifier that produces them.
//!
//! Every event arrives as an [`EventBridgeEvent`] envelope from `aws_lambda_events` with one
//! of our typed `detail` structs. [`classify`] turns raw bytes into one [`AutopilotEvent`] or a
//! typed [`EventError`]; it never panics and validates the identifiers that later flow into
//! API calls.

pub mod alarm;
pub mod config_rules;
pub mod ec2;
pub mod guardduty;
pub mod health;
pub mod ids;
pub mod lenient;
pub mod scheduled;
pub mod securityhub;
pub mod ssm;

use std::borrow::Cow;

pub use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

pub use alarm::{AlarmKind, AlarmStateChange, AlarmStateValue};
pub use config_rules::ConfigRuleComplianceChange;
pub use ec2::{Ec2State, Ec2StateChange, SpotInterruption};
pub use guardduty::GuardDutyFinding;
pub use health::HealthEvent;
pub use lenient::parse_aws_time;
pub use scheduled::ScheduledDetail;
pub use securityhub::SecurityHubFindings;
pub use ssm::{
    AutomationExecutionStatus, AutomationOutcome, CommandInvocationStatus, ComplianceStateChange,
};

/// Largest event accepted: EventBridge's and Lambda's asynchronous payload limit (1 MB).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Source used by ssm-autopilot's own events (on-demand requests and audit events).
pub const AUTOPILOT_SOURCE_PREFIX: &str = "ssm-autopilot";

/// A typed envelope; boxed so that the enum stays small whichever detail it holds.
pub type Event<T> = Box<EventBridgeEvent<T>>;

/// Every event the product understands.
#[derive(Debug, Clone, PartialEq)]
pub enum AutopilotEvent {
    Alarm(Event<AlarmStateChange>),
    Ec2StateChange(Event<Ec2StateChange>),
    SpotInterruption(Event<SpotInterruption>),
    GuardDuty(Event<GuardDutyFinding>),
    SecurityHub(Event<SecurityHubFindings>),
    ConfigCompliance(Event<ConfigRuleComplianceChange>),
    SsmCompliance(Event<ComplianceStateChange>),
    CommandStatus(Event<CommandInvocationStatus>),
    AutomationStatus(Event<AutomationExecutionStatus>),
    Health(Event<HealthEvent>),
    /// EventBridge rule schedule or EventBridge Scheduler.
    Scheduled(Event<ScheduledDetail>),
    /// An operator's on-demand request (`source: ssm-autopilot...`).
    Request(Event<ScheduledDetail>),
}

/// Why an input is not a usable event. None of these is retryable: redelivery cannot fix it.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("not an EventBridge event: {}", sanitized(.0))]
    Malformed(#[source] serde_json::Error),
    #[error("not an EventBridge event: {0}")]
    MissingField(&'static str),
    #[error("unsupported event: source {event_source:?}, detail-type {detail_type:?}")]
    Unsupported {
        event_source: String,
        detail_type: String,
    },
    #[error("invalid {kind} event: {}", sanitized(err))]
    InvalidDetail {
        kind: &'static str,
        #[source]
        err: serde_json::Error,
    },
    #[error("invalid {kind} event: field {field} {reason}")]
    InvalidField {
        kind: &'static str,
        field: &'static str,
        reason: &'static str,
    },
}

impl EventError {
    /// Stable identifier used as the Lambda `errorType` and in metrics.
    pub fn error_type(&self) -> &'static str {
        match self {
            EventError::TooLarge { .. } => "EventTooLarge",
            EventError::Malformed(_) | EventError::MissingField(_) => "MalformedEvent",
            EventError::Unsupported { .. } => "UnsupportedEvent",
            EventError::InvalidDetail { .. } => "InvalidEventDetail",
            EventError::InvalidField { .. } => "InvalidEventField",
        }
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, rename = "detail-type")]
    detail_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    detail: Option<&'a RawValue>,
}

/// Turns raw bytes into a typed event, or says precisely why it cannot.
pub fn classify(raw: &[u8]) -> Result<AutopilotEvent, EventError> {
    classify_raw(raw).map(|c| c.event)
}

/// A typed event next to its `detail` as it arrived (a JSON value, or for some producers a
/// string holding one), borrowed from the raw bytes.
#[derive(Debug)]
pub struct Classified<'a> {
    pub event: AutopilotEvent,
    pub raw: &'a [u8],
    pub detail: &'a RawValue,
}

/// As [`classify`], keeping the location of `detail`: a consumer that reads fields the typed
/// structs do not model starts there instead of scanning the envelope again.
pub fn classify_raw(raw: &[u8]) -> Result<Classified<'_>, EventError> {
    if raw.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge {
            size: raw.len(),
            limit: MAX_EVENT_BYTES,
        });
    }
    let head: Head<'_> = serde_json::from_slice(raw).map_err(EventError::Malformed)?;
    let source = head.source.ok_or(EventError::MissingField("source"))?;
    let detail_type = head
        .detail_type
        .ok_or(EventError::MissingField("detail-type"))?;
    let detail = head.detail.ok_or(EventError::MissingField("detail"))?;
    let string_detail = detail.get().starts_with('"');
    let p = Parse { raw, string_detail };

    let event = match (source.as_ref(), detail_type.as_ref()) {
        ("aws.cloudwatch", "CloudWatch Alarm State Change") => {
            AutopilotEvent::Alarm(p.typed("alarm")?)
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let e: Event<Ec2StateChange> = p.typed("ec2-state-change")?;
            require(
                ids::is_ec2_instance_id(&e.detail.instance_id),
                "ec2-state-change",
                "instance-id",
            )?;
            AutopilotEvent::Ec2StateChange(e)
        }
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => {
            let e: Event<SpotInterruption> = p.typed("spot-interruption")?;
            require(
                ids::is_ec2_instance_id(&e.detail.instance_id),
                "spot-interruption",
                "instance-id",
            )?;
            AutopilotEvent::SpotInterruption(e)
        }
        ("aws.guardduty", "GuardDuty Finding") => {
            let e: Event<GuardDutyFinding> = p.typed("guardduty")?;
            let sev_ok = e.detail.severity.is_finite() && (0.0..=10.0).contains(&e.detail.severity);
            require(sev_ok, "guardduty", "severity")?;
            require(
                e.detail.instance_id().is_none_or(ids::is_ec2_instance_id),
                "guardduty",
                "instanceId",
            )?;
            require(
                ids::is_finding_type(&e.detail.finding_type),
                "guardduty",
                "type",
            )?;
            AutopilotEvent::GuardDuty(e)
        }
        ("aws.securityhub", "Security Hub Findings - Imported") => {
            let e: Event<SecurityHubFindings> = p.typed("securityhub")?;
            require(!e.detail.findings.is_empty(), "securityhub", "findings")?;
            AutopilotEvent::SecurityHub(e)
        }
        ("aws.config", "Config Rules Compliance Change") => {
            AutopilotEvent::ConfigCompliance(p.typed("config-compliance")?)
        }
        ("aws.ssm", "Configuration Compliance State Change") => {
            let e: Event<ComplianceStateChange> = p.typed("ssm-compliance")?;
            let node = e
                .detail
                .resource_type
                .as_deref()
                .is_none_or(|t| t != "managed-instance")
                || ids::is_managed_node_id(&e.detail.resource_id);
            require(node, "ssm-compliance", "resource-id")?;
            AutopilotEvent::SsmCompliance(e)
        }
        ("aws.ssm", "EC2 Command Invocation Status-change Notification") => {
            let e: Event<CommandInvocationStatus> = p.typed("command-status")?;
            require(
                ids::is_managed_node_id(&e.detail.instance_id),
                "command-status",
                "instance-id",
            )?;
            AutopilotEvent::CommandStatus(e)
        }
        ("aws.ssm", "EC2 Automation Execution Status-change Notification") => {
            let e: Event<AutomationExecutionStatus> = p.typed("automation-status")?;
            require(
                ids::is_safe_token(&e.detail.execution_id),
                "automation-status",
                "ExecutionId",
            )?;
            AutopilotEvent::AutomationStatus(e)
        }
        ("aws.health", "AWS Health Event") => AutopilotEvent::Health(p.typed("health")?),
        ("aws.events" | "aws.scheduler", "Scheduled Event") => {
            AutopilotEvent::Scheduled(p.typed("scheduled")?)
        }
        (s, _) if s.starts_with(AUTOPILOT_SOURCE_PREFIX) => {
            AutopilotEvent::Request(p.typed("request")?)
        }
        (s, d) => {
            return Err(EventError::Unsupported {
                event_source: clip(s),
                detail_type: clip(d),
            });
        }
    };
    let (account, region) = event.account_region();
    require(
        account.is_none_or(ids::is_account_id),
        event.kind(),
        "account",
    )?;
    require(region.is_none_or(ids::is_region), event.kind(), "region")?;
    Ok(Classified { event, raw, detail })
}

struct Parse<'a> {
    raw: &'a [u8],
    string_detail: bool,
}

impl Parse<'_> {
    fn typed<T>(&self, kind: &'static str) -> Result<Event<T>, EventError>
    where
        T: serde::Serialize + DeserializeOwned,
    {
        let invalid = |err| EventError::InvalidDetail { kind, err };
        if !self.string_detail {
            return serde_json::from_slice(self.raw)
                .map(Box::new)
                .map_err(invalid);
        }
        // Rare path: EventBridge Scheduler and some custom producers send `detail` as a
        // JSON document encoded in a string.
        let mut envelope: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(self.raw).map_err(invalid)?;
        if let Some(serde_json::Value::String(inner)) = envelope.get("detail") {
            let inner = if inner.trim().is_empty() {
                "{}"
            } else {
                inner.as_str()
            };
            let parsed: serde_json::Value = serde_json::from_str(inner).map_err(invalid)?;
            envelope.insert("detail".to_owned(), parsed);
        }
        serde_json::from_value(serde_json::Value::Object(envelope))
            .map(Box::new)
            .map_err(invalid)
    }
}

fn require(ok: bool, kind: &'static str, field: &'static str) -> Result<(), EventError> {
    if ok {
        Ok(())
    } else {
        Err(EventError::InvalidField {
            kind,
            field,
            reason: "has an unexpected value",
        })
    }
}

/// Parser messages quote the offending input; keep them printable and short, because they
/// end up in logs and in the Lambda error response.
fn sanitized(e: &serde_json::Error) -> String {
    let text: String = e
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// Echoing attacker-controlled strings into errors and logs is bounded.
fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

macro_rules! envelope {
    ($self:ident, $e:ident => $body:expr) => {
        match $self {
            AutopilotEvent::Alarm($e) => $body,
            AutopilotEvent::Ec2StateChange($e) => $body,
            AutopilotEvent::SpotInterruption($e) => $body,
            AutopilotEvent::GuardDuty($e) => $body,
            AutopilotEvent::SecurityHub($e) => $body,
            AutopilotEvent::ConfigCompliance($e) => $body,
            AutopilotEvent::SsmCompliance($e) => $body,
            AutopilotEvent::CommandStatus($e) => $body,
            AutopilotEvent::AutomationStatus($e) => $body,
            AutopilotEvent::Health($e) => $body,
            AutopilotEvent::Scheduled($e) => $body,
            AutopilotEvent::Request($e) => $body,
        }
    };
}

impl AutopilotEvent {
    /// Short stable name of the event kind, used in logs, metrics dimensions and audit events.
    pub fn kind(&self) -> &'static str {
        match self {
            AutopilotEvent::Alarm(_) => "alarm",
            AutopilotEvent::Ec2StateChange(_) => "ec2-state-change",
            AutopilotEvent::SpotInterruption(_) => "spot-interruption",
            AutopilotEvent::GuardDuty(_) => "guardduty",
            AutopilotEvent::SecurityHub(_) => "securityhub",
            AutopilotEvent::ConfigCompliance(_) => "config-compliance",
            AutopilotEvent::SsmCompliance(_) => "ssm-compliance",
            AutopilotEvent::CommandStatus(_) => "command-status",
            AutopilotEvent::AutomationStatus(_) => "automation-status",
            AutopilotEvent::Health(_) => "health",
            AutopilotEvent::Scheduled(_) => "scheduled",
            AutopilotEvent::Request(_) => "request",
        }
    }

    /// The EventBridge event id; stable across EventBridge and Lambda retries.
    pub fn id(&self) -> Option<&str> {
        envelope!(self, e => e.id.as_deref())
    }

    pub fn detail_type(&self) -> &str {
        envelope!(self, e => e.detail_type.as_str())
    }

    pub fn source(&self) -> &str {
        envelope!(self, e => e.source.as_str())
    }

    pub fn resources(&self) -> &[String] {
        envelope!(self, e => e.resources.as_deref().unwrap_or_default())
    }

    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        envelope!(self, e => e.time)
    }

    pub fn account_region(&self) -> (Option<&str>, Option<&str>) {
        envelope!(self, e => (e.account.as_deref(), e.region.as_deref()))
    }
}

#[cfg(test)]
mod tests;
