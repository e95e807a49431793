#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The shipped Athena DDL parses and its projections are complete (keys are checked against
//! real output in e2e.rs).

mod ddl;

#[test]
fn ddl_parses_with_complete_partition_projection() {
    let tables = ddl::load_all();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "aws_application",
            "aws_instanceinformation",
            "inventory_snapshot_application",
            "inventory_snapshot_instanceinformation",
            "inventory_manifests",
            "inventory_diffs"
        ]
    );
    for t in &tables {
        ddl::check_structure(t);
    }
    let app = &tables[0];
    assert_eq!(app.partitions, ["accountid", "region", "resourcetype"]);
    assert!(app.columns.iter().any(|(c, _)| c == "capturetime"));
    assert_eq!(app.location, "s3://<BUCKET>/<PREFIX>/AWS:Application/");
}

#[test]
fn template_matching_extracts_partition_values() {
    let t = &ddl::load_all()[0];
    let mut t = t.clone();
    for v in t.props.values_mut() {
        *v = ddl::substitute(v, "b", "p", "123456789012", "us-east-1");
    }
    let key = "s3://b/p/AWS:Application/accountid=123456789012/region=us-east-1/resourcetype=ManagedInstanceInventory/i-1.json";
    let values = ddl::match_key(&t, key).unwrap();
    assert_eq!(values["region"], "us-east-1");
    assert!(values.iter().all(|(c, v)| ddl::projected(&t, c, v)));
    assert!(
        ddl::match_key(
            &t,
            "s3://b/p/AWS:Tag/accountid=1/region=r/resourcetype=x/i.json"
        )
        .is_none()
    );
}

#[test]
fn parquet_tables_project_the_keys_the_writer_uses() {
    use inventory_aggregator::layout::Scope;
    let tables = ddl::load_parquet();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "inventory_snapshot_application_parquet",
            "inventory_snapshot_instanceinformation_parquet"
        ]
    );
    let json = ddl::load_all();
    let scope = Scope {
        prefix: "p".into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        dt: "2026-03-14".into(),
        run_id: "20260314T010000Z-abcd1234".into(),
    };
    for (t, type_name) in tables
        .iter()
        .zip(["AWS:Application", "AWS:InstanceInformation"])
    {
        ddl::check_structure(t);
        assert_eq!(t.stored_as, "parquet");
        assert_eq!(t.partitions, ["dt"]);
        // Same columns as the JSON snapshot table of the type: the files hold the same rows.
        let twin = json
            .iter()
            .find(|j| format!("{}_parquet", j.name) == t.name)
            .unwrap();
        assert_eq!(t.columns, twin.columns, "{}", t.name);
        let mut t = t.clone();
        for v in t.props.values_mut() {
            *v = ddl::substitute(v, "b", "p", "123456789012", "us-east-1");
        }
        t.location = ddl::substitute(&t.location, "b", "p", "123456789012", "us-east-1");
        let key = format!("s3://b/{}", scope.snapshot_parquet_key(type_name, 3));
        assert!(key.starts_with(&t.location), "{key}");
        let values = ddl::match_key(&t, &key).unwrap();
        assert_eq!(values["dt"], "2026-03-14");
        assert!(values.iter().all(|(c, v)| ddl::projected(&t, c, v)));
        // The JSON snapshot table of the type does not read the Parquet files.
        let mut twin = twin.clone();
        twin.location = ddl::substitute(&twin.location, "b", "p", "123456789012", "us-east-1");
        assert!(!key.starts_with(&twin.location));
    }
}
