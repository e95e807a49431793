//! The handler: classify → decide (pure) → execute the plan once per event (adapters).

use autopilot_shared::audit::AuditEmitter;
use autopilot_shared::error::ErrorKind;
use autopilot_shared::events::{AutopilotEvent, Classified, classify_raw};
use autopilot_shared::idempotency::{GuardError, IdempotencyKey, IdempotencyStore};
use autopilot_shared::metrics::Metrics;
use autopilot_shared::params::ParameterCache;
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::config::Config;
use crate::decide::{Action, DataType, Draft, plan, resources_json};
use crate::error::OpsItemError;
use crate::ledger::Ledger;
use crate::opscenter::{Created, OpsCenter};
use crate::rules::{RuleSet, default_rules};

/// Clients and configuration, built once per cold start.
pub struct Deps {
    pub config: Config,
    pub opscenter: OpsCenter,
    pub ledger: Ledger,
    pub idempotency: IdempotencyStore,
    pub audit: AuditEmitter,
    pub params: ParameterCache,
    pub sns: aws_sdk_sns::Client,
}

impl Deps {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        use autopilot_shared::clients;
        Self {
            opscenter: OpsCenter::new(clients::ssm(sdk)),
            ledger: Ledger::new(clients::dynamodb(sdk), config.ledger_table.clone()),
            idempotency: IdempotencyStore::new(
                clients::dynamodb(sdk),
                config.idempotency_table.clone(),
                config.idempotency_expiry,
            ),
            audit: AuditEmitter::new(
                clients::eventbridge(sdk),
                config.audit_bus.clone(),
                "ssm-autopilot.opsitem-creator",
            ),
            params: ParameterCache::new(clients::ssm(sdk), config.rules_cache),
            sns: clients::sns(sdk),
            config,
        }
    }

    async fn rules(&self) -> Result<RuleSet, OpsItemError> {
        let Some(name) = &self.config.rules_parameter else {
            return Ok(default_rules()?);
        };
        match self
            .params
            .get_document::<RuleSet>(name)
            .await
            .map_err(OpsItemError::RulesUnavailable)?
        {
            Some(set) => {
                set.validate()?;
                Ok(set)
            }
            None => Ok(default_rules()?),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Created,
    Updated,
    Resolved,
    Ignored,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurrences: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Decision {
    /// Metric name of the decision (same names in every function).
    pub fn metric_name(self) -> &'static str {
        match self {
            Decision::Created => "Created",
            Decision::Updated => "Updated",
            Decision::Resolved => "Resolved",
            Decision::Ignored => "Ignored",
            Decision::Failed => "Failed",
        }
    }
}

impl Outcome {
    fn new(decision: Decision) -> Self {
        Self {
            decision,
            ops_item_id: None,
            title: None,
            dedup: None,
            occurrences: None,
            reason: None,
        }
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
) -> Result<Response, OpsItemError> {
    let mut metrics = Metrics::start("opsitem-creator");
    metrics.property("requestId", event.context.request_id.clone());
    let result = handle_event(deps, event, &mut metrics).await;
    match &result {
        Ok(resp) if resp.replayed => metrics.count("DuplicateSuppressed"),
        Ok(resp) => {
            for r in &resp.results {
                metrics.count(r.decision.metric_name());
                if matches!(
                    r.decision,
                    Decision::Created | Decision::Updated | Decision::Resolved
                ) {
                    metrics.count("SideEffects");
                }
            }
        }
        Err(e) => {
            metrics.failed(
                e.error_type(),
                matches!(e, OpsItemError::Aws(a) if a.is_throttling()),
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
) -> Result<Response, OpsItemError> {
    let raw = event.payload.get().as_bytes();
    let classified = match classify_raw(raw) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error_type = e.error_type(), error = %e, "event rejected");
            metrics.count("Rejected");
            return Err(e.into());
        }
    };
    let ev = &classified.event;
    metrics.event_kind(ev.kind());
    let event_id = ev.id().unwrap_or_default().to_owned();
    metrics.property("eventId", event_id.clone());
    let span = tracing::info_span!("event", event_id = %event_id, detail_type = ev.detail_type(), kind = ev.kind());
    // Instrumenting (not entering) keeps the span on every line across awaits.
    // Boxed: the nested async state machine is large; keep it off the stack and the type shallow.
    Box::pin(process(deps, &classified, &event.context, event_id).instrument(span)).await
}

async fn process(
    deps: &Deps,
    classified: &Classified<'_>,
    context: &lambda_runtime::Context,
    event_id: String,
) -> Result<Response, OpsItemError> {
    let (ev, raw) = (&classified.event, classified.raw);
    let rules = deps.rules().await?;
    let actions = plan(
        classified,
        &rules,
        &deps.config.ec2_states,
        deps.config.notification_topic.as_deref(),
    );
    let trace = context.xray_trace_id.clone();

    if actions.iter().all(|a| matches!(a, Action::Ignore { .. })) {
        // Nothing to do: no idempotency record needed, only the audit trail.
        let results: Vec<Outcome> = actions
            .into_iter()
            .map(|a| match a {
                Action::Ignore { reason } => Outcome {
                    reason: Some(reason),
                    ..Outcome::new(Decision::Ignored)
                },
                _ => Outcome::new(Decision::Ignored),
            })
            .collect();
        for r in &results {
            tracing::info!(
                decision = "ignored",
                reason = r.reason.as_deref().unwrap_or_default(),
                "event ignored"
            );
        }
        audit(deps, ev, &results, trace.as_deref()).await;
        return Ok(Response {
            event_id,
            kind: ev.kind().to_owned(),
            replayed: false,
            results,
        });
    }

    let key = IdempotencyKey::new(&deps.config.function_name, &event_id, raw);
    let run = deps
        .idempotency
        .execute(&key, context.deadline(), || async {
            let mut results = Vec::with_capacity(actions.len());
            for action in &actions {
                results.push(execute(deps, ev, action).await?);
            }
            audit(deps, ev, &results, trace.as_deref()).await;
            Ok::<_, OpsItemError>(results)
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
            Ok(Response {
                event_id,
                kind: ev.kind().to_owned(),
                replayed,
                results: exec.into_inner(),
            })
        }
        Err(GuardError::Idempotency(e)) => Err(e.into()),
        Err(GuardError::Handler(e)) => Err(e),
    }
}

async fn execute(
    deps: &Deps,
    ev: &AutopilotEvent,
    action: &Action,
) -> Result<Outcome, OpsItemError> {
    let event_id = ev.id().unwrap_or_default();
    let now = ev.time().unwrap_or_else(chrono::Utc::now).to_rfc3339();
    match action {
        Action::Ignore { reason } => Ok(Outcome {
            reason: Some(reason.clone()),
            ..Outcome::new(Decision::Ignored)
        }),
        Action::Open(draft) => match deps.opscenter.create(draft).await? {
            Created::New(id) => {
                deps.ledger
                    .record_created(&id, &draft.dedup, &draft.resource_arns, event_id, &now)
                    .await?;
                notify(deps, draft, &id).await?;
                tracing::info!(decision = "created", ops_item_id = %id, dedup = %draft.dedup, "OpsItem created");
                Ok(Outcome {
                    ops_item_id: Some(id),
                    title: Some(draft.title.clone()),
                    dedup: Some(draft.dedup.clone()),
                    occurrences: Some(1),
                    ..Outcome::new(Decision::Created)
                })
            }
            Created::Exists(id) => repeat(deps, draft, &id, event_id, &now).await,
            Created::LimitExceeded => {
                tracing::error!(
                    decision = "failed",
                    error_type = "OpsItemLimitExceeded",
                    "OpsItem quota reached; not retrying"
                );
                Ok(Outcome {
                    reason: Some(
                        "OpsItemLimitExceededException: the account's OpsItem quota is reached"
                            .into(),
                    ),
                    dedup: Some(draft.dedup.clone()),
                    title: Some(draft.title.clone()),
                    ..Outcome::new(Decision::Failed)
                })
            }
        },
        Action::Resolve { dedup, note } => {
            // The ledger's index is a shortcut, OpsCenter the truth: an indexed item that is gone
            // or no longer open falls back to a search, so a stale index can neither fail the
            // event forever nor leave the open item unresolved.
            let indexed = deps.ledger.open_item_for(dedup).await?;
            let mut stale = None;
            if let Some(id) = &indexed {
                match deps.opscenter.find(id).await? {
                    Some(current) if is_active(current.status.as_ref()) => {}
                    Some(_) => stale = Some(id.clone()),
                    None => {
                        tracing::warn!(ops_item_id = %id, dedup = %dedup, "ledger names an OpsItem that OpsCenter does not have");
                        stale = Some(id.clone());
                    }
                }
            }
            let id = match (&indexed, &stale) {
                (Some(id), None) => Some(id.clone()),
                _ => deps.opscenter.find_open(dedup).await?,
            };
            let Some(id) = id else {
                if let Some(id) = stale {
                    deps.ledger.set_index(dedup, &id, "Resolved").await?;
                    return Ok(Outcome {
                        reason: Some("OpsItem is no longer open".into()),
                        ops_item_id: Some(id),
                        dedup: Some(dedup.clone()),
                        ..Outcome::new(Decision::Ignored)
                    });
                }
                return Ok(Outcome {
                    reason: Some("no open OpsItem to resolve".into()),
                    dedup: Some(dedup.clone()),
                    ..Outcome::new(Decision::Ignored)
                });
            };
            deps.opscenter.resolve(&id, note, event_id).await?;
            deps.ledger.set_index(dedup, &id, "Resolved").await?;
            tracing::info!(decision = "resolved", ops_item_id = %id, dedup = %dedup, "OpsItem resolved");
            Ok(Outcome {
                ops_item_id: Some(id),
                dedup: Some(dedup.clone()),
                ..Outcome::new(Decision::Resolved)
            })
        }
    }
}

fn is_active(status: Option<&aws_sdk_ssm::types::OpsItemStatus>) -> bool {
    matches!(
        status,
        Some(
            aws_sdk_ssm::types::OpsItemStatus::Open | aws_sdk_ssm::types::OpsItemStatus::InProgress
        )
    )
}

/// A repeat of an open problem: count it once, merge resources, refresh last-seen.
async fn repeat(
    deps: &Deps,
    draft: &Draft,
    id: &str,
    event_id: &str,
    now: &str,
) -> Result<Outcome, OpsItemError> {
    let existing = deps.opscenter.get(id).await?;
    let base = |o: Outcome| Outcome {
        ops_item_id: Some(id.to_owned()),
        title: Some(draft.title.clone()),
        dedup: Some(draft.dedup.clone()),
        ..o
    };
    if existing.value("autopilot:createdByEvent") == Some(event_id) {
        // A retry of the delivery that created the item: finish its bookkeeping, count nothing.
        // The notification too: the crashed delivery may have stopped before sending it, and a
        // lost notification is worse than a repeated one.
        deps.ledger
            .record_created(id, &draft.dedup, &draft.resource_arns, event_id, now)
            .await?;
        notify(deps, draft, id).await?;
        return Ok(base(Outcome {
            occurrences: Some(1),
            ..Outcome::new(Decision::Created)
        }));
    }
    let seed: i64 = existing
        .value("autopilot:occurrences")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut resources: Vec<String> = existing
        .value("/aws/resources")
        .and_then(|v| serde_json::from_str::<Vec<serde_json::Value>>(v).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.get("arn").and_then(|a| a.as_str()).map(str::to_owned))
        .collect();
    resources.extend(draft.resource_arns.iter().cloned());
    resources.sort();
    resources.dedup();
    let tally = deps
        .ledger
        .count_repeat(id, &draft.dedup, seed, &resources, event_id, now)
        .await?;
    let mut merged = tally.resources.clone();
    merged.truncate(crate::decide::MAX_RESOURCES);
    let mut data = std::collections::BTreeMap::new();
    data.insert(
        "autopilot:occurrences".to_owned(),
        (DataType::String, tally.occurrences.to_string()),
    );
    data.insert(
        "autopilot:lastSeen".to_owned(),
        (DataType::String, now.to_owned()),
    );
    data.insert(
        "autopilot:lastEventId".to_owned(),
        (DataType::String, event_id.to_owned()),
    );
    data.insert(
        "/aws/resources".to_owned(),
        (DataType::SearchableString, resources_json(&merged)),
    );
    deps.opscenter.update_data(id, &data).await?;
    tracing::info!(decision = "updated", ops_item_id = %id, occurrences = tally.occurrences, "OpsItem updated");
    Ok(base(Outcome {
        occurrences: Some(tally.occurrences),
        ..Outcome::new(Decision::Updated)
    }))
}

async fn notify(deps: &Deps, draft: &Draft, id: &str) -> Result<(), OpsItemError> {
    let Some(topic) = &draft.topic else {
        return Ok(());
    };
    let subject = format!("[ssm-autopilot] {id}: {}", draft.title);
    let message = serde_json::json!({
        "opsItemId": id, "title": draft.title, "severity": draft.severity,
        "category": draft.category, "dedup": draft.dedup, "resources": draft.resource_arns,
    });
    autopilot_shared::notify::publish(&deps.sns, topic, &subject, &message)
        .await
        .map_err(OpsItemError::Aws)?;
    Ok(())
}

async fn audit(deps: &Deps, ev: &AutopilotEvent, results: &[Outcome], trace: Option<&str>) {
    deps.audit
        .emit_decisions("OpsItem Decision", ev, results, trace)
        .await;
}
