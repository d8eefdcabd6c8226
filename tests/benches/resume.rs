//! Re-runs, by the release `stagehost` binary, beside their peers in the same run:
//!
//! - `local`: 10,000 tasks, each copying a local file: the first run with and without
//!   the journal (tasks/s: the journal's cost), then `--resume` with nothing changed
//!   beside `make -q` over the same 10,000 targets (and beside the first run);
//! - `http`: 1,000 tasks, each reading one file from nginx on loopback: the first run,
//!   then `--resume` with nothing changed: its time and the requests nginx logged.
//!
//! Best of a few interleaved rounds; prints figures, asserts nothing about time.
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench resume`
//! (`-- local` or `-- http` for one part).

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

fn main() {
    if wanted("local") {
        local_part();
    }
    if wanted("http") {
        http_part();
    }
}
