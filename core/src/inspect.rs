//! Asking about URLs without moving their bytes: the `stat` and `list` capabilities,
//! through the provider an executor's order chooses for a stage-in of the URL (the one
//! whose settings and credentials would fetch it).
//!
//! Invariants:
//! - the provider is chosen as for a stage-in (the first whose `can_stage_in` says
//!   yes), except that one refusing the URL as invalid *for staging* is asked too: it
//!   claims the URL's kind (a `zip:` archive's root, an object store's prefix) even
//!   though no file can be staged from it. One that does not offer the capability is
//!   an error naming it, never a fall-through to the next provider;
//! - a listing's names are the host's to trust: each is checked (relative, `/`-separated,
//!   no empty, `.` or `..` component, no NUL) before anyone sees it, so a listing can
//!   never name a path outside the directory it was asked about; the entries come back
//!   sorted by name, an entry listed twice over (same name and kind) once;
//! - error lines name the URL (redacted), the provider, the plugin and the executor, and
//!   carry no secret of the instance's settings or the URL.

use std::sync::Arc;
use std::time::SystemTime;

use stagehost_plugin_api::capability::Entry;
use stagehost_plugin_api::{ErrorKind, File, StageError};

use crate::data_manager::{call_services, scrub_error, DataManager, StageOptions, StagingError};
use crate::registry::ProviderInstance;
use crate::services::abi_context;

/// What was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// `stat`.
    Stat,
    /// `list`.
    List,
}

impl Question {
    /// The capability's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Question::Stat => "stat",
            Question::List => "list",
        }
    }
}

/// Who was asked what, for an error line.
#[derive(Debug, Clone)]
pub struct Asked {
    /// What was asked.
    pub question: Question,
    /// The URL, redacted.
    pub url: String,
    /// Instance name.
    pub instance: String,
    /// Plugin name and version.
    pub plugin: String,
    /// Executor label.
    pub executor: String,
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot {} {}: provider {:?} (plugin {}) on executor {:?}",
            self.question.as_str(),
            self.url,
            self.instance,
            self.plugin,
            self.executor
        )
    }
}

/// Why a question about a URL got no answer, as one line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InspectError {
    /// No provider was chosen (unknown executor, no provider claims the URL, or a
    /// `can_stage_in` failed).
    #[error("{0}")]
    Choose(#[from] StagingError),
    /// The chosen provider does not offer the capability.
    #[error("{} does not offer the `{}` capability", .0, .0.question.as_str())]
    NotOffered(Box<Asked>),
    /// The provider answered with an error (scrubbed of secrets).
    #[error("{}: {}{}", .0 .0, crate::data_manager::kind_part(.0 .1.kind()), .0 .1.message())]
    Failed(Box<(Asked, StageError)>),
}

impl InspectError {
    /// Its class for scripts: the provider's error kind; a question no provider can
    /// answer is the caller's error (`other`, exit 2 in the CLI).
    pub fn class(&self) -> crate::report::FailureClass {
        match self {
            InspectError::Failed(failed) => crate::report::FailureClass::of(failed.1.kind()),
            InspectError::Choose(e) => e.class(),
            InspectError::NotOffered(_) => crate::report::FailureClass::Other,
        }
    }
    /// Whether the question itself cannot be answered here (no provider, one without
    /// the capability, or a URL the provider says cannot name what was asked), as
    /// opposed to a provider that failed.
    pub fn is_usage(&self) -> bool {
        match self {
            InspectError::NotOffered(_) => true,
            InspectError::Choose(e) => e.kind().is_none(),
            // The URL names nothing this question can be asked of (a file where a
            // directory was meant, a name no URL can carry).
            InspectError::Failed(failed) => failed.1.kind() == ErrorKind::InvalidUrl,
        }
    }
}

impl DataManager {
    /// What `file` names, asked of the provider `executor` would stage it in with:
    /// `Ok(None)` when nothing exists there. Blocks.
    pub fn stat(
        &self,
        executor: &str,
        file: &File,
        opts: &StageOptions,
    ) -> Result<Option<Entry>, InspectError> {
        self.ask(executor, file, opts, Question::Stat, |p, ctx| {
            p.stat(ctx, file).map(|r| {
                r.map(|e| {
                    e.map(|e| Entry {
                        name: String::new(),
                        ..e
                    })
                })
            })
        })
    }

    /// The entries below `dir` (recursively, with `recursive`), asked of the provider
    /// `executor` would stage it in with, sorted by name. Blocks.
    pub fn list(
        &self,
        executor: &str,
        dir: &File,
        recursive: bool,
        opts: &StageOptions,
    ) -> Result<Vec<Entry>, InspectError> {
        let mut entries = self.ask(executor, dir, opts, Question::List, |p, ctx| {
            p.list(ctx, dir, recursive).map(|r| {
                r.and_then(|entries| {
                    entries
                        .into_iter()
                        .map(|e| check_name(&e.name).map(|()| e))
                        .collect::<Result<Vec<Entry>, StageError>>()
                })
            })
        })?;
        // Sorted by name; only an entry listed twice over (same name, same kind) goes:
        // an object `a` and a prefix `a/` are two entries.
        entries.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| kind_order(a.kind).cmp(&kind_order(b.kind)))
        });
        entries.dedup_by(|a, b| a.name == b.name && a.kind == b.kind);
        Ok(entries)
    }

    fn ask<T>(
        &self,
        executor: &str,
        file: &File,
        opts: &StageOptions,
        question: Question,
        call: impl FnOnce(
            &ProviderInstance,
            &stagehost_plugin_api::abi::AbiContext,
        ) -> Option<Result<T, StageError>>,
    ) -> Result<T, InspectError> {
        let provider = self.choose_to_ask(executor, file)?;
        let asked = || Asked {
            question,
            url: file.redacted_url(),
            instance: provider.name.clone(),
            plugin: format!("{} {}", provider.plugin.name, provider.plugin.version),
            executor: executor.to_owned(),
        };
        let failed = |error: StageError| {
            InspectError::Failed(Box::new((asked(), scrub_error(error, &provider, file))))
        };
        let working_dir = match &opts.working_dir {
            Some(dir) => dir.clone(),
            None => self.working_dir(executor)?.to_path_buf(),
        };
        let ctx = abi_context(
            call_services(&provider, executor, file, opts),
            &working_dir,
            &working_dir,
            opts.timeout.map(|t| SystemTime::now() + t),
        )
        .map_err(failed)?;
        match call(&provider, &ctx) {
            None => Err(InspectError::NotOffered(Box::new(asked()))),
            Some(answer) => answer.map_err(failed),
        }
    }
}

impl DataManager {
    /// The provider to ask about `file`: the first of `executor`'s order whose
    /// `can_stage_in` accepts it, or refuses it as an invalid URL (see the invariants).
    pub fn choose_to_ask(
        &self,
        executor: &str,
        file: &File,
    ) -> Result<Arc<ProviderInstance>, InspectError> {
        let (providers, unavailable) = self.providers(executor)?;
        for provider in providers {
            match provider.can_stage_in(file) {
                Ok(true) => return Ok(provider.clone()),
                Ok(false) => {}
                Err(e) if e.kind() == ErrorKind::InvalidUrl => return Ok(provider.clone()),
                Err(_) => return Ok(self.choose_stage_in_provider(executor, file)?.clone()),
            }
        }
        Err(InspectError::Choose(StagingError::NoProvider {
            executor: executor.to_owned(),
            url: file.redacted_url(),
            direction: crate::data_manager::Direction::In,
            unavailable: unavailable.to_vec(),
        }))
    }
}

fn kind_order(kind: stagehost_plugin_api::capability::EntryKind) -> u8 {
    use stagehost_plugin_api::capability::EntryKind;
    match kind {
        EntryKind::File => 0,
        EntryKind::Directory => 1,
        EntryKind::Other => 2,
    }
}

/// Refuses a listed name that could lead outside the listed directory: empty, absolute,
/// with an empty, `.` or `..` component, or holding NUL or `\`.
fn check_name(name: &str) -> Result<(), StageError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains(['\0', '\\'])
        || name.split('/').any(|c| matches!(c, "" | "." | ".."));
    if bad {
        return Err(StageError::new(
            ErrorKind::Integrity,
            format!(
                "the listing holds the entry \"{}\", which is not a plain relative path; nothing was listed",
                stagehost_plugin_api::display::escape(name)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn listed_names_must_stay_below_the_directory() {
        for good in ["a", "sub/b", "a b", "é", ".hidden", "a..b", "..a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a/",
            "a\\..\\b",
            "a\0b",
        ] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                stagehost_plugin_api::ErrorKind::Integrity,
                "{bad}"
            );
            assert!(!err.message().contains('\n'));
        }
    }
}
