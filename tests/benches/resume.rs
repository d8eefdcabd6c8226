//! Re-runs, by the release `stagehost` binary, beside their peers in the same run:
//!
//! - `local`: 10,000 tasks, each copying a local file: the first run with and without
//!   the journal (tasks/s: the journal's cost), then `--resume` with nothing changed
//!   beside `make -q` over the same 10,000 targets (and beside the first run);
//! - `http`: 1,000 tasks, each reading one file from nginx on loopback: the first run,
//!   then `--resume` with nothing changed: its time and the requests nginx logged.
//!
//! - `bulk`: 14,000 tasks reading one object each from moto (in 14 prefixes of 1,000),
//!   and 14,000 reading one file each from nginx: `--resume` with nothing changed, its
//!   bulk check (one listing per prefix on moto; one HEAD a file on nginx) beside the
//!   per-file alternative (`--no-bulk-checks`: a conditional stage-in each), with the
//!   requests each server logged.
//!
//! Best of a few interleaved rounds (one for `bulk`); prints figures, asserts nothing
//! about time.
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench resume`
//! (`-- local`, `-- http` or `-- bulk` for one part).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use stagehost_tests::bench::wanted;
use stagehost_tests::httpd::Nginx;
use stagehost_tests::{stagehost_bin_in, Sandbox};

const ROUNDS: usize = 5;

/// Runs `cmd`; its wall seconds and CPU seconds (user + system, its children's
/// included), asserting it exits with `code`.
fn timed_cpu(mut cmd: Command, code: i32, what: &str) -> (f64, f64) {
    let cpu = || {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(u.ru_utime) + secs(u.ru_stime)
    };
    let (start, cpu_before) = (Instant::now(), cpu());
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (start.elapsed().as_secs_f64(), cpu() - cpu_before)
}

/// Runs `cmd`; its wall seconds, asserting it exits with `code`.
fn timed(cmd: Command, code: i32, what: &str) -> f64 {
    timed_cpu(cmd, code, what).0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn stagehost(sandbox: &Sandbox, args: &[&str]) -> Command {
    let config = sandbox.write(
        "site.toml",
        "[executor.local]\nworking_dir = \"wd\"\nworkers = 2\n",
    );
    let mut c = sandbox.command(&stagehost_bin_in("release"));
    c.arg("--config")
        .arg(config)
        .arg("run")
        .arg("-q")
        .args(args);
    c
}

/// 10,000 tasks copying `in/i.txt` to `out/i.txt`, as a workflow and as a Makefile.
fn local_case(sandbox: &Sandbox, n: usize) {
    let work = sandbox.join("work");
    std::fs::create_dir_all(work.join("in")).unwrap();
    let mut flow = String::with_capacity(n * 120);
    let mut make = String::from("all:");
    for i in 0..n {
        std::fs::write(work.join(format!("in/{i}.txt")), format!("{i}\n")).unwrap();
        flow.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\ncommand = \"cp {{inputs[0]}} {{outputs[0]}}\"\ninputs = [\"in/{i}.txt\"]\noutputs = [\"out/{i}.txt\"]\n\n"
        ));
        make.push_str(&format!(" out/{i}.txt"));
    }
    // Explicit rules, as fast as make reads them (a pattern rule is slower).
    make.push_str("\n\n");
    for i in 0..n {
        make.push_str(&format!("out/{i}.txt: in/{i}.txt\n\tcp $< $@\n"));
    }
    std::fs::write(work.join("flow.toml"), flow).unwrap();
    std::fs::write(work.join("Makefile"), make).unwrap();
}

fn clean(work: &Path) {
    let _ = std::fs::remove_dir_all(work.join("out"));
    let _ = std::fs::remove_dir_all(work.join(".stagehost"));
}

fn local_part() {
    const N: usize = 10_000;
    let sandbox = Sandbox::new();
    let work = sandbox.join("work");
    local_case(&sandbox, N);
    // The first runs are long and this machine is noisy: their medians, wall and CPU.
    let (mut first, mut bare) = (Vec::new(), Vec::new());
    let (mut resume, mut make_q) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        clean(&work);
        bare.push(timed_cpu(
            stagehost(&sandbox, &["--no-journal", "flow.toml"]),
            0,
            "first run, no journal",
        ));
        clean(&work);
        first.push(timed_cpu(
            stagehost(&sandbox, &["flow.toml"]),
            0,
            "first run",
        ));
        resume = resume.min(timed(
            stagehost(&sandbox, &["--resume", "flow.toml"]),
            0,
            "resume",
        ));
        // make -q: exit 0 when every target is up to date (the outputs are newer
        // than their inputs: stagehost just wrote them).
        make_q = make_q.min(timed(
            {
                let mut c = Command::new("make");
                c.current_dir(&work).arg("-q");
                c
            },
            0,
            "make -q",
        ));
    }
    let wall = |v: &[(f64, f64)]| median(v.iter().map(|r| r.0).collect());
    let cpu = |v: &[(f64, f64)]| median(v.iter().map(|r| r.1).collect());
    let (bare_wall, first_wall) = (wall(&bare), wall(&first));
    let (bare_cpu, first_cpu) = (cpu(&bare), cpu(&first));
    println!("{N} local-file tasks ({ROUNDS} interleaved rounds; first runs: medians):");
    println!(
        "  first run, no journal    {bare_wall:>7.3} s  {:>7.0} tasks/s  CPU {bare_cpu:.2} s",
        N as f64 / bare_wall
    );
    println!(
        "  first run, journal       {first_wall:>7.3} s  {:>7.0} tasks/s  CPU {first_cpu:.2} s  journal cost: wall {:+.1}%, CPU {:+.1}%",
        N as f64 / first_wall,
        100.0 * (first_wall - bare_wall) / bare_wall,
        100.0 * (first_cpu - bare_cpu) / bare_cpu
    );
    println!(
        "  --resume, nothing changed {resume:>6.3} s  = {:.2}x make -q, {:.1}% of the first run (best)",
        resume / make_q,
        100.0 * resume / first_wall
    );
    println!("  make -q (peer)           {make_q:>7.3} s (best)");
}

fn http_part() {
    const N: usize = 1000;
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let log = sandbox.join("access.log");
    let nginx = Nginx::start_with_conf(&root, &format!("    access_log {};\n", log.display()));
    let mut flow = String::new();
    for i in 0..N {
        std::fs::write(root.join(format!("{i}.txt")), format!("file {i}\n")).unwrap();
        flow.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\ncommand = \"cp {{inputs[0]}} {{outputs[0]}}\"\ninputs = [{:?}]\noutputs = [\"out/{i}.txt\"]\n\n",
            nginx.url(&format!("/{i}.txt"))
        ));
    }
    sandbox.write("work/flow.toml", flow);
    let work = sandbox.join("work");
    let requests = || {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let (mut first, mut resume) = (f64::MAX, f64::MAX);
    let mut sent = 0;
    let mut not_modified = 0;
    for _ in 0..ROUNDS {
        clean(&work);
        let _ = std::fs::remove_dir_all(work.join("wd"));
        first = first.min(timed(stagehost(&sandbox, &["flow.toml"]), 0, "first run"));
        let before = requests();
        resume = resume.min(timed(
            stagehost(&sandbox, &["--resume", "flow.toml"]),
            0,
            "resume",
        ));
        // nginx writes its log line as each request ends.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().skip(before).collect();
        sent = lines.len();
        not_modified = lines.iter().filter(|l| l.contains("\" 304 ")).count();
    }
    println!("\n{N} tasks, one http input each, nginx on loopback (best of {ROUNDS}):");
    println!(
        "  first run                {first:>7.3} s  {:>7.0} tasks/s",
        N as f64 / first
    );
    println!(
        "  --resume, nothing changed {resume:>6.3} s  {sent} requests sent ({not_modified} answered 304 Not Modified), 0 bytes moved"
    );
}

/// `run` with `args` and `RUST_LOG=stagehost=info`: its wall seconds and the bulk
/// check's own line (`checked N remote input(s) in ...`).
fn resumed(sandbox: &Sandbox, config: &Path, args: &[&str], env: &[(&str, &str)]) -> (f64, String) {
    let mut c = sandbox.command(&stagehost_bin_in("release"));
    c.arg("--config")
        .arg(config)
        .arg("run")
        .arg("-q")
        .args(args);
    c.env("RUST_LOG", "stagehost=info");
    for (k, v) in env {
        c.env(k, v);
    }
    let start = Instant::now();
    let out = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    let secs = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
    let line = text
        .lines()
        .find_map(|l| {
            l.split_once("info: checked ")
                .map(|(_, rest)| format!("checked {rest}"))
        })
        .unwrap_or_else(|| "no bulk check".to_owned());
    (secs, line)
}

fn bulk_part() {
    const N: usize = 14_000;
    const PREFIX: usize = 1_000;
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ("AWS_REGION", "us-east-1"),
    ];
    // moto: 14 prefixes of 1,000 objects.
    let sandbox = Sandbox::new();
    let moto = stagehost_tests::s3d::Moto::start();
    moto.boto(&format!(
        "s3.create_bucket(Bucket='data')\nfor i in range({N}): s3.put_object(Bucket='data', Key=f'p{{i // {PREFIX}}}/{{i}}.txt', Body=f'object {{i}}\\n'.encode())\n"
    ));
    let config = sandbox.write(
        "site.toml",
        format!(
            "[[provider]]\nname = \"s3\"\nplugin = \"object-store\"\nsettings = {{ endpoint = {:?} }}\n\n[executor.local]\nworking_dir = \"wd\"\nworkers = 2\nstaging = [\"s3\"]\n",
            moto.endpoint()
        ),
    );
    let mut flow = String::with_capacity(N * 130);
    for i in 0..N {
        flow.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\ncommand = \"true\"\ninputs = [\"s3://data/p{}/{i}.txt\"]\n\n",
            i / PREFIX
        ));
    }
    sandbox.write("work/flow.toml", flow);
    let first = timed_env(&sandbox, &config, &["flow.toml"], &env);
    let (bulk, bulk_line) = resumed(&sandbox, &config, &["--resume", "flow.toml"], &env);
    let (single, _) = resumed(
        &sandbox,
        &config,
        &["--resume", "--no-bulk-checks", "flow.toml"],
        &env,
    );
    println!(
        "\n{N} tasks, one s3 object each, moto on loopback ({} prefixes of {PREFIX}):",
        N / PREFIX
    );
    println!("  first run                              {first:>8.2} s");
    println!("  --resume, bulk check (one listing a prefix) {bulk:>6.2} s  ({bulk_line})");
    println!("  --resume --no-bulk-checks (a conditional GET each) {single:>6.2} s");
    drop(moto);

    // nginx: 14,000 files, no listing: one HEAD each, many at once.
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let log = sandbox.join("access.log");
    let nginx = Nginx::start_with_conf(&root, &format!("    access_log {};\n", log.display()));
    let mut flow = String::with_capacity(N * 130);
    for i in 0..N {
        std::fs::write(root.join(format!("{i}.txt")), format!("file {i}\n")).unwrap();
        flow.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\ncommand = \"true\"\ninputs = [{:?}]\n\n",
            nginx.url(&format!("/{i}.txt"))
        ));
    }
    sandbox.write("work/flow.toml", flow);
    let config = sandbox.write(
        "site.toml",
        "[executor.local]\nworking_dir = \"wd\"\nworkers = 2\n",
    );
    let requests = || {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let first = timed_env(&sandbox, &config, &["flow.toml"], &[]);
    let before = requests();
    let (bulk, bulk_line) = resumed(&sandbox, &config, &["--resume", "flow.toml"], &[]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let bulk_requests = requests() - before;
    let before = requests();
    let (single, _) = resumed(
        &sandbox,
        &config,
        &["--resume", "--no-bulk-checks", "flow.toml"],
        &[],
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let single_requests = requests() - before;
    println!("\n{N} tasks, one http input each, nginx on loopback:");
    println!("  first run                              {first:>8.2} s");
    println!("  --resume, bulk check (a HEAD each, at once) {bulk:>6.2} s  {bulk_requests} requests ({bulk_line})");
    println!("  --resume --no-bulk-checks (a conditional GET each) {single:>6.2} s  {single_requests} requests");
}

/// `run` with `args` and `env`: its wall seconds.
fn timed_env(sandbox: &Sandbox, config: &Path, args: &[&str], env: &[(&str, &str)]) -> f64 {
    let mut c = sandbox.command(&stagehost_bin_in("release"));
    c.arg("--config")
        .arg(config)
        .arg("run")
        .arg("-q")
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    timed(c, 0, "first run")
}

fn main() {
    if wanted("local") {
        local_part();
    }
    if wanted("http") {
        http_part();
    }
    if wanted("bulk") {
        bulk_part();
    }
}
