//! The staging runner for files staged outside a workflow (`stagehost stage in` and
//! `stage out`): the same transfer policy as a run (`[transfers]`: retries with backoff
//! and jitter for transient errors, the per-attempt timeout, the global and per-host
//! limits, cancellation, progress events), because it runs the work through the
//! engine's own [`Transfers`].
//!
//! Invariant: when [`StageRunner::run`] returns, no plugin is still writing for that
//! file (a cancelled or timed-out attempt's thread is awaited).

use std::path::PathBuf;
use std::sync::Arc;

use stagehost_plugin_api::File;
use tokio_util::sync::CancellationToken;

use crate::config::TransferConfig;
use crate::data_manager::{DataManager, Direction, StageOptions, Staging, StagingError, WorkMode};
use crate::observer::Observer;
use crate::registry::Registry;
use crate::services::CancelFlag;
use crate::transfer::Transfers;

/// Stages single files under a run's transfer policy. Call from within a tokio
/// runtime.
pub struct StageRunner {
    dm: Arc<DataManager>,
    transfers: Transfers,
    working_dir: Option<PathBuf>,
}

/// What staging one file did.
pub struct StageOutcome {
    /// The file's planned staging (the work that ran is in `ran`).
    pub staging: Staging,
    /// Attempts of the last piece of work (1 when it succeeded at once).
    pub attempts: u32,
    /// Bytes of the local file, when there is one.
    pub bytes: Option<u64>,
    /// The destination already held the current file; no bytes moved.
    pub cached: bool,
    /// How it ended.
    pub result: Result<(), StagingError>,
    /// The work the provider returned, in the order it runs (what ran is in
    /// `staging.ran`).
    pub modes: Vec<WorkMode>,
}

impl StageRunner {
    /// A runner over the registry's executors with `config`'s policy, reporting
    /// transfers to `observer`; `working_dir` overrides the executors' own.
    pub fn new(
        registry: &Registry,
        config: TransferConfig,
        observer: Arc<dyn Observer>,
        working_dir: Option<PathBuf>,
    ) -> StageRunner {
        StageRunner::build(
            Arc::new(DataManager::new(registry)),
            config,
            observer,
            working_dir,
            true,
        )
    }

    /// A runner over an existing data manager (sharing its destination claims), for a
    /// long-lived host such as the Python package's: every stage-in runs, even of a
    /// URL staged before, since the file may have changed or gone since.
    pub fn over(
        dm: Arc<DataManager>,
        config: TransferConfig,
        observer: Arc<dyn Observer>,
        working_dir: Option<PathBuf>,
    ) -> StageRunner {
        StageRunner::build(dm, config, observer, working_dir, false)
    }

    fn build(
        dm: Arc<DataManager>,
        config: TransferConfig,
        observer: Arc<dyn Observer>,
        working_dir: Option<PathBuf>,
        dedup: bool,
    ) -> StageRunner {
        let transfers = Transfers::new(
            config,
            dm.clone(),
            observer,
            CancelFlag::new(),
            CancellationToken::new(),
        )
        .with_working_dir(working_dir.clone());
        let transfers = if dedup {
            transfers
        } else {
            transfers.without_dedup()
        };
        StageRunner {
            dm,
            transfers,
            working_dir,
        }
    }

    /// The data manager the runner plans with.
    pub fn data_manager(&self) -> &DataManager {
        &self.dm
    }

    /// Stops every transfer: each attempt's work is told to stop and is awaited, so
    /// nothing partial is left here or on the server.
    pub fn cancel(&self) {
        self.transfers.cancel.cancel();
        self.transfers.token.cancel();
    }

    /// Plans `file` on `executor` (blocks: call it on a blocking thread or before the
    /// transfers start). Plan in the order the user gave, so destinations are claimed
    /// in that order.
    pub fn plan(
        &self,
        executor: &str,
        file: &File,
        direction: Direction,
    ) -> Result<Staging, StagingError> {
        self.plan_from(executor, file, direction, false)
    }

    /// [`StageRunner::plan`] of a file another host planned (a pilot's worker
    /// re-planning a run's in-task step): `at_host_destination` says its preset
    /// `local_path` is that host's own destination, so what lands there is marked as
    /// stagehost's and a file a user put there is refused, as where it was planned.
    pub fn plan_from(
        &self,
        executor: &str,
        file: &File,
        direction: Direction,
        at_host_destination: bool,
    ) -> Result<Staging, StagingError> {
        let opts = StageOptions {
            working_dir: self.working_dir.clone(),
            cancel: self.transfers.cancel.clone(),
            at_host_destination,
            ..StageOptions::default()
        };
        match direction {
            Direction::In => self.dm.plan_stage_in(executor, file, &opts),
            Direction::Out => self.dm.plan_stage_out(executor, file, &opts),
        }
    }

    /// [`StageRunner::plan`] of a file of a directory, to the `destination` the host
    /// chose for it below the directory's (see `tree`).
    pub fn plan_to(
        &self,
        executor: &str,
        file: &File,
        direction: Direction,
        destination: PathBuf,
    ) -> Result<Staging, StagingError> {
        let opts = StageOptions {
            working_dir: self.working_dir.clone(),
            cancel: self.transfers.cancel.clone(),
            destination: Some(destination),
            ..StageOptions::default()
        };
        match direction {
            Direction::In => self.dm.plan_stage_in(executor, file, &opts),
            Direction::Out => self.dm.plan_stage_out(executor, file, &opts),
        }
    }

    /// Runs the planned work of `original` (a stage-in: the separate job, then the
    /// in-task step; a stage-out: the in-task step, then the separate job), each under
    /// the policy.
    pub async fn run(&self, staging: Staging, original: &File) -> StageOutcome {
        run_planned(&self.transfers, staging, original).await
    }

    /// Stages `sources` (one file's mirrors, in order) in to `destination`: see
    /// [`crate::mirrors`].
    pub async fn stage_in_mirrors(
        &self,
        executor: &str,
        sources: &[File],
        destination: PathBuf,
    ) -> crate::mirrors::MirrorOutcome {
        let opts = StageOptions {
            working_dir: self.working_dir.clone(),
            cancel: self.transfers.cancel.clone(),
            destination: Some(destination),
            ..StageOptions::default()
        };
        crate::mirrors::stage_in_first(&self.dm, &self.transfers, executor, sources, &opts).await
    }
}

/// Runs the planned work of `original` through `transfers` (a stage-in: the separate
/// job, then the in-task step; a stage-out: the in-task step, then the separate job),
/// each under the policy.
pub async fn run_planned(
    transfers: &Transfers,
    mut staging: Staging,
    original: &File,
) -> StageOutcome {
    let modes = staging.modes();
    let order = match staging.direction {
        Direction::In => [WorkMode::SeparateJob, WorkMode::InTaskStep],
        Direction::Out => [WorkMode::InTaskStep, WorkMode::SeparateJob],
    };
    let (mut attempts, mut bytes, mut cached) = (1, None, false);
    for mode in order {
        let work = match mode {
            WorkMode::SeparateJob => staging.separate_job.take(),
            WorkMode::InTaskStep => staging.in_task_step.take(),
        };
        let Some(work) = work else {
            continue;
        };
        let outcome = transfers.run(work, original).await;
        attempts = outcome.attempts;
        bytes = outcome.bytes.or(bytes);
        cached |= outcome.cached;
        if let Err(e) = outcome.result {
            return StageOutcome {
                staging,
                attempts,
                bytes,
                cached: false,
                result: Err(e),
                modes,
            };
        }
        staging.ran.push(mode);
    }
    StageOutcome {
        staging,
        attempts,
        bytes,
        cached,
        result: Ok(()),
        modes,
    }
}
