//! Re-runs that do only what changed (`stagehost run --resume`): the one rule that
//! decides, from a workflow's journal, whether a task may be skipped.
//!
//! A task is skipped when its last record in the journal says it succeeded, and it
//! still has the same executor, the same command text, the same input and output
//! URLs, every input has the identity recorded when it last ran, and every local
//! output is still there with the identity recorded when it was staged out.
//!
//! - A local file's identity is what a stat shows (size, modification time in ns,
//!   inode): a touched input re-runs its task, as make would.
//! - A remote input is asked again through its provider (a stage-in revalidates the
//!   copy; an unchanged file leaves the copy as it was): its copy's identity after the
//!   stage-in must be the one recorded. [`Verdict::Revalidate`] names those inputs.
//! - A remote output is taken as the record says: no provider can be asked about a
//!   file without fetching it yet.
//!
//! A task whose record is missing, failed, was cancelled or was torn off by a kill
//! runs again; so does every task downstream of one that ran, since its input (the
//! producer's output, rewritten) no longer has the identity it recorded.

use std::collections::HashMap;
use std::path::Path;

use crate::journal::{local_path_of, stat_identity, Identity, Record, TaskRecord};
use crate::report::TaskStatus;

/// What `--resume` does with a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing it depends on changed: it is skipped.
    Unchanged,
    /// Unchanged as far as this host can see; these inputs (by index) are remote and
    /// must be staged in again to learn whether they changed: the task is skipped if
    /// each copy then has the identity recorded.
    Revalidate(Vec<(usize, Identity)>),
    /// It runs, for this reason.
    Changed(String),
}

/// The last record of each task of a workflow.
#[derive(Debug, Default)]
pub struct History {
    last: HashMap<String, TaskRecord>,
    /// Tasks asked to run whatever their records say (`--rerun`).
    forced: std::collections::HashSet<String>,
}

impl History {
    /// The history in the journal at `path`; an absent journal is an empty history.
    pub fn read(path: &Path) -> std::io::Result<History> {
        let records = match crate::journal::read_records(path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut last = HashMap::new();
        for record in records {
            if let Record::Task(t) = record {
                last.insert(t.name.clone(), t);
            }
        }
        Ok(History {
            last,
            forced: Default::default(),
        })
    }

    /// Has task `name` run whatever its record says (`--rerun`, as make's `-B` or
    /// Snakemake's `--forcerun` for one task); its consumers follow, as for any task
    /// that runs.
    pub fn rerun(&mut self, name: &str) {
        self.forced.insert(name.to_owned());
    }

    /// The last record of task `name`.
    pub fn last(&self, name: &str) -> Option<&TaskRecord> {
        self.last.get(name)
    }

    /// How many tasks have a record.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no task has a record.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// What `--resume` does with task `name`, run by `executor` with `command`, whose
    /// inputs and outputs (then stdout, stderr) have the URLs given, redacted.
    pub fn verdict(
        &self,
        name: &str,
        executor: &str,
        command: &str,
        inputs: &[String],
        outputs: &[String],
    ) -> Verdict {
        if self.forced.contains(name) {
            return Verdict::Changed("--rerun asks for it".into());
        }
        let Some(rec) = self.last.get(name) else {
            return Verdict::Changed("it has no record of a run".into());
        };
        match rec.status {
            TaskStatus::Succeeded => {}
            TaskStatus::StageOutFailed => {
                return Verdict::Changed("its outputs were not all staged out last time".into())
            }
            TaskStatus::Cancelled => return Verdict::Changed("it was cancelled last time".into()),
            TaskStatus::DependencyFailed => {
                return Verdict::Changed("it lost an input last time".into())
            }
            TaskStatus::Failed | TaskStatus::Skipped => {
                return Verdict::Changed("it failed last time".into())
            }
        }
        if rec.executor != executor {
            return Verdict::Changed(format!("its executor changed ({:?} before)", rec.executor));
        }
        if rec.command_sha256.as_deref() != Some(crate::journal::command_hash(command).as_str()) {
            return Verdict::Changed("its command changed".into());
        }
        if let Some(why) = urls_changed("inputs", &rec.inputs, inputs) {
            return Verdict::Changed(why);
        }
        if let Some(why) = urls_changed("outputs", &rec.outputs, outputs) {
            return Verdict::Changed(why);
        }
        let mut remote = Vec::new();
        for (i, (now, was)) in inputs.iter().zip(&rec.inputs).enumerate() {
            let Some(recorded) = &was.identity else {
                return Verdict::Changed(format!("input {} has no recorded identity", now));
            };
            match local_path_of(now) {
                Some(path) => {
                    if let Some(why) = drift(&path, recorded) {
                        return Verdict::Changed(format!("input {} {why}", now));
                    }
                }
                None => remote.push((i, recorded.clone())),
            }
        }
        for (now, was) in outputs.iter().zip(&rec.outputs) {
            // A member of a local zip archive: the archive at least must be there.
            if let Some(archive) = local_zip_archive(now) {
                if !archive.exists() {
                    return Verdict::Changed(format!(
                        "output {now}: its archive {} is gone",
                        archive.display()
                    ));
                }
            }
            if let Some(path) = local_path_of(now) {
                if stagehost_plugin_api::File::parse(now)
                    .is_ok_and(|f| crate::tree::is_directory_output(&f))
                {
                    // Its files are not recorded one by one: an edit inside would go
                    // unseen, so it is made again.
                    return Verdict::Changed(format!(
                        "output {now} is a local directory, whose files are not checked one by one"
                    ));
                }
                let Some(recorded) = &was.identity else {
                    return Verdict::Changed(format!("output {} has no recorded identity", now));
                };
                if let Some(why) = drift(&path, recorded) {
                    return Verdict::Changed(format!("output {} {why}", now));
                }
            }
        }
        if remote.is_empty() {
            Verdict::Unchanged
        } else {
            Verdict::Revalidate(remote)
        }
    }
}

/// The local archive a `zip:` URL without a host names a member of (everything up to
/// the first `.zip/`), as the zip provider reads it.
fn local_zip_archive(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("zip:")?;
    if rest.starts_with("//") {
        return None;
    }
    let end = rest.find(".zip/")? + ".zip".len();
    Some(std::path::PathBuf::from(&rest[..end]))
}

/// How the file at `path` differs from `recorded`, in words; `None` when it does not.
/// A file whose stat changed is still the same version when the identity holds a
/// SHA-256 (the task asked for `checksum = "sha256"`, or the URL named one) and the
/// file's content still has it: touched, or rewritten with the same bytes.
pub fn drift(path: &Path, recorded: &Identity) -> Option<String> {
    match stat_identity(path) {
        None => Some(match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                format!("cannot be looked at: {e}")
            }
            _ => "is gone".into(),
        }),
        Some(now) if now.same_stat(recorded) => None,
        Some(now)
            if now.size == recorded.size
                && recorded.sha256.as_deref().is_some_and(|want| {
                    crate::checksum::digest(crate::checksum::Algorithm::Sha256, path)
                        .is_ok_and(|got| got == want)
                }) =>
        {
            None
        }
        Some(now) if now.size != recorded.size => Some(format!(
            "changed ({} bytes, {} when recorded)",
            now.size, recorded.size
        )),
        Some(now) if now.inode != recorded.inode => Some("was replaced".into()),
        Some(_) => Some("was modified since".into()),
    }
}

/// How the copy of remote input `url` at `copy` differs from `recorded` after its
/// stage-in, in words; `None` when it is the version recorded: the copy is untouched
/// (the provider found it current), or it was fetched again and its provider recorded
/// the same strong validator (an ETag that is not weak, or a Last-Modified a second
/// older than its response) for the same size.
pub fn remote_drift(
    url: &str,
    copy: &Path,
    working_dir: &Path,
    recorded: &Identity,
) -> Option<String> {
    let why = drift(copy, recorded)?;
    let now = crate::journal::identity_of(url, Some(copy), working_dir)?;
    let same_version = now.size == recorded.size
        && now.validator.is_some()
        && now.validator == recorded.validator
        && !now
            .validator
            .as_deref()
            .is_some_and(|v| v.starts_with("W/"));
    if same_version {
        return None;
    }
    Some(match (&recorded.validator, &now.validator) {
        (None, _) => {
            format!("was fetched again: no validator was recorded to ask its server with ({why})")
        }
        (Some(_), None) => format!("changed on its server ({why}; it sent no validator)"),
        (Some(was), Some(is)) if was != is => {
            format!("changed on its server (validator {is}, {was} when recorded)")
        }
        _ => format!("changed on its server ({why})"),
    })
}

/// What a bulk check (`bulk`) says about a remote input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// Its server holds the version recorded, and the copy here is untouched: no
    /// stage-in is needed.
    Current,
    /// It changed on its server, or is gone, in these words.
    Changed(String),
    /// The answer cannot tell (no validator, a weak one, a copy touched here): the
    /// input is staged in again to find out.
    Unknown,
}

/// A validator as compared: without the quotes an ETag is written with; `None` for
/// none or a weak one (`W/`), which cannot prove the bytes the same.
fn strong(validator: &str) -> Option<&str> {
    let v = validator.trim();
    (!v.is_empty() && !v.starts_with("W/")).then(|| v.trim_matches('"'))
}

/// What `answer` (a bulk check of remote input `url`) proves about the version
/// `recorded`, whose copy the task read at `copy`. Current only when the server's
/// strong validator and size are the recorded ones and the copy is as recorded.
pub fn bulk_proof(answer: &crate::bulk::Answer, copy: Option<&Path>, recorded: &Identity) -> Proof {
    if crate::bulk::is_gone(answer) {
        return Proof::Changed("is gone from its server".into());
    }
    let Ok(Some(entry)) = answer else {
        return Proof::Unknown;
    };
    let (Some(now), Some(was)) = (
        strong(&entry.validator),
        recorded.validator.as_deref().and_then(strong),
    ) else {
        return Proof::Unknown;
    };
    // Only ETags are compared with ETags: a Last-Modified recorded where the server
    // now lists an ETag proves nothing either way.
    let etags = entry.validator.trim().starts_with('"')
        && recorded
            .validator
            .as_deref()
            .is_some_and(|v| v.trim().starts_with('"'));
    if now != was {
        return if etags {
            Proof::Changed(format!(
                "changed on its server (ETag {}, {} when recorded)",
                entry.validator,
                recorded.validator.as_deref().unwrap_or("")
            ))
        } else {
            Proof::Unknown
        };
    }
    match entry.size {
        Some(size) if size != recorded.size => {
            return Proof::Changed(format!(
                "changed on its server ({size} bytes, {} when recorded)",
                recorded.size
            ))
        }
        Some(_) => {}
        None => return Proof::Unknown,
    }
    match copy {
        Some(copy) if drift(copy, recorded).is_none() => Proof::Current,
        _ => Proof::Unknown,
    }
}

/// Why the URLs of `kind` differ from the record, if they do.
fn urls_changed(kind: &str, was: &[crate::journal::FileRecord], now: &[String]) -> Option<String> {
    if was.len() != now.len() {
        return Some(format!(
            "its {kind} changed ({} now, {} before)",
            now.len(),
            was.len()
        ));
    }
    was.iter()
        .zip(now)
        .find(|(w, n)| &w.url != *n)
        .map(|(w, n)| format!("its {kind} changed ({} now, {} before)", n, w.url))
}

#[cfg(test)]
mod tests {
    use stagehost_plugin_api::capability::Entry;

    #[test]
    fn a_bulk_answer_proves_a_version_only_with_the_same_strong_etag_size_and_copy() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        std::fs::write(&copy, "abc").unwrap();
        let mut recorded = crate::journal::stat_identity(&copy).unwrap();
        recorded.validator = Some("\"e1\"".into());
        let answer = |validator: &str, size: Option<u64>| -> crate::bulk::Answer {
            let mut e = Entry::file("").with_validator(validator);
            e.size = size;
            Ok(Some(e))
        };
        let proof = |a: &crate::bulk::Answer| bulk_proof(a, Some(&copy), &recorded);
        assert_eq!(proof(&answer("\"e1\"", Some(3))), Proof::Current);
        // Listings may drop the quotes: the same ETag.
        assert_eq!(proof(&answer("e1", Some(3))), Proof::Current);
        assert!(
            matches!(proof(&answer("\"e2\"", Some(3))), Proof::Changed(w) if w.contains("ETag"))
        );
        assert!(
            matches!(proof(&answer("\"e1\"", Some(4))), Proof::Changed(w) if w.contains("4 bytes"))
        );
        assert!(matches!(proof(&Ok(None)), Proof::Changed(w) if w.contains("gone")));
        // What cannot tell: no size, a weak or missing ETag, a date against an ETag.
        assert_eq!(proof(&answer("\"e1\"", None)), Proof::Unknown);
        assert_eq!(proof(&answer("W/\"e1\"", Some(3))), Proof::Unknown);
        assert_eq!(proof(&answer("", Some(3))), Proof::Unknown);
        let mut dated = recorded.clone();
        dated.validator = Some("Sun, 06 Nov 1994 08:49:37 GMT".into());
        assert_eq!(
            bulk_proof(&answer("\"e9\"", Some(3)), Some(&copy), &dated),
            Proof::Unknown
        );
        // The server's version is the recorded one, but the copy here was touched or
        // is gone: it must be staged in again.
        std::fs::write(&copy, "xyz").unwrap();
        assert_eq!(proof(&answer("\"e1\"", Some(3))), Proof::Unknown);
        assert_eq!(
            bulk_proof(&answer("\"e1\"", Some(3)), None, &recorded),
            Proof::Unknown
        );
    }

    use super::*;
    use crate::journal::{FileRecord, Journal};

    fn file(url: &str, identity: Option<Identity>) -> FileRecord {
        FileRecord {
            url: url.into(),
            local_path: None,
            ok: true,
            identity,
        }
    }

    #[test]
    fn a_task_is_skipped_only_when_all_it_depends_on_is_as_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        let output = dir.path().join("out.txt");
        std::fs::write(&input, "a").unwrap();
        std::fs::write(&output, "b").unwrap();
        let (i, o) = (input.to_str().unwrap(), output.to_str().unwrap());
        let path = dir.path().join("j.jsonl");
        let j = Journal::open(&path).unwrap();
        let record = |status| {
            Record::Task(TaskRecord {
                name: "t".into(),
                executor: "local".into(),
                status,
                command: Some("cp {inputs[0]} {outputs[0]}".into()),
                command_sha256: Some(crate::journal::command_hash("cp {inputs[0]} {outputs[0]}")),
                ended: 0.0,
                inputs: vec![
                    file(i, stat_identity(&input)),
                    file("http://h/x", stat_identity(&input)),
                ],
                outputs: vec![file(o, stat_identity(&output))],
            })
        };
        j.append_record(&record(TaskStatus::Failed));
        j.append_record(&record(TaskStatus::Succeeded));
        j.close();
        let h = History::read(&path).unwrap();
        let ins = [i.to_owned(), "http://h/x".to_owned()];
        let outs = [o.to_owned()];
        let cmd = "cp {inputs[0]} {outputs[0]}";
        // The last record wins; the remote input is left to a revalidation.
        assert!(matches!(
            h.verdict("t", "local", cmd, &ins, &outs),
            Verdict::Revalidate(r) if r.len() == 1 && r[0].0 == 1
        ));
        let changed = |v: Verdict| match v {
            Verdict::Changed(why) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            changed(h.verdict("u", "local", cmd, &ins, &outs)),
            "it has no record of a run"
        );
        assert!(changed(h.verdict("t", "slurm", cmd, &ins, &outs)).contains("executor"));
        assert_eq!(
            changed(h.verdict("t", "local", "cat", &ins, &outs)),
            "its command changed"
        );
        assert!(changed(h.verdict("t", "local", cmd, &ins[..1], &outs)).contains("inputs"));
        std::fs::remove_file(&output).unwrap();
        assert_eq!(
            changed(h.verdict("t", "local", cmd, &ins, &outs)),
            format!("output {o} is gone")
        );
        std::fs::write(&input, "longer").unwrap();
        assert!(changed(h.verdict("t", "local", cmd, &ins, &outs))
            .starts_with(&format!("input {i} changed")));
        // An absent journal is an empty history: everything runs.
        assert!(History::read(&dir.path().join("none.jsonl"))
            .unwrap()
            .is_empty());
    }
}
