//! Deserializers for the quirks of real AWS events: numbers sent as strings, and the
//! several timestamp formats AWS services use.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, de};

/// A number that AWS may encode as a JSON number or a JSON string (`"page": "1"`).
pub fn f64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr<'a> {
        Num(f64),
        #[serde(borrow)]
        Str(std::borrow::Cow<'a, str>),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| de::Error::custom(format!("expected a number, got {s:?}"))),
    }
}

/// Optional variant of [`f64_or_string`]; `null` and absent both give `None`.
pub fn opt_f64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "f64_or_string")] f64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// Optional whole number encoded as a number or a string.
pub fn opt_u64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match opt_f64_or_string(d)? {
        None => Ok(None),
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= u64::MAX as f64 => Ok(Some(n as u64)),
        Some(n) => Err(de::Error::custom(format!(
            "expected a whole number, got {n}"
        ))),
    }
}

/// Parses the timestamp formats found in AWS events:
/// RFC 3339 (`2026-03-14T13:10:02Z`), CloudWatch's `+0000` offsets
/// (`2026-03-14T13:10:02.985+0000`), RFC 1123 used by AWS Health
/// (`Wed, 14 Jan 2026 10:00:00 GMT`) and SSM Automation's `Mar 14, 2026 1:10:02 PM` (UTC).
pub fn parse_aws_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.with_timezone(&Utc));
    }
    // AWS Health samples carry weekdays that do not match the date; the date wins.
    if let Some((_, rest)) = s.split_once(", ")
        && let Ok(t) =
            NaiveDateTime::parse_from_str(rest.trim_end_matches(" GMT"), "%d %b %Y %H:%M:%S")
    {
        return Some(t.and_utc());
    }
    for fmt in ["%b %d, %Y %I:%M:%S %p", "%b %e, %Y %l:%M:%S %p"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_every_aws_time_format() {
        let want = Utc.with_ymd_and_hms(2026, 3, 14, 13, 10, 2).single();
        assert_eq!(parse_aws_time("2026-03-14T13:10:02Z"), want);
        assert_eq!(parse_aws_time("2026-03-14T13:10:02.000+0000"), want);
        assert_eq!(parse_aws_time("Sat, 14 Mar 2026 13:10:02 GMT"), want);
        assert_eq!(parse_aws_time("Mar 14, 2026 1:10:02 PM"), want);
        assert_eq!(
            parse_aws_time("Thu, 14 Mar 2026 13:10:02 GMT"),
            want,
            "weekday mismatch"
        );
        assert!(parse_aws_time("Sat, 4 Mar 2026 13:10:02 GMT").is_some());
        assert_eq!(parse_aws_time("yesterday"), None);
        assert_eq!(parse_aws_time(""), None);
    }

    #[test]
    fn numbers_may_be_strings() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "opt_u64_or_string")]
            n: Option<u64>,
        }
        let a: T = serde_json::from_str(r#"{"n":"3"}"#).unwrap();
        let b: T = serde_json::from_str(r#"{"n":3}"#).unwrap();
        let c: T = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!((a.n, b.n, c.n), (Some(3), Some(3), None));
        assert!(serde_json::from_str::<T>(r#"{"n":"three"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"n":-1}"#).is_err());
    }
}
