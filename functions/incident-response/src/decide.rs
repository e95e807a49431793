//! The pure planner: event facts + response plan + incident state → decision. No I/O;
//! everything here is unit-tested directly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use autopilot_shared::events::AutomationOutcome;
use autopilot_shared::events::ids::{is_managed_node_id, is_safe_token};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use autopilot_shared::template::{render, variables};

use crate::facts::Facts;
use crate::plans::{Plan, PlanSet, Respond};

pub const MAX_TITLE: usize = 1024;

/// What the ledger knows about the incident of (plan, resource).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentState {
    pub incident_id: String,
    pub open: bool,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// The Change Calendar's answer for disruptive runbooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// No calendar configured (or no disruptive runbook): nothing is gated.
    None,
    Open,
    Closed {
        calendar: String,
        next_transition: Option<String>,
    },
}

/// Everything besides the event and the plan that the decision depends on.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub function: &'a str,
    pub event_id: &'a str,
    pub now: DateTime<Utc>,
    pub flap_window: Duration,
    pub exempt_accounts: &'a [String],
    /// The exemption tag found on the resource, if any.
    pub exempt_tag: Option<&'a str>,
    pub existing: Option<IncidentState>,
    pub gate: Gate,
    pub default_topic: Option<&'a str>,
    pub automation_role: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "camelCase")]
pub enum RunbookStep {
    Start {
        document: String,
        parameters: BTreeMap<String, Vec<String>>,
        client_token: String,
        disruptive: bool,
    },
    Defer {
        document: String,
        reason: String,
    },
    Reject {
        document: String,
        reason: String,
    },
}

impl RunbookStep {
    pub fn document(&self) -> &str {
        match self {
            RunbookStep::Start { document, .. }
            | RunbookStep::Defer { document, .. }
            | RunbookStep::Reject { document, .. } => document,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenIncident {
    pub incident_id: String,
    pub plan: String,
    pub resource_key: String,
    pub title: String,
    pub impact: u8,
    pub category: Option<String>,
    pub topic: Option<String>,
    pub resource_arns: Vec<String>,
    pub runbooks: Vec<RunbookStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum Decision {
    Ignore {
        reason: String,
    },
    Exempt {
        plan: String,
        reason: String,
    },
    Notify {
        plan: String,
        title: String,
        topic: Option<String>,
    },
    /// Add a timeline entry to every open incident of the resource (none → nothing).
    Annotate {
        plan: String,
        resource_key: String,
        entry: String,
    },
    Open(Box<OpenIncident>),
    /// A repeat of an open (or just resolved, flapping) incident: timeline entry only.
    Append {
        plan: String,
        incident_id: String,
        entry: String,
    },
}

/// Deterministic UUID from the hash of `parts`: the same event always yields the same token.
pub fn deterministic_uuid(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\u{1f}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The incident this event would open for `plan`: stable across retries of the event.
pub fn incident_id(plan: &str, resource_key: &str, event_id: &str) -> String {
    let digest = Sha256::digest(format!("{plan}\u{1f}{resource_key}\u{1f}{event_id}").as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("inc-{hex}")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Renders and validates one runbook's parameters; `Err` says why it must not run.
pub fn runbook_parameters(
    template: &BTreeMap<String, String>,
    facts: &Facts,
    automation_role: Option<&str>,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out = BTreeMap::new();
    for (name, t) in template {
        let value = render(t, &facts.vars);
        if value.trim().is_empty() {
            return Err(format!(
                "parameter {name} is empty: the event does not provide the variables it uses"
            ));
        }
        let wants_node = name.ends_with("InstanceId") || variables(t).any(|v| v == "instance_id");
        if wants_node && !is_managed_node_id(&value) {
            return Err(format!(
                "parameter {name} is not an instance id (i-… or mi-…)"
            ));
        }
        if !is_safe_token(&value) {
            return Err(format!("parameter {name} contains forbidden characters"));
        }
        out.insert(name.clone(), vec![value]);
    }
    if let Some(role) = automation_role
        && !out.contains_key("AutomationAssumeRole")
    {
        out.insert("AutomationAssumeRole".into(), vec![role.to_owned()]);
    }
    Ok(out)
}

/// Decides what to do with a trigger for the plan that matched it (`None`: no plan matched).
pub fn decide(facts: &Facts, plans: &PlanSet, plan: Option<&Plan>, s: &Situation<'_>) -> Decision {
    let Some(plan) = plan else {
        return Decision::Ignore {
            reason: format!("no response plan matches this {} event", facts.kind),
        };
    };
    let exempt_accounts = plans.exempt_accounts.iter().chain(s.exempt_accounts);
    if exempt_accounts.into_iter().any(|a| *a == facts.account) {
        return Decision::Exempt {
            plan: plan.name.clone(),
            reason: format!("account {} is exempt", facts.account),
        };
    }
    if let Some(tag) = s.exempt_tag {
        return Decision::Exempt {
            plan: plan.name.clone(),
            reason: format!("{} carries the exemption tag {tag}", facts.resource),
        };
    }
    let rendered = truncate(render(&plan.title, &facts.vars).trim(), MAX_TITLE);
    // A title made only of variables this event lacks renders blank, which StartIncident and
    // CreateOpsItem reject on every delivery: name the event and the plan instead.
    let title = if rendered.is_empty() {
        truncate(
            &format!("{} {} ({})", facts.kind, facts.resource, plan.name),
            MAX_TITLE,
        )
    } else {
        rendered
    };
    let resource_key = facts.resource_key();
    let topic = plan
        .notification_topic
        .clone()
        .or_else(|| s.default_topic.map(str::to_owned));
    match plan.respond {
        Respond::Notify => {
            return Decision::Notify {
                plan: plan.name.clone(),
                title,
                topic,
            };
        }
        Respond::Annotate => {
            return Decision::Annotate {
                plan: plan.name.clone(),
                resource_key,
                entry: title,
            };
        }
        Respond::Incident => {}
    }
    let mine = incident_id(&plan.name, &resource_key, s.event_id);
    if let Some(e) = &s.existing
        && e.incident_id != mine
    {
        if e.open {
            return Decision::Append {
                plan: plan.name.clone(),
                incident_id: e.incident_id.clone(),
                entry: format!("repeat: {title}"),
            };
        }
        let window = chrono::Duration::from_std(s.flap_window).unwrap_or_default();
        if e.resolved_at.is_some_and(|r| s.now - r < window) {
            return Decision::Append {
                plan: plan.name.clone(),
                incident_id: e.incident_id.clone(),
                entry: format!("recurred within the flap window after resolution: {title}"),
            };
        }
    }
    let runbooks = plan
        .runbooks
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let parameters = match runbook_parameters(&r.parameters, facts, s.automation_role) {
                Ok(p) => p,
                Err(reason) => {
                    return RunbookStep::Reject {
                        document: r.document.clone(),
                        reason,
                    };
                }
            };
            if r.disruptive
                && let Gate::Closed {
                    calendar,
                    next_transition,
                } = &s.gate
            {
                return RunbookStep::Defer {
                    document: r.document.clone(),
                    reason: format!(
                        "disruptive runbook deferred: change calendar {calendar} is CLOSED{}",
                        next_transition
                            .as_deref()
                            .map(|t| format!(" until {t}"))
                            .unwrap_or_default()
                    ),
                };
            }
            RunbookStep::Start {
                document: r.document.clone(),
                client_token: deterministic_uuid(&[
                    s.function,
                    s.event_id,
                    &plan.name,
                    &i.to_string(),
                    &r.document,
                ]),
                parameters,
                disruptive: r.disruptive,
            }
        })
        .collect();
    Decision::Open(Box::new(OpenIncident {
        incident_id: mine,
        plan: plan.name.clone(),
        resource_key,
        title,
        impact: plan.impact,
        category: plan.category.clone(),
        topic,
        resource_arns: facts.resource_arns.clone(),
        runbooks,
    }))
}

/// A runbook execution this function started, as the ledger records it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    pub execution_id: String,
    pub incident_id: String,
    pub document: String,
    /// Terminal status already recorded (Success, Failed, TimedOut, Cancelled).
    pub status: Option<String>,
    /// Every step of the follow-up to `status` completed. A delivery that recorded the status
    /// and then failed leaves it false, so the redelivery finishes the follow-up.
    pub handled: bool,
    /// The impact an escalation raised the incident to, recorded with the status so that a
    /// resumed escalation does not raise it a second time.
    pub escalated_to: Option<u8>,
}

/// The incident as the ledger records it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    pub incident_id: String,
    pub open: bool,
    pub impact: u8,
    /// Runbooks the plan named when the incident opened.
    pub planned: usize,
    pub succeeded: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum FollowUp {
    Ignore {
        reason: String,
    },
    /// Record the success; resolve the incident when every planned runbook succeeded.
    Succeeded {
        incident_id: String,
        execution_id: String,
        document: String,
        resolve: bool,
    },
    /// Raise the impact (1 is the highest), notify, record.
    Escalate {
        incident_id: String,
        execution_id: String,
        document: String,
        status: String,
        impact: u8,
    },
    /// Timeline entry only (a cancelled run, or a status contradicting a recorded one).
    Note {
        incident_id: String,
        execution_id: String,
        entry: String,
    },
}

pub fn follow_up(
    exec: &ExecutionRecord,
    incident: &IncidentRecord,
    outcome: AutomationOutcome,
    status: &str,
) -> FollowUp {
    let note = |entry: String| FollowUp::Note {
        incident_id: incident.incident_id.clone(),
        execution_id: exec.execution_id.clone(),
        entry,
    };
    if let Some(prev) = &exec.status {
        if prev != status {
            // A terminal status never flips silently (e.g. Success replayed after Failed).
            return note(format!(
                "runbook {} reported {status} after {prev} was recorded; kept {prev}",
                exec.document
            ));
        }
        if exec.handled {
            return FollowUp::Ignore {
                reason: format!("status {status} of {} already recorded", exec.execution_id),
            };
        }
        // Recorded by a delivery that failed before finishing: finish its follow-up (every
        // step is idempotent).
    }
    // A resumed success may find the incident already resolved by the interrupted delivery:
    // finishing it (and reporting it) is still this execution's resolution.
    let resuming = exec.status.is_some();
    match outcome {
        AutomationOutcome::Running => FollowUp::Ignore {
            reason: format!("execution {} is still {status}", exec.execution_id),
        },
        AutomationOutcome::Succeeded => {
            let mut done = incident.succeeded.clone();
            done.insert(exec.execution_id.clone());
            FollowUp::Succeeded {
                incident_id: incident.incident_id.clone(),
                execution_id: exec.execution_id.clone(),
                document: exec.document.clone(),
                resolve: (incident.open || resuming) && done.len() >= incident.planned,
            }
        }
        AutomationOutcome::Failed | AutomationOutcome::TimedOut => FollowUp::Escalate {
            incident_id: incident.incident_id.clone(),
            execution_id: exec.execution_id.clone(),
            document: exec.document.clone(),
            status: status.to_owned(),
            impact: exec
                .escalated_to
                .unwrap_or_else(|| incident.impact.saturating_sub(1).max(1)),
        },
        AutomationOutcome::Cancelled => note(format!("runbook {} was {status}", exec.document)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Reading, read};
    use crate::plans::default_plans;

    fn facts(name: &str) -> Facts {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../events/incident-response")
            .join(name);
        let ev = autopilot_shared::events::classify(&std::fs::read(path).unwrap()).unwrap();
        match read(&ev) {
            Reading::Trigger(f) => *f,
            other => panic!("{other:?}"),
        }
    }

    fn situation() -> Situation<'static> {
        Situation {
            function: "incident-response",
            event_id: "ev-1",
            now: Utc::now(),
            flap_window: Duration::from_secs(600),
            exempt_accounts: &[],
            exempt_tag: None,
            existing: None,
            gate: Gate::None,
            default_topic: Some("arn:aws:sns:us-east-1:123456789012:t"),
            automation_role: Some("arn:aws:iam::123456789012:role/auto"),
        }
    }

    fn run(f: &Facts, s: &Situation<'_>) -> Decision {
        let plans = default_plans().unwrap();
        decide(f, &plans, plans.find(f), s)
    }

    #[test]
    fn high_guardduty_opens_an_incident_with_a_deterministic_runbook() {
        let f = facts("guardduty-finding-high.json");
        let Decision::Open(o) = run(&f, &situation()) else {
            panic!()
        };
        assert_eq!(o.plan, "guardduty-ec2-high");
        assert_eq!(o.impact, 2);
        let RunbookStep::Start {
            document,
            parameters,
            client_token,
            ..
        } = &o.runbooks[0]
        else {
            panic!("{:?}", o.runbooks)
        };
        assert_eq!(document, "AWSSupport-ContainEC2Instance");
        assert_eq!(parameters["InstanceId"], vec!["i-0abcdef1234567890"]);
        assert_eq!(
            parameters["AutomationAssumeRole"],
            vec!["arn:aws:iam::123456789012:role/auto"]
        );
        assert!(uuid::Uuid::parse_str(client_token).is_ok());
        // Same event → same token and incident; another event → another token.
        let Decision::Open(again) = run(&f, &situation()) else {
            panic!()
        };
        assert_eq!(again, o);
        let other = Situation {
            event_id: "ev-2",
            ..situation()
        };
        let Decision::Open(o2) = run(&f, &other) else {
            panic!()
        };
        assert_ne!(o2.runbooks[0], o.runbooks[0]);
    }

    #[test]
    fn a_title_that_renders_blank_names_the_event_and_plan() {
        let f = facts("guardduty-finding-high.json");
        let mut plans = default_plans().unwrap();
        for p in &mut plans.plans {
            p.title = " {{ no_such_variable }} ".into();
        }
        let Decision::Open(o) = decide(&f, &plans, plans.find(&f), &situation()) else {
            panic!()
        };
        assert_eq!(
            o.title,
            format!("guardduty {} (guardduty-ec2-high)", f.resource)
        );
        // Leading blanks longer than the bound do not cut the title down to blanks.
        for p in &mut plans.plans {
            p.title = format!(
                "{}GuardDuty {{{{ finding_type }}}}",
                " ".repeat(MAX_TITLE + 10)
            );
        }
        let Decision::Open(o) = decide(&f, &plans, plans.find(&f), &situation()) else {
            panic!()
        };
        assert!(o.title.starts_with("GuardDuty "), "{:?}", o.title);
    }

    #[test]
    fn low_severity_and_other_kinds() {
        let low = facts("guardduty-finding-low.json");
        assert!(matches!(run(&low, &situation()), Decision::Ignore { .. }));
        let spot = facts("ec2-spot-interruption.json");
        assert!(matches!(run(&spot, &situation()), Decision::Notify { .. }));
        let gone = facts("ec2-terminated.json");
        assert!(matches!(
            run(&gone, &situation()),
            Decision::Annotate { .. }
        ));
        let health = facts("health-issue.json");
        let Decision::Open(o) = run(&health, &situation()) else {
            panic!()
        };
        assert!(o.runbooks.is_empty());
    }

    #[test]
    fn closed_calendar_defers_only_disruptive_runbooks() {
        let f = facts("alarm-critical.json");
        let s = Situation {
            gate: Gate::Closed {
                calendar: "prod-freeze".into(),
                next_transition: Some("2026-03-15T00:00:00Z".into()),
            },
            ..situation()
        };
        let Decision::Open(o) = run(&f, &s) else {
            panic!()
        };
        assert!(
            matches!(&o.runbooks[0], RunbookStep::Defer { reason, .. } if reason.contains("prod-freeze"))
        );
        let mut plans = default_plans().unwrap();
        plans.plans[1].runbooks[0].disruptive = false;
        let Decision::Open(o) = decide(&f, &plans, plans.find(&f), &s) else {
            panic!()
        };
        assert!(matches!(o.runbooks[0], RunbookStep::Start { .. }));
    }

    #[test]
    fn repeats_append_and_flapping_joins_the_resolved_incident() {
        let f = facts("guardduty-finding-high.json");
        let open = Situation {
            existing: Some(IncidentState {
                incident_id: "inc-x".into(),
                open: true,
                resolved_at: None,
            }),
            ..situation()
        };
        assert!(
            matches!(run(&f, &open), Decision::Append { incident_id, .. } if incident_id == "inc-x")
        );
        let now = Utc::now();
        let flapping = Situation {
            now,
            existing: Some(IncidentState {
                incident_id: "inc-x".into(),
                open: false,
                resolved_at: Some(now - chrono::Duration::seconds(60)),
            }),
            ..situation()
        };
        assert!(matches!(run(&f, &flapping), Decision::Append { .. }));
        let later = Situation {
            now,
            existing: Some(IncidentState {
                incident_id: "inc-x".into(),
                open: false,
                resolved_at: Some(now - chrono::Duration::seconds(6000)),
            }),
            ..situation()
        };
        assert!(matches!(run(&f, &later), Decision::Open(_)));
        // The incident this very event opened (a retry after a crash) is resumed, not repeated.
        let mine = incident_id("guardduty-ec2-high", &f.resource_key(), "ev-1");
        let resumed = Situation {
            existing: Some(IncidentState {
                incident_id: mine,
                open: true,
                resolved_at: None,
            }),
            ..situation()
        };
        assert!(matches!(run(&f, &resumed), Decision::Open(_)));
    }

    #[test]
    fn exemptions() {
        let f = facts("guardduty-finding-high.json");
        let accounts = vec!["123456789012".to_owned()];
        let s = Situation {
            exempt_accounts: &accounts,
            ..situation()
        };
        assert!(matches!(run(&f, &s), Decision::Exempt { .. }));
        let s = Situation {
            exempt_tag: Some("autopilot:incident-exempt"),
            ..situation()
        };
        assert!(matches!(run(&f, &s), Decision::Exempt { .. }));
    }

    #[test]
    fn parameters_are_validated_before_any_call() {
        let mut f = facts("guardduty-finding-high.json");
        let t: BTreeMap<String, String> =
            [("InstanceId".to_owned(), "{{ instance_id }}".to_owned())].into();
        f.vars.insert("instance_id", "i-123; reboot".into());
        assert!(runbook_parameters(&t, &f, None).is_err());
        f.vars.insert("instance_id", "sg-0123456789abcdef0".into());
        assert!(runbook_parameters(&t, &f, None).is_err());
        f.vars.remove("instance_id");
        assert!(runbook_parameters(&t, &f, None).is_err());
        f.vars.insert("instance_id", "mi-0123456789abcdef0".into());
        assert!(runbook_parameters(&t, &f, None).is_ok());
        let t: BTreeMap<String, String> =
            [("Reason".to_owned(), "{{ finding_title }}".to_owned())].into();
        f.vars.insert("finding_title", "x $(curl evil)".into());
        assert!(runbook_parameters(&t, &f, None).is_err());
    }

    #[test]
    fn follow_up_outcomes() {
        let exec = ExecutionRecord {
            execution_id: "e1".into(),
            incident_id: "inc-1".into(),
            document: "AWS-RestartEC2Instance".into(),
            status: None,
            handled: false,
            escalated_to: None,
        };
        let inc = IncidentRecord {
            incident_id: "inc-1".into(),
            open: true,
            impact: 2,
            planned: 1,
            succeeded: BTreeSet::new(),
        };
        assert!(matches!(
            follow_up(&exec, &inc, AutomationOutcome::Succeeded, "Success"),
            FollowUp::Succeeded { resolve: true, .. }
        ));
        let two = IncidentRecord {
            planned: 2,
            ..inc.clone()
        };
        assert!(matches!(
            follow_up(&exec, &two, AutomationOutcome::Succeeded, "Success"),
            FollowUp::Succeeded { resolve: false, .. }
        ));
        assert!(matches!(
            follow_up(&exec, &inc, AutomationOutcome::Failed, "Failed"),
            FollowUp::Escalate { impact: 1, .. }
        ));
        let failed = ExecutionRecord {
            status: Some("Failed".into()),
            handled: true,
            escalated_to: Some(1),
            ..exec.clone()
        };
        assert!(matches!(
            follow_up(&failed, &inc, AutomationOutcome::Succeeded, "Success"),
            FollowUp::Note { .. }
        ));
        assert!(matches!(
            follow_up(&failed, &inc, AutomationOutcome::Failed, "Failed"),
            FollowUp::Ignore { .. }
        ));
    }

    #[test]
    fn a_follow_up_recorded_but_not_finished_is_resumed_without_a_second_escalation() {
        let exec = ExecutionRecord {
            execution_id: "e1".into(),
            incident_id: "inc-1".into(),
            document: "AWS-RestartEC2Instance".into(),
            status: Some("Failed".into()),
            handled: false,
            escalated_to: Some(2),
        };
        // The interrupted delivery already lowered the ledger's impact from 3 to 2.
        let inc = IncidentRecord {
            incident_id: "inc-1".into(),
            open: true,
            impact: 2,
            planned: 1,
            succeeded: BTreeSet::new(),
        };
        assert!(matches!(
            follow_up(&exec, &inc, AutomationOutcome::Failed, "Failed"),
            FollowUp::Escalate { impact: 2, .. }
        ));
        let succeeded = ExecutionRecord {
            status: Some("Success".into()),
            escalated_to: None,
            ..exec
        };
        assert!(matches!(
            follow_up(&succeeded, &inc, AutomationOutcome::Succeeded, "Success"),
            FollowUp::Succeeded { resolve: true, .. }
        ));
        // The interrupted delivery resolved the incident before failing: the resumption still
        // resolves (idempotently) and reports it.
        let resolved = IncidentRecord {
            open: false,
            succeeded: ["e1".to_owned()].into(),
            ..inc
        };
        assert!(matches!(
            follow_up(
                &succeeded,
                &resolved,
                AutomationOutcome::Succeeded,
                "Success"
            ),
            FollowUp::Succeeded { resolve: true, .. }
        ));
    }
}
