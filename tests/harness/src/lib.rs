//! Test and developer harness for ssm-autopilot.
//!
//! - [`emulator`]: starts the local AWS emulator (moto server + the SSM extension) and talks
//!   to its control API;
//! - [`template`]: reads `template.yaml`, provisions its resources in the emulator, and
//!   computes each function's environment from it;
//! - [`runtime_api`]: runs a real function binary behind a Lambda Runtime API on loopback.
//!
//! [`TestEnv`] ties them together for one test: a shared emulator, a tenant of its own (an
//! access key id: the emulator isolates SSM state and counters per key) and SDK clients.

pub mod emulator;
pub mod fault_matrix;
pub mod logs;
pub mod policy;
pub mod reliability;
pub mod runtime_api;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};

pub use emulator::{Control, EmulatorProcess, repo_root, shared_endpoint};
pub use runtime_api::{FunctionError, FunctionSpec, Invocation, InvokeOptions, Sandbox};
pub use template::Template;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("emulator: {0}")]
    Emulator(String),
    #[error("template: {0}")]
    Template(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("function init failed: {0:?}")]
    InitFailed(FunctionError),
    #[error("function process exited; its output:\n{0}")]
    SandboxExited(String),
}

impl HarnessError {
    pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> HarnessError {
        move |source| HarnessError::Io { what, source }
    }
}

pub const SECRET_KEY: &str = "emulator-secret-key";

/// SDK configuration for the emulator: dummy static credentials, fixed region, loopback
/// endpoint, and `max_attempts` (1 where a test must see the first error).
pub async fn sdk_config(endpoint: &str, access_key: &str, max_attempts: u32) -> SdkConfig {
    let creds =
        aws_sdk_dynamodb::config::Credentials::new(access_key, SECRET_KEY, None, None, "emulator");
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(template::REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .retry_config(
            aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts.max(1)),
        )
        .load()
        .await
}

pub fn template_path() -> PathBuf {
    repo_root().join("template.yaml")
}

static PROVISIONED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// One test's view of the emulator.
pub struct TestEnv {
    pub endpoint: String,
    pub tenant: String,
    pub control: Control,
    pub template: Template,
}

impl TestEnv {
    /// Uses the run's shared emulator, provisions the template's resources once per process,
    /// and picks a fresh tenant (access key id) so tests cannot see each other's SSM state.
    pub async fn new() -> Result<Self, HarnessError> {
        let endpoint = tokio::task::spawn_blocking(shared_endpoint)
            .await
            .map_err(|e| HarnessError::Emulator(e.to_string()))??;
        let template = Template::load(&template_path())?;
        PROVISIONED
            .get_or_try_init(|| async {
                let cfg = sdk_config(&endpoint, "AKIAPROVISIONER0000", 3).await;
                template.provision(&cfg).await.map(|_| ())
            })
            .await?;
        let tenant = format!(
            "AKIA{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16].to_ascii_uppercase()
        );
        Ok(Self {
            control: Control::new(&endpoint),
            endpoint,
            tenant,
            template,
        })
    }

    pub async fn sdk(&self) -> SdkConfig {
        sdk_config(&self.endpoint, &self.tenant, 3).await
    }

    pub async fn sdk_with_attempts(&self, attempts: u32) -> SdkConfig {
        sdk_config(&self.endpoint, &self.tenant, attempts).await
    }

    /// The spec of the function built as `binary`, with the environment the template gives
    /// it plus local credentials and endpoint.
    pub fn function(&self, binary: &str, path: &Path) -> Result<FunctionSpec, HarnessError> {
        function_spec(&self.template, binary, path, &self.endpoint, &self.tenant)
    }

    /// Spawns a sandbox of `binary` and waits for it to poll for work.
    pub async fn sandbox(&self, binary: &str, path: &Path) -> Result<Sandbox, HarnessError> {
        let sb = Sandbox::spawn(self.function(binary, path)?).await?;
        sb.init_duration().await?;
        Ok(sb)
    }
}

/// Builds a function's spec from the template.
pub fn function_spec(
    template: &Template,
    binary: &str,
    path: &Path,
    endpoint: &str,
    access_key: &str,
) -> Result<FunctionSpec, HarnessError> {
    let logical = template
        .function_for_binary(binary)
        .ok_or_else(|| HarnessError::Template(format!("no function with Binary {binary}")))?;
    let mut env: BTreeMap<String, String> = template.function_env(&logical)?;
    let (memory_mb, timeout_s) = template.function_limits(&logical);
    env.insert("AWS_REGION".into(), template::REGION.into());
    env.insert("AWS_DEFAULT_REGION".into(), template::REGION.into());
    env.insert("AWS_ACCESS_KEY_ID".into(), access_key.into());
    env.insert("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into());
    env.insert("AWS_ENDPOINT_URL".into(), endpoint.into());
    env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
    env.insert("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into());
    let level = template
        .function_log_level(&logical)
        .unwrap_or_else(|| "INFO".into());
    env.entry("AWS_LAMBDA_LOG_LEVEL".into()).or_insert(level);
    let function_name = template.physical_name(&logical)?;
    Ok(FunctionSpec {
        function_name,
        binary: path.to_owned(),
        env,
        memory_mb,
        timeout: Duration::from_secs(timeout_s),
    })
}
