//! Workflow files: `[[task]]` tables read from TOML, checked (names, executors,
//! references, cycles, command placeholders) before anything runs, and submitted to an
//! [`Engine`] in dependency order.
//!
//! Invariant: [`Workflow::parse`] and [`Workflow::check`] do no staging and run
//! nothing; every error names the workflow file, the line and column of the task, and
//! the task.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stagehost_plugin_api::File;

use crate::config::{show_number, toml_error_line, MAX_SECONDS};
use crate::data_manager::DataManager;
use crate::engine::{
    check_command, Engine, FileReport, Input, SkipCheck, SubmitError, TaskHandle, TaskSpec,
};
use crate::journal::Identity;
use crate::resume::{History, Proof, Verdict};

/// A `[[task]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    /// Unique name.
    pub name: String,
    /// Shell command.
    pub command: String,
    /// Executor label (default `local`, which costs no allocation: a workflow may
    /// hold 100,000 tasks).
    #[serde(default = "default_executor", deserialize_with = "executor_label")]
    pub executor: std::borrow::Cow<'static, str>,
    /// Inputs: URLs/paths, or `{ task = "name", output = i }`.
    #[serde(default)]
    pub inputs: Vec<InputDef>,
    /// Outputs: URLs/paths; one ending in `/` (or `{ url = "...", recursive = true }`)
    /// is a directory the task fills.
    #[serde(default, deserialize_with = "output_urls")]
    pub outputs: Vec<String>,
    /// Standard output as a URL/path.
    #[serde(default)]
    pub stdout: Option<String>,
    /// Standard error as a URL/path.
    #[serde(default)]
    pub stderr: Option<String>,
    /// Retries of the body.
    #[serde(default)]
    pub retries: u32,
    /// Seconds the command may run before its process group is killed.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// `"sha256"`: the journal records each local file's content hash, and `--resume`
    /// counts a file whose stat changed but whose bytes did not as unchanged.
    #[serde(default)]
    pub checksum: Option<ContentHash>,
}

/// A content hash the journal may record for a task's local files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentHash {
    /// SHA-256.
    Sha256,
}

fn default_executor() -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Borrowed(crate::config::DEFAULT_EXECUTOR)
}

/// An executor label as written; the default's name shares the default's text.
fn executor_label<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::borrow::Cow<'static, str>, D::Error> {
    let label = String::deserialize(d)?;
    Ok(if label == crate::config::DEFAULT_EXECUTOR {
        default_executor()
    } else {
        std::borrow::Cow::Owned(label)
    })
}

/// One input of a task.
#[derive(Debug, Clone)]
pub enum InputDef {
    /// A URL or path.
    Url(String),
    /// One file with several sources, tried in order (`stagehost_core::mirrors`),
    /// each with the checksum the table gave in its fragment.
    Mirrors(Vec<String>),
    /// Another task's output.
    Output {
        /// The producing task.
        task: String,
        /// Which of its outputs (default 0).
        output: usize,
    },
}

/// `{ task = "name", output = i }`, `{ url = "...", recursive = true }` or
/// `{ urls = [...], sha256 = "..." }`: a typo in a key is an error, never a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputTable {
    task: Option<String>,
    output: Option<usize>,
    url: Option<String>,
    urls: Option<Vec<String>>,
    recursive: Option<bool>,
    sha256: Option<String>,
}

const INPUT_TABLES: &str = "an input table is `{ task = \"name\", output = N }`, `{ url = \"...\", recursive = true }` or `{ urls = [\"...\", ...], sha256 = \"...\" }`";

impl<'de> Deserialize<'de> for InputDef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = InputDef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL, a table `{ task = \"name\", output = N }`, `{ url = \"...\", recursive = true }` or `{ urls = [...], sha256 = \"...\" }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<InputDef, E> {
                Ok(InputDef::Url(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<InputDef, E> {
                Ok(InputDef::Url(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<InputDef, A::Error> {
                let t = InputTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let checked = |urls: &[String]| {
                    stagehost_core::mirrors::with_checksum(urls, t.sha256.as_deref())
                        .map_err(serde::de::Error::custom)
                };
                match (t.task, t.url, t.urls) {
                    (Some(task), None, None) if t.recursive.is_none() && t.sha256.is_none() => {
                        Ok(InputDef::Output {
                            task,
                            output: t.output.unwrap_or(0),
                        })
                    }
                    // A directory: its URL with the trailing `/` that names one.
                    (None, Some(url), None) if t.output.is_none() => {
                        let url = if t.recursive == Some(true) && !url.ends_with('/') {
                            format!("{url}/")
                        } else {
                            url
                        };
                        let mut url = checked(&[url])?;
                        Ok(InputDef::Url(url.remove(0)))
                    }
                    (None, None, Some(urls)) if t.output.is_none() && t.recursive.is_none() => {
                        if urls.is_empty() {
                            return Err(serde::de::Error::custom(
                                "`urls` lists a file's sources, at least one",
                            ));
                        }
                        Ok(InputDef::Mirrors(checked(&urls)?))
                    }
                    _ => Err(serde::de::Error::custom(INPUT_TABLES)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `{ url = "...", recursive = true }` as an output: a directory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputTable {
    url: String,
    #[serde(default)]
    recursive: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OutputDef {
    Url(String),
    Table(OutputTable),
}

/// Outputs as URLs: a table `{ url, recursive = true }` is its URL with the trailing
/// `/` that names a directory.
fn output_urls<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let defs: Vec<OutputDef> = Vec::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom(
            "outputs are URLs, or tables `{ url = \"...\", recursive = true }` for a directory",
        )
    })?;
    Ok(defs
        .into_iter()
        .map(|d| match d {
            OutputDef::Url(url) => url,
            OutputDef::Table(t) if t.recursive && !t.url.ends_with('/') => format!("{}/", t.url),
            OutputDef::Table(t) => t.url,
        })
        .collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowFile {
    #[serde(default)]
    task: Vec<toml::Spanned<TaskDef>>,
}

/// A workflow error, as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorkflowError(pub String);

/// A parsed workflow.
#[derive(Debug)]
pub struct Workflow {
    /// The file it came from.
    pub path: PathBuf,
    /// Its tasks, as written.
    pub tasks: Vec<TaskDef>,
    /// Where each task's table starts: line and column (1-based).
    positions: Vec<(u32, u32)>,
    /// The file's name as errors show it.
    shown_path: String,
    text_dir: PathBuf,
}

/// Line and column of byte offsets in a text, found by counting newlines forward
/// from the last offset asked: the tasks' offsets come in order, so the text is
/// scanned once, and no index of every line is kept (a line start a line costs more
/// than the task it belongs to).
struct Positions<'t> {
    text: &'t str,
    /// The offset scanned to, the 0-based line it is on and where that line starts.
    scanned: usize,
    line: usize,
    line_start: usize,
}

impl<'t> Positions<'t> {
    fn new(text: &'t str) -> Positions<'t> {
        Positions {
            text,
            scanned: 0,
            line: 0,
            line_start: 0,
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn position(&mut self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        if offset < self.scanned {
            (self.scanned, self.line, self.line_start) = (0, 0, 0);
        }
        for (i, _) in self.text[self.scanned..offset].match_indices('\n') {
            self.line += 1;
            self.line_start = self.scanned + i + 1;
        }
        self.scanned = offset;
        let column = self.text[self.line_start..offset].chars().count() + 1;
        (
            u32::try_from(self.line + 1).unwrap_or(u32::MAX),
            u32::try_from(column).unwrap_or(u32::MAX),
        )
    }
}

/// Whether `line` is a `[[task]]` header, and whether it holds anything but blanks
/// and a comment.
fn header_or_code(line: &str) -> (bool, bool) {
    let code = line.split('#').next().unwrap_or_default();
    let mut bare = code.chars().filter(|c| !c.is_whitespace());
    (bare.clone().eq("[[task]]".chars()), bare.next().is_some())
}

/// Tasks and the line and column each is written at.
type Parsed = (Vec<TaskDef>, Vec<(u32, u32)>);

/// The tasks and their positions, read from `text` one `[[task]]` table at a time:
/// only the table being parsed is held, never the whole text or a document tree of
/// it. `None` when the text is not a plain list of tables (anything but blank lines
/// and comments before the first header) or a table does not parse on its own.
fn parse_by_table(text: &mut dyn std::io::BufRead) -> std::io::Result<Option<Parsed>> {
    let (mut tasks, mut positions) = (Vec::new(), Vec::new());
    let mut line = String::new();
    // The table being read and the 0-based line it starts on.
    let (mut table, mut table_line) = (String::new(), 0usize);
    let mut line_no = 0usize;
    let mut seen_header = false;
    let mut parse = |table: &str, table_line: usize| -> Option<()> {
        let file: WorkflowFile = toml::from_str(table).ok()?;
        let mut at = Positions::new(table);
        for t in file.task {
            let (l, column) = at.position(t.span().start);
            let l = u32::try_from(table_line)
                .unwrap_or(u32::MAX)
                .saturating_add(l);
            positions.push((l, column));
            tasks.push(t.into_inner());
        }
        Some(())
    };
    loop {
        line.clear();
        let end = text.read_line(&mut line)? == 0;
        let (header, code) = if end {
            (false, false)
        } else {
            header_or_code(&line)
        };
        if (end || header) && seen_header && parse(&table, table_line).is_none() {
            return Ok(None);
        }
        if end {
            break;
        }
        if header {
            seen_header = true;
            table.clear();
            table_line = line_no;
        } else if !seen_header && code {
            return Ok(None);
        }
        if seen_header {
            table.push_str(&line);
        }
        line_no += 1;
    }
    tasks.shrink_to_fit();
    positions.shrink_to_fit();
    Ok(Some((tasks, positions)))
}

/// Each task's index by name: four bytes a task (a map of names to indices costs
/// about eight times that, and a workflow may hold 100,000 tasks).
pub struct NameIndex<'w> {
    tasks: &'w [TaskDef],
    table: hashbrown::HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
}

impl<'w> NameIndex<'w> {
    /// The index of `tasks`; with `unique`, `Err((i, first))` when task `i` has the
    /// name of task `first` (else the first of a name wins).
    fn build(tasks: &'w [TaskDef], unique: bool) -> Result<NameIndex<'w>, (usize, usize)> {
        let mut index = NameIndex {
            tasks,
            table: hashbrown::HashTable::with_capacity(tasks.len()),
            hasher: Default::default(),
        };
        for (i, t) in tasks.iter().enumerate() {
            let hash = index.hash(&t.name);
            match index.table.entry(
                hash,
                |&j| tasks[j as usize].name == t.name,
                |&j| {
                    std::hash::BuildHasher::hash_one(&index.hasher, tasks[j as usize].name.as_str())
                },
            ) {
                hashbrown::hash_table::Entry::Occupied(first) if unique => {
                    return Err((i, *first.get() as usize))
                }
                hashbrown::hash_table::Entry::Occupied(_) => {}
                hashbrown::hash_table::Entry::Vacant(slot) => {
                    slot.insert(i as u32);
                }
            }
        }
        Ok(index)
    }

    fn hash(&self, name: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, name)
    }

    /// The index of the task named `name`.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.table
            .find(self.hash(name), |&j| self.tasks[j as usize].name == name)
            .map(|&j| j as usize)
    }

    /// The index of the task named `name`, which [`Workflow::check`] found.
    pub fn of(&self, name: &str) -> usize {
        self.get(name)
            .unwrap_or_else(|| panic!("a checked workflow has a task named {name:?}"))
    }
}

impl Workflow {
    /// Reads and parses `path`. A plain list of `[[task]]` tables is read one table at
    /// a time (a workflow may hold 100,000 tasks: memory holds the tasks, not the text
    /// as well); anything else is read whole and parsed as [`Workflow::parse`] does.
    pub fn load(path: &Path) -> Result<Workflow, WorkflowError> {
        let unreadable = |e: std::io::Error| {
            WorkflowError(format!("{}: cannot read the workflow: {e}", path.display()))
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let parsed = parse_by_table(&mut std::io::BufReader::with_capacity(64 << 10, file))
            .map_err(unreadable)?;
        match parsed {
            Some((tasks, positions)) => Ok(Workflow::new(path, tasks, positions)),
            None => {
                let text = std::fs::read_to_string(path).map_err(unreadable)?;
                Workflow::parse(&text, path)
            }
        }
    }

    /// Parses `text`, which came from `path` (relative paths in it are resolved against
    /// `path`'s directory).
    ///
    /// A file that is a plain list of `[[task]]` tables is parsed one table at a time,
    /// never as a document tree of the whole file. Anything else (or a table that does
    /// not parse alone, such as a multi-line string holding a `[[task]]` line) is
    /// parsed whole, which also gives the exact error.
    pub fn parse(text: &str, path: &Path) -> Result<Workflow, WorkflowError> {
        let by_table = parse_by_table(&mut text.as_bytes()).ok().flatten();
        let (tasks, positions) = match by_table {
            Some(parsed) => parsed,
            None => {
                let file: WorkflowFile = toml::from_str(text).map_err(|e| {
                    WorkflowError(toml_error_line(&path.display().to_string(), text, &e))
                })?;
                let mut lines = Positions::new(text);
                file.task
                    .into_iter()
                    .map(|t| (lines.position(t.span().start), t.into_inner()))
                    .map(|(p, t)| (t, p))
                    .unzip()
            }
        };
        Ok(Workflow::new(path, tasks, positions))
    }

    fn new(path: &Path, tasks: Vec<TaskDef>, positions: Vec<(u32, u32)>) -> Workflow {
        let text_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let text_dir = std::path::absolute(&text_dir).unwrap_or(text_dir);
        Workflow {
            path: path.to_path_buf(),
            tasks,
            positions,
            shown_path: path.display().to_string(),
            text_dir,
        }
    }

    /// Where task `index` is written, as `file:line:column`.
    pub fn location(&self, index: usize) -> String {
        let (line, column) = self.positions[index];
        format!("{}:{line}:{column}", self.shown_path)
    }

    fn err(&self, index: usize, message: String) -> WorkflowError {
        WorkflowError(format!(
            "{}: task {:?}: {message}",
            self.location(index),
            self.tasks[index].name
        ))
    }

    /// A URL as a `File`; a relative bare path is resolved against the workflow's
    /// directory.
    pub fn file(&self, url: &str) -> Result<File, String> {
        let shown = || stagehost_plugin_api::redact_url(url);
        let file = File::parse(url).map_err(|e| format!("invalid URL {}: {e}", shown()))?;
        let bare = !url.contains(':') || file.scheme() == "file" && !url.starts_with("file:");
        // A zip: URL names a local archive too; a relative one is read from here.
        let zip_relative = file.scheme() == "zip"
            && file.netloc().is_empty()
            && !url.starts_with("zip://")
            && !file.path().starts_with('/');
        if zip_relative {
            let abs = self.text_dir.join(file.path());
            let Some(abs) = abs.to_str() else {
                return Err(format!(
                    "{} resolves to {}, which is not valid UTF-8; stagehost refuses it rather than alter it",
                    shown(),
                    stagehost_plugin_api::display::path(&abs)
                ));
            };
            return File::parse(&format!("zip:{abs}"))
                .map_err(|e| format!("invalid URL {}: {e}", shown()));
        }
        if bare && !Path::new(url).is_absolute() {
            let abs = self.text_dir.join(url);
            let Some(abs) = abs.to_str() else {
                return Err(format!(
                    "{} resolves to {}, which is not valid UTF-8; stagehost refuses it rather than alter it",
                    shown(),
                    stagehost_plugin_api::display::path(&abs)
                ));
            };
            return File::parse(abs).map_err(|e| format!("invalid path {}: {e}", shown()));
        }
        Ok(file)
    }

    /// Checks names, executors, references, cycles and commands; returns the task
    /// indices in an order where every producer comes before its consumers.
    pub fn check(&self, executors: &[&str]) -> Result<Vec<usize>, WorkflowError> {
        if let Some(i) = self.tasks.iter().position(|t| t.name.is_empty()) {
            return Err(self.err(i, "a task needs a non-empty name".into()));
        }
        let by_name = NameIndex::build(&self.tasks, true).map_err(|(i, first)| {
            self.err(
                i,
                format!("the name is used twice (first at {})", self.location(first)),
            )
        })?;
        let mut deps = Deps::with_tasks(self.tasks.len());
        let mut writers: HashMap<String, usize> = HashMap::new();
        for (i, t) in self.tasks.iter().enumerate() {
            deps.begin(i);
            if let Some(url) = t.stdout.iter().chain(&t.stderr).find(|u| {
                self.file(u)
                    .is_ok_and(|f| stagehost_core::tree::is_directory_output(&f))
            }) {
                return Err(self.err(
                    i,
                    format!(
                        "stdout and stderr are files, and {} ends in `/`, a directory: name a file",
                        stagehost_plugin_api::redact_url(url)
                    ),
                ));
            }
            if !executors.contains(&&*t.executor) {
                // A task without `executor =` runs on "local", which a config that
                // declares executors of its own has only if it declares it too.
                let hint = if t.executor == crate::config::DEFAULT_EXECUTOR {
                    format!(
                        "; a task without `executor =` runs on {:?}: name one of those, or declare [executor.{}] in the config",
                        t.executor, t.executor
                    )
                } else {
                    String::new()
                };
                return Err(self.err(
                    i,
                    format!(
                        "unknown executor {:?} (configured: {}){hint}",
                        t.executor,
                        executors.join(", ")
                    ),
                ));
            }
            for (n, input) in t.inputs.iter().enumerate() {
                match input {
                    InputDef::Url(url) => {
                        self.file(url)
                            .map_err(|e| self.err(i, format!("input {n}: {e}")))?;
                    }
                    InputDef::Mirrors(urls) => {
                        for url in urls {
                            let f = self
                                .file(url)
                                .map_err(|e| self.err(i, format!("input {n}: {e}")))?;
                            if stagehost_core::tree::is_directory_output(&f) {
                                return Err(self.err(
                                    i,
                                    format!(
                                        "input {n}: {} ends in `/`; the sources in `urls` are one file's",
                                        f.redacted_url()
                                    ),
                                ));
                            }
                        }
                    }
                    InputDef::Output { task, output } => {
                        let Some(producer) = by_name.get(task) else {
                            return Err(self.err(
                                i,
                                format!("input {n} names task {task:?}, which does not exist"),
                            ));
                        };
                        let count = self.tasks[producer].outputs.len();
                        if *output >= count {
                            return Err(self.err(i, format!("input {n} names output {output} of task {task:?}, which has {count} output(s)")));
                        }
                        deps.push(producer);
                    }
                }
            }
            for url in t.outputs.iter().chain(&t.stdout).chain(&t.stderr) {
                let file = self.file(url).map_err(|e| self.err(i, e))?;
                if let Some(first) = writers.insert(file.url().to_owned(), i) {
                    let what = if first == i {
                        "itself".to_owned()
                    } else {
                        format!(
                            "task {:?} (at {})",
                            self.tasks[first].name,
                            self.location(first)
                        )
                    };
                    return Err(self.err(
                        i,
                        format!(
                            "it writes {}, which {what} writes too; two writers of one output would overwrite each other",
                            file.redacted_url()
                        ),
                    ));
                }
            }
            if let Some(secs) = t.timeout_secs {
                if !(secs > 0.0 && secs <= MAX_SECONDS) {
                    return Err(self.err(
                        i,
                        format!(
                            "timeout_secs must be a number of seconds above 0 and at most {MAX_SECONDS}, not {}",
                            show_number(secs)
                        ),
                    ));
                }
            }
            check_command(
                &t.command,
                t.inputs.len(),
                t.outputs.len(),
                t.stdout.is_some(),
                t.stderr.is_some(),
            )
            .map_err(|e| self.err(i, e))?;
            for (written, meant) in crate::engine::near_misses(&t.command) {
                tracing::warn!(
                    "{}: task {:?}: the command holds {written}, which is not a placeholder and stays as written; did you mean {meant}?",
                    self.location(i),
                    t.name
                );
            }
        }
        deps.finish(self.tasks.len());
        drop(by_name);
        drop(writers);
        topological_order(&deps).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&i| self.tasks[i].name.as_str()).collect();
            self.err(
                cycle[0],
                format!("its inputs form a cycle: {}", names.join(" -> ")),
            )
        })
    }

    /// Each task's index by name.
    pub fn name_index(&self) -> NameIndex<'_> {
        // Names are unique in a checked workflow; in one that is not, the first wins.
        NameIndex::build(&self.tasks, false).expect("a build that keeps the first never stops")
    }

    /// Submits every task in `order` (from [`Workflow::check`]) to `engine`.
    pub fn submit(
        &self,
        engine: &Engine,
        order: &[usize],
    ) -> Result<Vec<Option<TaskHandle>>, WorkflowError> {
        let mut handles: Vec<Option<TaskHandle>> = (0..self.tasks.len()).map(|_| None).collect();
        let index = self.name_index();
        for &i in order {
            let spec = self.spec(i, &handles, &index)?;
            let handle = engine
                .submit(spec)
                .map_err(|e: SubmitError| self.err(i, e.to_string()))?;
            handles[i] = Some(handle);
        }
        Ok(handles)
    }

    /// The engine task for task `i`; its producers must have handles already.
    pub fn spec(
        &self,
        i: usize,
        handles: &[Option<TaskHandle>],
        index: &NameIndex<'_>,
    ) -> Result<TaskSpec, WorkflowError> {
        let producers: Vec<usize> = self.tasks[i]
            .inputs
            .iter()
            .filter_map(|input| match input {
                InputDef::Output { task, .. } => Some(index.of(task)),
                InputDef::Url(_) | InputDef::Mirrors(_) => None,
            })
            .collect();
        self.spec_with(i, &producers, |p| handles[p].as_ref())
    }

    /// The engine task for task `i`, whose `InputDef::Output` inputs come, in order,
    /// from the tasks `producers` names; their handles must exist.
    fn spec_with<'h>(
        &self,
        i: usize,
        producers: &[usize],
        handle: impl Fn(usize) -> Option<&'h TaskHandle>,
    ) -> Result<TaskSpec, WorkflowError> {
        let t = &self.tasks[i];
        let file = |url: &str| self.file(url).map_err(|e| self.err(i, e));
        let mut spec = TaskSpec::command(&t.name, &t.command)
            .executor(&*t.executor)
            .retries(t.retries);
        if let Some(secs) = t.timeout_secs {
            spec = spec.timeout(std::time::Duration::from_secs_f64(secs));
        }
        // Exact sizes: a pushed-to empty Vec reserves room for four, which for 100,000
        // tasks is most of their memory.
        spec.inputs.reserve_exact(t.inputs.len());
        spec.outputs.reserve_exact(t.outputs.len());
        let mut producers = producers.iter();
        for input in &t.inputs {
            spec = spec.input(match input {
                InputDef::Url(url) => Input::File(file(url)?),
                InputDef::Mirrors(urls) if urls.len() == 1 => Input::File(file(&urls[0])?),
                InputDef::Mirrors(urls) => Input::Mirrors {
                    sources: urls.iter().map(|u| file(u)).collect::<Result<_, _>>()?,
                },
                InputDef::Output { output, .. } => {
                    let producer = producers
                        .next()
                        .and_then(|&p| handle(p))
                        .expect("producers are submitted before their consumers");
                    Input::Future(
                        producer
                            .output(*output)
                            .expect("check() verified the output index"),
                    )
                }
            });
        }
        for url in &t.outputs {
            spec = spec.output(file(url)?);
        }
        if let Some(url) = &t.stdout {
            spec = spec.stdout(file(url)?);
        }
        if let Some(url) = &t.stderr {
            spec = spec.stderr(file(url)?);
        }
        Ok(spec)
    }

    /// Submits every task to `engine`, each only once the tasks whose outputs it reads
    /// have finished, and waits until all are submitted; returns the task indices in
    /// submission order (the order of `Engine::wait_all`'s reports).
    ///
    /// A task waiting for its producers holds its parsed table only, never an engine
    /// task, and a table is released once submitted: a workflow of 100,000 chained
    /// tasks keeps its memory near its running frontier. Call after [`Workflow::check`].
    pub async fn submit_as_ready(self, engine: &Engine) -> Result<Vec<usize>, WorkflowError> {
        self.submit_resuming(engine, None, None).await
    }

    /// The remote inputs `--resume` may have to ask about: those of each task whose
    /// last record succeeded, by executor. A bulk check of them ([`crate::bulk`])
    /// answers most with one listing per directory.
    pub fn remote_inputs(&self, history: &History) -> HashMap<String, Vec<File>> {
        let mut out: HashMap<String, Vec<File>> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for t in &self.tasks {
            if !history
                .last(&t.name)
                .is_some_and(|r| r.status == crate::report::TaskStatus::Succeeded)
            {
                continue;
            }
            for input in &t.inputs {
                let InputDef::Url(url) = input else { continue };
                if crate::journal::local_path_of(url).is_some() {
                    continue;
                }
                let Ok(file) = self.file(url) else { continue };
                if seen.insert((t.executor.to_string(), file.url().to_owned())) {
                    out.entry(t.executor.to_string()).or_default().push(file);
                }
            }
        }
        out
    }

    /// [`Workflow::submit_as_ready`], skipping each task `history` shows unchanged
    /// (`stagehost run --resume`, by [`crate::resume`]'s rule), decided when the task
    /// becomes ready, once its producers have run or been skipped.
    ///
    /// `checked` holds a bulk check of the remote inputs ([`Workflow::remote_inputs`]):
    /// a task whose remote inputs it proves current is skipped without a stage-in, and
    /// one it proves changed runs; what it cannot tell is staged in again to find out.
    pub async fn submit_resuming(
        mut self,
        engine: &Engine,
        history: Option<&History>,
        checked: Option<&crate::bulk::BulkAnswers>,
    ) -> Result<Vec<usize>, WorkflowError> {
        let n = self.tasks.len();
        // Flat lists (an offset a task): most tasks of a large workflow have no producer.
        let producers = {
            let index = self.name_index();
            let mut producers = Deps::with_tasks(n);
            for (i, t) in self.tasks.iter().enumerate() {
                producers.begin(i);
                for input in &t.inputs {
                    if let InputDef::Output { task, .. } = input {
                        producers.push(index.of(task));
                    }
                }
            }
            producers.finish(n);
            producers
        };
        let consumers = producers.consumers();
        let mut waiting: Vec<u32> = (0..n)
            .map(|i| unique(producers.of(i)).len() as u32)
            .collect();
        // A producer's handle is kept until its last consumer is submitted.
        let mut unsubmitted_consumers: Vec<u32> =
            (0..n).map(|i| consumers.of(i).count() as u32).collect();
        // Only producers whose consumers are not all submitted yet: the frontier.
        let mut handles: HashMap<usize, TaskHandle> = HashMap::new();
        let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).rev().collect();
        let (finished_tx, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let mut submitted = Vec::with_capacity(n);
        while submitted.len() < n {
            while let Some(i) = ready.pop() {
                engine.wait_for_room().await;
                let producers_of_i: Vec<usize> = producers.of(i).collect();
                let mut spec = self.spec_with(i, &producers_of_i, |p| handles.get(&p))?;
                let listed = expand_directories(&mut spec, engine.data_manager());
                // A task whose producer failed in this run is never skipped: it
                // loses its input, whatever its record says.
                let producers_ok = producers_of_i.iter().all(|p| {
                    handles.get(p).is_some_and(|h| {
                        h.report.borrow().as_ref().is_some_and(|r| r.status.is_ok())
                    })
                });
                let handle = match history {
                    None => engine.submit(spec),
                    Some(_) if !producers_ok => engine.submit(spec),
                    Some(h) => match verdict(h, &self.tasks[i].command, &spec) {
                        Verdict::Unchanged => Ok(engine.skip(spec)),
                        Verdict::Revalidate(inputs) => {
                            match checked.map(|c| proof(c, &listed, h, &spec, &inputs)) {
                                Some(Proof::Current) => Ok(engine.skip(spec)),
                                Some(Proof::Changed(why)) => {
                                    tracing::info!("task {:?} runs: {why}", self.tasks[i].name);
                                    engine.submit(spec)
                                }
                                _ => {
                                    let dir = engine
                                        .working_dir(&spec.executor)
                                        .unwrap_or(Path::new("."))
                                        .to_path_buf();
                                    engine.submit(spec.skip_if(revalidation(inputs, dir)))
                                }
                            }
                        }
                        Verdict::Changed(why) => {
                            tracing::info!("task {:?} runs: {why}", self.tasks[i].name);
                            engine.submit(spec)
                        }
                    },
                }
                .map_err(|e: SubmitError| self.err(i, e.to_string()))?;
                submitted.push(i);
                let t = &mut self.tasks[i];
                (t.command, t.inputs, t.outputs, t.stdout, t.stderr) = Default::default();
                for p in unique(producers_of_i.into_iter()) {
                    unsubmitted_consumers[p] -= 1;
                    if unsubmitted_consumers[p] == 0 {
                        handles.remove(&p);
                    }
                }
                if consumers.of(i).next().is_some() {
                    let mut report = handle.report.clone();
                    let tx = finished_tx.clone();
                    tokio::spawn(async move {
                        let _ = report.wait_for(Option::is_some).await;
                        let _ = tx.send(i);
                    });
                    handles.insert(i, handle);
                }
            }
            if submitted.len() == n {
                break;
            }
            let Some(done) = finished.recv().await else {
                break;
            };
            for c in consumers.of(done) {
                waiting[c] -= 1;
                if waiting[c] == 0 {
                    ready.push(c);
                }
            }
        }
        Ok(submitted)
    }

    /// The files of task `i` for a dry run: inputs (producers' outputs included), then
    /// outputs, stdout, stderr.
    pub fn files(
        &self,
        i: usize,
        index: &NameIndex<'_>,
    ) -> Result<(Vec<File>, Vec<File>), WorkflowError> {
        let t = &self.tasks[i];
        let file = |url: &str| self.file(url).map_err(|e| self.err(i, e));
        let mut ins = Vec::new();
        for input in &t.inputs {
            ins.push(match input {
                InputDef::Url(url) => file(url)?,
                InputDef::Mirrors(urls) => file(&urls[0])?,
                InputDef::Output { task, output } => {
                    let producer = &self.tasks[index.of(task)];
                    file(&producer.outputs[*output])?
                }
            });
        }
        let mut outs = Vec::new();
        for url in t.outputs.iter().chain(&t.stdout).chain(&t.stderr) {
            outs.push(file(url)?);
        }
        Ok((ins, outs))
    }
}

/// What `--resume` does with `spec`, whose command text is `command`.
pub fn verdict(history: &History, command: &str, spec: &TaskSpec) -> Verdict {
    let ins: Vec<String> = spec.staged_ins().map(|i| i.file().redacted_url()).collect();
    let outs: Vec<String> = spec
        .outputs
        .iter()
        .chain(&spec.stdout)
        .chain(&spec.stderr)
        .map(File::redacted_url)
        .collect();
    history.verdict(&spec.name, &spec.executor, command, &ins, &outs)
}

/// Expands each directory input of `spec` ([`stagehost_core::tree`]): the input
/// becomes an [`Input::Directory`] (the task sees where its files land) and each file
/// below it an [`Input::Placed`] argument, staged as a file of its own. The listing is
/// a request to the directory's server, made off the async threads.
fn expand_directories(spec: &mut TaskSpec, dm: &DataManager) -> crate::bulk::BulkAnswers {
    // Another task's directory output is listed once it is staged out (a consumer is
    // submitted after its producers end); one that failed stays a future the task
    // loses.
    let listable = |i: &Input| match i {
        Input::File(f) => dm.names_directory(&spec.executor, f),
        Input::Future(d) => d.is_ready() && dm.names_directory(&spec.executor, d.file()),
        _ => false,
    };
    let wanted = spec.inputs.iter().any(listable);
    let mut listed = crate::bulk::BulkAnswers::default();
    if !wanted {
        return listed;
    }
    let mut expand = || {
        let executor = spec.executor.clone();
        let working_dir = dm
            .working_dir(&executor)
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let mut args = Vec::new();
        for input in &mut spec.inputs {
            let (dir, produced) = match input {
                Input::File(dir) if dm.names_directory(&executor, dir) => (dir.clone(), false),
                Input::Future(d) if d.is_ready() && dm.names_directory(&executor, d.file()) => {
                    (d.file().clone(), true)
                }
                _ => continue,
            };
            let path = dm
                .directory_destination(&executor, &dir, None)
                .and_then(|root| {
                    let files = match dm.expand_directory(&executor, &dir, &Default::default()) {
                        // A task's directory output it left empty stages out nothing,
                        // so no directory or prefix may be there: it is empty.
                        Err(e)
                            if produced && e.class() == crate::report::FailureClass::NotFound =>
                        {
                            Vec::new()
                        }
                        listed => listed?,
                    };
                    Ok((root, files))
                })
                .map(|(root, files)| {
                    // The task sees exactly the directory's files: one staged here
                    // before and gone from its server since goes (only files stagehost
                    // put here; anything else is left alone).
                    let keep: Vec<std::path::PathBuf> =
                        files.iter().map(|f| root.join(&f.relative)).collect();
                    stagehost_core::tree::prune(&root, &keep, &working_dir);
                    listed.listings += 1;
                    for f in files {
                        // What the listing said of each file answers `--resume` as a
                        // bulk check would.
                        let mut entry =
                            stagehost_plugin_api::capability::Entry::file(f.relative.clone());
                        entry.size = f.size;
                        entry.validator = f.validator.clone();
                        listed
                            .answers
                            .insert(f.file.url().to_owned(), Ok(Some(entry)));
                        let destination = root.join(&f.relative);
                        args.push(Input::Placed {
                            file: f.file,
                            destination,
                        });
                    }
                    root
                });
            *input = Input::Directory { file: dir, path };
        }
        spec.args.extend(args);
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(expand),
        _ => expand(),
    }
    listed
}

/// What the bulk check `checked`, and the listings of `spec`'s directory inputs
/// (`listed`), prove about the remote `inputs` (by index) of `spec`: current only if
/// every one is; changed if one is.
fn proof(
    checked: &crate::bulk::BulkAnswers,
    listed: &crate::bulk::BulkAnswers,
    history: &History,
    spec: &TaskSpec,
    inputs: &[(usize, Identity)],
) -> Proof {
    let record = history.last(&spec.name);
    let mut all_current = true;
    for (i, recorded) in inputs {
        let Some(input) = spec.staged_ins().nth(*i) else {
            return Proof::Unknown;
        };
        // A directory stands for its files, each answered by its listing (and a file
        // added or removed changed the inputs already).
        if matches!(input, Input::Directory { path: Ok(_), .. }) {
            continue;
        }
        let file = input.file();
        let answer = checked
            .answers
            .get(file.url())
            .or_else(|| listed.answers.get(file.url()));
        let Some(answer) = answer else {
            all_current = false;
            continue;
        };
        let copy = record
            .and_then(|r| r.inputs.get(*i))
            .and_then(|f| f.local_path.as_deref())
            .map(Path::new);
        match crate::resume::bulk_proof(answer, copy, recorded) {
            Proof::Current => {}
            Proof::Changed(why) => {
                return Proof::Changed(format!("input {} {why}", file.redacted_url()))
            }
            Proof::Unknown => all_current = false,
        }
    }
    if all_current {
        Proof::Current
    } else {
        Proof::Unknown
    }
}

/// The check of a task whose remote inputs must be staged in again to know whether
/// they changed: each copy must have the identity recorded.
fn revalidation(inputs: Vec<(usize, Identity)>, working_dir: std::path::PathBuf) -> SkipCheck {
    SkipCheck(std::sync::Arc::new(move |staged: &[FileReport]| {
        for (i, recorded) in &inputs {
            let Some(f) = staged.get(*i) else {
                return Err("its inputs changed".into());
            };
            let Some(path) = f.local_path.as_deref() else {
                return Err(format!("input {} has no local copy", f.url));
            };
            if let Some(why) =
                crate::resume::remote_drift(&f.url, Path::new(path), &working_dir, recorded)
            {
                return Err(format!("input {} {why}", f.url));
            }
        }
        Ok(())
    }))
}

/// Each task's producers, flat: a task with none costs one offset, not an empty list
/// (a workflow may hold 100,000 tasks, most of them with no producer).
struct Deps {
    /// Where each task's producers end in `list`, for the tasks begun before the last.
    ends: Vec<u32>,
    list: Vec<u32>,
}

impl Deps {
    fn with_tasks(n: usize) -> Deps {
        Deps {
            ends: Vec::with_capacity(n),
            list: Vec::new(),
        }
    }

    /// Begins task `i`'s producers: those pushed since belong to it.
    fn begin(&mut self, i: usize) {
        while self.ends.len() < i {
            self.ends.push(self.list.len() as u32);
        }
    }

    fn push(&mut self, producer: usize) {
        self.list.push(producer as u32);
    }

    /// Ends the last of `n` tasks.
    fn finish(&mut self, n: usize) {
        self.begin(n);
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Each task's consumers, each once, flat as these lists are.
    fn consumers(&self) -> Deps {
        let n = self.len();
        let mut starts = vec![0u32; n + 1];
        for i in 0..n {
            for d in unique(self.of(i)) {
                starts[d + 1] += 1;
            }
        }
        for i in 0..n {
            starts[i + 1] += starts[i];
        }
        let mut list = vec![0u32; starts[n] as usize];
        let mut fill = starts.clone();
        for i in 0..n {
            for d in unique(self.of(i)) {
                list[fill[d] as usize] = i as u32;
                fill[d] += 1;
            }
        }
        starts.remove(0);
        Deps { ends: starts, list }
    }

    /// Task `i`'s producers.
    fn of(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.list[start..self.ends[i] as usize]
            .iter()
            .map(|&d| d as usize)
    }
}

/// `items` sorted, each once (no allocation for none).
fn unique(items: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut items: Vec<usize> = items.collect();
    items.sort_unstable();
    items.dedup();
    items
}

/// Task indices in an order where every producer comes before its consumers (Kahn's
/// algorithm), or the tasks of one cycle in order.
fn topological_order(deps: &Deps) -> Result<Vec<usize>, Vec<usize>> {
    let n = deps.len();
    // Each task's consumers, flat as `deps` is.
    let mut count = vec![0u32; n + 1];
    for &d in &deps.list {
        count[d as usize + 1] += 1;
    }
    for i in 0..n {
        count[i + 1] += count[i];
    }
    let mut fill = count.clone();
    let mut consumers = vec![0u32; deps.list.len()];
    let mut waiting: Vec<u32> = vec![0; n];
    for (i, wait) in waiting.iter_mut().enumerate() {
        for d in deps.of(i) {
            consumers[fill[d] as usize] = i as u32;
            fill[d] += 1;
            *wait += 1;
        }
    }
    drop(fill);
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).rev().collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &c in &consumers[count[i] as usize..count[i + 1] as usize] {
            let c = c as usize;
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(c);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk back along unfinished dependencies until a task repeats.
    let mut at = (0..n).find(|&i| waiting[i] > 0).expect("some task is left");
    let mut path = vec![at];
    loop {
        at = deps
            .of(at)
            .find(|&d| waiting[d] > 0)
            .expect("an unfinished task waits on an unfinished task");
        if let Some(pos) = path.iter().position(|&p| p == at) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            cycle.push(cycle[0]);
            return Err(cycle);
        }
        path.push(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(text: &str) -> Workflow {
        Workflow::parse(text, Path::new("/w/flow.toml")).unwrap()
    }

    #[test]
    fn an_input_table_is_another_tasks_output_or_a_directory() {
        let w = wf("[[task]]\nname = \"a\"\ncommand = \"true\"\ninputs = [{ url = \"s3://b/in\", recursive = true }, { url = \"s3://b/x/\" }, { url = \"s3://b/f.txt\" }]\n");
        let urls: Vec<&str> = w.tasks[0]
            .inputs
            .iter()
            .map(|i| match i {
                InputDef::Url(u) => u.as_str(),
                InputDef::Mirrors(_) => "mirrors",
                InputDef::Output { .. } => "output",
            })
            .collect();
        assert_eq!(urls, ["s3://b/in/", "s3://b/x/", "s3://b/f.txt"]);
        for bad in [
            "{ task = \"b\", url = \"s3://b/x\" }",
            "{ url = \"s3://b/x\", output = 1 }",
            "{ task = \"b\", recursive = true }",
            "{ recursive = true }",
            "{ url = \"s3://b/x\", recursve = true }",
        ] {
            let text = format!("[[task]]\nname = \"a\"\ncommand = \"true\"\ninputs = [{bad}]\n");
            assert!(
                Workflow::parse(&text, Path::new("/w/flow.toml")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn cycles_are_named_with_their_place() {
        let w = wf("[[task]]\nname = \"a\"\ncommand = \"true\"\ninputs = [{ task = \"b\" }]\noutputs = [\"a.txt\"]\n\n[[task]]\nname = \"b\"\ncommand = \"true\"\ninputs = [{ task = \"a\" }]\noutputs = [\"b.txt\"]\n");
        let err = w.check(&["local"]).unwrap_err().to_string();
        assert!(err.starts_with("/w/flow.toml:"), "{err}");
        assert!(err.contains("its inputs form a cycle: "), "{err}");
        assert!(
            err.ends_with("a -> b -> a") || err.ends_with("b -> a -> b"),
            "{err}"
        );
    }

    #[test]
    fn unknown_tasks_outputs_and_executors_are_errors() {
        let w = wf("[[task]]\nname = \"a\"\ncommand = \"true\"\ninputs = [{ task = \"zz\" }]\n");
        assert_eq!(
            w.check(&["local"]).unwrap_err().to_string(),
            "/w/flow.toml:1:1: task \"a\": input 0 names task \"zz\", which does not exist"
        );
        let w = wf("[[task]]\nname = \"a\"\ncommand = \"true\"\nexecutor = \"gpu\"\n");
        assert_eq!(
            w.check(&["local"]).unwrap_err().to_string(),
            "/w/flow.toml:1:1: task \"a\": unknown executor \"gpu\" (configured: local)"
        );
        let w = wf("[[task]]\nname = \"a\"\ncommand = \"true\"\n[[task]]\nname = \"b\"\ncommand = \"cat {inputs[0]}\"\ninputs = [{ task = \"a\", output = 1 }]\n");
        assert_eq!(
            w.check(&["local"]).unwrap_err().to_string(),
            "/w/flow.toml:4:1: task \"b\": input 0 names output 1 of task \"a\", which has 0 output(s)"
        );
    }

    #[test]
    fn a_name_used_twice_names_its_first_place_and_the_index_finds_each_task() {
        let w = wf("[[task]]\nname = \"a\"\ncommand = \"true\"\n[[task]]\nname = \"b\"\ncommand = \"true\"\n[[task]]\nname = \"a\"\ncommand = \"true\"\n");
        assert_eq!(
            w.check(&["local"]).unwrap_err().to_string(),
            "/w/flow.toml:7:1: task \"a\": the name is used twice (first at /w/flow.toml:1:1)"
        );
        // An index of a workflow with a name used twice keeps the first.
        let index = w.name_index();
        assert_eq!(
            (index.get("a"), index.get("b"), index.get("c")),
            (Some(0), Some(1), None)
        );
        let names: String = (0..500)
            .map(|i| format!("[[task]]\nname = \"t{i}\"\ncommand = \"true\"\n"))
            .collect();
        let w = wf(&names);
        let index = w.name_index();
        assert!((0..500).all(|i| index.get(&format!("t{i}")) == Some(i)));
        assert_eq!(index.get("t500"), None);
    }

    #[test]
    fn producers_come_first_and_relative_paths_resolve_against_the_workflow() {
        let w = wf("[[task]]\nname = \"b\"\ncommand = \"cat {inputs[0]}\"\ninputs = [{ task = \"a\" }]\n[[task]]\nname = \"a\"\ncommand = \"echo > {outputs[0]}\"\noutputs = [\"out/a.txt\"]\n");
        assert_eq!(w.check(&["local"]).unwrap(), vec![1, 0]);
        assert_eq!(w.file("out/a.txt").unwrap().path(), "/w/out/a.txt");
        assert_eq!(w.file("http://h/x").unwrap().path(), "/x");
        assert_eq!(w.file("file:///abs").unwrap().path(), "/abs");
        assert_eq!(
            w.file("zip:out/a.zip/m.txt").unwrap().url(),
            "zip:/w/out/a.zip/m.txt"
        );
        assert_eq!(
            w.file("zip:/abs/a.zip/m").unwrap().url(),
            "zip:/abs/a.zip/m"
        );
    }

    #[test]
    fn a_plain_list_of_tables_parses_table_by_table_with_exact_positions() {
        let text = "# a comment\n\n[[task]]\nname = \"a\"\ncommand = \"true\"\n\n  [[ task ]] # b\nname = \"b\"\ncommand = \"x\"\ninputs = [{ task = \"a\" }]\n";
        let (tasks, positions) = parse_by_table(&mut text.as_bytes()).unwrap().unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(positions, [(3, 1), (7, 3)]);
        let w = wf(text);
        assert_eq!(w.tasks.len(), 2);
        assert_eq!(w.location(1), "/w/flow.toml:7:3");
        // Read from a file, one table at a time: the same tasks and places.
        let dir = std::env::temp_dir().join(format!("stagehost-wf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flow.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = Workflow::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.tasks.len(), 2);
        assert_eq!(loaded.positions, [(3, 1), (7, 3)]);
        // A multi-line string holding a header line: the whole text is parsed at once.
        let tricky = "[[task]]\nname = \"a\"\ncommand = '''\n[[task]]\n'''\n";
        let w = wf(tricky);
        assert_eq!(w.tasks.len(), 1);
        assert_eq!(w.tasks[0].command, "[[task]]\n");
        // Top-level content before the first table: parsed whole, with the exact error.
        assert!(parse_by_table(&mut "x = 1\n[[task]]\n".as_bytes())
            .unwrap()
            .is_none());
    }

    #[test]
    fn unknown_keys_have_a_line_and_column() {
        let err = Workflow::parse(
            "[[task]]\nname = \"a\"\ncommand = \"true\"\noutput = []\n",
            Path::new("f.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f.toml:4:1: unknown field `output`"),
            "{err}"
        );
    }
}
