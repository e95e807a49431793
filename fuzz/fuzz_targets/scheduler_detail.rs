//! EventBridge Scheduler sends `detail` as a JSON document inside a string: the input is that
//! string, wrapped in a real Scheduler envelope, so the fuzzer explores the inner parse.
#![no_main]

use autopilot_shared::events::classify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|detail: &str| {
    let envelope = serde_json::json!({
        "version": "0",
        "id": "5f0e2a44-0c3d-4b8e-9d7e-1a2b3c4d5e6f",
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "123456789012",
        "time": "2026-03-14T13:10:02Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    });
    let Ok(raw) = serde_json::to_vec(&envelope) else {
        return;
    };
    match classify(&raw) {
        Ok(event) => assert_eq!(event.kind(), "scheduled"),
        Err(err) => {
            let text = err.to_string();
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
    }
});
