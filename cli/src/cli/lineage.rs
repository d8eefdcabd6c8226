//! `stagehost lineage PATH_OR_URL [--json]` and `stagehost lineage --check`: what the
//! run journals say made a file, and whether what they recorded still holds.

use std::path::PathBuf;
use std::process::ExitCode;

use stagehost::lineage::{Lineage, Node};
use stagehost::ConfigError;

use super::CliError;

/// `stagehost lineage` arguments.
#[derive(Debug, clap::Args)]
pub struct LineageArgs {
    /// The file: a path, or the URL a task wrote it to
    #[arg(value_name = "PATH_OR_URL", required_unless_present = "check")]
    target: Option<String>,
    /// Re-verify every recorded identity (of the file's lineage, or of every task) and
    /// name what drifted; exit 1 if anything did
    #[arg(long)]
    check: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// How many producing tasks deep to go (a task's inputs beyond it are elided)
    #[arg(long, value_name = "N", default_value_t = 100)]
    depth: usize,
    /// A journal to read (a .jsonl file, or a directory of them); repeatable. Default:
    /// every .stagehost/journal/ in the current directory, the file's, and their parents
    #[arg(long, value_name = "PATH")]
    journal: Vec<PathBuf>,
}

pub fn lineage(args: &LineageArgs) -> Result<ExitCode, CliError> {
    let journals = journals(args)?;
    if journals.is_empty() {
        return Err(CliError::Config(ConfigError(
            "no run journal found: `stagehost run` keeps one in .stagehost/journal/ beside the workflow; give --journal PATH, or run from the workflow's directory".into(),
        )));
    }
    // Only the tasks each workflow still has speak for their outputs.
    let current = |workflow: &std::path::Path| {
        let w = stagehost::workflow::Workflow::load(workflow).ok()?;
        Some(w.tasks.into_iter().map(|t| t.name).collect())
    };
    let lineage = Lineage::read_current(&journals, current)
        .map_err(|e| CliError::Config(ConfigError(format!("cannot read the run journals: {e}"))))?;
    if lineage.journals == 0 {
        return Err(CliError::Config(ConfigError(format!(
            "none of the {} run journal(s) found could be read (see the warnings above)",
            journals.len()
        ))));
    }
    let esc = stagehost_plugin_api::display::escape;
    if args.check {
        let report = lineage.check(args.target.as_deref());
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("plain data")
            );
        } else {
            for d in &report.drifted {
                println!(
                    "drifted: {} {} (the {} of task \"{}\", {})",
                    esc(&d.url),
                    esc(&d.why),
                    d.role,
                    esc(&d.task),
                    esc(&d.workflow)
                );
            }
            eprintln!(
                "stagehost: {} identities checked, {} drifted, {} remote not checked",
                report.checked,
                report.drifted.len(),
                report.not_checked
            );
        }
        return Ok(if report.drifted.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let target = args
        .target
        .as_deref()
        .expect("clap requires it without --check");
    let Some(node) = lineage.of(target, args.depth) else {
        return Err(CliError::Failed {
            line: format!(
                "{}: no task in the run journals ({} read, {} task(s)) produced it",
                stagehost_plugin_api::redact_url(target),
                lineage.journals,
                lineage.tasks()
            ),
            code: 3,
        });
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&node).expect("plain data")
        );
    } else {
        let mut out = String::new();
        print_node(&mut out, &node, 0);
        print!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The journals to read: those given, or those found above the current directory and
/// the target's.
fn journals(args: &LineageArgs) -> Result<Vec<PathBuf>, CliError> {
    let mut found = Vec::new();
    for p in &args.journal {
        if p.is_dir() {
            found.extend(stagehost::lineage::journals_in(p).map_err(|e| {
                CliError::Config(ConfigError(format!("--journal {}: {e}", p.display())))
            })?);
        } else if p.is_file() {
            found.push(p.clone());
        } else {
            return Err(CliError::Config(ConfigError(format!(
                "--journal {}: no such file or directory",
                p.display()
            ))));
        }
    }
    if !args.journal.is_empty() {
        return Ok(found);
    }
    let local_dir = args
        .target
        .as_deref()
        .and_then(stagehost::journal::local_path_of)
        .and_then(|p| std::path::absolute(p).ok())
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf));
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for dir in local_dir.iter().chain(std::iter::once(&cwd)) {
        for j in stagehost::lineage::journals_above(dir) {
            if !found.contains(&j) {
                found.push(j);
            }
        }
    }
    Ok(found)
}

fn identity_words(node: &Node) -> String {
    match &node.identity {
        None => "no identity recorded".into(),
        Some(id) => {
            let mut words = format!(
                "{} bytes, mtime_ns {}, inode {}",
                id.size, id.mtime_ns, id.inode
            );
            if let Some(v) = &id.validator {
                words.push_str(&format!(", validator {v}"));
            }
            if let Some(h) = &id.sha256 {
                words.push_str(&format!(", sha256 {h}"));
            }
            words
        }
    }
}

fn print_node(out: &mut String, node: &Node, depth: usize) {
    use std::fmt::Write as _;
    let pad = "    ".repeat(depth);
    let state = match (&node.why, node.state) {
        (Some(why), _) => format!("drifted: {why}"),
        (None, "not_checked") => "not checked (remote)".to_owned(),
        (None, state) => state.to_owned(),
    };
    let esc = stagehost_plugin_api::display::escape;
    let _ = writeln!(
        out,
        "{pad}{} ({}; {})",
        esc(&node.url),
        esc(&identity_words(node)),
        esc(&state)
    );
    match &node.produced_by {
        None => {
            let _ = writeln!(out, "{pad}  a source: no task of the journals produced it");
        }
        Some(p) => {
            let _ = writeln!(
                out,
                "{pad}  produced by task \"{}\" (executor {}, workflow {}, ended {})",
                esc(&p.task),
                esc(&p.executor),
                esc(&p.workflow),
                stagehost_plugin_api::calendar::utc(p.ended as i64)
            );
            if let Some(c) = &p.command {
                let _ = writeln!(
                    out,
                    "{pad}  command: {}",
                    stagehost_plugin_api::display::escape(c)
                );
            }
            if let Some(why) = p.inputs_elided {
                let _ = writeln!(out, "{pad}  inputs: {why}");
            } else if p.inputs.is_empty() {
                let _ = writeln!(out, "{pad}  inputs: none");
            } else {
                let _ = writeln!(out, "{pad}  inputs:");
                for input in &p.inputs {
                    print_node(out, input, depth + 1);
                }
            }
        }
    }
}
