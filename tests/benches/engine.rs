//! Engine throughput: 10,000 tasks with a no-op closure body on the local executor,
//! staged by the `file` provider in its no-op mode, for 0 files, 1 input, 1 output and
//! 10 inputs per task. Each case runs in a process of its own, so its peak memory
//! (max RSS) is its own. Prints figures; asserts nothing about time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench engine`.

use std::time::Instant;

use stagehost::config::ConfigSource;
use stagehost::engine::{Engine, EngineOptions, TaskSpec, TaskStatus};
use stagehost::{Config, File, PluginLoader, Registry};
use stagehost_tests::{shipped_plugin, toml_path, Sandbox};

const TASKS: usize = 10_000;
const ROUNDS: usize = 5;
const CASES: [(&str, usize, usize); 4] = [
    ("0 files", 0, 0),
    ("1 input", 1, 0),
    ("1 output", 0, 1),
    ("10 inputs", 10, 0),
];

fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    usage.ru_maxrss as f64 / 1024.0
}

fn run_case(name: &str, inputs: usize, outputs: usize) {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&shipped_plugin("file")]);
    let text = format!(
        "plugin_dirs = [{}]\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n[executor.local]\nworking_dir = {}\nstaging = [\"file\"]\n",
        toml_path(&plugins),
        toml_path(&sandbox.join("wd"))
    );
    let config = Config::parse(&text, ConfigSource::Embedded).expect("config");
    let registry = Registry::build(&config, &PluginLoader::default()).expect("registry");
    let files: Vec<(Vec<File>, Vec<File>)> = (0..TASKS)
        .map(|t| {
            let ins = (0..inputs)
                .map(|i| File::parse(&format!("/data/in/{t}-{i}.dat")).expect("url"))
                .collect();
            let outs = (0..outputs)
                .map(|i| File::parse(&format!("/data/out/{t}-{i}.dat")).expect("url"))
                .collect();
            (ins, outs)
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut first_run_rss = 0.0;
    let mut times: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            let files = files.clone();
            let (seconds, ok) = rt.block_on(async {
                let engine =
                    Engine::new(&registry, EngineOptions::default()).expect("the engine starts");
                let start = Instant::now();
                for (t, (ins, outs)) in files.into_iter().enumerate() {
                    let mut spec = TaskSpec::closure(format!("t{t}"), |_| Ok(()));
                    spec.inputs = ins.into_iter().map(Into::into).collect();
                    spec.outputs = outs;
                    engine.submit(spec).expect("submit");
                }
                let reports = engine.wait_all().await;
                let seconds = start.elapsed().as_secs_f64();
                (
                    seconds,
                    reports
                        .iter()
                        .filter(|r| r.status == TaskStatus::Succeeded)
                        .count(),
                )
            });
            assert_eq!(ok, TASKS, "every task succeeded");
            if round == 0 {
                first_run_rss = peak_rss_mib();
            }
            seconds
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[ROUNDS / 2]);
    println!(
        "engine, {TASKS} tasks, {name:>9}: best {:>7.0} tasks/s ({:.1} us/task), median {:>7.0} tasks/s, over {ROUNDS} runs; peak RSS {:.1} MiB after one run, {:.1} MiB after all",
        TASKS as f64 / best,
        best * 1e6 / TASKS as f64,
        TASKS as f64 / median,
        first_run_rss,
        peak_rss_mib()
    );
}

fn main() {
    if let Ok(case) = std::env::var("STAGEHOST_BENCH_CASE") {
        let (name, inputs, outputs) = CASES
            .iter()
            .find(|c| c.0 == case)
            .copied()
            .expect("a known case");
        run_case(name, inputs, outputs);
        return;
    }
    let exe = std::env::current_exe().expect("the bench has a path");
    for (name, _, _) in CASES {
        let status = std::process::Command::new(&exe)
            .env("STAGEHOST_BENCH_CASE", name)
            .status()
            .expect("re-run the bench");
        assert!(status.success(), "case {name} failed");
    }
}
