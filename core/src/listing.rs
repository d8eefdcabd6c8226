//! The listing behind `stagehost plugins list`: the plugin directories in search
//! order, every plugin file found (loaded, shadowed or failed, and why), the provider
//! instances and each executor's order. Shared by the CLI and by programs that embed
//! the host (the Python package's `python -m stagehost_parsl plugins`).

use serde::Serialize;

use crate::registry::{InstanceOrigin, PluginStatus, Registry};

#[derive(Serialize)]
struct PluginRow {
    file: String,
    directory_origin: String,
    sha256: Option<String>,
    name: Option<String>,
    version: Option<String>,
    api_version: Option<String>,
    schemes: Vec<String>,
    capabilities: Vec<String>,
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
    /// The only schemes it claims, when its plugin's `schemes` capability promised
    /// them (`null`: it is asked about every file).
    claims_only: Option<Vec<String>>,
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
                capabilities: plugin.map(|p| p.capabilities.clone()).unwrap_or_default(),
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
            claims_only: i
                .status
                .as_ref()
                .ok()
                .and_then(|p| p.claims_only())
                .map(|s| s.map(str::to_owned).collect()),
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

/// The listing with every text a plugin or a path supplies escaped for a terminal
/// (`display::escape`).
fn escaped(mut l: Listing) -> Listing {
    let e = |s: &mut String| {
        if let std::borrow::Cow::Owned(o) = stagehost_plugin_api::display::escape(s) {
            *s = o;
        }
    };
    let each = |v: &mut Vec<String>| v.iter_mut().for_each(e);
    l.plugin_dirs.iter_mut().for_each(e);
    l.warnings.iter_mut().for_each(e);
    for p in &mut l.plugins {
        e(&mut p.file);
        [
            &mut p.name,
            &mut p.version,
            &mut p.api_version,
            &mut p.description,
            &mut p.reason,
        ]
        .into_iter()
        .flatten()
        .for_each(e);
        each(&mut p.schemes);
        each(&mut p.capabilities);
    }
    for p in &mut l.providers {
        e(&mut p.name);
        [&mut p.plugin, &mut p.file, &mut p.reason]
            .into_iter()
            .flatten()
            .for_each(e);
        p.claims_only.iter_mut().for_each(each);
    }
    for x in &mut l.executors {
        e(&mut x.label);
        e(&mut x.working_dir);
        x.order.iter_mut().for_each(|o| e(&mut o.provider));
    }
    l
}

/// `stagehost plugins list --json`: the listing as JSON, with each loaded plugin
/// file's sha256.
pub fn render_json(registry: &Registry) -> String {
    serde_json::to_string_pretty(&listing(registry, true)).expect("the listing is plain data")
}

/// `stagehost plugins list`: the plugin directories, the plugins found, the provider
/// instances and each executor's order, as text.
pub fn render_text(registry: &Registry) -> String {
    use std::fmt::Write;
    // What a plugin says of itself is shown escaped: no line of it may drive the
    // terminal or pass for another line.
    let l = escaped(listing(registry, false));
    let mut out = String::new();
    writeln!(out, "Plugin directories, in search order:").ok();
    for d in &l.plugin_dirs {
        writeln!(out, "  {d}").ok();
    }
    for w in &l.warnings {
        writeln!(out, "  warning: {w}").ok();
    }
    writeln!(out, "\nPlugins:").ok();
    if l.plugins.is_empty() {
        writeln!(out, "  (none found)").ok();
    }
    for p in &l.plugins {
        match p.status {
            "failed" => {
                writeln!(
                    out,
                    "  {}: failed: {}",
                    p.file,
                    p.reason.as_deref().unwrap_or("")
                )
                .ok();
            }
            status => {
                writeln!(
                    out,
                    "  {} {} (plugin-api {}, schemes: {}): {status}{}",
                    p.name.as_deref().unwrap_or("?"),
                    p.version.as_deref().unwrap_or("?"),
                    p.api_version.as_deref().unwrap_or("?"),
                    p.schemes.join(", "),
                    p.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default(),
                )
                .ok();
                writeln!(out, "      {}", p.file).ok();
                if !p.capabilities.is_empty() {
                    writeln!(out, "      capabilities: {}", p.capabilities.join(", ")).ok();
                }
            }
        }
    }
    writeln!(out, "\nProviders:").ok();
    for p in &l.providers {
        let line = match &p.reason {
            None => format!(
                "  {} ({}, {}): ready{}",
                p.name,
                p.origin,
                p.plugin.as_deref().unwrap_or("?"),
                p.claims_only
                    .as_ref()
                    .map(|s| format!(", claims only {}", s.join(", ")))
                    .unwrap_or_default()
            ),
            Some(reason) => format!("  {} ({}): failed: {reason}", p.name, p.origin),
        };
        writeln!(out, "{line}").ok();
    }
    writeln!(out, "\nExecutors:").ok();
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
        writeln!(
            out,
            "  {} [{} order, working_dir {}]: {order}",
            e.label, e.order_from, e.working_dir
        )
        .ok();
    }
    out
}
