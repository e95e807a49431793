//! Least-privilege rules for `template.yaml`, checked by tests (and on a deliberately
//! over-broad copy, to prove the check bites).

use serde_norway::Value;

/// Actions that AWS does not scope to resources (or that only read) and so may use `*`.
fn allowed_on_star(action: &str) -> bool {
    const READ_PREFIXES: [&str; 5] = ["Describe", "List", "Get", "BatchGet", "Search"];
    let Some((service, name)) = action.split_once(':') else {
        return false;
    };
    if name.contains('*') && !READ_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    match service {
        "ssm" | "ec2" | "config" | "guardduty" | "securityhub" | "health" | "tag"
        | "ssm-incidents" | "s3" | "cloudwatch" => {
            READ_PREFIXES.iter().any(|p| name.starts_with(p))
        }
        "xray" => matches!(name, "PutTraceSegments" | "PutTelemetryRecords"),
        "logs" => matches!(name, "CreateLogStream" | "PutLogEvents" | "CreateLogGroup"),
        _ => false,
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Some(Value::Tagged(_)) | Some(Value::Mapping(_)) => vec!["<intrinsic>".into()],
        _ => Vec::new(),
    }
}

fn statements(doc: &Value) -> Vec<&Value> {
    match doc.get("Statement") {
        Some(Value::Sequence(s)) => s.iter().collect(),
        Some(v @ Value::Mapping(_)) => vec![v],
        _ => Vec::new(),
    }
}

/// Every least-privilege violation in the template, as readable lines.
pub fn violations(template: &str) -> Result<Vec<String>, serde_norway::Error> {
    let root: Value = serde_norway::from_str(template)?;
    let mut out = Vec::new();
    let Some(resources) = root.get("Resources").and_then(Value::as_mapping) else {
        return Ok(out);
    };
    for (name, res) in resources {
        let name = name.as_str().unwrap_or("?");
        let ty = res.get("Type").and_then(Value::as_str).unwrap_or_default();
        let props = res.get("Properties");
        let mut docs: Vec<&Value> = Vec::new();
        match ty {
            "AWS::Serverless::Function" => {
                for p in props
                    .and_then(|p| p.get("Policies"))
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    match p {
                        Value::String(managed)
                            if managed.contains("FullAccess")
                                || managed == "AdministratorAccess" =>
                        {
                            out.push(format!("{name}: managed policy {managed} is over-broad"));
                        }
                        Value::Mapping(_) if p.get("Statement").is_some() => docs.push(p),
                        _ => {}
                    }
                }
            }
            "AWS::IAM::Role" => {
                for p in props
                    .and_then(|p| p.get("Policies"))
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    if let Some(d) = p.get("PolicyDocument") {
                        docs.push(d);
                    }
                }
                for m in strings(props.and_then(|p| p.get("ManagedPolicyArns"))) {
                    if m.contains("FullAccess") || m.ends_with("AdministratorAccess") {
                        out.push(format!("{name}: managed policy {m} is over-broad"));
                    }
                }
            }
            "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" => {
                if let Some(d) = props.and_then(|p| p.get("PolicyDocument")) {
                    docs.push(d);
                }
            }
            _ => {}
        }
        for doc in docs {
            for st in statements(doc) {
                if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
                    continue;
                }
                let actions = strings(st.get("Action"));
                let star = strings(st.get("Resource")).iter().any(|r| r == "*");
                for a in &actions {
                    if a == "*" || a.ends_with(":*") {
                        out.push(format!("{name}: action {a} grants a whole service"));
                    } else if star && !allowed_on_star(a) {
                        out.push(format!("{name}: {a} on Resource \"*\""));
                    }
                    if a == "iam:PassRole" {
                        let pinned = st
                            .get("Condition")
                            .map(|c| format!("{c:?}"))
                            .is_some_and(|c| c.contains("iam:PassedToService"));
                        if !pinned {
                            out.push(format!(
                                "{name}: iam:PassRole without an iam:PassedToService condition"
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_actions_may_use_star_mutations_may_not() {
        assert!(allowed_on_star("ssm:DescribeInstanceInformation"));
        assert!(allowed_on_star("ssm:GetInventory"));
        assert!(allowed_on_star("xray:PutTraceSegments"));
        assert!(!allowed_on_star("ssm:SendCommand"));
        assert!(!allowed_on_star("ssm:CreateOpsItem"));
        assert!(!allowed_on_star("ssm:*"));
        assert!(!allowed_on_star("s3:PutObject"));
    }
}
