//! Atomic writes for providers: a temporary name in the destination directory, synced,
//! then renamed. A failed or cancelled write leaves nothing at the destination.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::StageError;
use crate::provider::Context;

/// A file being written under a temporary name next to its destination.
///
/// Dropping it without [`AtomicFile::commit`] removes the temporary file.
pub struct AtomicFile {
    file: Option<std::fs::File>,
    temp: PathBuf,
    dest: PathBuf,
}

/// The temporary name for `dest`: hidden, in the same directory (so the rename stays on
/// one file system), and unique within the process and across processes.
fn temp_name(dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.stagehost-{}-{n}.part", std::process::id()))
}

fn ensure_parent(dest: &Path) -> Result<(), StageError> {
    match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| {
                StageError::io(
                    format_args!("cannot create directory {}", parent.display()),
                    &e,
                )
            })
        }
        _ => Ok(()),
    }
}

impl AtomicFile {
    /// Creates the temporary file for `dest`, creating `dest`'s directory if needed.
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile, StageError> {
        let dest = dest.as_ref().to_path_buf();
        ensure_parent(&dest)?;
        let temp = temp_name(&dest);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| StageError::io(format_args!("cannot create {}", temp.display()), &e))?;
        Ok(AtomicFile {
            file: Some(file),
            temp,
            dest,
        })
    }

    /// The open temporary file.
    pub fn as_file_mut(&mut self) -> &mut std::fs::File {
        self.file
            .as_mut()
            .expect("the file is present until commit or drop")
    }

    /// The destination this file will be renamed to.
    pub fn destination(&self) -> &Path {
        &self.dest
    }

    /// Syncs the data, renames the temporary file onto the destination and syncs the
    /// directory.
    pub fn commit(mut self) -> Result<(), StageError> {
        let file = self
            .file
            .take()
            .expect("the file is present until commit or drop");
        file.sync_all()
            .map_err(|e| StageError::io(format_args!("cannot sync {}", self.temp.display()), &e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.dest).map_err(|e| {
            StageError::io(
                format_args!("cannot rename onto {}", self.dest.display()),
                &e,
            )
        })?;
        sync_parent(&self.dest);
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.as_file_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.as_file_mut().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Best effort: a rename is durable once its directory is synced.
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

/// How many bytes move between two progress reports and cancellation checks.
const COPY_CHUNK: u64 = 16 << 20;

/// Copies `src` to `dest` atomically and returns the byte count. Reports progress and
/// honours cancellation and the deadline of `ctx` between chunks. On Linux the bytes
/// move in the kernel (`copy_file_range`).
pub fn copy_atomically(src: &Path, dest: &Path, ctx: &Context<'_>) -> Result<u64, StageError> {
    let mut input = std::fs::File::open(src)
        .map_err(|e| StageError::io(format_args!("cannot open {}", src.display()), &e))?;
    let total = input
        .metadata()
        .map_err(|e| StageError::io(format_args!("cannot stat {}", src.display()), &e))?
        .len();
    let mut out = AtomicFile::create(dest)?;
    let mut done = 0u64;
    ctx.progress(0, Some(total));
    loop {
        ctx.check()?;
        let n = io::copy(&mut (&mut input).take(COPY_CHUNK), out.as_file_mut()).map_err(|e| {
            StageError::io(
                format_args!("cannot copy {} to {}", src.display(), dest.display()),
                &e,
            )
        })?;
        if n == 0 {
            break;
        }
        done += n;
        ctx.progress(done, Some(total));
    }
    if done != total {
        return Err(StageError::new(
            crate::ErrorKind::Integrity,
            format!(
                "{} changed size while copied: {done} bytes read, {total} expected",
                src.display()
            ),
        ));
    }
    out.commit()?;
    Ok(done)
}

/// Kinds of link [`link_atomically`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A symbolic link to the absolute source path.
    Symlink,
    /// A hard link (same file system only).
    Hardlink,
}

/// Makes `dest` a link to `src`, replacing whatever `dest` was in one rename.
pub fn link_atomically(src: &Path, dest: &Path, kind: LinkKind) -> Result<(), StageError> {
    ensure_parent(dest)?;
    let temp = temp_name(dest);
    let made = match kind {
        LinkKind::Symlink => {
            let target = std::path::absolute(src).map_err(|e| {
                StageError::io(format_args!("cannot resolve {}", src.display()), &e)
            })?;
            std::fs::metadata(&target).map_err(|e| {
                StageError::io(format_args!("cannot link to {}", src.display()), &e)
            })?;
            symlink(&target, &temp)
        }
        LinkKind::Hardlink => std::fs::hard_link(src, &temp),
    };
    made.map_err(|e| {
        StageError::io(
            format_args!("cannot link {} to {}", dest.display(), src.display()),
            &e,
        )
    })?;
    if let Err(e) = std::fs::rename(&temp, dest) {
        let _ = std::fs::remove_file(&temp);
        return Err(StageError::io(
            format_args!("cannot rename onto {}", dest.display()),
            &e,
        ));
    }
    sync_parent(dest);
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symlinks need a Unix host",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_atomic_file_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("stagehost-fs-test-{}", std::process::id()));
        let dest = dir.join("out.bin");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"whole");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
