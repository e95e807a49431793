//! `cargo xtask fuzz`: runs every `cargo fuzz` target in `fuzz/` for a bounded time, seeded
//! with the sample events, the quirk fixtures and the hostile-input corpus, and reports total
//! executions and crashes. Works on the stable toolchain through `RUSTC_BOOTSTRAP=1` (cargo
//! fuzz needs `-Z` sanitizer flags).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use autopilot_harness::repo_root;

/// cargo-fuzz release installed when missing (pinned, `--locked`).
const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// Every target. None links the AWS SDKs (`autopilot-shared` and the function crates without
/// their `aws` feature), so all of them build beside CI's lint steps.
const TARGETS: [&str; 6] = [
    "classify",
    "raw_pointer",
    "scheduler_detail",
    "aws_time",
    "ids",
    "documents",
];

/// Inputs longer than this are truncated by libFuzzer; the classifier's size limit (1 MB) is a
/// single comparison, proved by the corpus tests, so fuzzing time goes to the parsers instead.
const MAX_LEN: &str = "-max_len=65536";

pub struct Opts {
    seconds: u64,
    sanitizer: String,
    targets: Vec<String>,
}

impl Opts {
    /// CI's bounded run: every target for `seconds`.
    pub fn ci(seconds: u64) -> Self {
        Self {
            seconds,
            sanitizer: "address".into(),
            targets: TARGETS.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        seconds: 30,
        sanitizer: "address".into(),
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--seconds" => {
                o.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--sanitizer" => o.sanitizer = value("--sanitizer")?,
            "--target" => o.targets.push(value("--target")?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if o.targets.is_empty() {
        o.targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok(o)
}

/// One target's outcome.
pub struct Outcome {
    pub target: String,
    pub executions: u64,
    pub crashes: Vec<PathBuf>,
    pub corpus: usize,
    pub seconds: f64,
}

/// Totals for the caller (CI prints them).
pub struct Summary {
    pub build_seconds: f64,
    pub outcomes: Vec<Outcome>,
}

impl Summary {
    pub fn executions(&self) -> u64 {
        self.outcomes.iter().map(|o| o.executions).sum()
    }
    pub fn crashes(&self) -> usize {
        self.outcomes.iter().map(|o| o.crashes.len()).sum()
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    let summary = fuzz(&opts)?;
    if summary.crashes() > 0 {
        return Err(format!(
            "{} crash(es) found; reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>` in fuzz/",
            summary.crashes()
        ));
    }
    Ok(())
}

fn fuzz(opts: &Opts) -> Result<Summary, String> {
    let build_seconds = build(opts, None)?;
    run_built(opts, build_seconds)
}

/// Installs cargo-fuzz if missing and builds the targets; returns the seconds it took. With
/// `log`, the tools' output goes to that file and the processes run at low priority, so CI can
/// build beside its other steps.
pub fn build(opts: &Opts, log: Option<&Path>) -> Result<f64, String> {
    let started = Instant::now();
    let quiet = |cmd: &mut Command| -> Result<(), String> {
        let Some(log) = log else {
            return Ok(());
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        cmd.stdout(file).stderr(err);
        Ok(())
    };
    ensure_cargo_fuzz(log.is_some(), &quiet)?;
    no_sdks_linked()?;
    let mut build = cargo_fuzz(&repo_root().join("fuzz"), log.is_some());
    build.args(["build", "--sanitizer", &opts.sanitizer]);
    quiet(&mut build)?;
    crate::run(&mut build)?;
    let build_seconds = started.elapsed().as_secs_f64();
    eprintln!("fuzz targets built in {build_seconds:.0} s");
    Ok(build_seconds)
}

/// Crates whose presence in the fuzz build means an adapter dependency lost its `aws` gate: the
/// build would still pass, only many minutes slower, so this fails it instead.
const ADAPTER_CRATES: [&str; 4] = [
    "aws-config",
    "aws-sdk-",
    "aws-smithy-runtime ",
    "lambda_runtime",
];

fn no_sdks_linked() -> Result<(), String> {
    let out = cargo_command(false)
        .current_dir(repo_root().join("fuzz"))
        .args(["tree", "--edges", "normal", "--prefix", "none"])
        .output()
        .map_err(|e| format!("cargo tree in fuzz/: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree in fuzz/ failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let linked: BTreeSet<&str> = tree
        .lines()
        .filter(|l| ADAPTER_CRATES.iter().any(|c| l.starts_with(c)))
        .collect();
    if linked.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the fuzz targets link AWS adapter crates (make them optional behind `aws`): {linked:?}"
        ))
    }
}

/// Runs every target of `opts` (already built) and prints the table.
pub fn run_built(opts: &Opts, build_seconds: f64) -> Result<Summary, String> {
    let dir = repo_root().join("fuzz");
    let seeds = write_seeds(&repo_root().join("target/fuzz-seeds"))?;
    let mut outcomes = Vec::new();
    for target in &opts.targets {
        outcomes.push(run_target(&dir, opts, target, &seeds)?);
    }
    let summary = Summary {
        build_seconds,
        outcomes,
    };
    print_table(&summary);
    Ok(summary)
}

/// Prints the table and keeps it in `target/reliability/fuzz.md` for the README's figures.
fn print_table(s: &Summary) {
    use std::fmt::Write as _;
    let mut t = String::from("| fuzz target | seconds | executions | corpus | crashes |\n");
    t.push_str("| --- | --- | --- | --- | --- |\n");
    for o in &s.outcomes {
        let _ = writeln!(
            t,
            "| {} | {:.0} | {} | {} | {} |",
            o.target,
            o.seconds,
            o.executions,
            o.corpus,
            o.crashes.len()
        );
        for c in &o.crashes {
            let _ = writeln!(t, "|   crash input: {} | | | | |", c.display());
        }
    }
    let _ = writeln!(
        t,
        "| total (build {:.0} s) | {:.0} | {} | | {} |",
        s.build_seconds,
        s.outcomes.iter().map(|o| o.seconds).sum::<f64>(),
        s.executions(),
        s.crashes()
    );
    println!("\n{t}");
    let dir = repo_root().join("target/reliability");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("fuzz.md"), &t);
    }
}

/// `cargo`, under `nice` when the build runs beside other work.
fn cargo_command(background: bool) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if background {
        let mut c = Command::new("nice");
        c.args(["-n", "10"]).arg(cargo);
        c
    } else {
        Command::new(cargo)
    }
}

fn cargo_fuzz(dir: &Path, background: bool) -> Command {
    let mut c = cargo_command(background);
    c.current_dir(dir).arg("fuzz").env("RUSTC_BOOTSTRAP", "1");
    c
}

fn ensure_cargo_fuzz(
    background: bool,
    quiet: &dyn Fn(&mut Command) -> Result<(), String>,
) -> Result<(), String> {
    let present = cargo_command(false)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        eprintln!("installing cargo-fuzz {CARGO_FUZZ_VERSION} ...");
        let mut install = cargo_command(background);
        install.args([
            "install",
            "--locked",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        ]);
        quiet(&mut install)?;
        crate::run(&mut install)?;
    }
    Ok(())
}

fn run_target(dir: &Path, opts: &Opts, target: &str, seeds: &Path) -> Result<Outcome, String> {
    let corpus = dir.join("corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let before = crash_files(&artifacts);
    let mut cmd = cargo_fuzz(dir, false);
    cmd.args(["run", "--sanitizer", &opts.sanitizer]);
    cmd.arg(target)
        .arg(&corpus)
        .arg(seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", opts.seconds))
        .arg(MAX_LEN)
        // Bounded memory is part of the contract: an input that makes a parser allocate
        // past this is reported as a crash.
        .arg("-rss_limit_mb=1024")
        .arg("-print_final_stats=1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("fuzzing {target} for {} s ...", opts.seconds);
    let started = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("cargo fuzz run {target}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    let executions = executions(&log);
    let crashes: Vec<PathBuf> = crash_files(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if !out.status.success() && crashes.is_empty() {
        // A failure without an artifact is a build or harness problem, not a finding.
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "cargo fuzz run {target} failed:\n{}",
            tail.join("\n")
        ));
    }
    if !crashes.is_empty() {
        eprintln!("{log}");
    }
    let corpus_size = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
    Ok(Outcome {
        target: target.to_owned(),
        executions,
        crashes,
        corpus: corpus_size,
        seconds,
    })
}

/// libFuzzer ends with `Done 123812 runs in 21 second(s)`; `-print_final_stats` adds
/// `stat::number_of_executed_units: N`, which is also there when it stops on a crash.
fn executions(log: &str) -> u64 {
    let stat = log.lines().rev().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    });
    stat.or_else(|| {
        log.lines().rev().find_map(|l| {
            l.strip_prefix("Done ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
    })
    .unwrap_or(0)
}

fn crash_files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        ["crash-", "oom-", "leak-", "timeout-"]
                            .iter()
                            .any(|k| n.starts_with(k))
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Seeds: every sample event, quirk fixture and hostile input as a whole file, plus every
/// string value found in the samples (times, ids, finding types, Scheduler details) so the
/// string targets start from real AWS values.
fn write_seeds(out: &Path) -> Result<PathBuf, String> {
    let root = repo_root();
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut files = Vec::new();
    for d in ["events", "tests/fixtures"] {
        collect(&root.join(d), &mut files);
    }
    // The documented default documents seed the Parameter Store document target, as YAML
    // and in their JSON forms (operators store either; JSON takes the other parser).
    for (i, f) in [
        "functions/opsitem-creator/src/default_rules.yaml",
        "functions/incident-response/src/default_plans.yaml",
        "functions/compliance-remediator/src/default_policy.yaml",
    ]
    .into_iter()
    .enumerate()
    {
        let path = root.join(f);
        let yaml = std::fs::read_to_string(&path).map_err(|e| format!("{f}: {e}"))?;
        let doc: serde_json::Value =
            serde_norway::from_str(&yaml).map_err(|e| format!("{f}: {e}"))?;
        let pretty = serde_json::to_string_pretty(&doc).map_err(|e| format!("{f}: {e}"))?;
        write(
            out,
            &format!("doc-{i}-compact.json"),
            doc.to_string().as_bytes(),
        )?;
        write(out, &format!("doc-{i}-pretty.json"), pretty.as_bytes())?;
        files.push(path);
    }
    let mut strings = BTreeSet::new();
    let mut n = 0usize;
    for f in &files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            strings_of(&v, &mut strings);
            // raw_pointer inputs: a pointer line, then the document.
            let mut leaves = Vec::new();
            leaf_pointers(&v, String::new(), &mut leaves);
            for (i, p) in leaves.iter().step_by(7).take(8).enumerate() {
                write(
                    out,
                    &format!("ptr-{n:04}-{i}"),
                    format!("{p}\n{v}").as_bytes(),
                )?;
            }
        }
        n += 1;
        write(out, &format!("file-{n:04}"), &bytes)?;
    }
    for (i, s) in strings.iter().enumerate() {
        write(out, &format!("str-{i:05}"), s.as_bytes())?;
    }
    eprintln!(
        "fuzz seeds: {n} files and {} strings in {}",
        strings.len(),
        out.display()
    );
    Ok(out.to_path_buf())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "json" || e == "txt") {
            out.push(p);
        }
    }
}

fn strings_of(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::String(s) if s.len() <= 4096 => {
            out.insert(s.clone());
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings_of(x, out)),
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                out.insert(k.clone());
                strings_of(x, out);
            }
        }
        _ => {}
    }
}

/// JSON pointers of every leaf of `v`.
fn leaf_pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                let k = k.replace('~', "~0").replace('/', "~1");
                leaf_pointers(x, format!("{at}/{k}"), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaf_pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}
