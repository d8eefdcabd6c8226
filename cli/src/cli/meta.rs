//! What the command says about itself: `stagehost version` (as `gfal-copy -V` lists
//! its plugins), `stagehost completions SHELL` and `stagehost man DIR`.

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use stagehost::registry::{PluginRecord, PluginStatus};

use super::{Args, CliError};

/// The commit this binary was built from (empty when unknown).
const COMMIT: &str = env!("STAGEHOST_COMMIT");

/// `--version`'s text: the version, the commit and plugin-api's version.
pub fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let commit = if COMMIT.is_empty() { "unknown" } else { COMMIT };
        format!(
            "{} (commit {commit})\nplugin-api {}",
            env!("CARGO_PKG_VERSION"),
            stagehost_plugin_api::abi::API_VERSION
        )
    })
}

/// Prints the version, the commit, plugin-api's version and each plugin found.
pub fn version(plugins: &[PluginRecord], json: bool) {
    let api = stagehost_plugin_api::abi::API_VERSION;
    if json {
        let listed: Vec<serde_json::Value> = plugins
            .iter()
            .map(|p| match &p.status {
                PluginStatus::Loaded(l) | PluginStatus::Shadowed { plugin: l, .. } => {
                    serde_json::json!({
                        "name": l.name,
                        "version": l.version.to_string(),
                        "plugin_api": l.api_version,
                        "path": p.path.display().to_string(),
                        "loaded": matches!(p.status, PluginStatus::Loaded(_)),
                    })
                }
                PluginStatus::Failed(reason) => serde_json::json!({
                    "path": p.path.display().to_string(),
                    "loaded": false,
                    "error": reason,
                }),
            })
            .collect();
        let doc = serde_json::json!({
            "stagehost": env!("CARGO_PKG_VERSION"),
            "commit": (!COMMIT.is_empty()).then_some(COMMIT),
            "plugin_api": api,
            "plugins": listed,
        });
        println!("{doc:#}");
        return;
    }
    let commit = if COMMIT.is_empty() { "unknown" } else { COMMIT };
    println!("stagehost {} (commit {commit})", env!("CARGO_PKG_VERSION"));
    println!("plugin-api {api}");
    if plugins.is_empty() {
        println!("plugins: none found (see `stagehost plugins list`)");
        return;
    }
    println!("plugins:");
    for p in plugins {
        let path = stagehost_plugin_api::display::path(&p.path);
        match &p.status {
            PluginStatus::Loaded(l) => {
                println!(
                    "  {} {} (plugin-api {}) {path}",
                    l.name, l.version, l.api_version
                )
            }
            PluginStatus::Shadowed { plugin: l, by } => println!(
                "  {} {} (plugin-api {}) {path}, shadowed by {}",
                l.name,
                l.version,
                l.api_version,
                stagehost_plugin_api::display::path(by)
            ),
            PluginStatus::Failed(reason) => println!("  (not loaded) {path}: {reason}"),
        }
    }
}

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) {
    let mut command = Args::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "stagehost", &mut script);
    // As `print!` does (see main.rs): a reader gone is a quiet end.
    if let Err(e) = std::io::Write::write_all(&mut std::io::stdout(), &script) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("stagehost: error: cannot write the completion script: {e}");
        std::process::exit(1);
    }
}

/// Writes `stagehost.1` and a page per command (`stagehost-stage-in.1`, ...) into
/// `dir`.
pub fn man(dir: &Path) -> Result<ExitCode, CliError> {
    let fail = |what: &Path, e: std::io::Error| {
        CliError::Staging(format!(
            "cannot write {}: {e}",
            stagehost_plugin_api::display::path(what)
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let mut command = Args::command();
    command.build();
    write_pages(dir, &command, "stagehost", &fail)?;
    Ok(ExitCode::SUCCESS)
}

fn write_pages(
    dir: &Path,
    command: &clap::Command,
    name: &str,
    fail: &impl Fn(&Path, std::io::Error) -> CliError,
) -> Result<(), CliError> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    // clap names are `&'static str`; the command ends right after writing the pages.
    let full: &'static str = Box::leak(name.to_owned().into_boxed_str());
    clap_mangen::Man::new(command.clone().name(full))
        .render(&mut page)
        .map_err(|e| fail(&path, e))?;
    std::fs::write(&path, page).map_err(|e| fail(&path, e))?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(dir, sub, &format!("{name}-{}", sub.get_name()), fail)?;
    }
    Ok(())
}
