//! `stagehost worker`: the node side of a pilot executor (`slurm`, `processes`). Started by a block;
//! script; connects back to the run over TLS pinned to the run's certificate, proves
//! the run's secret (and checks the run's proof), and runs the tasks it
//! is sent (their in-task steps planned here, from the same config) until the run
//! tells it to stop or is lost.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use stagehost::engine::{serve_worker, Silent, StageRunner, WorkerKey, WorkerOptions};
use stagehost::{Config, Registry};

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The run's address, HOST:PORT
    #[arg(long)]
    connect: String,
    /// The file holding the run's secret (only its owner may read it)
    #[arg(long)]
    secret_file: PathBuf,
    /// The executor whose tasks this worker runs
    #[arg(long)]
    executor: String,
    /// The block (Slurm job id) this worker belongs to
    #[arg(long, default_value = "manual")]
    block: String,
    /// Tasks run at once (default: the number of CPUs)
    #[arg(long)]
    slots: Option<usize>,
}

pub fn worker(
    config: &Config,
    registry: &Registry,
    args: WorkerArgs,
) -> Result<ExitCode, CliError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&args.secret_file).map_err(|e| {
        CliError::Staging(format!(
            "cannot read the secret file {}: {e}",
            args.secret_file.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(CliError::Staging(format!(
            "the secret file {} is not a regular file",
            args.secret_file.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(CliError::Staging(format!(
            "the secret file {} may be read by others (mode {:o}); it must be private to its owner",
            args.secret_file.display(),
            meta.mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(&args.secret_file).map_err(|e| {
        CliError::Staging(format!(
            "cannot read the secret file {}: {e}",
            args.secret_file.display()
        ))
    })?;
    let key = WorkerKey::parse(&text)
        .map_err(|e| CliError::Staging(format!("{}: {e}", args.secret_file.display())))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    // In-task steps run through the same runner and policy as `stage` and `run`.
    let runner = {
        let _in_runtime = rt.enter();
        Arc::new(StageRunner::new(
            registry,
            config.transfers.clone(),
            Arc::new(Silent),
            None,
        ))
    };
    let labels = runner.data_manager().executor_labels();
    if !labels.contains(&args.executor.as_str()) {
        return Err(CliError::Staging(format!(
            "executor {:?} is not in {} (configured: {})",
            args.executor,
            config.source.name(),
            labels.join(", ")
        )));
    }
    let options = WorkerOptions {
        connect: args.connect,
        key,
        executor: args.executor,
        block: args.block,
        slots: args
            .slots
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let handle = rt.handle().clone();
    match serve_worker(runner, options, handle) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(CliError::Staging(e)),
    }
}
