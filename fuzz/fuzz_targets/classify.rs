//! Raw bytes → the event classifier: never panics, and a rejection is a typed error whose
//! text is bounded and printable whatever the input (it reaches logs and error responses).
#![no_main]

use autopilot_shared::events::classify;
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
