//! Validators for revalidation: a provider records what identified the version it
//! fetched (an HTTP `ETag` or `Last-Modified`, an object's ETag) with the file's size
//! and modification time, so that the next stage-in of the same source to the same
//! place can ask whether it changed and move no bytes when it did not (what rclone and
//! Snakemake users expect of a re-run); see [`crate::Context::cached`].
//!
//! The record lives in an extended attribute of the file (`user.stagehost.validator`) or,
//! where the file system has none, under the working directory's `.stagehost/`
//! directory, never as a visible file beside it. A record is used only while the file
//! still has the size and modification time recorded: a file changed since is fetched
//! again.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const XATTR: &str = "user.stagehost.validator";

/// Size and modification time (ns) of `path`, if it is a regular file.
fn stamp(path: &Path) -> Option<(u64, u128)> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((meta.len(), mtime))
}

/// Where the record of `dest` goes when extended attributes are not available.
fn fallback(dest: &Path, working_dir: &Path) -> PathBuf {
    #[cfg(unix)]
    return crate::landing::private_path(working_dir, "validators", dest);
    #[cfg(not(unix))]
    return working_dir
        .join(".stagehost")
        .join("validators")
        .join(dest.file_name().unwrap_or_default());
}

/// The URL a record is bound to, as it is kept: the URL without its userinfo and
/// fragment, hashed, so a record never holds a credential.
fn url_key(url: &str) -> String {
    let (bare, _) = crate::net::split_userinfo(url);
    let bare = bare.split('#').next().unwrap_or_default();
    let hash = bare.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // A second, differently seeded pass: 128 bits, so two URLs never share a key by
    // accident.
    let hash2 = bare.bytes().fold(0x6c62_272e_07bb_0142u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("url:{hash:016x}{hash2:016x}")
}

/// The validator recorded for `dest` when it was fetched from `url`, if there is one,
/// it was made for this very URL, and the file is still as recorded.
///
/// A record made for another URL is never used: after a workflow moves from
/// `.../v1/data.csv` to `.../v2/data.csv`, a server that gives both the same `ETag`
/// must not make v1's file pass for v2's.
pub fn load_for(url: &str, dest: &Path, working_dir: &Path) -> Option<String> {
    let (size, mtime) = stamp(dest)?;
    let raw = crate::xattr::get(dest, XATTR)
        .or_else(|| std::fs::read(fallback(dest, working_dir)).ok())?;
    let text = String::from_utf8(raw).ok()?;
    let mut lines = text.lines();
    let (validator, rec_size, rec_mtime, rec_url) =
        (lines.next()?, lines.next()?, lines.next()?, lines.next()?);
    (rec_size.parse() == Ok(size)
        && rec_mtime.parse() == Ok(mtime)
        && rec_url == url_key(url)
        && !validator.is_empty())
    .then(|| validator.to_owned())
}

/// Records `validator` for `dest`, as it is now, fetched from `url` (best effort: a
/// failure only means the next run fetches again).
pub fn store_for(url: &str, dest: &Path, working_dir: &Path, validator: &str) {
    let Some((size, mtime)) = stamp(dest) else {
        return;
    };
    if validator.contains(['\n', '\r']) {
        return;
    }
    let value = format!("{validator}\n{size}\n{mtime}\n{}\n", url_key(url));
    if crate::xattr::set(dest, XATTR, value.as_bytes()) {
        return;
    }
    // A record file is replaced by a rename, never written through a symlink planted
    // in its place.
    let path = fallback(dest, working_dir);
    let Ok(mut out) = crate::fs::AtomicFile::create(&path) else {
        return;
    };
    if std::io::Write::write_all(&mut out, value.as_bytes()).is_ok() {
        let _ = out.commit();
    }
}

/// Superseded by [`load_for`]: a record not bound to a URL is never trusted, so this
/// always answers `None` (the file is fetched again).
#[deprecated(
    since = "0.1.3",
    note = "use load_for, which binds the record to its URL"
)]
pub fn load(_dest: &Path, _working_dir: &Path) -> Option<String> {
    None
}

/// Superseded by [`store_for`]: records nothing, since a record not bound to a URL is
/// never used.
#[deprecated(
    since = "0.1.3",
    note = "use store_for, which binds the record to its URL"
)]
pub fn store(_dest: &Path, _working_dir: &Path, _validator: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_serves_only_the_url_it_was_made_for() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("data.csv");
        std::fs::write(&dest, b"v1").unwrap();
        store_for("http://h/v1/data.csv", &dest, dir.path(), "\"e\"");
        assert_eq!(
            load_for("http://h/v1/data.csv", &dest, dir.path()).as_deref(),
            Some("\"e\"")
        );
        // The credentials and the fragment are not part of what identifies it.
        assert!(load_for("http://u:p@h/v1/data.csv#sha256=x", &dest, dir.path()).is_some());
        assert_eq!(load_for("http://h/v2/data.csv", &dest, dir.path()), None);
        // A changed file is not what was recorded.
        std::fs::write(&dest, b"v1 edited").unwrap();
        assert_eq!(load_for("http://h/v1/data.csv", &dest, dir.path()), None);
    }
}
