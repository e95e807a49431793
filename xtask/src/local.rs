//! `cargo xtask emulator` and `cargo xtask invoke`: the Docker-free twins of a deployed stack
//! and `sam local invoke`.

use std::path::{Path, PathBuf};

use autopilot_harness::{
    EmulatorProcess, InvokeOptions, Sandbox, Template, function_spec, repo_root, sdk_config,
    template_path,
};

pub const DEV_ACCESS_KEY: &str = "AKIALOCALDEVELOPER01";

pub fn emulator(args: &[String]) -> Result<(), String> {
    let port: u16 = match args {
        [flag, n] if flag == "--port" => n.parse().map_err(|_| format!("bad port {n:?}"))?,
        [] => 5555,
        _ => return Err("usage: cargo xtask emulator [--port N]".into()),
    };
    let mut emu = EmulatorProcess::start(port).map_err(|e| e.to_string())?;
    let rt = crate::runtime()?;
    let made = rt.block_on(provision(&emu.endpoint))?;
    eprintln!("provisioned {} resources from template.yaml:", made.len());
    for m in &made {
        eprintln!("  {m}");
    }
    println!("AWS_ENDPOINT_URL={}", emu.endpoint);
    eprintln!(
        "control API: {}/_emulator/health   (Ctrl-C to stop)",
        emu.endpoint
    );
    emu.wait().map_err(|e| e.to_string())?;
    Ok(())
}

pub async fn provision(endpoint: &str) -> Result<Vec<String>, String> {
    let template = Template::load(&template_path()).map_err(|e| e.to_string())?;
    let cfg = sdk_config(endpoint, DEV_ACCESS_KEY, 3).await;
    template.provision(&cfg).await.map_err(|e| e.to_string())
}

/// Builds the function binaries (debug, or release when asked) and returns their folder.
pub fn build(release: bool, packages: &[&str]) -> Result<PathBuf, String> {
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(repo_root()).arg("build").arg("--quiet");
    if release {
        cmd.arg("--release");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    crate::run(&mut cmd)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    Ok(target.join(if release { "release" } else { "debug" }))
}

pub fn invoke(args: &[String]) -> Result<(), String> {
    let usage = "usage: cargo xtask invoke <function> -e <event.json> [--release]";
    let function = args.first().ok_or(usage)?.clone();
    let mut event: Option<PathBuf> = None;
    let mut release = false;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "-e" | "--event" => {
                event = args.get(i + 1).map(PathBuf::from);
                i += 1;
            }
            "--release" => release = true,
            other => return Err(format!("unexpected {other:?}\n{usage}")),
        }
        i += 1;
    }
    let event = event.ok_or(usage)?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").map_err(|_| {
        "AWS_ENDPOINT_URL is not set: start `cargo xtask emulator` and export what it prints"
            .to_owned()
    })?;
    let payload = std::fs::read(&event).map_err(|e| format!("{}: {e}", event.display()))?;
    let bin_dir = build(release, &[&function])?;
    let access_key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| DEV_ACCESS_KEY.into());
    let rt = crate::runtime()?;
    rt.block_on(async {
        let template = Template::load(&template_path()).map_err(|e| e.to_string())?;
        let spec = function_spec(
            &template,
            &function,
            &bin_dir.join(&function),
            &endpoint,
            &access_key,
        )
        .map_err(|e| e.to_string())?;
        let sb = Sandbox::spawn(spec).await.map_err(|e| e.to_string())?;
        let init = sb.init_duration().await.map_err(|e| e.to_string())?;
        let inv = sb
            .invoke(&payload, InvokeOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        for line in sb.logs() {
            eprintln!("{line}");
        }
        eprintln!(
            "init {:.1} ms, invocation {:.1} ms, request id {}",
            init.as_secs_f64() * 1e3,
            inv.duration.as_secs_f64() * 1e3,
            inv.request_id
        );
        match inv.outcome {
            Ok(v) => {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                Ok(())
            }
            Err(e) => Err(format!("{}: {}", e.error_type, e.error_message)),
        }
    })
}

pub fn repo_root_events(function: &str) -> PathBuf {
    repo_root().join("events").join(function)
}

pub fn sample_files(function: &str) -> Vec<PathBuf> {
    let dir = repo_root().join("events").join(function);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}
