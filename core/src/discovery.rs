//! Where plugins are looked for, and the checks a file passes before it is opened.
//!
//! Invariant: this module never calls `dlopen`. [`check_before_open`] opens a file
//! once and reads its metadata, headers and symbol table through that descriptor
//! only; a file it refuses is never mapped as code, and the loader maps the very
//! descriptor it checked.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSymbol};
use stagehost_plugin_api::abi::ROOT_MODULE_SYMBOL;

use crate::config::xdg_dir;

/// One directory to search, and why it is on the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDir {
    /// The directory.
    pub path: PathBuf,
    /// Which rule put it there (`plugin_dirs in <config>`, `STAGEHOST_PLUGIN_PATH`,
    /// ...).
    pub origin: String,
    /// Whether the config named it (then a missing directory is worth a warning).
    pub configured: bool,
}

impl PluginDir {
    /// Why a configured directory cannot be searched: missing, or not a directory.
    pub fn problem(&self) -> Option<String> {
        if !self.configured {
            return None;
        }
        match std::fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(format!(
                "plugin_dirs entry {} is not a directory",
                self.path.display()
            )),
            Err(e) => Some(format!(
                "plugin_dirs entry {} cannot be searched: {e}",
                self.path.display()
            )),
        }
    }
}

/// The plugin directories in search order:
/// 1. `plugin_dirs` from the config;
/// 2. `STAGEHOST_PLUGIN_PATH` (`:`-separated);
/// 3. the bundled directory, if the embedding program set one
///    ([`set_bundled_plugin_dir`]);
/// 4. `<exe dir>/plugins`, `<exe dir>/../lib/stagehost/plugins` (an installed tree:
///    the release tarball, a package, `scripts/install`, wherever it is mounted), then
///    `<exe dir>` itself unless that `lib` directory exists (see [`exe_dirs`]); none
///    of them when a bundled directory is set (the executable is not stagehost);
/// 5. `$XDG_DATA_HOME/stagehost/plugins`;
/// 6. `/usr/local/lib/stagehost/plugins`;
/// 7. `/usr/lib/stagehost/plugins`.
///
/// A directory listed twice keeps its first place.
pub fn plugin_dirs(config_dirs: &[PathBuf], config_name: &str) -> Vec<PluginDir> {
    let mut dirs = Vec::new();
    for d in config_dirs {
        dirs.push(PluginDir {
            path: d.clone(),
            origin: format!("plugin_dirs in {config_name}"),
            configured: true,
        });
    }
    if let Some(var) = std::env::var_os("STAGEHOST_PLUGIN_PATH") {
        for d in std::env::split_paths(&var).filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(PluginDir {
                path: d,
                origin: "STAGEHOST_PLUGIN_PATH".into(),
                configured: false,
            });
        }
    }
    if let Some(dir) = BUNDLED.get() {
        dirs.push(PluginDir {
            path: dir.clone(),
            origin: "bundled".into(),
            configured: false,
        });
    }
    // The executable's directories are stagehost's own only when the executable is
    // stagehost: a program that embeds the host (the Python package, whose executable
    // is python) names its bundled directory instead.
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .filter(|_| BUNDLED.get().is_none())
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.extend(exe_dirs(&exe_dir));
    }
    if let Some(data) = xdg_dir("XDG_DATA_HOME", ".local/share") {
        dirs.push(PluginDir {
            path: data.join("stagehost/plugins"),
            origin: "XDG_DATA_HOME".into(),
            configured: false,
        });
    }
    for fixed in [
        "/usr/local/lib/stagehost/plugins",
        "/usr/lib/stagehost/plugins",
    ] {
        dirs.push(PluginDir {
            path: PathBuf::from(fixed),
            origin: "system".into(),
            configured: false,
        });
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(std::fs::canonicalize(&d.path).unwrap_or_else(|_| d.path.clone())));
    dirs
}

/// The directories beside the executable in `exe_dir`: `plugins/`, then
/// `../lib/stagehost/plugins`; `exe_dir` itself only when there is no such `lib`
/// directory, as in a cargo target directory where the plugins are built beside the
/// binary. An installed tree (`/usr/bin` beside `/usr/lib/stagehost/plugins`) never has
/// its `bin` searched: other programs' libraries live there (`/usr/bin/ld.so`).
fn exe_dirs(exe_dir: &Path) -> Vec<PluginDir> {
    let mut dirs = vec![PluginDir {
        path: exe_dir.join("plugins"),
        origin: "<exe dir>/plugins".into(),
        configured: false,
    }];
    let installed = exe_dir
        .parent()
        .map(|prefix| prefix.join("lib/stagehost/plugins"));
    let in_installed_tree = installed.as_deref().is_some_and(Path::is_dir);
    if let Some(path) = installed {
        dirs.push(PluginDir {
            path,
            origin: "<exe dir>/../lib/stagehost/plugins".into(),
            configured: false,
        });
    }
    if !in_installed_tree {
        dirs.push(PluginDir {
            path: exe_dir.to_path_buf(),
            origin: "<exe dir>".into(),
            configured: false,
        });
    }
    dirs
}

static BUNDLED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Names the directory of plugins shipped with a program that embeds the host (the
/// Python package's own `plugins/`), searched after `STAGEHOST_PLUGIN_PATH` and before
/// the executable's directories. Set once per process; returns whether this call set it.
pub fn set_bundled_plugin_dir(dir: PathBuf) -> bool {
    BUNDLED.set(dir).is_ok()
}

/// Whether `path` is named like a plugin: `*.so` or `*.dylib`.
pub fn is_plugin_file_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("so" | "dylib")
    )
}

/// The plugin files in `dir`, sorted by name. A missing directory has none.
pub fn plugin_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_plugin_file_name(p))
        .collect();
    files.sort();
    files
}

/// Why a file was refused before it was loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// A plugin file opened once and checked through that open descriptor: the same
/// descriptor is what the loader maps, so a file swapped between the checks and the
/// load is never loaded.
#[derive(Debug)]
pub struct CheckedFile {
    /// The canonical path (for messages and the loader's cache).
    pub real: PathBuf,
    /// The open file the checks read.
    pub file: std::fs::File,
}

/// The checks made before `dlopen`, in order, on one open descriptor: a regular file;
/// neither it nor its directory group- or world-writable; owned by the current user or
/// root; an object file for this machine's architecture; exporting the root-module
/// symbol.
pub fn check_before_open(path: &Path) -> Result<CheckedFile, Refusal> {
    let real = std::fs::canonicalize(path)
        .map_err(|e| Refusal(format!("cannot resolve the path: {e}")))?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Never follow a link planted after canonicalize; never block on a FIFO.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = options
        .open(&real)
        .map_err(|e| Refusal(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Refusal(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(Refusal("not a regular file".into()));
    }
    check_ownership(&real, &meta, "the file")?;
    // Both the directory it was found in (whoever controls it chose what the name
    // points at) and the one it resolves into: yours or root's, writable by no one else.
    let found_in = path.parent().and_then(|d| std::fs::canonicalize(d).ok());
    for dir in [found_in.as_deref(), real.parent()].into_iter().flatten() {
        let dir_meta = std::fs::metadata(dir)
            .map_err(|e| Refusal(format!("cannot stat its directory: {e}")))?;
        let what = format!("its directory {}", dir.display());
        check_ownership(dir, &dir_meta, &what)?;
    }
    check_object(&file)?;
    Ok(CheckedFile { real, file })
}

#[cfg(unix)]
fn mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    meta.mode()
}

#[cfg(not(unix))]
fn mode(_meta: &std::fs::Metadata) -> u32 {
    0o644
}

fn writable_by_others(meta: &std::fs::Metadata) -> bool {
    mode(meta) & 0o022 != 0
}

/// Refuses a file (`what`: "the file", "the config") that others may write: group- or
/// world-writable, or owned by someone other than the current user or root.
pub fn check_ownership(real: &Path, meta: &std::fs::Metadata, what: &str) -> Result<(), Refusal> {
    if writable_by_others(meta) {
        return Err(Refusal(format!(
            "refused: {what} is group- or world-writable (mode {:o}); run `chmod go-w {}`",
            mode(meta) & 0o7777,
            real.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(Refusal(format!(
                "refused: {what} is owned by uid {}, not by you (uid {me}) or root",
                meta.uid()
            )));
        }
    }
    Ok(())
}

/// This build's architecture, as `object` names it.
fn host_architecture() -> Option<object::Architecture> {
    use object::Architecture as A;
    Some(match std::env::consts::ARCH {
        "x86_64" => A::X86_64,
        "x86" => A::I386,
        "aarch64" => A::Aarch64,
        "arm" => A::Arm,
        "riscv64" => A::Riscv64,
        "powerpc64" => A::PowerPc64,
        "s390x" => A::S390x,
        "loongarch64" => A::LoongArch64,
        _ => return None,
    })
}

fn check_object(file: &std::fs::File) -> Result<(), Refusal> {
    let cache = object::ReadCache::new(file);
    let obj = object::File::parse(&cache)
        .map_err(|_| Refusal("not a shared library (no ELF or Mach-O header)".into()))?;
    if let Some(expected) = host_architecture() {
        if obj.architecture() != expected {
            return Err(Refusal(format!(
                "built for {:?}, this machine is {expected:?}",
                obj.architecture()
            )));
        }
    }
    let exported = |name: &[u8]| {
        name == ROOT_MODULE_SYMBOL.as_bytes()
            || name.strip_prefix(b"_") == Some(ROOT_MODULE_SYMBOL.as_bytes())
    };
    let found = obj
        .dynamic_symbols()
        .any(|s| s.is_definition() && s.name_bytes().is_ok_and(exported))
        || obj
            .exports()
            .is_ok_and(|e| e.iter().any(|x| exported(x.name())));
    if !found {
        return Err(Refusal(
            "not a stagehost plugin: it exports no root module (build it with `export_provider!`)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_so_and_dylib_are_plugin_names() {
        assert!(is_plugin_file_name(Path::new("/x/libfoo.so")));
        assert!(is_plugin_file_name(Path::new("libfoo.dylib")));
        assert!(!is_plugin_file_name(Path::new("libfoo.so.1")));
        assert!(!is_plugin_file_name(Path::new("libfoo.rlib")));
    }

    #[test]
    fn an_installed_trees_bin_directory_is_not_searched() {
        let root = tempfile::tempdir().unwrap();
        let origins = |exe_dir: &Path| -> Vec<(String, PathBuf)> {
            exe_dirs(exe_dir)
                .into_iter()
                .map(|d| (d.origin, d.path))
                .collect()
        };
        // A cargo target directory: the plugins sit beside the binary.
        let build = root.path().join("target/release");
        std::fs::create_dir_all(&build).unwrap();
        assert!(origins(&build).contains(&("<exe dir>".into(), build.clone())));
        // /usr/bin beside /usr/lib/stagehost/plugins: bin holds other programs' files.
        let bin = root.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib/stagehost/plugins")).unwrap();
        let found = origins(&bin);
        assert!(found.iter().all(|(o, _)| o != "<exe dir>"), "{found:?}");
        assert!(found.contains(&(
            "<exe dir>/../lib/stagehost/plugins".into(),
            root.path().join("usr/lib/stagehost/plugins")
        )));
    }

    #[test]
    fn plugin_path_entries_come_after_config_dirs() {
        let dirs = plugin_dirs(&[PathBuf::from("/nonexistent/config-dir")], "site.toml");
        assert_eq!(dirs[0].origin, "plugin_dirs in site.toml");
        assert!(dirs[0]
            .problem()
            .unwrap()
            .starts_with("plugin_dirs entry /nonexistent/config-dir cannot be searched: "));
        assert!(dirs.iter().any(|d| d.origin == "<exe dir>"));
        assert_eq!(
            dirs.last().unwrap().path,
            PathBuf::from("/usr/lib/stagehost/plugins")
        );
    }

    #[test]
    fn text_file_is_refused_before_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libx.so");
        std::fs::write(&p, "not a library\n").unwrap();
        let err = check_before_open(&p).map(|c| c.real).unwrap_err();
        assert_eq!(err.0, "not a shared library (no ELF or Mach-O header)");
    }
}
