//! Contract tests: the AWS SDK for Rust (`aws_sdk_ssm`) against the local emulator's SSM
//! extension (`tests/emulator/`). Every emulated SSM operation is called through the SDK
//! and its response parsed; pagination, documented errors (as the SDK's typed errors),
//! fault injection, counters and tenant isolation are checked.
//!
//! Each test has its own `TestEnv` (its own tenant), so tests run in parallel; fault rules
//! always carry the test's tenant.

// clippy.toml's allow-{expect,panic}-in-tests covers `#[test]` functions only, not the
// helper functions of an integration-test crate; these helpers fail the test on purpose.
#![allow(clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use autopilot_harness::TestEnv;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::types::{
    AssociationFilter, AssociationFilterKey, AutomationExecutionFilter,
    AutomationExecutionFilterKey, AutomationExecutionStatus, CalendarState, CommandFilter,
    CommandFilterKey, CommandInvocationStatus, CommandPluginStatus, CommandStatus,
    ComplianceExecutionSummary, ComplianceItemEntry, ComplianceQueryOperatorType,
    ComplianceSeverity, ComplianceStatus, ComplianceStringFilter, ComplianceUploadType,
    InstanceInformationStringFilter, InventoryAggregator, InventoryAttributeDataType,
    InventoryFilter, InventoryItem, InventoryQueryOperatorType, OpsItemDataType, OpsItemDataValue,
    OpsItemFilter, OpsItemFilterKey, OpsItemFilterOperator, OpsItemStatus, PingStatus,
    ResourceType, ResultAttribute, Target,
};
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::{Value, json};

const PAGE_LIMIT: usize = 50;

// ------------------------------------------------------------------ helpers

async fn env() -> TestEnv {
    TestEnv::new()
        .await
        .expect("test environment (emulator + template)")
}

/// SDK client with a single attempt, so every error is seen as the emulator sent it.
async fn client(env: &TestEnv) -> Client {
    Client::new(&env.sdk_with_attempts(1).await)
}

/// The modeled (or unhandled) service error of a failed call; panics on success or on a
/// transport/construction failure.
fn service_error<O: Debug, E: Debug, R: Debug>(res: Result<O, SdkError<E, R>>) -> E {
    match res {
        Ok(out) => panic!("expected a service error, the call succeeded: {out:?}"),
        Err(SdkError::ServiceError(ctx)) => ctx.into_err(),
        Err(other) => panic!("expected a service error, got {other:?}"),
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

/// `i-` + 17 lowercase hex (EC2) or `mi-` + 17 lowercase hex (hybrid).
fn node_id_kind(id: &str) -> Option<&'static str> {
    if let Some(rest) = id.strip_prefix("mi-") {
        return is_lower_hex(rest, 17).then_some("mi");
    }
    id.strip_prefix("i-")
        .filter(|rest| is_lower_hex(rest, 17))
        .map(|_| "i")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn iso(secs: i64) -> String {
    DateTime::from_secs(secs)
        .fmt(Format::DateTime)
        .expect("formattable time")
}

fn searchable(value: &str) -> OpsItemDataValue {
    OpsItemDataValue::builder()
        .value(value)
        .r#type(OpsItemDataType::SearchableString)
        .build()
}

fn dedup(s: &str) -> OpsItemDataValue {
    searchable(&json!({ "dedupString": s }).to_string())
}

fn ops_filter(key: OpsItemFilterKey, op: OpsItemFilterOperator, values: &[&str]) -> OpsItemFilter {
    let mut b = OpsItemFilter::builder().key(key).operator(op);
    for v in values {
        b = b.values(*v);
    }
    b.build().expect("ops item filter")
}

async fn create_ops_item(ssm: &Client, title: &str, dedup_string: Option<&str>) -> String {
    let mut req = ssm
        .create_ops_item()
        .title(title)
        .description("emulator contract test")
        .source("ec2");
    if let Some(d) = dedup_string {
        req = req.operational_data("/aws/dedup", dedup(d));
    }
    let out = req.send().await.expect("CreateOpsItem");
    out.ops_item_id().expect("OpsItemId").to_owned()
}

async fn seed_fleet(env: &TestEnv, spec: Value) -> Value {
    let mut spec = spec;
    spec["tenant"] = json!(env.tenant);
    env.control.seed_fleet(spec).await.expect("seed fleet")
}

/// Node ids of the tenant's fleet (sorted), with their tags.
async fn fleet(env: &TestEnv) -> Vec<(String, Value)> {
    let f = env
        .control
        .call("GET", &format!("fleet?tenant={}", env.tenant), None)
        .await
        .expect("GET fleet");
    let mut nodes: Vec<(String, Value)> = f["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["InstanceId"].as_str().expect("InstanceId").to_owned(),
                n["Tags"].clone(),
            )
        })
        .collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    nodes
}

async fn counters(env: &TestEnv, op: &str) -> Value {
    let c = env.control.counters(&env.tenant).await.expect("counters");
    c["counters"][op].clone()
}

async fn clear_my_faults(env: &TestEnv) {
    env.control
        .call("DELETE", "faults", Some(json!({ "tenant": env.tenant })))
        .await
        .expect("clear faults");
}

/// Asserts every page is within the page limit and returns the collected keys, checking
/// each arrives exactly once.
fn assert_unique<K: Ord + Debug + Clone>(keys: &[K]) -> BTreeSet<K> {
    let set: BTreeSet<K> = keys.iter().cloned().collect();
    assert_eq!(
        set.len(),
        keys.len(),
        "an item arrived more than once: {keys:?}"
    );
    set
}

// ------------------------------------------------------------------ OpsCenter

#[tokio::test(flavor = "multi_thread")]
async fn opsitem_create_get_update_describe() {
    let env = env().await;
    let ssm = client(&env).await;

    let created = ssm
        .create_ops_item()
        .title("Disk almost full on web-1")
        .description("Root volume at 95%")
        .source("ec2")
        .severity("2")
        .priority(3)
        .category("Availability")
        .operational_data(
            "/aws/resources",
            searchable(
                r#"[{"arn":"arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"}]"#,
            ),
        )
        .operational_data(
            "team",
            OpsItemDataValue::builder()
                .value("platform")
                .r#type(OpsItemDataType::String)
                .build(),
        )
        .operational_data("runbook", searchable("https://runbooks.example/disk"))
        .send()
        .await
        .expect("CreateOpsItem");
    let id = created.ops_item_id().expect("OpsItemId").to_owned();
    let hex = id.strip_prefix("oi-").expect("id starts with oi-");
    assert!(is_lower_hex(hex, 12), "OpsItemId {id} is not oi- + 12 hex");
    let arn = created.ops_item_arn().expect("OpsItemArn");
    assert!(
        arn.starts_with("arn:aws:ssm:") && arn.ends_with(&format!(":123456789012:opsitem/{id}")),
        "{arn}"
    );

    let item = ssm
        .get_ops_item()
        .ops_item_id(&id)
        .send()
        .await
        .expect("GetOpsItem");
    let item = item.ops_item().expect("OpsItem");
    assert_eq!(item.ops_item_id(), Some(id.as_str()));
    assert_eq!(item.title(), Some("Disk almost full on web-1"));
    assert_eq!(item.description(), Some("Root volume at 95%"));
    assert_eq!(item.source(), Some("ec2"));
    assert_eq!(item.status(), Some(&OpsItemStatus::Open));
    assert_eq!(item.severity(), Some("2"));
    assert_eq!(item.priority(), Some(3));
    assert_eq!(item.category(), Some("Availability"));
    assert_eq!(item.ops_item_type(), Some("/aws/issue"));
    assert_eq!(item.ops_item_arn(), Some(arn));
    assert!(item.created_by().expect("CreatedBy").contains(&env.tenant));
    let created_time = *item.created_time().expect("CreatedTime");
    let age = now_secs() - created_time.secs();
    assert!(
        (-5..600).contains(&age),
        "CreatedTime {created_time:?} is not recent"
    );
    let version1 = item.version().expect("Version").to_owned();
    let data = item.operational_data().expect("OperationalData");
    assert_eq!(data.len(), 3);
    assert_eq!(data["team"].value(), Some("platform"));
    assert_eq!(data["team"].r#type(), Some(&OpsItemDataType::String));
    assert_eq!(
        data["runbook"].r#type(),
        Some(&OpsItemDataType::SearchableString)
    );

    ssm.update_ops_item()
        .ops_item_id(&id)
        .status(OpsItemStatus::InProgress)
        .title("Disk full on web-1")
        .severity("1")
        .operational_data("owner", searchable("alice"))
        .operational_data_to_delete("runbook")
        .send()
        .await
        .expect("UpdateOpsItem");
    let item = ssm
        .get_ops_item()
        .ops_item_id(&id)
        .send()
        .await
        .expect("GetOpsItem")
        .ops_item
        .expect("OpsItem");
    assert_eq!(item.status(), Some(&OpsItemStatus::InProgress));
    assert_eq!(item.title(), Some("Disk full on web-1"));
    assert_eq!(item.severity(), Some("1"));
    assert_eq!(
        item.description(),
        Some("Root volume at 95%"),
        "untouched fields are kept"
    );
    let data = item.operational_data().expect("OperationalData");
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["/aws/resources", "owner", "team"]));
    assert_ne!(
        item.version(),
        Some(version1.as_str()),
        "an update makes a new Version"
    );
    assert!(item.last_modified_time().expect("LastModifiedTime") >= &created_time);

    // A second, unrelated item so that filters have something to exclude.
    let other = create_ops_item(&ssm, "Unrelated", None).await;

    let found = ssm
        .describe_ops_items()
        .ops_item_filters(ops_filter(
            OpsItemFilterKey::Status,
            OpsItemFilterOperator::Equal,
            &["InProgress"],
        ))
        .send()
        .await
        .expect("DescribeOpsItems");
    let summaries = found.ops_item_summaries();
    assert_eq!(summaries.len(), 1);
    let s = &summaries[0];
    assert_eq!(s.ops_item_id(), Some(id.as_str()));
    assert_eq!(s.title(), Some("Disk full on web-1"));
    assert_eq!(s.status(), Some(&OpsItemStatus::InProgress));
    assert_eq!(s.severity(), Some("1"));
    assert_eq!(s.priority(), Some(3));
    assert_eq!(s.source(), Some("ec2"));
    assert!(found.next_token().is_none());

    let by_title = ssm
        .describe_ops_items()
        .ops_item_filters(ops_filter(
            OpsItemFilterKey::Title,
            OpsItemFilterOperator::Contains,
            &["unrel"],
        ))
        .send()
        .await
        .expect("DescribeOpsItems by title");
    let ids: Vec<_> = by_title
        .ops_item_summaries()
        .iter()
        .filter_map(|s| s.ops_item_id())
        .collect();
    assert_eq!(ids, vec![other.as_str()]);

    let by_data = ssm
        .describe_ops_items()
        .ops_item_filters(ops_filter(
            OpsItemFilterKey::OperationalData,
            OpsItemFilterOperator::Equal,
            &[r#"{"key":"owner","value":"alice"}"#],
        ))
        .send()
        .await
        .expect("DescribeOpsItems by OperationalData");
    let ids: Vec<_> = by_data
        .ops_item_summaries()
        .iter()
        .filter_map(|s| s.ops_item_id())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);

    // Documented errors.
    let missing = "oi-000000000000";
    let err = service_error(ssm.get_ops_item().ops_item_id(missing).send().await);
    assert!(err.is_ops_item_not_found_exception(), "{err:?}");
    let err = service_error(
        ssm.update_ops_item()
            .ops_item_id(missing)
            .status(OpsItemStatus::Resolved)
            .send()
            .await,
    );
    assert!(err.is_ops_item_not_found_exception(), "{err:?}");
    // DescribeOpsItems: a filter key the emulator does not support.
    let err = service_error(
        ssm.describe_ops_items()
            .ops_item_filters(ops_filter(
                OpsItemFilterKey::ChangeRequestRequesterArn,
                OpsItemFilterOperator::Equal,
                &["arn:aws:iam::123456789012:user/x"],
            ))
            .send()
            .await,
    );
    assert_eq!(
        err.code(),
        Some("OpsItemInvalidParameterException"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opsitem_dedup_semantics() {
    let env = env().await;
    let ssm = client(&env).await;

    let first = create_ops_item(&ssm, "Patch failure on i-0abc", Some("PatchFailure:i-0abc")).await;

    // Same dedup string while the first is Open: typed exception carrying the existing id.
    let err = service_error(
        ssm.create_ops_item()
            .title("Patch failure again")
            .description("dup")
            .source("ssm-autopilot")
            .operational_data("/aws/dedup", dedup("PatchFailure:i-0abc"))
            .send()
            .await,
    );
    assert!(err.is_ops_item_already_exists_exception(), "{err:?}");
    assert_eq!(err.code(), Some("OpsItemAlreadyExistsException"));
    match &err {
        aws_sdk_ssm::operation::create_ops_item::CreateOpsItemError::OpsItemAlreadyExistsException(e) => {
            assert_eq!(e.ops_item_id(), Some(first.as_str()));
        }
        other => panic!("expected OpsItemAlreadyExistsException, got {other:?}"),
    }

    // Case-insensitive match.
    let err = service_error(
        ssm.create_ops_item()
            .title("Patch failure, other case")
            .description("dup")
            .source("ssm-autopilot")
            .operational_data("/aws/dedup", dedup("patchfailure:I-0ABC"))
            .send()
            .await,
    );
    match &err {
        aws_sdk_ssm::operation::create_ops_item::CreateOpsItemError::OpsItemAlreadyExistsException(e) => {
            assert_eq!(e.ops_item_id(), Some(first.as_str()));
        }
        other => panic!("expected OpsItemAlreadyExistsException, got {other:?}"),
    }

    // InProgress still blocks.
    ssm.update_ops_item()
        .ops_item_id(&first)
        .status(OpsItemStatus::InProgress)
        .send()
        .await
        .expect("in progress");
    let err = service_error(
        ssm.create_ops_item()
            .title("t")
            .description("d")
            .source("s")
            .operational_data("/aws/dedup", dedup("PatchFailure:i-0abc"))
            .send()
            .await,
    );
    assert!(err.is_ops_item_already_exists_exception(), "{err:?}");

    // A different dedup string is not blocked.
    let unrelated = create_ops_item(&ssm, "Other node", Some("PatchFailure:i-0def")).await;
    assert_ne!(unrelated, first);

    // The dedup string cannot be changed or deleted by UpdateOpsItem.
    let err = service_error(
        ssm.update_ops_item()
            .ops_item_id(&first)
            .operational_data("/aws/dedup", dedup("changed"))
            .send()
            .await,
    );
    assert!(err.is_ops_item_invalid_parameter_exception(), "{err:?}");
    let err = service_error(
        ssm.update_ops_item()
            .ops_item_id(&first)
            .operational_data_to_delete("/aws/dedup")
            .send()
            .await,
    );
    assert!(err.is_ops_item_invalid_parameter_exception(), "{err:?}");

    // Resolved does not block a new item.
    ssm.update_ops_item()
        .ops_item_id(&first)
        .status(OpsItemStatus::Resolved)
        .send()
        .await
        .expect("resolve");
    let second = create_ops_item(
        &ssm,
        "Patch failure, recurring",
        Some("PatchFailure:i-0abc"),
    )
    .await;
    assert_ne!(second, first);

    // Re-opening the resolved one while the new one is active: exception naming the active one.
    let err = service_error(
        ssm.update_ops_item()
            .ops_item_id(&first)
            .status(OpsItemStatus::Open)
            .send()
            .await,
    );
    match &err {
        aws_sdk_ssm::operation::update_ops_item::UpdateOpsItemError::OpsItemAlreadyExistsException(e) => {
            assert_eq!(e.ops_item_id(), Some(second.as_str()));
        }
        other => panic!("expected OpsItemAlreadyExistsException, got {other:?}"),
    }

    let state = env
        .control
        .state("opsitems", &env.tenant)
        .await
        .expect("state");
    let items = state["OpsItems"].as_array().expect("OpsItems");
    let ids: Vec<&str> = items
        .iter()
        .filter_map(|i| i["OpsItemId"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![first.as_str(), unrelated.as_str(), second.as_str()],
        "no duplicate was stored"
    );
    assert_eq!(items[0]["Status"], "Resolved");
}

#[tokio::test(flavor = "multi_thread")]
async fn opsitem_malformed_requests_and_quota_are_rejected() {
    let env = env().await;
    let ssm = client(&env).await;

    let long_title = "x".repeat(1025);
    let err = service_error(
        ssm.create_ops_item()
            .title(long_title)
            .description("d")
            .source("s")
            .send()
            .await,
    );
    assert!(err.is_ops_item_invalid_parameter_exception(), "{err:?}");
    assert!(
        err.message().is_some_and(|m| m.contains("Title")),
        "{err:?}"
    );

    // 1024 characters is still fine.
    ssm.create_ops_item()
        .title("y".repeat(1024))
        .description("d")
        .source("s")
        .send()
        .await
        .expect("1024 chars");

    let err = service_error(
        ssm.create_ops_item()
            .title("t")
            .description("d")
            .source("s")
            .severity("9")
            .send()
            .await,
    );
    assert!(err.is_ops_item_invalid_parameter_exception(), "{err:?}");

    let err = service_error(
        ssm.create_ops_item()
            .title("t")
            .description("d")
            .source("s")
            .priority(6)
            .send()
            .await,
    );
    assert!(err.is_ops_item_invalid_parameter_exception(), "{err:?}");

    let big = "v".repeat(20 * 1024 + 1);
    let err = service_error(
        ssm.create_ops_item()
            .title("t")
            .description("d")
            .source("s")
            .operational_data("payload", searchable(&big))
            .send()
            .await,
    );
    assert!(err.is_ops_item_invalid_parameter_exception(), "{err:?}");

    let err = service_error(
        ssm.create_ops_item()
            .title("t")
            .description("d")
            .source("s")
            .operational_data("/aws/dedup", searchable("not json"))
            .send()
            .await,
    );
    assert!(err.is_ops_item_invalid_parameter_exception(), "{err:?}");

    // Quota: one item exists; a quota of 2 allows one more, then the typed limit error.
    env.control
        .call(
            "POST",
            "quota",
            Some(json!({ "tenant": env.tenant, "opsitems": 2 })),
        )
        .await
        .expect("quota");
    create_ops_item(&ssm, "second", None).await;
    let err = service_error(
        ssm.create_ops_item()
            .title("third")
            .description("d")
            .source("s")
            .send()
            .await,
    );
    assert!(err.is_ops_item_limit_exceeded_exception(), "{err:?}");

    let state = env
        .control
        .state("opsitems", &env.tenant)
        .await
        .expect("state");
    assert_eq!(
        state["OpsItems"].as_array().map(Vec::len),
        Some(2),
        "rejected requests created nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_ops_items_paginates_newest_first() {
    let env = env().await;
    let ssm = client(&env).await;

    let mut created = Vec::new();
    for n in 0..120 {
        created.push(
            create_ops_item(
                &ssm,
                &format!("item {n:03}"),
                Some(&format!("page-test-{n}")),
            )
            .await,
        );
    }

    let pages = ssm
        .describe_ops_items()
        .max_results(50)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("DescribeOpsItems pages");
    assert_eq!(pages.len(), 3);
    assert!(
        pages
            .iter()
            .all(|p| p.ops_item_summaries().len() <= PAGE_LIMIT)
    );
    let ids: Vec<String> = pages
        .iter()
        .flat_map(|p| p.ops_item_summaries())
        .filter_map(|s| s.ops_item_id().map(str::to_owned))
        .collect();
    assert_unique(&ids);
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(ids, newest_first, "every item exactly once, newest first");

    // Manual paging with a small page and NextToken.
    let mut token = None;
    let mut manual = Vec::new();
    let mut n_pages = 0;
    loop {
        let page = ssm
            .describe_ops_items()
            .max_results(7)
            .set_next_token(token)
            .send()
            .await
            .expect("DescribeOpsItems");
        n_pages += 1;
        assert!(page.ops_item_summaries().len() <= 7);
        manual.extend(
            page.ops_item_summaries()
                .iter()
                .filter_map(|s| s.ops_item_id().map(str::to_owned)),
        );
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(n_pages, 120usize.div_ceil(7));
    assert_eq!(manual, newest_first);

    let err = service_error(
        ssm.describe_ops_items()
            .next_token("garbled-token")
            .send()
            .await,
    );
    assert_eq!(err.code(), Some("InvalidNextToken"), "{err:?}");
    let err = service_error(ssm.describe_ops_items().max_results(51).send().await);
    assert_eq!(
        err.code(),
        Some("OpsItemInvalidParameterException"),
        "{err:?}"
    );
}

// ------------------------------------------------------------------ Compliance

fn compliance_entry(
    id: &str,
    sev: ComplianceSeverity,
    status: ComplianceStatus,
) -> ComplianceItemEntry {
    ComplianceItemEntry::builder()
        .id(id)
        .title(format!("check {id}"))
        .severity(sev)
        .status(status)
        .details("DocumentName", "Custom-Check")
        .build()
        .expect("compliance entry")
}

fn exec_summary(execution_id: &str) -> ComplianceExecutionSummary {
    ComplianceExecutionSummary::builder()
        .execution_time(DateTime::from_secs(now_secs()))
        .execution_id(execution_id)
        .execution_type("Command")
        .build()
        .expect("execution summary")
}

#[tokio::test(flavor = "multi_thread")]
async fn compliance_put_list_and_summaries() {
    let env = env().await;
    let ssm = client(&env).await;
    let a = "i-0aaaaaaaaaaaaaaa1";
    let b = "i-0bbbbbbbbbbbbbbb2";

    ssm.put_compliance_items()
        .resource_id(a)
        .resource_type("ManagedInstance")
        .compliance_type("Custom:Hardening")
        .execution_summary(exec_summary("run-1"))
        .items(compliance_entry(
            "ssh-root-login",
            ComplianceSeverity::Critical,
            ComplianceStatus::NonCompliant,
        ))
        .items(compliance_entry(
            "firewall",
            ComplianceSeverity::Medium,
            ComplianceStatus::NonCompliant,
        ))
        .items(compliance_entry(
            "ntp",
            ComplianceSeverity::Low,
            ComplianceStatus::Compliant,
        ))
        .send()
        .await
        .expect("PutComplianceItems a");
    ssm.put_compliance_items()
        .resource_id(b)
        .resource_type("ManagedInstance")
        .compliance_type("Custom:Hardening")
        .execution_summary(exec_summary("run-2"))
        .items(compliance_entry(
            "ssh-root-login",
            ComplianceSeverity::Critical,
            ComplianceStatus::Compliant,
        ))
        .send()
        .await
        .expect("PutComplianceItems b");

    // PARTIAL merges by item id: firewall becomes compliant, a new item is added.
    ssm.put_compliance_items()
        .resource_id(a)
        .resource_type("ManagedInstance")
        .compliance_type("Custom:Hardening")
        .execution_summary(exec_summary("run-3"))
        .upload_type(ComplianceUploadType::Partial)
        .items(compliance_entry(
            "firewall",
            ComplianceSeverity::Medium,
            ComplianceStatus::Compliant,
        ))
        .items(compliance_entry(
            "auditd",
            ComplianceSeverity::High,
            ComplianceStatus::NonCompliant,
        ))
        .send()
        .await
        .expect("PutComplianceItems partial");

    let items = ssm
        .list_compliance_items()
        .resource_ids(a)
        .resource_types("ManagedInstance")
        .send()
        .await
        .expect("ListComplianceItems");
    let by_id: BTreeMap<&str, _> = items
        .compliance_items()
        .iter()
        .map(|i| (i.id().unwrap_or_default(), i))
        .collect();
    assert_eq!(
        by_id.keys().copied().collect::<Vec<_>>(),
        vec!["auditd", "firewall", "ntp", "ssh-root-login"]
    );
    let ssh = by_id["ssh-root-login"];
    assert_eq!(ssh.compliance_type(), Some("Custom:Hardening"));
    assert_eq!(ssh.resource_id(), Some(a));
    assert_eq!(ssh.resource_type(), Some("ManagedInstance"));
    assert_eq!(ssh.status(), Some(&ComplianceStatus::NonCompliant));
    assert_eq!(ssh.severity(), Some(&ComplianceSeverity::Critical));
    assert_eq!(ssh.title(), Some("check ssh-root-login"));
    assert_eq!(
        ssh.details()
            .and_then(|d| d.get("DocumentName"))
            .map(String::as_str),
        Some("Custom-Check")
    );
    assert_eq!(
        ssh.execution_summary().and_then(|e| e.execution_id()),
        Some("run-3")
    );
    assert_eq!(
        by_id["firewall"].status(),
        Some(&ComplianceStatus::Compliant)
    );

    let non_compliant = ssm
        .list_compliance_items()
        .filters(
            ComplianceStringFilter::builder()
                .key("Status")
                .values("NON_COMPLIANT")
                .r#type(ComplianceQueryOperatorType::Equal)
                .build(),
        )
        .send()
        .await
        .expect("ListComplianceItems filtered");
    let nc: BTreeSet<(&str, &str)> = non_compliant
        .compliance_items()
        .iter()
        .map(|i| {
            (
                i.resource_id().unwrap_or_default(),
                i.id().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(nc, BTreeSet::from([(a, "auditd"), (a, "ssh-root-login")]));

    let summaries = ssm
        .list_resource_compliance_summaries()
        .send()
        .await
        .expect("ListResourceComplianceSummaries");
    let rows = summaries.resource_compliance_summary_items();
    assert_eq!(rows.len(), 2);
    let ra = rows
        .iter()
        .find(|r| r.resource_id() == Some(a))
        .expect("summary of a");
    assert_eq!(ra.compliance_type(), Some("Custom:Hardening"));
    assert_eq!(ra.status(), Some(&ComplianceStatus::NonCompliant));
    assert_eq!(ra.overall_severity(), Some(&ComplianceSeverity::Critical));
    let cs = ra.compliant_summary().expect("CompliantSummary");
    assert_eq!(cs.compliant_count(), 2);
    assert_eq!(
        cs.severity_summary()
            .map(|s| (s.medium_count(), s.low_count())),
        Some((1, 1))
    );
    let ncs = ra.non_compliant_summary().expect("NonCompliantSummary");
    assert_eq!(ncs.non_compliant_count(), 2);
    assert_eq!(
        ncs.severity_summary()
            .map(|s| (s.critical_count(), s.high_count())),
        Some((1, 1))
    );
    let rb = rows
        .iter()
        .find(|r| r.resource_id() == Some(b))
        .expect("summary of b");
    assert_eq!(rb.status(), Some(&ComplianceStatus::Compliant));

    let only_nc = ssm
        .list_resource_compliance_summaries()
        .filters(
            ComplianceStringFilter::builder()
                .key("Status")
                .values("NON_COMPLIANT")
                .build(),
        )
        .send()
        .await
        .expect("ListResourceComplianceSummaries filtered");
    let ids: Vec<_> = only_nc
        .resource_compliance_summary_items()
        .iter()
        .filter_map(|r| r.resource_id())
        .collect();
    assert_eq!(ids, vec![a]);

    let per_type = ssm
        .list_compliance_summaries()
        .send()
        .await
        .expect("ListComplianceSummaries");
    let rows = per_type.compliance_summary_items();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].compliance_type(), Some("Custom:Hardening"));
    assert_eq!(
        rows[0].compliant_summary().map(|s| s.compliant_count()),
        Some(1)
    );
    assert_eq!(
        rows[0]
            .non_compliant_summary()
            .map(|s| s.non_compliant_count()),
        Some(1)
    );
    assert_eq!(
        rows[0]
            .non_compliant_summary()
            .and_then(|s| s.severity_summary())
            .map(|s| s.critical_count()),
        Some(1)
    );

    // Documented errors.
    let err = service_error(
        ssm.put_compliance_items()
            .resource_id(a)
            .resource_type("Bucket")
            .compliance_type("Custom:Hardening")
            .execution_summary(exec_summary("x"))
            .items(compliance_entry(
                "x",
                ComplianceSeverity::Low,
                ComplianceStatus::Compliant,
            ))
            .send()
            .await,
    );
    assert!(err.is_invalid_resource_type(), "{err:?}");
    let err = service_error(
        ssm.put_compliance_items()
            .resource_id("not-a-node")
            .resource_type("ManagedInstance")
            .compliance_type("Custom:Hardening")
            .execution_summary(exec_summary("x"))
            .items(compliance_entry(
                "x",
                ComplianceSeverity::Low,
                ComplianceStatus::Compliant,
            ))
            .send()
            .await,
    );
    assert!(err.is_invalid_resource_id(), "{err:?}");
    let err = service_error(
        ssm.list_compliance_items()
            .filters(
                ComplianceStringFilter::builder()
                    .key("Bogus")
                    .values("x")
                    .build(),
            )
            .send()
            .await,
    );
    assert!(err.is_invalid_filter(), "{err:?}");
    let err = service_error(
        ssm.list_compliance_items()
            .resource_types("Bucket")
            .send()
            .await,
    );
    assert!(err.is_invalid_resource_type(), "{err:?}");
    let err = service_error(
        ssm.list_resource_compliance_summaries()
            .filters(
                ComplianceStringFilter::builder()
                    .key("Bogus")
                    .values("x")
                    .build(),
            )
            .send()
            .await,
    );
    assert!(err.is_invalid_filter(), "{err:?}");
    let err = service_error(
        ssm.list_compliance_summaries()
            .filters(
                ComplianceStringFilter::builder()
                    .key("Bogus")
                    .values("x")
                    .build(),
            )
            .send()
            .await,
    );
    assert!(err.is_invalid_filter(), "{err:?}");
    let err = service_error(
        ssm.list_compliance_items()
            .next_token("garbled")
            .send()
            .await,
    );
    assert!(err.is_invalid_next_token(), "{err:?}");
    let err = service_error(
        ssm.list_resource_compliance_summaries()
            .next_token("garbled")
            .send()
            .await,
    );
    assert!(err.is_invalid_next_token(), "{err:?}");
    let err = service_error(
        ssm.list_compliance_summaries()
            .next_token("garbled")
            .send()
            .await,
    );
    assert!(err.is_invalid_next_token(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn compliance_pagination_over_seeded_fleet() {
    let env = env().await;
    let ssm = client(&env).await;
    seed_fleet(
        &env,
        json!({"count": 60, "seed": 11, "noncompliant_fraction": 0.4, "not_applicable_fraction": 0.2,
               "compliance_types": ["Patch", "Association", "Custom:Baseline"]}),
    )
    .await;
    let state = env
        .control
        .state("compliance", &env.tenant)
        .await
        .expect("compliance state");
    let resources = state["Resources"].as_object().expect("Resources");
    assert_eq!(resources.len(), 60);
    let mut expected_items = BTreeSet::new();
    for (rid, types) in resources {
        for (ctype, rec) in types.as_object().expect("types") {
            for item in rec["Items"].as_array().expect("Items") {
                expected_items.insert((
                    rid.clone(),
                    ctype.clone(),
                    item["Id"].as_str().expect("Id").to_owned(),
                ));
            }
        }
    }
    assert!(expected_items.len() > 300);

    let pages = ssm
        .list_compliance_items()
        .max_results(50)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("ListComplianceItems pages");
    assert!(
        pages
            .iter()
            .all(|p| p.compliance_items().len() <= PAGE_LIMIT)
    );
    assert!(pages.len() >= expected_items.len().div_ceil(PAGE_LIMIT));
    let keys: Vec<(String, String, String)> = pages
        .iter()
        .flat_map(|p| p.compliance_items())
        .map(|i| {
            (
                i.resource_id().unwrap_or_default().to_owned(),
                i.compliance_type().unwrap_or_default().to_owned(),
                i.id().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(assert_unique(&keys), expected_items);

    let pages = ssm
        .list_resource_compliance_summaries()
        .max_results(50)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("ListResourceComplianceSummaries pages");
    assert_eq!(pages.len(), 4, "180 rows in pages of 50");
    assert!(
        pages
            .iter()
            .all(|p| p.resource_compliance_summary_items().len() <= PAGE_LIMIT)
    );
    let keys: Vec<(String, String)> = pages
        .iter()
        .flat_map(|p| p.resource_compliance_summary_items())
        .map(|r| {
            (
                r.resource_id().unwrap_or_default().to_owned(),
                r.compliance_type().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(assert_unique(&keys).len(), 180);

    let pages = ssm
        .list_compliance_summaries()
        .max_results(1)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("ListComplianceSummaries pages");
    let types: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.compliance_summary_items())
        .filter_map(|s| s.compliance_type())
        .collect();
    assert_eq!(types, vec!["Association", "Custom:Baseline", "Patch"]);
    for page in &pages {
        for s in page.compliance_summary_items() {
            let total = s.compliant_summary().map_or(0, |c| c.compliant_count())
                + s.non_compliant_summary()
                    .map_or(0, |c| c.non_compliant_count());
            assert_eq!(total, 60, "every resource counted once per type: {s:?}");
        }
    }
}

// ------------------------------------------------------------------ Inventory

fn inventory_item(type_name: &str, rows: Vec<HashMap<String, String>>) -> InventoryItem {
    InventoryItem::builder()
        .type_name(type_name)
        .schema_version("1.0")
        .capture_time("2025-01-15T10:00:00Z")
        .set_content(Some(rows))
        .build()
        .expect("inventory item")
}

fn row(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn inventory_put_get_list_and_schema() {
    let env = env().await;
    let ssm = client(&env).await;
    seed_fleet(
        &env,
        json!({"count": 70, "seed": 5, "windows_fraction": 0.3}),
    )
    .await;
    let nodes = fleet(&env).await;
    let target = nodes[3].0.clone();

    let racks: Vec<_> = (0..120)
        .map(|n| {
            row(&[
                ("Row", if n % 2 == 0 { "A" } else { "B" }),
                ("Slot", &n.to_string()),
            ])
        })
        .collect();
    let put = ssm
        .put_inventory()
        .instance_id(&target)
        .items(inventory_item("Custom:Rack", racks))
        .send()
        .await
        .expect("PutInventory");
    assert!(put.message().is_some());

    // ListInventoryEntries: manual paging (the SDK has no paginator for it).
    let mut token = None;
    let mut entries = Vec::new();
    let mut page_sizes = Vec::new();
    loop {
        let page = ssm
            .list_inventory_entries()
            .instance_id(&target)
            .type_name("Custom:Rack")
            .max_results(50)
            .set_next_token(token)
            .send()
            .await
            .expect("ListInventoryEntries");
        assert_eq!(page.instance_id(), Some(target.as_str()));
        assert_eq!(page.type_name(), Some("Custom:Rack"));
        assert_eq!(page.schema_version(), Some("1.0"));
        assert_eq!(page.capture_time(), Some("2025-01-15T10:00:00Z"));
        page_sizes.push(page.entries().len());
        entries.extend(page.entries().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(page_sizes, vec![50, 50, 20]);
    let slots: Vec<&str> = entries.iter().map(|e| e["Slot"].as_str()).collect();
    assert_eq!(assert_unique(&slots).len(), 120);

    let filtered = ssm
        .list_inventory_entries()
        .instance_id(&target)
        .type_name("Custom:Rack")
        .filters(
            InventoryFilter::builder()
                .key("Row")
                .values("A")
                .r#type(InventoryQueryOperatorType::Equal)
                .build()
                .expect("filter"),
        )
        .max_results(50)
        .send()
        .await
        .expect("ListInventoryEntries filtered");
    assert!(!filtered.entries().is_empty());
    assert!(filtered.entries().iter().all(|e| e["Row"] == "A"));

    let apps = ssm
        .list_inventory_entries()
        .instance_id(&target)
        .type_name("AWS:Application")
        .send()
        .await
        .expect("ListInventoryEntries AWS:Application");
    assert!(apps.entries().len() >= 4);
    assert!(
        apps.entries()
            .iter()
            .all(|e| e.contains_key("Name") && e.contains_key("Version"))
    );

    // GetInventory: every node, paged, each with AWS:InstanceInformation by default.
    let pages = ssm
        .get_inventory()
        .max_results(50)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("GetInventory");
    assert!(pages.iter().all(|p| p.entities().len() <= PAGE_LIMIT));
    let mut ids = Vec::new();
    for e in pages.iter().flat_map(|p| p.entities()) {
        let id = e.id().expect("entity id");
        ids.push(id.to_owned());
        let info = &e.data().expect("Data")["AWS:InstanceInformation"];
        assert_eq!(info.type_name(), "AWS:InstanceInformation");
        assert_eq!(info.content()[0]["InstanceId"], id);
        assert!(info.content_hash().is_some() && info.capture_time().is_some());
    }
    let expected: BTreeSet<String> = nodes.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(assert_unique(&ids), expected);

    let by_custom = ssm
        .get_inventory()
        .filters(
            InventoryFilter::builder()
                .key("Custom:Rack.Slot")
                .values("7")
                .r#type(InventoryQueryOperatorType::Equal)
                .build()
                .expect("filter"),
        )
        .result_attributes(
            ResultAttribute::builder()
                .type_name("Custom:Rack")
                .build()
                .expect("attr"),
        )
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("GetInventory filtered");
    let entities: Vec<_> = by_custom.iter().flat_map(|p| p.entities()).collect();
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0].id(), Some(target.as_str()));
    let data = entities[0].data().expect("Data");
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["Custom:Rack"]);
    assert_eq!(data["Custom:Rack"].content().len(), 120);

    let online = ssm
        .get_inventory()
        .filters(
            InventoryFilter::builder()
                .key("AWS:InstanceInformation.PlatformType")
                .values("Windows")
                .r#type(InventoryQueryOperatorType::Equal)
                .build()
                .expect("filter"),
        )
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("GetInventory windows");
    let windows: Vec<_> = online.iter().flat_map(|p| p.entities()).collect();
    assert!(!windows.is_empty() && windows.len() < 70);
    assert!(windows.iter().all(
        |e| e.data().expect("Data")["AWS:InstanceInformation"].content()[0]["PlatformType"]
            == "Windows"
    ));

    // GetInventorySchema: standard types plus the custom one with inferred data types.
    let schema_pages = ssm
        .get_inventory_schema()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("GetInventorySchema");
    let names: Vec<&str> = schema_pages
        .iter()
        .flat_map(|p| p.schemas())
        .map(|s| s.type_name())
        .collect();
    assert_unique(&names);
    for t in [
        "AWS:Application",
        "AWS:InstanceInformation",
        "AWS:Network",
        "AWS:PatchSummary",
        "Custom:Rack",
    ] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }
    let rack = ssm
        .get_inventory_schema()
        .type_name("Custom:Rack")
        .send()
        .await
        .expect("GetInventorySchema rack");
    assert_eq!(rack.schemas().len(), 1);
    let attrs: BTreeMap<&str, &InventoryAttributeDataType> = rack.schemas()[0]
        .attributes()
        .iter()
        .map(|a| (a.name(), a.data_type()))
        .collect();
    assert_eq!(attrs.get("Row"), Some(&&InventoryAttributeDataType::String));
    assert_eq!(
        attrs.get("Slot"),
        Some(&&InventoryAttributeDataType::Number)
    );

    // Documented errors.
    let err = service_error(
        ssm.put_inventory()
            .instance_id("i-0fffffffffffffff0")
            .items(inventory_item("Custom:Rack", vec![row(&[("Row", "A")])]))
            .send()
            .await,
    );
    assert!(err.is_invalid_instance_id(), "{err:?}");
    let err = service_error(
        ssm.put_inventory()
            .instance_id(&target)
            .items(inventory_item("AWS:Bogus", vec![row(&[("a", "b")])]))
            .send()
            .await,
    );
    assert!(err.is_invalid_type_name_exception(), "{err:?}");
    let err = service_error(
        ssm.get_inventory()
            .filters(
                InventoryFilter::builder()
                    .key("NoTypePrefix")
                    .values("x")
                    .build()
                    .expect("filter"),
            )
            .send()
            .await,
    );
    assert!(err.is_invalid_filter(), "{err:?}");
    let err = service_error(
        ssm.get_inventory()
            .aggregators(
                InventoryAggregator::builder()
                    .expression("AWS:Application.Name")
                    .build(),
            )
            .send()
            .await,
    );
    assert!(err.is_invalid_aggregator_exception(), "{err:?}");
    let err = service_error(
        ssm.get_inventory()
            .result_attributes(
                ResultAttribute::builder()
                    .type_name("Custom:Unknown")
                    .build()
                    .expect("attr"),
            )
            .send()
            .await,
    );
    assert!(err.is_invalid_result_attribute_exception(), "{err:?}");
    let err = service_error(ssm.get_inventory().next_token("garbled").send().await);
    assert!(err.is_invalid_next_token(), "{err:?}");
    let err = service_error(
        ssm.list_inventory_entries()
            .instance_id("i-0fffffffffffffff0")
            .type_name("AWS:Application")
            .send()
            .await,
    );
    assert!(err.is_invalid_instance_id(), "{err:?}");
    let err = service_error(
        ssm.list_inventory_entries()
            .instance_id(&target)
            .type_name("AWS:Bogus")
            .send()
            .await,
    );
    assert!(err.is_invalid_type_name_exception(), "{err:?}");
    let err = service_error(
        ssm.get_inventory_schema()
            .type_name("AWS:Bogus")
            .send()
            .await,
    );
    assert!(err.is_invalid_type_name_exception(), "{err:?}");
}

// ------------------------------------------------------------------ Automation

#[tokio::test(flavor = "multi_thread")]
async fn automation_start_get_describe_and_idempotency() {
    let env = env().await;
    let ssm = client(&env).await;
    let token = uuid::Uuid::new_v4().to_string();

    let start = || {
        ssm.start_automation_execution()
            .document_name("AWS-RestartEC2Instance")
            .parameters("InstanceId", vec!["i-0123456789abcdef0".to_owned()])
            .client_token(&token)
    };
    let first = start().send().await.expect("StartAutomationExecution");
    let id = first.automation_execution_id().expect("id").to_owned();
    assert!(is_uuid(&id), "{id}");
    let again = start().send().await.expect("same ClientToken");
    assert_eq!(
        again.automation_execution_id(),
        Some(id.as_str()),
        "same token, same execution"
    );
    let state = env
        .control
        .state("automations", &env.tenant)
        .await
        .expect("state");
    assert_eq!(
        state["AutomationExecutions"].as_array().map(Vec::len),
        Some(1)
    );

    let err = service_error(
        ssm.start_automation_execution()
            .document_name("AWS-RestartEC2Instance")
            .parameters("InstanceId", vec!["i-0fedcba9876543210".to_owned()])
            .client_token(&token)
            .send()
            .await,
    );
    assert!(err.is_idempotent_parameter_mismatch(), "{err:?}");
    let err = service_error(
        ssm.start_automation_execution()
            .document_name("AWS-RestartEC2Instance")
            .client_token("not-a-uuid")
            .send()
            .await,
    );
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    let err = service_error(
        ssm.start_automation_execution()
            .document_name("No-Such-Runbook")
            .send()
            .await,
    );
    assert!(
        err.is_automation_definition_not_found_exception(),
        "{err:?}"
    );
    env.control
        .call(
            "POST",
            "documents",
            Some(json!({"tenant": env.tenant, "name": "Team-Remediate", "document_type": "Automation", "versions": ["1", "2"]})),
        )
        .await
        .expect("register document");
    let err = service_error(
        ssm.start_automation_execution()
            .document_name("Team-Remediate")
            .document_version("3")
            .send()
            .await,
    );
    assert!(
        err.is_automation_definition_version_not_found_exception(),
        "{err:?}"
    );
    let custom = ssm
        .start_automation_execution()
        .document_name("Team-Remediate")
        .document_version("2")
        .send()
        .await
        .expect("registered document");
    let custom_id = custom.automation_execution_id().expect("id").to_owned();

    let got = ssm
        .get_automation_execution()
        .automation_execution_id(&id)
        .send()
        .await
        .expect("GetAutomationExecution");
    let ex = got.automation_execution().expect("AutomationExecution");
    assert_eq!(ex.automation_execution_id(), Some(id.as_str()));
    assert_eq!(ex.document_name(), Some("AWS-RestartEC2Instance"));
    assert_eq!(
        ex.automation_execution_status(),
        Some(&AutomationExecutionStatus::Inprogress)
    );
    assert_eq!(
        ex.parameters()
            .and_then(|p| p.get("InstanceId"))
            .map(Vec::as_slice),
        Some(&["i-0123456789abcdef0".to_owned()][..])
    );
    assert!(ex.execution_start_time().is_some());
    assert!(ex.execution_end_time().is_none());
    assert!(ex.executed_by().expect("ExecutedBy").contains(&env.tenant));

    env.control
        .call(
            "POST",
            &format!("automations/{id}"),
            Some(json!({"tenant": env.tenant, "status": "Success", "outputs": {"RestartInstance.Output": "done"}})),
        )
        .await
        .expect("finish execution");
    let got = ssm
        .get_automation_execution()
        .automation_execution_id(&id)
        .send()
        .await
        .expect("GetAutomationExecution");
    let ex = got.automation_execution().expect("AutomationExecution");
    assert_eq!(
        ex.automation_execution_status(),
        Some(&AutomationExecutionStatus::Success)
    );
    assert!(ex.execution_end_time().is_some());
    assert_eq!(
        ex.outputs()
            .and_then(|o| o.get("RestartInstance.Output"))
            .map(Vec::as_slice),
        Some(&["done".to_owned()][..])
    );

    let err = service_error(
        ssm.get_automation_execution()
            .automation_execution_id(uuid::Uuid::new_v4().to_string())
            .send()
            .await,
    );
    assert!(err.is_automation_execution_not_found_exception(), "{err:?}");

    // Fill up to the 100 active executions (custom_id is active; id is finished).
    let mut all_ids = vec![id.clone(), custom_id.clone()];
    for n in 0..99 {
        let out = ssm
            .start_automation_execution()
            .document_name(if n % 2 == 0 {
                "AWS-StopEC2Instance"
            } else {
                "AWSSupport-TroubleshootSSH"
            })
            .send()
            .await
            .expect("StartAutomationExecution bulk");
        all_ids.push(out.automation_execution_id().expect("id").to_owned());
    }
    let err = service_error(
        ssm.start_automation_execution()
            .document_name("AWS-StopEC2Instance")
            .send()
            .await,
    );
    assert!(
        err.is_automation_execution_limit_exceeded_exception(),
        "{err:?}"
    );

    let pages = ssm
        .describe_automation_executions()
        .max_results(50)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("DescribeAutomationExecutions pages");
    assert_eq!(pages.len(), 3);
    assert!(
        pages
            .iter()
            .all(|p| p.automation_execution_metadata_list().len() <= PAGE_LIMIT)
    );
    let listed: Vec<String> = pages
        .iter()
        .flat_map(|p| p.automation_execution_metadata_list())
        .filter_map(|m| m.automation_execution_id().map(str::to_owned))
        .collect();
    let mut newest_first = all_ids.clone();
    newest_first.reverse();
    assert_unique(&listed);
    assert_eq!(listed, newest_first);

    let filter = |key: AutomationExecutionFilterKey, value: &str| {
        AutomationExecutionFilter::builder()
            .key(key)
            .values(value)
            .build()
            .expect("filter")
    };
    let done = ssm
        .describe_automation_executions()
        .filters(filter(
            AutomationExecutionFilterKey::ExecutionStatus,
            "Success",
        ))
        .send()
        .await
        .expect("DescribeAutomationExecutions by status");
    let list = done.automation_execution_metadata_list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].automation_execution_id(), Some(id.as_str()));
    assert_eq!(list[0].document_name(), Some("AWS-RestartEC2Instance"));
    assert_eq!(
        list[0].automation_execution_status(),
        Some(&AutomationExecutionStatus::Success)
    );

    let support = ssm
        .describe_automation_executions()
        .filters(filter(
            AutomationExecutionFilterKey::DocumentNamePrefix,
            "AWSSupport-",
        ))
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("DescribeAutomationExecutions by prefix");
    let n_support: usize = support
        .iter()
        .map(|p| p.automation_execution_metadata_list().len())
        .sum();
    assert_eq!(n_support, 49);

    let err = service_error(
        ssm.describe_automation_executions()
            .filters(filter(
                AutomationExecutionFilterKey::StartTimeBefore,
                "not-a-time",
            ))
            .send()
            .await,
    );
    assert!(err.is_invalid_filter_value(), "{err:?}");
    let err = service_error(
        ssm.describe_automation_executions()
            .next_token("garbled")
            .send()
            .await,
    );
    assert!(err.is_invalid_next_token(), "{err:?}");
}

// ------------------------------------------------------------------ Fleet

#[tokio::test(flavor = "multi_thread")]
async fn describe_instance_information_pages_a_200_node_fleet() {
    let env = env().await;
    let ssm = client(&env).await;
    let seeded = seed_fleet(
        &env,
        json!({"count": 200, "seed": 42, "hybrid_fraction": 0.3, "windows_fraction": 0.3, "offline_fraction": 0.1,
               "stopped_fraction": 0.05, "tags": {"Environment": ["prod", "dev"], "Patch Group": "web"}}),
    )
    .await;
    assert_eq!(seeded["created"], 200);
    let nodes = fleet(&env).await;
    let expected: BTreeSet<String> = nodes.iter().map(|(id, _)| id.clone()).collect();

    let pages = ssm
        .describe_instance_information()
        .max_results(50)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("DescribeInstanceInformation pages");
    assert_eq!(pages.len(), 4);
    assert!(
        pages
            .iter()
            .all(|p| p.instance_information_list().len() <= PAGE_LIMIT)
    );
    let infos: Vec<_> = pages
        .iter()
        .flat_map(|p| p.instance_information_list())
        .collect();
    let ids: Vec<String> = infos
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    assert_eq!(assert_unique(&ids), expected);
    let (mut ec2, mut hybrid) = (0, 0);
    for info in &infos {
        let id = info.instance_id().expect("InstanceId");
        match node_id_kind(id) {
            Some("i") => {
                ec2 += 1;
                assert_eq!(
                    info.resource_type(),
                    Some(&ResourceType::Ec2Instance),
                    "{id}"
                );
                assert_eq!(
                    info.source_type().map(|s| s.as_str()),
                    Some("AWS::EC2::Instance")
                );
            }
            Some(_) => {
                hybrid += 1;
                assert_eq!(
                    info.resource_type(),
                    Some(&ResourceType::ManagedInstance),
                    "{id}"
                );
                assert!(info.activation_id().is_some_and(is_uuid), "{id}");
                assert!(info.registration_date().is_some());
            }
            None => panic!("instance id {id} matches neither i-<17 hex> nor mi-<17 hex>"),
        }
        assert!(matches!(
            info.ping_status(),
            Some(PingStatus::Online | PingStatus::ConnectionLost)
        ));
        assert!(info.platform_type().is_some() && info.platform_name().is_some());
        assert!(info.agent_version().is_some() && info.ip_address().is_some());
        assert!(info.last_ping_date_time().is_some());
        assert_eq!(info.source_id(), Some(id));
    }
    assert!(
        ec2 > 0 && hybrid > 0,
        "mixed fleet: {ec2} EC2, {hybrid} hybrid"
    );

    // Smallest page size the API allows.
    let small = ssm
        .describe_instance_information()
        .max_results(5)
        .send()
        .await
        .expect("MaxResults 5");
    assert_eq!(small.instance_information_list().len(), 5);
    assert!(small.next_token().is_some());
    let err = service_error(
        ssm.describe_instance_information()
            .max_results(4)
            .send()
            .await,
    );
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    let err = service_error(
        ssm.describe_instance_information()
            .max_results(51)
            .send()
            .await,
    );
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");

    // Filters.
    let string_filter = |key: &str, value: &str| {
        InstanceInformationStringFilter::builder()
            .key(key)
            .values(value)
            .build()
            .expect("filter")
    };
    let hybrid_only = ssm
        .describe_instance_information()
        .filters(string_filter("ResourceType", "ManagedInstance"))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ResourceType filter");
    assert_eq!(hybrid_only.len(), hybrid);
    let prod = ssm
        .describe_instance_information()
        .filters(string_filter("tag:Environment", "prod"))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("tag filter");
    let expected_prod = nodes
        .iter()
        .filter(|(_, tags)| tags["Environment"] == "prod")
        .count();
    assert_eq!(prod.len(), expected_prod);
    let lost = ssm
        .describe_instance_information()
        .filters(string_filter("PingStatus", "ConnectionLost"))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("PingStatus filter");
    assert!(
        lost.iter()
            .all(|i| i.ping_status() == Some(&PingStatus::ConnectionLost))
    );
    let two = ssm
        .describe_instance_information()
        .filters(
            InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .values(&nodes[0].0)
                .values(&nodes[199].0)
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect("InstanceIds filter");
    let got: BTreeSet<&str> = two
        .instance_information_list()
        .iter()
        .filter_map(|i| i.instance_id())
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([nodes[0].0.as_str(), nodes[199].0.as_str()])
    );

    // A terminated node is no longer listed.
    env.control
        .call(
            "POST",
            "fleet/node",
            Some(json!({"tenant": env.tenant, "instance_id": nodes[10].0, "state": "terminated"})),
        )
        .await
        .expect("terminate node");
    let after = ssm
        .describe_instance_information()
        .max_results(50)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("after termination");
    assert_eq!(after.len(), 199);
    assert!(
        after
            .iter()
            .all(|i| i.instance_id() != Some(nodes[10].0.as_str()))
    );

    // Documented errors.
    let err = service_error(
        ssm.describe_instance_information()
            .filters(string_filter("InstanceIds", "i-0fffffffffffffff0"))
            .send()
            .await,
    );
    assert!(err.is_invalid_instance_id(), "{err:?}");
    let err = service_error(
        ssm.describe_instance_information()
            .filters(string_filter("Bogus", "x"))
            .send()
            .await,
    );
    assert!(err.is_invalid_filter_key(), "{err:?}");
    let err = service_error(
        ssm.describe_instance_information()
            .next_token("garbled")
            .send()
            .await,
    );
    assert!(err.is_invalid_next_token(), "{err:?}");
}

// ------------------------------------------------------------------ Change Calendar

#[tokio::test(flavor = "multi_thread")]
async fn calendar_state_open_closed_and_transitions() {
    let env = env().await;
    let ssm = client(&env).await;
    let now = now_secs();
    let (start, end) = (now - 3600, now + 3600);
    env.control
        .call(
            "POST",
            "calendars",
            Some(
                json!({"tenant": env.tenant, "name": "maintenance-freeze", "default_state": "OPEN",
                        "events": [{"start": start, "end": end}]}),
            ),
        )
        .await
        .expect("calendar");
    env.control
        .call(
            "POST",
            "calendars",
            Some(json!({"tenant": env.tenant, "name": "always-open", "default_state": "OPEN"})),
        )
        .await
        .expect("calendar");

    let during = ssm
        .get_calendar_state()
        .calendar_names("maintenance-freeze")
        .send()
        .await
        .expect("GetCalendarState");
    assert_eq!(during.state(), Some(&CalendarState::Closed));
    assert_eq!(during.next_transition_time(), Some(iso(end).as_str()));
    assert!(during.at_time().is_some());

    let before_at = iso(start - 600);
    let before = ssm
        .get_calendar_state()
        .calendar_names("maintenance-freeze")
        .at_time(&before_at)
        .send()
        .await
        .expect("GetCalendarState before");
    assert_eq!(before.state(), Some(&CalendarState::Open));
    assert_eq!(before.at_time(), Some(before_at.as_str()));
    assert_eq!(before.next_transition_time(), Some(iso(start).as_str()));

    let after = ssm
        .get_calendar_state()
        .calendar_names("arn:aws:ssm:us-east-1:123456789012:document/maintenance-freeze")
        .at_time(iso(end + 600))
        .send()
        .await
        .expect("GetCalendarState by ARN");
    assert_eq!(after.state(), Some(&CalendarState::Open));
    assert_eq!(after.next_transition_time(), None);

    let open = ssm
        .get_calendar_state()
        .calendar_names("always-open")
        .send()
        .await
        .expect("open calendar");
    assert_eq!(open.state(), Some(&CalendarState::Open));
    let combined = ssm
        .get_calendar_state()
        .calendar_names("always-open")
        .calendar_names("maintenance-freeze")
        .send()
        .await
        .expect("two calendars");
    assert_eq!(
        combined.state(),
        Some(&CalendarState::Closed),
        "closed if any calendar is closed"
    );

    let err = service_error(
        ssm.get_calendar_state()
            .calendar_names("no-such-calendar")
            .send()
            .await,
    );
    assert!(err.is_invalid_document(), "{err:?}");
}

// ------------------------------------------------------------------ State Manager

#[tokio::test(flavor = "multi_thread")]
async fn associations_create_list_and_start_once() {
    let env = env().await;
    let ssm = client(&env).await;
    seed_fleet(
        &env,
        json!({"count": 12, "seed": 3, "tags": {"Role": ["web", "db"]}}),
    )
    .await;
    let nodes = fleet(&env).await;
    let first = nodes[0].0.clone();
    let web: Vec<String> = nodes
        .iter()
        .filter(|(_, t)| t["Role"] == "web")
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!web.is_empty());

    let created = ssm
        .create_association()
        .name("AWS-GatherSoftwareInventory")
        .instance_id(&first)
        .schedule_expression("rate(30 minutes)")
        .association_name("inventory-first")
        .parameters("applications", vec!["Enabled".to_owned()])
        .send()
        .await
        .expect("CreateAssociation");
    let d = created
        .association_description()
        .expect("AssociationDescription");
    let a1 = d.association_id().expect("AssociationId").to_owned();
    assert!(is_uuid(&a1), "{a1}");
    assert_eq!(d.name(), Some("AWS-GatherSoftwareInventory"));
    assert_eq!(d.instance_id(), Some(first.as_str()));
    assert_eq!(d.schedule_expression(), Some("rate(30 minutes)"));
    assert_eq!(d.association_name(), Some("inventory-first"));
    assert_eq!(d.association_version(), Some("1"));
    // AWS answers Name "Associated", which is outside the model's enum: the SDK keeps it as Unknown.
    assert_eq!(d.status().map(|s| s.name().as_str()), Some("Associated"));
    assert_eq!(d.overview().and_then(|o| o.status()), Some("Pending"));
    assert!(d.date().is_some());
    assert_eq!(
        d.parameters()
            .and_then(|p| p.get("applications"))
            .map(Vec::as_slice),
        Some(&["Enabled".to_owned()][..])
    );

    let by_tag = ssm
        .create_association()
        .name("AWS-RunPatchBaseline")
        .targets(Target::builder().key("tag:Role").values("web").build())
        .parameters("Operation", vec!["Scan".to_owned()])
        .schedule_expression("cron(0 2 ? * SUN *)")
        .send()
        .await
        .expect("CreateAssociation by tag");
    let a2 = by_tag
        .association_description()
        .and_then(|d| d.association_id())
        .expect("id")
        .to_owned();
    let targets = by_tag
        .association_description()
        .map(|d| d.targets())
        .expect("targets");
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].key(), Some("tag:Role"));

    // Documented errors.
    let err = service_error(
        ssm.create_association()
            .name("AWS-GatherSoftwareInventory")
            .instance_id(&first)
            .send()
            .await,
    );
    assert!(err.is_association_already_exists(), "{err:?}");
    let err = service_error(
        ssm.create_association()
            .name("AWS-RunShellScript")
            .instance_id(&first)
            .schedule_expression("every day")
            .send()
            .await,
    );
    assert!(err.is_invalid_schedule(), "{err:?}");
    let err = service_error(
        ssm.create_association()
            .name("No-Such-Document")
            .instance_id(&first)
            .send()
            .await,
    );
    assert!(err.is_invalid_document(), "{err:?}");
    let err = service_error(
        ssm.create_association()
            .name("AWS-RunShellScript")
            .instance_id("i-0fffffffffffffff0")
            .send()
            .await,
    );
    assert!(err.is_invalid_instance_id(), "{err:?}");

    // Enough associations to page.
    let mut all = vec![a1.clone(), a2.clone()];
    for n in 0..58 {
        let out = ssm
            .create_association()
            .name("AWS-RunShellScript")
            .association_name(format!("bulk-{n:02}"))
            .targets(
                Target::builder()
                    .key("InstanceIds")
                    .values(&nodes[n % nodes.len()].0)
                    .build(),
            )
            .parameters("commands", vec![format!("echo {n}")])
            .send()
            .await
            .expect("CreateAssociation bulk");
        all.push(
            out.association_description()
                .and_then(|d| d.association_id())
                .expect("id")
                .to_owned(),
        );
    }
    let pages = ssm
        .list_associations()
        .max_results(50)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("ListAssociations pages");
    assert_eq!(pages.len(), 2);
    assert!(pages.iter().all(|p| p.associations().len() <= PAGE_LIMIT));
    let listed: Vec<String> = pages
        .iter()
        .flat_map(|p| p.associations())
        .filter_map(|a| a.association_id().map(str::to_owned))
        .collect();
    assert_unique(&listed);
    assert_eq!(listed, all, "creation order, each once");

    let assoc_filter = |key: AssociationFilterKey, value: &str| {
        AssociationFilter::builder()
            .key(key)
            .value(value)
            .build()
            .expect("filter")
    };
    let patch = ssm
        .list_associations()
        .association_filter_list(assoc_filter(
            AssociationFilterKey::Name,
            "AWS-RunPatchBaseline",
        ))
        .send()
        .await
        .expect("ListAssociations by name");
    let ids: Vec<_> = patch
        .associations()
        .iter()
        .filter_map(|a| a.association_id())
        .collect();
    assert_eq!(ids, vec![a2.as_str()]);
    let for_first = ssm
        .list_associations()
        .association_filter_list(assoc_filter(AssociationFilterKey::InstanceId, &first))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ListAssociations by instance");
    // a1 (InstanceId) plus the bulk ones targeting nodes[0] (n = 0, 12, 24, 36, 48).
    assert_eq!(for_first.len(), 1 + 5);

    ssm.start_associations_once()
        .association_ids(&a1)
        .association_ids(&a2)
        .send()
        .await
        .expect("StartAssociationsOnce");
    let runs = env
        .control
        .state("association-runs", &env.tenant)
        .await
        .expect("runs");
    let runs = runs["Runs"].as_array().expect("Runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["AssociationId"], a1.as_str());
    assert_eq!(runs[0]["Targets"], json!([first]));
    assert_eq!(runs[0]["Trigger"], "StartAssociationsOnce");
    assert_eq!(runs[1]["AssociationId"], a2.as_str());
    assert_eq!(runs[1]["Targets"], json!(web));

    let ran = ssm
        .list_associations()
        .association_filter_list(assoc_filter(AssociationFilterKey::AssociationId, &a1))
        .send()
        .await
        .expect("ListAssociations by id");
    let a = &ran.associations()[0];
    assert!(a.last_execution_date().is_some());
    assert_eq!(a.overview().and_then(|o| o.status()), Some("Success"));

    let err = service_error(
        ssm.start_associations_once()
            .association_ids(uuid::Uuid::new_v4().to_string())
            .send()
            .await,
    );
    assert!(
        err.is_invalid_association() || err.is_association_does_not_exist(),
        "{err:?}"
    );
    let mut too_many = ssm.start_associations_once();
    for id in all.iter().take(11) {
        too_many = too_many.association_ids(id);
    }
    let err = service_error(too_many.send().await);
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    let err = service_error(ssm.list_associations().next_token("garbled").send().await);
    assert!(err.is_invalid_next_token(), "{err:?}");
}

// ------------------------------------------------------------------ Run Command

#[tokio::test(flavor = "multi_thread")]
async fn run_command_send_list_and_get() {
    let env = env().await;
    let ssm = client(&env).await;
    seed_fleet(
        &env,
        json!({"count": 6, "seed": 9, "windows_fraction": 0.0, "offline_fraction": 0.0, "noncompliant_fraction": 1.0}),
    )
    .await;
    let nodes: Vec<String> = fleet(&env).await.into_iter().map(|(id, _)| id).collect();
    let (ok_node, failing, offline, patched, untouched) =
        (&nodes[0], &nodes[1], &nodes[2], &nodes[3], &nodes[4]);
    env.control
        .call("POST", "fleet/node", Some(json!({"tenant": env.tenant, "instance_id": offline, "ping_status": "ConnectionLost"})))
        .await
        .expect("offline node");
    env.control
        .call(
            "POST",
            "commands/config",
            Some(json!({"tenant": env.tenant, "fail_instances": [failing]})),
        )
        .await
        .expect("command config");

    let sent = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(ok_node)
        .instance_ids(failing)
        .instance_ids(offline)
        .parameters("commands", vec!["uptime".to_owned()])
        .comment("contract test")
        .timeout_seconds(600)
        .send()
        .await
        .expect("SendCommand");
    let cmd = sent.command().expect("Command");
    let cid = cmd.command_id().expect("CommandId").to_owned();
    assert!(is_uuid(&cid), "{cid}");
    assert_eq!(cmd.status(), Some(&CommandStatus::Pending));
    assert_eq!(cmd.document_name(), Some("AWS-RunShellScript"));
    assert_eq!(cmd.comment(), Some("contract test"));
    assert_eq!(
        cmd.instance_ids(),
        &[ok_node.clone(), failing.clone(), offline.clone()]
    );
    assert_eq!(cmd.target_count(), 3);
    assert_eq!(
        cmd.parameters()
            .and_then(|p| p.get("commands"))
            .map(Vec::as_slice),
        Some(&["uptime".to_owned()][..])
    );
    assert!(cmd.requested_date_time().is_some() && cmd.expires_after().is_some());

    let listed = ssm
        .list_commands()
        .command_id(&cid)
        .send()
        .await
        .expect("ListCommands");
    assert_eq!(listed.commands().len(), 1);
    let c = &listed.commands()[0];
    assert_eq!(c.status(), Some(&CommandStatus::Failed));
    assert_eq!(c.completed_count(), 3);
    assert_eq!(c.error_count(), 1);
    assert_eq!(c.delivery_timed_out_count(), 1);

    let invs = ssm
        .list_command_invocations()
        .command_id(&cid)
        .details(true)
        .send()
        .await
        .expect("ListCommandInvocations");
    let by_node: BTreeMap<&str, _> = invs
        .command_invocations()
        .iter()
        .map(|i| (i.instance_id().unwrap_or_default(), i))
        .collect();
    assert_eq!(by_node.len(), 3);
    let ok_inv = by_node[ok_node.as_str()];
    assert_eq!(ok_inv.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(ok_inv.command_id(), Some(cid.as_str()));
    assert_eq!(ok_inv.document_name(), Some("AWS-RunShellScript"));
    let plugin = &ok_inv.command_plugins()[0];
    assert_eq!(plugin.name(), Some("aws:runShellScript"));
    assert_eq!(plugin.status(), Some(&CommandPluginStatus::Success));
    assert_eq!(plugin.response_code(), 0);
    let fail_inv = by_node[failing.as_str()];
    assert_eq!(fail_inv.status(), Some(&CommandInvocationStatus::Failed));
    assert_eq!(fail_inv.command_plugins()[0].response_code(), 1);
    let off_inv = by_node[offline.as_str()];
    assert_eq!(off_inv.status(), Some(&CommandInvocationStatus::TimedOut));
    assert_eq!(off_inv.status_details(), Some("Undeliverable"));

    let got = ssm
        .get_command_invocation()
        .command_id(&cid)
        .instance_id(ok_node)
        .send()
        .await
        .expect("GetCommandInvocation");
    assert_eq!(got.command_id(), Some(cid.as_str()));
    assert_eq!(got.instance_id(), Some(ok_node.as_str()));
    assert_eq!(got.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(got.status_details(), Some("Success"));
    assert_eq!(got.response_code(), 0);
    assert_eq!(got.plugin_name(), Some("aws:runShellScript"));
    assert_eq!(got.comment(), Some("contract test"));
    assert!(got.execution_end_date_time().is_some_and(|t| !t.is_empty()));
    let got = ssm
        .get_command_invocation()
        .command_id(&cid)
        .instance_id(failing)
        .plugin_name("aws:runShellScript")
        .send()
        .await
        .expect("GetCommandInvocation failing");
    assert_eq!(got.status(), Some(&CommandInvocationStatus::Failed));
    assert_eq!(got.response_code(), 1);
    assert!(got.standard_error_content().is_some_and(|s| !s.is_empty()));

    // The patch effect: AWS-RunPatchBaseline Install makes the node's Patch items compliant.
    let patch_nc = || {
        ssm.list_compliance_items()
            .resource_ids(patched)
            .filters(
                ComplianceStringFilter::builder()
                    .key("ComplianceType")
                    .values("Patch")
                    .build(),
            )
            .filters(
                ComplianceStringFilter::builder()
                    .key("Status")
                    .values("NON_COMPLIANT")
                    .build(),
            )
            .send()
    };
    assert!(
        !patch_nc()
            .await
            .expect("before")
            .compliance_items()
            .is_empty()
    );
    let patch = ssm
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .instance_ids(patched)
        .parameters("Operation", vec!["Install".to_owned()])
        .send()
        .await
        .expect("SendCommand patch");
    let patch_id = patch
        .command()
        .and_then(|c| c.command_id())
        .expect("id")
        .to_owned();
    let got = ssm
        .get_command_invocation()
        .command_id(&patch_id)
        .instance_id(patched)
        .send()
        .await
        .expect("GetCommandInvocation patch");
    assert_eq!(got.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(got.plugin_name(), Some("PatchLinux"));
    assert!(
        patch_nc()
            .await
            .expect("after")
            .compliance_items()
            .is_empty()
    );

    // Enough commands to page: 55 more, each to every node via Targets (no failing node now;
    // the offline one makes them Success/Incomplete).
    env.control
        .call(
            "POST",
            "commands/config",
            Some(json!({"tenant": env.tenant, "fail_instances": []})),
        )
        .await
        .expect("command config");
    let mut all = vec![cid.clone(), patch_id.clone()];
    for n in 0..55 {
        let out = ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .targets(Target::builder().key("InstanceIds").values("*").build())
            .parameters("commands", vec![format!("echo {n}")])
            .send()
            .await
            .expect("SendCommand bulk");
        let c = out.command().expect("Command");
        assert_eq!(c.target_count(), 6);
        all.push(c.command_id().expect("id").to_owned());
    }
    let pages = ssm
        .list_commands()
        .max_results(50)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("ListCommands");
    assert_eq!(pages.len(), 2);
    assert!(pages.iter().all(|p| p.commands().len() <= PAGE_LIMIT));
    let listed: Vec<String> = pages
        .iter()
        .flat_map(|p| p.commands())
        .filter_map(|c| c.command_id().map(str::to_owned))
        .collect();
    let mut newest_first = all.clone();
    newest_first.reverse();
    assert_unique(&listed);
    assert_eq!(listed, newest_first);
    let bulk = &pages[0].commands()[0];
    assert_eq!(bulk.command_id(), all.last().map(String::as_str));
    assert_eq!(bulk.status(), Some(&CommandStatus::Success));
    assert_eq!(
        bulk.status_details(),
        Some("Incomplete"),
        "one undeliverable node: {bulk:?}"
    );
    assert_eq!(
        (
            bulk.completed_count(),
            bulk.error_count(),
            bulk.delivery_timed_out_count()
        ),
        (6, 0, 1)
    );

    let pages = ssm
        .list_command_invocations()
        .max_results(50)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("ListCommandInvocations pages");
    assert!(
        pages
            .iter()
            .all(|p| p.command_invocations().len() <= PAGE_LIMIT)
    );
    let keys: Vec<(String, String)> = pages
        .iter()
        .flat_map(|p| p.command_invocations())
        .map(|i| {
            (
                i.command_id().unwrap_or_default().to_owned(),
                i.instance_id().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(assert_unique(&keys).len(), 3 + 1 + 55 * 6);
    assert_eq!(pages.len(), (3 + 1 + 55 * 6usize).div_ceil(50));

    let for_node = ssm
        .list_command_invocations()
        .instance_id(untouched)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ListCommandInvocations by instance");
    assert_eq!(for_node.len(), 55);
    let by_status = ssm
        .list_commands()
        .filters(
            CommandFilter::builder()
                .key(CommandFilterKey::Status)
                .value("Failed")
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect("ListCommands by status");
    let ids: Vec<_> = by_status
        .commands()
        .iter()
        .filter_map(|c| c.command_id())
        .collect();
    assert_eq!(
        ids,
        vec![cid.as_str()],
        "only the first command had a failing node"
    );

    // Documented errors.
    let err = service_error(
        ssm.send_command()
            .document_name("No-Such-Document")
            .instance_ids(ok_node)
            .send()
            .await,
    );
    assert!(err.is_invalid_document(), "{err:?}");
    let err = service_error(
        ssm.send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids("i-0fffffffffffffff0")
            .send()
            .await,
    );
    assert!(err.is_invalid_instance_id(), "{err:?}");
    let err = service_error(
        ssm.send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids(ok_node)
            .instance_ids(ok_node)
            .send()
            .await,
    );
    assert!(err.is_duplicate_instance_id(), "{err:?}");
    let unknown = uuid::Uuid::new_v4().to_string();
    let err = service_error(
        ssm.get_command_invocation()
            .command_id(&unknown)
            .instance_id(ok_node)
            .send()
            .await,
    );
    assert!(err.is_invalid_command_id(), "{err:?}");
    let err = service_error(
        ssm.get_command_invocation()
            .command_id(&cid)
            .instance_id(untouched)
            .send()
            .await,
    );
    assert!(err.is_invocation_does_not_exist(), "{err:?}");
    let err = service_error(
        ssm.get_command_invocation()
            .command_id(&cid)
            .instance_id(ok_node)
            .plugin_name("aws:runPowerShellScript")
            .send()
            .await,
    );
    assert!(err.is_invalid_plugin_name(), "{err:?}");
    let err = service_error(ssm.list_commands().command_id(&unknown).send().await);
    assert!(err.is_invalid_command_id(), "{err:?}");
    let err = service_error(
        ssm.list_command_invocations()
            .command_id(&unknown)
            .send()
            .await,
    );
    assert!(err.is_invalid_command_id(), "{err:?}");
    let err = service_error(ssm.list_commands().next_token("garbled").send().await);
    assert!(err.is_invalid_next_token(), "{err:?}");
    let err = service_error(
        ssm.list_command_invocations()
            .next_token("garbled")
            .send()
            .await,
    );
    assert!(err.is_invalid_next_token(), "{err:?}");
}

// ------------------------------------------------------------------ Faults, counters, tenancy

#[tokio::test(flavor = "multi_thread")]
async fn fault_throttle_is_a_throttling_exception_without_side_effect() {
    let env = env().await;
    let ssm = client(&env).await;
    env.control
        .set_faults(
            json!([{"operation": "ssm:CreateOpsItem", "throttle_rate": 1.0, "tenant": env.tenant}]),
        )
        .await
        .expect("set faults");

    let res = ssm
        .create_ops_item()
        .title("t")
        .description("d")
        .source("s")
        .send()
        .await;
    let err = service_error(res);
    assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");
    assert_eq!(err.message(), Some("Rate exceeded"));

    let c = counters(&env, "ssm:CreateOpsItem").await;
    assert_eq!(c["calls"], 1);
    assert_eq!(c["throttled"], 1);
    assert_eq!(c["ok"], 0);
    let state = env
        .control
        .state("opsitems", &env.tenant)
        .await
        .expect("state");
    assert_eq!(
        state["OpsItems"].as_array().map(Vec::len),
        Some(0),
        "a throttled call has no side effect"
    );

    // Other operations are unaffected.
    ssm.describe_ops_items()
        .send()
        .await
        .expect("DescribeOpsItems is not throttled");

    clear_my_faults(&env).await;
    create_ops_item(&ssm, "after the fault", None).await;
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:CreateOpsItem")
            .await
            .expect("ok"),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_server_error_is_retried_by_the_sdk() {
    let env = env().await;
    let ssm = Client::new(&env.sdk().await); // 3 attempts
    env.control
        .set_faults(
            json!([{"operation": "ssm:CreateOpsItem", "error_rate": 1.0, "tenant": env.tenant}]),
        )
        .await
        .expect("set faults");

    let err = service_error(
        ssm.create_ops_item()
            .title("t")
            .description("d")
            .source("s")
            .send()
            .await,
    );
    assert_eq!(err.code(), Some("InternalServerError"), "{err:?}");
    assert!(err.is_internal_server_error(), "{err:?}");

    let c = counters(&env, "ssm:CreateOpsItem").await;
    assert_eq!(c["calls"], 3, "the SDK made 3 attempts: {c}");
    assert_eq!(c["injected_errors"], 3);
    assert_eq!(c["ok"], 0);
    let state = env
        .control
        .state("opsitems", &env.tenant)
        .await
        .expect("state");
    assert_eq!(state["OpsItems"].as_array().map(Vec::len), Some(0));
    clear_my_faults(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_latency_delays_the_response() {
    let env = env().await;
    let ssm = client(&env).await;
    let latency = Duration::from_millis(400);
    env.control
        .set_faults(
            json!([{"operation": "ssm:DescribeOpsItems", "latency_ms": 400, "tenant": env.tenant}]),
        )
        .await
        .expect("set faults");

    let started = Instant::now();
    let out = ssm
        .describe_ops_items()
        .send()
        .await
        .expect("delayed call still succeeds");
    let elapsed = started.elapsed();
    assert!(out.ops_item_summaries().is_empty());
    assert!(
        elapsed >= latency,
        "elapsed {elapsed:?} < injected latency {latency:?}"
    );
    assert_eq!(
        env.control
            .ok_calls(&env.tenant, "ssm:DescribeOpsItems")
            .await
            .expect("ok"),
        1
    );
    clear_my_faults(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_isolated() {
    let (env_a, env_b) = (env().await, env().await);
    assert_ne!(env_a.tenant, env_b.tenant);
    let (ssm_a, ssm_b) = (client(&env_a).await, client(&env_b).await);

    let a_item = create_ops_item(&ssm_a, "tenant A", Some("shared-dedup")).await;
    // The same dedup string is free in the other tenant.
    let b_item = create_ops_item(&ssm_b, "tenant B", Some("shared-dedup")).await;

    let a_list = ssm_a
        .describe_ops_items()
        .send()
        .await
        .expect("A DescribeOpsItems");
    let ids: Vec<_> = a_list
        .ops_item_summaries()
        .iter()
        .filter_map(|s| s.ops_item_id())
        .collect();
    assert_eq!(ids, vec![a_item.as_str()]);
    let b_list = ssm_b
        .describe_ops_items()
        .send()
        .await
        .expect("B DescribeOpsItems");
    let ids: Vec<_> = b_list
        .ops_item_summaries()
        .iter()
        .filter_map(|s| s.ops_item_id())
        .collect();
    assert_eq!(ids, vec![b_item.as_str()]);

    let err = service_error(ssm_b.get_ops_item().ops_item_id(&a_item).send().await);
    assert!(err.is_ops_item_not_found_exception(), "{err:?}");

    seed_fleet(&env_a, json!({"count": 10, "seed": 1})).await;
    let a_nodes = ssm_a
        .describe_instance_information()
        .send()
        .await
        .expect("A fleet");
    assert_eq!(a_nodes.instance_information_list().len(), 10);
    let b_nodes = ssm_b
        .describe_instance_information()
        .send()
        .await
        .expect("B fleet");
    assert!(b_nodes.instance_information_list().is_empty());

    assert_eq!(counters(&env_a, "ssm:CreateOpsItem").await["calls"], 1);
    assert_eq!(counters(&env_b, "ssm:CreateOpsItem").await["calls"], 1);
    assert_eq!(counters(&env_b, "ssm:GetOpsItem").await["errors"], 1);
    assert!(counters(&env_a, "ssm:GetOpsItem").await.is_null());
}
