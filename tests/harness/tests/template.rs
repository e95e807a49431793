//! `template.yaml` is least-privilege, and the check catches an over-broad copy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use autopilot_harness::{Template, policy, template_path};

fn text() -> String {
    std::fs::read_to_string(template_path()).unwrap()
}

#[test]
fn template_is_least_privilege() {
    let v = policy::violations(&text()).unwrap();
    assert!(
        v.is_empty(),
        "least-privilege violations:\n{}",
        v.join("\n")
    );
}

#[test]
fn an_over_broad_policy_in_a_copy_is_caught() {
    let original = text();
    let broad = original.replacen(
        "            - Sid: OpsItems\n",
        "            - Sid: TooBroad\n              Effect: Allow\n              Action: ssm:SendCommand\n              Resource: \"*\"\n            - Sid: Wildcard\n              Effect: Allow\n              Action: ssm:*\n              Resource: \"*\"\n            - Sid: OpsItems\n",
        1,
    );
    assert_ne!(
        broad, original,
        "the copy must contain the injected statements"
    );
    let v = policy::violations(&broad).unwrap();
    assert!(
        v.iter().any(|l| l.contains("ssm:SendCommand on Resource")),
        "{v:?}"
    );
    assert!(
        v.iter().any(|l| l.contains("ssm:* grants a whole service")),
        "{v:?}"
    );
}

#[test]
fn every_function_is_hardened() {
    let t = Template::load(&template_path()).unwrap();
    let fns = t.functions();
    assert!(!fns.is_empty());
    let raw: serde_norway::Value = serde_norway::from_str(&text()).unwrap();
    for f in fns {
        let res = &raw["Resources"][f.as_str()];
        let props = &res["Properties"];
        assert_eq!(
            res["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{f}"
        );
        assert!(
            res["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .is_some(),
            "{f}"
        );
        let retry = props["EventInvokeConfig"]["MaximumRetryAttempts"].as_u64();
        assert!(retry.is_some_and(|n| n <= 2), "{f}: async retries bounded");
        assert!(
            props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"].is_mapping(),
            "{f}: OnFailure destination"
        );
        if let Some(events) = props["Events"].as_mapping() {
            for (name, e) in events {
                if e["Type"].as_str() == Some("EventBridgeRule") {
                    assert!(
                        e["Properties"]["RetryPolicy"].is_mapping(),
                        "{f}/{name:?}: RetryPolicy"
                    );
                    assert!(
                        e["Properties"]["DeadLetterConfig"].is_mapping(),
                        "{f}/{name:?}: DeadLetterConfig"
                    );
                }
            }
        }
        let (memory, timeout) = t.function_limits(&f);
        assert!(memory >= 128 && timeout >= 3, "{f}");
    }
    // Globals: arm64, al2023, tracing and JSON logs.
    let g = &raw["Globals"]["Function"];
    assert_eq!(g["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(g["Architectures"][0].as_str(), Some("arm64"));
    assert_eq!(g["Tracing"].as_str(), Some("Active"));
    assert_eq!(g["LoggingConfig"]["LogFormat"].as_str(), Some("JSON"));
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_creates_every_declared_data_resource() {
    let env = autopilot_harness::TestEnv::new().await.unwrap();
    let t = &env.template;
    let cfg = env.sdk().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    for table in ["IdempotencyTable", "LedgerTable"] {
        let name = t.physical_name(table).unwrap();
        ddb.describe_table()
            .table_name(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    let bus = t.physical_name("AuditBus").unwrap();
    aws_sdk_eventbridge::Client::new(&cfg)
        .describe_event_bus()
        .name(&bus)
        .send()
        .await
        .unwrap();
    let queue = t.physical_name("DeadLetterQueue").unwrap();
    let url = env
        .control
        .aws_json(
            "AmazonSQS.GetQueueUrl",
            serde_json::json!({ "QueueName": queue }),
        )
        .await
        .unwrap();
    assert!(url["QueueUrl"].as_str().unwrap().ends_with(&queue), "{url}");
    let topics = aws_sdk_sns::Client::new(&cfg)
        .list_topics()
        .send()
        .await
        .unwrap();
    let topic = t.physical_name("NotificationTopic").unwrap();
    assert!(
        topics
            .topics()
            .iter()
            .any(|x| x.topic_arn().unwrap_or_default().ends_with(&topic))
    );
}

#[test]
fn every_function_has_an_errors_alarm_and_the_dlq_is_watched() {
    let raw: serde_norway::Value = serde_norway::from_str(&text()).unwrap();
    let resources = raw["Resources"].as_mapping().unwrap();
    let alarms: Vec<&serde_norway::Value> = resources
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .collect();
    let watched = |metric: &str, target: &str| {
        alarms.iter().any(|a| {
            let p = &a["Properties"];
            p["MetricName"].as_str() == Some(metric)
                && format!("{:?}", p["Dimensions"]).contains(target)
                && format!("{:?}", p["AlarmActions"]).contains("NotificationTopic")
        })
    };
    for f in Template::load(&template_path()).unwrap().functions() {
        assert!(watched("Errors", &f), "no Errors alarm for {f}");
    }
    assert!(watched(
        "ApproximateNumberOfMessagesVisible",
        "DeadLetterQueue"
    ));
}

#[test]
fn dashboard_is_valid_json_and_shows_every_function() {
    let raw: serde_norway::Value = serde_norway::from_str(&text()).unwrap();
    let body = &raw["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"];
    let serde_norway::Value::Tagged(sub) = body else {
        panic!("DashboardBody should be a !Sub: {body:?}")
    };
    let text = sub.value.as_str().unwrap();
    for f in Template::load(&template_path()).unwrap().functions() {
        assert!(text.contains(&format!("${{{f}}}")), "dashboard lacks {f}");
    }
    // Substitutions replaced by a placeholder, the body must be JSON with widgets.
    let mut plain = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        plain.push_str(&rest[..i]);
        plain.push('x');
        rest = &rest[i + rest[i..].find('}').unwrap() + 1..];
    }
    plain.push_str(rest);
    let doc: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert!(doc["widgets"].as_array().unwrap().len() >= 4);
    assert!(
        plain.contains("SsmAutopilot"),
        "the EMF namespace is charted"
    );
}
