//! The handler: classify → run identity → (once per event) claim the run, collect, then either
//! hand over to a continuation or finalise.

use autopilot_shared::audit::{AuditEmitter, AuditEvent};
use autopilot_shared::error::ErrorKind;
use autopilot_shared::events::{AutopilotEvent, classify};
use autopilot_shared::idempotency::{GuardError, IdempotencyKey, IdempotencyStore};
use autopilot_shared::metrics::Metrics;
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::checkpoint::{Checkpoints, STATUS_COMPLETE, ms};
use crate::collect::Inventory;
use crate::config::Config;
use crate::error::{InventoryError, aws};
use crate::plan::RunSpec;
use crate::run::{collect, finalize, scope_of};
use crate::store::Store;

/// Detail type of on-demand requests and of continuations.
pub const REQUEST_DETAIL_TYPE: &str = "Inventory Aggregation Requested";
/// Source of continuation events (the on-demand request source).
pub const REQUEST_SOURCE: &str = "ssm-autopilot";

/// Clients and configuration, built once per cold start.
pub struct Deps {
    pub config: Config,
    pub inventory: Inventory,
    pub store: Store,
    pub checkpoints: Checkpoints,
    pub idempotency: IdempotencyStore,
    pub audit: AuditEmitter,
    pub events: aws_sdk_eventbridge::Client,
    /// Base configuration of the per-target clients (assumed role, target region).
    pub sdk: aws_config::SdkConfig,
}

impl Deps {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        use autopilot_shared::clients;
        Self {
            inventory: Inventory::new(clients::ssm(sdk)),
            store: Store::new(clients::s3(sdk), config.bucket.clone()),
            checkpoints: Checkpoints::new(clients::dynamodb(sdk), config.ledger_table.clone()),
            idempotency: IdempotencyStore::new(
                clients::dynamodb(sdk),
                config.idempotency_table.clone(),
                config.idempotency_expiry,
            ),
            audit: AuditEmitter::new(
                clients::eventbridge(sdk),
                config.audit_bus.clone(),
                "ssm-autopilot.inventory-aggregator",
            ),
            events: clients::eventbridge(sdk),
            sdk: sdk.clone(),
            config,
        }
    }

    /// The SSM reader of a run: the function's own client, or one in the target's region with
    /// the target's role (assumed by aws-config, which refreshes the session as it expires).
    async fn inventory_for(&self, spec: &RunSpec) -> Option<Inventory> {
        if spec.role_arn.is_none() && spec.region == self.config.region {
            return None;
        }
        let region = aws_config::Region::new(spec.region.clone());
        let mut builder = self.sdk.to_builder().region(region.clone());
        if let Some(arn) = &spec.role_arn {
            let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
                .session_name("ssm-autopilot-inventory")
                .region(region)
                .configure(&self.sdk)
                .build()
                .await;
            builder = builder.credentials_provider(
                aws_sdk_ssm::config::SharedCredentialsProvider::new(provider),
            );
        }
        Some(Inventory::new(autopilot_shared::clients::ssm(
            &builder.build(),
        )))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub event_id: String,
    pub kind: String,
    /// True when this delivery was a repeat answered from the idempotency store.
    pub replayed: bool,
    /// `complete`, `continuing` or `ignored`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// Run totals (complete runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Value>,
    /// The event that continues the run (also published to the audit bus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Value>,
    /// With targets: the events that start each target's run (published to the audit bus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dispatched: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub async fn handle(
    deps: &Deps,
    event: LambdaEvent<Box<RawValue>>,
) -> Result<Response, InventoryError> {
    let mut metrics = Metrics::start("inventory-aggregator");
    metrics.property("requestId", event.context.request_id.clone());
    // Filled in once the event is classified; instrumenting (not entering) keeps the span on
    // every log line across awaits, the early ones included.
    let span = tracing::info_span!(
        "event",
        event_id = tracing::field::Empty,
        detail_type = tracing::field::Empty,
        kind = tracing::field::Empty,
        run_id = tracing::field::Empty
    );
    let result = Box::pin(handle_event(deps, event, &mut metrics).instrument(span)).await;
    match &result {
        Ok(r) if r.replayed => metrics.count("DuplicateSuppressed"),
        Ok(r) => match r.status.as_str() {
            "complete" => {
                metrics.count("RunsCompleted");
                if let Some(s) = &r.summary {
                    for (k, name) in [
                        ("nodes", "NodesCollected"),
                        ("rows", "RowsWritten"),
                        ("staleNodes", "StaleNodes"),
                    ] {
                        metrics.add(name, s.get(k).and_then(Value::as_f64).unwrap_or(0.0));
                    }
                }
            }
            "continuing" => metrics.count("Continuations"),
            _ => metrics.count("Ignored"),
        },
        Err(e) => {
            metrics.failed(
                e.error_type(),
                matches!(e, InventoryError::Aws(a) if a.is_throttling()),
            );
        }
    }
    metrics.flush();
    result
}

async fn handle_event(
    deps: &Deps,
    event: LambdaEvent<Box<RawValue>>,
    metrics: &mut Metrics,
) -> Result<Response, InventoryError> {
    let raw = event.payload.get().as_bytes();
    let ev = match classify(raw) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(error_type = e.error_type(), error = %e, "event rejected");
            metrics.count("Rejected");
            return Err(e.into());
        }
    };
    metrics.event_kind(ev.kind());
    let event_id = ev.id().unwrap_or_default().to_owned();
    metrics.property("eventId", event_id.clone());
    let span = tracing::Span::current();
    span.record("event_id", event_id.as_str());
    span.record("detail_type", ev.detail_type());
    span.record("kind", ev.kind());
    let ignored = |reason: &str| Response {
        event_id: event_id.clone(),
        kind: ev.kind().to_owned(),
        replayed: false,
        status: "ignored".into(),
        run_id: None,
        manifest_key: None,
        summary: None,
        continuation: None,
        dispatched: Vec::new(),
        reason: Some(reason.to_owned()),
    };
    let spec = match &ev {
        AutopilotEvent::Scheduled(e) => Some(spec_for(deps, &ev, e.detail.reason.clone(), None)?),
        AutopilotEvent::Request(e) if e.detail_type == REQUEST_DETAIL_TYPE => Some(spec_for(
            deps,
            &ev,
            e.detail.reason.clone(),
            e.detail.extra.get("continuation"),
        )?),
        _ => None,
    };
    let Some(spec) = spec else {
        tracing::info!(decision = "ignored", "not an inventory trigger");
        return Ok(ignored("not an inventory aggregation trigger"));
    };
    let continuing =
        matches!(&ev, AutopilotEvent::Request(e) if e.detail.extra.contains_key("continuation"));
    if !continuing && !deps.config.targets.is_empty() {
        let time = ev.time().ok_or(InventoryError::MissingContext("time"))?;
        return process(deps, raw, &event.context, event_id.clone(), || {
            dispatch(deps, &spec, time, &event_id, ev.kind())
        })
        .await;
    }
    span.record("run_id", spec.run_id.as_str());
    let (context, id, kind) = (&event.context, event_id.clone(), ev.kind());
    process(deps, raw, context, event_id.clone(), || {
        step(deps, &spec, context, &id, kind)
    })
    .await
}

/// A trigger with targets: one run per target, each started by its own event on the audit
/// bus, so every target checkpoints and continues on its own.
async fn dispatch(
    deps: &Deps,
    trigger: &RunSpec,
    time: chrono::DateTime<chrono::Utc>,
    event_id: &str,
    kind: &str,
) -> Result<Response, InventoryError> {
    let mut dispatched = Vec::new();
    for target in &deps.config.targets {
        let spec = RunSpec::for_target(&trigger.trigger_id, time, target, trigger.reason.clone());
        publish_continuation(deps, &spec).await?;
        dispatched.push(continuation_event(&spec, 0));
    }
    tracing::info!(
        decision = "dispatched",
        targets = dispatched.len(),
        "one run per target"
    );
    Ok(Response {
        event_id: event_id.to_owned(),
        kind: kind.to_owned(),
        replayed: false,
        status: "dispatched".into(),
        run_id: None,
        manifest_key: None,
        summary: None,
        continuation: None,
        dispatched,
        reason: None,
    })
}

fn spec_for(
    deps: &Deps,
    ev: &AutopilotEvent,
    reason: Option<String>,
    continuation: Option<&Value>,
) -> Result<RunSpec, InventoryError> {
    if let Some(c) = continuation {
        return serde_json::from_value(c.clone())
            .map_err(|_| InventoryError::MissingContext("valid continuation"));
    }
    let id = ev.id().ok_or(InventoryError::MissingContext("id"))?;
    let time = ev.time().ok_or(InventoryError::MissingContext("time"))?;
    let (account, _) = ev.account_region();
    let account = account
        .map(str::to_owned)
        .or_else(|| deps.config.account_id.clone())
        .ok_or(InventoryError::MissingContext("account"))?;
    Ok(RunSpec::new(
        id,
        time,
        &account,
        &deps.config.region,
        reason,
    ))
}

async fn process<Fut>(
    deps: &Deps,
    raw: &[u8],
    context: &lambda_runtime::Context,
    event_id: String,
    work: impl FnOnce() -> Fut,
) -> Result<Response, InventoryError>
where
    Fut: Future<Output = Result<Response, InventoryError>>,
{
    // The destination is part of the key: the same trigger aggregated into another
    // bucket/prefix is another run.
    let key = IdempotencyKey::new(
        &deps.config.function_name,
        &format!("{}#{event_id}", deps.config.destination()),
        raw,
    );
    let run = deps
        .idempotency
        .execute(&key, context.deadline(), work)
        .await;
    match run {
        Ok(exec) => {
            let replayed = exec.is_replay();
            if replayed {
                tracing::info!(
                    decision = "duplicate",
                    "repeat delivery answered from the idempotency store"
                );
            }
            Ok(Response {
                replayed,
                ..exec.into_inner()
            })
        }
        Err(GuardError::Idempotency(e)) => Err(e.into()),
        Err(GuardError::Handler(e)) => Err(e),
    }
}

async fn step(
    deps: &Deps,
    spec: &RunSpec,
    context: &lambda_runtime::Context,
    event_id: &str,
    kind: &str,
) -> Result<Response, InventoryError> {
    let scope = scope_of(&deps.config.prefix, spec);
    let pk = Checkpoints::key(&deps.config.destination(), &spec.run_id);
    let deadline_ms = ms(context.deadline());
    let own = deps.inventory_for(spec).await;
    let inventory = own.as_ref().unwrap_or(&deps.inventory);
    let mut state = deps
        .checkpoints
        .claim(
            &pk,
            spec,
            async || inventory.types().await,
            &context.request_id,
            deadline_ms,
        )
        .await?;
    let base = Response {
        event_id: event_id.to_owned(),
        kind: kind.to_owned(),
        replayed: false,
        status: "complete".into(),
        run_id: Some(spec.run_id.clone()),
        manifest_key: Some(scope.manifest_key()),
        summary: None,
        continuation: None,
        dispatched: Vec::new(),
        reason: None,
    };
    if state.status == STATUS_COMPLETE {
        tracing::info!(decision = "complete", "run already complete");
        return Ok(Response {
            summary: state
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok()),
            reason: Some("run already complete".into()),
            ..base
        });
    }
    if state.invocations > 1 {
        tracing::info!(
            invocations = state.invocations,
            "resuming run from its checkpoint"
        );
    }
    let stop_at = deadline_ms - deps.config.checkpoint_margin.as_millis() as i64;
    let done = match collect(deps, inventory, &scope, &pk, &mut state, stop_at).await {
        Ok(done) => done,
        Err(e) => return Err(give_back(deps, &pk, e).await),
    };
    if !done {
        let continuation = continuation_event(spec, state.invocations);
        deps.checkpoints.release(&pk).await?;
        publish_continuation(deps, spec).await?;
        tracing::info!(
            decision = "continuing",
            invocations = state.invocations,
            "deadline near: run continues in a new invocation"
        );
        audit(
            deps,
            "Inventory Run Continuing",
            json!({"runId": spec.run_id, "invocations": state.invocations}),
            context,
        )
        .await;
        return Ok(Response {
            status: "continuing".into(),
            continuation: Some(continuation),
            ..base
        });
    }
    let manifest = match finalize(deps, &scope, spec, &pk, &state).await {
        Ok(m) => m,
        Err(e) => return Err(give_back(deps, &pk, e).await),
    };
    let summary = json!({
        "nodes": manifest.node_count,
        "rows": manifest.types.iter().map(|t| t.rows).sum::<u64>(),
        "types": manifest.types.len(),
        "staleNodes": manifest.freshness.stale_nodes,
        "diff": manifest.diff,
        "invocations": manifest.timing.invocations,
        "durationMs": manifest.timing.duration_ms,
    });
    if let Err(e) = deps.checkpoints.complete(&pk, &summary.to_string()).await {
        return Err(give_back(deps, &pk, e).await);
    }
    tracing::info!(
        decision = "complete",
        nodes = manifest.node_count,
        stale = manifest.freshness.stale_nodes,
        "run complete"
    );
    audit(
        deps,
        "Inventory Run Completed",
        json!({"runId": spec.run_id, "manifestKey": scope.manifest_key(), "summary": summary}),
        context,
    )
    .await;
    Ok(Response {
        summary: Some(summary),
        ..base
    })
}

/// Gives the run back after a failure, so that Lambda's retry (a minute or two later) resumes
/// it from the checkpoint instead of finding it leased until this invocation's deadline (up to
/// the function's 15 minutes: both retries would fail); returns the failure.
async fn give_back(deps: &Deps, pk: &str, e: InventoryError) -> InventoryError {
    if let Err(re) = deps.checkpoints.release(pk).await {
        tracing::warn!(error = %re, "could not release the run lease");
    }
    e
}

/// The event that continues a run: an on-demand request carrying the run's identity.
pub fn continuation_event(spec: &RunSpec, invocations: u64) -> Value {
    json!({
        "version": "0",
        "id": format!("{}-continue-{invocations}", spec.run_id),
        "detail-type": REQUEST_DETAIL_TYPE,
        "source": REQUEST_SOURCE,
        "account": spec.account_id,
        "time": spec.scheduled_time,
        "region": spec.region,
        "resources": [],
        "detail": {"reason": "continuation", "continuation": spec},
    })
}

/// On the audit bus, where a rule routes it back to this function.
async fn publish_continuation(deps: &Deps, spec: &RunSpec) -> Result<(), InventoryError> {
    let detail = json!({"reason": "continuation", "continuation": spec});
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(&deps.config.audit_bus)
        .source(REQUEST_SOURCE)
        .detail_type(REQUEST_DETAIL_TYPE)
        .detail(detail.to_string())
        .build();
    let out = deps
        .events
        .put_events()
        .entries(entry)
        .send()
        .await
        .map_err(|e| aws("PutEvents", e))?;
    if out.failed_entry_count() > 0 {
        let code = out
            .entries()
            .first()
            .and_then(|e| e.error_code())
            .unwrap_or("unknown")
            .to_owned();
        return Err(InventoryError::Aws(autopilot_shared::error::AwsCallError {
            op: "PutEvents",
            code: Some(code),
            retryable: true,
            source: "continuation event not accepted".into(),
        }));
    }
    Ok(())
}

/// Audit delivery never fails the event.
async fn audit(deps: &Deps, detail_type: &str, detail: Value, context: &lambda_runtime::Context) {
    let ev = AuditEvent::new(detail_type, detail);
    if let Err(e) = deps
        .audit
        .emit(&[ev], context.xray_trace_id.as_deref())
        .await
    {
        tracing::warn!(error = %e, error_type = e.error_type(), "audit events not delivered");
    }
}
