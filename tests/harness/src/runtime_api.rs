//! A Lambda Runtime API on loopback, and sandboxes that run a real function binary against it.
//!
//! Each [`Sandbox`] is one function process with its own Runtime API server, as in Lambda,
//! where every execution environment has its own. Concurrency is modelled by running several
//! sandboxes at once.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::HarnessError;

/// What to run: the binary and the environment the template gives it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub function_name: String,
    pub binary: PathBuf,
    pub env: BTreeMap<String, String>,
    pub memory_mb: u32,
    pub timeout: Duration,
}

/// The error a function reported through `/invocation/{id}/error` or `/init/error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionError {
    #[serde(rename = "errorType", default)]
    pub error_type: String,
    #[serde(rename = "errorMessage", default)]
    pub error_message: String,
}

/// One finished invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub outcome: Result<serde_json::Value, FunctionError>,
    pub duration: Duration,
}

/// Per-invocation knobs.
#[derive(Debug, Clone, Default)]
pub struct InvokeOptions {
    /// Remaining time given to the function (defaults to the spec's timeout).
    pub deadline_in: Option<Duration>,
    /// Request id; random when unset.
    pub request_id: Option<String>,
}

struct Job {
    request_id: String,
    payload: Bytes,
    deadline_ms: u64,
    done: oneshot::Sender<Result<serde_json::Value, FunctionError>>,
}

struct ApiState {
    jobs: tokio::sync::Mutex<mpsc::Receiver<Job>>,
    inflight: Mutex<HashMap<String, oneshot::Sender<Result<serde_json::Value, FunctionError>>>>,
    first_poll: Mutex<Option<Instant>>,
    init_error: Mutex<Option<FunctionError>>,
    function_arn: String,
}

/// A running function process and its Runtime API.
pub struct Sandbox {
    spec: FunctionSpec,
    addr: SocketAddr,
    jobs: mpsc::Sender<Job>,
    state: Arc<ApiState>,
    spawned: Instant,
    pid: Option<u32>,
    exited: watch::Receiver<Option<i32>>,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    logs: Arc<Mutex<Vec<String>>>,
    busy: tokio::sync::Mutex<()>,
}

impl Sandbox {
    /// Starts the Runtime API and spawns the binary with a clean environment.
    pub async fn spawn(spec: FunctionSpec) -> Result<Self, HarnessError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(HarnessError::io("bind runtime api"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("runtime api address"))?;
        let (jobs_tx, jobs_rx) = mpsc::channel(64);
        let state = Arc::new(ApiState {
            jobs: tokio::sync::Mutex::new(jobs_rx),
            inflight: Mutex::new(HashMap::new()),
            first_poll: Mutex::new(None),
            init_error: Mutex::new(None),
            function_arn: format!(
                "arn:aws:lambda:us-east-1:123456789012:function:{}",
                spec.function_name
            ),
        });
        tokio::spawn(serve(listener, state.clone()));

        let mut cmd = tokio::process::Command::new(&spec.binary);
        cmd.env_clear()
            .envs(&spec.env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.function_name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.memory_mb.to_string(),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(HarnessError::io("spawn function binary"))?;
        let pid = child.id();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let echo = std::env::var_os("AUTOPILOT_HARNESS_ECHO").is_some();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect_lines(out, logs.clone(), echo));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect_lines(err, logs.clone(), echo));
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s.ok(),
                _ = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await.ok()
                }
            };
            let code = status.map(|s| s.code().unwrap_or(-9)).unwrap_or(-1);
            let _ = exit_tx.send(Some(code));
        });
        Ok(Self {
            spec,
            addr,
            jobs: jobs_tx,
            state,
            spawned,
            pid,
            exited: exit_rx,
            kill: Mutex::new(Some(kill_tx)),
            logs,
            busy: tokio::sync::Mutex::new(()),
        })
    }

    pub fn runtime_api(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Time from spawn to the first `/next` poll: the function's init duration.
    pub async fn init_duration(&self) -> Result<Duration, HarnessError> {
        let limit = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = *lock(&self.state.first_poll) {
                return Ok(t.duration_since(self.spawned));
            }
            if let Some(e) = lock(&self.state.init_error).clone() {
                return Err(HarnessError::InitFailed(e));
            }
            if self.exited.borrow().is_some() {
                return Err(HarnessError::SandboxExited(self.logs().join("\n")));
            }
            if Instant::now() > limit {
                return Err(HarnessError::Timeout("first /next poll"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sends one event and waits for the function's response or error.
    pub async fn invoke(
        &self,
        payload: &[u8],
        opts: InvokeOptions,
    ) -> Result<Invocation, HarnessError> {
        let _one_at_a_time = self.busy.lock().await;
        let request_id = opts
            .request_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let deadline_in = opts.deadline_in.unwrap_or(self.spec.timeout);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (done_tx, done_rx) = oneshot::channel();
        let job = Job {
            request_id: request_id.clone(),
            payload: Bytes::copy_from_slice(payload),
            deadline_ms: now_ms + deadline_in.as_millis() as u64,
            done: done_tx,
        };
        let started = Instant::now();
        self.jobs
            .send(job)
            .await
            .map_err(|_| HarnessError::SandboxExited(String::new()))?;
        let mut exited = self.exited.clone();
        // A little grace past the deadline, as Lambda allows for the response to arrive.
        let limit = deadline_in + Duration::from_secs(2);
        let outcome = tokio::select! {
            r = done_rx => r.map_err(|_| HarnessError::SandboxExited(self.logs().join("\n")))?,
            _ = exited.wait_for(Option::is_some) => {
                return Err(HarnessError::SandboxExited(self.logs().join("\n")));
            }
            _ = tokio::time::sleep(limit) => {
                self.kill();
                return Err(HarnessError::Timeout("invocation"));
            }
        };
        if let Some(e) = lock(&self.state.init_error).clone() {
            return Err(HarnessError::InitFailed(e));
        }
        Ok(Invocation {
            request_id,
            outcome,
            duration: started.elapsed(),
        })
    }

    /// SIGKILLs the process (a crash, or Lambda ending a timed-out sandbox).
    pub fn kill(&self) {
        if let Some(k) = lock(&self.kill).take() {
            let _ = k.send(());
        }
    }

    /// Waits for the process to exit after [`kill`](Self::kill).
    pub async fn wait_exit(&self) -> Option<i32> {
        let mut rx = self.exited.clone();
        rx.wait_for(Option::is_some).await.ok().and_then(|v| *v)
    }

    /// Every line the process printed on stdout and stderr so far.
    pub fn logs(&self) -> Vec<String> {
        lock(&self.logs).clone()
    }

    /// Peak resident set size (VmHWM) in KiB, while the process is alive.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn collect_lines<R: tokio::io::AsyncRead + Unpin>(
    r: R,
    logs: Arc<Mutex<Vec<String>>>,
    echo: bool,
) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo {
            eprintln!("[fn] {line}");
        }
        lock(&logs).push(line);
    }
}

async fn serve(listener: TcpListener, state: Arc<ApiState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| route(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}

async fn route(
    state: Arc<ApiState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PREFIX: &str = "/2018-06-01/runtime/";
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(reply(StatusCode::NOT_FOUND, "{}"));
    };
    if method == Method::GET && rest == "invocation/next" {
        lock(&state.first_poll).get_or_insert_with(Instant::now);
        let job = state.jobs.lock().await.recv().await;
        let Some(job) = job else {
            return Ok(reply(StatusCode::GONE, "{}"));
        };
        lock(&state.inflight).insert(job.request_id.clone(), job.done);
        let trace = format!(
            "Root=1-{:08x}-{};Parent={};Sampled=1",
            job.deadline_ms / 1000,
            &uuid::Uuid::new_v4().simple().to_string()[..24],
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let mut r = Response::new(Full::new(job.payload));
        let h = r.headers_mut();
        let put = |h: &mut hyper::HeaderMap, k: &'static str, v: &str| {
            if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        };
        put(h, "lambda-runtime-aws-request-id", &job.request_id);
        put(
            h,
            "lambda-runtime-deadline-ms",
            &job.deadline_ms.to_string(),
        );
        put(
            h,
            "lambda-runtime-invoked-function-arn",
            &state.function_arn,
        );
        put(h, "lambda-runtime-trace-id", &trace);
        put(h, "content-type", "application/json");
        return Ok(r);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "{}")),
    };
    if method == Method::POST && rest == "init/error" {
        let err = serde_json::from_slice(&body).unwrap_or(FunctionError {
            error_type: "Runtime.InitError".into(),
            error_message: String::from_utf8_lossy(&body).into_owned(),
        });
        *lock(&state.init_error) = Some(err);
        return Ok(reply(StatusCode::ACCEPTED, "{}"));
    }
    if method == Method::POST
        && let Some(rest) = rest.strip_prefix("invocation/")
        && let Some((id, kind)) = rest.split_once('/')
    {
        let outcome = match kind {
            "response" => Ok(serde_json::from_slice(&body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
            })),
            "error" => Err(serde_json::from_slice(&body).unwrap_or(FunctionError {
                error_type: "Unknown".into(),
                error_message: String::from_utf8_lossy(&body).into_owned(),
            })),
            _ => return Ok(reply(StatusCode::NOT_FOUND, "{}")),
        };
        let Some(done) = lock(&state.inflight).remove(id) else {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                r#"{"errorType":"InvalidRequestID"}"#,
            ));
        };
        let _ = done.send(outcome);
        return Ok(reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#));
    }
    Ok(reply(StatusCode::NOT_FOUND, "{}"))
}
