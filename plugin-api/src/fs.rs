//! Atomic writes for providers: a temporary name in the destination directory, synced,
//! then renamed. A failed or cancelled write leaves nothing at the destination.
//!
//! Invariants:
//! - the temporary file lives in the destination's directory (the rename stays on one
//!   file system) under a hidden name that fits the file system's 255-byte limit
//!   whatever the destination's name is;
//! - no temporary file outlives a failed write: every error path removes it, and
//!   errors name the destination, never the temporary file;
//! - the rename replaces whatever sits at the destination (a symlink included) and
//!   never writes through it;
//! - temporary files left by a process that was killed (SIGKILL) are swept the next
//!   time this process writes into that directory; a temporary file whose owning
//!   process still runs, or that another host wrote (a shared file system), is never
//!   touched.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::display;
use crate::error::{ErrorKind, StageError};
use crate::provider::Context;

/// A file being written under a temporary name next to its destination.
///
/// Dropping it without [`AtomicFile::commit`] removes the temporary file.
pub struct AtomicFile {
    file: Option<std::fs::File>,
    temp: PathBuf,
    dest: PathBuf,
    /// What was at `dest` when the file was created (device and inode), if anything:
    /// the rename replaces only that, never what was saved there since (a file a user
    /// saved meanwhile is theirs).
    before: Option<(u64, u64)>,
    /// Bytes written through [`Write`], and how far write-back was started.
    writeback: WriteBack,
}

/// How much is written before its write-back starts: every such window is handed to
/// the disk while the next one arrives, so the sync at commit finds little left.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// Write-back started as a file is written (Linux `sync_file_range`), so a durable
/// write costs about what the disk takes, not the transfer's time plus a sync of it
/// all at the end.
#[derive(Default)]
struct WriteBack {
    written: u64,
    /// Write-back was started for the bytes before this offset.
    started: u64,
    /// The window before `started`'s window, waited for before the next is started
    /// (bounds the dirty pages one file holds to two windows).
    previous: u64,
}

impl WriteBack {
    fn wrote(&mut self, file: &std::fs::File, n: usize) {
        self.written += n as u64;
        if self.written - self.started < WRITEBACK_WINDOW {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = file.as_raw_fd();
            // SAFETY: ranges of a file descriptor we own; the call only starts or
            // waits for write-back, and its failure changes nothing (commit syncs).
            unsafe {
                if self.started > self.previous {
                    libc::sync_file_range(
                        fd,
                        self.previous as i64,
                        (self.started - self.previous) as i64,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
                libc::sync_file_range(
                    fd,
                    self.started as i64,
                    (self.written - self.started) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        self.previous = self.started;
        self.started = self.written;
    }
}

/// Device and inode of what is at `path` (not following a link), if anything.
fn identity_at(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        std::fs::symlink_metadata(path).ok().map(|_| (0, 0))
    }
}

/// The longest file name most file systems take (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// The marker every temporary name carries: `.<name>.stagehost-<host>-<pid>-<n>.part`.
const MARKER: &str = ".stagehost-";
const SUFFIX: &str = ".part";

/// This machine's host name, as it appears in temporary names (at most 32 bytes of
/// `[A-Za-z0-9.]`), so a sweep never removes a file written by another host on a
/// shared file system.
fn host_tag() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        #[cfg(unix)]
        let name = rustix::system::uname().nodename().to_bytes().to_vec();
        #[cfg(not(unix))]
        let name = Vec::new();
        let raw = if name.is_empty() {
            &b"host"[..]
        } else {
            &name[..]
        };
        raw.iter()
            .filter(|b| b.is_ascii_alphanumeric() || **b == b'.')
            .take(32)
            .map(|&b| char::from(b))
            .collect()
    })
}

/// The temporary name for `dest`: hidden, in the same directory, unique within the
/// process and across processes and hosts, and never longer than 255 bytes (a long
/// destination name is shortened in the temporary name only).
fn temp_name(dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tail = format!("{MARKER}{}-{}-{n}{SUFFIX}", host_tag(), std::process::id());
    let name = dest.file_name().unwrap_or_default().as_encoded_bytes();
    let room = NAME_MAX - 1 - tail.len();
    let mut keep = name.len().min(room);
    // Cut a UTF-8 name on a character boundary.
    if let Ok(text) = std::str::from_utf8(name) {
        while !text.is_char_boundary(keep) {
            keep -= 1;
        }
    }
    let mut temp = Vec::with_capacity(1 + keep + tail.len());
    temp.push(b'.');
    temp.extend_from_slice(&name[..keep]);
    temp.extend_from_slice(tail.as_bytes());
    // SAFETY: the bytes are a prefix of an OsStr's encoded bytes (cut at a UTF-8
    // boundary when it is UTF-8) followed by ASCII; on Unix any bytes are an OsStr.
    let temp = unsafe { OsString::from_encoded_bytes_unchecked(temp) };
    dest.with_file_name(temp)
}

/// The owner of a temporary name made by [`temp_name`] on this host: its pid.
fn temp_owner(name: &OsStr) -> Option<u32> {
    let name = name.as_encoded_bytes();
    let rest = name.strip_prefix(b".")?.strip_suffix(SUFFIX.as_bytes())?;
    let host_start = rest
        .windows(MARKER.len())
        .rposition(|w| w == MARKER.as_bytes())?
        + MARKER.len();
    let fields = std::str::from_utf8(&rest[host_start..]).ok()?;
    let (host_pid, n) = fields.rsplit_once('-')?;
    let (host, pid) = host_pid.rsplit_once('-')?;
    n.parse::<u64>().ok()?;
    (host == host_tag()).then(|| pid.parse().ok())?
}

/// Whether process `pid` still exists (or cannot be probed: then it is kept).
fn process_exists(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return true;
        };
        // Signal 0 only probes for the process; nothing is sent.
        rustix::process::test_kill_process(pid) != Err(rustix::io::Errno::SRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Removes, once per directory per process, the temporary files that processes of
/// this host which no longer exist left in `dir`.
fn sweep_stale_temporaries(dir: &Path) {
    static SWEPT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    {
        let mut swept = SWEPT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !swept
            .get_or_insert_with(HashSet::new)
            .insert(dir.to_path_buf())
        {
            return;
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(pid) = temp_owner(&name) {
            if pid != me && !process_exists(pid) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn ensure_parent(dest: &Path) -> Result<(), StageError> {
    match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| {
                StageError::io(
                    format_args!("cannot create directory {}", display::path(parent)),
                    &e,
                )
            })
        }
        _ => Ok(()),
    }
}

/// A destination must name a file: not empty, not ending in `/`, `.` or `..`.
fn check_destination(dest: &Path) -> Result<(), StageError> {
    let raw = dest.as_os_str().as_encoded_bytes();
    let names_a_file = dest.file_name().is_some() && !raw.ends_with(b"/");
    if names_a_file {
        Ok(())
    } else {
        Err(StageError::new(
            ErrorKind::InvalidUrl,
            format!(
                "cannot write {}: the destination names a directory, not a file",
                display::path(dest)
            ),
        ))
    }
}

/// Renames `temp` to `dest` only if nothing is at `dest`: `renameat2` with
/// `RENAME_NOREPLACE`, else (a file system without it) a hard link, which fails as
/// well when `dest` exists, else a check just before a plain rename.
fn rename_noreplace(temp: &Path, dest: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, temp, CWD, dest, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            // A file system or kernel without RENAME_NOREPLACE: the fallback below.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match std::fs::hard_link(temp, dest) {
        Ok(()) => {
            let _ = std::fs::remove_file(temp);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if std::fs::symlink_metadata(dest).is_ok() => {
            Err(io::Error::from(io::ErrorKind::AlreadyExists))
        }
        Err(_) => std::fs::rename(temp, dest),
    }
}

/// Renames `temp` onto `dest`, only if what is at `dest` is still `before` (nothing,
/// or that device and inode), removing `temp` if that fails.
fn rename_into_place(
    temp: &Path,
    dest: &Path,
    before: Option<(u64, u64)>,
) -> Result<(), StageError> {
    let renamed = match before {
        None => rename_noreplace(temp, dest),
        Some(id) if identity_at(dest) == Some(id) => std::fs::rename(temp, dest),
        Some(_) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
    };
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(temp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Err(StageError::new(
                ErrorKind::Other,
                format!(
                    "cannot write {}: something appeared there while it was being written; it is left as it is",
                    display::path(dest)
                ),
            ));
        }
        let why = if dest.is_dir() {
            "a directory is in the way".to_owned()
        } else {
            e.to_string()
        };
        let kind = StageError::io("", &e).kind();
        return Err(StageError::new(
            kind,
            format!("cannot write {}: {why}", display::path(dest)),
        ));
    }
    sync_parent(dest);
    Ok(())
}

impl AtomicFile {
    /// Creates the temporary file for `dest`, creating `dest`'s directory if needed.
    /// It gets the default mode of a new file (`0666` less the umask).
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile, StageError> {
        let dest = dest.as_ref().to_path_buf();
        check_destination(&dest)?;
        ensure_parent(&dest)?;
        if let Some(dir) = dest.parent() {
            sweep_stale_temporaries(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            });
        }
        let temp = temp_name(&dest);
        let before = identity_at(&dest);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| {
                StageError::io(format_args!("cannot create {}", display::path(&dest)), &e)
            })?;
        Ok(AtomicFile {
            file: Some(file),
            temp,
            dest,
            before,
            writeback: WriteBack::default(),
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

    /// Gives the file these permission bits (Unix mode, e.g. `0o600`) now, before any
    /// byte of a secret is written, whatever the umask.
    pub fn set_mode(&mut self, mode: u32) -> Result<(), StageError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dest = display::path(&self.dest);
            self.as_file_mut()
                .set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
                .map_err(|e| StageError::io(format_args!("cannot set the mode of {dest}"), &e))
        }
        #[cfg(not(unix))]
        {
            let _ = mode;
            Ok(())
        }
    }

    /// Syncs the data, renames the temporary file onto the destination (replacing a
    /// symlink there, never following it) and syncs the directory. On failure the
    /// temporary file is removed.
    pub fn commit(mut self) -> Result<(), StageError> {
        let file = self
            .file
            .take()
            .expect("the file is present until commit or drop");
        let synced = file.sync_all();
        drop(file);
        if let Err(e) = synced {
            let _ = std::fs::remove_file(&self.temp);
            return Err(StageError::io(
                format_args!("cannot write {}", display::path(&self.dest)),
                &e,
            ));
        }
        rename_into_place(&self.temp, &self.dest, self.before)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .expect("the file is present until commit or drop");
        let n = file.write(buf)?;
        self.writeback.wrote(file, n);
        Ok(n)
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

/// Opens `src` for reading, refusing anything but a regular file (a FIFO, a device
/// such as `/dev/zero`, a socket, a directory) without blocking on it.
pub fn open_regular(src: &Path) -> Result<(std::fs::File, std::fs::Metadata), StageError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A FIFO with no writer would block the open; O_NONBLOCK does not change how a
        // regular file reads.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let shown = || display::path(src);
    let refuse = |meta: &std::fs::Metadata| {
        // A directory is staged whole when its URL ends in `/`.
        let hint = if meta.is_dir() {
            "; to stage the whole directory, end its URL with /"
        } else {
            ""
        };
        StageError::new(
            ErrorKind::InvalidUrl,
            format!(
                "cannot copy {}: it is {}, not a regular file{hint}",
                shown(),
                file_kind(meta)
            ),
        )
    };
    let file = options
        .open(src)
        .map_err(|e| match std::fs::metadata(src) {
            // A socket cannot be opened at all: say what it is.
            Ok(meta) if !meta.is_file() => refuse(&meta),
            _ => StageError::io(format_args!("cannot open {}", shown()), &e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| StageError::io(format_args!("cannot stat {}", shown()), &e))?;
    if !meta.is_file() {
        return Err(refuse(&meta));
    }
    Ok((file, meta))
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// How many bytes move between two progress reports and cancellation checks.
const COPY_CHUNK: u64 = 16 << 20;

/// Copies `src` to `dest` atomically and returns the byte count. The copy keeps the
/// source's permission bits (a `0600` key stays `0600`, an executable stays
/// executable). Only a regular file is copied. Reports progress and honours
/// cancellation and the deadline of `ctx` between chunks. On Linux the bytes move in
/// the kernel (`copy_file_range`).
pub fn copy_atomically(src: &Path, dest: &Path, ctx: &Context<'_>) -> Result<u64, StageError> {
    let (mut input, meta) = open_regular(src)?;
    let total = meta.len();
    let mut out = AtomicFile::create(dest)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        out.set_mode(meta.permissions().mode())?;
    }
    let mut done = 0u64;
    ctx.progress(0, Some(total));
    loop {
        ctx.check()?;
        let n = io::copy(&mut (&mut input).take(COPY_CHUNK), out.as_file_mut()).map_err(|e| {
            StageError::io(
                format_args!(
                    "cannot copy {} to {}",
                    display::path(src),
                    display::path(dest)
                ),
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
            ErrorKind::Integrity,
            format!(
                "{} changed size while copied: {done} bytes read, {total} expected",
                display::path(src)
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
    check_destination(dest)?;
    ensure_parent(dest)?;
    let temp = temp_name(dest);
    let before = identity_at(dest);
    let made = match kind {
        LinkKind::Symlink => {
            let target = std::path::absolute(src).map_err(|e| {
                StageError::io(format_args!("cannot resolve {}", display::path(src)), &e)
            })?;
            std::fs::metadata(&target).map_err(|e| {
                StageError::io(format_args!("cannot link to {}", display::path(src)), &e)
            })?;
            symlink(&target, &temp)
        }
        LinkKind::Hardlink => std::fs::hard_link(src, &temp),
    };
    made.map_err(|e| {
        StageError::io(
            format_args!(
                "cannot link {} to {}",
                display::path(dest),
                display::path(src)
            ),
            &e,
        )
    })?;
    rename_into_place(&temp, dest, before)
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

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stagehost-fs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_saved_at_the_destination_during_the_write_is_never_replaced() {
        let dir = scratch("appeared");
        let dest = dir.join("out.txt");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"downloaded").unwrap();
        // A user saves their own file there while the download runs.
        std::fs::write(&dest, "the user's own").unwrap();
        let e = f.commit().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Other);
        assert!(e.message().contains("appeared there"), "{e}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "the user's own");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        // What was there when the write began is replaced, as before.
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"again").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "again");
        // But not a file saved in its place meanwhile (a new inode).
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"third").unwrap();
        std::fs::write(dir.join("saved.tmp"), "saved by the user").unwrap();
        std::fs::rename(dir.join("saved.tmp"), &dest).unwrap();
        assert!(f.commit().unwrap_err().message().contains("appeared there"));
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "saved by the user");
        // The no-replace rename itself, as every commit of a new file uses it.
        let temp = dir.join("temp.txt");
        std::fs::write(&temp, "t").unwrap();
        let e = rename_noreplace(&temp, &dest).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_written_across_many_writeback_windows_lands_whole() {
        let dir = scratch("windows");
        let dest = dir.join("big.bin");
        let mut f = AtomicFile::create(&dest).unwrap();
        let block: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let mut expected = Vec::new();
        // Over three windows, in writes that never line up with one.
        while expected.len() < 3 * WRITEBACK_WINDOW as usize + 17 {
            f.write_all(&block).unwrap();
            expected.extend_from_slice(&block);
        }
        assert!(
            f.writeback.started >= 2 * WRITEBACK_WINDOW,
            "write-back started"
        );
        assert!(f.writeback.previous > 0, "an earlier window was waited for");
        f.commit().unwrap();
        assert!(std::fs::read(&dest).unwrap() == expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropped_atomic_file_leaves_nothing() {
        let dir = scratch("drop");
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

    #[test]
    fn a_failed_rename_removes_the_temporary_and_names_the_destination() {
        let dir = scratch("rename");
        let dest = dir.join("taken");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("inside"), b"x").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"data").unwrap();
        let err = f.commit().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot write {}: a directory is in the way", dest.display())
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("taken")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_names_fit_name_max_and_parse_back() {
        let long = "é".repeat(127) + "x"; // 255 bytes
        let dest = Path::new("/d").join(&long);
        let temp = temp_name(&dest);
        let name = temp.file_name().unwrap();
        assert!(name.len() <= NAME_MAX, "{}", name.len());
        assert!(name.to_str().is_some(), "cut on a character boundary");
        assert_eq!(temp_owner(name), Some(std::process::id()));
        assert_eq!(
            temp_owner(OsStr::new(".x.stagehost-otherhost-1-2.part")),
            None
        );
        assert_eq!(temp_owner(OsStr::new("x.part")), None);
    }
}
