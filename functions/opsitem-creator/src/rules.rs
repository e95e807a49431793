//! Rules: which events open OpsItems, and with what content. Loaded from Parameter Store
//! (JSON or YAML) so operators change them without a redeploy; a built-in default applies
//! when the parameter does not exist.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Matcher,
    /// Template: `{{ alarm_name }}`, `{{ instance_id }}`, ... (see [`crate::facts`]).
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// OpsItem severity "1" (critical) – "4" (low).
    pub severity: String,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub ops_item_type: Option<String>,
    #[serde(default)]
    pub notification_topic: Option<String>,
    /// Runbook linked under `/aws/automations`.
    #[serde(default)]
    pub runbook: Option<String>,
    /// Resolve the item when the source recovers (alarm OK, finding resolved, compliant).
    #[serde(default = "yes")]
    pub auto_resolve: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Matcher {
    /// Event kind: alarm, ec2-state-change, spot-interruption, health, guardduty,
    /// securityhub, ssm-compliance, automation-status.
    pub kind: String,
    /// Conditions on `detail` fields, addressed by JSON pointer (`/alarmName`).
    #[serde(default)]
    pub fields: BTreeMap<String, Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    /// The field equals one of these strings.
    OneOf(Vec<String>),
    Test(Test),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Test {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub at_least: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
}

/// A rule is named by its position, never by its text: the document may be a SecureString.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RulesError {
    #[error("rules[{index}]: {problem}")]
    Invalid { index: usize, problem: &'static str },
    #[error("the built-in rules do not parse")]
    BuiltIn,
}

const CATEGORIES: [&str; 5] = [
    "Availability",
    "Cost",
    "Performance",
    "Recovery",
    "Security",
];

impl RuleSet {
    /// Checks what OpsCenter would reject, so a bad rule fails at load, not per event.
    pub fn validate(&self) -> Result<(), RulesError> {
        for (index, r) in self.rules.iter().enumerate() {
            let bad = |problem| Err(RulesError::Invalid { index, problem });
            if !matches!(r.severity.as_str(), "1" | "2" | "3" | "4") {
                return bad("severity must be \"1\" to \"4\"");
            }
            if r.priority.is_some_and(|p| !(1..=5).contains(&p)) {
                return bad("priority must be 1 to 5");
            }
            if r.category
                .as_deref()
                .is_some_and(|c| !CATEGORIES.contains(&c))
            {
                return bad(
                    "category must be Availability, Cost, Performance, Recovery or Security",
                );
            }
            if r.title.trim().is_empty() {
                return bad("title is empty");
            }
            if r.runbook
                .as_deref()
                .is_some_and(|b| !autopilot_shared::events::ids::is_safe_token(b))
            {
                return bad("runbook name has forbidden characters");
            }
            if r.matcher.fields.keys().any(|k| !k.starts_with('/')) {
                return bad("field keys are JSON pointers starting with /");
            }
        }
        Ok(())
    }

    /// First rule matching the event kind and detail; `field` looks up a JSON pointer in the
    /// detail and is called only for the conditions of rules of this kind.
    pub fn find(&self, kind: &str, field: impl Fn(&str) -> Option<Value>) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.matcher.kind == kind
                && r.matcher
                    .fields
                    .iter()
                    .all(|(ptr, c)| c.holds(field(ptr).as_ref()))
        })
    }

    /// Whether some rule for `kind` wants recovery events to resolve items.
    pub fn resolves(&self, kind: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.matcher.kind == kind && r.auto_resolve)
    }
}

impl Condition {
    fn holds(&self, v: Option<&Value>) -> bool {
        use std::borrow::Cow;
        let text: Option<Cow<'_, str>> = v.and_then(|v| match v {
            Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => None,
        });
        match self {
            Condition::OneOf(options) => text.is_some_and(|t| options.iter().any(|o| *o == *t)),
            Condition::Test(t) => {
                let num = text.as_deref().and_then(|s| s.parse::<f64>().ok());
                t.prefix
                    .as_ref()
                    .is_none_or(|p| text.as_deref().is_some_and(|s| s.starts_with(p.as_str())))
                    && t.at_least.is_none_or(|min| num.is_some_and(|n| n >= min))
                    && t.below.is_none_or(|max| num.is_some_and(|n| n < max))
            }
        }
    }
}

/// The rules used when no parameter is configured; documented in the README.
pub const DEFAULT_RULES: &str = include_str!("default_rules.yaml");

pub fn default_rules() -> Result<RuleSet, RulesError> {
    let set: RuleSet = serde_norway::from_str(DEFAULT_RULES).map_err(|_| RulesError::BuiltIn)?;
    set.validate()?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_rules_are_valid_and_cover_every_trigger() {
        let r = default_rules().unwrap();
        for kind in [
            "alarm",
            "ec2-state-change",
            "spot-interruption",
            "health",
            "guardduty",
            "securityhub",
            "ssm-compliance",
            "automation-status",
        ] {
            assert!(r.rules.iter().any(|x| x.matcher.kind == kind), "{kind}");
        }
    }

    #[test]
    fn conditions() {
        let detail = json!({"severity": 8.0, "alarmName": "prod-cpu", "state": {"value": "ALARM"}});
        let hold = |c: Condition, p: &str| c.holds(detail.pointer(p));
        assert!(hold(
            Condition::Test(Test {
                prefix: None,
                at_least: Some(7.0),
                below: None
            }),
            "/severity"
        ));
        assert!(!hold(
            Condition::Test(Test {
                prefix: None,
                at_least: Some(9.0),
                below: None
            }),
            "/severity"
        ));
        assert!(hold(
            Condition::Test(Test {
                prefix: Some("prod-".into()),
                at_least: None,
                below: None
            }),
            "/alarmName"
        ));
        assert!(hold(Condition::OneOf(vec!["ALARM".into()]), "/state/value"));
        assert!(!hold(Condition::OneOf(vec!["OK".into()]), "/state/value"));
        assert!(!hold(Condition::OneOf(vec!["x".into()]), "/missing"));
    }

    #[test]
    fn invalid_rules_are_rejected() {
        let mut r = default_rules().unwrap();
        r.rules[1].severity = "9".into();
        r.rules[1].name = "s3cr3t-name".into();
        let err = r.validate().unwrap_err();
        assert_eq!(
            err,
            RulesError::Invalid {
                index: 1,
                problem: "severity must be \"1\" to \"4\""
            }
        );
        // Named by position only: the document may be a SecureString.
        assert_eq!(err.to_string(), "rules[1]: severity must be \"1\" to \"4\"");
        let mut r = default_rules().unwrap();
        r.rules[0].category = Some("Compliance".into());
        assert!(r.validate().is_err());
        let mut r = default_rules().unwrap();
        r.rules[0].runbook = Some("AWS-X; reboot".into());
        assert!(r.validate().is_err());
        let bad_yaml = "rules:\n  - name: x\n    match: {kind: alarm}\n    title: t\n    severity: '2'\n    surprise: 1\n";
        assert!(
            serde_norway::from_str::<RuleSet>(bad_yaml).is_err(),
            "unknown keys are rejected"
        );
    }
}
