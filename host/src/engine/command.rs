//! Shell-command bodies: placeholder expansion (`{inputs[i]}`, `{outputs[i]}`,
//! `{stdout}`, `{stderr}`), quoting, and running `sh -c` in the working directory.
//!
//! Invariant: only those exact placeholders are replaced; every other brace (awk,
//! shell `${var}`) is left alone.

use std::path::Path;
use std::process::Stdio;

use super::task::TaskFiles;

/// `text` quoted for `sh`: as is when it holds only safe characters, else in single
/// quotes.
pub fn shell_quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '.' | '_' | '-' | '+' | ',' | ':' | '@' | '%' | '=')
        });
    if safe {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A placeholder found in a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{inputs[i]}`
    Input(usize),
    /// `{outputs[i]}`
    Output(usize),
    /// `{stdout}`
    Stdout,
    /// `{stderr}`
    Stderr,
}

/// Splits `command` into literal text and placeholders.
fn parse(command: &str) -> Vec<Result<&str, (Placeholder, &str)>> {
    let mut parts = Vec::new();
    let mut rest = command;
    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        let found = after.find('}').and_then(|close| {
            let inner = &after[1..close];
            let placeholder = match inner {
                "stdout" => Some(Placeholder::Stdout),
                "stderr" => Some(Placeholder::Stderr),
                _ => {
                    let index = |prefix: &str| {
                        inner
                            .strip_prefix(prefix)?
                            .strip_suffix(']')?
                            .parse::<usize>()
                            .ok()
                    };
                    index("inputs[")
                        .map(Placeholder::Input)
                        .or_else(|| index("outputs[").map(Placeholder::Output))
                }
            };
            placeholder.map(|p| (p, &after[..=close]))
        });
        match found {
            Some((p, text)) => {
                parts.push(Ok(&rest[..open]));
                parts.push(Err((p, text)));
                rest = &rest[open + text.len()..];
            }
            None => {
                parts.push(Ok(&rest[..=open]));
                rest = &rest[open + 1..];
            }
        }
    }
    parts.push(Ok(rest));
    parts
}

/// Checks every placeholder of `command` against the task's files; the error names
/// the placeholder and what the task has.
pub fn check(
    command: &str,
    inputs: usize,
    outputs: usize,
    stdout: bool,
    stderr: bool,
) -> Result<(), String> {
    for part in parse(command) {
        if let Err((p, text)) = part {
            let ok = match p {
                Placeholder::Input(i) => i < inputs,
                Placeholder::Output(i) => i < outputs,
                Placeholder::Stdout => stdout,
                Placeholder::Stderr => stderr,
            };
            if !ok {
                return Err(format!(
                    "the command uses {text}, but the task has {inputs} input(s), {outputs} output(s){}{}",
                    if stdout { ", stdout" } else { "" },
                    if stderr { ", stderr" } else { "" }
                ));
            }
        }
    }
    Ok(())
}

/// `command` with its placeholders replaced by the quoted paths of `files`.
pub fn expand(command: &str, files: &TaskFiles) -> Result<String, String> {
    check(
        command,
        files.inputs.len(),
        files.outputs.len(),
        files.stdout.is_some(),
        files.stderr.is_some(),
    )?;
    let quoted = |p: &Path| shell_quote(&p.to_string_lossy());
    let mut out = String::with_capacity(command.len() + 64);
    for part in parse(command) {
        match part {
            Ok(text) => out.push_str(text),
            Err((p, _)) => out.push_str(&match p {
                Placeholder::Input(i) => quoted(&files.inputs[i]),
                Placeholder::Output(i) => quoted(&files.outputs[i]),
                Placeholder::Stdout => quoted(files.stdout.as_deref().expect("checked")),
                Placeholder::Stderr => quoted(files.stderr.as_deref().expect("checked")),
            }),
        }
    }
    Ok(out)
}

fn open_for_output(path: &Path) -> Result<std::fs::File, String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Runs `command` (already expanded) with `sh -c` in the working directory, sending
/// stdout/stderr to their files when given. Creates the outputs' directories first.
/// Returns when the command exits, or kills it when `cancelled` resolves first.
pub async fn run(
    command: &str,
    files: &TaskFiles,
    cancelled: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    std::fs::create_dir_all(&files.working_dir).map_err(|e| {
        format!(
            "cannot create working_dir {}: {e}",
            files.working_dir.display()
        )
    })?;
    for out in &files.outputs {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
    }
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&files.working_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match &files.stdout {
        Some(p) => cmd.stdout(open_for_output(p)?),
        None => cmd.stdout(Stdio::null()),
    };
    let capture_stderr = files.stderr.is_none();
    match &files.stderr {
        Some(p) => cmd.stderr(open_for_output(p)?),
        None => cmd.stderr(Stdio::piped()),
    };
    let child = cmd.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| format!("waiting for the command: {e}"))?,
        () = cancelled => return Err("cancelled".to_owned()),
    };
    if output.status.success() {
        return Ok(());
    }
    let status = match output.status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    let tail = if capture_stderr {
        let text = String::from_utf8_lossy(&output.stderr);
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Err(format!("the command failed with {status}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b.txt"), "/a/b.txt");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn expansion_leaves_other_braces_alone() {
        let files = TaskFiles {
            inputs: vec![PathBuf::from("/in/a b.txt")],
            outputs: vec![PathBuf::from("/out/x.txt")],
            stdout: Some(PathBuf::from("/log/o")),
            ..TaskFiles::default()
        };
        let cmd = "awk '{print $1}' {inputs[0]} > {outputs[0]}; echo ${HOME} {stdout} {inputs[x]}";
        assert_eq!(
            expand(cmd, &files).unwrap(),
            "awk '{print $1}' '/in/a b.txt' > /out/x.txt; echo ${HOME} /log/o {inputs[x]}"
        );
    }

    #[test]
    fn out_of_range_placeholders_are_errors() {
        let err = check("cat {inputs[2]}", 2, 0, false, false).unwrap_err();
        assert_eq!(
            err,
            "the command uses {inputs[2]}, but the task has 2 input(s), 0 output(s)"
        );
        assert!(check("cat {stderr}", 0, 0, true, false).is_err());
        assert!(check("cat {stdout}", 0, 0, true, false).is_ok());
    }
}
