//! Fleet-scale figures for `cargo xtask bench`: a compliance sweep over a seeded fleet of
//! 10,000 nodes, run by the real binary against the emulator. The emulator counts every call;
//! the minimum is derived from the sizes of the listings (⌈results / 50⌉ pages each, at least
//! one) and the plan (⌈nodes / 50⌉ commands), counted independently of the function.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use autopilot_harness::{Control, InvokeOptions, Sandbox, Template, function_spec, sdk_config};
use aws_sdk_ssm::types::{ComplianceQueryOperatorType, ComplianceStringFilter};
use serde_json::{Value, json};

/// A tenant of its own, so the fleet does not mix with the other figures' state.
const SCALE_TENANT: &str = "AKIASCALEBENCH000001";
const PAGE: usize = 50;

fn pages(results: usize) -> u64 {
    results.div_ceil(PAGE).max(1) as u64
}

/// Results of one listing, all pages read (the count, not the pages: the minimum is computed).
macro_rules! count_results {
    ($request:expr, $items:ident) => {{
        let mut n = 0;
        let mut pages = $request.max_results(50).into_paginator().send();
        while let Some(p) = pages.next().await {
            n += p.map_err(|e| e.to_string())?.$items().len();
        }
        n
    }};
}

/// Counts the results of the listings a sweep needs.
async fn listing_sizes(endpoint: &str) -> Result<BTreeMap<&'static str, usize>, String> {
    let ssm = aws_sdk_ssm::Client::new(&sdk_config(endpoint, SCALE_TENANT, 5).await);
    let tag = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
        .key("tag-key")
        .values("autopilot:exempt")
        .build()
        .map_err(|e| e.to_string())?;
    let nc = ComplianceStringFilter::builder()
        .key("Status")
        .values("NON_COMPLIANT")
        .r#type(ComplianceQueryOperatorType::Equal)
        .build();
    Ok(BTreeMap::from([
        (
            "ssm:DescribeInstanceInformation",
            count_results!(
                ssm.describe_instance_information(),
                instance_information_list
            ),
        ),
        (
            "ssm:DescribeInstanceInformation(exemption tag)",
            count_results!(
                ssm.describe_instance_information().filters(tag),
                instance_information_list
            ),
        ),
        (
            "ssm:ListAssociations",
            count_results!(ssm.list_associations(), associations),
        ),
        (
            "ssm:ListResourceComplianceSummaries",
            count_results!(
                ssm.list_resource_compliance_summaries().filters(nc.clone()),
                resource_compliance_summary_items
            ),
        ),
        (
            "ssm:ListComplianceItems",
            count_results!(ssm.list_compliance_items().filters(nc), compliance_items),
        ),
    ]))
}

fn ssm_calls(counters: &Value) -> BTreeMap<String, u64> {
    counters["counters"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(op, _)| op.starts_with("ssm:"))
        .map(|(op, c)| (op.clone(), c["calls"].as_u64().unwrap_or(0)))
        .collect()
}

/// One enforcing sweep over `nodes` seeded nodes; returns the bench row.
pub async fn compliance_sweep(
    template: &Template,
    bin_dir: &Path,
    endpoint: &str,
    nodes: usize,
) -> Result<Value, String> {
    let f = "compliance-remediator";
    let control = Control::new(endpoint);
    control
        .reset_tenant(SCALE_TENANT)
        .await
        .map_err(|e| e.to_string())?;
    control
        .seed_fleet(json!({
            "tenant": SCALE_TENANT, "count": nodes, "seed": 10_000, "hybrid_fraction": 0.2,
            "noncompliant_fraction": 0.45, "not_applicable_fraction": 0.3,
            "offline_fraction": 0.05, "stopped_fraction": 0.05,
        }))
        .await
        .map_err(|e| e.to_string())?;
    let sizes = listing_sizes(endpoint).await?;
    // Budget off (100 %): the figure is about listing and batching, not the gate.
    let policy = json!({
        "patch": {"enabled": true, "rebootOption": "NoReboot", "maxConcurrency": "10%", "maxErrors": "10%", "batchSize": 50},
        "association": {"enabled": true},
        "exemptionTag": {"key": "autopilot:exempt"},
        "budget": {"maxNodes": nodes, "maxPercent": 100},
        "cooldownMinutes": 360, "retryAfterMinutes": 60, "maxAttempts": 3, "changeCalendar": "",
    });
    let param = "/autopilot-bench/remediation-policy";
    let ssm = aws_sdk_ssm::Client::new(&sdk_config(endpoint, SCALE_TENANT, 5).await);
    ssm.put_parameter()
        .name(param)
        .value(policy.to_string())
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    control
        .call("DELETE", "counters", Some(json!({"tenant": SCALE_TENANT})))
        .await
        .map_err(|e| e.to_string())?;
    let mut spec = function_spec(template, f, &bin_dir.join(f), endpoint, SCALE_TENANT)
        .map_err(|e| e.to_string())?;
    spec.env.insert("DRY_RUN".into(), "false".into());
    spec.env.insert("POLICY_PARAMETER".into(), param.into());
    let sb = Sandbox::spawn(spec).await.map_err(|e| e.to_string())?;
    sb.init_duration().await.map_err(|e| e.to_string())?;
    let mut event: Value = serde_json::from_slice(
        &std::fs::read(crate::local::repo_root_events(f).join("scheduler-sweep.json"))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    event["id"] = json!(format!("scale-{nodes}-{}", std::process::id()));
    let started = Instant::now();
    let inv = sb
        .invoke(
            &serde_json::to_vec(&event).map_err(|e| e.to_string())?,
            InvokeOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let wall = started.elapsed().as_secs_f64();
    let rss_mb = sb.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    sb.kill();
    sb.wait_exit().await;
    let summary = match inv.outcome {
        Ok(v) => v["summary"].clone(),
        Err(e) => {
            return Err(format!(
                "sweep failed: {}: {}",
                e.error_type, e.error_message
            ));
        }
    };
    let counters = control
        .counters(SCALE_TENANT)
        .await
        .map_err(|e| e.to_string())?;
    let calls = ssm_calls(&counters);
    let planned_patch: usize = summary["patchBatches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .sum::<u64>() as usize;
    let association_runs = summary["associationBatches"].as_u64().unwrap_or(0);
    let min_list: u64 = sizes.values().map(|n| pages(*n)).sum();
    // The policy document is read once per cold start.
    let minimum = min_list + 1 + planned_patch.div_ceil(PAGE) as u64 + association_runs;
    let measured: u64 = calls.values().sum();
    let ratio = measured as f64 / minimum as f64;
    Ok(json!({
        "figure": "compliance sweep at scale",
        "nodes": nodes,
        "listing_results": sizes,
        "planned_patch_nodes": planned_patch,
        "association_runs": association_runs,
        "ssm_calls": calls,
        "ssm_calls_total": measured,
        "ssm_calls_minimum": minimum,
        "ratio": ratio,
        "wall_seconds": wall,
        "peak_rss_mb": rss_mb,
        "dynamodb_calls": counters["counters"].as_object().into_iter().flatten()
            .filter(|(op, _)| op.starts_with("dynamodb:"))
            .map(|(_, c)| c["calls"].as_u64().unwrap_or(0)).sum::<u64>(),
        "target": "<= 1.05x the minimum",
        "pass": ratio <= 1.05,
    }))
}

/// Entities GetInventory returns for one type (what the function must page through).
async fn inventory_sizes(
    ssm: &aws_sdk_ssm::Client,
) -> Result<(usize, BTreeMap<String, usize>), String> {
    let mut types = Vec::new();
    let mut token = None;
    loop {
        let r = ssm
            .get_inventory_schema()
            .max_results(50)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        types.extend(r.schemas().iter().map(|s| s.type_name().to_owned()));
        token = r.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let mut per_type = BTreeMap::new();
    for t in &types {
        let attr = aws_sdk_ssm::types::ResultAttribute::builder()
            .type_name(t)
            .build()
            .map_err(|e| e.to_string())?;
        let n = count_results!(ssm.get_inventory().result_attributes(attr), entities);
        per_type.insert(t.clone(), n);
    }
    Ok((types.len(), per_type))
}

fn counter(counters: &Value, op: &str) -> u64 {
    counters["counters"][op]["calls"].as_u64().unwrap_or(0)
}

/// One full inventory run over `nodes` seeded nodes with `latency_ms` added to every SSM call.
pub async fn inventory(
    template: &Template,
    bin_dir: &Path,
    endpoint: &str,
    nodes: usize,
    latency_ms: u64,
) -> Result<Value, String> {
    let f = "inventory-aggregator";
    let control = Control::new(endpoint);
    control
        .reset_tenant(SCALE_TENANT)
        .await
        .map_err(|e| e.to_string())?;
    control
        .seed_fleet(json!({
            "tenant": SCALE_TENANT, "count": nodes, "seed": 20_000, "hybrid_fraction": 0.2,
            "offline_fraction": 0.05, "windows_fraction": 0.3,
        }))
        .await
        .map_err(|e| e.to_string())?;
    let sdk = sdk_config(endpoint, SCALE_TENANT, 5).await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let (schema_types, per_type) = inventory_sizes(&ssm).await?;
    control
        .call("DELETE", "counters", Some(json!({"tenant": SCALE_TENANT})))
        .await
        .map_err(|e| e.to_string())?;
    let mut spec = function_spec(template, f, &bin_dir.join(f), endpoint, SCALE_TENANT)
        .map_err(|e| e.to_string())?;
    let prefix = format!("bench-{nodes}-{}", std::process::id());
    spec.env.insert("OUTPUT_PREFIX".into(), prefix.clone());
    let max_concurrency: usize = spec
        .env
        .get("MAX_CONCURRENCY")
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let type_concurrency: u64 = spec
        .env
        .get("TYPE_CONCURRENCY")
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let bucket = spec
        .env
        .get("INVENTORY_BUCKET")
        .cloned()
        .unwrap_or_default();
    let sb = Sandbox::spawn(spec).await.map_err(|e| e.to_string())?;
    sb.init_duration().await.map_err(|e| e.to_string())?;
    control
        .set_faults(
            json!([{"operation": "ssm:*", "latency_ms": latency_ms, "tenant": SCALE_TENANT}]),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut payload: Value = serde_json::from_slice(
        &std::fs::read(crate::local::repo_root_events(f).join("on-demand.json"))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    payload["id"] = json!(format!("scale-inventory-{nodes}-{}", std::process::id()));
    let started = Instant::now();
    let mut invocations = 0;
    loop {
        invocations += 1;
        let inv = sb
            .invoke(
                &serde_json::to_vec(&payload).map_err(|e| e.to_string())?,
                InvokeOptions::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let out = inv.outcome.map_err(|e| {
            format!(
                "inventory run failed: {}: {}",
                e.error_type, e.error_message
            )
        })?;
        match out["status"].as_str() {
            Some("continuing") if invocations < 50 => payload = out["continuation"].clone(),
            Some("complete") => break,
            other => return Err(format!("inventory run ended {other:?}: {out}")),
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let rss_mb = sb.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    sb.kill();
    sb.wait_exit().await;
    control
        .call("DELETE", "faults", Some(json!({"tenant": SCALE_TENANT})))
        .await
        .map_err(|e| e.to_string())?;
    let counters = control
        .counters(SCALE_TENANT)
        .await
        .map_err(|e| e.to_string())?;
    // Objects the run left: each had to be written exactly once.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let mut objects = 0_u64;
    let mut bytes = 0_i64;
    let mut it = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("{prefix}/"))
        .into_paginator()
        .send();
    while let Some(p) = it.next().await {
        let page = p.map_err(|e| e.to_string())?;
        objects += page.contents().len() as u64;
        bytes += page.contents().iter().filter_map(|o| o.size()).sum::<i64>();
    }
    let mean_size = usize::try_from(bytes / (objects.max(1) as i64)).unwrap_or(0);
    let floor = s3_floor(&s3, &bucket, &prefix, objects, mean_size, max_concurrency).await?;
    let inventory_pages: u64 = per_type.values().map(|n| pages(*n)).sum();
    let min_ssm = pages(schema_types) + inventory_pages;
    let ssm_calls = counter(&counters, "ssm:GetInventorySchema")
        + counter(&counters, "ssm:GetInventory")
        + counter(&counters, "ssm:ListInventoryEntries");
    let puts = counter(&counters, "s3:PutObject");
    let minimum = min_ssm + objects;
    let measured = ssm_calls + puts;
    let ratio = measured as f64 / minimum as f64;
    // API-bound ideal: the injected latency over the pages, types read `TYPE_CONCURRENCY` at a
    // time (a type's pages follow one token chain, so they cannot overlap).
    let ssm_ideal = (latency_ms as f64 / 1e3)
        * (pages(schema_types) as f64 + inventory_pages as f64 / type_concurrency as f64);
    // The emulator's S3 is far slower than S3: the same number of objects of the same mean size,
    // written by a bare client at the same concurrency, is the floor no writer can beat here.
    let ideal = ssm_ideal.max(floor);
    Ok(json!({
        "figure": "inventory run at scale",
        "nodes": nodes,
        "types": per_type,
        "latency_ms": latency_ms,
        "invocations": invocations,
        "ssm_calls_total": ssm_calls,
        "s3_puts": puts,
        "objects_written": objects,
        "calls_total": measured,
        "calls_minimum": minimum,
        "ratio": ratio,
        "wall_seconds": wall,
        "ideal_wall_seconds": ideal,
        "ssm_ideal_seconds": ssm_ideal,
        "s3_floor_seconds": floor,
        "mean_object_bytes": mean_size,
        "wall_ratio": wall / ideal,
        "peak_rss_mb": rss_mb,
        "other_calls": counters["counters"].as_object().into_iter().flatten()
            .filter(|(op, _)| !matches!(op.as_str(), "ssm:GetInventorySchema" | "ssm:GetInventory" | "ssm:ListInventoryEntries" | "s3:PutObject"))
            .map(|(op, c)| (op.clone(), c["calls"].clone()))
            .collect::<serde_json::Map<String, Value>>(),
        "target": "calls <= 1.05x the minimum; wall <= 1.2x ideal; peak RSS <= 128 MB",
        "pass": ratio <= 1.05 && wall / ideal <= 1.2 && rss_mb <= 128.0,
    }))
}

/// Seconds a bare SDK client needs to write `objects` objects of `size` bytes with
/// `concurrency` requests in flight: the emulator's own S3 throughput, measured in the same run.
async fn s3_floor(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    objects: u64,
    size: usize,
    concurrency: usize,
) -> Result<f64, String> {
    use futures::{StreamExt, TryStreamExt};
    let body = vec![b'x'; size];
    let started = Instant::now();
    futures::stream::iter(0..objects)
        .map(|i| {
            let req = s3
                .put_object()
                .bucket(bucket)
                .key(format!("{prefix}-floor/{i:08}.json"))
                .body(body.clone().into());
            async move { req.send().await.map(|_| ()).map_err(|e| e.to_string()) }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}
