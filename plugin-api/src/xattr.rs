//! Extended attributes (Linux `user.*`), never followed through a symbolic link; on
//! other systems, and where the file system has none, reads find nothing and writes
//! report failure, so callers fall back to a record file.

use std::path::Path;

/// The value of attribute `name` of `path`, if it has one.
#[cfg(target_os = "linux")]
pub fn get(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
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

/// Sets attribute `name` of `path` to `value`; whether it could.
#[cfg(target_os = "linux")]
pub fn set(path: &Path, name: &str, value: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(c_path), Ok(c_name)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    // SAFETY: valid NUL-terminated strings and a value of the given length.
    unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
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
