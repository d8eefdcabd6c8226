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
    let hash = dest
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    working_dir
        .join(".stagehost")
        .join("validators")
        .join(format!("{hash:016x}"))
}

#[cfg(target_os = "linux")]
fn get_xattr(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let c_name = std::ffi::CString::new(XATTR).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

#[cfg(target_os = "linux")]
fn set_xattr(path: &Path, value: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(c_path), Ok(c_name)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(XATTR),
    ) else {
        return false;
    };
    // SAFETY: valid NUL-terminated strings and a value of the given length.
    unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn get_xattr(_path: &Path) -> Option<Vec<u8>> {
    None
}

#[cfg(not(target_os = "linux"))]
fn set_xattr(_path: &Path, _value: &[u8]) -> bool {
    false
}

/// The validator recorded for `dest`, if there is one and the file is still as
/// recorded.
pub fn load(dest: &Path, working_dir: &Path) -> Option<String> {
    let (size, mtime) = stamp(dest)?;
    let raw = get_xattr(dest).or_else(|| std::fs::read(fallback(dest, working_dir)).ok())?;
    let text = String::from_utf8(raw).ok()?;
    let mut lines = text.lines();
    let (validator, rec_size, rec_mtime) = (lines.next()?, lines.next()?, lines.next()?);
    (rec_size.parse() == Ok(size) && rec_mtime.parse() == Ok(mtime) && !validator.is_empty())
        .then(|| validator.to_owned())
}

/// Records `validator` for `dest` as it is now (best effort: a failure only means the
/// next run fetches again).
pub fn store(dest: &Path, working_dir: &Path, validator: &str) {
    let Some((size, mtime)) = stamp(dest) else {
        return;
    };
    if validator.contains(['\n', '\r']) {
        return;
    }
    let value = format!("{validator}\n{size}\n{mtime}\n");
    if set_xattr(dest, value.as_bytes()) {
        return;
    }
    let path = fallback(dest, working_dir);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(path, value);
}
