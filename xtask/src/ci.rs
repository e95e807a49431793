//! `cargo xtask ci`: the project's test command (README), run by `.ci/run` on a clean clone.
//! fmt, template checks (cfn-lint, checkov, sam validate), clippy, then every test against one
//! shared emulator, then a bounded fuzzing run (built in the background meanwhile).
//! `cargo xtask ci --tests-only` runs just the Rust tests (emulator, build, test binaries).
//!
//! The test binaries run `AUTOPILOT_TEST_JOBS` at a time (default 2): the long suites mostly
//! wait on injected latency, deadlines and sleeps, so one after another (as `cargo test` runs
//! them) leaves the machine idle most of the time.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use autopilot_harness::emulator::EMULATOR_URL_ENV;
use autopilot_harness::{EmulatorProcess, repo_root};
use serde_json::Value;

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

/// Fuzzing time per target in CI: six targets, about a minute and a half in all.
const FUZZ_SECONDS_PER_TARGET: u64 = 15;

pub fn run() -> Result<(), String> {
    if tests_only()? {
        eprintln!("==> cargo test --workspace (test binaries in parallel), own emulator");
        let emu = EmulatorProcess::start(0).map_err(|e| e.to_string())?;
        return rust_tests(&emu.endpoint);
    }
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
    // The fuzz crate is a workspace of its own: `--all` does not reach it.
    crate::run(cargo().args([
        "fmt",
        "--all",
        "--check",
        "--manifest-path",
        "fuzz/Cargo.toml",
    ]))?;

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

    step("cargo test --workspace (test binaries in parallel)");
    rust_tests(&emu.endpoint)?;

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

/// `cargo xtask ci [--tests-only]`: the options after `ci` (main.rs hands every command the
/// process arguments).
fn tests_only() -> Result<bool, String> {
    let mut tests_only = false;
    for arg in std::env::args().skip(2) {
        match arg.as_str() {
            "--tests-only" => tests_only = true,
            other => {
                return Err(format!(
                    "ci: unknown option {other:?} (known: --tests-only)"
                ));
            }
        }
    }
    Ok(tests_only)
}

/// The whole test step may take this long: a hung test must fail CI quickly instead of
/// consuming its whole time budget.
const TEST_STEP_LIMIT: Duration = Duration::from_secs(50 * 60);

/// How many test binaries run at once; 1 runs them one after another, as `cargo test` does.
const TEST_JOBS_ENV: &str = "AUTOPILOT_TEST_JOBS";
const DEFAULT_TEST_JOBS: usize = 2;

/// Durations of the previous run, by test binary: the next run starts the longest first.
const TEST_TIMES: &str = "target/ci-test-times.json";
/// One log per test binary, printed whole when it finishes.
const TEST_LOGS: &str = "target/ci-tests";

/// Seconds the slow binaries took in a fresh-clone CI run on 2 cores (one at a time): the
/// order on a clean clone, where no recorded times exist. Starting the longest first keeps
/// one of them from running alone at the end.
const KNOWN_SLOW: &[(&str, f64)] = &[
    ("inventory-aggregator/e2e", 310.0),
    ("opsitem-creator/fault_matrix", 93.0),
    ("opsitem-creator/replay", 88.0),
    ("incident-response/fault_matrix", 56.0),
    ("compliance-remediator/unfinished_steps", 48.0),
    ("opsitem-creator/observability", 46.0),
    ("incident-response/replay", 37.0),
    ("compliance-remediator/fault_matrix", 36.0),
    ("inventory-aggregator/fault_matrix", 33.0),
    ("inventory-aggregator/replay", 33.0),
    ("inventory-aggregator/parquet_e2e", 33.0),
    ("compliance-remediator/interruption", 30.0),
    ("compliance-remediator/replay", 29.0),
    ("compliance-remediator/reliability", 11.0),
];

/// Builds every test target once, then runs the test binaries (and the doc tests) a few at a
/// time against the emulator at `endpoint`. Every binary runs even when one fails, as with
/// `cargo test --no-fail-fast`; the step fails if any did.
fn rust_tests(endpoint: &str) -> Result<(), String> {
    let workers = test_jobs()?;
    let root = repo_root();
    let binaries = build_test_binaries()?;
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut jobs: Vec<Job> = binaries.iter().map(TestBinary::job).collect();
    // Doc tests are not in the build's artifacts: rustdoc compiles them when they run.
    jobs.push(Job {
        label: "workspace/doc-tests".into(),
        program: PathBuf::from(&cargo_bin),
        args: ["test", "--workspace", "--doc"].map(String::from).to_vec(),
        cwd: root.clone(),
        env: Vec::new(),
    });
    for job in &mut jobs {
        job.env.push((EMULATOR_URL_ENV.into(), endpoint.into()));
    }

    let times_path = root.join(TEST_TIMES);
    let mut times = read_times(&times_path);
    order_jobs(&mut jobs, &times);
    let log_dir = root.join(TEST_LOGS);
    // Last run's logs would pass for this run's.
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    eprintln!(
        "running {} test binaries, {workers} at a time (longest known first); logs in {}",
        jobs.len(),
        log_dir.display()
    );

    let started = Instant::now();
    let print = |o: &Outcome, log: &str| {
        // Not libtest's `---- name stdout ----`, so a search for one finds only the other.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "\n==== test binary {} ({:.1} s, {}) ====\n{log}",
            o.label, o.seconds, o.result
        );
        let _ = out.flush();
    };
    let outcomes = run_pool(jobs, workers, &log_dir, started + TEST_STEP_LIMIT, &print);
    let wall = started.elapsed().as_secs_f64();

    for o in &outcomes {
        if o.result != JobResult::NotStarted {
            times.insert(o.label.clone(), o.seconds);
        }
    }
    if let Err(e) = write_times(&times_path, &times) {
        eprintln!("warning: {}: {e}", times_path.display());
    }
    eprintln!("\n{}", summary_table(&outcomes, workers, wall));
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.result != JobResult::Passed)
        .map(|o| o.label.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} test binaries did not pass: {} (logs in {})",
            failed.len(),
            outcomes.len(),
            failed.join(", "),
            log_dir.display()
        ))
    }
}

fn test_jobs() -> Result<usize, String> {
    let Ok(value) = std::env::var(TEST_JOBS_ENV) else {
        return Ok(DEFAULT_TEST_JOBS);
    };
    match value.trim() {
        "" => Ok(DEFAULT_TEST_JOBS),
        v => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("{TEST_JOBS_ENV}={value:?}: expected a number ≥ 1")),
        },
    }
}

/// `cargo test --workspace --no-run`, reading the built test executables from its JSON
/// messages (diagnostics still render on stderr).
fn build_test_binaries() -> Result<Vec<TestBinary>, String> {
    let mut build = cargo();
    build
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped());
    let what = format!("{build:?}");
    let mut child = build.spawn().map_err(|e| format!("{what}: {e}"))?;
    let mut messages = String::new();
    let read = match child.stdout.take() {
        Some(mut stdout) => stdout.read_to_string(&mut messages).map(|_| ()),
        None => Ok(()),
    };
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    if !status.success() {
        return Err(format!("{what} failed ({status})"));
    }
    read.map_err(|e| format!("{what}: reading its messages: {e}"))?;
    let binaries = test_binaries(&messages)?;
    if binaries.is_empty() {
        return Err(format!("{what} reported no test executables"));
    }
    Ok(binaries)
}

/// A test executable cargo built, with what running it the way `cargo test` does needs.
#[derive(Debug, Clone, PartialEq)]
struct TestBinary {
    package: String,
    version: String,
    /// `lib`, `bin-<name>` or the integration test's / bench's name.
    name: String,
    executable: PathBuf,
    manifest_path: PathBuf,
}

impl TestBinary {
    fn label(&self) -> String {
        format!("{}/{}", self.package, self.name)
    }

    /// Runs it as `cargo test` does: in its package's directory, with the package variables
    /// cargo sets at run time (tests locate fixtures through `CARGO_MANIFEST_DIR`).
    fn job(&self) -> Job {
        let dir = self
            .manifest_path
            .parent()
            .map_or_else(repo_root, Path::to_path_buf);
        let env = [
            ("CARGO_MANIFEST_DIR", dir.display().to_string()),
            (
                "CARGO_MANIFEST_PATH",
                self.manifest_path.display().to_string(),
            ),
            ("CARGO_PKG_NAME", self.package.clone()),
            ("CARGO_PKG_VERSION", self.version.clone()),
        ];
        Job {
            label: self.label(),
            program: self.executable.clone(),
            args: Vec::new(),
            cwd: dir,
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }
}

/// The test executables in cargo's JSON messages: `compiler-artifact`s built with the test
/// profile that have an executable (a bin target's own binary, built for
/// `CARGO_BIN_EXE_*`, is not one; dependencies have none).
fn test_binaries(messages: &str) -> Result<Vec<TestBinary>, String> {
    let mut out = Vec::new();
    for line in messages.lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let Some(executable) = msg["executable"].as_str() else {
            continue;
        };
        let id = msg["package_id"].as_str().unwrap_or_default();
        let (package, version) =
            package_name_version(id).ok_or_else(|| format!("unreadable package id {id:?}"))?;
        let manifest_path = msg["manifest_path"]
            .as_str()
            .ok_or_else(|| format!("{executable}: no manifest_path"))?;
        let target = msg["target"]["name"].as_str().unwrap_or_default();
        let kind = msg["target"]["kind"][0].as_str().unwrap_or_default();
        let name = match kind {
            "test" | "bench" | "example" => target.to_owned(),
            "bin" => format!("bin-{target}"),
            _ => "lib".to_owned(),
        };
        out.push(TestBinary {
            package,
            version,
            name,
            executable: PathBuf::from(executable),
            manifest_path: PathBuf::from(manifest_path),
        });
    }
    Ok(out)
}

/// `(name, version)` of a package id in any of cargo's spellings:
/// `path+file:///w/shared#autopilot-shared@0.1.0`, `path+file:///w/xtask#0.1.0` (the name is
/// left out when it is the directory's) and the older `xtask 0.1.0 (path+file:///w/xtask)`.
fn package_name_version(id: &str) -> Option<(String, String)> {
    if let Some((url, fragment)) = id.rsplit_once('#') {
        if let Some((name, version)) = fragment.split_once('@') {
            return Some((name.to_owned(), version.to_owned()));
        }
        let path = url.split('?').next().unwrap_or(url).trim_end_matches('/');
        let name = path.rsplit('/').next().filter(|n| !n.is_empty())?;
        return Some((name.to_owned(), fragment.to_owned()));
    }
    let mut words = id.split_whitespace();
    Some((words.next()?.to_owned(), words.next()?.to_owned()))
}

fn read_times(path: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    doc.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn write_times(path: &Path, times: &BTreeMap<String, f64>) -> Result<(), String> {
    let rounded: serde_json::Map<String, Value> = times
        .iter()
        .map(|(k, s)| (k.clone(), Value::from((s * 10.0).round() / 10.0)))
        .collect();
    let text = serde_json::to_string_pretty(&rounded).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| e.to_string())
}

/// Longest expected first (last run's time, else the static estimate, else 0), then by name.
fn order_jobs(jobs: &mut [Job], recorded: &BTreeMap<String, f64>) {
    let expected = |label: &str| {
        recorded.get(label).copied().unwrap_or_else(|| {
            KNOWN_SLOW
                .iter()
                .find(|(l, _)| *l == label)
                .map_or(0.0, |(_, s)| *s)
        })
    };
    jobs.sort_by(|a, b| {
        expected(&b.label)
            .total_cmp(&expected(&a.label))
            .then_with(|| a.label.cmp(&b.label))
    });
}

/// One process to run with its output captured to a log.
#[derive(Debug, Clone)]
struct Job {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
}

impl Job {
    fn log_name(&self) -> String {
        format!("{}.log", self.label.replace('/', "-"))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).current_dir(&self.cwd);
        // `cargo xtask` runs under `cargo run`, which set xtask's own package variables: they
        // must not leak into another package's tests. The dynamic-library path cargo run set
        // (target/debug/deps) is inherited, as cargo test would set it.
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || matches!(
                    &*name,
                    "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
                )
            {
                cmd.env_remove(&key);
            }
        }
        crate::local_aws_env(&mut cmd);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

#[derive(Debug, Clone, PartialEq)]
enum JobResult {
    Passed,
    /// Exited unsuccessfully, or could not be started.
    Failed(String),
    /// Killed at the step's time limit.
    TimedOut,
    /// The step's time limit had passed before its turn came.
    NotStarted,
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passed => f.write_str("ok"),
            Self::Failed(why) => write!(f, "FAILED ({why})"),
            Self::TimedOut => f.write_str("KILLED at the time limit"),
            Self::NotStarted => f.write_str("not run: time limit reached"),
        }
    }
}

#[derive(Debug, Clone)]
struct Outcome {
    /// Position in the run order, for the summary.
    order: usize,
    label: String,
    /// When it started, in seconds since the pool did: shows what overlapped.
    start: f64,
    seconds: f64,
    result: JobResult,
}

/// Runs `jobs` in order on `workers` threads, each job's output (stdout and stderr, as a
/// terminal would interleave them) going to its own log under `log_dir`. `on_done` gets each
/// outcome with the whole log as soon as the job ends. Jobs still running at `deadline` are
/// killed; jobs not started by then are not started.
fn run_pool(
    jobs: Vec<Job>,
    workers: usize,
    log_dir: &Path,
    deadline: Instant,
    on_done: &(dyn Fn(&Outcome, &str) + Sync),
) -> Vec<Outcome> {
    let count = jobs.len();
    let pool_started = Instant::now();
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
    let outcomes = Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, count.max(1)) {
            scope.spawn(|| {
                loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    let Some((order, job)) = next else { break };
                    let (outcome, log) = run_job((order, &job), log_dir, pool_started, deadline);
                    on_done(&outcome, &log);
                    outcomes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    outcomes.sort_by_key(|o| o.order);
    outcomes
}

fn run_job(
    (order, job): (usize, &Job),
    log_dir: &Path,
    pool_started: Instant,
    deadline: Instant,
) -> (Outcome, String) {
    let log_path = log_dir.join(job.log_name());
    let started = Instant::now();
    let result = if started >= deadline {
        JobResult::NotStarted
    } else {
        match spawn_logged(job, &log_path) {
            Ok(child) => wait_until(child, deadline),
            Err(e) => JobResult::Failed(e),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let log = std::fs::read(&log_path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let outcome = Outcome {
        order,
        label: job.label.clone(),
        start: started.duration_since(pool_started).as_secs_f64(),
        seconds,
        result,
    };
    (outcome, log)
}

fn spawn_logged(job: &Job, log_path: &Path) -> Result<Child, String> {
    let what = format!("{}: {}", job.label, job.program.display());
    let log = File::create(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    job.command()
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("could not start {what}: {e}"))
}

fn wait_until(mut child: Child, deadline: Instant) -> JobResult {
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return JobResult::Passed,
            Ok(Some(status)) => return JobResult::Failed(status.to_string()),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return JobResult::Failed(e.to_string());
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return JobResult::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn summary_table(outcomes: &[Outcome], workers: usize, wall: f64) -> String {
    let mut t = String::from(
        "| test binary | started at | seconds | result |\n| --- | ---: | ---: | --- |\n",
    );
    for o in outcomes {
        t.push_str(&format!(
            "| {} | {:.1} | {:.1} | {} |\n",
            o.label, o.start, o.seconds, o.result
        ));
    }
    let summed: f64 = outcomes.iter().map(|o| o.seconds).sum();
    let bad = outcomes
        .iter()
        .filter(|o| o.result != JobResult::Passed)
        .count();
    t.push_str(&format!(
        "| {} binaries, {workers} at a time | | {wall:.1} wall ({summed:.1} summed) | {} |\n",
        outcomes.len(),
        if bad == 0 {
            "all passed".to_owned()
        } else {
            format!("{bad} did not pass")
        }
    ));
    t
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Lines as `cargo test --no-run --message-format=json-render-diagnostics` prints them
    /// (trimmed to the fields read).
    const MESSAGES: &str = r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#serde@1.0.229","manifest_path":"/r/.cargo/serde/Cargo.toml","target":{"kind":["lib"],"name":"serde"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","package_id":"path+file:///w/shared#autopilot-shared@0.1.0","manifest_path":"/w/shared/Cargo.toml","target":{"kind":["lib"],"name":"autopilot_shared"},"profile":{"test":true},"executable":"/w/target/debug/deps/autopilot_shared-744098c9"}
{"reason":"compiler-artifact","package_id":"path+file:///w/functions/compliance-remediator#0.1.0","manifest_path":"/w/functions/compliance-remediator/Cargo.toml","target":{"kind":["bin"],"name":"compliance-remediator"},"profile":{"test":false},"executable":"/w/target/debug/compliance-remediator"}
{"reason":"compiler-artifact","package_id":"path+file:///w/functions/compliance-remediator#0.1.0","manifest_path":"/w/functions/compliance-remediator/Cargo.toml","target":{"kind":["bin"],"name":"compliance-remediator"},"profile":{"test":true},"executable":"/w/target/debug/deps/compliance_remediator-12265ac4"}
{"reason":"compiler-artifact","package_id":"path+file:///w/functions/compliance-remediator#0.1.0","manifest_path":"/w/functions/compliance-remediator/Cargo.toml","target":{"kind":["test"],"name":"e2e"},"profile":{"test":true},"executable":"/w/target/debug/deps/e2e-cb1734b5"}
not json
{"reason":"build-finished","success":true}"#;

    #[test]
    fn test_executables_are_the_test_profile_artifacts_with_an_executable() {
        let bins = test_binaries(MESSAGES).unwrap();
        let labels: Vec<String> = bins.iter().map(TestBinary::label).collect();
        assert_eq!(
            labels,
            [
                "autopilot-shared/lib",
                "compliance-remediator/bin-compliance-remediator",
                "compliance-remediator/e2e"
            ]
        );
        let e2e = bins[2].job();
        assert_eq!(e2e.program, Path::new("/w/target/debug/deps/e2e-cb1734b5"));
        assert_eq!(e2e.cwd, Path::new("/w/functions/compliance-remediator"));
        let env: BTreeMap<_, _> = e2e.env.iter().cloned().collect();
        assert_eq!(
            env["CARGO_MANIFEST_DIR"],
            "/w/functions/compliance-remediator"
        );
        assert_eq!(env["CARGO_PKG_NAME"], "compliance-remediator");
        assert_eq!(env["CARGO_PKG_VERSION"], "0.1.0");
        assert_eq!(e2e.log_name(), "compliance-remediator-e2e.log");
    }

    #[test]
    fn package_ids_in_every_spelling() {
        let pair = |n: &str, v: &str| Some((n.to_owned(), v.to_owned()));
        assert_eq!(
            package_name_version("path+file:///w/shared#autopilot-shared@0.1.0"),
            pair("autopilot-shared", "0.1.0")
        );
        assert_eq!(
            package_name_version("path+file:///w/xtask#0.1.0"),
            pair("xtask", "0.1.0")
        );
        assert_eq!(
            package_name_version("xtask 0.1.0 (path+file:///w/xtask)"),
            pair("xtask", "0.1.0")
        );
        assert_eq!(package_name_version(""), None);
    }

    fn job(label: &str, script: &str) -> Job {
        Job {
            label: label.into(),
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            env: Vec::new(),
        }
    }

    #[test]
    fn recorded_times_then_known_slow_binaries_then_names_decide_the_order() {
        let mut jobs: Vec<Job> = [
            "b/quick",
            "a/quick",
            "inventory-aggregator/e2e",
            "opsitem-creator/replay",
            "new/measured",
        ]
        .iter()
        .map(|l| job(l, "true"))
        .collect();
        let recorded = BTreeMap::from([
            ("opsitem-creator/replay".to_owned(), 400.0),
            ("new/measured".to_owned(), 50.0),
        ]);
        order_jobs(&mut jobs, &recorded);
        let labels: Vec<&str> = jobs.iter().map(|j| j.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "opsitem-creator/replay",
                "inventory-aggregator/e2e",
                "new/measured",
                "a/quick",
                "b/quick"
            ]
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-ci-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_pool_runs_jobs_side_by_side_keeps_whole_logs_and_runs_all_despite_a_failure() {
        let logs = temp_dir("pool");
        let meet = temp_dir("pool-meet");
        // Each of the first two waits for the other to have started: both pass only if they
        // run at the same time.
        let rendezvous = |me: &str, other: &str| {
            format!(
                "echo out-{me}; echo err-{me} >&2; touch {dir}/{me}; \
                 for i in $(seq 300); do [ -e {dir}/{other} ] && exit 0; sleep 0.1; done; exit 1",
                dir = meet.display()
            )
        };
        let mut failing = job("pkg/failing", "echo $CARGO_PKG_NAME in $(pwd); exit 3");
        failing.env.push(("CARGO_PKG_NAME".into(), "pkg".into()));
        failing.cwd = meet.clone();
        let jobs = vec![
            job("pkg/a", &rendezvous("a", "b")),
            job("pkg/b", &rendezvous("b", "a")),
            failing,
            job("pkg/last", "echo last"),
        ];
        let seen = Mutex::new(Vec::new());
        let record =
            |o: &Outcome, log: &str| seen.lock().unwrap().push((o.label.clone(), log.to_owned()));
        let deadline = Instant::now() + Duration::from_secs(120);
        let outcomes = run_pool(jobs, 2, &logs, deadline, &record);

        let results: Vec<(&str, &JobResult)> = outcomes
            .iter()
            .map(|o| (o.label.as_str(), &o.result))
            .collect();
        assert_eq!(
            results,
            [
                ("pkg/a", &JobResult::Passed),
                ("pkg/b", &JobResult::Passed),
                ("pkg/failing", &JobResult::Failed("exit status: 3".into())),
                ("pkg/last", &JobResult::Passed),
            ]
        );
        let seen: BTreeMap<String, String> = seen.into_inner().unwrap().into_iter().collect();
        assert_eq!(seen["pkg/a"], "out-a\nerr-a\n");
        assert_eq!(seen["pkg/failing"], format!("pkg in {}\n", meet.display()));
        assert_eq!(
            std::fs::read_to_string(logs.join("pkg-b.log")).unwrap(),
            "out-b\nerr-b\n"
        );
        let table = summary_table(&outcomes, 2, 1.0);
        assert!(table.contains("| pkg/failing | "), "{table}");
        assert!(table.contains("| 4 binaries, 2 at a time | | "), "{table}");
        assert!(table.contains("| 1 did not pass |"), "{table}");
    }

    #[test]
    fn the_time_limit_kills_the_running_job_and_skips_the_rest() {
        let logs = temp_dir("limit");
        let jobs = vec![job("pkg/hangs", "exec sleep 60"), job("pkg/later", "true")];
        let deadline = Instant::now() + Duration::from_millis(500);
        let outcomes = run_pool(jobs, 1, &logs, deadline, &|_: &Outcome, _: &str| {});
        let results: Vec<&JobResult> = outcomes.iter().map(|o| &o.result).collect();
        assert_eq!(results, [&JobResult::TimedOut, &JobResult::NotStarted]);
    }
}
