//! Response plans: which events open incidents, with what impact and which runbooks. Loaded
//! from Parameter Store (JSON or YAML) so operators change them without a redeploy; the
//! built-in document (`default_plans.yaml`) applies when the parameter does not exist.

use std::collections::BTreeMap;

use autopilot_shared::events::ids::is_safe_token;
use autopilot_shared::template::variables;
use serde::{Deserialize, Serialize};

use crate::facts::{Facts, KNOWN_VARS};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanSet {
    /// Tag key that exempts a resource from every plan (unless a plan sets its own).
    #[serde(default)]
    pub exemption_tag: Option<String>,
    /// Accounts never acted on.
    #[serde(default)]
    pub exempt_accounts: Vec<String>,
    pub plans: Vec<Plan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Matcher,
    #[serde(default)]
    pub respond: Respond,
    /// 1 (critical) – 5 (no impact).
    pub impact: u8,
    pub title: String,
    /// OpsItem category (Availability, Cost, Performance, Recovery, Security).
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub runbooks: Vec<Runbook>,
    #[serde(default)]
    pub notification_topic: Option<String>,
    #[serde(default)]
    pub exemption_tag: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Respond {
    #[default]
    Incident,
    Notify,
    Annotate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Matcher {
    pub kind: String,
    #[serde(default)]
    pub alarm_name_prefix: Option<String>,
    /// GuardDuty severity at or above which the plan applies.
    #[serde(default)]
    pub min_severity: Option<f64>,
    #[serde(default)]
    pub finding_type_prefix: Option<String>,
    #[serde(default)]
    pub ec2_states: Vec<String>,
    #[serde(default)]
    pub health_categories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Runbook {
    /// SSM Automation runbook name (`AWS-RestartEC2Instance`).
    pub document: String,
    /// Parameter values are templates (`{{ instance_id }}`).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Runs only while the Change Calendar is OPEN.
    #[serde(default)]
    pub disruptive: bool,
}

/// Where a plan is wrong, by position (`plans[2].runbooks[0]`), never by its text: the
/// document may be a SecureString.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlansError {
    #[error("plans[{plan}]{}: {problem}", runbook_path(*.runbook))]
    Invalid {
        plan: usize,
        runbook: Option<usize>,
        problem: &'static str,
    },
    #[error("the built-in plans do not parse")]
    BuiltIn,
}

fn runbook_path(runbook: Option<usize>) -> String {
    runbook
        .map(|r| format!(".runbooks[{r}]"))
        .unwrap_or_default()
}

const KINDS: [&str; 5] = [
    "alarm",
    "guardduty",
    "ec2-state-change",
    "spot-interruption",
    "health",
];
const CATEGORIES: [&str; 5] = [
    "Availability",
    "Cost",
    "Performance",
    "Recovery",
    "Security",
];

/// Runbook names: letters, digits, `_`, `-`, `.` (SSM document name pattern), 3–128 chars.
pub fn is_document_name(s: &str) -> bool {
    (3..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl PlanSet {
    /// Checks what would fail later, so a bad document fails at load, not per event.
    pub fn validate(&self) -> Result<(), PlansError> {
        let mut names = std::collections::BTreeSet::new();
        for (plan, p) in self.plans.iter().enumerate() {
            let bad = |problem| {
                Err(PlansError::Invalid {
                    plan,
                    runbook: None,
                    problem,
                })
            };
            if p.name.trim().is_empty() || !is_safe_token(&p.name) || p.name.contains('#') {
                return bad("name is empty or has forbidden characters");
            }
            if !names.insert(p.name.as_str()) {
                return bad("name is not unique");
            }
            if !KINDS.contains(&p.matcher.kind.as_str()) {
                return bad(
                    "match.kind must be alarm, guardduty, ec2-state-change, spot-interruption or health",
                );
            }
            if !(1..=5).contains(&p.impact) {
                return bad("impact must be 1 to 5");
            }
            if p.title.trim().is_empty() {
                return bad("title is empty");
            }
            if p.category
                .as_deref()
                .is_some_and(|c| !CATEGORIES.contains(&c))
            {
                return bad(
                    "category must be Availability, Cost, Performance, Recovery or Security",
                );
            }
            for (runbook, r) in p.runbooks.iter().enumerate() {
                let bad = |problem| {
                    Err(PlansError::Invalid {
                        plan,
                        runbook: Some(runbook),
                        problem,
                    })
                };
                if !is_document_name(&r.document) {
                    return bad("document is not a valid SSM document name");
                }
                for (k, v) in &r.parameters {
                    if !is_document_name(k) {
                        return bad("a parameter name is not a valid SSM parameter name");
                    }
                    if variables(v).any(|var| !KNOWN_VARS.contains(&var)) {
                        return bad(
                            "a parameter value uses a template variable that is not one of the documented ones",
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// First plan matching the event.
    pub fn find(&self, f: &Facts) -> Option<&Plan> {
        self.plans.iter().find(|p| p.matcher.matches(f))
    }

    pub fn exemption_tag<'a>(&'a self, plan: &'a Plan) -> Option<&'a str> {
        plan.exemption_tag
            .as_deref()
            .or(self.exemption_tag.as_deref())
            .filter(|t| !t.is_empty())
    }

    /// Every runbook the plans name (the IAM policy must allow exactly these).
    pub fn documents(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self
            .plans
            .iter()
            .flat_map(|p| p.runbooks.iter().map(|r| r.document.as_str()))
            .collect();
        d.sort_unstable();
        d.dedup();
        d
    }
}

impl Matcher {
    pub fn matches(&self, f: &Facts) -> bool {
        if self.kind != f.kind {
            return false;
        }
        let var = |k: &str| f.vars.get(k).map(String::as_str).unwrap_or_default();
        self.alarm_name_prefix
            .as_deref()
            .is_none_or(|p| var("alarm_name").starts_with(p))
            && self
                .min_severity
                .is_none_or(|min| f.severity.is_some_and(|s| s >= min))
            && self
                .finding_type_prefix
                .as_deref()
                .is_none_or(|p| var("finding_type").starts_with(p))
            && (self.ec2_states.is_empty() || self.ec2_states.iter().any(|s| s == var("state")))
            && (self.health_categories.is_empty()
                || self
                    .health_categories
                    .iter()
                    .any(|c| c == var("event_type_category")))
    }
}

/// The plans used when no parameter exists; documented in the file itself.
pub const DEFAULT_PLANS: &str = include_str!("default_plans.yaml");

pub fn default_plans() -> Result<PlanSet, PlansError> {
    let set: PlanSet = serde_norway::from_str(DEFAULT_PLANS).map_err(|_| PlansError::BuiltIn)?;
    set.validate()?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plans_are_valid() {
        let p = default_plans().unwrap();
        assert_eq!(
            p.documents(),
            vec!["AWS-RestartEC2Instance", "AWSSupport-ContainEC2Instance"]
        );
        for kind in KINDS {
            assert!(p.plans.iter().any(|x| x.matcher.kind == kind), "{kind}");
        }
    }

    #[test]
    fn invalid_plans_are_rejected() {
        let base = default_plans().unwrap();
        let mut p = base.clone();
        p.plans[0].impact = 0;
        assert!(p.validate().is_err());
        let mut p = base.clone();
        p.plans[0].runbooks[0].document = "AWS-X; s3cr3t".into();
        let err = p.validate().unwrap_err();
        assert_eq!(
            err,
            PlansError::Invalid {
                plan: 0,
                runbook: Some(0),
                problem: "document is not a valid SSM document name"
            }
        );
        // Named by position only: the document may be a SecureString.
        assert_eq!(
            err.to_string(),
            "plans[0].runbooks[0]: document is not a valid SSM document name"
        );
        let mut p = base.clone();
        p.plans[0].runbooks[0]
            .parameters
            .insert("InstanceId".into(), "{{ nope }}".into());
        assert!(p.validate().is_err());
        let mut p = base.clone();
        p.plans[1].name = p.plans[0].name.clone();
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "plans[1]: name is not unique"
        );
        let mut p = base;
        p.plans[0].matcher.kind = "securityhub".into();
        let message = p.validate().unwrap_err().to_string();
        for kind in KINDS {
            assert!(message.contains(kind), "{message}");
        }
        let yaml = "plans:\n  - name: x\n    match: {kind: alarm}\n    impact: 2\n    title: t\n    surprise: 1\n";
        assert!(serde_norway::from_str::<PlanSet>(yaml).is_err());
    }
}
