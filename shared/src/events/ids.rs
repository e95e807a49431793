//! Validation of the resource identifiers that flow from events into API calls.
//! Anything that does not look exactly like an AWS id is rejected before it can reach
//! a runbook parameter or a command.

/// `i-` + 8 or 17 lowercase hex digits (EC2), or `mi-` + 17 hex digits (hybrid node).
pub fn is_managed_node_id(s: &str) -> bool {
    if let Some(hex) = s.strip_prefix("mi-") {
        return hex.len() == 17 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    is_ec2_instance_id(s)
}

/// `i-` + 8 or 17 hex digits.
pub fn is_ec2_instance_id(s: &str) -> bool {
    match s.strip_prefix("i-") {
        Some(hex) => {
            (hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// 12 decimal digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A region name such as `us-east-1` or `us-gov-west-1`.
pub fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.split('-').count() >= 3
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// GuardDuty finding types: `Backdoor:EC2/C&CActivity.B`, `CryptoCurrency:EC2/BitcoinTool.B!DNS`.
pub fn is_finding_type(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":/._-&!".contains(&b))
}

/// A conservative "safe token" check for free-form identifiers (alarm names, finding
/// types) before they are used as runbook parameters: no shell or template metacharacters.
pub fn is_safe_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 1024
        && !s.chars().any(|c| {
            c.is_control()
                || matches!(
                    c,
                    ';' | '&' | '|' | '`' | '$' | '<' | '>' | '\\' | '"' | '\'' | '{' | '}' | '\n'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        assert!(is_managed_node_id("i-0abcdef1234567890"));
        assert!(is_managed_node_id("i-1234abcd"));
        assert!(is_managed_node_id("mi-0123456789abcdef0"));
        assert!(!is_managed_node_id("mi-0123"));
        assert!(!is_managed_node_id("i-123; rm -rf /"));
        assert!(!is_managed_node_id("i-0abcdef123456789g"));
        assert!(!is_managed_node_id(""));
        assert!(!is_ec2_instance_id("mi-0123456789abcdef0"));
    }

    #[test]
    fn other_ids() {
        assert!(is_account_id("123456789012"));
        assert!(!is_account_id("12345678901a"));
        assert!(is_region("us-east-1"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("us_east_1"));
        assert!(is_finding_type("Backdoor:EC2/C&CActivity.B"));
        assert!(is_finding_type("CryptoCurrency:EC2/BitcoinTool.B!DNS"));
        assert!(!is_finding_type("Recon:EC2/$(id)"));
        assert!(is_safe_token("Recon:EC2/PortProbeUnprotectedPort"));
        assert!(!is_safe_token("a$(reboot)"));
        assert!(!is_safe_token("x; rm -rf /"));
    }
}
