//! The staging interface of stagehost: what a provider plugin implements, and the
//! stable ABI the host loads it through.
//! PLACEHOLDER_DOCS

#![warn(missing_docs)]
// abi_stable 0.11's derives expand trait impls inside consts.
#![allow(non_local_definitions)]

pub mod abi;
mod error;
mod file;
pub mod fs;
mod provider;
mod settings;

pub use error::{ErrorKind, StageError};
pub use file::{redact_url, File};
pub use provider::{Context, Job, LogLevel, Provider};
pub use settings::Settings;
