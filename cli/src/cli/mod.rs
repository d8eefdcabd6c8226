//! Command-line arguments, dispatch and exit codes.
//!
//! Exit codes: 0 success; 1 a staging failure; 2 a usage or config error; 128 + the
//! signal's number when SIGINT, SIGTERM or SIGHUP cancelled the command.

mod inspect;
mod lineage;
mod meta;
mod output;
mod plugins;
pub mod progress;
mod report;
mod run;
mod stage;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stagehost::{Config, ConfigError, PluginLoader, Registry};

/// Stage task files through provider plugins, as Parsl's data manager does.
#[derive(Debug, Parser)]
#[command(name = "stagehost", version, long_version = meta::long_version(), about, long_about = None)]
#[command(
    after_help = "Logging: set RUST_LOG (for example RUST_LOG=debug or RUST_LOG=stagehost::plugin=info).\nExit codes: 0 success; 1 a failure of another kind (a command exited non-zero, mixed failures); 2 usage, config or workflow error; when every failure has one class: 3 not found, 4 permission or authentication, 5 integrity (checksum, size), 6 transient, still failing after the retries; 130/143/129 cancelled by SIGINT/SIGTERM/SIGHUP; 141 output closed."
)]
pub struct Args {
    /// Config file (else STAGEHOST_CONFIG, ./stagehost.toml, $XDG_CONFIG_HOME/stagehost/config.toml, /etc/stagehost/config.toml, the embedded default)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More log lines: -v info, -vv debug, -vvv trace (RUST_LOG, when set, decides instead)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines as text or as one JSON object each (time, level, target, message)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "STAGEHOST_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
    /// Off a terminal, a progress line (bytes, throughput, ETA) every SECONDS while files move; 0: none
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECONDS")]
    pub stats: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the provider plugins
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Stage files in or out through the data manager
    #[command(subcommand)]
    Stage(StageCommand),
    /// Run a workflow: tasks whose inputs and outputs are staged
    Run(run::RunArgs),
    /// Print what URLs name (kind, size, time, ETag) without moving their bytes
    Stat(inspect::StatArgs),
    /// List a directory or prefix (-R for the whole tree) without moving any bytes
    Ls(inspect::LsArgs),
    /// Inspect the config
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write one self-contained HTML page from a `run --report` file: timeline, bytes/s, providers, failures
    Report(report::ReportArgs),
    /// Print what produced a file (task, command, inputs, back to the sources) from the
    /// run journals; --check re-verifies every recorded identity
    Lineage(lineage::LineageArgs),
    /// Serve a run's tasks on this node (started by a `slurm` or `processes` executor's blocks)
    Worker(worker::WorkerArgs),
    /// Print this build's version and commit, plugin-api's, and every plugin found with its own
    Version {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Write man pages (stagehost.1 and one per command) into DIR
    Man {
        /// Where the pages go (created if missing)
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// List every plugin found, every provider instance and each executor's order
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Exit non-zero (2) when a configured provider fails to load
    Check,
}

#[derive(Debug, Subcommand)]
enum StageCommand {
    /// Stage URLs in: run each file's separate job and in-task step
    In(stage::StageInArgs),
    /// Stage a local output out to a URL
    Out(stage::StageOutArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective config as TOML, after a comment naming where it came from
    Show,
    /// Print which config file is used and which rule found it ("embedded default" if none)
    Path,
}

/// A failure of the whole command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A usage or config error: exit 2.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A staging failure already reported per file: exit 1.
    #[error("{0}")]
    Staging(String),
    /// Files or tasks failed: the exit code of their shared class
    /// ([`FailureClass::exit_code_of`](stagehost::report::FailureClass::exit_code_of)).
    #[error("{line}")]
    Failed { line: String, code: u8 },
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => 2,
            CliError::Staging(_) => 1,
            CliError::Failed { code, .. } => *code,
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (else by `-v`: `warn` by default, `info`,
/// `debug`, `trace`), one line an event as the
/// command's own messages are: `stagehost: warning: ...` (as cargo writes them);
/// at `debug` and `trace` the time and the module come first. Colours only on a
/// terminal and without `NO_COLOR`.
pub fn init_logging(verbose: u8, format: LogFormat) {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let level = ["warn", "info", "debug", "trace"][usize::from(verbose.min(3))];
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(ansi)
            .event_format(Lines { ansi, json: false })
            .init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .event_format(Lines {
                ansi: false,
                json: true,
            })
            .init(),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `stagehost: warning: ...`, as cargo writes them
    Text,
    /// One JSON object a line: `time` (Unix seconds), `level`, `target`, `message`
    Json,
}

/// The word for a level, as the text lines and the JSON `level` say it.
fn level_word(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warning",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

/// `stagehost: <level>: <message> <fields>` for each log event, or one JSON object
/// (`time`, `level`, `target`, `message`) when `json`.
struct Lines {
    ansi: bool,
    json: bool,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Lines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing::Level;
        use tracing_subscriber::fmt::FormatFields;
        let meta = event.metadata();
        let word = level_word(*meta.level());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        if self.json {
            let mut message = String::new();
            ctx.format_fields(
                tracing_subscriber::fmt::format::Writer::new(&mut message),
                event,
            )?;
            let line = serde_json::json!({
                "time": now.as_secs_f64(),
                "level": word,
                "target": meta.target(),
                "message": message,
            });
            return writeln!(writer, "{line}");
        }
        let colour = match *meta.level() {
            Level::ERROR => "31",
            Level::WARN => "33",
            Level::INFO => "32",
            Level::DEBUG => "34",
            Level::TRACE => "35",
        };
        write!(writer, "stagehost: ")?;
        if self.ansi {
            write!(writer, "\x1b[{colour}m{word}\x1b[0m: ")?;
        } else {
            write!(writer, "{word}: ")?;
        }
        if *meta.level() >= Level::DEBUG {
            write!(writer, "[{:.6} {}] ", now.as_secs_f64(), meta.target())?;
        }
        // A message or field may carry a line break or an escape (a path, a plugin's
        // own text): escaped, so one event stays one line that forges nothing.
        let mut fields = String::new();
        ctx.format_fields(
            tracing_subscriber::fmt::format::Writer::new(&mut fields),
            event,
        )?;
        writeln!(writer, "{}", stagehost_plugin_api::display::escape(&fields))
    }
}

/// The signal that cancelled the command, if one did (0: none).
static SIGNALLED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The exit status of a command a signal cancelled: 128 + the signal's number (130
/// for SIGINT, 143 for SIGTERM, 129 for SIGHUP), as shells report a process the
/// signal ended, whatever the command had to say besides.
pub fn cancelled_by_signal() -> Option<u8> {
    match SIGNALLED.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        n => u8::try_from(128 + n).ok(),
    }
}

/// On the first SIGINT (Ctrl-C), SIGTERM or SIGHUP, says so and calls `cancel` (work
/// stops cleanly, nothing partial is left, the command ends with its summary); on a
/// second one, exits at once with 128 + the signal's number. Call within a tokio
/// runtime.
pub fn on_ctrl_c(cancel: impl FnOnce() + Send + 'static) {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::interrupt(), "interrupted", libc::SIGINT),
        (SignalKind::terminate(), "terminated", libc::SIGTERM),
        (SignalKind::hangup(), "hung up", libc::SIGHUP),
    ];
    let mut streams = Vec::new();
    for (kind, word, number) in kinds {
        match signal(kind) {
            Ok(s) => streams.push((s, word, number)),
            Err(e) => tracing::warn!("cannot listen for the {word} signal: {e}"),
        }
    }
    type Streams = Vec<(tokio::signal::unix::Signal, &'static str, i32)>;
    async fn next(streams: &mut Streams) -> (&'static str, i32) {
        std::future::poll_fn(|cx| {
            for (s, word, number) in streams.iter_mut() {
                if s.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready((*word, *number));
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
    tokio::spawn(async move {
        let (word, number) = next(&mut streams).await;
        SIGNALLED.store(number, std::sync::atomic::Ordering::SeqCst);
        eprintln!("stagehost: {word}: cancelling; waiting for running transfers to stop (Ctrl-C again to quit now)");
        cancel();
        let (word, number) = next(&mut streams).await;
        eprintln!("stagehost: {word} twice: quitting");
        std::process::exit(128 + number);
    });
}

/// Where the config came from, in one line: `/etc/stagehost/config.toml (found by
/// /etc/stagehost/config.toml)`, or the embedded default.
fn source_line(source: &stagehost::config::ConfigSource) -> String {
    use stagehost::config::ConfigSource;
    match source {
        ConfigSource::File { path, found_by, .. } => format!(
            "{} (found by {found_by})",
            std::path::absolute(path)
                .unwrap_or_else(|_| path.clone())
                .display()
        ),
        ConfigSource::Embedded => "embedded default (no config file found)".to_owned(),
        other => other.name(),
    }
}

/// Loads the config and builds the registry, logging what failed to load.
fn load(config: &Config, loader: &PluginLoader) -> Result<Registry, CliError> {
    let registry = Registry::build(config, loader)?;
    registry.log_problems(config);
    Ok(registry)
}

/// Runs the command.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    // What needs no config.
    match &args.command {
        Command::Completions { shell } => {
            meta::completions(*shell);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { dir } => return meta::man(dir),
        Command::Report(a) => return report::report(a),
        Command::Lineage(a) => return lineage::lineage(a),
        _ => {}
    }
    let config = Config::locate(args.config.as_deref())?;
    tracing::info!("config: {}", source_line(&config.source));
    let loader = PluginLoader::default();
    match args.command {
        Command::Version { json } => {
            let (_, plugins) = Registry::discover(&config, &loader);
            meta::version(&plugins, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { .. }
        | Command::Man { .. }
        | Command::Report(_)
        | Command::Lineage(_) => {
            unreachable!("handled above")
        }
        Command::Config(ConfigCommand::Show) => {
            let (_, plugins) = Registry::discover(&config, &loader);
            let declared = Registry::declared_secrets(&config, &loader, &plugins);
            println!("# {}", source_line(&config.source));
            print!("{}", config.to_toml_redacted(&declared));
            // Plugins dropped into a plugin directory that no [[provider]] names are
            // providers too: shown as the tables that would name them. Settings a
            // plugin rejects fail here as in every command (exit 2), after the config
            // is shown.
            let registry = Registry::build(&config, &loader)?;
            {
                let dropped: Vec<_> = registry
                    .instances
                    .iter()
                    .filter(|i| matches!(i.origin, stagehost::registry::InstanceOrigin::DroppedIn))
                    .collect();
                if !dropped.is_empty() {
                    println!(
                        "\n# Dropped-in providers: plugins found in a plugin directory that no [[provider]]\n# names, each an instance of its own, after the configured ones in the default order."
                    );
                }
                for i in dropped {
                    // A TOML string, however the plugin spells its name.
                    let name = toml::Value::String(i.name.clone());
                    println!("\n[[provider]]\nname = {name}\nplugin = {name}");
                    match &i.status {
                        Ok(p) => println!(
                            "# from {}",
                            stagehost_plugin_api::display::path(&p.plugin.path)
                        ),
                        Err(e) => {
                            println!("# failed: {}", stagehost_plugin_api::display::escape(e))
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Path) => {
            println!("{}", source_line(&config.source));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(PluginsCommand::List { json }) => {
            let registry = Registry::build(&config, &loader)?;
            plugins::list(&registry, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(PluginsCommand::Check) => {
            let registry = Registry::build(&config, &loader)?;
            plugins::check(&registry)
        }
        Command::Stage(StageCommand::In(a)) => {
            let registry = load(&config, &loader)?;
            stage::stage_in(&registry, config.transfers.clone(), a)
        }
        Command::Run(a) => {
            let registry = load(&config, &loader)?;
            run::run(&config, &registry, a)
        }
        Command::Stat(a) => {
            let registry = load(&config, &loader)?;
            inspect::stat(&registry, &config.transfers, a)
        }
        Command::Ls(a) => {
            let registry = load(&config, &loader)?;
            inspect::ls(&registry, &config.transfers, a)
        }
        Command::Worker(a) => {
            let registry = load(&config, &loader)?;
            worker::worker(&config, &registry, a)
        }
        Command::Stage(StageCommand::Out(a)) => {
            let registry = load(&config, &loader)?;
            stage::stage_out(&registry, config.transfers.clone(), a)
        }
    }
}
