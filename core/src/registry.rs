//! The registry: every plugin file found, every provider instance built from the config
//! (plus one per dropped-in plugin), and each executor's effective order.
//!
//! Invariants:
//! - a plugin or instance that fails is recorded with its one-line reason and never
//!   stops the others, unless the config marks the instance `required`;
//! - the first plugin found with a given name wins; later ones are recorded as shadowed;
//! - dropped-in plugins (found, but named by no `[[provider]]`) get an instance named
//!   after the plugin, appended to the default order after the configured ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::std_types::ROption;
use stagehost_plugin_api::abi::{AbiContext, AbiJobBox, AbiPlan, ProviderBox};
use stagehost_plugin_api::capability::Entry;
use stagehost_plugin_api::{ErrorKind, File, StageError};

use crate::config::{Config, ConfigError, ProviderConfig};
use crate::discovery::{plugin_dirs, plugin_files, PluginDir};
use crate::loader::{pin_mismatch, LoadedPlugin, PluginLoader};
use crate::secrets::{scrub, secret_values};
use crate::spans::At::{Index, Key};

/// A plugin file found in a plugin directory.
#[derive(Debug)]
pub struct PluginRecord {
    /// The file.
    pub path: PathBuf,
    /// The rule that put its directory on the search list.
    pub origin: String,
    /// What happened when it was loaded.
    pub status: PluginStatus,
}

/// What happened to a plugin file.
#[derive(Debug)]
pub enum PluginStatus {
    /// Loaded; its metadata is readable.
    Loaded(Arc<LoadedPlugin>),
    /// Refused or failed, with the reason.
    Failed(String),
    /// Loaded, but an earlier directory has a plugin with the same name.
    Shadowed {
        /// The plugin.
        plugin: Arc<LoadedPlugin>,
        /// The file that wins.
        by: PathBuf,
    },
}

/// A provider instance: a loaded plugin's provider object with its settings applied.
pub struct ProviderInstance {
    /// The instance name.
    pub name: String,
    /// The plugin behind it.
    pub plugin: Arc<LoadedPlugin>,
    provider: ProviderBox,
    /// Every secret of its settings (values under secret keys, passwords in URLs):
    /// scrubbed from each of its error messages and log lines by the host.
    pub secrets: Arc<[String]>,
    /// `name`, shared by every call's services (no copy per call).
    pub(crate) label: Arc<str>,
    /// `secrets`, longest first, as a scrub wants them (shared the same way).
    pub(crate) secrets_longest_first: Arc<[String]>,
    /// The only schemes it ever claims, when its plugin offers the `schemes`
    /// capability: for any other, `can_stage_in`/`can_stage_out` are `false` without a
    /// call.
    claims_only: Option<Box<[Box<str>]>>,
}

/// What `provider`'s `schemes` capability says, asked once as the instance is made;
/// `None` (every file is asked about) when its plugin does not offer it or the call
/// fails.
fn claimed_schemes(
    name: &str,
    plugin: &LoadedPlugin,
    provider: &ProviderBox,
) -> Option<Box<[Box<str>]>> {
    let table = plugin.claimed_schemes?;
    match (table.schemes)(provider).into_result() {
        // This instance makes no promise.
        Ok(schemes) if schemes.is_empty() => None,
        // A promise the host cannot keep is no promise: a name that is not a scheme
        // (`data:`, a control character) would make the instance unreachable.
        Ok(schemes)
            if schemes.len() > MAX_PROMISED_SCHEMES || !schemes.iter().all(|s| is_scheme(s)) =>
        {
            let shown: Vec<_> = schemes
                .iter()
                .take(8)
                .map(|s| {
                    stagehost_plugin_api::display::escape(s)
                        .chars()
                        .take(40)
                        .collect::<String>()
                })
                .collect();
            tracing::warn!(
                "provider {name:?}: its schemes capability names {} scheme(s), not all of them a scheme (letters, digits, '+', '-', '.', starting with a letter, at most 32): {shown:?}; every file is asked about",
                schemes.len()
            );
            None
        }
        Ok(schemes) => Some(
            schemes
                .into_iter()
                .map(|s| s.as_str().to_ascii_lowercase().into_boxed_str())
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(
                "provider {name:?}: its schemes capability failed ({}); every file is asked about",
                StageError::from(e)
            );
            None
        }
    }
}

/// The most schemes one instance may promise.
const MAX_PROMISED_SCHEMES: usize = 64;

/// Whether `s` is a URL scheme (RFC 3986: a letter, then letters, digits, `+`, `-`,
/// `.`), of at most 32 characters.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The longest first: a secret that contains another is scrubbed whole.
fn longest_first(secrets: &[String]) -> Arc<[String]> {
    let mut sorted = secrets.to_vec();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    sorted.into()
}

impl std::fmt::Debug for ProviderInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderInstance")
            .field("name", &self.name)
            .field("plugin", &self.plugin.name)
            .finish()
    }
}

/// The four planning calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanningCall {
    /// `stage_in`
    StageIn,
    /// `replace_task`
    ReplaceTask,
    /// `stage_out`
    StageOut,
    /// `replace_task_stage_out`
    ReplaceTaskStageOut,
}

impl PlanningCall {
    /// The call's name in the plugin API.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanningCall::StageIn => "stage_in",
            PlanningCall::ReplaceTask => "replace_task",
            PlanningCall::StageOut => "stage_out",
            PlanningCall::ReplaceTaskStageOut => "replace_task_stage_out",
        }
    }
}

impl ProviderInstance {
    /// The only schemes this instance ever claims, when its plugin's `schemes`
    /// capability promised them (`None`: it is asked about every file).
    pub fn claims_only(&self) -> Option<impl Iterator<Item = &str>> {
        self.claims_only.as_ref().map(|s| s.iter().map(|s| &**s))
    }
    /// The schemes this instance serves, as far as the host knows: its promise when
    /// it made one, else the schemes its plugin names.
    pub fn served_schemes(&self) -> Vec<&str> {
        match self.claims_only() {
            Some(promised) => promised.collect(),
            None => self.plugin.schemes.iter().map(String::as_str).collect(),
        }
    }
    /// Whether the instance may claim `file` at all: `false` for a scheme outside the
    /// ones its `schemes` capability named.
    fn may_claim(&self, file: &File) -> bool {
        self.claims_only
            .as_ref()
            .is_none_or(|schemes| schemes.iter().any(|s| **s == *file.scheme()))
    }
    /// The provider's `can_stage_in`.
    pub fn can_stage_in(&self, file: &File) -> Result<bool, StageError> {
        if !self.may_claim(file) {
            return Ok(false);
        }
        self.provider
            .can_stage_in(file)
            .into_result()
            .map_err(StageError::from)
    }
    /// The provider's `can_stage_out`.
    pub fn can_stage_out(&self, file: &File) -> Result<bool, StageError> {
        if !self.may_claim(file) {
            return Ok(false);
        }
        self.provider
            .can_stage_out(file)
            .into_result()
            .map_err(StageError::from)
    }
    /// Its `stat` capability's answer about `file`, or `None` when it does not offer
    /// `stat`.
    pub fn stat(&self, ctx: &AbiContext, file: &File) -> Option<Result<Option<Entry>, StageError>> {
        let table = self.plugin.stat?;
        Some(
            (table.stat)(&self.provider, ctx, file)
                .into_result()
                .map_err(StageError::from)
                .and_then(|entry| entry.into_option().map(Entry::try_from).transpose()),
        )
    }
    /// Its `list` capability's entries below `dir`, or `None` when it does not offer
    /// `list`.
    pub fn list(
        &self,
        ctx: &AbiContext,
        dir: &File,
        recursive: bool,
    ) -> Option<Result<Vec<Entry>, StageError>> {
        let table = self.plugin.list?;
        Some(
            (table.list)(&self.provider, ctx, dir, recursive)
                .into_result()
                .map_err(StageError::from)
                .and_then(|entries| entries.into_iter().map(Entry::try_from).collect()),
        )
    }
    /// One planning call on `file`, which the provider changes in place (its copy of
    /// the file); its job, if any. After an error `file` holds nothing to use.
    pub fn plan(
        &self,
        call: PlanningCall,
        ctx: &AbiContext,
        file: &mut File,
    ) -> Result<Option<AbiJobBox>, StageError> {
        // A plugin offering `planning` changes the file in place; an older one takes
        // it and gives it back through the frozen calls.
        if let Some(table) = self.plugin.planning {
            use stagehost_plugin_api::abi::capability as c;
            let number = match call {
                PlanningCall::StageIn => c::PLAN_STAGE_IN,
                PlanningCall::ReplaceTask => c::PLAN_REPLACE_TASK,
                PlanningCall::StageOut => c::PLAN_STAGE_OUT,
                PlanningCall::ReplaceTaskStageOut => c::PLAN_REPLACE_TASK_STAGE_OUT,
            };
            return (table.plan)(&self.provider, number, ctx, file)
                .into_result()
                .map(ROption::into_option)
                .map_err(StageError::from);
        }
        let owned = file.take();
        let result = match call {
            PlanningCall::StageIn => self.provider.stage_in(ctx, owned),
            PlanningCall::ReplaceTask => self.provider.replace_task(ctx, owned),
            PlanningCall::StageOut => self.provider.stage_out(ctx, owned),
            PlanningCall::ReplaceTaskStageOut => self.provider.replace_task_stage_out(ctx, owned),
        };
        let AbiPlan { file: planned, job } = result.into_result().map_err(StageError::from)?;
        *file = planned;
        Ok(job.into_option())
    }
}

/// How an instance came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceOrigin {
    /// A `[[provider]]` table (its index).
    Configured(usize),
    /// A plugin found in a plugin directory that no `[[provider]]` names.
    DroppedIn,
}

/// An instance and its state.
#[derive(Debug)]
pub struct InstanceRecord {
    /// Instance name.
    pub name: String,
    /// How it came to be.
    pub origin: InstanceOrigin,
    /// Ready, or why not.
    pub status: Result<Arc<ProviderInstance>, String>,
    /// It failed because no plugin directory holds the plugin it names (a plugin
    /// that is simply not installed, which the embedded default config may name).
    pub plugin_missing: bool,
}

/// An executor's effective order.
#[derive(Debug, Clone)]
pub struct ExecutorRecord {
    /// Label.
    pub label: String,
    /// Working directory, resolved against the config's directory.
    pub working_dir: PathBuf,
    /// Instance names, in order.
    pub order: Vec<String>,
    /// Whether the order came from a `staging` list (else the default order).
    pub explicit: bool,
    /// How many task bodies run at once (for `slurm`, per node).
    pub workers: usize,
    /// Where task bodies run.
    pub kind: crate::config::ExecutorKind,
    /// How blocks are submitted, for `slurm`.
    pub slurm: Option<crate::config::SlurmConfig>,
    /// The block and dispatcher settings of a pilot kind (`slurm`, `processes`).
    pub pilot: Option<crate::config::PilotConfig>,
    /// Whether staged files may replace files stagehost did not put there.
    pub overwrite: bool,
}

/// Everything discovered and built for one config.
#[derive(Debug)]
pub struct Registry {
    /// The directories searched, in order.
    pub dirs: Vec<PluginDir>,
    /// Every plugin file found.
    pub plugins: Vec<PluginRecord>,
    /// Every instance, configured first, then dropped-in.
    pub instances: Vec<InstanceRecord>,
    /// Every executor.
    pub executors: Vec<ExecutorRecord>,
}

/// `path` made absolute against the current directory (kept as is if that fails).
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// Resolves `path` against `base` unless absolute.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || base == Path::new(".") {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

impl Registry {
    /// Discovers plugins and builds every instance and executor order of `config`.
    ///
    /// Fails only for what the config makes fatal: a `required` instance that did not
    /// build, or a `staging` list naming an instance that does not exist.
    pub fn build(config: &Config, loader: &PluginLoader) -> Result<Registry, ConfigError> {
        let base = config.base_dir();
        let (dirs, plugins) = Registry::discover(config, loader);
        Registry::build_from(config, loader, &base, dirs, plugins)
    }

    /// The plugin directories of `config` and every plugin file in them, loaded. Never
    /// fails: a file that does not load is recorded with its reason.
    pub fn discover(config: &Config, loader: &PluginLoader) -> (Vec<PluginDir>, Vec<PluginRecord>) {
        let base = config.base_dir();
        let config_dirs: Vec<PathBuf> = config
            .plugin_dirs
            .iter()
            .map(|d| resolve(&base, d))
            .collect();
        let dirs = plugin_dirs(&config_dirs, &config.source.name());
        let mut plugins: Vec<PluginRecord> = Vec::new();
        for dir in &dirs {
            for path in plugin_files(&dir.path) {
                let status = match loader.load(&path) {
                    Err(e) => PluginStatus::Failed(e.0),
                    Ok(plugin) => match first_loaded(&plugins, &plugin.name) {
                        Some(winner) if !Arc::ptr_eq(winner, &plugin) => PluginStatus::Shadowed {
                            plugin,
                            by: winner.path.clone(),
                        },
                        Some(_) => continue, // the same library reached through a second path
                        None => PluginStatus::Loaded(plugin),
                    },
                };
                match &status {
                    PluginStatus::Loaded(p) => tracing::debug!(
                        "loaded plugin {} {} from {} ({})",
                        p.name,
                        p.version,
                        path.display(),
                        dir.origin
                    ),
                    PluginStatus::Shadowed { by, .. } => tracing::debug!(
                        "skipped {}: a plugin of the same name loaded from {} first",
                        path.display(),
                        by.display()
                    ),
                    PluginStatus::Failed(_) => {}
                }
                plugins.push(PluginRecord {
                    path,
                    origin: dir.origin.clone(),
                    status,
                });
            }
        }
        (dirs, plugins)
    }

    /// The settings keys each configured instance's plugin declares secret, by
    /// instance name, for plugins that load.
    pub fn declared_secrets(
        config: &Config,
        loader: &PluginLoader,
        plugins: &[PluginRecord],
    ) -> std::collections::HashMap<String, Vec<String>> {
        let base = config.base_dir();
        config
            .providers
            .iter()
            .filter_map(|pc| {
                let plugin = match (&pc.plugin, &pc.library) {
                    (_, Some(lib)) => loader.load(&resolve(&base, lib)).ok()?,
                    (Some(name), None) => first_loaded(plugins, name)?.clone(),
                    (None, None) => return None,
                };
                Some((pc.name.clone(), plugin.secret_settings.clone()))
            })
            .collect()
    }

    fn build_from(
        config: &Config,
        loader: &PluginLoader,
        base: &Path,
        dirs: Vec<PluginDir>,
        plugins: Vec<PluginRecord>,
    ) -> Result<Registry, ConfigError> {
        let mut instances = Vec::new();
        for (index, pc) in config.providers.iter().enumerate() {
            let mut plugin_missing = false;
            let status = match build_instance(config, index, pc, &plugins, loader, base) {
                Ok(instance) => Ok(instance),
                Err(InstanceFailure::Missing(reason)) => {
                    plugin_missing = true;
                    Err(reason)
                }
                // Settings the plugin rejects are a mistake in the config, like an
                // unknown key in the host's own tables: every command stops on it.
                Err(InstanceFailure::Settings(line)) => return Err(ConfigError(line)),
                Err(InstanceFailure::Other(reason)) => Err(reason),
            };
            if let (true, Err(reason)) = (pc.required, &status) {
                return Err(ConfigError(format!("required {reason}")));
            }
            instances.push(InstanceRecord {
                name: pc.name.clone(),
                origin: InstanceOrigin::Configured(index),
                status,
                plugin_missing,
            });
        }
        let named = |p: &LoadedPlugin| {
            config.providers.iter().any(|pc| {
                pc.plugin.as_deref() == Some(p.name.as_str())
                    || pc
                        .library
                        .as_ref()
                        .is_some_and(|l| same_file(&resolve(base, l), &p.path))
            })
        };
        for record in &plugins {
            let PluginStatus::Loaded(plugin) = &record.status else {
                continue;
            };
            if named(plugin) || instances.iter().any(|i| i.name == plugin.name) {
                continue;
            }
            let status = plugin
                .new_provider("")
                .map(|provider| {
                    Arc::new(ProviderInstance {
                        secrets: Arc::from(Vec::new()),
                        label: plugin.name.as_str().into(),
                        secrets_longest_first: Arc::from(Vec::new()),
                        claims_only: claimed_schemes(&plugin.name, plugin, &provider),
                        name: plugin.name.clone(),
                        plugin: plugin.clone(),
                        provider,
                    })
                })
                .map_err(|e| {
                    format!(
                        "provider {:?} (dropped-in {}): {e}",
                        plugin.name,
                        plugin.path.display()
                    )
                });
            instances.push(InstanceRecord {
                name: plugin.name.clone(),
                origin: InstanceOrigin::DroppedIn,
                status,
                plugin_missing: false,
            });
        }

        let default_order: Vec<String> = instances.iter().map(|i| i.name.clone()).collect();
        let mut executors = Vec::new();
        for (label, ec) in &config.executors {
            let (order, explicit) = match &ec.staging {
                Some(list) => (list.clone(), true),
                None => (default_order.clone(), false),
            };
            for name in &order {
                if !instances.iter().any(|i| &i.name == name) {
                    let known = default_order.join(", ");
                    let msg = format!(
                        "executor {label:?}: staging names provider {name:?}, which is neither configured nor a dropped-in plugin (known: {known})"
                    );
                    let at = config
                        .source
                        .locate(&[Key("executor"), Key(label), Key("staging")]);
                    return Err(ConfigError(format!("{at}: {msg}")));
                }
            }
            executors.push(ExecutorRecord {
                label: label.clone(),
                working_dir: absolute(resolve(base, &ec.working_dir)),
                order,
                explicit,
                workers: ec
                    .workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                kind: ec.kind,
                overwrite: ec.overwrite,
                slurm: match ec.kind {
                    crate::config::ExecutorKind::Slurm => {
                        Some(ec.slurm.clone().unwrap_or_default())
                    }
                    _ => None,
                },
                pilot: ec.pilot(),
            });
        }
        Ok(Registry {
            dirs,
            plugins,
            instances,
            executors,
        })
    }

    /// The instance named `name`, if it is ready.
    pub fn instance(&self, name: &str) -> Option<&InstanceRecord> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// Logs what failed to load, as every program that builds a registry does (the
    /// CLI, the Python package): plugin directories that cannot be searched, plugin
    /// files that did not load, instances that were not made. An instance of the
    /// embedded default config whose plugin is simply not installed is only a debug
    /// line.
    pub fn log_problems(&self, config: &Config) {
        for problem in self.dirs.iter().filter_map(|d| d.problem()) {
            tracing::warn!("{problem}");
        }
        for p in &self.plugins {
            if let PluginStatus::Failed(reason) = &p.status {
                tracing::warn!("plugin file {}: {reason}", p.path.display());
            }
        }
        let embedded = config.source == crate::config::ConfigSource::Embedded;
        for (instance, reason) in self.failed_instances() {
            if embedded && instance.plugin_missing {
                tracing::debug!("{reason}");
            } else {
                tracing::warn!("{reason}");
            }
        }
    }

    /// Instances that failed, with their reasons.
    pub fn failed_instances(&self) -> impl Iterator<Item = (&InstanceRecord, &str)> {
        self.instances
            .iter()
            .filter_map(|i| i.status.as_ref().err().map(|r| (i, r.as_str())))
    }
}

fn first_loaded<'a>(plugins: &'a [PluginRecord], name: &str) -> Option<&'a Arc<LoadedPlugin>> {
    plugins.iter().find_map(|r| match &r.status {
        PluginStatus::Loaded(p) if p.name == name => Some(p),
        _ => None,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The key written on the line of `settings` that an error's "(line L, column C of
/// the settings)" names.
fn key_on_settings_line<'a>(settings: &'a str, message: &str) -> Option<&'a str> {
    let at = message.rsplit_once("(line ")?.1;
    let line: usize = at.split(',').next()?.trim().parse().ok()?;
    let text = settings.lines().nth(line.checked_sub(1)?)?;
    let key = text.split_once('=')?.0.trim().trim_matches('"');
    (!key.is_empty()).then_some(key)
}

/// Why a configured instance was not built.
enum InstanceFailure {
    /// The plugin rejected its settings: a config error.
    Settings(String),
    /// No plugin directory holds the plugin it names: recorded.
    Missing(String),
    /// Anything else (a broken plugin, a failing constructor): recorded.
    Other(String),
}

impl From<String> for InstanceFailure {
    fn from(reason: String) -> Self {
        InstanceFailure::Other(reason)
    }
}

fn build_instance(
    config: &Config,
    index: usize,
    pc: &ProviderConfig,
    plugins: &[PluginRecord],
    loader: &PluginLoader,
    base: &Path,
) -> Result<Arc<ProviderInstance>, InstanceFailure> {
    let who = format!("provider {:?} ({})", pc.name, pc.describe_source());
    let pin = pc.sha256.as_deref();
    let plugin = match (&pc.plugin, &pc.library) {
        // A pinned library is hashed on its open descriptor before it is mapped.
        (_, Some(lib)) => loader
            .load_pinned(&resolve(base, lib), pin)
            .map_err(|e| format!("{who}: {}: {e}", resolve(base, lib).display()))?,
        (Some(name), None) => {
            match first_loaded(plugins, name) {
                Some(p) => p.clone(),
                None => {
                    let failed = plugins
                        .iter()
                        .filter(|r| matches!(r.status, PluginStatus::Failed(_)))
                        .count();
                    let hint = if failed > 0 {
                        format!("; {failed} plugin file(s) failed to load, see `stagehost plugins list`")
                    } else {
                        String::new()
                    };
                    return Err(InstanceFailure::Missing(format!(
                        "{who}: missing: no plugin named {name:?} in the plugin directories{hint}"
                    )));
                }
            }
        }
        (None, None) => unreachable!("Config::validate requires plugin or library"),
    };
    if let Some(expected) = pin {
        // A plugin found by name: the digest of the bytes that were mapped.
        let actual = plugin
            .sha256()
            .map_err(|e| format!("{who}: {}: {e}", plugin.path.display()))?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(format!(
                "{who}: {}: {}",
                plugin.path.display(),
                pin_mismatch(expected, actual)
            )
            .into());
        }
    }
    if let Some(req) = &pc.version {
        let req = semver::VersionReq::parse(req).expect("Config::validate checked the requirement");
        if !req.matches(&plugin.version) {
            return Err(format!(
                "{who}: {} is version {}, the config requires {req}",
                plugin.path.display(),
                plugin.version
            )
            .into());
        }
    }
    let settings = toml::to_string(&pc.settings).expect("a TOML table always serialises");
    let provider = plugin.new_provider(&settings).map_err(|e| {
        // The plugin's message may quote a value (serde does, for a wrong type): no
        // secret of these settings survives into the line.
        let secrets = secret_values(&pc.settings, &plugin.secret_settings);
        let message = scrub(&e.to_string(), &secrets);
        // Point at the offending key in the config file: the key on the settings line
        // the plugin's error names, else a key it quotes.
        let key = key_on_settings_line(&settings, &message).or_else(|| message.split('`').nth(1));
        let provider_at = [Key("provider"), Index(index), Key("settings")];
        let line = match key {
            Some(k) => {
                let at = config
                    .source
                    .locate(&[provider_at.as_slice(), &[Key(k)]].concat());
                let short = message.split(" (line ").next().unwrap_or(&message);
                format!("{at}: {who}: {short}")
            }
            None if e.kind() == ErrorKind::InvalidSettings => {
                format!(
                    "{}: {who}: {message}",
                    config.source.locate(&provider_at[..2])
                )
            }
            None => format!("{who}: {message}"),
        };
        if e.kind() == ErrorKind::InvalidSettings {
            InstanceFailure::Settings(line)
        } else {
            InstanceFailure::Other(line)
        }
    })?;
    let secrets = secret_values(&pc.settings, &plugin.secret_settings);
    Ok(Arc::new(ProviderInstance {
        name: pc.name.clone(),
        label: pc.name.as_str().into(),
        claims_only: claimed_schemes(&pc.name, &plugin, &provider),
        plugin,
        provider,
        secrets_longest_first: longest_first(&secrets),
        secrets: Arc::from(secrets),
    }))
}
