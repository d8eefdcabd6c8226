//! The one report schema: what `stagehost run --report` writes and what
//! `stagehost stage in/out --json` prints, and what library callers get per task.
//!
//! An API boundary: within a [`VERSION`], fields are only added, never renamed,
//! retyped or removed; a change that would break a reader bumps it. README.md's
//! "Reports" section describes every field.

use std::sync::Arc;

use serde::Serialize;

use crate::data_manager::{Direction, WorkMode};

/// The schema's version, the `version` field of every document.
pub const VERSION: u32 = 1;

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    /// The body and every stage-out succeeded.
    Succeeded,
    /// The body, or its staging, failed.
    Failed,
    /// The body succeeded but a stage-out failed; the local output is kept.
    StageOutFailed,
    /// An input from another task never arrived.
    DependencyFailed,
    /// Cancelled before it finished.
    Cancelled,
    /// Not run: `--resume` found its command, executor, inputs and outputs as its
    /// last successful run left them.
    Skipped,
}

impl TaskStatus {
    /// Whether its outputs are there for its consumers (it succeeded, or was skipped
    /// with its outputs current).
    pub fn is_ok(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Skipped)
    }
}

/// What kind of failure a file met, for scripts: the report's `error_class` and the
/// command's exit code (README's "Exit codes"), as rclone sorts its exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The source does not exist: exit 3.
    NotFound,
    /// Access refused (credentials, permissions): exit 4.
    Permission,
    /// The bytes were wrong (a checksum or size mismatch): exit 5.
    Integrity,
    /// A failure that may pass, still failing after the retries: exit 6.
    Transient,
    /// Anything else: exit 1.
    Other,
}

impl FailureClass {
    /// The class of a provider's error kind.
    pub fn of(kind: stagehost_plugin_api::ErrorKind) -> FailureClass {
        use stagehost_plugin_api::ErrorKind as K;
        match kind {
            K::NotFound => FailureClass::NotFound,
            K::Permission => FailureClass::Permission,
            K::Integrity => FailureClass::Integrity,
            K::Transient | K::TimedOut => FailureClass::Transient,
            _ => FailureClass::Other,
        }
    }

    /// The exit code of a command whose failures all have this class.
    pub fn exit_code(self) -> u8 {
        match self {
            FailureClass::NotFound => 3,
            FailureClass::Permission => 4,
            FailureClass::Integrity => 5,
            FailureClass::Transient => 6,
            FailureClass::Other => 1,
        }
    }

    /// The exit code of a command that failed: the class every failure shares, else 1
    /// (a failure with no class, such as a command's exit, counts as another class).
    pub fn exit_code_of(failures: impl IntoIterator<Item = Option<FailureClass>>) -> u8 {
        let mut shared: Option<FailureClass> = None;
        for class in failures {
            let class = class.unwrap_or(FailureClass::Other);
            match shared {
                None => shared = Some(class),
                Some(s) if s == class => {}
                Some(_) => return 1,
            }
        }
        shared.map_or(1, FailureClass::exit_code)
    }
}

/// What happened to one file: of a task (`run`), or of a `stage` command.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// In or out.
    pub direction: Direction,
    /// The URL, redacted.
    pub url: String,
    /// The executor whose providers staged it.
    pub executor: String,
    /// Whether its staging succeeded (`error` is null).
    pub ok: bool,
    /// Provider instance, if one claimed the file.
    pub provider: Option<String>,
    /// Plugin name and version.
    pub plugin: Option<String>,
    /// The work the provider returned, in the order it runs (`separate-job`,
    /// `in-task-step`); empty when it had nothing to do.
    pub modes: Vec<WorkMode>,
    /// Where the task saw the file.
    pub local_path: Option<String>,
    /// Bytes of the file after staging, when it is a local file.
    pub bytes: Option<u64>,
    /// Seconds the work took (all attempts).
    pub seconds: f64,
    /// Attempts made (0 when there was nothing to do).
    pub attempts: u32,
    /// Whether another task's transfer of the same URL to the same place served it.
    pub deduplicated: bool,
    /// Whether the destination already held the current file, so no bytes moved (a
    /// revalidation found it unchanged).
    pub cached: bool,
    /// The error, if it failed.
    pub error: Option<String>,
    /// The error's class (`not_found`, `permission`, `integrity`, `transient`,
    /// `other`), if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<FailureClass>,
    /// The directory (its URL, redacted) this file was staged as a member of: a
    /// directory input's listed file, or a file a task wrote below a directory output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// For a file with mirrors, the source (its URL, redacted) that served it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl FileReport {
    /// A report of `url` on `executor` before anything happened.
    pub fn new(direction: Direction, url: String, executor: &str) -> FileReport {
        FileReport {
            direction,
            url,
            executor: executor.to_owned(),
            ok: true,
            provider: None,
            plugin: None,
            modes: Vec::new(),
            local_path: None,
            bytes: None,
            seconds: 0.0,
            attempts: 0,
            deduplicated: false,
            cached: false,
            error: None,
            error_class: None,
            directory: None,
            source: None,
        }
    }

    /// Records that it failed with `e`.
    pub fn fail(&mut self, e: &crate::data_manager::StagingError) {
        self.ok = false;
        self.error = Some(e.to_string());
        self.error_class = Some(e.class());
    }

    /// Whether bytes moved for it: work ran and succeeded, and the destination did not
    /// already hold the file.
    pub fn moved(&self) -> bool {
        self.attempts > 0 && self.error.is_none() && !self.cached && !self.deduplicated
    }
}

/// What happened to one task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    /// Task name.
    pub name: String,
    /// Executor label.
    pub executor: String,
    /// How it ended.
    pub status: TaskStatus,
    /// Times the body ran.
    pub attempts: u32,
    /// Seconds from the engine's start to the task's start (once its inputs from
    /// other tasks exist).
    pub started_at: f64,
    /// Seconds from its start to its end.
    pub seconds: f64,
    /// The error, if it did not succeed.
    pub error: Option<String>,
    /// Every file, stage-ins first (inputs order), then stage-outs (outputs, stdout,
    /// stderr).
    pub files: Vec<FileReport>,
    /// Where its body ran: a worker of a local executor (`worker 1`), or a node and
    /// block of a pilot executor (`n1 (block 7)`); absent when no body ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// Tasks by how they ended (a `run`'s summary only).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskCounts {
    pub tasks: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub stage_out_failed: usize,
    pub dependency_failed: usize,
    pub cancelled: usize,
    /// Tasks `--resume` did not run, their outputs current.
    pub skipped: usize,
}

/// The totals of a document.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// A `run`'s tasks by how they ended.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskCounts>,
    /// Files staged (every file of every task).
    pub files: usize,
    /// Files whose bytes moved.
    pub files_moved: usize,
    /// Files already current at their destination (revalidated), so nothing moved.
    pub files_cached: usize,
    /// Files whose staging failed.
    pub files_failed: usize,
    /// Bytes of the files that moved.
    pub bytes_moved: u64,
    /// Seconds the command took.
    pub seconds: f64,
}

impl Summary {
    /// The totals of `files`.
    pub fn of_files<'a>(
        files: impl Iterator<Item = &'a FileReport> + Clone,
        seconds: f64,
    ) -> Summary {
        let moved = files.clone().filter(|f| f.moved());
        Summary {
            tasks: None,
            files: files.clone().count(),
            files_moved: moved.clone().count(),
            files_cached: files
                .clone()
                .filter(|f| f.cached && f.error.is_none())
                .count(),
            files_failed: files.filter(|f| f.error.is_some()).count(),
            bytes_moved: moved.filter_map(|f| f.bytes).sum(),
            seconds,
        }
    }

    /// The totals of a run's `tasks`.
    pub fn of_tasks(tasks: &[Arc<TaskReport>], seconds: f64) -> Summary {
        let mut summary = Summary::default();
        for task in tasks {
            summary.add_task(task);
        }
        summary.seconds = seconds;
        summary
    }

    /// Counts one more task of a run and its files (a run's summary, kept as its
    /// tasks end instead of from every report kept to the end).
    pub fn add_task(&mut self, task: &TaskReport) {
        let counts = self.tasks.get_or_insert_with(TaskCounts::default);
        counts.tasks += 1;
        let count = match task.status {
            TaskStatus::Succeeded => &mut counts.succeeded,
            TaskStatus::Failed => &mut counts.failed,
            TaskStatus::StageOutFailed => &mut counts.stage_out_failed,
            TaskStatus::DependencyFailed => &mut counts.dependency_failed,
            TaskStatus::Cancelled => &mut counts.cancelled,
            TaskStatus::Skipped => &mut counts.skipped,
        };
        *count += 1;
        let files = Summary::of_files(task.files.iter(), 0.0);
        self.files += files.files;
        self.files_moved += files.files_moved;
        self.files_cached += files.files_cached;
        self.files_failed += files.files_failed;
        self.bytes_moved += files.bytes_moved;
    }
}

/// A file without a name in the temporary directory, readable by its owner only
/// (`O_TMPFILE`; where the file system lacks it, a fresh file removed at once).
fn unnamed_file(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut open = std::fs::OpenOptions::new();
    open.read(true).write(true).mode(0o600);
    if let Ok(file) = open.clone().custom_flags(libc::O_TMPFILE).open(dir) {
        return Ok(file);
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".stagehost-report-{}-{n}", std::process::id()));
    let file = open.create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Where a [`Spool`] keeps its reports.
enum Store {
    /// An unnamed temporary file.
    File(std::io::BufWriter<std::fs::File>),
    /// Memory, when no directory tried took a temporary file.
    Memory(Vec<u8>),
}

/// A run's task reports, written to an unnamed temporary file as the tasks end, and
/// put in the workflow's order into the JSON document at the end: a run keeps an
/// offset per task in memory, not every report.
pub struct Spool {
    store: Store,
    written: u64,
    /// Where each report is, by the order the tasks were submitted in.
    spans: Vec<(u64, u32)>,
}

impl Spool {
    /// A spool in an unnamed file (it goes with the process) in the system's temporary
    /// directory or else in `fallback` (the report's own directory); in memory when
    /// neither takes one (`TMPDIR` unwritable), so a run never fails for its spool.
    pub fn new(fallback: Option<&std::path::Path>) -> Spool {
        let tmp = std::env::temp_dir();
        let file =
            std::iter::once(tmp.as_path())
                .chain(fallback)
                .find_map(|dir| match unnamed_file(dir) {
                    Ok(file) => Some(file),
                    Err(e) => {
                        tracing::debug!(dir = %dir.display(), error = %e, "no report spool here");
                        None
                    }
                });
        Spool {
            store: match file {
                Some(file) => Store::File(std::io::BufWriter::with_capacity(64 << 10, file)),
                None => Store::Memory(Vec::new()),
            },
            written: 0,
            spans: Vec::new(),
        }
    }

    /// A spool kept in memory.
    pub fn in_memory() -> Spool {
        Spool {
            store: Store::Memory(Vec::new()),
            written: 0,
            spans: Vec::new(),
        }
    }

    /// Writes the report of the task submitted `seq`-th.
    pub fn push(&mut self, seq: usize, report: &TaskReport) -> std::io::Result<()> {
        use std::io::Write;
        let mut text = Vec::with_capacity(512);
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"  ");
        let mut ser = serde_json::Serializer::with_formatter(&mut text, formatter);
        report
            .serialize(&mut ser)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        match &mut self.store {
            Store::File(file) => file.write_all(&text)?,
            Store::Memory(memory) => memory.extend_from_slice(&text),
        }
        if self.spans.len() <= seq {
            self.spans.resize(seq + 1, (0, 0));
        }
        let len = u32::try_from(text.len()).map_err(std::io::Error::other)?;
        self.spans[seq] = (self.written, len);
        self.written += text.len() as u64;
        Ok(())
    }

    /// Writes the document `header` (its `tasks` unset) with the spooled reports, in
    /// the order `order` gives (submission numbers), to `out`, as
    /// [`Document::to_json`] would with every report at hand.
    pub fn write_document(
        self,
        header: &Document<'_>,
        order: impl IntoIterator<Item = usize>,
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = match self.store {
            Store::File(file) => Ok(file.into_inner().map_err(|e| e.into_error())?),
            Store::Memory(memory) => Err(memory),
        };
        let head = header.to_json();
        let head = head.strip_suffix("\n}").unwrap_or(&head);
        out.write_all(head.as_bytes())?;
        let mut first = true;
        let mut buf = Vec::new();
        for seq in order {
            let (at, len) = self.spans.get(seq).copied().unwrap_or_default();
            if len == 0 {
                continue;
            }
            out.write_all(if first {
                b",\n  \"tasks\": [\n    "
            } else {
                b",\n    "
            })?;
            first = false;
            let text = match &file {
                Ok(file) => {
                    buf.resize(len as usize, 0);
                    file.read_exact_at(&mut buf, at)?;
                    &buf[..]
                }
                Err(memory) => &memory[at as usize..at as usize + len as usize],
            };
            // One level deeper than alone: each line after the first indented by 4.
            for (i, line) in text.split(|&b| b == b'\n').enumerate() {
                if i > 0 {
                    out.write_all(b"\n    ")?;
                }
                out.write_all(line)?;
            }
        }
        if first {
            out.write_all(b",\n  \"tasks\": []")?;
        } else {
            out.write_all(b"\n  ]")?;
        }
        out.write_all(b"\n}")
    }
}

/// One report: of a `run` (its tasks) or of a `stage` command (its files).
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    /// [`VERSION`].
    pub version: u32,
    /// `run`, `stage in` or `stage out`.
    pub command: &'a str,
    /// The workflow file, for `run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The totals.
    pub summary: Summary,
    /// A `run`'s tasks, in the workflow's order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<&'a [Arc<TaskReport>]>,
    /// A `stage` command's files, in the order given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<&'a [FileReport]>,
}

impl Document<'_> {
    /// As pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report is plain data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_document_has_its_version_and_counts_only_moved_bytes() {
        let mut moved = FileReport::new(Direction::In, "http://h/a".into(), "local");
        (moved.attempts, moved.bytes, moved.modes) = (1, Some(10), vec![WorkMode::SeparateJob]);
        let mut cached = FileReport::new(Direction::In, "http://h/b".into(), "local");
        (cached.attempts, cached.bytes, cached.cached) = (1, Some(20), true);
        let mut failed = FileReport::new(Direction::In, "http://h/c".into(), "local");
        (failed.attempts, failed.ok, failed.error) = (3, false, Some("boom".into()));
        let files = [moved, cached, failed];
        let doc = Document {
            version: VERSION,
            command: "stage in",
            workflow: None,
            summary: Summary::of_files(files.iter(), 1.5),
            tasks: None,
            files: Some(&files),
        };
        let json: serde_json::Value = serde_json::from_str(&doc.to_json()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["command"], "stage in");
        assert!(json.get("tasks").is_none() && json.get("workflow").is_none());
        let s = &json["summary"];
        assert_eq!(
            (s["files"].as_u64(), s["files_moved"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(
            (s["files_cached"].as_u64(), s["files_failed"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(s["bytes_moved"], 10);
        assert!(s.get("succeeded").is_none(), "task counts are a run's only");
        assert_eq!(
            json["files"][0]["modes"],
            serde_json::json!(["separate-job"])
        );
        assert_eq!(json["files"][2]["ok"], false);
    }

    fn task(name: &str, status: TaskStatus, files: Vec<FileReport>) -> Arc<TaskReport> {
        Arc::new(TaskReport {
            name: name.into(),
            executor: "local".into(),
            status,
            attempts: 1,
            started_at: 0.25,
            seconds: 1.5,
            error: (status != TaskStatus::Succeeded).then(|| "it \"failed\"\nbadly".into()),
            files,
            worker: Some("worker 1".into()),
        })
    }

    #[test]
    fn a_spooled_run_document_is_the_document_of_every_report_at_hand() {
        let mut moved = FileReport::new(Direction::In, "http://h/a".into(), "local");
        (moved.attempts, moved.bytes) = (1, Some(10));
        let failed = FileReport::new(Direction::Out, "s3://b/k".into(), "local");
        let tasks = vec![
            task("a", TaskStatus::Succeeded, vec![moved]),
            task("b", TaskStatus::Failed, vec![failed]),
            task("c", TaskStatus::Skipped, vec![]),
        ];
        let summary = Summary::of_tasks(&tasks, 2.0);
        let whole = Document {
            version: VERSION,
            command: "run",
            workflow: Some("flow.toml".into()),
            summary: summary.clone(),
            tasks: Some(&tasks),
            files: None,
        }
        .to_json();
        // Submitted in the order c, a, b; ended in the order b, c, a.
        for spool in [Spool::new(None), Spool::in_memory()] {
            let mut spool = spool;
            for (seq, t) in [(2, &tasks[1]), (0, &tasks[2]), (1, &tasks[0])] {
                spool.push(seq, t).unwrap();
            }
            let header = Document {
                version: VERSION,
                command: "run",
                workflow: Some("flow.toml".into()),
                summary: summary.clone(),
                tasks: None,
                files: None,
            };
            let mut out = Vec::new();
            spool.write_document(&header, [1, 2, 0], &mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), whole);
        }
        let header = Document {
            version: VERSION,
            command: "run",
            workflow: Some("flow.toml".into()),
            summary,
            tasks: None,
            files: None,
        };
        // No task at all.
        let mut out = Vec::new();
        Spool::new(None)
            .write_document(&header, [], &mut out)
            .unwrap();
        let empty = Document {
            tasks: Some(&[]),
            ..header
        };
        assert_eq!(String::from_utf8(out).unwrap(), empty.to_json());
    }
}
