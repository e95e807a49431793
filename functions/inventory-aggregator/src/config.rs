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
    /// Parquet snapshots besides the JSON ones (`OUTPUT_FORMATS` includes `parquet`).
    pub parquet: Option<ParquetOutput>,
    /// Accounts/regions to collect (empty: this account and region, own credentials).
    pub targets: Vec<crate::targets::Target>,
}

/// Parquet snapshot files: each holds this many consecutive JSON snapshot parts (pages of
/// nodes), so Athena reads few objects while memory stays bounded by one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParquetOutput {
    pub parts_per_file: u32,
}

/// `OUTPUT_FORMATS`: `json` (always written: the diff, the freshness check and the Parquet
/// files are read back from it), optionally `parquet`.
fn parquet_output<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Option<ParquetOutput>, ConfigError> {
    let mut formats = env.list("OUTPUT_FORMATS");
    if formats.is_empty() {
        formats.push("json".into());
    }
    let mut parquet = false;
    for f in &formats {
        match f.to_ascii_lowercase().as_str() {
            "json" => {}
            "parquet" => parquet = true,
            other => {
                return Err(ConfigError::Invalid {
                    name: "OUTPUT_FORMATS",
                    reason: format!("unknown format {other:?} (json, parquet)"),
                });
            }
        }
    }
    if !formats.iter().any(|f| f.eq_ignore_ascii_case("json")) {
        return Err(ConfigError::Invalid {
            name: "OUTPUT_FORMATS",
            reason: "json is required (the other outputs are derived from it)".into(),
        });
    }
    let nodes = env.parsed::<u32>("PARQUET_NODES_PER_FILE", 1000)?.max(1);
    let page = crate::collect::PAGE_SIZE.unsigned_abs();
    Ok(parquet.then_some(ParquetOutput {
        parts_per_file: nodes.div_ceil(page).max(1),
    }))
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&process_env())
    }

    pub fn from_source<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let region = env
            .optional("AWS_REGION")
            .unwrap_or_else(|| "us-east-1".into());
        let account_id = env.optional("ACCOUNT_ID");
        let targets = crate::targets::parse(
            env.optional("TARGETS").as_deref(),
            &env.list("TARGET_ACCOUNTS"),
            &env.list("TARGET_REGIONS"),
            env.optional("TARGET_ROLE_NAME").as_deref(),
            &env.optional("PARTITION").unwrap_or_else(|| "aws".into()),
            &region,
            account_id.as_deref(),
        )
        .map_err(|e| ConfigError::Invalid {
            name: "TARGETS",
            reason: e.to_string(),
        })?;
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
            region,
            account_id,
            targets,
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
            parquet: parquet_output(env)?,
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
        assert_eq!(c.parquet, None);
    }

    #[test]
    fn output_formats() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = vec![
                ("IDEMPOTENCY_TABLE", "i"),
                ("LEDGER_TABLE", "l"),
                ("AUDIT_BUS_NAME", "b"),
                ("INVENTORY_BUCKET", "bucket"),
            ];
            vars.extend_from_slice(extra);
            Config::from_source(&Env::new(move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }))
        };
        assert_eq!(with(&[("OUTPUT_FORMATS", "json")]).unwrap().parquet, None);
        assert_eq!(
            with(&[("OUTPUT_FORMATS", "json, Parquet")])
                .unwrap()
                .parquet,
            Some(ParquetOutput { parts_per_file: 20 })
        );
        assert_eq!(
            with(&[
                ("OUTPUT_FORMATS", "json,parquet"),
                ("PARQUET_NODES_PER_FILE", "120")
            ])
            .unwrap()
            .parquet,
            Some(ParquetOutput { parts_per_file: 3 })
        );
        assert!(with(&[("OUTPUT_FORMATS", "parquet")]).is_err());
        assert!(with(&[("OUTPUT_FORMATS", "json,csv")]).is_err());
    }
}
