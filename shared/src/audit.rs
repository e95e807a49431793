//! Audit events: every decision a function takes is published to a custom EventBridge bus.
//!
//! PutEvents takes 1–10 entries and reports failures per entry; only the failed entries are
//! sent again. Entries are size-checked first: one that would exceed the event size limit
//! is replaced by a compact, visibly truncated record instead of failing the whole batch.

use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::Serialize;

/// EventBridge's limit per event and per PutEvents request.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// PutEvents accepts at most this many entries per call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Per-entry error codes worth sending again.
const RETRYABLE_ENTRY_CODES: [&str; 3] = [
    "InternalFailure",
    "ThrottlingException",
    "InternalException",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub detail_type: String,
    pub detail: serde_json::Value,
    pub resources: Vec<String>,
}

impl AuditEvent {
    pub fn new(detail_type: impl Into<String>, detail: serde_json::Value) -> Self {
        Self {
            detail_type: detail_type.into(),
            detail,
            resources: Vec::new(),
        }
    }

    pub fn with_resources(mut self, resources: impl IntoIterator<Item = String>) -> Self {
        self.resources.extend(resources);
        self
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EmitReport {
    pub sent: usize,
    pub failed: usize,
    pub truncated: usize,
    pub calls: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("PutEvents failed")]
    Call(
        #[source]
        Box<
            aws_sdk_eventbridge::error::SdkError<
                aws_sdk_eventbridge::operation::put_events::PutEventsError,
            >,
        >,
    ),
    #[error("{failed} audit event(s) could not be delivered")]
    Undelivered { failed: usize, report: EmitReport },
}

impl AuditError {
    pub fn error_type(&self) -> &'static str {
        "AuditDeliveryFailed"
    }
}

pub struct AuditEmitter {
    client: aws_sdk_eventbridge::Client,
    bus: String,
    source: String,
    rounds: u32,
}

struct Prepared {
    detail_type: String,
    detail: String,
    resources: Vec<String>,
    size: usize,
}

impl AuditEmitter {
    /// `source` is e.g. `ssm-autopilot.opsitem-creator`.
    pub fn new(
        client: aws_sdk_eventbridge::Client,
        bus: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            client,
            bus: bus.into(),
            source: source.into(),
            rounds: 3,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// AWS's size calculation: source + detail-type + detail + resources (+14 for Time).
    fn prepare(&self, e: &AuditEvent, report: &mut EmitReport) -> Prepared {
        let mut detail = serde_json::to_string(&e.detail).unwrap_or_else(|_| "{}".to_owned());
        let fixed = self.source.len()
            + e.detail_type.len()
            + e.resources.iter().map(String::len).sum::<usize>()
            + 14;
        if fixed + detail.len() > MAX_EVENT_BYTES {
            report.truncated += 1;
            let decision = e
                .detail
                .get("decision")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            detail = serde_json::json!({"truncated": true, "originalBytes": detail.len(), "decision": decision})
                .to_string();
        }
        Prepared {
            size: fixed + detail.len(),
            detail_type: e.detail_type.clone(),
            detail,
            resources: e.resources.clone(),
        }
    }

    /// Publishes one decision event per result, each tagged with the triggering event's id,
    /// kind and detail-type. Never fails the invocation: the decision is already made and
    /// executed, so a delivery failure is logged and left for the audit bus alarms.
    pub async fn emit_decisions<T: Serialize>(
        &self,
        detail_type: &str,
        event: &crate::events::AutopilotEvent,
        results: &[T],
        trace_header: Option<&str>,
    ) {
        let events: Vec<AuditEvent> = results
            .iter()
            .map(|r| {
                let mut detail = serde_json::to_value(r).unwrap_or_default();
                if let Some(m) = detail.as_object_mut() {
                    m.insert("eventId".into(), event.id().unwrap_or_default().into());
                    m.insert("eventKind".into(), event.kind().into());
                    m.insert("detailType".into(), event.detail_type().into());
                }
                AuditEvent::new(detail_type, detail)
            })
            .collect();
        if let Err(e) = self.emit(&events, trace_header).await {
            tracing::warn!(error = %e, error_type = e.error_type(), "audit events not delivered");
        }
    }

    /// Publishes `events`; `trace_header` (X-Ray) is attached to every entry when given.
    pub async fn emit(
        &self,
        events: &[AuditEvent],
        trace_header: Option<&str>,
    ) -> Result<EmitReport, AuditError> {
        let mut report = EmitReport::default();
        let mut pending: Vec<Prepared> = events
            .iter()
            .map(|e| self.prepare(e, &mut report))
            .collect();
        for round in 0..self.rounds {
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
            let last_round = round + 1 == self.rounds;
            let mut again = Vec::new();
            for batch in into_batches(std::mem::take(&mut pending)) {
                let entries: Vec<PutEventsRequestEntry> = batch
                    .iter()
                    .map(|p| {
                        PutEventsRequestEntry::builder()
                            .event_bus_name(&self.bus)
                            .source(&self.source)
                            .detail_type(&p.detail_type)
                            .detail(&p.detail)
                            .set_resources((!p.resources.is_empty()).then(|| p.resources.clone()))
                            .set_trace_header(trace_header.map(str::to_owned))
                            .build()
                    })
                    .collect();
                report.calls += 1;
                let out = match self
                    .client
                    .put_events()
                    .set_entries(Some(entries))
                    .send()
                    .await
                {
                    Ok(out) => out,
                    // A throttled or failed call loses the whole batch, not one entry: retry it
                    // in the next round like a throttled entry.
                    Err(e) if !last_round && crate::error::sdk_error_is_retryable(&e) => {
                        again.extend(batch);
                        continue;
                    }
                    Err(e) => return Err(AuditError::Call(Box::new(e))),
                };
                for (i, p) in batch.into_iter().enumerate() {
                    match out.entries().get(i).and_then(|r| r.error_code()) {
                        None => report.sent += 1,
                        Some(c) if RETRYABLE_ENTRY_CODES.contains(&c) && !last_round => {
                            again.push(p)
                        }
                        Some(c) => {
                            tracing::warn!(error_code = c, detail_type = %p.detail_type, "audit event rejected");
                            report.failed += 1;
                        }
                    }
                }
            }
            pending = again;
        }
        if report.failed > 0 {
            return Err(AuditError::Undelivered {
                failed: report.failed,
                report,
            });
        }
        Ok(report)
    }
}

/// Groups entries into PutEvents calls: at most 10 entries and 1 MB each.
fn into_batches(items: Vec<Prepared>) -> Vec<Vec<Prepared>> {
    let mut out = Vec::new();
    let mut cur: Vec<Prepared> = Vec::new();
    let mut bytes = 0;
    for p in items {
        if !cur.is_empty() && (cur.len() == MAX_BATCH_ENTRIES || bytes + p.size > MAX_EVENT_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += p.size;
        cur.push(p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(size: usize) -> Prepared {
        Prepared {
            detail_type: "t".into(),
            detail: String::new(),
            resources: vec![],
            size,
        }
    }

    #[test]
    fn batches_respect_count_and_size() {
        let sizes: Vec<usize> = into_batches((0..25).map(|_| prepared(10)).collect())
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![10, 10, 5]);
        let big = into_batches(vec![prepared(600_000), prepared(600_000), prepared(10)]);
        assert_eq!(big.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 2]);
    }
}
