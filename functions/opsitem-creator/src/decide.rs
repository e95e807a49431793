//! The pure decision: event + rules → actions. No I/O; everything here is unit-tested.

use std::borrow::Cow;
use std::collections::BTreeMap;

use autopilot_shared::events::{AutopilotEvent, Classified};
use serde::Serialize;

use autopilot_shared::template::render;

use crate::facts::{Facts, RawDetail, Signal, facts};
use crate::rules::RuleSet;

pub const MAX_TITLE: usize = 1024;
pub const MAX_DESCRIPTION: usize = 2048;
/// Each OperationalData value is limited to 20 KB.
pub const MAX_DATA_VALUE: usize = 20 * 1024;
/// Related resources kept on one item (keeps `/aws/resources` well under its limit).
pub const MAX_RESOURCES: usize = 100;
pub const OPSITEM_SOURCE: &str = "ssm-autopilot";
const TRUNCATED: &str = " …[truncated]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DataType {
    SearchableString,
    String,
}

/// Everything needed to create (or update) one OpsItem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Draft {
    pub rule: String,
    pub dedup: String,
    pub title: String,
    pub description: String,
    pub severity: String,
    pub category: Option<String>,
    pub priority: Option<i32>,
    pub ops_item_type: Option<String>,
    pub topic: Option<String>,
    pub runbook: Option<String>,
    pub resource_arns: Vec<String>,
    pub operational_data: BTreeMap<String, (DataType, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    Open(Box<Draft>),
    Resolve { dedup: String, note: String },
    Ignore { reason: String },
}

/// Decides what to do with a classified event (its raw text is kept on the item).
pub fn plan(
    classified: &Classified<'_>,
    rules: &RuleSet,
    ec2_states: &[String],
    default_topic: Option<&str>,
) -> Vec<Action> {
    let (event, raw) = (&classified.event, classified.raw);
    let detail = RawDetail::new(classified.detail);
    facts(event, ec2_states)
        .into_iter()
        .map(|f| match f.signal {
            Signal::Neutral(reason) => Action::Ignore {
                reason: reason.to_owned(),
            },
            Signal::Recovery if rules.resolves(f.kind) => Action::Resolve {
                note: format!(
                    "Resolved by ssm-autopilot: {} reported recovery (event {}).",
                    event.detail_type(),
                    event.id().unwrap_or("?")
                ),
                dedup: f.dedup,
            },
            Signal::Recovery => Action::Ignore {
                reason: format!("auto-resolve is off for {}", f.kind),
            },
            Signal::Problem => match rules.find(f.kind, |ptr| detail.lookup(f.scope, ptr)) {
                None => Action::Ignore {
                    reason: format!("no rule matches this {} event", f.kind),
                },
                Some(rule) => Action::Open(Box::new(draft(event, raw, &f, rule, default_topic))),
            },
        })
        .collect()
}

fn draft(
    event: &AutopilotEvent,
    raw: &[u8],
    f: &Facts,
    rule: &crate::rules::Rule,
    default_topic: Option<&str>,
) -> Draft {
    let rendered = render(&rule.title, &f.vars);
    // A title made only of variables this event lacks renders blank, which CreateOpsItem
    // rejects on every delivery: name the event and the rule instead.
    let title = match rendered.trim() {
        "" => format!("{} ({})", event.detail_type(), rule.name),
        t => t.to_owned(),
    };
    let title = truncate(&title, MAX_TITLE);
    let description = match rule.description.as_deref().map(|d| render(d, &f.vars)) {
        Some(d) if !d.trim().is_empty() => d,
        _ => title.clone(),
    };
    let mut arns = f.resource_arns.clone();
    arns.truncate(MAX_RESOURCES);
    let (account, region) = event.account_region();
    let now = event.time().map(|t| t.to_rfc3339()).unwrap_or_default();
    let mut data = BTreeMap::new();
    // OpsCenter rejects blank values, so absent facts are left out rather than sent empty.
    let mut put = |k: &str, t: DataType, v: &str| {
        if !v.trim().is_empty() {
            data.insert(k.to_owned(), (t, truncate(v, MAX_DATA_VALUE)));
        }
    };
    put(
        "/aws/dedup",
        DataType::SearchableString,
        &serde_json::json!({ "dedupString": f.dedup }).to_string(),
    );
    put(
        "/aws/resources",
        DataType::SearchableString,
        &resources_json(&arns),
    );
    if let Some(rb) = &rule.runbook {
        put(
            "/aws/automations",
            DataType::SearchableString,
            &serde_json::json!([{ "automationType": "AWS:SSM:Automation", "automationId": rb }])
                .to_string(),
        );
    }
    put("autopilot:dedup", DataType::SearchableString, &f.dedup);
    put(
        "autopilot:account",
        DataType::SearchableString,
        account.unwrap_or_default(),
    );
    put(
        "autopilot:region",
        DataType::SearchableString,
        region.unwrap_or_default(),
    );
    put(
        "autopilot:source",
        DataType::SearchableString,
        event.source(),
    );
    put(
        "autopilot:resourceIds",
        DataType::SearchableString,
        &f.resource_ids.join(","),
    );
    put("autopilot:rule", DataType::String, &rule.name);
    put("autopilot:occurrences", DataType::String, "1");
    put("autopilot:firstSeen", DataType::String, &now);
    put("autopilot:lastSeen", DataType::String, &now);
    put(
        "autopilot:createdByEvent",
        DataType::String,
        event.id().unwrap_or_default(),
    );
    // A parsed event is valid UTF-8, so this borrows (the lossy fallback is for callers that
    // pass other bytes); only the kept (≤ 20 KB) part is copied.
    let text =
        std::str::from_utf8(raw).map_or_else(|_| String::from_utf8_lossy(raw), Cow::Borrowed);
    put("autopilot:event", DataType::String, &text);
    Draft {
        rule: rule.name.clone(),
        dedup: f.dedup.clone(),
        title,
        description: truncate(&description, MAX_DESCRIPTION),
        severity: rule.severity.clone(),
        category: rule.category.clone(),
        priority: rule.priority,
        ops_item_type: rule.ops_item_type.clone(),
        topic: rule
            .notification_topic
            .clone()
            .or_else(|| default_topic.map(str::to_owned)),
        runbook: rule.runbook.clone(),
        resource_arns: arns,
        operational_data: data,
    }
}

pub fn resources_json(arns: &[String]) -> String {
    let list: Vec<_> = arns
        .iter()
        .map(|a| serde_json::json!({ "arn": a }))
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// Cuts `s` to at most `max` bytes on a character boundary, with a visible marker.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(TRUNCATED.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{RuleSet, default_rules};
    use autopilot_shared::events::classify_raw;

    fn sample(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../events/opsitem-creator/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn plan_for(path: &str) -> Vec<Action> {
        let raw = sample(path);
        let ev = classify_raw(&raw).unwrap();
        plan(
            &ev,
            &default_rules().unwrap(),
            &["stopped".into(), "terminated".into()],
            Some("arn:aws:sns:us-east-1:123456789012:t"),
        )
    }

    #[test]
    fn alarm_opens_and_ok_resolves_the_same_identity() {
        let open = plan_for("alarm-metric-alarm.json");
        let resolve = plan_for("alarm-metric-ok.json");
        let Action::Open(d) = &open[0] else {
            panic!("{open:?}")
        };
        let Action::Resolve { dedup, .. } = &resolve[0] else {
            panic!("{resolve:?}")
        };
        assert_eq!(&d.dedup, dedup);
        assert!(d.title.contains("is in ALARM"), "{}", d.title);
        assert_eq!(d.severity, "2");
        assert!(
            d.resource_arns.iter().any(|a| a.contains(":instance/i-")),
            "{:?}",
            d.resource_arns
        );
        assert!(d.operational_data["/aws/dedup"].1.contains("dedupString"));
        assert_eq!(
            d.topic.as_deref(),
            Some("arn:aws:sns:us-east-1:123456789012:t")
        );
    }

    #[test]
    fn a_title_that_renders_blank_names_the_event_and_rule() {
        let raw = sample("alarm-metric-alarm.json");
        let ev = classify_raw(&raw).unwrap();
        let mut rules = default_rules().unwrap();
        for r in &mut rules.rules {
            r.title = " {{ no_such_variable }} ".into();
            r.description = None;
        }
        let actions = plan(&ev, &rules, &[], None);
        let Action::Open(d) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            d.title,
            format!("CloudWatch Alarm State Change ({})", d.rule)
        );
        assert_eq!(d.description, d.title);
    }

    #[test]
    fn repeat_alarm_has_same_dedup_and_more_resources() {
        let Action::Open(a) = &plan_for("alarm-metric-alarm.json")[0] else {
            panic!()
        };
        let Action::Open(b) = &plan_for("alarm-metric-alarm-second-instance.json")[0] else {
            panic!()
        };
        assert_eq!(a.dedup, b.dedup);
        assert!(
            b.resource_arns.len() > a.resource_arns.len(),
            "{:?} vs {:?}",
            a.resource_arns,
            b.resource_arns
        );
    }

    #[test]
    fn every_sample_gets_a_decision() {
        let expect = [
            ("alarm-composite.json", "open"),
            ("alarm-metric-math.json", "open"),
            ("ec2-stopped.json", "open"),
            ("ec2-terminated.json", "open"),
            ("ec2-spot-interruption.json", "open"),
            ("health-ec2-scheduled-change.json", "open"),
            ("guardduty-finding-high.json", "open"),
            ("securityhub-finding-new.json", "open"),
            ("securityhub-finding-resolved.json", "resolve"),
            ("ssm-compliance-noncompliant.json", "open"),
            ("ssm-compliance-compliant.json", "resolve"),
            ("automation-failed.json", "open"),
            ("automation-timedout.json", "open"),
        ];
        for (file, want) in expect {
            let got = match &plan_for(file)[0] {
                Action::Open(_) => "open",
                Action::Resolve { .. } => "resolve",
                Action::Ignore { .. } => "ignore",
            };
            assert_eq!(got, want, "{file}");
        }
    }

    #[test]
    fn guardduty_severity_picks_the_rule() {
        let Action::Open(d) = &plan_for("guardduty-finding-high.json")[0] else {
            panic!()
        };
        assert_eq!(
            (d.rule.as_str(), d.severity.as_str()),
            ("guardduty-high", "1")
        );
    }

    #[test]
    fn limits_are_enforced_with_a_marker() {
        let t = truncate(&"é".repeat(2000), MAX_TITLE);
        assert!(t.len() <= MAX_TITLE && t.ends_with("[truncated]"));
        assert_eq!(truncate("short", 10), "short");
        let raw = sample("alarm-metric-alarm.json");
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["detail"]["alarmName"] = serde_json::Value::String("a".repeat(3000));
        v["detail"]["state"]["reason"] = serde_json::Value::String("r".repeat(50_000));
        let raw = serde_json::to_vec(&v).unwrap();
        let ev = classify_raw(&raw).unwrap();
        let Action::Open(d) = &plan(&ev, &default_rules().unwrap(), &[], None)[0] else {
            panic!()
        };
        assert!(d.title.len() <= MAX_TITLE);
        assert!(d.description.len() <= MAX_DESCRIPTION);
        assert!(
            d.operational_data
                .values()
                .all(|(_, v)| v.len() <= MAX_DATA_VALUE && !v.trim().is_empty())
        );
        assert!(
            d.operational_data["autopilot:event"]
                .1
                .ends_with("[truncated]")
        );
        assert!(d.dedup.len() < 200);
    }

    fn rules(yaml: &str) -> RuleSet {
        let set: RuleSet = serde_norway::from_str(yaml).unwrap();
        set.validate().unwrap();
        set
    }

    fn rule_of(rules: &RuleSet, raw: &[u8]) -> Vec<String> {
        let ev = classify_raw(raw).unwrap();
        plan(&ev, rules, &[], None)
            .into_iter()
            .map(|a| match a {
                Action::Open(d) => d.rule,
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn field_conditions_address_the_event_as_aws_sent_it() {
        // `partition` is not part of the typed GuardDuty detail: rules still see it.
        let set = rules(
            "rules:\n  - name: gov\n    match: {kind: guardduty, fields: {/partition: [aws-us-gov]}}\n    title: t\n    severity: '1'\n  - name: commercial\n    match: {kind: guardduty, fields: {/partition: [aws], /severity: {atLeast: 7}}}\n    title: t\n    severity: '2'\n",
        );
        let raw = sample("guardduty-finding-high.json");
        assert_eq!(rule_of(&set, &raw), ["commercial"]);
        // The same detail sent as a JSON document inside a string matches the same way.
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["detail"] = serde_json::Value::String(v["detail"].to_string());
        let encoded = serde_json::to_vec(&v).unwrap();
        assert_eq!(rule_of(&set, &encoded), ["commercial"]);
    }

    #[test]
    fn security_hub_conditions_apply_to_each_finding() {
        let raw = sample("securityhub-finding-new.json");
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let mut second = v["detail"]["findings"][0].clone();
        second["Id"] = "second-finding".into();
        second["ProductName"] = "Inspector".into();
        v["detail"]["findings"][0]["ProductName"] = "GuardDuty".into();
        v["detail"]["findings"].as_array_mut().unwrap().push(second);
        let raw = serde_json::to_vec(&v).unwrap();
        let set = rules(
            "rules:\n  - name: inspector\n    match: {kind: securityhub, fields: {/ProductName: [Inspector]}}\n    title: t\n    severity: '3'\n  - name: other\n    match: {kind: securityhub}\n    title: t\n    severity: '2'\n",
        );
        assert_eq!(rule_of(&set, &raw), ["other", "inspector"]);
    }

    #[test]
    fn unconfigured_ec2_state_is_ignored() {
        let raw = sample("ec2-stopped.json");
        let ev = classify_raw(&raw).unwrap();
        let got = plan(&ev, &default_rules().unwrap(), &["terminated".into()], None);
        assert!(matches!(&got[0], Action::Ignore { .. }), "{got:?}");
    }
}
