//! `stagehost plugins list` and `stagehost plugins check`.

use std::process::ExitCode;

use serde::Serialize;
use stagehost::registry::{InstanceOrigin, PluginStatus, Registry};

use super::CliError;

#[derive(Serialize)]
struct PluginRow {
    file: String,
    directory_origin: String,
    sha256: Option<String>,
    name: Option<String>,
    version: Option<String>,
    api_version: Option<String>,
    schemes: Vec<String>,
    description: Option<String>,
    status: &'static str,
    reason: Option<String>,
}

#[derive(Serialize)]
struct ProviderRow {
    name: String,
    origin: &'static str,
    plugin: Option<String>,
    file: Option<String>,
    status: &'static str,
    reason: Option<String>,
}

#[derive(Serialize)]
struct OrderEntry {
    provider: String,
    ready: bool,
}

#[derive(Serialize)]
struct ExecutorRow {
    label: String,
    working_dir: String,
    order_from: &'static str,
    order: Vec<OrderEntry>,
}

#[derive(Serialize)]
struct Listing {
    plugin_dirs: Vec<String>,
    warnings: Vec<String>,
    plugins: Vec<PluginRow>,
    providers: Vec<ProviderRow>,
    executors: Vec<ExecutorRow>,
}

/// The listing; `digests` adds each loaded plugin file's sha256 (it reads the file).
fn listing(registry: &Registry, digests: bool) -> Listing {
    let plugins = registry
        .plugins
        .iter()
        .map(|r| {
            let (plugin, status, reason) = match &r.status {
                PluginStatus::Loaded(p) => (Some(p), "loaded", None),
                PluginStatus::Shadowed { plugin, by } => (
                    Some(plugin),
                    "shadowed",
                    Some(format!(
                        "a plugin with the same name comes first: {}",
                        by.display()
                    )),
                ),
                PluginStatus::Failed(reason) => (None, "failed", Some(reason.clone())),
            };
            PluginRow {
                file: r.path.display().to_string(),
                directory_origin: r.origin.clone(),
                sha256: plugin
                    .filter(|_| digests)
                    .and_then(|p| p.sha256().ok())
                    .map(str::to_owned),
                name: plugin.map(|p| p.name.clone()),
                version: plugin.map(|p| p.version.to_string()),
                api_version: plugin.map(|p| p.api_version.clone()),
                schemes: plugin.map(|p| p.schemes.clone()).unwrap_or_default(),
                description: plugin.map(|p| p.description.clone()),
                status,
                reason,
            }
        })
        .collect();
    let providers = registry
        .instances
        .iter()
        .map(|i| ProviderRow {
            name: i.name.clone(),
            origin: match i.origin {
                InstanceOrigin::Configured(_) => "configured",
                InstanceOrigin::DroppedIn => "dropped-in",
            },
            plugin: i
                .status
                .as_ref()
                .ok()
                .map(|p| format!("{} {}", p.plugin.name, p.plugin.version)),
            file: i
                .status
                .as_ref()
                .ok()
                .map(|p| p.plugin.path.display().to_string()),
            status: if i.status.is_ok() { "ready" } else { "failed" },
            reason: i.status.as_ref().err().cloned(),
        })
        .collect();
    let executors = registry
        .executors
        .iter()
        .map(|e| ExecutorRow {
            label: e.label.clone(),
            working_dir: e.working_dir.display().to_string(),
            order_from: if e.explicit { "staging" } else { "default" },
            order: e
                .order
                .iter()
                .map(|n| OrderEntry {
                    provider: n.clone(),
                    ready: registry.instance(n).is_some_and(|i| i.status.is_ok()),
                })
                .collect(),
        })
        .collect();
    Listing {
        plugin_dirs: registry
            .dirs
            .iter()
            .map(|d| format!("{} ({})", d.path.display(), d.origin))
            .collect(),
        warnings: registry.dirs.iter().filter_map(|d| d.problem()).collect(),
        plugins,
        providers,
        executors,
    }
}

pub fn list(registry: &Registry, json: bool) {
    let l = listing(registry, json);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&l).expect("the listing is plain data")
        );
        return;
    }
    println!("Plugin directories, in search order:");
    for d in &l.plugin_dirs {
        println!("  {d}");
    }
    for w in &l.warnings {
        println!("  warning: {w}");
    }
    println!("\nPlugins:");
    if l.plugins.is_empty() {
        println!("  (none found)");
    }
    for p in &l.plugins {
        match p.status {
            "failed" => println!(
                "  {}: failed: {}",
                p.file,
                p.reason.as_deref().unwrap_or("")
            ),
            status => {
                println!(
                    "  {} {} (plugin-api {}, schemes: {}): {status}{}",
                    p.name.as_deref().unwrap_or("?"),
                    p.version.as_deref().unwrap_or("?"),
                    p.api_version.as_deref().unwrap_or("?"),
                    p.schemes.join(", "),
                    p.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default(),
                );
                println!("      {}", p.file);
            }
        }
    }
    println!("\nProviders:");
    for p in &l.providers {
        match &p.reason {
            None => println!(
                "  {} ({}, {}): ready",
                p.name,
                p.origin,
                p.plugin.as_deref().unwrap_or("?")
            ),
            Some(reason) => println!("  {} ({}): failed: {reason}", p.name, p.origin),
        }
    }
    println!("\nExecutors:");
    for e in &l.executors {
        let order: Vec<String> = e
            .order
            .iter()
            .map(|o| {
                if o.ready {
                    o.provider.clone()
                } else {
                    format!("{} (not loaded)", o.provider)
                }
            })
            .collect();
        let order = if order.is_empty() {
            "(empty: stages nothing)".to_owned()
        } else {
            order.join(", ")
        };
        println!(
            "  {} [{} order, working_dir {}]: {order}",
            e.label, e.order_from, e.working_dir
        );
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
