//! Typed configuration from the environment set by `template.yaml`.

use std::time::Duration;

use autopilot_shared::config::{ConfigError, Env, process_env};

#[derive(Debug, Clone)]
pub struct Config {
    pub function_name: String,
    pub idempotency_table: String,
    pub ledger_table: String,
    pub audit_bus: String,
    /// Destination bucket (`InventoryBucket`).
    pub bucket: String,
    /// Key prefix of every object this function writes (no leading or trailing `/`).
    pub prefix: String,
    /// Region whose inventory is read (the function's own).
    pub region: String,
    /// Fallback account id when the triggering event carries none.
    pub account_id: Option<String>,
    /// Inventory types processed at the same time.
    pub type_concurrency: usize,
    /// S3 / ListInventoryEntries calls in flight at once.
    pub max_concurrency: usize,
    /// Types whose rows are read with ListInventoryEntries per node instead of inline from
    /// GetInventory (for types too large to trust to a 50-node page).
    pub entries_types: Vec<String>,
    /// Stop starting new pages when less than this remains before the deadline.
    pub checkpoint_margin: Duration,
    /// A node whose newest inventory is older than this counts as stale.
    pub stale_after: Duration,
    pub idempotency_expiry: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&process_env())
    }

    pub fn from_source<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let prefix = env
            .optional("OUTPUT_PREFIX")
            .unwrap_or_else(|| "inventory".into())
            .trim_matches('/')
            .to_owned();
        Ok(Self {
            function_name: env
                .optional("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| "inventory-aggregator".into()),
            idempotency_table: env.required("IDEMPOTENCY_TABLE")?,
            ledger_table: env.required("LEDGER_TABLE")?,
            audit_bus: env.required("AUDIT_BUS_NAME")?,
            bucket: env.required("INVENTORY_BUCKET")?,
            prefix,
            region: env
                .optional("AWS_REGION")
                .unwrap_or_else(|| "us-east-1".into()),
            account_id: env.optional("ACCOUNT_ID"),
            type_concurrency: env.parsed::<usize>("TYPE_CONCURRENCY", 4)?.max(1),
            max_concurrency: env.parsed::<usize>("MAX_CONCURRENCY", 32)?.max(1),
            entries_types: env.list("ENTRIES_TYPES"),
            checkpoint_margin: env.seconds("CHECKPOINT_MARGIN_SECONDS", Duration::from_secs(60))?,
            stale_after: Duration::from_secs(
                env.parsed::<u64>("STALE_AFTER_HOURS", 24)?
                    .saturating_mul(3600),
            ),
            idempotency_expiry: env
                .seconds("IDEMPOTENCY_EXPIRY_SECONDS", Duration::from_secs(3600))?,
        })
    }

    /// Where this deployment writes; part of every run's identity in the ledger.
    pub fn destination(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let vars = [
            ("IDEMPOTENCY_TABLE", "i"),
            ("LEDGER_TABLE", "l"),
            ("AUDIT_BUS_NAME", "b"),
            ("INVENTORY_BUCKET", "bucket"),
            ("OUTPUT_PREFIX", "/x/y/"),
            ("ENTRIES_TYPES", "AWS:File, Custom:Big"),
        ];
        let env = Env::new(|k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        });
        let c = Config::from_source(&env).unwrap();
        assert_eq!(c.prefix, "x/y");
        assert_eq!(c.entries_types, vec!["AWS:File", "Custom:Big"]);
        assert_eq!(c.type_concurrency, 4);
        assert_eq!(c.stale_after, Duration::from_secs(86400));
        assert_eq!(c.destination(), "s3://bucket/x/y");
    }
}
