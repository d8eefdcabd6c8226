//! stagehost: Parsl's file-staging model as a plugin host.
//!
//! This crate is the task engine behind the `stagehost` binary (crate
//! `stagehost-cli`), over `stagehost-core`, whose modules it re-exports:
//! - [`engine`] runs tasks whose inputs and outputs are staged, with Parsl's rules
//!   (data futures, separate jobs and in-task steps) and bounds on transfers, on
//!   executors (`local`, and pilots over a scheduler: `slurm`, `processes`);
//! - [`workflow`] reads `stagehost run`'s workflow files;
//! - from `stagehost-core`: [`config`], [`discovery`], [`loader`], [`registry`],
//!   [`data_manager`], [`checksum`], [`services`], [`report`], [`listing`], [`spans`].
//!
//! # A two-task pipeline
//!
//! `examples/two_tasks.rs`: a shell command produces a file; a Rust closure consumes it
//! (a data dependency) and writes its own output. It runs with
//! `STAGEHOST_PLUGIN_PATH=target/debug cargo run -p stagehost --example two_tasks`, and
//! the test suite runs it too.
//!
#![doc = concat!("```no_run\n", include_str!("../examples/two_tasks.rs"), "\n```")]
//!
//! # Staging one file
//!
//! ```no_run
//! use stagehost::{Config, DataManager, PluginLoader, Registry, StageOptions};
//! use stagehost_plugin_api::File;
//!
//! let config = Config::locate(None)?;
//! let loader = PluginLoader::default();
//! let registry = Registry::build(&config, &loader)?;
//! let dm = DataManager::new(&registry);
//! let opts = StageOptions::default();
//! let mut staging = dm.plan_stage_in("local", &File::parse("file:///etc/hostname")?, &opts)?;
//! staging.run_separate_job(&opts)?;
//! staging.run_in_task_step(&opts)?;
//! println!("{}", staging.file.filepath()?.display());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod engine;
pub mod workflow;

pub use stagehost_core::{
    bulk, checksum, config, data_manager, discovery, inspect, journal, lineage, listing, loader,
    observer, registry, report, resume, runner, secrets, services, spans, transfer, tree,
};
pub use stagehost_core::{
    CancelFlag, Config, ConfigError, DataManager, Direction, File, LoadedPlugin, PluginLoader,
    ProgressSink, ProviderFailure, ProviderInstance, Registry, StageOptions, Staging, StagingError,
    WorkDone, WorkMode,
};
