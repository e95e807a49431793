//! Parameter Store documents (opsitem-creator rules, incident-response plans,
//! compliance-remediator policy), JSON or YAML: parse + validate never panics, and a rejected
//! document's error never quotes the document (it may be a SecureString).
#![no_main]

use autopilot_shared::params::parse_document;
use libfuzzer_sys::fuzz_target;

fn check<T, E: std::fmt::Display>(text: &str, validate: impl Fn(&T) -> Result<(), E>)
where
    T: serde::de::DeserializeOwned,
{
    match parse_document::<T>("/autopilot/fuzz", text) {
        Ok(doc) => {
            let _ = validate(&doc).map_err(|e| e.to_string());
        }
        Err(err) => {
            let msg = err.to_string();
            // Only a location is reported; long inputs must not be echoed.
            assert!(msg.len() < 512, "{} bytes", msg.len());
        }
    }
}

fuzz_target!(|text: &str| {
    check(text, opsitem_creator::rules::RuleSet::validate);
    check(text, incident_response::plans::PlanSet::validate);
    check(text, compliance_remediator::policy::Policy::validate);
});
