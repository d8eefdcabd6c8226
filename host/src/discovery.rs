//! Where plugins are looked for, and the checks a file passes before it is opened.
//!
//! Invariant: this module never calls `dlopen`. [`check_before_open`] reads file
//! metadata and the object file's headers and symbol table only; a file it refuses is
//! never mapped as code.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSymbol};
use stagehost_plugin_api::abi::ROOT_MODULE_SYMBOL;

use crate::config::xdg_dir;

/// One directory to search, and why it is on the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDir {
    /// The directory.
    pub path: PathBuf,
    /// Which rule put it there (`plugin_dirs`, `STAGEHOST_PLUGIN_PATH`, ...).
    pub origin: &'static str,
}

/// The plugin directories in search order:
/// 1. `plugin_dirs` from the config;
/// 2. `STAGEHOST_PLUGIN_PATH` (`:`-separated);
/// 3. `<exe dir>/plugins`, then `<exe dir>`;
/// 4. `$XDG_DATA_HOME/stagehost/plugins`;
/// 5. `/usr/local/lib/stagehost/plugins`;
/// 6. `/usr/lib/stagehost/plugins`.
///
/// A directory listed twice keeps its first place.
pub fn plugin_dirs(config_dirs: &[PathBuf]) -> Vec<PluginDir> {
    let mut dirs = Vec::new();
    for d in config_dirs {
        dirs.push(PluginDir {
            path: d.clone(),
            origin: "plugin_dirs",
        });
    }
    if let Some(var) = std::env::var_os("STAGEHOST_PLUGIN_PATH") {
        for d in std::env::split_paths(&var).filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(PluginDir {
                path: d,
                origin: "STAGEHOST_PLUGIN_PATH",
            });
        }
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(PluginDir {
            path: exe_dir.join("plugins"),
            origin: "<exe dir>/plugins",
        });
        dirs.push(PluginDir {
            path: exe_dir,
            origin: "<exe dir>",
        });
    }
    if let Some(data) = xdg_dir("XDG_DATA_HOME", ".local/share") {
        dirs.push(PluginDir {
            path: data.join("stagehost/plugins"),
            origin: "XDG_DATA_HOME",
        });
    }
    for fixed in [
        "/usr/local/lib/stagehost/plugins",
        "/usr/lib/stagehost/plugins",
    ] {
        dirs.push(PluginDir {
            path: PathBuf::from(fixed),
            origin: "system",
        });
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(std::fs::canonicalize(&d.path).unwrap_or_else(|_| d.path.clone())));
    dirs
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

/// Why a file was refused before it was opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The checks made before `dlopen`, in order: a regular file; neither it nor its
/// directory group- or world-writable; owned by the current user or root; an object
/// file for this machine's architecture; exporting the root-module symbol.
///
/// Returns the canonical path to open.
pub fn check_before_open(path: &Path) -> Result<PathBuf, Refusal> {
    let real = std::fs::canonicalize(path)
        .map_err(|e| Refusal(format!("cannot resolve the path: {e}")))?;
    let meta = std::fs::metadata(&real).map_err(|e| Refusal(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(Refusal("not a regular file".into()));
    }
    check_ownership(&real, &meta)?;
    check_object(&real)?;
    Ok(real)
}

#[cfg(unix)]
fn check_ownership(real: &Path, meta: &std::fs::Metadata) -> Result<(), Refusal> {
    use std::os::unix::fs::MetadataExt;
    let writable_by_others = |mode: u32| mode & 0o022 != 0;
    if writable_by_others(meta.mode()) {
        return Err(Refusal(format!(
            "refused: the file is group- or world-writable (mode {:o}); run `chmod go-w {}`",
            meta.mode() & 0o7777,
            real.display()
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(Refusal(format!(
            "refused: owned by uid {}, not by you (uid {me}) or root",
            meta.uid()
        )));
    }
    if let Some(dir) = real.parent() {
        let dir_meta = std::fs::metadata(dir)
            .map_err(|e| Refusal(format!("cannot stat its directory: {e}")))?;
        if writable_by_others(dir_meta.mode()) {
            return Err(Refusal(format!(
                "refused: its directory {} is group- or world-writable (mode {:o})",
                dir.display(),
                dir_meta.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_ownership(_real: &Path, _meta: &std::fs::Metadata) -> Result<(), Refusal> {
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

fn check_object(real: &Path) -> Result<(), Refusal> {
    let file = std::fs::File::open(real).map_err(|e| Refusal(format!("cannot open: {e}")))?;
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
    fn plugin_path_entries_come_after_config_dirs() {
        let dirs = plugin_dirs(&[PathBuf::from("/nonexistent/config-dir")]);
        assert_eq!(dirs[0].origin, "plugin_dirs");
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
        let err = check_before_open(&p).unwrap_err();
        assert_eq!(err.0, "not a shared library (no ELF or Mach-O header)");
    }
}
