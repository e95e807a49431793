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
    // The functions' EMF metric names (decisions, side effects, failures, throttles, job figures).
    for metric in [
        "Created",
        "Opened",
        "Swept",
        "RunsCompleted",
        "SideEffects",
        "DuplicateSuppressed",
        "Errors",
        "Throttled",
        "ThrottlesRetried",
        "NodesScanned",
        "NodesNonCompliant",
        "NodesRemediated",
        "NodesCollected",
        "RowsWritten",
        "ObjectsWritten",
        "StaleNodes",
    ] {
        assert!(
            plain.contains(&format!("MetricName=\\\"{metric}\\\"")),
            "dashboard lacks {metric}"
        );
    }
}

#[test]
fn parameters_reach_the_functions_environment() {
    let mut t = Template::load(&template_path()).unwrap();
    let env = |t: &Template, f: &str| t.function_env(f).unwrap();
    // Defaults: the first deploy is a dry run, OpsCenter is the backend, no calendar gate.
    let r = env(&t, "ComplianceRemediatorFunction");
    assert_eq!(r["DRY_RUN"], "true");
    assert_eq!(r["EXEMPTION_TAG_KEY"], "autopilot:exempt");
    assert_eq!(r["CHANGE_CALENDAR_NAME"], "");
    assert_eq!(
        env(&t, "IncidentResponseFunction")["INCIDENT_BACKEND"],
        "opscenter"
    );
    assert!(!r.contains_key("AWS_ENDPOINT_URL"), "absent unless set");

    for (p, v) in [
        ("DryRun", "false"),
        ("ExemptionTagKey", "team:no-patch"),
        ("ChangeCalendarName", "prod-changes"),
        ("IncidentBackend", "incident-manager"),
        (
            "IncidentResponsePlanArn",
            "arn:aws:ssm-incidents::123456789012:response-plan/p",
        ),
        ("ExemptAccounts", "111111111111,222222222222"),
        ("InventoryStaleAfterHours", "6"),
        ("LogLevel", "DEBUG"),
        ("LocalEndpointUrl", "http://127.0.0.1:5555"),
    ] {
        t.set_param(p, v);
    }
    let r = env(&t, "ComplianceRemediatorFunction");
    assert_eq!(r["DRY_RUN"], "false");
    assert_eq!(r["EXEMPTION_TAG_KEY"], "team:no-patch");
    assert_eq!(r["CHANGE_CALENDAR_NAME"], "prod-changes");
    let i = env(&t, "IncidentResponseFunction");
    assert_eq!(i["INCIDENT_BACKEND"], "incident-manager");
    assert_eq!(
        i["INCIDENT_RESPONSE_PLAN_ARN"],
        "arn:aws:ssm-incidents::123456789012:response-plan/p"
    );
    assert_eq!(i["CHANGE_CALENDAR_NAME"], "prod-changes");
    assert_eq!(i["EXEMPT_ACCOUNTS"], "111111111111,222222222222");
    assert_eq!(
        env(&t, "InventoryAggregatorFunction")["STALE_AFTER_HOURS"],
        "6"
    );
    for f in t.functions() {
        assert_eq!(
            env(&t, &f)["AWS_ENDPOINT_URL"],
            "http://127.0.0.1:5555",
            "{f}"
        );
        assert_eq!(t.function_log_level(&f).as_deref(), Some("DEBUG"), "{f}");
    }
}

#[test]
fn schedules_and_retention_come_from_parameters() {
    let raw: serde_norway::Value = serde_norway::from_str(&text()).unwrap();
    let r = &raw["Resources"];
    let refs = |v: &serde_norway::Value, param: &str| {
        let s = format!("{v:?}");
        s.contains("Ref") && s.contains(param)
    };
    assert!(refs(
        &r["ComplianceSweepSchedule"]["Properties"]["ScheduleExpression"],
        "ComplianceSweepScheduleExpression"
    ));
    assert!(refs(
        &r["InventoryAggregatorFunction"]["Properties"]["Events"]["Nightly"]["Properties"]["ScheduleExpression"],
        "InventoryScheduleExpression"
    ));
    for rule in r["InventoryBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        .as_sequence()
        .unwrap()
    {
        assert!(
            refs(&rule["ExpirationInDays"], "InventorySnapshotRetentionDays"),
            "{rule:?}"
        );
    }
    assert_eq!(
        raw["Parameters"]["DryRun"]["Default"].as_str(),
        Some("true")
    );
}

#[test]
fn every_checkov_suppression_gives_a_reason() {
    let raw: serde_norway::Value = serde_norway::from_str(&text()).unwrap();
    let mut skips = 0;
    for (name, res) in raw["Resources"].as_mapping().unwrap() {
        for s in res["Metadata"]["checkov"]["skip"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            skips += 1;
            let id = s["id"].as_str().unwrap_or_default();
            assert!(id.starts_with("CKV_"), "{name:?}: {s:?}");
            let reason = s["comment"].as_str().unwrap_or_default();
            assert!(
                reason.split_whitespace().count() >= 8,
                "{name:?} {id}: reason too thin"
            );
        }
    }
    assert!(skips > 0);
}

#[test]
fn every_output_resolves() {
    let t = Template::load(&template_path()).unwrap();
    let raw: serde_norway::Value = serde_norway::from_str(&text()).unwrap();
    let outputs = raw["Outputs"].as_mapping().unwrap();
    for f in t.functions() {
        assert!(outputs.contains_key(format!("{f}Name").as_str()), "{f}");
        assert!(outputs.contains_key(format!("{f}Arn").as_str()), "{f}");
    }
    for (name, o) in outputs {
        let v = t.resolve_str(&o["Value"]).unwrap();
        assert!(!v.is_empty(), "{name:?}");
    }
}

/// `tests/emulator/sam-local-env.json` (the `--env-vars` file of `sam local invoke`) gives each
/// function exactly the variables the template declares, with the values `cargo xtask invoke`
/// gives it. SAM passes only declared variables and keeps the rest at their template values,
/// so a key missing here would silently point a local run at the wrong resource.
#[test]
fn sam_local_env_file_matches_the_harness_environment() {
    let t = Template::load(&template_path()).unwrap();
    let path = autopilot_harness::repo_root().join("tests/emulator/sam-local-env.json");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut expected = serde_json::Map::new();
    for f in t.functions() {
        let env = t.function_env(&f).unwrap();
        expected.insert(f, serde_json::to_value(env).unwrap());
    }
    let expected = serde_json::Value::Object(expected);
    assert_eq!(
        file,
        expected,
        "sam-local-env.json should be:\n{}",
        serde_json::to_string_pretty(&expected).unwrap()
    );
    // The endpoint is a parameter (SAM would drop an undeclared variable from the file).
    let samconfig =
        std::fs::read_to_string(autopilot_harness::repo_root().join("samconfig.toml")).unwrap();
    assert!(samconfig.contains("LocalEndpointUrl="), "{samconfig}");
    assert!(samconfig.contains("tests/emulator/sam-local-env.json"));
}
