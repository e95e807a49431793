//! What an event says, in the terms OpsItems need: template variables, a deterministic
//! dedup identity, related resource ARNs, and whether it signals a problem or a recovery.

use std::collections::BTreeMap;

use autopilot_shared::events::{
    AlarmStateValue, AutomationOutcome, AutopilotEvent, EventBridgeEvent,
};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use autopilot_shared::raw_pointer;

/// Longest dedup string kept readable; longer identities are hashed.
const MAX_READABLE_DEDUP: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Problem,
    Recovery,
    Neutral(&'static str),
}

#[derive(Debug, Clone)]
pub struct Facts {
    pub kind: &'static str,
    pub signal: Signal,
    /// Deterministic identity of the problem (`/aws/dedup`).
    pub dedup: String,
    pub vars: BTreeMap<&'static str, String>,
    pub resource_arns: Vec<String>,
    pub resource_ids: Vec<String>,
    /// What rule conditions are evaluated against (the detail, or one finding).
    pub scope: Scope,
}

/// The part of the received event's `detail` a rule's field pointers address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Detail,
    /// One Security Hub finding: `detail.findings[i]`.
    Finding(usize),
    /// Nothing to match fields against.
    None,
}

/// The received event's `detail`, read only when a rule has field conditions. Rules are
/// written against the event as AWS sends it, so fields our typed structs do not model still
/// match; a lookup walks the text to one leaf instead of building the whole document.
pub struct RawDetail<'a> {
    /// `detail` as the classifier located it: a JSON value, or a string holding one.
    envelope_detail: &'a RawValue,
    decoded: std::cell::OnceCell<Option<Box<RawValue>>>,
}

impl<'a> RawDetail<'a> {
    pub fn new(envelope_detail: &'a RawValue) -> Self {
        Self {
            envelope_detail,
            decoded: std::cell::OnceCell::new(),
        }
    }

    fn detail(&self) -> Option<&RawValue> {
        if !self.envelope_detail.get().starts_with('"') {
            return Some(self.envelope_detail);
        }
        // Some producers send the detail as a JSON document inside a string.
        self.decoded
            .get_or_init(|| {
                let inner: String = serde_json::from_str(self.envelope_detail.get()).ok()?;
                RawValue::from_string(inner).ok()
            })
            .as_deref()
    }

    /// The value `pointer` addresses within `scope`.
    pub fn lookup(&self, scope: Scope, pointer: &str) -> Option<Value> {
        let detail = self.detail()?;
        let root = match scope {
            Scope::Detail => detail,
            Scope::Finding(i) => raw_pointer::find(detail, &format!("/findings/{i}"))?,
            Scope::None => return None,
        };
        raw_pointer::lookup(root, pointer)
    }
}

struct Ctx<'a> {
    account: &'a str,
    region: &'a str,
}

fn ctx<T: Serialize + serde::de::DeserializeOwned>(e: &EventBridgeEvent<T>) -> Ctx<'_> {
    Ctx {
        account: e.account.as_deref().unwrap_or("unknown"),
        region: e.region.as_deref().unwrap_or("unknown"),
    }
}

fn instance_arn(c: &Ctx<'_>, id: &str) -> String {
    if id.starts_with("mi-") {
        format!(
            "arn:aws:ssm:{}:{}:managed-instance/{id}",
            c.region, c.account
        )
    } else {
        format!("arn:aws:ec2:{}:{}:instance/{id}", c.region, c.account)
    }
}

fn dedup(parts: &[&str]) -> String {
    let s = format!("ssm-autopilot/{}", parts.join("/"));
    if s.len() <= MAX_READABLE_DEDUP {
        s
    } else {
        let head: String = s.chars().take(64).collect();
        format!(
            "{head}#{}",
            &autopilot_shared::digest::sha256_hex(s.as_bytes())[..32]
        )
    }
}

/// One entry per problem the event describes (Security Hub events may carry several).
pub fn facts(event: &AutopilotEvent, ec2_states: &[String]) -> Vec<Facts> {
    let mut vars: BTreeMap<&'static str, String> = BTreeMap::new();
    let (account, region) = event.account_region();
    vars.insert("account", account.unwrap_or_default().to_owned());
    vars.insert("region", region.unwrap_or_default().to_owned());
    vars.insert("detail_type", event.detail_type().to_owned());
    let envelope_arns: Vec<String> = event
        .resources()
        .iter()
        .filter(|r| r.starts_with("arn:"))
        .cloned()
        .collect();
    let one = |signal, dedup, vars, mut arns: Vec<String>, ids: Vec<String>, scope| {
        for a in &envelope_arns {
            if !arns.contains(a) {
                arns.push(a.clone());
            }
        }
        vec![Facts {
            kind: event.kind(),
            signal,
            dedup,
            vars,
            resource_arns: arns,
            resource_ids: ids,
            scope,
        }]
    };
    match event {
        AutopilotEvent::Alarm(e) => {
            let c = ctx(e);
            let d = &e.detail;
            vars.insert("alarm_name", d.alarm_name.clone());
            vars.insert("state", format!("{:?}", d.state.value).to_ascii_uppercase());
            vars.insert("reason", d.state.reason.clone().unwrap_or_default());
            let ids: Vec<String> = d
                .dimension_values("InstanceId")
                .into_iter()
                .map(str::to_owned)
                .collect();
            if let Some(first) = ids.first() {
                vars.insert("instance_id", first.clone());
            }
            let arns = ids
                .iter()
                .filter(|i| autopilot_shared::events::ids::is_managed_node_id(i))
                .map(|i| instance_arn(&c, i))
                .collect();
            let signal = match d.state.value {
                AlarmStateValue::Alarm => Signal::Problem,
                AlarmStateValue::Ok => Signal::Recovery,
                AlarmStateValue::InsufficientData => Signal::Neutral("alarm has insufficient data"),
            };
            one(
                signal,
                dedup(&["alarm", c.account, c.region, &d.alarm_name]),
                vars,
                arns,
                ids,
                Scope::Detail,
            )
        }
        AutopilotEvent::Ec2StateChange(e) => {
            let c = ctx(e);
            let d = &e.detail;
            vars.insert("instance_id", d.instance_id.clone());
            vars.insert("state", d.state.as_str().to_owned());
            let signal = if ec2_states.iter().any(|s| s == d.state.as_str()) {
                Signal::Problem
            } else {
                Signal::Neutral("instance state is not configured to open an OpsItem")
            };
            let arns = vec![instance_arn(&c, &d.instance_id)];
            one(
                signal,
                dedup(&["ec2-state", c.account, c.region, &d.instance_id]),
                vars,
                arns,
                vec![d.instance_id.clone()],
                Scope::Detail,
            )
        }
        AutopilotEvent::SpotInterruption(e) => {
            let c = ctx(e);
            let d = &e.detail;
            vars.insert("instance_id", d.instance_id.clone());
            vars.insert("action", d.instance_action.clone());
            let arns = vec![instance_arn(&c, &d.instance_id)];
            one(
                Signal::Problem,
                dedup(&["spot", c.account, c.region, &d.instance_id]),
                vars,
                arns,
                vec![d.instance_id.clone()],
                Scope::Detail,
            )
        }
        AutopilotEvent::Health(e) => {
            let c = ctx(e);
            let d = &e.detail;
            vars.insert("event_type_code", d.event_type_code.clone());
            vars.insert("event_type_category", d.event_type_category.clone());
            vars.insert("service", d.service.clone());
            vars.insert(
                "health_description",
                d.description().unwrap_or_default().to_owned(),
            );
            let ids: Vec<String> = d
                .affected_entities
                .iter()
                .map(|a| a.entity_value.clone())
                .collect();
            let arns = ids
                .iter()
                .filter_map(|v| {
                    if v.starts_with("arn:") {
                        Some(v.clone())
                    } else if autopilot_shared::events::ids::is_managed_node_id(v) {
                        Some(instance_arn(&c, v))
                    } else {
                        None
                    }
                })
                .collect();
            let signal = if d.status_code.as_deref() == Some("closed") {
                Signal::Recovery
            } else {
                Signal::Problem
            };
            one(
                signal,
                dedup(&["health", c.account, &d.event_arn]),
                vars,
                arns,
                ids,
                Scope::Detail,
            )
        }
        AutopilotEvent::GuardDuty(e) => {
            let c = ctx(e);
            let d = &e.detail;
            vars.insert("finding_type", d.finding_type.clone());
            vars.insert("finding_title", d.title.clone().unwrap_or_default());
            vars.insert("severity_label", d.severity_label().to_owned());
            let mut arns = Vec::new();
            let mut ids = Vec::new();
            if let Some(i) = d.instance_id() {
                vars.insert("instance_id", i.to_owned());
                arns.push(instance_arn(&c, i));
                ids.push(i.to_owned());
            }
            if let Some(a) = &d.arn {
                arns.push(a.clone());
            }
            let signal = if d.service.as_ref().and_then(|s| s.archived) == Some(true) {
                Signal::Recovery
            } else {
                Signal::Problem
            };
            one(
                signal,
                dedup(&["guardduty", c.account, c.region, &d.id]),
                vars,
                arns,
                ids,
                Scope::Detail,
            )
        }
        AutopilotEvent::SecurityHub(e) => e
            .detail
            .findings
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut v = vars.clone();
                v.insert("finding_title", f.title.clone().unwrap_or_default());
                v.insert(
                    "finding_description",
                    f.description.clone().unwrap_or_default(),
                );
                v.insert("severity_label", f.severity_label().to_owned());
                v.insert(
                    "workflow_status",
                    f.workflow_status().unwrap_or_default().to_owned(),
                );
                let arns: Vec<String> = f
                    .resources
                    .iter()
                    .filter(|r| r.id.starts_with("arn:"))
                    .map(|r| r.id.clone())
                    .collect();
                let ids: Vec<String> = f
                    .resources
                    .iter()
                    .map(|r| r.id.rsplit('/').next().unwrap_or(&r.id).to_owned())
                    .collect();
                let signal = if f.is_closed() {
                    Signal::Recovery
                } else {
                    Signal::Problem
                };
                Facts {
                    kind: event.kind(),
                    signal,
                    dedup: dedup(&["securityhub", &f.id]),
                    vars: v,
                    resource_arns: arns,
                    resource_ids: ids,
                    scope: Scope::Finding(i),
                }
            })
            .collect(),
        AutopilotEvent::SsmCompliance(e) => {
            let c = ctx(e);
            let d = &e.detail;
            vars.insert("resource_id", d.resource_id.clone());
            vars.insert("compliance_type", d.compliance_type.clone());
            vars.insert(
                "compliance_severity",
                d.severity.clone().unwrap_or_else(|| "unspecified".into()),
            );
            let signal = if d.is_non_compliant() {
                Signal::Problem
            } else {
                Signal::Recovery
            };
            let arns = vec![instance_arn(&c, &d.resource_id)];
            one(
                signal,
                dedup(&[
                    "compliance",
                    c.account,
                    c.region,
                    &d.resource_id,
                    &d.compliance_type,
                ]),
                vars,
                arns,
                vec![d.resource_id.clone()],
                Scope::Detail,
            )
        }
        AutopilotEvent::AutomationStatus(e) => {
            let c = ctx(e);
            let d = &e.detail;
            vars.insert("execution_id", d.execution_id.clone());
            vars.insert("definition", d.definition.clone());
            vars.insert("status", d.status.clone());
            let signal = match d.outcome() {
                AutomationOutcome::Failed | AutomationOutcome::TimedOut => Signal::Problem,
                _ => Signal::Neutral("automation did not fail"),
            };
            let arns = vec![format!(
                "arn:aws:ssm:{}:{}:automation-execution/{}",
                c.region, c.account, d.execution_id
            )];
            one(
                signal,
                dedup(&["automation", c.account, c.region, &d.execution_id]),
                vars,
                arns,
                vec![d.execution_id.clone()],
                Scope::Detail,
            )
        }
        other => one(
            Signal::Neutral("event kind is not handled by opsitem-creator"),
            String::new(),
            vars,
            Vec::new(),
            Vec::new(),
            Scope::None,
        )
        .into_iter()
        .map(|mut f| {
            f.kind = other.kind();
            f
        })
        .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_identities_are_hashed_deterministically() {
        let long = "x".repeat(1000);
        let a = dedup(&["alarm", &long]);
        assert!(a.len() < 120);
        assert_eq!(a, dedup(&["alarm", &long]));
        assert_ne!(a, dedup(&["alarm", &"y".repeat(1000)]));
    }
}
