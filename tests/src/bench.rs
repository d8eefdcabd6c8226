//! What the provider benchmarks share: a side-by-side run of stagehost and curl over
//! the same URLs, best of a few interleaved rounds, printing times, ratios and peak
//! RSS (and asserting nothing about time).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{stagehost_bin_in, wait_with_peak_rss, Sandbox};

/// Transfers at once, for curl and for stagehost (its per-host limit too).
pub const PARALLEL: usize = 8;

/// Runs `cmd`; wall seconds and peak RSS (KiB), asserting success.
pub fn measure(mut cmd: Command, what: &str) -> (f64, i64) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (run, rss) = wait_with_peak_rss(child);
    assert_eq!(run.code, Some(0), "{what} failed: {}", run.stderr);
    (start.elapsed().as_secs_f64(), rss)
}

/// Writes `size` bytes of a repeating pattern to `path`.
pub fn write_file(path: &Path, size: usize) {
    use std::io::Write;
    let block: Vec<u8> = (0..1 << 20).map(|i: usize| (i % 251) as u8).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        f.write_all(&block[..n]).expect("write");
        left -= n;
    }
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
}

/// `curl --parallel` fetching `urls`, [`PARALLEL`] at once, into a fresh `dir`: wall
/// seconds and peak RSS (KiB).
pub fn curl_parallel(dir: &Path, urls: &[String]) -> (f64, i64) {
    fresh(dir);
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--fail",
        "--parallel",
        "--parallel-max",
        &PARALLEL.to_string(),
        "--output-dir",
    ])
    .arg(dir);
    for u in urls {
        c.arg("-O").arg(u);
    }
    measure(c, "curl")
}

/// Best of this many interleaved rounds.
const ROUNDS: usize = 3;

/// Fetches `urls` with `curl --parallel`, with `stagehost stage in` and with
/// `stagehost run` (one task with every URL as an input), [`PARALLEL`] at once, and
/// prints one line: each one's best time, the ratios to curl and the peak RSS.
pub fn compare_with_curl(sandbox: &Sandbox, name: &str, urls: &[String]) {
    let config = sandbox.write(
        "site.toml",
        format!("[executor.local]\nworking_dir = \"wd\"\n[transfers]\nmax_concurrent = {PARALLEL}\nper_host = {PARALLEL}\n"),
    );
    let bin = stagehost_bin_in("release");
    let inputs: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"fetch\"\ncommand = \"true\"\ninputs = [{}]\n",
            inputs.join(", ")
        ),
    );
    let curl_dir = sandbox.join("curl");
    let best = |a: (f64, i64), b: (f64, i64)| if b.0 < a.0 { b } else { a };
    let (mut curl, mut stage, mut run) = ((f64::MAX, 0), (f64::MAX, 0), (f64::MAX, 0));
    for _ in 0..ROUNDS {
        curl = best(curl, curl_parallel(&curl_dir, urls));

        fresh(&sandbox.join("wd"));
        let mut c = sandbox.command(&bin);
        c.arg("--config")
            .arg(&config)
            .args(["stage", "in", "-j", &PARALLEL.to_string()])
            .args(urls);
        stage = best(stage, measure(c, "stagehost stage in"));

        fresh(&sandbox.join("wd"));
        let mut c = sandbox.command(&bin);
        c.arg("--config")
            .arg(&config)
            .args(["run", "-q"])
            .arg(&flow);
        run = best(run, measure(c, "stagehost run"));
    }
    let ((curl_s, curl_rss), (stage_s, stage_rss), (run_s, run_rss)) = (curl, stage, run);
    println!(
        "{name:<14} curl {curl_s:>6.2}s ({:>5.1} MiB RSS) | stage in {stage_s:>6.2}s = {:.2}x curl ({:>5.1} MiB RSS) | run {run_s:>6.2}s = {:.2}x curl ({:>5.1} MiB RSS)",
        curl_rss as f64 / 1024.0,
        stage_s / curl_s,
        stage_rss as f64 / 1024.0,
        run_s / curl_s,
        run_rss as f64 / 1024.0,
    );
}

/// Whether the case `name` was asked for: `cargo bench ... -- small` runs the cases
/// named, and no name runs them all.
pub fn wanted(name: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|n| n == name)
}

/// From the `run --report` file of a run of `tasks` tasks: seconds from the run's
/// start until the first task ended, and tasks a second from then to the last (the
/// rate once the workers are up).
pub fn rates_from_report(report: &Path, tasks: usize) -> (f64, f64) {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).expect("the run wrote its report"))
            .expect("the report is JSON");
    let ends: Vec<f64> = report["tasks"]
        .as_array()
        .expect("the report lists its tasks")
        .iter()
        .map(|t| t["started_at"].as_f64().unwrap() + t["seconds"].as_f64().unwrap())
        .collect();
    let first = ends.iter().cloned().fold(f64::INFINITY, f64::min);
    let last = ends.iter().cloned().fold(0.0, f64::max);
    (first, (tasks - 1) as f64 / (last - first))
}

/// Runs the Parsl bench script `tests/benches/<script>` with the test virtualenv's
/// Python, `tasks` first, then `args`, with `env`; it prints
/// `<seconds until the first result> <seconds from the first to the last>`. Returns
/// (seconds until the first result, tasks a second from then), or `None` without the
/// test virtualenv.
pub fn parsl_rates(
    script: &str,
    tasks: usize,
    args: &[&str],
    env: &[(&str, &str)],
) -> Option<(f64, f64)> {
    let python = crate::target_root().join("test-venv/bin/python");
    if !python.exists() {
        return None;
    }
    let out = Command::new(python)
        .arg(crate::workspace_root().join("tests/benches").join(script))
        .arg(tasks.to_string())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (first, rest) = text.lines().last()?.split_once(' ')?;
    let (first, rest): (f64, f64) = (first.parse().ok()?, rest.parse().ok()?);
    Some((first, (tasks - 1) as f64 / rest))
}
