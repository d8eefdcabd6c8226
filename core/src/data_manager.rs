//! The data manager: for each file of a task, the first provider of the executor's
//! order that can stage it plans the staging, as Parsl's `DataManager` does.
//!
//! Invariants (Parsl's, kept):
//! - each executor has its own order; the first provider whose `can_stage_*` says yes
//!   handles the file, even when it then has nothing to do (no fall-through);
//! - every planning call gets a fresh copy of the caller's `File`; the caller's file is
//!   never changed. For one file, the copy `stage_in` returns goes on to `replace_task`
//!   (and likewise for stage-out), as Parsl's `optionally_stage_in` shares one copy;
//! - every call into a provider here blocks; async callers run these on a blocking
//!   thread (the engine's workers, or `spawn_blocking`).
//!
//! Beyond Parsl: two different URLs with the same basename never get the same default
//! destination (the second goes to `<working_dir>/.stagehost/<hash>/<filename>`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use stagehost_plugin_api::abi::AbiJobBox;
use stagehost_plugin_api::{ErrorKind, File, StageError};

use crate::checksum::Checksum;
use crate::registry::{PlanningCall, ProviderInstance, Registry};
use crate::services::{abi_context, CancelFlag, ProgressSink, ServicesFor};

/// Stage-in or stage-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Before the task.
    In,
    /// After the task.
    Out,
}

/// How a piece of staging work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkMode {
    /// A task of its own, before (in) or after (out) the task.
    SeparateJob,
    /// Inside the task, just before (in) or after (out) its body.
    InTaskStep,
}

impl WorkMode {
    /// `separate job` or `in-task step`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkMode::SeparateJob => "separate job",
            WorkMode::InTaskStep => "in-task step",
        }
    }
}

/// A staging failure, as one line naming the file, the provider and the executor.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StagingError {
    /// The executor label is not configured.
    #[error("unknown executor {executor:?} (configured: {known})")]
    UnknownExecutor {
        /// The label asked for.
        executor: String,
        /// The labels there are.
        known: String,
    },
    /// No provider of the executor's order claims the file (Parsl's text).
    #[error("Executor {executor} cannot stage {}file {url}{}", if *direction == Direction::Out { "out " } else { "" }, unavailable_hint(unavailable))]
    NoProvider {
        /// Executor label.
        executor: String,
        /// The file's URL, redacted.
        url: String,
        /// In or out.
        direction: Direction,
        /// Instances in the order that failed to load.
        unavailable: Vec<String>,
    },
    /// A provider call failed.
    #[error("{0}")]
    Provider(Box<ProviderFailure>),
}

/// The name a staged file or directory called `name` (a URL's last segment) takes in
/// the working directory: `index` for one that would name the directory itself, its
/// parent, or stagehost's own `.stagehost`; never a path outside the working directory.
pub fn landing_name(name: &str) -> &str {
    match name {
        "" | "." | ".." | ".stagehost" => "index",
        name => name,
    }
}

impl StagingError {
    /// Its class for scripts: a provider's error kind; a file no provider claims is
    /// `other` (the workflow's error, caught before the run).
    pub fn class(&self) -> crate::report::FailureClass {
        match self {
            StagingError::Provider(f) => crate::report::FailureClass::of(f.error.kind()),
            _ => crate::report::FailureClass::Other,
        }
    }
}

/// A failed provider call: which file, provider, executor and call, and the error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot stage {} {url}: provider {instance:?} (plugin {plugin}) on executor {executor:?}: {call}: {}{}", direction_word(*direction), kind_part(error.kind()), error.message())]
pub struct ProviderFailure {
    /// In or out.
    pub direction: Direction,
    /// The file's URL, redacted.
    pub url: String,
    /// Instance name.
    pub instance: String,
    /// Plugin name and version.
    pub plugin: String,
    /// Executor label.
    pub executor: String,
    /// The call that failed (`stage_in`, `separate job`, ...).
    pub call: &'static str,
    /// The provider's error.
    pub error: StageError,
}

/// The error's kind before its message (`not found: `), or nothing when the kind says
/// nothing more (`Other`).
pub(crate) fn kind_part(kind: ErrorKind) -> String {
    match kind {
        ErrorKind::Other => String::new(),
        kind => format!("{kind}: "),
    }
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

fn unavailable_hint(unavailable: &[String]) -> String {
    if unavailable.is_empty() {
        String::new()
    } else {
        format!(
            " (not loaded for this executor: {}; see `stagehost plugins list`)",
            unavailable.join(", ")
        )
    }
}

impl StagingError {
    /// The provider's error kind, if a provider failed.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            StagingError::Provider(failure) => Some(failure.error.kind()),
            _ => None,
        }
    }
    /// Whether retrying may help (the provider marked its error transient).
    pub fn is_transient(&self) -> bool {
        self.kind().is_some_and(ErrorKind::is_transient)
    }
}

/// Per-call options: where files land, how long a call may take, and the channels.
#[derive(Clone, Default)]
pub struct StageOptions {
    /// Overrides the executor's working directory.
    pub working_dir: Option<PathBuf>,
    /// Deadline for each call, counted from its start.
    pub timeout: Option<Duration>,
    /// Raised to stop the work.
    pub cancel: CancelFlag,
    /// Where transfers report bytes.
    pub progress: Option<Arc<dyn ProgressSink>>,
    /// The file's preset `local_path` is the destination the host chose when it
    /// planned this file elsewhere (a pilot's worker re-planning a run's in-task
    /// step): what lands there is stagehost's own, as if planned here.
    pub at_host_destination: bool,
    /// The destination the host chose for this file already (a file of a directory:
    /// `<directory's destination>/<relative path>`), in place of the default one.
    pub destination: Option<PathBuf>,
}

struct ExecutorStaging {
    label: Arc<str>,
    working_dir: PathBuf,
    overwrite: bool,
    providers: Vec<Arc<ProviderInstance>>,
    unavailable: Vec<String>,
}

/// Chooses providers and plans staging for every executor of a registry.
pub struct DataManager {
    /// Few, so found by a scan (cheaper than hashing the label for every file).
    executors: Vec<ExecutorStaging>,
    /// The destinations claimed, by path (its bytes hashed with FNV-1a: cheaper than
    /// a path's component-wise SipHash), and the URL each is claimed for.
    destinations: Mutex<HashMap<std::ffi::OsString, String, Fnv>>,
}

/// Whether `file` names a file on this machine by its path: the `file` scheme with no
/// host (or `localhost`). Such a file is used where it is unless a provider copies it.
pub fn names_local_file(file: &File) -> bool {
    file.scheme() == "file" && matches!(file.netloc(), "" | "localhost")
}

/// The key a claim of `path` is kept under: the path made absolute, so that a
/// relative working directory and an absolute local path meet.
fn claim_key(path: &Path) -> std::borrow::Cow<'_, Path> {
    if path.is_absolute() {
        std::borrow::Cow::Borrowed(path)
    } else {
        std::path::absolute(path).map_or(std::borrow::Cow::Borrowed(path), std::borrow::Cow::Owned)
    }
}

/// `<working_dir>/.stagehost/<hash of url>/<name>`: where a file lands when another
/// URL has `<working_dir>/<name>`.
fn hashed_destination(working_dir: &Path, url: &str, name: &str) -> PathBuf {
    working_dir
        .join(".stagehost")
        .join(format!("{:016x}", fnv1a(url)))
        .join(name)
}

/// FNV-1a as a `Hasher`, for the claims (not exposed to input an attacker could
/// shape into collisions beyond their own workflow's URLs).
#[derive(Default, Clone, Copy)]
struct Fnv;

impl std::hash::BuildHasher for Fnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A piece of work a provider returned, with everything needed to run it: a separate
/// job or an in-task step. It runs once.
pub struct StagingWork {
    // A job object is `Send` but not `Sync`; the mutex makes the work shareable by
    // reference across await points without ever being locked concurrently.
    job: Mutex<AbiJobBox>,
    /// How it runs.
    pub mode: WorkMode,
    /// In or out.
    pub direction: Direction,
    /// The task's copy of the file.
    pub file: File,
    /// The provider that returned it.
    pub provider: Arc<ProviderInstance>,
    /// Executor label.
    pub executor: Arc<str>,
    working_dir: PathBuf,
    destination: PathBuf,
    /// Whether the file is at the host's destination (not a path the caller named):
    /// what stagehost puts there is recorded as its own.
    placed: bool,
    /// The executor's `overwrite`: a file stagehost did not put at the destination
    /// may be replaced.
    overwrite: bool,
    /// Whether this is the last work of the file (what it leaves is what the task
    /// gets).
    last: bool,
    /// The checksum the URL asks for, verified after this work when it is the last
    /// work of a stage-in.
    verify: Option<Checksum>,
}

impl StagingWork {
    /// Whether the file lands at the host's own destination.
    pub fn placed(&self) -> bool {
        self.placed
    }

    /// Runs the work on this thread (it blocks), with `opts`' cancellation flag,
    /// progress sink and a deadline of `opts.timeout` from now.
    pub fn run(self, opts: &StageOptions) -> Result<WorkDone, StagingError> {
        let call = self.mode.as_str();
        let fail = |call, e| {
            provider_error(
                self.direction,
                &self.file,
                &self.provider,
                &self.executor,
                call,
                e,
            )
        };
        let services = call_services(&self.provider, &self.executor, &self.file, opts);
        let ctx = abi_context(
            services,
            &self.working_dir,
            &self.destination,
            opts.timeout.map(|t| SystemTime::now() + t),
        )
        .map_err(|e| fail(call, e))?;
        let mut job = self
            .job
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.placed && self.direction == Direction::Out {
            // The task wrote its output at the host's destination: stagehost's own, so
            // a later run may replace it (and a provider may remove it).
            if let Ok(path) = self.file.filepath() {
                stagehost_plugin_api::landing::mark_placed(&self.file, &path, &self.working_dir);
            }
        }
        if self.placed && self.direction == Direction::In && !self.overwrite {
            // Checked again before every attempt, not only at planning: a file the
            // user saved there since (during a wait, between retries) is theirs.
            if let Ok(path) = self.file.filepath() {
                if !stagehost_plugin_api::landing::may_place(&self.file, &path, &self.working_dir) {
                    return Err(fail(
                        call,
                        StageError::new(
                            ErrorKind::Permission,
                            format!(
                                "{} appeared after planning and stagehost did not put it there; it is never overwritten: move it away, or set overwrite = true in [executor.{}]",
                                stagehost_plugin_api::display::path(&path),
                                self.executor
                            ),
                        ),
                    ));
                }
            }
        }
        job.run(&ctx)
            .into_result()
            .map_err(|e| fail(call, e.into()))?;
        if self.last && self.direction == Direction::In {
            if let Ok(path) = self.file.filepath() {
                stagehost_plugin_api::landing::check_staged_in(&self.file, &path)
                    .map_err(|e| fail(call, e))?;
                if self.placed {
                    stagehost_plugin_api::landing::mark_placed(
                        &self.file,
                        &path,
                        &self.working_dir,
                    );
                }
            }
        }
        if let (Some(checksum), Ok(path)) = (&self.verify, self.file.filepath()) {
            if let Err(e) = checksum.verify(&path) {
                // A copy at the host's destination with the wrong bytes goes, so no
                // task or later run reads it; a file used where it is stays untouched.
                if self.placed && e.kind() == ErrorKind::Integrity {
                    let _ = std::fs::remove_file(&path);
                }
                return Err(fail("checksum", e));
            }
        }
        Ok(WorkDone {
            cached: ctx.cached(),
        })
    }
}

/// What a piece of work that succeeded did, beyond writing the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkDone {
    /// The destination already held the current file; no bytes moved.
    pub cached: bool,
}

/// One file's staging, planned: the task's copy of the file, the provider, and the
/// work still to run.
pub struct Staging {
    /// In or out.
    pub direction: Direction,
    /// Executor label.
    pub executor: Arc<str>,
    /// The task's copy of the file (with `local_path` if the provider set one).
    pub file: File,
    /// The provider that claimed it.
    pub provider: Arc<ProviderInstance>,
    /// Work to run as a task of its own.
    pub separate_job: Option<Box<StagingWork>>,
    /// Work to run inside the task.
    pub in_task_step: Option<Box<StagingWork>>,
    /// The work that ran, in order.
    pub ran: Vec<WorkMode>,
    /// The file lands at the host's own destination (not a path the caller named).
    pub placed: bool,
}

impl Staging {
    /// How this file is staged: the separate job, the in-task step, or nothing.
    pub fn modes(&self) -> Vec<WorkMode> {
        [&self.separate_job, &self.in_task_step]
            .into_iter()
            .flatten()
            .map(|w| w.mode)
            .collect()
    }

    /// Runs the separate job, if any (blocking).
    pub fn run_separate_job(&mut self, opts: &StageOptions) -> Result<WorkDone, StagingError> {
        let mut done = WorkDone::default();
        if let Some(work) = self.separate_job.take() {
            done = work.run(opts)?;
            self.ran.push(WorkMode::SeparateJob);
        }
        Ok(done)
    }

    /// Runs the in-task step, if any (blocking).
    pub fn run_in_task_step(&mut self, opts: &StageOptions) -> Result<WorkDone, StagingError> {
        let mut done = WorkDone::default();
        if let Some(work) = self.in_task_step.take() {
            done = work.run(opts)?;
            self.ran.push(WorkMode::InTaskStep);
        }
        Ok(done)
    }
}

pub(crate) fn call_services<'a>(
    provider: &ProviderInstance,
    executor: &str,
    file: &'a File,
    opts: &StageOptions,
) -> ServicesFor<'a> {
    call_services_on(provider, executor.into(), file, opts)
}

/// [`call_services`] with the executor's label already shared.
fn call_services_on<'a>(
    provider: &ProviderInstance,
    executor: Arc<str>,
    file: &'a File,
    opts: &StageOptions,
) -> ServicesFor<'a> {
    ServicesFor {
        secrets: provider.secrets_longest_first.clone(),
        instance: provider.label.clone(),
        executor,
        url: file.url(),
        cancel: opts.cancel.clone(),
        progress: opts.progress.clone(),
    }
}

fn provider_error(
    direction: Direction,
    file: &File,
    provider: &ProviderInstance,
    executor: &str,
    call: &'static str,
    error: StageError,
) -> StagingError {
    // Whatever the plugin wrote, no secret of its settings and no credential of the
    // URL reaches a line the host shows.
    let error = scrub_error(error, provider, file);
    StagingError::Provider(Box::new(ProviderFailure {
        direction,
        url: file.redacted_url(),
        instance: provider.name.clone(),
        plugin: format!("{} {}", provider.plugin.name, provider.plugin.version),
        executor: executor.to_owned(),
        call,
        error,
    }))
}

/// `error` with every secret of `provider`'s settings and of `file`'s URL replaced by
/// `***`.
pub(crate) fn scrub_error(
    error: StageError,
    provider: &ProviderInstance,
    file: &File,
) -> StageError {
    let mut secrets: Vec<String> = provider.secrets.to_vec();
    secrets.extend(crate::secrets::url_secrets(file.url()));
    if secrets.is_empty() {
        return error;
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let message = crate::secrets::scrub(error.message(), &secrets);
    if message == error.message() {
        return error;
    }
    StageError::new(error.kind(), message)
}

/// A stable 64-bit FNV-1a hash, for destination subdirectories.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl DataManager {
    /// A data manager over the ready instances of `registry`.
    pub fn new(registry: &Registry) -> DataManager {
        let executors = registry
            .executors
            .iter()
            .map(|e| {
                let mut providers = Vec::new();
                let mut unavailable = Vec::new();
                for name in &e.order {
                    match registry.instance(name).map(|i| &i.status) {
                        Some(Ok(instance)) => providers.push(instance.clone()),
                        _ => unavailable.push(name.clone()),
                    }
                }
                ExecutorStaging {
                    label: e.label.as_str().into(),
                    working_dir: e.working_dir.clone(),
                    overwrite: e.overwrite,
                    providers,
                    unavailable,
                }
            })
            .collect();
        DataManager {
            executors,
            destinations: Mutex::new(HashMap::default()),
        }
    }

    /// The executor labels, sorted.
    pub fn executor_labels(&self) -> Vec<&str> {
        let mut labels: Vec<&str> = self.executors.iter().map(|e| &*e.label).collect();
        labels.sort_unstable();
        labels
    }

    /// The providers of executor `label`'s order that loaded, in order, and the names of
    /// those that did not.
    pub(crate) fn providers(
        &self,
        label: &str,
    ) -> Result<(&[Arc<ProviderInstance>], &[String]), StagingError> {
        let staging = self.executor(label)?;
        Ok((&staging.providers, &staging.unavailable))
    }

    /// The working directory of executor `label`.
    pub fn working_dir(&self, label: &str) -> Result<&Path, StagingError> {
        Ok(&self.executor(label)?.working_dir)
    }

    fn executor(&self, label: &str) -> Result<&ExecutorStaging, StagingError> {
        self.executors
            .iter()
            .find(|e| &*e.label == label)
            .ok_or_else(|| StagingError::UnknownExecutor {
                executor: label.to_owned(),
                known: self.executor_labels().join(", "),
            })
    }

    /// The first provider of `executor`'s order whose `can_stage_in` accepts `file`.
    pub fn choose_stage_in_provider(
        &self,
        executor: &str,
        file: &File,
    ) -> Result<&Arc<ProviderInstance>, StagingError> {
        self.choose(executor, file, Direction::In)
    }

    /// The first provider of `executor`'s order whose `can_stage_out` accepts `file`.
    pub fn choose_stage_out_provider(
        &self,
        executor: &str,
        file: &File,
    ) -> Result<&Arc<ProviderInstance>, StagingError> {
        self.choose(executor, file, Direction::Out)
    }

    fn choose(
        &self,
        executor: &str,
        file: &File,
        direction: Direction,
    ) -> Result<&Arc<ProviderInstance>, StagingError> {
        Self::choose_in(self.executor(executor)?, file, direction)
    }

    fn choose_in<'a>(
        staging: &'a ExecutorStaging,
        file: &File,
        direction: Direction,
    ) -> Result<&'a Arc<ProviderInstance>, StagingError> {
        let executor = &*staging.label;
        for provider in &staging.providers {
            let claimed = match direction {
                Direction::In => provider.can_stage_in(file),
                Direction::Out => provider.can_stage_out(file),
            };
            let call = match direction {
                Direction::In => "can_stage_in",
                Direction::Out => "can_stage_out",
            };
            match claimed {
                Ok(true) => return Ok(provider),
                Ok(false) => {}
                Err(e) => return Err(provider_error(direction, file, provider, executor, call, e)),
            }
        }
        Err(StagingError::NoProvider {
            executor: executor.to_owned(),
            url: file.redacted_url(),
            direction,
            unavailable: staging.unavailable.clone(),
        })
    }

    /// The default destination of `file`: its `local_path` if set, else
    /// `<working_dir>/<filename>` unless another URL already claimed that path, else
    /// `<working_dir>/.stagehost/<hash of url>/<filename>`. Nothing is claimed: a
    /// provider that places the file there claims it with [`DataManager::claim_at`],
    /// which tells when another URL got there first.
    fn default_destination(&self, working_dir: &Path, file: &File) -> PathBuf {
        if let Some(local) = file.local_path() {
            return local.to_path_buf();
        }
        let name = landing_name(file.filename());
        // `working_dir.join(name)`, allocated once at its size.
        let mut plain = PathBuf::with_capacity(working_dir.as_os_str().len() + 1 + name.len());
        plain.push(working_dir);
        plain.push(name);
        let claims = self
            .destinations
            .lock()
            .expect("the claims lock is never poisoned");
        match claims.get(claim_key(&plain).as_os_str()) {
            Some(owner) if owner != file.url() => hashed_destination(working_dir, file.url(), name),
            _ => plain,
        }
    }

    /// Claims `path` for `url`, where a provider placed it: whether this call made the
    /// claim (`false`: the URL had it already), or `None` when another URL has it.
    fn claim_at(&self, path: &Path, url: &str) -> Option<bool> {
        let key = claim_key(path);
        let mut claims = self
            .destinations
            .lock()
            .expect("the claims lock is never poisoned");
        match claims.get(key.as_os_str()) {
            Some(owner) => (owner == url).then_some(false),
            None => {
                claims.insert(key.into_owned().into_os_string(), url.to_owned());
                Some(true)
            }
        }
    }

    /// Holds `path`, a local file a provider uses where it is, for the run: no file
    /// staged from elsewhere lands there (it gets the `.stagehost/<hash>/` place, as
    /// for two URLs with one name). Every spelling of a local file holds it for all of
    /// them; `false` when a file staged from elsewhere landed there first.
    pub fn hold_in_place(&self, path: &Path) -> bool {
        // No URL is empty (an empty one is refused): the empty owner is no URL's, the
        // same for every spelling of the path, and costs no allocation.
        self.claim_at(path, "").is_some()
    }

    /// `<working_dir>/<name>` claimed for `url`, or, when another URL claimed it,
    /// `<working_dir>/.stagehost/<hash of url>/<name>`; whether this call made the
    /// claim. One rule for files and directories (see `tree`).
    pub(crate) fn claim(&self, working_dir: &Path, name: &str, url: &str) -> (PathBuf, bool) {
        let plain = working_dir.join(name);
        let mut claims = self
            .destinations
            .lock()
            .expect("the claims lock is never poisoned");
        match claims.get(claim_key(&plain).as_os_str()) {
            Some(owner) if owner != url => {
                let hashed = hashed_destination(working_dir, url, name);
                let key = claim_key(&hashed).into_owned().into_os_string();
                let fresh = !claims.contains_key(&key);
                claims.entry(key).or_insert_with(|| url.to_owned());
                (hashed, fresh)
            }
            Some(_) => (plain, false),
            None => {
                claims.insert(
                    claim_key(&plain).into_owned().into_os_string(),
                    url.to_owned(),
                );
                (plain, true)
            }
        }
    }

    /// Releases a claim made by [`DataManager::claim_at`] for a file that may not be
    /// placed there after all.
    fn release(&self, path: &Path, url: &str) {
        let mut claims = self
            .destinations
            .lock()
            .expect("the claims lock is never poisoned");
        let key = claim_key(path);
        if claims.get(key.as_os_str()).is_some_and(|u| u == url) {
            claims.remove(key.as_os_str());
        }
    }

    /// Plans the stage-in of `file` on `executor`: chooses the provider, then calls its
    /// `stage_in` and `replace_task` on one fresh copy. Blocks.
    pub fn plan_stage_in(
        &self,
        executor: &str,
        file: &File,
        opts: &StageOptions,
    ) -> Result<Staging, StagingError> {
        self.plan(executor, file, opts, Direction::In)
    }

    /// Plans the stage-out of `file` on `executor`: chooses the provider, then calls its
    /// `stage_out` and `replace_task_stage_out` on one fresh copy. Blocks. Call it
    /// before the task runs: the provider may set where the task writes.
    pub fn plan_stage_out(
        &self,
        executor: &str,
        file: &File,
        opts: &StageOptions,
    ) -> Result<Staging, StagingError> {
        self.plan(executor, file, opts, Direction::Out)
    }

    fn plan(
        &self,
        executor: &str,
        file: &File,
        opts: &StageOptions,
        direction: Direction,
    ) -> Result<Staging, StagingError> {
        let staging = self.executor(executor)?;
        let provider = Self::choose_in(staging, file, direction)?.clone();
        let working_dir: &Path = opts.working_dir.as_deref().unwrap_or(&staging.working_dir);
        let (first, second) = match direction {
            Direction::In => (PlanningCall::StageIn, PlanningCall::ReplaceTask),
            Direction::Out => (PlanningCall::StageOut, PlanningCall::ReplaceTaskStageOut),
        };
        // A stage-in verifies the checksum its URL names, after the last piece of work.
        let checksum = match direction {
            Direction::In => Checksum::from_url(file.url())
                .map_err(|e| provider_error(direction, file, &provider, executor, "checksum", e))?,
            Direction::Out => None,
        };
        // The host's default destination is claimed for this URL only once a provider
        // placed the file there (most local files are used where they are, and claim
        // nothing); another URL that claimed it meanwhile means planning again, with
        // the destination that rule now gives.
        let claimable = opts.destination.is_none() && file.local_path().is_none();
        let taken = |path: &Path, why: &str| {
            provider_error(
                direction,
                file,
                &provider,
                executor,
                "planning",
                StageError::new(
                    ErrorKind::Other,
                    format!("{} {why}", stagehost_plugin_api::display::path(path)),
                ),
            )
        };
        let mut attempts = 0;
        let mut copy;
        let mut jobs: [Option<AbiJobBox>; 2];
        let mut destination;
        let fresh_claim = loop {
            destination = match (&opts.destination, file.local_path()) {
                (Some(chosen), None) => chosen.clone(),
                _ => self.default_destination(working_dir, file),
            };
            // One context serves both planning calls: they describe the same use of
            // the file.
            let ctx = abi_context(
                call_services_on(&provider, staging.label.clone(), file, opts),
                working_dir,
                &destination,
                opts.timeout.map(|t| SystemTime::now() + t),
            )
            .map_err(|e| provider_error(direction, file, &provider, executor, first.as_str(), e))?;
            copy = file.clone();
            jobs = [None, None];
            for (call, slot) in [first, second].into_iter().zip(&mut jobs) {
                *slot = provider.plan(call, &ctx, &mut copy).map_err(|e| {
                    provider_error(direction, file, &provider, executor, call.as_str(), e)
                })?;
            }
            if !(claimable && copy.local_path() == Some(destination.as_path())) {
                // A local file used where it is holds its path: a file staged from
                // elsewhere with the same name never lands on it (a task read the
                // download's bytes for its own output, and a zip working copy removed
                // a task's output).
                let local = names_local_file(file);
                if let (true, true, Some(path)) = (claimable, local, copy.local_path()) {
                    if !self.hold_in_place(path) {
                        return Err(taken(path, "is where a file staged from elsewhere with the same name landed in this run; name the local file differently"));
                    }
                }
                break false;
            }
            match self.claim_at(&destination, file.url()) {
                Some(fresh) => break fresh,
                None if attempts < 3 => attempts += 1,
                None => {
                    return Err(taken(&destination, "is claimed by another URL of this run, again and again; stage this file with a destination of its own"));
                }
            }
        };
        // Where a staged file lands is the host's to decide: a provider may point the
        // task at the destination it was given, or leave the file where it is, and
        // nothing else. (A provider that picked a path of its own let two URLs share
        // one file, so one task read the other's bytes.)
        stagehost_plugin_api::landing::check_placement(copy.local_path(), &destination)
            .map_err(|e| provider_error(direction, file, &provider, executor, "planning", e))?;
        let placed = match file.local_path() {
            None => copy.local_path() == Some(destination.as_path()),
            Some(preset) => opts.at_host_destination && copy.local_path() == Some(preset),
        };
        if placed {
            let refuse = |e| {
                if fresh_claim {
                    self.release(&destination, file.url());
                }
                provider_error(direction, file, &provider, executor, "planning", e)
            };
            // The host's own directories (`.stagehost/<hash>/`) are real, private
            // directories: a link planted there never sends a file elsewhere.
            stagehost_plugin_api::landing::ensure_private_dirs(working_dir, &destination)
                .map_err(refuse)?;
            // A file stagehost did not put there is never replaced (by a download, or by
            // a task writing its output), unless the executor allows it. A destination
            // this URL already claimed in this process is this run's own.
            if fresh_claim
                && !staging.overwrite
                && !stagehost_plugin_api::landing::may_place(file, &destination, working_dir)
            {
                return Err(refuse(StageError::new(
                    ErrorKind::Permission,
                    format!(
                        "{} already exists and stagehost did not put it there; it is never overwritten: move it away, or set overwrite = true in [executor.{executor}]",
                        stagehost_plugin_api::display::path(&destination)
                    ),
                )));
            }
            // Where replacing is allowed, a link at an output's place is removed before
            // the task runs: the task's writes never follow it elsewhere.
            if direction == Direction::Out
                && std::fs::symlink_metadata(&destination).is_ok_and(|m| m.file_type().is_symlink())
            {
                let _ = std::fs::remove_file(&destination);
            }
        }
        let [separate, in_task] = jobs;
        if let (Some(c), None, None) = (&checksum, &separate, &in_task) {
            // Nothing to move: the file is used where it is, and checked there.
            let path = copy
                .filepath()
                .map_err(|e| provider_error(direction, file, &provider, executor, "checksum", e))?;
            c.verify(&path)
                .map_err(|e| provider_error(direction, file, &provider, executor, "checksum", e))?;
        }
        let last_is_separate = in_task.is_none();
        let work = |job: Option<AbiJobBox>, mode, verify: bool| {
            job.map(|job| {
                Box::new(StagingWork {
                    job: Mutex::new(job),
                    mode,
                    direction,
                    file: copy.clone(),
                    provider: provider.clone(),
                    executor: staging.label.clone(),
                    working_dir: working_dir.to_path_buf(),
                    destination: destination.clone(),
                    placed,
                    overwrite: staging.overwrite,
                    last: verify,
                    verify: if verify { checksum.clone() } else { None },
                })
            })
        };
        let separate_job = work(separate, WorkMode::SeparateJob, last_is_separate);
        let in_task_step = work(in_task, WorkMode::InTaskStep, true);
        Ok(Staging {
            direction,
            executor: staging.label.clone(),
            file: copy,
            provider,
            separate_job,
            in_task_step,
            ran: Vec::new(),
            placed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_provider_error_is_parsls_text() {
        let e = StagingError::NoProvider {
            executor: "local".into(),
            url: "http://h/x".into(),
            direction: Direction::In,
            unavailable: vec![],
        };
        assert_eq!(e.to_string(), "Executor local cannot stage file http://h/x");
        let e = StagingError::NoProvider {
            executor: "local".into(),
            url: "http://h/x".into(),
            direction: Direction::Out,
            unavailable: vec!["http".into()],
        };
        assert_eq!(
            e.to_string(),
            "Executor local cannot stage out file http://h/x (not loaded for this executor: http; see `stagehost plugins list`)"
        );
    }

    #[test]
    fn a_dot_dot_basename_never_escapes_the_working_dir() {
        let dm = DataManager {
            executors: Vec::new(),
            destinations: Mutex::new(HashMap::default()),
        };
        for url in ["http://h/a/..", "http://h/a/.", "http://h/", "http://h"] {
            let dest = dm.default_destination(Path::new("/wd"), &File::parse(url).unwrap());
            assert_eq!(dest, Path::new("/wd/index"), "{url}");
            assert_eq!(dm.claim_at(&dest, url), Some(true));
            dm.release(&dest, url);
        }
    }

    #[test]
    fn two_urls_planned_at_once_never_share_a_destination() {
        let dm = DataManager {
            executors: Vec::new(),
            destinations: Mutex::new(HashMap::default()),
        };
        let a = File::parse("zip:/a.zip/data.txt").unwrap();
        let b = File::parse("zip:/b.zip/data.txt").unwrap();
        let wd = Path::new("/wd");
        // Both see the plain destination before either is placed; the first to claim
        // it has it, and the other is told, then given its own.
        let (da, db) = (
            dm.default_destination(wd, &a),
            dm.default_destination(wd, &b),
        );
        assert_eq!((&da, &db), (&wd.join("data.txt"), &wd.join("data.txt")));
        assert_eq!(dm.claim_at(&da, a.url()), Some(true));
        assert_eq!(dm.claim_at(&db, b.url()), None, "another URL has it");
        let db = dm.default_destination(wd, &b);
        assert_ne!(da, db);
        assert_eq!(dm.claim_at(&db, b.url()), Some(true));
        let da2 = dm.default_destination(wd, &a);
        assert_eq!(da2, da, "one URL, one destination");
        assert_eq!(dm.claim_at(&da2, a.url()), Some(false));
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
