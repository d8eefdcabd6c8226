//! Mirrors: one file with several sources, as Metalink and gfal2 users list them. The
//! sources are tried in order, each a whole stage-in of its own (planned through the
//! provider its URL chooses, then run under the transfer policy, retries included)
//! to one destination; the first that stages wins. A source that fails for any reason
//! (a server error, a cut body, a missing file, a checksum mismatch, a provider that
//! refuses it) moves to the next; only a cancellation stops the search.
//!
//! Invariants:
//! - one destination for every source: `<working_dir>/<the first source's name>`,
//!   claimed for the first source's URL, so the task sees one path whatever served it;
//! - nothing partial is left: each attempt writes under a temporary name and renames
//!   only a whole file (and one whose checksum failed is removed), as every stage-in;
//! - a checksum given for the file (`sha256 = ...`) is put in each source's fragment
//!   ([`with_checksum`]) and verified on every source's copy;
//! - the outcome names the source used, and every failure before it, each one line.

use std::path::PathBuf;

use stagehost_plugin_api::{ErrorKind, File, StageError};

use crate::data_manager::{DataManager, Direction, ProviderFailure, StageOptions, StagingError};
use crate::runner::{run_planned, StageOutcome};
use crate::transfer::Transfers;

/// What staging a file from its mirrors did.
pub struct MirrorOutcome {
    /// The source that staged (its index in the list) and how, when one did.
    pub used: Option<(usize, StageOutcome)>,
    /// Each source that failed before it (or all, when none staged), in order.
    pub failures: Vec<(String, StagingError)>,
    /// Whether the search stopped because the run was cancelled.
    pub cancelled: bool,
}

impl MirrorOutcome {
    /// The sources that failed and why, each as its error says it, joined by `; `.
    pub fn failures_line(&self) -> String {
        let tried: Vec<String> = self.failures.iter().map(|(_, e)| e.to_string()).collect();
        tried.join("; ")
    }

    /// One line naming every source that failed and why, for when none staged.
    pub fn error_line(&self) -> String {
        let tried: Vec<String> = self.failures.iter().map(|(_, e)| e.to_string()).collect();
        if self.cancelled {
            format!(
                "cancelled after {} source(s): {}",
                tried.len(),
                tried.join("; ")
            )
        } else {
            format!(
                "none of its {} source(s) could be staged: {}",
                tried.len(),
                tried.join("; ")
            )
        }
    }

    /// The class every source's failure shares, else `other` (as a run's exit code
    /// is one class's only when every failure has it).
    pub fn class(&self) -> crate::report::FailureClass {
        let mut classes = self.failures.iter().map(|(_, e)| e.class());
        match classes.next() {
            Some(first) if classes.all(|c| c == first) => first,
            _ => crate::report::FailureClass::Other,
        }
    }
}

/// `sources` with `sha256=<hex>` first in each fragment, so it is the checksum every
/// source's copy is verified against (a checksum a source names itself, `md5=` say,
/// stays after it). A source naming another `sha256` (in any case) contradicts the file
/// and is an error, as is a `sha256` that is not 64 hex digits.
pub fn with_checksum(sources: &[String], sha256: Option<&str>) -> Result<Vec<String>, String> {
    let Some(sum) = sha256 else {
        return Ok(sources.to_vec());
    };
    if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "sha256 must be 64 hexadecimal digits, not {:?}",
            stagehost_plugin_api::display::escape(sum)
        ));
    }
    let sum = sum.to_ascii_lowercase();
    sources
        .iter()
        .map(|url| {
            let (base, fragment) = url.split_once('#').unwrap_or((url, ""));
            let mut rest = Vec::new();
            for part in fragment.split('&').filter(|p| !p.is_empty()) {
                match part.split_once('=') {
                    Some((key, value)) if key.eq_ignore_ascii_case("sha256") => {
                        if !value.eq_ignore_ascii_case(&sum) {
                            return Err(format!(
                                "{} names another sha256 than the file's {sum}",
                                stagehost_plugin_api::redact_url(url)
                            ));
                        }
                    }
                    _ => rest.push(part),
                }
            }
            let mut out = format!("{base}#sha256={sum}");
            for part in rest {
                out.push('&');
                out.push_str(part);
            }
            Ok(out)
        })
        .collect()
}

impl DataManager {
    /// Where a file with mirrors lands on `executor` (or under `working_dir`):
    /// `<working_dir>/<the first source's name>`, claimed for the whole list of sources
    /// (two inputs whose first sources agree but whose others differ are two files,
    /// and never share a destination).
    pub fn mirror_destination(
        &self,
        executor: &str,
        sources: &[File],
        working_dir: Option<&std::path::Path>,
    ) -> Result<PathBuf, StagingError> {
        let base = match working_dir {
            Some(dir) => dir.to_path_buf(),
            None => self.working_dir(executor)?.to_path_buf(),
        };
        let first = sources.first().map_or("", |f| f.filename());
        let key: Vec<&str> = sources.iter().map(File::url).collect();
        let key = if key.len() == 1 {
            key[0].to_owned()
        } else {
            format!("mirrors:{}", key.join("\n"))
        };
        Ok(self
            .claim(&base, crate::data_manager::landing_name(first), &key)
            .0)
    }
}

/// Stages the first of `sources` that can be staged in to `opts.destination`, trying
/// each in order (see the module docs). Planning blocks: on a multi-threaded tokio
/// runtime it runs in place of the worker (`block_in_place`); call it elsewhere from a
/// thread that may block.
pub async fn stage_in_first(
    dm: &DataManager,
    transfers: &Transfers,
    executor: &str,
    sources: &[File],
    opts: &StageOptions,
) -> MirrorOutcome {
    if let Some(current) = already_there(dm, executor, sources, opts) {
        return current;
    }
    let mut failures = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        if transfers.token.is_cancelled() {
            return MirrorOutcome {
                used: None,
                failures,
                cancelled: true,
            };
        }
        let planned = blocking(|| dm.plan_stage_in(executor, source, opts));
        let staging = match planned {
            Ok(staging) => staging,
            Err(e) => {
                tracing::info!(
                    "source {} of {} failed, trying the next: {e}",
                    i + 1,
                    sources.len()
                );
                failures.push((source.redacted_url(), e));
                continue;
            }
        };
        let mut outcome = run_planned(transfers, staging, source).await;
        if outcome.result.is_ok() {
            // A source used where it is (a local file, staged in place) stages without
            // a byte moving: it counts only if the file is there.
            if let Ok(path) = outcome.staging.file.filepath() {
                if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                    let p = &outcome.staging.provider;
                    outcome.result = Err(StagingError::Provider(Box::new(ProviderFailure {
                        direction: Direction::In,
                        url: source.redacted_url(),
                        instance: p.name.clone(),
                        plugin: format!("{} {}", p.plugin.name, p.plugin.version),
                        executor: executor.to_owned(),
                        call: "staged in place",
                        error: StageError::new(
                            ErrorKind::NotFound,
                            format!(
                                "{} does not exist",
                                stagehost_plugin_api::display::path(&path)
                            ),
                        ),
                    })));
                }
            }
        }
        match &outcome.result {
            Ok(()) => {
                return MirrorOutcome {
                    used: Some((i, outcome)),
                    failures,
                    cancelled: false,
                }
            }
            Err(e) => {
                tracing::info!(
                    "source {} of {} failed, trying the next: {e}",
                    i + 1,
                    sources.len()
                );
                let e = match outcome.result {
                    Err(e) => e,
                    Ok(()) => unreachable!("matched as an error just above"),
                };
                failures.push((source.redacted_url(), e));
            }
        }
    }
    MirrorOutcome {
        used: None,
        failures,
        cancelled: transfers.token.is_cancelled(),
    }
}

/// The file, when its destination already holds it: a copy stagehost put there whose
/// bytes have the checksum the first source names. Nothing is asked of any source (a
/// failing one would replace the good copy before its bytes were found wrong); the
/// outcome is the first source's, cached.
fn already_there(
    dm: &DataManager,
    executor: &str,
    sources: &[File],
    opts: &StageOptions,
) -> Option<MirrorOutcome> {
    let first = sources.first()?;
    let dest = opts.destination.as_ref()?;
    let sum = crate::checksum::Checksum::from_url(first.url()).ok()??;
    let working_dir = match &opts.working_dir {
        Some(dir) => dir.clone(),
        None => dm.working_dir(executor).ok()?.to_path_buf(),
    };
    let meta = std::fs::symlink_metadata(dest).ok()?;
    if !meta.is_file()
        || !stagehost_plugin_api::landing::replaceable(dest, &working_dir)
        || sum.verify(dest).is_err()
    {
        return None;
    }
    let mut staging = blocking(|| dm.plan_stage_in(executor, first, opts)).ok()?;
    let modes = staging.modes();
    staging.separate_job = None;
    staging.in_task_step = None;
    tracing::info!(
        "{} is current at {} (its checksum matches): no source asked",
        first.redacted_url(),
        stagehost_plugin_api::display::path(dest)
    );
    Some(MirrorOutcome {
        used: Some((
            0,
            StageOutcome {
                staging,
                attempts: 0,
                bytes: Some(meta.len()),
                cached: true,
                result: Ok(()),
                modes,
            },
        )),
        failures: Vec::new(),
        cancelled: false,
    })
}

/// Runs `f`, which may block, without stalling a multi-threaded runtime's worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_checksum_comes_first_in_every_sources_fragment() {
        let sum = "AB".repeat(32);
        let lower = sum.to_ascii_lowercase();
        let got = with_checksum(
            &[
                "https://a/x".into(),
                "ftp://b/x#".into(),
                "s3://c/x#md5=00".into(),
                format!("https://d/x#SHA256={lower}&adler32=01"),
            ],
            Some(&sum),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                format!("https://a/x#sha256={lower}"),
                format!("ftp://b/x#sha256={lower}"),
                format!("s3://c/x#sha256={lower}&md5=00"),
                format!("https://d/x#sha256={lower}&adler32=01"),
            ]
        );
        // A source naming another sha256, in any case, contradicts the file.
        for other in [
            format!("https://e/x#sha256={}", "cd".repeat(32)),
            format!("https://e/x#Sha256={}&sha256={lower}", "cd".repeat(32)),
        ] {
            assert!(with_checksum(&[other], Some(&sum))
                .unwrap_err()
                .contains("names another sha256"));
        }
        assert!(with_checksum(&["a".into()], Some("123"))
            .unwrap_err()
            .contains("64 hexadecimal digits"));
        assert_eq!(with_checksum(&["a".into()], None).unwrap(), ["a"]);
    }
}
