//! `stagehost stage in` and `stagehost stage out`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use stagehost::config::{TransferConfig, DEFAULT_EXECUTOR};
use stagehost::engine::{StageOutcome, StageRunner};
use stagehost::report::{Document, FailureClass, FileReport, Summary};
use stagehost::{ConfigError, DataManager, Direction, File, Registry, Staging, StagingError};

use stagehost_plugin_api::display;

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct StageInArgs {
    /// URLs (or paths) to stage in
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Executor whose provider order to use
    #[arg(long, short = 'e', default_value = DEFAULT_EXECUTOR)]
    executor: String,
    /// Where files land (overrides the executor's working_dir)
    #[arg(long, value_name = "DIR")]
    dest: Option<PathBuf>,
    /// Files staged at once
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StageOutArgs {
    /// The local output to publish
    #[arg(value_name = "LOCAL_PATH")]
    local_path: PathBuf,
    /// Where it goes
    #[arg(value_name = "URL")]
    url: String,
    /// Executor whose provider order to use
    #[arg(long, short = 'e', default_value = DEFAULT_EXECUTOR)]
    executor: String,
    /// Remove LOCAL_PATH once the URL holds its bytes (by default it is copied and
    /// left as it is)
    #[arg(long = "move")]
    r#move: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// The report of one file of a `stage` command: the schema `run --report` uses.
fn result(
    url: &str,
    direction: Direction,
    executor: &str,
    outcome: &Result<StageOutcome, StagingError>,
    seconds: f64,
) -> FileReport {
    let mut r = FileReport::new(direction, stagehost_plugin_api::redact_url(url), executor);
    r.seconds = seconds;
    let staging = match outcome {
        Ok(o) => Some(&o.staging),
        Err(_) => None,
    };
    if let (Some(s), Ok(o)) = (staging, outcome) {
        r.url = s.file.redacted_url();
        r.provider = Some(s.provider.name.clone());
        r.plugin = Some(format!(
            "{} {}",
            s.provider.plugin.name, s.provider.plugin.version
        ));
        r.modes = o.modes.clone();
        r.attempts = if o.modes.is_empty() { 0 } else { o.attempts };
        r.local_path = s.file.filepath().ok().map(|p| p.display().to_string());
    }
    match outcome {
        Ok(StageOutcome { result: Err(e), .. }) | Err(e) => {
            r.fail(e);
            if let (None, StagingError::Provider(failure)) = (&r.provider, e) {
                r.provider = Some(failure.instance.clone());
                r.plugin = Some(failure.plugin.clone());
            }
        }
        Ok(o) => {
            let local = o.staging.file.filepath().ok();
            r.attempts = if o.staging.ran.is_empty() {
                0
            } else {
                o.attempts
            };
            r.cached = o.cached;
            r.bytes = o.bytes.or_else(|| {
                local
                    .as_ref()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
            });
            r.local_path = local.map(|p| p.display().to_string());
        }
    }
    r
}

fn print(
    command: &str,
    results: &[FileReport],
    json: bool,
    start: Instant,
) -> Result<ExitCode, CliError> {
    if json {
        let document = Document {
            version: stagehost::report::VERSION,
            command,
            workflow: None,
            summary: Summary::of_files(results.iter(), start.elapsed().as_secs_f64()),
            tasks: None,
            files: Some(results),
        };
        println!("{}", document.to_json());
    } else {
        for r in results {
            match (&r.error, &r.local_path) {
                (Some(e), _) => eprintln!("stagehost: error: {e}"),
                (None, local) => {
                    let mut how = if r.modes.is_empty() {
                        "nothing to do".to_owned()
                    } else {
                        let modes: Vec<&str> = r.modes.iter().map(|m| m.as_str()).collect();
                        modes.join(" + ")
                    };
                    if r.cached {
                        how.push_str(", cached");
                    }
                    let local = local.as_deref().unwrap_or("(no local path)");
                    // The arrow shows which way the bytes went.
                    let (from, to) = match r.direction {
                        Direction::In => (r.url.as_str(), local),
                        Direction::Out => (local, r.url.as_str()),
                    };
                    println!(
                        "{from} -> {to} [provider {}, {how}]",
                        r.provider.as_deref().unwrap_or("?"),
                    );
                }
            }
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        let code =
            FailureClass::exit_code_of(results.iter().filter(|r| !r.ok).map(|r| r.error_class));
        Err(CliError::Failed {
            line: format!("{failed} of {} file(s) failed", results.len()),
            code,
        })
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// One file's planned staging, with when its planning began and a tag of the caller's.
type Planned<T> = (String, Result<(File, Staging), StagingError>, Instant, T);

/// Runs each planned file's work, `jobs` at a time; the reports in the order given,
/// each with its tag.
async fn run_all<T: Send + 'static>(
    runner: &Arc<StageRunner>,
    executor: &str,
    direction: Direction,
    jobs: usize,
    planned: Vec<Planned<T>>,
) -> Vec<(FileReport, T)> {
    let limit = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut handles = Vec::with_capacity(planned.len());
    for (url, planned, start, tag) in planned {
        let (runner, limit, executor) = (runner.clone(), limit.clone(), executor.to_owned());
        handles.push(tokio::spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let outcome = match planned {
                Ok((file, staging)) => Ok(runner.run(staging, &file).await),
                Err(e) => Err(e),
            };
            let report = result(
                &url,
                direction,
                &executor,
                &outcome,
                start.elapsed().as_secs_f64(),
            );
            (report, tag)
        }));
    }
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(h.await.expect("a staging task never panics"));
    }
    results
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime builds on any supported OS")
}

pub fn stage_in(
    registry: &Registry,
    transfers: TransferConfig,
    args: StageInArgs,
) -> Result<ExitCode, CliError> {
    let dest = args
        .dest
        .as_ref()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()));
    let command_start = Instant::now();
    let rt = runtime();
    let results = rt.block_on(async {
        let runner = Arc::new(StageRunner::new(
            registry,
            transfers,
            super::progress::transfer_observer(),
            dest.clone(),
        ));
        check_usage(runner.data_manager(), &args.executor, &args.urls)?;
        check_claimed(
            registry,
            runner.data_manager(),
            &args.executor,
            Direction::In,
            &args.urls,
        )?;
        let canceller = runner.clone();
        super::on_ctrl_c(move || canceller.cancel());
        // Plan in the order given, so destinations are claimed in that order (the first
        // of two URLs with one basename gets the plain name); then run the work
        // concurrently, `--jobs` at a time, under the transfer policy.
        // A directory URL stands for the files below it, each staged as a file.
        let mut wanted: Vec<(String, Result<File, StagingError>, Option<PathBuf>)> = Vec::new();
        for url in &args.urls {
            let file = match File::parse(url) {
                Ok(file) => file,
                Err(e) => {
                    let e = invalid_url(url, &args.executor, Direction::In, e);
                    wanted.push((url.clone(), Err(e), None));
                    continue;
                }
            };
            if !runner.data_manager().names_directory(&args.executor, &file) {
                wanted.push((url.clone(), Ok(file), None));
                continue;
            }
            match expand_in(&runner, &args.executor, &file, dest.as_deref()) {
                Ok(children) => {
                    for (child, destination) in children {
                        wanted.push((child.url().to_owned(), Ok(child), Some(destination)));
                    }
                }
                Err(e) => return Err(super::inspect::failure(&e)),
            }
        }
        let mut planned = Vec::with_capacity(wanted.len());
        for (url, file, destination) in wanted {
            let start = Instant::now();
            let staging = file.and_then(|file| {
                let staging = match destination {
                    Some(to) => runner.plan_to(&args.executor, &file, Direction::In, to)?,
                    None => runner.plan(&args.executor, &file, Direction::In)?,
                };
                Ok((file, staging))
            });
            planned.push((url, staging, start, ()));
        }
        let results: Vec<FileReport> = run_all(
            &runner,
            &args.executor,
            Direction::In,
            usize::from(args.jobs),
            planned,
        )
        .await
        .into_iter()
        .map(|(r, ())| r)
        .collect();
        Ok::<_, CliError>(results)
    })?;
    print("stage in", &results, args.json, command_start)
}

/// The files below directory `dir`, each with its destination below the directory's
/// (under `dest` when given).
fn expand_in(
    runner: &StageRunner,
    executor: &str,
    dir: &File,
    dest: Option<&std::path::Path>,
) -> Result<Vec<(File, PathBuf)>, stagehost::inspect::InspectError> {
    let dm = runner.data_manager();
    let root = dm.directory_destination(executor, dir, dest)?;
    let tree = dm.expand_directory(executor, dir, &Default::default())?;
    Ok(tree
        .into_iter()
        .map(|t| (t.file, root.join(&t.relative)))
        .collect())
}

/// Usage errors (exit 2), before anything is staged: an unknown executor, an empty URL.
fn check_usage(dm: &DataManager, executor: &str, urls: &[String]) -> Result<(), CliError> {
    if !dm.executor_labels().contains(&executor) {
        return Err(CliError::Config(ConfigError(format!(
            "unknown executor {executor:?} (configured: {})",
            dm.executor_labels().join(", ")
        ))));
    }
    if urls.iter().any(String::is_empty) {
        return Err(CliError::Config(ConfigError(
            "an empty URL names no file".to_owned(),
        )));
    }
    Ok(())
}

/// A URL that no provider of the executor claims (an unknown scheme) is a usage error,
/// found before anything moves, as `run` finds it: exit 2, naming the schemes served.
fn check_claimed(
    registry: &Registry,
    dm: &DataManager,
    executor: &str,
    direction: Direction,
    urls: &[String],
) -> Result<(), CliError> {
    for url in urls {
        // A URL that does not parse is reported with its file.
        let Ok(file) = File::parse(url) else {
            continue;
        };
        let chosen = match direction {
            Direction::In => dm.choose_stage_in_provider(executor, &file),
            Direction::Out => dm.choose_stage_out_provider(executor, &file),
        };
        if let Err(e @ StagingError::NoProvider { .. }) = chosen {
            return Err(CliError::Config(ConfigError(format!(
                "{e}; the providers of executor {executor:?} serve: {}",
                super::run::served_schemes(registry, executor)
            ))));
        }
    }
    Ok(())
}

fn invalid_url(
    url: &str,
    executor: &str,
    direction: Direction,
    e: stagehost_plugin_api::StageError,
) -> StagingError {
    StagingError::NoProvider {
        executor: executor.to_owned(),
        url: format!("{} ({e})", stagehost_plugin_api::redact_url(url)),
        direction,
        unavailable: vec![],
    }
}

pub fn stage_out(
    registry: &Registry,
    transfers: TransferConfig,
    args: StageOutArgs,
) -> Result<ExitCode, CliError> {
    let start = Instant::now();
    let shown_url = stagehost_plugin_api::redact_url(&args.url);
    let Some(local) = args.local_path.to_str() else {
        return Err(CliError::Config(ConfigError(format!(
            "cannot stage out {shown_url}: the local path {} is not valid UTF-8; stagehost refuses it rather than alter it",
            display::path(&args.local_path)
        ))));
    };
    let local = std::path::absolute(local).unwrap_or_else(|_| PathBuf::from(local));
    if std::fs::symlink_metadata(&local).is_ok_and(|m| m.is_dir()) {
        return stage_out_directory(registry, transfers, args, &local, start);
    }
    let missing = match std::fs::metadata(&local) {
        Ok(meta) if meta.is_file() => None,
        Ok(_) => Some("is not a regular file"),
        Err(_) => Some("does not exist"),
    };
    if let Some(why) = missing {
        let line = format!(
            "cannot stage out {shown_url}: the local output {} {why}",
            display::path(&local)
        );
        if args.json {
            // The report a script reads says so too.
            let mut r = FileReport::new(Direction::Out, shown_url.clone(), &args.executor);
            (r.ok, r.error) = (false, Some(line));
            r.error_class = Some(FailureClass::NotFound);
            r.local_path = Some(local.display().to_string());
            return print("stage out", &[r], true, start);
        }
        return Err(CliError::Failed {
            line,
            code: FailureClass::NotFound.exit_code(),
        });
    }
    // A URL that names LOCAL itself would publish nothing (and `--move` would remove
    // the only copy).
    if let Ok(target) = File::parse(&args.url) {
        if target.scheme() == "file" && matches!(target.netloc(), "" | "localhost") {
            use std::os::unix::fs::MetadataExt;
            if let (Ok(a), Ok(b)) = (std::fs::metadata(&local), std::fs::metadata(target.path())) {
                if a.dev() == b.dev() && a.ino() == b.ino() {
                    return Err(CliError::Config(ConfigError(format!(
                        "cannot stage out {shown_url}: it is the local file {} itself",
                        display::path(&local)
                    ))));
                }
            }
        }
    }
    let command_start = Instant::now();
    let rt = runtime();
    let r = rt.block_on(async {
        let runner = Arc::new(StageRunner::new(
            registry,
            transfers,
            super::progress::transfer_observer(),
            None,
        ));
        check_usage(
            runner.data_manager(),
            &args.executor,
            std::slice::from_ref(&args.url),
        )?;
        check_claimed(
            registry,
            runner.data_manager(),
            &args.executor,
            Direction::Out,
            std::slice::from_ref(&args.url),
        )?;
        let canceller = runner.clone();
        super::on_ctrl_c(move || canceller.cancel());
        let planned = File::parse(&args.url)
            .map_err(|e| invalid_url(&args.url, &args.executor, Direction::Out, e))
            .and_then(|mut file| {
                // The output exists: the provider publishes it from where it is, and a
                // file the caller names is never removed by a provider (a copy, as
                // curl, rclone and `aws s3 cp` make).
                file.set_local_path(&local);
                let staging = runner.plan(&args.executor, &file, Direction::Out)?;
                Ok((file, staging))
            });
        let outcome = match planned {
            Ok((file, staging)) => Ok(runner.run(staging, &file).await),
            Err(e) => Err(e),
        };
        Ok::<_, CliError>(result(
            &args.url,
            Direction::Out,
            &args.executor,
            &outcome,
            start.elapsed().as_secs_f64(),
        ))
    })?;
    if r.ok && args.r#move {
        // Only once the bytes arrived, as `rclone move` and `mv` do.
        std::fs::remove_file(&local).map_err(|e| {
            CliError::Staging(format!(
                "staged out {shown_url}, but cannot remove {}: {e}",
                display::path(&local)
            ))
        })?;
    }
    print("stage out", &[r], args.json, command_start)
}

/// `stage out LOCAL_DIR URL`: every regular file below LOCAL_DIR to `URL/<relative
/// path>`, each a stage-out of its own (a report entry each), four at a time.
fn stage_out_directory(
    registry: &Registry,
    transfers: TransferConfig,
    args: StageOutArgs,
    local: &std::path::Path,
    start: Instant,
) -> Result<ExitCode, CliError> {
    let dir_url = format!("{}/", args.url.trim_end_matches('/'));
    let dir = File::parse(&dir_url).map_err(|e| {
        CliError::Config(ConfigError(format!(
            "cannot stage out to {}: {}",
            stagehost_plugin_api::redact_url(&args.url),
            e.message()
        )))
    })?;
    let tree = stagehost::tree::local_tree(local, &dir).map_err(|e| {
        let line = format!(
            "cannot stage out {} to {}: {}",
            display::path(local),
            dir.redacted_url(),
            e.message()
        );
        // A tree that cannot be sent as it is: the caller's to fix (2), before
        // anything moves.
        if e.kind() == stagehost_plugin_api::ErrorKind::InvalidUrl {
            CliError::Config(ConfigError(line))
        } else {
            CliError::Failed {
                line,
                code: FailureClass::exit_code_of([Some(FailureClass::of(e.kind()))]),
            }
        }
    })?;
    let rt = runtime();
    let results = rt.block_on(async {
        let runner = Arc::new(StageRunner::new(
            registry,
            transfers,
            super::progress::transfer_observer(),
            None,
        ));
        check_usage(
            runner.data_manager(),
            &args.executor,
            std::slice::from_ref(&dir_url),
        )?;
        check_claimed(
            registry,
            runner.data_manager(),
            &args.executor,
            Direction::Out,
            std::slice::from_ref(&dir_url),
        )?;
        let canceller = runner.clone();
        super::on_ctrl_c(move || canceller.cancel());
        let planned = tree
            .into_iter()
            .map(|(member, path)| {
                let start = Instant::now();
                let staging = runner
                    .plan(&args.executor, &member.file, Direction::Out)
                    .map(|staging| (member.file.clone(), staging));
                (member.file.url().to_owned(), staging, start, path)
            })
            .collect();
        Ok::<_, CliError>(run_all(&runner, &args.executor, Direction::Out, 4, planned).await)
    })?;
    if args.r#move {
        // Each file once its URL holds it, as `rclone move` does; directories stay.
        for (report, path) in &results {
            if report.ok {
                std::fs::remove_file(path).map_err(|e| {
                    CliError::Staging(format!(
                        "staged out {}, but cannot remove {}: {e}",
                        report.url,
                        display::path(path)
                    ))
                })?;
            }
        }
    }
    let reports: Vec<FileReport> = results.into_iter().map(|(r, _)| r).collect();
    print("stage out", &reports, args.json, start)
}
