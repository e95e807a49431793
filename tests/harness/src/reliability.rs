//! Product-wide reliability checks shared by every function's `tests/reliability.rs`: the
//! hostile-input corpus through a real binary, audit-event capture, and scans of captured
//! output for a secret. The functions' tests assert; this module only gathers facts from the
//! emulator (counters, queues) and the sandbox (logs, peak RSS).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{HarnessError, InvokeOptions, Sandbox, TestEnv, repo_root, template};

/// One file of `tests/fixtures/malformed/`.
pub struct HostileFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Every hostile input, in name order.
pub fn hostile_corpus() -> Result<Vec<HostileFile>, HarnessError> {
    let dir: PathBuf = repo_root().join("tests/fixtures/malformed");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(HarnessError::io("read the hostile corpus"))? {
        let path = entry
            .map_err(HarnessError::io("read the hostile corpus"))?
            .path();
        if !path.extension().is_some_and(|e| e == "json" || e == "txt") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(HarnessError::io("read a hostile input"))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(HostileFile { name, bytes });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What a function did with one hostile input.
pub struct HostileOutcome {
    pub file: String,
    /// The Lambda `errorType`, or `None` when the function accepted the input.
    pub error_type: Option<String>,
    pub error_message: String,
}

/// The corpus through one sandbox.
pub struct HostileRun {
    pub outcomes: Vec<HostileOutcome>,
    /// Requests the tenant made to AWS while the corpus ran, by operation (non-zero only).
    pub aws_calls: BTreeMap<String, u64>,
    /// VmHWM of the sandbox after the corpus.
    pub peak_rss_kib: Option<u64>,
    /// The same process still answered an invocation after the last input.
    pub answered_after: bool,
}

/// Calls per operation of the tenant, from the emulator's counters.
pub async fn call_counts(env: &TestEnv) -> Result<BTreeMap<String, u64>, HarnessError> {
    let c = env.control.counters(&env.tenant).await?;
    let root = c.get("counters").unwrap_or(&c);
    Ok(root
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(op, v)| (op.clone(), v["calls"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default())
}

/// Calls made between two [`call_counts`] snapshots, non-zero operations only.
pub fn calls_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0).min(*n)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Sends every hostile input to `sb` (already initialised) and records the outcome, the AWS
/// calls it caused, memory, and whether the sandbox survived.
pub async fn run_hostile_corpus(env: &TestEnv, sb: &Sandbox) -> Result<HostileRun, HarnessError> {
    let corpus = hostile_corpus()?;
    let before = call_counts(env).await?;
    let mut outcomes = Vec::new();
    for file in &corpus {
        let inv = sb.invoke(&file.bytes, InvokeOptions::default()).await?;
        let (error_type, error_message) = match inv.outcome {
            Ok(_) => (None, String::new()),
            Err(e) => (Some(e.error_type), e.error_message),
        };
        outcomes.push(HostileOutcome {
            file: file.name.clone(),
            error_type,
            error_message,
        });
    }
    let after = call_counts(env).await?;
    let peak_rss_kib = sb.peak_rss_kib();
    // `{}` is rejected without AWS calls too: it proves the process still serves requests.
    let answered_after = sb
        .invoke(b"{}", InvokeOptions::default())
        .await
        .is_ok_and(|i| i.outcome.is_err());
    Ok(HostileRun {
        outcomes,
        aws_calls: calls_between(&before, &after),
        peak_rss_kib,
        answered_after,
    })
}

/// Every audit event published on the template's audit bus, collected through an SQS queue
/// of the test's own (the bus is shared by all tests: filter on what the test controls).
pub struct AuditCapture {
    queue_url: String,
}

impl AuditCapture {
    pub async fn start(env: &TestEnv, source: &str) -> Result<Self, HarnessError> {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let queue_name = format!("audit-capture-{suffix}");
        let created = env
            .control
            .aws_json("AmazonSQS.CreateQueue", json!({"QueueName": queue_name}))
            .await?;
        let queue_url = created["QueueUrl"]
            .as_str()
            .ok_or_else(|| HarnessError::Emulator(format!("CreateQueue: {created}")))?
            .to_owned();
        let bus = env.template.physical_name("AuditBus")?;
        let sdk = env.sdk().await;
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let rule = format!("audit-capture-{suffix}");
        let fail = |e: String| HarnessError::Emulator(format!("audit capture rule: {e}"));
        events
            .put_rule()
            .event_bus_name(&bus)
            .name(&rule)
            .event_pattern(json!({ "source": [source] }).to_string())
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("queue")
            .arn(format!(
                "arn:aws:sqs:{}:{}:{queue_name}",
                template::REGION,
                template::ACCOUNT
            ))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        events
            .put_targets()
            .event_bus_name(&bus)
            .rule(&rule)
            .targets(target)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self { queue_url })
    }

    /// Every event delivered so far (each as its full EventBridge envelope).
    pub async fn drain(&self, env: &TestEnv) -> Result<Vec<Value>, HarnessError> {
        let mut out = Vec::new();
        loop {
            let r = env
                .control
                .aws_json(
                    "AmazonSQS.ReceiveMessage",
                    json!({"QueueUrl": self.queue_url, "MaxNumberOfMessages": 10,
                           "VisibilityTimeout": 600, "WaitTimeSeconds": 0}),
                )
                .await?;
            let msgs = r["Messages"].as_array().cloned().unwrap_or_default();
            if msgs.is_empty() {
                return Ok(out);
            }
            for m in msgs {
                let body = m["Body"].as_str().unwrap_or_default();
                out.push(serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())));
            }
        }
    }
}

/// Stores `value` as a SecureString under `name` (a name of the test's own: Parameter Store
/// in the emulator is shared by all tests).
pub async fn put_secure_string(env: &TestEnv, name: &str, value: &str) -> Result<(), HarnessError> {
    let sdk = env.sdk().await;
    aws_sdk_ssm::Client::new(&sdk)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| {
            HarnessError::Emulator(format!(
                "PutParameter {name}: {}",
                aws_sdk_ssm::error::DisplayErrorContext(&e)
            ))
        })?;
    Ok(())
}

/// The lines (or serialised events) that contain `secret`.
pub fn leaks<'a>(texts: impl IntoIterator<Item = &'a str>, secret: &str) -> Vec<String> {
    texts
        .into_iter()
        .filter(|t| t.contains(secret))
        .map(|t| t.chars().take(300).collect())
        .collect()
}

/// Waits until `n` audit events arrived (EventBridge → SQS delivery is asynchronous).
pub async fn drain_at_least(
    capture: &AuditCapture,
    env: &TestEnv,
    n: usize,
) -> Result<Vec<Value>, HarnessError> {
    let mut all = Vec::new();
    for _ in 0..50 {
        all.extend(capture.drain(env).await?);
        if all.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(all)
}

/// What a secret scan saw.
pub struct SecretScan {
    pub invocations: usize,
    pub log_lines: usize,
    pub audit_events: usize,
    /// Log lines, audit events and responses/errors that contain the secret.
    pub leaks: Vec<String>,
    /// Each invocation's response, or `<error type>: <message>`.
    pub responses: Vec<String>,
}

/// One secret scan: `binary` runs with its configuration document `param_env` pointing at a
/// SecureString that holds `document` (which contains `secret`), at DEBUG log level.
pub struct SecretCase<'a> {
    pub binary: &'a str,
    pub path: &'a std::path::Path,
    pub param_env: &'a str,
    pub document: &'a str,
    pub secret: &'a str,
    pub audit_source: &'a str,
    pub events: &'a [Value],
}

/// Sends the case's events, then scans every log line, every audit event of the case's source
/// and every response or error for the secret.
pub async fn scan_for_secret(
    env: &TestEnv,
    case: &SecretCase<'_>,
) -> Result<SecretScan, HarnessError> {
    let SecretCase {
        binary,
        path,
        param_env,
        document,
        secret,
        audit_source,
        events,
    } = *case;
    let name = format!(
        "/autopilot-test/{}/{param_env}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    put_secure_string(env, &name, document).await?;
    let capture = AuditCapture::start(env, audit_source).await?;
    let mut spec = env.function(binary, path)?;
    spec.env.insert(param_env.to_owned(), name);
    spec.env
        .insert("AWS_LAMBDA_LOG_LEVEL".to_owned(), "DEBUG".to_owned());
    let sb = Sandbox::spawn(spec).await?;
    sb.init_duration().await?;
    let mut responses = Vec::new();
    for ev in events {
        let bytes = serde_json::to_vec(ev).map_err(|e| HarnessError::Emulator(e.to_string()))?;
        let inv = sb.invoke(&bytes, InvokeOptions::default()).await?;
        responses.push(match inv.outcome {
            Ok(v) => v.to_string(),
            Err(e) => format!("{}: {}", e.error_type, e.error_message),
        });
    }
    // Audit events from other tests share the bus; the scan covers them all, which only makes
    // it stricter.
    let audit: Vec<String> = drain_at_least(&capture, env, events.len())
        .await?
        .iter()
        .map(Value::to_string)
        .collect();
    let logs = sb.logs();
    let mut found = leaks(logs.iter().map(String::as_str), secret);
    found.extend(leaks(audit.iter().map(String::as_str), secret));
    found.extend(leaks(responses.iter().map(String::as_str), secret));
    Ok(SecretScan {
        invocations: responses.len(),
        log_lines: logs.len(),
        audit_events: audit.len(),
        leaks: found,
        responses,
    })
}

/// Peak RSS a function may reach over the whole hostile corpus (it holds at most one 1.1 MB
/// input at a time; the bench measures ~11 MB for the samples).
pub const HOSTILE_RSS_LIMIT_KIB: u64 = 64 * 1024;

impl HostileRun {
    /// Everything that breaks the hostile-input contract; empty when it holds.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for o in &self.outcomes {
            match &o.error_type {
                None => v.push(format!("{}: accepted", o.file)),
                Some(t) if t.is_empty() => v.push(format!("{}: untyped error", o.file)),
                Some(_) if o.error_message.chars().count() > 4096 => {
                    v.push(format!("{}: unbounded error message", o.file))
                }
                Some(_) => {}
            }
        }
        if !self.aws_calls.is_empty() {
            v.push(format!("AWS calls during the corpus: {:?}", self.aws_calls));
        }
        match self.peak_rss_kib {
            Some(k) if k > HOSTILE_RSS_LIMIT_KIB => v.push(format!("peak RSS {k} KiB")),
            Some(_) => {}
            None => v.push("peak RSS unreadable (sandbox gone?)".to_owned()),
        }
        if !self.answered_after {
            v.push("the sandbox did not survive the corpus".to_owned());
        }
        v
    }
}

/// A 12-digit account of the test's own, derived from its tenant, so ledger keys and dedup
/// strings never collide with another test's in the shared DynamoDB.
pub fn test_account(env: &TestEnv) -> String {
    let digits: String = env
        .tenant
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    digits[digits.len().saturating_sub(12)..].to_owned()
}

/// Every sample of `events/<function>/` as a fresh delivery: new event id, the test's account.
pub fn fresh_samples(env: &TestEnv, function: &str) -> Result<Vec<(String, Value)>, HarnessError> {
    let dir = repo_root().join("events").join(function);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(HarnessError::io("read the samples"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let bytes = std::fs::read(&p).map_err(HarnessError::io("read a sample"))?;
        let mut v: Value =
            serde_json::from_slice(&bytes).map_err(|e| HarnessError::Emulator(e.to_string()))?;
        v["id"] = json!(uuid::Uuid::new_v4().to_string());
        v["account"] = json!(test_account(env));
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, v));
    }
    Ok(out)
}

/// The tenant's observable side effects, free of ids and clocks so that two tenants that
/// processed the same events compare equal: OpsItems (status, title, severity, priority,
/// occurrence count, impact, timeline entries, number of related resources), Automation
/// executions, commands and their invocations, association runs, and successful SNS publishes
/// and S3 writes.
pub async fn side_effects(env: &TestEnv) -> Result<Value, HarnessError> {
    let c = &env.control;
    let items = c.state("opsitems", &env.tenant).await?;
    let mut opsitems: Vec<Value> = items["OpsItems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let data = &i["OperationalData"];
            let resources = data["/aws/resources"]["Value"]
                .as_str()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .and_then(|v| v.as_array().map(Vec::len))
                .unwrap_or(0);
            // An incident's timeline mirror (incident-response): kinds and texts, without the
            // per-tenant ids and the entries' clock times.
            let timeline: Vec<Value> = data["autopilot:timeline"]["Value"]
                .as_str()
                .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok())
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    json!({
                        "kind": e["kind"],
                        "text": without_ids(e["text"].as_str().unwrap_or_default()),
                    })
                })
                .collect();
            json!({
                "title": i["Title"],
                "status": i["Status"],
                "severity": i["Severity"],
                "priority": i["Priority"],
                "occurrences": data["autopilot:occurrences"]["Value"],
                "impact": data["autopilot:impact"]["Value"],
                "timeline": timeline,
                "resources": resources,
            })
        })
        .collect();
    opsitems.sort_by_key(Value::to_string);
    let automations = c.state("automations", &env.tenant).await?;
    let mut runbooks: Vec<String> = automations["AutomationExecutions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["DocumentName"].as_str().unwrap_or_default().to_owned())
        .collect();
    runbooks.sort();
    let commands = c.state("commands", &env.tenant).await?;
    let cmds = commands["Commands"].as_array().cloned().unwrap_or_default();
    let invocations: usize = cmds
        .iter()
        .map(|c| c["Invocations"].as_array().map_or(0, Vec::len))
        .sum();
    let runs = c.state("association-runs", &env.tenant).await?;
    let counters = c.counters(&env.tenant).await?;
    let ok = |op: &str| crate::emulator::counter_field(&counters, op, "ok");
    let doc = json!({
        "opsitems": opsitems,
        "automations": runbooks,
        "commands": cmds.len(),
        "command_invocations": invocations,
        "association_runs": runs["Runs"].as_array().map_or(0, Vec::len),
        "sns_publish": ok("sns:Publish"),
        "s3_put_object": ok("s3:PutObject"),
    });
    // Titles and descriptions may name the account, which differs per tenant.
    let text = doc.to_string().replace(&test_account(env), "<account>");
    serde_json::from_str(&text).map_err(|e| HarnessError::Emulator(e.to_string()))
}

/// `text` with UUIDs (execution and event ids) and `inc-<hex>` incident ids replaced by
/// placeholders: they differ between two tenants that processed the same events.
pub fn without_ids(text: &str) -> String {
    let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let is_uuid = |s: &str| {
        s.len() == 36
            && s.split('-').map(str::len).eq([8, 4, 4, 4, 12])
            && is_hex(&s.replace('-', ""))
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.get(..36).is_some_and(is_uuid) {
            out.push_str("<uuid>");
            rest = &rest[36..];
        } else if rest.starts_with("inc-") && rest.get(4..24).is_some_and(is_hex) {
            out.push_str("<incident>");
            rest = &rest[24..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// How one event's deliveries went.
#[derive(Debug, Default, Clone)]
pub struct ReplayRun {
    /// First attempts, the crashed one included.
    pub deliveries: usize,
    /// Retries of deliveries that failed with a retryable error (as EventBridge retries).
    pub retries: usize,
    pub succeeded: usize,
    /// `errorType`s of the retryable failures seen (concurrent duplicates, expected).
    pub retryable_errors: BTreeMap<String, usize>,
    /// Failures that were not retryable: the test shows them.
    pub failures: Vec<String>,
    /// The crashed delivery reached its crash point before the kill (for
    /// [`CrashPoint::after_claim`]: its claim reached DynamoDB).
    pub claimed_before_kill: bool,
    /// Calls of the crash point's operation the crashed delivery had made when it was killed.
    pub crash_calls: u64,
    /// Deliveries of [`ReplayPlan::siblings`] (not counted in `deliveries`).
    pub sibling_deliveries: usize,
}

/// Where [`replay_with`] kills its first delivery: once `operation` was called `calls` times
/// (and `settle` later), while every `hold` operation is delayed by `hold_ms` so that the
/// delivery cannot finish first; the delivery gets `deadline` as its remaining time.
#[derive(Debug, Clone)]
pub struct CrashPoint {
    pub operation: String,
    pub calls: u64,
    pub settle: Duration,
    pub hold: Vec<String>,
    pub hold_ms: u64,
    pub deadline: Duration,
}

impl CrashPoint {
    /// Between the idempotency claim (the first `dynamodb:PutItem`) and completion, every SSM
    /// and SNS call held back meanwhile.
    pub fn after_claim() -> Self {
        Self {
            operation: "dynamodb:PutItem".to_owned(),
            calls: 1,
            settle: Duration::from_millis(200),
            hold: vec!["ssm:*".to_owned(), "sns:*".to_owned()],
            hold_ms: 1500,
            deadline: Duration::from_secs(3),
        }
    }
}

/// How [`replay_with`] delivers: the crash point, and other events of the same unit of work
/// (e.g. a run's continuation) that the concurrent rounds deliver alongside the event, so that
/// a lease behind the idempotency guard meets real contention.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    pub crash: CrashPoint,
    pub siblings: Vec<Value>,
    /// Fault rules (without `tenant`) in force during the first concurrent round only: e.g. a
    /// latency on a late call keeps the first winner inside its work (holding its lease) until
    /// every delivery of the round has arrived, on a machine that starts them unevenly.
    pub first_round_faults: Vec<Value>,
}

impl Default for ReplayPlan {
    fn default() -> Self {
        Self {
            crash: CrashPoint::after_claim(),
            siblings: Vec::new(),
            first_round_faults: Vec::new(),
        }
    }
}

/// Error types a redelivery can clear: a concurrent duplicate, an AWS failure or throttling,
/// configuration or a store momentarily unreadable, a run or sweep held by another invocation.
pub fn is_retryable(error_type: &str) -> bool {
    matches!(
        error_type,
        "IdempotencyAlreadyInProgress"
            | "IdempotencyStoreError"
            | "AwsThrottled"
            | "AwsCallFailed"
            | "RulesUnavailable"
            | "ResponsePlansUnavailable"
            | "PolicyUnavailable"
            | "RunInProgress"
            | "SweepInProgress"
            | "ReportWriteFailed"
            | "ContinuationFailed"
    )
}

/// A pool of sandboxes of one function for one tenant.
pub struct Pool {
    pub sandboxes: Vec<Sandbox>,
    spec: crate::FunctionSpec,
}

impl Pool {
    pub async fn new(
        env: &TestEnv,
        binary: &str,
        path: &std::path::Path,
        size: usize,
        vars: &[(&str, &str)],
    ) -> Result<Self, HarnessError> {
        let mut spec = env.function(binary, path)?;
        for (k, v) in vars {
            spec.env.insert((*k).to_owned(), (*v).to_owned());
        }
        let mut sandboxes = Vec::new();
        for _ in 0..size.max(1) {
            sandboxes.push(spawn_ready(&spec).await?);
        }
        Ok(Self { sandboxes, spec })
    }
}

async fn spawn_ready(spec: &crate::FunctionSpec) -> Result<Sandbox, HarnessError> {
    let sb = Sandbox::spawn(spec.clone()).await?;
    sb.init_duration().await?;
    Ok(sb)
}

/// Delivers `event` `deliveries` times: first one that is SIGKILLed after its idempotency
/// claim reached DynamoDB and before it completed (every SSM and SNS call is held back by
/// injected latency meanwhile), then, once that claim's in-progress expiry (the invocation
/// deadline) has passed, rounds of `concurrency` simultaneous deliveries across the pool,
/// then the rest one at a time. Retryable failures are redelivered until they succeed, as
/// EventBridge would.
pub async fn replay(
    env: &TestEnv,
    pool: &mut Pool,
    event: &Value,
    deliveries: usize,
    concurrency: usize,
) -> Result<ReplayRun, HarnessError> {
    replay_with(
        env,
        pool,
        event,
        deliveries,
        concurrency,
        &ReplayPlan::default(),
    )
    .await
}

/// [`replay`] with another crash point, and siblings: with siblings, every other slot of a
/// concurrent round delivers one of them (round-robin) instead of `event`.
pub async fn replay_with(
    env: &TestEnv,
    pool: &mut Pool,
    event: &Value,
    deliveries: usize,
    concurrency: usize,
    plan: &ReplayPlan,
) -> Result<ReplayRun, HarnessError> {
    let to_bytes =
        |v: &Value| serde_json::to_vec(v).map_err(|e| HarnessError::Emulator(e.to_string()));
    // Index 0 is the event, 1.. its siblings.
    let mut all = vec![to_bytes(event)?];
    for s in &plan.siblings {
        all.push(to_bytes(s)?);
    }
    let bytes = all[0].clone();
    let mut run = ReplayRun::default();

    // 1. The crash at the crash point.
    let crash = &plan.crash;
    let deadline = crash.deadline;
    let crashed = spawn_ready(&pool.spec).await?;
    let calls_before = env.control.calls(&env.tenant, &crash.operation).await?;
    for op in &crash.hold {
        env.control
            .call(
                "POST",
                "faults",
                Some(json!({"operation": op, "latency_ms": crash.hold_ms, "tenant": env.tenant})),
            )
            .await?;
    }
    let opts = InvokeOptions {
        deadline_in: Some(deadline),
        ..InvokeOptions::default()
    };
    // The deadline counts from the invocation, not from the sandbox's start.
    let started = std::time::Instant::now();
    let (_, (claimed, crash_calls)) = tokio::join!(crashed.invoke(&bytes, opts), async {
        let mut claimed = false;
        // Wait for the crash point as long as the invocation may live: calls before it are
        // held back too, so a fixed poll count raced them on a loaded machine.
        while started.elapsed() < deadline {
            if env
                .control
                .calls(&env.tenant, &crash.operation)
                .await
                .is_ok_and(|n| n >= calls_before + crash.calls)
            {
                claimed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(crash.settle).await;
        crashed.kill();
        let n = env
            .control
            .calls(&env.tenant, &crash.operation)
            .await
            .unwrap_or(0);
        (claimed, n.saturating_sub(calls_before))
    });
    crashed.wait_exit().await;
    env.control
        .call("DELETE", "faults", Some(json!({"tenant": env.tenant})))
        .await?;
    run.deliveries += 1;
    run.claimed_before_kill = claimed;
    run.crash_calls = crash_calls;
    // The held-back calls finish in the emulator; the claim expires at the deadline.
    let wait = (deadline + Duration::from_millis(300)).saturating_sub(started.elapsed());
    tokio::time::sleep(wait.max(Duration::from_millis(crash.hold_ms + 100))).await;

    // 2. Concurrent rounds, 3. sequential deliveries.
    let concurrent = (deliveries.saturating_sub(1) / 2).max(1);
    let mut pending: Vec<usize> = Vec::new();
    let mut left = concurrent;
    for rule in &plan.first_round_faults {
        let mut rule = rule.clone();
        rule["tenant"] = json!(env.tenant);
        env.control.call("POST", "faults", Some(rule)).await?;
    }
    let mut first_round = true;
    while left > 0 {
        let slots = concurrency.min(pool.sandboxes.len()).max(1);
        // With siblings, odd slots deliver them; the event keeps at least one slot.
        let which: Vec<usize> = (0..slots)
            .map(|i| {
                if all.len() > 1 && i % 2 == 1 {
                    1 + (i / 2) % (all.len() - 1)
                } else {
                    0
                }
            })
            .scan(left, |left, w| match (w, *left) {
                (0, 0) => None,
                (0, _) => {
                    *left -= 1;
                    Some(0)
                }
                (w, _) => Some(w),
            })
            .collect();
        let events: Vec<&[u8]> = which.iter().map(|w| all[*w].as_slice()).collect();
        let outcomes = futures_join(&pool.sandboxes[..which.len()], &events).await;
        for (o, w) in outcomes.into_iter().zip(&which) {
            record(&mut run, o, &mut pending, *w);
            if *w == 0 {
                left -= 1;
            } else {
                run.sibling_deliveries += 1;
            }
        }
        if std::mem::take(&mut first_round) && !plan.first_round_faults.is_empty() {
            env.control
                .call("DELETE", "faults", Some(json!({"tenant": env.tenant})))
                .await?;
        }
    }
    run.deliveries += concurrent;
    let sequential = deliveries.saturating_sub(1 + concurrent);
    for _ in 0..sequential {
        let o = deliver(&pool.sandboxes[0], &bytes).await;
        record(&mut run, o, &mut pending, 0);
    }
    run.deliveries += sequential;
    // Redeliver retryable failures, a bounded number of times each.
    let mut rounds = 0;
    while !pending.is_empty() && rounds < 20 {
        rounds += 1;
        for w in std::mem::take(&mut pending) {
            run.retries += 1;
            let o = deliver(&pool.sandboxes[0], &all[w]).await;
            record(&mut run, o, &mut pending, w);
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if !pending.is_empty() {
        run.failures
            .push(format!("{} deliveries never succeeded", pending.len()));
    }
    Ok(run)
}

type Outcome = Result<Result<Value, crate::FunctionError>, HarnessError>;

async fn deliver(sb: &Sandbox, bytes: &[u8]) -> Outcome {
    sb.invoke(bytes, InvokeOptions::default())
        .await
        .map(|i| i.outcome)
}

async fn futures_join(sandboxes: &[Sandbox], events: &[&[u8]]) -> Vec<Outcome> {
    let mut set = Vec::new();
    for (sb, bytes) in sandboxes.iter().zip(events) {
        set.push(deliver(sb, bytes));
    }
    join_all(set).await
}

/// Polls every future to completion concurrently (a small `join_all`).
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// `which`: the event (0) or sibling (1..) delivered, for its redelivery.
fn record(run: &mut ReplayRun, o: Outcome, pending: &mut Vec<usize>, which: usize) {
    match o {
        Ok(Ok(_)) => run.succeeded += 1,
        Ok(Err(e)) if is_retryable(&e.error_type) => {
            *run.retryable_errors.entry(e.error_type).or_insert(0) += 1;
            pending.push(which);
        }
        Ok(Err(e)) => run
            .failures
            .push(format!("{}: {}", e.error_type, e.error_message)),
        Err(e) => run.failures.push(format!("harness: {e}")),
    }
}

/// The hostile-corpus contract of one function: runs every corpus file through a fresh
/// sandbox of `binary` and returns what broke the contract (empty when it held).
pub async fn hostile_corpus_problems(
    binary: &str,
    path: &std::path::Path,
) -> Result<Vec<String>, HarnessError> {
    let env = TestEnv::new().await?;
    let sb = env.sandbox(binary, path).await?;
    let run = run_hostile_corpus(&env, &sb).await?;
    let mut problems = run.violations();
    let expected = hostile_corpus()?.len();
    if run.outcomes.len() != expected {
        problems.push(format!(
            "{} of {expected} corpus files ran",
            run.outcomes.len()
        ));
    }
    eprintln!(
        "{binary}: {} hostile inputs rejected, peak RSS {} KiB",
        run.outcomes.len(),
        run.peak_rss_kib.unwrap_or(0)
    );
    Ok(problems)
}

/// A function's configuration document read from Parameter Store, for the secret contract.
pub struct SecretContract<'a> {
    pub binary: &'a str,
    pub path: &'a std::path::Path,
    /// The env var naming the parameter (e.g. `RULES_PARAMETER`).
    pub param_env: &'a str,
    /// The documented default document, which the secret is added to as a YAML comment.
    pub default_document: &'a std::path::Path,
    pub audit_source: &'a str,
    /// A document that parses and fails the function's validation, with `{secret}` where the
    /// secret goes (in a name, the part an error message would quote).
    pub rejected_document: &'a str,
    /// The error type the function answers `rejected_document` with.
    pub rejected_error_type: &'a str,
    /// The error type the function answers a document that does not parse with.
    pub unparseable_error_type: &'a str,
}

/// The SecureString contract of one function: a valid document, one that does not parse and
/// one that fails validation, each holding a fresh secret, run with every sample event;
/// returns every leak and anything that made the scan hollow (no log lines, a bad document
/// never refused for what it is).
pub async fn secret_problems(c: &SecretContract<'_>) -> Result<Vec<String>, HarnessError> {
    let env = TestEnv::new().await?;
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let default = std::fs::read_to_string(c.default_document)
        .map_err(HarnessError::io("default document"))?;
    let valid = format!("# api-token: {secret}\n{default}");
    // The same secret inside a document that does not parse: the error path must not quote it.
    let invalid = format!("rules: [unclosed {secret}\n  - {{ : ");
    let rejected = c.rejected_document.replace("{secret}", &secret);
    let mut problems = Vec::new();
    for document in [valid.as_str(), invalid.as_str(), rejected.as_str()] {
        // Fresh event ids for each document: a repeat would be answered from the idempotency
        // record of the previous scan without loading the document at all.
        let events: Vec<Value> = fresh_samples(&env, c.binary)?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let scan = scan_for_secret(
            &env,
            &SecretCase {
                binary: c.binary,
                path: c.path,
                param_env: c.param_env,
                document,
                secret: &secret,
                audit_source: c.audit_source,
                events: &events,
            },
        )
        .await?;
        if scan.log_lines == 0 {
            problems.push("hollow scan: no log lines".to_owned());
        }
        // A scan of a bad document means something only if the function loaded it and refused
        // it for what it is.
        let refused_as = if document == invalid {
            Some(c.unparseable_error_type)
        } else if document == rejected {
            Some(c.rejected_error_type)
        } else {
            None
        };
        if let Some(error_type) = refused_as {
            let prefix = format!("{error_type}: ");
            if !scan.responses.iter().any(|r| r.starts_with(&prefix)) {
                problems.push(format!(
                    "the document was not refused with {error_type}: {:?}",
                    scan.responses.first()
                ));
            }
        }
        problems.extend(
            scan.leaks
                .into_iter()
                .map(|l| format!("secret leaked: {l}")),
        );
        eprintln!(
            "{}: {} invocations, {} log lines, {} audit events scanned",
            c.binary, scan.invocations, scan.log_lines, scan.audit_events
        );
    }
    Ok(problems)
}
