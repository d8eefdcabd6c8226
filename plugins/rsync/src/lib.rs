//! The `rsync` provider: moves files with the `rsync` program, as Parsl's
//! `RSyncStaging` does, without its shell.
//!
//! It claims two kinds of URL:
//! - `file` URLs, when `host` is set (`user@host`): the path names a file on that host,
//!   reached over ssh (`ssh_command`). A site puts this instance before the `file`
//!   no-op in its order, as with Parsl.
//! - `rsync://[user@]host[:port]/module/path`, for rsync daemons. The daemon password
//!   comes from `password_env` (handed to rsync as `RSYNC_PASSWORD`) or
//!   `password_file`, never from the command line.
//!
//! As in Parsl the work is an in-task step by default (`mode = "separate"` makes it a
//! separate job). Stage-in lands at `<working_dir>/<filename>`.
//!
//! rsync runs with an argument vector (no shell) and `--protect-args` (no remote shell
//! parses a path either), in a session of its own tied to stagehost by plugin-api's
//! `process::contain` (it can never prompt, and dies with stagehost, even under
//! SIGKILL); its group is killed (SIGTERM, then SIGKILL) when the host cancels or the
//! deadline passes, with `--timeout` and `--contimeout`. rsync writes a file under a
//! temporary name in a private directory of the destination
//! (`<working_dir>/.stagehost/rsync/<hash>/tmp`) and renames it into place; an
//! interrupted file's data stays in that directory's `partial/` for the next attempt
//! (rsync's `--partial-dir`), and a stage-in that succeeds removes the directory, so
//! nothing is ever left beside the destination. No `--perms`: modes are the host's
//! (no set-id bits, no group/other write). Exit codes and stderr become typed errors;
//! `--info=progress2` feeds the progress sink.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use stagehost_plugin_api::display;
use stagehost_plugin_api::net::{seconds, HostPatterns};
use stagehost_plugin_api::transfer::{Transfer as Transport, TransferProvider};
use stagehost_plugin_api::{Context, ErrorKind, File, Job, Settings, StageError, WorkPlace};

mod list;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RsyncSettings {
    /// `in-task` (the default, as Parsl) or `separate`.
    mode: Option<WorkPlace>,
    /// `[user@]host` whose files `file` URLs name, reached over ssh; unset: this
    /// instance claims only `rsync://` URLs.
    host: Option<String>,
    /// The ssh command and its options (`ssh -p 2222 -i ~/.ssh/site`), split on
    /// whitespace and given to rsync as `-e`.
    ssh_command: Option<String>,
    /// The local rsync program.
    rsync_binary: String,
    /// The rsync program on the remote side of ssh (rsync's `--rsync-path`).
    rsync_path: Option<String>,
    /// Extra rsync arguments, from an allowlist.
    extra_args: Vec<String>,
    /// rsync's `--timeout`: seconds of I/O silence before it gives up.
    timeout_secs: f64,
    /// rsync's `--contimeout` for daemons, and ssh's `ConnectTimeout`.
    connect_timeout_secs: f64,
    /// The name of an environment variable holding the daemon password.
    password_env: Option<String>,
    /// A file holding the daemon password (rsync's `--password-file`).
    password_file: Option<PathBuf>,
    /// Host patterns this instance claims among `rsync://` URLs; empty claims all.
    hosts: Vec<String>,
}

impl Default for RsyncSettings {
    fn default() -> Self {
        RsyncSettings {
            mode: None,
            host: None,
            ssh_command: None,
            rsync_binary: "rsync".to_owned(),
            rsync_path: None,
            extra_args: Vec::new(),
            timeout_secs: 60.0,
            connect_timeout_secs: 30.0,
            password_env: None,
            password_file: None,
            hosts: Vec::new(),
        }
    }
}

/// The extra arguments a site may add: they tune the transfer and cannot change what
/// is written where, or run anything.
const ALLOWED: &[&str] = &[
    "--compress",
    "-z",
    "--compress-level=",
    "--compress-choice=",
    "--skip-compress=",
    "--bwlimit=",
    "--checksum",
    "-c",
    "--checksum-choice=",
    "--whole-file",
    "-W",
    "--no-whole-file",
    "--ipv4",
    "-4",
    "--ipv6",
    "-6",
    "--sparse",
    "--preallocate",
    "--block-size=",
    "--address=",
    "--sockopts=",
];

fn allowed(arg: &str) -> bool {
    ALLOWED.iter().any(|a| match a.strip_suffix('=') {
        Some(_) => arg.starts_with(a) && arg.len() > a.len(),
        None => arg == *a,
    })
}

/// Finds `program` as a path or on `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// See the crate docs.
pub struct Rsync {
    mode: WorkPlace,
    host: Option<String>,
    hosts: HostPatterns,
    runner: Arc<Runner>,
}

/// How rsync is run: everything but the two ends of a transfer.
struct Runner {
    /// The rsync program, or why there is none.
    binary: Result<PathBuf, StageError>,
    ssh: Option<Vec<String>>,
    rsync_path: Option<String>,
    extra: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
}

impl Transport for Rsync {
    fn new(settings: &Settings) -> Result<Self, StageError> {
        let s: RsyncSettings = settings.parse()?;
        let binary = find_program(&s.rsync_binary).ok_or_else(|| {
            StageError::invalid_settings(format!(
                "invalid settings: rsync_binary {:?} is not installed (not found{}); install rsync (apt-get install rsync) or set rsync_binary to its path",
                s.rsync_binary,
                if s.rsync_binary.contains('/') { "" } else { " on PATH" }
            ))
        });
        // A site that set the instance up needs rsync now. An instance with nothing
        // set (dropped in, claiming only rsync:// URLs) fails those URLs instead, so a
        // machine without rsync is not warned about a provider nobody asked for.
        let configured = s.host.is_some() || s.rsync_binary != "rsync";
        let binary = match binary {
            Err(e) if configured => return Err(e),
            other => other,
        };
        if let Some(bad) = s.extra_args.iter().find(|a| !allowed(a)) {
            return Err(StageError::invalid_settings(format!(
                "invalid settings: extra_args may not hold {bad:?}; allowed: {}",
                ALLOWED.join(" ")
            )));
        }
        if s.password_env.is_some() && s.password_file.is_some() {
            return Err(StageError::invalid_settings(
                "invalid settings: password_env and password_file exclude each other",
            ));
        }
        let connect_timeout = seconds("connect_timeout_secs", s.connect_timeout_secs)?;
        let ssh = s
            .ssh_command
            .as_deref()
            .map(|c| c.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
        if ssh.as_ref().is_some_and(Vec::is_empty) {
            return Err(StageError::invalid_settings(
                "invalid settings: ssh_command is empty",
            ));
        }
        Ok(Rsync {
            mode: s.mode.unwrap_or(WorkPlace::InTask),
            host: s.host.filter(|h| !h.is_empty()),
            hosts: HostPatterns::new(&s.hosts),
            runner: Arc::new(Runner {
                binary,
                ssh,
                rsync_path: s.rsync_path,
                extra: s.extra_args,
                timeout: seconds("timeout_secs", s.timeout_secs)?,
                connect_timeout,
                password_env: s.password_env,
                password_file: s.password_file,
            }),
        })
    }

    fn place(&self) -> WorkPlace {
        self.mode
    }

    fn schemes(&self) -> Vec<String> {
        // `file` URLs only with a host to reach them on.
        let mut schemes = vec!["rsync".to_owned()];
        if self.host.is_some() {
            schemes.push("file".into());
        }
        schemes
    }

    fn claims(&self, file: &File) -> Result<bool, StageError> {
        Ok(self.claims_of(file))
    }

    fn get(&self, file: &File) -> Result<Job, StageError> {
        Ok(self.job(file, Direction::In))
    }

    fn stat(
        &self,
        ctx: &Context<'_>,
        file: &File,
    ) -> Result<Option<stagehost_plugin_api::capability::Entry>, StageError> {
        self.stat_remote(ctx, file)
    }

    fn list(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<stagehost_plugin_api::capability::Entry>, StageError> {
        self.list_remote(ctx, dir, recursive)
    }

    fn put(&self, file: &File) -> Result<Job, StageError> {
        Ok(self.job(file, Direction::Out))
    }
}

/// The provider: [`Rsync`] with plugin-api's planning quartet.
pub type RsyncProvider = TransferProvider<Rsync>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    In,
    Out,
}

impl Rsync {
    fn claims_of(&self, file: &File) -> bool {
        match file.scheme() {
            "file" => self.host.is_some(),
            "rsync" => self.hosts.claims(file.netloc()),
            _ => false,
        }
    }

    /// The remote end as rsync reads it: `host:/path` over ssh, or the daemon URL
    /// without a password.
    fn remote(&self, file: &File) -> String {
        match (file.scheme(), &self.host) {
            ("file", Some(host)) => format!("{host}:{}", file.path()),
            _ => {
                let (url, _) = stagehost_plugin_api::net::split_userinfo(file.url());
                let user = file
                    .netloc()
                    .rsplit_once('@')
                    .map(|(info, _)| info.split(':').next().unwrap_or(info).to_owned());
                match user {
                    Some(user) => url.replacen("rsync://", &format!("rsync://{user}@"), 1),
                    None => url,
                }
            }
        }
    }

    fn job(&self, file: &File, direction: Direction) -> Job {
        let runner = self.runner.clone();
        let remote = self.remote(file);
        let daemon = file.scheme() == "rsync";
        let file = file.clone();
        Job::new(move |ctx| {
            let local = file.filepath()?;
            let transfer = Transfer {
                remote: &remote,
                shown: file.redacted_url(),
                local: &local,
                daemon,
            };
            match direction {
                Direction::In => runner.fetch(ctx, &transfer),
                Direction::Out => runner.send(ctx, &transfer),
            }
        })
    }
}

/// One transfer's two ends.
struct Transfer<'a> {
    remote: &'a str,
    shown: String,
    local: &'a Path,
    daemon: bool,
}

/// The last lines of a child's stderr, bounded.
#[derive(Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, line: &str) {
        if self.0.len() == 20 {
            self.0.pop_front();
        }
        self.0.push_back(line.chars().take(500).collect());
    }
    fn text(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join("\n")
    }
    /// The most telling line: the first of rsync's own (`rsync: ...`, `@ERROR`) or
    /// ssh's, since later ones are its consequences (a broken pipe); else the last.
    fn reason(&self) -> String {
        self.0
            .iter()
            .find(|l| l.starts_with("rsync:") || l.starts_with("@ERROR") || l.contains("ssh:"))
            .or_else(|| self.0.back())
            .map(|l| display::escape(l).chars().take(300).collect())
            .unwrap_or_else(|| "no message".to_owned())
    }
}

/// The error for rsync's exit `code`, told apart by its stderr where the code is
/// shared.
fn exit_error(code: i32, tail: &Tail, what: &str) -> StageError {
    let text = tail.text();
    let has = |s: &str| text.contains(s);
    let (kind, meaning) = match code {
        5 => (
            ErrorKind::Permission,
            "the daemon refused: a wrong password or an unknown module",
        ),
        10 => (
            ErrorKind::Transient,
            "socket I/O failed (the daemon refused or dropped the connection)",
        ),
        12 => (
            ErrorKind::Transient,
            "the data stream broke off (the remote side went away)",
        ),
        30 | 35 => (ErrorKind::TimedOut, "timed out"),
        20 => (ErrorKind::Cancelled, "rsync was stopped by a signal"),
        23 | 24 if has("No such file or directory") || has("vanished") => {
            (ErrorKind::NotFound, "the file does not exist")
        }
        23 if has("Permission denied") => (ErrorKind::Permission, "permission denied"),
        23 => (ErrorKind::Other, "some of the transfer failed"),
        255 if has("Permission denied") => (ErrorKind::Permission, "ssh refused the login"),
        255 if has("Could not resolve hostname") => {
            (ErrorKind::NotFound, "ssh cannot resolve the host")
        }
        255 => (
            ErrorKind::Transient,
            "ssh failed (the connection was refused or dropped)",
        ),
        127 => (
            ErrorKind::Other,
            "the remote side has no rsync (set rsync_path)",
        ),
        1 => (ErrorKind::Other, "rsync reported a usage error"),
        3 if has("No such file or directory") => (ErrorKind::NotFound, "the file does not exist"),
        _ => (ErrorKind::Other, "rsync failed"),
    };
    StageError::new(
        kind,
        format!(
            "{what}: rsync exited with code {code} ({meaning}): {}",
            tail.reason()
        ),
    )
}

/// Bytes done, and the total when rsync's percentage tells it.
type Progress = (u64, Option<u64>);

/// Reads rsync's `--info=progress2` output: the bytes done so far, from lines (ended by
/// `\r` or `\n`) such as `  1,234,567  12%  1.23MB/s  0:00:01 (xfr#1, to-chk=0/1)`.
fn progress_bytes(line: &str) -> Option<Progress> {
    let mut words = line.split_whitespace();
    let done: u64 = words.next()?.replace(',', "").parse().ok()?;
    let percent: u64 = words.next()?.strip_suffix('%')?.parse().ok()?;
    let total = (percent > 0).then(|| done * 100 / percent);
    Some((done, total))
}

impl Runner {
    fn base(&self, t: &Transfer<'_>) -> Result<Command, StageError> {
        let mut cmd = Command::new(self.binary.as_ref().map_err(Clone::clone)?);
        // `--protect-args`: the paths travel inside rsync's protocol, so no remote shell
        // parses `;`, `$(...)` or spaces in a URL's path, with every rsync from 3.0 on
        // (before 3.2.4 a remote shell parsed them by default). No `--perms`: a staged
        // file never takes set-id bits or group/other write from the remote side (the
        // host takes off whatever comes anyway).
        cmd.arg("--times")
            .arg("--protect-args")
            .arg("--info=progress2")
            .arg("--no-inc-recursive")
            .arg(format!("--timeout={}", self.timeout.as_secs().max(1)));
        if t.daemon {
            cmd.arg(format!(
                "--contimeout={}",
                self.connect_timeout.as_secs().max(1)
            ));
            if let Some(file) = &self.password_file {
                cmd.arg(format!("--password-file={}", file.display()));
            }
            // Handed to the child only.
            match stagehost_plugin_api::env_secret("password_env", self.password_env.as_deref())? {
                Some(password) => {
                    cmd.env("RSYNC_PASSWORD", password);
                }
                None => {
                    cmd.env_remove("RSYNC_PASSWORD");
                }
            }
        } else {
            let mut ssh = self.ssh.clone().unwrap_or_else(|| vec!["ssh".to_owned()]);
            ssh.extend([
                "-o".to_owned(),
                "BatchMode=yes".to_owned(),
                "-o".to_owned(),
                format!("ConnectTimeout={}", self.connect_timeout.as_secs().max(1)),
            ]);
            cmd.arg("-e").arg(ssh.join(" "));
            if let Some(path) = &self.rsync_path {
                cmd.arg(format!("--rsync-path={path}"));
            }
        }
        cmd.args(&self.extra);
        // The environment must not turn the protection off, or make rsync ask a
        // terminal for anything.
        cmd.env_remove("RSYNC_OLD_ARGS")
            .env_remove("RSYNC_PROTECT_ARGS")
            .env_remove("SSH_ASKPASS")
            .env("SSH_ASKPASS_REQUIRE", "never");
        Ok(cmd)
    }

    /// Remote to `t.local`. rsync writes under a temporary name in a private directory
    /// of this destination (`<working_dir>/.stagehost/rsync/<hash>/tmp`, never beside
    /// the destination, where a user's file could be) and renames it into place. An
    /// interrupted transfer's data stays in that directory's `partial/`, so the next
    /// attempt (a retry, or a later run) resumes from it, as `rsync --partial-dir`
    /// does; a stage-in that succeeds removes the directory.
    fn fetch(&self, ctx: &Context<'_>, t: &Transfer<'_>) -> Result<(), StageError> {
        let dir = t
            .local
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| {
            StageError::io(format_args!("cannot create {}", display::path(dir)), &e)
        })?;
        let private = private_dir(ctx.working_dir(), t.local);
        let (partial, temp) = (private.join("partial"), private.join("tmp"));
        for d in [&partial, &temp] {
            make_private_dir(d)?;
        }
        let mut cmd = self.base(t)?;
        cmd.arg(format!("--partial-dir={}", partial.display()))
            .arg(format!("--temp-dir={}", temp.display()))
            .arg("--")
            .arg(t.remote)
            .arg(t.local);
        let result = self.run(ctx, cmd, &format!("cannot stage in {}", t.shown));
        match &result {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&private);
            }
            Err(_) => {
                // The unfinished temporary goes; the partial data stays for a retry.
                let _ = std::fs::remove_dir_all(&temp);
            }
        }
        result
    }

    /// `t.local` to the remote; the local file is never touched.
    fn send(&self, ctx: &Context<'_>, t: &Transfer<'_>) -> Result<(), StageError> {
        let (_, meta) = stagehost_plugin_api::fs::open_regular(t.local)?;
        let mut cmd = self.base(t)?;
        cmd.arg("--").arg(t.local).arg(t.remote);
        self.run(ctx, cmd, &format!("cannot stage out to {}", t.shown))
            .map_err(|e| {
                StageError::new(
                    e.kind(),
                    format!(
                        "{} (the local file {} is kept)",
                        e.message(),
                        display::path(t.local)
                    ),
                )
            })?;
        ctx.progress(meta.len(), Some(meta.len()));
        Ok(())
    }

    /// Runs `cmd` in a process group of its own, feeding progress, until it exits, the
    /// host cancels or the deadline passes.
    fn run(&self, ctx: &Context<'_>, cmd: Command, what: &str) -> Result<(), StageError> {
        self.run_with(ctx, cmd, what, None)
    }

    /// [`Runner::run`], with rsync's stdout lines collected into `lines` when given
    /// (a listing) instead of read as progress. A collection stops at `MAX_LINES`.
    fn run_with(
        &self,
        ctx: &Context<'_>,
        mut cmd: Command,
        what: &str,
        lines: Option<Arc<Mutex<Vec<String>>>>,
    ) -> Result<(), StageError> {
        ctx.check()?;
        // A session of its own (nothing can prompt; `stop` signals the group whole),
        // tied to this process: the group dies with stagehost, even under SIGKILL, so
        // no rsync writes the destination later.
        let tether = stagehost_plugin_api::process::contain(&mut cmd)
            .map_err(|e| StageError::io(format_args!("{what}: cannot prepare rsync"), &e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            StageError::io(
                format_args!("{what}: cannot run {:?}", cmd.get_program()),
                &e,
            )
        })?;
        let tail = Arc::new(Mutex::new(Tail::default()));
        let progress: Arc<Mutex<Option<Progress>>> = Arc::new(Mutex::new(None));
        let readers = [
            spawn_reader(child.stdout.take(), {
                let progress = progress.clone();
                move |line| match &lines {
                    Some(lines) => {
                        let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                        if lines.len() < list::MAX_LINES {
                            lines.push(line.to_owned());
                        }
                    }
                    None => {
                        if let Some(p) = progress_bytes(line) {
                            *progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                        }
                    }
                }
            }),
            spawn_reader(child.stderr.take(), {
                let tail = tail.clone();
                move |line| {
                    if !line.trim().is_empty() {
                        tail.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                    }
                }
            }),
        ];
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| StageError::io(what, &e))? {
                break status;
            }
            if let Some((done, total)) = progress.lock().unwrap_or_else(|e| e.into_inner()).take() {
                ctx.progress(done, total);
            }
            if let Err(e) = ctx.check() {
                stop(&mut child);
                for r in readers {
                    let _ = r.join();
                }
                return Err(StageError::new(
                    e.kind(),
                    format!(
                        "{what}: {} after {:.1}s; rsync was stopped",
                        e.message(),
                        started.elapsed().as_secs_f64()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in readers {
            let _ = r.join();
        }
        drop(tether);
        match status.code() {
            Some(0) => Ok(()),
            Some(5) if self.password_env.is_none() && self.password_file.is_none() => {
                let e = exit_error(5, &tail.lock().unwrap_or_else(|e| e.into_inner()), what);
                Err(StageError::new(
                    e.kind(),
                    format!(
                        "{}; this instance has no password for the daemon (set password_env or password_file): rsync never asks for one",
                        e.message()
                    ),
                ))
            }
            Some(code) => Err(exit_error(
                code,
                &tail.lock().unwrap_or_else(|e| e.into_inner()),
                what,
            )),
            None => Err(StageError::new(
                ErrorKind::Transient,
                format!("{what}: rsync was killed by a signal ({status})"),
            )),
        }
    }
}

/// Reads `pipe` line by line (lines end at `\n` or `\r`) on a thread of its own.
fn spawn_reader(
    pipe: Option<impl Read + Send + 'static>,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else {
            return;
        };
        let mut buf = [0u8; 8192];
        let mut line = Vec::new();
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                if b == b'\n' || b == b'\r' {
                    on_line(&String::from_utf8_lossy(&line));
                    line.clear();
                } else if line.len() < 4096 {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            on_line(&String::from_utf8_lossy(&line));
        }
    })
}

/// SIGTERM to the child's process group (rsync and its ssh), SIGKILL after 2 s.
fn stop(child: &mut Child) {
    use rustix::process::{kill_process_group, Pid, Signal};
    let Some(group) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        return;
    };
    let _ = kill_process_group(group, Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // The leader is gone; make sure nothing of its group lingers.
            let _ = kill_process_group(group, Signal::KILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill_process_group(group, Signal::KILL);
    let _ = child.wait();
}

/// The private directory of one destination's transfers:
/// `<working_dir>/.stagehost/rsync/<hash of the destination>`.
fn private_dir(working_dir: &Path, dest: &Path) -> PathBuf {
    stagehost_plugin_api::landing::private_path(working_dir, "rsync", dest)
}

/// Creates `dir` (mode 0700) and its parents; refuses a symlink in its place.
fn make_private_dir(dir: &Path) -> Result<(), StageError> {
    use std::os::unix::fs::DirBuilderExt;
    let fail = |e: std::io::Error| {
        StageError::io(format_args!("cannot create {}", display::path(dir)), &e)
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let meta = std::fs::symlink_metadata(dir).map_err(fail)?;
    if !meta.is_dir() {
        return Err(StageError::new(
            ErrorKind::Permission,
            format!(
                "{} is not a directory (a symlink?); refusing to use it",
                display::path(dir)
            ),
        ));
    }
    Ok(())
}

stagehost_plugin_api::export_provider! {
    provider: RsyncProvider,
    name: "rsync",
    schemes: ["file", "rsync"],
    description: "rsync: file URLs on a configured host over ssh, and rsync:// daemons; in-task steps as Parsl's RSyncStaging",
    capabilities: [stat, list, schemes],
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagehost_plugin_api::Provider;

    #[test]
    fn it_keeps_the_hosts_rules() {
        use stagehost_plugin_api::testing::{conformance, Conformance};
        use stagehost_tests::rsyncd::RsyncDaemon;
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!(
            "stagehost-rsync-conformance-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(root.join("secret")).unwrap();
        let good = root.join("secret/good.txt");
        std::fs::write(&good, "over rsync\n").unwrap();
        // Set-id and world-writable at the source: never on the staged copy.
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o6777)).unwrap();
        let daemon = RsyncDaemon::start(&root);
        std::env::set_var("STAGEHOST_RSYNC_CONFORMANCE_PW", RsyncDaemon::PASSWORD);
        let provider = RsyncProvider::new(&Settings::from_toml(
            "password_env = \"STAGEHOST_RSYNC_CONFORMANCE_PW\"",
        ))
        .unwrap();
        conformance(
            &provider,
            Conformance {
                good: &daemon.url(Some("alice"), "secret", "good.txt"),
                missing: Some(&daemon.url(Some("alice"), "secret", "absent.txt")),
                secrets: &[RsyncDaemon::PASSWORD],
            },
        )
        .unwrap();
        drop(daemon);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn progress_lines_give_bytes_and_total() {
        assert_eq!(
            progress_bytes("      1,234,567  12%    1.23MB/s    0:00:01 (xfr#0, to-chk=0/1)"),
            Some((1_234_567, Some(10_288_058)))
        );
        assert_eq!(
            progress_bytes("          0   0%    0.00kB/s    0:00:00"),
            Some((0, None))
        );
        assert_eq!(progress_bytes("sending incremental file list"), None);
    }

    #[test]
    fn only_allowlisted_extra_arguments() {
        assert!(allowed("--bwlimit=1000"));
        assert!(allowed("-z"));
        assert!(!allowed("--bwlimit="));
        assert!(!allowed("--remove-source-files"));
        assert!(!allowed("--rsh=evil"));
        assert!(!allowed("-e"));
    }

    #[test]
    fn exit_codes_have_kinds() {
        let mut tail = Tail::default();
        tail.push("rsync: [sender] link_stat \"/x\" failed: No such file or directory (2)");
        assert_eq!(exit_error(23, &tail, "x").kind(), ErrorKind::NotFound);
        assert_eq!(
            exit_error(10, &Tail::default(), "x").kind(),
            ErrorKind::Transient
        );
        assert_eq!(
            exit_error(5, &Tail::default(), "x").kind(),
            ErrorKind::Permission
        );
        assert_eq!(
            exit_error(30, &Tail::default(), "x").kind(),
            ErrorKind::TimedOut
        );
        let mut ssh = Tail::default();
        ssh.push("ssh: connect to host 127.0.0.1 port 1: Connection refused");
        assert_eq!(exit_error(255, &ssh, "x").kind(), ErrorKind::Transient);
    }
}
