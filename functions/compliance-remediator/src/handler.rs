//! The handler: classify → gather facts → plan (pure) → execute once per event (adapters) →
//! report and audit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use autopilot_shared::audit::{AuditEmitter, AuditEvent};
use autopilot_shared::error::ErrorKind;
use autopilot_shared::events::{AutopilotEvent, classify};
use autopilot_shared::idempotency::{GuardError, IdempotencyKey, IdempotencyStore};
use autopilot_shared::metrics::Metrics;
use autopilot_shared::params::ParameterCache;
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::config::Config;
use crate::error::RemediatorError;
use crate::fleet::FleetReader;
use crate::lease::{Delivery, LeaseDecision};
use crate::lease_store::{Acquired, Leases, SweepLease, epoch_ms};
use crate::ledger::{Ledger, Seen};
use crate::plan::{
    ASSOCIATION, AttemptStatus, CONFIG_PREFIX, Finding, Input, Key, PATCH, Plan, Skip, plan,
};
use crate::policy::{Policy, default_policy};
use crate::remediate::{PATCH_DOCUMENT, Remediator, is_claimed_command};
use crate::report::{self, CalendarState, Report};
use crate::work::{Executed, Runner, Step, Work, read_for, steps, with_own_claims};

pub const CONTINUATION: &str = "Compliance Sweep Continuation";
/// The continuation event's field carrying the token its sweep's lease was handed to.
pub const LEASE_TOKEN: &str = "leaseToken";
pub const AUDIT_SOURCE: &str = "ssm-autopilot.compliance-remediator";

/// Clients and configuration, built once per cold start.
pub struct Deps {
    pub config: Config,
    pub fleet: FleetReader,
    pub remediator: Remediator,
    pub ledger: Ledger,
    pub leases: Leases,
    pub idempotency: IdempotencyStore,
    pub audit: AuditEmitter,
    pub params: ParameterCache,
    pub s3: aws_sdk_s3::Client,
}

impl Deps {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        use autopilot_shared::clients;
        Self {
            fleet: FleetReader::new(clients::ssm(sdk)),
            remediator: Remediator::new(clients::ssm(sdk)),
            ledger: Ledger::new(
                clients::dynamodb(sdk),
                config.ledger_table.clone(),
                config.concurrency,
            ),
            leases: Leases::new(clients::dynamodb(sdk), config.ledger_table.clone()),
            idempotency: IdempotencyStore::new(
                clients::dynamodb(sdk),
                config.idempotency_table.clone(),
                config.idempotency_expiry,
            ),
            audit: AuditEmitter::new(
                clients::eventbridge(sdk),
                config.audit_bus.clone(),
                AUDIT_SOURCE,
            ),
            params: ParameterCache::new(clients::ssm(sdk), config.policy_cache),
            s3: clients::s3(sdk),
            config,
        }
    }

    async fn policy(&self) -> Result<Policy, RemediatorError> {
        let deployment = &self.config.deployment;
        let Some(name) = &self.config.policy_parameter else {
            return Ok(default_policy()?.with_deployment(deployment, true));
        };
        match self
            .params
            .get_document::<Policy>(name)
            .await
            .map_err(RemediatorError::PolicyUnavailable)?
        {
            Some(p) => {
                p.validate()?;
                Ok(p.with_deployment(deployment, false))
            }
            None => Ok(default_policy()?.with_deployment(deployment, true)),
        }
    }
}

/// What one invocation did, returned to the caller and kept by the idempotency store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub sweep_id: String,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_key: Option<String>,
    pub nodes_scanned: usize,
    pub nodes_online: usize,
    pub nodes_not_online: usize,
    /// Distinct nodes with at least one NON_COMPLIANT finding.
    #[serde(default)]
    pub nodes_non_compliant: usize,
    pub findings: usize,
    pub planned_targets: usize,
    pub planned_nodes: usize,
    pub patch_batches: Vec<usize>,
    pub association_batches: usize,
    pub automations: usize,
    pub executed: Vec<Executed>,
    pub skipped: BTreeMap<String, usize>,
    pub deferred: BTreeMap<String, usize>,
    pub verified: usize,
    pub checkpointed_steps: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calendar: Option<CalendarState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub event_id: String,
    pub kind: String,
    /// True when this delivery was a repeat answered from the idempotency store.
    pub replayed: bool,
    /// swept | remediated | recorded | ignored | continued
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn count_by_reason(list: &[crate::plan::Skip]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in list {
        let r = serde_json::to_value(s.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *m.entry(r).or_insert(0) += 1;
    }
    m
}

struct Ctx<'a> {
    ev: &'a AutopilotEvent,
    raw: &'a [u8],
    event_id: String,
    account: String,
    region: String,
    now: chrono::DateTime<chrono::Utc>,
    lambda: &'a lambda_runtime::Context,
    /// Remediations this event verified outside a sweep summary (a compliant re-check).
    verified_now: AtomicUsize,
    /// Planned keys this delivery skipped when claiming them (another delivery had).
    claim_skips: std::sync::Mutex<Vec<Skip>>,
}

impl Ctx<'_> {
    fn claim_skips(&self) -> Vec<Skip> {
        self.claim_skips
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Adds the keys skipped at claim time to a summary's skip counts.
    fn count_claim_skips(&self, summary: &mut Summary) {
        for (reason, n) in count_by_reason(&self.claim_skips()) {
            *summary.skipped.entry(reason).or_insert(0) += n;
        }
    }
}

pub async fn handle(
    deps: &Deps,
    event: LambdaEvent<Box<RawValue>>,
) -> Result<Response, RemediatorError> {
    let mut metrics = Metrics::start("compliance-remediator");
    metrics.property("requestId", event.context.request_id.clone());
    let raw = event.payload.get().as_bytes();
    let ev = match classify(raw) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(error_type = e.error_type(), error = %e, "event rejected");
            metrics.count("Rejected");
            metrics.failed(e.error_type(), false);
            metrics.flush();
            return Err(e.into());
        }
    };
    let (account, region) = ev.account_region();
    let ctx = Ctx {
        event_id: ev.id().unwrap_or_default().to_owned(),
        account: account.unwrap_or("unknown").to_owned(),
        region: region.unwrap_or_default().to_owned(),
        now: chrono::Utc::now(),
        ev: &ev,
        raw,
        lambda: &event.context,
        verified_now: AtomicUsize::new(0),
        claim_skips: std::sync::Mutex::new(Vec::new()),
    };
    metrics.event_kind(ev.kind());
    metrics.property("eventId", ctx.event_id.clone());
    let span = tracing::info_span!("event", event_id = %ctx.event_id, detail_type = ev.detail_type(), kind = ev.kind());
    // Instrumenting (not entering) keeps the span on every line across awaits, the failure
    // line included.
    let result = Box::pin(
        async {
            let result = dispatch(deps, &ctx).await;
            if let Err(e) = &result {
                tracing::error!(error_type = e.error_type(), error = %e, "invocation failed");
            }
            result
        }
        .instrument(span),
    )
    .await;
    let verified_now = ctx.verified_now.load(Ordering::Relaxed);
    match &result {
        Ok(r) => record_figures(&mut metrics, r, verified_now),
        Err(e) => {
            metrics.failed(
                e.error_type(),
                matches!(e, RemediatorError::Aws(a) if a.is_throttling()),
            );
        }
    }
    metrics.flush();
    result
}

/// The invocation's figures, from its answer: decision by outcome, side effects actually sent,
/// fleet counts of a sweep, remediations verified by a compliance re-check.
fn record_figures(metrics: &mut Metrics, r: &Response, verified_now: usize) {
    if r.replayed {
        metrics.count("DuplicateSuppressed");
        return;
    }
    let mut name = r.decision.clone();
    if let Some(first) = name.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    metrics.count(&name);
    let mut remediated = verified_now;
    if let Some(s) = &r.summary {
        metrics.add("SideEffects", s.executed.len() as f64);
        if s.nodes_scanned > 0 {
            metrics.add("NodesScanned", s.nodes_scanned as f64);
            metrics.add("NodesNonCompliant", s.nodes_non_compliant as f64);
        }
        metrics.add("Deferred", s.deferred.values().sum::<usize>() as f64);
        remediated += s.verified;
    }
    metrics.add("NodesRemediated", remediated as f64);
}

async fn dispatch(deps: &Deps, ctx: &Ctx<'_>) -> Result<Response, RemediatorError> {
    let respond = |decision: &str, summary, reason: Option<String>| Response {
        event_id: ctx.event_id.clone(),
        kind: ctx.ev.kind().to_owned(),
        replayed: false,
        decision: decision.to_owned(),
        summary,
        reason,
    };
    match ctx.ev {
        AutopilotEvent::Scheduled(e) => {
            guarded(deps, ctx, sweep(deps, ctx, e.detail.dry_run)).await
        }
        AutopilotEvent::Request(e) if e.detail_type == CONTINUATION => {
            let field = |name: &str| {
                e.detail
                    .extra
                    .get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let sweep_id = field("sweepId").unwrap_or_default();
            // The token the sweep's lease was handed to (absent in events from before leases).
            let token = field(LEASE_TOKEN);
            guarded(deps, ctx, continuation(deps, ctx, sweep_id, token)).await
        }
        AutopilotEvent::Request(e) => guarded(deps, ctx, sweep(deps, ctx, e.detail.dry_run)).await,
        AutopilotEvent::SsmCompliance(e) => {
            let d = &e.detail;
            if d.is_non_compliant() {
                let f = Finding::new(&d.resource_id, &d.compliance_type);
                guarded(deps, ctx, single(deps, ctx, f)).await
            } else {
                recheck(deps, ctx, Key::new(&d.resource_id, &d.compliance_type)).await
            }
        }
        AutopilotEvent::ConfigCompliance(e) => {
            let d = &e.detail;
            let ct = format!("{CONFIG_PREFIX}{}", d.config_rule_name);
            match d.new_evaluation_result.compliance_type.as_str() {
                "NON_COMPLIANT" => {
                    let f = Finding::new(&d.resource_id, &ct);
                    guarded(deps, ctx, single(deps, ctx, f)).await
                }
                "COMPLIANT" => recheck(deps, ctx, Key::new(&d.resource_id, &ct)).await,
                other => Ok(respond(
                    "ignored",
                    None,
                    Some(format!("evaluation {other} needs no remediation")),
                )),
            }
        }
        AutopilotEvent::CommandStatus(e) => {
            let d = &e.detail;
            if d.document_name != PATCH_DOCUMENT {
                return Ok(respond(
                    "ignored",
                    None,
                    Some("not a remediation command".into()),
                ));
            }
            command_outcome(deps, ctx, &d.instance_id, &d.command_id, &d.status).await
        }
        _ => Ok(respond(
            "ignored",
            None,
            Some(format!("{} events are not handled", ctx.ev.kind())),
        )),
    }
}

/// Runs `work` once per event id (a replayed event gets the stored answer, nothing re-runs).
async fn guarded<F>(deps: &Deps, ctx: &Ctx<'_>, work: F) -> Result<Response, RemediatorError>
where
    F: std::future::Future<Output = Result<Response, RemediatorError>>,
{
    let key = IdempotencyKey::new(&deps.config.function_name, &ctx.event_id, ctx.raw);
    match deps
        .idempotency
        .execute(&key, ctx.lambda.deadline(), || work)
        .await
    {
        Ok(exec) => {
            let replayed = exec.is_replay();
            if replayed {
                tracing::info!(
                    decision = "duplicate",
                    "repeat delivery answered from the idempotency store"
                );
            }
            let mut r = exec.into_inner();
            r.replayed = replayed;
            Ok(r)
        }
        Err(GuardError::Idempotency(e)) => Err(e.into()),
        Err(GuardError::Handler(e)) => Err(e),
    }
}

struct Gathered {
    policy: Policy,
    fleet: crate::plan::Fleet,
    findings: Vec<Finding>,
    calendar: Option<CalendarState>,
    plan: Plan,
    /// Records an earlier delivery of this event claimed and linked nothing to (claim time).
    own: BTreeMap<Key, i64>,
    /// Every remediation record as read: the claims are conditional on it.
    seen: BTreeMap<Key, Seen>,
}

async fn gather(
    deps: &Deps,
    ctx: &Ctx<'_>,
    only: Option<&Finding>,
) -> Result<Gathered, RemediatorError> {
    let policy = deps.policy().await?;
    let node = only
        .filter(|f| !f.compliance_type.starts_with(CONFIG_PREFIX))
        .map(|f| f.resource_id.as_str());
    let (fleet, mut findings, calendar) = tokio::try_join!(
        deps.fleet.fleet(
            policy.exemption_tag.as_ref(),
            only.map(|f| f.resource_id.as_str())
        ),
        async {
            match (only, node) {
                (Some(f), None) => Ok(vec![f.clone()]),
                (_, n) => deps.fleet.findings(n).await,
            }
        },
        async {
            match policy.calendar() {
                Some(name) => deps.fleet.calendar(name).await.map(|(open, next)| {
                    Some(CalendarState {
                        name: name.to_owned(),
                        open,
                        next_transition: next,
                    })
                }),
                None => Ok(None),
            }
        },
    )?;
    if let Some(f) = only {
        // Event-driven: only the event's (resource, type); the listing adds patch states.
        findings.retain(|x| x.compliance_type == f.compliance_type);
        if findings.is_empty() {
            findings.push(f.clone());
        }
    }
    let exception_keys: Vec<Key> = findings
        .iter()
        .map(|f| Key::new(&f.resource_id, &f.compliance_type))
        .collect();
    let mut attempt_keys = exception_keys.clone();
    if only.is_none() {
        // Earlier attempts on nodes that are compliant now are re-checked (verified) here.
        for n in &fleet.online {
            attempt_keys.push(Key::new(n, PATCH));
            attempt_keys.push(Key::new(n, ASSOCIATION));
        }
    }
    // A redelivery's own unfinished claims are not attempts that hold a cooldown: the plan
    // decides them again, as the first delivery did. Neither are the claims of deliveries
    // that died for good (older than any invocation lives).
    let loaded = deps
        .ledger
        .load_claims(
            &ctx.account,
            &exception_keys,
            &attempt_keys,
            &ctx.event_id,
            ctx.now.timestamp(),
            i64::try_from(deps.config.function_timeout.as_secs()).unwrap_or(i64::MAX),
        )
        .await?;
    let plan = plan(&Input {
        findings: &findings,
        policy: &policy,
        ledger: &loaded.state,
        fleet: &fleet,
        now: ctx.now.timestamp(),
        calendar_open: calendar.as_ref().map(|c| c.open),
        verify: only.is_none(),
        automation_role: deps.config.automation_role.as_deref(),
    });
    Ok(Gathered {
        policy,
        fleet,
        findings,
        calendar,
        plan,
        own: loaded.own,
        seen: loaded.seen,
    })
}

fn deadline_ms(ctx: &Ctx<'_>) -> i64 {
    epoch_ms(ctx.lambda.deadline())
}

/// What a delivery that found nothing left for it answers (no side effect).
fn stopped(ctx: &Ctx<'_>, decision: &str, sweep_id: &str, why: LeaseDecision) -> Response {
    let reason = match why {
        LeaseDecision::Continued => "sweep already handed to its continuation",
        _ => "sweep already ran every step",
    };
    tracing::info!(
        decision,
        reason,
        "nothing left for this delivery of the sweep"
    );
    Response {
        event_id: ctx.event_id.clone(),
        kind: ctx.ev.kind().to_owned(),
        replayed: false,
        decision: decision.to_owned(),
        summary: Some(Summary {
            sweep_id: sweep_id.to_owned(),
            ..Summary::default()
        }),
        reason: Some(reason.to_owned()),
    }
}

/// Gives the lease back however the delivery ended: marked done when no step is left; left
/// alone when it was handed to a continuation at the checkpoint.
async fn finish(
    lease: &SweepLease,
    result: Result<Response, RemediatorError>,
) -> Result<Response, RemediatorError> {
    match &result {
        Ok(r) if r.summary.as_ref().is_some_and(|s| s.checkpointed_steps > 0) => {}
        Ok(_) => lease.release(true).await,
        Err(_) => lease.release(false).await,
    }
    result
}

/// A delivery of an event that plans (a sweep, a compliance event): an enforcing one runs
/// under the sweep's lease — `plan` when the sweep is new or was interrupted while planning,
/// the stored checkpoint when it already continued once, nothing when its continuation was
/// published or it finished. A dry run sends nothing and takes no lease.
async fn planning(
    deps: &Deps,
    ctx: &Ctx<'_>,
    stop_decision: &str,
    dry_run: bool,
    plan: impl AsyncFnOnce(Option<&SweepLease>) -> Result<Response, RemediatorError>,
) -> Result<Response, RemediatorError> {
    if dry_run {
        return plan(None).await;
    }
    let sweep_id = ctx.event_id.as_str();
    let token = uuid::Uuid::new_v4().to_string();
    match deps
        .leases
        .acquire(sweep_id, Delivery::Plan, &token, deadline_ms(ctx))
        .await?
    {
        Acquired::Stop(why) => Ok(stopped(ctx, stop_decision, sweep_id, why)),
        Acquired::Held {
            lease,
            resume,
            checkpoint,
        } => {
            // Boxed: the nested futures otherwise overflow the compiler's layout depth.
            let result = if resume {
                tracing::info!("sweep continued before: resuming its checkpoint");
                Box::pin(resumed(deps, ctx, sweep_id, checkpoint, &lease)).await
            } else {
                Box::pin(plan(Some(&lease))).await
            };
            finish(&lease, result).await
        }
    }
}

async fn sweep(
    deps: &Deps,
    ctx: &Ctx<'_>,
    dry_run_override: Option<bool>,
) -> Result<Response, RemediatorError> {
    let dry_run = dry_run_override.unwrap_or(deps.config.dry_run);
    Box::pin(planning(deps, ctx, "swept", dry_run, async |lease| {
        planned_sweep(deps, ctx, dry_run, lease).await
    }))
    .await
}

async fn planned_sweep(
    deps: &Deps,
    ctx: &Ctx<'_>,
    dry_run: bool,
    lease: Option<&SweepLease>,
) -> Result<Response, RemediatorError> {
    let g = gather(deps, ctx, None).await?;
    let sweep_id = ctx.event_id.clone();
    let (executed, left) = execute(deps, ctx, &g, &sweep_id, dry_run, lease).await?;
    let date = ctx
        .ev
        .time()
        .unwrap_or(ctx.now)
        .format("%Y-%m-%d")
        .to_string();
    let report_key = report::key(&deps.config.report_prefix, &date, &sweep_id, None);
    let claim_skips = ctx.claim_skips();
    let rep = Report {
        sweep_id: &sweep_id,
        event_id: &ctx.event_id,
        account: &ctx.account,
        region: &ctx.region,
        event_time: ctx.ev.time().unwrap_or(ctx.now).to_rfc3339(),
        dry_run,
        calendar: g.calendar.clone(),
        nodes_scanned: Report::scanned(&g.fleet),
        nodes_online: g.fleet.online.len(),
        nodes_not_online: &g.fleet.not_online,
        nodes_exempt: g.fleet.exempt.len(),
        findings: g.findings.len(),
        plan: &g.plan,
        executed: &executed,
        skipped_at_claim: &claim_skips,
        checkpointed_steps: left,
    };
    let body = serde_json::to_vec_pretty(&rep).unwrap_or_default();
    report::write(&deps.s3, &deps.config.report_bucket, &report_key, body).await?;
    let mut summary = summarize(&g, &sweep_id, dry_run, Some(report_key), executed, left);
    ctx.count_claim_skips(&mut summary);
    audit(deps, ctx, "Compliance Sweep Summary", &summary).await;
    tracing::info!(
        decision = "swept",
        dry_run,
        findings = summary.findings,
        planned = summary.planned_targets,
        executed = summary.executed.len(),
        "sweep done"
    );
    Ok(Response {
        event_id: ctx.event_id.clone(),
        kind: ctx.ev.kind().to_owned(),
        replayed: false,
        decision: "swept".into(),
        summary: Some(summary),
        reason: None,
    })
}

fn summarize(
    g: &Gathered,
    sweep_id: &str,
    dry_run: bool,
    report_key: Option<String>,
    executed: Vec<Executed>,
    left: usize,
) -> Summary {
    Summary {
        sweep_id: sweep_id.to_owned(),
        dry_run,
        report_key,
        nodes_scanned: Report::scanned(&g.fleet),
        nodes_online: g.fleet.online.len(),
        nodes_not_online: g.fleet.not_online.len(),
        nodes_non_compliant: g
            .findings
            .iter()
            .map(|f| f.resource_id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        findings: g.findings.len(),
        planned_targets: g.plan.targets.len(),
        planned_nodes: g.plan.target_nodes().len(),
        patch_batches: g.plan.patch_batches.iter().map(Vec::len).collect(),
        association_batches: g.plan.association_batches.len(),
        automations: g.plan.automations.len(),
        executed,
        skipped: count_by_reason(&g.plan.skipped),
        deferred: count_by_reason(&g.plan.deferred),
        verified: g.plan.verified.len(),
        checkpointed_steps: left,
        calendar: g.calendar.clone(),
    }
}

/// Marks verified attempts, records calendar deferrals, runs the steps (unless dry-run) and
/// checkpoints what did not fit. Returns what ran and how many steps were left over.
/// An enforcing run holds the sweep's `lease`.
async fn execute(
    deps: &Deps,
    ctx: &Ctx<'_>,
    g: &Gathered,
    sweep_id: &str,
    dry_run: bool,
    lease: Option<&SweepLease>,
) -> Result<(Vec<Executed>, usize), RemediatorError> {
    if let Some(cal) = g.calendar.as_ref().filter(|c| !c.open) {
        let record = serde_json::json!({
            "reason": "change-calendar-closed", "calendar": cal.name,
            "nextTransition": cal.next_transition, "deferred": g.plan.deferred.len(),
            "at": ctx.now.to_rfc3339(), "dryRun": dry_run,
        });
        deps.ledger
            .put_json(
                &format!("deferral#{sweep_id}"),
                "deferral",
                &record.to_string(),
            )
            .await?;
    }
    let Some(lease) = lease.filter(|_| !dry_run) else {
        return Ok((Vec::new(), 0));
    };
    if !g.plan.verified.is_empty() {
        deps.ledger
            .set_status(
                &ctx.account,
                &g.plan.verified,
                AttemptStatus::Remediated,
                0,
                None,
            )
            .await?;
    }
    let todo = with_own_claims(steps(&g.plan), &g.own);
    let work = Work {
        sweep_id: sweep_id.to_owned(),
        account: ctx.account.clone(),
        patch: g.policy.patch.clone(),
        read: Some(read_for(&todo, &g.seen)),
        steps: todo,
    };
    run_work(deps, ctx, &work, &g.own, lease).await
}

async fn run_work(
    deps: &Deps,
    ctx: &Ctx<'_>,
    work: &Work,
    own: &BTreeMap<Key, i64>,
    lease: &SweepLease,
) -> Result<(Vec<Executed>, usize), RemediatorError> {
    let runner = Runner {
        ledger: &deps.ledger,
        remediator: &deps.remediator,
        function: &deps.config.function_name,
        now: ctx.now.timestamp(),
        deadline: ctx.lambda.deadline(),
        margin: deps.config.checkpoint_margin,
        own,
        stale_after: deps.config.function_timeout,
        lease: Some(lease),
    };
    // Boxed: the steps' future is deep, and nested in every handler path.
    let ran = Box::pin(runner.run(work)).await?;
    if let Ok(mut skips) = ctx.claim_skips.lock() {
        skips.extend(ran.skipped);
    }
    let (done, rest) = (ran.executed, ran.rest);
    if !rest.is_empty() {
        checkpoint(deps, work, rest.clone(), lease).await?;
    }
    Ok((done, rest.len()))
}

/// Stores the rest of the sweep with its lease, handed to the continuation this asks for: the
/// continuation (carrying the new token) takes the sweep at once, anyone else only after this
/// delivery's deadline.
async fn checkpoint(
    deps: &Deps,
    work: &Work,
    rest: Vec<Step>,
    lease: &SweepLease,
) -> Result<(), RemediatorError> {
    let next = Work {
        steps: rest,
        ..work.clone()
    };
    let body = serde_json::to_string(&next).unwrap_or_default();
    let token = uuid::Uuid::new_v4().to_string();
    lease.hand_over(&body, &token).await?;
    let ev = AuditEvent::new(
        CONTINUATION,
        serde_json::json!({"sweepId": work.sweep_id, "account": work.account,
                           "steps": next.steps.len(), LEASE_TOKEN: token}),
    );
    if let Err(e) = deps.audit.emit(&[ev], None).await {
        // Maybe not published: the sweep comes back to this delivery, whose retry resumes
        // the checkpoint instead of waiting out the hand-over.
        lease.take_back(&token).await;
        return Err(RemediatorError::Continuation(e));
    }
    lease.mark_published(&token).await;
    Ok(())
}

async fn continuation(
    deps: &Deps,
    ctx: &Ctx<'_>,
    sweep_id: String,
    token: Option<String>,
) -> Result<Response, RemediatorError> {
    if sweep_id.is_empty() {
        return Err(RemediatorError::CheckpointMissing);
    }
    let token = token.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    match deps
        .leases
        .acquire(&sweep_id, Delivery::Continue, &token, deadline_ms(ctx))
        .await?
    {
        Acquired::Stop(why) => Ok(stopped(ctx, "continued", &sweep_id, why)),
        Acquired::Held {
            lease, checkpoint, ..
        } => {
            let result = Box::pin(resumed(deps, ctx, &sweep_id, checkpoint, &lease)).await;
            finish(&lease, result).await
        }
    }
}

/// Runs the stored rest of a sweep (a continuation, or a planning redelivery of a sweep that
/// continued before) and reports that part.
async fn resumed(
    deps: &Deps,
    ctx: &Ctx<'_>,
    sweep_id: &str,
    checkpoint: Option<String>,
    lease: &SweepLease,
) -> Result<Response, RemediatorError> {
    let body = match checkpoint {
        Some(body) => body,
        // A continuation of a sweep checkpointed before the checkpoint moved into the lease.
        None => deps
            .ledger
            .get_json(&format!("checkpoint#{sweep_id}"), "work")
            .await?
            .ok_or(RemediatorError::CheckpointMissing)?,
    };
    let work: Work = serde_json::from_str(&body).map_err(|_| RemediatorError::CheckpointMissing)?;
    let sweep_id = sweep_id.to_owned();
    let (executed, left) = run_work(deps, ctx, &work, &BTreeMap::new(), lease).await?;
    let date = ctx.now.format("%Y-%m-%d").to_string();
    let part = format!(
        "continuation-{}",
        &ctx.event_id.chars().take(36).collect::<String>()
    );
    let key = report::key(&deps.config.report_prefix, &date, &sweep_id, Some(&part));
    let claim_skips = ctx.claim_skips();
    let body = serde_json::to_vec_pretty(&serde_json::json!({
        "sweepId": sweep_id, "eventId": ctx.event_id, "executed": executed, "checkpointedSteps": left,
        "skippedAtClaim": claim_skips,
    }))
    .unwrap_or_default();
    report::write(&deps.s3, &deps.config.report_bucket, &key, body).await?;
    let mut summary = Summary {
        sweep_id,
        report_key: Some(key),
        executed,
        checkpointed_steps: left,
        ..Summary::default()
    };
    ctx.count_claim_skips(&mut summary);
    audit(deps, ctx, "Compliance Sweep Summary", &summary).await;
    Ok(Response {
        event_id: ctx.event_id.clone(),
        kind: ctx.ev.kind().to_owned(),
        replayed: false,
        decision: "continued".into(),
        summary: Some(summary),
        reason: None,
    })
}

/// One resource from a compliance event, through the same planner. Enforcement follows
/// `DRY_RUN`; the plan is audited either way.
async fn single(deps: &Deps, ctx: &Ctx<'_>, f: Finding) -> Result<Response, RemediatorError> {
    let dry_run = deps.config.dry_run;
    Box::pin(planning(deps, ctx, "recorded", dry_run, async |lease| {
        planned_single(deps, ctx, &f, dry_run, lease).await
    }))
    .await
}

async fn planned_single(
    deps: &Deps,
    ctx: &Ctx<'_>,
    f: &Finding,
    dry_run: bool,
    lease: Option<&SweepLease>,
) -> Result<Response, RemediatorError> {
    let g = gather(deps, ctx, Some(f)).await?;
    let (executed, left) = execute(deps, ctx, &g, &ctx.event_id, dry_run, lease).await?;
    let mut summary = summarize(&g, &ctx.event_id, dry_run, None, executed, left);
    ctx.count_claim_skips(&mut summary);
    let claim_skips = ctx.claim_skips();
    audit(deps, ctx, "Compliance Remediation Decision", &summary).await;
    let decision = if summary.executed.is_empty() {
        "recorded"
    } else {
        "remediated"
    };
    Ok(Response {
        event_id: ctx.event_id.clone(),
        kind: ctx.ev.kind().to_owned(),
        replayed: false,
        decision: decision.into(),
        reason: g
            .plan
            .skipped
            .first()
            .or(g.plan.deferred.first())
            .or(claim_skips.first())
            .map(|s| format!("{:?}", s.reason)),
        summary: Some(summary),
    })
}

/// A compliant report after an attempt is the re-check that makes it "remediated".
async fn recheck(deps: &Deps, ctx: &Ctx<'_>, key: Key) -> Result<Response, RemediatorError> {
    let state = deps
        .ledger
        .load(&ctx.account, &[], std::slice::from_ref(&key))
        .await?;
    let pending = state.attempts.get(&key).is_some_and(|a| {
        matches!(
            a.status,
            AttemptStatus::Pending | AttemptStatus::Succeeded | AttemptStatus::Failed
        )
    });
    let decision = if pending {
        deps.ledger
            .set_status(
                &ctx.account,
                std::slice::from_ref(&key),
                AttemptStatus::Remediated,
                0,
                None,
            )
            .await?;
        ctx.verified_now.fetch_add(1, Ordering::Relaxed);
        audit(
            deps,
            ctx,
            "Compliance Remediation Verified",
            &serde_json::json!({"resourceId": key.resource_id, "complianceType": key.compliance_type}),
        )
        .await;
        "recorded"
    } else {
        "ignored"
    };
    Ok(Response {
        event_id: ctx.event_id.clone(),
        kind: ctx.ev.kind().to_owned(),
        replayed: false,
        decision: decision.into(),
        summary: None,
        reason: Some(if pending {
            "compliance re-checked COMPLIANT: remediated".into()
        } else {
            "no remediation attempt to verify".into()
        }),
    })
}

/// Follows a patch command's outcome. Success is not "remediated" until compliance re-checks;
/// a node that could not be reached is not a failure; failures past the limit are reported.
async fn command_outcome(
    deps: &Deps,
    ctx: &Ctx<'_>,
    node: &str,
    command_id: &str,
    status: &str,
) -> Result<Response, RemediatorError> {
    let key = Key::new(node, PATCH);
    let (new_status, delta) = match status {
        "Success" => (AttemptStatus::Succeeded, 0),
        "Failed" => (AttemptStatus::Failed, 0),
        "TimedOut" | "Undeliverable" | "Cancelled" | "DeliveryTimedOut" => {
            // Only a node that is reachable can fail a remediation.
            let facts = deps.fleet.fleet(None, Some(node)).await?;
            if facts.online.contains(node) && status == "TimedOut" {
                (AttemptStatus::Failed, 0)
            } else {
                (AttemptStatus::Undeliverable, -1)
            }
        }
        _ => {
            return Ok(Response {
                event_id: ctx.event_id.clone(),
                kind: ctx.ev.kind().to_owned(),
                replayed: false,
                decision: "ignored".into(),
                summary: None,
                reason: Some(format!("status {status} is not final")),
            });
        }
    };
    let key_for_guard = key.clone();
    let account = ctx.account.clone();
    let cid = command_id.to_owned();
    let updated = guarded(deps, ctx, async move {
        let rows = Box::pin(apply_outcome(
            deps,
            &account,
            &key_for_guard,
            &cid,
            new_status,
            delta,
        ))
        .await?;
        // Published before the record completes: a crash after the update and before the
        // audit re-runs both on redelivery (at-least-once) instead of losing the failure.
        if let Some((_, a)) = rows.first().filter(|_| new_status == AttemptStatus::Failed) {
            let policy = deps.policy().await?;
            let gave_up = a.attempts >= policy.max_attempts;
            audit(
                deps,
                ctx,
                "Compliance Remediation Failed",
                &serde_json::json!({
                    "resourceId": node, "complianceType": PATCH, "commandId": cid,
                    "attempts": a.attempts, "retryLimitReached": gave_up,
                }),
            )
            .await;
        }
        Ok(Response {
            event_id: String::new(),
            kind: String::new(),
            replayed: false,
            decision: if rows.is_empty() {
                "ignored"
            } else {
                "recorded"
            }
            .into(),
            summary: None,
            reason: rows.first().map(|(_, a)| {
                serde_json::json!({"status": new_status, "attempts": a.attempts}).to_string()
            }),
        })
    })
    .await?;
    Ok(Response {
        event_id: ctx.event_id.clone(),
        kind: ctx.ev.kind().to_owned(),
        ..updated
    })
}

/// Records the outcome of command `cid` on the record of `key`. A record not linked to it may
/// be the claim the command was sent for, its link not written yet (the delivery died between
/// send and link, or the event overtook it): when the command's comment names the claim's
/// sweep and it targeted the node, the link is written together with the outcome. Resolving
/// it here, rather than reading statuses when a later delivery links, keeps one consumer per
/// outcome (the event, once under its idempotency guard) in any order of event and link, and
/// needs no later delivery at all.
async fn apply_outcome(
    deps: &Deps,
    account: &str,
    key: &Key,
    cid: &str,
    status: AttemptStatus,
    delta: i64,
) -> Result<Vec<(Key, crate::plan::Attempt)>, RemediatorError> {
    let one = std::slice::from_ref(key);
    let rows = deps
        .ledger
        .set_status(account, one, status, delta, Some(cid))
        .await?;
    if !rows.is_empty() {
        return Ok(rows);
    }
    let Some(sweep) = deps.ledger.unlinked_claim(account, key).await? else {
        return Ok(rows);
    };
    let Some((comment, targets)) = deps.remediator.patch_command(cid).await? else {
        return Ok(rows);
    };
    let function = &deps.config.function_name;
    if !is_claimed_command(function, &sweep, &comment, &targets, &key.resource_id) {
        return Ok(rows);
    }
    match deps
        .ledger
        .link_with_status(account, key, cid, &sweep, status, delta)
        .await?
    {
        Some(row) => {
            tracing::info!(command_id = %cid, sweep_id = %sweep, "status linked its claim");
            Ok(vec![row])
        }
        // Linked (by the sweep's redelivery) in the meantime: the outcome follows the link.
        None => Ok(deps
            .ledger
            .set_status(account, one, status, delta, Some(cid))
            .await?),
    }
}

/// Audit delivery never fails the invocation: the decision is already made and executed.
async fn audit<T: Serialize>(deps: &Deps, ctx: &Ctx<'_>, detail_type: &str, detail: &T) {
    let mut v = serde_json::to_value(detail).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("eventId".into(), ctx.event_id.clone().into());
        m.insert("eventKind".into(), ctx.ev.kind().into());
        m.insert("account".into(), ctx.account.clone().into());
    }
    let trace = ctx.lambda.xray_trace_id.clone();
    if let Err(e) = deps
        .audit
        .emit(&[AuditEvent::new(detail_type, v)], trace.as_deref())
        .await
    {
        tracing::warn!(error = %e, error_type = e.error_type(), "audit event not delivered");
    }
}
