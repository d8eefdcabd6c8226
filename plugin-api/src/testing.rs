//! A test kit for provider authors (feature `testing`): run your provider's calls and
//! the jobs they return in-process, in a plain `#[test]`, with the context the host
//! would give them.
//!
//! [`TestHost`] owns a fresh temporary working directory (removed when it is
//! dropped), captures every log line and progress report, and has switches for
//! cancellation and deadlines. [`TestHost::stage_in`] and [`TestHost::stage_out`] do
//! what the host does for one file: one fresh copy through the two planning calls,
//! then the separate job and the in-task step, in the host's order. As in the host, a
//! panic in your code becomes an [`ErrorKind::Panicked`] error.
//!
//! ```
//! use stagehost_plugin_api::testing::TestHost;
//! use stagehost_plugin_api::{Context, File, Job, Provider, Settings, StageError};
//!
//! struct Hello;
//! impl Provider for Hello {
//!     fn new(_: &Settings) -> Result<Self, StageError> {
//!         Ok(Hello)
//!     }
//!     fn can_stage_in(&self, file: &File) -> bool {
//!         file.scheme() == "hello"
//!     }
//!     fn stage_in(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
//!         let dest = ctx.destination().to_path_buf();
//!         file.set_local_path(&dest);
//!         Ok(Some(Job::new(move |ctx| {
//!             ctx.info("greeting");
//!             std::fs::write(&dest, "hello\n").map_err(|e| StageError::io("write", &e))?;
//!             ctx.progress(6, Some(6));
//!             Ok(())
//!         })))
//!     }
//! }
//!
//! let host = TestHost::new();
//! let provider = Hello::new(&Settings::from_toml("")).unwrap();
//! let staged = host.stage_in(&provider, "hello:///world.txt").unwrap();
//! let path = staged.file.filepath().unwrap();
//! assert_eq!(path, host.working_dir().join("world.txt"));
//! assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
//! assert_eq!(staged.ran, ["separate job"]);
//! assert_eq!(host.logs()[0].1, "greeting");
//! assert_eq!(host.progress().last(), Some(&(6, Some(6))));
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_stable::sabi_trait::TD_CanDowncast;
use abi_stable::std_types::{ROption, RStr};

use crate::abi::capability::{CachedV1, Capability, CapabilityTable};
use crate::abi::{AbiContext, HostServices, HostServices_TO};
use crate::error::{ErrorKind, StageError};
use crate::file::File;
use crate::provider::{Context, Job, LogLevel, Provider};

#[derive(Default)]
struct Captured {
    logs: Mutex<Vec<(LogLevel, String)>>,
    progress: Mutex<Vec<(u64, Option<u64>)>>,
    cancelled: AtomicBool,
    cached: AtomicBool,
}

struct Services(Arc<Captured>);

impl HostServices for Services {
    fn log(&self, level: u8, message: RStr<'_>) {
        if level == crate::abi::NOTICE_CACHED {
            self.0.cached.store(true, Ordering::SeqCst);
            return;
        }
        let mut logs = self.0.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.push((LogLevel::from_u8(level), message.as_str().to_owned()));
    }
    fn progress(&self, done: u64, total: ROption<u64>) {
        let mut progress = self.0.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.push((done, total.into_option()));
    }
    fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }
}

/// The test host's `cached` capability: marks the call's services.
extern "C" fn cached(ctx: &AbiContext) {
    if let Ok(services) = ctx.services.obj.downcast_as::<Services>() {
        services.0.cached.store(true, Ordering::SeqCst);
    }
}

static CACHED: CachedV1 = CachedV1 { cached };

/// Offers the test host's capabilities to the plugin code in this process, as a host
/// does when it loads a library.
fn offer_host_capabilities() {
    static OFFERED: std::sync::OnceLock<[Capability; 1]> = std::sync::OnceLock::new();
    crate::abi::capability::accept_host(OFFERED.get_or_init(|| [CachedV1::offer(&CACHED)]));
}

/// A stand-in for the host: a temporary working directory, captured log lines and
/// progress, and switches for cancellation and deadlines.
pub struct TestHost {
    dir: PathBuf,
    executor: String,
    instance: String,
    deadline: Mutex<Option<SystemTime>>,
    captured: Arc<Captured>,
}

/// What [`TestHost::stage_in`] or [`TestHost::stage_out`] did for one file.
#[derive(Debug)]
pub struct Staged {
    /// The provider's copy of the file, with `local_path` if it set one.
    pub file: File,
    /// The work that ran, in order: `"separate job"`, `"in-task step"`.
    pub ran: Vec<&'static str>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// A host with a fresh, empty working directory under the system's temporary
    /// directory, executor `local` and instance `test`.
    pub fn new() -> TestHost {
        offer_host_capabilities();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "stagehost-testhost-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("the system's temporary directory is writable");
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        TestHost {
            dir,
            executor: "local".into(),
            instance: "test".into(),
            deadline: Mutex::new(None),
            captured: Arc::new(Captured::default()),
        }
    }

    /// The working directory (absolute; removed when the host is dropped).
    pub fn working_dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the executor label calls see.
    pub fn with_executor(mut self, label: &str) -> TestHost {
        self.executor = label.into();
        self
    }

    /// Sets the instance name calls see.
    pub fn with_instance(mut self, name: &str) -> TestHost {
        self.instance = name.into();
        self
    }

    /// Raises the cancellation flag: `Context::is_cancelled` is true from now on and
    /// `Context::check` fails with `Cancelled`.
    pub fn cancel(&self) {
        self.captured.cancelled.store(true, Ordering::SeqCst);
    }

    /// Sets the deadline calls see (`None`: no deadline). A deadline in the past makes
    /// `Context::check` fail with `TimedOut`.
    pub fn set_deadline(&self, deadline: Option<SystemTime>) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = deadline;
    }

    /// A deadline `timeout` from now.
    pub fn set_timeout(&self, timeout: Duration) {
        self.set_deadline(Some(SystemTime::now() + timeout));
    }

    /// Every log line so far, with its level.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.captured
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether a job called [`Context::cached`]: the host's report would say `cached`.
    pub fn was_cached(&self) -> bool {
        self.captured.cached.load(Ordering::SeqCst)
    }

    /// Every progress report so far: bytes done and the total, if known.
    pub fn progress(&self) -> Vec<(u64, Option<u64>)> {
        self.captured
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where the host would place `file`: its `local_path` if set, else
    /// `<working_dir>/<filename>`, with `index` for an empty, `.` or `..` basename.
    /// (The host also moves a second URL with an already-claimed basename to
    /// `<working_dir>/.stagehost/<hash>/<filename>`; this kit stages one file at a
    /// time.)
    pub fn destination(&self, file: &File) -> PathBuf {
        if let Some(local) = file.local_path() {
            return local.to_path_buf();
        }
        let name = match file.filename() {
            "" | "." | ".." => "index",
            name => name,
        };
        self.dir.join(name)
    }

    /// A context for a call about `file`, as the host builds it.
    pub fn context(&self, file: &File) -> TestContext {
        let deadline = *self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        TestContext {
            abi: AbiContext {
                executor: self.executor.as_str().into(),
                working_dir: self.dir.to_string_lossy().as_ref().into(),
                instance: self.instance.as_str().into(),
                destination: self.destination(file).to_string_lossy().as_ref().into(),
                deadline_unix_ms: deadline
                    .map(|d| {
                        d.duration_since(UNIX_EPOCH)
                            .map_or(0, |t| t.as_millis() as u64)
                    })
                    .into(),
                services: HostServices_TO::from_value(
                    Services(self.captured.clone()),
                    TD_CanDowncast,
                ),
            },
        }
    }

    /// Runs `job` (from a call about `file`) with a fresh context, as the host does; a
    /// panic becomes an [`ErrorKind::Panicked`] error.
    pub fn run_job(&self, job: Job, file: &File) -> Result<(), StageError> {
        let ctx = self.context(file);
        guarded("a staging job", || (job.0)(&ctx.context()))
    }

    /// Asks `provider` the `stat` capability's question about `url`, as the host does
    /// (a panic becomes an [`ErrorKind::Panicked`] error).
    pub fn stat<P: crate::capability::Stat>(
        &self,
        provider: &P,
        url: &str,
    ) -> Result<Option<crate::capability::Entry>, StageError> {
        let file = File::parse(url)?;
        let ctx = self.context(&file);
        guarded("stat", || provider.stat(&ctx.context(), &file))
    }

    /// Asks `provider` for the entries below `url` (the `list` capability), sorted by
    /// name as the host sorts them.
    pub fn list<P: crate::capability::List>(
        &self,
        provider: &P,
        url: &str,
        recursive: bool,
    ) -> Result<Vec<crate::capability::Entry>, StageError> {
        let file = File::parse(url)?;
        let ctx = self.context(&file);
        let mut entries = guarded("list", || provider.list(&ctx.context(), &file, recursive))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Stages `url` in with `provider` as the host does: `can_stage_in` must accept it;
    /// one fresh copy goes through `stage_in` then `replace_task`; then the separate
    /// job runs, then the in-task step.
    pub fn stage_in<P: Provider>(&self, provider: &P, url: &str) -> Result<Staged, StageError> {
        let file = File::parse(url)?;
        if !guarded("can_stage_in", || provider.try_can_stage_in(&file))? {
            return Err(StageError::other(format!(
                "the provider does not claim {url} for stage-in"
            )));
        }
        self.stage(
            file,
            |ctx, f| provider.stage_in(ctx, f),
            |ctx, f| provider.replace_task(ctx, f),
            true,
        )
    }

    /// Stages `local` out to `url` with `provider` as the host does for an output the
    /// task already wrote: `local_path` is set to `local`; `can_stage_out` must accept
    /// it; one copy goes through `stage_out` then `replace_task_stage_out`; then the
    /// in-task step runs, then the separate job.
    pub fn stage_out<P: Provider>(
        &self,
        provider: &P,
        local: &Path,
        url: &str,
    ) -> Result<Staged, StageError> {
        let mut file = File::parse(url)?;
        file.set_local_path(local);
        if !guarded("can_stage_out", || provider.try_can_stage_out(&file))? {
            return Err(StageError::other(format!(
                "the provider does not claim {url} for stage-out"
            )));
        }
        self.stage(
            file,
            |ctx, f| provider.stage_out(ctx, f),
            |ctx, f| provider.replace_task_stage_out(ctx, f),
            false,
        )
    }

    fn stage(
        &self,
        file: File,
        first: impl FnOnce(&Context<'_>, &mut File) -> Result<Option<Job>, StageError>,
        second: impl FnOnce(&Context<'_>, &mut File) -> Result<Option<Job>, StageError>,
        separate_first: bool,
    ) -> Result<Staged, StageError> {
        let ctx = self.context(&file);
        let mut copy = file.clone();
        let separate = guarded("the first planning call", || {
            first(&ctx.context(), &mut copy)
        })?;
        let in_task = guarded("the second planning call", || {
            second(&ctx.context(), &mut copy)
        })?;
        // The host's rules, checked as the host checks them.
        crate::landing::check_placement(copy.local_path(), &self.destination(&file))?;
        let mut work = vec![(separate, "separate job"), (in_task, "in-task step")];
        if !separate_first {
            work.reverse();
        }
        let mut ran = Vec::new();
        for (job, name) in work {
            if let Some(job) = job {
                self.run_job(job, &copy)?;
                ran.push(name);
            }
        }
        if separate_first && !ran.is_empty() {
            if let Ok(path) = copy.filepath() {
                crate::landing::check_staged_in(&copy, &path)?;
            }
        }
        Ok(Staged { file: copy, ran })
    }
}

/// The host's rules, as one check every provider's tests can run (the shipped ones
/// do): [`conformance`].
#[derive(Debug, Clone, Copy)]
pub struct Conformance<'a> {
    /// A URL the provider stages in successfully.
    pub good: &'a str,
    /// A URL the provider fails to stage in (a missing file), if it has work that can
    /// fail (a provider that uses files where they are has none).
    pub missing: Option<&'a str>,
    /// Secrets (passwords, tokens in settings or in the URLs) that must never appear in
    /// a log line or an error.
    pub secrets: &'a [&'a str],
}

/// Checks what the host requires of every provider, each in a fresh [`TestHost`]:
/// - `good` lands at the host's destination (a provider never picks the path), as a
///   regular file without set-id bits or group/other write;
/// - staged in after the host cancelled, it fails as cancelled (or has no work) and
///   leaves no file in the working directory, not even a temporary one;
/// - `missing` fails with a kind other than `Panicked`, and neither that error nor
///   any log line of the three stagings holds one of `secrets`.
///
/// Returns the first rule broken, in one line.
pub fn conformance<P: Provider>(provider: &P, c: Conformance<'_>) -> Result<(), String> {
    let leaks = |what: &str, text: &str| -> Result<(), String> {
        match c
            .secrets
            .iter()
            .find(|s| !s.is_empty() && text.contains(*s))
        {
            Some(_) => Err(format!("a secret appears in {what}: {text}")),
            None => Ok(()),
        }
    };
    let check_logs = |host: &TestHost| -> Result<(), String> {
        for (_, line) in host.logs() {
            leaks("a log line", &line)?;
        }
        Ok(())
    };
    // It lands where the host says, as the host requires (checked by `stage_in`).
    let host = TestHost::new();
    let staged = host
        .stage_in(provider, c.good)
        .map_err(|e| format!("{}: {e}", c.good))?;
    if let Ok(path) = staged.file.filepath() {
        if staged.file.local_path().is_some() {
            let want = host.destination(&File::parse(c.good).map_err(|e| e.to_string())?);
            if path != want {
                return Err(format!(
                    "{} landed at {}, not at the host's destination {}",
                    c.good,
                    path.display(),
                    want.display()
                ));
            }
        }
    }
    check_logs(&host)?;
    // Cancelled: nothing is left.
    let host = TestHost::new();
    host.cancel();
    match host.stage_in(provider, c.good) {
        Err(e) if e.kind() == ErrorKind::Cancelled => {}
        Err(e) => {
            return Err(format!(
                "cancelled, {} failed as {}, not cancelled: {e}",
                c.good,
                e.kind()
            ))
        }
        Ok(staged) if staged.ran.is_empty() => {}
        Ok(_) => return Err(format!("cancelled before it ran, {} still staged", c.good)),
    }
    let left = files_under(host.working_dir());
    if !left.is_empty() {
        return Err(format!("a cancelled stage-in left {left:?}"));
    }
    check_logs(&host)?;
    // A failure is an error of its own kind, and shows no secret.
    let Some(missing) = c.missing else {
        return Ok(());
    };
    let host = TestHost::new();
    match host.stage_in(provider, missing) {
        Ok(_) => return Err(format!("{missing} was staged in, but it should not exist")),
        Err(e) if e.kind() == ErrorKind::Panicked => {
            return Err(format!("{missing} panicked: {e}"))
        }
        Err(e) => leaks("an error", &e.to_string())?,
    }
    check_logs(&host)?;
    if !files_under(host.working_dir()).is_empty() {
        return Err(format!("a failed stage-in of {missing} left a file"));
    }
    Ok(())
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => found.extend(files_under(&path)),
                Ok(_) => found.push(path),
                Err(_) => {}
            }
        }
    }
    found
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A context built by [`TestHost::context`]; [`TestContext::context`] lends the
/// `Context` your calls take.
pub struct TestContext {
    pub(crate) abi: AbiContext,
}

impl TestContext {
    /// The `Context` to pass to a provider call or a job.
    pub fn context(&self) -> Context<'_> {
        Context::new(&self.abi)
    }
}

/// Runs `f`, turning a panic into an [`ErrorKind::Panicked`] error, as the plugin
/// boundary does.
fn guarded<T>(call: &str, f: impl FnOnce() -> Result<T, StageError>) -> Result<T, StageError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(StageError::new(
            ErrorKind::Panicked,
            format!(
                "plugin panicked in {call}: {}",
                crate::abi::panic_message(&*payload)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slow;
    impl Provider for Slow {
        fn new(_: &crate::Settings) -> Result<Self, StageError> {
            Ok(Slow)
        }
        fn can_stage_in(&self, _: &File) -> bool {
            true
        }
        fn replace_task(&self, _: &Context<'_>, _: &mut File) -> Result<Option<Job>, StageError> {
            Ok(Some(Job::new(|ctx| ctx.check())))
        }
    }

    /// A local file to stage (a stage-in must leave a regular file).
    fn local_file(host: &TestHost) -> String {
        let path = host.working_dir().join("x");
        std::fs::write(&path, b"x").unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn cancellation_and_deadlines_reach_the_job() {
        let host = TestHost::new();
        let x = local_file(&host);
        let x = x.as_str();
        assert_eq!(host.stage_in(&Slow, x).unwrap().ran, ["in-task step"]);
        host.set_deadline(Some(UNIX_EPOCH));
        assert_eq!(
            host.stage_in(&Slow, x).unwrap_err().kind(),
            ErrorKind::TimedOut
        );
        host.set_deadline(None);
        host.cancel();
        assert_eq!(
            host.stage_in(&Slow, x).unwrap_err().kind(),
            ErrorKind::Cancelled
        );
    }

    struct Current;
    impl Provider for Current {
        fn new(_: &crate::Settings) -> Result<Self, StageError> {
            Ok(Current)
        }
        fn can_stage_in(&self, _: &File) -> bool {
            true
        }
        fn replace_task(&self, _: &Context<'_>, _: &mut File) -> Result<Option<Job>, StageError> {
            Ok(Some(Job::new(|ctx| {
                ctx.cached();
                Ok(())
            })))
        }
    }

    #[test]
    fn a_cached_notice_is_recorded_and_never_logged() {
        let host = TestHost::new();
        let x = local_file(&host);
        host.stage_in(&Slow, &x).unwrap();
        assert!(!host.was_cached());
        host.stage_in(&Current, &x).unwrap();
        assert!(host.was_cached());
        assert!(host.logs().is_empty(), "{:?}", host.logs());
    }

    #[test]
    fn destinations_follow_the_hosts_rule() {
        let host = TestHost::new();
        assert_eq!(
            host.destination(&File::parse("http://h/a/b.txt").unwrap()),
            host.working_dir().join("b.txt")
        );
        assert_eq!(
            host.destination(&File::parse("http://h/a/..").unwrap()),
            host.working_dir().join("index")
        );
        let dir = host.working_dir().to_path_buf();
        drop(host);
        assert!(!dir.exists(), "the working directory goes with the host");
    }
}
