//! Typed configuration from the environment set by `template.yaml`.

use std::time::Duration;

use autopilot_shared::config::{ConfigError, Env, process_env};

/// Where incidents are mirrored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A high-severity OpsItem plus an SNS notification (works in every account).
    OpsCenter,
    /// `ssm-incidents:StartIncident` against a response plan (accounts that still have it).
    IncidentManager { response_plan_arn: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub function_name: String,
    pub idempotency_table: String,
    pub ledger_table: String,
    pub audit_bus: String,
    /// Parameter holding the response-plan document (JSON or YAML); built-in plans when absent.
    pub plans_parameter: String,
    pub plans_cache: Duration,
    pub backend: Backend,
    /// Default SNS topic, when a plan names none.
    pub notification_topic: Option<String>,
    /// Change Calendar gating disruptive runbooks; `None` = no gate.
    pub change_calendar: Option<String>,
    /// Role the runbooks assume (`AutomationAssumeRole`), when a runbook does not set one.
    pub automation_role_arn: Option<String>,
    /// Accounts never acted on (in addition to the document's list).
    pub exempt_accounts: Vec<String>,
    /// A recurrence this soon after an incident was resolved joins it instead of opening another.
    pub flap_window: Duration,
    pub idempotency_expiry: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&process_env())
    }

    pub fn from_source<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let prefix = env
            .optional("CONFIG_PARAMETER_PREFIX")
            .unwrap_or_else(|| "/autopilot".into());
        let backend = match env
            .optional("INCIDENT_BACKEND")
            .map(|b| b.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("opscenter" | "opsitem" | "ops-center") => Backend::OpsCenter,
            Some("incident-manager" | "incidentmanager") => Backend::IncidentManager {
                response_plan_arn: env.required("INCIDENT_RESPONSE_PLAN_ARN")?,
            },
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "INCIDENT_BACKEND",
                    reason: format!("{other:?} is not opscenter or incident-manager"),
                });
            }
        };
        Ok(Self {
            function_name: env
                .optional("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| "incident-response".into()),
            idempotency_table: env.required("IDEMPOTENCY_TABLE")?,
            ledger_table: env.required("LEDGER_TABLE")?,
            audit_bus: env.required("AUDIT_BUS_NAME")?,
            plans_parameter: env
                .optional("RESPONSE_PLANS_PARAMETER")
                .unwrap_or_else(|| format!("{}/response-plans", prefix.trim_end_matches('/'))),
            plans_cache: env.seconds("PLANS_CACHE_SECONDS", Duration::from_secs(300))?,
            backend,
            notification_topic: env.optional("NOTIFICATION_TOPIC_ARN"),
            change_calendar: env.optional("CHANGE_CALENDAR_NAME"),
            automation_role_arn: env.optional("AUTOMATION_ROLE_ARN"),
            exempt_accounts: env.list("EXEMPT_ACCOUNTS"),
            flap_window: env.seconds("FLAP_WINDOW_SECONDS", Duration::from_secs(3600))?,
            idempotency_expiry: env
                .seconds("IDEMPOTENCY_EXPIRY_SECONDS", Duration::from_secs(3600))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<String, String> = [
            ("IDEMPOTENCY_TABLE", "i"),
            ("LEDGER_TABLE", "l"),
            ("AUDIT_BUS_NAME", "b"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in pairs {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        Config::from_source(&Env::new(move |k| map.get(k).cloned()))
    }

    #[test]
    fn defaults_and_backends() {
        let c = cfg(&[("CONFIG_PARAMETER_PREFIX", "/ops/")]).unwrap();
        assert_eq!(c.plans_parameter, "/ops/response-plans");
        assert_eq!(c.backend, Backend::OpsCenter);
        assert!(c.change_calendar.is_none());
        assert!(cfg(&[("INCIDENT_BACKEND", "incident-manager")]).is_err());
        let c = cfg(&[
            ("INCIDENT_BACKEND", "incident-manager"),
            (
                "INCIDENT_RESPONSE_PLAN_ARN",
                "arn:aws:ssm-incidents::1:response-plan/x",
            ),
        ])
        .unwrap();
        assert!(matches!(c.backend, Backend::IncidentManager { .. }));
        assert!(cfg(&[("INCIDENT_BACKEND", "pagerduty")]).is_err());
    }
}
