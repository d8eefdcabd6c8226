//! Optional capabilities: what a provider can do beyond Parsl's six calls, and what a
//! host can do for a provider beyond logging, progress and cancellation.
//!
//! A capability is named and versioned (`stat` version 1). A plugin offers the ones it
//! implements by listing them in [`export_provider!`](crate::export_provider)
//! (`capabilities: [stat, list]`); the host asks for them by name and version, and a
//! host that does not know one never sees it. The host offers its own the same way
//! (`cached` version 1), and a plugin that cannot work without one of them lists it
//! (`requires_host: [cached]`), so an older host refuses it with one line naming the
//! capability instead of loading a plugin that would misbehave.
//!
//! # What a capability promises
//!
//! - A version never changes once released: its calls, their arguments and their
//!   meaning are frozen. Something new is a new version (`stat` 2) or a new name, and
//!   a plugin may offer several versions of one capability side by side.
//! - A plugin that offers a capability answers every call of it for every URL its
//!   `can_stage_in` claims; for a URL it claims but cannot answer about, it returns an
//!   error, never a made-up answer.
//! - Capability calls are guarded as the six calls are: a panic is an
//!   [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) error for that call.
//!
//! # The capabilities stagehost defines
//!
//! | name | version | direction | what it does |
//! |---|---|---|---|
//! | `stat` | 1 | plugin offers | [`Stat`]: what one URL names, without moving its bytes |
//! | `list` | 1 | plugin offers | [`List`]: the entries under a directory or prefix |
//! | `cached` | 1 | host offers | [`Context::cached`](crate::Context::cached): the destination already held the current file |
//! | `schemes` | 1 | plugin offers | [`Schemes`]: the only schemes an instance ever claims, so the host asks it about no other |
//!
//! Names without a dot are stagehost's. A third party that defines a capability of
//! its own between its plugins and a host it ships names it with a dotted prefix of
//! its own (`org.example.checksum`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::abi::capability::host_offers;

use crate::error::StageError;
use crate::file::File;
use crate::provider::{Context, Provider};

/// What kind of thing an [`Entry`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A file (an object, an archive member).
    File,
    /// A directory (a prefix that has entries below it).
    Directory,
    /// Anything else: a link the provider does not follow, a device.
    Other,
}

/// One file or directory, as a [`Stat`] or [`List`] call found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// For [`List`]: the path below the listed directory, `/`-separated, never starting
    /// with `/` and never holding `.` or `..` components. For [`Stat`]: empty.
    pub name: String,
    /// File, directory or other.
    pub kind: EntryKind,
    /// Its size in bytes, when the protocol says.
    pub size: Option<u64>,
    /// When it last changed, when the protocol says.
    pub modified: Option<SystemTime>,
    /// What the server would compare to decide it is unchanged: an HTTP or object
    /// store ETag (with its quotes and `W/`), else empty. A strong validator only
    /// changes when the bytes do.
    pub validator: String,
}

impl Entry {
    /// A file entry named `name` with no size, time or validator yet.
    pub fn file(name: impl Into<String>) -> Entry {
        Entry {
            name: name.into(),
            kind: EntryKind::File,
            size: None,
            modified: None,
            validator: String::new(),
        }
    }
    /// A directory entry named `name`.
    pub fn directory(name: impl Into<String>) -> Entry {
        Entry {
            kind: EntryKind::Directory,
            ..Entry::file(name)
        }
    }
    /// Sets the size.
    pub fn with_size(mut self, size: u64) -> Entry {
        self.size = Some(size);
        self
    }
    /// Sets the modification time.
    pub fn with_modified(mut self, modified: SystemTime) -> Entry {
        self.modified = Some(modified);
        self
    }
    /// Sets the validator.
    pub fn with_validator(mut self, validator: impl Into<String>) -> Entry {
        self.validator = validator.into();
        self
    }
    /// The modification time as nanoseconds since the Unix epoch (negative before it;
    /// saturating past the year 2262), as the ABI carries it.
    pub(crate) fn modified_unix_ns(&self) -> Option<i64> {
        self.modified.map(|t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        })
    }
    /// The inverse of [`Entry::modified_unix_ns`].
    pub(crate) fn modified_from_unix_ns(ns: i64) -> SystemTime {
        if ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(ns as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
        }
    }
}

/// The `stat` capability, version 1: what one URL names, asked of its server without
/// moving the file's bytes (a `stat(2)`, an HTTP `HEAD`, an FTP `MLST`, an object
/// store `HEAD`).
pub trait Stat: Provider {
    /// The entry `file` names, or `None` when nothing exists there. The entry's `name`
    /// is empty. A server that refuses to say is an error, not `None`.
    fn stat(&self, ctx: &Context<'_>, file: &File) -> Result<Option<Entry>, StageError>;
}

/// The `schemes` capability, version 1: the only URL schemes an instance ever claims.
/// The host asks once, when it makes the instance, and from then on decides for every
/// other scheme itself: `can_stage_in` and `can_stage_out` are not called for a file
/// whose scheme is not listed (choosing a provider among many then costs a string
/// comparison per provider instead of a call across the library boundary).
///
/// A promise, not a hint: a provider that offers this answers `false` for every file
/// of another scheme. Within its schemes, its own `can_stage_in` and `can_stage_out`
/// still decide (and may refuse a file).
pub trait Schemes: Provider {
    /// The schemes, lowercase, as [`File::scheme`] gives them (`file` for a bare path).
    /// An empty list makes no promise: the host asks this instance about every file
    /// (a provider whose claims depend on its settings may promise for some instances
    /// only).
    fn schemes(&self) -> Vec<String>;
}

/// The `list` capability, version 1: the entries under a directory or prefix, in one
/// request per directory (or page) rather than one per file.
pub trait List: Provider {
    /// The entries below `dir`, with names relative to it. With `recursive`, the whole
    /// tree: files at every depth, and directories too. Without it, the directory's own
    /// entries. A `dir` that does not exist is an error of kind
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound); an empty one is an empty
    /// list. The order is the provider's; the host sorts.
    fn list(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<Entry>, StageError>;
}
