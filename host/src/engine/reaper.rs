//! The process that ends our commands when we die: a task's command runs in a process
//! group of its own, which a run, or a pilot's worker, stops on cancel, timeout and
//! exit; but a process killed by SIGKILL (the OOM killer, `kill -9`, a scheduler's
//! hard stop) runs no code. So each [`Commands`](super::command::Commands) starts one
//! small child, the reaper, before its first command, and lists in memory they share
//! each group it starts, until the group is over. When our end of the socket between
//! them closes (this process exits or is killed, however), the reaper kills every
//! group still listed, then exits.
//!
//! One process per engine or worker, not per command, and no message per command:
//! the groups are listed in a table of shared memory (mapped before the fork, so the
//! reaper sees every write), which the reaper reads only when its socket ends. A
//! command costs one store at its start, one at its end, and a `waitpid(WNOHANG)`
//! that notices a reaper someone killed: no write, no wakeup of another process.
//!
//! Limit: a group is listed just after its command was spawned (its id is not known
//! before), so a process killed in that instant, microseconds on an idle machine,
//! leaves that one command to run on.
//!
//! Invariants: the reaper kills only groups this process started and has not yet said
//! are over (a slot of the table holds a group from its start until it is over). A
//! group is said over when its leader was reaped and the group found empty, checked every 10 ms (`command.rs`): while any member lives, even as a
//! zombie, its id cannot be given to another group, so a listed id is ours. The
//! reaper holds no descriptor but its end of the socket, so it never keeps a caller's
//! pipe or file open.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The most groups the reaper keeps at once; beyond, a group is not listed (it is
/// still stopped on cancel, timeout and exit, only not after a SIGKILL).
const MAX_GROUPS: usize = 16384;

/// The groups running, one per slot (0: a free slot), in memory shared with every
/// reaper forked from this process.
struct Table {
    slots: std::ptr::NonNull<AtomicI32>,
}

// SAFETY: the table is a fixed mapping of atomics, owned for the reaper's life.
unsafe impl Send for Table {}
// SAFETY: as above; every access is atomic.
unsafe impl Sync for Table {}

impl Table {
    const BYTES: usize = MAX_GROUPS * std::mem::size_of::<AtomicI32>();

    fn new() -> std::io::Result<Table> {
        // SAFETY: a fresh anonymous shared mapping; zeroed by the kernel.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Table {
            slots: std::ptr::NonNull::new(ptr.cast()).expect("mmap never returns null here"),
        })
    }

    fn slot(&self, i: usize) -> &AtomicI32 {
        assert!(i < MAX_GROUPS);
        // SAFETY: `i` is within the mapping, which lives as long as `self`.
        unsafe { &*self.slots.as_ptr().add(i) }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.slots.as_ptr().cast(), Self::BYTES) };
    }
}

/// This process's end of the reaper's socket and the table of running groups: a
/// reaper that died (killed by someone) is noticed at the next command's start and
/// replaced; the new one shares the same table, so it knows every group still listed.
pub(crate) struct Reaper {
    table: Table,
    inner: std::sync::Mutex<Inner>,
}

struct Inner {
    child: Option<Child>,
    /// The slot of each listed group.
    listed: std::collections::HashMap<i32, usize>,
    /// Slots freed by groups that are over.
    free: Vec<usize>,
    /// Slots never used yet start here.
    fresh: usize,
}

/// One forked reaper: our end of its socket, and its pid.
struct Child {
    write: OwnedFd,
    pid: libc::pid_t,
}

impl Child {
    fn start(table: &Table) -> std::io::Result<Child> {
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
        let slots = table.slots.as_ptr();
        // SAFETY: the child makes only async-signal-safe calls (signal, setpgid, dup2,
        // close_range/close, read, kill, _exit) and allocates nothing: this process
        // may have other threads, whose locks the child must never touch.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(std::io::Error::last_os_error()),
            0 => unsafe { serve(read_fd, slots) },
            pid => {
                drop(read);
                Ok(Child { write, pid })
            }
        }
    }

    /// Whether it has died (it is reaped if so).
    fn died(&self) -> bool {
        let mut status = 0;
        // SAFETY: polling our own child, with a valid out-parameter.
        unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) == self.pid }
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
        let table = Table::new()?;
        let child = Child::start(&table)?;
        Ok(Reaper {
            table,
            inner: std::sync::Mutex::new(Inner {
                child: Some(child),
                listed: Default::default(),
                free: Vec::new(),
                fresh: 0,
            }),
        })
    }

    /// Lists group `pgid` (started now).
    pub fn started(&self, pgid: i32) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let slot = inner.free.pop().or_else(|| {
            (inner.fresh < MAX_GROUPS).then(|| {
                inner.fresh += 1;
                inner.fresh - 1
            })
        });
        if let Some(slot) = slot {
            if let Some(old) = inner.listed.insert(pgid, slot) {
                inner.free.push(old);
            }
            self.table.slot(slot).store(pgid, Ordering::SeqCst);
        }
        self.keep_alive(&mut inner);
    }

    /// Forks another reaper on the same table if this one died (someone killed it):
    /// checked as each command starts and as each ends, so a run whose last commands
    /// are still running gets one too.
    fn keep_alive(&self, inner: &mut Inner) {
        if inner.child.as_ref().is_some_and(|c| !c.died()) {
            return;
        }
        // The reaper is gone: start another, on the same table.
        inner.child = None;
        match Child::start(&self.table) {
            Ok(child) => {
                tracing::warn!(
                    "the process that stops commands if this one is killed had ended; started another"
                );
                inner.child = Some(child);
            }
            Err(e) => tracing::warn!(
                "the process that stops commands if this one is killed had ended, and cannot be started again: {e}"
            ),
        }
    }

    /// Takes group `pgid` off the list (it is over).
    pub fn over(&self, pgid: i32) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = inner.listed.remove(&pgid) {
            self.table.slot(slot).store(0, Ordering::SeqCst);
            inner.free.push(slot);
        }
        self.keep_alive(&mut inner);
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
unsafe fn serve(read_fd: i32, slots: *const AtomicI32) -> ! {
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
    // Nothing is ever sent: the read returns when the parent's end closes, because it
    // finished or died.
    let mut byte = [0u8; 1];
    loop {
        let n = libc::read(0, byte.as_mut_ptr().cast(), 1);
        if n == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            break;
        }
    }
    for i in 0..MAX_GROUPS {
        let pgid = (*slots.add(i)).load(Ordering::SeqCst);
        if pgid > 1 {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    libc::_exit(0)
}
