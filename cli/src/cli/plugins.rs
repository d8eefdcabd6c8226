//! `stagehost plugins list` and `stagehost plugins check`.

use std::process::ExitCode;

use stagehost::registry::{PluginStatus, Registry};

use super::CliError;

pub fn list(registry: &Registry, json: bool) {
    if json {
        println!("{}", stagehost::listing::render_json(registry));
    } else {
        print!("{}", stagehost::listing::render_text(registry));
    }
}

pub fn check(registry: &Registry) -> Result<ExitCode, CliError> {
    let mut failed = 0;
    for (_, reason) in registry.failed_instances() {
        eprintln!("stagehost: error: {reason}");
        failed += 1;
    }
    for p in &registry.plugins {
        if let PluginStatus::Failed(reason) = &p.status {
            eprintln!(
                "stagehost: warning: plugin file {}: {reason}",
                p.path.display()
            );
        }
    }
    if failed > 0 {
        Err(CliError::Config(stagehost::ConfigError(format!(
            "{failed} configured provider(s) failed to load"
        ))))
    } else {
        let ready = registry.instances.len();
        println!("ok: {ready} provider(s) ready");
        Ok(ExitCode::SUCCESS)
    }
}
