//! CloudWatch metrics in Embedded Metric Format: one JSON line on stdout per flush, which
//! the Lambda log pipeline turns into metrics with no API call and no added latency.
//!
//! Every function uses the same namespace and dimension names, so one dashboard shows all.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "SsmAutopilot";
/// Dimension names shared by every function.
pub const DIM_FUNCTION: &str = "Function";
pub const DIM_EVENT_KIND: &str = "EventKind";
/// Throttling responses the SDK retried during the invocation.
pub const THROTTLES_RETRIED: &str = "ThrottlesRetried";
/// S3 objects written during the invocation (inventory layout, snapshots, reports).
pub const OBJECTS_WRITTEN: &str = "ObjectsWritten";

static WARM: AtomicBool = AtomicBool::new(false);
/// Throttling responses seen by the SDK clients since the last flush (see
/// [`crate::clients::ThrottleObserver`]). Process-wide is per invocation: a sandbox runs one
/// invocation at a time, and throttles during init land in the first invocation.
static THROTTLES: AtomicU64 = AtomicU64::new(0);

/// S3 objects written since the last flush.
static OBJECTS: AtomicU64 = AtomicU64::new(0);

pub fn record_object_written() {
    OBJECTS.fetch_add(1, Ordering::Relaxed);
}

/// Counts one throttling response. The SDK retries it while attempts remain; the last one of
/// an exhausted call also surfaces as the function's `Throttled` error metric.
pub fn record_throttle() {
    THROTTLES.fetch_add(1, Ordering::Relaxed);
}

/// Figures of one invocation, flushed once at its end.
#[derive(Debug)]
pub struct Metrics {
    function: String,
    event_kind: Option<String>,
    values: BTreeMap<String, f64>,
    properties: Map<String, Value>,
}

impl Metrics {
    /// Starts an invocation's metrics; the first one in a process also counts a cold start.
    pub fn start(function: &str) -> Self {
        let mut m = Self {
            function: function.to_owned(),
            event_kind: None,
            values: BTreeMap::new(),
            properties: Map::new(),
        };
        if !WARM.swap(true, Ordering::Relaxed) {
            m.add("ColdStart", 1.0);
        }
        m
    }

    /// Records the event's kind: adds `EventsReceived` under the (Function, EventKind) dimensions.
    pub fn event_kind(&mut self, kind: &str) {
        self.event_kind = Some(kind.to_owned());
    }

    pub fn add(&mut self, name: &str, value: f64) {
        *self.values.entry(name.to_owned()).or_insert(0.0) += value;
    }

    pub fn count(&mut self, name: &str) {
        self.add(name, 1.0);
    }

    /// A failed invocation: `Errors`, its error type as a property, and `Throttled` when AWS
    /// throttled it (the figure operators alarm on to raise quotas or spread schedules).
    pub fn failed(&mut self, error_type: &str, throttled: bool) {
        self.count("Errors");
        self.property("errorType", error_type);
        if throttled {
            self.count("Throttled");
        }
    }

    /// A searchable, non-metric field (e.g. the event id) carried on the EMF line.
    pub fn property(&mut self, key: &str, value: impl Into<Value>) {
        self.properties.insert(key.to_owned(), value.into());
    }

    /// The EMF document(s) for what was recorded; empty when nothing was.
    pub fn render(&self, timestamp_ms: i64) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.values.is_empty() {
            let defs: Vec<Value> = self
                .values
                .keys()
                .map(|k| json!({"Name": k, "Unit": "Count"}))
                .collect();
            let mut doc = self.properties.clone();
            doc.insert(
                "_aws".into(),
                json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [[DIM_FUNCTION]], "Metrics": defs}]}),
            );
            doc.insert(DIM_FUNCTION.into(), self.function.clone().into());
            for (k, v) in &self.values {
                doc.insert(k.clone(), json!(v));
            }
            lines.push(Value::Object(doc).to_string());
        }
        if let Some(kind) = &self.event_kind {
            let mut doc = self.properties.clone();
            doc.insert(
                "_aws".into(),
                json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [[DIM_FUNCTION, DIM_EVENT_KIND]], "Metrics": [{"Name": "EventsReceived", "Unit": "Count"}]}]}),
            );
            doc.insert(DIM_FUNCTION.into(), self.function.clone().into());
            doc.insert(DIM_EVENT_KIND.into(), kind.clone().into());
            doc.insert("EventsReceived".into(), json!(1.0));
            lines.push(Value::Object(doc).to_string());
        }
        lines
    }

    /// Writes the EMF lines to stdout, with the throttles the SDK retried and the objects
    /// written since the last flush.
    pub fn flush(mut self) {
        use std::io::Write;
        let throttles = THROTTLES.swap(0, Ordering::Relaxed);
        if throttles > 0 {
            self.add(THROTTLES_RETRIED, throttles as f64);
        }
        let objects = OBJECTS.swap(0, Ordering::Relaxed);
        if objects > 0 {
            self.add(OBJECTS_WRITTEN, objects as f64);
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = std::io::stdout().lock();
        for line in self.render(now) {
            let _ = writeln!(out, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_emf() {
        let mut m = Metrics {
            function: "f".into(),
            event_kind: Some("alarm".into()),
            values: BTreeMap::new(),
            properties: Map::new(),
        };
        m.count("Created");
        m.count("Created");
        m.property("eventId", "e-1");
        let lines = m.render(1_700_000_000_000);
        assert_eq!(lines.len(), 2);
        let doc: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(doc["Created"], 2.0);
        assert_eq!(doc["Function"], "f");
        assert_eq!(doc["eventId"], "e-1");
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Metrics"][0]["Name"], "Created");
        // Every dimension named in the directive is present on the document.
        for dim in directive["Dimensions"][0].as_array().unwrap() {
            assert!(doc.get(dim.as_str().unwrap()).is_some());
        }
        let kind: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(kind["EventKind"], "alarm");
        assert_eq!(kind["EventsReceived"], 1.0);
    }

    #[test]
    fn a_failure_counts_errors_and_throttles_with_its_type() {
        let mut m = Metrics {
            function: "f".into(),
            event_kind: None,
            values: BTreeMap::new(),
            properties: Map::new(),
        };
        m.failed("AwsCallFailed", false);
        m.failed("AwsThrottled", true);
        let doc: Value = serde_json::from_str(&m.render(0)[0]).unwrap();
        assert_eq!(doc["Errors"], 2.0);
        assert_eq!(doc["Throttled"], 1.0);
        assert_eq!(doc["errorType"], "AwsThrottled");
    }

    #[test]
    fn nothing_recorded_renders_nothing() {
        let m = Metrics {
            function: "f".into(),
            event_kind: None,
            values: BTreeMap::new(),
            properties: Map::new(),
        };
        assert!(m.render(0).is_empty());
    }
}
