//! Typed configuration read from the environment the template gives each function.
//!
//! Functions build their `Config` through [`Env`], which takes any lookup function so that
//! tests never have to mutate the process environment.

use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} has an invalid value: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl ConfigError {
    pub fn error_type(&self) -> &'static str {
        "ConfigurationError"
    }
}

/// A source of configuration values.
pub struct Env<F: Fn(&str) -> Option<String>> {
    lookup: F,
}

/// The process environment.
pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env::new(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    pub fn optional(&self, name: &'static str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    pub fn parsed<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
        }
    }

    /// Accepts true/false, yes/no, 1/0 in any case.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "yes" | "1" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "no" | "0" | "off") => Ok(false),
            Some(v) => Err(ConfigError::Invalid {
                name,
                reason: format!("{v:?} is not a boolean"),
            }),
        }
    }

    pub fn seconds(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.parsed(name, default.as_secs())?))
    }

    /// Comma-separated list, blanks dropped.
    pub fn list(&self, name: &'static str) -> Vec<String> {
        self.optional(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::new(move |k| map.get(k).cloned())
    }

    #[test]
    fn typed_values_and_errors() {
        let e = env(&[
            ("A", "x"),
            ("N", "12"),
            ("B", "Yes"),
            ("BAD", "maybe"),
            ("L", "a, b,,c"),
            ("E", " "),
        ]);
        assert_eq!(e.required("A").unwrap(), "x");
        assert!(matches!(e.required("E"), Err(ConfigError::Missing("E"))));
        assert!(matches!(e.required("Z"), Err(ConfigError::Missing("Z"))));
        assert_eq!(e.parsed("N", 0u32).unwrap(), 12);
        assert_eq!(e.parsed("Z", 7u32).unwrap(), 7);
        assert!(matches!(
            e.parsed::<u32>("A", 0),
            Err(ConfigError::Invalid { name: "A", .. })
        ));
        assert!(e.flag("B", false).unwrap());
        assert!(e.flag("BAD", false).is_err());
        assert_eq!(e.list("L"), vec!["a", "b", "c"]);
        assert_eq!(
            e.seconds("N", Duration::ZERO).unwrap(),
            Duration::from_secs(12)
        );
    }
}
