//! `stagehost stage in` and `stagehost stage out`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use stagehost::config::DEFAULT_EXECUTOR;
use stagehost::{
    ConfigError, DataManager, Direction, File, Registry, StageOptions, Staging, StagingError,
    WorkDone,
};

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
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct FileResult {
    url: String,
    direction: Direction,
    executor: String,
    ok: bool,
    local_path: Option<String>,
    provider: Option<String>,
    plugin: Option<String>,
    modes: Vec<&'static str>,
    bytes: Option<u64>,
    /// The destination already held the current file; no bytes moved.
    cached: bool,
    seconds: f64,
    error: Option<String>,
}

fn result(
    url: &str,
    direction: Direction,
    executor: &str,
    outcome: &Result<(Staging, WorkDone), StagingError>,
    seconds: f64,
) -> FileResult {
    match outcome {
        Ok((s, done)) => {
            let local = s.file.filepath().ok();
            FileResult {
                url: s.file.redacted_url(),
                direction,
                executor: executor.to_owned(),
                ok: true,
                bytes: local
                    .as_ref()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len()),
                local_path: local.map(|p| p.display().to_string()),
                provider: Some(s.provider.name.clone()),
                plugin: Some(format!(
                    "{} {}",
                    s.provider.plugin.name, s.provider.plugin.version
                )),
                modes: s.ran.iter().map(|m| m.as_str()).collect(),
                cached: done.cached,
                seconds,
                error: None,
            }
        }
        Err(e) => FileResult {
            url: stagehost_plugin_api::redact_url(url),
            direction,
            executor: executor.to_owned(),
            ok: false,
            local_path: None,
            provider: match e {
                StagingError::Provider(failure) => Some(failure.instance.clone()),
                _ => None,
            },
            plugin: None,
            modes: vec![],
            bytes: None,
            cached: false,
            seconds,
            error: Some(e.to_string()),
        },
    }
}

fn print(results: &[FileResult], json: bool) -> Result<ExitCode, CliError> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(results).expect("results are plain data")
        );
    } else {
        for r in results {
            match (&r.error, &r.local_path) {
                (Some(e), _) => eprintln!("stagehost: error: {e}"),
                (None, local) => {
                    let mut how = if r.modes.is_empty() {
                        "nothing to do".to_owned()
                    } else {
                        r.modes.join(" + ")
                    };
                    if r.cached {
                        how.push_str(", cached");
                    }
                    println!(
                        "{} -> {} [provider {}, {how}]",
                        r.url,
                        local.as_deref().unwrap_or("(no local path)"),
                        r.provider.as_deref().unwrap_or("?"),
                    );
                }
            }
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        Err(CliError::Staging(format!(
            "{failed} of {} file(s) failed",
            results.len()
        )))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime builds on any supported OS")
}

pub fn stage_in(registry: &Registry, args: StageInArgs) -> Result<ExitCode, CliError> {
    let dm = DataManager::new(registry);
    check_usage(&dm, &args.executor, &args.urls)?;
    let opts = StageOptions {
        working_dir: args
            .dest
            .as_ref()
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone())),
        ..StageOptions::default()
    };
    // Plan in the order given, so destinations are claimed in that order (the first of
    // two URLs with one basename gets the plain name); then run the work concurrently.
    let planned: Vec<(String, Instant, Result<Staging, StagingError>)> = args
        .urls
        .iter()
        .map(|url| {
            let start = Instant::now();
            let planned = File::parse(url)
                .map_err(|e| invalid_url(url, &args.executor, Direction::In, e))
                .and_then(|file| dm.plan_stage_in(&args.executor, &file, &opts));
            (url.clone(), start, planned)
        })
        .collect();
    let rt = runtime();
    let results = rt.block_on(async {
        let cancel = opts.cancel.clone();
        super::on_ctrl_c(move || cancel.cancel());
        let limit = Arc::new(tokio::sync::Semaphore::new(usize::from(args.jobs)));
        let mut handles = Vec::new();
        for (url, start, planned) in planned {
            let (opts, limit, executor) = (opts.clone(), limit.clone(), args.executor.clone());
            handles.push(tokio::spawn(async move {
                let _permit = limit
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let outcome = match planned {
                    Ok(mut staging) => tokio::task::spawn_blocking(move || {
                        let job = staging.run_separate_job(&opts)?;
                        let step = staging.run_in_task_step(&opts)?;
                        let cached = job.cached || step.cached;
                        Ok((staging, WorkDone { cached }))
                    })
                    .await
                    .expect(
                        "staging never panics: provider panics are caught at the plugin boundary",
                    ),
                    Err(e) => Err(e),
                };
                result(
                    &url,
                    Direction::In,
                    &executor,
                    &outcome,
                    start.elapsed().as_secs_f64(),
                )
            }));
        }
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.expect("a staging task never panics"));
        }
        results
    });
    print(&results, args.json)
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

pub fn stage_out(registry: &Registry, args: StageOutArgs) -> Result<ExitCode, CliError> {
    let dm = DataManager::new(registry);
    let opts = StageOptions::default();
    let start = Instant::now();
    check_usage(&dm, &args.executor, std::slice::from_ref(&args.url))?;
    let shown_url = stagehost_plugin_api::redact_url(&args.url);
    let Some(local) = args.local_path.to_str() else {
        return Err(CliError::Config(ConfigError(format!(
            "cannot stage out {shown_url}: the local path {} is not valid UTF-8; stagehost refuses it rather than alter it",
            display::path(&args.local_path)
        ))));
    };
    if !args.local_path.exists() {
        return Err(CliError::Staging(format!(
            "cannot stage out {shown_url}: the local output {} does not exist",
            display::path(&args.local_path)
        )));
    }
    let outcome = File::parse(&args.url)
        .map_err(|e| invalid_url(&args.url, &args.executor, Direction::Out, e))
        .and_then(|mut file| {
            // The output already exists: the provider publishes it from where it is.
            file.set_local_path(local);
            let mut staging = dm.plan_stage_out(&args.executor, &file, &opts)?;
            let step = staging.run_in_task_step(&opts)?;
            let job = staging.run_separate_job(&opts)?;
            let cached = job.cached || step.cached;
            Ok((staging, WorkDone { cached }))
        });
    let r = result(
        &args.url,
        Direction::Out,
        &args.executor,
        &outcome,
        start.elapsed().as_secs_f64(),
    );
    print(&[r], args.json)
}
