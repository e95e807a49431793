//! Every timestamp format AWS events use goes through one lenient parser: it never panics,
//! and whatever it accepts (years 1–9999, the range RFC 3339 can express) survives a round
//! trip through RFC 3339.
#![no_main]

use autopilot_shared::events::parse_aws_time;
use chrono::Datelike;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Some(t) = parse_aws_time(s)
        && (1..=9999).contains(&t.year())
    {
        assert_eq!(parse_aws_time(&t.to_rfc3339()), Some(t), "{s:?}");
    }
});
