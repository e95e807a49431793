//! The handler: classify → read facts → decide (pure) → execute once per event (adapters).

use autopilot_shared::audit::AuditEmitter;
use autopilot_shared::error::ErrorKind;
use autopilot_shared::events::{AutomationOutcome, AutopilotEvent, classify};
use autopilot_shared::idempotency::{GuardError, IdempotencyKey, IdempotencyStore};
use autopilot_shared::metrics::Metrics;
use autopilot_shared::params::ParameterCache;
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::backend::{Backend, Trigger};
use crate::config::{self, Config};
use crate::decide::{
    Decision, FollowUp, Gate, OpenIncident, RunbookStep, Situation, decide, deterministic_uuid,
    follow_up,
};
use crate::error::IncidentError;
use crate::facts::{Facts, Reading, read};
use crate::ledger::{Entry, IncidentRow, Ledger};
use crate::plans::{Plan, PlanSet, Respond, default_plans};
use crate::runbooks::Automation;

/// Clients and configuration, built once per cold start.
pub struct Deps {
    pub config: Config,
    pub ledger: Ledger,
    pub backend: Backend,
    pub automation: Automation,
    pub idempotency: IdempotencyStore,
    pub audit: AuditEmitter,
    pub params: ParameterCache,
    pub sns: aws_sdk_sns::Client,
}

impl Deps {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        let incidents = aws_sdk_ssmincidents::Client::new(sdk);
        Self::with_incident_client(config, sdk, incidents)
    }

    /// Like [`Deps::new`] with a given Incident Manager client (tests answer it with mocks:
    /// the local emulator has no Incident Manager).
    pub fn with_incident_client(
        config: Config,
        sdk: &aws_config::SdkConfig,
        incidents: aws_sdk_ssmincidents::Client,
    ) -> Self {
        use autopilot_shared::clients;
        let backend = match &config.backend {
            config::Backend::OpsCenter => Backend::OpsCenter(clients::ssm(sdk)),
            config::Backend::IncidentManager { response_plan_arn } => Backend::IncidentManager {
                client: incidents,
                response_plan_arn: response_plan_arn.clone(),
            },
        };
        Self {
            ledger: Ledger::new(clients::dynamodb(sdk), config.ledger_table.clone()),
            backend,
            automation: Automation::new(clients::ssm(sdk)),
            idempotency: IdempotencyStore::new(
                clients::dynamodb(sdk),
                config.idempotency_table.clone(),
                config.idempotency_expiry,
            ),
            audit: AuditEmitter::new(
                clients::eventbridge(sdk),
                config.audit_bus.clone(),
                "ssm-autopilot.incident-response",
            ),
            params: ParameterCache::new(clients::ssm(sdk), config.plans_cache),
            sns: clients::sns(sdk),
            config,
        }
    }

    async fn plans(&self) -> Result<PlanSet, IncidentError> {
        match self
            .params
            .get_document::<PlanSet>(&self.config.plans_parameter)
            .await
            .map_err(IncidentError::PlansUnavailable)?
        {
            Some(set) => {
                set.validate()?;
                Ok(set)
            }
            None => Ok(default_plans()?),
        }
    }
}

/// One decision taken for the event, as reported and audited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// opened, appended, annotated, notified, ignored, exempt, succeeded, resolved,
    /// escalated, noted.
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// OpsItem id or incident record ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn outcome(decision: &str) -> Outcome {
    Outcome {
        decision: decision.to_owned(),
        ..Outcome::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub event_id: String,
    pub kind: String,
    /// True when this delivery was a repeat answered from the idempotency store.
    pub replayed: bool,
    pub results: Vec<Outcome>,
}

pub async fn handle(
    deps: &Deps,
    event: LambdaEvent<Box<RawValue>>,
) -> Result<Response, IncidentError> {
    let mut metrics = Metrics::start("incident-response");
    metrics.property("requestId", event.context.request_id.clone());
    // The span is filled in once the event is classified; instrumenting (not entering)
    // keeps it on every log line across awaits.
    let span = tracing::info_span!(
        "event",
        event_id = tracing::field::Empty,
        detail_type = tracing::field::Empty,
        kind = tracing::field::Empty
    );
    let result = Box::pin(handle_event(deps, event, &mut metrics).instrument(span)).await;
    match &result {
        Ok(resp) if resp.replayed => metrics.count("DuplicateSuppressed"),
        Ok(resp) => {
            for r in &resp.results {
                metrics.count(&metric_name(&r.decision));
                metrics.add("SideEffects", r.executions.len() as f64);
                if !r.deferred.is_empty() {
                    metrics.count("Deferred");
                }
            }
        }
        Err(e) => {
            metrics.failed(e.error_type(), e.error_type() == "AwsThrottled");
        }
    }
    metrics.flush();
    result
}

/// `opened` → `Opened`: the decision's metric name.
fn metric_name(decision: &str) -> String {
    let mut c = decision.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

async fn handle_event(
    deps: &Deps,
    event: LambdaEvent<Box<RawValue>>,
    metrics: &mut Metrics,
) -> Result<Response, IncidentError> {
    let raw = event.payload.get();
    let ev = match classify(raw.as_bytes()) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(error_type = e.error_type(), error = %e, "event rejected");
            metrics.count("Rejected");
            return Err(e.into());
        }
    };
    let event_id = ev.id().unwrap_or_default().to_owned();
    let span = tracing::Span::current();
    span.record("event_id", event_id.as_str());
    span.record("detail_type", ev.detail_type());
    span.record("kind", ev.kind());
    metrics.event_kind(ev.kind());
    metrics.property("eventId", event_id.clone());
    let trace = event.context.xray_trace_id.clone();
    let respond = |results: Vec<Outcome>, replayed: bool| Response {
        event_id: event_id.clone(),
        kind: ev.kind().to_owned(),
        replayed,
        results,
    };

    let work = match read(&ev) {
        Reading::NotATrigger(reason) => {
            let o = Outcome {
                reason: Some(reason.to_owned()),
                ..outcome("ignored")
            };
            audit(deps, &ev, std::slice::from_ref(&o), trace.as_deref()).await;
            return Ok(respond(vec![o], false));
        }
        Reading::Trigger(facts) => {
            let plans = deps.plans().await?;
            // Cheap, lookup-free screening first: unmatched or exempt-account events need
            // no idempotency record.
            let screen = decide(
                &facts,
                &plans,
                plans.find(&facts),
                &situation(deps, &event_id, &facts),
            );
            if let Some(o) = final_outcome(&screen) {
                tracing::info!(decision = %o.decision, reason = o.reason.as_deref().unwrap_or_default(), "no action");
                audit(deps, &ev, std::slice::from_ref(&o), trace.as_deref()).await;
                return Ok(respond(vec![o], false));
            }
            Work::Trigger(facts, plans)
        }
        Reading::AutomationStatus {
            execution_id,
            outcome: result,
            status,
            ..
        } => match deps.ledger.execution(&execution_id).await? {
            None => {
                let o = Outcome {
                    reason: Some("execution was not started by incident-response".into()),
                    ..outcome("ignored")
                };
                audit(deps, &ev, std::slice::from_ref(&o), trace.as_deref()).await;
                return Ok(respond(vec![o], false));
            }
            Some(exec) => Work::FollowUp(exec, result, status),
        },
    };

    let key = IdempotencyKey::new(&deps.config.function_name, &event_id, raw.as_bytes());
    let run = deps
        .idempotency
        .execute(&key, event.context.deadline(), || async {
            let results = match &work {
                Work::Trigger(facts, plans) => {
                    let plan = plans.find(facts);
                    match plan {
                        Some(plan) => vec![trigger(deps, &ev, raw, facts, plans, plan).await?],
                        None => vec![outcome("ignored")],
                    }
                }
                Work::FollowUp(exec, result, status) => {
                    vec![follow(deps, &ev, exec, *result, status).await?]
                }
            };
            audit(deps, &ev, &results, trace.as_deref()).await;
            Ok::<_, IncidentError>(results)
        })
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
            Ok(respond(exec.into_inner(), replayed))
        }
        Err(GuardError::Idempotency(e)) => Err(e.into()),
        Err(GuardError::Handler(e)) => Err(e),
    }
}

enum Work {
    Trigger(Box<Facts>, PlanSet),
    FollowUp(crate::decide::ExecutionRecord, AutomationOutcome, String),
}

fn situation<'a>(deps: &'a Deps, event_id: &'a str, _f: &Facts) -> Situation<'a> {
    Situation {
        function: &deps.config.function_name,
        event_id,
        now: chrono::Utc::now(),
        flap_window: deps.config.flap_window,
        exempt_accounts: &deps.config.exempt_accounts,
        exempt_tag: None,
        existing: None,
        gate: Gate::None,
        default_topic: deps.config.notification_topic.as_deref(),
        automation_role: deps.config.automation_role_arn.as_deref(),
    }
}

/// Decisions that end the event without side effects (besides the audit event).
fn final_outcome(d: &Decision) -> Option<Outcome> {
    match d {
        Decision::Ignore { reason } => Some(Outcome {
            reason: Some(reason.clone()),
            ..outcome("ignored")
        }),
        Decision::Exempt { plan, reason } => Some(Outcome {
            plan: Some(plan.clone()),
            reason: Some(reason.clone()),
            ..outcome("exempt")
        }),
        _ => None,
    }
}

fn entry(event_id: &str, step: &str, kind: &str, text: String) -> Entry {
    Entry {
        id: format!("{event_id}#{step}"),
        at: chrono::Utc::now().to_rfc3339(),
        kind: kind.to_owned(),
        text,
    }
}

async fn trigger(
    deps: &Deps,
    ev: &AutopilotEvent,
    raw: &str,
    facts: &Facts,
    plans: &PlanSet,
    plan: &Plan,
) -> Result<Outcome, IncidentError> {
    let event_id = ev.id().unwrap_or_default();
    let mut s = situation(deps, event_id, facts);
    s.now = ev.time().unwrap_or_else(chrono::Utc::now);
    let tag = plans.exemption_tag(plan);
    if let Some(tag) = tag {
        let carried = facts.tags.as_ref().is_some_and(|t| t.contains_key(tag));
        let looked_up = match (carried, facts.instance_id()) {
            (false, Some(id)) => deps.automation.tagged(id, tag).await?,
            _ => false,
        };
        if carried || looked_up {
            s.exempt_tag = Some(tag);
        }
    }
    if plan.respond == Respond::Incident {
        s.existing = deps
            .ledger
            .get_open(&plan.name, &facts.resource_key())
            .await?;
        if let Some(cal) = &deps.config.change_calendar
            && plan.runbooks.iter().any(|r| r.disruptive)
        {
            s.gate = deps.automation.calendar(cal).await?;
        }
    }
    let decision = decide(facts, plans, Some(plan), &s);
    if let Some(o) = final_outcome(&decision) {
        tracing::info!(decision = %o.decision, reason = o.reason.as_deref().unwrap_or_default(), "no action");
        return Ok(o);
    }
    match decision {
        Decision::Open(o) => open(deps, ev, raw, &o).await,
        Decision::Append {
            plan,
            incident_id,
            entry: text,
        } => {
            let mut out = append(deps, event_id, &incident_id, "repeat", text).await?;
            out.plan = Some(plan);
            Ok(out)
        }
        Decision::Annotate {
            plan,
            resource_key,
            entry: text,
        } => {
            let ids = deps.ledger.open_for_resource(&resource_key).await?;
            if ids.is_empty() {
                return Ok(Outcome {
                    plan: Some(plan),
                    reason: Some("no open incident for the resource".into()),
                    ..outcome("ignored")
                });
            }
            let mut last = outcome("annotated");
            for id in &ids {
                last = append(deps, event_id, id, "annotation", text.clone()).await?;
            }
            Ok(Outcome {
                decision: "annotated".into(),
                plan: Some(plan),
                ..last
            })
        }
        Decision::Notify { plan, title, topic } => {
            notify(
                deps,
                topic.as_deref(),
                &title,
                serde_json::json!({"plan": plan, "title": title, "eventId": event_id}),
            )
            .await?;
            Ok(Outcome {
                plan: Some(plan),
                reason: Some(title),
                ..outcome("notified")
            })
        }
        Decision::Ignore { .. } | Decision::Exempt { .. } => Ok(outcome("ignored")),
    }
}

async fn open(
    deps: &Deps,
    ev: &AutopilotEvent,
    raw: &str,
    o: &OpenIncident,
) -> Result<Outcome, IncidentError> {
    let event_id = ev.id().unwrap_or_default();
    if let Some(other) = deps
        .ledger
        .claim_open(&o.plan, &o.resource_key, &o.incident_id)
        .await?
    {
        // A concurrent event for the same resource opened the incident first.
        let mut out = append(
            deps,
            event_id,
            &other,
            "repeat",
            format!("repeat: {}", o.title),
        )
        .await?;
        out.plan = Some(o.plan.clone());
        return Ok(out);
    }
    let now = chrono::Utc::now().to_rfc3339();
    deps.ledger.create_incident(o, &now).await?;
    let existing = deps.ledger.incident(&o.incident_id).await?;
    let backend_ref = match existing.and_then(|r| r.backend_ref) {
        Some(r) => r,
        None => {
            let t = Trigger {
                source: ev.source(),
                time: ev.time().unwrap_or_else(chrono::Utc::now),
                raw,
            };
            let r = deps.backend.open(o, &t).await?;
            deps.ledger.set_backend_ref(&o.incident_id, &r).await?;
            r
        }
    };
    deps.ledger
        .add_resource_open(&o.resource_key, &o.incident_id)
        .await?;
    let mut entries = vec![entry(
        event_id,
        "opened",
        "opened",
        format!(
            "{} (plan {}, impact {}, {})",
            o.title,
            o.plan,
            o.impact,
            deps.backend.name()
        ),
    )];
    let mut out = Outcome {
        plan: Some(o.plan.clone()),
        incident_id: Some(o.incident_id.clone()),
        backend_ref: Some(backend_ref.clone()),
        impact: Some(o.impact),
        ..outcome("opened")
    };
    for (i, step) in o.runbooks.iter().enumerate() {
        let step_id = format!("runbook-{i}");
        match step {
            RunbookStep::Start {
                document,
                parameters,
                client_token,
                ..
            } => {
                let id = deps
                    .automation
                    .start(document, parameters, client_token)
                    .await?;
                deps.ledger
                    .record_execution(&id, &o.incident_id, document)
                    .await?;
                tracing::info!(decision = "runbook-started", document = %document, execution_id = %id, "runbook started");
                entries.push(entry(
                    event_id,
                    &step_id,
                    "runbook-started",
                    format!("{document} started: execution {id}"),
                ));
                out.executions.push(id);
            }
            RunbookStep::Defer { document, reason } => {
                tracing::info!(decision = "runbook-deferred", document = %document, reason = %reason, "runbook deferred");
                entries.push(entry(
                    event_id,
                    &step_id,
                    "runbook-deferred",
                    format!("{document}: {reason}"),
                ));
                out.deferred.push(document.clone());
            }
            RunbookStep::Reject { document, reason } => {
                tracing::warn!(decision = "runbook-rejected", document = %document, reason = %reason, "runbook rejected");
                entries.push(entry(
                    event_id,
                    &step_id,
                    "runbook-rejected",
                    format!("{document} not started: {reason}"),
                ));
                out.rejected.push(document.clone());
            }
        }
    }
    let full = deps.ledger.append(&o.incident_id, &entries).await?;
    deps.backend.mirror(&backend_ref, &full, &entries).await?;
    notify(
        deps,
        o.topic.as_deref(),
        &format!("[incident {}] {}", o.incident_id, o.title),
        serde_json::json!({
            "incidentId": o.incident_id, "plan": o.plan, "title": o.title, "impact": o.impact,
            "backendRef": backend_ref, "resources": o.resource_arns,
            "runbooks": o.runbooks,
        }),
    )
    .await?;
    tracing::info!(decision = "opened", incident_id = %o.incident_id, backend_ref = %backend_ref, "incident opened");
    Ok(out)
}

async fn append(
    deps: &Deps,
    event_id: &str,
    incident_id: &str,
    kind: &str,
    text: String,
) -> Result<Outcome, IncidentError> {
    let e = entry(event_id, &format!("{kind}-{incident_id}"), kind, text);
    let full = deps
        .ledger
        .append(incident_id, std::slice::from_ref(&e))
        .await?;
    let row = deps.ledger.incident(incident_id).await?;
    let backend_ref = row.as_ref().and_then(|r| r.backend_ref.clone());
    if let Some(r) = &backend_ref {
        deps.backend
            .mirror(r, &full, std::slice::from_ref(&e))
            .await?;
    }
    tracing::info!(decision = "appended", incident_id, "timeline entry added");
    Ok(Outcome {
        incident_id: Some(incident_id.to_owned()),
        backend_ref,
        impact: row.map(|r| r.record.impact),
        ..outcome("appended")
    })
}

async fn follow(
    deps: &Deps,
    ev: &AutopilotEvent,
    exec: &crate::decide::ExecutionRecord,
    result: AutomationOutcome,
    status: &str,
) -> Result<Outcome, IncidentError> {
    let event_id = ev.id().unwrap_or_default();
    let Some(row) = deps.ledger.incident(&exec.incident_id).await? else {
        return Ok(Outcome {
            reason: Some("the execution's incident record is missing".into()),
            ..outcome("ignored")
        });
    };
    let base = |decision: &str| Outcome {
        plan: Some(row.plan.clone()),
        incident_id: Some(row.record.incident_id.clone()),
        backend_ref: row.backend_ref.clone(),
        impact: Some(row.record.impact),
        executions: vec![exec.execution_id.clone()],
        ..outcome(decision)
    };
    match follow_up(exec, &row.record, result, status) {
        FollowUp::Ignore { reason } => Ok(Outcome {
            reason: Some(reason),
            ..base("ignored")
        }),
        FollowUp::Note { entry: text, .. } => {
            record(deps, &row, &[entry(event_id, "note", "note", text)]).await?;
            Ok(base("noted"))
        }
        FollowUp::Succeeded {
            execution_id,
            document,
            resolve,
            ..
        } => {
            // The status is recorded first and the follow-up marked handled last: a delivery
            // that fails in between is finished by the redelivery. Entries are keyed by the
            // execution, so whichever delivery finishes adds them once.
            deps.ledger
                .set_execution_status(&execution_id, status, None)
                .await?;
            deps.ledger
                .add_succeeded(&row.record.incident_id, &execution_id)
                .await?;
            let mut entries = vec![entry(
                &execution_id,
                "runbook-succeeded",
                "runbook-succeeded",
                format!("{document} succeeded: execution {execution_id}"),
            )];
            if !resolve {
                record(deps, &row, &entries).await?;
                deps.ledger.set_execution_handled(&execution_id).await?;
                return Ok(base("succeeded"));
            }
            entries.push(entry(
                &execution_id,
                "resolved",
                "resolved",
                "every runbook of the plan succeeded".into(),
            ));
            record(deps, &row, &entries).await?;
            if let Some(r) = &row.backend_ref {
                deps.backend
                    .resolve(
                        r,
                        "Resolved by ssm-autopilot: every runbook of the response plan succeeded.",
                        &deterministic_uuid(&["resolve", &row.record.incident_id]),
                    )
                    .await?;
            }
            deps.ledger
                .resolve(&row, &chrono::Utc::now().to_rfc3339())
                .await?;
            deps.ledger.set_execution_handled(&execution_id).await?;
            tracing::info!(decision = "resolved", incident_id = %row.record.incident_id, "incident resolved");
            Ok(base("resolved"))
        }
        FollowUp::Escalate {
            execution_id,
            document,
            status,
            impact,
            ..
        } => {
            // Recorded with the status: a resumed escalation raises to the same impact.
            deps.ledger
                .set_execution_status(&execution_id, &status, Some(impact))
                .await?;
            deps.ledger
                .set_impact(&row.record.incident_id, impact)
                .await?;
            if let Some(r) = &row.backend_ref {
                deps.backend
                    .escalate(r, impact, &deterministic_uuid(&["escalate", &execution_id]))
                    .await?;
            }
            let text = format!(
                "escalated to impact {impact}: {document} ended {status} (execution {execution_id})"
            );
            record(
                deps,
                &row,
                &[entry(&execution_id, "escalated", "escalated", text.clone())],
            )
            .await?;
            notify(
                deps,
                row.topic
                    .as_deref()
                    .or(deps.config.notification_topic.as_deref()),
                &format!(
                    "[incident {} escalated] {}",
                    row.record.incident_id, row.title
                ),
                serde_json::json!({
                    "incidentId": row.record.incident_id, "title": row.title, "impact": impact,
                    "execution": execution_id, "runbook": document, "status": status,
                }),
            )
            .await?;
            deps.ledger.set_execution_handled(&execution_id).await?;
            tracing::warn!(decision = "escalated", incident_id = %row.record.incident_id, impact, "incident escalated");
            Ok(Outcome {
                impact: Some(impact),
                reason: Some(text),
                ..base("escalated")
            })
        }
    }
}

/// Appends to the ledger timeline and mirrors it to the backend.
async fn record(deps: &Deps, row: &IncidentRow, entries: &[Entry]) -> Result<(), IncidentError> {
    let full = deps.ledger.append(&row.record.incident_id, entries).await?;
    if let Some(r) = &row.backend_ref {
        deps.backend.mirror(r, &full, entries).await?;
    }
    Ok(())
}

async fn notify(
    deps: &Deps,
    topic: Option<&str>,
    subject: &str,
    message: serde_json::Value,
) -> Result<(), IncidentError> {
    let Some(topic) = topic else {
        return Ok(());
    };
    autopilot_shared::notify::publish(&deps.sns, topic, subject, &message)
        .await
        .map_err(IncidentError::Aws)?;
    Ok(())
}

async fn audit(deps: &Deps, ev: &AutopilotEvent, results: &[Outcome], trace: Option<&str>) {
    deps.audit
        .emit_decisions("Incident Decision", ev, results, trace)
        .await;
}
