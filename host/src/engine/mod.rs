//! The engine: tasks whose inputs and outputs are staged through the data manager,
//! run on tokio, with Parsl's rules.
//!
//! For each task, in order:
//! 1. wait for the inputs that are other tasks' outputs (data futures);
//! 2. plan every stage-in (inputs, in order) and every stage-out (outputs, then stdout,
//!    then stderr) before the body starts, on a blocking thread;
//! 3. run the separate stage-in jobs, each a transfer of its own;
//! 4. take a worker slot of the executor; run the in-task stage-in steps, the body, and
//!    the in-task stage-out steps (all of it again on retry, up to `retries` times);
//! 5. run the separate stage-out jobs; each output's data future resolves once its
//!    stage-out is done.
//!
//! Invariants:
//! - every provider call runs on tokio's blocking pool (see `transfer`);
//! - a failed stage-out fails that output (and marks the task `stage-out-failed`) but
//!   never touches the local output;
//! - cancellation raises the flag every provider sees, kills running commands, and
//!   settles every task and data future as cancelled; transfers are awaited, so no
//!   partial file outlives the run.

mod attempt;
mod blocks;
mod channel;
mod command;
mod dispatcher;
mod error;
mod executor;
mod lifecycle;
mod node;
mod placeholders;
mod pool;
mod processes;
mod protocol;
mod reaper;
mod slurm;
mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use stagehost_plugin_api::File;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use channel::WorkerKey;
pub use error::{BodyError, StepFailure};
pub use node::{serve_worker, WorkerOptions};
pub use placeholders::{
    check as check_command, expand as expand_command, near_misses, shell_quote,
};
pub use protocol::{FEATURES as PROTOCOL_FEATURES, PROTOCOL};
pub use stagehost_core::observer::{Observer, Silent};
pub use stagehost_core::runner::{StageOutcome, StageRunner};
pub use task::{
    Body, DataFuture, FileReport, Input, SkipCheck, TaskFiles, TaskFn, TaskHandle, TaskReport,
    TaskSpec, TaskStatus,
};

use crate::config::TransferConfig;
use crate::data_manager::DataManager;
use crate::registry::Registry;
use crate::services::CancelFlag;
use lifecycle::Outputs;
use pool::WorkerPool;
use stagehost_core::transfer::Transfers;

/// Options for an [`Engine`].
#[derive(Clone)]
pub struct EngineOptions {
    /// Transfer limits, timeout and retries.
    pub transfers: TransferConfig,
    /// Progress observer.
    pub observer: Arc<dyn Observer>,
    /// The config file, for the workers of `slurm` executors to read on the nodes
    /// (`None`: they use the embedded default).
    pub config_file: Option<PathBuf>,
    /// Where each task's report goes as it ends, with the task's number in the order
    /// of submission (counting skipped tasks). `None`: the engine keeps every report
    /// for [`Engine::wait_all`]; with a sink it keeps none (a large run's memory).
    pub report_sink: Option<ReportSink>,
}

/// See [`EngineOptions::report_sink`].
pub type ReportSink = Arc<dyn Fn(usize, &Arc<TaskReport>) + Send + Sync>;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            transfers: TransferConfig::default(),
            observer: Arc::new(Silent),
            config_file: None,
            report_sink: None,
        }
    }
}

struct ExecutorRuntime {
    working_dir: PathBuf,
    workers: WorkerPool,
    /// Where the attempts of its tasks' bodies run.
    executor: Arc<dyn executor::Executor>,
}

struct Inner {
    dm: Arc<DataManager>,
    executors: HashMap<String, ExecutorRuntime>,
    transfers: Transfers,
    observer: Arc<dyn Observer>,
    start: Instant,
    runtime: tokio::runtime::Handle,
    /// The command runners' cancel pipe and the process groups left to stop.
    commands: command::Commands,
    /// See [`Engine::wait_for_room`].
    window: usize,
    report_sink: Option<ReportSink>,
    /// The next task's number in the order of submission.
    submitted: std::sync::atomic::AtomicUsize,
}

/// Where a task's report arrives.
type ReportReceiver = watch::Receiver<Option<Arc<TaskReport>>>;

/// Runs tasks. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    handles: Arc<Mutex<Vec<ReportReceiver>>>,
    /// Tasks submitted and not yet ended: [`Engine::wait_all`] sleeps until none is
    /// left, woken once, not by every task that ends.
    pending: Arc<Pending>,
}

struct PendingTask(Arc<Pending>);

impl Drop for PendingTask {
    fn drop(&mut self) {
        let left = self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            - 1;
        if left == 0 || left == self.0.low.load(std::sync::atomic::Ordering::SeqCst) {
            self.0.none_left.notify_waiters();
        }
    }
}

struct Pending {
    count: std::sync::atomic::AtomicUsize,
    /// The count a waiter of [`Pending::wait_until_at_most`] waits for.
    low: std::sync::atomic::AtomicUsize,
    none_left: tokio::sync::Notify,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            count: Default::default(),
            low: std::sync::atomic::AtomicUsize::new(usize::MAX),
            none_left: Default::default(),
        }
    }
}

impl Pending {
    /// One more task; it counts as ended when the guard goes (its report sent, or
    /// never to be).
    fn add(self: &Arc<Self>) -> PendingTask {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        PendingTask(self.clone())
    }
    /// Waits until at most `low` tasks are left (woken once, when the count reaches
    /// it).
    async fn wait_until_at_most(&self, low: usize) {
        loop {
            let woken = self.none_left.notified();
            self.low.store(low, std::sync::atomic::Ordering::SeqCst);
            if self.count.load(std::sync::atomic::Ordering::SeqCst) <= low {
                return;
            }
            woken.await;
        }
    }

    async fn wait(&self) {
        loop {
            let woken = self.none_left.notified();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            woken.await;
        }
    }
}

/// The engine could not start (its worker threads).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// A task that could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The executor label is not configured.
    #[error("task {task:?}: unknown executor {executor:?} (configured: {known})")]
    UnknownExecutor {
        /// Task name.
        task: String,
        /// The label.
        executor: String,
        /// Configured labels.
        known: String,
    },
    /// The command uses a placeholder the task cannot fill.
    #[error("task {task:?}: {message}")]
    BadCommand {
        /// Task name.
        task: String,
        /// What is wrong.
        message: String,
    },
}

impl Engine {
    /// An engine over the registry's executors. Call from within a tokio runtime.
    /// Fails when an executor's worker threads cannot be started.
    pub fn new(registry: &Registry, options: EngineOptions) -> Result<Engine, EngineError> {
        let dm = Arc::new(DataManager::new(registry));
        let mut executors = HashMap::new();
        for e in &registry.executors {
            let executor: Arc<dyn executor::Executor> = match e.kind {
                crate::config::ExecutorKind::Local => {
                    Arc::new(executor::Local { workers: e.workers })
                }
                crate::config::ExecutorKind::Slurm | crate::config::ExecutorKind::Processes => {
                    Arc::new(executor::Pilot::new(e, &options))
                }
            };
            let rt = ExecutorRuntime {
                working_dir: e.working_dir.clone(),
                workers: WorkerPool::new(&e.label, executor.threads()).map_err(EngineError)?,
                executor,
            };
            executors.insert(e.label.clone(), rt);
        }
        let slots: usize = executors.values().map(|e| e.executor.slots()).sum();
        let window = slots.saturating_mul(2).max(1024);
        let cancel = CancelFlag::new();
        let token = CancellationToken::new();
        let transfers = Transfers::new(
            options.transfers,
            dm.clone(),
            options.observer.clone(),
            cancel,
            token,
        );
        Ok(Engine {
            inner: Arc::new(Inner {
                dm,
                executors,
                transfers,
                observer: options.observer,
                start: Instant::now(),
                runtime: tokio::runtime::Handle::current(),
                commands: command::Commands::new(tokio::runtime::Handle::current())
                    .map_err(|e| EngineError(format!("cannot create a pipe: {e}")))?,
                window,
                report_sink: options.report_sink,
                submitted: Default::default(),
            }),
            handles: Arc::new(Mutex::new(Vec::new())),
            pending: Arc::default(),
        })
    }

    /// The working directory of executor `label`, where its providers put and record
    /// what they stage.
    pub fn working_dir(&self, label: &str) -> Option<&std::path::Path> {
        self.inner
            .executors
            .get(label)
            .map(|e| e.working_dir.as_path())
    }

    /// The data manager the engine stages through.
    pub fn data_manager(&self) -> &Arc<DataManager> {
        &self.inner.dm
    }

    /// Submits a task; it starts at once (waiting for its inputs). Must be called
    /// within a tokio runtime.
    pub fn submit(&self, spec: TaskSpec) -> Result<TaskHandle, SubmitError> {
        if !self.inner.executors.contains_key(&spec.executor) {
            let mut known: Vec<&str> = self.inner.executors.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(SubmitError::UnknownExecutor {
                task: spec.name,
                executor: spec.executor,
                known: known.join(", "),
            });
        }
        if let Body::Command(cmd) = &spec.body {
            check_command(
                cmd,
                spec.inputs.len(),
                spec.outputs.len(),
                spec.stdout.is_some(),
                spec.stderr.is_some(),
            )
            .map_err(|message| SubmitError::BadCommand {
                task: spec.name.clone(),
                message,
            })?;
        }
        let producer: Arc<str> = spec.name.as_str().into();
        let mut senders = Vec::new();
        let mut future_for = |f: &File| {
            let (future, tx) = DataFuture::new(f.clone(), producer.clone());
            senders.push(tx);
            future
        };
        let outputs: Vec<DataFuture> = spec.outputs.iter().map(&mut future_for).collect();
        let stdout = spec.stdout.as_ref().map(&mut future_for);
        let stderr = spec.stderr.as_ref().map(&mut future_for);
        let (report_tx, report_rx) = watch::channel(None);
        if let Body::Command(cmd) = &spec.body {
            self.inner.observer.command_submitted(&spec.name, cmd);
        }
        self.inner.observer.task_submitted(&spec.name);
        let handle = TaskHandle {
            name: spec.name.clone(),
            outputs,
            stdout,
            stderr,
            report: report_rx.clone(),
        };
        let seq = self.record(report_rx);
        let inner = self.inner.clone();
        let outputs = Outputs { senders };
        let pending = self.pending.add();
        let deliver = move |report: TaskReport| {
            let report = Arc::new(report);
            inner.observer.task_finished(&report);
            if let Some(sink) = &inner.report_sink {
                sink(seq, &report);
            }
            let _ = report_tx.send(Some(report));
            drop(pending);
        };
        let inner = self.inner.clone();
        let spec = Arc::new(spec);
        let ready = spec.staged_ins().all(|i| match i {
            Input::Future(f) => f.is_ready(),
            Input::File(_)
            | Input::Directory { .. }
            | Input::Placed { .. }
            | Input::Mirrors { .. } => true,
        });
        if ready {
            // Nothing to wait for: straight to a worker.
            let worker_inner = inner.clone();
            inner.executors[&spec.executor]
                .workers
                .execute(move || Inner::run_on_worker(&worker_inner, spec, outputs, deliver));
        } else {
            tokio::spawn(async move {
                deliver(Inner::run_task(&inner, spec, outputs).await);
            });
        }
        Ok(handle)
    }

    /// Records a task that is not run (`--resume` found its outputs current): its
    /// handle's outputs are ready at once and its report says `skipped`.
    pub fn skip(&self, spec: TaskSpec) -> TaskHandle {
        let producer: Arc<str> = spec.name.as_str().into();
        let future_for = |f: &File| {
            let (future, tx) = DataFuture::new(f.clone(), producer.clone());
            let _ = tx.send(task::FutureState::Ready);
            future
        };
        let outputs: Vec<DataFuture> = spec.outputs.iter().map(future_for).collect();
        let stdout = spec.stdout.as_ref().map(future_for);
        let stderr = spec.stderr.as_ref().map(future_for);
        let mut files = Vec::with_capacity(spec.inputs.len() + outputs.len() + 2);
        for input in spec.staged_ins() {
            files.push(FileReport::new(
                crate::data_manager::Direction::In,
                input.file().redacted_url(),
                &spec.executor,
            ));
        }
        for f in spec.outputs.iter().chain(&spec.stdout).chain(&spec.stderr) {
            files.push(FileReport::new(
                crate::data_manager::Direction::Out,
                f.redacted_url(),
                &spec.executor,
            ));
        }
        let report = Arc::new(TaskReport {
            name: spec.name.clone(),
            executor: spec.executor.clone(),
            status: TaskStatus::Skipped,
            attempts: 0,
            started_at: self.inner.start.elapsed().as_secs_f64(),
            seconds: 0.0,
            error: None,
            files,
            worker: None,
        });
        self.inner.observer.task_submitted(&spec.name);
        self.inner.observer.task_finished(&report);
        let (_, report_rx) = watch::channel(Some(report.clone()));
        let seq = self.record(report_rx.clone());
        if let Some(sink) = &self.inner.report_sink {
            sink(seq, &report);
        }
        TaskHandle {
            name: spec.name,
            outputs,
            stdout,
            stderr,
            report: report_rx,
        }
    }

    /// Numbers a task submitted (or skipped) now; keeps where its report arrives
    /// unless the reports go to a sink.
    fn record(&self, report: ReportReceiver) -> usize {
        let seq = self
            .inner
            .submitted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.inner.report_sink.is_none() {
            self.handles
                .lock()
                .expect("the handles lock is never poisoned")
                .push(report);
        }
        seq
    }

    /// Asks everything to stop: providers see their cancellation flag raised, running
    /// commands are killed, waiting tasks end as cancelled.
    pub fn cancel(&self) {
        self.inner.transfers.cancel.cancel();
        self.inner.transfers.token.cancel();
        self.inner.commands.cancel();
        // Bodies on other nodes: their workers stop and their blocks are cancelled.
        for rt in self.inner.executors.values() {
            rt.executor.cancel();
        }
    }

    /// Kills (SIGKILL) whatever finished commands left running whose grace period is
    /// not over yet. Call at the end of a run: dropping the engine does the same, but
    /// a process may exit before its last worker lets go of the engine.
    pub fn kill_leftovers(&self) {
        self.inner.commands.kill_leftovers();
    }

    /// Ends the executors whose bodies run elsewhere: their workers are told to stop
    /// and every Slurm block this run submitted is cancelled. Call at the end of a run
    /// (dropping the engine does it too).
    pub fn shutdown(&self) {
        for rt in self.inner.executors.values() {
            rt.executor.shutdown();
        }
    }

    /// Waits while more tasks than the engine's window are submitted and not ended
    /// (twice the slots of every executor, at least 1,024), until half of them are:
    /// a caller submitting a large workflow keeps this many tasks' state in memory,
    /// not the whole workflow's, and every slot still has a task waiting for it.
    pub async fn wait_for_room(&self) {
        let window = self.inner.window;
        if self.pending.count.load(std::sync::atomic::Ordering::SeqCst) >= window {
            self.pending.wait_until_at_most(window / 2).await;
        }
    }

    /// Whether [`Engine::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.transfers.token.is_cancelled()
    }

    /// Waits for every task submitted so far; returns their reports in submission order
    /// (none when they go to a [`EngineOptions::report_sink`]).
    pub async fn wait_all(&self) -> Vec<Arc<TaskReport>> {
        let receivers: Vec<_> = self
            .handles
            .lock()
            .expect("the handles lock is never poisoned")
            .clone();
        // One wakeup when the last task ends; then every report is there.
        self.pending.wait().await;
        let mut reports = Vec::with_capacity(receivers.len());
        for mut rx in receivers {
            let r = rx
                .wait_for(Option::is_some)
                .await
                .expect("every task sends its report");
            reports.push(r.clone().expect("wait_for(is_some) returned"));
        }
        reports
    }
}
