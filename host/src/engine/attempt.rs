//! One attempt of a task's body, the same wherever it runs: the engine's `local`
//! executor runs it on its worker threads, and a pilot's worker runs it on its node.
//! Its in-task stage-ins run in order and the first failure ends the attempt; then the
//! body; then the check that every declared output was written (as Parsl's bash_app
//! raises `MissingOutputs`; a file left from before the attempt, untouched, does not
//! count); then its in-task stage-outs, whose failures are their files' own.

use std::path::PathBuf;

use stagehost_plugin_api::display;

use super::error::{BodyError, StepFailure};

/// An in-task stage-in: its file's failure, if it failed.
pub(crate) type StageIn<'a> = Box<dyn FnOnce() -> Result<(), StepFailure> + 'a>;
/// An in-task stage-out: it records its own outcome.
pub(crate) type StageOut<'a> = Box<dyn FnOnce() + 'a>;

/// What identifies one state of a file: device, inode and change time (which any
/// write, truncation, chmod or rename onto it moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    changed: std::time::SystemTime,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    let since_epoch = std::time::Duration::new(
        u64::try_from(m.ctime()).unwrap_or(0),
        u32::try_from(m.ctime_nsec()).unwrap_or(0),
    );
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        changed: std::time::UNIX_EPOCH + since_epoch,
    })
}

/// Runs one attempt: `ins`, `body`, the outputs' check, `outs`.
pub(crate) fn attempt(
    ins: Vec<StageIn<'_>>,
    body: impl FnOnce() -> Result<(), BodyError>,
    outputs: &[PathBuf],
    outs: Vec<StageOut<'_>>,
) -> Result<(), BodyError> {
    for step in ins {
        step().map_err(BodyError::StageIn)?;
    }
    // What was at each output before the body: a file the body left untouched (same
    // inode, same change time) was not written by it. File times tick coarsely (a
    // few ms), so only a file last changed well before now can be told apart from
    // one the body rewrote at once; a newer one is taken as written.
    let settled = std::time::SystemTime::now() - std::time::Duration::from_millis(100);
    // A directory output (made by the host before the body) may rightly stay empty:
    // only files are checked.
    let outputs: Vec<&PathBuf> = outputs
        .iter()
        .filter(|p| !std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .collect();
    let before: Vec<Option<Stamp>> = outputs
        .iter()
        .map(|p| stamp(p).filter(|s| s.changed < settled))
        .collect();
    body()?;
    let missing: Vec<String> = outputs
        .iter()
        .zip(&before)
        .filter_map(|(p, was)| match stamp(p) {
            None => Some(display::path(p)),
            Some(now) if Some(now) == *was => Some(format!(
                "{} (the file there is from before the task, untouched)",
                display::path(p)
            )),
            Some(_) => None,
        })
        .collect();
    if !missing.is_empty() {
        return Err(BodyError::MissingOutputs(missing));
    }
    for step in outs {
        step();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn a_failed_stage_in_ends_the_attempt_and_outs_run_only_after_the_body() {
        let log = RefCell::new(Vec::new());
        let step = |name: &'static str, ok: bool| -> StageIn<'_> {
            let log = &log;
            Box::new(move || {
                log.borrow_mut().push(name);
                if ok {
                    Ok(())
                } else {
                    Err(StepFailure {
                        line: format!("{name} broke"),
                        kind: None,
                    })
                }
            })
        };
        let out = |name: &'static str| -> StageOut<'_> {
            let log = &log;
            Box::new(move || log.borrow_mut().push(name))
        };
        let e = attempt(
            vec![step("in1", true), step("in2", false), step("in3", true)],
            || {
                log.borrow_mut().push("body");
                Ok(())
            },
            &[],
            vec![out("out1")],
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "stage-in failed: in2 broke");
        assert_eq!(*log.borrow(), ["in1", "in2"]);
        log.borrow_mut().clear();
        let missing = std::env::temp_dir().join("stagehost-attempt-never-written");
        let e = attempt(
            vec![],
            || Ok(()),
            std::slice::from_ref(&missing),
            vec![out("out1")],
        )
        .unwrap_err();
        assert!(matches!(&e, BodyError::MissingOutputs(paths) if paths.len() == 1));
        assert!(
            e.to_string()
                .starts_with("missing outputs: the command exited 0 but did not write"),
            "{e}"
        );
        assert!(
            log.borrow().is_empty(),
            "no stage-out after a failed attempt"
        );
        // A file from before the attempt that the body leaves untouched was not
        // written: missing; the same file written by the body counts.
        let stale =
            std::env::temp_dir().join(format!("stagehost-attempt-stale-{}", std::process::id()));
        std::fs::write(&stale, "old").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        let e = attempt(vec![], || Ok(()), std::slice::from_ref(&stale), vec![]).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("(the file there is from before the task, untouched)"),
            "{e}"
        );
        attempt(
            vec![],
            || {
                std::fs::write(&stale, "new").unwrap();
                Ok(())
            },
            std::slice::from_ref(&stale),
            vec![],
        )
        .unwrap();
        std::fs::remove_file(&stale).unwrap();
        attempt(vec![step("in", true)], || Ok(()), &[], vec![out("out")]).unwrap();
        assert_eq!(*log.borrow(), ["in", "out"]);
    }
}
