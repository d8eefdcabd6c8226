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

use crate::config::{line_column, show_number, toml_error_line, MAX_SECONDS};
use crate::engine::{check_command, Engine, Input, SubmitError, TaskHandle, TaskSpec};

/// A `[[task]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    /// Unique name.
    pub name: String,
    /// Shell command.
    pub command: String,
    /// Executor label (default `local`).
    #[serde(default = "default_executor")]
    pub executor: String,
    /// Inputs: URLs/paths, or `{ task = "name", output = i }`.
    #[serde(default)]
    pub inputs: Vec<InputDef>,
    /// Outputs: URLs/paths.
    #[serde(default)]
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
}

fn default_executor() -> String {
    crate::config::DEFAULT_EXECUTOR.to_owned()
}

/// One input of a task.
#[derive(Debug, Clone)]
pub enum InputDef {
    /// A URL or path.
    Url(String),
    /// Another task's output.
    Output {
        /// The producing task.
        task: String,
        /// Which of its outputs (default 0).
        output: usize,
    },
}

/// `{ task = "name", output = i }`: a typo in a key is an error, never a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputRef {
    task: String,
    #[serde(default)]
    output: usize,
}

impl<'de> Deserialize<'de> for InputDef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = InputDef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL or a table `{ task = \"name\", output = N }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<InputDef, E> {
                Ok(InputDef::Url(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<InputDef, E> {
                Ok(InputDef::Url(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<InputDef, A::Error> {
                let r = OutputRef::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(InputDef::Output {
                    task: r.task,
                    output: r.output,
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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
    /// Where each task's table starts, as `file:line:column`.
    locations: Vec<String>,
    text_dir: PathBuf,
}

impl Workflow {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Workflow, WorkflowError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            WorkflowError(format!("{}: cannot read the workflow: {e}", path.display()))
        })?;
        Workflow::parse(&text, path)
    }

    /// Parses `text`, which came from `path` (relative paths in it are resolved against
    /// `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<Workflow, WorkflowError> {
        let file: WorkflowFile = toml::from_str(text)
            .map_err(|e| WorkflowError(toml_error_line(&path.display().to_string(), text, &e)))?;
        let locations = file
            .task
            .iter()
            .map(|t| {
                let (l, c) = line_column(text, t.span().start);
                format!("{}:{l}:{c}", path.display())
            })
            .collect();
        let text_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let text_dir = std::path::absolute(&text_dir).unwrap_or(text_dir);
        Ok(Workflow {
            path: path.to_path_buf(),
            tasks: file
                .task
                .into_iter()
                .map(toml::Spanned::into_inner)
                .collect(),
            locations,
            text_dir,
        })
    }

    fn err(&self, index: usize, message: String) -> WorkflowError {
        WorkflowError(format!(
            "{}: task {:?}: {message}",
            self.locations[index], self.tasks[index].name
        ))
    }

    /// A URL as a `File`; a relative bare path is resolved against the workflow's
    /// directory.
    pub fn file(&self, url: &str) -> Result<File, String> {
        let shown = || stagehost_plugin_api::redact_url(url);
        let file = File::parse(url).map_err(|e| format!("invalid URL {}: {e}", shown()))?;
        let bare = !url.contains(':') || file.scheme() == "file" && !url.starts_with("file:");
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
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, t) in self.tasks.iter().enumerate() {
            if t.name.is_empty() {
                return Err(self.err(i, "a task needs a non-empty name".into()));
            }
            if let Some(first) = by_name.insert(&t.name, i) {
                return Err(self.err(
                    i,
                    format!(
                        "the name is used twice (first at {})",
                        self.locations[first]
                    ),
                ));
            }
        }
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); self.tasks.len()];
        let mut writers: HashMap<String, usize> = HashMap::new();
        for (i, t) in self.tasks.iter().enumerate() {
            if !executors.contains(&t.executor.as_str()) {
                return Err(self.err(
                    i,
                    format!(
                        "unknown executor {:?} (configured: {})",
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
                    InputDef::Output { task, output } => {
                        let Some(&producer) = by_name.get(task.as_str()) else {
                            return Err(self.err(
                                i,
                                format!("input {n} names task {task:?}, which does not exist"),
                            ));
                        };
                        let count = self.tasks[producer].outputs.len();
                        if *output >= count {
                            return Err(self.err(i, format!("input {n} names output {output} of task {task:?}, which has {count} output(s)")));
                        }
                        deps[i].push(producer);
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
                            self.tasks[first].name, self.locations[first]
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
        }
        topological_order(&deps).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&i| self.tasks[i].name.as_str()).collect();
            self.err(
                cycle[0],
                format!("its inputs form a cycle: {}", names.join(" -> ")),
            )
        })
    }

    /// Submits every task in `order` (from [`Workflow::check`]) to `engine`.
    pub fn submit(
        &self,
        engine: &Engine,
        order: &[usize],
    ) -> Result<Vec<Option<TaskHandle>>, WorkflowError> {
        let mut handles: Vec<Option<TaskHandle>> = (0..self.tasks.len()).map(|_| None).collect();
        let index: HashMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
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
        index: &HashMap<&str, usize>,
    ) -> Result<TaskSpec, WorkflowError> {
        let t = &self.tasks[i];
        let file = |url: &str| self.file(url).map_err(|e| self.err(i, e));
        let mut spec = TaskSpec::command(&t.name, &t.command)
            .executor(&t.executor)
            .retries(t.retries);
        if let Some(secs) = t.timeout_secs {
            spec = spec.timeout(std::time::Duration::from_secs_f64(secs));
        }
        for input in &t.inputs {
            spec = spec.input(match input {
                InputDef::Url(url) => Input::File(file(url)?),
                InputDef::Output { task, output } => {
                    let producer = handles[index[task.as_str()]]
                        .as_ref()
                        .expect("check() ordered producers first");
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

    /// The files of task `i` for a dry run: inputs (producers' outputs included), then
    /// outputs, stdout, stderr.
    pub fn files(&self, i: usize) -> Result<(Vec<File>, Vec<File>), WorkflowError> {
        let t = &self.tasks[i];
        let file = |url: &str| self.file(url).map_err(|e| self.err(i, e));
        let mut ins = Vec::new();
        for input in &t.inputs {
            ins.push(match input {
                InputDef::Url(url) => file(url)?,
                InputDef::Output { task, output } => {
                    let producer = self
                        .tasks
                        .iter()
                        .find(|p| &p.name == task)
                        .expect("check() verified the name");
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

/// Kahn's algorithm; on a cycle, returns the tasks of one cycle in order.
fn topological_order(deps: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = deps.len();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            consumers[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).rev().collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &c in &consumers[i] {
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
        at = *deps[at]
            .iter()
            .find(|&&d| waiting[d] > 0)
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
    fn producers_come_first_and_relative_paths_resolve_against_the_workflow() {
        let w = wf("[[task]]\nname = \"b\"\ncommand = \"cat {inputs[0]}\"\ninputs = [{ task = \"a\" }]\n[[task]]\nname = \"a\"\ncommand = \"echo > {outputs[0]}\"\noutputs = [\"out/a.txt\"]\n");
        assert_eq!(w.check(&["local"]).unwrap(), vec![1, 0]);
        assert_eq!(w.file("out/a.txt").unwrap().path(), "/w/out/a.txt");
        assert_eq!(w.file("http://h/x").unwrap().path(), "/x");
        assert_eq!(w.file("file:///abs").unwrap().path(), "/abs");
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
