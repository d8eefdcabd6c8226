//! Running staging work (separate jobs and in-task steps) under the engine's bounds:
//! a global limit and a per-host limit on concurrent transfers, a per-attempt timeout,
//! retries with exponential backoff and jitter for transient errors, cancellation, and
//! one fetch for many consumers of the same URL at the same destination.
//!
//! Invariants:
//! - a transfer's blocking thread is always awaited, even after a timeout or a
//!   cancellation (its cancel flag is raised first): when `run` returns, the plugin is
//!   no longer writing, so no partial file outlives it;
//! - only errors the provider marks transient (or timeouts) are retried, and each retry
//!   re-plans the file, since a job runs once.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stagehost_plugin_api::{ErrorKind, File, StageError};
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::TransferConfig;
use crate::data_manager::{
    DataManager, Direction, ProviderFailure, StageOptions, StagingError, StagingWork, WorkMode,
};
use crate::observer::Observer;
use crate::services::CancelFlag;

/// What a transfer did.
#[derive(Debug)]
/// How one piece of staging work ended, all its attempts counted.
pub struct Outcome {
    pub attempts: u32,
    pub seconds: f64,
    pub deduplicated: bool,
    pub bytes: Option<u64>,
    /// The destination already held the current file; no bytes moved.
    pub cached: bool,
    pub result: Result<(), StagingError>,
}

/// What an attempt that succeeded left: the file's size, and whether it was cached.
#[derive(Debug, Clone, Copy)]
struct Landed {
    bytes: Option<u64>,
    cached: bool,
}

#[derive(Debug, Clone)]
struct Done {
    landed: Landed,
    attempts: u32,
}

/// Who a piece of work is, kept for errors once the work itself is consumed.
#[derive(Clone)]
struct WorkInfo {
    direction: Direction,
    mode: WorkMode,
    url: String,
    instance: String,
    plugin: String,
    executor: String,
    host: String,
    local: Option<PathBuf>,
    placed: bool,
}

impl WorkInfo {
    fn of(work: &StagingWork) -> WorkInfo {
        WorkInfo {
            direction: work.direction,
            mode: work.mode,
            url: work.file.redacted_url(),
            instance: work.provider.name.clone(),
            plugin: format!(
                "{} {}",
                work.provider.plugin.name, work.provider.plugin.version
            ),
            executor: work.executor.to_string(),
            host: work.file.netloc().to_owned(),
            local: work.file.filepath().ok(),
            placed: work.placed(),
        }
    }
    fn error(&self, kind: ErrorKind, message: String) -> StagingError {
        StagingError::Provider(Box::new(ProviderFailure {
            direction: self.direction,
            url: self.url.clone(),
            instance: self.instance.clone(),
            plugin: self.plugin.clone(),
            executor: self.executor.clone(),
            call: self.mode.as_str(),
            error: StageError::new(kind, message),
        }))
    }
}

type DedupKey = (String, PathBuf);

/// Runs every piece of staging work under one policy: global and per-host limits,
/// a per-attempt timeout, retries with backoff and jitter, dedup, cancellation and
/// progress events.
pub struct Transfers {
    config: TransferConfig,
    global: Arc<Semaphore>,
    per_host: Mutex<HashMap<String, Arc<Semaphore>>>,
    dedup: Mutex<HashMap<DedupKey, Arc<OnceCell<Done>>>>,
    /// Whether one URL's stage-in to one destination runs once for the life of this
    /// value (a run); off for a long-lived host, which must fetch again later.
    dedup_on: bool,
    /// What plugins' `Context::check` reads.
    pub cancel: CancelFlag,
    /// Cancels waiting work.
    pub token: CancellationToken,
    observer: Arc<dyn Observer>,
    dm: Arc<DataManager>,
    next_id: AtomicU64,
    /// Overrides the executors' working directories when a retry plans again.
    working_dir: Option<PathBuf>,
}

/// The delay before retry `attempt` (1-based): `initial * 2^(attempt-1)`, capped,
/// times a random factor in [0.5, 1).
fn backoff(config: &TransferConfig, attempt: u32) -> Duration {
    let base = config
        .backoff_initial_ms
        .saturating_mul(1u64 << (attempt - 1).min(20))
        .min(config.backoff_max_ms);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.5 + (random % 1000) as f64 / 2000.0;
    Duration::from_millis((base as f64 * factor) as u64)
}

impl Transfers {
    pub fn new(
        config: TransferConfig,
        dm: Arc<DataManager>,
        observer: Arc<dyn Observer>,
        cancel: CancelFlag,
        token: CancellationToken,
    ) -> Transfers {
        Transfers {
            global: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            per_host: Mutex::new(HashMap::new()),
            dedup: Mutex::new(HashMap::new()),
            dedup_on: true,
            cancel,
            token,
            observer,
            dm,
            next_id: AtomicU64::new(0),
            working_dir: None,
        }
    }

    /// Runs every stage-in it is given, even of a URL to a destination it already
    /// staged (a long-lived host: the Python package).
    pub fn without_dedup(mut self) -> Transfers {
        self.dedup_on = false;
        self
    }

    /// Plans retries in `dir` instead of the executors' working directories (what
    /// `stagehost stage in --dest DIR` asks).
    pub fn with_working_dir(mut self, dir: Option<PathBuf>) -> Transfers {
        self.working_dir = dir;
        self
    }

    fn host_limit(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self
            .per_host
            .lock()
            .expect("the host-limit lock is never poisoned");
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_host)))
            .clone()
    }

    /// Runs `work` (for the caller's file `original`) to its end: deduplicated,
    /// bounded, retried.
    pub async fn run(&self, work: Box<StagingWork>, original: &File) -> Outcome {
        let start = Instant::now();
        let key = match (work.direction, work.file.local_path()) {
            (Direction::In, Some(local)) if self.dedup_on => {
                Some((work.file.url().to_owned(), local.to_path_buf()))
            }
            _ => None,
        };
        let Some(key) = key else {
            let (attempts, result) = match self.attempts(work, original).await {
                Ok(done) => (done.attempts, Ok(done.landed)),
                Err((e, attempts)) => (attempts, Err(e)),
            };
            return Outcome::new(start, attempts, false, result);
        };
        let cell = self
            .dedup
            .lock()
            .expect("the dedup lock is never poisoned")
            .entry(key)
            .or_default()
            .clone();
        let mut ran_here = false;
        let mut failed_attempts = 0;
        let result = cell
            .get_or_try_init(|| {
                ran_here = true;
                async {
                    self.attempts(work, original)
                        .await
                        .map_err(|(e, attempts)| {
                            failed_attempts = attempts;
                            e
                        })
                }
            })
            .await;
        match result {
            Ok(done) if ran_here => Outcome::new(start, done.attempts, false, Ok(done.landed)),
            Ok(done) => Outcome::new(start, 0, true, Ok(done.landed)),
            Err(e) => Outcome::new(start, failed_attempts, false, Err(e)),
        }
    }

    async fn attempts(
        &self,
        mut work: Box<StagingWork>,
        original: &File,
    ) -> Result<Done, (StagingError, u32)> {
        let info = WorkInfo::of(&work);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt_once(work, &info).await {
                Ok(landed) => {
                    return Ok(Done {
                        landed,
                        attempts: attempt,
                    })
                }
                Err(e)
                    if e.is_transient()
                        && attempt <= self.config.retries
                        && !self.cancel.is_cancelled() =>
                {
                    let delay = backoff(&self.config, attempt);
                    tracing::warn!(
                        "retrying {} in {:.2}s (attempt {} of {}): {e}",
                        info.url,
                        delay.as_secs_f64(),
                        attempt + 1,
                        self.config.retries + 1
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.token.cancelled() => {
                            return Err((info.error(ErrorKind::Cancelled, "cancelled".into()), attempt));
                        }
                    }
                    work = self
                        .replan(&info, original)
                        .await
                        .map_err(|e| (e, attempt))?;
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }

    /// Plans `original` again and takes the work of the same mode.
    async fn replan(
        &self,
        info: &WorkInfo,
        original: &File,
    ) -> Result<Box<StagingWork>, StagingError> {
        let (dm, file, executor, direction, mode) = (
            self.dm.clone(),
            original.clone(),
            info.executor.clone(),
            info.direction,
            info.mode,
        );
        let opts = StageOptions {
            cancel: self.cancel.clone(),
            working_dir: self.working_dir.clone(),
            at_host_destination: info.placed,
            ..StageOptions::default()
        };
        let staging = tokio::task::spawn_blocking(move || match direction {
            Direction::In => dm.plan_stage_in(&executor, &file, &opts),
            Direction::Out => dm.plan_stage_out(&executor, &file, &opts),
        })
        .await
        .expect("planning never panics: provider panics are caught at the plugin boundary")?;
        let work = match mode {
            WorkMode::SeparateJob => staging.separate_job,
            WorkMode::InTaskStep => staging.in_task_step,
        };
        work.ok_or_else(|| {
            info.error(
                ErrorKind::Other,
                "on retry the provider planned no work".into(),
            )
        })
    }

    async fn attempt_once(
        &self,
        work: Box<StagingWork>,
        info: &WorkInfo,
    ) -> Result<Landed, StagingError> {
        let cancelled = || info.error(ErrorKind::Cancelled, "cancelled".into());
        // A URL without a netloc (a local file, a zip member) names no server to spare:
        // only the global limit applies to it.
        let host_limit = (!info.host.is_empty()).then(|| self.host_limit(&info.host));
        let _permits = tokio::select! {
            permits = async {
                let g = self.global.clone().acquire_owned().await;
                let h = match host_limit {
                    Some(limit) => Some(limit.acquire_owned().await),
                    None => None,
                };
                (g, h)
            } => permits,
            () = self.token.cancelled() => return Err(cancelled()),
        };
        if self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = self.cancel.child();
        let timeout = (self.config.timeout_secs > 0.0)
            .then(|| Duration::from_secs_f64(self.config.timeout_secs));
        let opts = StageOptions {
            working_dir: self.working_dir.clone(),
            timeout,
            cancel: cancel.clone(),
            progress: self
                .observer
                .transfer_started(id, &info.url, info.direction, info.mode),
            at_host_destination: info.placed,
            destination: None,
        };
        let local_size = || {
            info.local
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
        };
        // A stage-out's bytes are the output's, measured before the provider may
        // remove it (as zip does once the archive holds it).
        let sent = match info.direction {
            Direction::Out => local_size(),
            Direction::In => None,
        };
        let mut handle = tokio::task::spawn_blocking(move || work.run(&opts));
        let joined = match timeout {
            None => handle.await,
            Some(t) => match tokio::time::timeout(t, &mut handle).await {
                Ok(joined) => joined,
                Err(_) => {
                    cancel.cancel();
                    let _ = handle.await;
                    let err = info.error(
                        ErrorKind::TimedOut,
                        format!("no result within {:.3}s", t.as_secs_f64()),
                    );
                    self.observer.transfer_finished(id, Err(&err.to_string()));
                    return Err(err);
                }
            },
        };
        let result = joined
            .expect("staging work never panics: provider panics are caught at the plugin boundary");
        let result = result.map(|done| Landed {
            bytes: sent.or_else(local_size),
            cached: done.cached,
        });
        match &result {
            Ok(landed) => self.observer.transfer_finished(
                id,
                Ok(crate::observer::Finished {
                    bytes: landed.bytes,
                    cached: landed.cached,
                }),
            ),
            Err(e) => self.observer.transfer_finished(id, Err(&e.to_string())),
        }
        result
    }
}

impl Outcome {
    fn new(
        start: Instant,
        attempts: u32,
        deduplicated: bool,
        result: Result<Landed, StagingError>,
    ) -> Outcome {
        let (landed, result) = match result {
            Ok(landed) => (Some(landed), Ok(())),
            Err(e) => (None, Err(e)),
        };
        Outcome {
            attempts,
            seconds: start.elapsed().as_secs_f64(),
            deduplicated,
            bytes: landed.and_then(|l| l.bytes),
            cached: landed.is_some_and(|l| l.cached),
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped_with_jitter() {
        let c = TransferConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            ..TransferConfig::default()
        };
        for _ in 0..50 {
            let d1 = backoff(&c, 1).as_millis();
            assert!((50..100).contains(&d1), "{d1}");
            let d3 = backoff(&c, 3).as_millis();
            assert!((200..400).contains(&d3), "{d3}");
            let d9 = backoff(&c, 9).as_millis();
            assert!((500..1000).contains(&d9), "{d9}");
        }
    }
}
