//! The engine and `stagehost run`, end to end with real plugin libraries: Parsl's
//! staging rules for tasks, and what stagehost adds (dedup, limits, retries, timeouts,
//! cancellation, dry run, reports).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stagehost::config::ConfigSource;
use stagehost::engine::{Engine, EngineOptions, TaskSpec, TaskStatus};
use stagehost::{Config, File, PluginLoader, Registry};
use stagehost_tests::*;

/// A config whose `plugin_dirs` holds the probe, plus `extra` TOML.
fn config(sandbox: &Sandbox, extra: &str) -> PathBuf {
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    sandbox.write(
        "site.toml",
        format!("plugin_dirs = [{}]\n{extra}", toml_path(&plugins)),
    )
}

fn run_workflow(
    sandbox: &Sandbox,
    config: &Path,
    workflow: &str,
    extra_args: &[&str],
) -> (Run, serde_json::Value) {
    let flow = sandbox.write("flow.toml", workflow);
    let report = sandbox.join("report.json");
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "run",
        flow.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra_args);
    let out = sandbox.run(&args);
    let json = std::fs::read_to_string(&report)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (out, json)
}

fn task<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    task_in(report, name)
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// A FIFO at `path`.
fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

/// A thread that reads the FIFO at `path` to its end.
fn read_fifo(path: &Path) -> std::thread::JoinHandle<String> {
    let path = path.to_path_buf();
    std::thread::spawn(move || std::fs::read_to_string(path).unwrap())
}

fn engine_for(text: &str) -> (Engine, Registry) {
    let config = Config::parse(text, ConfigSource::Embedded).unwrap();
    let registry = Registry::build(&config, &PluginLoader::default()).unwrap();
    let engine = Engine::new(
        &registry,
        EngineOptions {
            transfers: config.transfers.clone(),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    (engine, registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_sets_local_path_the_task_sees_it_and_the_callers_file_does_not_change() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let text = format!(
        "plugin_dirs = [{}]\n[[provider]]\nname = \"p\"\nplugin = \"probe\"\nsettings = {{ work = \"in-task\", mark = \"M\" }}\n[executor.local]\nworking_dir = {}\n",
        toml_path(&plugins),
        toml_path(&sandbox.join("wd"))
    );
    let (engine, _registry) = engine_for(&text);
    let input = File::parse("/remote/in.txt").unwrap();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let handle = engine
        .submit(
            TaskSpec::closure("reader", move |files| {
                let text = std::fs::read_to_string(&files.inputs[0]).map_err(|e| e.to_string())?;
                *seen2.lock().unwrap() = Some((files.inputs[0].clone(), text));
                Ok(())
            })
            .input(input.clone()),
        )
        .unwrap();
    let report = handle.wait().await;
    assert_eq!(report.status, TaskStatus::Succeeded, "{report:?}");
    let (path, text) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(path, sandbox.join("wd/in.txt"));
    assert_eq!(text, "M:/remote/in.txt");
    assert_eq!(input.local_path(), None);
    assert_eq!(input.filepath().unwrap(), PathBuf::from("/remote/in.txt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_run_on_its_executor_fails_once_without_retries() {
    // A Rust closure cannot go to a pilot's worker: no attempt could succeed, so its
    // retries are not spent (the engine decides on the error's type, not its text),
    // and no block starts for it.
    let sandbox = Sandbox::new();
    let text = format!(
        "[executor.procs]\nkind = \"processes\"\nworking_dir = {}\nstaging = []\n",
        toml_path(&sandbox.join("wd"))
    );
    let (engine, _registry) = engine_for(&text);
    let handle = engine
        .submit(
            TaskSpec::closure("inproc", |_| Ok(()))
                .executor("procs")
                .retries(3),
        )
        .unwrap();
    let report = handle.wait().await;
    engine.shutdown();
    assert_eq!(report.status, TaskStatus::Failed, "{report:?}");
    assert_eq!(report.attempts, 1, "{report:?}");
    let error = report.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("runs bodies on other nodes") && error.contains("give the task a command"),
        "{error}"
    );
}

#[test]
fn a_consumer_waits_for_the_producers_stage_out() {
    let sandbox = Sandbox::new();
    let store = sandbox.join("store");
    let cfg = config(
        &sandbox,
        &format!(
            "[[provider]]\nname = \"remote\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], store_dir = {}, slow_ms = 400 }}\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n[executor.a]\nworking_dir = \"wa\"\n[executor.b]\nworking_dir = \"wb\"\n",
            toml_path(&store)
        ),
    );
    let flow = "[[task]]\nname = \"produce\"\nexecutor = \"a\"\ncommand = \"printf payload > {outputs[0]}\"\noutputs = [\"probe://store/result.txt\"]\n\n[[task]]\nname = \"consume\"\nexecutor = \"b\"\ncommand = \"cat {inputs[0]} > {outputs[0]}\"\ninputs = [{ task = \"produce\", output = 0 }]\noutputs = [\"final.txt\"]\n";
    let (out, report) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(read(store.join("store/result.txt")), "payload");
    assert_eq!(
        read(sandbox.join("wb/result.txt")),
        "payload",
        "the consumer read the stored bytes, not a marker"
    );
    assert_eq!(read(sandbox.join("final.txt")), "payload");
    let produce = task(&report, "produce");
    assert_eq!(produce["files"][0]["direction"], "out");
    assert_eq!(produce["files"][0]["modes"][0], "separate-job");
    assert_eq!(produce["files"][0]["provider"], "remote");
    assert_eq!(produce["files"][0]["bytes"], 7);
    let consume = task(&report, "consume");
    // The producer's stage-out alone sleeps 7 x 40 ms (7 bytes written one per chunk,
    // slow_ms = 400 spread over 10 chunks): the consumer cannot start sooner after it.
    let (p, c) = (
        produce["started_at"].as_f64().unwrap(),
        consume["started_at"].as_f64().unwrap(),
    );
    assert!(c >= p + 0.28, "consumer started at {c}, producer at {p}");
    assert!(produce["files"][0]["seconds"].as_f64().unwrap() >= 0.28);
}

#[test]
fn output_only_tasks_never_stage_in_and_input_only_tasks_never_stage_out() {
    let sandbox = Sandbox::new();
    let count = sandbox.join("count.txt");
    let cfg = config(
        &sandbox,
        &format!("[[provider]]\nname = \"p\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], count_file = {} }}\n", toml_path(&count)),
    );
    let flow = "[[task]]\nname = \"writer\"\ncommand = \"echo hi > {outputs[0]}\"\noutputs = [\"probe://h/w.txt\"]\n\n[[task]]\nname = \"reader\"\ncommand = \"cat {inputs[0]}\"\ninputs = [\"probe://h/r.txt\"]\n";
    let (out, report) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let dirs = |name: &str| -> Vec<String> {
        task(&report, name)["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["direction"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(dirs("writer"), ["out"]);
    assert_eq!(dirs("reader"), ["in"]);
    let mut lines: Vec<String> = read(&count).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["probe://h/r.txt", "probe://h/w.txt"],
        "one job per file, no other"
    );
}

#[test]
fn a_provider_error_reaches_the_task_and_names_the_file() {
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "[[provider]]\nname = \"broken\"\nplugin = \"probe\"\nsettings = { schemes = [\"probe\"], fail_with = \"not-found\" }\n");
    let flow = "[[task]]\nname = \"t\"\ncommand = \"cat {inputs[0]} > {outputs[0]}\"\ninputs = [\"probe://h/missing.txt\"]\noutputs = [\"out.txt\"]\n\n[[task]]\nname = \"after\"\ncommand = \"cat {inputs[0]} > {outputs[0]}\"\ninputs = [{ task = \"t\" }]\noutputs = [\"after.txt\"]\n\n[[task]]\nname = \"last\"\ncommand = \"cat {inputs[0]}\"\ninputs = [{ task = \"after\" }]\n";
    let (out, report) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let t = task(&report, "t");
    assert_eq!(t["status"], "failed");
    assert_eq!(
        t["error"],
        "stage-in failed: cannot stage in probe://h/missing.txt: provider \"broken\" (plugin probe 0.1.0) on executor \"local\": separate job: not found: probe fails as configured (not found)"
    );
    assert_eq!(
        t["files"][0]["attempts"], 1,
        "a permanent error is not retried"
    );
    let after = task(&report, "after");
    assert_eq!(after["status"], "dependency-failed");
    let error = after["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("input {} from task \"t\" was not made: task \"t\" failed: stage-in failed: cannot stage in probe://h/missing.txt", sandbox.join("out.txt").display())), "{error}");
    // Two tasks down, the first failure is named once, not nested once per task.
    let last = task(&report, "last");
    assert_eq!(last["status"], "dependency-failed");
    let error = last["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "input {} from task \"after\" was not made: task \"t\" failed: stage-in failed:",
            sandbox.join("after.txt").display()
        )),
        "{error}"
    );
    assert_eq!(error.matches("cannot stage in").count(), 1, "{error}");
    assert!(
        out.stderr
            .lines()
            .last()
            .unwrap()
            .contains("3 task(s): 0 succeeded, 1 failed, 0 stage-out failed, 2 lost an input"),
        "{}",
        out.stderr
    );
}

#[test]
fn stdout_stderr_and_outputs_are_staged_out_and_a_chain_of_four_passes_its_files() {
    let sandbox = Sandbox::new();
    let cfg = sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"copy\"\nplugin = \"file\"\nsettings = { mode = \"copy\" }\n[executor.local]\nworking_dir = \"scratch\"\n",
    );
    sandbox.write("in.txt", "start\n");
    let mut flow = String::new();
    for i in 1..=4 {
        let input = if i == 1 {
            "\"in.txt\"".to_owned()
        } else {
            format!("{{ task = \"step{}\" }}", i - 1)
        };
        flow.push_str(&format!(
            "[[task]]\nname = \"step{i}\"\ncommand = \"cat {{inputs[0]}} > {{outputs[0]}}; echo step{i} >> {{outputs[0]}}; echo out{i}; echo err{i} >&2\"\ninputs = [{input}]\noutputs = [\"published/s{i}.txt\"]\nstdout = \"logs/s{i}.out\"\nstderr = \"logs/s{i}.err\"\n\n"
        ));
    }
    let (out, report) = run_workflow(&sandbox, &cfg, &flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        read(sandbox.join("published/s4.txt")),
        "start\nstep1\nstep2\nstep3\nstep4\n"
    );
    assert_eq!(read(sandbox.join("logs/s3.out")), "out3\n");
    assert_eq!(read(sandbox.join("logs/s3.err")), "err3\n");
    let s2 = task(&report, "step2");
    let files = s2["files"].as_array().unwrap();
    let urls: Vec<&str> = files.iter().map(|f| f["url"].as_str().unwrap()).collect();
    assert!(
        urls[0].ends_with("published/s1.txt") && urls[1].ends_with("published/s2.txt"),
        "{urls:?}"
    );
    assert!(
        urls[2].ends_with("logs/s2.out") && urls[3].ends_with("logs/s2.err"),
        "stage-out order: outputs, stdout, stderr: {urls:?}"
    );
    for f in files {
        assert_eq!(f["modes"][0], "in-task-step");
        assert_eq!(f["provider"], "copy");
    }
    // The work happened in the working dir; the local copies stay there.
    assert_eq!(
        read(sandbox.join("scratch/s2.txt")),
        "start\nstep1\nstep2\n"
    );
}

#[test]
fn one_fetch_serves_many_consumers_of_the_same_url() {
    let sandbox = Sandbox::new();
    let count = sandbox.join("count.txt");
    let cfg = config(
        &sandbox,
        &format!("[[provider]]\nname = \"p\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], count_file = {}, slow_ms = 200 }}\n[executor.local]\nworking_dir = \"wd\"\n", toml_path(&count)),
    );
    let mut flow = String::new();
    for i in 0..5 {
        flow.push_str(&format!("[[task]]\nname = \"c{i}\"\ncommand = \"cat {{inputs[0]}} > {{outputs[0]}}\"\ninputs = [\"probe://h/shared.dat\"]\noutputs = [\"out{i}.txt\"]\n\n"));
    }
    let (out, report) = run_workflow(&sandbox, &cfg, &flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(read(&count), "probe://h/shared.dat\n", "fetched once");
    for i in 0..5 {
        assert_eq!(
            read(sandbox.join(format!("out{i}.txt"))),
            "probe:probe://h/shared.dat"
        );
    }
    let files: Vec<&serde_json::Value> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["files"][0])
        .collect();
    assert_eq!(
        files.iter().filter(|f| f["deduplicated"] == true).count(),
        4
    );
    assert_eq!(files.iter().filter(|f| f["attempts"] == 1).count(), 1);
}

#[test]
fn transient_errors_are_retried_with_backoff_and_permanent_ones_are_not() {
    let sandbox = Sandbox::new();
    let cfg = config(
        &sandbox,
        "[transfers]\nretries = 3\nbackoff_initial_ms = 10\nbackoff_max_ms = 50\n[[provider]]\nname = \"flaky\"\nplugin = \"probe\"\nsettings = { schemes = [\"probe\"], fail_times = 2 }\n[executor.local]\nworking_dir = \"wd\"\n",
    );
    let flow = "[[task]]\nname = \"t\"\ncommand = \"cat {inputs[0]} > {outputs[0]}\"\ninputs = [\"probe://h/f.txt\"]\noutputs = [\"out.txt\"]\n";
    let (out, report) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(task(&report, "t")["files"][0]["attempts"], 3);
    assert_eq!(read(sandbox.join("out.txt")), "probe:probe://h/f.txt");

    let cfg = config(
        &sandbox,
        "[transfers]\nretries = 1\nbackoff_initial_ms = 10\n[[provider]]\nname = \"flaky\"\nplugin = \"probe\"\nsettings = { schemes = [\"probe\"], fail_times = 5 }\n",
    );
    let (out, report) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(6));
    let f = &task(&report, "t")["files"][0];
    assert_eq!(f["attempts"], 2);
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .ends_with("separate job: transient: probe fails transiently as configured (run 2)"),
        "{f:#}"
    );
}

#[test]
fn a_transfer_past_its_timeout_fails_and_leaves_no_file() {
    let sandbox = Sandbox::new();
    let cfg = config(
        &sandbox,
        "[transfers]\ntimeout_secs = 0.3\nretries = 0\n[[provider]]\nname = \"slow\"\nplugin = \"probe\"\nsettings = { schemes = [\"probe\"], slow_ms = 3000 }\n[executor.local]\nworking_dir = \"wd\"\n",
    );
    let flow =
        "[[task]]\nname = \"t\"\ncommand = \"cat {inputs[0]}\"\ninputs = [\"probe://h/big.bin\"]\n";
    let (out, report) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(6));
    // The provider may see its deadline first ("deadline passed"), or the host's timer
    // may fire first ("no result within 0.300s"): both are this transfer timing out.
    let error = task(&report, "t")["files"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.starts_with("cannot stage in probe://h/big.bin: provider \"slow\" (plugin probe 0.1.0) on executor \"local\": separate job: timed out: "),
        "{error}"
    );
    assert!(!sandbox.join("wd/big.bin").exists());
    assert_eq!(partial_files(&sandbox.join("wd")), Vec::<String>::new());
}

#[test]
fn concurrent_transfers_are_bounded_globally_and_per_host() {
    let sandbox = Sandbox::new();
    let stats = sandbox.join("stats.txt");
    let probe = format!("[[provider]]\nname = \"p\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], slow_ms = 300, stats_file = {} }}\n[executor.local]\nworking_dir = \"wd\"\nworkers = 8\n", toml_path(&stats));
    let mut flow = String::new();
    for i in 0..6 {
        let host = if i % 2 == 0 { "alpha" } else { "beta" };
        flow.push_str(&format!("[[task]]\nname = \"t{i}\"\ncommand = \"true\"\ninputs = [\"probe://{host}/f{i}.txt\"]\n\n"));
    }
    let cfg = config(
        &sandbox,
        &format!("[transfers]\nmax_concurrent = 8\nper_host = 1\n{probe}"),
    );
    let (out, _) = run_workflow(&sandbox, &cfg, &flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(read(&stats), "max=2 alpha=1 beta=1");

    let cfg = config(
        &sandbox,
        &format!("[transfers]\nmax_concurrent = 8\nper_host = 8\n{probe}"),
    );
    std::fs::remove_dir_all(sandbox.join("wd")).unwrap();
    let (out, _) = run_workflow(&sandbox, &cfg, &flow, &["--max-transfers", "2"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen = read(&stats);
    assert!(seen.starts_with("max=2 "), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_transfers_and_leaves_no_partial_file() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let count = sandbox.join("count.txt");
    let text = format!(
        "plugin_dirs = [{}]\n[[provider]]\nname = \"slow\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], slow_ms = 20000, count_file = {} }}\n[executor.local]\nworking_dir = {}\n",
        toml_path(&plugins),
        toml_path(&count),
        toml_path(&sandbox.join("wd"))
    );
    let (engine, _registry) = engine_for(&text);
    let first = engine
        .submit(
            TaskSpec::closure("first", |_| Ok(()))
                .input(File::parse("probe://h/a.bin").unwrap())
                .output(File::parse(sandbox.join("o.txt").to_str().unwrap()).unwrap()),
        )
        .unwrap();
    let second = engine
        .submit(TaskSpec::closure("second", |_| Ok(())).input(first.output(0).unwrap()))
        .unwrap();
    while !count.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    engine.cancel();
    let reports = engine.wait_all().await;
    assert_eq!(reports[0].status, TaskStatus::Cancelled);
    assert!(
        reports[0].files[0]
            .error
            .as_deref()
            .unwrap()
            .ends_with("separate job: cancelled: cancelled"),
        "{:?}",
        reports[0]
    );
    assert!(matches!(
        second.wait().await.status,
        TaskStatus::Cancelled | TaskStatus::DependencyFailed
    ));
    assert!(!sandbox.join("wd/a.bin").exists());
    assert_eq!(partial_files(&sandbox.join("wd")), Vec::<String>::new());
}

#[test]
fn ctrl_c_cancels_a_run_which_exits_non_zero_with_a_summary() {
    let sandbox = Sandbox::new();
    let count = sandbox.join("count.txt");
    let cfg = config(
        &sandbox,
        &format!("[[provider]]\nname = \"slow\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], slow_ms = 20000, count_file = {} }}\n[executor.local]\nworking_dir = \"wd\"\n", toml_path(&count)),
    );
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"t\"\ncommand = \"true\"\ninputs = [\"probe://h/a.bin\"]\n",
    );
    let child = spawn_run(&sandbox, &cfg, &flow);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !count.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(count.exists(), "the transfer never started");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(130), "{}", out.stderr);
    assert!(
        out.stderr.contains("stagehost: interrupted: cancelling"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.lines().last().unwrap().contains(
            "1 task(s): 0 succeeded, 0 failed, 0 stage-out failed, 0 lost an input, 1 cancelled"
        ),
        "{}",
        out.stderr
    );
    assert!(!sandbox.join("wd/a.bin").exists());
    assert_eq!(partial_files(&sandbox.join("wd")), Vec::<String>::new());
}

#[test]
fn a_dry_run_names_every_files_provider_and_moves_nothing() {
    let sandbox = Sandbox::new();
    let count = sandbox.join("count.txt");
    let cfg = config(
        &sandbox,
        &format!("[[provider]]\nname = \"p\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], work = \"in-task\", count_file = {} }}\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n[executor.local]\nworking_dir = \"wd\"\n", toml_path(&count)),
    );
    let flow = "[[task]]\nname = \"a\"\ncommand = \"true\"\ninputs = [\"probe://h/in.txt\", \"/etc/hostname\"]\noutputs = [\"probe://h/out.txt\"]\n";
    let flow_path = sandbox.write("flow.toml", flow);
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "run",
        flow_path.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let wd = sandbox.join("wd");
    assert_eq!(
        out.stdout,
        format!(
            "task a (executor local):\n  in  probe://h/in.txt -> {w}/in.txt [provider p, in-task step]\n  in  /etc/hostname -> /etc/hostname [provider file, nothing to do]\n  out {w}/out.txt -> probe://h/out.txt [provider p, in-task step]\n",
            w = wd.display()
        )
    );
    assert!(!wd.exists() && !count.exists(), "a dry run moves nothing");
}

#[test]
fn workflow_errors_are_caught_before_anything_runs() {
    let sandbox = Sandbox::new();
    let cfg = sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"file\"\nplugin = \"file\"\n",
    );
    let flow = "[[task]]\nname = \"a\"\ncommand = \"touch ran-a\"\ninputs = [{ task = \"b\" }]\noutputs = [\"a.txt\"]\n\n[[task]]\nname = \"b\"\ncommand = \"touch ran-b\"\ninputs = [{ task = \"a\" }]\noutputs = [\"b.txt\"]\n";
    let (out, _) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(2));
    let line = out.stderr.trim();
    assert!(
        line.starts_with(&format!(
            "stagehost: error: {}:",
            sandbox.join("flow.toml").display()
        )),
        "{line}"
    );
    assert!(line.contains("its inputs form a cycle: "), "{line}");
    assert!(!sandbox.join("work/ran-a").exists());

    let flow = "[[task]]\nname = \"a\"\ncommand = \"true\"\nexecutor = \"gpu\"\n";
    let (out, _) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(2));
    assert_eq!(
        out.stderr.trim(),
        format!(
            "stagehost: error: {}:1:1: task \"a\": unknown executor \"gpu\" (configured: local)",
            sandbox.join("flow.toml").display()
        )
    );
}

#[test]
fn a_failed_body_is_retried_and_a_failed_stage_out_keeps_the_local_output() {
    let sandbox = Sandbox::new();
    let cfg = sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"copy\"\nplugin = \"file\"\nsettings = { mode = \"copy\" }\n[executor.local]\nworking_dir = \"wd\"\n",
    );
    sandbox.write("blocker", "a file where a directory should be");
    let flow = "[[task]]\nname = \"flaky\"\ncommand = \"if [ -f tried ]; then echo ok > {outputs[0]}; else touch tried; exit 3; fi\"\noutputs = [\"ok.txt\"]\nretries = 1\n\n[[task]]\nname = \"unpublishable\"\ncommand = \"echo precious > {outputs[0]}\"\noutputs = [\"blocker/out.txt\"]\n";
    let (out, report) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(1));
    let flaky = task(&report, "flaky");
    assert_eq!(flaky["status"], "succeeded");
    assert_eq!(flaky["attempts"], 2);
    assert_eq!(read(sandbox.join("ok.txt")), "ok\n");
    let u = task(&report, "unpublishable");
    assert_eq!(u["status"], "stage-out-failed");
    assert!(
        u["error"]
            .as_str()
            .unwrap()
            .starts_with("stage-out failed: cannot stage out "),
        "{u:#}"
    );
    assert_eq!(
        read(sandbox.join("wd/out.txt")),
        "precious\n",
        "the local output is kept"
    );
}

#[test]
fn a_failing_command_reports_its_exit_status_and_stderr() {
    let sandbox = Sandbox::new();
    let flow = "[[task]]\nname = \"bad\"\ncommand = \"echo something broke >&2; exit 7\"\n";
    let (out, report) = run_workflow(&sandbox, &sandbox.write("site.toml", ""), flow, &[]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        task(&report, "bad")["error"],
        "the command failed with exit status 7: something broke"
    );
    assert!(
        out.stderr
            .contains("stagehost: task \"bad\" on executor \"local\" failed: the command failed with exit status 7"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_example_pipeline_runs_offline_on_the_embedded_default() {
    let sandbox = Sandbox::new();
    let src = workspace_root().join("examples/pipeline");
    for name in ["workflow.toml", "data/parsl.txt", "data/stagehost.txt"] {
        sandbox.write(
            format!("pipeline/{name}"),
            std::fs::read(src.join(name)).unwrap(),
        );
    }
    let flow = sandbox.join("pipeline/workflow.toml");
    let report = sandbox.join("report.json");
    let out = sandbox.run(&[
        "run",
        flow.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let unzip = std::process::Command::new("unzip")
        .arg("-p")
        .arg(sandbox.join("pipeline/out/report.zip"))
        .arg("report.txt")
        .output()
        .expect("unzip runs");
    assert!(
        unzip.status.success(),
        "{}",
        String::from_utf8_lossy(&unzip.stderr)
    );
    let text = String::from_utf8(unzip.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "parsl: 32 distinct words");
    assert_eq!(lines[1], "stagehost: 30 distinct words");
    assert!(
        lines[2].starts_with("shared: and are by files for in inputs outputs parsl providers"),
        "{text}"
    );
    assert_eq!(
        read(sandbox.join("pipeline/out/common.log")),
        "15 words in common\n"
    );
    let report: serde_json::Value = serde_json::from_str(&read(&report)).unwrap();
    assert_eq!(report["summary"]["succeeded"], 4);
    assert_eq!(task(&report, "common")["files"][0]["provider"], "file");
    assert_eq!(task(&report, "report")["files"][3]["provider"], "zip");
}

#[test]
fn the_documented_two_task_pipeline_example_runs() {
    // `cargo test` builds the examples of the workspace next to the test binaries.
    let example = profile_dir().join("examples/two_tasks");
    assert!(
        example.exists(),
        "{} is missing: `cargo test --workspace` builds it",
        example.display()
    );
    let sandbox = Sandbox::new();
    let out: Run = sandbox
        .command(&example)
        .env("STAGEHOST_PLUGIN_PATH", profile_dir())
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "write: Succeeded\nshout: Succeeded\nHELLO STAGEHOST\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_staged_before_other_file_arguments() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let count = sandbox.join("count.txt");
    let text = format!(
        "plugin_dirs = [{}]\n[[provider]]\nname = \"p\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], work = \"in-task\", count_file = {} }}\n[executor.local]\nworking_dir = {}\n",
        toml_path(&plugins),
        toml_path(&count),
        toml_path(&sandbox.join("wd"))
    );
    let (engine, _registry) = engine_for(&text);
    let spec = TaskSpec::closure("t", |files| {
        let (input, arg) = (&files.inputs[0], &files.args[0]);
        let ok =
            input.ends_with("in.txt") && arg.ends_with("arg.txt") && input.exists() && arg.exists();
        if ok {
            Ok(())
        } else {
            Err(format!("unexpected files {files:?}"))
        }
    })
    .arg(File::parse("probe://h/arg.txt").unwrap())
    .input(File::parse("probe://h/in.txt").unwrap());
    let report = engine.submit(spec).unwrap().wait().await;
    assert_eq!(report.status, TaskStatus::Succeeded, "{report:?}");
    assert_eq!(read(&count), "probe://h/in.txt\nprobe://h/arg.txt\n");
    let urls: Vec<&str> = report.files.iter().map(|f| f.url.as_str()).collect();
    assert_eq!(urls, ["probe://h/in.txt", "probe://h/arg.txt"]);
}

#[test]
fn progress_is_bars_on_a_terminal_and_lines_on_a_pipe() {
    let sandbox = Sandbox::new();
    let cfg = config(
        &sandbox,
        "[[provider]]\nname = \"p\"\nplugin = \"probe\"\nsettings = { schemes = [\"probe\"], slow_ms = 1500 }\n[executor.local]\nworking_dir = \"wd\"\n",
    );
    let flow = "[[task]]\nname = \"t\"\ncommand = \"true\"\ninputs = [\"probe://h/a.bin\"]\n";
    let (out, _) = run_workflow(&sandbox, &cfg, flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line = out.stderr.lines().next().unwrap();
    assert!(
        line.starts_with("stagehost: staged in probe://h/a.bin (21 bytes, "),
        "{line}"
    );
    assert!(
        !out.stderr.contains('\u{1b}'),
        "no terminal escapes on a pipe: {:?}",
        out.stderr
    );

    // On a terminal (a pty from script(1)): indicatif bars.
    std::fs::remove_dir_all(sandbox.join("wd")).unwrap();
    let command = format!(
        "{} --config {} run {}",
        stagehost_bin().display(),
        cfg.display(),
        sandbox.join("flow.toml").display()
    );
    let out: Run = sandbox
        .command(Path::new("script"))
        .args(["-qfec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(" stage in ["),
        "a transfer bar: {:?}",
        out.stdout
    );
    assert!(out.stdout.contains("probe://h/a.bin"), "{:?}", out.stdout);
    assert!(
        out.stdout.contains("1 task(s): 1 succeeded"),
        "{:?}",
        out.stdout
    );
    // The summary starts a line of its own: the bars are off the screen first, so
    // between the last line break (or carriage return) and the summary there are at
    // most terminal escapes and blanks.
    let at = out.stdout.find("stagehost: 1 task(s)").unwrap();
    let start = out.stdout[..at].rfind(['\n', '\r']).map_or(0, |i| i + 1);
    let before = &out.stdout[start..at];
    let mut plain = String::new();
    let mut chars = before.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // A control sequence: ESC [ parameters, ended by a letter.
            if chars.peek() == Some(&'[') {
                for n in chars.by_ref().skip(1) {
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    assert!(
        plain.trim().is_empty(),
        "the summary is glued onto a bar: {before:?}"
    );
    assert!(
        !out.stdout.contains("stagehost: staged in"),
        "no plain lines on a terminal: {:?}",
        out.stdout
    );
}

#[test]
fn a_task_input_with_a_checksum_is_verified_once_fetched() {
    let sandbox = Sandbox::new();
    let store = sandbox.join("store");
    sandbox.write("store/h/x.txt", "data");
    let cfg = config(
        &sandbox,
        &format!("[[provider]]\nname = \"remote\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], store_dir = {} }}\n[executor.local]\nworking_dir = \"wd\"\n", toml_path(&store)),
    );
    let sha = "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7";
    let flow = format!(
        "[[task]]\nname = \"good\"\ncommand = \"cat {{inputs[0]}} > {{outputs[0]}}\"\ninputs = [\"probe://h/x.txt#sha256={sha}\"]\noutputs = [\"good.txt\"]\n\n[[task]]\nname = \"bad\"\ncommand = \"true\"\ninputs = [\"probe://h/x.txt#sha256={}\"]\nexecutor = \"local\"\n",
        "f".repeat(64)
    );
    let (out, report) = run_workflow(&sandbox, &cfg, &flow, &[]);
    assert_eq!(out.code, Some(5));
    assert_eq!(task(&report, "good")["status"], "succeeded");
    assert_eq!(read(sandbox.join("good.txt")), "data");
    let bad = task(&report, "bad");
    assert_eq!(bad["status"], "failed");
    let error = bad["files"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("cannot stage in probe://h/x.txt#sha256=ffff"),
        "{error}"
    );
    assert!(
        error.contains("on executor \"local\": checksum: integrity: checksum mismatch for "),
        "{error}"
    );
    assert!(
        error.ends_with(&format!("sha256 expected {}, got {sha}", "f".repeat(64))),
        "{error}"
    );
}

#[test]
fn the_report_can_go_to_stdout() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"only\"\ncommand = \"true\"\n",
    );
    let out = sandbox.run(&["run", flow.to_str().unwrap(), "--report", "-"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["summary"]["tasks"], 1);
    assert_eq!(report["tasks"][0]["name"], "only");
    assert_eq!(report["tasks"][0]["status"], "succeeded");
}

#[test]
fn a_pilot_executor_the_run_never_uses_starts_nothing() {
    // The largest slurm executor the config allows beside a local one; the only task
    // runs locally. Before: a thread per remote slot (16 x 8 x 64 + 2) and a run
    // directory, made at start.
    let sandbox = Sandbox::new();
    let cfg = sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = \"wd\"\n\n[executor.big]\nkind = \"slurm\"\nworking_dir = \"wd\"\nworkers = 32\n\n[executor.big.slurm]\nblocks = 16\nnodes_per_block = 8\nprefetch = 32\n",
    );
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"t\"\nexecutor = \"local\"\ncommand = \"sleep 1\"\n",
    );
    let mut child = sandbox
        .command(&stagehost_bin())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "run",
            flow.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut most = 0;
    let code = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit.code();
        }
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(n) = text
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
            {
                most = most.max(n);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    assert!(most > 0, "the run's threads were never seen");
    assert!(most < 64, "{most} threads for one local task");
    assert!(
        !sandbox.join("wd/.stagehost/slurm").exists(),
        "a run directory for an executor that was never used"
    );
}

/// A `processes` executor: `blocks` worker processes of `workers` slots, staging local
/// files by copy in the task (on the "node"), as a `slurm` executor does.
fn processes_config(sandbox: &Sandbox, blocks: usize) -> PathBuf {
    sandbox.write(
        "site.toml",
        format!("[[provider]]\nname = \"copy\"\nplugin = \"file\"\nsettings = {{ mode = \"copy\" }}\n\n[executor.procs]\nkind = \"processes\"\nworking_dir = \"wd\"\nstaging = [\"copy\"]\nworkers = 2\n\n[executor.procs.processes]\nblocks = {blocks}\nheartbeat_secs = 1\n"),
    )
}

#[test]
fn a_processes_executor_runs_bodies_in_worker_processes_and_leaves_none() {
    let sandbox = Sandbox::new();
    let cfg = processes_config(&sandbox, 2);
    let data = sandbox.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut flow = String::new();
    for i in 0..6 {
        std::fs::write(data.join(format!("in{i}.txt")), format!("input {i}\n")).unwrap();
        flow.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\nexecutor = \"procs\"\ncommand = \"tr a-z A-Z < {{inputs[0]}} > {{outputs[0]}}; echo $PPID > {{outputs[1]}}\"\ninputs = [{:?}]\noutputs = [{:?}, {:?}]\n",
            data.join(format!("in{i}.txt")).display().to_string(),
            data.join(format!("out{i}.txt")).display().to_string(),
            data.join(format!("pid{i}.txt")).display().to_string(),
        ));
    }
    let (out, report) = run_workflow(&sandbox, &cfg, &flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let me = std::process::id().to_string();
    let mut parents = std::collections::BTreeSet::new();
    for i in 0..6 {
        assert_eq!(
            read(data.join(format!("out{i}.txt"))),
            format!("INPUT {i}\n")
        );
        // The body's shell is a child of a worker process, not of the run.
        let parent = read(data.join(format!("pid{i}.txt"))).trim().to_owned();
        assert_ne!(parent, me);
        parents.insert(parent);
    }
    assert!(!parents.is_empty());
    assert_eq!(report["tasks"].as_array().map(Vec::len), Some(6));
    // Every worker process is gone once the run has returned.
    for pid in parents {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "worker process {pid} outlived the run"
        );
    }
    // Its run directory keeps the blocks' logs; the secret went with the run.
    let runs: Vec<_> = std::fs::read_dir(sandbox.join("wd/.stagehost/processes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].join("block-0.out").exists());
    assert!(
        !runs[0].join("secret").exists(),
        "the secret outlived the run"
    );
}

#[test]
fn a_lost_worker_process_is_named_and_its_task_retried_on_another() {
    let sandbox = Sandbox::new();
    let cfg = processes_config(&sandbox, 1);
    let marker = sandbox.join("killed-once");
    let output = sandbox.join("data/out.txt");
    // The first attempt kills the worker process that runs it (its shell's parent).
    let flow = format!(
        "[[task]]\nname = \"t\"\nexecutor = \"procs\"\nretries = 1\ncommand = \"if [ ! -e {m} ]; then touch {m}; kill -KILL $PPID; sleep 5; fi; echo done > {{outputs[0]}}\"\noutputs = [{o:?}]\n",
        m = marker.display(),
        o = output.display().to_string(),
    );
    let (out, _) = run_workflow(&sandbox, &cfg, &flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(read(&output), "done\n");
    assert!(
        out.stderr
            .contains("worker process p0 ended (killed by signal 9)"),
        "{}",
        out.stderr
    );
    // Its worker had joined, however briefly: it is not counted as one that could
    // not start.
    assert!(
        !out.stderr.contains("before its worker joined"),
        "{}",
        out.stderr
    );
}

/// `stagehost --config CFG run FLOW`, started, its output piped.
fn spawn_run(sandbox: &Sandbox, cfg: &Path, flow: &Path) -> std::process::Child {
    sandbox
        .command(&stagehost_bin())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "run",
            flow.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (at most 30 s) until a process's command line holds `marker`.
fn wait_for_process(marker: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while processes_with(marker).is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!processes_with(marker).is_empty(), "{marker} never started");
}

/// Pids of processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[test]
fn a_cancelled_run_leaves_no_command_of_its_worker_processes_running() {
    let sandbox = Sandbox::new();
    let cfg = processes_config(&sandbox, 2);
    // One command ignores SIGTERM: only SIGKILL of its group stops it.
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"stubborn\"\nexecutor = \"procs\"\ncommand = \"trap '' TERM; sleep 3171 & wait\"\n\n[[task]]\nname = \"plain\"\nexecutor = \"procs\"\ncommand = \"sleep 3172\"\n",
    );
    let mut child = sandbox
        .command(&stagehost_bin())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "run",
            flow.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (processes_with("sleep 3171").is_empty() || processes_with("sleep 3172").is_empty())
        && std::time::Instant::now() < until
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !processes_with("sleep 3171").is_empty(),
        "the task never started"
    );
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    // The run has returned: its workers stop their commands' groups as they exit.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(processes_with("sleep 3171").is_empty() && processes_with("sleep 3172").is_empty())
        && std::time::Instant::now() < until
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let left: Vec<u32> = processes_with("sleep 317");
    for pid in &left {
        // SAFETY: as above; cleaning up after a failed assertion.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "commands outlived the run: {left:?}");
}

/// Waits (at most `secs`) until no process's command line holds `marker`; kills
/// and names those left.
fn none_left(marker: &str, secs: u64) -> Vec<u32> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !processes_with(marker).is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let left = processes_with(marker);
    for pid in &left {
        // SAFETY: kill has no memory-safety preconditions; cleaning up.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    left
}

#[test]
fn a_run_or_a_worker_killed_with_sigkill_leaves_no_command_running() {
    // SIGKILL runs no code of ours: the reaper each engine and worker starts ends
    // their commands' groups when they die, however they die.
    let sandbox = Sandbox::new();
    let local = sandbox.write("local.toml", "[executor.local]\nworking_dir = \"wd\"\n");
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"t\"\ncommand = \"sleep 3181 & sleep 3182; wait\"\n",
    );
    let procs = processes_config(&sandbox, 1);
    let pilot_flow = sandbox.write(
        "pilot.toml",
        "[[task]]\nname = \"t\"\nexecutor = \"procs\"\ncommand = \"sleep 3183 & sleep 3184; wait\"\n",
    );
    let group_flow = sandbox.write(
        "group.toml",
        "[[task]]\nname = \"t\"\ncommand = \"sleep 3185 & sleep 3186; wait\"\n",
    );
    for (cfg, flow, (a, b), victim) in [
        (&local, &flow, ("sleep 3181", "sleep 3182"), "run"),
        (&procs, &pilot_flow, ("sleep 3183", "sleep 3184"), "worker"),
        // The run's whole process group, as `kill -9 -- -PGID` or a scheduler would.
        (
            &local,
            &group_flow,
            ("sleep 3185", "sleep 3186"),
            "run's group",
        ),
    ] {
        use std::os::unix::process::CommandExt;
        let mut child = sandbox
            .command(&stagehost_bin())
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "run",
                flow.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while (processes_with(a).is_empty() || processes_with(b).is_empty())
            && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            !processes_with(b).is_empty(),
            "the {victim}'s command never started"
        );
        // The run tells its reaper of a command just after starting it; on a loaded
        // machine that can come a moment after the command's own children appear
        // (the window reaper.rs names). A command that has run for a moment:
        std::thread::sleep(std::time::Duration::from_millis(300));
        let pid = if victim == "run" {
            child.id() as i32
        } else if victim == "run's group" {
            -(child.id() as i32)
        } else {
            // The worker's command line names its secret file, under the sandbox.
            let secret = sandbox.join("wd/.stagehost/processes");
            processes_with(&secret.to_string_lossy())
                .into_iter()
                .find(|&p| p != child.id())
                .expect("the worker process") as i32
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let left: Vec<u32> = none_left(a, 10)
            .into_iter()
            .chain(none_left(b, 5))
            .collect();
        // SAFETY: as above; the run itself, if a worker was the victim.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        assert!(
            left.is_empty(),
            "the {victim}'s commands outlived it: {left:?}"
        );
    }
}

#[test]
fn a_run_whose_reaper_was_killed_goes_on_and_gets_another() {
    // The reaper is a helper, never a way to end the run: with it gone, telling it of
    // the next command fails quietly (no SIGPIPE), and another takes its place, told
    // of every command still running.
    let sandbox = Sandbox::new();
    let cfg = sandbox.write("local.toml", "[executor.local]\nworking_dir = \"wd\"\n");
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"true 3191; sleep 1; echo a > {outputs[0]}\"\noutputs = [\"a.txt\"]\n\n[[task]]\nname = \"b\"\ncommand = \"cat {inputs[0]}; true 3192; sleep 30\"\ninputs = [{ task = \"a\", output = 0 }]\n",
    );
    let mut child = spawn_run(&sandbox, &cfg, &flow);
    wait_for_process("true 3191");
    // The run's children: the task's shell and the reaper (a fork of the run).
    let run = std::fs::read_to_string(format!("/proc/{}/cmdline", child.id())).unwrap();
    let reapers = || -> Vec<u32> {
        processes_with(&run)
            .into_iter()
            .filter(|&p| p != child.id())
            .filter(|&p| {
                // Not a zombie.
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
            })
            .collect()
    };
    let first = reapers();
    assert_eq!(first.len(), 1, "one reaper: {first:?}");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(first[0] as i32, libc::SIGKILL) };
    // Task b starts: the run noticed, and another reaper stands.
    wait_for_process("true 3192");
    let second = reapers();
    assert_eq!(second.len(), 1, "a new reaper: {second:?}");
    assert_ne!(second, first);
    // The run killed now: the new reaper ends b's command.
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let left = none_left("true 3192", 10);
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(left.is_empty(), "b's command outlived the run: {left:?}");
    assert!(stderr.contains("started another"), "{stderr}");
}

#[test]
fn a_peer_that_hangs_up_mid_handshake_never_ends_the_run() {
    // No secret needed: TLS, a hello, the challenge read, then a reset. The run must
    // neither die of SIGPIPE writing its refusal nor stop serving its real worker.
    let sandbox = Sandbox::new();
    let cfg = processes_config(&sandbox, 1);
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"t\"\nexecutor = \"procs\"\ncommand = \"true 3201; sleep 2; echo ok > {outputs[0]}\"\noutputs = [\"out.txt\"]\n",
    );
    let child = spawn_run(&sandbox, &cfg, &flow);
    wait_for_process("true 3201");
    // The worker's command line names the run's address.
    let worker = processes_with("--connect")
        .into_iter()
        .find(|&p| p != child.id())
        .expect("the worker process");
    let cmdline = std::fs::read(format!("/proc/{worker}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args.iter().position(|a| a == "--connect").unwrap();
    let port = args[at + 1].rsplit(':').next().unwrap().to_owned();
    // While the run lasts, its secret is readable by its owner only.
    let secret = args.iter().position(|a| a == "--secret-file").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&args[secret + 1])
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let script = r#"
import socket, ssl, sys, json, struct
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for _ in range(5):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="stagehost-run")
    s.sendall(json.dumps({"type": "hello", "protocol": "3.0.0", "features": [], "nonce": "00" * 32, "block": "x", "host": "h", "slots": 1}).encode() + b"\n")
    s.recv(4096)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
"#;
    let hung_up = std::process::Command::new("python3")
        .args(["-c", script, &port])
        .status()
        .unwrap();
    assert!(hung_up.success());
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(read(sandbox.join("out.txt")), "ok\n");
}

#[test]
fn output_to_a_reader_that_went_away_ends_quietly() {
    // `stagehost plugins list | head -0`: no panic message, the status of a SIGPIPE.
    let sandbox = Sandbox::new();
    let mut child = sandbox
        .command(&stagehost_bin())
        .args(["plugins", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out: Run = child.wait_with_output().unwrap().into();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(
        matches!(out.code, Some(0) | Some(141)),
        "{:?} {}",
        out.code,
        out.stderr
    );
}

#[test]
fn a_pilot_workflow_runs_again_over_the_files_its_workers_staged() {
    // The node's in-task steps land files at the run's destinations: they are
    // stagehost's own, so a second run replaces them, as with the local executor.
    let sandbox = Sandbox::new();
    let cfg = processes_config(&sandbox, 1);
    let input = sandbox.write("data/in.txt", "first\n");
    let flow = format!(
        "[[task]]\nname = \"t\"\nexecutor = \"procs\"\ncommand = \"cat {{inputs[0]}} > {{outputs[0]}}\"\ninputs = [{:?}]\noutputs = [{:?}]\n",
        format!("file://{}", input.display()),
        sandbox.join("data/out.txt").display().to_string(),
    );
    let (out, _) = run_workflow(&sandbox, &cfg, &flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    std::fs::write(&input, "second\n").unwrap();
    let (out, _) = run_workflow(&sandbox, &cfg, &flow, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(read(sandbox.join("data/out.txt")), "second\n");
    assert_eq!(read(sandbox.join("wd/in.txt")), "second\n");
}

#[test]
fn worker_processes_that_cannot_start_fail_the_task_with_their_last_line() {
    let sandbox = Sandbox::new();
    let cfg = processes_config(&sandbox, 1);
    let moved = sandbox.join("moved.toml");
    let marker = sandbox.join("data/ready.txt");
    // The first task (here) takes the config away before the pilot starts: every
    // worker process exits at once, unable to read it.
    let flow = format!(
        "[[task]]\nname = \"first\"\nexecutor = \"local\"\ncommand = \"mv {cfg} {moved} && echo ok > {{outputs[0]}}\"\noutputs = [{marker:?}]\n\n[[task]]\nname = \"second\"\nexecutor = \"procs\"\ncommand = \"true\"\ninputs = [{{ task = \"first\", output = 0 }}]\n",
        cfg = cfg.display(),
        moved = moved.display(),
        marker = marker.display().to_string(),
    );
    let cfg_text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{cfg_text}\n[executor.local]\nworking_dir = \"wd\"\n"),
    )
    .unwrap();
    let (out, report) = run_workflow(&sandbox, &cfg, &flow, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let error = task(&report, "second")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("3 blocks in a row ended before their worker joined the run"),
        "{error}\n{}",
        out.stderr
    );
    assert!(
        error.contains("cannot read"),
        "the worker's own last line: {error}"
    );
}

#[test]
fn a_report_named_as_a_fifo_is_written_into_and_a_replaced_report_keeps_its_mode() {
    // A report path that is a device or a pipe (`/dev/stdout`, a FIFO a reader waits
    // on) is written into, never replaced by a regular file.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let sandbox = Sandbox::new();
    let cfg = sandbox.write("local.toml", "[executor.local]\nworking_dir = \"wd\"\n");
    let flow = sandbox.write("flow.toml", "[[task]]\nname = \"t\"\ncommand = \"true\"\n");
    let fifo = sandbox.join("report.fifo");
    mkfifo(&fifo);
    let reader = read_fifo(&fifo);
    let run_reporting_to = |report: &std::path::Path| {
        sandbox.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "run",
            flow.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
    };
    let out = run_reporting_to(&fifo);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // (A FIFO replaced by a file would leave the reader waiting: checked first.)
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo(),
        "the FIFO is still a FIFO"
    );
    let json: serde_json::Value = serde_json::from_str(&reader.join().unwrap()).unwrap();
    assert_eq!(json["summary"]["succeeded"], 1);
    // A private report replaced by the next run stays private.
    let report = sandbox.join("report.json");
    let out = run_reporting_to(&report);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_reporting_to(&report);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let meta = std::fs::metadata(&report).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(read(&report).contains("\"succeeded\": 1"));
}

#[test]
fn a_report_needs_no_usable_tmpdir_and_an_unwritable_one_is_refused_before_the_run() {
    let sandbox = Sandbox::new();
    let cfg = sandbox.write("local.toml", "[executor.local]\nworking_dir = \"wd\"\n");
    let marker = sandbox.join("ran");
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"t\"\ncommand = \"touch {}\"\n",
            marker.display()
        ),
    );
    let run = |report: &str, env: &[(&str, &str)]| {
        sandbox.run_env(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "run",
                flow.to_str().unwrap(),
                "--report",
                report,
            ],
            env,
        )
    };
    // No temporary directory to spool in: the report's own directory serves.
    let report = sandbox.join("report.json");
    let out = run(report.to_str().unwrap(), &[("TMPDIR", "/nonexistent/tmp")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(read(&report).contains("\"succeeded\": 1"));
    // Nor for stdout.
    let out = run("-", &[("TMPDIR", "/nonexistent/tmp")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json()["summary"]["succeeded"], 1);
    // A report that cannot be made is a usage error, before any task runs.
    std::fs::remove_file(&marker).unwrap();
    let out = run("/proc/stagehost-report.json", &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("--report /proc/stagehost-report.json"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists(), "no task ran");
}

#[test]
fn a_report_never_replaces_a_file_of_the_run_and_a_path_it_cannot_use_is_told_before_the_run() {
    let sandbox = Sandbox::new();
    let cfg = sandbox.write("local.toml", "[executor.local]\nworking_dir = \"wd\"\n");
    let marker = sandbox.join("ran");
    let input = sandbox.write("data/in.txt", "the input\n");
    let output = sandbox.write("data/out.txt", "an earlier output\n");
    let text = format!(
        "[[task]]\nname = \"s\"\ncommand = \"touch {} && cp {} {}\"\ninputs = [{}]\noutputs = [{}]\n",
        marker.display(),
        input.display(),
        output.display(),
        toml_path(&input),
        toml_path(&output)
    );
    let flow = sandbox.write("flow.toml", &text);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            cfg.to_str().unwrap(),
            "run",
            flow.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        sandbox.run(&args)
    };
    let refused = |extra: &[&str], why: &str| {
        let out = run(extra);
        assert_eq!(out.code, Some(2), "{extra:?}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{extra:?}: {}", out.stderr);
        assert!(!marker.exists(), "{extra:?}: no task ran");
    };
    // The workflow, an input and an output, named directly or by another spelling.
    let flow_path = flow.to_str().unwrap();
    refused(&["--report", flow_path], "the workflow file");
    let through_dot = sandbox.join("data/./in.txt");
    refused(
        &["--report", through_dot.to_str().unwrap()],
        "an input of task \"s\" (",
    );
    std::os::unix::fs::symlink(sandbox.join("data"), sandbox.join("link")).unwrap();
    let through_link = sandbox.join("link/out.txt");
    refused(
        &["--report", through_link.to_str().unwrap()],
        "an output of task \"s\" (",
    );
    assert_eq!(read(&flow), text);
    assert_eq!(read(&input), "the input\n");
    assert_eq!(read(&output), "an earlier output\n");
    // A directory that is not there is named, with what to do.
    let missing = sandbox.join("reports/run.json");
    refused(
        &["--report", missing.to_str().unwrap()],
        "does not exist; create it first",
    );
    // A report of a dry run is a contradiction, as clap tells it.
    refused(&["--report", "r.json", "--dry-run"], "cannot be used with");
    // A file of the user's that merely has the name is never replaced.
    let theirs = sandbox.write("notes.json", "{\"mine\": true}\n");
    refused(
        &["--report", theirs.to_str().unwrap()],
        "it exists and is not a report stagehost wrote",
    );
    assert_eq!(read(&theirs), "{\"mine\": true}\n");
    // A URL is not a path.
    refused(
        &["--report", "http://127.0.0.1:9/r.json"],
        "takes a local path, not a URL",
    );
    // The config, stagehost's own state, an archive that holds an output, and where a
    // remote input lands: all files the run reads or writes.
    let cfg_path = cfg.to_str().unwrap();
    refused(&["--report", cfg_path], "the config file of this run");
    let journal = sandbox.join(".stagehost/journal/flow.toml.jsonl");
    refused(
        &["--report", journal.to_str().unwrap()],
        "stagehost's own state",
    );
    let other_flow = sandbox.write(
        "flow2.toml",
        format!(
            "[[task]]\nname = \"z\"\ncommand = \"touch {}\"\ninputs = [\"http://127.0.0.1:9/x/remote.csv\", {{ urls = [\"http://127.0.0.1:9/none/local.dat\", \"file://{d}/local.dat\"] }}, \"{d}/dir/\"]\noutputs = [\"zip:{d}/results.zip/member.txt\"]\n",
            marker.display(),
            d = sandbox.join("data").display()
        ),
    );
    sandbox.write("data/local.dat", "mine\n");
    sandbox.write("data/dir/f0", "mine\n");
    let refused2 = |report: &std::path::Path, why: &str| {
        let out = sandbox.run(&[
            "--config",
            cfg_path,
            "run",
            other_flow.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_eq!(out.code, Some(2), "{report:?}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{report:?}: {}", out.stderr);
        assert!(!marker.exists(), "no task ran");
    };
    refused2(
        &sandbox.join("data/results.zip"),
        "the file that holds an output of task \"z\"",
    );
    refused2(&sandbox.join("data/local.dat"), "an input of task \"z\"");
    refused2(
        &sandbox.join("data/dir/f0"),
        "inside the directory of an input of task \"z\"",
    );
    refused2(
        &sandbox.join("wd/remote.csv"),
        "where an input of task \"z\" (",
    );
    // A spelling through `..` of an output not made yet.
    let _ = std::fs::remove_file(&output);
    std::fs::create_dir_all(sandbox.join("data/sub")).unwrap();
    let dotted = sandbox.join("data/sub/../out.txt");
    refused(
        &["--report", dotted.to_str().unwrap()],
        "an output of task \"s\"",
    );
    std::fs::write(&output, "an earlier output\n").unwrap();
    // A link is never written through (one planted toward a device or a FIFO).
    let planted = sandbox.join("planted.json");
    std::os::unix::fs::symlink("/dev/null", &planted).unwrap();
    refused(
        &["--report", planted.to_str().unwrap()],
        "is a symbolic link",
    );
    // A socket cannot be written.
    let socket = sandbox.join("report.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    refused(&["--report", socket.to_str().unwrap()], "is a socket");
    // A FIFO nobody reads: the run ends with the report's error, not waiting forever.
    let fifo = sandbox.join("unread.fifo");
    mkfifo(&fifo);
    let out = run(&["--report", fifo.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("no process reads that FIFO"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(&marker).unwrap();
    // `/dev/stdout` goes where the shell sent stdout (a file here), and the link in
    // /dev stays a link.
    let redirected = std::fs::File::create(sandbox.join("stdout.txt")).unwrap();
    let out: Run = sandbox
        .command(&stagehost_bin())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "run",
            flow.to_str().unwrap(),
        ])
        .args(["--report", "/dev/stdout"])
        .stdout(redirected)
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(read(sandbox.join("stdout.txt")).contains("\"succeeded\": 1"));
    assert!(std::fs::symlink_metadata("/dev/stdout")
        .unwrap()
        .file_type()
        .is_symlink());
    std::fs::remove_file(&marker).unwrap();
    std::fs::write(&output, "an earlier output\n").unwrap();
    // And a report elsewhere is written as before.
    let report = sandbox.join("report.json");
    let out = run(&["--report", report.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(read(&report).contains("\"succeeded\": 1"));
    assert_eq!(read(&output), "the input\n");
}

#[test]
fn a_page_never_replaces_its_report_or_a_file_it_did_not_write_and_dash_means_stdin_and_stdout() {
    use std::io::Write;
    use std::os::unix::fs::FileTypeExt;
    let sandbox = Sandbox::new();
    let cfg = sandbox.write("local.toml", "[executor.local]\nworking_dir = \"wd\"\n");
    let flow = sandbox.write("flow.toml", "[[task]]\nname = \"t\"\ncommand = \"true\"\n");
    let json = sandbox.join("run.json");
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "run",
        flow.to_str().unwrap(),
        "--report",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report = |args: &[&str]| {
        let mut all = vec!["report"];
        all.extend_from_slice(args);
        sandbox.run(&all)
    };
    let json_path = json.to_str().unwrap();
    // Its own report, under any spelling, and the default page name of a report
    // that already ends in .html.
    let dotted = sandbox.join("./run.json");
    for (args, why) in [
        (
            vec![json_path, "-o", json_path],
            "the report it is drawn from",
        ),
        (
            vec![json_path, "-o", dotted.to_str().unwrap()],
            "the report it is drawn from",
        ),
    ] {
        let out = report(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{args:?}: {}", out.stderr);
    }
    let as_html = sandbox.join("copy.html");
    std::fs::copy(&json, &as_html).unwrap();
    let out = report(&[as_html.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("the page"), "{}", out.stderr);
    // A file of the user's is never replaced, as `run --report` never replaces one.
    let flow_text = read(&flow);
    let out = report(&[json_path, "-o", flow.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("it exists and is not a page stagehost wrote"),
        "{}",
        out.stderr
    );
    assert_eq!(read(&flow), flow_text);
    // A page replaces an earlier page; a FIFO is written into, never replaced.
    let page = sandbox.join("run.html");
    for _ in 0..2 {
        let out = report(&[json_path, "-o", page.to_str().unwrap()]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    assert!(read(&page).starts_with("<!DOCTYPE html>"));
    let fifo = sandbox.join("page.fifo");
    mkfifo(&fifo);
    let reader = read_fifo(&fifo);
    let out = report(&[json_path, "-o", fifo.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(reader.join().unwrap().starts_with("<!DOCTYPE html>"));
    // `-`: the report from stdin, the page to stdout (`run --report - | stagehost report -`).
    let out = report(&[json_path, "-o", "-"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("<!DOCTYPE html>"), "{}", out.stdout);
    let mut child = sandbox
        .command(&stagehost_bin())
        .args(["report", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(read(&json).as_bytes())
        .unwrap();
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("<!DOCTYPE html>"), "{}", out.stdout);
    // A report that is not there is "not found" (exit 3).
    let out = report(&["missing.json"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
}
