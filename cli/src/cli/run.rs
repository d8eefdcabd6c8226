//! `stagehost run WORKFLOW.toml`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use stagehost::engine::{Engine, EngineOptions, TaskReport};
use stagehost::report::{Document, FailureClass, Summary, TaskStatus};
use stagehost::workflow::Workflow;
use stagehost::{Config, ConfigError, DataManager, Direction, File, Registry, StageOptions};

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow file: [[task]] tables
    #[arg(value_name = "WORKFLOW")]
    workflow: PathBuf,
    /// Write a JSON report (tasks, files, providers, bytes, times, errors); `-` for stdout
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    report: Option<PathBuf>,
    /// Print which provider would stage every file, and how; move nothing. With
    /// --resume, say which tasks would run and why
    #[arg(long)]
    dry_run: bool,
    /// Skip each task whose command, executor, inputs and outputs are as its last
    /// successful run left them (from the journal in .stagehost/journal/ beside the
    /// workflow); run the rest and everything downstream of them
    #[arg(long)]
    resume: bool,
    /// With --resume: run task NAME (and so everything downstream of it) whatever its
    /// record says; repeatable
    #[arg(long, value_name = "NAME", requires = "resume")]
    rerun: Vec<String>,
    /// With --resume: ask each remote input's server about it alone (a conditional
    /// request each), instead of one listing per directory where its provider lists
    #[arg(long, requires = "resume")]
    no_bulk_checks: bool,
    /// Keep no run journal for this run (a later --resume then runs what it would have
    /// recorded)
    #[arg(long, conflicts_with = "resume")]
    no_journal: bool,
    /// Transfers at once, over all hosts (overrides [transfers] max_concurrent)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=stagehost::config::MAX_TRANSFERS as i64))]
    max_transfers: Option<u32>,
    /// No per-transfer lines or bars; only the summary and errors
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(config: &Config, registry: &Registry, args: RunArgs) -> Result<ExitCode, CliError> {
    let workflow =
        Workflow::load(&args.workflow).map_err(|e| CliError::Config(ConfigError(e.0)))?;
    let labels: Vec<&str> = registry
        .executors
        .iter()
        .map(|e| e.label.as_str())
        .collect();
    let order = workflow
        .check(&labels)
        .map_err(|e| CliError::Config(ConfigError(e.0)))?;
    let history = if args.resume {
        let path = stagehost::journal::path_beside(&workflow.path);
        match stagehost::resume::History::read(&path) {
            Ok(mut h) => {
                for name in &args.rerun {
                    if !workflow.tasks.iter().any(|t| &t.name == name) {
                        return Err(CliError::Config(ConfigError(format!(
                            "--rerun {name:?}: {} has no task of that name",
                            workflow.path.display()
                        ))));
                    }
                    h.rerun(name);
                }
                Some(h)
            }
            Err(e) => {
                return Err(CliError::Config(ConfigError(format!(
                    "--resume: cannot read the run journal {}: {e}",
                    stagehost_plugin_api::display::path(&path)
                ))))
            }
        }
    } else {
        None
    };
    if args.dry_run {
        return match &history {
            Some(h) => {
                // What a plain dry run or the run itself would refuse, first.
                preflight(registry, &workflow, &order)?;
                dry_run_resume(h, &workflow, &order)
            }
            None => dry_run(registry, &workflow, &order),
        };
    }
    // A file no provider of its task's executor claims (an unknown scheme, a
    // provider missing from the order) is found now, not when its task comes up.
    preflight(registry, &workflow, &order)?;
    // A report that cannot be written is a usage error found now, not after the run.
    let report_dir = match args.report.as_ref() {
        // (A process started with stdout closed finds /dev/null there: Rust's runtime
        // puts it on descriptors 0 to 2 before `main`, so no file ever takes them.)
        Some(path) if path.as_os_str() == "-" => None,
        Some(path) => Some(super::output::check(
            "--report",
            path,
            &super::output::REPORT,
            |p| a_file_of_the_run(p, &workflow, config, registry),
        )?),
        None => None,
    };
    let mut transfers = config.transfers.clone();
    if let Some(n) = args.max_transfers {
        transfers.max_concurrent = n as usize;
    }
    // A bulk check asks as many servers at once as transfers may run.
    let parallel = transfers.max_concurrent;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    let start = Instant::now();
    let workflow_name = workflow.path.display().to_string();
    let quiet = args.quiet;
    let tasks = workflow.tasks.len();
    // The workers of pilot executors (`slurm`, `processes`) read the same config file.
    let config_file = match &config.source {
        stagehost::config::ConfigSource::File { path, .. } => {
            Some(std::path::absolute(path).unwrap_or_else(|_| path.clone()))
        }
        _ => None,
    };
    // The run journal beside the workflow (.stagehost/journal/): each task's record as
    // it ends. One that cannot be opened costs a warning, never the run.
    let opened = if args.no_journal {
        None
    } else {
        Some(stagehost::journal::Journal::open_beside(&workflow.path))
    };
    let journal = match opened {
        None => None,
        Some(opened) => match opened {
            Ok(j) => {
                j.run_started(&workflow.path, args.resume);
                Some(j)
            }
            // Another run of this workflow: refused, as its outputs are this run's.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(CliError::Config(ConfigError(format!(
                    "{}: {e}",
                    stagehost_plugin_api::display::path(&workflow.path)
                ))));
            }
            Err(e) => {
                tracing::warn!(
                    "cannot open the run journal beside {}: {e}; the run goes on without it",
                    stagehost_plugin_api::display::path(&workflow.path)
                );
                None
            }
        },
    };
    let progress = super::progress::observer(quiet);
    let observer: Arc<dyn stagehost::engine::Observer> = match journal {
        Some(j) => Arc::new(
            stagehost::journal::Journaling::new(
                progress,
                j,
                registry
                    .executors
                    .iter()
                    .map(|e| (e.label.clone(), e.working_dir.clone())),
            )
            .hashing(
                workflow
                    .tasks
                    .iter()
                    .filter(|t| t.checksum.is_some())
                    .map(|t| t.name.as_str()),
            ),
        ),
        None => progress,
    };
    // What the run keeps of each task as it ends: its counts, its failures' classes
    // and, for `--report`, its report on disk.
    let collected = Arc::new(std::sync::Mutex::new(Collected {
        summary: Summary {
            tasks: Some(Default::default()),
            ..Summary::default()
        },
        failures: Vec::new(),
        spool: args
            .report
            .as_ref()
            .map(|_| stagehost::report::Spool::new(report_dir.as_deref())),
        error: None,
    }));
    let sink: stagehost::engine::ReportSink = {
        let collected = collected.clone();
        Arc::new(move |seq, report: &Arc<TaskReport>| {
            collected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .add(seq, report);
        })
    };
    let order = rt.block_on(async move {
        observer.tasks_expected(tasks);
        let display = observer.clone();
        let engine = Engine::new(
            registry,
            EngineOptions {
                transfers,
                observer,
                config_file,
                report_sink: Some(sink),
            },
        )
        .map_err(|e| CliError::Staging(e.to_string()))?;
        // Every local file the workflow names holds its path from the start, so a
        // file staged from elsewhere with the same name lands beside it, whichever
        // task is planned first.
        hold_local_files(&engine, &workflow);
        let canceller = engine.clone();
        super::on_ctrl_c(move || canceller.cancel());
        drop(order);
        // Each task is submitted once its producers have finished; the parsed tables go
        // as their tasks are submitted.
        let checked = match &history {
            Some(h) if !args.no_bulk_checks => {
                Some(bulk_check(&engine, workflow.remote_inputs(h), parallel).await)
            }
            _ => None,
        };
        let submitted = workflow
            .submit_resuming(&engine, history.as_ref(), checked.as_ref())
            .await
            .map_err(|e| CliError::Config(ConfigError(e.0)))?;
        engine.wait_all().await;
        // The bars leave the screen before anything else is written: the summary
        // starts a line of its own.
        display.run_finished();
        // The run is over: nothing a command left behind outlives it, and no Slurm
        // block it submitted stays queued or running.
        engine.kill_leftovers();
        let ender = engine.clone();
        let _ = tokio::task::spawn_blocking(move || ender.shutdown()).await;
        // The workflow file's order, by the order of submission.
        let mut order = vec![0; submitted.len()];
        for (seq, &i) in submitted.iter().enumerate() {
            order[i] = seq;
        }
        Ok::<_, CliError>(order)
    })?;
    let collected = std::mem::take(
        &mut *collected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mut summary = collected.summary;
    summary.seconds = start.elapsed().as_secs_f64();
    let s = &summary;
    let t = s.tasks.clone().unwrap_or_default();
    let cached = if s.files_cached > 0 {
        format!(", {} already current", s.files_cached)
    } else {
        String::new()
    };
    let skipped = if args.resume {
        format!(", {} skipped (unchanged)", t.skipped)
    } else {
        String::new()
    };
    let line = format!(
        "{} task(s): {} succeeded{skipped}, {} failed, {} stage-out failed, {} lost an input, {} cancelled; {} file(s) moved, {} bytes{cached}, {:.3}s",
        t.tasks, t.succeeded, t.failed, t.stage_out_failed, t.dependency_failed, t.cancelled, s.files_moved, s.bytes_moved, s.seconds
    );
    // The run's outcome is told whatever becomes of its report.
    let written = match (collected.error, &args.report, collected.spool) {
        (Some(e), Some(path), _) => Err(super::output::WriteError::Other(format!(
            "cannot write the report {}: {e}",
            path.display()
        ))),
        (None, Some(path), Some(spool)) => {
            let header = Document {
                version: stagehost::report::VERSION,
                command: "run",
                workflow: Some(workflow_name),
                summary: summary.clone(),
                tasks: None,
                files: None,
            };
            super::output::write(
                path,
                "report",
                |out| spool.write_document(&header, order, out),
                true,
            )
        }
        _ => Ok(()),
    };
    match written {
        Ok(()) => {}
        Err(super::output::WriteError::Closed) => {
            // The reader of `--report -` went away (`| head`): quietly, as a shell
            // shows a SIGPIPE death.
            eprintln!("stagehost: {line}");
            std::process::exit(141);
        }
        Err(super::output::WriteError::Other(e)) => {
            eprintln!("stagehost: {line}");
            return Err(CliError::Staging(e));
        }
    }
    if t.succeeded + t.skipped == t.tasks {
        eprintln!("stagehost: {line}");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Failed {
            line,
            code: FailureClass::exit_code_of(collected.failures),
        })
    }
}

/// What a run keeps of its tasks as they end.
#[derive(Default)]
struct Collected {
    summary: Summary,
    /// The classes of the failed tasks' failures (see [`Collected::add`]).
    failures: Vec<Option<FailureClass>>,
    /// The reports, for `--report`.
    spool: Option<stagehost::report::Spool>,
    /// The first error writing the spool.
    error: Option<std::io::Error>,
}

impl Collected {
    fn add(&mut self, seq: usize, report: &TaskReport) {
        self.summary.add_task(report);
        // The class the failed tasks' failures share: their failed files' classes, or
        // none for a task that failed otherwise (its command); a task that lost an
        // input failed because another did.
        if matches!(
            report.status,
            TaskStatus::Failed | TaskStatus::StageOutFailed
        ) {
            let before = self.failures.len();
            self.failures.extend(
                report
                    .files
                    .iter()
                    .filter(|f| f.error.is_some())
                    .map(|f| f.error_class),
            );
            if self.failures.len() == before {
                self.failures.push(None);
            }
            // Only whether they share one class matters: two kept are enough.
            self.failures.dedup();
            self.failures.truncate(2);
        }
        if let Some(spool) = &mut self.spool {
            if let Err(e) = spool.push(seq, report) {
                self.error.get_or_insert(e);
            }
        }
    }
}

/// What `path` is to the run, when the run reads or writes it: the workflow, the
/// config, stagehost's own state (`.stagehost/`: the journal, staged copies), a local
/// file a task reads or writes (an input, an output, stdout, stderr), a file that
/// holds one (an archive a `zip:` URL names), or the place in its executor's working
/// directory where a file of a task lands.
fn a_file_of_the_run(
    path: &std::path::Path,
    workflow: &Workflow,
    config: &Config,
    registry: &Registry,
) -> Option<String> {
    use super::output::same_file;
    use std::path::Path;
    let absolute = std::path::absolute(path).ok()?;
    // Resolved once; another path is resolved only when its file name matches (a
    // workflow may name 100,000 files).
    let resolved = super::output::resolve(path);
    let same = |other: &Path| same_file(&absolute, resolved.as_deref(), other);
    if same(&workflow.path) {
        return Some("the workflow file".into());
    }
    if let stagehost::config::ConfigSource::File { path: config, .. } = &config.source {
        if same(config) {
            return Some("the config file of this run".into());
        }
    }
    let own_state = |p: &Path| p.components().any(|c| c.as_os_str() == ".stagehost");
    if own_state(&absolute) || resolved.as_deref().is_some_and(own_state) {
        return Some("stagehost's own state (.stagehost/)".into());
    }
    let working_dir = |label: &str| {
        registry
            .executors
            .iter()
            .find(|x| x.label == label)
            .map(|x| x.working_dir.as_path())
    };
    for (i, t) in workflow.tasks.iter().enumerate() {
        // Every source of an input with mirrors: any of them may be the one read.
        let inputs = sources(t);
        let written = t
            .outputs
            .iter()
            .map(|u| ("an output", u))
            .chain(t.stdout.iter().map(|u| ("the stdout file", u)))
            .chain(t.stderr.iter().map(|u| ("the stderr file", u)));
        for (what, url) in inputs.map(|u| ("an input", u)).chain(written) {
            let Ok(file) = workflow.file(url) else {
                continue;
            };
            let of_task = |before: &str, after: &str| {
                Some(format!(
                    "{before}{what} of task {:?} ({}){after}",
                    t.name,
                    workflow.location(i)
                ))
            };
            // A URL without a host names a local path: the file itself (`file`), or,
            // through one of its parents, the archive that holds it (`zip:`).
            if matches!(file.netloc(), "" | "localhost") {
                let local = Path::new(file.path());
                if stagehost::data_manager::names_local_file(&file) && same(local) {
                    return of_task("", "");
                }
                if local
                    .ancestors()
                    .skip(1)
                    .any(|a| !a.as_os_str().is_empty() && same(a))
                {
                    return of_task("the file that holds ", "");
                }
                // Inside a local directory a task reads or writes (`dir/`).
                if stagehost::data_manager::names_local_file(&file) && url.ends_with('/') {
                    let within = |d: Option<PathBuf>| {
                        d.is_some_and(|d| {
                            absolute.starts_with(&d)
                                || resolved.as_deref().is_some_and(|r| r.starts_with(&d))
                        })
                    };
                    if within(std::path::absolute(local).ok())
                        || within(super::output::resolve(local))
                    {
                        return of_task("inside the directory of ", "");
                    }
                }
            }
            // Where a file that moves lands: `<working_dir>/<its name>` (a local file
            // is used where it is).
            let local = stagehost::data_manager::names_local_file(&file);
            let lands = working_dir(&t.executor)
                .filter(|_| !local)
                .map(|wd| wd.join(stagehost::data_manager::landing_name(file.filename())));
            if lands.is_some_and(|l| same(&l)) {
                return of_task("where ", " lands");
            }
        }
    }
    None
}

/// The URLs a task's inputs are read from that no task writes: each input's URL, and
/// every source of an input with mirrors.
fn sources(t: &stagehost::workflow::TaskDef) -> impl Iterator<Item = &String> {
    t.inputs.iter().flat_map(|input| match input {
        stagehost::workflow::InputDef::Url(url) => std::slice::from_ref(url),
        stagehost::workflow::InputDef::Mirrors(urls) => urls.as_slice(),
        stagehost::workflow::InputDef::Output { .. } => &[],
    })
}

/// Holds, in the engine's data manager, the path of every local file (the `file`
/// scheme, no host, not a directory) the workflow's tasks read or write.
fn hold_local_files(engine: &Engine, workflow: &Workflow) {
    let dm = engine.data_manager();
    for t in &workflow.tasks {
        for url in sources(t)
            .chain(&t.outputs)
            .chain(&t.stdout)
            .chain(&t.stderr)
            .filter(|u| !u.ends_with('/'))
        {
            let Ok(file) = workflow.file(url) else {
                continue;
            };
            if stagehost::data_manager::names_local_file(&file) {
                dm.hold_in_place(std::path::Path::new(file.path()));
            }
        }
    }
}

/// Task `i`'s files, its inputs (stage-in) then its outputs (stage-out).
fn task_files(
    workflow: &Workflow,
    i: usize,
    index: &stagehost::workflow::NameIndex<'_>,
) -> Result<Vec<(Direction, stagehost::File)>, CliError> {
    let (ins, outs) = workflow
        .files(i, index)
        .map_err(|e| CliError::Config(ConfigError(e.0)))?;
    Ok(ins
        .into_iter()
        .map(|f| (Direction::In, f))
        .chain(outs.into_iter().map(|f| (Direction::Out, f)))
        .collect())
}

/// Asks each task's executor, as planning will, which provider claims each of its
/// files; the first file none claims is a workflow error, with the schemes that
/// executor's providers serve.
fn preflight(registry: &Registry, workflow: &Workflow, order: &[usize]) -> Result<(), CliError> {
    let dm = DataManager::new(registry);
    let index = workflow.name_index();
    let written = written_by_tasks(workflow, order);
    // A local input that does not exist and that no task writes fails before any task
    // runs (as make stops on a missing prerequisite), not as its command's error; an
    // unclaimed file anywhere in the workflow is told first (a usage error). The first
    // such input is kept while the rest are checked for a provider.
    let mut missing: Option<CliError> = None;
    // Inputs found in place, by URL: a reference file every task reads is looked at
    // once. Bounded: cleared when full, so a workflow of distinct inputs keeps no set
    // of them all.
    let mut present: std::collections::HashSet<String> = std::collections::HashSet::new();
    const PRESENT_KEPT: usize = 4096;
    for &i in order {
        let task = &workflow.tasks[i];
        // Every source of a file with mirrors must be one a provider claims.
        let sources: Vec<stagehost::File> = task
            .inputs
            .iter()
            .filter_map(|input| match input {
                stagehost::workflow::InputDef::Mirrors(urls) => Some(urls),
                _ => None,
            })
            .flatten()
            .filter_map(|url| workflow.file(url).ok())
            .collect();
        let files = task_files(workflow, i, &index)?;
        for (direction, file) in files
            .iter()
            .map(|(d, f)| (*d, f))
            .chain(sources.iter().map(|f| (Direction::In, f)))
        {
            let chosen = match direction {
                Direction::In => dm.choose_stage_in_provider(&task.executor, file),
                Direction::Out => dm.choose_stage_out_provider(&task.executor, file),
            };
            if let Err(e @ stagehost::StagingError::NoProvider { .. }) = chosen {
                return Err(CliError::Config(ConfigError(format!(
                    "{}: task {:?}: {e}; the providers of executor {:?} serve: {}",
                    workflow.location(i),
                    task.name,
                    task.executor,
                    served_schemes(registry, &task.executor)
                ))));
            }
        }
        if missing.is_some() {
            continue;
        }
        for (n, (direction, file)) in files.iter().enumerate() {
            if *direction != Direction::In {
                continue;
            }
            // A missing local source of a file with mirrors is one the next replaces.
            if matches!(
                task.inputs.get(n),
                Some(stagehost::workflow::InputDef::Mirrors(urls)) if urls.len() > 1
            ) {
                continue;
            }
            if present.contains(file.url()) {
                continue;
            }
            match local_input_problem(&dm, &task.executor, file, &written) {
                Some((class, why)) => {
                    missing = Some(CliError::Failed {
                        line: format!(
                            "{}: task {:?}: the local input {} {why}",
                            workflow.location(i),
                            task.name,
                            file.redacted_url()
                        ),
                        code: class.exit_code(),
                    });
                    break;
                }
                None => {
                    if present.len() == PRESENT_KEPT {
                        present.clear();
                    }
                    present.insert(file.url().to_owned());
                }
            }
        }
    }
    missing.map_or(Ok(()), Err)
}

/// The schemes the providers of `executor`'s order claim, for an error that names a
/// scheme none of them serves.
pub(super) fn served_schemes(registry: &Registry, executor: &str) -> String {
    let mut schemes: Vec<&str> = registry
        .executors
        .iter()
        .filter(|x| x.label == executor)
        .flat_map(|x| x.order.iter())
        .filter_map(|name| registry.instances.iter().find(|r| &r.name == name))
        .filter_map(|r| r.status.as_ref().ok())
        .flat_map(|p| p.served_schemes())
        .collect();
    schemes.sort_unstable();
    schemes.dedup();
    if schemes.is_empty() {
        "nothing".to_owned()
    } else {
        schemes.join(", ")
    }
}

/// The URLs the workflow's tasks write: such an input need not exist before the run.
fn written_by_tasks(workflow: &Workflow, order: &[usize]) -> std::collections::HashSet<String> {
    let mut written = std::collections::HashSet::new();
    for &i in order {
        let t = &workflow.tasks[i];
        // A URL that does not parse is told, with its task, where its task's files are.
        for url in t.outputs.iter().chain(&t.stdout).chain(&t.stderr) {
            if let Ok(file) = workflow.file(url) {
                written.insert(file.url().to_owned());
            }
        }
    }
    written
}

/// What is wrong with a local input (the file scheme, no host) that no task writes
/// and that the executor's provider uses in place: it is not there, or it cannot be
/// reached; its class and the words that say so. A provider that moves the file
/// (a copy; rsync, for which a `file` URL names a file on another host) reports its
/// own error when it runs.
fn local_input_problem(
    dm: &DataManager,
    executor: &str,
    file: &stagehost::File,
    written: &std::collections::HashSet<String>,
) -> Option<(FailureClass, String)> {
    if written.contains(file.url()) {
        return None;
    }
    let path = stagehost::journal::local_path_of(file.url())?;
    let e = std::fs::metadata(path).err()?;
    // Planned only for a file that is not there, so the check costs nothing otherwise.
    let planned = dm
        .plan_stage_in(executor, file, &StageOptions::default())
        .ok()?;
    if !planned.modes().is_empty() {
        return None;
    }
    Some(match e.kind() {
        std::io::ErrorKind::NotFound => (
            FailureClass::NotFound,
            "does not exist, and no task of the workflow writes it".to_owned(),
        ),
        std::io::ErrorKind::PermissionDenied => {
            (FailureClass::Permission, format!("cannot be reached: {e}"))
        }
        _ => (FailureClass::Other, format!("cannot be read: {e}")),
    })
}

fn dry_run(
    registry: &Registry,
    workflow: &Workflow,
    order: &[usize],
) -> Result<ExitCode, CliError> {
    let dm = DataManager::new(registry);
    let opts = StageOptions::default();
    let mut problems: Vec<Option<FailureClass>> = Vec::new();
    let mut unclaimed = false;
    let index = workflow.name_index();
    let written = written_by_tasks(workflow, order);
    for &i in order {
        let task = &workflow.tasks[i];
        let pilot = registry
            .executors
            .iter()
            .find(|e| e.label == task.executor && e.pilot.is_some());
        if let Some(e) = pilot {
            let kind = e.kind.as_str();
            println!(
                "task {} (executor {}, {kind}: the body runs in a worker of its blocks):",
                task.name, task.executor
            );
        } else {
            println!("task {} (executor {}):", task.name, task.executor);
        }
        for (direction, file) in &task_files(workflow, i, &index)? {
            let (direction, file) = (*direction, file);
            let word = if direction == Direction::In {
                "in "
            } else {
                "out"
            };
            // A directory: listed (a request to its server; nothing moves), then each
            // file as it would be staged below where the directory lands.
            if direction == Direction::In
                && written.contains(file.url())
                && stagehost::tree::is_directory_output(file)
            {
                // Another task's directory output: listed once that task wrote it.
                match dm.directory_destination(&task.executor, file, None) {
                    Ok(root) => println!(
                        "  {word} {} -> {}/ [a directory another task writes: listed once it is staged out]",
                        file.redacted_url(),
                        root.display()
                    ),
                    Err(e) => {
                        problems.push(Some(e.class()));
                        println!("  {word} {}: {e}", file.redacted_url());
                    }
                }
                continue;
            }
            if direction == Direction::In && dm.names_directory(&task.executor, file) {
                let listed = dm
                    .directory_destination(&task.executor, file, None)
                    .and_then(|root| Ok((root, dm.expand_directory(&task.executor, file, &opts)?)));
                match listed {
                    Ok((root, tree)) => {
                        println!(
                            "  {word} {} -> {}/ [a directory: {} file(s)]",
                            file.redacted_url(),
                            root.display(),
                            tree.len()
                        );
                        for t in tree {
                            let placed = StageOptions {
                                destination: Some(root.join(&t.relative)),
                                ..StageOptions::default()
                            };
                            match dm.plan_stage_in(&task.executor, &t.file, &placed) {
                                Ok(s) => println!(
                                    "    {word} {} -> {} [provider {}, {}]",
                                    t.file.redacted_url(),
                                    root.join(&t.relative).display(),
                                    s.provider.name,
                                    how(&s, pilot.is_some())
                                ),
                                Err(e) => {
                                    problems.push(Some(e.class()));
                                    println!("    {word} {}: {e}", t.file.redacted_url());
                                }
                            }
                        }
                    }
                    Err(e) => {
                        problems.push(Some(e.class()));
                        println!("  {word} {}: {e}", file.redacted_url());
                    }
                }
                continue;
            }
            // A directory output: its files are known once the task wrote them.
            if direction == Direction::Out && stagehost::tree::is_directory_output(file) {
                let chosen = dm
                    .directory_destination(&task.executor, file, None)
                    .map_err(|e| e.to_string())
                    .and_then(|root| {
                        let p = dm
                            .choose_stage_out_provider(&task.executor, file)
                            .map_err(|e| e.to_string())?;
                        Ok((root, p.name.clone()))
                    });
                match chosen {
                    Ok((root, provider)) => println!(
                        "  {word} {}/ -> {} [a directory: each file the task writes below it, provider {provider}]",
                        root.display(),
                        file.redacted_url()
                    ),
                    Err(e) => {
                        problems.push(None);
                        println!("  {word} {}: {e}", file.redacted_url());
                    }
                }
                continue;
            }
            let planned = match direction {
                Direction::In => dm.plan_stage_in(&task.executor, file, &opts),
                Direction::Out => dm.plan_stage_out(&task.executor, file, &opts),
            };
            let problem = (direction == Direction::In)
                .then(|| local_input_problem(&dm, &task.executor, file, &written))
                .flatten();
            match planned {
                Ok(_) if problem.is_some() => {
                    let (class, why) = problem.expect("checked just above");
                    problems.push(Some(class));
                    println!("  {word} {}: the local input {why}", file.redacted_url());
                }
                Ok(s) => {
                    let how = how(&s, pilot.is_some());
                    let local = s
                        .file
                        .filepath()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "-".into());
                    // The arrow shows which way the bytes go, as `stage` prints it.
                    let url = file.redacted_url();
                    let (from, to) = match direction {
                        Direction::In => (url.as_str(), local.as_str()),
                        Direction::Out => (local.as_str(), url.as_str()),
                    };
                    println!(
                        "  {word} {from} -> {to} [provider {}, {how}]",
                        s.provider.name
                    );
                }
                Err(e) => {
                    // A file no provider claims is a workflow error, exit 2, as `run`
                    // finds it before anything runs.
                    if matches!(e, stagehost::StagingError::NoProvider { .. }) {
                        unclaimed = true;
                    }
                    problems.push(Some(e.class()));
                    println!("  {word} {}: {e}", file.redacted_url());
                }
            }
        }
    }
    if !problems.is_empty() {
        Err(CliError::Failed {
            line: format!("dry run: {} file(s) cannot be staged", problems.len()),
            code: if unclaimed {
                2
            } else {
                FailureClass::exit_code_of(problems)
            },
        })
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// How a planned staging's work runs, in the dry run's words (on a pilot executor,
/// which side runs it).
fn how(s: &stagehost::Staging, pilot: bool) -> String {
    let modes: Vec<String> = s
        .modes()
        .iter()
        .map(|m| match (pilot, m) {
            (false, m) => m.as_str().to_owned(),
            (true, stagehost::WorkMode::SeparateJob) => {
                "separate job on the submit side".to_owned()
            }
            (true, stagehost::WorkMode::InTaskStep) => "in-task step on the node".to_owned(),
        })
        .collect();
    if modes.is_empty() {
        "nothing to do".to_owned()
    } else {
        modes.join(" + ")
    }
}

/// `--resume`'s bulk check of the remote inputs (see `stagehost::bulk`), on blocking
/// threads, `parallel` requests at once; one info line says what it cost.
async fn bulk_check(
    engine: &Engine,
    inputs: std::collections::HashMap<String, Vec<File>>,
    parallel: usize,
) -> stagehost::bulk::BulkAnswers {
    let dm = engine.data_manager().clone();
    let started = std::time::Instant::now();
    let n: usize = inputs.values().map(Vec::len).sum();
    let answers = tokio::task::spawn_blocking(move || {
        let mut all = stagehost::bulk::BulkAnswers::default();
        for (executor, files) in inputs {
            let part = dm.bulk_stat(&executor, &files, &Default::default(), parallel);
            all.listings += part.listings;
            all.stats += part.stats;
            all.answers.extend(part.answers);
        }
        all
    })
    .await
    .unwrap_or_default();
    if n > 0 {
        tracing::info!(
            "checked {n} remote input(s) in {:.2}s: {} listing(s), {} single request(s)",
            started.elapsed().as_secs_f64(),
            answers.listings,
            answers.stats
        );
    }
    answers
}

/// `--dry-run --resume`: each task, in the order it would run, with whether it would
/// be skipped and, if it would run, why.
fn dry_run_resume(
    history: &stagehost::resume::History,
    workflow: &Workflow,
    order: &[usize],
) -> Result<ExitCode, CliError> {
    use stagehost::resume::Verdict;
    let index = workflow.name_index();
    // Each task that would run: its consumers run too.
    let mut runs = vec![false; workflow.tasks.len()];
    let (mut run, mut skip, mut ask) = (0usize, 0usize, 0usize);
    for &i in order {
        let task = &workflow.tasks[i];
        let producer_runs = task.inputs.iter().find_map(|input| match input {
            stagehost::workflow::InputDef::Output { task: p, .. } if runs[index.of(p)] => {
                Some(p.as_str())
            }
            _ => None,
        });
        let (ins, outs) = workflow
            .files(i, &index)
            .map_err(|e| CliError::Config(ConfigError(e.0)))?;
        let urls = |files: Vec<stagehost::File>| -> Vec<String> {
            files.iter().map(stagehost::File::redacted_url).collect()
        };
        // Its own reasons first, as the run gives them; then its producers'.
        let verdict = match history.verdict(
            &task.name,
            &task.executor,
            &task.command,
            &urls(ins),
            &urls(outs),
        ) {
            Verdict::Changed(why) => Verdict::Changed(why),
            unchanged => match producer_runs {
                Some(p) => Verdict::Changed(format!("its input comes from task {p:?}, which runs")),
                None => unchanged,
            },
        };
        match verdict {
            Verdict::Unchanged => {
                skip += 1;
                println!("skip {}: unchanged", task.name);
            }
            Verdict::Revalidate(inputs) => {
                ask += 1;
                let names: Vec<String> = inputs
                    .iter()
                    .map(|(k, recorded)| {
                        let url = history
                            .last(&task.name)
                            .and_then(|r| r.inputs.get(*k))
                            .map_or("?", |f| f.url.as_str());
                        if recorded.validator.is_some() {
                            url.to_owned()
                        } else {
                            format!("{url} (no validator recorded: it will be fetched again)")
                        }
                    })
                    .collect();
                println!(
                    "ask  {}: unchanged here; skipped unless its server says {} changed",
                    task.name,
                    names.join(", ")
                );
            }
            Verdict::Changed(why) => {
                run += 1;
                runs[i] = true;
                println!("run  {}: {why}", task.name);
            }
        }
    }
    eprintln!(
        "stagehost: dry run: {run} task(s) would run, {skip} would be skipped, {ask} depend on their servers"
    );
    Ok(ExitCode::SUCCESS)
}
