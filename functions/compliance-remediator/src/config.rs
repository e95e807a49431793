//! Typed configuration from the environment set by `template.yaml`.

use std::time::Duration;

use autopilot_shared::config::{ConfigError, Env, process_env};

#[derive(Debug, Clone)]
pub struct Config {
    pub function_name: String,
    pub idempotency_table: String,
    pub ledger_table: String,
    pub audit_bus: String,
    /// Parameter holding the remediation policy (JSON or YAML); built-in policy when absent.
    pub policy_parameter: Option<String>,
    pub policy_cache: Duration,
    /// Plan only, execute nothing (the template's default for a first deploy).
    pub dry_run: bool,
    /// Bucket receiving one JSON report per sweep under `REPORT_PREFIX`.
    pub report_bucket: String,
    pub report_prefix: String,
    /// Role passed to Automation runbooks as `AutomationAssumeRole`, when set.
    pub automation_role: Option<String>,
    /// When less than this remains before the deadline, the sweep checkpoints and continues
    /// in a new invocation.
    pub checkpoint_margin: Duration,
    /// Concurrent SSM calls when fanning out (bounded to stay under SSM's rate limits).
    pub concurrency: usize,
    pub idempotency_expiry: Duration,
    /// The function's timeout, the longest any delivery lives: another sweep's unlinked claim
    /// older than this was left by a delivery that died (`FUNCTION_TIMEOUT_SECONDS`; default
    /// Lambda's maximum, never shorter than the real timeout).
    pub function_timeout: Duration,
    /// Deployment-wide settings from the template's parameters.
    pub deployment: Deployment,
}

/// What the template's parameters set for the whole deployment; the policy document may
/// refine it (see `Policy::with_deployment`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deployment {
    /// `EXEMPTION_TAG_KEY`: nodes carrying this tag key are never remediated.
    pub exemption_tag_key: Option<String>,
    /// `CHANGE_CALENDAR_NAME`: remediation runs only while this calendar is OPEN.
    pub change_calendar: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&process_env())
    }

    pub fn from_source<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let concurrency: usize = env.parsed("SSM_CONCURRENCY", 4)?;
        Ok(Self {
            function_name: env
                .optional("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| "compliance-remediator".into()),
            idempotency_table: env.required("IDEMPOTENCY_TABLE")?,
            ledger_table: env.required("LEDGER_TABLE")?,
            audit_bus: env.required("AUDIT_BUS_NAME")?,
            policy_parameter: env.optional("POLICY_PARAMETER").or_else(|| {
                env.optional("CONFIG_PARAMETER_PREFIX")
                    .map(|p| format!("{}/remediation-policy", p.trim_end_matches('/')))
            }),
            policy_cache: env.seconds("POLICY_CACHE_SECONDS", Duration::from_secs(300))?,
            // Safe by default: a missing setting never turns remediation on.
            dry_run: env.flag("DRY_RUN", true)?,
            report_bucket: env.required("REPORT_BUCKET")?,
            report_prefix: env
                .optional("REPORT_PREFIX")
                .unwrap_or_else(|| "reports".into())
                .trim_matches('/')
                .to_owned(),
            automation_role: env.optional("AUTOMATION_ROLE_ARN"),
            checkpoint_margin: env.seconds("CHECKPOINT_MARGIN_SECONDS", Duration::from_secs(60))?,
            concurrency: concurrency.clamp(1, 16),
            idempotency_expiry: env
                .seconds("IDEMPOTENCY_EXPIRY_SECONDS", Duration::from_secs(3600 * 24))?,
            function_timeout: env.seconds("FUNCTION_TIMEOUT_SECONDS", Duration::from_secs(900))?,
            deployment: Deployment {
                exemption_tag_key: env
                    .optional("EXEMPTION_TAG_KEY")
                    .map(|k| k.trim().to_owned()),
                change_calendar: env
                    .optional("CHANGE_CALENDAR_NAME")
                    .map(|c| c.trim().to_owned()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_source(&Env::new(move |k| map.get(k).cloned()))
    }

    const BASE: [(&str, &str); 5] = [
        ("IDEMPOTENCY_TABLE", "i"),
        ("LEDGER_TABLE", "l"),
        ("AUDIT_BUS_NAME", "b"),
        ("REPORT_BUCKET", "r"),
        ("CONFIG_PARAMETER_PREFIX", "/autopilot/"),
    ];

    #[test]
    fn dry_run_is_the_default_and_policy_follows_the_prefix() {
        let c = cfg(&BASE).unwrap();
        assert!(c.dry_run);
        assert_eq!(c.function_timeout, Duration::from_secs(900));
        assert_eq!(
            c.policy_parameter.as_deref(),
            Some("/autopilot/remediation-policy")
        );
        let mut with = BASE.to_vec();
        with.push(("DRY_RUN", "false"));
        assert!(!cfg(&with).unwrap().dry_run);
        assert!(cfg(&BASE[..2]).is_err());
    }

    #[test]
    fn deployment_settings_come_from_the_environment() {
        assert_eq!(cfg(&BASE).unwrap().deployment, Deployment::default());
        let mut with = BASE.to_vec();
        with.push(("EXEMPTION_TAG_KEY", " team:no-patch "));
        with.push(("CHANGE_CALENDAR_NAME", "prod-changes"));
        let d = cfg(&with).unwrap().deployment;
        assert_eq!(d.exemption_tag_key.as_deref(), Some("team:no-patch"));
        assert_eq!(d.change_calendar.as_deref(), Some("prod-changes"));
    }
}
