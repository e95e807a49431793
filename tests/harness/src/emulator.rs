//! The local AWS emulator (moto server plus the project's SSM extension, in `tests/emulator/`):
//! starting it, and a client for its control API (faults, counters, fleet seeding, state).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::HarnessError;

/// Environment variable naming an emulator that is already running (set by `.ci/run` and
/// `cargo xtask emulator`), so that a whole test run shares one emulator.
pub const EMULATOR_URL_ENV: &str = "AUTOPILOT_EMULATOR_URL";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An emulator process started by us. It exits when this handle's stdin pipe closes, so it
/// never outlives the process that started it, even on SIGKILL.
pub struct EmulatorProcess {
    pub endpoint: String,
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl EmulatorProcess {
    /// Runs `tests/emulator/start` (which prepares its own venv) on `port` (0: any free port).
    pub fn start(port: u16) -> Result<Self, HarnessError> {
        let script = repo_root().join("tests/emulator/start");
        let mut child = Command::new(&script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--exit-on-stdin-close")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(HarnessError::io("start emulator"))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or(HarnessError::Emulator("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let endpoint = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("EMULATOR_READY ") {
                        break url.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    return Err(HarnessError::Emulator(
                        "emulator exited before it was ready".into(),
                    ));
                }
            }
        };
        // Keep draining stdout so the emulator never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            endpoint,
            child,
            _stdin: stdin,
        })
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
static SHARED_PROCESS: Mutex<Option<EmulatorProcess>> = Mutex::new(None);

/// The endpoint of the emulator for this test run: `AUTOPILOT_EMULATOR_URL` when set, else
/// one emulator started lazily for this process.
pub fn shared_endpoint() -> Result<String, HarnessError> {
    SHARED
        .get_or_init(|| {
            if let Ok(url) = std::env::var(EMULATOR_URL_ENV)
                && !url.is_empty()
            {
                return Ok(url);
            }
            match EmulatorProcess::start(0) {
                Ok(p) => {
                    let url = p.endpoint.clone();
                    if let Ok(mut slot) = SHARED_PROCESS.lock() {
                        *slot = Some(p);
                    }
                    Ok(url)
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .clone()
        .map_err(HarnessError::Emulator)
}

/// Client for the emulator's control API (`/_emulator/...`).
#[derive(Clone)]
pub struct Control {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Control {
    pub fn new(endpoint: &str) -> Self {
        Self {
            base: endpoint.trim_end_matches('/').to_owned(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, HarnessError> {
        let uri = format!("{}/_emulator/{}", self.base, path.trim_start_matches('/'));
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HarnessError::Emulator(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(120), self.http.request(req))
            .await
            .map_err(|_| HarnessError::Timeout("emulator control call"))?
            .map_err(|e| HarnessError::Emulator(format!("{uri}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| HarnessError::Emulator(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(HarnessError::Emulator(format!(
                "{uri}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| HarnessError::Emulator(format!("{uri}: {e}")))
    }

    /// One awsJson-protocol call to an emulated service (e.g. `AmazonSQS.CreateQueue`), for the
    /// few services the harness uses without an SDK crate.
    pub async fn aws_json(&self, target: &str, body: Value) -> Result<Value, HarnessError> {
        // The emulator routes by the credential scope's service, as moto does.
        let service = match target.split('.').next() {
            Some("AmazonSQS") => "sqs",
            Some(other) => other,
            None => "",
        };
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIAPROVISIONER0000/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
        );
        let req = hyper::Request::builder()
            .header("authorization", auth)
            .method("POST")
            .uri(format!("{}/", self.base))
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", target)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| HarnessError::Emulator(e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| HarnessError::Emulator(format!("{target}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| HarnessError::Emulator(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(HarnessError::Emulator(format!(
                "{target}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| HarnessError::Emulator(format!("{target}: {e}")))
    }

    pub async fn health(&self) -> Result<Value, HarnessError> {
        self.call("GET", "health", None).await
    }

    /// Replaces the fault rules (see `tests/emulator/README.md`).
    pub async fn set_faults(&self, rules: Value) -> Result<Value, HarnessError> {
        self.call("POST", "faults", Some(json!({ "rules": rules })))
            .await
    }

    pub async fn clear_faults(&self) -> Result<Value, HarnessError> {
        self.call("DELETE", "faults", None).await
    }

    /// Per-operation counters for one tenant (access key id).
    pub async fn counters(&self, tenant: &str) -> Result<Value, HarnessError> {
        self.call("GET", &format!("counters?tenant={tenant}"), None)
            .await
    }

    /// Number of calls of `op` (e.g. `ssm:CreateOpsItem`) that reached the emulator, faulted or not.
    pub async fn calls(&self, tenant: &str, op: &str) -> Result<u64, HarnessError> {
        let c = self.counters(tenant).await?;
        Ok(counter_field(&c, op, "calls"))
    }

    /// Number of calls of `op` that succeeded (were not faulted and returned 2xx).
    pub async fn ok_calls(&self, tenant: &str, op: &str) -> Result<u64, HarnessError> {
        let c = self.counters(tenant).await?;
        Ok(counter_field(&c, op, "ok"))
    }

    pub async fn seed_fleet(&self, spec: Value) -> Result<Value, HarnessError> {
        self.call("POST", "fleet", Some(spec)).await
    }

    pub async fn state(&self, what: &str, tenant: &str) -> Result<Value, HarnessError> {
        self.call("GET", &format!("state/{what}?tenant={tenant}"), None)
            .await
    }

    pub async fn reset_tenant(&self, tenant: &str) -> Result<Value, HarnessError> {
        self.call("POST", "reset", Some(json!({ "tenant": tenant })))
            .await
    }
}

/// Reads one figure from the counters document, tolerant of its nesting
/// (`{"counters": {op: {...}}}` or `{op: {...}}`).
pub fn counter_field(c: &Value, op: &str, field: &str) -> u64 {
    let root = c.get("counters").unwrap_or(c);
    root.get(op)
        .and_then(|o| o.get(field))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}
