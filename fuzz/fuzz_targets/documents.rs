//! Parameter Store documents (opsitem-creator rules, incident-response plans,
//! compliance-remediator policy), JSON or YAML: parse + validate never panics, a rejected
//! document's error carries only the parameter name and a location (the document may be a
//! SecureString), one that fails validation only positions and fixed problems, and a
//! document that validates drives the pure decisions that consume it
//! without breaking their guarantees.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use autopilot_shared::document::{DocumentError, parse_document};
use autopilot_shared::events::classify;
use autopilot_shared::events::ids::{is_managed_node_id, is_safe_token};
use libfuzzer_sys::fuzz_target;

const NAME: &str = "/autopilot/fuzz";

/// Sample events the decisions run on (the same files the tests replay).
const OPSITEM_EVENTS: [&[u8]; 11] = [
    include_bytes!("../../events/opsitem-creator/alarm-composite.json"),
    include_bytes!("../../events/opsitem-creator/alarm-metric-alarm.json"),
    include_bytes!("../../events/opsitem-creator/alarm-metric-ok.json"),
    include_bytes!("../../events/opsitem-creator/automation-failed.json"),
    include_bytes!("../../events/opsitem-creator/ec2-spot-interruption.json"),
    include_bytes!("../../events/opsitem-creator/ec2-stopped.json"),
    include_bytes!("../../events/opsitem-creator/guardduty-finding-high.json"),
    include_bytes!("../../events/opsitem-creator/health-ec2-scheduled-change.json"),
    include_bytes!("../../events/opsitem-creator/securityhub-finding-new.json"),
    include_bytes!("../../events/opsitem-creator/securityhub-finding-resolved.json"),
    include_bytes!("../../events/opsitem-creator/ssm-compliance-noncompliant.json"),
];
const INCIDENT_EVENTS: [&[u8]; 5] = [
    include_bytes!("../../events/incident-response/alarm-critical.json"),
    include_bytes!("../../events/incident-response/guardduty-finding-high.json"),
    include_bytes!("../../events/incident-response/ec2-spot-interruption.json"),
    include_bytes!("../../events/incident-response/ec2-terminated.json"),
    include_bytes!("../../events/incident-response/health-issue.json"),
];

/// Parses `text` as `T`; on failure the message must be exactly the name and a location.
fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    match parse_document::<T>(NAME, text) {
        Ok(doc) => Some(doc),
        Err(err) => {
            let DocumentError { name, location } = &err;
            assert_eq!(name, NAME);
            assert!(is_location(location), "{location:?}");
            assert_eq!(
                err.to_string(),
                format!("parameter {NAME} is not a valid document ({location})")
            );
            None
        }
    }
}

/// `line N, column M`, optionally `: <serde_json category>`, or `unknown location`.
fn is_location(s: &str) -> bool {
    if s == "unknown location" {
        return true;
    }
    let (position, category) = match s.split_once(": ") {
        Some((p, c)) => (p, Some(c)),
        None => (s, None),
    };
    let number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let position_ok = position
        .strip_prefix("line ")
        .and_then(|r| r.split_once(", column "))
        .is_some_and(|(l, c)| number(l) && number(c));
    position_ok && category.is_none_or(|c| matches!(c, "Io" | "Syntax" | "Data" | "Eof"))
}

fn rules(text: &str) {
    use opsitem_creator::rules::{RuleSet, RulesError};
    let Some(set) = parse::<RuleSet>(text) else {
        return;
    };
    // A rejected rule is named by its position and a fixed problem, never by its text.
    match set.validate() {
        Ok(()) => {}
        Err(e @ RulesError::Invalid { index, problem }) => {
            assert!(index < set.rules.len(), "{e}");
            assert_eq!(e.to_string(), format!("rules[{index}]: {problem}"));
            return;
        }
        Err(e @ RulesError::BuiltIn) => panic!("{e}"),
    }
    use opsitem_creator::decide::{
        Action, MAX_DATA_VALUE, MAX_DESCRIPTION, MAX_RESOURCES, MAX_TITLE, plan,
    };
    let states = ["stopped".to_owned(), "terminated".to_owned()];
    for raw in OPSITEM_EVENTS {
        let Ok(event) = autopilot_shared::events::classify_raw(raw) else {
            continue;
        };
        let actions = plan(&event, &set, &states, None);
        assert!(!actions.is_empty());
        assert_eq!(actions, plan(&event, &set, &states, None), "deterministic");
        for action in &actions {
            let Action::Open(d) = action else { continue };
            // Whatever the rule's templates say, the draft is one CreateOpsItem accepts.
            let rule = set.rules.iter().find(|r| r.name == d.rule);
            assert!(
                rule.is_some_and(|r| r.matcher.kind == event.event.kind()),
                "{d:?}"
            );
            assert!(
                !d.title.trim().is_empty() && d.title.len() <= MAX_TITLE,
                "{d:?}"
            );
            assert!(
                !d.description.trim().is_empty() && d.description.len() <= MAX_DESCRIPTION,
                "{d:?}"
            );
            assert!(
                matches!(d.severity.as_str(), "1" | "2" | "3" | "4"),
                "{d:?}"
            );
            assert!(!d.dedup.is_empty() && d.resource_arns.len() <= MAX_RESOURCES);
            for (key, (_, value)) in &d.operational_data {
                assert!(
                    !value.trim().is_empty() && value.len() <= MAX_DATA_VALUE,
                    "{key}"
                );
            }
        }
    }
}

fn plans(text: &str) {
    use incident_response::decide::{Decision, Gate, MAX_TITLE, RunbookStep, Situation, decide};
    use incident_response::facts::{Reading, read};
    use incident_response::plans::{PlanSet, PlansError};
    let Some(set) = parse::<PlanSet>(text) else {
        return;
    };
    // A rejected plan is named by its position and a fixed problem, never by its text.
    match set.validate() {
        Ok(()) => {}
        Err(
            e @ PlansError::Invalid {
                plan,
                runbook,
                problem,
            },
        ) => {
            assert!(plan < set.plans.len(), "{e}");
            let at = match runbook {
                Some(r) => {
                    assert!(r < set.plans[plan].runbooks.len(), "{e}");
                    format!("plans[{plan}].runbooks[{r}]")
                }
                None => format!("plans[{plan}]"),
            };
            assert_eq!(e.to_string(), format!("{at}: {problem}"));
            return;
        }
        Err(e @ PlansError::BuiltIn) => panic!("{e}"),
    }
    let _ = set.documents();
    let Some(now) = chrono::DateTime::from_timestamp(1_773_500_000, 0) else {
        return;
    };
    for raw in INCIDENT_EVENTS {
        let Ok(event) = classify(raw) else { continue };
        let Reading::Trigger(facts) = read(&event) else {
            continue;
        };
        let plan = set.find(&facts);
        let _ = plan.map(|p| set.exemption_tag(p));
        let situation = Situation {
            function: "incident-response",
            event_id: event.id().unwrap_or("fuzz-event"),
            now,
            flap_window: Duration::from_secs(900),
            exempt_accounts: &[],
            exempt_tag: None,
            existing: None,
            gate: Gate::Closed {
                calendar: "change-freeze".into(),
                next_transition: None,
            },
            default_topic: None,
            automation_role: None,
        };
        let decision = decide(&facts, &set, plan, &situation);
        let Decision::Open(open) = decision else {
            continue;
        };
        assert!(
            !open.title.trim().is_empty() && open.title.len() <= MAX_TITLE,
            "{open:?}"
        );
        for step in &open.runbooks {
            if let RunbookStep::Start {
                parameters,
                disruptive,
                ..
            } = step
            {
                // The calendar is CLOSED: nothing disruptive may start.
                assert!(!disruptive, "{step:?}");
                // Whatever the plan's templates say, what reaches Automation is filtered.
                for (name, values) in parameters {
                    for v in values {
                        assert!(is_safe_token(v), "{name}={v:?}");
                        if name.ends_with("InstanceId") {
                            assert!(is_managed_node_id(v), "{name}={v:?}");
                        }
                    }
                }
            }
        }
    }
}

fn policy(text: &str) {
    use compliance_remediator::config::Deployment;
    use compliance_remediator::plan::{
        ASSOCIATION, Attempt, AttemptStatus, Finding, Fleet, Input, Key, LedgerState,
        MAX_ASSOCIATIONS_PER_CALL, PATCH, plan,
    };
    use compliance_remediator::policy::{MAX_INSTANCE_IDS, Policy};
    let Some(policy) = parse::<Policy>(text) else {
        return;
    };
    if policy.validate().map_err(|e| e.to_string()).is_err() {
        return;
    }
    // The deployment's (trimmed, non-empty) settings never make a valid policy invalid.
    let deployment = Deployment {
        exemption_tag_key: Some("autopilot:exempt".into()),
        change_calendar: Some("change-freeze".into()),
    };
    for builtin in [false, true] {
        let p = policy.clone().with_deployment(&deployment, builtin);
        assert_eq!(p.validate(), Ok(()), "builtin={builtin}");
        assert!(p.calendar().is_some());
    }

    // A fixed fleet: 12 online nodes (one exempt), 2 not online, every kind of finding.
    let node = |i: usize| format!("i-{i:017x}");
    let fleet = Fleet {
        online: (0..12).map(node).collect(),
        not_online: BTreeMap::from([(node(20), "ConnectionLost".to_owned())]),
        exempt: BTreeSet::from([node(3)]),
        associations: BTreeMap::from([(node(1), BTreeSet::from(["a-2".to_owned()]))]),
        known_associations: BTreeSet::from(["a-1".to_owned()]),
        ..Fleet::default()
    };
    let mut findings = Vec::new();
    for i in (0..12).chain([20]) {
        findings.push(Finding {
            patch_states: vec!["Missing".into()],
            severity: Some(if i % 2 == 0 { "CRITICAL" } else { "LOW" }.into()),
            ..Finding::new(&node(i), PATCH)
        });
        findings.push(Finding {
            association_ids: vec!["a-1".into()],
            ..Finding::new(&node(i), ASSOCIATION)
        });
    }
    for custom in policy.custom.keys() {
        findings.push(Finding::new(&node(5), custom));
    }
    for rule in policy.config_rules.keys() {
        findings.push(Finding::new(&node(6), &format!("config:{rule}")));
    }
    let mut ledger = LedgerState::default();
    ledger.attempts.insert(
        Key {
            resource_id: node(2),
            compliance_type: PATCH.into(),
        },
        Attempt {
            attempts: 1,
            last_attempt_at: 1_000,
            status: AttemptStatus::Failed,
            sweep_id: "earlier".into(),
        },
    );
    for calendar_open in [None, Some(false)] {
        let input = Input {
            findings: &findings,
            policy: &policy,
            ledger: &ledger,
            fleet: &fleet,
            now: 1_773_500_000,
            calendar_open,
            verify: true,
            automation_role: Some("arn:aws:iam::123456789012:role/automation"),
        };
        let out = plan(&input);
        assert_eq!(out, plan(&input), "the plan is deterministic");
        let batch = policy.patch.batch_size.min(MAX_INSTANCE_IDS);
        assert!(
            out.patch_batches
                .iter()
                .all(|b| !b.is_empty() && b.len() <= batch)
        );
        assert!(
            out.association_batches
                .iter()
                .all(|b| !b.is_empty() && b.len() <= MAX_ASSOCIATIONS_PER_CALL)
        );
        let nodes = out.target_nodes();
        assert!(
            !nodes.contains(node(3).as_str()),
            "an exempt node is never targeted"
        );
        assert!(
            !nodes.contains(node(20).as_str()),
            "nor one that is not online"
        );
        if calendar_open == Some(false) {
            assert!(
                out.targets.is_empty(),
                "a CLOSED calendar defers everything"
            );
        }
        if let Some(max) = policy.budget.max_nodes {
            assert!(nodes.len() <= max, "{} > maxNodes {max}", nodes.len());
        }
        if let Some(pct) = policy.budget.max_percent {
            let cap = (fleet.online.len() as f64 * pct / 100.0).ceil();
            assert!(nodes.len() as f64 <= cap, "{} > {pct}%", nodes.len());
        }
        assert!(
            out.automations
                .iter()
                .all(|a| nodes.contains(a.resource_id.as_str()))
        );
    }
}

fuzz_target!(|text: &str| {
    rules(text);
    plans(text);
    policy(text);
});
