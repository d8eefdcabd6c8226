//! One archive on disk: its sidecar lock and journal, crash recovery, group commits
//! of new members, and extraction.
//!
//! **Locking.** `<archive>.lock` is locked with `flock`: exclusively by a writer,
//! shared by a reader, always with a deadline (`try_lock` with backoff). Within one
//! process, the jobs adding members to one archive queue up: the first becomes the
//! leader and commits everything queued in one update (a group commit), the others
//! wait for their result.
//!
//! **Crash safety.** An update writes new members over the old central directory and
//! then a new directory. Before it touches the archive it saves the old directory and
//! end records (`archive[cd_offset..len]`) with `len` and `cd_offset` in
//! `<archive>.journal` and syncs it; it syncs the archive after the update, then
//! empties the journal (two syncs an update). Whoever locks the archive next and finds
//! a journal that is not empty keeps the archive if the update finished (it opens and
//! every member written from `cd_offset` on reads back with its CRC: only the emptying
//! was lost) and otherwise rolls it back to exactly its old bytes. A journal whose
//! checksum fails was cut short before the archive was touched, and is only emptied. A new archive is first created empty (its end record alone) under a
//! temporary name and renamed, so there is always a readable archive to roll back to.
//!
//! **Speed.** The parsed directory is kept between updates while the archive's size,
//! mtime and inode are what this process left, so an update reads nothing back.
//!
//! Invariant: the archive is changed only while its exclusive lock is held and a synced
//! journal describes how to undo the change.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use stagehost_plugin_api::display;
use stagehost_plugin_api::fs::AtomicFile;
use stagehost_plugin_api::{Context, ErrorKind, StageError};

use crate::format::{self, Directory, Member};

/// How members are written.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub overwrite: bool,
    pub lock_timeout: Duration,
    pub deflate: bool,
}

/// The archives this process writes, by path, for the queue of each.
static ARCHIVES: LazyLock<Mutex<HashMap<PathBuf, Arc<Archive>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// One archive's queue and what this process knows of it.
pub struct Archive {
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    queue: Vec<Arc<Pending>>,
    committing: bool,
    cache: Option<Cached>,
}

/// The directory as this process left the archive, and how to tell it is unchanged.
struct Cached {
    signature: Signature,
    directory: Directory,
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct Signature {
    len: u64,
    mtime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Signature {
    fn of(meta: &std::fs::Metadata) -> Signature {
        Signature {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// A member waiting to be added, and its outcome once an update ran.
struct Pending {
    member: String,
    source: PathBuf,
    options: Options,
    outcome: Mutex<Option<Result<u64, StageError>>>,
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The archive at `path` (absolute), shared by every job of this process.
pub fn archive(path: &Path) -> Arc<Archive> {
    ARCHIVES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(path.to_path_buf())
        .or_insert_with(|| {
            Arc::new(Archive {
                path: path.to_path_buf(),
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            })
        })
        .clone()
}

/// Takes `lock` (exclusive or shared) within `limit` and the deadline of `ctx`.
fn take_lock(
    ctx: &Context<'_>,
    lock: &File,
    lock_path: &Path,
    exclusive: bool,
    limit: Duration,
) -> Result<(), StageError> {
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    loop {
        let attempt = if exclusive {
            lock.try_lock()
        } else {
            lock.try_lock_shared()
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(StageError::io(
                    format_args!("cannot lock {}", display::path(lock_path)),
                    &e,
                ))
            }
        }
        ctx.check()?;
        if start.elapsed() >= limit {
            return Err(StageError::new(
                ErrorKind::TimedOut,
                format!(
                    "cannot lock {} within {:.1}s: another process holds it (raise lock_timeout_secs, or look for a stuck writer)",
                    display::path(lock_path),
                    limit.as_secs_f64()
                ),
            ));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

const JOURNAL_MAGIC: &[u8; 8] = b"SHZJNL01";

/// How long a leader waits for more members when fewer than `LINGER_UNTIL` are
/// queued: at most `LINGER`, and no longer than `LINGER_GAP` after the last arrival
/// (when the host's transfer limits let no more come, waiting is in vain).
const LINGER: Duration = Duration::from_millis(5);
const LINGER_GAP: Duration = Duration::from_millis(1);
const LINGER_UNTIL: usize = 16;

fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The sidecar files of an archive, opened under its lock.
struct Sidecars {
    /// `None` when the archive is only read by a user who cannot create its lock file
    /// (a shared, read-only dataset): nobody who could write the archive holds one.
    lock: Option<File>,
    lock_path: PathBuf,
    journal_path: PathBuf,
    /// The archive's owner: a sidecar must belong to it or to this user.
    archive_owner: u32,
}

/// Opens a sidecar file never through a symbolic link, and only if it is a regular
/// file owned by this user or by the archive's owner: a planted link or someone
/// else's file is refused, never truncated or written.
fn open_sidecar(
    path: &Path,
    what: &str,
    options: &mut OpenOptions,
    archive_owner: u32,
) -> std::io::Result<Result<File, StageError>> {
    let file = match options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Err(StageError::new(
                ErrorKind::Permission,
                format!(
                    "the {what} {} is a symbolic link; stagehost never opens one through a link",
                    display::path(path)
                ),
            )))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() {
        return Ok(Err(StageError::new(
            ErrorKind::Permission,
            format!("the {what} {} is not a regular file", display::path(path)),
        )));
    }
    if meta.nlink() > 1 {
        return Ok(Err(StageError::new(
            ErrorKind::Permission,
            format!(
                "the {what} {} has other hard links; stagehost never writes a file that is also elsewhere",
                display::path(path)
            ),
        )));
    }
    if meta.uid() != me && meta.uid() != archive_owner {
        return Ok(Err(StageError::new(
            ErrorKind::Permission,
            format!(
                "the {what} {} belongs to uid {}, neither this user nor the archive's owner; refusing it",
                display::path(path),
                meta.uid()
            ),
        )));
    }
    Ok(Ok(file))
}

impl Sidecars {
    /// Opens (creating) `<archive>.lock`; for a reader (`write` false) that may not
    /// create it, an existing one read-only, else none.
    fn open(path: &Path, write: bool) -> Result<Sidecars, StageError> {
        let lock_path = sidecar(path, ".lock");
        let archive_owner =
            std::fs::metadata(path).map_or(rustix::process::geteuid().as_raw(), |m| m.uid());
        let failed = |e: std::io::Error| {
            StageError::io(
                format_args!("cannot open the lock file {}", display::path(&lock_path)),
                &e,
            )
        };
        let created = open_sidecar(
            &lock_path,
            "lock file",
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644),
            archive_owner,
        );
        let lock = match created {
            Ok(opened) => Some(opened?),
            Err(e)
                if !write
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES | libc::EROFS | libc::EPERM)
                    ) =>
            {
                match open_sidecar(
                    &lock_path,
                    "lock file",
                    OpenOptions::new().read(true),
                    archive_owner,
                ) {
                    Ok(opened) => Some(opened?),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(failed(e)),
                }
            }
            Err(e) => return Err(failed(e)),
        };
        Ok(Sidecars {
            lock,
            lock_path,
            journal_path: sidecar(path, ".journal"),
            archive_owner,
        })
    }

    /// Takes the lock, exclusive or shared (a reader without a lock file takes none).
    fn take(&self, ctx: &Context<'_>, exclusive: bool, limit: Duration) -> Result<(), StageError> {
        match &self.lock {
            Some(lock) => take_lock(ctx, lock, &self.lock_path, exclusive, limit),
            None if exclusive => Err(StageError::new(
                ErrorKind::Permission,
                format!(
                    "cannot create the lock file {}: no write access to the archive's directory",
                    display::path(&self.lock_path)
                ),
            )),
            None => Ok(()),
        }
    }

    /// Releases the lock.
    fn release(&self) -> Result<(), StageError> {
        match &self.lock {
            Some(lock) => lock
                .unlock()
                .map_err(|e| StageError::io("cannot unlock", &e)),
            None => Ok(()),
        }
    }

    fn journal(&self, create: bool) -> Result<Option<File>, StageError> {
        let opened = open_sidecar(
            &self.journal_path,
            "journal",
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .mode(0o644),
            self.archive_owner,
        );
        match opened {
            Ok(file) => file.map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => Ok(None),
            Err(e) => Err(StageError::io(
                format_args!(
                    "cannot open the journal {}",
                    display::path(&self.journal_path)
                ),
                &e,
            )),
        }
    }

    /// Whether a journal with content is waiting.
    fn pending_journal(&self) -> bool {
        // A link in its place counts as pending: recovery then refuses it by name.
        std::fs::symlink_metadata(&self.journal_path)
            .is_ok_and(|m| m.len() > 0 || m.file_type().is_symlink())
    }

    /// Rolls `archive` back from a journal that is not empty. Holds the exclusive lock.
    fn recover(&self, archive: &Path) -> Result<bool, StageError> {
        let Some(journal) = self.journal(false)? else {
            return Ok(false);
        };
        let io = |what: &str, e: std::io::Error| {
            StageError::io(format_args!("cannot {what} {}", display::path(archive)), &e)
        };
        let mut bytes = Vec::new();
        (&journal)
            .read_to_end(&mut bytes)
            .map_err(|e| io("read the journal of", e))?;
        if bytes.is_empty() {
            return Ok(false);
        }
        let valid = bytes.len() >= 40
            && &bytes[..8] == JOURNAL_MAGIC
            && fnv64(&bytes[..bytes.len() - 8])
                == u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().expect("8 bytes"));
        let mut rolled_back = false;
        if valid {
            let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
            let (old_len, cd_offset, tail_len) = (word(8), word(16), word(24) as usize);
            // An update that finished (its members all read back with the right CRC)
            // stays: only its journal was left to empty.
            if !update_finished(archive, cd_offset) {
                let tail = &bytes[32..32 + tail_len.min(bytes.len() - 40)];
                let file = OpenOptions::new()
                    .write(true)
                    .open(archive)
                    .map_err(|e| io("open", e))?;
                file.write_all_at(tail, cd_offset)
                    .map_err(|e| io("roll back", e))?;
                file.set_len(old_len).map_err(|e| io("roll back", e))?;
                file.sync_all().map_err(|e| io("sync", e))?;
                rolled_back = true;
            }
        }
        journal
            .set_len(0)
            .map_err(|e| io("empty the journal of", e))?;
        journal
            .sync_all()
            .map_err(|e| io("sync the journal of", e))?;
        Ok(rolled_back)
    }
}

/// Whether the archive at `path` is whole after an update that wrote from
/// `cd_offset`: it opens, and every member from there on reads back with its CRC.
fn update_finished(path: &Path, cd_offset: u64) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(mut archive) = zip::ZipArchive::new(file) else {
        return false;
    };
    (0..archive.len()).all(|i| match archive.by_index(i) {
        Ok(mut entry) if entry.header_start() >= cd_offset => {
            std::io::copy(&mut entry, &mut std::io::sink()).is_ok()
        }
        Ok(_) => true,
        Err(_) => false,
    })
}

/// Creates an empty archive (its end record alone) at `path` atomically, unless one
/// exists.
fn ensure_exists(path: &Path) -> Result<(), StageError> {
    if path.exists() {
        return Ok(());
    }
    let mut empty = AtomicFile::create(path)?;
    use std::io::Write;
    let mut record = vec![0x50, 0x4b, 0x05, 0x06];
    record.extend_from_slice(&[0u8; 18]);
    empty
        .write_all(&record)
        .map_err(|e| StageError::io(format_args!("cannot create {}", display::path(path)), &e))?;
    empty.commit()
}

impl Archive {
    /// Adds `source` as `member`, in the next group commit; blocks until it is durable.
    /// Returns the bytes read from `source`.
    pub fn add(
        &self,
        ctx: &Context<'_>,
        member: &str,
        source: &Path,
        options: Options,
    ) -> Result<u64, StageError> {
        let pending = Arc::new(Pending {
            member: member.to_owned(),
            source: source.to_path_buf(),
            options,
            outcome: Mutex::new(None),
        });
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.queue.push(pending.clone());
        if state.committing {
            // A lingering leader counts the queue.
            self.wake.notify_all();
        }
        loop {
            if let Some(outcome) = pending
                .outcome
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return outcome;
            }
            if !state.committing {
                break;
            }
            if let Err(e) = ctx.check() {
                // Still queued: withdraw. Taken: the update is under way; wait for it.
                if let Some(at) = state.queue.iter().position(|p| Arc::ptr_eq(p, &pending)) {
                    state.queue.remove(at);
                    return Err(e);
                }
            }
            state = self
                .wake
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        // This job leads: it commits everything queued. Members arrive while an
        // update runs; a short wait for more, when few are queued, makes updates fewer
        // and larger (each rewrites the whole directory).
        state.committing = true;
        let lingering = Instant::now();
        let (mut seen, mut grew) = (state.queue.len(), Instant::now());
        while state.queue.len() < LINGER_UNTIL
            && lingering.elapsed() < LINGER
            && grew.elapsed() < LINGER_GAP
        {
            state = self
                .wake
                .wait_timeout(state, LINGER_GAP)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if state.queue.len() > seen {
                (seen, grew) = (state.queue.len(), Instant::now());
            }
        }
        let batch = std::mem::take(&mut state.queue);
        let mut cache = state.cache.take();
        drop(state);
        let started = Instant::now();
        let outcomes = self.commit(ctx, &batch, &mut cache);
        ctx.debug(&format!(
            "updated {} with {} member(s) in {:.2} ms",
            display::path(&self.path),
            batch.len(),
            started.elapsed().as_secs_f64() * 1e3
        ));
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.cache = cache;
        state.committing = false;
        for (p, outcome) in batch.iter().zip(outcomes) {
            *p.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        }
        drop(state);
        self.wake.notify_all();
        let outcome = pending
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        outcome.unwrap_or_else(|| Err(StageError::other("the member was not committed")))
    }

    /// One update: every member of `batch` that may be added, under the exclusive
    /// lock, journaled. One outcome per member, in order.
    fn commit(
        &self,
        ctx: &Context<'_>,
        batch: &[Arc<Pending>],
        cache: &mut Option<Cached>,
    ) -> Vec<Result<u64, StageError>> {
        match self.try_commit(ctx, batch, cache) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                *cache = None;
                batch.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }

    fn try_commit(
        &self,
        ctx: &Context<'_>,
        batch: &[Arc<Pending>],
        cache: &mut Option<Cached>,
    ) -> Result<Vec<Result<u64, StageError>>, StageError> {
        let path = &self.path;
        let shown = display::path(path);
        let io = |what: &str, e: std::io::Error| {
            StageError::io(format_args!("cannot {what} {shown}"), &e)
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        }
        let sidecars = Sidecars::open(path, true)?;
        let limit = batch
            .iter()
            .map(|p| p.options.lock_timeout)
            .min()
            .unwrap_or(Duration::from_secs(60));
        sidecars.take(ctx, true, limit)?;
        // The lock goes with `sidecars` when this returns.
        if sidecars.recover(path)? {
            *cache = None;
        }
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| io("open", e))
        };
        let read = |file: &File, cache: &mut Option<Cached>| {
            let meta = file.metadata().map_err(|e| io("read", e))?;
            let signature = Signature::of(&meta);
            let directory = match cache.take() {
                Some(c) if c.signature == signature => c.directory,
                _ => Directory::read(file, meta.len()).map_err(|e| {
                    StageError::other(format!(
                        "{shown} is not a zip archive stagehost can add to: {e}"
                    ))
                })?,
            };
            Ok::<_, StageError>((meta.len(), signature, directory))
        };
        let existing = if path.exists() {
            let file = open()?;
            let (len, signature, directory) = read(&file, cache)?;
            Some((file, len, signature, directory))
        } else {
            None
        };

        // Which members go in: no name twice, an existing name only with overwrite, and
        // only a source that opens as a regular file.
        let mut outcomes: Vec<Option<Result<u64, StageError>>> = vec![None; batch.len()];
        let mut sources: Vec<Option<(File, std::fs::Metadata)>> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (i, p) in batch.iter().enumerate() {
            let taken = existing
                .as_ref()
                .is_some_and(|(.., d)| d.contains(&p.member))
                || names.contains(&p.member.as_str());
            // A member that already holds exactly these bytes (a workflow run again)
            // is left as it is: the stage-out succeeds without an update.
            let same = || {
                let (crc, size) = existing.as_ref()?.3.crc_and_size(&p.member)?;
                let (mut source, meta) = self.open_source(p).ok()?;
                (meta.len() == size && crc_of(&mut source).ok()? == crc).then_some(size)
            };
            let unchanged = (taken && !p.options.overwrite && !names.contains(&p.member.as_str()))
                .then(same)
                .flatten();
            if let Some(size) = unchanged {
                outcomes[i] = Some(Ok(size));
                sources.push(None);
                continue;
            }
            let source = if taken && !p.options.overwrite {
                Err(StageError::other(format!(
                    "{shown} already holds a member {}; to replace it, set overwrite = true in this zip provider's settings (settings = {{ overwrite = true }})",
                    p.member
                )))
            } else {
                self.open_source(p)
            };
            match source {
                Ok(source) => {
                    names.push(&p.member);
                    sources.push(Some(source));
                }
                Err(e) => {
                    outcomes[i] = Some(Err(e));
                    sources.push(None);
                }
            }
        }
        if outcomes.iter().all(Option::is_some) {
            if let Some((_, _, signature, directory)) = existing {
                *cache = Some(Cached {
                    signature,
                    directory,
                });
            }
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let (mut file, old_len, mut directory) = match existing {
            Some((file, len, _, directory)) => (file, len, directory),
            None => {
                ensure_exists(path)?;
                let file = open()?;
                let (len, _, directory) = read(&file, cache)?;
                (file, len, directory)
            }
        };
        let cd_offset = directory.cd_offset;

        // The journal first: the old directory and end records, synced.
        let mut tail = vec![0u8; (old_len - cd_offset) as usize];
        file.read_exact_at(&mut tail, cd_offset)
            .map_err(|e| io("read", e))?;
        let mut record = Vec::with_capacity(tail.len() + 40);
        record.extend_from_slice(JOURNAL_MAGIC);
        record.extend_from_slice(&old_len.to_le_bytes());
        record.extend_from_slice(&cd_offset.to_le_bytes());
        record.extend_from_slice(&(tail.len() as u64).to_le_bytes());
        record.extend_from_slice(&tail);
        record.extend_from_slice(&fnv64(&record).to_le_bytes());
        let journal = sidecars.journal(true)?.expect("created");
        journal
            .set_len(0)
            .and_then(|()| journal.write_all_at(&record, 0))
            .and_then(|()| journal.sync_data())
            .map_err(|e| io("write the journal of", e))?;

        // The members, over the old directory, then the new directory.
        let mut at = cd_offset;
        for (i, (p, source)) in batch.iter().zip(sources).enumerate() {
            let Some(source) = source else {
                continue;
            };
            match self.write_one(ctx, &mut file, at, p, source) {
                Ok((entry, end, bytes)) => {
                    directory.insert(entry);
                    at = end;
                    outcomes[i] = Some(Ok(bytes));
                }
                Err(Failure::Source(e)) => outcomes[i] = Some(Err(e)),
                Err(Failure::Archive(e)) => {
                    self.undo(&sidecars);
                    return Err(e);
                }
            }
        }
        let written = directory
            .write_at(&mut file, at)
            .and_then(|end| file.set_len(end).map(|()| end))
            .and_then(|end| file.sync_data().map(|()| end));
        if let Err(e) = written {
            self.undo(&sidecars);
            return Err(io("write", e));
        }
        // Not synced: should the emptying be lost, recovery finds the update whole
        // and keeps it.
        journal
            .set_len(0)
            .map_err(|e| io("empty the journal of", e))?;
        let meta = file.metadata().map_err(|e| io("read", e))?;
        *cache = Some(Cached {
            signature: Signature::of(&meta),
            directory,
        });
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// Rolls back a failed update at once (best effort; the next writer would too).
    fn undo(&self, sidecars: &Sidecars) {
        let _ = sidecars.recover(&self.path);
    }

    /// `p`'s source, opened: a regular file, never through a symbolic link.
    fn open_source(&self, p: &Pending) -> Result<(File, std::fs::Metadata), StageError> {
        let failed = |e: &std::io::Error| {
            StageError::io(
                format_args!(
                    "cannot add {} to {}",
                    display::path(&p.source),
                    display::path(&self.path)
                ),
                e,
            )
        };
        let source = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&p.source)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => StageError::new(
                    ErrorKind::Permission,
                    format!(
                        "{} is a symbolic link; stagehost adds only regular files to an archive",
                        display::path(&p.source)
                    ),
                ),
                _ => failed(&e),
            })?;
        let meta = source.metadata().map_err(|e| failed(&e))?;
        if let Ok(archive) = std::fs::metadata(&self.path) {
            if archive.dev() == meta.dev() && archive.ino() == meta.ino() {
                return Err(StageError::new(
                    ErrorKind::InvalidUrl,
                    format!(
                        "{} is the archive itself; it cannot be added to itself",
                        display::path(&p.source)
                    ),
                ));
            }
        }
        if !meta.is_file() {
            return Err(StageError::other(format!(
                "{} is not a regular file",
                display::path(&p.source)
            )));
        }
        Ok((source, meta))
    }

    /// Writes `p` from `source` at `at`: its entry, where it ends and its size.
    fn write_one(
        &self,
        ctx: &Context<'_>,
        file: &mut File,
        at: u64,
        p: &Pending,
        (mut source, meta): (File, std::fs::Metadata),
    ) -> Result<(format::Entry, u64, u64), Failure> {
        let member = Member {
            name: &p.member,
            mode: meta.mode(),
            modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
            size: meta.len(),
            deflate: p.options.deflate,
        };
        let total = meta.len();
        let mut progress = |done: u64| ctx.progress(done, Some(total));
        match format::write_member(file, at, &member, &mut source, &mut progress) {
            Ok((entry, end)) => Ok((entry, end, total)),
            // A read of the source failed, or it changed size: this member only.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(Failure::Source(StageError::io(
                    format_args!(
                        "cannot add {} to {}",
                        display::path(&p.source),
                        display::path(&self.path)
                    ),
                    &e,
                )))
            }
            Err(e) => Err(Failure::Archive(StageError::io(
                format_args!("cannot write {}", display::path(&self.path)),
                &e,
            ))),
        }
    }
}

/// Why a member was not written: its source (the others go on) or the archive (the
/// update is rolled back).
enum Failure {
    Source(StageError),
    Archive(StageError),
}

/// Opens the archive at `path` for reading under a shared lock (held while the result
/// lives), rolling back a crashed writer's update first.
fn open_for_reading(
    ctx: &Context<'_>,
    path: &Path,
    lock_timeout: Duration,
) -> Result<(Sidecars, zip::ZipArchive<File>), StageError> {
    let shown = display::path(path);
    // Told apart: an archive that is not there, and one that cannot be reached.
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StageError::not_found(format!(
                "there is no archive {shown}"
            )));
        }
        Err(e) => {
            return Err(StageError::io(
                format!("cannot reach the archive {shown}"),
                &e,
            ))
        }
        Ok(_) => {}
    }
    let sidecars = Sidecars::open(path, false)?;
    sidecars.take(ctx, false, lock_timeout)?;
    if sidecars.pending_journal() {
        sidecars.release()?;
        sidecars.take(ctx, true, lock_timeout)?;
        sidecars.recover(path)?;
        sidecars.release()?;
        sidecars.take(ctx, false, lock_timeout)?;
    }
    let file =
        File::open(path).map_err(|e| StageError::io(format_args!("cannot open {shown}"), &e))?;
    let archive = zip::ZipArchive::new(file)
        .map_err(|e| StageError::other(format!("{shown} is not a readable zip archive: {e}")))?;
    Ok((sidecars, archive))
}

/// One member as the central directory describes it.
pub struct MemberInfo {
    /// Its name (a directory's without the trailing `/`).
    pub name: String,
    /// Whether it is a directory entry.
    pub is_dir: bool,
    /// Its uncompressed size.
    pub size: u64,
    /// Its DOS time as (year, month, day, hour, minute, second), UTC.
    pub modified: Option<(u16, u8, u8, u8, u8, u8)>,
}

/// Every member of the archive at `path`, from its central directory (no member is
/// decompressed), under a shared lock. A name that is not UTF-8 is refused.
pub fn members(
    ctx: &Context<'_>,
    path: &Path,
    lock_timeout: Duration,
) -> Result<Vec<MemberInfo>, StageError> {
    let (_lock, mut archive) = open_for_reading(ctx, path, lock_timeout)?;
    let shown = display::path(path);
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| StageError::other(format!("cannot read member {i} of {shown}: {e}")))?;
        let mode = entry.unix_mode().unwrap_or(0o100_644);
        let is_dir = entry.is_dir() || mode & 0o170_000 == 0o040_000;
        let name = std::str::from_utf8(entry.name_raw())
            .map_err(|_| {
                StageError::new(
                    ErrorKind::InvalidUrl,
                    format!(
                        "{shown} holds a member whose name is not UTF-8 ({}); stagehost refuses it rather than alter it",
                        display::escape(&String::from_utf8_lossy(entry.name_raw()))
                    ),
                )
            })?
            .trim_end_matches('/')
            .to_owned();
        let modified = entry.last_modified().map(|t| {
            (
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
            )
        });
        out.push(MemberInfo {
            name,
            is_dir,
            size: entry.size(),
            modified,
        });
    }
    Ok(out)
}

/// Extracts `member` of the archive at `path` to `dest` under a shared lock, rolling
/// back a crashed writer's update first.
pub fn extract(
    ctx: &Context<'_>,
    path: &Path,
    member: &str,
    dest: &Path,
    lock_timeout: Duration,
) -> Result<u64, StageError> {
    let shown = display::path(path);
    let (_lock, mut archive) = open_for_reading(ctx, path, lock_timeout)?;
    let mut entry = match archive.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(StageError::not_found(format!(
                "{shown} holds no member {member}"
            )))
        }
        Err(e) => {
            return Err(StageError::other(format!(
                "cannot read {member} in {shown}: {e}"
            )))
        }
    };
    let mode = entry.unix_mode().unwrap_or(0o100_644);
    if entry.is_dir() || mode & 0o170_000 == 0o040_000 {
        return Err(StageError::other(format!(
            "{member} in {shown} is a directory, not a file"
        )));
    }
    if mode & 0o170_000 == 0o120_000 {
        return Err(StageError::new(
            ErrorKind::Permission,
            format!("{member} in {shown} is a symbolic link; stagehost does not extract links"),
        ));
    }
    let total = entry.size();
    let mut out = AtomicFile::create(dest)?;
    out.set_mode(mode & 0o777)?;
    let mut buf = vec![0u8; 256 << 10];
    let mut done = 0u64;
    loop {
        ctx.check()?;
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(StageError::new(
                    ErrorKind::Integrity,
                    format!("cannot read {member} in {shown}: {e}"),
                ))
            }
        };
        use std::io::Write;
        out.write_all(&buf[..n]).map_err(|e| {
            StageError::io(format_args!("cannot write {}", display::path(dest)), &e)
        })?;
        done += n as u64;
        ctx.progress(done, Some(total));
    }
    out.commit()?;
    Ok(done)
}

/// The CRC-32 of everything `file` holds.
fn crc_of(file: &mut File) -> std::io::Result<u32> {
    use std::io::Read;
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(crc.sum()),
            Ok(n) => crc.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
