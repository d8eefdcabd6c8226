//! The `file` provider: stages `file://` URLs and bare paths.
//!
//! With the default `mode = "none"` it behaves as Parsl's `NoOpFileStaging`: it claims
//! every `file` URL and does nothing, so a task's `filepath()` is the URL's path. The
//! other modes serve sites whose workers do not share the submit side's file system:
//! stage-in places the file at the host's destination (by default
//! `<working_dir>/<filename>`) by an atomic copy, a symlink or a hard link, in an
//! in-task step; stage-out sets `local_path` to that destination before the task runs
//! and copies it to the URL's path in an in-task step after the body. A stage-out never
//! removes the local output.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use stagehost_plugin_api::fs::{copy_atomically, link_atomically, LinkKind};
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
            if same_file(&src, &dest) {
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
        if self.mode == Mode::None {
            return Ok(None);
        }
        let local = file.filepath()?;
        let dest = PathBuf::from(file.path());
        // Links would tie the published output to the working directory; a stage-out
        // always copies.
        Ok(Some(Job::new(move |ctx| {
            if same_file(&local, &dest) {
                return Ok(());
            }
            copy_atomically(&local, &dest, ctx).map(drop)
        })))
    }
}

stagehost_plugin_api::export_provider! {
    provider: FileProvider,
    name: "file",
    schemes: ["file"],
    description: "Local files: in place, or copied/linked into the working directory",
}
