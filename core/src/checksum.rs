//! Checksums a URL asks for, verified on the staged file: `#sha256=<hex>`,
//! `#sha512=<hex>`, `#sha1=<hex>`, `#md5=<hex>` or `#adler32=<hex>` in the fragment
//! (several may be joined by `&`; pip and gfal2 users write them this way). A fragment
//! naming another digest algorithm is an error, never silently unchecked.
//!
//! Invariant: verification only reads; the caller decides what to do with a file that
//! does not match (a copy the staging work wrote is removed, a file staged in place is
//! never touched).

use std::fmt;
use std::io::Read;
use std::path::Path;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use stagehost_plugin_api::{ErrorKind, StageError};

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// SHA-1.
    Sha1,
    /// MD5.
    Md5,
    /// Adler-32, as gfal2 and XRootD use.
    Adler32,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Sha1 => "sha1",
            Algorithm::Md5 => "md5",
            Algorithm::Adler32 => "adler32",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
            Algorithm::Sha1 => 40,
            Algorithm::Md5 => 32,
            Algorithm::Adler32 => 8,
        }
    }
}

/// An expected checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The expected digest, lower-case hex.
    pub hex: String,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.algorithm.name(), self.hex)
    }
}

impl Checksum {
    /// The checksum named in `url`'s fragment, if any. A fragment naming a known
    /// algorithm with a malformed digest is an error.
    pub fn from_url(url: &str) -> Result<Option<Checksum>, StageError> {
        let Some((_, fragment)) = url.split_once('#') else {
            return Ok(None);
        };
        for part in fragment.split('&') {
            let Some((name, value)) = part.split_once('=') else {
                continue;
            };
            let lower = name.to_ascii_lowercase();
            let algorithm = match lower.as_str() {
                "sha256" => Algorithm::Sha256,
                "sha512" => Algorithm::Sha512,
                "sha1" => Algorithm::Sha1,
                "md5" => Algorithm::Md5,
                "adler32" => Algorithm::Adler32,
                _ if looks_like_a_digest(&lower, value) => {
                    return Err(StageError::new(
                        ErrorKind::InvalidUrl,
                        format!(
                            "the URL asks for a {name} checksum, which stagehost cannot verify (it knows {})",
                            KNOWN.join(", ")
                        ),
                    ))
                }
                _ => continue,
            };
            let hex = value.to_ascii_lowercase();
            if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(StageError::new(
                    ErrorKind::InvalidUrl,
                    format!(
                        "the {} checksum {value:?} is not {} hex digits",
                        algorithm.name(),
                        algorithm.hex_len()
                    ),
                ));
            }
            return Ok(Some(Checksum { algorithm, hex }));
        }
        Ok(None)
    }

    /// Reads `path` and compares its digest; a mismatch is an [`ErrorKind::Integrity`]
    /// error naming both digests.
    pub fn verify(&self, path: &Path) -> Result<(), StageError> {
        let actual = digest(self.algorithm, path)?;
        if actual == self.hex {
            Ok(())
        } else {
            Err(StageError::new(
                ErrorKind::Integrity,
                format!(
                    "checksum mismatch for {}: {} expected {}, got {actual}",
                    path.display(),
                    self.algorithm.name(),
                    self.hex
                ),
            ))
        }
    }
}

/// The algorithms a fragment may name.
const KNOWN: &[&str] = &["sha256", "sha512", "sha1", "md5", "adler32"];

/// Whether fragment part `name=value` names a digest: a digest algorithm's name, or a
/// value of hex digits as long as a common digest's.
fn looks_like_a_digest(name: &str, value: &str) -> bool {
    const FAMILIES: &[&str] = &[
        "sha",
        "md",
        "crc",
        "adler",
        "blake",
        "xxh",
        "ripemd",
        "whirlpool",
        "tiger",
        "sm3",
        "streebog",
        "keccak",
        "shake",
        "cksum",
        "checksum",
        "digest",
        "hash",
    ];
    let hex_digest = matches!(value.len(), 8 | 16 | 32 | 40 | 56 | 64 | 96 | 128)
        && value.bytes().all(|b| b.is_ascii_hexdigit());
    hex_digest || FAMILIES.iter().any(|f| name.starts_with(f))
}

/// The lower-case hex digest of the file at `path`.
pub fn digest(algorithm: Algorithm, path: &Path) -> Result<String, StageError> {
    // Opened without blocking, and read only if it is a regular file: a FIFO or a
    // device named by a URL never hangs the check.
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
    }
    .map_err(|e| {
        StageError::io(
            format_args!("cannot open {} to verify it", path.display()),
            &e,
        )
    })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(StageError::new(
            ErrorKind::InvalidUrl,
            format!(
                "{} is not a regular file; only a file's bytes can be checked",
                path.display()
            ),
        ));
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut sha256 = Sha256::new();
    let mut sha512 = Sha512::new();
    let mut sha1 = Sha1::new();
    let mut md5 = Md5::new();
    let mut adler = adler2::Adler32::new();
    loop {
        let n = file.read(&mut buf).map_err(|e| {
            StageError::io(
                format_args!("cannot read {} to verify it", path.display()),
                &e,
            )
        })?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        match algorithm {
            Algorithm::Sha256 => sha256.update(chunk),
            Algorithm::Sha512 => sha512.update(chunk),
            Algorithm::Sha1 => sha1.update(chunk),
            Algorithm::Md5 => md5.update(chunk),
            Algorithm::Adler32 => adler.write_slice(chunk),
        }
    }
    Ok(match algorithm {
        Algorithm::Sha256 => format!("{:x}", sha256.finalize()),
        Algorithm::Sha512 => format!("{:x}", sha512.finalize()),
        Algorithm::Sha1 => format!("{:x}", sha1.finalize()),
        Algorithm::Md5 => format!("{:x}", md5.finalize()),
        Algorithm::Adler32 => format!("{:08x}", adler.checksum()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn a_fifo_is_refused_never_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = digest(Algorithm::Sha256, &fifo).unwrap_err();
        assert!(e.message().contains("is not a regular file"), "{e}");
    }

    #[test]
    fn known_digests() {
        let f = file_with(b"hello world");
        let p = f.path();
        assert_eq!(
            digest(Algorithm::Sha256, p).unwrap(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(
            digest(Algorithm::Md5, p).unwrap(),
            "5eb63bbbe01eeed093cb22bb8f5acdc3"
        );
        assert_eq!(
            digest(Algorithm::Sha1, p).unwrap(),
            "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"
        );
        assert_eq!(digest(Algorithm::Adler32, p).unwrap(), "1a0b045d");
        assert!(digest(Algorithm::Sha512, p)
            .unwrap()
            .starts_with("309ecc489c12d6eb4cc40f50c902f2b4"));
        // 3 MiB of 0xff, across read-buffer and modulo-block boundaries (zlib agrees).
        let big = file_with(&vec![0xffu8; 3 << 20]);
        assert_eq!(digest(Algorithm::Adler32, big.path()).unwrap(), "3016cd4f");
    }

    #[test]
    fn fragments_name_checksums() {
        assert_eq!(Checksum::from_url("http://h/x").unwrap(), None);
        assert_eq!(Checksum::from_url("http://h/x#part").unwrap(), None);
        let c = Checksum::from_url("http://h/x#foo=1&MD5=5EB63BBBE01EEED093CB22BB8F5ACDC3")
            .unwrap()
            .unwrap();
        assert_eq!(c.to_string(), "md5=5eb63bbbe01eeed093cb22bb8f5acdc3");
        for url in [
            "http://h/x#sha384=ab",
            "http://h/x#blake3=00",
            "http://h/x#crc32c=1234abcd",
        ] {
            let err = Checksum::from_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl);
            assert!(
                err.to_string().contains("which stagehost cannot verify"),
                "{err}"
            );
        }
        let err = Checksum::from_url("http://h/x#sha256=abc").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
        assert_eq!(
            err.to_string(),
            "the sha256 checksum \"abc\" is not 64 hex digits"
        );
    }

    #[test]
    fn a_mismatch_names_both_digests() {
        let f = file_with(b"hello world");
        let c = Checksum {
            algorithm: Algorithm::Md5,
            hex: "0".repeat(32),
        };
        let err = c.verify(f.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(
            err.to_string().ends_with(&format!(
                "md5 expected {}, got 5eb63bbbe01eeed093cb22bb8f5acdc3",
                "0".repeat(32)
            )),
            "{err}"
        );
    }
}
