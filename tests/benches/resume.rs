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

/// Runs `cmd`; its wall seconds, asserting it exits with `code`.
fn timed(mut cmd: Command, code: i32, what: &str) -> f64 {
    let start = Instant::now();
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
    start.elapsed().as_secs_f64()
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
    let make = |args: &[&str], code: i32, what: &str| {
        let mut c = Command::new("make");
        c.current_dir(&work).args(args);
        timed(c, code, what)
    };
    let (mut first, mut bare, mut resume, mut make_q) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        clean(&work);
        bare = bare.min(timed(
            stagehost(&sandbox, &["--no-journal", "flow.toml"]),
            0,
            "first run, no journal",
        ));
        clean(&work);
        first = first.min(timed(stagehost(&sandbox, &["flow.toml"]), 0, "first run"));
        resume = resume.min(timed(
            stagehost(&sandbox, &["--resume", "flow.toml"]),
            0,
            "resume",
        ));
        // make -q: exit 0 when every target is up to date (the outputs are newer
        // than their inputs: stagehost just wrote them).
        make_q = make_q.min(make(&["-q"], 0, "make -q"));
    }
    println!("{N} local-file tasks (best of {ROUNDS}, interleaved):");
    println!(
        "  first run, no journal    {bare:>7.3} s  {:>7.0} tasks/s",
        N as f64 / bare
    );
    println!(
        "  first run, journal       {first:>7.3} s  {:>7.0} tasks/s  journal cost {:+.1}%",
        N as f64 / first,
        100.0 * (first - bare) / bare
    );
    println!(
        "  --resume, nothing changed {resume:>6.3} s  = {:.2}x make -q, {:.1}% of the first run",
        resume / make_q,
        100.0 * resume / first
    );
    println!("  make -q (peer)           {make_q:>7.3} s");
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
