//! Building blocks of the per-function fault matrices (`functions/*/tests/fault_matrix.rs`):
//! the fault kinds as emulator rules, seeds that make a rule fire, delivery of one event until
//! it succeeds (as EventBridge/Lambda redeliver), and a readable diff of two fingerprints.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::reliability::is_retryable;
use crate::{HarnessError, InvokeOptions, Sandbox, TestEnv};

/// One kind of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Throttle,
    ServerError,
    Latency,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Throttle, Fault::ServerError, Fault::Latency];

    pub fn label(self) -> &'static str {
        match self {
            Fault::Throttle => "throttle 30%",
            Fault::ServerError => "5xx 10%",
            Fault::Latency => "latency 1.5 s x2",
        }
    }

    /// The rule for `op` and one tenant. The emulator has no rate for latency: it delays every
    /// matching call, so `max_hits` bounds the spike to two calls.
    pub fn rule(self, op: &str, tenant: &str, seed: u64) -> Value {
        match self {
            Fault::Throttle => {
                json!({"operation": op, "throttle_rate": 0.3, "tenant": tenant, "seed": seed})
            }
            Fault::ServerError => {
                json!({"operation": op, "error_rate": 0.1, "tenant": tenant, "seed": seed})
            }
            Fault::Latency => {
                json!({"operation": op, "latency_ms": 1500, "max_hits": 2, "tenant": tenant})
            }
        }
    }

    pub fn rate(self) -> Option<f64> {
        match self {
            Fault::Throttle => Some(0.3),
            Fault::ServerError => Some(0.1),
            Fault::Latency => None,
        }
    }
}

/// The first seed from `from` whose rule fires at least once within `calls` calls. An
/// operation called once or twice per run would mostly draw no fault at 10 %, and a cell
/// without a fault proves nothing. The emulator rolls Python's `random.Random(seed)` once per
/// matching call (`tests/emulator/ssm_emulator/faults.py`); callers check the counters, so a
/// drift here fails loudly instead of passing quietly.
pub fn seed_that_fires(from: u64, rate: f64, calls: u64) -> Result<u64, HarnessError> {
    let script = format!(
        "import random\n\
         s = {from}\n\
         while not (lambda r: any(r.random() < {rate} for _ in range({calls})))(random.Random(s)):\n    s += 1\n\
         print(s)"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .map_err(HarnessError::io("run python3 for a fault seed"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().map_err(|_| {
        HarnessError::Emulator(format!(
            "fault seed search: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// How the deliveries of one event went.
#[derive(Debug, Default)]
pub struct Delivered {
    pub redeliveries: usize,
    /// Error types of the failed deliveries.
    pub errors: BTreeMap<String, usize>,
    /// A non-retryable failure, or the error still seen after the last redelivery.
    pub violation: Option<String>,
    /// The function's response to the delivery that succeeded.
    pub response: Option<Value>,
}

/// Delivers `bytes` until it succeeds, at most `max_redeliveries` more times; every failure
/// must carry a retryable error type. Each invocation gets `lease` as its remaining time; a
/// claim left INPROGRESS by a failed delivery is waited out until that deadline, as
/// EventBridge's retry back-off would.
pub async fn deliver_until_ok(
    sb: &Sandbox,
    bytes: &[u8],
    lease: Duration,
    max_redeliveries: usize,
) -> Result<Delivered, HarnessError> {
    let mut d = Delivered::default();
    let mut claimed_at = Instant::now();
    loop {
        let started = Instant::now();
        let opts = InvokeOptions {
            deadline_in: Some(lease),
            ..InvokeOptions::default()
        };
        let e = match sb.invoke(bytes, opts).await?.outcome {
            Ok(r) => {
                d.response = Some(r);
                return Ok(d);
            }
            Err(e) => e,
        };
        *d.errors.entry(e.error_type.clone()).or_insert(0) += 1;
        if !is_retryable(&e.error_type) {
            d.violation = Some(format!(
                "non-retryable {}: {}",
                e.error_type, e.error_message
            ));
            return Ok(d);
        }
        if d.redeliveries == max_redeliveries {
            d.violation = Some(format!(
                "still failing after {max_redeliveries} redeliveries: {}: {}",
                e.error_type, e.error_message
            ));
            return Ok(d);
        }
        if [
            "IdempotencyAlreadyInProgress",
            "RunInProgress",
            "SweepInProgress",
        ]
        .contains(&e.error_type.as_str())
        {
            let until = claimed_at + lease + Duration::from_millis(300);
            tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
        } else {
            claimed_at = started;
        }
        d.redeliveries += 1;
    }
}

/// Requests the tenant's fault rules matched (latency included), from the emulator.
pub async fn rule_hits(env: &TestEnv) -> Result<u64, HarnessError> {
    let rules = env.control.call("GET", "faults", None).await?;
    Ok(rules["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["tenant"] == json!(env.tenant))
        .map(|r| r["hits"].as_u64().unwrap_or(0))
        .sum())
}

pub async fn clear_faults(env: &TestEnv) -> Result<(), HarnessError> {
    env.control
        .call("DELETE", "faults", Some(json!({"tenant": env.tenant})))
        .await
        .map(|_| ())
}

/// Operations with at least one call in a tenant's counters (`{op: {calls, …}}`).
pub fn operations(counters: &Value) -> Vec<String> {
    counters
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, c)| c["calls"].as_u64().unwrap_or(0) > 0)
        .map(|(op, _)| op.clone())
        .collect()
}

/// Requests of `op` the emulator throttled or failed on purpose.
pub fn injected(counters: &Value, op: &str) -> u64 {
    let c = &counters[op];
    c["throttled"].as_u64().unwrap_or(0) + c["injected_errors"].as_u64().unwrap_or(0)
}

/// Where two fingerprints differ, as `path: got != want` lines (the documents are long).
pub fn diff(path: &str, got: &Value, want: &Value, out: &mut Vec<String>) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for k in g.keys().chain(w.keys().filter(|k| !g.contains_key(*k))) {
                diff(
                    &format!("{path}/{k}"),
                    g.get(k).unwrap_or(&Value::Null),
                    w.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            for (n, (a, b)) in g.iter().zip(w).enumerate() {
                diff(&format!("{path}/{n}"), a, b, out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} != {b}")),
        _ => {}
    }
}
