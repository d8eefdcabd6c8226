//! The run journal: what each finished task ran on and produced, appended as tasks
//! end, kept beside the workflow (`.stagehost/journal/<workflow file>.jsonl`), for
//! re-runs and lineage.
//!
//! Format: one JSON object a line, append-only. A `run` record opens each run; a `task`
//! record follows each task that ended: its name, executor, status, the SHA-256 of its
//! command text, and each input's and output's URL, local path and identity (a local
//! file's size, modification time in nanoseconds and inode, taken when the task ended).
//!
//! Invariants:
//! - records are only appended; a writer thread writes them in the order given and
//!   syncs the file whenever it has written all it was given (a group commit at task
//!   boundaries), and once more when the journal is closed;
//! - a reader ignores a torn tail (a last line without its newline, or one that is not
//!   JSON), so a run killed at any moment leaves a journal that reads as the records
//!   synced before it;
//! - the file is opened without following a symbolic link, in a directory of the
//!   user's own; a journal that cannot be opened or written costs a warning, never the
//!   run.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::report::{TaskReport, TaskStatus};

/// One line of a journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A run began.
    Run(RunRecord),
    /// A task ended.
    Task(TaskRecord),
}

/// The record that opens a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The workflow file, as given.
    pub workflow: String,
    /// When it began, in seconds since the epoch.
    pub started: f64,
    /// The `stagehost` process.
    pub pid: u32,
    /// Whether it was a `--resume`.
    #[serde(default)]
    pub resume: bool,
}

/// The record of a task that ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its name.
    pub name: String,
    /// Its executor.
    pub executor: String,
    /// How it ended.
    pub status: TaskStatus,
    /// Its command as written in the workflow (placeholders unexpanded: the paths
    /// they stand for are the files' own, recorded below).
    #[serde(default)]
    pub command: Option<String>,
    /// The SHA-256 of `command`, hex.
    pub command_sha256: Option<String>,
    /// When it ended, in seconds since the epoch.
    #[serde(default)]
    pub ended: f64,
    /// Its inputs, in order.
    pub inputs: Vec<FileRecord>,
    /// Its outputs, then its stdout and stderr files.
    pub outputs: Vec<FileRecord>,
}

/// One file of a task's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    /// The URL, redacted.
    pub url: String,
    /// Where the task saw it.
    pub local_path: Option<String>,
    /// Whether its staging succeeded.
    pub ok: bool,
    /// Its identity when the task ended.
    pub identity: Option<Identity>,
}

/// What identifies a version of a file: a local file's size, modification time (ns
/// since the epoch) and inode; for a file at a remote URL, those of the copy the task
/// read or wrote here, with the validator (`ETag`, `Last-Modified`) the provider
/// recorded for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the epoch, as a decimal string.
    pub mtime_ns: String,
    /// Inode number.
    pub inode: u64,
    /// The validator the provider recorded for the copy, for a remote URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<String>,
    /// The SHA-256 the URL's `#sha256=` fragment named, verified when it was staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Identity {
    /// Whether `other` is the same version by what a stat shows (size, modification
    /// time, inode).
    pub fn same_stat(&self, other: &Identity) -> bool {
        self.size == other.size && self.mtime_ns == other.mtime_ns && self.inode == other.inode
    }
}

/// The SHA-256 of a command's text, hex.
pub fn command_hash(command: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(command.as_bytes()))
}

/// Seconds since the epoch.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The local path a URL names, when it names a file on this host (a bare path or a
/// `file` URL without a host).
pub fn local_path_of(url: &str) -> Option<PathBuf> {
    let file = stagehost_plugin_api::File::parse(url).ok()?;
    (file.scheme() == "file" && file.netloc().is_empty()).then(|| PathBuf::from(file.path()))
}

/// The identity of the file at `url` as it is now: for a local URL, the file it names;
/// otherwise the copy at `local_path`, with the validator its provider recorded.
pub fn identity_of(url: &str, local_path: Option<&Path>, working_dir: &Path) -> Option<Identity> {
    let sha256 = url
        .split_once('#')
        .and_then(|(_, fragment)| fragment.strip_prefix("sha256="))
        .map(str::to_ascii_lowercase);
    if let Some(path) = local_path_of(url) {
        let mut id = stat_identity(&path)?;
        id.sha256 = sha256;
        return Some(id);
    }
    let path = local_path?;
    let mut id = stat_identity(path)?;
    id.validator = stagehost_plugin_api::validators::load_for(url, path, working_dir);
    id.sha256 = sha256;
    Some(id)
}

/// The identity of the file at `url` (its copy at `local_path`), with its content
/// hash when `hash`.
pub fn identity_of_file(
    url: &str,
    local_path: Option<&str>,
    working_dir: &Path,
    hash: bool,
) -> Option<Identity> {
    let id = identity_of(url, local_path.map(Path::new), working_dir)?;
    Some(if hash { with_content_hash(id, url) } else { id })
}

/// `id` with the SHA-256 of the local file `url` names, if it is one and can be read
/// (a hash the URL named is kept).
fn with_content_hash(mut id: Identity, url: &str) -> Identity {
    if id.sha256.is_none() {
        if let Some(path) = local_path_of(url) {
            id.sha256 = crate::checksum::digest(crate::checksum::Algorithm::Sha256, &path).ok();
        }
    }
    id
}

/// The identity a stat of `path` shows (following a link, as the task reads it).
pub fn stat_identity(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    Some(Identity {
        size: meta.len(),
        mtime_ns: mtime_ns.to_string(),
        inode: meta.ino(),
        validator: None,
        sha256: None,
    })
}

/// An open journal and its writer thread.
pub struct Journal {
    path: PathBuf,
    /// Holds the run's lock on the journal (`<journal>.lock`) while it is open.
    _lock: std::fs::File,
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

enum Msg {
    Line(String),
    /// Write and sync everything before it, then answer.
    Flush(mpsc::Sender<()>),
}

impl Journal {
    /// The journal of `workflow`: `<its directory>/.stagehost/journal/<its file
    /// name>.jsonl`, opened for appending (created, with its directories, if missing).
    pub fn open_beside(workflow: &Path) -> std::io::Result<Journal> {
        let path = path_beside(workflow);
        // `.stagehost` and `.stagehost/journal`: made here if missing, else each a
        // directory of the user's own that no one else can write to.
        if let Some(journal_dir) = path.parent() {
            if let Some(stagehost_dir) = journal_dir.parent() {
                own_dir(stagehost_dir)?;
            }
            own_dir(journal_dir)?;
        }
        Journal::open(&path)
    }

    /// `path`, opened for appending.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            private_dirs(dir)?;
        }
        // Never through a link, never blocking on a FIFO planted there.
        let open_own = |path: &Path| -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(path)?;
            check_trusted(&file, path, false)?;
            Ok(file)
        };
        // One run of a workflow at a time: two would write the same outputs, and one
        // run's record could vouch for the other's partial file. The lock is a file
        // of its own, so the journal can be replaced by its compacted copy under it.
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_file = open_own(Path::new(&lock_path))?;
        lock(&lock_file, path)?;
        if let Err(e) = compact(path, COMPACT_FROM) {
            tracing::warn!(
                "cannot compact the run journal {}: {e}; it is kept as it is",
                stagehost_plugin_api::display::path(path)
            );
        }
        let mut file = open_own(path)?;
        // A tail torn by an earlier run that was killed gets its line ended, so the
        // next record starts a line of its own.
        let len = file.metadata()?.len();
        if len > 0 && !ends_with_newline(path, len) {
            file.write_all(b"\n")?;
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let shown = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("stagehost-journal".into())
            .spawn(move || write_all(file, rx, &shown))?;
        Ok(Journal {
            path: path.to_path_buf(),
            _lock: lock_file,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` (one line of JSON).
    pub fn append(&self, record: &Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Line(record.to_string()));
        }
    }

    /// Returns once every record appended so far is written and synced.
    pub fn flush(&self) {
        let (ack, done) = mpsc::channel();
        if let Some(tx) = &self.tx {
            if tx.send(Msg::Flush(ack)).is_ok() {
                self.wake_writer();
                let _ = done.recv();
            }
        }
    }

    /// The record that opens a run of `workflow`; `resume` when it skips what did not
    /// change.
    pub fn run_started(&self, workflow: &Path, resume: bool) {
        self.append_record(&Record::Run(RunRecord {
            workflow: workflow.display().to_string(),
            started: now(),
            pid: std::process::id(),
            resume,
        }));
    }

    /// Appends `record` (one line).
    pub fn append_record(&self, record: &Record) {
        if let Some(tx) = &self.tx {
            let line = serde_json::to_string(record).expect("a record is plain data");
            let _ = tx.send(Msg::Line(line));
        }
    }

    /// The record of a task that ended: its command text, and the identities of its
    /// files (with each local file's SHA-256 when `hash`; `working_dir` is its
    /// executor's): its inputs' as taken when its body started (`read`, in stage-in
    /// order) where they were known then, so a record vouches for the version the task
    /// read, never one written while it ran; its outputs' as they are now.
    pub fn task_ended(
        &self,
        report: &TaskReport,
        command: Option<&str>,
        working_dir: &Path,
        hash: bool,
        read: Option<Vec<Option<Identity>>>,
    ) {
        let mut read = read.map(Vec::into_iter);
        let files = |direction: crate::data_manager::Direction,
                     read: &mut Option<std::vec::IntoIter<Option<Identity>>>|
         -> Vec<FileRecord> {
            report
                .files
                .iter()
                // The files a task wrote below a directory output are what it made,
                // not what it was asked for: the directory's own entry stands for them.
                .filter(|f| {
                    f.direction == direction
                        && (direction == crate::data_manager::Direction::In
                            || f.directory.is_none())
                })
                .map(|f| {
                    let at_start = read.as_mut().and_then(Iterator::next).flatten();
                    let identity = at_start.or_else(|| {
                        identity_of_file(&f.url, f.local_path.as_deref(), working_dir, hash)
                    });
                    FileRecord {
                        url: f.url.clone(),
                        local_path: f.local_path.clone(),
                        ok: f.ok,
                        identity,
                    }
                })
                .collect()
        };
        let inputs = files(crate::data_manager::Direction::In, &mut read);
        let outputs = files(crate::data_manager::Direction::Out, &mut None);
        self.append_record(&Record::Task(TaskRecord {
            name: report.name.clone(),
            executor: report.executor.clone(),
            status: report.status,
            command: command.map(str::to_owned),
            command_sha256: command.map(command_hash),
            ended: now(),
            inputs,
            outputs,
        }));
    }

    /// Writes what is queued, syncs, and stops the writer.
    pub fn close(mut self) {
        self.finish();
    }

    /// The writer sleeps through a group commit's window however many records
    /// arrive (a record costs no wakeup); a flush or the end wakes it.
    fn wake_writer(&self) {
        if let Some(w) = &self.writer {
            w.thread().unpark();
        }
    }

    fn finish(&mut self) {
        drop(self.tx.take());
        self.wake_writer();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Refuses a journal that is not a regular file of the user's own (or root's, when
/// `root_ok`) that only its owner can write: another user's records are never
/// trusted, nor written into.
fn check_trusted(file: &std::fs::File, path: &Path, root_ok: bool) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    let me = rustix::process::geteuid().as_raw();
    let shown = stagehost_plugin_api::display::path(path);
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "{shown} is not a regular file"
        )));
    }
    if meta.uid() != me && !(root_ok && meta.uid() == 0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{shown} belongs to uid {}, not to you", meta.uid()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{shown} can be written by others (mode {:o})",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A journal is compacted when it is at least this large.
const COMPACT_FROM: u64 = 1 << 20;

/// Rewrites the journal at `path` (when it is at least `min_bytes` and most of its task
/// records are superseded) as the last record of each task, with its last successful
/// one when that is older, in their order, and the last run record: what `--resume`
/// and lineage read, in a fraction of the size. Written to a temporary file, synced,
/// then renamed over the journal, under the run's lock.
fn compact(path: &Path, min_bytes: u64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let len = match std::fs::symlink_metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if len < min_bytes {
        return Ok(());
    }
    let records = read_records(path)?;
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut last_ok: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut last_run = None;
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Task(t) => {
                last.insert(&t.name, i);
                if t.status == TaskStatus::Succeeded {
                    last_ok.insert(&t.name, i);
                }
            }
            Record::Run(_) => last_run = Some(i),
        }
    }
    let mut keep: std::collections::BTreeSet<usize> =
        last.values().chain(last_ok.values()).copied().collect();
    if keep.len() * 2 > records.len() {
        return Ok(());
    }
    keep.extend(last_run);
    let tmp = path.with_extension(format!("jsonl.compact-{}", std::process::id()));
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?,
    );
    let written = (|| {
        for &i in &keep {
            serde_json::to_writer(&mut out, &records[i]).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Takes the journal's lock for this run, or says which run holds it.
fn lock(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; the lock goes with it.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "another stagehost run of this workflow is running (it holds {}); wait for it to end",
                stagehost_plugin_api::display::path(path)
            ),
        ));
    }
    Err(e)
}

/// A directory of stagehost's own at `dir`: made (0700) if missing; otherwise it must
/// be a directory, not a link, of the user's own, that no one else can write to.
fn own_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let shown = stagehost_plugin_api::display::path(dir);
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            let me = rustix::process::geteuid().as_raw();
            if !meta.is_dir() {
                Err(std::io::Error::other(format!(
                    "{shown} is not a directory (a symbolic link is never followed)"
                )))
            } else if meta.uid() != me {
                Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{shown} belongs to uid {}, not to you", meta.uid()),
                ))
            } else if meta.mode() & 0o022 != 0 {
                Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{shown} can be written by others (mode {:o})",
                        meta.mode() & 0o7777
                    ),
                ))
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => own_dir(dir),
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

/// Opens the journal at `path` to read it, if it can be trusted: a regular file (never
/// through a link, never a FIFO) of the user's own or root's that no one else can
/// write to.
pub fn open_trusted(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    check_trusted(&file, path, true)?;
    Ok(file)
}

/// Makes `dir` and its parents as needed (0700), refusing any that is a symbolic link
/// or not a directory: the journal goes only where it was put.
fn private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is not a directory (a symbolic link is never followed)",
            stagehost_plugin_api::display::path(dir)
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                private_dirs(parent)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => private_dirs(dir),
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

fn ends_with_newline(path: &Path, len: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return true;
    };
    let mut last = [0u8];
    f.seek(SeekFrom::Start(len - 1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] == b'\n'
}

/// How long the writer gathers records before it syncs them together: a run killed
/// in that window re-runs at most the tasks that ended in it.
const GROUP_COMMIT: std::time::Duration = std::time::Duration::from_millis(50);

/// The writer: each record as a line; records that arrive within [`GROUP_COMMIT`] of
/// the first are synced together (a flush syncs at once).
fn write_all(file: std::fs::File, rx: mpsc::Receiver<Msg>, path: &Path) {
    let mut out = std::io::BufWriter::new(file);
    let mut failed = false;
    let fail = |e: std::io::Error, failed: &mut bool| {
        if !*failed {
            tracing::warn!(
                "cannot write the run journal {}: {e}; the run goes on without it",
                stagehost_plugin_api::display::path(path)
            );
            *failed = true;
        }
    };
    let mut open = true;
    while open {
        let Ok(first) = rx.recv() else {
            break;
        };
        let until = std::time::Instant::now() + GROUP_COMMIT;
        let mut acks = Vec::new();
        let mut next = Some(first);
        loop {
            while let Some(msg) = next {
                match msg {
                    Msg::Line(line) if !failed => {
                        if let Err(e) = out
                            .write_all(line.as_bytes())
                            .and_then(|()| out.write_all(b"\n"))
                        {
                            fail(e, &mut failed);
                        }
                    }
                    Msg::Line(_) => {}
                    Msg::Flush(ack) => acks.push(ack),
                }
                next = match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        None
                    }
                };
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if !open || !acks.is_empty() || left.is_zero() {
                break;
            }
            // Records arriving meanwhile wake no one: they wait in the channel
            // until the window ends (or a flush, or the end, unparks this thread).
            std::thread::park_timeout(left);
            next = match rx.try_recv() {
                Ok(msg) => Some(msg),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            };
        }
        if !failed {
            if let Err(e) = out.flush().and_then(|()| out.get_ref().sync_data()) {
                fail(e, &mut failed);
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// An observer that journals each task as it ends, then tells `inner`.
pub struct Journaling {
    inner: std::sync::Arc<dyn crate::observer::Observer>,
    journal: Journal,
    /// The command text of each task submitted and not ended, by task name: a run
    /// keeps the commands of the tasks in flight, not the workflow's.
    commands: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Each executor's working directory, where its providers keep their records.
    working_dirs: std::collections::HashMap<String, PathBuf>,
    /// The tasks whose local files are recorded with their SHA-256.
    hashed: std::collections::HashSet<String>,
    /// Each running task's inputs' identities, taken as its body started.
    read: std::sync::Mutex<std::collections::HashMap<String, Vec<Option<Identity>>>>,
}

impl Journaling {
    /// `inner`, with `journal` recording each task (its command as
    /// [`Observer::command_submitted`] told it); `working_dirs` maps executor labels to
    /// their working directories.
    ///
    /// [`Observer::command_submitted`]: crate::observer::Observer::command_submitted
    pub fn new(
        inner: std::sync::Arc<dyn crate::observer::Observer>,
        journal: Journal,
        working_dirs: impl IntoIterator<Item = (String, PathBuf)>,
    ) -> Journaling {
        Journaling {
            inner,
            journal,
            commands: std::sync::Mutex::default(),
            working_dirs: working_dirs.into_iter().collect(),
            hashed: std::collections::HashSet::new(),
            read: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Records the local files of the tasks named with their SHA-256
    /// (`checksum = "sha256"`), so that a re-run tells a touched file from a changed one.
    pub fn hashing<'a>(mut self, tasks: impl IntoIterator<Item = &'a str>) -> Journaling {
        self.hashed.extend(tasks.into_iter().map(str::to_owned));
        self
    }
}

impl crate::observer::Observer for Journaling {
    fn tasks_expected(&self, tasks: usize) {
        self.inner.tasks_expected(tasks);
    }
    fn task_submitted(&self, name: &str) {
        self.inner.task_submitted(name);
    }
    fn command_submitted(&self, name: &str, command: &str) {
        self.commands
            .lock()
            .expect("the journal's lock is never poisoned")
            .insert(name.to_owned(), command.to_owned());
        self.inner.command_submitted(name, command);
    }
    fn body_starting(&self, name: &str, inputs: &[crate::report::FileReport]) {
        let working_dir = inputs
            .first()
            .and_then(|f| self.working_dirs.get(&f.executor))
            .map_or(Path::new("."), PathBuf::as_path);
        let hash = self.hashed.contains(name);
        let ids = inputs
            .iter()
            .map(|f| identity_of_file(&f.url, f.local_path.as_deref(), working_dir, hash))
            .collect();
        self.read
            .lock()
            .expect("the journal's lock is never poisoned")
            .insert(name.to_owned(), ids);
        self.inner.body_starting(name, inputs);
    }
    fn task_finished(&self, report: &TaskReport) {
        let read = self
            .read
            .lock()
            .expect("the journal's lock is never poisoned")
            .remove(&report.name);
        let command = self
            .commands
            .lock()
            .expect("the journal's lock is never poisoned")
            .remove(&report.name);
        // A skipped task did nothing: the record of the run that made its outputs
        // stands.
        if report.status != TaskStatus::Skipped {
            let command = command.as_deref();
            let working_dir = self
                .working_dirs
                .get(&report.executor)
                .map_or(Path::new("."), PathBuf::as_path);
            let hash = self.hashed.contains(&report.name);
            self.journal
                .task_ended(report, command, working_dir, hash, read);
        }
        self.inner.task_finished(report);
    }
    fn transfer_started(
        &self,
        id: u64,
        url: &str,
        direction: crate::data_manager::Direction,
        mode: crate::data_manager::WorkMode,
    ) -> Option<std::sync::Arc<dyn crate::services::ProgressSink>> {
        self.inner.transfer_started(id, url, direction, mode)
    }
    fn transfer_finished(&self, id: u64, result: Result<crate::observer::Finished, &str>) {
        self.inner.transfer_finished(id, result);
    }
    fn run_finished(&self) {
        // Every task's record is on disk before the run says it is over.
        self.journal.flush();
        self.inner.run_finished();
    }
}

/// The lines of the journal at `path` that are whole (a torn tail is left out).
fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &[][..],
    };
    complete.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// The records of the journal at `path`, in order, as JSON; a torn tail (and any line
/// that is not JSON) is left out.
pub fn read(path: &Path) -> std::io::Result<Vec<Value>> {
    let bytes = std::fs::read(path)?;
    Ok(complete_lines(&bytes)
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

/// The records of the journal at `path`, in order; a torn tail, and any line that is
/// not a record this version knows, is left out.
pub fn read_records(path: &Path) -> std::io::Result<Vec<Record>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut open_trusted(path)?, &mut bytes)?;
    Ok(complete_lines(&bytes)
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

/// The journal of `workflow`: `<its directory>/.stagehost/journal/<its file name>.jsonl`.
pub fn path_beside(workflow: &Path) -> PathBuf {
    let dir = workflow
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(".stagehost")
        .join("journal");
    let name = workflow
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workflow".into());
    dir.join(format!("{name}.jsonl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_and_a_torn_tail_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j/flow.toml.jsonl");
        let j = Journal::open(&path).unwrap();
        for i in 0..100 {
            j.append(&serde_json::json!({ "type": "task", "i": i }));
        }
        j.close();
        // A writer killed mid-record leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"type\":\"task\",\"i\":10")
            .unwrap();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 100);
        assert!(records.iter().enumerate().all(|(i, r)| r["i"] == i));
        // The next run's records start on a line of their own.
        let j = Journal::open(&path).unwrap();
        j.run_started(Path::new("flow.toml"), false);
        j.close();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 101);
        assert_eq!(records[100]["type"], "run");
    }

    #[test]
    fn a_journal_of_superseded_records_is_compacted_to_what_readers_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flow.toml.jsonl");
        let task = |name: &str, status| {
            Record::Task(TaskRecord {
                name: name.into(),
                executor: "local".into(),
                status,
                command: Some("true".into()),
                command_sha256: Some(command_hash("true")),
                ended: 0.0,
                inputs: vec![],
                outputs: vec![],
            })
        };
        let j = Journal::open(&path).unwrap();
        for run in 0..50 {
            j.run_started(Path::new("flow.toml"), run > 0);
            j.append_record(&task("a", TaskStatus::Succeeded));
            j.append_record(&task("b", TaskStatus::Succeeded));
        }
        // b's last run failed: its last success is kept beside it.
        j.append_record(&task("b", TaskStatus::Failed));
        j.close();
        compact(&path, 0).unwrap();
        let records = read_records(&path).unwrap();
        let tasks: Vec<(String, TaskStatus)> = records
            .iter()
            .filter_map(|r| match r {
                Record::Task(t) => Some((t.name.clone(), t.status)),
                Record::Run(_) => None,
            })
            .collect();
        assert_eq!(
            tasks,
            [
                ("a".to_owned(), TaskStatus::Succeeded),
                ("b".to_owned(), TaskStatus::Succeeded),
                ("b".to_owned(), TaskStatus::Failed)
            ]
        );
        assert_eq!(records.len(), 4, "and the last run record");
        let history = crate::resume::History::read(&path).unwrap();
        assert_eq!(history.last("b").unwrap().status, TaskStatus::Failed);
        // Nothing left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.iter().all(|n| !n.contains("compact")), "{left:?}");
    }

    #[test]
    fn a_symlinked_journal_directory_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(".stagehost")).unwrap();
        assert!(Journal::open_beside(&dir.path().join("flow.toml")).is_err());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_at_the_journal_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "mine\n").unwrap();
        let path = dir.path().join("flow.toml.jsonl");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(Journal::open(&path).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine\n");
    }
}
