//! `stagehost stat` and `stagehost ls`: what URLs name, asked of their providers
//! without moving bytes (the `stat` and `list` capabilities), as gfal-stat, gfal-ls
//! and rclone's lsf/lsl/lsjson answer.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use stagehost::config::{TransferConfig, DEFAULT_EXECUTOR};
use stagehost::inspect::InspectError;
use stagehost::report::FailureClass;
use stagehost::{ConfigError, DataManager, File, Registry, StageOptions};
use stagehost_plugin_api::capability::{Entry, EntryKind};
use stagehost_plugin_api::display;

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// URLs (or paths) to ask about
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Executor whose provider order to use
    #[arg(long, short = 'e', default_value = DEFAULT_EXECUTOR)]
    executor: String,
    /// Print JSON: an array with one object a URL
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The directory or prefix to list
    #[arg(value_name = "URL")]
    url: String,
    /// List the whole tree below it
    #[arg(long, short = 'R')]
    recursive: bool,
    /// Long format: size, modification time (UTC), name
    #[arg(long, short = 'l')]
    long: bool,
    /// Executor whose provider order to use
    #[arg(long, short = 'e', default_value = DEFAULT_EXECUTOR)]
    executor: String,
    /// Print JSON: an array with one object an entry
    #[arg(long)]
    json: bool,
}

fn options(transfers: &TransferConfig) -> StageOptions {
    StageOptions {
        timeout: (transfers.timeout_secs > 0.0)
            .then(|| Duration::from_secs_f64(transfers.timeout_secs)),
        ..StageOptions::default()
    }
}

fn check_executor(dm: &DataManager, executor: &str) -> Result<(), CliError> {
    if dm.executor_labels().contains(&executor) {
        return Ok(());
    }
    Err(CliError::Config(ConfigError(format!(
        "unknown executor {executor:?} (configured: {})",
        dm.executor_labels().join(", ")
    ))))
}

fn parse(url: &str) -> Result<File, CliError> {
    File::parse(url).map_err(|e| {
        CliError::Config(ConfigError(format!(
            "{}: {}",
            display::escape(&stagehost_plugin_api::redact_url(url)),
            e.message()
        )))
    })
}

/// The exit for a question that got no answer (or a directory that cannot be staged):
/// a usage error (no provider, none with the capability, a URL that cannot name what
/// was asked) exits 2; a provider's failure, its class.
pub(super) fn failure(e: &InspectError) -> CliError {
    if e.is_usage() {
        CliError::Config(ConfigError(e.to_string()))
    } else {
        CliError::Failed {
            line: e.to_string(),
            code: FailureClass::exit_code_of([Some(e.class())]),
        }
    }
}

/// Writes `text` and a newline to stdout: a closed reader ends the process quietly
/// (141, as a shell shows a SIGPIPE death); any other failure (a full disk) is an
/// error, never a silent or truncated success.
fn say(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => Err(CliError::Staging(format!("cannot write the output: {e}"))),
    }
}

fn kind_word(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Directory => "directory",
        EntryKind::Other => "other",
    }
}

/// A time as RFC 3339 UTC with nanoseconds when it has them.
fn time(t: std::time::SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let whole = -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0);
            let nanos = (Duration::from_secs(d.as_secs() + 1) - d).subsec_nanos();
            (whole, if d.subsec_nanos() > 0 { nanos } else { 0 })
        }
    };
    let base = stagehost_plugin_api::calendar::utc(secs);
    if nanos == 0 {
        base
    } else {
        format!("{}.{nanos:09}Z", base.trim_end_matches('Z'))
    }
}

fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "name": e.name,
        "kind": kind_word(e.kind),
        "size": e.size,
        "modified": e.modified.map(time),
        "validator": (!e.validator.is_empty()).then_some(&e.validator),
    })
}

pub fn stat(
    registry: &Registry,
    transfers: &TransferConfig,
    args: StatArgs,
) -> Result<ExitCode, CliError> {
    let dm = DataManager::new(registry);
    check_executor(&dm, &args.executor)?;
    let opts = options(transfers);
    let files = args
        .urls
        .iter()
        .map(|u| parse(u))
        .collect::<Result<Vec<File>, CliError>>()?;
    let mut out = Vec::new();
    let mut missing = 0;
    let mut errors = Vec::new();
    for file in &files {
        let url = file.redacted_url();
        let provider = dm
            .choose_to_ask(&args.executor, file)
            .map(|p| p.name.clone())
            .ok();
        match dm.stat(&args.executor, file, &opts) {
            Ok(Some(entry)) => {
                if args.json {
                    let mut v = entry_json(&entry);
                    let o = v.as_object_mut().expect("an object");
                    o.remove("name");
                    o.insert("url".into(), url.into());
                    o.insert("exists".into(), true.into());
                    o.insert("provider".into(), provider.into());
                    out.push(v);
                } else {
                    let mut text = format!(
                        "{}\n  kind: {}",
                        display::escape(&url),
                        kind_word(entry.kind)
                    );
                    if let Some(size) = entry.size {
                        text.push_str(&format!("\n  size: {size}"));
                    }
                    if let Some(t) = entry.modified {
                        text.push_str(&format!("\n  modified: {}", time(t)));
                    }
                    if !entry.validator.is_empty() {
                        text.push_str(&format!(
                            "\n  validator: {}",
                            display::escape(&entry.validator)
                        ));
                    }
                    text.push_str(&format!(
                        "\n  provider: {}",
                        provider.as_deref().unwrap_or("?")
                    ));
                    say(&text)?;
                }
            }
            Ok(None) => {
                missing += 1;
                if args.json {
                    out.push(serde_json::json!({
                        "url": url, "exists": false, "provider": provider,
                    }));
                } else {
                    eprintln!("stagehost: error: {}: not found", display::escape(&url));
                }
            }
            // No provider, or none with `stat`: nothing here can be answered.
            Err(e @ (InspectError::NotOffered(_) | InspectError::Choose(_))) if e.is_usage() => {
                return Err(failure(&e))
            }
            Err(e) => {
                if args.json {
                    out.push(serde_json::json!({
                        "url": url, "exists": null, "provider": provider, "error": e.to_string(),
                    }));
                } else {
                    eprintln!("stagehost: error: {e}");
                }
                errors.push(e);
            }
        }
    }
    if args.json {
        say(&serde_json::Value::Array(out).to_string())?;
    }
    if missing + errors.len() == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let classes = std::iter::repeat_n(Some(FailureClass::NotFound), missing)
        .chain(errors.iter().map(|e| Some(e.class())));
    // A URL that names nothing stat can be asked of is the caller's error (2).
    let code = if errors.iter().any(InspectError::is_usage) {
        2
    } else {
        FailureClass::exit_code_of(classes)
    };
    Err(CliError::Failed {
        line: format!(
            "{} of {} URL(s) could not be stat'ed ({missing} not found)",
            missing + errors.len(),
            files.len()
        ),
        code,
    })
}

pub fn ls(
    registry: &Registry,
    transfers: &TransferConfig,
    args: LsArgs,
) -> Result<ExitCode, CliError> {
    let dm = DataManager::new(registry);
    check_executor(&dm, &args.executor)?;
    let dir = parse(&args.url)?;
    let entries = dm
        .list(&args.executor, &dir, args.recursive, &options(transfers))
        .map_err(|e| failure(&e))?;
    if args.json {
        let out: Vec<serde_json::Value> = entries.iter().map(entry_json).collect();
        say(&serde_json::Value::Array(out).to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    for e in &entries {
        let slash = if e.kind == EntryKind::Directory {
            "/"
        } else {
            ""
        };
        let name = display::escape(&e.name);
        if args.long {
            let size = e.size.map_or_else(|| "-".to_owned(), |s| s.to_string());
            let modified = e.modified.map_or_else(|| "-".to_owned(), time);
            text.push_str(&format!("{size:>12} {modified:<30} {name}{slash}\n"));
        } else {
            text.push_str(&format!("{name}{slash}\n"));
        }
    }
    if !text.is_empty() {
        text.pop();
        say(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}
