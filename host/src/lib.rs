//! stagehost: Parsl's file-staging model as a plugin host.
//!
//! This crate is the host library behind the `stagehost` binary:
//! - [`config`] reads the TOML config (or the embedded default, Parsl's
//!   `default_staging`);
//! - [`discovery`] lists the plugin directories and checks files before they are
//!   opened;
//! - [`loader`] opens plugin libraries through the stable ABI of
//!   `stagehost-plugin-api`, once each;
//! - [`registry`] builds provider instances and each executor's order;
//! - [`data_manager`] chooses the provider for each file and plans its staging, with
//!   Parsl's semantics;
//! - [`services`] is the host side of each plugin call (log, progress, cancellation);
//! - [`engine`] runs tasks whose inputs and outputs are staged, with Parsl's rules
//!   (data futures, separate jobs and in-task steps) and bounds on transfers;
//! - [`workflow`] reads `stagehost run`'s workflow files.
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

pub mod checksum;
pub mod config;
pub mod data_manager;
pub mod discovery;
pub mod engine;
pub mod listing;
pub mod loader;
pub mod registry;
pub mod report;
pub mod services;
pub mod spans;
pub mod workflow;

pub use config::{Config, ConfigError};
pub use data_manager::{
    DataManager, Direction, ProviderFailure, StageOptions, Staging, StagingError, WorkDone,
    WorkMode,
};
pub use loader::{LoadedPlugin, PluginLoader};
pub use registry::{ProviderInstance, Registry};
pub use services::{CancelFlag, ProgressSink};
pub use stagehost_plugin_api::File;
