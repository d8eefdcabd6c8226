//! Directory staging: a URL whose path ends in `/`, on a provider that offers `list`,
//! stands for every file below it, as `rclone copy` and `gfal-copy -r` read a
//! directory. A stage-in lists the tree once (the `list` capability, recursively) and
//! stages each file as a file of its own (atomic, under the transfer limits, one report
//! entry each) to `<directory's destination>/<relative path>`; a stage-out walks the
//! local directory and stages each file to `<URL>/<relative path>`.
//!
//! Invariants:
//! - one rule decides what a directory URL is ([`DataManager::names_directory`]): a
//!   trailing `/` on a provider with `list`; anywhere else the URL stays a file
//!   (`http://host/` is the server's index, as Parsl reads it);
//! - a directory lands where the host says: `<working_dir>/<its last path segment>`,
//!   claimed for its URL as a file's destination is, so two directories of one name
//!   never share files (the second goes under `.stagehost/<hash>/`);
//! - a child URL is the directory's URL and the relative path, as written. A name that
//!   a URL cannot carry the same way to every provider (`%`, which ftp decodes and
//!   object stores keep; `?` and `#`, which end a path; a control character) refuses the
//!   whole directory with one line naming it: nothing is
//!   skipped without a word;
//! - listed names passed `inspect`'s check (no absolute path, no `..`), and a local walk
//!   never follows a link, so no file lands or is read outside the two roots.

use std::path::{Path, PathBuf};

use stagehost_plugin_api::capability::EntryKind;
use stagehost_plugin_api::{ErrorKind, File, StageError};

use crate::data_manager::{DataManager, StageOptions};
use crate::inspect::InspectError;

/// One file of a directory to stage.
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// Its URL (the directory's URL and `relative`).
    pub file: File,
    /// Its path below the directory, `/`-separated.
    pub relative: String,
    /// Its size, when the listing said.
    pub size: Option<u64>,
    /// The validator the listing gave (an ETag), else empty: with `size`, what a
    /// `--resume` compares with the copy's record.
    pub validator: String,
}

/// Whether `name` can be appended to a URL and read back the same by every provider.
fn url_safe(name: &str) -> bool {
    !name
        .chars()
        .any(|c| matches!(c, '%' | '?' | '#') || c.is_control())
}

/// `dir`'s URL (without its trailing slashes) and `relative`.
fn child_url(dir: &File, relative: &str) -> Result<File, StageError> {
    if !url_safe(relative) {
        return Err(StageError::new(
            ErrorKind::InvalidUrl,
            format!(
                "{} holds {:?}, a name a URL cannot carry the same way to every provider (it has %, ? or # or a control character); stage that file by a URL of its own",
                dir.redacted_url(),
                stagehost_plugin_api::display::escape(relative)
            ),
        ));
    }
    let url = dir.url();
    let (base, tail) = match url.find(['?', '#']) {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    File::parse(&format!("{}/{relative}{tail}", base.trim_end_matches('/')))
}

/// Whether an output URL names a directory its task fills: its path ends in `/` (no
/// file can be written to such a name, on any provider). An input needs a provider
/// that lists too ([`DataManager::names_directory`]).
pub fn is_directory_output(file: &File) -> bool {
    file.path().ends_with('/')
}

/// The directory's name: its URL's last non-empty path segment (`index` for none); a
/// zip archive's root (`zip:/data/out.zip/`) is named without `.zip`, so the directory
/// never takes the archive's own place.
pub fn directory_name(dir: &File) -> &str {
    let last = dir
        .path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    let last = match last.strip_suffix(".zip") {
        Some(stem) if dir.scheme() == "zip" && !stem.is_empty() => stem,
        _ => last,
    };
    crate::data_manager::landing_name(last)
}

impl DataManager {
    /// Whether `file` is staged as a directory on `executor`: its path ends in `/` and
    /// the provider a stage-in would choose offers `list`.
    pub fn names_directory(&self, executor: &str, file: &File) -> bool {
        // Chosen as `stat`/`ls` choose: a provider that refuses the URL only as
        // invalid for staging a file (a zip archive's prefix) still claims it.
        file.path().ends_with('/')
            && self
                .choose_to_ask(executor, file)
                .is_ok_and(|p| p.plugin.list.is_some())
    }

    /// Where directory `dir` lands on `executor` (or under `working_dir`):
    /// `<working_dir>/<name>`, claimed for its URL.
    pub fn directory_destination(
        &self,
        executor: &str,
        dir: &File,
        working_dir: Option<&Path>,
    ) -> Result<PathBuf, InspectError> {
        let base = match working_dir {
            Some(dir) => dir.to_path_buf(),
            None => self.working_dir(executor)?.to_path_buf(),
        };
        Ok(self.claim(&base, directory_name(dir), dir.url()).0)
    }

    /// Every file below `dir`, listed once through its provider's `list` capability,
    /// sorted by path. Directories and other entries (links the provider does not
    /// follow) are not files to stage.
    pub fn expand_directory(
        &self,
        executor: &str,
        dir: &File,
        opts: &StageOptions,
    ) -> Result<Vec<TreeFile>, InspectError> {
        let entries = self.list(executor, dir, true, opts)?;
        // A name that is a file and also holds files (an object `a` beside `a/b`)
        // cannot be both on a local disk: said now, before anything moves.
        let files_named: std::collections::HashSet<&str> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.name.as_str())
            .collect();
        if let Some(clash) = entries.iter().find_map(|e| {
            let mut at = 0;
            while let Some(i) = e.name[at..].find('/') {
                let parent = &e.name[..at + i];
                if files_named.contains(parent) {
                    return Some(parent.to_owned());
                }
                at += i + 1;
            }
            None
        }) {
            return Err(self.refusal(
                executor,
                dir,
                StageError::new(
                    ErrorKind::InvalidUrl,
                    format!(
                        "{} holds both a file and a directory named {:?}, which one local directory cannot hold",
                        dir.redacted_url(),
                        stagehost_plugin_api::display::escape(&clash)
                    ),
                ),
            ));
        }
        let mut files = Vec::with_capacity(entries.len());
        for entry in entries.into_iter().filter(|e| e.kind == EntryKind::File) {
            let file = child_url(dir, &entry.name).map_err(|e| self.refusal(executor, dir, e))?;
            files.push(TreeFile {
                file,
                relative: entry.name,
                size: entry.size,
                validator: entry.validator,
            });
        }
        Ok(files)
    }

    fn refusal(&self, executor: &str, dir: &File, error: StageError) -> InspectError {
        let provider = self.choose_stage_in_provider(executor, dir).ok();
        InspectError::Failed(Box::new((
            crate::inspect::Asked {
                question: crate::inspect::Question::List,
                url: dir.redacted_url(),
                instance: provider.map_or_else(String::new, |p| p.name.clone()),
                plugin: provider.map_or_else(String::new, |p| {
                    format!("{} {}", p.plugin.name, p.plugin.version)
                }),
                executor: executor.to_owned(),
            },
            error,
        )))
    }
}

/// Removes from the local directory `root` each file stagehost put there
/// (`landing::replaceable`) that `keep` does not name: a directory input's files gone
/// from its server since they were staged, or a directory output's files from the
/// run before (`keep` empty), and the directories those removals leave empty.
/// Anything else is left alone. Best effort.
pub fn prune(root: &Path, keep: &[PathBuf], working_dir: &Path) {
    use stagehost_plugin_api::walk::WalkKind;
    // A link in the directory's place leads elsewhere: nothing there is pruned.
    if !std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let Ok(walked) = stagehost_plugin_api::walk::walk(root, true) else {
        return;
    };
    let keep: std::collections::HashSet<&Path> = keep.iter().map(PathBuf::as_path).collect();
    let mut emptied = std::collections::BTreeSet::new();
    for w in walked.into_iter().filter(|w| w.kind == WalkKind::File) {
        let path = root.join(&w.name);
        if !keep.contains(path.as_path())
            && stagehost_plugin_api::landing::replaceable(&path, working_dir)
            && std::fs::remove_file(&path).is_ok()
        {
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
                emptied.insert(d.to_path_buf());
                dir = d.parent();
            }
        }
    }
    // A directory left empty by those removals goes too, deepest first; one that
    // still holds anything stays (removing a directory never removes its contents).
    for dir in emptied.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The regular files below the local directory `root`, each with the URL it goes to
/// below `dir` and its local path, sorted. The walk is plugin-api's `walk`: links are
/// never followed, and a link (or anything but a file or a directory) below the root is
/// refused, naming it.
pub fn local_tree(root: &Path, dir: &File) -> Result<Vec<(TreeFile, PathBuf)>, StageError> {
    use stagehost_plugin_api::walk::WalkKind;
    let mut out = Vec::new();
    for w in stagehost_plugin_api::walk::walk(root, true)? {
        let local = root.join(&w.name);
        match w.kind {
            WalkKind::Directory => {}
            WalkKind::File => {
                let mut file = child_url(dir, &w.name).map_err(|_| {
                    StageError::new(
                        ErrorKind::InvalidUrl,
                        format!(
                            "{} holds {:?}, a name a URL cannot carry the same way to every provider (it has %, ? or # or a control character); stage that file by a URL of its own",
                            stagehost_plugin_api::display::path(root),
                            stagehost_plugin_api::display::escape(&w.name)
                        ),
                    )
                })?;
                file.set_local_path(&local);
                out.push((
                    TreeFile {
                        file,
                        relative: w.name,
                        size: w.size,
                        validator: String::new(),
                    },
                    local,
                ));
            }
            WalkKind::Link { .. } | WalkKind::Other => {
                return Err(StageError::new(
                    ErrorKind::InvalidUrl,
                    format!(
                        "{} is a link or a special file; a directory stage-out sends regular files only",
                        stagehost_plugin_api::display::path(&local)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_keep_the_directorys_url_and_refuse_names_a_url_cannot_carry() {
        let dir = File::parse("s3://bucket/data/?versionId=1").unwrap();
        let child = child_url(&dir, "sub/a.txt").unwrap();
        assert_eq!(child.url(), "s3://bucket/data/sub/a.txt?versionId=1");
        assert_eq!(child.path(), "/data/sub/a.txt");
        assert_eq!(child_url(&dir, "a b.txt").unwrap().path(), "/data/a b.txt");
        for bad in ["100%", "q?x", "h#1", "tab\t", "nl\n"] {
            let e = child_url(&dir, bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{bad}");
            assert!(!e.message().contains('\n'), "{bad}");
        }
        assert_eq!(
            directory_name(&File::parse("s3://b/x/data/").unwrap()),
            "data"
        );
        assert_eq!(directory_name(&File::parse("s3://b/").unwrap()), "index");
        assert_eq!(
            directory_name(&File::parse("zip:/data/out.zip/").unwrap()),
            "out"
        );
        // stagehost's own directory is never a name a staged directory takes.
        assert_eq!(
            directory_name(&File::parse("s3://b/.stagehost/").unwrap()),
            "index"
        );
        assert_eq!(
            directory_name(&File::parse("/tmp/results//").unwrap()),
            "results"
        );
    }
}
