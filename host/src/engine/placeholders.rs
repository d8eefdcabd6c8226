//! A command's placeholders (`{inputs[i]}`, `{outputs[i]}`, `{stdout}`, `{stderr}`):
//! checked against a task's files at submit, expanded to quoted paths before the
//! command runs; and quoting for `sh`.
//!
//! Invariants:
//! - only those exact placeholders are replaced; every other brace (awk, shell
//!   `${var}`) is left alone;
//! - a path keeps its exact bytes through expansion (the command is an `OsString`).

use std::ffi::OsString;
use std::path::Path;

use super::task::TaskFiles;

/// `text` quoted for `sh`: as is when it holds only safe characters, else in single
/// quotes.
pub fn shell_quote(text: &str) -> String {
    let quoted = shell_quote_bytes(text.as_bytes());
    String::from_utf8(quoted).expect("quoting UTF-8 adds only ASCII")
}

fn shell_quote_bytes(text: &[u8]) -> Vec<u8> {
    let safe = !text.is_empty()
        && text.iter().all(|&c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'/' | b'.' | b'_' | b'-' | b'+' | b',' | b':' | b'@' | b'%' | b'='
                )
        });
    if safe {
        return text.to_vec();
    }
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'\'');
    for &c in text {
        if c == b'\'' {
            out.extend_from_slice(br"'\''");
        } else {
            out.push(c);
        }
    }
    out.push(b'\'');
    out
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

/// Braces in `command` that look like a placeholder mistyped (`{input[0]}`,
/// `{inputs}`, `{outputs[0]` without its `}`, `{inputs[x]}`), each with what was
/// probably meant: they are left as written (an awk program or `${var}` has braces
/// too), so a caller warns about them.
pub fn near_misses(command: &str) -> Vec<(String, String)> {
    let valid = |after: &str| {
        let indexed = |prefix: &str| {
            after.strip_prefix(prefix).is_some_and(|t| {
                let digits = t.bytes().take_while(u8::is_ascii_digit).count();
                digits > 0 && t[digits..].starts_with("]}")
            })
        };
        after.starts_with("stdout}")
            || after.starts_with("stderr}")
            || indexed("inputs[")
            || indexed("outputs[")
    };
    let mut found = Vec::new();
    for (open, _) in command.match_indices('{') {
        let after = &command[open + 1..];
        // `${...}` is the shell's own.
        if valid(after) || command[..open].ends_with('$') {
            continue;
        }
        let word_end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let (word, tail) = after.split_at(word_end);
        let meant = match word {
            "input" | "inputs" => "inputs",
            "output" | "outputs" => "outputs",
            _ => continue,
        };
        let index: String = tail
            .strip_prefix('[')
            .map(|t| t.chars().take_while(char::is_ascii_digit).collect())
            .unwrap_or_default();
        let written = match after.find('}') {
            Some(close) if close < 24 => format!("{{{}}}", &after[..close]),
            _ => format!(
                "{{{}",
                &after[..after.find(char::is_whitespace).unwrap_or(after.len())]
            ),
        };
        let index = if index.is_empty() { "0" } else { &index };
        found.push((written, format!("{{{meant}[{index}]}}")));
    }
    found
}

/// `command` with its placeholders replaced by the quoted paths of `files`, byte for
/// byte (a path that is not UTF-8 keeps its bytes).
pub fn expand(command: &str, files: &TaskFiles) -> Result<OsString, String> {
    check(
        command,
        files.inputs.len(),
        files.outputs.len(),
        files.stdout.is_some(),
        files.stderr.is_some(),
    )?;
    let quoted = |p: &Path| shell_quote_bytes(p.as_os_str().as_encoded_bytes());
    let mut out: Vec<u8> = Vec::with_capacity(command.len() + 64);
    for part in parse(command) {
        match part {
            Ok(text) => out.extend_from_slice(text.as_bytes()),
            Err((p, _)) => out.extend(match p {
                Placeholder::Input(i) => quoted(&files.inputs[i]),
                Placeholder::Output(i) => quoted(&files.outputs[i]),
                Placeholder::Stdout => quoted(files.stdout.as_deref().expect("checked")),
                Placeholder::Stderr => quoted(files.stderr.as_deref().expect("checked")),
            }),
        }
    }
    // SAFETY: literal parts are UTF-8 and placeholders are an OsStr's own encoded
    // bytes, quoted with ASCII; on Unix any byte string is an OsStr.
    Ok(unsafe { OsString::from_encoded_bytes_unchecked(out) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
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

    #[cfg(unix)]
    #[test]
    fn expansion_keeps_non_utf8_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let files = TaskFiles {
            inputs: vec![PathBuf::from(OsStr::from_bytes(b"/in/\xff.txt"))],
            ..TaskFiles::default()
        };
        let out = expand("cat {inputs[0]}", &files).unwrap();
        assert_eq!(out.as_bytes(), b"cat '/in/\xff.txt'");
    }

    #[test]
    fn near_misses_are_found_and_other_braces_are_not() {
        let found = near_misses(
            "cat {input[1]} {inputs} > {outputs[0] ; awk '{print $1}' ${HOME} {inputs[0]} {stdout} {inputs[x]}",
        );
        let written: Vec<&str> = found.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(
            written,
            ["{input[1]}", "{inputs}", "{outputs[0]", "{inputs[x]}"]
        );
        assert_eq!(found[0].1, "{inputs[1]}");
        assert_eq!(found[1].1, "{inputs[0]}");
        assert_eq!(found[2].1, "{outputs[0]}");
        assert!(near_misses("awk '{print $1}' ${HOME} {inputs[0]} > {stdout}").is_empty());
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
