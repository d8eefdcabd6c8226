//! One attempt of a task's body, the same wherever it runs: the engine's `local`
//! executor runs it on its worker threads, and a pilot's worker runs it on its node.
//! Its in-task stage-ins run in order and the first failure ends the attempt; then the
//! body; then the check that every declared output exists (as Parsl's bash_app raises
//! `MissingOutputs`); then its in-task stage-outs, whose failures are their files' own.

use std::path::PathBuf;

use stagehost_plugin_api::display;

use super::error::{BodyError, StepFailure};

/// An in-task stage-in: its file's failure, if it failed.
pub(crate) type StageIn<'a> = Box<dyn FnOnce() -> Result<(), StepFailure> + 'a>;
/// An in-task stage-out: it records its own outcome.
pub(crate) type StageOut<'a> = Box<dyn FnOnce() + 'a>;

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
    body()?;
    let missing: Vec<String> = outputs
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_err())
        .map(|p| display::path(p))
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
        attempt(vec![step("in", true)], || Ok(()), &[], vec![out("out")]).unwrap();
        assert_eq!(*log.borrow(), ["in", "out"]);
    }
}
