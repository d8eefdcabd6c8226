//! Why an attempt of a task's body failed, as a type: what failed, why, and the
//! provider's [`ErrorKind`] when a provider did. The engine decides on it (whether to
//! retry, how long to wait for a block's cause) without reading its own messages;
//! its `Display` is the one line a report and a log carry.

use stagehost_plugin_api::ErrorKind;

use super::command::CommandError;
use crate::data_manager::StagingError;

/// A file's in-task step that failed: its one line (which names the file, the
/// provider and the executor) and the provider's kind, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// The file's error line.
    pub line: String,
    /// The provider's error kind (`None`: reported by a node, or not a provider's).
    pub kind: Option<ErrorKind>,
}

impl From<&StagingError> for StepFailure {
    fn from(e: &StagingError) -> StepFailure {
        StepFailure {
            line: e.to_string(),
            kind: e.kind(),
        }
    }
}

/// Why one attempt of a task's body failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// An in-task stage-in failed; the body did not run.
    #[error("stage-in failed: {}", .0.line)]
    StageIn(StepFailure),
    /// Planning a retry's in-task steps again failed.
    #[error("{}", .0.line)]
    Replan(StepFailure),
    /// The task cannot run as given on its executor (a placeholder it cannot fill, a
    /// closure or a non-UTF-8 command for another node): no attempt would succeed.
    #[error("{0}")]
    Unrunnable(String),
    /// The command ran and did not succeed, or could not start.
    #[error("{0}")]
    Command(#[from] CommandError),
    /// A Rust closure body returned an error.
    #[error("{0}")]
    Closure(String),
    /// The body succeeded but did not write every declared output (as Parsl's
    /// bash_app raises `MissingOutputs`).
    #[error("missing outputs: the command exited 0 but did not write {}", .0.join(", "))]
    MissingOutputs(Vec<String>),
    /// The attempt failed on a node: its line as the worker sent it, and where.
    #[error("{error} (on {place})")]
    OnNode {
        /// The worker's line.
        error: String,
        /// `host (block id)`.
        place: String,
    },
    /// The attempt never got its result: its worker was lost, or the run ended.
    #[error("{0}")]
    Lost(String),
}

impl BodyError {
    /// Whether another attempt could end otherwise (everything but a cancelled run
    /// and a task that cannot run as given: a body, like Parsl's, is retried whatever
    /// its error).
    pub fn retryable(&self) -> bool {
        !matches!(self, BodyError::Cancelled | BodyError::Unrunnable(_))
    }

    /// The provider's error kind, when an in-task step failed.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            BodyError::StageIn(f) | BodyError::Replan(f) => f.kind,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::command::Ended;

    #[test]
    fn each_error_is_one_line_and_says_whether_a_retry_can_help() {
        let step = StepFailure {
            line: "stage in https://h/x (provider web, executor local): Transient: 503".into(),
            kind: Some(ErrorKind::Transient),
        };
        let cases = [
            (BodyError::Cancelled, "cancelled", false),
            (
                BodyError::StageIn(step.clone()),
                "stage-in failed: stage in https://h/x (provider web, executor local): Transient: 503",
                true,
            ),
            (
                BodyError::Unrunnable("no closure goes to a node".into()),
                "no closure goes to a node",
                false,
            ),
            (
                BodyError::Command(CommandError::Failed {
                    end: Ended::Code(3),
                    excerpt: Some("oops".into()),
                }),
                "the command failed with exit status 3: oops",
                true,
            ),
            (
                BodyError::MissingOutputs(vec!["a".into(), "b".into()]),
                "missing outputs: the command exited 0 but did not write a, b",
                true,
            ),
            (
                BodyError::OnNode {
                    error: "the command failed with exit status 1".into(),
                    place: "n1 (block 7)".into(),
                },
                "the command failed with exit status 1 (on n1 (block 7))",
                true,
            ),
        ];
        for (error, line, retryable) in cases {
            assert_eq!(error.to_string(), line);
            assert!(!line.contains('\n'));
            assert_eq!(error.retryable(), retryable, "{line}");
        }
        assert_eq!(BodyError::StageIn(step).kind(), Some(ErrorKind::Transient));
    }
}
