//! Scale: workflows of 10,000 and 100,000 shell tasks, flat and in chains of 100, run
//! by the release `stagehost` binary. For each it prints the time from launch to the
//! first task's start, the tasks per second, the peak RSS of the run and of a dry run
//! (parse, check and plan, nothing run), per task. Beside them, the spawn floor: a
//! plain loop spawning `/bin/sh -c true` on 2 threads, `xargs -P 2`, and stagehost
//! running the same 1,000 `true` tasks on 2 workers, with the ratio. Prints figures;
//! asserts nothing about time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench scale`
//! (`-- floor` or `-- scale` for one part).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use stagehost_tests::bench::wanted;
use stagehost_tests::{chained_workflow, stagehost_bin_in, wait_with_peak_rss, Sandbox};

const FLOOR_ROUNDS: usize = 5;
const FLOOR_TASKS: usize = 1000;
const WORKERS: usize = 2;

/// A flat workflow of `n` tasks; the first marks its start in `started` (in the
/// working directory).
fn flat(n: usize) -> String {
    let mut text = String::with_capacity(n * 48);
    for i in 0..n {
        let command = if i == 0 { ": > started" } else { "true" };
        text.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\ncommand = \"{command}\"\n\n"
        ));
    }
    text
}

/// Runs `cmd` to its end: when it was launched (seconds since 1970), wall seconds,
/// peak RSS in KiB, and its exit code.
fn measure(mut cmd: Command) -> (f64, f64, i64, Option<i32>) {
    let launched = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let (run, rss) = wait_with_peak_rss(child);
    (launched, start.elapsed().as_secs_f64(), rss, run.code)
}

fn mtime(path: &Path) -> f64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("the first task wrote its mark")
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

fn config(sandbox: &Sandbox) -> PathBuf {
    sandbox.write(
        "site.toml",
        format!("[executor.local]\nworking_dir = \"wd\"\nworkers = {WORKERS}\n"),
    )
}

fn stagehost(sandbox: &Sandbox, flow: &Path, extra: &[&str]) -> Command {
    let mut c = sandbox.command(&stagehost_bin_in("release"));
    c.arg("--config")
        .arg(config(sandbox))
        .arg("run")
        .arg(flow)
        .arg("-q")
        .args(extra);
    c
}

fn scale_case(name: &str, n: usize, text: &str, mark: &str) {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.toml", text);
    let (_, _, dry_rss, status) = measure(stagehost(&sandbox, &flow, &["--dry-run"]));
    assert_eq!(status, Some(0), "{name}: the dry run failed");
    let (launched, seconds, rss, status) = measure(stagehost(&sandbox, &flow, &[]));
    assert_eq!(status, Some(0), "{name}: the run failed");
    let first = mtime(&sandbox.join(mark)) - launched;
    println!(
        "{name:<14} {n:>7} tasks  first task at {first:>6.3}s  {seconds:>7.2}s  {:>7.0} tasks/s  peak RSS {:>6.1} MiB ({:>5.2} KiB/task)  dry-run RSS {:>6.1} MiB ({:>5.2} KiB/task)",
        n as f64 / seconds,
        rss as f64 / 1024.0,
        rss as f64 / n as f64,
        dry_rss as f64 / 1024.0,
        dry_rss as f64 / n as f64,
    );
}

/// Tasks per second of a plain loop spawning `/bin/sh -c true` on `WORKERS` threads.
fn spawn_floor() -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            s.spawn(move || {
                for _ in (w..FLOOR_TASKS).step_by(WORKERS) {
                    let ok = Command::new("/bin/sh")
                        .args(["-c", "true"])
                        .status()
                        .expect("sh");
                    assert!(ok.success());
                }
            });
        }
    });
    FLOOR_TASKS as f64 / start.elapsed().as_secs_f64()
}

fn xargs() -> f64 {
    let start = Instant::now();
    let mut child = Command::new("xargs")
        .args([
            "-P",
            &WORKERS.to_string(),
            "-n",
            "1",
            "/bin/sh",
            "-c",
            "true",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("xargs");
    let input: String = (0..FLOOR_TASKS).map(|i| format!("{i}\n")).collect();
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), input.as_bytes())
        .expect("write");
    drop(child.stdin.take());
    assert!(child.wait().expect("xargs runs").success());
    FLOOR_TASKS as f64 / start.elapsed().as_secs_f64()
}

fn stagehost_true() -> f64 {
    let sandbox = Sandbox::new();
    let text: String = (0..FLOOR_TASKS)
        .map(|i| format!("[[task]]\nname = \"t{i}\"\ncommand = \"true\"\n\n"))
        .collect();
    let flow = sandbox.write("flow.toml", text);
    let (_, seconds, _, status) = measure(stagehost(&sandbox, &flow, &[]));
    assert_eq!(status, Some(0));
    FLOOR_TASKS as f64 / seconds
}

fn main() {
    // `cargo bench --bench scale -- floor` (or `-- scale`) runs one part.
    if wanted("floor") {
        floor_part();
    }
    if wanted("scale") {
        scale_part();
    }
}

fn floor_part() {
    println!(
        "spawn floor, {FLOOR_TASKS} `sh -c true` on {WORKERS} workers (best of {FLOOR_ROUNDS}, interleaved):"
    );
    let (mut floor, mut xargs_best, mut ours) = (0.0f64, 0.0f64, 0.0f64);
    // Interleaved rounds: a noisy neighbour slows all three alike.
    for _ in 0..FLOOR_ROUNDS {
        floor = floor.max(spawn_floor());
        ours = ours.max(stagehost_true());
        xargs_best = xargs_best.max(xargs());
    }
    println!("  posix_spawn loop  {floor:>7.0} tasks/s");
    println!("  xargs -P {WORKERS}        {xargs_best:>7.0} tasks/s");
    println!(
        "  stagehost run     {ours:>7.0} tasks/s  = {:.0}% of the spawn floor, {:.0}% of xargs",
        100.0 * ours / floor,
        100.0 * ours / xargs_best
    );
}

fn scale_part() {
    println!("\nscale (one run each, {WORKERS} workers):");
    for n in [10_000, 100_000] {
        scale_case("flat", n, &flat(n), "wd/started");
        scale_case("chains of 100", n, &chained_workflow(n), "out/c0-0.txt");
    }
}
