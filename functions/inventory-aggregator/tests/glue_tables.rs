#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The template's Glue tables (`CreateGlueTables=true`) are the shipped Athena DDL: same
//! columns, partitions, location and partition-projection parameters, and their storage
//! location templates match the keys the function writes.

mod ddl;

use autopilot_harness::{Template, template_path};
use inventory_aggregator::layout::Scope;
use serde_norway::Value;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

fn template(params: &[(&str, &str)]) -> Template {
    let mut t = Template::load(&template_path()).unwrap();
    for (k, v) in params {
        t.set_param(k, v);
    }
    t
}

/// Logical id → resolved `TableInput` of every Glue table in the template.
fn glue_tables(t: &Template) -> Vec<(String, Value)> {
    t.resources()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some("AWS::Glue::Table"))
        .map(|(id, r)| {
            assert_eq!(
                r.get("Condition").and_then(Value::as_str),
                Some("CreateGlueTables"),
                "{id} is optional"
            );
            let input = t.resolve(&r["Properties"]["TableInput"]).unwrap();
            (id.to_owned(), input)
        })
        .collect()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn columns(v: &Value) -> Vec<(String, String)> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|c| (s(&c["Name"]).to_ascii_lowercase(), s(&c["Type"])))
        .collect()
}

/// The DDL's tables with the placeholders a deployment fills in.
fn expected(bucket: &str, prefix: &str, accounts: &str, regions: &str) -> Vec<ddl::Table> {
    ddl::load_all()
        .into_iter()
        .chain(ddl::load_parquet())
        .map(|mut t| {
            for v in t.props.values_mut() {
                *v = ddl::substitute(v, bucket, prefix, accounts, regions);
            }
            t.location = ddl::substitute(&t.location, bucket, prefix, accounts, regions);
            t
        })
        .collect()
}

fn check(t: &Template, accounts: &str, regions: &str) -> Vec<ddl::Table> {
    let bucket = t.physical_name("InventoryBucket").unwrap();
    let env = t.function_env("InventoryAggregatorFunction").unwrap();
    let prefix = env["OUTPUT_PREFIX"].clone();
    let tables = expected(&bucket, &prefix, accounts, regions);
    let glue = glue_tables(t);
    assert_eq!(glue.len(), tables.len(), "one Glue table per DDL table");
    for want in &tables {
        let (id, got) = glue
            .iter()
            .find(|(_, g)| s(&g["Name"]) == want.name)
            .unwrap_or_else(|| panic!("no Glue table {}", want.name));
        assert_eq!(s(&got["TableType"]), "EXTERNAL_TABLE", "{id}");
        let sd = &got["StorageDescriptor"];
        assert_eq!(s(&sd["Location"]), want.location, "{id} location");
        let serde = match want.stored_as.as_str() {
            "parquet" => "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
            _ => "org.openx.data.jsonserde.JsonSerDe",
        };
        assert_eq!(s(&sd["SerdeInfo"]["SerializationLibrary"]), serde, "{id}");
        // Athena DDL quotes reserved words (`from`); Glue type strings carry no quoting.
        let ddl_cols: Vec<(String, String)> = want
            .columns
            .iter()
            .map(|(n, ty)| (n.clone(), ty.replace('`', "")))
            .collect();
        assert_eq!(columns(&sd["Columns"]), ddl_cols, "{id} columns");
        let parts: Vec<String> = columns(&got["PartitionKeys"])
            .into_iter()
            .map(|(n, ty)| {
                assert_eq!(ty, "string", "{id}: partition {n}");
                n
            })
            .collect();
        assert_eq!(parts, want.partitions, "{id} partitions");
        let params = got["Parameters"].as_mapping().unwrap();
        for (k, v) in &want.props {
            let got_v = params
                .get(k.as_str())
                .unwrap_or_else(|| panic!("{id} lacks {k}"));
            assert_eq!(&s(got_v), v, "{id} {k}");
        }
        for k in params.keys().filter_map(Value::as_str) {
            if k.starts_with("projection.") || k.starts_with("storage.") {
                assert!(want.props.contains_key(k), "{id}: {k} is not in the DDL");
            }
        }
    }
    tables
}

#[test]
fn glue_tables_equal_the_shipped_ddl() {
    let t = template(&[("CreateGlueTables", "true")]);
    assert!(
        t.resource("InventoryGlueDatabase")
            .and_then(|r| r.get("Condition"))
            .and_then(Value::as_str)
            == Some("CreateGlueTables")
    );
    check(&t, ACCOUNT, REGION);
    // The parameter is optional and off by default.
    assert_eq!(
        template(&[]).params["CreateGlueTables"],
        "false",
        "Glue tables are opt-in"
    );
}

#[test]
fn glue_projection_lists_the_target_accounts_and_regions() {
    let t = template(&[
        ("CreateGlueTables", "true"),
        ("InventoryTargetAccounts", "111111111111,222222222222"),
        ("InventoryTargetRegions", "us-east-1,eu-west-1"),
    ]);
    let tables = check(&t, "111111111111,222222222222", "us-east-1,eu-west-1");
    let env = t.function_env("InventoryAggregatorFunction").unwrap();
    assert_eq!(env["TARGET_ACCOUNTS"], "111111111111,222222222222");
    assert_eq!(env["TARGET_REGIONS"], "us-east-1,eu-west-1");

    // Every key the function writes for any target lies under a table's template, with
    // partition values the projection produces.
    let bucket = t.physical_name("InventoryBucket").unwrap();
    let prefix = env["OUTPUT_PREFIX"].clone();
    let mut keys = Vec::new();
    for account in ["111111111111", "222222222222"] {
        for region in ["us-east-1", "eu-west-1"] {
            let scope = Scope {
                prefix: prefix.clone(),
                account_id: account.into(),
                region: region.into(),
                dt: "2026-03-14".into(),
                run_id: "20260314T010000Z-abcd1234".into(),
            };
            for ty in ["AWS:Application", "AWS:InstanceInformation"] {
                keys.push(scope.rds_key(ty, "i-0123456789abcdef0"));
                keys.push(scope.snapshot_part_key(ty, 0));
                keys.push(scope.snapshot_parquet_key(ty, 0));
            }
            keys.push(scope.manifest_key());
            keys.push(scope.diff_key());
        }
    }
    for key in keys {
        let url = format!("s3://{bucket}/{key}");
        let under: Vec<&ddl::Table> = tables
            .iter()
            .filter(|t| url.starts_with(&t.location))
            .collect();
        assert_eq!(under.len(), 1, "{url} is read by exactly one table");
        let table = under[0];
        let values = ddl::match_key(table, &url)
            .unwrap_or_else(|| panic!("{url} not under {}'s template", table.name));
        for (col, v) in &values {
            assert!(ddl::projected(table, col, v), "{}: {col}={v}", table.name);
        }
    }
}

#[test]
fn target_role_is_assumable_only_in_the_listed_accounts() {
    let t = template(&[("InventoryTargetAccounts", "111111111111")]);
    let f = t.resource("InventoryAggregatorFunction").unwrap();
    let policies = t.resolve(&f["Properties"]["Policies"]).unwrap();
    let statements: Vec<&Value> = policies
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|p| p["Statement"].as_sequence().unwrap().iter())
        .collect();
    let assume = statements
        .iter()
        .find(|st| s(&st["Action"]) == "sts:AssumeRole")
        .expect("sts:AssumeRole with targets");
    assert_eq!(
        s(&assume["Resource"]),
        "arn:aws:iam::*:role/ssm-autopilot-inventory-reader"
    );
    assert_eq!(
        s(&assume["Condition"]["StringEquals"]["aws:ResourceAccount"]),
        "111111111111"
    );

    // Without targets the function cannot assume any role.
    let t = template(&[]);
    let f = t.resource("InventoryAggregatorFunction").unwrap();
    let policies = t.resolve(&f["Properties"]["Policies"]).unwrap();
    assert!(!format!("{policies:?}").contains("sts:AssumeRole"));
}
