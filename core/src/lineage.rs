//! Lineage from run journals (`stagehost lineage`): the task that produced a file, its
//! command and its inputs with their identities, back to the workflow's sources; and
//! a check that every recorded identity still holds.
//!
//! A file is known by its URL; a local one (a bare path or a `file` URL without a
//! host) by its path, however it was written. The producer of a file is the last task
//! that succeeded with it among its outputs, over every journal read.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::journal::{local_path_of, Identity, Record, TaskRecord};
use crate::report::TaskStatus;

/// The journals' last successful record of each task, and who produced each file.
#[derive(Debug, Default)]
pub struct Lineage {
    /// Journals read.
    pub journals: usize,
    entries: Vec<Entry>,
    /// Each file's key to the entry that produced it last.
    by_output: HashMap<String, usize>,
}

/// A task's last successful record, and the workflow it belongs to.
#[derive(Debug)]
struct Entry {
    workflow: String,
    record: TaskRecord,
}

/// One file in a lineage.
#[derive(Debug, Serialize)]
pub struct Node {
    /// Its URL (redacted), or its path.
    pub url: String,
    /// Its identity as recorded: by the task that produced it, or (for a source) by
    /// the task that read it.
    pub identity: Option<Identity>,
    /// Whether it still has that identity: `current`, `drifted`, or `not_checked` (a
    /// remote file).
    pub state: &'static str,
    /// How it drifted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The task that produced it, if a journal says so; none for a source.
    pub produced_by: Option<Producer>,
}

/// The task that produced a file.
#[derive(Debug, Serialize)]
pub struct Producer {
    /// Task name.
    pub task: String,
    /// The workflow file whose journal holds it.
    pub workflow: String,
    /// Executor label.
    pub executor: String,
    /// Its command as written.
    pub command: Option<String>,
    /// The SHA-256 of the command.
    pub command_sha256: Option<String>,
    /// When it ended, seconds since the epoch.
    pub ended: f64,
    /// Its inputs, each with its own lineage.
    pub inputs: Vec<Node>,
    /// Why `inputs` is empty though it had inputs: `shown above` (this task's
    /// lineage is printed already, or it is its own ancestor), or `deeper than the
    /// depth asked for`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs_elided: Option<&'static str>,
}

/// A recorded identity that no longer holds.
#[derive(Debug, Serialize)]
pub struct Drift {
    /// The file.
    pub url: String,
    /// How it differs.
    pub why: String,
    /// The task whose record holds the identity.
    pub task: String,
    /// Its workflow.
    pub workflow: String,
    /// `input` or `output` of that task.
    pub role: &'static str,
}

/// What a check found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// Identities compared (local files).
    pub checked: usize,
    /// Remote files, whose identities are not checked (no provider can be asked about
    /// a file without fetching it).
    pub not_checked: usize,
    /// What drifted.
    pub drifted: Vec<Drift>,
}

/// How a file is known: a local path, or its URL without a fragment (a `zip:` URL
/// naming a relative archive, as a workflow resolves it, from the current directory).
pub fn key(url: &str) -> String {
    match local_path_of(url) {
        Some(p) => std::path::absolute(&p).unwrap_or(p).display().to_string(),
        None => {
            let bare = url.split('#').next().unwrap_or_default();
            match bare.strip_prefix("zip:") {
                Some(rest) if !rest.starts_with('/') && !rest.is_empty() => {
                    match std::path::absolute(rest) {
                        Ok(abs) => format!("zip:{}", abs.display()),
                        Err(_) => bare.to_owned(),
                    }
                }
                _ => bare.to_owned(),
            }
        }
    }
}

/// The workflow file a journal belongs to: `<dir>/.stagehost/journal/<name>.jsonl` is
/// `<dir>/<name>`.
fn workflow_of(journal: &Path) -> String {
    let name = journal
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".jsonl").to_owned())
        .unwrap_or_default();
    journal
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from(&name), |d| d.join(&name))
        .display()
        .to_string()
}

/// Every journal in `<dir>/.stagehost/journal/`, for `dir` and each of its ancestors.
pub fn journals_above(dir: &Path) -> Vec<PathBuf> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found = Vec::new();
    for d in dir.ancestors() {
        if let Ok(here) = journals_in(&d.join(".stagehost").join("journal")) {
            found.extend(here);
        }
    }
    found
}

/// The journals (`*.jsonl`) in `dir`, sorted.
pub fn journals_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut here: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    here.sort();
    Ok(here)
}

impl Lineage {
    /// The lineage the journals at `paths` record (read in order: a later journal's
    /// producer of a file wins).
    pub fn read(paths: &[PathBuf]) -> std::io::Result<Lineage> {
        Lineage::read_current(paths, |_| None)
    }

    /// [`Lineage::read`], keeping of each journal only the tasks `current` names for its
    /// workflow file (`None`: all of them): a task renamed or removed from the
    /// workflow no longer speaks for its old outputs.
    pub fn read_current(
        paths: &[PathBuf],
        current: impl Fn(&Path) -> Option<HashSet<String>>,
    ) -> std::io::Result<Lineage> {
        let mut lineage = Lineage::default();
        for path in paths {
            let workflow = workflow_of(path);
            // A journal that cannot be read, or that another user could have written,
            // is left out with a warning that names it.
            let records = match crate::journal::read_records(path) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(
                        "left out the run journal {}: {e}",
                        stagehost_plugin_api::display::path(path)
                    );
                    continue;
                }
            };
            lineage.journals += 1;
            let keep = current(Path::new(&workflow));
            let mut last: HashMap<String, TaskRecord> = HashMap::new();
            let mut order = Vec::new();
            for record in records {
                if let Record::Task(t) = record {
                    let kept = keep.as_ref().is_none_or(|names| names.contains(&t.name));
                    if t.status == TaskStatus::Succeeded && kept {
                        if !last.contains_key(&t.name) {
                            order.push(t.name.clone());
                        }
                        last.insert(t.name.clone(), t);
                    }
                }
            }
            let mut records: Vec<TaskRecord> =
                order.iter().filter_map(|name| last.remove(name)).collect();
            records.sort_by(|a, b| a.ended.total_cmp(&b.ended));
            for record in records {
                let i = lineage.entries.len();
                for f in &record.outputs {
                    lineage.by_output.insert(key(&f.url), i);
                }
                lineage.entries.push(Entry {
                    workflow: workflow.clone(),
                    record,
                });
            }
        }
        Ok(lineage)
    }

    /// How many tasks have a successful record.
    pub fn tasks(&self) -> usize {
        self.entries.len()
    }

    /// The lineage of `target` (a path or a URL), back to its sources, `depth` tasks
    /// deep at most; `None` when no journal names a task that produced it.
    pub fn of(&self, target: &str, depth: usize) -> Option<Node> {
        let k = key(target);
        let &i = self.by_output.get(&k)?;
        let identity = self.entries[i]
            .record
            .outputs
            .iter()
            .find(|f| key(&f.url) == k)
            .and_then(|f| f.identity.clone());
        let url = self.entries[i]
            .record
            .outputs
            .iter()
            .find(|f| key(&f.url) == k)
            .map_or_else(|| target.to_owned(), |f| f.url.clone());
        let mut seen = HashSet::new();
        Some(self.node(url, identity, &mut seen, depth))
    }

    /// A file's node; each producing task's inputs are listed once (where it first
    /// appears), and no deeper than `depth` more tasks.
    fn node(
        &self,
        url: String,
        identity: Option<Identity>,
        seen: &mut HashSet<usize>,
        depth: usize,
    ) -> Node {
        let (state, why) = state(&url, identity.as_ref());
        let produced_by = self.by_output.get(&key(&url)).copied().map(|i| {
            let Entry { workflow, record } = &self.entries[i];
            let elided = if record.inputs.is_empty() {
                None
            } else if depth == 0 {
                Some("deeper than the depth asked for")
            } else if !seen.insert(i) {
                Some("shown above")
            } else {
                None
            };
            let inputs = if elided.is_some() {
                Vec::new()
            } else {
                record
                    .inputs
                    .iter()
                    .map(|f| self.node(f.url.clone(), f.identity.clone(), seen, depth - 1))
                    .collect()
            };
            Producer {
                task: record.name.clone(),
                workflow: workflow.clone(),
                executor: record.executor.clone(),
                command: record.command.clone(),
                command_sha256: record.command_sha256.clone(),
                ended: record.ended,
                inputs,
                inputs_elided: elided,
            }
        });
        Node {
            url,
            identity,
            state,
            why,
            produced_by,
        }
    }

    /// Re-verifies every identity the records hold (of `target`'s lineage only, when
    /// given): each input as its task read it, each output as its task left it.
    pub fn check(&self, target: Option<&str>) -> CheckReport {
        let entries: Vec<usize> = match target {
            None => (0..self.entries.len()).collect(),
            Some(t) => {
                let mut within = Vec::new();
                let mut stack: Vec<String> = vec![key(t)];
                let mut seen = HashSet::new();
                while let Some(k) = stack.pop() {
                    if let Some(&i) = self.by_output.get(&k) {
                        if seen.insert(i) {
                            within.push(i);
                            stack.extend(self.entries[i].record.inputs.iter().map(|f| key(&f.url)));
                        }
                    }
                }
                within
            }
        };
        let mut report = CheckReport::default();
        for i in entries {
            let Entry { workflow, record } = &self.entries[i];
            let files = record
                .inputs
                .iter()
                .map(|f| (f, "input"))
                .chain(record.outputs.iter().map(|f| (f, "output")));
            for (f, role) in files {
                let Some(path) = local_path_of(&f.url) else {
                    report.not_checked += 1;
                    continue;
                };
                report.checked += 1;
                let why = match &f.identity {
                    None => Some("has no recorded identity".to_owned()),
                    Some(id) => crate::resume::drift(&path, id),
                };
                if let Some(why) = why {
                    report.drifted.push(Drift {
                        url: f.url.clone(),
                        why,
                        task: record.name.clone(),
                        workflow: workflow.clone(),
                        role,
                    });
                }
            }
        }
        report
    }
}

/// Whether the file at `url` still has `identity`, and how it drifted.
fn state(url: &str, identity: Option<&Identity>) -> (&'static str, Option<String>) {
    match (local_path_of(url), identity) {
        (None, _) => ("not_checked", None),
        (Some(_), None) => ("drifted", Some("has no recorded identity".into())),
        (Some(path), Some(id)) => match crate::resume::drift(&path, id) {
            None => ("current", None),
            Some(why) => ("drifted", Some(why)),
        },
    }
}
