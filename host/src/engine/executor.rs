//! Executors: where the attempts of a task's body run.
//!
//! The task lifecycle (`engine/lifecycle.rs`) plans every file, runs the separate jobs, then
//! asks the task's [`Executor`] about each attempt of the body: `local` runs it here,
//! on the executor's worker threads; a pilot executor ([`Pilot`]) sends it to a worker
//! of its blocks and awaits the result, holding no thread while it runs. A pilot
//! starts its run directory, its listener and its blocks on its first attempt, so an
//! executor a run never uses costs nothing.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::blocks::{Blocks, Scheduler};
use super::dispatcher::{self, Receipt};
use super::protocol::NodeTask;
use super::{channel, processes, slurm, EngineError, EngineOptions};
use crate::config::ExecutorKind;
use crate::registry::ExecutorRecord;

/// Where a task's attempts run.
pub(crate) trait Executor: Send + Sync {
    /// How many threads the executor's pool needs: planning, and the bodies that run
    /// in this process.
    fn threads(&self) -> usize;
    /// How many bodies may run at once, here or on the nodes, at most.
    fn slots(&self) -> usize;
    /// Whether attempts run here, on the pool; otherwise they go through [`send`].
    ///
    /// [`send`]: Executor::send
    fn runs_here(&self) -> bool;
    /// Sends one attempt elsewhere; the receipt resolves with its result.
    fn send(&self, task: NodeTask) -> Result<Receipt, String>;
    /// Stops what the executor started (its blocks), without waiting for it.
    fn cancel(&self);
    /// Ends what the executor started, waiting for it.
    fn shutdown(&self);
}

/// Runs bodies in this process, `workers` at a time.
pub(crate) struct Local {
    pub workers: usize,
}

impl Executor for Local {
    fn threads(&self) -> usize {
        self.workers
    }
    fn slots(&self) -> usize {
        self.workers
    }
    fn runs_here(&self) -> bool {
        true
    }
    fn send(&self, _task: NodeTask) -> Result<Receipt, String> {
        Err("a local executor runs its tasks here".into())
    }
    fn cancel(&self) {}
    fn shutdown(&self) {}
}

/// The submit side of a pilot executor, once started: the dispatcher its workers
/// connect to, and what starts their blocks.
struct Started {
    dispatcher: Arc<dispatcher::Dispatcher>,
    blocks: Arc<dyn dispatcher::Provisioner>,
    /// The file that gives workers the run's secret: removed once the blocks are
    /// gone (the scripts and logs beside it stay, for a look after the run).
    secret_file: PathBuf,
}

/// An executor whose bodies run on workers in blocks a scheduler starts (`slurm`,
/// `processes`).
pub(crate) struct Pilot {
    record: ExecutorRecord,
    config_file: Option<PathBuf>,
    started: OnceLock<Result<Started, String>>,
    /// Set once the run is ending: no block starts after it.
    closed: std::sync::atomic::AtomicBool,
}

impl Pilot {
    pub fn new(record: &ExecutorRecord, options: &EngineOptions) -> Pilot {
        Pilot {
            record: record.clone(),
            config_file: options.config_file.clone(),
            started: OnceLock::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The started side, starting it on first use.
    fn started(&self) -> Result<&Started, String> {
        self.started
            .get_or_init(|| {
                if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err("the run is ending".into());
                }
                start(&self.record, self.config_file.clone()).map_err(|e| e.0)
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Executor for Pilot {
    fn threads(&self) -> usize {
        // Planning only: the bodies run on the nodes.
        2
    }
    fn slots(&self) -> usize {
        // Each node's worker takes up to `prefetch` tasks beyond its busy slots.
        self.record.pilot.as_ref().map_or(self.record.workers, |p| {
            p.blocks
                .saturating_mul(p.nodes_per_block)
                .saturating_mul(self.record.workers.saturating_add(p.prefetch))
        })
    }
    fn runs_here(&self) -> bool {
        false
    }
    fn send(&self, task: NodeTask) -> Result<Receipt, String> {
        let started = self.started()?;
        started.blocks.scale();
        started.dispatcher.submit(task)
    }
    fn cancel(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(Ok(started)) = self.started.get() {
            // On a thread of its own: cancelling blocks waits for the scheduler.
            let blocks = started.blocks.clone();
            let _ = std::thread::Builder::new()
                .name("stagehost-cancel-blocks".into())
                .spawn(move || blocks.shutdown());
        }
    }
    fn shutdown(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(Ok(started)) = self.started.get() {
            started.blocks.shutdown();
            let _ = std::fs::remove_file(&started.secret_file);
        }
    }
}

/// Starts a pilot executor's submit side: its run directory (scripts, logs, the
/// secret only the user can read), the listener its workers connect to, and its
/// blocks, started by the scheduler of its kind.
fn start(e: &ExecutorRecord, config_file: Option<PathBuf>) -> Result<Started, EngineError> {
    use std::os::unix::fs::OpenOptionsExt;
    let policy = e.pilot.clone().unwrap_or_else(|| {
        crate::config::ExecutorConfig {
            kind: e.kind,
            ..Default::default()
        }
        .pilot()
        .expect("a pilot kind")
    });
    let fail = |what: &str, err: std::io::Error| {
        EngineError(format!("executor {:?}: {what}: {err}", e.label))
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let run_dir = e
        .working_dir
        .join(".stagehost")
        .join(e.kind.as_str())
        .join(format!("{}-{}-{stamp}", e.label, std::process::id()));
    // Every directory from the working directory down is a real, private one: a link
    // planted at `.stagehost` never sends the secret or the scripts elsewhere.
    stagehost_plugin_api::landing::ensure_private_dirs(&e.working_dir, &run_dir.join("secret"))
        .map_err(|err| EngineError(format!("executor {:?}: {}", e.label, err.message())))?;
    // The run's secret and the fingerprint of its TLS certificate: what a worker needs
    // to tell its run from anyone else on that port.
    let key = channel::RunKey::generate().map_err(|err| fail("cannot make the run's key", err))?;
    let secret_file = run_dir.join("secret");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&secret_file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, key.file_text().as_bytes()))
        .map_err(|err| fail(&format!("cannot write {}", secret_file.display()), err))?;
    let dispatcher = dispatcher::Dispatcher::start(
        &e.label,
        &policy.address,
        key,
        std::time::Duration::from_secs_f64(policy.heartbeat_secs),
        policy.prefetch,
    )
    .map_err(|err| fail(&format!("cannot listen on {}", policy.address), err))?;
    let connect = format!("{}:{}", policy.address, dispatcher.address().port());
    let exe = std::env::current_exe().map_err(|err| fail("cannot find this executable", err))?;
    // What each node of a block runs (the scheduler adds `--block <id>`).
    let mut worker = vec![exe.display().to_string()];
    if let Some(cfg) = &config_file {
        worker.extend(["--config".to_owned(), cfg.display().to_string()]);
    }
    worker.extend([
        "worker".to_owned(),
        "--connect".into(),
        connect,
        "--secret-file".into(),
        secret_file.display().to_string(),
        "--executor".into(),
        e.label.clone(),
        "--slots".into(),
        e.workers.to_string(),
    ]);
    let scheduler: Arc<dyn Scheduler> = match e.kind {
        ExecutorKind::Slurm => Arc::new(slurm::Slurm::new(
            &e.label,
            e.slurm.clone().unwrap_or_default(),
            run_dir,
        )),
        ExecutorKind::Processes => Arc::new(processes::Processes::new(run_dir)),
        // A pilot kind without a scheduler arm here does not compile; `local` never
        // gets this far.
        ExecutorKind::Local => {
            return Err(EngineError(format!(
                "executor {:?}: a local executor has no blocks",
                e.label
            )))
        }
    };
    let blocks = Blocks::start(
        &e.label,
        policy,
        scheduler,
        dispatcher.clone(),
        worker,
        e.workers,
    );
    Ok(Started {
        dispatcher,
        blocks,
        secret_file,
    })
}
