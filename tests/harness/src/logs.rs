//! Reading what a function printed: its CloudWatch Embedded Metric Format documents and its
//! JSON log lines, as the Lambda log pipeline would see them.

use std::collections::BTreeMap;

use serde_json::Value;

/// The EMF documents among `lines` (JSON objects with a `_aws.CloudWatchMetrics` directive).
pub fn emf_docs(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["_aws"]["CloudWatchMetrics"].is_array())
        .collect()
}

/// Every metric declared in the EMF documents, summed by name over all documents and
/// dimension sets.
pub fn emf_totals(lines: &[String]) -> BTreeMap<String, f64> {
    sum(emf_docs(lines))
}

/// [`emf_totals`] of one invocation (the documents carrying its `requestId`).
pub fn emf_totals_for(lines: &[String], request_id: &str) -> BTreeMap<String, f64> {
    sum(emf_docs(lines)
        .into_iter()
        .filter(|d| d["requestId"].as_str() == Some(request_id)))
}

fn sum(docs: impl IntoIterator<Item = Value>) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for doc in docs {
        for directive in doc["_aws"]["CloudWatchMetrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for m in directive["Metrics"].as_array().into_iter().flatten() {
                if let Some(name) = m["Name"].as_str() {
                    *totals.entry(name.to_owned()).or_insert(0.0) +=
                        doc[name].as_f64().unwrap_or(0.0);
                }
            }
        }
    }
    totals
}

/// The value of a string field named `key` on a log line: top level (EMF properties), the
/// event's `fields`, the current `span`, or any enclosing span in `spans`.
pub fn field<'a>(doc: &'a Value, key: &str) -> Option<&'a str> {
    let scopes = [doc, &doc["fields"], &doc["span"]];
    scopes
        .into_iter()
        .chain(doc["spans"].as_array().into_iter().flatten())
        .find_map(|s| s.get(key).and_then(Value::as_str))
        .filter(|v| !v.is_empty())
}

/// Lines that are not JSON, or that do not carry, as fields, the request id and the event id
/// of one and the same invocation (`(request id, event id)` pairs). Empty means correlated.
pub fn uncorrelated(lines: &[String], invocations: &[(String, String)]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| {
            let Ok(doc) = serde_json::from_str::<Value>(line) else {
                return true;
            };
            let request = field(&doc, "requestId");
            let event = field(&doc, "event_id").or_else(|| field(&doc, "eventId"));
            !invocations
                .iter()
                .any(|(r, e)| request == Some(r.as_str()) && event == Some(e.as_str()))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sums_emf_and_checks_correlation() {
        let lines = vec![
            r#"{"_aws":{"CloudWatchMetrics":[{"Metrics":[{"Name":"Created"}]}]},"Created":1.0,"requestId":"r1","eventId":"e1"}"#.to_owned(),
            r#"{"fields":{"message":"x"},"span":{"event_id":"e1"},"spans":[{"requestId":"r1"},{"event_id":"e1"}]}"#.to_owned(),
            r#"{"fields":{"message":"y"},"spans":[{"requestId":"r2"}],"span":{"event_id":"e1"}}"#.to_owned(),
            "plain text".to_owned(),
        ];
        assert_eq!(emf_totals(&lines).get("Created"), Some(&1.0));
        assert_eq!(emf_totals_for(&lines, "r1").get("Created"), Some(&1.0));
        assert!(emf_totals_for(&lines, "r2").is_empty());
        let bad = uncorrelated(&lines, &[("r1".into(), "e1".into())]);
        assert_eq!(bad, lines[2..].to_vec());
    }
}
