//! The run–worker protocol: its messages and what a task and its result look like on
//! the wire. Types only, no I/O: `dispatcher.rs` (the run) and `node.rs` (the worker)
//! read and write them over TLS (`channel.rs`), one JSON object a line.
//!
//! Versioned as nushell's plugin protocol is: a semver [`PROTOCOL`] plus named
//! [`FEATURES`]. Two sides are compatible when their major versions are equal (and,
//! before 1.0, their minor versions): a newer worker of the same major talks to an
//! older run, each ignoring the other's fields and features it does not know. A side
//! that needs a feature of the other asks [`has`] before using it. A change that an
//! older side cannot ignore bumps the major version.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::task::TaskFiles;
use crate::data_manager::Direction;

/// This side's protocol version. 3.0.0: semver and features in the handshake (protocol
/// 2 sent an integer). 3.1.0: a staged file's `error_class`.
pub const PROTOCOL: &str = "3.1.0";

/// What this side can do beyond the protocol's minimum: `prefetch` (a worker may be
/// sent more tasks than its slots, queued on the node), `in-task-steps` (it re-plans
/// and runs in-task staging), `signal-grace` (a command a signal ended is reported
/// only if the worker outlives it, so the block's cause is named).
pub const FEATURES: &[&str] = &["prefetch", "in-task-steps", "signal-grace"];

/// [`FEATURES`], owned, for a message.
pub fn features() -> Vec<String> {
    FEATURES.iter().map(|f| (*f).to_owned()).collect()
}

/// Whether `theirs` (the other side's features) has `feature`.
pub fn has(theirs: &[String], feature: &str) -> bool {
    theirs.iter().any(|f| f == feature)
}

/// `MAJOR.MINOR.PATCH` as numbers.
fn parse(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.trim().splitn(3, '.');
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some((next()?, next()?, next()?))
}

/// Whether a side speaking `theirs` (or protocol 2's integer `legacy`) can talk to
/// this one; otherwise one line naming both versions.
pub fn compatible(theirs: Option<&str>, legacy: Option<u32>) -> Result<(), String> {
    let ours = parse(PROTOCOL).expect("PROTOCOL is semver");
    let Some(theirs) = theirs else {
        let old = legacy.map_or("an unknown version".to_owned(), |v| format!("version {v}"));
        return Err(format!(
            "protocol {old}, this side speaks {PROTOCOL}: install the same stagehost on both"
        ));
    };
    // Shown in a line of the log and sent back: only a plain version is quoted.
    if theirs.len() > 32
        || !theirs
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
    {
        return Err(format!(
            "protocol {:?} is not a version (MAJOR.MINOR.PATCH)",
            theirs.chars().take(32).collect::<String>()
        ));
    }
    let Some(t) = parse(theirs) else {
        return Err(format!(
            "protocol {theirs:?} is not a version (MAJOR.MINOR.PATCH)"
        ));
    };
    let same = if ours.0 == 0 {
        t.0 == 0 && t.1 == ours.1
    } else {
        t.0 == ours.0
    };
    if same {
        Ok(())
    } else {
        Err(format!(
            "protocol {theirs}, this side speaks {PROTOCOL}: install the same major version of stagehost on both"
        ))
    }
}

/// One message, either way.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Worker → run, first: its protocol (semver) and features, and its nonce.
    Hello {
        /// Protocol 2's integer version: read only to name an old worker's version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        /// The worker's protocol version, `MAJOR.MINOR.PATCH` (from 3.0.0).
        #[serde(default)]
        protocol: Option<String>,
        /// What the worker can do beyond its version's minimum.
        #[serde(default)]
        features: Vec<String>,
        nonce: String,
        block: String,
        host: String,
        slots: usize,
    },
    /// Run → worker: the run's nonce and its proof of the secret.
    Challenge { nonce: String, proof: String },
    /// Worker → run: the worker's proof of the secret.
    Proof { proof: String },
    /// Run → worker: accepted; the run's protocol and features.
    Welcome {
        protocol: String,
        #[serde(default)]
        features: Vec<String>,
        heartbeat_secs: f64,
    },
    /// Run → worker: refused, and why; the connection closes.
    Refused { reason: String },
    /// Run → worker: run this.
    Task(NodeTask),
    /// Worker → run: this task ended.
    Done(NodeResult),
    /// Either way: still here.
    Heartbeat,
    /// Run → worker: end.
    Shutdown,
}

/// A task as the node runs it: the command (placeholders already expanded to the
/// planned paths) and the files whose in-task steps run there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeTask {
    pub id: u64,
    pub name: String,
    pub executor: String,
    pub command: String,
    pub files: TaskFiles,
    pub timeout_secs: Option<f64>,
    pub staged: Vec<NodeFile>,
}

/// One file with an in-task step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFile {
    pub url: String,
    pub direction: Direction,
    pub local_path: Option<PathBuf>,
    /// `local_path` is the run's own destination for it (not a path the task named).
    #[serde(default)]
    pub placed: bool,
}

/// What the node did with a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeResult {
    pub id: u64,
    /// The body's error (the command's exit, a missing output, a failed stage-in).
    pub error: Option<String>,
    /// Per staged file, in the order sent.
    pub staged: Vec<NodeFileResult>,
    /// Where it ran: `host` (block).
    pub place: String,
}

/// One file's in-task step on the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeFileResult {
    pub ran: bool,
    pub seconds: f64,
    pub attempts: u32,
    pub cached: bool,
    pub bytes: Option<u64>,
    pub error: Option<String>,
    /// The error's class (added in 3.1; absent from older workers).
    #[serde(default)]
    pub error_class: Option<crate::report::FailureClass>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_minor_is_compatible_and_another_major_is_named() {
        assert!(compatible(Some(PROTOCOL), None).is_ok());
        assert!(
            compatible(Some("3.7.1"), None).is_ok(),
            "a newer worker of the same major"
        );
        let e = compatible(Some("4.0.0"), None).unwrap_err();
        assert!(e.contains("protocol 4.0.0, this side speaks 3.1.0"), "{e}");
        let e = compatible(None, Some(2)).unwrap_err();
        assert!(
            e.starts_with("protocol version 2, this side speaks 3.1.0"),
            "{e}"
        );
        assert!(compatible(Some("three"), None).is_err());
        let e = compatible(Some("\r\n 3.0.0\n"), None).unwrap_err();
        assert!(!e.contains('\n') && !e.contains('\r'), "{e}");
    }

    #[test]
    fn an_older_workers_hello_is_read_and_a_newer_ones_extra_fields_ignored() {
        // Protocol 2's hello: its integer version, no semver.
        let old = r#"{"type":"hello","version":2,"nonce":"n","block":"b","host":"h","slots":1}"#;
        match serde_json::from_str::<Message>(old).unwrap() {
            Message::Hello {
                version, protocol, ..
            } => {
                assert_eq!((version, protocol), (Some(2), None));
            }
            other => panic!("{other:?}"),
        }
        // A newer worker: fields and features this side does not know.
        let newer = r#"{"type":"hello","protocol":"3.4.0","features":["prefetch","zstd"],"gpus":2,"nonce":"n","block":"b","host":"h","slots":4}"#;
        match serde_json::from_str::<Message>(newer).unwrap() {
            Message::Hello {
                protocol,
                features,
                slots,
                ..
            } => {
                assert!(compatible(protocol.as_deref(), None).is_ok());
                assert!(has(&features, "zstd") && !has(&features, "signal-grace"));
                assert_eq!(slots, 4);
            }
            other => panic!("{other:?}"),
        }
    }
}
