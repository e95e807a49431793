//! Where inventory is collected from: this account and region, or a list of (role, region)
//! targets. Pure: parsing and naming only; the role is assumed in [`crate::handler`].

use serde::{Deserialize, Serialize};

/// One (account, region) to collect, and the role to assume there (`None`: own credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    pub account_id: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("TARGETS is not a JSON list of {{\"roleArn\", \"region\"}}: {0}")]
    NotJson(String),
    #[error("{0} is not an IAM role ARN (arn:<partition>:iam::<account>:role/<name>)")]
    BadRoleArn(String),
    #[error("{0} is not an account id (12 digits)")]
    BadAccount(String),
    #[error("target {0} is listed twice")]
    Duplicate(String),
}

/// The account id inside a role ARN.
pub fn account_of(role_arn: &str) -> Result<String, TargetError> {
    let bad = || TargetError::BadRoleArn(role_arn.to_owned());
    let parts: Vec<&str> = role_arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "iam", "", account, resource]
            if is_account(account) && resource.starts_with("role/") && resource.len() > 5 =>
        {
            Ok((*account).to_owned())
        }
        _ => Err(bad()),
    }
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    role_arn: Option<String>,
    region: Option<String>,
}

/// Targets from the configuration, in a stable order:
/// - `targets_json` (`TARGETS`): `[{"roleArn": "...", "region": "..."}]`, region defaulting to
///   the function's; or else
/// - `accounts` × `regions` (`TARGET_ACCOUNTS`, `TARGET_REGIONS`) with the role
///   `arn:<partition>:iam::<account>:role/<role_name>` (`TARGET_ROLE_NAME`); regions alone
///   collect this account in those regions with the function's own credentials.
///
/// Empty when nothing is configured: the run collects this account and region only.
pub fn parse(
    targets_json: Option<&str>,
    accounts: &[String],
    regions: &[String],
    role_name: Option<&str>,
    partition: &str,
    own_region: &str,
    own_account: Option<&str>,
) -> Result<Vec<Target>, TargetError> {
    let mut out = Vec::new();
    if let Some(text) = targets_json.map(str::trim).filter(|t| !t.is_empty()) {
        let entries: Vec<Entry> =
            serde_json::from_str(text).map_err(|e| TargetError::NotJson(e.to_string()))?;
        for e in entries {
            let region = e.region.unwrap_or_else(|| own_region.to_owned());
            let (role_arn, account_id) = match e.role_arn {
                Some(arn) => {
                    let account = account_of(&arn)?;
                    (Some(arn), account)
                }
                None => (None, own_account.unwrap_or_default().to_owned()),
            };
            out.push(Target {
                role_arn,
                account_id,
                region,
            });
        }
    } else if !accounts.is_empty() || !regions.is_empty() {
        let regions: Vec<String> = if regions.is_empty() {
            vec![own_region.to_owned()]
        } else {
            regions.to_vec()
        };
        let role = role_name.unwrap_or("ssm-autopilot-inventory-reader");
        let accounts: Vec<Option<&String>> = if accounts.is_empty() {
            vec![None]
        } else {
            accounts.iter().map(Some).collect()
        };
        for account in accounts {
            for region in &regions {
                out.push(match account {
                    Some(a) if !is_account(a) => return Err(TargetError::BadAccount(a.clone())),
                    Some(a) => Target {
                        role_arn: Some(format!("arn:{partition}:iam::{a}:role/{role}")),
                        account_id: a.clone(),
                        region: region.clone(),
                    },
                    None => Target {
                        role_arn: None,
                        account_id: own_account.unwrap_or_default().to_owned(),
                        region: region.clone(),
                    },
                });
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in &out {
        if !seen.insert((t.account_id.clone(), t.region.clone())) {
            return Err(TargetError::Duplicate(format!(
                "{}/{}",
                t.account_id, t.region
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn role_arns_name_their_account() {
        assert_eq!(
            account_of("arn:aws:iam::111111111111:role/reader").unwrap(),
            "111111111111"
        );
        assert_eq!(
            account_of("arn:aws-cn:iam::222222222222:role/path/reader").unwrap(),
            "222222222222"
        );
        for bad in [
            "arn:aws:iam::1111:role/x",
            "arn:aws:iam::111111111111:user/x",
            "arn:aws:sts::111111111111:role/x",
            "reader",
        ] {
            assert!(account_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_list_wins_and_defaults_the_region() {
        let t = parse(
            Some(r#"[{"roleArn":"arn:aws:iam::111111111111:role/r","region":"eu-west-1"},{"roleArn":"arn:aws:iam::222222222222:role/r"}]"#),
            &v(&["333333333333"]),
            &[],
            None,
            "aws",
            "us-east-1",
            Some("123456789012"),
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].account_id.as_str(), t[0].region.as_str()),
            ("111111111111", "eu-west-1")
        );
        assert_eq!(t[1].region, "us-east-1");
        assert!(parse(Some("{}"), &[], &[], None, "aws", "us-east-1", None).is_err());
    }

    #[test]
    fn accounts_times_regions_with_the_role_name() {
        let t = parse(
            None,
            &v(&["111111111111", "222222222222"]),
            &v(&["us-east-1", "eu-west-1"]),
            Some("reader"),
            "aws",
            "us-east-1",
            None,
        )
        .unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(
            t[1].role_arn.as_deref(),
            Some("arn:aws:iam::111111111111:role/reader")
        );
        assert_eq!(t[1].region, "eu-west-1");
        // Regions alone: this account, own credentials.
        let t = parse(
            None,
            &[],
            &v(&["eu-west-1"]),
            None,
            "aws",
            "us-east-1",
            Some("123456789012"),
        )
        .unwrap();
        assert_eq!(
            t,
            vec![Target {
                role_arn: None,
                account_id: "123456789012".into(),
                region: "eu-west-1".into()
            }]
        );
        assert!(
            parse(None, &[], &[], None, "aws", "us-east-1", None)
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            parse(None, &v(&["12"]), &[], None, "aws", "us-east-1", None),
            Err(TargetError::BadAccount(_))
        ));
        assert!(matches!(
            parse(
                None,
                &v(&["111111111111", "111111111111"]),
                &[],
                None,
                "aws",
                "us-east-1",
                None
            ),
            Err(TargetError::Duplicate(_))
        ));
    }
}
