//! The `zip` provider: Parsl's `ZipFileStaging`, for URLs
//! `zip:/path/to/archive.zip/inner/path` (the archive is everything up to the first
//! `.zip/`; the rest names the member).
//!
//! As in Parsl, both directions are separate jobs: stage-in extracts the member to the
//! host's destination (`<working_dir>/<member's file name>`, through a temporary name, so
//! a task never sees half a member); stage-out points the task at the host's
//! destination and then adds
//! that file to the archive as the member, and removes that working copy once the
//! archive holds it (as Parsl does; `keep_local = true` keeps it). A local file the
//! caller named (`stagehost stage out LOCAL URL`) is never removed. `stdout` and
//! `stderr` can be members too.
//!
//! Unlike Parsl, a URL with a netloc, without `.zip/`, or with a member path that is
//! empty, absolute or holds `..` is refused when the file is planned, before the task
//! runs; a member that exists already is an error unless `overwrite = true` replaces
//! it (an archive never holds a name twice); locks have a deadline; and an update
//! that is killed halfway is rolled back by whoever opens the archive next (see
//! `archive`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use stagehost_plugin_api::capability::{Entry, List, Schemes, Stat};
use stagehost_plugin_api::net::seconds;
use stagehost_plugin_api::{Context, ErrorKind, File, Job, Provider, Settings, StageError};

mod archive;
mod format;

/// How members are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
enum Compression {
    /// Deflate, as Parsl writes (`ZIP_DEFLATED`).
    #[default]
    Deflate,
    /// No compression.
    Stored,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ZipSettings {
    /// Replace a member that exists already, instead of failing.
    overwrite: bool,
    /// Seconds to wait for the archive's lock.
    lock_timeout_secs: f64,
    compression: Compression,
    /// Keep the task's local output after it went into the archive.
    keep_local: bool,
}

impl Default for ZipSettings {
    fn default() -> Self {
        ZipSettings {
            overwrite: false,
            lock_timeout_secs: 60.0,
            compression: Compression::Deflate,
            keep_local: false,
        }
    }
}

/// See the crate docs.
pub struct ZipProvider {
    options: archive::Options,
    keep_local: bool,
}

/// A `zip:` URL, read: the archive (absolute) and the member.
#[derive(Debug, Clone, PartialEq)]
struct ZipUrl {
    archive: PathBuf,
    member: String,
}

impl ZipUrl {
    /// Reads `file`'s URL, or says in one line what is wrong with it.
    fn parse(file: &File) -> Result<ZipUrl, StageError> {
        ZipUrl::parse_as(file, false)
    }

    /// [`ZipUrl::parse`], where `prefix` also allows the archive alone
    /// (`zip:/a.zip`, `zip:/a.zip/`) and a trailing `/` (a prefix to list); the member
    /// is then empty or the prefix without its slash.
    fn parse_as(file: &File, prefix: bool) -> Result<ZipUrl, StageError> {
        let url = file.redacted_url();
        let invalid = |why: String| StageError::new(ErrorKind::InvalidUrl, format!("{url}: {why}"));
        if !file.netloc().is_empty() {
            return Err(invalid(format!(
                "a zip: URL names a local archive and has no netloc, but this one has {:?} (write zip:/path/to/archive.zip/member)",
                file.netloc()
            )));
        }
        let owned;
        let path = if prefix {
            owned = format!("{}/", file.path().trim_end_matches('/'));
            if owned.ends_with(".zip/") && !owned[..owned.len() - 5].contains(".zip/") {
                let archive = Path::new(&owned[..owned.len() - 1]);
                return Ok(ZipUrl {
                    archive: absolute(archive)?,
                    member: String::new(),
                });
            }
            owned.trim_end_matches('/')
        } else {
            file.path()
        };
        let Some(at) = path.find(".zip/") else {
            return Err(invalid(
                "no `.zip/` in the path: write zip:/path/to/archive.zip/member".to_owned(),
            ));
        };
        let (archive, member) = (&path[..at + 4], &path[at + 5..]);
        if member.is_empty() {
            return Err(invalid("it names the archive but no member".to_owned()));
        }
        if member.starts_with('/') {
            return Err(invalid(format!("the member path {member} is absolute")));
        }
        if member.split('/').any(|c| c == "..") {
            return Err(invalid(format!(
                "the member path {member} holds `..`, which could reach outside the working directory"
            )));
        }
        if member.split('/').any(|c| c.is_empty() || c == ".") {
            return Err(invalid(format!(
                "the member path {member} has an empty or `.` component"
            )));
        }
        Ok(ZipUrl {
            archive: absolute(Path::new(archive))?,
            member: member.to_owned(),
        })
    }
}

/// `path` against the current directory unless absolute.
fn absolute(path: &Path) -> Result<PathBuf, StageError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .map_err(|e| StageError::io("cannot read the current directory", &e))?
        .join(path))
}

/// `zip:/path/archive.zip[/prefix[/]]` for `stat` and `list`: the archive and the
/// member path or prefix, without its slashes (empty for the archive's root).
fn archive_and_prefix(file: &File) -> Result<(PathBuf, String), StageError> {
    let url = ZipUrl::parse_as(file, true)?;
    Ok((url.archive, url.member))
}

fn dos_time((y, mo, d, h, mi, s): (u16, u8, u8, u8, u8, u8)) -> Option<std::time::SystemTime> {
    let days =
        stagehost_plugin_api::calendar::days_from_civil(i64::from(y), i64::from(mo), i64::from(d));
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
    u64::try_from(secs)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
}

impl Schemes for ZipProvider {
    fn schemes(&self) -> Vec<String> {
        vec!["zip".into()]
    }
}

impl Stat for ZipProvider {
    /// A member, or a directory (a directory entry, or a prefix members continue),
    /// read from the central directory.
    fn stat(&self, ctx: &Context<'_>, file: &File) -> Result<Option<Entry>, StageError> {
        let (archive, prefix) = archive_and_prefix(file)?;
        let members = match archive::members(ctx, &archive, self.options.lock_timeout) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            other => other?,
        };
        if prefix.is_empty() {
            return Ok(Some(Entry::directory("")));
        }
        if let Some(m) = members.iter().find(|m| m.name == prefix) {
            let mut entry = if m.is_dir {
                Entry::directory("")
            } else {
                Entry::file("").with_size(m.size)
            };
            entry.modified = m.modified.and_then(dos_time);
            return Ok(Some(entry));
        }
        let below = format!("{prefix}/");
        Ok(members
            .iter()
            .any(|m| m.name.starts_with(&below))
            .then(|| Entry::directory("")))
    }
}

impl List for ZipProvider {
    /// The members below a prefix, with the directories their names imply.
    fn list(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<Entry>, StageError> {
        let (archive, prefix) = archive_and_prefix(dir)?;
        let members = archive::members(ctx, &archive, self.options.lock_timeout)?;
        let strip = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        // A member by that very name: a file is no directory to list; a directory
        // entry is one, even an empty one.
        if let Some(m) = members
            .iter()
            .find(|m| !prefix.is_empty() && m.name == prefix)
        {
            if !m.is_dir {
                return Err(StageError::new(
                    ErrorKind::InvalidUrl,
                    format!(
                        "{} holds {prefix} as a member (a file), not a directory",
                        stagehost_plugin_api::display::path(&archive)
                    ),
                ));
            }
        }
        let mut files = Vec::new();
        let mut dirs = std::collections::BTreeSet::new();
        let mut any = prefix.is_empty() || members.iter().any(|m| m.is_dir && m.name == prefix);
        for m in &members {
            let Some(rest) = m.name.strip_prefix(strip.as_str()) else {
                continue;
            };
            if rest.is_empty() {
                any = true;
                continue;
            }
            any = true;
            // The directories the name implies, each once (one level unless recursive).
            let mut at = 0;
            while let Some(i) = rest[at..].find('/') {
                dirs.insert(rest[..at + i].to_owned());
                at += i + 1;
                if !recursive {
                    break;
                }
            }
            if rest.contains('/') && !recursive {
                continue;
            }
            if m.is_dir {
                dirs.insert(rest.to_owned());
            } else {
                let mut entry = Entry::file(rest).with_size(m.size);
                entry.modified = m.modified.and_then(dos_time);
                files.push(entry);
            }
        }
        if !any {
            return Err(StageError::not_found(format!(
                "{} holds no member below {prefix}/",
                stagehost_plugin_api::display::path(&archive)
            )));
        }
        files.extend(dirs.into_iter().map(Entry::directory));
        Ok(files)
    }
}

impl Provider for ZipProvider {
    fn new(settings: &Settings) -> Result<Self, StageError> {
        let s: ZipSettings = settings.parse()?;
        Ok(ZipProvider {
            options: archive::Options {
                overwrite: s.overwrite,
                lock_timeout: seconds("lock_timeout_secs", s.lock_timeout_secs)?,
                deflate: s.compression == Compression::Deflate,
            },
            keep_local: s.keep_local,
        })
    }

    fn can_stage_in(&self, file: &File) -> bool {
        file.scheme() == "zip"
    }

    fn can_stage_out(&self, file: &File) -> bool {
        file.scheme() == "zip"
    }

    fn try_can_stage_in(&self, file: &File) -> Result<bool, StageError> {
        if !self.can_stage_in(file) {
            return Ok(false);
        }
        ZipUrl::parse(file)?;
        Ok(true)
    }

    fn try_can_stage_out(&self, file: &File) -> Result<bool, StageError> {
        if !self.can_stage_out(file) {
            return Ok(false);
        }
        ZipUrl::parse(file)?;
        Ok(true)
    }

    fn stage_in(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        let url = ZipUrl::parse(file)?;
        // The host's destination: two archives' `data.txt` never share a file.
        let dest = ctx.destination().to_path_buf();
        file.set_local_path(&dest);
        let lock_timeout = self.options.lock_timeout;
        Ok(Some(Job::new(move |ctx| {
            archive::extract(ctx, &url.archive, &url.member, &dest, lock_timeout).map(drop)
        })))
    }

    fn stage_out(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        let url = ZipUrl::parse(file)?;
        // A working copy this provider asked the host for (the task writes it) goes once
        // the archive holds it, as Parsl's ZipFileStaging removes it; a file the caller
        // named (an output that already existed, `stagehost stage out LOCAL URL`) is the
        // caller's and is never removed.
        let (local, working_copy) = match file.local_path() {
            Some(local) => (local.to_path_buf(), false),
            None => {
                // The task writes there. The working directory is made here (as Parsl
                // makes it); the host's own subdirectories (`.stagehost/<hash>/`) only by
                // the host, privately and never through a link.
                let local = ctx.destination().to_path_buf();
                if local.parent() == Some(ctx.working_dir()) {
                    std::fs::create_dir_all(ctx.working_dir()).map_err(|e| {
                        StageError::io(
                            format_args!(
                                "cannot create {}",
                                stagehost_plugin_api::display::path(ctx.working_dir())
                            ),
                            &e,
                        )
                    })?;
                }
                file.set_local_path(&local);
                (local, true)
            }
        };
        let (options, remove_after) = (self.options, working_copy && !self.keep_local);
        Ok(Some(Job::new(move |ctx| {
            archive::archive(&url.archive).add(ctx, &url.member, &local, options)?;
            if remove_after {
                let _ = std::fs::remove_file(&local);
            }
            Ok(())
        })))
    }
}

stagehost_plugin_api::export_provider! {
    provider: ZipProvider,
    name: "zip",
    schemes: ["zip"],
    description: "zip:/path/archive.zip/member: members extracted for stage-in and added for stage-out, under a lock, crash-safe",
    capabilities: [stat, list, schemes],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<ZipUrl, StageError> {
        ZipUrl::parse(&File::parse(url).unwrap())
    }

    #[test]
    fn urls_split_at_the_first_zip_component() {
        let u = parse("zip:/tmp/foo/this.zip/inside/here.txt").unwrap();
        assert_eq!(u.archive, Path::new("/tmp/foo/this.zip"));
        assert_eq!(u.member, "inside/here.txt");
        let u = parse("zip:///tmp/a.zip/b.zip/c").unwrap();
        assert_eq!(u.archive, Path::new("/tmp/a.zip"));
        assert_eq!(u.member, "b.zip/c");
        assert!(parse("zip:rel/a.zip/x").unwrap().archive.is_absolute());
    }

    #[test]
    fn it_keeps_the_hosts_rules() {
        use stagehost_plugin_api::testing::{conformance, Conformance, TestHost};
        let provider = ZipProvider::new(&Settings::from_toml("")).unwrap();
        let host = TestHost::new();
        let local = host.working_dir().join("made.txt");
        std::fs::write(&local, "member\n").unwrap();
        let dir =
            std::env::temp_dir().join(format!("stagehost-zip-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("a.zip");
        let _ = std::fs::remove_file(&archive);
        let good = format!("zip:{}/data.txt", archive.display());
        host.stage_out(&provider, &local, &good).unwrap();
        assert!(local.exists(), "a file the caller named is never removed");
        let missing = format!("zip:{}/absent.txt", archive.display());
        conformance(
            &provider,
            Conformance {
                good: &good,
                missing: Some(&missing),
                secrets: &[],
            },
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_urls_are_refused_each_with_its_reason() {
        for (url, why) in [
            ("zip://host/tmp/a.zip/x", "netloc"),
            ("zip:/tmp/a.tar/x", "no `.zip/`"),
            ("zip:/tmp/a.zip/", "no member"),
            ("zip:/tmp/a.zip//etc/passwd", "absolute"),
            ("zip:/tmp/a.zip/../x", "`..`"),
            ("zip:/tmp/a.zip/a/../../x", "`..`"),
            ("zip:/tmp/a.zip/a/./x", "empty or `.`"),
        ] {
            let e = parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{url}");
            assert!(e.message().contains(why), "{url}: {e}");
        }
    }
}
