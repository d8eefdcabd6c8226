//! `stagehost_parsl._native`: stagehost's host for Python.
//!
//! A [`Host`] is one config's registry and data manager, built once per process (the
//! Python side caches it) in the Parsl main process and in each worker. It answers
//! whether an executor's providers can stage a URL, and plans a file's staging into a
//! [`Plan`] whose separate job and in-task step run on the calling thread. Every call
//! that can block (planning, staging, loading plugins) releases the GIL. A stagehost
//! error is raised as `stagehost_parsl.StagingError(message, kind)`, its message the
//! one line the CLI prints, with URLs redacted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, OnceLock};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use stagehost_core::config::{ConfigSource, TransferConfig};
use stagehost_core::observer::Silent;
use stagehost_core::runner::StageRunner;
use stagehost_core::{
    Config, DataManager, PluginLoader, Registry, Staging, StagingError, WorkMode,
};
use stagehost_plugin_api::File;

/// Raises `stagehost_parsl.StagingError(message, kind)`.
fn staging_error(message: String, kind: Option<String>) -> PyErr {
    Python::attach(|py| {
        let made = py
            .import("stagehost_parsl._errors")
            .and_then(|m| m.getattr("StagingError"))
            .and_then(|class| class.call1((message.clone(), kind)));
        match made {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        }
    })
}

fn from_staging(e: StagingError) -> PyErr {
    let kind = e.kind().map(|k| k.to_string());
    staging_error(e.to_string(), kind)
}

fn from_stage(url: &str, e: stagehost_plugin_api::StageError) -> PyErr {
    staging_error(
        format!(
            "{}: {}: {}",
            stagehost_plugin_api::redact_url(url),
            e.kind(),
            e.message()
        ),
        Some(e.kind().to_string()),
    )
}

/// Logs of the host and its plugins go to Python's `logging`, logger `stagehost` (so
/// they reach Parsl's log and whatever handlers the application set), filtered first
/// by `RUST_LOG` when it is set (else everything from `info` up is handed over, and the
/// logger's own level decides).
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(PythonLogging);
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// A `tracing` layer that hands each event to `logging.getLogger("stagehost")`.
struct PythonLogging;

/// An event's message and fields, as one line.
#[derive(Default)]
struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PythonLogging {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut line = Line::default();
        event.record(&mut line);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => 40,
            tracing::Level::WARN => 30,
            tracing::Level::INFO => 20,
            _ => 10,
        };
        // Not while the interpreter is going away: then the line is dropped.
        let _ = Python::try_attach(|py| -> PyResult<()> {
            let logger = py
                .import("logging")?
                .call_method1("getLogger", ("stagehost",))?;
            if logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
                logger.call_method1("log", (level, line.0.as_str()))?;
            }
            Ok(())
        });
    }
}

/// The config a spec names: `("embedded",)`, `("path", PATH)` or
/// `("text", TEXT, BASE_DIR)`.
fn config_of(kind: &str, value: Option<String>, base: Option<String>) -> Result<Config, PyErr> {
    let bad = |e: stagehost_core::ConfigError| staging_error(e.to_string(), Some("config".into()));
    match (kind, value) {
        ("embedded", _) => Ok(Config::embedded()),
        ("path", Some(path)) => Config::locate(Some(&PathBuf::from(path))).map_err(bad),
        ("text", Some(text)) => {
            let base = base.map_or_else(|| PathBuf::from("."), PathBuf::from);
            let source = ConfigSource::Inline {
                name: "<StagehostStaging config>".into(),
                base,
                text: text.clone(),
            };
            Config::parse(&text, source).map_err(bad)
        }
        (other, _) => Err(PyRuntimeError::new_err(format!(
            "unknown config spec kind {other:?}"
        ))),
    }
}

/// `url` as stagehost shows URLs anywhere: passwords, tokens used as user names and
/// credential-bearing query parameters as `***`, control characters escaped.
#[pyfunction]
fn redact_url(url: &str) -> String {
    stagehost_plugin_api::redact_url(url)
}

/// The config stagehost itself would use: the path of the file its search order finds
/// (`STAGEHOST_CONFIG`, `./stagehost.toml`, `$XDG_CONFIG_HOME/stagehost/config.toml`,
/// `/etc/stagehost/config.toml`), absolute, or `None` for the embedded default.
#[pyfunction]
fn locate_config(py: Python<'_>) -> PyResult<Option<String>> {
    let config = py
        .detach(|| Config::locate(None))
        .map_err(|e| staging_error(e.to_string(), Some("config".into())))?;
    Ok(match config.source {
        ConfigSource::File { path, .. } => Some(
            std::path::absolute(&path)
                .unwrap_or(path)
                .display()
                .to_string(),
        ),
        _ => None,
    })
}

/// Names the directory of the plugins shipped in the package, searched after
/// `STAGEHOST_PLUGIN_PATH` and before the standard directories. The first call wins.
/// One file's sources with its `sha256` in the fragment of each that names no checksum
/// of its own (`stagehost_core::mirrors::with_checksum`).
#[pyfunction]
#[pyo3(signature = (urls, sha256=None))]
fn mirror_sources(urls: Vec<String>, sha256: Option<String>) -> PyResult<Vec<String>> {
    stagehost_core::mirrors::with_checksum(&urls, sha256.as_deref())
        .map_err(|e| staging_error(e, Some("invalid URL".into())))
}

#[pyfunction]
fn set_bundled_plugin_dir(dir: String) -> bool {
    stagehost_core::discovery::set_bundled_plugin_dir(PathBuf::from(dir))
}

/// The runtime every host's staging runs on (the runner's transfers are async).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stagehost-python")
            .enable_all()
            .build()
            .expect("a tokio runtime builds")
    })
}

/// One config's plugins, provider instances and data manager, and the runners its
/// work goes through (the config's `[transfers]` policy: retries, timeouts, limits),
/// one per working directory Parsl's executors name.
#[pyclass(module = "stagehost_parsl._native", frozen)]
struct Host {
    registry: Arc<Registry>,
    dm: Arc<DataManager>,
    transfers: TransferConfig,
    runners: Mutex<HashMap<Option<PathBuf>, Arc<StageRunner>>>,
}

impl Host {
    /// The runner for `working_dir` (the Parsl executor's, or the config's own).
    fn runner(&self, working_dir: Option<PathBuf>) -> Arc<StageRunner> {
        let mut runners = self.runners.lock().unwrap_or_else(|p| p.into_inner());
        runners
            .entry(working_dir.clone())
            .or_insert_with(|| {
                let _in_runtime = runtime().enter();
                Arc::new(StageRunner::over(
                    self.dm.clone(),
                    self.transfers.clone(),
                    Arc::new(Silent),
                    working_dir,
                ))
            })
            .clone()
    }
}

#[pymethods]
impl Host {
    /// Builds the host for a config spec (see `config_of`): loads the plugins and
    /// makes every instance. Fails only as `stagehost plugins check` would.
    #[new]
    #[pyo3(signature = (kind, value=None, base=None))]
    fn new(
        py: Python<'_>,
        kind: &str,
        value: Option<String>,
        base: Option<String>,
    ) -> PyResult<Host> {
        init_logging();
        let config = config_of(kind, value, base)?;
        let registry = py
            .detach(|| {
                let loader = PluginLoader::default();
                Registry::build(&config, &loader)
            })
            .map_err(|e| staging_error(e.to_string(), Some("config".into())))?;
        registry.log_problems(&config);
        let dm = DataManager::new(&registry);
        Ok(Host {
            registry: Arc::new(registry),
            dm: Arc::new(dm),
            transfers: config.transfers.clone(),
            runners: Mutex::new(HashMap::new()),
        })
    }

    /// The executor labels of the config, sorted.
    fn executors(&self) -> Vec<String> {
        self.dm
            .executor_labels()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Whether a provider of `executor`'s order claims `url` for `direction` (`"in"`
    /// or `"out"`): the name of the first that does, or `None`. A provider that fails
    /// while asked raises, as Parsl's providers do.
    fn choose(
        &self,
        py: Python<'_>,
        direction: &str,
        executor: &str,
        url: &str,
    ) -> PyResult<Option<String>> {
        let file = File::parse(url).map_err(|e| from_stage(url, e))?;
        let outbound = direction_is_out(direction)?;
        let dm = self.dm.clone();
        let chosen = py.detach(|| {
            let chosen = if outbound {
                dm.choose_stage_out_provider(executor, &file)
            } else {
                dm.choose_stage_in_provider(executor, &file)
            };
            chosen.map(|p| p.name.clone())
        });
        match chosen {
            Ok(name) => Ok(Some(name)),
            Err(StagingError::NoProvider { .. }) => Ok(None),
            Err(e) => Err(from_staging(e)),
        }
    }

    /// Plans the staging of `url` on `executor`: the provider's `stage_in` and
    /// `replace_task` (or the stage-out pair) on a fresh copy of the file, whose
    /// `local_path` is preset when `local_path` is given (a worker re-planning what
    /// the main process planned).
    #[pyo3(signature = (direction, executor, url, local_path=None, working_dir=None, placed=false))]
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        py: Python<'_>,
        direction: &str,
        executor: &str,
        url: &str,
        local_path: Option<String>,
        working_dir: Option<String>,
        placed: bool,
    ) -> PyResult<Plan> {
        let mut file = File::parse(url).map_err(|e| from_stage(url, e))?;
        if let Some(path) = local_path {
            file.set_local_path(PathBuf::from(path));
        }
        let outbound = direction_is_out(direction)?;
        // The Parsl executor's working_dir, when it has one, as Parsl's own providers
        // use it (and a retry plans again there).
        let runner = self.runner(working_dir.map(PathBuf::from));
        let direction = if outbound {
            stagehost_core::Direction::Out
        } else {
            stagehost_core::Direction::In
        };
        let staging = py
            .detach(|| runner.plan_from(executor, &file, direction, placed))
            .map_err(from_staging)?;
        let local_path = staging.file.local_path().map(|p| p.display().to_string());
        let modes = staging
            .modes()
            .into_iter()
            .map(|m| m.as_str().to_owned())
            .collect();
        let placed = staging.placed;
        Ok(Plan {
            placed,
            staging: Mutex::new(Some(staging)),
            original: file,
            runner,
            local_path,
            modes,
            url: stagehost_plugin_api::redact_url(url),
        })
    }

    /// Where a file whose sources are mirrors lands on `executor`: the first source's
    /// name under the working directory (`working_dir`, else the executor's), claimed
    /// for the whole list of sources.
    #[pyo3(signature = (executor, urls, working_dir=None))]
    fn mirror_destination(
        &self,
        executor: &str,
        urls: Vec<String>,
        working_dir: Option<String>,
    ) -> PyResult<String> {
        let sources = urls
            .iter()
            .map(|u| File::parse(u).map_err(|e| from_stage(u, e)))
            .collect::<PyResult<Vec<File>>>()?;
        let runner = self.runner(working_dir.clone().map(PathBuf::from));
        runner
            .data_manager()
            .mirror_destination(executor, &sources, working_dir.as_deref().map(Path::new))
            .map(|p| p.display().to_string())
            .map_err(from_staging)
    }

    /// Stages the first of `urls` (one file's sources, tried in order: see
    /// `stagehost_core::mirrors`) that can be staged in to `destination`; returns the
    /// URL (redacted) of the source used. Raises `StagingError` naming every source
    /// when none could be.
    #[pyo3(signature = (executor, urls, destination, working_dir=None))]
    fn stage_in_mirrors(
        &self,
        py: Python<'_>,
        executor: &str,
        urls: Vec<String>,
        destination: String,
        working_dir: Option<String>,
    ) -> PyResult<String> {
        if urls.is_empty() {
            return Err(staging_error(
                "a file with mirrors needs at least one source".into(),
                Some("invalid URL".into()),
            ));
        }
        let sources = urls
            .iter()
            .map(|u| File::parse(u).map_err(|e| from_stage(u, e)))
            .collect::<PyResult<Vec<File>>>()?;
        let runner = self.runner(working_dir.map(PathBuf::from));
        let executor = executor.to_owned();
        py.detach(move || {
            let outcome = runtime().block_on(runner.stage_in_mirrors(
                &executor,
                &sources,
                PathBuf::from(destination),
            ));
            match &outcome.used {
                Some((used, _)) => {
                    if !outcome.failures.is_empty() {
                        tracing::warn!(
                            "{} staged from source {} of {}, after: {}",
                            sources[0].redacted_url(),
                            used + 1,
                            sources.len(),
                            outcome.failures_line()
                        );
                    }
                    Ok(sources[*used].redacted_url())
                }
                None => Err(staging_error(
                    outcome.error_line(),
                    outcome
                        .failures
                        .last()
                        .and_then(|(_, e)| e.kind())
                        .map(|k| k.to_string()),
                )),
            }
        })
    }

    /// What `stagehost plugins list` prints for this config.
    fn plugins_text(&self) -> String {
        stagehost_core::listing::render_text(&self.registry)
    }

    /// What `stagehost plugins list --json` prints for this config.
    fn plugins_json(&self, py: Python<'_>) -> String {
        let registry = self.registry.clone();
        py.detach(|| stagehost_core::listing::render_json(&registry))
    }
}

fn direction_is_out(direction: &str) -> PyResult<bool> {
    match direction {
        "in" => Ok(false),
        "out" => Ok(true),
        other => Err(PyRuntimeError::new_err(format!(
            "direction must be \"in\" or \"out\", not {other:?}"
        ))),
    }
}

/// One file's planned staging: where the task sees the file, and the work left (a
/// separate job, an in-task step), each run once on the calling thread.
#[pyclass(module = "stagehost_parsl._native", frozen)]
struct Plan {
    staging: Mutex<Option<Staging>>,
    /// The file as planned (the URL, and a preset local path): what a retry plans
    /// again from.
    original: File,
    /// What runs its work, under the config's `[transfers]` policy.
    runner: Arc<StageRunner>,
    /// Where the task sees the file, if the provider set it.
    #[pyo3(get)]
    local_path: Option<String>,
    /// `"separate job"` and/or `"in-task step"`, in the order they run.
    #[pyo3(get)]
    modes: Vec<String>,
    /// The file lands at the host's own destination (what a worker re-planning it
    /// passes back as `placed`, so that what lands there is stagehost's own).
    #[pyo3(get)]
    placed: bool,
    /// The file's URL as outputs may show it (credentials as `***`).
    #[pyo3(get)]
    url: String,
}

impl Plan {
    fn run(&self, py: Python<'_>, mode: WorkMode) -> PyResult<bool> {
        let taken = {
            let mut slot = self.staging.lock().unwrap_or_else(|p| p.into_inner());
            slot.take()
        };
        let Some(mut staging) = taken else {
            return Err(PyRuntimeError::new_err(format!(
                "the staging of {} is already running or done",
                self.url
            )));
        };
        let (runner, original) = (self.runner.clone(), &self.original);
        let (outcome, staging) = py.detach(move || {
            // Only the work asked for runs now; the other waits for its own call.
            let other = match mode {
                WorkMode::SeparateJob => staging.in_task_step.take(),
                WorkMode::InTaskStep => staging.separate_job.take(),
            };
            let outcome = runtime().block_on(runner.run(staging, original));
            let mut staging = outcome.staging;
            match mode {
                WorkMode::SeparateJob => staging.in_task_step = other,
                WorkMode::InTaskStep => staging.separate_job = other,
            }
            (outcome.result.map(|()| outcome.cached), staging)
        });
        *self.staging.lock().unwrap_or_else(|p| p.into_inner()) = Some(staging);
        outcome.map_err(from_staging)
    }
}

#[pymethods]
impl Plan {
    /// Whether there is a separate job to run.
    #[getter]
    fn has_separate_job(&self) -> bool {
        self.modes
            .iter()
            .any(|m| m == WorkMode::SeparateJob.as_str())
    }

    /// Whether there is an in-task step to run.
    #[getter]
    fn has_in_task_step(&self) -> bool {
        self.modes
            .iter()
            .any(|m| m == WorkMode::InTaskStep.as_str())
    }

    /// Runs the separate job (if any), blocking with the GIL released; whether the
    /// destination already held the file (`cached`).
    fn run_separate_job(&self, py: Python<'_>) -> PyResult<bool> {
        self.run(py, WorkMode::SeparateJob)
    }

    /// Runs the in-task step (if any), blocking with the GIL released; whether the
    /// destination already held the file (`cached`).
    fn run_in_task_step(&self, py: Python<'_>) -> PyResult<bool> {
        self.run(py, WorkMode::InTaskStep)
    }

    fn __repr__(&self) -> String {
        format!(
            "<stagehost plan of {} ({})>",
            self.url,
            if self.modes.is_empty() {
                "nothing to run".to_owned()
            } else {
                self.modes.join(", ")
            }
        )
    }
}

/// The Python module `stagehost_parsl._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Host>()?;
    m.add_class::<Plan>()?;
    m.add_function(wrap_pyfunction!(locate_config, m)?)?;
    m.add_function(wrap_pyfunction!(redact_url, m)?)?;
    m.add_function(wrap_pyfunction!(mirror_sources, m)?)?;
    m.add_function(wrap_pyfunction!(set_bundled_plugin_dir, m)?)?;
    m.add("PLUGIN_API_VERSION", stagehost_plugin_api::abi::API_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
