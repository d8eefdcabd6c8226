//! Shell-command bodies: running `sh -c` (expanded by `placeholders.rs`) in the
//! working directory.
//!
//! Invariants:
//! - each command runs in a process group of its own: cancellation and a timeout kill
//!   the whole group (SIGTERM, then SIGKILL after a grace period), and processes the
//!   shell left behind are stopped when it exits;
//! - a task ends when its shell exits, even if a background child keeps stdout or
//!   stderr open;
//! - stdout and stderr files are written atomically (a temporary name, then a rename
//!   that replaces a symlink at the destination instead of following it);
//! - captured stderr is bounded: only its tail is kept, for the error line.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::process::{Pid, Signal};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use stagehost_plugin_api::display;
use stagehost_plugin_api::fs::AtomicFile;

use super::reaper::Reaper;
use super::task::TaskFiles;

/// How long a process group has between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);
/// How much of captured stderr is kept.
const STDERR_TAIL: usize = 8 << 10;
/// The longest stderr excerpt an error line quotes, in characters.
const EXCERPT_CHARS: usize = 300;

/// The last bytes of a stream, kept while the rest is read and dropped.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > STDERR_TAIL {
            let cut = self.0.len() - STDERR_TAIL;
            self.0.drain(..cut);
        }
    }

    /// The last non-empty line, escaped and cut to a bounded length.
    fn excerpt(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.0);
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?.trim();
        let shown = display::escape(line);
        let count = shown.chars().count();
        Some(if count > EXCERPT_CHARS {
            let skip = count - EXCERPT_CHARS;
            format!("...{}", shown.chars().skip(skip).collect::<String>())
        } else {
            shown.into_owned()
        })
    }
}

/// A file the command writes its stdout or stderr to: a temporary name, renamed
/// into place once the shell exits.
fn output_file(path: &Path) -> Result<(AtomicFile, Stdio), String> {
    let mut file = AtomicFile::create(path).map_err(|e| e.to_string())?;
    let handle = file
        .as_file_mut()
        .try_clone()
        .map_err(|e| format!("cannot write {}: {e}", display::path(path)))?;
    Ok((file, Stdio::from(handle)))
}

/// Sends `signal` to process group `pgid`; whether the group still existed.
pub(crate) fn signal_group(pgid: i32, signal: Signal) -> bool {
    pgid > 1
        && Pid::from_raw(pgid)
            .is_some_and(|group| rustix::process::kill_process_group(group, signal).is_ok())
}

/// Whether process group `pgid` still has a member (signal 0: nothing is sent).
pub(crate) fn group_exists(pgid: i32) -> bool {
    pgid > 1
        && Pid::from_raw(pgid)
            .is_some_and(|group| rustix::process::test_kill_process_group(group).is_ok())
}

/// What the engine's command runners share: the cancel pipe that wakes every runner
/// blocked on a worker, and the process groups a finished shell left behind, stopped
/// after a grace period or, at the latest, when the engine goes (the end of the run).
pub(crate) struct Commands {
    cancel: CancelSignal,
    stragglers: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i32>>>,
    runtime: tokio::runtime::Handle,
    /// Kills the groups still running if this process dies (started on first use;
    /// `None` if it could not be).
    reaper: std::sync::Arc<std::sync::OnceLock<Option<Reaper>>>,
}

impl Commands {
    pub fn new(runtime: tokio::runtime::Handle) -> std::io::Result<Commands> {
        Ok(Commands {
            cancel: CancelSignal::new()?,
            stragglers: Default::default(),
            runtime,
            reaper: Default::default(),
        })
    }

    /// The reaper, started on the first command.
    fn reaper(&self) -> Option<&Reaper> {
        self.reaper
            .get_or_init(|| match Reaper::start() {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(
                        "cannot start the process that stops commands if this one is killed: {e}"
                    );
                    None
                }
            })
            .as_ref()
    }

    /// Group `pgid` is over: the reaper forgets it.
    fn over(&self, pgid: i32) {
        if let Some(Some(r)) = self.reaper.get() {
            r.over(pgid);
        }
    }

    /// Wakes every runner: their commands' groups are terminated.
    pub fn cancel(&self) {
        self.cancel.raise();
    }

    /// Stops what a finished shell left in its group `pgid`, if anything: SIGTERM now,
    /// SIGKILL after the grace period (or when the engine goes, if sooner).
    fn stop_stragglers(&self, pgid: i32) {
        if !signal_group(pgid, Signal::TERM) {
            self.over(pgid);
            return;
        }
        self.stragglers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(pgid);
        let (stragglers, reaper) = (self.stragglers.clone(), self.reaper.clone());
        self.runtime.spawn(async move {
            // The group is watched through its grace: once it is empty its id may be
            // another's, so it is forgotten within 10 ms (no signal ever reaches a
            // group that reused the id); what is left at the end is killed.
            let until = tokio::time::Instant::now() + KILL_GRACE;
            let mut empty = false;
            while tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if !group_exists(pgid) {
                    empty = true;
                    break;
                }
            }
            let mut groups = stragglers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if groups.remove(&pgid) {
                if !empty {
                    signal_group(pgid, Signal::KILL);
                }
                if let Some(Some(r)) = reaper.get() {
                    r.over(pgid);
                }
            }
        });
    }
}

impl Commands {
    /// SIGKILL to every group still in its grace period.
    pub fn kill_leftovers(&self) {
        let groups = std::mem::take(
            &mut *self
                .stragglers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for pgid in groups {
            signal_group(pgid, Signal::KILL);
            self.over(pgid);
        }
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        self.kill_leftovers();
    }
}

/// A flag that wakes every blocked command runner when raised: the read end of a
/// pipe that becomes readable, for good, once [`CancelSignal::raise`] writes to it.
struct CancelSignal {
    reader: OwnedFd,
    // Kept open for the signal's life, so the reader never sees end-of-file.
    writer: OwnedFd,
    raised: std::sync::atomic::AtomicBool,
}

impl CancelSignal {
    pub fn new() -> std::io::Result<CancelSignal> {
        // Close-on-exec: children must not inherit either end.
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(CancelSignal {
            reader,
            writer,
            raised: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Raises the flag: one byte, never read, keeps the read end readable for good.
    pub fn raise(&self) {
        if !self.raised.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let _ = rustix::io::write(&self.writer, b"x");
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }
}

/// A descriptor that becomes readable when the child exits (Linux 5.3+ pidfd), if
/// the kernel offers one.
fn exit_fd(pid: i32) -> Option<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::pidfd_open(Pid::from_raw(pid)?, rustix::process::PidfdFlags::empty()).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Waits until one of `fds` is readable (or hung up) or `timeout` passes (None:
/// forever). Returns which are.
fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> Vec<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|&fd| PollFd::from_borrowed_fd(fd, PollFlags::IN))
        .collect();
    let timeout = timeout.and_then(|t| Timespec::try_from(t.max(Duration::from_millis(1))).ok());
    match rustix::event::poll(&mut polled, timeout.as_ref()) {
        Ok(n) if n > 0 => polled.iter().map(|p| !p.revents().is_empty()).collect(),
        _ => vec![false; fds.len()],
    }
}

/// Reads what `pipe` has now into `tail`; false once it reached end-of-file or failed.
fn drain(pipe: &mut std::process::ChildStderr, tail: &mut Tail) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 16 << 10];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => tail.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Makes the read end of a pipe we just made non-blocking (its only status flag: one
/// call, no need to read the flags first).
fn set_nonblocking(fd: BorrowedFd<'_>) {
    let _ = rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK);
}

/// The child's exit status if it has exited; it stays unreaped (a zombie keeps its
/// process group id reserved) unless `reap`.
fn exited(pid: i32, reap: bool) -> Option<std::process::ExitStatus> {
    use rustix::process::{WaitId, WaitIdOptions};
    use std::os::unix::process::ExitStatusExt;
    let mut options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
    if !reap {
        options |= WaitIdOptions::NOWAIT;
    }
    let status = rustix::process::waitid(WaitId::Pid(Pid::from_raw(pid)?), options).ok()??;
    Some(match status.exit_status() {
        Some(code) => std::process::ExitStatus::from_raw((code & 0xff) << 8),
        None => std::process::ExitStatus::from_raw(status.terminating_signal().unwrap_or(0) & 0x7f),
    })
}

/// SIGTERM to the group, then SIGKILL once `grace` has passed if anything is left;
/// reaps the leader `pid` meanwhile, so its zombie does not keep the group alive.
fn terminate_group(pgid: i32, pid: i32, grace: Duration) {
    if !signal_group(pgid, Signal::TERM) {
        return;
    }
    let deadline = std::time::Instant::now() + grace;
    loop {
        exited(pid, true);
        if !group_exists(pgid) {
            return;
        }
        if std::time::Instant::now() >= deadline {
            signal_group(pgid, Signal::KILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates `dir` unless it is a directory already (one `stat` in the usual case).
fn ensure_dir(dir: &Path, what: &str) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create {what}{}: {e}", display::path(dir)))
}

/// `/dev/null` for a child: a copy of one descriptor opened once, instead of opening
/// the device again for every command.
fn null() -> Stdio {
    static NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .ok()
    })
    .as_ref()
    .and_then(|f| f.try_clone().ok())
    .map_or_else(Stdio::null, Stdio::from)
}

/// Why a command was stopped before its shell exited.
enum Stop {
    Cancelled,
    TimedOut(Duration),
}

/// How a command that did not succeed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Code(i32),
    /// A signal ended it (the number).
    Signal(i32),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Code(code) => write!(f, "exit status {code}"),
            Ended::Signal(_) => f.write_str("killed by a signal"),
        }
    }
}

/// Why a task's command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// It could not be started: its directories, its output files, the shell.
    #[error("{0}")]
    Setup(String),
    /// The run was cancelled; the command's group was stopped.
    #[error("cancelled")]
    Cancelled,
    /// It ran past its time limit; its group was killed.
    #[error("the command ran past its time limit of {}s and was killed", .0.as_secs_f64())]
    TimedOut(Duration),
    /// It ended unsuccessfully; `excerpt` is the last line of its stderr, if captured.
    #[error("the command failed with {end}{}", excerpt.as_deref().map(|l| format!(": {l}")).unwrap_or_default())]
    Failed { end: Ended, excerpt: Option<String> },
}

impl CommandError {
    /// Whether a signal ended the command, directly or through the shell that ran it
    /// (which reports 128 + the signal: 143 for SIGTERM, 137 for SIGKILL).
    pub fn by_signal(&self) -> bool {
        matches!(
            self,
            CommandError::Failed {
                end: Ended::Signal(_) | Ended::Code(143 | 137),
                ..
            }
        )
    }
}

impl From<CommandError> for String {
    fn from(e: CommandError) -> String {
        e.to_string()
    }
}

/// Runs `command` (already expanded) with `/bin/sh -c` in the working directory, in a
/// process group of its own, sending stdout/stderr to their files when given.
/// Creates the outputs' directories first. Blocks this thread (a worker's) until the
/// shell exits; when `cancel` is raised or `timeout` passes first, the whole group is
/// terminated and its leader reaped before returning. Whatever the shell leaves
/// behind is stopped through `commands`.
pub(crate) fn run(
    command: &OsStr,
    files: &TaskFiles,
    commands: &Commands,
    timeout: Option<Duration>,
) -> Result<(), CommandError> {
    ensure_dir(&files.working_dir, "working_dir ").map_err(CommandError::Setup)?;
    for out in &files.outputs {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            ensure_dir(parent, "").map_err(CommandError::Setup)?;
        }
    }
    // An absolute path: no PATH walk of failed execs per task. `process_group` keeps
    // std's posix_spawn fast path (a pre_exec hook would force fork + exec).
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&files.working_dir)
        .stdin(null())
        .process_group(0);
    let mut written = Vec::new();
    match &files.stdout {
        Some(p) => {
            let (file, stdio) = output_file(p).map_err(CommandError::Setup)?;
            written.push(file);
            cmd.stdout(stdio);
        }
        None => {
            cmd.stdout(null());
        }
    }
    match &files.stderr {
        Some(p) => {
            let (file, stdio) = output_file(p).map_err(CommandError::Setup)?;
            written.push(file);
            cmd.stderr(stdio);
        }
        None => {
            cmd.stderr(Stdio::piped());
        }
    }
    // Started before the first command, so that it never holds one's pipes.
    let reaper = commands.reaper();
    let mut child = cmd
        .spawn()
        .map_err(|e| CommandError::Setup(format!("cannot start /bin/sh: {e}")))?;
    drop(cmd); // closes our copies of the output files' descriptors
    let pid = i32::try_from(child.id()).expect("a pid fits in pid_t");
    let pgid = pid;
    if let Some(reaper) = reaper {
        reaper.started(pgid);
    }
    let exit = exit_fd(pid);
    let mut stderr = child.stderr.take();
    if let Some(pipe) = &stderr {
        set_nonblocking(pipe.as_fd());
    }
    let mut tail = Tail::default();
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    // With a pidfd, the child is looked at only once it says the child has exited,
    // and then reaped at once (a shell that just started has not exited).
    let mut exit_ready = false;
    let stop = loop {
        if exit_ready {
            break Ok(child.wait());
        }
        if exit.is_none() && exited(pid, false).is_some() {
            break Ok(child.wait());
        }
        let now = std::time::Instant::now();
        if let (Some(limit), Some(at)) = (timeout, deadline) {
            if now >= at {
                break Err(Stop::TimedOut(limit));
            }
        }
        let mut fds = vec![commands.cancel.fd()];
        fds.extend(stderr.as_ref().map(|p| p.as_fd()));
        fds.extend(exit.as_ref().map(|fd| fd.as_fd()));
        // Without a pidfd, look again every few milliseconds.
        let wait = match (deadline, &exit) {
            (Some(at), Some(_)) => Some(at - now),
            (Some(at), None) => Some((at - now).min(Duration::from_millis(5))),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_millis(5)),
        };
        let ready = wait_readable(&fds, wait);
        if ready[0] {
            break Err(Stop::Cancelled);
        }
        if stderr.is_some() && ready[1] {
            let open = stderr.as_mut().is_some_and(|p| drain(p, &mut tail));
            if !open {
                stderr = None;
            }
        }
        exit_ready = exit.is_some() && ready.last() == Some(&true);
    };
    let status = match stop {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            commands.over(pgid);
            return Err(CommandError::Setup(format!("cannot wait for /bin/sh: {e}")));
        }
        Err(why) => {
            terminate_group(pgid, pid, KILL_GRACE);
            let _ = child.wait();
            commands.over(pgid);
            return Err(match why {
                Stop::Cancelled => CommandError::Cancelled,
                Stop::TimedOut(t) => CommandError::TimedOut(t),
            });
        }
    };
    // Whatever the shell left running in its group is stopped, so no background child
    // outlives its task. (A group id is not reused while the group has members; once
    // the shell is reaped, a group that still answers holds only what it left behind.)
    commands.stop_stragglers(pgid);
    if let Some(mut pipe) = stderr {
        // The pipe closes when its last writer is gone; a straggler gets a moment.
        let until = std::time::Instant::now() + Duration::from_millis(100);
        while drain(&mut pipe, &mut tail) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            wait_readable(&[pipe.as_fd()], Some(left));
        }
    }
    for file in written {
        file.commit()
            .map_err(|e| CommandError::Setup(e.to_string()))?;
    }
    if status.success() {
        return Ok(());
    }
    let end = match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Code(code),
        (None, signal) => Ended::Signal(signal.unwrap_or(0)),
    };
    Err(CommandError::Failed {
        end,
        excerpt: tail.excerpt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_that_empties_in_its_grace_is_forgotten_at_once() {
        // Its id may be reused by anyone once it is empty: no later signal, not even
        // the reaper's, may reach it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let commands = Commands::new(rt.handle().clone()).unwrap();
        let dir = std::env::temp_dir().join(format!("stagehost-cmd-grace-{}", std::process::id()));
        let files = TaskFiles {
            working_dir: dir.clone(),
            ..TaskFiles::default()
        };
        // The straggler, orphaned, stays a zombie in its group until someone reaps
        // it: here the test does, as a system's init would (this process becomes the
        // orphans' parent, and reaps only that group).
        rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
        // A straggler that ignores SIGTERM and ends by itself 300 ms later.
        run(
            OsStr::new("(trap '' TERM; sleep 0.3) >/dev/null 2>&1 &"),
            &files,
            &commands,
            None,
        )
        .unwrap();
        let listed = || {
            commands
                .stragglers
                .lock()
                .unwrap()
                .iter()
                .copied()
                .collect::<Vec<_>>()
        };
        let pgid = listed()[0];
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        while std::time::Instant::now() < until && !listed().is_empty() {
            let _ = rustix::process::waitpgid(
                Pid::from_raw(pgid).unwrap(),
                rustix::process::WaitOptions::NOHANG,
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            listed().is_empty(),
            "forgotten long before the 2 s grace ends"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn how_a_command_ended_is_a_type_not_a_message() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let commands = Commands::new(rt.handle().clone()).unwrap();
        let dir = std::env::temp_dir().join(format!("stagehost-cmd-end-{}", std::process::id()));
        let files = TaskFiles {
            working_dir: dir.clone(),
            ..TaskFiles::default()
        };
        let run_sh = |cmd: &str| run(OsStr::new(cmd), &files, &commands, None);
        let e = run_sh("echo oops >&2; exit 3").unwrap_err();
        assert_eq!(
            e,
            CommandError::Failed {
                end: Ended::Code(3),
                excerpt: Some("oops".into())
            }
        );
        assert!(!e.by_signal());
        assert_eq!(e.to_string(), "the command failed with exit status 3: oops");
        // The shell itself killed by a signal.
        let e = run_sh("kill -TERM $$").unwrap_err();
        assert!(
            matches!(
                e,
                CommandError::Failed {
                    end: Ended::Signal(15),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.by_signal());
        // A command the signal ended, reported by its shell as 128 + 9.
        let e = run_sh("sh -c 'kill -KILL $$'; exit $?").unwrap_err();
        assert!(e.by_signal(), "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_stderr_tail_is_bounded_and_its_excerpt_short() {
        let mut t = Tail::default();
        for _ in 0..1000 {
            t.push(&[b'x'; 1000]);
        }
        t.push(b"\nlast words\x1b[31m\n\n");
        assert!(t.0.len() <= STDERR_TAIL);
        assert_eq!(t.excerpt().unwrap(), "last words\\u{1b}[31m");
        let mut long = Tail::default();
        long.push(&[b'y'; 5000]);
        assert_eq!(long.excerpt().unwrap().chars().count(), EXCERPT_CHARS + 3);
    }
}
