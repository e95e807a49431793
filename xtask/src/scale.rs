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

/// Counts the results of the listings a sweep needs (not pages: the minimum is computed).
async fn listing_sizes(endpoint: &str) -> Result<BTreeMap<&'static str, usize>, String> {
    let ssm = aws_sdk_ssm::Client::new(&sdk_config(endpoint, SCALE_TENANT, 5).await);
    let err = |e: aws_sdk_ssm::Error| e.to_string();
    let mut sizes = BTreeMap::new();
    let mut n = 0;
    let mut it = ssm
        .describe_instance_information()
        .max_results(50)
        .into_paginator()
        .send();
    while let Some(p) = it.next().await {
        n += p
            .map_err(|e| err(e.into()))?
            .instance_information_list()
            .len();
    }
    sizes.insert("ssm:DescribeInstanceInformation", n);
    let tag = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
        .key("tag-key")
        .values("autopilot:exempt")
        .build()
        .map_err(|e| e.to_string())?;
    let mut exempt = 0;
    let mut it = ssm
        .describe_instance_information()
        .filters(tag)
        .max_results(50)
        .into_paginator()
        .send();
    while let Some(p) = it.next().await {
        exempt += p
            .map_err(|e| err(e.into()))?
            .instance_information_list()
            .len();
    }
    sizes.insert("ssm:DescribeInstanceInformation(exemption tag)", exempt);
    let mut assoc = 0;
    let mut it = ssm
        .list_associations()
        .max_results(50)
        .into_paginator()
        .send();
    while let Some(p) = it.next().await {
        assoc += p.map_err(|e| err(e.into()))?.associations().len();
    }
    sizes.insert("ssm:ListAssociations", assoc);
    let nc = ComplianceStringFilter::builder()
        .key("Status")
        .values("NON_COMPLIANT")
        .r#type(ComplianceQueryOperatorType::Equal)
        .build();
    let mut summaries = 0;
    let mut it = ssm
        .list_resource_compliance_summaries()
        .filters(nc.clone())
        .max_results(50)
        .into_paginator()
        .send();
    while let Some(p) = it.next().await {
        summaries += p
            .map_err(|e| err(e.into()))?
            .resource_compliance_summary_items()
            .len();
    }
    sizes.insert("ssm:ListResourceComplianceSummaries", summaries);
    let mut items = 0;
    let mut it = ssm
        .list_compliance_items()
        .filters(nc)
        .max_results(50)
        .into_paginator()
        .send();
    while let Some(p) = it.next().await {
        items += p.map_err(|e| err(e.into()))?.compliance_items().len();
    }
    sizes.insert("ssm:ListComplianceItems", items);
    Ok(sizes)
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
