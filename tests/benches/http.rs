//! The `http` provider against nginx on loopback, beside curl in the same run: 1,000
//! files of 1 MiB and 2 files of 1 GiB, staged in through `stagehost stage in` and
//! through `stagehost run`, and fetched by `curl --parallel` at the same concurrency
//! (stagehost's per-host limit set to match), best of 3 interleaved rounds. Prints
//! times, the ratio to curl and our peak RSS; asserts nothing about time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench http`
//! (needs nginx and curl: `bash scripts/install-test-deps`; `-- small` or `-- big` runs
//! one case).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use stagehost_tests::httpd::Nginx;
use stagehost_tests::{stagehost_bin_in, wait_with_peak_rss, Sandbox};

const PARALLEL: usize = 8;

/// Runs `cmd`; wall seconds and peak RSS (KiB), asserting success.
fn measure(mut cmd: Command, what: &str) -> (f64, i64) {
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

fn write_file(path: &Path, size: usize) {
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

/// Best of this many interleaved rounds.
const ROUNDS: usize = 3;

fn case(sandbox: &Sandbox, nginx: &Nginx, name: &str, files: &[String]) {
    let urls: Vec<String> = files.iter().map(|f| nginx.url(f)).collect();
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
        fresh(&curl_dir);
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--fail",
            "--parallel",
            "--parallel-max",
            &PARALLEL.to_string(),
            "--output-dir",
        ])
        .arg(&curl_dir);
        for u in &urls {
            c.arg("-O").arg(u);
        }
        curl = best(curl, measure(c, "curl"));

        fresh(&sandbox.join("wd"));
        let mut c = sandbox.command(&bin);
        c.arg("--config")
            .arg(&config)
            .args(["stage", "in", "-j", &PARALLEL.to_string()])
            .args(&urls);
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

fn main() {
    // `-- small` or `-- big` runs one case.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |case: &str| only.is_empty() || only.iter().any(|o| o == case);
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(root.join("small")).expect("mkdir");
    std::fs::create_dir_all(root.join("big")).expect("mkdir");
    let small: Vec<String> = (0..1000).map(|i| format!("/small/f{i:04}.bin")).collect();
    for f in small.iter().filter(|_| wants("small")) {
        write_file(&root.join(f.trim_start_matches('/')), 1 << 20);
    }
    let big: Vec<String> = (0..2).map(|i| format!("/big/g{i}.bin")).collect();
    for f in big.iter().filter(|_| wants("big")) {
        write_file(&root.join(f.trim_start_matches('/')), 1 << 30);
    }
    // Written back before anything is timed, so no one pays for the generation.
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let nginx = Nginx::start(&root);
    println!(
        "http provider vs curl, nginx on loopback, {PARALLEL} at once (per-host limit {PARALLEL}):"
    );
    if wants("small") {
        case(&sandbox, &nginx, "1000 x 1 MiB", &small);
    }
    if wants("big") {
        case(&sandbox, &nginx, "2 x 1 GiB", &big);
    }
}
