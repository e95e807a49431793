//! Developer commands for ssm-autopilot. Run `cargo xtask help`.

mod bench;
mod ci;
mod demo;
mod fuzz;
mod local;
mod scale;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <command>

  emulator [--port N]                  start the local AWS emulator, provision template.yaml's resources,
                                       print AWS_ENDPOINT_URL and stay in the foreground
  invoke <function> -e <event.json>    run a function's real binary once through a local Lambda Runtime API
         [--release]                   (needs AWS_ENDPOINT_URL); prints its JSON response, or the error and exit 1
  demo                                 build, start the emulator, replay events/ through every function, summarise
  bench [--scale-only] [--debug]       release builds: cold start, peak RSS, package size, cost vs a Python baseline,
        [--nodes N]                    then fleet-scale figures (10,000-node compliance sweep; API calls vs minimum)
  fuzz [--seconds N]                   build the cargo fuzz targets in fuzz/ (stable toolchain via RUSTC_BOOTSTRAP)
       [--target T] [--sanitizer S]    and run each for N s (default 30) seeded with events/ and tests/fixtures/;
                                       prints executions and crashes, exit 1 on a crash
  ci                                   everything CI checks: fmt, clippy, cfn-lint, all tests (the README's test command)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("emulator") => local::emulator(&args[1..]),
        Some("invoke") => local::invoke(&args[1..]),
        Some("demo") => demo::run(),
        Some("ci") => ci::run(),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every process that builds an SDK client talks to loopback only, with dummy credentials.
pub fn local_aws_env(cmd: &mut std::process::Command) {
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIALOCALDEVELOPER01")
        .env("AWS_SECRET_ACCESS_KEY", autopilot_harness::SECRET_KEY)
        .env("AWS_REGION", "us-east-1");
}

/// Runs a command, failing with its name when it does not succeed.
pub fn run(cmd: &mut std::process::Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}
