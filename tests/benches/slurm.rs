//! The `slurm` executor on a Slurm cluster of one node (started here, as the tests
//! start it): TASKS `true` tasks (default 1,000) with one input each, through pilot
//! blocks, beside the `local` executor, beside the same pilot without Slurm (a
//! `processes` executor, to tell the dispatcher's cost from slurmstepd's), beside plain `sbatch --wrap true` per task
//! (100 jobs, as it is slow), and beside Parsl's HighThroughputExecutor with its
//! SlurmProvider running the same bash_apps (Parsl from the test virtualenv). Rates
//! are counted once the blocks are up: from the first task's end to the last's. Prints
//! figures; asserts only that everything succeeded.
//!
//!   cargo bench -p stagehost-tests --bench slurm [-- TASKS]

use std::process::Command;
use std::time::Instant;

use stagehost_tests::bench;
use stagehost_tests::slurmd::SlurmCluster;
use stagehost_tests::*;

const WORKERS: usize = 2;
/// Tasks queued on each worker beyond its slots, for the second slurm line.
const PREFETCH: usize = 6;

/// Runs the workflow on `executor`; (seconds until the first task ended, tasks per
/// second from then to the last).
fn ours(sandbox: &Sandbox, cluster: &SlurmCluster, executor: &str, tasks: usize) -> (f64, f64) {
    let mut flow = String::new();
    for n in 0..tasks {
        flow.push_str(&format!(
            "[[task]]\nname = \"t{n}\"\nexecutor = \"{executor}\"\ncommand = \"true\"\ninputs = [\"in/in-{n}.txt\"]\n\n"
        ));
    }
    let flow = sandbox.write(format!("flow-{executor}.toml"), flow);
    let cfg = sandbox.join("stagehost.toml");
    let report = sandbox.join(format!("report-{executor}.json"));
    let out = Command::new(stagehost_bin_in("release"))
        .args(["--config", cfg.to_str().unwrap(), "run", "-q"])
        .arg(&flow)
        .arg("--report")
        .arg(&report)
        .env("SLURM_CONF", cluster.conf())
        .output()
        .expect("stagehost runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bench::rates_from_report(&report, tasks)
}

fn sbatch_per_task(cluster: &SlurmCluster, jobs: usize, dir: &std::path::Path) -> f64 {
    let start = Instant::now();
    for _ in 0..jobs {
        let out = cluster
            .client("sbatch")
            .args(["--parsable", "--wrap", "true"])
            .arg(format!("--output={}/sbatch-%j.out", dir.display()))
            .output()
            .expect("sbatch runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    while !cluster.jobs().is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    jobs as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let tasks: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    for n in 0..tasks {
        sandbox.write(format!("in/in-{n}.txt"), "x\n");
    }
    sandbox.write(
        "stagehost.toml",
        format!(
            "[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = {wd:?}\nworkers = {WORKERS}\n\n[executor.cluster]\nkind = \"slurm\"\nworking_dir = {wd:?}\nworkers = {WORKERS}\n\n[executor.cluster.slurm]\nblocks = 1\nwalltime = \"00:30:00\"\n\n[executor.prefetching]\nkind = \"slurm\"\nworking_dir = {wd:?}\nworkers = {WORKERS}\n\n[executor.prefetching.slurm]\nblocks = 1\nwalltime = \"00:30:00\"\nprefetch = {PREFETCH}\n\n[executor.procs]\nkind = \"processes\"\nworking_dir = {wd:?}\nworkers = {WORKERS}\n\n[executor.procs.processes]\nprefetch = {PREFETCH}\n",
            wd = sandbox.join("wd").display().to_string()
        ),
    );
    println!("{tasks} `true` tasks with 1 input, Slurm cluster of one node, {WORKERS} workers:");
    let (_, local) = ours(&sandbox, &cluster, "local", tasks);
    println!("  local executor                {local:8.1} tasks/s");
    let (up, remote) = ours(&sandbox, &cluster, "cluster", tasks);
    println!(
        "  slurm executor (pilot block)  {remote:8.1} tasks/s once up = {:.0}% of local; first task done {up:.2}s after the run began",
        100.0 * remote / local
    );
    let (up, remote) = ours(&sandbox, &cluster, "prefetching", tasks);
    println!(
        "  slurm, prefetch = {PREFETCH}          {remote:8.1} tasks/s once up = {:.0}% of local; first task done {up:.2}s after the run began",
        100.0 * remote / local
    );
    // The same pilot without Slurm: what the dispatcher and the worker cost, apart
    // from what running under slurmstepd does.
    let (up, remote) = ours(&sandbox, &cluster, "procs", tasks);
    println!(
        "  processes, prefetch = {PREFETCH}      {remote:8.1} tasks/s once up = {:.0}% of local; first task done {up:.2}s after the run began",
        100.0 * remote / local
    );
    let jobs = 100.min(tasks);
    let per_job = sbatch_per_task(&cluster, jobs, sandbox.path());
    println!("  sbatch --wrap true per task   {per_job:8.1} jobs/s ({jobs} jobs)");
    let inputs = sandbox.join("in");
    let workers = WORKERS.to_string();
    let args = [workers.as_str(), inputs.to_str().unwrap()];
    let conf = cluster.conf();
    let env = [("SLURM_CONF", conf.to_str().unwrap())];
    match bench::parsl_rates("parsl_htex_slurm.py", tasks, &args, &env) {
        Some((first, rate)) => println!(
            "  Parsl HTEX + SlurmProvider    {rate:8.1} tasks/s once up; first result {first:.2}s after the first submit"
        ),
        None => println!("  Parsl HTEX + SlurmProvider    (no test virtualenv: run scripts/test first)"),
    }
}
