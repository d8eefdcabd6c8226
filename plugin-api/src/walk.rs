//! Walking a local directory tree without ever following a link to another directory,
//! even one swapped in while the walk runs: each directory is opened component by
//! component from the root with `O_NOFOLLOW | O_DIRECTORY` and read through that
//! descriptor, never by path. The `file` provider's listing and the host's directory
//! stage-out both walk with it.
//!
//! Errors are errors: a directory that cannot be read fails the walk with its kind
//! (permission, ...); only a link that leads nowhere is listed as one.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::error::{ErrorKind, StageError};

/// What a walked name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkKind {
    /// A regular file.
    File,
    /// A directory (walked into when recursive).
    Directory,
    /// A symbolic link; `to_file` when it leads to a regular file now.
    Link {
        /// Whether it leads to a regular file.
        to_file: bool,
    },
    /// Anything else (a device, a FIFO, a socket).
    Other,
}

/// One name below the root.
#[derive(Debug, Clone)]
pub struct Walked {
    /// The path below the root, `/`-separated.
    pub name: String,
    /// What it is (a link as a link).
    pub kind: WalkKind,
    /// The size of a file, or of the file a link leads to.
    pub size: Option<u64>,
    /// The modification time of a file or directory, or of what a link leads to.
    pub modified: Option<SystemTime>,
}

fn io_error(what: impl std::fmt::Display, path: &Path, e: rustix::io::Errno) -> StageError {
    StageError::io(
        format_args!("cannot {what} {}", crate::display::path(path)),
        &std::io::Error::from(e),
    )
}

fn time(secs: i64, nanos: i64) -> Option<SystemTime> {
    let nanos = u32::try_from(nanos).ok()?;
    if secs >= 0 {
        Some(UNIX_EPOCH + Duration::new(secs as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

/// Opens `relative` (components below `root`), each component without following a
/// link.
fn open_below(root: &OwnedFd, root_path: &Path, relative: &str) -> Result<OwnedFd, StageError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = rustix::fs::openat(root, ".", flags, Mode::empty())
        .map_err(|e| io_error("open", root_path, e))?;
    for component in relative.split('/').filter(|c| !c.is_empty()) {
        fd = rustix::fs::openat(&fd, component, flags, Mode::empty()).map_err(|e| {
            // A directory replaced by a link (or a file) since it was read.
            io_error("open", &root_path.join(relative), e)
        })?;
    }
    Ok(fd)
}

/// The names below `root` (itself opened as a directory, following a link there: the
/// caller named it), sorted by name; with `recursive`, at every depth.
pub fn walk(root: &Path, recursive: bool) -> Result<Vec<Walked>, StageError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        if e == rustix::io::Errno::NOTDIR {
            StageError::new(
                ErrorKind::InvalidUrl,
                format!("{} is not a directory", crate::display::path(root)),
            )
        } else {
            io_error("open", root, e)
        }
    })?;
    let mut out = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(relative) = pending.pop() {
        let here: PathBuf = root.join(&relative);
        let dir_fd = open_below(&root_fd, root, &relative)?;
        let dir = rustix::fs::Dir::read_from(&dir_fd).map_err(|e| io_error("read", &here, e))?;
        for item in dir {
            let item = item.map_err(|e| io_error("read", &here, e))?;
            let raw = item.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            let Ok(base) = std::str::from_utf8(raw) else {
                return Err(StageError::new(
                    ErrorKind::InvalidUrl,
                    format!(
                        "{} holds a name that is not UTF-8 ({}); stagehost refuses it rather than alter it",
                        crate::display::path(&here),
                        crate::display::escape(&String::from_utf8_lossy(raw))
                    ),
                ));
            };
            let name = if relative.is_empty() {
                base.to_owned()
            } else {
                format!("{relative}/{base}")
            };
            let st = rustix::fs::statat(&dir_fd, base, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_error("stat", &here.join(base), e))?;
            let mut walked = Walked {
                name,
                kind: WalkKind::Other,
                size: None,
                modified: time(st.st_mtime, i64::try_from(st.st_mtime_nsec).unwrap_or(0)),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => {
                    walked.kind = WalkKind::File;
                    walked.size = Some(st.st_size as u64);
                }
                FileType::Directory => {
                    walked.kind = WalkKind::Directory;
                    if recursive {
                        pending.push(walked.name.clone());
                    }
                }
                FileType::Symlink => {
                    // Where it leads now; a link that leads nowhere is only a link.
                    match rustix::fs::statat(&dir_fd, base, AtFlags::empty()) {
                        Ok(target)
                            if FileType::from_raw_mode(target.st_mode) == FileType::RegularFile =>
                        {
                            walked.kind = WalkKind::Link { to_file: true };
                            walked.size = Some(target.st_size as u64);
                            walked.modified = time(
                                target.st_mtime,
                                i64::try_from(target.st_mtime_nsec).unwrap_or(0),
                            );
                        }
                        _ => walked.kind = WalkKind::Link { to_file: false },
                    }
                }
                _ => {}
            }
            out.push(walked);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_lists_links_as_links_and_never_enters_one() {
        let dir = std::env::temp_dir().join(format!("stagehost-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tree/sub")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside/secret"), "s").unwrap();
        std::fs::write(dir.join("tree/a"), "A").unwrap();
        std::fs::write(dir.join("tree/sub/b"), "BB").unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), dir.join("tree/out")).unwrap();
        std::os::unix::fs::symlink(dir.join("tree/a"), dir.join("tree/a-link")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("tree/dangling")).unwrap();
        let got: Vec<(String, WalkKind, Option<u64>)> = walk(&dir.join("tree"), true)
            .unwrap()
            .into_iter()
            .map(|w| (w.name, w.kind, w.size))
            .collect();
        assert_eq!(
            got,
            [
                ("a".to_owned(), WalkKind::File, Some(1)),
                (
                    "a-link".to_owned(),
                    WalkKind::Link { to_file: true },
                    Some(1)
                ),
                (
                    "dangling".to_owned(),
                    WalkKind::Link { to_file: false },
                    None
                ),
                ("out".to_owned(), WalkKind::Link { to_file: false }, None),
                ("sub".to_owned(), WalkKind::Directory, None),
                ("sub/b".to_owned(), WalkKind::File, Some(2)),
            ]
        );
        // A file is not a directory to walk; a missing root is not found.
        assert_eq!(
            walk(&dir.join("tree/a"), true).unwrap_err().kind(),
            ErrorKind::InvalidUrl
        );
        assert_eq!(
            walk(&dir.join("none"), true).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
