//! Opening a plugin library: the pre-open checks, `dlopen`, the plugin-api version
//! check and the metadata.
//!
//! Invariants:
//! - every library goes through [`crate::discovery::check_before_open`] first;
//! - libraries load with `lib_header_from_path(..).init_root_module()`, never
//!   `RootModule::load_from_file` (which caches the first module per type);
//! - a library is opened at most once per process ([`PluginLoader`] caches by
//!   canonical path) and never unloaded;
//! - every failure is one line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use abi_stable::library::{lib_header_from_path, LibraryError};
use stagehost_plugin_api::abi::{PluginModRef, ProviderBox, API_VERSION};
use stagehost_plugin_api::StageError;

use crate::discovery::check_before_open;

/// A plugin library that loaded.
pub struct LoadedPlugin {
    /// The file as found (not canonicalised).
    pub path: PathBuf,
    /// The name from its metadata.
    pub name: String,
    /// Its own version.
    pub version: semver::Version,
    /// The plugin-api version it was built against.
    pub api_version: String,
    /// The schemes it serves.
    pub schemes: Vec<String>,
    /// Its one-line description.
    pub description: String,
    /// Settings keys it declares secret (masked wherever settings are shown).
    pub secret_settings: Vec<String>,
    module: PluginModRef,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// Builds a provider instance from settings (TOML text).
    pub fn new_provider(&self, settings: &str) -> Result<ProviderBox, StageError> {
        let construct = self.module.new_provider();
        construct(settings.into())
            .into_result()
            .map_err(StageError::from)
    }
}

/// Why a library did not load, as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// Whether a plugin built against plugin-api `plugin_api` can be loaded by this host:
/// Cargo's caret rule, both ways (same major, and for 0.x the same minor).
pub fn api_compatible(plugin_api: &semver::Version) -> bool {
    let host = semver::Version::parse(API_VERSION).expect("CARGO_PKG_VERSION is semver");
    let caret = if host.major == 0 {
        format!("^0.{}", host.minor)
    } else {
        format!("^{}", host.major)
    };
    let req =
        semver::VersionReq::parse(&caret).expect("a caret requirement on a valid version parses");
    let plugin_base = semver::Version::new(plugin_api.major, plugin_api.minor, plugin_api.patch);
    req.matches(&plugin_base)
}

/// The first line of an abi_stable error: its layout errors run to thousands of lines.
fn first_line(e: &LibraryError) -> String {
    e.to_string()
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Opens libraries, once each.
#[derive(Debug, Default)]
pub struct PluginLoader {
    opened: Mutex<HashMap<PathBuf, Result<Arc<LoadedPlugin>, LoadError>>>,
}

impl PluginLoader {
    /// Checks and opens `path`, or returns what happened the first time.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedPlugin>, LoadError> {
        let real = check_before_open(path).map_err(|r| LoadError(r.0))?;
        let mut opened = self
            .opened
            .lock()
            .expect("the loader lock is never poisoned: no code panics under it");
        opened
            .entry(real.clone())
            .or_insert_with(|| open(path, &real).map(Arc::new))
            .clone()
    }
}

fn open(path: &Path, real: &Path) -> Result<LoadedPlugin, LoadError> {
    let header = lib_header_from_path(real)
        .map_err(|e| LoadError(format!("cannot open: {}", first_line(&e))))?;
    let strings = header.version_strings();
    let built_against = semver::Version::parse(strings.version.as_str()).map_err(|e| {
        LoadError(format!(
            "unreadable plugin-api version {:?}: {e}",
            strings.version
        ))
    })?;
    if !api_compatible(&built_against) {
        return Err(LoadError(format!(
            "built against plugin-api {built_against}, which this host (plugin-api {API_VERSION}) cannot load; rebuild it against plugin-api {API_VERSION}"
        )));
    }
    let module = header.init_root_module::<PluginModRef>().map_err(|e| match e {
        LibraryError::AbiInstability(_) => LoadError(format!(
            "its ABI does not match plugin-api {API_VERSION} although it claims {built_against}; rebuild it"
        )),
        other => LoadError(format!("cannot initialise: {}", first_line(&other))),
    })?;
    let meta = module.metadata();
    let version = semver::Version::parse(meta.version.as_str()).map_err(|e| {
        LoadError(format!(
            "plugin {:?} has an invalid version {:?}: {e}",
            meta.name.as_str(),
            meta.version.as_str()
        ))
    })?;
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        name: meta.name.as_str().to_owned(),
        version,
        api_version: meta.api_version.as_str().to_owned(),
        schemes: meta.schemes.iter().map(|s| s.as_str().to_owned()).collect(),
        description: meta.description.as_str().to_owned(),
        // A plugin built against plugin-api 0.1.0 has no such field: it declares none.
        secret_settings: module
            .secret_settings()
            .map(|keys| keys.iter().map(|k| k.as_str().to_owned()).collect())
            .unwrap_or_default(),
        module,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_rule_for_zero_versions() {
        let host = semver::Version::parse(API_VERSION).unwrap();
        assert!(api_compatible(&host));
        let next_patch = semver::Version::new(host.major, host.minor, host.patch + 3);
        assert!(api_compatible(&next_patch));
        let next_minor = semver::Version::new(host.major, host.minor + 1, 0);
        assert!(!api_compatible(&next_minor));
        let next_major = semver::Version::new(host.major + 1, 0, 0);
        assert!(!api_compatible(&next_major));
    }
}
