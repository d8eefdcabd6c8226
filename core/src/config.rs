//! The TOML config: plugin directories, provider instances and executors; where the
//! config file is looked for; the embedded default.
//!
//! Invariant: a `Config` that [`Config::parse`] returned is valid on its own terms
//! (unique instance names, one of `plugin`/`library` per instance, parseable version
//! requirements, executor orders naming known instances). Whether plugins exist is the
//! registry's business, not this module's: it does no I/O beyond reading the file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spans::At::{self, Index, Key};

/// The embedded default: Parsl's `default_staging` (file, ftp, http, zip) and one
/// executor, `local`, working in the current directory.
pub const EMBEDDED_DEFAULT: &str = include_str!("default-config.toml");

/// The most transfers `max_concurrent` and `per_host` may allow.
pub const MAX_TRANSFERS: usize = 1_000_000;
/// The most worker threads an executor may have.
pub const MAX_WORKERS: usize = 4096;
/// The longest timeout, in seconds (about 31 years).
pub const MAX_SECONDS: f64 = 1e9;
/// The longest backoff, in milliseconds (a day).
pub const MAX_BACKOFF_MS: u64 = 86_400_000;

/// The executor used when a command names none.
pub const DEFAULT_EXECUTOR: &str = "local";

/// A whole config file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directories searched for plugins before the standard ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_dirs: Vec<PathBuf>,
    /// Provider instances; their order is the default staging order.
    #[serde(default, rename = "provider", skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderConfig>,
    /// Executors by label.
    #[serde(default, rename = "executor")]
    pub executors: BTreeMap<String, ExecutorConfig>,
    /// Limits, timeouts and retries for transfers.
    #[serde(default)]
    pub transfers: TransferConfig,
    /// Where this config came from (not part of the TOML).
    #[serde(skip)]
    pub source: ConfigSource,
}

/// One `[[provider]]` table: an instance of a plugin with its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique instance name, used in `staging` lists.
    pub name: String,
    /// The plugin's name from its metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Or a library file to load directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<PathBuf>,
    /// A semver requirement on the plugin's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether a failure to load this instance stops the host.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The SHA-256 (hex) the plugin file's bytes must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Settings passed to the plugin as TOML, checked by it.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub settings: toml::Table,
}

impl ProviderConfig {
    /// What this instance asks for: `plugin "x"` or `library /p`.
    pub fn describe_source(&self) -> String {
        match (&self.plugin, &self.library) {
            (Some(p), _) => format!("plugin {p:?}"),
            (None, Some(l)) => format!("library {}", l.display()),
            (None, None) => "nothing".to_owned(),
        }
    }
}

/// One `[executor.NAME]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Where staged files land by default.
    #[serde(default = "default_working_dir")]
    pub working_dir: PathBuf,
    /// This executor's provider order. Absent: the default order. Empty: nothing can
    /// be staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<Vec<String>>,
    /// How many task bodies run at once (default: the number of CPUs); for `slurm`,
    /// per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Where task bodies run: `local` (this machine's worker threads), `slurm`
    /// (pilot jobs whose workers pull tasks from this run) or `processes` (workers
    /// started as child processes of the run, on this machine).
    #[serde(default, skip_serializing_if = "ExecutorKind::is_local")]
    pub kind: ExecutorKind,
    /// The `[executor.NAME.slurm]` table, for `kind = "slurm"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmConfig>,
    /// The `[executor.NAME.processes]` table, for `kind = "processes"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<ProcessesConfig>,
    /// Whether a staged file or a task's output may replace a file that stagehost did
    /// not put at its destination (as `gfal-copy -f`). Off: such a file is never
    /// overwritten, and the staging fails naming it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overwrite: bool,
}

impl ExecutorConfig {
    /// The pilot settings of a `slurm` or `processes` executor (its table, or the
    /// defaults); `None` for `local`.
    pub fn pilot(&self) -> Option<PilotConfig> {
        match self.kind {
            ExecutorKind::Local => None,
            ExecutorKind::Slurm => {
                let s = self.slurm.clone().unwrap_or_default();
                Some(PilotConfig {
                    blocks: s.blocks,
                    nodes_per_block: s.nodes_per_block,
                    max_idle_secs: s.max_idle_secs,
                    heartbeat_secs: s.heartbeat_secs,
                    prefetch: s.prefetch,
                    address: s.address.unwrap_or_else(|| "127.0.0.1".into()),
                })
            }
            ExecutorKind::Processes => {
                let p = self.processes.clone().unwrap_or_default();
                Some(PilotConfig {
                    blocks: p.blocks,
                    nodes_per_block: 1,
                    max_idle_secs: p.max_idle_secs,
                    heartbeat_secs: p.heartbeat_secs,
                    prefetch: p.prefetch,
                    address: "127.0.0.1".into(),
                })
            }
        }
    }
}

/// An executor's kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Worker threads of this process.
    #[default]
    Local,
    /// Pilot jobs (blocks) submitted with `sbatch`, each running `stagehost worker`.
    Slurm,
    /// Blocks that are child processes of the run, each a `stagehost worker`.
    Processes,
}

impl ExecutorKind {
    /// The kind as the config writes it: `local`, `slurm`, `processes`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
            ExecutorKind::Processes => "processes",
        }
    }

    /// Whether this is the default, `local`.
    pub fn is_local(&self) -> bool {
        *self == ExecutorKind::Local
    }
}

/// The `[executor.NAME.slurm]` table: how blocks are submitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// `--partition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--account`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `--qos`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// `--time` of each block (`HH:MM:SS`, or any form sbatch takes).
    pub walltime: String,
    /// Blocks at most at once: started on demand, ended when idle.
    pub blocks: usize,
    /// `--nodes` of each block.
    pub nodes_per_block: usize,
    /// Extra `#SBATCH` options, each as sbatch takes it (`--mem=4G`).
    pub sbatch_options: Vec<String>,
    /// Shell lines run on the node before the worker starts (module loads, a venv).
    pub worker_init: Vec<String>,
    /// The address workers connect back to (default: 127.0.0.1 when every node is
    /// this host; set it to an address the nodes reach).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Seconds a block may stay idle before it is ended.
    pub max_idle_secs: f64,
    /// Seconds between heartbeats; a peer silent for three is lost.
    pub heartbeat_secs: f64,
    /// Tasks sent to each worker beyond its free slots, queued on the node to hide
    /// the round trip (Parsl's `prefetch_capacity`); 0 keeps work for idle blocks.
    pub prefetch: usize,
}

/// The `[executor.NAME.processes]` table: workers as child processes of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessesConfig {
    /// Worker processes at most at once: started on demand, ended when idle.
    pub blocks: usize,
    /// Seconds a worker process may stay idle before it is ended.
    pub max_idle_secs: f64,
    /// Seconds between heartbeats; a peer silent for three is lost.
    pub heartbeat_secs: f64,
    /// Tasks sent to each worker beyond its free slots (see `SlurmConfig::prefetch`).
    pub prefetch: usize,
}

impl Default for ProcessesConfig {
    fn default() -> Self {
        ProcessesConfig {
            blocks: 1,
            max_idle_secs: 120.0,
            heartbeat_secs: 5.0,
            prefetch: 0,
        }
    }
}

/// What every pilot kind (`slurm`, `processes`) shares: how many blocks, how many
/// workers' nodes each, and the dispatcher's timings.
#[derive(Debug, Clone, PartialEq)]
pub struct PilotConfig {
    pub blocks: usize,
    pub nodes_per_block: usize,
    pub max_idle_secs: f64,
    pub heartbeat_secs: f64,
    pub prefetch: usize,
    /// The address workers connect back to.
    pub address: String,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            partition: None,
            account: None,
            qos: None,
            walltime: "01:00:00".into(),
            blocks: 1,
            nodes_per_block: 1,
            sbatch_options: Vec::new(),
            worker_init: Vec::new(),
            address: None,
            max_idle_secs: 120.0,
            heartbeat_secs: 5.0,
            prefetch: 0,
        }
    }
}

/// The `[transfers]` table: bounds on staging work (separate jobs and in-task steps).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransferConfig {
    /// Transfers running at once, over all hosts.
    pub max_concurrent: usize,
    /// Transfers running at once against one host (a URL's netloc).
    pub per_host: usize,
    /// Seconds one transfer attempt may take (0: no limit).
    pub timeout_secs: f64,
    /// Retries of a transfer whose provider marked its error transient.
    pub retries: u32,
    /// First backoff delay, in milliseconds; doubles each retry, with jitter.
    pub backoff_initial_ms: u64,
    /// Largest backoff delay, in milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            max_concurrent: 16,
            per_host: 4,
            timeout_secs: 0.0,
            retries: 3,
            backoff_initial_ms: 200,
            backoff_max_ms: 10_000,
        }
    }
}

fn default_working_dir() -> PathBuf {
    PathBuf::from(".")
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            working_dir: default_working_dir(),
            staging: None,
            workers: None,
            kind: ExecutorKind::Local,
            slurm: None,
            processes: None,
            overwrite: false,
        }
    }
}

/// Where a config came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// The default compiled into the binary.
    #[default]
    Embedded,
    /// A file, found by the given rule.
    File {
        /// The file.
        path: PathBuf,
        /// Which rule found it (`--config`, `STAGEHOST_CONFIG`, ...).
        found_by: &'static str,
        /// Its text, kept to point at lines in later errors.
        text: String,
    },
    /// Text handed over by a program (such as `StagehostStaging(config=...)`), not
    /// read from a file.
    Inline {
        /// What to call it in messages.
        name: String,
        /// The directory its relative paths are resolved against.
        base: PathBuf,
        /// Its text.
        text: String,
    },
}

impl ConfigSource {
    /// A short name for messages: the path, or `<embedded default>`.
    pub fn name(&self) -> String {
        match self {
            ConfigSource::Embedded => "<embedded default config>".to_owned(),
            ConfigSource::File { path, .. } => path.display().to_string(),
            ConfigSource::Inline { name, .. } => name.clone(),
        }
    }
    /// The config's text (the embedded default's for `Embedded`).
    pub fn text(&self) -> &str {
        match self {
            ConfigSource::Embedded => EMBEDDED_DEFAULT,
            ConfigSource::File { text, .. } | ConfigSource::Inline { text, .. } => text,
        }
    }
    /// `name:line:column` of `path` in the config's text (the key itself, else the
    /// nearest enclosing table written), or the name alone.
    pub fn locate(&self, path: &[At<'_>]) -> String {
        match crate::spans::offset_of(self.text(), path) {
            Some(offset) => {
                let (l, c) = line_column(self.text(), offset);
                format!("{}:{l}:{c}", self.name())
            }
            None => self.name(),
        }
    }
}

/// An error in a config, as one line: `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A TOML parse error as one line: `name:line:column: message`.
pub fn toml_error_line(name: &str, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let (l, c) = line_column(text, span.start);
            format!("{name}:{l}:{c}: {message}")
        }
        None => format!("{name}: {message}"),
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Config {
    /// Parses and validates `text`, which came from `source`.
    pub fn parse(text: &str, source: ConfigSource) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| ConfigError(toml_error_line(&source.name(), text, &e)))?;
        config.source = source;
        config.validate()?;
        if config.executors.is_empty() {
            config
                .executors
                .insert(DEFAULT_EXECUTOR.to_owned(), ExecutorConfig::default());
        }
        Ok(config)
    }

    /// The embedded default.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_DEFAULT, ConfigSource::Embedded)
            .expect("the embedded default config is valid (checked by a unit test)")
    }

    /// Finds and reads the config: `explicit` (from `--config`), then
    /// `STAGEHOST_CONFIG`, `./stagehost.toml`, `$XDG_CONFIG_HOME/stagehost/config.toml`,
    /// `/etc/stagehost/config.toml`, then the embedded default.
    pub fn locate(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let mut candidates: Vec<(PathBuf, &'static str, bool)> = Vec::new();
        if let Some(p) = explicit {
            candidates.push((p.to_path_buf(), "--config", true));
        }
        if let Some(p) = std::env::var_os("STAGEHOST_CONFIG").filter(|v| !v.is_empty()) {
            candidates.push((PathBuf::from(p), "STAGEHOST_CONFIG", true));
        }
        candidates.push((PathBuf::from("stagehost.toml"), "./stagehost.toml", false));
        if let Some(dir) = xdg_dir("XDG_CONFIG_HOME", ".config") {
            candidates.push((dir.join("stagehost/config.toml"), "XDG_CONFIG_HOME", false));
        }
        candidates.push((
            PathBuf::from("/etc/stagehost/config.toml"),
            "/etc/stagehost",
            false,
        ));
        for (path, found_by, must_exist) in candidates {
            match read_trusted(&path) {
                Ok(text) => {
                    let source = ConfigSource::File {
                        path,
                        found_by,
                        text: text.clone(),
                    };
                    return Config::parse(&text, source);
                }
                Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                    continue
                }
                Err(ReadError::Io(e)) => {
                    return Err(ConfigError(format!(
                        "{}: cannot read config (named by {found_by}): {e}",
                        path.display()
                    )))
                }
                Err(ReadError::Untrusted(why)) => {
                    return Err(ConfigError(format!(
                        "{}: {why} (config found by {found_by}; a config names code to load, so only you or root may write it)",
                        path.display()
                    )))
                }
            }
        }
        Ok(Config::embedded())
    }

    /// The directory relative paths in this config are resolved against: the config
    /// file's directory, or the current directory for the embedded default.
    pub fn base_dir(&self) -> PathBuf {
        match &self.source {
            ConfigSource::File { path, .. } => path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            ConfigSource::Inline { base, .. } => base.clone(),
            ConfigSource::Embedded => PathBuf::from("."),
        }
    }

    /// The effective config as TOML, with secret settings shown as `***`: keys whose
    /// names mark a secret (see [`is_secret_name`]), at any depth of tables and arrays,
    /// and the keys each instance's plugin declares secret (`declared`, by instance
    /// name).
    pub fn to_toml_redacted(&self, declared: &HashMap<String, Vec<String>>) -> String {
        let mut shown = self.clone();
        for p in &mut shown.providers {
            let extra = declared.get(&p.name).map_or(&[][..], Vec::as_slice);
            crate::secrets::redact_table(&mut p.settings, extra);
        }
        toml::to_string_pretty(&shown).expect("a Config always serialises: all keys are strings")
    }

    /// `message` as one line, at the place `path` is written (see [`crate::spans`]).
    fn error_at(&self, path: &[At<'_>], message: String) -> ConfigError {
        ConfigError(format!("{}: {message}", self.source.locate(path)))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (index, p) in self.providers.iter().enumerate() {
            let at = |key| [Key("provider"), Index(index), Key(key)];
            if p.name.is_empty() {
                return Err(self.error_at(&at("name"), "a provider's name is empty".into()));
            }
            if !seen.insert(p.name.as_str()) {
                return Err(self.error_at(
                    &at("name"),
                    format!(
                        "provider name {:?} is used twice; instance names must be unique",
                        p.name
                    ),
                ));
            }
            match (&p.plugin, &p.library) {
                (Some(_), Some(_)) => {
                    return Err(self.error_at(
                        &at("library"),
                        format!(
                            "provider {:?} sets both `plugin` and `library`; set one",
                            p.name
                        ),
                    ))
                }
                (None, None) => {
                    return Err(self.error_at(
                        &at("name"),
                        format!("provider {:?} sets neither `plugin` nor `library`", p.name),
                    ))
                }
                _ => {}
            }
            if let Some(pin) = &p.sha256 {
                if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(self.error_at(
                        &at("sha256"),
                        format!("provider {:?}: sha256 must be 64 hex digits", p.name),
                    ));
                }
            }
            if let Some(req) = &p.version {
                semver::VersionReq::parse(req).map_err(|e| {
                    self.error_at(
                        &at("version"),
                        format!(
                            "provider {:?}: version requirement {req:?} is not valid semver: {e}",
                            p.name
                        ),
                    )
                })?;
            }
        }
        let t = &self.transfers;
        for (key, value) in [
            ("max_concurrent", t.max_concurrent),
            ("per_host", t.per_host),
        ] {
            if !(1..=MAX_TRANSFERS).contains(&value) {
                return Err(self.error_at(
                    &[Key("transfers"), Key(key)],
                    format!("[transfers] {key} must be between 1 and {MAX_TRANSFERS}, not {value}"),
                ));
            }
        }
        if !(t.timeout_secs >= 0.0 && t.timeout_secs <= MAX_SECONDS) {
            return Err(self.error_at(
                &[Key("transfers"), Key("timeout_secs")],
                format!(
                    "[transfers] timeout_secs must be a number of seconds from 0 to {MAX_SECONDS}, not {}",
                    show_number(t.timeout_secs)
                ),
            ));
        }
        for (key, value) in [
            ("backoff_initial_ms", t.backoff_initial_ms),
            ("backoff_max_ms", t.backoff_max_ms),
        ] {
            if value > MAX_BACKOFF_MS {
                return Err(self.error_at(
                    &[Key("transfers"), Key(key)],
                    format!(
                        "[transfers] {key} must be at most {MAX_BACKOFF_MS} (a day), not {value}"
                    ),
                ));
            }
        }
        for (label, executor) in &self.executors {
            let at = |key| [Key("executor"), Key(label), Key(key)];
            // A label names directories (a pilot's run directory) and is an argument
            // of the worker's command line.
            let plain = !label.is_empty()
                && !label.starts_with(['-', '.'])
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !plain {
                return Err(self.error_at(
                    &[Key("executor"), Key(label)],
                    format!("executor {label:?}: a label is letters, digits, `-`, `_` and `.`, not starting with `-` or `.`"),
                ));
            }
            let slurm_at = |key| [Key("executor"), Key(label), Key("slurm"), Key(key)];
            if let Some(workers) = executor.workers.filter(|w| !(1..=MAX_WORKERS).contains(w)) {
                return Err(self.error_at(
                    &at("workers"),
                    format!("executor {label:?}: workers must be between 1 and {MAX_WORKERS}, not {workers}"),
                ));
            }
            for (table, kind, present) in [
                ("slurm", ExecutorKind::Slurm, executor.slurm.is_some()),
                (
                    "processes",
                    ExecutorKind::Processes,
                    executor.processes.is_some(),
                ),
            ] {
                if present && executor.kind != kind {
                    return Err(self.error_at(
                        &at(table),
                        format!("executor {label:?}: a [executor.{label}.{table}] table needs kind = \"{table}\""),
                    ));
                }
            }
            if let Some(pilot) = executor.pilot() {
                let table = executor.kind.as_str();
                let pilot_at = |key| [Key("executor"), Key(label), Key(table), Key(key)];
                for (key, value, max) in [
                    ("blocks", pilot.blocks, 1024),
                    ("nodes_per_block", pilot.nodes_per_block, 4096),
                ] {
                    if !(1..=max).contains(&value) {
                        return Err(self.error_at(
                            &pilot_at(key),
                            format!("executor {label:?}: {table} {key} must be between 1 and {max}, not {value}"),
                        ));
                    }
                }
                if pilot.prefetch > 4096 {
                    return Err(self.error_at(
                        &pilot_at("prefetch"),
                        format!(
                            "executor {label:?}: {table} prefetch must be at most 4096, not {}",
                            pilot.prefetch
                        ),
                    ));
                }
                // A heartbeat shorter than a network round trip loses every worker.
                for (key, value, least) in [
                    ("heartbeat_secs", pilot.heartbeat_secs, 0.05),
                    ("max_idle_secs", pilot.max_idle_secs, 0.0),
                ] {
                    if !(value.is_finite() && value > least && value <= 86_400.0) {
                        return Err(self.error_at(
                            &pilot_at(key),
                            format!("executor {label:?}: {table} {key} must be above {least} and at most 86400, not {value}"),
                        ));
                    }
                }
            }
            if executor.kind == ExecutorKind::Slurm {
                let slurm = executor.slurm.clone().unwrap_or_default();
                if slurm.walltime.trim().is_empty() {
                    return Err(self.error_at(
                        &slurm_at("walltime"),
                        format!("executor {label:?}: slurm walltime is empty"),
                    ));
                }
                let lines = [
                    ("sbatch_options", &slurm.sbatch_options),
                    ("worker_init", &slurm.worker_init),
                ];
                for (key, line) in lines
                    .iter()
                    .flat_map(|(k, v)| v.iter().map(move |l| (*k, l)))
                {
                    if line.contains('\n') {
                        return Err(self.error_at(
                            &slurm_at(key),
                            format!("executor {label:?}: slurm sbatch_options and worker_init hold one line each, not {line:?}"),
                        ));
                    }
                }
            }
            for name in executor.staging.iter().flatten() {
                let known_plugin = self.providers.iter().any(|p| &p.name == name);
                if !known_plugin && !is_plausible_dropin(name) {
                    return Err(self.error_at(
                        &at("staging"),
                        format!("executor {label:?}: staging names {name:?}, which is not a valid provider name"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A `staging` entry that names no `[[provider]]` may still name a dropped-in plugin's
/// implicit instance; the registry decides once plugins are discovered.
fn is_plausible_dropin(name: &str) -> bool {
    !name.is_empty() && !name.contains(char::is_whitespace)
}

enum ReadError {
    Io(std::io::Error),
    Untrusted(String),
}

/// Reads a config file, refusing one that others may write (group- or world-writable,
/// or owned by someone other than the user or root), as plugin files are refused. The
/// checks and the read use one open descriptor.
fn read_trusted(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if meta.is_file() {
        crate::discovery::check_ownership(path, &meta, "the config")
            .map_err(|r| ReadError::Untrusted(r.0))?;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(ReadError::Io)?;
    Ok(text)
}

/// A number as a person wrote it: `1e300`, not three hundred digits.
pub fn show_number(x: f64) -> String {
    if x.is_finite() && x != 0.0 && !(1e-4..1e9).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// `$VAR`, or `$HOME/fallback` when unset or empty.
pub fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            ConfigSource::File {
                path: "site.toml".into(),
                found_by: "test",
                text: text.into(),
            },
        )
    }

    #[test]
    fn embedded_default_is_parsls_default_staging() {
        let c = Config::embedded();
        let names: Vec<_> = c.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["file", "ftp", "http", "zip"]);
        assert!(c.executors[DEFAULT_EXECUTOR].staging.is_none());
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let err =
            parse("[[provider]]\nname = \"a\"\nplugin = \"file\"\nsetings = {}\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("site.toml:4:1: unknown field `setings`"),
            "{err}"
        );
        let err = parse("[executor.local]\nworking_dir = \"w\"\nstaging = []\nworkdir = 1\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("site.toml:4:1: unknown field `workdir`"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_and_bad_versions_are_errors() {
        let dup = "[[provider]]\nname = \"a\"\nplugin = \"x\"\n[[provider]]\nname = \"a\"\nplugin = \"y\"\n";
        assert!(parse(dup).unwrap_err().to_string().contains("used twice"));
        let bad = "[[provider]]\nname = \"a\"\nplugin = \"x\"\nversion = \"^^1\"\n";
        let err = parse(bad).unwrap_err().to_string();
        assert!(
            err.starts_with("site.toml:4:1: provider \"a\": version requirement"),
            "{err}"
        );
    }

    #[test]
    fn empty_staging_list_differs_from_none() {
        let c = parse("[executor.a]\nstaging = []\n[executor.b]\n").unwrap();
        assert_eq!(c.executors["a"].staging, Some(vec![]));
        assert_eq!(c.executors["b"].staging, None);
    }

    #[test]
    fn a_processes_table_is_checked_as_a_slurm_one_is() {
        let parse = |text: &str| {
            let source = ConfigSource::File {
                path: "c.toml".into(),
                found_by: "t",
                text: text.into(),
            };
            Config::parse(text, source)
        };
        let e = parse("[executor.a]\nworkers = 1\n[executor.a.processes]\nblocks = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:3:13: executor \"a\": a [executor.a.processes] table needs kind = \"processes\""), "{e}");
        let e = parse("[executor.a]\nkind = \"processes\"\n[executor.a.processes]\nblocks = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "c.toml:4:1: executor \"a\": processes blocks must be between 1 and 1024, not 0"
            ),
            "{e}"
        );
        let c = parse("[executor.a]\nkind = \"processes\"\n").unwrap();
        let pilot = c.executors["a"].pilot().unwrap();
        assert_eq!((pilot.blocks, pilot.nodes_per_block), (1, 1));
        assert!(c.executors["a"].processes.is_none());
    }

    #[test]
    fn config_show_hides_secrets() {
        let c = parse("[[provider]]\nname = \"s3\"\nplugin = \"s3\"\nsettings = { bucket = \"b\", secret_access_key = \"hunter2\", auth = { password = \"pw\" } }\n").unwrap();
        let shown = c.to_toml_redacted(&HashMap::new());
        assert!(
            !shown.contains("hunter2") && !shown.contains("\"pw\""),
            "{shown}"
        );
        assert!(shown.contains("secret_access_key = \"***\""), "{shown}");
        assert!(shown.contains("bucket = \"b\""), "{shown}");
        assert_eq!(
            c.providers[0].settings["secret_access_key"].as_str(),
            Some("hunter2"),
            "only the shown copy changes"
        );
    }

    #[test]
    fn locate_finds_inline_table_keys() {
        let text = "[[provider]]\nname = \"f\"\nplugin = \"file\"\nsettings = { mode = \"copy\", moed = 1 }\n";
        let src = ConfigSource::File {
            path: "c.toml".into(),
            found_by: "t",
            text: text.into(),
        };
        let path = [Key("provider"), Index(0), Key("settings"), Key("moed")];
        assert_eq!(src.locate(&path), "c.toml:4:29");
    }

    #[test]
    fn an_error_points_at_its_own_executors_key() {
        // Before: the first `workers` in the file, executor "a"'s.
        let text = "[executor.a]\nworkers = 2\n\n[executor.b]\nworkers = 0\n";
        let source = |text: &str| ConfigSource::File {
            path: "c.toml".into(),
            found_by: "t",
            text: text.into(),
        };
        let e = Config::parse(text, source(text)).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:5:1: executor \"b\": workers"), "{e}");
        let text = "[[provider]]\nname = \"a\"\nplugin = \"file\"\n[[provider]]\nname = \"b\"\nplugin = \"file\"\nsha256 = \"12\"\n";
        let e = Config::parse(text, source(text)).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:7:1: provider \"b\": sha256"), "{e}");
    }
}
