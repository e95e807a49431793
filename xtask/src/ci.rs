//! `cargo xtask ci`: the project's test command (README), run by `.ci/run` on a clean clone.
//! fmt, template checks (cfn-lint, checkov, sam validate), clippy, then every test against one
//! shared emulator, then a bounded fuzzing run (built in the background meanwhile).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use autopilot_harness::{EmulatorProcess, repo_root};

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(repo_root());
    c
}

/// A venv of pinned Python tools (cfn-lint, aws-sam-cli), created once under target/.
pub fn tools_venv() -> Result<PathBuf, String> {
    pinned_venv("tools-venv", ".ci/requirements-tools.txt")
}

/// checkov's own venv: its pins conflict with aws-sam-cli's, so they cannot share one.
pub fn checkov_venv() -> Result<PathBuf, String> {
    pinned_venv("checkov-venv", ".ci/requirements-checkov.txt")
}

/// A venv under target/ holding exactly the pins of `requirements`, re-created when they change.
fn pinned_venv(name: &str, requirements: &str) -> Result<PathBuf, String> {
    let root = repo_root();
    let venv = root.join("target").join(name);
    let reqs = root.join(requirements);
    let stamp = venv.join(".requirements");
    let wanted = std::fs::read_to_string(&reqs).map_err(|e| format!("{}: {e}", reqs.display()))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        eprintln!("installing pinned tools into {} ...", venv.display());
        crate::run(
            Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
        )?;
        crate::run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&reqs),
        )?;
        std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    }
    Ok(venv)
}

/// Fuzzing time per target in CI: five targets, under a minute and a half in all.
const FUZZ_SECONDS_PER_TARGET: u64 = 15;

pub fn run() -> Result<(), String> {
    let started = Instant::now();
    let step = |name: &str| eprintln!("\n==> {name} ({:.0} s)", started.elapsed().as_secs_f64());

    // The fuzz targets build in their own target dir with sanitizer flags (~5 min with the
    // cargo-fuzz install); building them beside the lint steps hides most of that. They must be
    // built before the tests start: timing-sensitive tests get the machine to themselves.
    let fuzz_opts = crate::fuzz::Opts::ci(FUZZ_SECONDS_PER_TARGET);
    let fuzz_log = repo_root().join("target/ci-fuzz-build.log");
    let _ = std::fs::create_dir_all(repo_root().join("target"));
    let _ = std::fs::remove_file(&fuzz_log);
    let fuzz_build = {
        let (opts, log) = (
            crate::fuzz::Opts::ci(FUZZ_SECONDS_PER_TARGET),
            fuzz_log.clone(),
        );
        std::thread::spawn(move || crate::fuzz::build(&opts, Some(&log)))
    };

    step("cargo fmt --check");
    crate::run(cargo().args(["fmt", "--all", "--check"]))?;

    step("cfn-lint template.yaml");
    let venv = tools_venv()?;
    crate::run(
        Command::new(venv.join("bin/cfn-lint"))
            .current_dir(repo_root())
            .arg("template.yaml"),
    )?;

    step("sam validate --lint");
    let mut sam = Command::new(venv.join("bin/sam"));
    sam.current_dir(repo_root())
        .args(["validate", "--lint", "--region", "us-east-1"])
        .env("SAM_CLI_TELEMETRY", "0");
    crate::local_aws_env(&mut sam);
    crate::run(&mut sam)?;

    step("checkov template.yaml");
    // --skip-download: checkov otherwise fetches check metadata from an outside service.
    // Every failed check must be fixed or suppressed in the template with a written reason.
    crate::run(
        Command::new(checkov_venv()?.join("bin/checkov"))
            .current_dir(repo_root())
            .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true")
            .args([
                "-f",
                "template.yaml",
                "--framework",
                "cloudformation",
                "--skip-download",
                "--quiet",
                "--compact",
            ]),
    )?;

    step("cargo clippy -D warnings");
    crate::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;

    step("wait for the fuzz build");
    let fuzz_built = fuzz_build
        .join()
        .map_err(|_| "the fuzz build thread panicked".to_owned())?
        .map_err(|e| {
            let log = std::fs::read_to_string(&fuzz_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}\n{}", tail.join("\n"))
        })?;

    step("start the emulator shared by all tests");
    let emu = EmulatorProcess::start(0).map_err(|e| e.to_string())?;

    step("cargo test --workspace");
    let mut test = cargo();
    // --no-fail-fast: one red run reports every failing suite, not just the first.
    test.args(["test", "--workspace", "--no-fail-fast"])
        .env(autopilot_harness::emulator::EMULATOR_URL_ENV, &emu.endpoint);
    crate::local_aws_env(&mut test);
    run_with_deadline(&mut test, Duration::from_secs(50 * 60))?;

    step("pytest tests/emulator");
    let python = repo_root().join("target/emulator-venv/bin/python");
    let mut py = Command::new(python);
    py.current_dir(repo_root())
        .args(["-m", "pytest", "-q", "tests/emulator"]);
    crate::local_aws_env(&mut py);
    crate::run(&mut py)?;

    drop(emu);

    step("cargo fuzz, bounded");
    let summary = crate::fuzz::run_built(&fuzz_opts, fuzz_built)?;
    if summary.crashes() > 0 {
        return Err(format!(
            "fuzzing found {} crash(es); inputs are under fuzz/artifacts/",
            summary.crashes()
        ));
    }

    eprintln!(
        "\nci: all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs a command, killing it if it outlives `limit`: a hung test must fail CI quickly
/// instead of consuming its whole time budget.
fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(format!("{what} failed ({status})")),
            None if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what} did not finish within {} minutes",
                    limit.as_secs() / 60
                ));
            }
            None => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}
