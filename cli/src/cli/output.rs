//! Files the CLI writes for the user (`run --report`, `report -o`): one rule for
//! where they may go and how they are written. `-` is stdout. A device, a FIFO or a
//! socket is written into, never replaced by a file; anything else is written under a
//! temporary name, synced and renamed into place, keeping the mode of a file it
//! replaces. A path is checked before any work starts: its directory exists, a file
//! can be made there, and it is none of the files the command itself reads or writes.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use stagehost::ConfigError;

use super::CliError;

/// Why an output was not written.
pub(super) enum WriteError {
    /// `-` and the reader of stdout went away.
    Closed,
    /// Anything else, as one line naming the output.
    Other(String),
}

/// Checks, before any work, that `flag`'s output could be written at `path` (not
/// `-`): into it when it is a device, a FIFO or a socket, else as a new file in its
/// directory, which is returned. `what_is` says what `path` is to the command when it
/// is one of its own files (the output would replace it), and refuses it. `example`
/// is a file name to suggest when `path` is a directory.
/// The descriptor of this process that `path` names, if it names one: `/dev/stdout`,
/// `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`. Such a path is written through the
/// descriptor (where the shell sent it), never replaced.
fn own_descriptor(path: &Path) -> Option<i32> {
    let number = |p: &Path| -> Option<i32> { p.file_name()?.to_str()?.parse().ok() };
    let ours = |dir: &Path| {
        std::fs::canonicalize(dir)
            .is_ok_and(|d| d == Path::new(&format!("/proc/{}/fd", std::process::id())))
    };
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return None;
    }
    // `/dev/stdout` -> `/proc/self/fd/1`
    if let Ok(target) = std::fs::read_link(path) {
        if target.parent().is_some_and(ours) {
            return number(&target);
        }
    }
    // `/dev/fd/1`, `/proc/self/fd/1`: links in our own descriptor directory.
    if path.parent().is_some_and(ours) {
        return number(path);
    }
    None
}

pub(super) fn check(
    flag: &str,
    path: &Path,
    kind: &Kind,
    what_is: impl FnOnce(&Path) -> Option<String>,
) -> Result<PathBuf, CliError> {
    use std::os::unix::ffi::OsStrExt;
    let bad = |why: String| {
        CliError::Config(ConfigError(format!(
            "{flag} {}: {why}",
            stagehost_plugin_api::display::path(path)
        )))
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let writable = |p: &Path, mode: libc::c_int| {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| bad("the path holds a NUL byte".into()))?;
        // SAFETY: `c` is a NUL-terminated path that lives across the call.
        if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
            Ok(())
        } else {
            Err(bad(format!(
                "{} is not writable: {}",
                stagehost_plugin_api::display::path(p),
                std::io::Error::last_os_error()
            )))
        }
    };
    if let Some(fd) = own_descriptor(path) {
        // SAFETY: F_GETFL reads a descriptor's flags and changes nothing.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags == -1 || flags & libc::O_ACCMODE == libc::O_RDONLY {
            return Err(bad(format!("descriptor {fd} is not open for writing")));
        }
        return Ok(dir);
    }
    let link = std::fs::symlink_metadata(path).ok();
    if link.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
        // Nothing is followed: a link planted where the output goes would send it to
        // a device, a FIFO or a file of someone else's.
        return Err(bad(
            "is a symbolic link, which stagehost never writes through: name the file it points to, or remove the link".into(),
        ));
    }
    match link {
        Some(m) if m.file_type().is_socket() => {
            return Err(bad("is a socket, which cannot be written as a file".into()))
        }
        Some(m) if m.is_dir() => {
            return Err(bad(format!(
                "is a directory; name a file in it (for example {})",
                stagehost_plugin_api::display::path(&path.join(kind.example))
            )))
        }
        Some(m) if !m.is_file() => {
            writable(path, libc::W_OK)?;
            return Ok(dir);
        }
        _ => {}
    }
    if path.to_str().is_some_and(|p| p.contains("://")) {
        return Err(bad("takes a local path, not a URL".into()));
    }
    if path.file_name().is_some_and(|n| n.len() > 255) {
        return Err(bad(
            "its name is longer than the 255 bytes a file name may have".into(),
        ));
    }
    if let Some(what) = what_is(path) {
        return Err(bad(format!(
            "that is {what}; it would be replaced: name another path"
        )));
    }
    if !dir.exists() {
        return Err(bad(format!(
            "the directory {} does not exist; create it first (mkdir -p), or name another path",
            stagehost_plugin_api::display::path(&dir)
        )));
    }
    if !dir.is_dir() {
        return Err(bad(format!(
            "{} is not a directory",
            stagehost_plugin_api::display::path(&dir)
        )));
    }
    // A file is replaced only when stagehost wrote it (an earlier report or page) or
    // it is empty: never a file of the user's that merely has the name.
    if let Ok(mut existing) = std::fs::File::open(path) {
        let mut head = Vec::with_capacity(256);
        let _ = std::io::Read::read_to_end(&mut std::io::Read::take(&mut existing, 256), &mut head);
        if !head.is_empty() && !(kind.written_by_us)(&head) {
            return Err(bad(format!(
                "it exists and is not a {} stagehost wrote; it is never replaced: move it away, or name another path",
                kind.what
            )));
        }
    }
    // A file made and taken back where the output will go: what `access` cannot tell
    // (a read-only mount, a pseudo-filesystem, root's rights) shows here.
    drop(stagehost_plugin_api::fs::AtomicFile::create(path).map_err(|e| bad(e.to_string()))?);
    Ok(dir)
}

/// What an output is: its name in messages, a file name to suggest in a directory,
/// and how to tell a file stagehost wrote as one (from its first 256 bytes).
pub(super) struct Kind {
    pub what: &'static str,
    pub example: &'static str,
    pub written_by_us: fn(&[u8]) -> bool,
}

/// A JSON report of `run` or `stage` (`core/src/report.rs` writes `version` first,
/// then `command`).
pub(super) const REPORT: Kind = Kind {
    what: "report",
    example: "run.json",
    written_by_us: |head| {
        let head = String::from_utf8_lossy(head);
        head.starts_with("{\n  \"version\": ") && head.contains("\n  \"command\": \"")
    },
};

/// A page of `stagehost report`.
pub(super) const PAGE: Kind = Kind {
    what: "page",
    example: "run.html",
    written_by_us: |head| {
        head.starts_with(b"<!DOCTYPE html>\n")
            && String::from_utf8_lossy(head).contains("<title>stagehost ")
    },
};

/// Where `path` leads once links and `..` are followed: the file's own resolution,
/// or, for a file not made yet, its directory's with its name.
pub(super) fn resolve(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok().or_else(|| {
        let name = path.file_name()?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = std::fs::canonicalize(dir.unwrap_or(Path::new("."))).ok()?;
        Some(dir.join(name))
    })
}

/// Whether `other` names the file whose absolute spelling is `absolute` and whose
/// resolution ([`resolve`]) is `resolved`: spelled alike, or, when the names match,
/// resolved alike (links, `..`, a file not made yet).
pub(super) fn same_file(absolute: &Path, resolved: Option<&Path>, other: &Path) -> bool {
    std::path::absolute(other).is_ok_and(|o| o == absolute)
        || other.file_name() == absolute.file_name()
            && resolved.is_some()
            && resolve(other).as_deref() == resolved
}

/// Writes `what` to `path` (`-`: stdout) through `write`, atomically for a file.
pub(super) fn write(
    path: &Path,
    what: &str,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    newline: bool,
) -> Result<(), WriteError> {
    let stdout = path.as_os_str() == "-";
    let shown = stagehost_plugin_api::display::path(path);
    let failed = |e: std::io::Error| {
        if stdout && e.kind() == std::io::ErrorKind::BrokenPipe {
            WriteError::Closed
        } else {
            WriteError::Other(format!("cannot write the {what} {shown}: {e}"))
        }
    };
    let into = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(out);
        write(&mut out)?;
        if newline {
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        std::io::Write::flush(&mut out)
    };
    if stdout {
        return into(&mut std::io::stdout().lock()).map_err(failed);
    }
    // One of our descriptors (`/dev/stdout` where the shell sent it) is written
    // through; a device or a FIFO is written into, never replaced by a file; nothing
    // is followed; an output replacing a file keeps its mode.
    if let Some(fd) = own_descriptor(path) {
        use std::os::fd::FromRawFd;
        // SAFETY: `dup` gives a new descriptor this `File` owns and closes.
        let copy = unsafe { libc::dup(fd) };
        if copy == -1 {
            return Err(failed(std::io::Error::last_os_error()));
        }
        let mut target = unsafe { std::fs::File::from_raw_fd(copy) };
        return into(&mut target).map_err(failed);
    }
    let existing = std::fs::symlink_metadata(path).ok();
    if existing
        .as_ref()
        .is_some_and(|m| m.file_type().is_symlink())
    {
        return Err(WriteError::Other(format!(
            "cannot write the {what} {shown}: it became a symbolic link, which stagehost never writes through"
        )));
    }
    if existing
        .as_ref()
        .is_some_and(|m| !m.is_file() && !m.is_dir())
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Without a reader a FIFO would hold the run forever: not opened, told.
        let mut target = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ENXIO) {
                    WriteError::Other(format!(
                        "cannot write the {what} {shown}: no process reads that FIFO"
                    ))
                } else {
                    failed(e)
                }
            })?;
        {
            use std::os::fd::AsRawFd;
            let fd = target.as_raw_fd();
            // SAFETY: flags of a descriptor this `File` owns; back to blocking writes.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
        return into(&mut target).map_err(failed);
    }
    let other = |e: &dyn std::fmt::Display| {
        WriteError::Other(format!("cannot write the {what} {shown}: {e}"))
    };
    let mut file = stagehost_plugin_api::fs::AtomicFile::create(path).map_err(|e| other(&e))?;
    if let Some(meta) = existing.filter(std::fs::Metadata::is_file) {
        use std::os::unix::fs::PermissionsExt;
        file.set_mode(meta.permissions().mode())
            .map_err(|e| other(&e))?;
    }
    into(file.as_file_mut()).map_err(failed)?;
    file.commit().map_err(|e| other(&e))
}
