//! Files the CLI writes for the user (`run --report`, `report -o`): one rule for
//! where they may go and how they are written. `-` is stdout. A device, a FIFO or a
//! socket is written into, never replaced by a file; anything else is written under a
//! temporary name, synced and renamed into place, keeping the mode of a file it
//! replaces. A path is checked before any work starts: its directory exists, a file
//! can be made there, and it is none of the files the command itself reads or writes.

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
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(bad(format!(
                "is a directory; name a file in it (for example {})",
                stagehost_plugin_api::display::path(&path.join(kind.example))
            )))
        }
        Ok(m) if !m.is_file() => {
            writable(path, libc::W_OK)?;
            return Ok(dir);
        }
        _ => {}
    }
    if path.to_str().is_some_and(|p| p.contains("://")) {
        return Err(bad("takes a local path, not a URL".into()));
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

/// Whether two paths name one file: spelled alike once absolute, or, for paths that
/// end in the same name, resolved alike (links, `..`). `resolved` is `path`'s own
/// resolution, worked out once by the caller.
pub(super) fn same_file(absolute: &Path, resolved: Option<&Path>, other: &Path) -> bool {
    std::path::absolute(other).is_ok_and(|o| o == absolute)
        || other.file_name() == absolute.file_name()
            && resolved.is_some()
            && std::fs::canonicalize(other).ok().as_deref() == resolved
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
    // A device, a FIFO or a socket (`/dev/stdout`, a pipe) is written into, never
    // replaced by a file; an output replacing a file keeps its mode.
    let existing = std::fs::metadata(path).ok();
    if existing
        .as_ref()
        .is_some_and(|m| !m.is_file() && !m.is_dir())
    {
        let mut target = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(failed)?;
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
