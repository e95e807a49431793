//! The remediation policy: what to run per compliance type, and the safety gates. Loaded from
//! Parameter Store (JSON or YAML) so operators change it without a redeploy; the built-in
//! default in `default_policy.yaml` applies when the parameter does not exist.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Deployment;

/// Run Command accepts at most 50 instance ids per call.
pub const MAX_INSTANCE_IDS: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub patch: PatchAction,
    pub association: AssociationAction,
    /// `Custom:<name>` → runbook.
    #[serde(default)]
    pub custom: BTreeMap<String, RunbookAction>,
    /// AWS Config rule name → runbook.
    #[serde(default)]
    pub config_rules: BTreeMap<String, RunbookAction>,
    #[serde(default)]
    pub exemption_tag: Option<ExemptionTag>,
    pub budget: Budget,
    pub cooldown_minutes: u32,
    pub retry_after_minutes: u32,
    pub max_attempts: u32,
    #[serde(default)]
    pub change_calendar: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchAction {
    pub enabled: bool,
    pub reboot_option: String,
    pub max_concurrency: String,
    pub max_errors: String,
    #[serde(default = "fifty")]
    pub batch_size: usize,
    #[serde(default = "hour")]
    pub timeout_seconds: i32,
}

fn fifty() -> usize {
    MAX_INSTANCE_IDS
}

fn hour() -> i32 {
    3600
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssociationAction {
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunbookAction {
    pub runbook: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExemptionTag {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    #[serde(default)]
    pub max_nodes: Option<usize>,
    #[serde(default)]
    pub max_percent: Option<f64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("remediation policy: {0}")]
pub struct PolicyError(pub &'static str);

impl Policy {
    /// Checks what the APIs would reject, so a bad policy fails at load, not mid-sweep.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !matches!(
            self.patch.reboot_option.as_str(),
            "RebootIfNeeded" | "NoReboot"
        ) {
            return Err(PolicyError(
                "patch.rebootOption must be RebootIfNeeded or NoReboot",
            ));
        }
        if !(1..=MAX_INSTANCE_IDS).contains(&self.patch.batch_size) {
            return Err(PolicyError("patch.batchSize must be 1 to 50"));
        }
        if !(valid_rate(&self.patch.max_concurrency) && valid_rate(&self.patch.max_errors)) {
            return Err(PolicyError(
                "patch.maxConcurrency/maxErrors must be a number or a percentage",
            ));
        }
        if self
            .budget
            .max_percent
            .is_some_and(|p| !(p.is_finite() && (0.0..=100.0).contains(&p)))
        {
            return Err(PolicyError("budget.maxPercent must be 0 to 100"));
        }
        if self.max_attempts == 0 {
            return Err(PolicyError("maxAttempts must be at least 1"));
        }
        let runbooks = self.custom.values().chain(self.config_rules.values());
        for r in runbooks {
            if !autopilot_shared::events::ids::is_safe_token(&r.runbook) {
                return Err(PolicyError("runbook name has forbidden characters"));
            }
        }
        if self
            .custom
            .keys()
            .any(|k| !k.starts_with("Custom:") || k.len() <= "Custom:".len())
        {
            return Err(PolicyError(
                "custom keys are Custom:<name> compliance types",
            ));
        }
        if self
            .exemption_tag
            .as_ref()
            .is_some_and(|t| t.key.trim().is_empty())
        {
            return Err(PolicyError("exemptionTag.key is empty"));
        }
        Ok(())
    }

    /// Applies the deployment's settings (template parameters). The built-in policy takes the
    /// deployment's exemption tag key; a stored policy keeps its own tag and calendar and
    /// takes the deployment's only where it sets none, so operators can refine without
    /// losing the deployment-wide gate.
    pub fn with_deployment(mut self, d: &Deployment, builtin: bool) -> Self {
        if let Some(key) = d.exemption_tag_key.as_deref().filter(|k| !k.is_empty()) {
            match &mut self.exemption_tag {
                Some(tag) if builtin => tag.key = key.to_owned(),
                Some(_) => {}
                None => {
                    self.exemption_tag = Some(ExemptionTag {
                        key: key.to_owned(),
                        values: Vec::new(),
                    })
                }
            }
        }
        if self.calendar().is_none()
            && let Some(c) = d.change_calendar.as_deref().filter(|c| !c.is_empty())
        {
            self.change_calendar = c.to_owned();
        }
        self
    }

    pub fn calendar(&self) -> Option<&str> {
        Some(self.change_calendar.trim()).filter(|c| !c.is_empty())
    }
}

/// `10`, `10%` (MaxConcurrency / MaxErrors syntax).
fn valid_rate(v: &str) -> bool {
    let digits = v.strip_suffix('%').unwrap_or(v);
    !digits.is_empty() && digits.len() <= 7 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The policy used when no parameter exists; documented in the README.
pub const DEFAULT_POLICY: &str = include_str!("default_policy.yaml");

pub fn default_policy() -> Result<Policy, PolicyError> {
    let p: Policy = serde_norway::from_str(DEFAULT_POLICY)
        .map_err(|_| PolicyError("the built-in policy does not parse"))?;
    p.validate()?;
    Ok(p)
}

/// Substitutes `{{ resource_id }}` and `{{ automation_role }}`; drops parameters that render empty.
pub fn render_parameters(
    params: &BTreeMap<String, Vec<String>>,
    resource_id: &str,
    automation_role: Option<&str>,
) -> BTreeMap<String, Vec<String>> {
    params
        .iter()
        .filter_map(|(k, vs)| {
            let rendered: Vec<String> = vs
                .iter()
                .map(|v| {
                    v.replace("{{ resource_id }}", resource_id)
                        .replace("{{resource_id}}", resource_id)
                        .replace("{{ automation_role }}", automation_role.unwrap_or_default())
                        .replace("{{automation_role}}", automation_role.unwrap_or_default())
                })
                .filter(|v| !v.trim().is_empty())
                .collect();
            (!rendered.is_empty()).then(|| (k.clone(), rendered))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid_and_safe() {
        let p = default_policy().unwrap();
        assert!(p.patch.batch_size <= MAX_INSTANCE_IDS);
        assert!(p.budget.max_nodes.is_some() || p.budget.max_percent.is_some());
        assert_eq!(p.exemption_tag.unwrap().key, "autopilot:exempt");
        assert!(p.config_rules.contains_key("ec2-imdsv2-check"));
    }

    #[test]
    fn deployment_settings_replace_the_builtin_and_fill_a_stored_policy() {
        let d = Deployment {
            exemption_tag_key: Some("team:no-patch".into()),
            change_calendar: Some("prod-changes".into()),
        };
        let builtin = default_policy().unwrap().with_deployment(&d, true);
        assert_eq!(builtin.exemption_tag.as_ref().unwrap().key, "team:no-patch");
        assert_eq!(builtin.calendar(), Some("prod-changes"));

        // A stored policy's own choices win.
        let mut own = default_policy().unwrap();
        own.exemption_tag = Some(ExemptionTag {
            key: "ops:frozen".into(),
            values: vec!["yes".into()],
        });
        own.change_calendar = "ops-calendar".into();
        let own = own.with_deployment(&d, false);
        assert_eq!(own.exemption_tag.as_ref().unwrap().key, "ops:frozen");
        assert_eq!(own.calendar(), Some("ops-calendar"));

        // Where it sets none, the deployment's apply.
        let mut gaps = default_policy().unwrap();
        gaps.exemption_tag = None;
        let gaps = gaps.with_deployment(&d, false);
        assert_eq!(gaps.exemption_tag.as_ref().unwrap().key, "team:no-patch");
        assert_eq!(gaps.calendar(), Some("prod-changes"));

        // No deployment settings: unchanged.
        let plain = default_policy()
            .unwrap()
            .with_deployment(&Deployment::default(), true);
        assert_eq!(plain, default_policy().unwrap());
    }

    #[test]
    fn invalid_policies_are_rejected() {
        let mut p = default_policy().unwrap();
        p.patch.batch_size = 51;
        assert!(p.validate().is_err());
        let mut p = default_policy().unwrap();
        p.patch.reboot_option = "Always".into();
        assert!(p.validate().is_err());
        let mut p = default_policy().unwrap();
        p.patch.max_errors = "ten".into();
        assert!(p.validate().is_err());
        let mut p = default_policy().unwrap();
        p.budget.max_percent = Some(150.0);
        assert!(p.validate().is_err());
        let mut p = default_policy().unwrap();
        p.custom.insert(
            "Custom:X".into(),
            RunbookAction {
                runbook: "AWS-X; rm".into(),
                parameters: BTreeMap::new(),
            },
        );
        assert!(p.validate().is_err());
        let json = r#"{"patch":{"enabled":true,"rebootOption":"NoReboot","maxConcurrency":"5","maxErrors":"1"},
            "association":{"enabled":false},"budget":{"maxNodes":3},"cooldownMinutes":1,
            "retryAfterMinutes":1,"maxAttempts":2,"surprise":1}"#;
        assert!(
            serde_json::from_str::<Policy>(json).is_err(),
            "unknown keys"
        );
    }

    #[test]
    fn parameters_render_and_empty_ones_drop() {
        let p = default_policy().unwrap();
        let r = &p.config_rules["ec2-imdsv2-check"];
        let out = render_parameters(&r.parameters, "i-0123", None);
        assert_eq!(out["InstanceId"], vec!["i-0123".to_owned()]);
        assert!(!out.contains_key("AutomationAssumeRole"));
        let out = render_parameters(&r.parameters, "i-0123", Some("arn:aws:iam::1:role/r"));
        assert_eq!(
            out["AutomationAssumeRole"],
            vec!["arn:aws:iam::1:role/r".to_owned()]
        );
    }
}
