//! What hears the engine and the staging runner: progress displays, reports.

use std::sync::Arc;

use crate::data_manager::{Direction, WorkMode};
use crate::report::TaskReport;
use crate::services::ProgressSink;

/// Hears what the engine does, for progress displays. Every method has a default
/// that does nothing.
pub trait Observer: Send + Sync {
    /// The run will have `tasks` tasks in all (when it knows before submitting them).
    fn tasks_expected(&self, _tasks: usize) {}
    /// A task was submitted.
    fn task_submitted(&self, _name: &str) {}
    /// A task whose body is the shell command `command` (its text, placeholders
    /// unexpanded) was submitted; heard before [`Observer::task_submitted`].
    fn command_submitted(&self, _name: &str, _command: &str) {}
    /// A task's body is about to run (its first attempt), its inputs staged in as
    /// `inputs` show (stage-in order; an in-task step's copy is made with the body).
    fn body_starting(&self, _name: &str, _inputs: &[crate::report::FileReport]) {}
    /// A task ended (stage-outs included).
    fn task_finished(&self, _report: &TaskReport) {}
    /// A transfer attempt starts; the sink returned receives its bytes.
    fn transfer_started(
        &self,
        _id: u64,
        _url: &str,
        _direction: Direction,
        _mode: WorkMode,
    ) -> Option<Arc<dyn ProgressSink>> {
        None
    }
    /// A transfer attempt ended: what landed on success, the error line on failure.
    fn transfer_finished(&self, _id: u64, _result: Result<Finished, &str>) {}
    /// Every task has ended: a display takes itself off the screen before the summary.
    fn run_finished(&self) {}
}

/// What a transfer that succeeded left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finished {
    /// The file's size, when known.
    pub bytes: Option<u64>,
    /// The destination already held the current file: no bytes moved.
    pub cached: bool,
}

/// An observer that observes nothing.
pub struct Silent;
impl Observer for Silent {}
