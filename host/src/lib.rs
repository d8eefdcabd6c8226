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
//! - [`services`] is the host side of each plugin call (log, progress, cancellation).
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

pub mod config;
pub mod data_manager;
pub mod discovery;
pub mod engine;
pub mod loader;
pub mod registry;
pub mod services;
pub mod workflow;

pub use config::{Config, ConfigError};
pub use data_manager::{
    DataManager, Direction, ProviderFailure, StageOptions, Staging, StagingError, WorkMode,
};
pub use loader::{LoadedPlugin, PluginLoader};
pub use registry::{ProviderInstance, Registry};
pub use services::{CancelFlag, ProgressSink};
pub use stagehost_plugin_api::File;
