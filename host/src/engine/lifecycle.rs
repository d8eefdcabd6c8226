//! A task's lifecycle, from its inputs to its report: the steps listed in
//! `engine/mod.rs`, on the executor's worker threads and on tokio. The attempt itself
//! is `attempt.rs`'s; where it runs is the task's [`Executor`]'s choice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use stagehost_plugin_api::{display, File};
use tokio::sync::watch;

use super::error::{BodyError, StepFailure};
use super::executor::Executor;
use super::task::FutureState;
use super::{
    attempt, command, expand_command, pool, protocol, Body, FileReport, Inner, Input, TaskFiles,
    TaskReport, TaskSpec, TaskStatus,
};
use crate::data_manager::{Direction, StageOptions, Staging, StagingError};
use stagehost_core::transfer::Outcome;

/// A body's result: its error, typed, if the last attempt failed.
type BodyResult = Result<(), BodyError>;

/// The (device, inode) of files: what a directory output held before the body.
type FileIds = std::collections::HashSet<(u64, u64)>;

/// One file's staging inside a task: the caller's file, the plan, and what happened.
struct FileState {
    original: File,
    staging: Option<Staging>,
    report: FileReport,
    /// A directory's own entry: nothing staged; the task sees this path.
    local: Option<PathBuf>,
    /// The destination the host chose for it (a file of a directory), kept for a
    /// re-plan.
    destination: Option<PathBuf>,
    /// A file with mirrors: its sources, tried in order before the body (`local` is
    /// set once one staged).
    mirrors: Vec<File>,
    /// A directory output: the files (device, inode) it held once prepared for the
    /// body; a file there that is none of them, with one link, is the task's.
    prepared: Option<FileIds>,
}

impl FileState {
    fn planned(
        original: File,
        direction: Direction,
        executor: &str,
        planned: Result<Staging, StagingError>,
    ) -> FileState {
        let mut report = FileReport::new(direction, original.redacted_url(), executor);
        let staging = match planned {
            Ok(s) => {
                report.provider = Some(s.provider.name.clone());
                report.plugin = Some(format!(
                    "{} {}",
                    s.provider.plugin.name, s.provider.plugin.version
                ));
                report.modes = s.modes();
                report.local_path = s.file.filepath().ok().map(|p| p.display().to_string());
                Some(s)
            }
            Err(e) => {
                report.fail(&e);
                None
            }
        };
        FileState {
            original,
            staging,
            report,
            local: None,
            destination: None,
            mirrors: Vec::new(),
            prepared: None,
        }
    }

    /// A directory's own entry: `path` when it was listed (an input) or where the task
    /// writes its files (an output), else its failure.
    fn directory(
        original: File,
        direction: Direction,
        executor: &str,
        path: &Result<PathBuf, stagehost_core::inspect::InspectError>,
    ) -> FileState {
        let mut report = FileReport::new(direction, original.redacted_url(), executor);
        let local = match path {
            Ok(path) => {
                report.local_path = Some(path.display().to_string());
                Some(path.clone())
            }
            Err(e) => {
                report.ok = false;
                report.error = Some(e.to_string());
                report.error_class = Some(e.class());
                None
            }
        };
        FileState {
            original,
            staging: None,
            report,
            local,
            destination: None,
            mirrors: Vec::new(),
            prepared: None,
        }
    }

    fn record(&mut self, outcome: Outcome) -> Result<(), StagingError> {
        self.report.attempts += outcome.attempts;
        self.report.seconds += outcome.seconds;
        self.report.deduplicated |= outcome.deduplicated;
        self.report.cached |= outcome.cached;
        if outcome.bytes.is_some() {
            self.report.bytes = outcome.bytes;
        }
        outcome.result.inspect_err(|e| self.report.fail(e))
    }

    /// Records a whole staging that ran (`runner::run_planned`): what it moved and how
    /// it ended; the plan stays with the file. The error line when it failed.
    fn record_staged(
        &mut self,
        outcome: stagehost_core::runner::StageOutcome,
        seconds: f64,
    ) -> Result<(), String> {
        let s = &outcome.staging;
        self.report.provider = Some(s.provider.name.clone());
        self.report.plugin = Some(format!(
            "{} {}",
            s.provider.plugin.name, s.provider.plugin.version
        ));
        self.report.modes = outcome.modes;
        self.report.attempts += outcome.attempts;
        self.report.seconds += seconds;
        self.report.cached |= outcome.cached;
        if outcome.bytes.is_some() {
            self.report.bytes = outcome.bytes;
        }
        self.staging = Some(outcome.staging);
        outcome.result.map_err(|e| {
            self.report.fail(&e);
            e.to_string()
        })
    }

    /// Where the task finds the file, as an absolute path: the command runs in the
    /// working directory, so a path relative to ours would name another file there.
    fn path(&self) -> PathBuf {
        if let Some(local) = &self.local {
            return local.clone();
        }
        let file = self.staging.as_ref().map_or(&self.original, |s| &s.file);
        let path = file
            .filepath()
            .unwrap_or_else(|_| PathBuf::from(file.path()));
        std::path::absolute(&path).unwrap_or(path)
    }
}

/// The senders of a task's output futures.
pub(super) struct Outputs {
    pub(super) senders: Vec<watch::Sender<FutureState>>,
}

impl Outputs {
    fn fail_all(&self, reason: &str) {
        for tx in &self.senders {
            let _ = tx.send(FutureState::Failed(reason.into()));
        }
    }
}

/// How the first worker phase of a task ended.
enum FirstPhase {
    /// Planning failed for a file.
    PlanningFailed(Vec<FileState>, String),
    /// Separate stage-in jobs must run before the body.
    NeedsJobs(Vec<FileState>),
    /// The body ran (with its in-task steps): its result, attempts and where it ran.
    Ran(Vec<FileState>, BodyResult, u32, Option<String>),
}

impl Inner {
    fn report(
        &self,
        spec: &TaskSpec,
        start: Instant,
        status: TaskStatus,
        attempts: u32,
        error: Option<String>,
        mut files: Vec<FileReport>,
    ) -> TaskReport {
        for f in &mut files {
            f.ok = f.error.is_none();
        }
        TaskReport {
            name: spec.name.clone(),
            executor: spec.executor.clone(),
            status,
            attempts,
            started_at: start.duration_since(self.start).as_secs_f64(),
            seconds: start.elapsed().as_secs_f64(),
            error,
            files,
            worker: None,
        }
    }

    fn status_after_failure(&self) -> TaskStatus {
        if self.transfers.token.is_cancelled() {
            TaskStatus::Cancelled
        } else {
            TaskStatus::Failed
        }
    }

    /// Fails every output of the task and builds its report.
    #[allow(clippy::too_many_arguments)]
    fn end(
        &self,
        spec: &TaskSpec,
        outputs: &Outputs,
        start: Instant,
        status: TaskStatus,
        attempts: u32,
        error: String,
        files: Vec<FileReport>,
    ) -> TaskReport {
        outputs.fail_all(&format!(
            "task {:?} {}: {error}",
            spec.name,
            status_word(status)
        ));
        self.report(spec, start, status, attempts, Some(error), files)
    }

    /// A task that was cancelled before its body ran.
    fn end_cancelled(&self, spec: &TaskSpec, outputs: &Outputs, start: Instant) -> TaskReport {
        let error = "cancelled".to_owned();
        self.end(
            spec,
            outputs,
            start,
            TaskStatus::Cancelled,
            0,
            error,
            vec![],
        )
    }

    /// The report of a task skipped because its check passed on its staged inputs
    /// (its outputs ready for its consumers); `None` when it runs (no check, an input
    /// whose stage-in is an in-task step not run yet, or the check says why).
    fn skip_if_current(
        &self,
        spec: &TaskSpec,
        outputs: &Outputs,
        start: Instant,
        files: &[FileState],
    ) -> Option<TaskReport> {
        let check = spec.skip_if.as_ref()?;
        let n_in = spec.inputs.len() + spec.args.len();
        let staged = files[..n_in]
            .iter()
            .all(|f| f.staging.as_ref().is_none_or(|s| s.in_task_step.is_none()));
        if !staged {
            tracing::info!(
                "task {:?} runs: an input is staged in with the task, so it cannot be checked first",
                spec.name
            );
            return None;
        }
        let ins: Vec<FileReport> = files[..n_in].iter().map(|f| f.report.clone()).collect();
        if let Err(why) = (check.0)(&ins) {
            tracing::info!("task {:?} runs: {why}", spec.name);
            return None;
        }
        for tx in &outputs.senders {
            let _ = tx.send(FutureState::Ready);
        }
        let reports = files.iter().map(|f| f.report.clone()).collect();
        Some(self.report(spec, start, TaskStatus::Skipped, 0, None, reports))
    }

    /// The whole task on tokio: waits for its inputs from other tasks, then runs.
    pub(super) async fn run_task(
        this: &Arc<Inner>,
        spec: Arc<TaskSpec>,
        outputs: Outputs,
    ) -> TaskReport {
        let token = this.transfers.token.clone();
        // 1. Dependencies.
        for input in spec.staged_ins() {
            if let Input::Future(future) = input {
                let waited = tokio::select! {
                    r = future.wait() => r,
                    () = token.cancelled() => {
                        return this.end_cancelled(&spec, &outputs, Instant::now());
                    }
                };
                if let Err(reason) = waited {
                    let error = format!(
                        "input {} from task {:?} was not made: {reason}",
                        future.file().redacted_url(),
                        future.producer()
                    );
                    // What this task's consumers are told is the first failure up the
                    // chain, as it was told here: each task's line names it once, not
                    // nested once per task between.
                    outputs.fail_all(&reason);
                    return this.report(
                        &spec,
                        Instant::now(),
                        TaskStatus::DependencyFailed,
                        0,
                        Some(error),
                        vec![],
                    );
                }
            }
        }
        // The task starts once its inputs exist.
        let start = Instant::now();
        if token.is_cancelled() {
            return this.end_cancelled(&spec, &outputs, start);
        }
        // 2. On a worker: plan every file before the body starts; with no separate
        //    stage-in job, go straight on to the in-task steps and the body.
        let pool = &this.executors[&spec.executor].workers;
        let (inner, task) = (this.clone(), spec.clone());
        let first = pool.run(move || inner.plan_and_maybe_run(&task)).await;
        // Boxed: a task still waiting for its inputs holds only the small state above,
        // not this one (a chained workflow has most of its tasks waiting).
        Box::pin(Inner::after_first_phase(this, spec, outputs, start, first)).await
    }

    /// A task whose inputs are all files or outputs already staged out, run from a
    /// worker: planning and the body
    /// here, and, when no separate job is left to run, the whole task, without a hop
    /// through tokio. Otherwise what is left continues on tokio. Calls `deliver` with
    /// the report either way.
    pub(super) fn run_on_worker(
        this: &Arc<Inner>,
        spec: Arc<TaskSpec>,
        outputs: Outputs,
        deliver: impl FnOnce(TaskReport) + Send + 'static,
    ) {
        let start = Instant::now();
        if this.transfers.token.is_cancelled() {
            let report = this.end_cancelled(&spec, &outputs, start);
            return deliver(report);
        }
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            this.plan_and_maybe_run(&spec)
        }))
        .map_err(|payload| pool::panic_message(&*payload));
        let n_in = spec.inputs.len() + spec.args.len();
        let nothing_left = match &first {
            // A directory output's files are planned and staged out on tokio, their
            // walk and planning back on a worker.
            Ok(FirstPhase::Ran(files, ..)) => files[n_in..].iter().all(|f| {
                f.local.is_none() && f.staging.as_ref().is_none_or(|s| s.separate_job.is_none())
            }),
            Ok(FirstPhase::NeedsJobs(_)) => false,
            Ok(FirstPhase::PlanningFailed(..)) | Err(_) => true,
        };
        if nothing_left {
            // Nothing left waits on anything: the rest completes in one poll.
            deliver(
                this.runtime
                    .block_on(Inner::after_first_phase(this, spec, outputs, start, first)),
            );
        } else {
            let owned = this.clone();
            this.runtime.spawn(async move {
                deliver(Inner::after_first_phase(&owned, spec, outputs, start, first).await);
            });
        }
    }

    /// Everything after the first worker phase: separate stage-in jobs and the body
    /// (when they had to wait), then the stage-outs and the report.
    async fn after_first_phase(
        this: &Arc<Inner>,
        spec: Arc<TaskSpec>,
        outputs: Outputs,
        start: Instant,
        first: Result<FirstPhase, String>,
    ) -> TaskReport {
        let token = this.transfers.token.clone();
        let reports =
            |files: &[FileState]| files.iter().map(|f| f.report.clone()).collect::<Vec<_>>();
        let n_in = spec.inputs.len() + spec.args.len();
        let pool = &this.executors[&spec.executor].workers;
        let panicked = |panic: String| {
            this.end(
                &spec,
                &outputs,
                start,
                TaskStatus::Failed,
                0,
                format!("the task body panicked: {panic}"),
                vec![],
            )
        };
        let (mut files, body_result, attempts, place) = match first {
            Err(panic) => return panicked(panic),
            Ok(FirstPhase::PlanningFailed(files, error)) => {
                return this.end(
                    &spec,
                    &outputs,
                    start,
                    TaskStatus::Failed,
                    0,
                    error,
                    reports(&files),
                );
            }
            Ok(FirstPhase::Ran(files, result, attempts, place)) => (files, result, attempts, place),
            Ok(FirstPhase::NeedsJobs(mut files)) => {
                // 3. Separate stage-in jobs, each a transfer of its own, concurrently.
                let mut failure = None;
                for (i, outcome) in this.run_separate_jobs(&mut files, 0..n_in).await {
                    if let Err(e) = files[i].record(outcome) {
                        failure.get_or_insert(e.to_string());
                    }
                }
                if let Some(line) = this.stage_in_mirrors(&spec, &mut files[..n_in]).await {
                    failure.get_or_insert(line);
                }
                if let Some(line) = failure {
                    let status = this.status_after_failure();
                    return this.end(
                        &spec,
                        &outputs,
                        start,
                        status,
                        0,
                        format!("stage-in failed: {line}"),
                        reports(&files),
                    );
                }
                // A task `--resume` may skip once its remote inputs are revalidated.
                if let Some(report) = this.skip_if_current(&spec, &outputs, start, &files) {
                    return report;
                }
                // 4. The body: on a worker again (in-task steps and the body), or
                //    sent to the executor's workers elsewhere.
                let executor = this.executors[&spec.executor].executor.clone();
                if executor.runs_here() {
                    let (inner, task) = (this.clone(), spec.clone());
                    let ran = pool
                        .run(move || {
                            let mut files = files;
                            let (result, attempts, place) = inner.run_body(&task, &mut files);
                            (files, result, attempts, place)
                        })
                        .await;
                    match ran {
                        Ok(ran) => ran,
                        Err(panic) => return panicked(panic),
                    }
                } else {
                    let (result, attempts, place) =
                        this.run_body_elsewhere(&spec, &mut files, &*executor).await;
                    (files, result, attempts, place)
                }
            }
        };
        if let Err(error) = body_result {
            let mut report = this.end(
                &spec,
                &outputs,
                start,
                this.status_after_failure(),
                attempts,
                error.to_string(),
                reports(&files),
            );
            report.worker = place;
            return report;
        }

        // 5. Stage-outs: in-task steps already ran; now the separate jobs. Each output's
        //    future settles when its own stage-out does; a directory's when all of its
        //    files' do.
        let n_declared = outputs.senders.len();
        this.stage_out_directories(&spec, &mut files, n_in..n_in + n_declared)
            .await;
        let mut stage_out_failure = None;
        let mut settle = |files: &mut [FileState], i: usize, outcome: Option<Outcome>| {
            let sender = &outputs.senders[i - n_in];
            let result = match outcome {
                Some(o) => files[i].record(o).map_err(|e| e.to_string()),
                None => files[i].report.error.clone().map_or(Ok(()), Err),
            };
            match result {
                Ok(()) => {
                    let _ = sender.send(FutureState::Ready);
                }
                Err(line) => {
                    let _ = sender.send(FutureState::Failed(line.as_str().into()));
                    stage_out_failure.get_or_insert(line);
                }
            }
        };
        let with_job: Vec<usize> = (n_in..n_in + n_declared)
            .filter(|&i| {
                files[i]
                    .staging
                    .as_ref()
                    .is_some_and(|s| s.separate_job.is_some())
            })
            .collect();
        for i in (n_in..n_in + n_declared).filter(|i| !with_job.contains(i)) {
            settle(&mut files, i, None);
        }
        if !with_job.is_empty() {
            for (i, outcome) in this
                .run_separate_jobs(&mut files, n_in..n_in + n_declared)
                .await
            {
                settle(&mut files, i, Some(outcome));
            }
        }
        let mut report = match stage_out_failure {
            None => this.report(
                &spec,
                start,
                TaskStatus::Succeeded,
                attempts,
                None,
                reports(&files),
            ),
            Some(line) => {
                let status = if token.is_cancelled() {
                    TaskStatus::Cancelled
                } else {
                    TaskStatus::StageOutFailed
                };
                let error = Some(format!("stage-out failed: {line}"));
                this.report(&spec, start, status, attempts, error, reports(&files))
            }
        };
        report.worker = place;
        report
    }

    /// Stages out every file the body wrote below each directory output in `range`
    /// (`stagehost_core::tree::local_tree`: regular files only, links refused), each as
    /// a stage-out of its own to `<URL>/<relative path>` with a report entry of its
    /// own, appended after the task's declared files. The directory's entry fails, with
    /// the first file's error, when one did.
    async fn stage_out_directories(
        self: &Arc<Self>,
        spec: &Arc<TaskSpec>,
        files: &mut Vec<FileState>,
        range: std::ops::Range<usize>,
    ) {
        let dirs: Vec<(usize, File, PathBuf, FileIds)> = range
            .filter(|&i| files[i].report.direction == Direction::Out)
            .filter_map(|i| {
                let root = files[i].local.clone()?;
                let prepared = files[i].prepared.clone()?;
                Some((i, files[i].original.clone(), root, prepared))
            })
            .collect();
        if dirs.is_empty() {
            return;
        }
        let (inner, task) = (self.clone(), spec.clone());
        let walked = self.executors[&spec.executor]
            .workers
            .run(move || {
                let opts = StageOptions {
                    cancel: inner.transfers.cancel.clone(),
                    ..StageOptions::default()
                };
                let working_dir = &inner.executors[&task.executor].working_dir;
                dirs.into_iter()
                    .map(|(i, dir, root, prepared)| {
                        let tree = stagehost_core::tree::local_tree(&root, &dir)
                            .map_err(|e| format!("{}: {}", display::path(&root), e.message()));
                        let children = tree.map(|tree| {
                            tree.into_iter()
                                .map(|(member, path)| {
                                    // A file the task made in the directory (made
                                    // since it was prepared, one link) is stagehost's
                                    // own, as a file output written at the host's
                                    // destination is: a later run, or a consumer's
                                    // copy, may replace it. Anything else found there
                                    // (a user's file, a hard link to one) is sent but
                                    // stays the user's, never marked, never removed.
                                    if made_by_task(&path, &prepared) {
                                        stagehost_plugin_api::landing::mark_made(
                                            &path,
                                            working_dir,
                                        );
                                    }
                                    let opts = StageOptions {
                                        destination: Some(path),
                                        at_host_destination: false,
                                        ..opts.clone()
                                    };
                                    let original = member.file.clean_copy();
                                    let planned = inner.dm.plan_stage_out(
                                        &task.executor,
                                        &member.file,
                                        &opts,
                                    );
                                    let mut state = FileState::planned(
                                        original,
                                        Direction::Out,
                                        &task.executor,
                                        planned,
                                    );
                                    state.report.directory = Some(dir.redacted_url());
                                    state
                                })
                                .collect::<Vec<_>>()
                        });
                        (i, children)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let walked = match walked {
            Ok(walked) => walked,
            Err(panic) => {
                for f in files
                    .iter_mut()
                    .filter(|f| f.report.direction == Direction::Out)
                {
                    f.report.error =
                        Some(format!("planning a directory's files panicked: {panic}"));
                }
                return;
            }
        };
        for (i, children) in walked {
            let children = match children {
                Ok(children) => children,
                Err(line) => {
                    files[i].report.error = Some(format!("cannot stage out the directory {line}"));
                    continue;
                }
            };
            let first = files.len();
            files.extend(children);
            let runs = (first..files.len()).filter_map(|c| {
                let staging = files[c].staging.take()?;
                let original = files[c].original.clone();
                let transfers = &self.transfers;
                Some(async move {
                    let start = Instant::now();
                    let outcome =
                        stagehost_core::runner::run_planned(transfers, staging, &original).await;
                    (c, outcome, start.elapsed().as_secs_f64())
                })
            });
            let ran = futures_join_all(runs.collect::<Vec<_>>()).await;
            let mut failure = None;
            for (c, outcome, seconds) in ran {
                if let Err(line) = files[c].record_staged(outcome, seconds) {
                    failure.get_or_insert(line);
                }
            }
            let failed = files[first..]
                .iter()
                .filter(|f| f.report.error.is_some())
                .count();
            if failed > 0 {
                let line =
                    failure.or_else(|| files[first..].iter().find_map(|f| f.report.error.clone()));
                files[i].report.error = Some(format!(
                    "{failed} of {} file(s) below it failed; the first: {}",
                    files.len() - first,
                    line.unwrap_or_default()
                ));
            }
        }
    }

    /// Stages each input with mirrors in `files`, concurrently, each from the first of
    /// its sources that stages (`stagehost_core::mirrors`); its report names the source
    /// used. Returns the first failure's line, if any.
    async fn stage_in_mirrors(&self, spec: &TaskSpec, files: &mut [FileState]) -> Option<String> {
        let runs = files
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.mirrors.is_empty() && f.report.error.is_none())
            .filter_map(|(i, f)| {
                let opts = StageOptions {
                    cancel: self.transfers.cancel.clone(),
                    destination: Some(f.destination.clone()?),
                    ..StageOptions::default()
                };
                let sources = f.mirrors.clone();
                Some(async move {
                    let start = Instant::now();
                    let outcome = stagehost_core::mirrors::stage_in_first(
                        &self.dm,
                        &self.transfers,
                        &spec.executor,
                        &sources,
                        &opts,
                    )
                    .await;
                    (i, sources, outcome, start.elapsed().as_secs_f64())
                })
            })
            .collect::<Vec<_>>();
        let mut failure = None;
        for (i, sources, outcome, seconds) in futures_join_all(runs).await {
            let f = &mut files[i];
            let failures = outcome.failures_line();
            let Some((used, staged)) = outcome.used else {
                let line = outcome.error_line();
                f.report.ok = false;
                f.report.error = Some(line.clone());
                f.report.error_class = Some(outcome.class());
                failure.get_or_insert(line);
                continue;
            };
            let local = staged
                .staging
                .file
                .filepath()
                .unwrap_or_else(|_| f.destination.clone().unwrap_or_default());
            if let Err(line) = f.record_staged(staged, seconds) {
                failure.get_or_insert(line);
                continue;
            }
            f.report.source = Some(sources[used].redacted_url());
            if !failures.is_empty() {
                tracing::warn!(
                    "task {:?}: {} staged from source {} of {}, after: {failures}",
                    spec.name,
                    f.report.url,
                    used + 1,
                    sources.len(),
                );
            }
            f.report.local_path = Some(local.display().to_string());
            f.local = Some(local);
        }
        failure
    }

    /// Takes the separate jobs of `files[range]` and runs them concurrently, each a
    /// transfer of its own; returns each file's index with its outcome.
    async fn run_separate_jobs(
        &self,
        files: &mut [FileState],
        range: std::ops::Range<usize>,
    ) -> Vec<(usize, Outcome)> {
        let jobs: Vec<_> = range
            .filter_map(|i| {
                files[i]
                    .staging
                    .as_mut()
                    .and_then(|s| s.separate_job.take())
                    .map(|w| (i, w))
            })
            .collect();
        let files = &*files;
        let runs = jobs.into_iter().map(|(i, work)| async move {
            (i, self.transfers.run(work, &files[i].original).await)
        });
        futures_join_all(runs).await
    }

    /// On a worker: plans every stage-in (inputs, in order) and stage-out (outputs,
    /// stdout, stderr); unless separate stage-in jobs must run first, goes on to run
    /// the body.
    fn plan_and_maybe_run(&self, spec: &TaskSpec) -> FirstPhase {
        let mut files =
            Vec::with_capacity(spec.inputs.len() + spec.args.len() + spec.outputs.len() + 2);
        if !(spec.inputs.is_empty()
            && spec.args.is_empty()
            && spec.outputs.is_empty()
            && spec.stdout.is_none()
            && spec.stderr.is_none())
        {
            let opts = StageOptions {
                cancel: self.transfers.cancel.clone(),
                ..StageOptions::default()
            };
            for input in spec.staged_ins() {
                let f = input.file();
                let state = match input {
                    Input::Directory { path, .. } => {
                        FileState::directory(f.clone(), Direction::In, &spec.executor, path)
                    }
                    Input::Placed { destination, .. } => {
                        let placed = StageOptions {
                            destination: Some(destination.clone()),
                            ..opts.clone()
                        };
                        let planned = self.dm.plan_stage_in(&spec.executor, f, &placed);
                        let mut state =
                            FileState::planned(f.clone(), Direction::In, &spec.executor, planned);
                        state.destination = Some(destination.clone());
                        state.report.directory = spec
                            .inputs
                            .iter()
                            .find(|d| {
                                matches!(d, Input::Directory { path: Ok(root), .. } if destination.starts_with(root))
                            })
                            .map(|d| d.file().redacted_url());
                        state
                    }
                    Input::Mirrors { sources } => {
                        // Staged before the body, source by source, to where the
                        // first one's name lands.
                        let mut report =
                            FileReport::new(Direction::In, f.redacted_url(), &spec.executor);
                        let destination =
                            match self.dm.mirror_destination(&spec.executor, sources, None) {
                                Ok(d) => Some(d),
                                Err(e) => {
                                    report.fail(&e);
                                    None
                                }
                            };
                        FileState {
                            original: f.clone(),
                            staging: None,
                            report,
                            local: None,
                            destination,
                            mirrors: sources.clone(),
                            prepared: None,
                        }
                    }
                    Input::File(_) | Input::Future(_) => {
                        let planned = self.dm.plan_stage_in(&spec.executor, f, &opts);
                        FileState::planned(f.clone(), Direction::In, &spec.executor, planned)
                    }
                };
                files.push(state);
            }
            settle_directories(&mut files);
            for f in spec.outputs.iter().chain(&spec.stdout).chain(&spec.stderr) {
                if stagehost_core::tree::is_directory_output(f) {
                    // The task fills `<working_dir>/<name>/`, made now; its files are
                    // staged out once the body succeeds.
                    let root = self.dm.directory_destination(&spec.executor, f, None);
                    let mut state =
                        FileState::directory(f.clone(), Direction::Out, &spec.executor, &root);
                    if root
                        .as_ref()
                        .is_ok_and(|r| r.file_name().is_some_and(|n| n == ".stagehost"))
                    {
                        state.report.ok = false;
                        state.report.error = Some(format!(
                            "the output {} would be stagehost's own .stagehost directory: name another",
                            f.redacted_url()
                        ));
                        files.push(state);
                        continue;
                    }
                    if let Some(root) = root.as_ref().ok().filter(|r| {
                        std::fs::symlink_metadata(r).is_ok_and(|m| m.file_type().is_symlink())
                    }) {
                        state.report.ok = false;
                        state.report.error = Some(format!(
                            "{} is a link; a directory output is a directory stagehost makes: move the link away",
                            display::path(root)
                        ));
                        files.push(state);
                        continue;
                    }
                    if let Ok(root) = &root {
                        // The files an earlier run's task wrote there go first (only
                        // those: anything else there is left alone), so the task
                        // starts from an empty directory, as from a missing file.
                        let working_dir = &self.executors[&spec.executor].working_dir;
                        stagehost_core::tree::prune(root, &[], working_dir);
                        if let Err(e) = std::fs::create_dir_all(root) {
                            state.report.ok = false;
                            state.report.error =
                                Some(format!("cannot create {}: {e}", display::path(root)));
                        }
                        state.prepared = Some(file_identities(root));
                    }
                    files.push(state);
                    continue;
                }
                let planned = self.dm.plan_stage_out(&spec.executor, f, &opts);
                files.push(FileState::planned(
                    f.clone(),
                    Direction::Out,
                    &spec.executor,
                    planned,
                ));
            }
            if let Some(error) = files.iter().find_map(|f| f.report.error.clone()) {
                return FirstPhase::PlanningFailed(files, error);
            }
            let n_in = spec.inputs.len() + spec.args.len();
            if files[..n_in].iter().any(|f| {
                !f.mirrors.is_empty()
                    || f.staging.as_ref().is_some_and(|s| s.separate_job.is_some())
            }) {
                return FirstPhase::NeedsJobs(files);
            }
        }
        if !self.executors[&spec.executor].executor.runs_here() || spec.skip_if.is_some() {
            // The body goes elsewhere: awaited on tokio, not on this thread. A task
            // that may be skipped is checked there too, once its inputs are in.
            return FirstPhase::NeedsJobs(files);
        }
        let (result, attempts, place) = self.run_body(spec, &mut files);
        FirstPhase::Ran(files, result, attempts, place)
    }

    /// Tells the observer the body starts, with its inputs as staged.
    fn body_starting(&self, spec: &TaskSpec, files: &[FileState]) {
        let n_in = spec.inputs.len() + spec.args.len();
        let ins: Vec<FileReport> = files[..n_in].iter().map(|f| f.report.clone()).collect();
        self.observer.body_starting(&spec.name, &ins);
    }

    /// On a worker: the body with its in-task steps, retried up to `spec.retries` times;
    /// its result, attempts, and the worker (`worker N` of the executor's pool).
    fn run_body(
        &self,
        spec: &TaskSpec,
        files: &mut [FileState],
    ) -> (BodyResult, u32, Option<String>) {
        let place = std::thread::current()
            .name()
            .and_then(|n| n.rsplit('-').next())
            .map(|n| format!("worker {n}"));
        self.body_starting(spec, files);
        let mut attempts = 0;
        loop {
            if self.transfers.token.is_cancelled() {
                return (Err(BodyError::Cancelled), attempts, place);
            }
            attempts += 1;
            let result = self.attempt_body(spec, files, attempts > 1);
            if !self.retries_after(spec, attempts, &result) {
                return (self.settled(result), attempts, place);
            }
        }
    }

    /// A failed body's error once the run was cancelled is the cancellation (a worker
    /// stopped by it, a command killed by it), not what it did to the attempt.
    fn settled(&self, result: BodyResult) -> BodyResult {
        match result {
            Err(_) if self.transfers.token.is_cancelled() => Err(BodyError::Cancelled),
            other => other,
        }
    }

    /// Whether a body's attempt that ended with `result` is tried again (and says so).
    fn retries_after(&self, spec: &TaskSpec, attempts: u32, result: &BodyResult) -> bool {
        match result {
            Err(e)
                if e.retryable()
                    && attempts <= spec.retries
                    && !self.transfers.token.is_cancelled() =>
            {
                tracing::info!(
                    "task {:?} failed (attempt {attempts} of {}), retrying: {e}",
                    spec.name,
                    spec.retries + 1
                );
                true
            }
            _ => false,
        }
    }

    /// The body with its in-task steps, sent to `executor`'s workers, retried up to
    /// `spec.retries` times; awaits each attempt without holding a thread.
    async fn run_body_elsewhere(
        &self,
        spec: &TaskSpec,
        files: &mut [FileState],
        executor: &dyn Executor,
    ) -> (BodyResult, u32, Option<String>) {
        self.body_starting(spec, files);
        let mut attempts = 0;
        let mut place = None;
        loop {
            if self.transfers.token.is_cancelled() {
                return (Err(BodyError::Cancelled), attempts, place);
            }
            attempts += 1;
            let result = self
                .attempt_elsewhere(spec, files, executor, attempts > 1, &mut place)
                .await;
            if !self.retries_after(spec, attempts, &result) {
                return (self.settled(result), attempts, place);
            }
        }
    }

    /// One attempt on a node: the in-task steps and the command go to a worker, which
    /// plans the steps again there; their outcomes come back into the reports.
    async fn attempt_elsewhere(
        &self,
        spec: &TaskSpec,
        files: &mut [FileState],
        executor: &dyn Executor,
        retry: bool,
        place: &mut Option<String>,
    ) -> BodyResult {
        if retry {
            self.replan_steps(spec, files)?;
        }
        let (task, sent) = self.node_task(spec, files)?;
        let receipt = executor.send(task).map_err(BodyError::Lost)?;
        let result = receipt
            .await
            .unwrap_or_else(|_| Err("the run ended before the task".into()))
            .map_err(BodyError::Lost)?;
        *place = Some(result.place.clone());
        for (k, &i) in sent.iter().enumerate() {
            if let Some(r) = result.staged.get(k).filter(|r| r.ran) {
                let f = &mut files[i];
                f.report.attempts += r.attempts;
                f.report.seconds += r.seconds;
                f.report.cached |= r.cached;
                if r.bytes.is_some() {
                    f.report.bytes = r.bytes;
                }
                if let Some(e) = &r.error {
                    f.report.error = Some(e.clone());
                    f.report.error_class = r.error_class;
                }
            }
        }
        match result.error {
            Some(error) => Err(BodyError::OnNode {
                error,
                place: result.place,
            }),
            None => Ok(()),
        }
    }

    /// One attempt, on a worker: in-task stage-in steps, the body, in-task stage-out
    /// steps. On a retry, the in-task steps are planned again (a step runs once).
    fn attempt_body(&self, spec: &TaskSpec, files: &mut [FileState], retry: bool) -> BodyResult {
        if retry {
            self.replan_steps(spec, files)?;
        }
        let n_in = spec.inputs.len() + spec.args.len();
        let task_files = self.task_files(spec, files);
        // Each file's in-task step, through the run's transfers, recorded in its report.
        let step = |file: &mut FileState, work| {
            let outcome = self
                .runtime
                .block_on(self.transfers.run(work, &file.original));
            file.record(outcome).map_err(|e| StepFailure::from(&e))
        };
        let with_step = |file: &mut FileState| file.staging.as_mut()?.in_task_step.take();
        let (ins, outs) = files.split_at_mut(n_in);
        let ins = ins
            .iter_mut()
            .filter_map(|file| {
                let work = with_step(file)?;
                Some(Box::new(move || step(file, work)) as attempt::StageIn<'_>)
            })
            .collect();
        let outs = outs
            .iter_mut()
            .filter_map(|file| {
                let work = with_step(file)?;
                Some(Box::new(move || {
                    let _ = step(file, work);
                }) as attempt::StageOut<'_>)
            })
            .collect();
        let body = || match &spec.body {
            Body::Closure(f) => f(&task_files).map_err(BodyError::Closure),
            Body::Command(cmd) => {
                let expanded = expand_command(cmd, &task_files).map_err(BodyError::Unrunnable)?;
                Ok(command::run(
                    &expanded,
                    &task_files,
                    &self.commands,
                    spec.timeout,
                )?)
            }
        };
        // A closure's declared outputs are its own to write, as before.
        let outputs = match &spec.body {
            Body::Command(_) => task_files.outputs.as_slice(),
            Body::Closure(_) => &[],
        };
        attempt::attempt(ins, body, outputs, outs)
    }

    /// The paths the body sees: each staged file's `filepath()`, absolute.
    fn task_files(&self, spec: &TaskSpec, files: &[FileState]) -> TaskFiles {
        let (n_inputs, n_in) = (spec.inputs.len(), spec.inputs.len() + spec.args.len());
        let n_out = spec.outputs.len();
        TaskFiles {
            working_dir: self.executors[&spec.executor].working_dir.clone(),
            inputs: files[..n_inputs].iter().map(FileState::path).collect(),
            args: files[n_inputs..n_in].iter().map(FileState::path).collect(),
            outputs: files[n_in..n_in + n_out]
                .iter()
                .map(FileState::path)
                .collect(),
            stdout: spec.stdout.as_ref().map(|_| files[n_in + n_out].path()),
            stderr: spec.stderr.as_ref().map(|_| files[files.len() - 1].path()),
        }
    }

    /// The task as a worker elsewhere runs it: the expanded command and the in-task
    /// steps to plan again there; with the indices of the files whose steps it takes.
    fn node_task(
        &self,
        spec: &TaskSpec,
        files: &mut [FileState],
    ) -> Result<(protocol::NodeTask, Vec<usize>), BodyError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let task_files = self.task_files(spec, files);
        let command = match &spec.body {
            Body::Command(cmd) => expand_command(cmd, &task_files).map_err(BodyError::Unrunnable)?,
            Body::Closure(_) => {
                return Err(BodyError::Unrunnable(format!(
                    "executor {:?} runs bodies on other nodes, where a Rust closure cannot go; give the task a command",
                    spec.executor
                )))
            }
        };
        let command = command.into_string().map_err(|c| {
            BodyError::Unrunnable(format!(
                "the command {} is not UTF-8 and cannot be sent to a node",
                display::escape(&c.to_string_lossy())
            ))
        })?;
        let mut sent = Vec::new();
        let mut staged = Vec::new();
        for (i, f) in files.iter_mut().enumerate() {
            if let Some(s) = f.staging.as_mut() {
                if s.in_task_step.take().is_some() {
                    sent.push(i);
                    staged.push(protocol::NodeFile {
                        url: f.original.url().to_owned(),
                        direction: f.report.direction,
                        local_path: s.file.local_path().map(std::path::Path::to_path_buf),
                        placed: s.placed,
                    });
                }
            }
        }
        let task = protocol::NodeTask {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            name: spec.name.clone(),
            executor: spec.executor.clone(),
            command,
            files: task_files,
            timeout_secs: spec.timeout.map(|t| t.as_secs_f64()),
            staged,
        };
        Ok((task, sent))
    }

    /// Plans every file again to get fresh in-task steps for a retry.
    fn replan_steps(&self, spec: &TaskSpec, files: &mut [FileState]) -> BodyResult {
        let opts = StageOptions {
            cancel: self.transfers.cancel.clone(),
            ..StageOptions::default()
        };
        for file in files.iter_mut() {
            // A directory's own entry stages nothing; a file with mirrors was staged
            // once, before the first attempt.
            if file.local.is_some() || !file.mirrors.is_empty() {
                continue;
            }
            let opts = StageOptions {
                destination: file.destination.clone(),
                ..opts.clone()
            };
            let planned = match file.report.direction {
                Direction::In => self.dm.plan_stage_in(&spec.executor, &file.original, &opts),
                Direction::Out => self
                    .dm
                    .plan_stage_out(&spec.executor, &file.original, &opts),
            };
            let mut plan = planned.map_err(|e| BodyError::Replan(StepFailure::from(&e)))?;
            if let Some(staging) = file.staging.as_mut() {
                staging.in_task_step = plan.in_task_step.take();
            }
        }
        Ok(())
    }
}

/// Where each directory input of a planned task is: below its destination, made now
/// (even empty), when its files land there; the directory itself when a provider uses
/// every one of its files where it is (the `file` provider's `mode = "none"`).
fn settle_directories(files: &mut [FileState]) {
    for d in 0..files.len() {
        let (Some(root), None) = (files[d].local.clone(), &files[d].staging) else {
            continue;
        };
        let mut children = files
            .iter()
            .filter(|f| {
                f.destination
                    .as_ref()
                    .is_some_and(|to| to.starts_with(&root))
            })
            .peekable();
        let in_place = children.peek().is_some()
            && children.all(|f| f.staging.as_ref().is_some_and(|s| !s.placed));
        let source = stagehost_core::journal::local_path_of(files[d].original.url());
        match source {
            Some(source) if in_place => {
                files[d].report.local_path = Some(source.display().to_string());
                files[d].local = Some(source);
            }
            _ => {
                if let Err(e) = std::fs::create_dir_all(&root) {
                    files[d].report.ok = false;
                    files[d].report.error =
                        Some(format!("cannot create {}: {e}", display::path(&root)));
                }
            }
        }
    }
}

/// The (device, inode) of each regular file below `root` (never following a link).
fn file_identities(root: &std::path::Path) -> FileIds {
    use std::os::unix::fs::MetadataExt;
    let Ok(walked) = stagehost_plugin_api::walk::walk(root, true) else {
        return Default::default();
    };
    walked
        .iter()
        .filter_map(|w| std::fs::symlink_metadata(root.join(&w.name)).ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// Whether the regular file at `path` is one the task made: one link, and none of the
/// files that were there `before` the body.
fn made_by_task(path: &std::path::Path, before: &FileIds) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_file() && m.nlink() == 1 && !before.contains(&(m.dev(), m.ino())))
}

fn status_word(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Cancelled => "was cancelled",
        TaskStatus::DependencyFailed => "lost an input",
        _ => "failed",
    }
}

/// Runs futures concurrently on this task and collects their results in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, fut) in set.iter_mut().enumerate() {
            if results[i].is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future completed"))
        .collect()
}
