//! The `file` provider: stages `file://` URLs and bare paths.
//!
//! With the default `mode = "none"` it behaves as Parsl's `NoOpFileStaging`: it claims
//! every `file` URL and does nothing, so a task's `filepath()` is the URL's path. The
//! other modes serve sites whose workers do not share the submit side's file system:
//! stage-in places the file at the host's destination (by default
//! `<working_dir>/<filename>`) by an atomic copy, a symlink or a hard link, in an
//! in-task step; stage-out sets `local_path` to that destination before the task runs
//! and copies it to the URL's path in an in-task step after the body. A local file the
//! caller names for a stage-out (`stagehost stage out LOCAL URL`) is copied to the
//! URL's path in every mode. A stage-out never removes the local output.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use stagehost_plugin_api::capability::{Entry, EntryKind, List, Schemes, Stat};
use stagehost_plugin_api::fs::{copy_atomically, link_atomically, LinkKind};
use stagehost_plugin_api::walk::WalkKind;
use stagehost_plugin_api::{Context, File, Job, Provider, Settings, StageError};

/// How a file reaches the working directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Leave files where they are.
    #[default]
    None,
    Copy,
    Symlink,
    Hardlink,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileSettings {
    mode: Mode,
}

/// See the crate docs.
pub struct FileProvider {
    mode: Mode,
}

/// Only local files: `file:` URLs with no host or with `localhost`.
fn is_local_file(file: &File) -> bool {
    file.scheme() == "file" && matches!(file.netloc(), "" | "localhost")
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

impl Provider for FileProvider {
    fn new(settings: &Settings) -> Result<Self, StageError> {
        let settings: FileSettings = settings.parse()?;
        Ok(FileProvider {
            mode: settings.mode,
        })
    }

    fn can_stage_in(&self, file: &File) -> bool {
        is_local_file(file)
    }

    fn can_stage_out(&self, file: &File) -> bool {
        is_local_file(file)
    }

    fn stage_in(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        if self.mode != Mode::None {
            file.set_local_path(ctx.destination());
        }
        Ok(None)
    }

    fn replace_task(&self, _ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        let mode = self.mode;
        if mode == Mode::None {
            return Ok(None);
        }
        let src = PathBuf::from(file.path());
        let dest = file.filepath()?;
        Ok(Some(Job::new(move |ctx| {
            // Cancelled before it ran: it makes nothing, links included.
            ctx.check()?;
            if same_file(&src, &dest) {
                ctx.cached();
                return Ok(());
            }
            match mode {
                Mode::Copy => copy_atomically(&src, &dest, ctx).map(drop),
                Mode::Symlink => link_atomically(&src, &dest, LinkKind::Symlink),
                Mode::Hardlink => link_atomically(&src, &dest, LinkKind::Hardlink),
                Mode::None => Ok(()),
            }
        })))
    }

    fn stage_out(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        if self.mode != Mode::None {
            file.set_local_path(ctx.destination());
        }
        Ok(None)
    }

    fn replace_task_stage_out(
        &self,
        _ctx: &Context<'_>,
        file: &mut File,
    ) -> Result<Option<Job>, StageError> {
        // In mode `none` a task writes the URL's path itself (Parsl's NoOp), unless the
        // caller named a local file to publish (`stagehost stage out LOCAL URL`): that
        // one is copied, as in every other mode.
        if self.mode == Mode::None && file.local_path().is_none() {
            return Ok(None);
        }
        let local = file.filepath()?;
        let dest = PathBuf::from(file.path());
        // Links would tie the published output to the working directory; a stage-out
        // always copies.
        Ok(Some(Job::new(move |ctx| {
            if same_file(&local, &dest) {
                // The task wrote the URL's path itself: nothing moves.
                ctx.cached();
                return Ok(());
            }
            copy_atomically(&local, &dest, ctx).map(drop)
        })))
    }
}

/// An entry for what `path` names, following a final symlink as `stat(2)` does.
fn entry_of(name: String, meta: &std::fs::Metadata) -> Entry {
    let mut entry = if meta.is_file() {
        Entry::file(name).with_size(meta.len())
    } else if meta.is_dir() {
        Entry::directory(name)
    } else {
        Entry {
            kind: EntryKind::Other,
            ..Entry::file(name)
        }
    };
    entry.modified = meta.modified().ok();
    entry
}

impl Schemes for FileProvider {
    fn schemes(&self) -> Vec<String> {
        vec!["file".into()]
    }
}

impl Stat for FileProvider {
    fn stat(&self, _ctx: &Context<'_>, file: &File) -> Result<Option<Entry>, StageError> {
        let path = Path::new(file.path());
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(entry_of(String::new(), &meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StageError::io(
                format_args!("cannot stat {}", stagehost_plugin_api::display::path(path)),
                &e,
            )),
        }
    }
}

impl List for FileProvider {
    /// plugin-api's `walk`: a link to a directory is listed as `other` and never entered,
    /// even one swapped in during the walk; a link to a file is listed as that file.
    fn list(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<Entry>, StageError> {
        ctx.check()?;
        let walked = stagehost_plugin_api::walk::walk(Path::new(dir.path()), recursive)?;
        Ok(walked
            .into_iter()
            .map(|w| {
                let kind = match w.kind {
                    WalkKind::File | WalkKind::Link { to_file: true } => EntryKind::File,
                    WalkKind::Directory => EntryKind::Directory,
                    WalkKind::Link { to_file: false } | WalkKind::Other => EntryKind::Other,
                };
                Entry {
                    name: w.name,
                    kind,
                    size: w.size.filter(|_| kind == EntryKind::File),
                    modified: w.modified,
                    validator: String::new(),
                }
            })
            .collect())
    }
}

stagehost_plugin_api::export_provider! {
    provider: FileProvider,
    name: "file",
    schemes: ["file"],
    description: "Local files: in place, or copied/linked into the working directory",
    capabilities: [stat, list, schemes],
}

#[cfg(test)]
mod tests {
    //! The provider's calls and jobs run in-process with plugin-api's test kit.

    use std::os::unix::fs::PermissionsExt;

    use stagehost_plugin_api::testing::TestHost;
    use stagehost_plugin_api::{ErrorKind, Settings};

    use super::*;

    fn provider(mode: &str) -> FileProvider {
        FileProvider::new(&Settings::from_toml(format!("mode = {mode:?}"))).unwrap()
    }

    fn source(host: &TestHost, name: &str, text: &str, mode: u32) -> PathBuf {
        let dir = host.working_dir().join("src");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn every_mode_keeps_the_hosts_rules() {
        let sources = tempfile_dir();
        let good = sources.join("data.txt");
        std::fs::write(&good, "data\n").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o6775)).unwrap();
        let missing = sources.join("missing.txt");
        for mode in ["none", "copy", "symlink", "hardlink"] {
            stagehost_plugin_api::testing::conformance(
                &provider(mode),
                stagehost_plugin_api::testing::Conformance {
                    good: good.to_str().unwrap(),
                    missing: (mode != "none").then(|| missing.to_str().unwrap()),
                    secrets: &[],
                },
            )
            .unwrap_or_else(|e| panic!("mode {mode}: {e}"));
        }
        // Mode none uses a file where it is: a missing one is the task's to find.
        let _ = std::fs::remove_dir_all(&sources);
    }

    fn tempfile_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("stagehost-file-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn stat_and_list_describe_the_tree_without_following_directory_links() {
        let host = TestHost::new();
        let root = host.working_dir().join("tree");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("a.txt"), "A").unwrap();
        std::fs::write(root.join("sub/b.txt"), "BB").unwrap();
        std::fs::write(root.join("sub/deeper/c.txt"), "CCC").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("a-link")).unwrap();
        let p = provider("none");
        let url = |rel: &str| format!("file://{}/{rel}", root.display());

        let a = host.stat(&p, &url("a.txt")).unwrap().unwrap();
        assert_eq!(
            (a.kind, a.size, a.name.as_str()),
            (EntryKind::File, Some(1), "")
        );
        assert!(a.modified.is_some());
        assert_eq!(
            host.stat(&p, &url("sub")).unwrap().unwrap().kind,
            EntryKind::Directory
        );
        assert_eq!(host.stat(&p, &url("nothing")).unwrap(), None);

        let names = |entries: Vec<Entry>| -> Vec<(String, EntryKind, Option<u64>)> {
            entries
                .into_iter()
                .map(|e| (e.name, e.kind, e.size))
                .collect()
        };
        let top = host.list(&p, &url(""), false).unwrap();
        assert_eq!(
            names(top),
            [
                ("a-link".to_owned(), EntryKind::File, Some(1)),
                ("a.txt".to_owned(), EntryKind::File, Some(1)),
                ("etc-link".to_owned(), EntryKind::Other, None),
                ("sub".to_owned(), EntryKind::Directory, None),
            ]
        );
        let all = host.list(&p, &url(""), true).unwrap();
        let all: Vec<String> = all.into_iter().map(|e| e.name).collect();
        assert_eq!(
            all,
            [
                "a-link",
                "a.txt",
                "etc-link",
                "sub",
                "sub/b.txt",
                "sub/deeper",
                "sub/deeper/c.txt"
            ]
        );
        let err = host.list(&p, &url("nothing"), false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let err = host.list(&p, &url("a.txt"), false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
    }

    #[test]
    fn mode_none_stages_in_place_with_nothing_to_do() {
        let host = TestHost::new();
        let src = source(&host, "a.txt", "A", 0o644);
        let staged = host
            .stage_in(&provider("none"), src.to_str().unwrap())
            .unwrap();
        assert!(staged.ran.is_empty());
        assert_eq!(staged.file.filepath().unwrap(), src);
    }

    #[test]
    fn copy_mode_copies_into_the_working_dir_in_task_keeping_the_mode() {
        let host = TestHost::new();
        let src = source(&host, "key.pem", "secret", 0o600);
        let staged = host
            .stage_in(&provider("copy"), src.to_str().unwrap())
            .unwrap();
        assert_eq!(staged.ran, ["in-task step"]);
        let dest = host.working_dir().join("key.pem");
        assert_eq!(staged.file.filepath().unwrap(), dest);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "secret");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(host.progress().last(), Some(&(6, Some(6))));
    }

    #[test]
    fn symlink_and_hardlink_modes_link() {
        let host = TestHost::new();
        let src = source(&host, "s.txt", "S", 0o644);
        host.stage_in(&provider("symlink"), src.to_str().unwrap())
            .unwrap();
        let link = host.working_dir().join("s.txt");
        assert_eq!(std::fs::read_link(&link).unwrap(), src);
        let other = TestHost::new();
        let src = source(&other, "h.txt", "H", 0o644);
        other
            .stage_in(&provider("hardlink"), src.to_str().unwrap())
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let dest = other.working_dir().join("h.txt");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().ino(),
            std::fs::metadata(&src).unwrap().ino()
        );
    }

    #[test]
    fn a_cancelled_copy_fails_and_leaves_nothing() {
        let host = TestHost::new();
        let src = source(&host, "big.bin", "x", 0o644);
        host.cancel();
        let err = host
            .stage_in(&provider("copy"), src.to_str().unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert!(!host.working_dir().join("big.bin").exists());
        let names: Vec<_> = std::fs::read_dir(host.working_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["src"], "no temporary file is left");
    }

    #[test]
    fn stage_out_copies_the_output_and_keeps_it() {
        let host = TestHost::new();
        let local = source(&host, "result.txt", "R", 0o640);
        let dest = host.working_dir().join("published/result.txt");
        let staged = host
            .stage_out(&provider("copy"), &local, dest.to_str().unwrap())
            .unwrap();
        assert_eq!(staged.ran, ["in-task step"]);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "R");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read_to_string(&local).unwrap(), "R");
    }

    #[test]
    fn only_local_file_urls_are_claimed() {
        let p = provider("copy");
        assert!(p.can_stage_in(&File::parse("/x").unwrap()));
        assert!(p.can_stage_in(&File::parse("file://localhost/x").unwrap()));
        assert!(!p.can_stage_in(&File::parse("file://elsewhere/x").unwrap()));
        assert!(!p.can_stage_out(&File::parse("http://h/x").unwrap()));
    }
}
