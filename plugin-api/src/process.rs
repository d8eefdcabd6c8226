//! Child processes a provider runs (an `rsync`, an `ssh`): in a session of their own,
//! never able to prompt, and never outliving stagehost, whatever kills it.
//!
//! [`contain`] prepares a `std::process::Command`:
//! - the child starts a session of its own (`setsid`): no controlling terminal, so it
//!   can never stop on a prompt (SIGTTIN) or read a password from the user's
//!   terminal, and it leads a process group the provider can signal whole;
//! - a watchdog process, forked inside that group before the program starts, waits on
//!   a pipe whose only writing end the provider holds (the returned [`Tether`]). When
//!   that end closes (the [`Tether`] is dropped, or stagehost dies, even by SIGKILL),
//!   the watchdog kills the whole group: the program and every process it forked (an
//!   rsync receiver forked from the client, which `PR_SET_PDEATHSIG` would miss).
//!
//! Drop the [`Tether`] only once the child has been waited for: dropping it ends
//! whatever of the group is left.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The provider's end of a contained child's watchdog pipe; see the module docs.
#[derive(Debug)]
pub struct Tether {
    _write: OwnedFd,
    // The reading end stays open here until the child has been spawned with it (its
    // number is what the watchdog duplicates); it keeps no watchdog alive.
    _read: OwnedFd,
}

/// Makes `cmd` start in a session of its own, tied to this process by a watchdog; see
/// the module docs. Call it once per spawn, just before spawning, and keep the
/// [`Tether`] until the child was waited for.
pub fn contain(cmd: &mut Command) -> std::io::Result<Tether> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made by pipe2 and belong to nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let read_fd = read.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls are made (setsid,
    // fork, dup2, close, read, kill, getpgrp, _exit), and nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => {
                    // The watchdog: keep only the pipe's reading end, as stdin, so it
                    // holds none of the program's pipes open.
                    libc::dup2(read_fd, 0);
                    for fd in 1..4096 {
                        libc::close(fd);
                    }
                    let mut byte = 0u8;
                    loop {
                        let n = libc::read(0, (&mut byte as *mut u8).cast(), 1);
                        if n == -1
                            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                        {
                            continue;
                        }
                        break;
                    }
                    libc::kill(-libc::getpgrp(), libc::SIGKILL);
                    libc::_exit(0)
                }
                _ => Ok(()),
            }
        });
    }
    Ok(Tether {
        _write: write,
        _read: read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_tether_ends_the_group_and_a_prompt_cannot_reach_a_terminal() {
        // The shell forks a sleeper that would outlive it.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped());
        let tether = contain(&mut cmd).unwrap();
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let sleeper: i32 = line.trim().parse().unwrap();
        // SAFETY: getsid on a pid has no preconditions.
        assert_eq!(
            unsafe { libc::getsid(child.id() as i32) },
            child.id() as i32
        );
        // While the tether is held, everything runs.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the shell was ended early"
        );
        // SAFETY: signal 0 only checks that the process exists.
        assert_eq!(unsafe { libc::kill(sleeper, 0) }, 0);
        drop(tether);
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "killed by the watchdog: {status}");
        for _ in 0..200 {
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(sleeper, 0) } != 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the grandchild outlived the tether");
    }
}
