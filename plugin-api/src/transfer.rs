//! The kit for a provider that moves bytes to and from a remote place (http, ftp,
//! object stores, rsync): implement [`Transfer`] (its settings, what it claims, the
//! job that fetches a file and the one that sends it) and export
//! [`TransferProvider<YourTransfer>`](TransferProvider). The kit writes Parsl's
//! planning quartet once, the same for every such provider:
//! - `can_stage_in`/`can_stage_out` (and their `try_` forms) ask [`Transfer::claims`];
//! - `stage_in` sets the host's destination as the file's `local_path` (a provider
//!   never picks the path) and returns the fetching job when the work is a separate
//!   job (`mode = "separate"`); `replace_task` returns it when it is an in-task step
//!   (`mode = "in-task"`);
//! - `stage_out` keeps a `local_path` the task already has (else the host's
//!   destination) and returns the sending job the same way.
//!
//! ```
//! use stagehost_plugin_api::transfer::{Transfer, TransferProvider};
//! use stagehost_plugin_api::{File, Job, Settings, StageError, WorkPlace};
//!
//! struct Echo;
//! impl Transfer for Echo {
//!     fn new(_settings: &Settings) -> Result<Self, StageError> {
//!         Ok(Echo)
//!     }
//!     fn place(&self) -> WorkPlace {
//!         WorkPlace::Separate
//!     }
//!     fn claims(&self, file: &File) -> Result<bool, StageError> {
//!         Ok(file.scheme() == "echo")
//!     }
//!     fn get(&self, _file: &File) -> Result<Job, StageError> {
//!         Ok(Job::new(|_ctx| Ok(())))
//!     }
//!     fn put(&self, _file: &File) -> Result<Job, StageError> {
//!         Ok(Job::new(|_ctx| Ok(())))
//!     }
//! }
//! pub type EchoProvider = TransferProvider<Echo>;
//! ```

use crate::{Context, File, Job, Provider, Settings, StageError, WorkPlace};

/// What a provider that moves bytes implements; [`TransferProvider`] makes it a
/// [`Provider`].
pub trait Transfer: Send + Sync + Sized + 'static {
    /// Reads the instance's settings.
    fn new(settings: &Settings) -> Result<Self, StageError>;
    /// Where its work runs: a separate job or an in-task step (its `mode` setting).
    fn place(&self) -> WorkPlace;
    /// Whether it stages `file`; an error for a URL it would claim but cannot use (a
    /// host that does not parse), which ends the file's planning with one line.
    fn claims(&self, file: &File) -> Result<bool, StageError>;
    /// The job that fetches `file` to its `local_path` (already set to the host's
    /// destination), or the error that refuses it at planning.
    fn get(&self, file: &File) -> Result<Job, StageError>;
    /// The job that sends `file` from its `local_path`, or the error that refuses it
    /// at planning.
    fn put(&self, file: &File) -> Result<Job, StageError>;
}

/// A [`Transfer`] as a [`Provider`]: the planning quartet, written once.
pub struct TransferProvider<T>(pub T);

impl<T: Transfer> TransferProvider<T> {
    /// `job()` when the work runs at `here`.
    fn job_at(
        &self,
        here: WorkPlace,
        job: impl FnOnce() -> Result<Job, StageError>,
    ) -> Result<Option<Job>, StageError> {
        if self.0.place() == here {
            job().map(Some)
        } else {
            Ok(None)
        }
    }
}

impl<T: Transfer> Provider for TransferProvider<T> {
    fn new(settings: &Settings) -> Result<Self, StageError> {
        T::new(settings).map(TransferProvider)
    }

    fn can_stage_in(&self, file: &File) -> bool {
        self.0.claims(file).unwrap_or(false)
    }

    fn can_stage_out(&self, file: &File) -> bool {
        self.0.claims(file).unwrap_or(false)
    }

    fn try_can_stage_in(&self, file: &File) -> Result<bool, StageError> {
        self.0.claims(file)
    }

    fn try_can_stage_out(&self, file: &File) -> Result<bool, StageError> {
        self.0.claims(file)
    }

    fn stage_in(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        file.set_local_path(ctx.destination());
        self.job_at(WorkPlace::Separate, || self.0.get(file))
    }

    fn replace_task(&self, _ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        self.job_at(WorkPlace::InTask, || self.0.get(file))
    }

    fn stage_out(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        if file.local_path().is_none() {
            file.set_local_path(ctx.destination());
        }
        self.job_at(WorkPlace::Separate, || self.0.put(file))
    }

    fn replace_task_stage_out(
        &self,
        _ctx: &Context<'_>,
        file: &mut File,
    ) -> Result<Option<Job>, StageError> {
        self.job_at(WorkPlace::InTask, || self.0.put(file))
    }
}
