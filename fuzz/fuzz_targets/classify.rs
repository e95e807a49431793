//! Raw bytes → the event classifier: never panics, and a rejection is a typed error whose
//! text is bounded and printable whatever the input (it reaches logs and error responses).
#![no_main]

use autopilot_shared::events::{classify, classify_raw};
use libfuzzer_sys::fuzz_target;

/// Source and detail-type are clipped to 128 chars each; Debug escaping can grow a char to
/// `\u{10ffff}`, so this is the worst case with room to spare.
const MAX_ERROR_CHARS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        Ok(event) => {
            // Accessors the handlers call on every event must hold for any accepted input.
            let _ = (event.kind(), event.id(), event.time(), event.resources());
            let _ = (event.source(), event.detail_type(), event.account_region());
            // The detail location handed to rule matching is the envelope's `detail`.
            // (Values out of f64 range are skipped by the classifier but not by `Value`.)
            if let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(data) {
                let located = classify_raw(data).map(|c| c.detail.get().to_owned());
                let got = located
                    .ok()
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok());
                assert_eq!(got.as_ref(), envelope.get("detail"));
            }
        }
        Err(err) => {
            assert!(!err.error_type().is_empty());
            let text = err.to_string();
            assert!(
                text.chars().count() <= MAX_ERROR_CHARS,
                "{} chars",
                text.len()
            );
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
    }
});
