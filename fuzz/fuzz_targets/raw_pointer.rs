//! Pointer lookups in raw JSON (rule field conditions) agree with `serde_json::Value::pointer`
//! on any document and pointer, and never panic. Input: a pointer line (starting with `/`)
//! then the document, or just a document (looked up at `/detail`).
#![no_main]

use autopilot_shared::raw_pointer;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|input: &str| {
    let (pointer, doc) = match input.split_once('\n') {
        Some((p, d)) if p.is_empty() || p.starts_with('/') => (p, d),
        _ => ("/detail", input),
    };
    let Ok(raw) = RawValue::from_string(doc.to_owned()) else {
        return;
    };
    let got = raw_pointer::lookup(&raw, pointer);
    let Ok(value) = serde_json::from_str::<serde_json::Value>(doc) else {
        return;
    };
    assert_eq!(
        got.as_ref(),
        value.pointer(pointer),
        "{pointer:?} in {doc:?}"
    );
});
