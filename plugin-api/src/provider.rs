//! The author-facing side: the [`Provider`] trait, the [`Context`] a call receives and
//! the [`Job`] a call may return. Nothing here is ABI-specific; `abi` adapts it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::abi::AbiContext;
use crate::error::{ErrorKind, StageError};
use crate::file::File;
use crate::settings::Settings;

/// A staging provider, as Parsl's `Staging` base class: six calls, each defaulting to
/// "claims nothing, does nothing".
///
/// The host asks the providers of an executor, in the site's order, whether they can
/// stage a file; the first that says yes handles it, even if it then has nothing to do.
///
/// There are two ways to do work:
/// - a **separate job**, returned by [`Provider::stage_in`] / [`Provider::stage_out`]:
///   the host runs it as a task of its own, before the task (stage-in) or after it
///   (stage-out);
/// - an **in-task step**, returned by [`Provider::replace_task`] /
///   [`Provider::replace_task_stage_out`]: the host runs it inside the task, just before
///   the body (stage-in) or just after it (stage-out).
///
/// Each call receives a fresh copy of the task's `File` and may set its `local_path`
/// (where the task will find or write the file). For one file of one task the host passes
/// the copy returned by `stage_in` on to `replace_task`, and likewise for stage-out.
///
/// Every call is made on a blocking thread; a call may block on I/O. A panic is caught
/// at the plugin boundary and becomes an [`ErrorKind::Panicked`] error for that file.
pub trait Provider: Send + Sync + 'static {
    /// Builds an instance from its `settings` table in the host's config.
    fn new(settings: &Settings) -> Result<Self, StageError>
    where
        Self: Sized;

    /// Whether this provider stages `file` in. Must be pure and fast.
    fn can_stage_in(&self, _file: &File) -> bool {
        false
    }
    /// Whether this provider stages `file` out. Must be pure and fast.
    fn can_stage_out(&self, _file: &File) -> bool {
        false
    }
    /// [`Provider::can_stage_in`] that may also refuse a URL of its scheme that it
    /// will never stage, as Parsl's `ZipFileStaging` raises for a `zip:` URL with a
    /// netloc: the error ends the file's planning with one clear line, naming the
    /// provider, instead of passing the file on to the next provider. The host calls
    /// this one; the default asks `can_stage_in`. (Added in 0.1.2.)
    fn try_can_stage_in(&self, file: &File) -> Result<bool, StageError> {
        Ok(self.can_stage_in(file))
    }
    /// [`Provider::can_stage_out`] that may refuse, as
    /// [`Provider::try_can_stage_in`]. (Added in 0.1.2.)
    fn try_can_stage_out(&self, file: &File) -> Result<bool, StageError> {
        Ok(self.can_stage_out(file))
    }
    /// Plans a stage-in; may return a separate job.
    fn stage_in(&self, _ctx: &Context<'_>, _file: &mut File) -> Result<Option<Job>, StageError> {
        Ok(None)
    }
    /// Plans a stage-out before the task runs; may return a separate job that the host
    /// runs after the task body.
    fn stage_out(&self, _ctx: &Context<'_>, _file: &mut File) -> Result<Option<Job>, StageError> {
        Ok(None)
    }
    /// May return an in-task step that runs just before the task body.
    fn replace_task(
        &self,
        _ctx: &Context<'_>,
        _file: &mut File,
    ) -> Result<Option<Job>, StageError> {
        Ok(None)
    }
    /// May return an in-task step that runs just after the task body.
    fn replace_task_stage_out(
        &self,
        _ctx: &Context<'_>,
        _file: &mut File,
    ) -> Result<Option<Job>, StageError> {
        Ok(None)
    }
}

type JobFn = Box<dyn FnOnce(&Context<'_>) -> Result<(), StageError> + Send + 'static>;

/// Work a provider hands to the host: a separate staging job or an in-task step. It
/// receives the context of the moment it runs (progress, cancellation, deadline).
pub struct Job(pub(crate) JobFn);

impl Job {
    /// Wraps the work. The closure runs at most once, on a blocking thread.
    pub fn new(work: impl FnOnce(&Context<'_>) -> Result<(), StageError> + Send + 'static) -> Job {
        Job(Box::new(work))
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// The level of a message sent through [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    /// Something failed.
    Error = 1,
    /// Something looks wrong.
    Warn = 2,
    /// Progress a user cares about.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
    /// Even more detail.
    Trace = 5,
}

impl LogLevel {
    /// The level for a wire value; unknown values read as `Trace`.
    pub fn from_u8(value: u8) -> LogLevel {
        match value {
            1 => LogLevel::Error,
            2 => LogLevel::Warn,
            3 => LogLevel::Info,
            4 => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }
}

/// What the host tells a call: who is asking, where files go, and the channels back
/// (log, progress, cancellation).
pub struct Context<'a> {
    abi: &'a AbiContext,
}

impl<'a> Context<'a> {
    pub(crate) fn new(abi: &'a AbiContext) -> Context<'a> {
        Context { abi }
    }
    /// The label of the executor the task runs on.
    pub fn executor(&self) -> &str {
        &self.abi.executor
    }
    /// The executor's working directory.
    pub fn working_dir(&self) -> &Path {
        Path::new(self.abi.working_dir.as_str())
    }
    /// This provider instance's name in the host's config.
    pub fn instance(&self) -> &str {
        &self.abi.instance
    }
    /// Where the host wants this file placed on the task's side. Always an absolute
    /// path:
    /// - the file's `local_path`, if the caller set one (a stage-out of an output that
    ///   already exists);
    /// - else `<working_dir>/<filename>`, with `index` as the name when the URL's
    ///   basename is empty, `.` or `..` (`http://h/`, `http://h/a/..`), so a file never
    ///   lands outside the working directory;
    /// - when another URL with the same basename already claimed that path in this run,
    ///   `<working_dir>/.stagehost/<16 hex digits>/<filename>`, the digits a hash of the
    ///   URL: two URLs never share a destination, and one URL always gets the same one.
    ///
    /// The directory may not exist yet; [`fs::AtomicFile`](crate::fs::AtomicFile)
    /// creates it.
    pub fn destination(&self) -> &Path {
        Path::new(self.abi.destination.as_str())
    }
    /// Sends a message to the host's log, tagged with the instance and executor.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.abi.services.log(level as u8, message.into());
    }
    /// [`Context::log`] at [`LogLevel::Info`].
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message);
    }
    /// [`Context::log`] at [`LogLevel::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(LogLevel::Debug, message);
    }
    /// Reports bytes done out of `total`, if known. Cheap; call it as often as you read.
    pub fn progress(&self, done: u64, total: Option<u64>) {
        self.abi.services.progress(done, total.into());
    }
    /// Tells the host that the destination already held the current file and no
    /// bytes moved (a revalidation that found it unchanged); the host's report then
    /// says `cached`. Call it only when the work succeeds that way.
    ///
    /// It goes through the host's `cached` capability; a host without it (older than
    /// plugin-api 0.1.6) gets the notice it understands instead.
    pub fn cached(&self) {
        match crate::abi::capability::host().cached {
            Some(table) => (table.cached)(self.abi),
            None => self.abi.services.log(
                crate::abi::NOTICE_CACHED,
                "the destination already holds the current file (cached)".into(),
            ),
        }
    }
    /// Whether the host asked this work to stop.
    pub fn is_cancelled(&self) -> bool {
        self.abi.services.is_cancelled()
    }
    /// The moment this call must be done by, if any.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.abi
            .deadline_unix_ms
            .into_option()
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }
    /// Time left before the deadline (zero once past it), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline().map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }
    /// `Err(Cancelled)` once the host cancelled, `Err(TimedOut)` once past the
    /// deadline; call it between chunks of a long transfer.
    pub fn check(&self) -> Result<(), StageError> {
        if self.is_cancelled() {
            return Err(StageError::new(ErrorKind::Cancelled, "cancelled"));
        }
        if self.remaining() == Some(Duration::ZERO) {
            return Err(StageError::new(ErrorKind::TimedOut, "deadline passed"));
        }
        Ok(())
    }
}
