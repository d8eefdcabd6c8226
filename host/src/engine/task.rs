//! What a user submits (`TaskSpec`, `Input`, `Body`) and what they get back
//! (`TaskHandle`, `DataFuture`, reports).

use std::path::PathBuf;
use std::sync::Arc;

use stagehost_plugin_api::File;
use tokio::sync::watch;

/// The files a closure body sees: the `filepath()` of each staged copy.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TaskFiles {
    /// The executor's working directory.
    pub working_dir: PathBuf,
    /// Inputs, in order.
    pub inputs: Vec<PathBuf>,
    /// Other file arguments, in order.
    pub args: Vec<PathBuf>,
    /// Outputs, in order.
    pub outputs: Vec<PathBuf>,
    /// Where stdout goes, if it is a file.
    pub stdout: Option<PathBuf>,
    /// Where stderr goes, if it is a file.
    pub stderr: Option<PathBuf>,
}

/// A closure body; it may run again on retry.
pub type TaskFn = Arc<dyn Fn(&TaskFiles) -> Result<(), String> + Send + Sync>;

/// What a task runs.
#[derive(Clone)]
pub enum Body {
    /// A shell command, run with `sh -c` in the executor's working directory;
    /// `{inputs[i]}`, `{outputs[i]}`, `{stdout}` and `{stderr}` expand to the
    /// shell-quoted paths.
    Command(String),
    /// A Rust closure, run on a blocking thread.
    Closure(TaskFn),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Command(c) => f.debug_tuple("Command").field(c).finish(),
            Body::Closure(_) => f.write_str("Closure"),
        }
    }
}

/// A task input: a file, or another task's output.
#[derive(Clone, Debug)]
pub enum Input {
    /// A file named by URL.
    File(File),
    /// Another task's output; the task waits for it to be staged out.
    Future(DataFuture),
    /// A directory the host expanded (`stagehost_core::tree`): nothing is staged for it
    /// itself; the task sees `path`, and its files come as [`Input::Placed`] arguments
    /// below it. `Err` when it could not be listed: the task fails at planning with it.
    Directory {
        /// The directory's URL.
        file: File,
        /// Where its files land, or why it could not be listed.
        path: Result<PathBuf, stagehost_core::inspect::InspectError>,
    },
    /// One file with several sources, tried in order until one stages
    /// (`stagehost_core::mirrors`), to the destination the first one's name gives.
    Mirrors {
        /// The sources, in the order they are tried; never empty.
        sources: Vec<File>,
    },
    /// A file staged to a destination the host chose (a file of a directory).
    Placed {
        /// The file's URL.
        file: File,
        /// Where it lands.
        destination: PathBuf,
    },
}

impl Input {
    /// The file the input names.
    pub fn file(&self) -> &File {
        match self {
            Input::File(f) => f,
            Input::Future(d) => d.file(),
            Input::Directory { file, .. } | Input::Placed { file, .. } => file,
            Input::Mirrors { sources } => &sources[0],
        }
    }
}

impl From<File> for Input {
    fn from(f: File) -> Input {
        Input::File(f)
    }
}

impl From<DataFuture> for Input {
    fn from(d: DataFuture) -> Input {
        Input::Future(d)
    }
}

impl From<&DataFuture> for Input {
    fn from(d: &DataFuture) -> Input {
        Input::Future(d.clone())
    }
}

/// A task to submit.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// A name for reports and errors.
    pub name: String,
    /// The executor label.
    pub executor: String,
    /// What it runs.
    pub body: Body,
    /// Inputs, staged in this order.
    pub inputs: Vec<Input>,
    /// Other file arguments, staged after the inputs (Parsl stages a File passed as
    /// an ordinary argument after `inputs`).
    pub args: Vec<Input>,
    /// Outputs, staged out in this order, then stdout, then stderr.
    pub outputs: Vec<File>,
    /// Standard output as a file.
    pub stdout: Option<File>,
    /// Standard error as a file.
    pub stderr: Option<File>,
    /// How often the body (with its in-task steps) is run again after a failure.
    pub retries: u32,
    /// How long a command body may run before its process group is killed.
    pub timeout: Option<std::time::Duration>,
    /// Asked once the inputs are staged in, before the body: `Ok` skips the body and
    /// the stage-outs (the outputs are current), `Err` says why the task runs.
    pub skip_if: Option<SkipCheck>,
}

/// A check of a task's staged inputs (their reports, in stage-in order) that decides
/// whether its body may be skipped: `Ok` when it may, else why not.
#[derive(Clone)]
pub struct SkipCheck(pub Arc<SkipFn>);

/// The function inside a [`SkipCheck`].
pub type SkipFn = dyn Fn(&[FileReport]) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for SkipCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkipCheck")
    }
}

impl TaskSpec {
    fn new(name: impl Into<String>, body: Body) -> TaskSpec {
        TaskSpec {
            name: name.into(),
            executor: crate::config::DEFAULT_EXECUTOR.to_owned(),
            body,
            inputs: Vec::new(),
            args: Vec::new(),
            outputs: Vec::new(),
            stdout: None,
            stderr: None,
            retries: 0,
            timeout: None,
            skip_if: None,
        }
    }
    /// A task running a shell command.
    pub fn command(name: impl Into<String>, command: impl Into<String>) -> TaskSpec {
        TaskSpec::new(name, Body::Command(command.into()))
    }
    /// A task running a closure.
    pub fn closure(
        name: impl Into<String>,
        body: impl Fn(&TaskFiles) -> Result<(), String> + Send + Sync + 'static,
    ) -> TaskSpec {
        TaskSpec::new(name, Body::Closure(Arc::new(body)))
    }
    /// Sets the executor.
    pub fn executor(mut self, label: impl Into<String>) -> TaskSpec {
        self.executor = label.into();
        self
    }
    /// Adds an input.
    pub fn input(mut self, input: impl Into<Input>) -> TaskSpec {
        self.inputs.push(input.into());
        self
    }
    /// Adds a file argument, staged in after every input.
    pub fn arg(mut self, input: impl Into<Input>) -> TaskSpec {
        self.args.push(input.into());
        self
    }
    /// Inputs, then file arguments: the stage-in order.
    pub fn staged_ins(&self) -> impl Iterator<Item = &Input> {
        self.inputs.iter().chain(&self.args)
    }
    /// Adds an output.
    pub fn output(mut self, file: File) -> TaskSpec {
        self.outputs.push(file);
        self
    }
    /// Sends stdout to a file.
    pub fn stdout(mut self, file: File) -> TaskSpec {
        self.stdout = Some(file);
        self
    }
    /// Sends stderr to a file.
    pub fn stderr(mut self, file: File) -> TaskSpec {
        self.stderr = Some(file);
        self
    }
    /// Sets the retries.
    pub fn retries(mut self, retries: u32) -> TaskSpec {
        self.retries = retries;
        self
    }
    /// Skips the body and the stage-outs when `check` passes on the staged inputs.
    pub fn skip_if(mut self, check: SkipCheck) -> TaskSpec {
        self.skip_if = Some(check);
        self
    }
    /// Limits how long a command body runs: past it, its process group is killed
    /// (SIGTERM, then SIGKILL) and the attempt fails.
    pub fn timeout(mut self, limit: std::time::Duration) -> TaskSpec {
        self.timeout = Some(limit);
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) enum FutureState {
    Pending,
    Ready,
    Failed(Arc<str>),
}

/// One output of a task: resolves once that output is staged out. Passing it as
/// another task's input makes that task wait for it.
#[derive(Clone)]
pub struct DataFuture {
    file: File,
    producer: Arc<str>,
    state: watch::Receiver<FutureState>,
}

impl std::fmt::Debug for DataFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataFuture")
            .field("file", &self.file)
            .field("producer", &self.producer)
            .finish()
    }
}

impl DataFuture {
    pub(crate) fn new(file: File, producer: Arc<str>) -> (DataFuture, watch::Sender<FutureState>) {
        let (tx, rx) = watch::channel(FutureState::Pending);
        (
            DataFuture {
                file: file.clean_copy(),
                producer,
                state: rx,
            },
            tx,
        )
    }
    /// The output's file, as the producer named it (no `local_path`).
    pub fn file(&self) -> &File {
        &self.file
    }
    /// The producing task's name.
    pub fn producer(&self) -> &str {
        &self.producer
    }
    /// Whether the output is already staged out (without waiting).
    pub fn is_ready(&self) -> bool {
        matches!(*self.state.borrow(), FutureState::Ready)
    }

    /// Waits for the output: `Ok` once it is staged out, `Err` with the reason if it
    /// never will be.
    pub async fn wait(&self) -> Result<(), String> {
        let mut rx = self.state.clone();
        let state = rx
            .wait_for(|s| !matches!(s, FutureState::Pending))
            .await
            .map(|s| s.clone())
            .unwrap_or(FutureState::Failed(
                "the engine stopped before producing it".into(),
            ));
        match state {
            FutureState::Ready => Ok(()),
            FutureState::Failed(e) => Err(e.to_string()),
            FutureState::Pending => unreachable!("wait_for returns a settled state"),
        }
    }
}

pub use crate::report::{FileReport, TaskReport, TaskStatus};

/// A submitted task.
pub struct TaskHandle {
    /// Task name.
    pub name: String,
    /// One data future per output.
    pub outputs: Vec<DataFuture>,
    /// Standard output, if it is a file.
    pub stdout: Option<DataFuture>,
    /// Standard error, if it is a file.
    pub stderr: Option<DataFuture>,
    pub(crate) report: watch::Receiver<Option<Arc<TaskReport>>>,
}

impl TaskHandle {
    /// Output `i`, to pass to another task.
    pub fn output(&self, i: usize) -> Option<DataFuture> {
        self.outputs.get(i).cloned()
    }
    /// Waits for the task and its stage-outs to end.
    pub async fn wait(&self) -> Arc<TaskReport> {
        let mut rx = self.report.clone();
        let report = rx
            .wait_for(Option::is_some)
            .await
            .expect("the engine sends every task's report before dropping its sender");
        report.clone().expect("wait_for(is_some) returned")
    }
}
