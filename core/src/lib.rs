//! stagehost's core: everything a program needs to stage files through stagehost's
//! plugins, without the task engine or the command line. The `stagehost` binary, the
//! task engine (crate `stagehost`), the node worker and the Python package all use it.
//!
//! - [`config`] reads the TOML config (or the embedded default, Parsl's
//!   `default_staging`), every error at its key's line and column ([`spans`]);
//! - [`discovery`] lists the plugin directories and checks files before they are
//!   opened;
//! - [`loader`] opens plugin libraries through the stable ABI of
//!   `stagehost-plugin-api`, once each;
//! - [`registry`] builds provider instances and each executor's order;
//! - [`data_manager`] chooses the provider for each file and plans its staging, with
//!   Parsl's semantics;
//! - [`checksum`] verifies the checksums a URL names;
//! - [`services`] is the host side of each plugin call (log, progress, cancellation);
//! - [`transfer`] and [`runner`] are the one staging runner and its policy (retries,
//!   timeouts, limits, dedup, cancellation, progress events);
//! - [`report`] is the one report schema; [`observer`] hears transfers and tasks;
//! - [`journal`] records each run's tasks beside the workflow, and [`resume`] decides
//!   from it what a `--resume` may skip; [`lineage`] reads back what made a file;
//! - [`listing`] is what `stagehost plugins list` prints.
//!
//! No command-line or terminal crate is a dependency of this one.

pub mod bulk;
pub mod checksum;
pub mod config;
pub mod data_manager;
pub mod discovery;
pub mod inspect;
pub mod journal;
pub mod lineage;
pub mod listing;
pub mod loader;
pub mod mirrors;
pub mod observer;
pub mod registry;
pub mod report;
pub mod resume;
pub mod runner;
pub mod secrets;
pub mod services;
pub mod spans;
pub mod transfer;
pub mod tree;

pub use config::{Config, ConfigError};
pub use data_manager::{
    DataManager, Direction, ProviderFailure, StageOptions, Staging, StagingError, WorkDone,
    WorkMode,
};
pub use loader::{LoadedPlugin, PluginLoader};
pub use registry::{ProviderInstance, Registry};
pub use services::{CancelFlag, ProgressSink};
pub use stagehost_plugin_api::File;
