//! Cached Parameter Store reader.
//!
//! Rules, response plans and policies live in Parameter Store so that operators change them
//! without a redeploy. Values are cached per cold start for a TTL, SecureString values are
//! decrypted, and no value is ever logged or put in an error message.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::types::ParameterType;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::document::{DocumentError, parse_document};

/// A parameter value. `Debug` and `Display` never show a SecureString's value.
#[derive(Clone)]
pub struct ParamValue {
    value: Arc<str>,
    secure: bool,
    version: i64,
}

impl ParamValue {
    /// The plain value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.value
    }
    pub fn is_secure(&self) -> bool {
        self.secure
    }
    pub fn version(&self) -> i64 {
        self.version
    }
}

impl fmt::Debug for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParamValue")
            .field(
                "value",
                &if self.secure {
                    "<redacted>"
                } else {
                    &*self.value
                },
            )
            .field("secure", &self.secure)
            .field("version", &self.version)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("parameter {0} does not exist")]
    NotFound(String),
    #[error("parameter {name} could not be read")]
    Read {
        name: String,
        #[source]
        source: Box<aws_sdk_ssm::error::SdkError<GetParameterError>>,
    },
    #[error("parameter {name} is not a valid document ({location})")]
    Invalid { name: String, location: String },
}

impl ParamError {
    pub fn retryable(&self) -> bool {
        match self {
            ParamError::Read { source, .. } => crate::error::sdk_error_is_retryable(source),
            _ => false,
        }
    }
}

struct Cached {
    fetched: Instant,
    value: ParamValue,
}

/// Parameter Store reader with a per-name TTL cache.
pub struct ParameterCache {
    client: aws_sdk_ssm::Client,
    ttl: Duration,
    entries: Mutex<HashMap<String, Cached>>,
}

impl ParameterCache {
    pub fn new(client: aws_sdk_ssm::Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the value, from cache while it is younger than the TTL.
    pub async fn get(&self, name: &str) -> Result<ParamValue, ParamError> {
        // The lock is held across the fetch so concurrent callers share one request.
        let mut entries = self.entries.lock().await;
        if let Some(c) = entries.get(name)
            && c.fetched.elapsed() < self.ttl
        {
            return Ok(c.value.clone());
        }
        let out = self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await;
        let param = match out {
            Ok(o) => o.parameter,
            Err(e)
                if e.as_service_error()
                    .is_some_and(GetParameterError::is_parameter_not_found) =>
            {
                return Err(ParamError::NotFound(name.to_owned()));
            }
            Err(e) => {
                return Err(ParamError::Read {
                    name: name.to_owned(),
                    source: Box::new(e),
                });
            }
        };
        let param = param.ok_or_else(|| ParamError::NotFound(name.to_owned()))?;
        let value = ParamValue {
            secure: param.r#type == Some(ParameterType::SecureString),
            version: param.version,
            value: Arc::from(param.value.unwrap_or_default()),
        };
        tracing::debug!(
            parameter = name,
            version = value.version,
            "parameter loaded"
        );
        entries.insert(
            name.to_owned(),
            Cached {
                fetched: Instant::now(),
                value: value.clone(),
            },
        );
        Ok(value)
    }

    /// Like [`get`](Self::get) but `None` when the parameter does not exist.
    pub async fn get_optional(&self, name: &str) -> Result<Option<ParamValue>, ParamError> {
        match self.get(name).await {
            Ok(v) => Ok(Some(v)),
            Err(ParamError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a JSON or YAML document into `T`; `None` when the parameter does not exist.
    pub async fn get_document<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, ParamError> {
        match self.get_optional(name).await? {
            None => Ok(None),
            Some(v) => Ok(Some(parse_document(name, v.expose())?)),
        }
    }
}

impl From<DocumentError> for ParamError {
    fn from(e: DocumentError) -> Self {
        ParamError::Invalid {
            name: e.name,
            location: e.location,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_values_are_redacted_in_debug() {
        let v = ParamValue {
            value: Arc::from("hunter2"),
            secure: true,
            version: 1,
        };
        assert!(!format!("{v:?}").contains("hunter2"));
        assert_eq!(v.expose(), "hunter2");
    }
}
