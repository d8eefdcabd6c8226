//! The `slurm` executor kind: pilot jobs (blocks) submitted with `sbatch`, each
//! running `stagehost worker` on its nodes, which connects back to this run's
//! [`Dispatcher`]. Blocks start on demand (up to `blocks`), are watched with `squeue`
//! (an ended block's cause read with `scontrol`, else `sacct`), end when idle, and are
//! all `scancel`led when the run ends, fails or is cancelled.
//!
//! Invariant: every block this run submitted is cancelled by [`Blocks::shutdown`]
//! (called at the end of a run, and on drop).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::SlurmConfig;

use super::remote::{Dispatcher, Provisioner};

/// A submitted block.
struct Block {
    job: String,
    submitted: Instant,
}

#[derive(Default)]
struct State {
    active: Vec<Block>,
    submitted: usize,
    stopping: bool,
    /// The last sbatch failure, to fail waiting tasks with.
    failure: Option<String>,
}

/// The blocks of one `slurm` executor.
pub struct Blocks {
    label: String,
    config: SlurmConfig,
    dispatcher: Arc<Dispatcher>,
    run_dir: PathBuf,
    worker: Vec<String>,
    slots_per_block: usize,
    state: Mutex<State>,
    /// Held while deciding on and submitting blocks: one submitter at a time.
    scaling: Mutex<()>,
}

/// How to start the worker on a node: this executable, with these arguments.
pub struct WorkerLaunch {
    pub exe: PathBuf,
    pub config_file: Option<PathBuf>,
    pub secret_file: PathBuf,
    pub slots: usize,
}

impl Blocks {
    /// Block management for executor `label`; its scripts and logs go in `run_dir`.
    pub fn start(
        label: &str,
        config: SlurmConfig,
        dispatcher: Arc<Dispatcher>,
        run_dir: PathBuf,
        launch: WorkerLaunch,
        connect: String,
    ) -> Arc<Blocks> {
        let mut worker = vec![
            launch.exe.display().to_string(),
            "worker".into(),
            "--connect".into(),
            connect,
            "--secret-file".into(),
            launch.secret_file.display().to_string(),
            "--executor".into(),
            label.to_owned(),
            "--slots".into(),
            launch.slots.to_string(),
        ];
        if let Some(cfg) = &launch.config_file {
            worker.splice(1..1, ["--config".to_owned(), cfg.display().to_string()]);
        }
        let slots_per_block = launch.slots * config.nodes_per_block;
        let blocks = Arc::new(Blocks {
            label: label.to_owned(),
            config,
            dispatcher,
            run_dir,
            worker,
            slots_per_block,
            state: Mutex::new(State::default()),
            scaling: Mutex::new(()),
        });
        blocks.dispatcher.set_explain(Arc::new(|job: &str| {
            let state = job_state(job);
            let word = state.split(',').next().unwrap_or("");
            TERMINAL
                .contains(&word)
                .then(|| format!("Slurm job {job} ended ({state})"))
        }));
        let weak = Arc::downgrade(&blocks);
        blocks.dispatcher.set_abandon(Arc::new(move |job: &str| {
            if let Some(blocks) = weak.upgrade() {
                blocks.abandon(job);
            }
        }));
        let watcher = Arc::downgrade(&blocks);
        let _ = std::thread::Builder::new()
            .name(format!("stagehost-{label}-blocks"))
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                let Some(blocks) = watcher.upgrade() else {
                    break;
                };
                if blocks.lock().stopping {
                    break;
                }
                blocks.watch();
                blocks.scale();
            });
        blocks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits blocks while the tasks waiting and running need more slots than the
    /// blocks submitted give, up to `blocks`.
    pub fn scale(&self) {
        let _one_at_a_time = self.scaling.lock().unwrap_or_else(|p| p.into_inner());
        let (pending, busy, _) = self.dispatcher.load();
        let needed = pending + busy;
        loop {
            {
                let state = self.lock();
                let have = state.active.len() * self.slots_per_block;
                if state.stopping
                    || needed <= have
                    || state.active.len() >= self.config.blocks
                    || pending == 0
                {
                    return;
                }
            }
            match self.submit() {
                Ok(job) => {
                    tracing::info!("executor {:?}: submitted block {job}", self.label);
                    let mut state = self.lock();
                    state.active.push(Block {
                        job,
                        submitted: Instant::now(),
                    });
                    state.submitted += 1;
                    state.failure = None;
                }
                Err(e) => {
                    tracing::warn!("executor {:?}: {e}", self.label);
                    self.lock().failure = Some(e.clone());
                    if self.lock().active.is_empty() {
                        self.dispatcher.fail_pending(&e);
                    }
                    return;
                }
            }
        }
    }

    fn script(&self, n: usize) -> String {
        let c = &self.config;
        let mut s = String::from("#!/bin/sh\n");
        let mut opt = |o: String| {
            s.push_str("#SBATCH ");
            s.push_str(&o);
            s.push('\n');
        };
        opt(format!("--job-name=stagehost-{}", self.label));
        opt(format!("--nodes={}", c.nodes_per_block));
        opt(format!("--time={}", c.walltime));
        opt(format!(
            "--output={}",
            self.run_dir.join(format!("block-{n}-%j.out")).display()
        ));
        for (flag, value) in [
            ("partition", &c.partition),
            ("account", &c.account),
            ("qos", &c.qos),
        ] {
            if let Some(v) = value {
                opt(format!("--{flag}={v}"));
            }
        }
        for o in &c.sbatch_options {
            opt(o.clone());
        }
        for line in &c.worker_init {
            s.push_str(line);
            s.push('\n');
        }
        let worker: Vec<String> = self.worker.iter().map(|a| super::shell_quote(a)).collect();
        let launcher = if c.nodes_per_block > 1 {
            "exec srun --ntasks-per-node=1 "
        } else {
            "exec "
        };
        s.push_str(&format!(
            "{launcher}{} --block \"$SLURM_JOB_ID\"\n",
            worker.join(" ")
        ));
        s
    }

    fn submit(&self) -> Result<String, String> {
        let n = self.lock().submitted;
        let path = self.run_dir.join(format!("block-{n}.sh"));
        std::fs::write(&path, self.script(n))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let out = Command::new("sbatch")
            .arg("--parsable")
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run sbatch: {e} (is Slurm's client installed?)"))?;
        if !out.status.success() {
            return Err(format!(
                "sbatch refused block {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let job = text.trim().split(';').next().unwrap_or("").to_owned();
        if job.is_empty() {
            return Err("sbatch printed no job id".into());
        }
        Ok(job)
    }

    /// Notices blocks that ended (and why), and ends blocks idle too long.
    fn watch(&self) {
        let ids: Vec<String> = self.lock().active.iter().map(|b| b.job.clone()).collect();
        if ids.is_empty() {
            self.dispatcher.set_saturated(false);
            return;
        }
        let Some(queued) = squeue(&ids) else { return };
        let mut ended = Vec::new();
        {
            let mut state = self.lock();
            state.active.retain(|b| {
                let alive = queued.iter().any(|(id, st)| {
                    id == &b.job
                        && !matches!(
                            st.as_str(),
                            "COMPLETED"
                                | "CANCELLED"
                                | "FAILED"
                                | "TIMEOUT"
                                | "NODE_FAIL"
                                | "PREEMPTED"
                                | "OUT_OF_MEMORY"
                        )
                });
                // A block just submitted may not be listed yet.
                if !alive && b.submitted.elapsed() > Duration::from_secs(2) {
                    ended.push(b.job.clone());
                    false
                } else {
                    true
                }
            });
        }
        for job in ended {
            let cause = format!("Slurm job {job} ended ({})", job_state(&job));
            tracing::info!("executor {:?}: {cause}", self.label);
            self.dispatcher.block_ended(&job, cause);
        }
        // Saturated: as many blocks as allowed, every one with its workers connected.
        let connected = self.dispatcher.blocks();
        {
            let state = self.lock();
            let all_up = state.active.len() >= self.config.blocks
                && state.active.iter().all(|b| connected.contains_key(&b.job));
            self.dispatcher.set_saturated(all_up);
        }
        // Idle blocks.
        let idle = connected;
        let (pending, _, _) = self.dispatcher.load();
        if pending == 0 {
            let limit = Duration::from_secs_f64(self.config.max_idle_secs);
            for (job, since) in idle {
                let cause = format!(
                    "Slurm job {job} ended: idle for {}s",
                    self.config.max_idle_secs
                );
                if since.is_some_and(|t| t.elapsed() > limit)
                    && self.dispatcher.retire_if_idle(&job, cause)
                {
                    tracing::info!("executor {:?}: block {job} idle, ending it", self.label);
                    self.lock().active.retain(|b| b.job != job);
                    scancel(std::slice::from_ref(&job));
                }
            }
        }
    }

    /// Cancels a block whose worker was lost while Slurm still runs it (a hung node),
    /// so that another block can take its place.
    fn abandon(&self, job: &str) {
        let mut state = self.lock();
        let before = state.active.len();
        state.active.retain(|b| b.job != job);
        if state.active.len() < before {
            drop(state);
            tracing::warn!(
                "executor {:?}: block {job} lost its worker but still runs; cancelling it",
                self.label
            );
            scancel(&[job.to_owned()]);
        }
    }

    /// Cancels every block and waits (a little) until Slurm lists none.
    pub fn shutdown(&self) {
        let ids: Vec<String> = {
            let mut state = self.lock();
            if state.stopping {
                return;
            }
            state.stopping = true;
            state.active.drain(..).map(|b| b.job).collect()
        };
        self.dispatcher.close();
        if ids.is_empty() {
            return;
        }
        scancel(&ids);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match squeue(&ids) {
                Some(q) if !q.is_empty() => std::thread::sleep(Duration::from_millis(200)),
                _ => break,
            }
        }
    }
}

impl Provisioner for Blocks {
    fn scale(&self) {
        Blocks::scale(self);
    }
    fn shutdown(&self) {
        Blocks::shutdown(self);
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The states of a job that has ended.
const TERMINAL: [&str; 9] = [
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
];

/// `(job id, state)` of those of `ids` that Slurm still lists; `None` if squeue
/// failed.
fn squeue(ids: &[String]) -> Option<Vec<(String, String)>> {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%i %T"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (id, st) = l.trim().split_once(' ')?;
                ids.iter()
                    .any(|i| i == id)
                    .then(|| (id.to_owned(), st.trim().to_owned()))
            })
            .collect(),
    )
}

/// How a job ended: `scontrol`'s `JobState` (and a reason other than `None`), else
/// `sacct`'s `State`, else "ended".
fn job_state(job: &str) -> String {
    if let Ok(out) = Command::new("scontrol").args(["show", "job", job]).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_owned)
        };
        if let Some(state) = field("JobState=") {
            return match field("Reason=").filter(|r| r != "None") {
                Some(reason) => format!("{state}, {reason}"),
                None => state,
            };
        }
    }
    if let Ok(out) = Command::new("sacct")
        .args(["-n", "-X", "-P", "-o", "State", "-j", job])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(state) = text.lines().next().filter(|l| !l.trim().is_empty()) {
            return state.trim().to_owned();
        }
    }
    "ended".into()
}

fn scancel(ids: &[String]) {
    let _ = Command::new("scancel").args(ids).output();
}
