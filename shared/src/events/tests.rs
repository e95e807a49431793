use super::*;
use serde_json::json;

fn envelope(source: &str, detail_type: &str, detail: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": "2026-03-14T13:10:02Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail
    }))
    .unwrap()
}

#[test]
fn metric_math_and_composite_alarms_are_told_apart() {
    let metric = envelope(
        "aws.cloudwatch",
        "CloudWatch Alarm State Change",
        json!({"alarmName": "cpu", "state": {"value": "ALARM", "timestamp": "2026-03-14T13:10:02.985+0000"},
               "configuration": {"metrics": [{"id": "m1", "metricStat": {"metric": {"namespace": "AWS/EC2",
               "name": "CPUUtilization", "dimensions": {"InstanceId": "i-0abcdef1234567890"}}, "period": 300, "stat": "Average"}}]}}),
    );
    let math = envelope(
        "aws.cloudwatch",
        "CloudWatch Alarm State Change",
        json!({"alarmName": "math", "state": {"value": "ALARM"},
               "configuration": {"metrics": [{"id": "e1", "expression": "m1 * 2", "returnData": true}]}}),
    );
    let composite = envelope(
        "aws.cloudwatch",
        "CloudWatch Alarm State Change",
        json!({"alarmName": "comp", "state": {"value": "OK"}, "configuration": {"alarmRule": "ALARM(a) OR ALARM(b)"}}),
    );
    let kinds: Vec<_> = [metric, math, composite]
        .iter()
        .map(|raw| match classify(raw).unwrap() {
            AutopilotEvent::Alarm(a) => (a.detail.kind(), a.detail.state.value),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (AlarmKind::Metric, AlarmStateValue::Alarm),
            (AlarmKind::MetricMath, AlarmStateValue::Alarm),
            (AlarmKind::Composite, AlarmStateValue::Ok)
        ]
    );
}

#[test]
fn scheduler_string_detail_is_accepted() {
    let raw = envelope("aws.scheduler", "Scheduled Event", json!("{}"));
    let ev = classify(&raw).unwrap();
    assert_eq!(ev.kind(), "scheduled");
    let raw = envelope(
        "aws.scheduler",
        "Scheduled Event",
        json!("{\"dryRun\": true}"),
    );
    match classify(&raw).unwrap() {
        AutopilotEvent::Scheduled(s) => assert_eq!(s.detail.dry_run, Some(true)),
        other => panic!("unexpected {other:?}"),
    }
    let raw = envelope("aws.scheduler", "Scheduled Event", json!("{not json"));
    assert_eq!(
        classify(&raw).unwrap_err().error_type(),
        "InvalidEventDetail"
    );
}

#[test]
fn shell_metacharacters_in_ids_are_rejected() {
    let raw = envelope(
        "aws.ec2",
        "EC2 Instance State-change Notification",
        json!({"instance-id": "i-123; rm -rf /", "state": "stopped"}),
    );
    assert_eq!(
        classify(&raw).unwrap_err().error_type(),
        "InvalidEventField"
    );
}

#[test]
fn health_pages_as_strings_and_automation_times() {
    let raw = envelope(
        "aws.health",
        "AWS Health Event",
        json!({"eventArn": "arn:aws:health:us-east-1::event/EC2/X/Y", "service": "EC2",
               "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", "eventTypeCategory": "scheduledChange",
               "startTime": "Wed, 14 Jan 2026 10:00:00 GMT", "page": "1", "totalPages": "2",
               "affectedEntities": [{"entityValue": "i-0abcdef1234567890"}]}),
    );
    match classify(&raw).unwrap() {
        AutopilotEvent::Health(h) => {
            assert_eq!((h.detail.page, h.detail.total_pages), (Some(1), Some(2)));
            assert!(parse_aws_time(h.detail.start_time.as_deref().unwrap()).is_some());
        }
        other => panic!("unexpected {other:?}"),
    }
    let raw = envelope(
        "aws.ssm",
        "EC2 Automation Execution Status-change Notification",
        json!({"ExecutionId": "2b4b7d5a-6c61-4e3f-9d5e-0f4b8c1a7e11", "Definition": "AWS-RestartEC2Instance",
               "DefinitionVersion": 1.0, "Status": "Failed", "StartTime": "Mar 14, 2026 1:09:02 PM",
               "EndTime": "Mar 14, 2026 1:10:02 PM", "Time": 1773493802000.0}),
    );
    match classify(&raw).unwrap() {
        AutopilotEvent::AutomationStatus(a) => {
            assert_eq!(a.detail.outcome(), AutomationOutcome::Failed);
            assert!(parse_aws_time(a.detail.end_time.as_deref().unwrap()).is_some());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_inputs_give_typed_errors() {
    let cases: Vec<(&[u8], &str)> = vec![
        (b"not json", "MalformedEvent"),
        (b"", "MalformedEvent"),
        (b"null", "MalformedEvent"),
        (b"[1,2]", "MalformedEvent"),
        (br#"{"source":"aws.ec2","detail":{}}"#, "MalformedEvent"),
        (
            br#"{"source":"aws.ec2","detail-type":"EC2 Instance State-change Notification"}"#,
            "MalformedEvent",
        ),
        (
            br#"{"source":"aws.foo","detail-type":"Bar","detail":{}}"#,
            "UnsupportedEvent",
        ),
        (
            br#"{"source":7,"detail-type":"Bar","detail":{}}"#,
            "MalformedEvent",
        ),
    ];
    for (raw, want) in cases {
        let got = classify(raw).unwrap_err();
        assert_eq!(
            got.error_type(),
            want,
            "input {:?}: {got}",
            String::from_utf8_lossy(raw)
        );
    }
    let big = vec![b' '; MAX_EVENT_BYTES + 1];
    assert_eq!(classify(&big).unwrap_err().error_type(), "EventTooLarge");
    let deep = format!(
        r#"{{"source":"aws.health","detail-type":"AWS Health Event","detail":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        classify(deep.as_bytes()).unwrap_err().error_type(),
        "InvalidEventDetail"
    );
}

#[test]
fn bad_account_or_region_is_rejected() {
    let mut v: serde_json::Value = serde_json::from_slice(&envelope(
        "aws.ec2",
        "EC2 Instance State-change Notification",
        json!({"instance-id": "i-0abcdef1234567890", "state": "stopped"}),
    ))
    .unwrap();
    v["region"] = json!("us-east-1; reboot");
    let raw = serde_json::to_vec(&v).unwrap();
    assert_eq!(
        classify(&raw).unwrap_err().error_type(),
        "InvalidEventField"
    );
}

#[test]
fn classify_raw_locates_the_envelope_detail_of_every_sample() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let mut checked = 0;
    for sub in std::fs::read_dir(dir).unwrap() {
        let sub = sub.unwrap().path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub).unwrap() {
            let f = f.unwrap().path();
            let raw = std::fs::read(&f).unwrap();
            let Ok(c) = classify_raw(&raw) else { continue };
            let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            let located: serde_json::Value = serde_json::from_str(c.detail.get()).unwrap();
            assert_eq!(Some(&located), v.get("detail"), "{f:?}");
            assert_eq!(c.raw, raw.as_slice());
            checked += 1;
        }
    }
    // String-encoded details (EventBridge Scheduler) are located as the string itself.
    let raw = envelope(
        "aws.scheduler",
        "Scheduled Event",
        json!("{\"dryRun\": true}"),
    );
    let c = classify_raw(&raw).unwrap();
    assert_eq!(c.detail.get(), r#""{\"dryRun\": true}""#);
    assert!(checked > 20, "{checked}");
}
