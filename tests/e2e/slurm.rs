//! The `slurm` executor against a real Slurm cluster of one node (slurmctld, slurmd
//! and munged from Debian's packages, started per test on loopback ports and stopped
//! by their pids): tasks run inside pilot jobs, in-task steps on the node, separate
//! jobs on the submit side, lost blocks retried elsewhere, and no block left behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use stagehost_tests::slurmd::SlurmCluster;
use stagehost_tests::*;

/// A config with a `cluster` executor of kind slurm (copy-mode files, zip) and more
/// `[executor.cluster.slurm]` settings.
fn config(sandbox: &Sandbox, slurm: &str) -> PathBuf {
    let wd = sandbox.join("wd");
    sandbox.write(
        "stagehost.toml",
        format!(
            "[[provider]]\nname = \"copy\"\nplugin = \"file\"\nsettings = {{ mode = \"copy\" }}\n\n[[provider]]\nname = \"zip\"\nplugin = \"zip\"\n\n[executor.cluster]\nkind = \"slurm\"\nworking_dir = {:?}\nstaging = [\"copy\", \"zip\"]\nworkers = 2\n\n[executor.cluster.slurm]\nwalltime = \"00:10:00\"\nheartbeat_secs = 1\n{slurm}\n",
            wd.display().to_string()
        ),
    )
}

fn run(sandbox: &Sandbox, cluster: &SlurmCluster, cfg: &Path, flow: &str) -> Run {
    let conf = cluster.conf();
    let env = [("SLURM_CONF", conf.to_str().unwrap()), ("RUST_LOG", "warn")];
    sandbox.run_workflow_env(cfg, flow, &env)
}

/// `stagehost run FLOW --report -` started in the background (warnings logged).
fn spawn_run(
    sandbox: &Sandbox,
    cluster: &SlurmCluster,
    cfg: &Path,
    flow: &Path,
) -> std::process::Child {
    sandbox
        .command(&stagehost_bin())
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .arg(flow)
        .args(["--report", "-"])
        .env("SLURM_CONF", cluster.conf())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (up to a minute) for a task to create `marker`.
fn wait_for(marker: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "no task started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The run's block scripts (one per block submitted).
fn block_scripts(sandbox: &Sandbox) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(runs) = std::fs::read_dir(sandbox.join("wd/.stagehost/slurm")) {
        for run in runs.flatten() {
            for f in std::fs::read_dir(run.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with("block-") && name.ends_with(".sh") {
                    found.push(f.path());
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn tasks_run_in_slurm_jobs_with_in_task_staging_on_the_node_and_separate_jobs_here() {
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "blocks = 1");
    sandbox.write("data/in.txt", "hello slurm\n");
    // A zip member: the zip provider stages it in as a separate job, on this side.
    let archive = sandbox.join("data/inputs.zip");
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import zipfile\nwith zipfile.ZipFile({:?}, 'w') as z: z.writestr('member.txt', 'from the archive\\n')",
            archive.display().to_string()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let out = run(
        &sandbox,
        &cluster,
        &cfg,
        &format!(
            "[[task]]\nname = \"first\"\nexecutor = \"cluster\"\ncommand = \"echo job=$SLURM_JOB_ID > {{outputs[1]}}; cat {{inputs[0]}} {{inputs[1]}} > {{outputs[0]}}\"\ninputs = [\"data/in.txt\", \"zip:{}/member.txt\"]\noutputs = [\"out/first.txt\", \"out/job.txt\"]\n\n[[task]]\nname = \"second\"\nexecutor = \"cluster\"\ncommand = \"tr a-z A-Z < {{inputs[0]}} > {{outputs[0]}}\"\ninputs = [{{ task = \"first\", output = 0 }}]\noutputs = [\"out/second.txt\"]\n",
            archive.display()
        ),
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    // The body ran in a Slurm job; its outputs were staged out (copied) from the node.
    let job = std::fs::read_to_string(sandbox.join("out/job.txt")).unwrap();
    let id = job.trim().strip_prefix("job=").unwrap();
    assert!(id.parse::<u64>().is_ok(), "{job}");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("out/second.txt")).unwrap(),
        "HELLO SLURM\nFROM THE ARCHIVE\n"
    );
    let report = out.json();
    let files = report["tasks"][0]["files"].as_array().unwrap();
    // The copy-mode input ran as an in-task step (on the node), the zip member as a
    // separate job (here); both landed in the working directory.
    assert_eq!(files[0]["modes"][0], "in-task-step");
    assert_eq!(files[0]["attempts"], 1);
    assert_eq!(files[1]["modes"][0], "separate-job");
    assert_eq!(files[2]["modes"][0], "in-task-step");
    assert!(sandbox.join("wd/in.txt").exists());
    assert!(sandbox.join("wd/member.txt").exists());
    // One block served both tasks, and no block is left.
    assert_eq!(block_scripts(&sandbox).len(), 1);
    assert_eq!(cluster.jobs(), Vec::<String>::new());
    // The run's secret went with the run (its mode while it lasts: engine.rs).
    let secret = block_scripts(&sandbox)[0].with_file_name("secret");
    assert!(!secret.exists(), "the secret outlived the run");
}

#[test]
fn a_block_cancelled_mid_task_is_retried_on_another_block_and_a_wrong_secret_is_refused() {
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "blocks = 1");
    let attempts = sandbox.join("work/attempts.txt");
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"slow\"\nexecutor = \"cluster\"\nretries = 1\ncommand = \"echo $SLURM_JOB_ID >> {}; sleep 3; echo done > {{outputs[0]}}\"\noutputs = [\"out/slow.txt\"]\n",
            attempts.display()
        ),
    );
    let child = spawn_run(&sandbox, &cluster, &cfg, &flow);
    // Once the task has started in the first block: a worker with the wrong secret
    // tries the run's address, then the block is cancelled.
    wait_for(&attempts);
    let first_job = std::fs::read_to_string(&attempts)
        .unwrap()
        .trim()
        .to_owned();
    let script = std::fs::read_to_string(&block_scripts(&sandbox)[0]).unwrap();
    let connect = script
        .split_whitespace()
        .skip_while(|w| *w != "--connect")
        .nth(1)
        .unwrap()
        .trim_matches('\'')
        .to_owned();
    // The run's certificate (so TLS succeeds), with a wrong secret.
    let real =
        std::fs::read_to_string(block_scripts(&sandbox)[0].with_file_name("secret")).unwrap();
    let fingerprint = real.lines().nth(1).unwrap().to_owned();
    let wrong = sandbox.write(
        "wrong-secret",
        format!("{}\n{fingerprint}\n", "00".repeat(32)),
    );
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let intruder = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "worker",
        "--connect",
        &connect,
        "--secret-file",
        wrong.to_str().unwrap(),
        "--executor",
        "cluster",
    ]);
    assert_eq!(intruder.code, Some(1), "{}", intruder.stderr);
    assert!(
        intruder.stderr.contains("the run did not prove the secret"),
        "{}",
        intruder.stderr
    );
    let cancelled = cluster.client("scancel").arg(&first_job).status().unwrap();
    assert!(cancelled.success());
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("refused a worker"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("Slurm job {first_job} ended (CANCELLED")),
        "{}",
        out.stderr
    );
    let jobs: Vec<String> = std::fs::read_to_string(&attempts)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_ne!(jobs[0], jobs[1], "the retry ran in another block");
    assert_eq!(out.json()["tasks"][0]["attempts"], 2);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("out/slow.txt")).unwrap(),
        "done\n"
    );
    assert_eq!(block_scripts(&sandbox).len(), 2);
    assert_eq!(cluster.jobs(), Vec::<String>::new());
}

#[test]
fn ctrl_c_on_the_run_leaves_no_block_in_the_queue() {
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "blocks = 2");
    let started = sandbox.join("work/started");
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"long-a\"\nexecutor = \"cluster\"\ncommand = \"touch {}; sleep 60\"\n\n[[task]]\nname = \"long-b\"\nexecutor = \"cluster\"\ncommand = \"sleep 60\"\n\n[[task]]\nname = \"long-c\"\nexecutor = \"cluster\"\ncommand = \"sleep 60\"\n",
            started.display()
        ),
    );
    let child = spawn_run(&sandbox, &cluster, &cfg, &flow);
    wait_for(&started);
    assert!(!cluster.jobs().is_empty());
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(130), "{}", out.stderr);
    assert!(
        out.stderr.contains("interrupted: cancelling"),
        "{}",
        out.stderr
    );
    assert_eq!(cluster.jobs(), Vec::<String>::new());
}

#[test]
fn a_walltime_shorter_than_the_task_fails_it_with_the_cause_named() {
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    // Five seconds; Slurm enforces limits on its own timer (within half a minute).
    let cfg = config(&sandbox, "blocks = 1\nwalltime = \"0:05\"");
    let cfg_text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("walltime = \"00:10:00\"\n", "");
    std::fs::write(&cfg, cfg_text).unwrap();
    let out = run(
        &sandbox,
        &cluster,
        &cfg,
        "[[task]]\nname = \"too-long\"\nexecutor = \"cluster\"\ncommand = \"sleep 300\"\n",
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let error = out.json()["tasks"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("worker lost: Slurm job") && error.contains("ended (TIMEOUT"),
        "{error}"
    );
    assert_eq!(cluster.jobs(), Vec::<String>::new());
}

#[test]
fn the_dry_run_shows_what_runs_on_the_submit_side_and_what_on_the_node() {
    // No cluster: a dry run submits nothing.
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "blocks = 1");
    sandbox.write("data/in.txt", "x\n");
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"t\"\nexecutor = \"cluster\"\ncommand = \"cat {inputs[0]} {inputs[1]} > {outputs[0]}\"\ninputs = [\"data/in.txt\", \"zip:data/a.zip/m.txt\"]\noutputs = [\"out/t.txt\"]\n",
    );
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "run",
        "--dry-run",
        flow.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("task t (executor cluster, slurm: the body runs in a worker of its blocks):"),
        "{}",
        out.stdout
    );
    let line = |needle: &str| {
        out.stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {}", out.stdout))
            .to_owned()
    };
    assert!(line("data/in.txt").ends_with("[provider copy, in-task step on the node]"));
    assert!(line("m.txt").ends_with("[provider zip, separate job on the submit side]"));
    assert!(line("out/t.txt").ends_with("[provider copy, in-task step on the node]"));
}

#[test]
fn a_task_consumes_outputs_of_tasks_that_ran_on_different_blocks() {
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    // One slot per block and two tasks at once: two blocks.
    let cfg = config(&sandbox, "blocks = 2");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("workers = 2", "workers = 1");
    std::fs::write(&cfg, text).unwrap();
    let out = run(
        &sandbox,
        &cluster,
        &cfg,
        "[[task]]\nname = \"left\"\nexecutor = \"cluster\"\ncommand = \"sleep 1; echo $SLURM_JOB_ID > {outputs[0]}\"\noutputs = [\"out/left.txt\"]\n\n[[task]]\nname = \"right\"\nexecutor = \"cluster\"\ncommand = \"sleep 1; echo $SLURM_JOB_ID > {outputs[0]}\"\noutputs = [\"out/right.txt\"]\n\n[[task]]\nname = \"join\"\nexecutor = \"cluster\"\ncommand = \"cat {inputs[0]} {inputs[1]} > {outputs[0]}\"\ninputs = [{ task = \"left\", output = 0 }, { task = \"right\", output = 0 }]\noutputs = [\"out/join.txt\"]\n",
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let joined = std::fs::read_to_string(sandbox.join("out/join.txt")).unwrap();
    let jobs: Vec<&str> = joined.lines().collect();
    assert_eq!(jobs.len(), 2, "{joined}");
    assert_ne!(jobs[0], jobs[1], "left and right ran on different blocks");
    assert_eq!(block_scripts(&sandbox).len(), 2);
    assert_eq!(cluster.jobs(), Vec::<String>::new());
}

#[test]
fn many_tasks_at_once_get_no_more_blocks_than_allowed() {
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "blocks = 2");
    let flow: String = (0..60)
        .map(|n| {
            format!("[[task]]\nname = \"t{n}\"\nexecutor = \"cluster\"\ncommand = \"echo {n} > {{outputs[0]}}\"\noutputs = [\"out/t{n}.txt\"]\n\n")
        })
        .collect();
    let out = run(&sandbox, &cluster, &cfg, &flow);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json()["summary"]["succeeded"], 60);
    // Submitted concurrently by many tasks, yet each block script is whole and there
    // are at most `blocks` of them.
    let scripts = block_scripts(&sandbox);
    assert!((1..=2).contains(&scripts.len()), "{scripts:?}");
    for s in &scripts {
        assert!(std::fs::read_to_string(s).unwrap().contains(" worker "));
    }
    for n in [0, 59] {
        assert_eq!(
            std::fs::read_to_string(sandbox.join(format!("out/t{n}.txt"))).unwrap(),
            format!("{n}\n")
        );
    }
    assert_eq!(cluster.jobs(), Vec::<String>::new());
}

#[test]
fn an_idle_block_is_ended_and_a_new_one_comes_when_work_does() {
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "blocks = 1\nmax_idle_secs = 1");
    // A local executor too: the middle task runs here while the block has nothing.
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &format!(
            "\n[executor.here]\nworking_dir = {:?}\n",
            sandbox.join("wd-here").display().to_string()
        );
    std::fs::write(&cfg, text).unwrap();
    let out = run(
        &sandbox,
        &cluster,
        &cfg,
        "[[task]]\nname = \"first\"\nexecutor = \"cluster\"\ncommand = \"echo $SLURM_JOB_ID > {outputs[0]}\"\noutputs = [\"out/first.txt\"]\n\n[[task]]\nname = \"pause\"\nexecutor = \"here\"\ncommand = \"sleep 4; cp {inputs[0]} {outputs[0]}\"\ninputs = [{ task = \"first\", output = 0 }]\noutputs = [\"out/pause.txt\"]\n\n[[task]]\nname = \"last\"\nexecutor = \"cluster\"\ncommand = \"echo $SLURM_JOB_ID > {outputs[0]}\"\ninputs = [{ task = \"pause\", output = 0 }]\noutputs = [\"out/last.txt\"]\n",
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let first = std::fs::read_to_string(sandbox.join("out/first.txt")).unwrap();
    let last = std::fs::read_to_string(sandbox.join("out/last.txt")).unwrap();
    assert_ne!(
        first, last,
        "the idle block was ended; a new one ran the last task"
    );
    assert_eq!(block_scripts(&sandbox).len(), 2);
    assert_eq!(cluster.jobs(), Vec::<String>::new());
}

/// The pid of the `stagehost worker` process serving `sandbox`'s run.
fn worker_pid(sandbox: &Sandbox) -> i32 {
    let script = std::fs::read_to_string(&block_scripts(sandbox)[0]).unwrap();
    let secret = script
        .split_whitespace()
        .skip_while(|w| *w != "--secret-file")
        .nth(1)
        .unwrap()
        .trim_matches('\'')
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(" worker ") && cmdline.contains(&secret) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no worker process found");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_silent_worker_is_lost_after_three_heartbeats_and_its_task_retried() {
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "blocks = 1");
    let attempts = sandbox.join("attempts.txt");
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"t\"\nexecutor = \"cluster\"\nretries = 1\ncommand = \"echo $SLURM_JOB_ID >> {}; sleep 2\"\n",
            attempts.display()
        ),
    );
    let child = spawn_run(&sandbox, &cluster, &cfg, &flow);
    wait_for(&attempts);
    // The worker stops answering (its block still runs): the run hears nothing.
    let pid = worker_pid(&sandbox);
    // SAFETY: signalling a process of this test's run.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let out: Run = child.wait_with_output().unwrap().into();
    // SAFETY: as above; it is cancelled with its block anyway.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("no heartbeat for 3s"), "{}", out.stderr);
    assert_eq!(out.json()["tasks"][0]["attempts"], 2);
    let jobs = std::fs::read_to_string(&attempts).unwrap();
    assert_eq!(jobs.lines().count(), 2, "{jobs}");
    assert_eq!(cluster.jobs(), Vec::<String>::new());
}

#[test]
fn a_worker_that_loses_its_run_exits_and_its_block_ends() {
    let cluster = SlurmCluster::start();
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "blocks = 1");
    let started = sandbox.join("started");
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"t\"\nexecutor = \"cluster\"\ncommand = \"touch {}; sleep 60\"\n",
            started.display()
        ),
    );
    let mut child = spawn_run(&sandbox, &cluster, &cfg, &flow);
    wait_for(&started);
    // The run dies without a word: no scancel from it.
    child.kill().unwrap();
    child.wait().unwrap();
    // The worker notices, stops its task and exits; its block ends with it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.jobs().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the block outlived its run: {:?}",
            cluster.jobs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
