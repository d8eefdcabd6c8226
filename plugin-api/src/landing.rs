//! Where a staged file may land and what a stage-in must leave there: the host's rules,
//! checked by the host after every planning and after the last work of every stage-in,
//! whichever provider did it (ours or a third party's) and wherever it ran (`run`,
//! `stage`, the node worker and the Python package all go through the host's
//! `StagingWork::run`). The test kit ([`crate::testing`]) checks the same rules, so a
//! provider's own tests fail where the host would refuse it.
//! - a provider points the task only at the host's destination
//!   ([`crate::Context::destination`]), or leaves the file where it is
//!   ([`check_placement`]);
//! - a regular file at the destination: nothing at all (a source skipped as a
//!   symlink), a directory (a wildcard that matched one), a FIFO or a device is an
//!   error, never a success. The one exception is the `file` scheme's own link modes:
//!   a link to the URL's own path;
//! - no set-id or sticky bits and no group/other write from the remote side: they are
//!   taken off the staged file (on the descriptor, never through a symlink).
//!
//! Invariant: a file that is the source itself (a hard link or symlink to a local
//! `file` URL's path) is never changed: it is the user's.

use std::path::Path;

use crate::display;
use crate::{ErrorKind, File, StageError};

/// Checks that a planning call left `placed` (the file's `local_path`, if any) at the
/// host's `destination`: a provider never chooses a staged file's path by itself.
pub fn check_placement(placed: Option<&Path>, destination: &Path) -> Result<(), StageError> {
    match placed {
        Some(local) if local != destination => Err(StageError::new(
            ErrorKind::Other,
            format!(
                "the provider placed the file at {}, but the host's destination for it is {}; a provider sets local_path only to Context::destination()",
                display::path(local),
                display::path(destination)
            ),
        )),
        _ => Ok(()),
    }
}

/// The mode bits a staged file may not keep: set-user-id, set-group-id, sticky,
/// group write, other write.
pub const FORBIDDEN_MODE_BITS: u32 = 0o7022;

const MADE_XATTR: &str = "user.stagehost.made";

/// The device and inode of the regular file at `path` (not followed): what
/// identifies the file stagehost made, whatever is later written into it.
fn identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())?;
    Some(format!("{} {}", meta.dev(), meta.ino()))
}

/// The place in the host's private directory that belongs to `key` (a destination):
/// `<working_dir>/.stagehost/<area>/<16 hex digits of a hash of key>`. Records kept
/// for a file (validators, marks) and a provider's working files (rsync's partial
/// data) live there, never beside the file.
pub fn private_path(working_dir: &Path, area: &str, key: &Path) -> std::path::PathBuf {
    let hash = key
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    working_dir
        .join(".stagehost")
        .join(area)
        .join(format!("{hash:016x}"))
}

/// Where the record of `path` goes when extended attributes are not available.
fn made_record(path: &Path, working_dir: &Path) -> std::path::PathBuf {
    private_path(working_dir, "made", path)
}

/// Records that stagehost put the regular file at `path` there: an extended
/// attribute of the file (it stays with the file, not with a new file saved in its
/// place), else a record of its device and inode under
/// `<working_dir>/.stagehost/made/`. Best effort.
pub fn mark_made(path: &Path, working_dir: &Path) {
    let Some(identity) = identity(path) else {
        return;
    };
    if crate::xattr::set(path, MADE_XATTR, identity.as_bytes()) {
        return;
    }
    let record = made_record(path, working_dir);
    if let Ok(mut out) = crate::fs::AtomicFile::create(&record) {
        if std::io::Write::write_all(&mut out, identity.as_bytes()).is_ok() {
            let _ = out.commit();
        }
    }
}

/// Whether what is at `path` may be replaced by a staged file: nothing is there, or
/// the file stagehost put there (a file a user made, or saved in its place, or
/// anything that is not a regular file, is not stagehost's to replace).
pub fn replaceable(path: &Path, working_dir: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Err(_) => true,
        Ok(meta) if !meta.is_file() => false,
        Ok(_) => {
            let Some(now) = identity(path) else {
                return false;
            };
            // The mark must name this very file: a copy that carried the attribute
            // along (`cp -a`) is not the file stagehost made.
            crate::xattr::get(path, MADE_XATTR).is_some_and(|v| v == now.as_bytes())
                || std::fs::read(made_record(path, working_dir)).is_ok_and(|r| r == now.as_bytes())
        }
    }
}

/// Whether a staging of `file` may put a file at `dest`: [`replaceable`], or `dest` is
/// the `file` URL's own path (a local file used where it already is).
pub fn may_place(file: &File, dest: &Path, working_dir: &Path) -> bool {
    replaceable(dest, working_dir)
        || std::fs::symlink_metadata(dest).is_ok_and(|m| is_link_to_source(file, dest, &m))
}

/// Records, after a staging that put `file` at `dest`, that stagehost made it (never
/// for the user's own source reached by a link).
pub fn mark_placed(file: &File, dest: &Path, working_dir: &Path) {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_file() && !is_link_to_source(file, dest, &m) => mark_made(dest, working_dir),
        _ => {}
    }
}

/// Makes the directories between `working_dir` and `dest`'s directory (the host's
/// private `.stagehost/<hash>/`), mode 0700, and refuses any of them that is not a
/// real directory (a planted symbolic link would send the file elsewhere).
pub fn ensure_private_dirs(working_dir: &Path, dest: &Path) -> Result<(), StageError> {
    use std::os::unix::fs::DirBuilderExt;
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    let Ok(inner) = parent.strip_prefix(working_dir) else {
        return Ok(());
    };
    if inner.as_os_str().is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(working_dir).map_err(|e| {
        StageError::io(
            format_args!("cannot create {}", display::path(working_dir)),
            &e,
        )
    })?;
    let mut dir = working_dir.to_path_buf();
    for part in inner.components() {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(StageError::new(
                    ErrorKind::Permission,
                    format!(
                    "{} is not a directory (a symbolic link?); stagehost never writes through one",
                    display::path(&dir)
                ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| {
                        StageError::io(format_args!("cannot create {}", display::path(&dir)), &e)
                    })?;
            }
            Err(e) => {
                return Err(StageError::io(
                    format_args!("cannot read {}", display::path(&dir)),
                    &e,
                ))
            }
        }
    }
    Ok(())
}

/// Checks what the last work of a stage-in left at `path` (the file's `filepath()`),
/// and takes forbidden mode bits off it. Unix only; elsewhere it checks nothing.
pub fn check_staged_in(file: &File, path: &Path) -> Result<(), StageError> {
    let shown = display::path(path);
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        StageError::new(
            ErrorKind::Integrity,
            format!("the stage-in reported success, but nothing is at {shown} ({e})"),
        )
    })?;
    let own_source = is_link_to_source(file, path, &meta);
    if meta.file_type().is_symlink() || own_source {
        return if own_source {
            Ok(())
        } else {
            Err(StageError::new(
                ErrorKind::Integrity,
                format!("the stage-in left a symbolic link at {shown}, not the file"),
            ))
        };
    }
    if !meta.is_file() {
        return Err(StageError::new(
            ErrorKind::Integrity,
            format!(
                "the stage-in left {} at {shown}, not a regular file",
                kind_of(&meta)
            ),
        ));
    }
    strip_forbidden_bits(path, &meta)
}

/// Whether `path` is the `file` URL's own path reached by a link (the `file`
/// provider's `symlink` and `hardlink` modes, or a file used where it is).
fn is_link_to_source(file: &File, path: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    if file.scheme() != "file" {
        return false;
    }
    let Ok(source) = std::fs::metadata(file.path()) else {
        return false;
    };
    if !source.is_file() {
        return false;
    }
    let target = if meta.file_type().is_symlink() {
        match std::fs::metadata(path) {
            Ok(m) => m,
            Err(_) => return false,
        }
    } else {
        meta.clone()
    };
    target.dev() == source.dev() && target.ino() == source.ino()
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something other than a file"
    }
}

/// Takes [`FORBIDDEN_MODE_BITS`] off the regular file at `path`, on a descriptor opened
/// without following a symlink.
fn strip_forbidden_bits(path: &Path, meta: &std::fs::Metadata) -> Result<(), StageError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = meta.permissions().mode();
    if mode & FORBIDDEN_MODE_BITS == 0 {
        return Ok(());
    }
    let shown = display::path(path);
    let fail =
        |e: std::io::Error| StageError::io(format_args!("cannot set the mode of {shown}"), &e);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(fail)?;
    let now = file.metadata().map_err(fail)?;
    if !now.is_file() {
        return Err(StageError::new(
            ErrorKind::Integrity,
            format!("{shown} changed while it was checked"),
        ));
    }
    file.set_permissions(std::fs::Permissions::from_mode(
        now.permissions().mode() & 0o7777 & !FORBIDDEN_MODE_BITS,
    ))
    .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_copy_that_carried_the_mark_along_is_not_stagehosts() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("made");
        std::fs::write(&made, "x").unwrap();
        mark_made(&made, dir.path());
        assert!(replaceable(&made, dir.path()));
        // `cp -a` copies the attribute: the copy is another file, the user's.
        let copy = dir.path().join("copy");
        std::fs::write(&copy, "x").unwrap();
        if let Some(mark) = crate::xattr::get(&made, MADE_XATTR) {
            assert!(crate::xattr::set(&copy, MADE_XATTR, &mark));
            assert!(!replaceable(&copy, dir.path()));
        }
    }

    #[test]
    fn set_id_bits_and_group_other_write_are_taken_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o6777)).unwrap();
        let file = File::parse("http://h/x").unwrap();
        check_staged_in(&file, &path).unwrap();
        assert_eq!(mode(&path), 0o755);
    }

    #[test]
    fn nothing_a_directory_or_a_stray_symlink_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::parse("http://h/x").unwrap();
        let e = check_staged_in(&file, &dir.path().join("missing")).unwrap_err();
        assert!(e.message().contains("nothing is at"), "{e}");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = check_staged_in(&file, &sub).unwrap_err();
        assert!(e.message().contains("a directory"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        let e = check_staged_in(&file, &link).unwrap_err();
        assert!(e.message().contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_link_to_a_local_source_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"x").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o4775)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&src, &link).unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(&src, &hard).unwrap();
        let file = File::parse(src.to_str().unwrap()).unwrap();
        check_staged_in(&file, &link).unwrap();
        check_staged_in(&file, &hard).unwrap();
        assert_eq!(mode(&src), 0o4775, "the user's own file is never changed");
    }
}
