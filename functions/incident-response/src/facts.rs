//! What an event says, in the terms response plans need: template variables, the affected
//! resource (the incident's identity), related ARNs, tags carried by the event itself.

use std::collections::BTreeMap;

use autopilot_shared::events::ids::is_managed_node_id;
use autopilot_shared::events::{AlarmStateValue, AutomationOutcome, AutopilotEvent};

/// Variables a template may use.
pub const KNOWN_VARS: [&str; 17] = [
    "account",
    "region",
    "resource",
    "instance_id",
    "finding_id",
    "finding_type",
    "finding_title",
    "severity",
    "severity_label",
    "alarm_name",
    "reason",
    "state",
    "action",
    "event_type_code",
    "event_type_category",
    "health_description",
    "detail_type",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub kind: &'static str,
    pub account: String,
    pub region: String,
    /// The affected resource: instance id, alarm name, or the finding / Health event id.
    pub resource: String,
    pub vars: BTreeMap<&'static str, String>,
    pub severity: Option<f64>,
    pub resource_arns: Vec<String>,
    /// Tags the event itself carries (GuardDuty instance details), so no lookup is needed.
    pub tags: Option<BTreeMap<String, String>>,
}

impl Facts {
    /// Identity of the resource across plans: account, region and resource.
    pub fn resource_key(&self) -> String {
        format!("{}/{}/{}", self.account, self.region, self.resource)
    }

    pub fn instance_id(&self) -> Option<&str> {
        self.vars
            .get("instance_id")
            .map(String::as_str)
            .filter(|i| is_managed_node_id(i))
    }
}

/// What the function makes of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A trigger that response plans may match.
    Trigger(Box<Facts>),
    /// An automation status change (possibly of a runbook this function started).
    AutomationStatus {
        execution_id: String,
        document: String,
        outcome: AutomationOutcome,
        status: String,
    },
    /// Not a trigger; the reason says why.
    NotATrigger(&'static str),
}

fn instance_arn(region: &str, account: &str, id: &str) -> String {
    if id.starts_with("mi-") {
        format!("arn:aws:ssm:{region}:{account}:managed-instance/{id}")
    } else {
        format!("arn:aws:ec2:{region}:{account}:instance/{id}")
    }
}

pub fn read(event: &AutopilotEvent) -> Reading {
    let (account, region) = event.account_region();
    let account = account.unwrap_or("unknown").to_owned();
    let region = region.unwrap_or("unknown").to_owned();
    let mut vars: BTreeMap<&'static str, String> = BTreeMap::new();
    vars.insert("account", account.clone());
    vars.insert("region", region.clone());
    vars.insert("detail_type", event.detail_type().to_owned());
    let mut arns: Vec<String> = event
        .resources()
        .iter()
        .filter(|r| r.starts_with("arn:"))
        .cloned()
        .collect();
    let mut severity = None;
    let mut tags = None;
    let resource: String = match event {
        AutopilotEvent::Alarm(e) => {
            let d = &e.detail;
            if d.state.value != AlarmStateValue::Alarm {
                return Reading::NotATrigger("alarm is not in ALARM");
            }
            vars.insert("alarm_name", d.alarm_name.clone());
            vars.insert("state", "ALARM".into());
            vars.insert("reason", d.state.reason.clone().unwrap_or_default());
            if let Some(i) = d
                .dimension_values("InstanceId")
                .into_iter()
                .find(|i| is_managed_node_id(i))
            {
                vars.insert("instance_id", i.to_owned());
                arns.push(instance_arn(&region, &account, i));
            }
            d.alarm_name.clone()
        }
        AutopilotEvent::GuardDuty(e) => {
            let d = &e.detail;
            if d.service.as_ref().and_then(|s| s.archived) == Some(true) {
                return Reading::NotATrigger("GuardDuty finding is archived");
            }
            severity = Some(d.severity);
            vars.insert("finding_id", d.id.clone());
            vars.insert("finding_type", d.finding_type.clone());
            vars.insert("finding_title", d.title.clone().unwrap_or_default());
            vars.insert("severity", d.severity.to_string());
            vars.insert("severity_label", d.severity_label().to_owned());
            if let Some(a) = &d.arn {
                arns.push(a.clone());
            }
            match d.instance_id() {
                Some(i) => {
                    vars.insert("instance_id", i.to_owned());
                    arns.push(instance_arn(&region, &account, i));
                    tags = d.resource.instance_details.as_ref().map(|x| {
                        x.tags
                            .iter()
                            .map(|t| (t.key.clone(), t.value.clone()))
                            .collect()
                    });
                    i.to_owned()
                }
                None => d.id.clone(),
            }
        }
        AutopilotEvent::Ec2StateChange(e) => {
            let d = &e.detail;
            vars.insert("instance_id", d.instance_id.clone());
            vars.insert("state", d.state.as_str().to_owned());
            d.instance_id.clone()
        }
        AutopilotEvent::SpotInterruption(e) => {
            let d = &e.detail;
            vars.insert("instance_id", d.instance_id.clone());
            vars.insert("action", d.instance_action.clone());
            arns.push(instance_arn(&region, &account, &d.instance_id));
            d.instance_id.clone()
        }
        AutopilotEvent::Health(e) => {
            let d = &e.detail;
            if d.status_code.as_deref() == Some("closed") {
                return Reading::NotATrigger("Health event is closed");
            }
            vars.insert("event_type_code", d.event_type_code.clone());
            vars.insert("event_type_category", d.event_type_category.clone());
            vars.insert(
                "health_description",
                d.description().unwrap_or_default().to_owned(),
            );
            let entity = d
                .affected_entities
                .iter()
                .map(|a| a.entity_value.as_str())
                .find(|v| is_managed_node_id(v));
            match entity {
                Some(i) => {
                    vars.insert("instance_id", i.to_owned());
                    arns.push(instance_arn(&region, &account, i));
                    i.to_owned()
                }
                None => d.event_arn.clone(),
            }
        }
        AutopilotEvent::AutomationStatus(e) => {
            let d = &e.detail;
            return Reading::AutomationStatus {
                execution_id: d.execution_id.clone(),
                document: d.definition.clone(),
                outcome: d.outcome(),
                status: d.status.clone(),
            };
        }
        _ => return Reading::NotATrigger("event kind is not handled by incident-response"),
    };
    vars.insert("resource", resource.clone());
    arns.dedup();
    Reading::Trigger(Box::new(Facts {
        kind: event.kind(),
        account,
        region,
        resource,
        vars,
        severity,
        resource_arns: arns,
        tags,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> AutopilotEvent {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../events/incident-response")
            .join(name);
        autopilot_shared::events::classify(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn guardduty_reading() {
        let Reading::Trigger(f) = read(&sample("guardduty-finding-high.json")) else {
            panic!("trigger expected")
        };
        assert_eq!(f.resource, "i-0abcdef1234567890");
        assert_eq!(f.severity, Some(8.0));
        assert_eq!(f.vars["finding_type"], "Backdoor:EC2/C&CActivity.B");
        assert_eq!(f.tags.as_ref().unwrap()["Environment"], "prod");
        assert_eq!(
            f.resource_key(),
            "123456789012/us-east-1/i-0abcdef1234567890"
        );
    }

    #[test]
    fn other_readings() {
        let Reading::Trigger(f) = read(&sample("health-issue.json")) else {
            panic!()
        };
        assert_eq!(f.instance_id(), Some("i-0abcdef1234567890"));
        let Reading::Trigger(f) = read(&sample("alarm-critical.json")) else {
            panic!()
        };
        assert_eq!(f.resource, "critical-web-status-check-failed");
        assert_eq!(f.vars["instance_id"], "i-0abcdef1234567890");
        assert!(matches!(
            read(&sample("automation-failed.json")),
            Reading::AutomationStatus {
                outcome: AutomationOutcome::Failed,
                ..
            }
        ));
    }
}
