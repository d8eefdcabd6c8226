//! The pilot path without a batch system: TASKS `true` tasks (default 1,000 and
//! 10,000) with one input each, over 8 worker processes (`kind = "processes"`, 8
//! blocks of 1 slot), beside the `local` executor with 8 workers and beside Parsl's
//! HighThroughputExecutor with its LocalProvider and 8 workers running the same
//! bash_apps (Parsl from the test virtualenv). Rates are counted from the first task's
//! end to the last's, once the workers are up. Also prints the run's own CPU per task
//! (the `stagehost run` process alone, not its workers or commands: HyperQueue's
//! "server CPU per task"), and the threads of a run that holds a 16 x 8 x 32 `slurm`
//! executor it never uses. Prints figures; asserts only that everything succeeded.
//!
//!   cargo bench -p stagehost-tests --bench processes [-- TASKS]

use std::process::{Command, Stdio};

use stagehost_tests::bench;
use stagehost_tests::*;

const WORKERS: usize = 8;

/// What one run of ours gave.
struct Figures {
    /// Tasks a second from the first task's end to the last's.
    rate: f64,
    /// Seconds until the first task ended.
    first: f64,
    /// The run process's own CPU seconds (user + system).
    cpu: f64,
    /// The most threads the run process had.
    threads: usize,
}

/// `utime + stime` of `pid` in seconds, and its thread count, from /proc.
fn own_cpu_and_threads(pid: u32) -> Option<(f64, usize)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which ends with the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // state is field 3 overall: rest[0]; utime 14 -> rest[11], stime 15 -> rest[12],
    // num_threads 20 -> rest[17].
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let threads: usize = fields.get(17)?.parse().ok()?;
    Some(((utime + stime) / ticks, threads))
}

fn ours(sandbox: &Sandbox, executor: &str, tasks: usize) -> Figures {
    let mut flow = String::new();
    for n in 0..tasks {
        flow.push_str(&format!(
            "[[task]]\nname = \"t{n}\"\nexecutor = \"{executor}\"\ncommand = \"true\"\ninputs = [\"in/in-{n}.txt\"]\n\n"
        ));
    }
    let flow = sandbox.write(format!("flow-{executor}.toml"), flow);
    let cfg = sandbox.join("stagehost.toml");
    let report = sandbox.join(format!("report-{executor}.json"));
    let mut child = Command::new(stagehost_bin_in("release"))
        .args(["--config", cfg.to_str().unwrap(), "run", "-q"])
        .arg(&flow)
        .arg("--report")
        .arg(&report)
        .current_dir(sandbox.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stagehost runs");
    let (mut cpu, mut threads) = (0.0, 0);
    let status = loop {
        if let Some((c, t)) = own_cpu_and_threads(child.id()) {
            cpu = c;
            threads = threads.max(t);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(status.success(), "{executor}: the run failed");
    let (first, rate) = bench::rates_from_report(&report, tasks);
    Figures {
        rate,
        first,
        cpu,
        threads,
    }
}

fn main() {
    let given: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if given.is_empty() {
        vec![1000, 10_000]
    } else {
        given
    };
    let sandbox = Sandbox::new();
    let most = counts.iter().copied().max().unwrap_or(1000);
    for n in 0..most {
        sandbox.write(format!("in/in-{n}.txt"), "x\n");
    }
    sandbox.write(
        "stagehost.toml",
        format!(
            "[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = {wd:?}\nworkers = {WORKERS}\n\n[executor.procs]\nkind = \"processes\"\nworking_dir = {wd:?}\nworkers = 1\n\n[executor.procs.processes]\nblocks = {WORKERS}\nprefetch = 4\n\n[executor.idle]\nkind = \"slurm\"\nworking_dir = {wd:?}\nworkers = 32\n\n[executor.idle.slurm]\nblocks = 16\nnodes_per_block = 8\nprefetch = 32\n",
            wd = sandbox.join("wd").display().to_string()
        ),
    );
    for tasks in counts {
        println!("{tasks} `true` tasks with 1 input, {WORKERS} workers:");
        let local = ours(&sandbox, "local", tasks);
        println!(
            "  local executor                 {:8.1} tasks/s; run-side CPU {:6.1} us/task; {} threads at most (an unused 16x8x32 slurm executor configured beside)",
            local.rate,
            1e6 * local.cpu / tasks as f64,
            local.threads
        );
        let procs = ours(&sandbox, "procs", tasks);
        println!(
            "  processes executor (8 workers) {:8.1} tasks/s once up = {:.0}% of local; run-side CPU {:6.1} us/task; first task done {:.2}s after the run began",
            procs.rate,
            100.0 * procs.rate / local.rate,
            1e6 * procs.cpu / tasks as f64,
            procs.first
        );
        let inputs = sandbox.join("in");
        let workers = WORKERS.to_string();
        let args = [workers.as_str(), inputs.to_str().unwrap()];
        match bench::parsl_rates("parsl_htex_local.py", tasks, &args, &[]) {
            Some((first, rate)) => println!(
                "  Parsl HTEX + LocalProvider     {rate:8.1} tasks/s once up = {:.0}% of local; first result {first:.2}s after the first submit",
                100.0 * rate / local.rate
            ),
            None => println!("  Parsl HTEX + LocalProvider     (no test virtualenv: run scripts/test first)"),
        }
    }
}
