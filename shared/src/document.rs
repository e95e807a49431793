//! JSON or YAML configuration documents (rules, response plans, remediation policy).
//!
//! Kept apart from the Parameter Store reader so the document parsers build, and are fuzzed,
//! without the AWS SDKs.

use serde::de::DeserializeOwned;

/// A document that does not parse. Only the parameter name and a location are kept: the
/// value may be a SecureString, so no part of it may reach an error message or a log line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parameter {name} is not a valid document ({location})")]
pub struct DocumentError {
    pub name: String,
    pub location: String,
}

/// Parses JSON (text starting with `{` or `[`) or YAML.
pub fn parse_document<T: DeserializeOwned>(name: &str, text: &str) -> Result<T, DocumentError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(text).map_err(|e| DocumentError {
            name: name.to_owned(),
            location: format!(
                "line {}, column {}: {:?}",
                e.line(),
                e.column(),
                e.classify()
            ),
        })
    } else {
        serde_norway::from_str(text).map_err(|e| DocumentError {
            name: name.to_owned(),
            location: e
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column()))
                .unwrap_or_else(|| "unknown location".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Doc {
        a: u32,
    }

    #[test]
    fn json_and_yaml_documents() {
        assert_eq!(
            parse_document::<Doc>("p", r#"{"a": 1}"#).unwrap(),
            Doc { a: 1 }
        );
        assert_eq!(parse_document::<Doc>("p", "a: 2\n").unwrap(), Doc { a: 2 });
        let err = parse_document::<Doc>("p", r#"{"a": "s3cr3t-value"}"#).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let err = parse_document::<Doc>("p", "a: s3cr3t-value\n").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
