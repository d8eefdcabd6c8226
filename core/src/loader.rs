//! Opening a plugin library: the pre-open checks, `dlopen` of the checked descriptor,
//! the plugin-api version check and the metadata.
//!
//! Invariants:
//! - every library goes through [`crate::discovery::check_before_open`] first, and the
//!   descriptor those checks read is the one `dlopen` maps (`/proc/self/fd/N` on
//!   Linux): a file swapped after the checks is never loaded;
//! - libraries load with `RTLD_NOW | RTLD_LOCAL`: a library with an undefined symbol
//!   is refused at load, naming the symbol, instead of failing when first called;
//! - the root module is read from the loaded library and initialised with
//!   `init_root_module`, never `RootModule::load_from_file` (which caches the first
//!   module per type);
//! - a library is opened at most once per process ([`PluginLoader`] caches by
//!   canonical path) and never unloaded, and the descriptor of a mapped library stays
//!   open for the life of the process (so `/proc/self/fd/N` never names two
//!   libraries);
//! - a library that fails the current root-module layout is checked against plugin-api
//!   0.1.0's (`abi::v0_1_0`) before it is refused: the root module and the error
//!   kinds grew once, in 0.1.1, and have been frozen since;
//! - capabilities come from the library's own export symbol, checked (magic number,
//!   module layout, each table the host uses) before anything in it is called; the
//!   host hands the library its own capabilities before it builds any instance, and
//!   refuses a library that requires one the host does not offer;
//! - every failure is one line.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use abi_stable::library::{
    AbiHeaderRef, LibHeader, LibraryError, ROOT_MODULE_LOADER_NAME_WITH_NUL,
};
use sha2::{Digest, Sha256};
use stagehost_plugin_api::abi::capability::{
    CapabilityExport, CapabilityTable, ListV1, PlanningV1, SchemesV1, StatV1, EXPORT_MAGIC,
    EXPORT_SYMBOL_WITH_NUL,
};
use stagehost_plugin_api::abi::{v0_1_0, PluginModRef, ProviderBox, API_VERSION};
use stagehost_plugin_api::StageError;

use crate::discovery::{check_before_open, CheckedFile};

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
    /// The capabilities it offers, as `name/version`, sorted (those this host does not
    /// know included).
    pub capabilities: Vec<String>,
    /// Its `stat` capability, version 1.
    pub stat: Option<&'static StatV1>,
    /// Its `list` capability, version 1.
    pub list: Option<&'static ListV1>,
    /// Its `schemes` capability, version 1.
    pub claimed_schemes: Option<&'static SchemesV1>,
    /// Its `planning` capability, version 1: the planning calls with the file lent.
    pub planning: Option<&'static PlanningV1>,
    /// The descriptor the library was mapped from; never closed.
    file: ManuallyDrop<std::fs::File>,
    sha256: OnceLock<Result<String, String>>,
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

    /// The SHA-256 of the bytes that were loaded (read from the descriptor that was
    /// mapped), lower-case hex. Computed once, on first use.
    pub fn sha256(&self) -> Result<&str, String> {
        self.sha256
            .get_or_init(|| sha256_of(&self.file))
            .as_deref()
            .map_err(Clone::clone)
    }
}

/// The SHA-256 of everything in `file`, read from its start without moving its offset.
fn sha256_of(file: &std::fs::File) -> Result<String, String> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, offset)
            .map_err(|e| format!("cannot read it to hash it: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
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

/// An abi_stable error on one line. Layout mismatches are reported by the caller in
/// its own words (abi_stable's report runs to thousands of lines); any other error is
/// kept whole, its lines joined.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens libraries, once each.
#[derive(Debug, Default)]
pub struct PluginLoader {
    opened: Mutex<HashMap<PathBuf, Result<Arc<LoadedPlugin>, LoadError>>>,
}

impl PluginLoader {
    /// Checks and opens `path`, or returns what happened the first time.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedPlugin>, LoadError> {
        self.load_pinned(path, None)
    }

    /// As [`PluginLoader::load`]; when `sha256` is given, the file's bytes must have
    /// that digest, checked on the open descriptor before anything is mapped.
    pub fn load_pinned(
        &self,
        path: &Path,
        sha256: Option<&str>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let checked = check_before_open(path).map_err(|r| LoadError(r.0))?;
        if let Some(expected) = sha256 {
            let actual = sha256_of(&checked.file).map_err(LoadError)?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(pin_mismatch(expected, &actual));
            }
        }
        self.load_checked(path, checked)
    }

    /// Loads the file `checked` holds open (from [`check_before_open`] on `path`):
    /// whatever `path` names by now, the bytes checked are the bytes loaded.
    pub fn load_checked(
        &self,
        path: &Path,
        checked: CheckedFile,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let mut opened = self
            .opened
            .lock()
            .expect("the loader lock is never poisoned: no code panics under it");
        opened
            .entry(checked.real.clone())
            .or_insert_with(|| open(path, checked).map(Arc::new))
            .clone()
    }
}

/// The refusal of a plugin whose bytes are not the pinned ones.
pub fn pin_mismatch(expected: &str, actual: &str) -> LoadError {
    LoadError(format!(
        "refused: its sha256 is {actual}, the config pins {}",
        expected.to_ascii_lowercase()
    ))
}

/// Maps the checked descriptor with `RTLD_NOW | RTLD_LOCAL` and returns the library's
/// abi_stable header. The library is never unloaded.
/// The library's capability symbol, when it exports one.
type CapabilitySymbol = extern "C" fn() -> CapabilityExport;

fn map(checked: &CheckedFile) -> Result<(&'static LibHeader, Option<CapabilitySymbol>), LoadError> {
    use std::os::fd::AsRawFd;
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", checked.file.as_raw_fd()));
    // Without /proc (macOS), the canonical path the checks resolved is mapped instead.
    let target = if by_fd.exists() {
        by_fd
    } else {
        checked.real.clone()
    };
    let flags = libc::RTLD_NOW | libc::RTLD_LOCAL;
    // SAFETY: loading a library runs its initialisers; the file passed every pre-open
    // check (owner, mode, architecture, root symbol) on this very descriptor.
    let library =
        unsafe { libloading::os::unix::Library::open(Some(&target), flags) }.map_err(|e| {
            let text = e.to_string().replace(&*target.to_string_lossy(), "");
            let text = text.trim_start_matches([':', ' ']);
            LoadError(format!("cannot load: {}", one_line(text)))
        })?;
    // SAFETY: the root-module symbol is a `LibHeader` static exported by
    // `export_provider!` (checked by name before loading); it lives as long as the
    // library, which is never unloaded (forgotten below).
    let header = unsafe {
        library
            .get::<AbiHeaderRef>(ROOT_MODULE_LOADER_NAME_WITH_NUL.as_bytes())
            .map(|symbol| *symbol)
    };
    // SAFETY: a library built with `export_provider!` from plugin-api 0.1.6 on exports
    // this symbol as `CapabilitySymbol`; its result is checked (magic number, layout)
    // before anything in it is used. Older libraries lack it.
    let capabilities = unsafe {
        library
            .get::<CapabilitySymbol>(EXPORT_SYMBOL_WITH_NUL.as_bytes())
            .map(|symbol| *symbol)
            .ok()
    };
    std::mem::forget(library);
    let header = header.map_err(|e| LoadError(format!("cannot find its root module: {e}")))?;
    let header = header.upgrade().map_err(|e| {
        LoadError(format!(
            "cannot read its header: {}",
            one_line(&e.to_string())
        ))
    })?;
    Ok((header, capabilities))
}

fn open(path: &Path, checked: CheckedFile) -> Result<LoadedPlugin, LoadError> {
    let mapped = map(&checked);
    // Once mapped, the descriptor stays open for good (see the invariants).
    let file = ManuallyDrop::new(checked.file);
    let (header, capability_symbol) = mapped?;
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
    let module = match header.init_root_module::<PluginModRef>() {
        Ok(module) => module,
        // Built against plugin-api 0.1.0: fewer root-module fields and error kinds.
        Err(LibraryError::AbiInstability(_))
            if header.ensure_layout::<v0_1_0::PluginModRef>().is_ok() =>
        {
            // SAFETY: the library's root module has 0.1.0's layout (just checked), a
            // prefix of today's: the field it lacks reads as missing through the
            // prefix accessors, and the error kinds it sends are a subset of today's.
            unsafe { header.init_root_module_with_unchecked_layout::<PluginModRef>() }.map_err(
                |e| LoadError(format!("cannot initialise: {}", one_line(&e.to_string()))),
            )?
        }
        Err(LibraryError::AbiInstability(detail)) => {
            // The layout comparison runs to tens of kilobytes: for RUST_LOG=debug only.
            tracing::debug!("{}: {}", path.display(), one_line(&detail.to_string()));
            return Err(LoadError(format!(
                "its ABI does not match plugin-api {API_VERSION} although it claims {built_against}; rebuild it"
            )));
        }
        Err(other) => {
            return Err(LoadError(format!(
                "cannot initialise: {}",
                one_line(&other.to_string())
            )))
        }
    };
    let capabilities = match capability_symbol {
        Some(symbol) => Capabilities::read(symbol)?,
        None => Capabilities::default(),
    };
    let meta = module.metadata();
    // A name is what configs, listings and errors print: letters, digits, `-`, `_`
    // and `.` only, so no name can carry a terminal escape, a line break or TOML.
    let name = meta.name.as_str();
    if !valid_plugin_name(name) {
        return Err(LoadError(format!(
            "its name {:?} is empty or holds characters other than ASCII letters, digits, '-', '_' and '.'",
            stagehost_plugin_api::display::escape(name)
        )));
    }
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
        capabilities: capabilities.names,
        stat: capabilities.stat,
        list: capabilities.list,
        claimed_schemes: capabilities.schemes,
        planning: capabilities.planning,
        file,
        sha256: OnceLock::new(),
        module,
    })
}

/// What a library's capability module offers, checked.
#[derive(Default)]
struct Capabilities {
    names: Vec<String>,
    stat: Option<&'static StatV1>,
    list: Option<&'static ListV1>,
    schemes: Option<&'static SchemesV1>,
    planning: Option<&'static PlanningV1>,
}

impl Capabilities {
    /// Reads and checks the module `symbol` returns, refuses it when it requires a host
    /// capability this host lacks, and hands it the host's capabilities.
    fn read(symbol: CapabilitySymbol) -> Result<Capabilities, LoadError> {
        let export = symbol();
        let symbol_name = EXPORT_SYMBOL_WITH_NUL.trim_end_matches('\0');
        if export.magic != EXPORT_MAGIC || export.layout.is_null() || export.module.is_null() {
            return Err(LoadError(format!(
                "its {symbol_name} symbol is not a capability export (a wrong magic number or a null pointer)"
            )));
        }
        // SAFETY: not null (checked above), and a `'static` from the library, which is
        // never unloaded; the layout is read only by abi_stable's checker.
        let layout = unsafe { &*export.layout };
        abi_stable::abi_stability::abi_checking::check_layout_compatibility(
            <stagehost_plugin_api::abi::capability::CapabilityModule as abi_stable::StableAbi>::LAYOUT,
            layout,
        )
        .map_err(|_| LoadError("its capability module does not have the released layout; rebuild it".into()))?;
        // SAFETY: not null, and its layout was just checked.
        let module: &'static stagehost_plugin_api::abi::capability::CapabilityModule =
            unsafe { &*export.module };
        // Names are printed and compared: only plain ones are accepted.
        if let Some(bad) = module
            .offered
            .iter()
            .map(|c| &c.id)
            .chain(module.requires_host.iter())
            .find(|id| !id.has_valid_name())
        {
            return Err(LoadError(format!(
                "it names a capability \"{}\", which is not 1 to 64 ASCII letters, digits, '-', '_' or '.'",
                stagehost_plugin_api::display::escape(&String::from_utf8_lossy(
                    bad.name.as_rslice().as_slice()
                ))
            )));
        }
        let host = crate::services::host_capabilities();
        let missing: Vec<String> = module
            .requires_host
            .iter()
            .filter(|r| !host.iter().any(|h| h.id == **r))
            .map(|r| r.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(LoadError(format!(
                "it needs the host capabilit{} {}, which this stagehost (plugin-api {API_VERSION}) does not offer; upgrade stagehost",
                if missing.len() == 1 { "y" } else { "ies" },
                missing.join(", ")
            )));
        }
        let offered = module.offered.as_slice();
        let stat = StatV1::find(offered).map_err(LoadError)?;
        let list = ListV1::find(offered).map_err(LoadError)?;
        let schemes = SchemesV1::find(offered).map_err(LoadError)?;
        let planning = PlanningV1::find(offered).map_err(LoadError)?;
        let mut names: Vec<String> = offered.iter().map(|c| c.id.to_string()).collect();
        names.sort();
        names.dedup();
        (module.accept_host)(host.into());
        Ok(Capabilities {
            names,
            stat,
            list,
            schemes,
            planning,
        })
    }
}

/// Whether `name` may name a plugin: not empty; ASCII letters, digits, `-`, `_`, `.`.
fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::{RSlice, RStr};
    use stagehost_plugin_api::abi::capability::{Capability, CapabilityId, CapabilityModule};

    extern "C" fn null_export() -> CapabilityExport {
        CapabilityExport {
            magic: EXPORT_MAGIC,
            layout: std::ptr::null(),
            module: std::ptr::null(),
        }
    }

    extern "C" fn ignore_host(_: RSlice<'static, Capability>) {}

    extern "C" fn badly_named_export() -> CapabilityExport {
        static REQUIRED: [CapabilityId; 1] = [CapabilityId {
            name: RStr::from_str("cached\u{1b}[2J"),
            version: 1,
        }];
        static MODULE: CapabilityModule = CapabilityModule {
            offered: RSlice::from_slice(&[]),
            requires_host: RSlice::from_slice(&REQUIRED),
            accept_host: ignore_host,
        };
        CapabilityExport {
            magic: EXPORT_MAGIC,
            layout: <CapabilityModule as abi_stable::StableAbi>::LAYOUT,
            module: &MODULE,
        }
    }

    #[test]
    fn a_capability_export_with_a_null_pointer_or_a_strange_name_is_refused_in_one_line() {
        let e = Capabilities::read(null_export).err().unwrap();
        assert!(e.0.contains("null pointer"), "{e}");
        let e = Capabilities::read(badly_named_export).err().unwrap();
        assert!(
            e.0.contains("names a capability \"cached\\u{1b}[2J\"") && !e.0.contains('\u{1b}'),
            "{e}"
        );
    }

    #[test]
    fn a_plugin_name_is_plain_ascii() {
        for good in ["file", "object-store", "my_plugin.v2"] {
            assert!(valid_plugin_name(good), "{good}");
        }
        for bad in ["", "a b", "x\ny", "esc\u{1b}[2J", "quo\"te", "caf\u{e9}"] {
            assert!(!valid_plugin_name(bad), "{bad:?}");
        }
    }

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
