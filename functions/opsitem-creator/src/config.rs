//! Typed configuration from the environment set by `template.yaml`.

use std::time::Duration;

use autopilot_shared::config::{ConfigError, Env, process_env};

#[derive(Debug, Clone)]
pub struct Config {
    pub function_name: String,
    pub idempotency_table: String,
    pub ledger_table: String,
    pub audit_bus: String,
    /// Parameter holding the rules document (JSON or YAML); built-in rules when absent.
    pub rules_parameter: Option<String>,
    pub rules_cache: Duration,
    /// Default SNS topic for new items, when a rule names none.
    pub notification_topic: Option<String>,
    /// EC2 states that open an item (`stopped,terminated`).
    pub ec2_states: Vec<String>,
    /// How long a handled event is remembered (Powertools default: 1 hour).
    pub idempotency_expiry: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&process_env())
    }

    pub fn from_source<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let mut ec2_states = env.list("EC2_STATES");
        if ec2_states.is_empty() {
            ec2_states = vec!["stopped".into(), "terminated".into()];
        }
        Ok(Self {
            function_name: env
                .optional("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| "opsitem-creator".into()),
            idempotency_table: env.required("IDEMPOTENCY_TABLE")?,
            ledger_table: env.required("LEDGER_TABLE")?,
            audit_bus: env.required("AUDIT_BUS_NAME")?,
            rules_parameter: env.optional("RULES_PARAMETER"),
            rules_cache: env.seconds("RULES_CACHE_SECONDS", Duration::from_secs(300))?,
            notification_topic: env.optional("NOTIFICATION_TOPIC_ARN"),
            ec2_states,
            idempotency_expiry: env
                .seconds("IDEMPOTENCY_EXPIRY_SECONDS", Duration::from_secs(3600))?,
        })
    }
}
