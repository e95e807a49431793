//! The id validators guard every value that flows from an event into an API call or a runbook
//! parameter: they never panic, and what they accept is consistent across them.
#![no_main]

use autopilot_shared::events::ids;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let ec2 = ids::is_ec2_instance_id(s);
    let node = ids::is_managed_node_id(s);
    if ec2 {
        assert!(node, "an EC2 id is a managed node id: {s:?}");
    }
    if node {
        assert!(ids::is_safe_token(s), "{s:?}");
        assert!(
            s.is_ascii() && (s.len() == 10 || s.len() == 19 || s.len() == 20),
            "{s:?}"
        );
    }
    if ids::is_account_id(s) {
        assert!(s.len() == 12 && ids::is_safe_token(s), "{s:?}");
    }
    if ids::is_region(s) {
        assert!(ids::is_safe_token(s) && s.len() <= 32, "{s:?}");
    }
    if ids::is_finding_type(s) {
        // Finding types may hold `&` and `!`, never quotes, spaces or `$`.
        assert!(!s.contains(['$', '`', '"', '\'', ' ', ';', '|']), "{s:?}");
    }
    if ids::is_safe_token(s) {
        assert!(!s.contains(['$', '`', ';', '|', '\n']), "{s:?}");
    }
});
