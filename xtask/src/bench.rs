//! `cargo xtask bench`: cold start, peak memory, package size, warm duration and cost of each
//! function's release binary, each next to a Python 3.11 + boto3 baseline measured in the same
//! run. Prints one table and writes `bench-results/latest.json`.

use std::path::{Path, PathBuf};

use autopilot_harness::{
    EmulatorProcess, FunctionSpec, InvokeOptions, Sandbox, Template, function_spec, repo_root,
    template_path,
};
use serde_json::{Value, json};

use crate::local::{DEV_ACCESS_KEY, build, provision, sample_files};

const COLD_RUNS: usize = 7;
/// arm64 Lambda price per GB-second and per request (us-east-1).
const PRICE_GB_SECOND: f64 = 0.000_013_333_4;
const PRICE_REQUEST: f64 = 0.000_000_2;

struct Measured {
    cold_start_ms: f64,
    peak_rss_mb: f64,
    warm_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn measure(spec: &FunctionSpec, events: &[PathBuf]) -> Result<Measured, String> {
    let mut colds = Vec::new();
    let mut rss = 0.0_f64;
    let mut warm = Vec::new();
    for run in 0..COLD_RUNS {
        let sb = Sandbox::spawn(spec.clone())
            .await
            .map_err(|e| e.to_string())?;
        colds.push(
            sb.init_duration()
                .await
                .map_err(|e| e.to_string())?
                .as_secs_f64()
                * 1e3,
        );
        if run == 0 {
            for e in events {
                let payload = std::fs::read(e).map_err(|err| err.to_string())?;
                for _ in 0..3 {
                    let inv = sb
                        .invoke(&payload, InvokeOptions::default())
                        .await
                        .map_err(|err| err.to_string())?;
                    warm.push(inv.duration.as_secs_f64() * 1e3);
                }
            }
            rss = sb.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
        }
        sb.kill();
        sb.wait_exit().await;
    }
    Ok(Measured {
        cold_start_ms: median(colds),
        peak_rss_mb: rss,
        warm_ms: median(warm),
    })
}

fn zipped_size(python: &Path, bootstrap: &Path) -> Result<f64, String> {
    let out = std::process::Command::new(python)
        .args(["-c", "import io,sys,zipfile;b=io.BytesIO();z=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED,compresslevel=9);z.write(sys.argv[1],'bootstrap');z.close();print(len(b.getvalue()))"])
        .arg(bootstrap)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse::<f64>()
        .map(|b| b / 1_000_000.0)
        .map_err(|_| format!("zip size: {text}"))
}

fn cost_per_million(warm_ms: f64) -> f64 {
    let billed_ms = warm_ms.ceil().max(1.0);
    1e6 * (PRICE_REQUEST + billed_ms / 1000.0 * 0.125 * PRICE_GB_SECOND)
}

struct Options {
    scale_only: bool,
    release: bool,
    nodes: usize,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        scale_only: false,
        release: true,
        nodes: 10_000,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale-only" => o.scale_only = true,
            // Call counts do not depend on the build; debug binaries make iterating cheaper.
            "--debug" => o.release = false,
            "--nodes" => {
                o.nodes = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--nodes takes a number")?;
            }
            other => return Err(format!("bench: unexpected argument {other:?}")),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = options(args)?;
    let template = Template::load(&template_path()).map_err(|e| e.to_string())?;
    let functions: Vec<String> = [
        "opsitem-creator",
        "incident-response",
        "compliance-remediator",
        "inventory-aggregator",
    ]
    .into_iter()
    .filter(|f| {
        template.function_for_binary(f).is_some() && repo_root().join("functions").join(f).is_dir()
    })
    .map(str::to_owned)
    .collect();
    let names: Vec<&str> = functions.iter().map(String::as_str).collect();
    eprintln!("building binaries of {} ...", names.join(", "));
    let bin_dir = build(opts.release, &names)?;
    let emu = EmulatorProcess::start(0).map_err(|e| e.to_string())?;
    let python = repo_root().join("target/emulator-venv/bin/python");
    let launcher = repo_root().join("target/bench/python-baseline");
    std::fs::create_dir_all(repo_root().join("target/bench")).map_err(|e| e.to_string())?;
    std::fs::write(
        &launcher,
        format!(
            "#!/bin/sh\nexec {} {}\n",
            python.display(),
            repo_root().join("bench/python_baseline.py").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    set_executable(&launcher)?;
    let rt = crate::runtime()?;
    let (rows, scale) = rt.block_on(async {
        provision(&emu.endpoint).await?;
        let mut rows = Vec::new();
        for f in functions.iter().filter(|_| !opts.scale_only) {
            let spec = function_spec(&template, f, &bin_dir.join(f), &emu.endpoint, DEV_ACCESS_KEY).map_err(|e| e.to_string())?;
            let mut base_spec = spec.clone();
            base_spec.binary = launcher.clone();
            let events = sample_files(f);
            eprintln!("measuring {f} ({} sample events) and its Python baseline ...", events.len());
            let ours = measure(&spec, &events).await?;
            let base = measure(&base_spec, &events).await?;
            let zip_mb = zipped_size(&python, &bin_dir.join(f))?;
            rows.push(json!({
                "function": f,
                "cold_start_ms": {"ours": ours.cold_start_ms, "baseline": base.cold_start_ms, "ratio": base.cold_start_ms / ours.cold_start_ms, "target": ">= 20x faster"},
                "peak_rss_mb": {"ours": ours.peak_rss_mb, "baseline": base.peak_rss_mb, "ratio": ours.peak_rss_mb / base.peak_rss_mb, "target": "<= 24 MB and <= 0.3x"},
                "zip_mb_x86_64": {"ours": zip_mb, "target": "<= 5 MB"},
                "warm_invoke_ms": {"ours": ours.warm_ms, "baseline": base.warm_ms},
                "cost_per_million_usd_128mb_arm64": {"ours": cost_per_million(ours.warm_ms), "baseline": cost_per_million(base.warm_ms)},
                "pass": {
                    "cold_start": base.cold_start_ms / ours.cold_start_ms >= 20.0,
                    "peak_rss": ours.peak_rss_mb <= 24.0 && ours.peak_rss_mb / base.peak_rss_mb <= 0.3,
                    "zip": zip_mb <= 5.0,
                },
            }));
        }
        eprintln!("compliance sweep over {} seeded nodes ...", opts.nodes);
        let mut scale = vec![
            crate::scale::compliance_sweep(&template, &bin_dir, &emu.endpoint, opts.nodes).await?,
        ];
        eprintln!("inventory run over {} seeded nodes, 25 ms per SSM call ...", opts.nodes);
        scale.push(
            crate::scale::inventory(&template, &bin_dir, &emu.endpoint, opts.nodes, 25).await?,
        );
        Ok::<_, String>((rows, scale))
    })?;
    print_table(&rows);
    print_scale(&scale);
    let out = repo_root().join("bench-results");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let path = out.join("latest.json");
    // A scale-only run keeps the per-function figures of the last full run.
    let rows = if opts.scale_only {
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|d| d["functions"].clone())
            .unwrap_or(Value::Array(rows))
    } else {
        Value::Array(rows)
    };
    let doc = json!({
        "generated_by": "cargo xtask bench", "release": opts.release, "cold_runs": COLD_RUNS,
        "functions": rows, "scale": scale,
    });
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    eprintln!("wrote bench-results/latest.json");
    Ok(())
}

fn print_table(rows: &[Value]) {
    println!("| function | figure | ours | baseline (Python+boto3) | ratio | target | pass |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let f = r["function"].as_str().unwrap_or_default();
        let c = &r["cold_start_ms"];
        let m = &r["peak_rss_mb"];
        let z = &r["zip_mb_x86_64"];
        let w = &r["warm_invoke_ms"];
        let k = &r["cost_per_million_usd_128mb_arm64"];
        let p = &r["pass"];
        let yes = |b: &Value| {
            if b.as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            }
        };
        println!(
            "| {f} | cold start (spawn → first /next) | {:.1} ms | {:.1} ms | {:.0}x faster | ≥ 20x | {} |",
            c["ours"].as_f64().unwrap_or(0.0),
            c["baseline"].as_f64().unwrap_or(0.0),
            c["ratio"].as_f64().unwrap_or(0.0),
            yes(&p["cold_start"])
        );
        println!(
            "| {f} | peak RSS over the samples | {:.1} MB | {:.1} MB | {:.2}x | ≤ 24 MB, ≤ 0.3x | {} |",
            m["ours"].as_f64().unwrap_or(0.0),
            m["baseline"].as_f64().unwrap_or(0.0),
            m["ratio"].as_f64().unwrap_or(0.0),
            yes(&p["peak_rss"])
        );
        println!(
            "| {f} | zipped bootstrap (x86_64) | {:.2} MB | – | – | ≤ 5 MB | {} |",
            z["ours"].as_f64().unwrap_or(0.0),
            yes(&p["zip"])
        );
        println!(
            "| {f} | warm invocation (median, incl. emulator I/O) | {:.2} ms | {:.2} ms | – | – | – |",
            w["ours"].as_f64().unwrap_or(0.0),
            w["baseline"].as_f64().unwrap_or(0.0)
        );
        println!(
            "| {f} | cost per 1M events (128 MB arm64) | ${:.3} | ${:.3} | – | – | – |",
            k["ours"].as_f64().unwrap_or(0.0),
            k["baseline"].as_f64().unwrap_or(0.0)
        );
    }
}

fn print_scale(rows: &[Value]) {
    println!();
    println!(
        "| figure | nodes | API calls | minimum | ratio | target | pass | wall (ideal) | peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let wall = match r["ideal_wall_seconds"].as_f64() {
            Some(ideal) => format!(
                "{:.1} s ({ideal:.1} s, {:.2}x)",
                r["wall_seconds"].as_f64().unwrap_or(0.0),
                r["wall_ratio"].as_f64().unwrap_or(0.0)
            ),
            None => format!("{:.1} s", r["wall_seconds"].as_f64().unwrap_or(0.0)),
        };
        println!(
            "| {} | {} | {} | {} | {:.3}x | {} | {} | {wall} | {:.1} MB |",
            r["figure"].as_str().unwrap_or_default(),
            r["nodes"],
            r.get("calls_total").unwrap_or(&r["ssm_calls_total"]),
            r.get("calls_minimum").unwrap_or(&r["ssm_calls_minimum"]),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
            r["target"].as_str().unwrap_or_default(),
            if r["pass"].as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            },
            r["peak_rss_mb"].as_f64().unwrap_or(0.0),
        );
    }
}

fn set_executable(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}
