//! `cargo xtask demo`: build, start the emulator, replay `events/` through the real function
//! binaries, and print what happened — read back from the emulator, not from the functions.

use autopilot_harness::logs::emf_totals;
use autopilot_harness::{
    Control, EmulatorProcess, InvokeOptions, Sandbox, Template, function_spec, template_path,
};
use std::collections::BTreeMap;

use serde_json::Value;

use crate::local::{DEV_ACCESS_KEY, build, file_name, provision, sample_files};

/// Functions in demo order, with the samples that tell a story first.
const PLAN: &[(&str, &[&str])] = &[
    (
        "opsitem-creator",
        &[
            "alarm-metric-alarm.json",
            "alarm-metric-alarm-second-instance.json",
            "alarm-metric-ok.json",
        ],
    ),
    (
        "incident-response",
        &[
            "guardduty-finding-high.json",
            "guardduty-finding-low.json",
            "alarm-critical.json",
        ],
    ),
];

pub fn run() -> Result<(), String> {
    let mut functions: Vec<&str> = PLAN.iter().map(|(f, _)| *f).collect();
    functions.push("compliance-remediator");
    functions.push("inventory-aggregator");
    eprintln!("building {} ...", functions.join(", "));
    let bin_dir = build(false, &functions)?;
    eprintln!("starting the local AWS emulator (first run installs its Python venv) ...");
    let emu = EmulatorProcess::start(0).map_err(|e| e.to_string())?;
    let rt = crate::runtime()?;
    rt.block_on(async {
        let made = provision(&emu.endpoint).await?;
        println!(
            "Emulator at {} with {} resources from template.yaml\n",
            emu.endpoint,
            made.len()
        );
        let template = Template::load(&template_path()).map_err(|e| e.to_string())?;
        let mut figures: Vec<(String, BTreeMap<String, f64>)> = Vec::new();
        for (function, first) in PLAN {
            let spec = function_spec(
                &template,
                function,
                &bin_dir.join(function),
                &emu.endpoint,
                DEV_ACCESS_KEY,
            )
            .map_err(|e| e.to_string())?;
            let sb = Sandbox::spawn(spec).await.map_err(|e| e.to_string())?;
            let init = sb.init_duration().await.map_err(|e| e.to_string())?;
            println!("== {function} (init {:.1} ms)", init.as_secs_f64() * 1e3);
            println!(
                "{:<44} {:<9} {:<16} {:>5}  title / reason",
                "event", "decision", "record", "n"
            );
            let mut files = sample_files(function);
            // Story samples first, recoveries (OK, compliant, resolved) after the problems they close.
            files.sort_by_key(|p| {
                let name = file_name(p);
                let recovery = name.ends_with("-ok.json")
                    || name.ends_with("-resolved.json")
                    || name.ends_with("-compliant.json");
                (
                    first.iter().position(|f| *f == name).unwrap_or(usize::MAX),
                    recovery,
                    name,
                )
            });
            for path in files {
                let payload = std::fs::read(&path).map_err(|e| e.to_string())?;
                let inv = sb
                    .invoke(&payload, InvokeOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                match inv.outcome {
                    Ok(resp) => print_results(&file_name(&path), &resp),
                    Err(e) => println!(
                        "{:<44} {:<9} {}: {}",
                        file_name(&path),
                        "error",
                        e.error_type,
                        e.error_message
                    ),
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            figures.push((function.to_string(), emf_totals(&sb.logs())));
            println!();
        }
        let control = Control::new(&emu.endpoint);
        figures.push(compliance(&template, &bin_dir, &emu.endpoint, &control).await?);
        figures.push(inventory(&template, &bin_dir, &emu.endpoint).await?);
        summary(&control).await?;
        print_figures(&figures);
        Ok(())
    })
}

fn print_results(file: &str, resp: &Value) {
    let results = resp["results"].as_array().cloned().unwrap_or_default();
    for r in results {
        // Fields differ per function: OpsItem id or incident backend reference; repeat count or impact.
        let text = ["title", "reason", "plan"]
            .iter()
            .find_map(|k| r[*k].as_str())
            .unwrap_or_default();
        let id = ["opsItemId", "backendRef", "incidentId"]
            .iter()
            .find_map(|k| r[*k].as_str())
            .unwrap_or("-");
        let n = ["occurrences", "impact"]
            .iter()
            .find_map(|k| r[*k].as_i64())
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into());
        let runs = r["executions"].as_array().map(Vec::len).unwrap_or(0);
        let extra = if runs > 0 {
            format!(" [{runs} runbook(s) started]")
        } else {
            String::new()
        };
        println!(
            "{:<44} {:<9} {:<16} {:>5}  {}{extra}",
            file,
            r["decision"].as_str().unwrap_or("?"),
            id.chars().take(16).collect::<String>(),
            n,
            text.chars().take(60).collect::<String>()
        );
    }
}

async fn summary(control: &Control) -> Result<(), String> {
    let state = control
        .state("opsitems", DEV_ACCESS_KEY)
        .await
        .map_err(|e| e.to_string())?;
    let items = state["OpsItems"].as_array().cloned().unwrap_or_default();
    let open = items.iter().filter(|i| i["Status"] == "Open").count();
    let resolved = items.iter().filter(|i| i["Status"] == "Resolved").count();
    let repeats: i64 = items
        .iter()
        .filter_map(|i| {
            i["OperationalData"]["autopilot:occurrences"]["Value"]
                .as_str()?
                .parse::<i64>()
                .ok()
        })
        .map(|n| n - 1)
        .sum();
    println!(
        "OpsCenter now holds {} OpsItems: {open} open, {resolved} resolved; {repeats} repeat(s) counted on existing items.",
        items.len()
    );
    let counters = control
        .counters(DEV_ACCESS_KEY)
        .await
        .map_err(|e| e.to_string())?;
    let root = counters.get("counters").unwrap_or(&counters);
    let mut calls: Vec<(String, u64)> = root
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v["ok"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    calls.sort();
    let line: Vec<String> = calls
        .iter()
        .filter(|(k, _)| k.starts_with("ssm:") || k.starts_with("sns:"))
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    println!("AWS calls made: {}", line.join(" "));
    Ok(())
}

fn print_figures(figures: &[(String, BTreeMap<String, f64>)]) {
    println!("\nMetrics from the functions' EMF lines (namespace SsmAutopilot):");
    let mut names: Vec<&String> = figures.iter().flat_map(|(_, m)| m.keys()).collect();
    names.sort();
    names.dedup();
    print!("{:<22}", "metric");
    for (f, _) in figures {
        print!(" {f:>20}");
    }
    println!();
    for n in names {
        print!("{n:<22}");
        for (_, m) in figures {
            print!(
                " {:>20}",
                m.get(n)
                    .map(|v| format!("{v}"))
                    .unwrap_or_else(|| "-".into())
            );
        }
        println!();
    }
}

/// compliance-remediator on a seeded fleet: the template's dry-run first, then an enforcing run.
async fn compliance(
    template: &Template,
    bin_dir: &std::path::Path,
    endpoint: &str,
    control: &Control,
) -> Result<(String, BTreeMap<String, f64>), String> {
    let f = "compliance-remediator";
    let seeded = control
        .seed_fleet(serde_json::json!({
            "tenant": DEV_ACCESS_KEY, "count": 120, "seed": 3, "hybrid_fraction": 0.2,
            "noncompliant_fraction": 0.4, "not_applicable_fraction": 0.1,
            "offline_fraction": 0.1, "stopped_fraction": 0.05
        }))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "== {f} on a seeded fleet of {} managed nodes",
        seeded["fleet_size"]
    );
    let dir = crate::local::repo_root_events(f);
    let mut logs = Vec::new();
    for (label, dry_run, sample) in [
        ("dry-run (template default)", "true", "scheduled-sweep.json"),
        ("enforce", "false", "scheduler-sweep.json"),
    ] {
        let mut spec = function_spec(template, f, &bin_dir.join(f), endpoint, DEV_ACCESS_KEY)
            .map_err(|e| e.to_string())?;
        spec.env.insert("DRY_RUN".into(), dry_run.into());
        let sb = Sandbox::spawn(spec).await.map_err(|e| e.to_string())?;
        let payload = std::fs::read(dir.join(sample)).map_err(|e| e.to_string())?;
        let before = control
            .ok_calls(DEV_ACCESS_KEY, "ssm:SendCommand")
            .await
            .map_err(|e| e.to_string())?;
        let inv = sb
            .invoke(&payload, InvokeOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let after = control
            .ok_calls(DEV_ACCESS_KEY, "ssm:SendCommand")
            .await
            .map_err(|e| e.to_string())?;
        match inv.outcome {
            Ok(r) => {
                let s = &r["summary"];
                println!(
                    "{label:<28} scanned {} (online {}), findings {}, planned nodes {}, patch batches {}, skipped {}, deferred {}, SendCommand calls {}",
                    s["nodesScanned"],
                    s["nodesOnline"],
                    s["findings"],
                    s["plannedNodes"],
                    s["patchBatches"],
                    s["skipped"],
                    s["deferred"],
                    after - before
                );
                if let Some(k) = s["reportKey"].as_str() {
                    println!("{:<28} report s3://…/{k}", "");
                }
            }
            Err(e) => println!("{label:<28} error {}: {}", e.error_type, e.error_message),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        logs.extend(sb.logs());
    }
    println!();
    Ok((f.to_owned(), emf_totals(&logs)))
}

/// inventory-aggregator on the fleet seeded above: one run, then its S3 objects read back.
async fn inventory(
    template: &Template,
    bin_dir: &std::path::Path,
    endpoint: &str,
) -> Result<(String, BTreeMap<String, f64>), String> {
    let f = "inventory-aggregator";
    let spec = function_spec(template, f, &bin_dir.join(f), endpoint, DEV_ACCESS_KEY)
        .map_err(|e| e.to_string())?;
    let bucket = spec
        .env
        .get("INVENTORY_BUCKET")
        .cloned()
        .unwrap_or_default();
    let prefix = spec.env.get("OUTPUT_PREFIX").cloned().unwrap_or_default();
    let sb = Sandbox::spawn(spec).await.map_err(|e| e.to_string())?;
    sb.init_duration().await.map_err(|e| e.to_string())?;
    let mut payload = std::fs::read(crate::local::repo_root_events(f).join("scheduled-run.json"))
        .map_err(|e| e.to_string())?;
    // Continuations go through the audit-bus rule when deployed; here they are re-invoked.
    let mut invocations = 0;
    let summary = loop {
        invocations += 1;
        let inv = sb
            .invoke(&payload, InvokeOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let resp = inv
            .outcome
            .map_err(|e| format!("{f}: {}: {}", e.error_type, e.error_message))?;
        match resp["status"].as_str() {
            Some("continuing") if invocations < 50 => {
                payload = resp["continuation"].to_string().into_bytes();
            }
            _ => break resp,
        }
    };
    let s = &summary["summary"];
    println!(
        "== {f} on the same fleet: {} nodes, {} rows, {} types, {} stale (> 24 h), {} invocation(s)",
        s["nodes"], s["rows"], s["types"], s["staleNodes"], invocations
    );

    // Read back from S3: Resource Data Sync objects per type, rows from this run's snapshot.
    let cfg = autopilot_harness::sdk_config(endpoint, DEV_ACCESS_KEY, 3).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&cfg)
            .force_path_style(true)
            .build(),
    );
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(format!("{prefix}/"))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| format!("ListObjectsV2: {e}"))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let run = summary["runId"].as_str().unwrap_or_default();
    let mut types: BTreeMap<String, (usize, usize, String)> = BTreeMap::new();
    for key in &keys {
        let rel = key.strip_prefix(&format!("{prefix}/")).unwrap_or(key);
        if rel.contains("/resourcetype=ManagedInstanceInventory/") {
            let t = rel.split('/').next().unwrap_or_default().to_owned();
            let e = types.entry(t).or_insert((0, 0, key.clone()));
            e.0 += 1;
        } else if let Some(rest) = rel.strip_prefix("snapshots/")
            && rel.contains(&format!("/run={run}/"))
        {
            let t = rest.split('/').next().unwrap_or_default().to_owned();
            let body = s3
                .get_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| format!("GetObject: {e}"))?
                .body
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .into_bytes();
            let rows = body.iter().filter(|b| **b == b'\n').count();
            types.entry(t).or_insert((0, 0, String::new())).1 += rows;
        }
    }
    println!(
        "{:<26} {:>8} {:>7}  first Resource Data Sync key",
        "type", "objects", "rows"
    );
    for (t, (objects, rows, key)) in &types {
        println!("{t:<26} {objects:>8} {rows:>7}  s3://{bucket}/{key}");
    }
    if let Some(key) = summary["manifestKey"].as_str() {
        println!("{:<26} s3://{bucket}/{key}", "manifest (written last)");
    }
    if let Some(key) = s["diff"]["key"].as_str() {
        println!("{:<26} s3://{bucket}/{key}", "application diff");
    }
    println!("{} objects in the bucket under {prefix}/\n", keys.len());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok((f.to_owned(), emf_totals(&sb.logs())))
}
