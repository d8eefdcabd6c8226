//! `StageError`: what a provider call failed with, and the kind that drives the host's
//! retries.

use std::fmt;

use abi_stable::StableAbi;

/// Why a staging call failed. Only [`ErrorKind::Transient`] and
/// [`ErrorKind::TimedOut`] are retried by the host.
///
/// Across the ABI this travels as a non-exhaustive enum: a kind added by a newer
/// `plugin-api` reaches an older host as [`ErrorKind::Other`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[sabi(kind(WithNonExhaustive(size = [u8; 4], traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum ErrorKind {
    /// The source does not exist.
    NotFound,
    /// The source or destination refused access.
    Permission,
    /// A failure that may pass: a dropped connection, a busy server, a 503.
    Transient,
    /// The bytes are wrong: a size or checksum mismatch.
    Integrity,
    /// The URL cannot be staged by this provider as written.
    InvalidUrl,
    /// The call ran past its deadline.
    TimedOut,
    /// The host asked the call to stop.
    Cancelled,
    /// The provider panicked; the panic was caught at the plugin boundary.
    Panicked,
    /// Anything else.
    Other,
    /// The instance's settings are wrong (an unknown key, a wrong type, a missing or
    /// bad value). The host treats it as an error in its config. Added in 0.1.1: an
    /// older host reads it as `Other`.
    InvalidSettings,
}

impl ErrorKind {
    /// Whether the host may retry a call that failed with this kind.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::TimedOut)
    }

    /// A short lower-case name, as used in error lines and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Permission => "permission denied",
            ErrorKind::Transient => "transient",
            ErrorKind::Integrity => "integrity",
            ErrorKind::InvalidUrl => "invalid URL",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Other => "error",
            ErrorKind::InvalidSettings => "invalid settings",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed staging call: a kind and a one-line message saying what failed, on what,
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    kind: ErrorKind,
    message: String,
}

impl StageError {
    /// An error of `kind`. Keep `message` to one line; newlines are folded to spaces.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StageError {
        let mut message = message.into();
        if message.contains(['\n', '\r']) {
            message = message
                .split(['\n', '\r'])
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" ");
        }
        StageError { kind, message }
    }
    /// [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> StageError {
        StageError::new(ErrorKind::NotFound, message)
    }
    /// [`ErrorKind::Transient`]: the host may retry.
    pub fn transient(message: impl Into<String>) -> StageError {
        StageError::new(ErrorKind::Transient, message)
    }
    /// [`ErrorKind::InvalidSettings`]: the host reports it as an error in its config.
    pub fn invalid_settings(message: impl Into<String>) -> StageError {
        StageError::new(ErrorKind::InvalidSettings, message)
    }
    /// [`ErrorKind::Other`].
    pub fn other(message: impl Into<String>) -> StageError {
        StageError::new(ErrorKind::Other, message)
    }
    /// Maps an I/O error to a kind (not found, permission, transient for interrupted
    /// or timed-out operations, other) and prefixes `context`.
    pub fn io(context: impl fmt::Display, err: &std::io::Error) -> StageError {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::PermissionDenied => ErrorKind::Permission,
            Io::TimedOut => ErrorKind::TimedOut,
            Io::Interrupted
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::ConnectionRefused
            | Io::BrokenPipe
            | Io::UnexpectedEof
            | Io::WouldBlock => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
        StageError::new(kind, format!("{context}: {err}"))
    }

    /// The kind, which decides whether the host retries.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let e = StageError::other("first\nsecond\r\n\nthird");
        assert_eq!(e.to_string(), "first second third");
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(StageError::io("open /x", &nf).kind(), ErrorKind::NotFound);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(StageError::io("read", &reset).kind().is_transient());
        assert!(!ErrorKind::Panicked.is_transient());
    }
}
