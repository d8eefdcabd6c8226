//! Extended attributes (Linux `user.*`), never followed through a symbolic link; on
//! other systems, and where the file system has none, reads find nothing and writes
//! report failure, so callers fall back to a record file.

use std::path::Path;

/// The value of attribute `name` of `path`, if it has one.
#[cfg(target_os = "linux")]
pub fn get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Sets attribute `name` of `path` to `value`; whether it could.
#[cfg(target_os = "linux")]
pub fn set(path: &Path, name: &str, value: &[u8]) -> bool {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).is_ok()
}

/// No extended attributes here.
#[cfg(not(target_os = "linux"))]
pub fn get(_path: &Path, _name: &str) -> Option<Vec<u8>> {
    None
}

/// No extended attributes here.
#[cfg(not(target_os = "linux"))]
pub fn set(_path: &Path, _name: &str, _value: &[u8]) -> bool {
    false
}
