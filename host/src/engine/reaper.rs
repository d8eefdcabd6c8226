//! The process that ends our commands when we die: a task's command runs in a process
//! group of its own, which a run, or a pilot's worker, stops on cancel, timeout and
//! exit; but a process killed by SIGKILL (the OOM killer, `kill -9`, a scheduler's
//! hard stop) runs no code. So each [`Commands`](super::command::Commands) starts one
//! small child, the reaper, before its first command, and tells it through a socket each
//! group it starts and each group that is over. When our end of the socket closes
//! (this process exits or is killed, however), the reaper kills every group still
//! listed, then exits.
//!
//! One process per engine or worker, not per command: a command still starts on std's
//! posix_spawn fast path, and costs the reaper one 4-byte write at its start and one
//! at its end.
//!
//! Limit: a group is listed just after its command was spawned (its id is not known
//! before), so a process killed in that instant, microseconds on an idle machine,
//! leaves that one command to run on.
//!
//! Invariants: the reaper kills only groups this process started and has not yet said
//! are over. A group is said over when its leader was reaped and the group found
//! empty, checked every 10 ms (`command.rs`): while any member lives, even as a
//! zombie, its id cannot be given to another group, so a listed id is ours. The
//! reaper holds no descriptor but its end of the socket, so it never keeps a caller's
//! pipe or file open.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The most groups the reaper keeps at once; beyond, a group is not listed (it is
/// still stopped on cancel, timeout and exit, only not after a SIGKILL).
const MAX_GROUPS: usize = 16384;

/// This process's end of the reaper's socket, and the groups it was told of: a
/// reaper that died (killed by someone) is noticed at the next record, replaced, and
/// told again of every group still listed.
pub(crate) struct Reaper {
    inner: std::sync::Mutex<Inner>,
}

struct Inner {
    child: Option<Child>,
    listed: std::collections::HashSet<i32>,
}

/// One forked reaper: our end of its socket, and its pid.
struct Child {
    write: OwnedFd,
    pid: libc::pid_t,
}

impl Child {
    fn start() -> std::io::Result<Child> {
        // A socket pair rather than a pipe: a write to a reaper that is gone fails
        // with EPIPE (MSG_NOSIGNAL) instead of raising SIGPIPE.
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for two descriptors.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        } == -1
        {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just made by socketpair and belong to nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let read_fd = read.as_raw_fd();
        // SAFETY: the child makes only async-signal-safe calls (signal, setpgid, dup2,
        // close_range/close, read, kill, _exit) and allocates nothing: this process
        // may have other threads, whose locks the child must never touch.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(std::io::Error::last_os_error()),
            0 => unsafe { serve(read_fd) },
            pid => {
                drop(read);
                Ok(Child { write, pid })
            }
        }
    }

    /// Sends one record; whether it went (not: the reaper is gone).
    fn say(&self, record: i32) -> bool {
        let bytes = record.to_ne_bytes();
        loop {
            // SAFETY: sending 4 bytes from a valid buffer on a socket we own.
            let sent = unsafe {
                libc::send(
                    self.write.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    4,
                    libc::MSG_NOSIGNAL,
                )
            };
            if sent == -1
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            return sent == 4;
        }
    }

    /// Closes our end (it kills what is still listed and exits) and reaps it.
    fn finish(self) {
        drop(self.write);
        let mut status = 0;
        // SAFETY: waiting for our own child, with a valid out-parameter.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

impl Reaper {
    /// Forks the reaper.
    pub fn start() -> std::io::Result<Reaper> {
        Ok(Reaper {
            inner: std::sync::Mutex::new(Inner {
                child: Some(Child::start()?),
                listed: Default::default(),
            }),
        })
    }

    /// Lists group `pgid` (started now).
    pub fn started(&self, pgid: i32) {
        self.say(pgid);
    }

    /// Takes group `pgid` off the list (it is over).
    pub fn over(&self, pgid: i32) {
        self.say(-pgid);
    }

    fn say(&self, record: i32) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if record > 0 {
            inner.listed.insert(record);
        } else {
            inner.listed.remove(&-record);
        }
        // 4 bytes go whole (a record split by the stream is put together again).
        if inner.child.as_ref().is_some_and(|c| c.say(record)) {
            return;
        }
        // The reaper is gone: reap it, start another, tell it every group listed.
        if let Some(dead) = inner.child.take() {
            dead.finish();
        }
        match Child::start() {
            Ok(child) => {
                tracing::warn!(
                    "the process that stops commands if this one is killed had ended; started another"
                );
                let all = inner.listed.iter().all(|&g| child.say(g));
                if !all {
                    tracing::warn!("cannot tell the new one of the running commands");
                }
                inner.child = Some(child);
            }
            Err(e) => tracing::warn!(
                "the process that stops commands if this one is killed had ended, and cannot be started again: {e}"
            ),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Closing our end tells it to finish (every group still listed is killed);
        // then it is reaped, so it never stays a zombie.
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(child) = inner.child.take() {
            child.finish();
        }
    }
}

/// The reaper's life, in the forked child.
///
/// # Safety
/// Only in the child of a `fork`: async-signal-safe calls, no allocation.
unsafe fn serve(read_fd: i32) -> ! {
    // Neither a terminal's Ctrl-C nor a group's SIGTERM ends it before its parent:
    // it ends when the socket does.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        libc::signal(signal, libc::SIG_IGN);
    }
    // A group of its own: what kills its parent's whole group (a scheduler ending a
    // worker's block, `kill -9 -- -PGID`, `timeout -s KILL`) does not take it along
    // before it has done its work.
    libc::setpgid(0, 0);
    libc::dup2(read_fd, 0);
    // Every other descriptor: a caller's pipe held here would never see its end.
    if libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) != 0 {
        for fd in 1..4096 {
            libc::close(fd);
        }
    }
    let mut groups = [0i32; MAX_GROUPS];
    let mut listed = 0usize;
    let mut record = [0u8; 4];
    let mut have = 0usize;
    loop {
        let n = libc::read(0, record.as_mut_ptr().add(have).cast(), 4 - have);
        if n == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            break;
        }
        have += n as usize;
        if have < 4 {
            continue;
        }
        have = 0;
        let value = i32::from_ne_bytes(record);
        if value > 0 {
            if listed < MAX_GROUPS {
                groups[listed] = value;
                listed += 1;
            }
        } else if let Some(at) = groups[..listed].iter().position(|&g| g == -value) {
            listed -= 1;
            groups[at] = groups[listed];
        }
    }
    for &pgid in &groups[..listed] {
        if pgid > 1 {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    libc::_exit(0)
}
