//! The `slurm` scheduler: blocks are batch jobs submitted with `sbatch`, each running
//! `stagehost worker` on its nodes (through `srun` when a block has several), listed
//! with `squeue`, explained with `scontrol` (else `sacct`) and ended with `scancel`.
//! The block policy is `blocks.rs`'s.

use std::path::PathBuf;
use std::process::Command;

use crate::config::SlurmConfig;

use super::blocks::Scheduler;

/// Slurm, for one executor: its `[executor.X.slurm]` table, and where its scripts and
/// logs go.
pub struct Slurm {
    label: String,
    config: SlurmConfig,
    run_dir: PathBuf,
}

impl Slurm {
    pub fn new(label: &str, config: SlurmConfig, run_dir: PathBuf) -> Slurm {
        Slurm {
            label: label.to_owned(),
            config,
            run_dir,
        }
    }

    fn script(&self, n: usize, worker: &[String]) -> String {
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
        let worker: Vec<String> = worker.iter().map(|a| super::shell_quote(a)).collect();
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
}

impl Scheduler for Slurm {
    fn noun(&self) -> &'static str {
        "Slurm job"
    }

    fn submit(&self, n: usize, worker: &[String]) -> Result<String, String> {
        let path = self.run_dir.join(format!("block-{n}.sh"));
        super::blocks::new_file(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, self.script(n, worker).as_bytes()))
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

    fn alive(&self, ids: &[String]) -> Option<Vec<String>> {
        let listed = squeue(ids)?;
        Some(
            listed
                .into_iter()
                .filter(|(_, state)| !TERMINAL.contains(&state.as_str()))
                .map(|(id, _)| id)
                .collect(),
        )
    }

    fn ended(&self, id: &str) -> Option<String> {
        let state = job_state(id);
        let word = state.split(',').next().unwrap_or("");
        TERMINAL.contains(&word).then_some(state)
    }

    fn cancel(&self, ids: &[String]) {
        let _ = Command::new("scancel").args(ids).output();
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
