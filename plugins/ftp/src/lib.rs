//! The `ftp` provider: stages `ftp://` URLs, and `ftps://` with explicit TLS
//! (`AUTH TLS`, then a private data channel).
//!
//! Stage-in `RETR`s the file into the host's destination (by default
//! `<working_dir>/<filename>`), streamed to a temporary file, synced and renamed, and
//! checked against the size the server's `SIZE` reported: a task never sees a partial
//! file. A transfer that breaks off resumes with `REST` where it stopped. Stage-out
//! `STOR`s the task's output under a temporary name beside the target, checks its size,
//! then renames it with `RNFR`/`RNTO`, so a reader of the server never sees half a
//! file; the local file is never touched. As Parsl's FTP staging, `mode = "separate"`
//! (the default) makes the work a separate job and `mode = "in-task"` an in-task step.
//!
//! Transfers are always binary (`TYPE I`): the protocol's default ASCII type rewrites
//! line endings. Data connections use `EPSV`, falling back to `PASV` for a server that
//! refuses it; the address a `PASV` reply names is ignored for the control
//! connection's, as curl does, so a server cannot point the client elsewhere.
//!
//! Paths are relative to the login directory, as RFC 1738 and curl read them:
//! `ftp://host/pub/a.txt` is `pub/a.txt`; `%2F` starts an absolute path
//! (`ftp://host/%2Ftmp/a.txt` is `/tmp/a.txt`). With an anonymous login, whose
//! directory is the server's root, both read the same.
//!
//! Invariant: a job writes locally only through `AtomicFile`, and remotely only to a
//! temporary name it deletes on failure.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use stagehost_plugin_api::display;

mod inspect;

use stagehost_plugin_api::net::{
    host_port, io_kind, percent_decode, seconds, split_userinfo, HostPatterns,
};
use stagehost_plugin_api::transfer::{
    download, Download, Passes, Transfer, TransferProvider, CHUNK,
};
use stagehost_plugin_api::{Context, ErrorKind, File, Job, Settings, StageError, WorkPlace};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode as DataMode, RustlsConnector, RustlsFtpStream};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FtpSettings {
    mode: WorkPlace,
    /// Seconds to connect.
    connect_timeout_secs: f64,
    /// Seconds a read (a reply, or the next bytes of a file) may wait.
    read_timeout_secs: f64,
    /// Host patterns this instance claims; empty claims every host.
    hosts: Vec<String>,
    /// A PEM file of CA certificates to trust, for `ftps`, instead of the built-in
    /// web roots.
    ca_file: Option<PathBuf>,
    /// The login user (the URL's userinfo wins); none logs in anonymously.
    username: Option<String>,
    /// The password.
    password: Option<String>,
    /// The name of an environment variable holding the password.
    password_env: Option<String>,
}

impl Default for FtpSettings {
    fn default() -> Self {
        FtpSettings {
            mode: WorkPlace::Separate,
            connect_timeout_secs: 30.0,
            read_timeout_secs: 60.0,
            hosts: Vec::new(),
            ca_file: None,
            username: None,
            password: None,
            password_env: None,
        }
    }
}

/// See the crate docs.
pub struct FtpTransfer {
    mode: WorkPlace,
    hosts: HostPatterns,
    shared: Arc<Shared>,
}

/// What every job of an instance uses.
struct Shared {
    connect_timeout: Duration,
    read_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    /// Servers (`host:port`) that refused `EPSV`: they get `PASV` straight away.
    no_epsv: Mutex<Vec<String>>,
    /// Logged-in sessions between transfers, for the next transfer to the same server
    /// as the same user.
    idle: Mutex<Vec<Idle>>,
}

/// Who a session is logged in as, and where: sessions are reused only for an equal key.
#[derive(Clone, PartialEq, Eq)]
struct SessionKey {
    tls: bool,
    server: String,
    user: String,
    password: String,
}

/// A pooled session and when it was returned.
struct Idle {
    key: SessionKey,
    ftp: Ftp,
    since: Instant,
}

/// Idle sessions kept per instance; more are closed.
const MAX_IDLE: usize = 16;
/// How long an idle session is kept: well inside servers' idle timeouts (vsftpd's
/// default is 300 s).
const IDLE_FOR: Duration = Duration::from_secs(60);

fn tls_config(ca_file: Option<&PathBuf>) -> Result<Arc<rustls::ClientConfig>, StageError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |why: String| {
                StageError::invalid_settings(format!(
                    "invalid settings: ca_file {}: {why}",
                    path.display()
                ))
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("it holds no certificate".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StageError::other(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Transfer for FtpTransfer {
    fn new(settings: &Settings) -> Result<Self, StageError> {
        let s: FtpSettings = settings.parse()?;
        if s.password.is_some() && s.password_env.is_some() {
            return Err(StageError::invalid_settings(
                "invalid settings: password and password_env exclude each other",
            ));
        }
        Ok(FtpTransfer {
            mode: s.mode,
            hosts: HostPatterns::new(&s.hosts),
            shared: Arc::new(Shared {
                connect_timeout: seconds("connect_timeout_secs", s.connect_timeout_secs)?,
                read_timeout: seconds("read_timeout_secs", s.read_timeout_secs)?,
                tls: tls_config(s.ca_file.as_ref())?,
                username: s.username,
                password: s.password,
                password_env: s.password_env,
                no_epsv: Mutex::new(Vec::new()),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    fn place(&self) -> WorkPlace {
        self.mode
    }

    fn claims(&self, file: &File) -> Result<bool, StageError> {
        Ok(self.claims_of(file))
    }

    fn schemes(&self) -> Vec<String> {
        vec!["ftp".into(), "ftps".into()]
    }

    fn get(&self, file: &File) -> Result<Job, StageError> {
        Ok(self.job(file, Target::of(file)?, Direction::Get))
    }

    fn stat(
        &self,
        ctx: &Context<'_>,
        file: &File,
    ) -> Result<Option<stagehost_plugin_api::capability::Entry>, StageError> {
        self.stat_path(ctx, file)
    }

    fn list(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<stagehost_plugin_api::capability::Entry>, StageError> {
        self.list_dir(ctx, dir, recursive)
    }

    fn put(&self, file: &File) -> Result<Job, StageError> {
        Ok(self.job(file, Target::of(file)?, Direction::Put))
    }
}

/// The `ftp` provider: [`FtpTransfer`] with plugin-api's planning quartet.
pub type FtpProvider = TransferProvider<FtpTransfer>;

#[derive(Clone, Copy)]
enum Direction {
    Get,
    Put,
}

impl FtpTransfer {
    fn claims_of(&self, file: &File) -> bool {
        matches!(file.scheme(), "ftp" | "ftps") && self.hosts.claims(file.netloc())
    }

    fn job(&self, file: &File, target: Target, direction: Direction) -> Job {
        let shared = self.shared.clone();
        let file = file.clone();
        Job::new(move |ctx| {
            let local = file.filepath()?;
            match direction {
                Direction::Get => shared.get(ctx, &target, &local),
                Direction::Put => shared.put(ctx, &target, &local),
            }
        })
    }
}

/// Where a transfer goes, read from the URL when the file is planned, so a bad URL is
/// an error before any task runs.
struct Target {
    host: String,
    port: u16,
    tls: bool,
    /// The remote path, decoded: relative to the login directory unless it starts
    /// with `/`.
    path: String,
    userinfo: Option<(String, String)>,
    /// The URL as messages show it.
    shown: String,
}

impl Target {
    fn of(file: &File) -> Result<Target, StageError> {
        Target::parse(file, false)
    }

    /// Reads `file`'s URL; with `directory`, the path may also name a directory (be
    /// empty, the login directory, or end in `/`, which is dropped), for `stat` and
    /// `list`.
    fn parse(file: &File, directory: bool) -> Result<Target, StageError> {
        let shown = file.redacted_url();
        let invalid = |why: &str| StageError::new(ErrorKind::InvalidUrl, format!("{shown}: {why}"));
        let (host, port) = host_port(file.netloc(), 21)
            .ok_or_else(|| invalid("it names no valid host and port"))?;
        let raw = file.path().strip_prefix('/').unwrap_or(file.path());
        let raw = if directory {
            raw.trim_end_matches('/')
        } else if raw.is_empty() || raw.ends_with('/') {
            return Err(invalid("it names a directory, not a file"));
        } else {
            raw
        };
        let path = percent_decode(raw);
        if path.contains(['\r', '\n', '\0']) {
            return Err(invalid("its path holds a line break or NUL"));
        }
        Ok(Target {
            host,
            port,
            tls: file.scheme() == "ftps",
            path,
            userinfo: split_userinfo(file.url()).1,
            shown,
        })
    }

    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A name beside the target for an upload in progress.
    fn temporary(&self) -> String {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let (dir, name) = match self.path.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name),
            None => (String::new(), self.path.as_str()),
        };
        let name: String = name.chars().take(120).collect();
        format!(
            "{dir}.{name}.stagehost-{}-{}.part",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Names the TLS stream type of a session (suppaftp does not export it).
trait Session {
    type Tls: suppaftp::TlsStream;
}

impl<T: suppaftp::TlsStream> Session for suppaftp::ImplFtpStream<T> {
    type Tls = T;
}

/// A `RETR` as [`download`] reads it: each pass opened with `REST` where the last
/// stopped, on a new session after a break, and only while `SIZE` is unchanged.
struct Retr<'a> {
    owner: &'a Shared,
    target: &'a Target,
    ftp: Ftp,
    expected: Option<u64>,
    /// The file's MDTM when the fetch began: with SIZE, what must be the same for a
    /// resume (a file rewritten with the same size is not the same file). `None`: the
    /// server does not say, or the file is too small to be worth resuming; a break
    /// is then an error for the host to retry whole.
    modified: Option<String>,
}

impl Passes for Retr<'_> {
    type Body = suppaftp::TransferStream<<Ftp as Session>::Tls>;

    fn open(&mut self, _ctx: &Context<'_>, offset: u64) -> Result<Self::Body, StageError> {
        let path = &self.target.path;
        self.owner
            .open(&mut self.ftp, self.target, offset, |f| {
                f.retr_as_stream(path)
            })
            .map_err(|e| classify("cannot RETR", &self.target.shown, e, false))
    }

    fn end(&mut self, body: Self::Body) -> Result<(), StageError> {
        body.finish()
            .map_err(|e| classify("RETR", &self.target.shown, e, false))
    }

    fn broke(&mut self, done: u64, e: std::io::Error) -> StageError {
        // The session is spent: close it so that nothing waits for its reply.
        let _ = self.ftp.get_ref().shutdown(Shutdown::Both);
        StageError::new(
            io_kind(&e),
            format!(
                "RETR {}: the transfer broke off after {done} bytes: {e}",
                self.target.shown
            ),
        )
    }

    fn mismatch(&self, done: u64, expected: u64) -> StageError {
        StageError::transient(format!(
            "RETR {}: the transfer ended after {done} bytes, SIZE said {expected}",
            self.target.shown
        ))
    }

    fn resume(&mut self, ctx: &Context<'_>, done: u64) -> Result<Option<String>, StageError> {
        let Some(modified) = self.modified.clone() else {
            return Ok(None);
        };
        let _ = self.ftp.get_ref().shutdown(Shutdown::Both);
        self.ftp = self.owner.connect(ctx, self.target)?;
        // A file that changed meanwhile (its size or its modification time) is never
        // stitched together.
        let size = self.owner.size(&mut self.ftp, self.target, false)?;
        let now = self.ftp.mdtm(&self.target.path).ok().map(|t| t.to_string());
        if size != self.expected || now.as_deref() != Some(modified.as_str()) {
            return Err(StageError::transient(format!(
                "RETR {}: the file changed while it was fetched",
                self.target.shown
            )));
        }
        Ok(Some(format!("resuming with REST {done}")))
    }

    fn abort(&mut self, body: Self::Body) {
        let _ = self.ftp.get_ref().shutdown(Shutdown::Both);
        drop(body);
    }
}

/// The smallest file a broken transfer resumes (smaller ones are fetched again
/// whole by the host's retry, which costs less than asking MDTM of every file).
const RESUMABLE_FROM: u64 = 1 << 20;
/// How often one transfer resumes a broken-off file before it gives up.
const MAX_RESUMES: u32 = 3;

type Ftp = RustlsFtpStream;

/// A reply's code and its text, control characters escaped and cut short.
fn reply(response: &suppaftp::types::Response) -> String {
    let text = String::from_utf8_lossy(&response.body);
    let text: String = text
        .trim()
        .chars()
        .flat_map(char::escape_default)
        .take(200)
        .collect();
    let code = response.status.code();
    if text.starts_with(&code.to_string()) {
        text
    } else {
        format!("{code} {text}")
    }
}

/// The kind for a refusing reply. 4xx replies are transient by definition (421 the
/// server is closing, 425 no data connection, 426 aborted, 450/451/452 busy or
/// short of space); 530 and 532 are logins; 550 is a missing file for a read and a
/// refusal for a write; 553 a name not allowed.
fn reply_kind(code: u32, writing: bool) -> ErrorKind {
    match code {
        400..=499 => ErrorKind::Transient,
        530 | 532 | 553 => ErrorKind::Permission,
        550 if writing => ErrorKind::Permission,
        550 => ErrorKind::NotFound,
        _ => ErrorKind::Other,
    }
}

/// `error` as a stage error saying `what` failed on `shown`.
fn classify(what: &str, shown: &str, error: FtpError, writing: bool) -> StageError {
    let (kind, why) = match &error {
        FtpError::ConnectionError(io) => (io_kind(io), io.to_string()),
        FtpError::UnexpectedResponse(r) => (
            reply_kind(r.status.code(), writing),
            format!("the server replied {}", reply(r)),
        ),
        // Certificates and TLS setup: retrying cannot help.
        FtpError::SecureError(e) => (ErrorKind::Other, format!("TLS: {e}")),
        FtpError::BadResponse => (ErrorKind::Transient, "a malformed reply".to_owned()),
        other => (ErrorKind::Other, other.to_string()),
    };
    StageError::new(kind, format!("{what} {shown}: {why}"))
}

/// Whether a reply refuses a command as unknown or not implemented.
fn unknown_command(error: &FtpError) -> bool {
    matches!(error, FtpError::UnexpectedResponse(r) if matches!(r.status.code(), 500..=502))
}

impl Shared {
    /// The user and password to log in with: the URL's, the settings', or anonymous.
    fn credentials(&self, target: &Target) -> Result<(String, String), StageError> {
        if let Some(info) = &target.userinfo {
            return Ok(info.clone());
        }
        let Some(user) = &self.username else {
            return Ok(("anonymous".to_owned(), "anonymous@".to_owned()));
        };
        let password =
            match stagehost_plugin_api::env_secret("password_env", self.password_env.as_deref())? {
                Some(password) => password,
                None => self.password.clone().unwrap_or_default(),
            };
        Ok((user.clone(), password))
    }

    /// `limit`, cut to what is left before the deadline of `ctx`.
    fn within(ctx: &Context<'_>, limit: Duration) -> Duration {
        ctx.remaining()
            .map_or(limit, |r| limit.min(r.max(Duration::from_millis(1))))
    }

    /// The key of the session a transfer of `target` needs.
    fn key(&self, target: &Target) -> Result<SessionKey, StageError> {
        let (user, password) = self.credentials(target)?;
        Ok(SessionKey {
            tls: target.tls,
            server: target.server(),
            user,
            password,
        })
    }

    /// An idle session for `target` that still answers (`NOOP`), else a new one.
    fn session(&self, ctx: &Context<'_>, target: &Target) -> Result<(Ftp, SessionKey), StageError> {
        let key = self.key(target)?;
        loop {
            let idle = {
                let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                pool.retain(|i| i.since.elapsed() < IDLE_FOR);
                pool.iter()
                    .rposition(|i| i.key == key)
                    .map(|at| pool.swap_remove(at))
            };
            match idle {
                Some(mut idle) => {
                    if idle.ftp.noop().is_ok() {
                        return Ok((idle.ftp, key));
                    }
                }
                None => return Ok((self.connect(ctx, target)?, key)),
            }
        }
    }

    /// Keeps `ftp`, after a transfer that ended cleanly, for the next one.
    fn give_back(&self, key: SessionKey, mut ftp: Ftp) {
        let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_IDLE {
            pool.push(Idle {
                key,
                ftp,
                since: Instant::now(),
            });
        } else {
            drop(pool);
            let _ = ftp.quit();
        }
    }

    /// A logged-in session in binary type, its data connections passive.
    fn connect(&self, ctx: &Context<'_>, target: &Target) -> Result<Ftp, StageError> {
        self.open_session(ctx, target, false)
    }

    /// A session to clean up after a transfer that failed, was cancelled or ran past
    /// its deadline: opened whatever the context says, within the connect timeout
    /// (at most 10 s).
    fn connect_for_cleanup(&self, ctx: &Context<'_>, target: &Target) -> Result<Ftp, StageError> {
        self.open_session(ctx, target, true)
    }

    fn open_session(
        &self,
        ctx: &Context<'_>,
        target: &Target,
        cleanup: bool,
    ) -> Result<Ftp, StageError> {
        if !cleanup {
            ctx.check()?;
        }
        let within = |limit: Duration| {
            if cleanup {
                limit.min(Duration::from_secs(10))
            } else {
                Self::within(ctx, limit)
            }
        };
        let shown = &target.shown;
        let addresses: Vec<SocketAddr> = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| {
                StageError::new(
                    ErrorKind::NotFound,
                    format!("cannot connect to {shown}: host not found ({e})"),
                )
            })?
            .collect();
        let mut failure = None;
        let mut control = None;
        for address in &addresses {
            match TcpStream::connect_timeout(address, within(self.connect_timeout)) {
                Ok(stream) => {
                    control = Some(stream);
                    break;
                }
                Err(e) => failure = Some(e),
            }
        }
        let control = control.ok_or_else(|| {
            let e = failure.unwrap_or_else(|| std::io::ErrorKind::AddrNotAvailable.into());
            StageError::new(io_kind(&e), format!("cannot connect to {shown}: {e}"))
        })?;
        let read_timeout = self.read_timeout;
        let setup = move |stream: &TcpStream| -> std::io::Result<()> {
            stream.set_read_timeout(Some(read_timeout))?;
            stream.set_write_timeout(Some(read_timeout))?;
            stream.set_nodelay(true)
        };
        setup(&control)
            .map_err(|e| StageError::io(format_args!("cannot connect to {shown}"), &e))?;
        let connect_timeout = self.connect_timeout;
        let fail = |what: &str, e: FtpError| classify(what, shown, e, false);
        let mut ftp = Ftp::connect_with_stream(control)
            .map_err(|e| fail("cannot connect to", e))?
            .passive_stream_builder(move |address| {
                let stream = TcpStream::connect_timeout(&address, connect_timeout)
                    .map_err(FtpError::ConnectionError)?;
                setup(&stream).map_err(FtpError::ConnectionError)?;
                Ok(stream)
            });
        ftp.set_passive_nat_workaround(true);
        let epsv = !self.no_epsv.lock().unwrap().contains(&target.server());
        ftp.set_mode(if epsv {
            DataMode::ExtendedPassive
        } else {
            DataMode::Passive
        });
        if target.tls {
            // The name the certificate must carry is the bare host, never `host:port`.
            ftp = ftp
                .into_secure(RustlsConnector::from(self.tls.clone()), &target.host)
                .map_err(|e| fail("cannot secure the connection to", e))?;
        }
        let (user, password) = self.credentials(target)?;
        ftp.login(user.as_str(), password.as_str())
            .map_err(|e| match e {
                FtpError::UnexpectedResponse(r) => StageError::new(
                    // A refused login is about credentials, unless the server is busy.
                    match reply_kind(r.status.code(), false) {
                        ErrorKind::Transient => ErrorKind::Transient,
                        _ => ErrorKind::Permission,
                    },
                    format!(
                        "cannot log in to {shown} as {user}: the server replied {}",
                        reply(&r)
                    ),
                ),
                other => fail("cannot log in to", other),
            })?;
        ftp.transfer_type(FileType::Binary)
            .map_err(|e| fail("cannot set binary type on", e))?;
        Ok(ftp)
    }

    /// Opens a data command with `open`, starting at `offset`: by `EPSV`, or by `PASV`
    /// when the server refuses `EPSV` (remembered for the instance's next sessions).
    fn open<R>(
        &self,
        ftp: &mut Ftp,
        target: &Target,
        offset: u64,
        open: impl Fn(&mut Ftp) -> Result<R, FtpError>,
    ) -> Result<R, FtpError> {
        let arm = |ftp: &mut Ftp| {
            if offset > 0 {
                ftp.resume_transfer(usize::try_from(offset).unwrap_or(usize::MAX))?;
            }
            Ok::<(), FtpError>(())
        };
        arm(ftp)?;
        match open(ftp) {
            Err(e) if unknown_command(&e) && self.uses_epsv(target) => {
                self.no_epsv.lock().unwrap().push(target.server());
                ftp.set_mode(DataMode::Passive);
                arm(ftp)?;
                open(ftp)
            }
            other => other,
        }
    }

    fn uses_epsv(&self, target: &Target) -> bool {
        !self.no_epsv.lock().unwrap().contains(&target.server())
    }

    /// The file's size by `SIZE`: `None` when the server does not say.
    fn size(
        &self,
        ftp: &mut Ftp,
        target: &Target,
        writing: bool,
    ) -> Result<Option<u64>, StageError> {
        match ftp.size(&target.path) {
            Ok(n) => Ok(Some(n as u64)),
            Err(e @ FtpError::UnexpectedResponse(_)) if unknown_command(&e) => Ok(None),
            Err(e) => Err(classify("cannot SIZE", &target.shown, e, writing)),
        }
    }

    fn get(
        &self,
        ctx: &Context<'_>,
        target: &Target,
        dest: &std::path::Path,
    ) -> Result<(), StageError> {
        let (mut ftp, key) = self.session(ctx, target)?;
        let expected = match self.size(&mut ftp, target, false) {
            // An answer, not a broken session: it serves the next transfer.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.give_back(key, ftp);
                return Err(e);
            }
            other => other?,
        };
        // Only a file worth resuming is asked its MDTM (one more round trip).
        let modified = if expected.is_some_and(|n| n >= RESUMABLE_FROM) {
            ftp.mdtm(&target.path).ok().map(|t| t.to_string())
        } else {
            None
        };
        let mut passes = Retr {
            owner: self,
            target,
            ftp,
            expected,
            modified,
        };
        download(
            ctx,
            &mut passes,
            Download {
                dest,
                expected,
                max_resumes: MAX_RESUMES,
                limit: None,
            },
        )?;
        self.give_back(key, passes.ftp);
        Ok(())
    }

    fn put(
        &self,
        ctx: &Context<'_>,
        target: &Target,
        local: &std::path::Path,
    ) -> Result<(), StageError> {
        let (mut source, meta) = stagehost_plugin_api::fs::open_regular(local)?;
        let total = meta.len();
        let kept = || format!("(the local file {} is kept)", display::path(local));
        let (mut ftp, key) = self.session(ctx, target)?;
        let temporary = target.temporary();
        let result = self.upload(ctx, &mut ftp, target, &temporary, &mut source, total);
        if let Err(e) = result {
            // Best effort: the temporary name goes, on this session or a fresh one.
            if ftp.rm(&temporary).is_err() {
                if let Ok(mut fresh) = self.connect_for_cleanup(ctx, target) {
                    let _ = fresh.rm(&temporary);
                    let _ = fresh.quit();
                }
            }
            return Err(StageError::new(
                e.kind(),
                format!("{} {}", e.message(), kept()),
            ));
        }
        self.give_back(key, ftp);
        ctx.progress(total, Some(total));
        Ok(())
    }

    /// `STOR` to `temporary`, a size check, then `RNFR`/`RNTO` onto the target.
    fn upload(
        &self,
        ctx: &Context<'_>,
        ftp: &mut Ftp,
        target: &Target,
        temporary: &str,
        source: &mut std::fs::File,
        total: u64,
    ) -> Result<(), StageError> {
        let shown = &target.shown;
        let control = ftp.get_ref().try_clone().ok();
        let mut sink = self
            .open(ftp, target, 0, |f| f.put_with_stream(temporary))
            .map_err(|e| classify("cannot STOR", shown, e, true))?;
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        ctx.progress(0, Some(total));
        loop {
            if let Err(e) = ctx.check() {
                let _ = ftp.abort(sink);
                return Err(e);
            }
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StageError::io("cannot read the local file", &e)),
            };
            if let Err(e) = sink.write_all(&buf[..n]) {
                let _ = ftp.get_ref().shutdown(Shutdown::Both);
                return Err(StageError::new(
                    io_kind(&e),
                    format!("STOR {shown}: the transfer broke off after {done} bytes: {e}"),
                ));
            }
            done += n as u64;
            ctx.progress(done, Some(total));
        }
        // The last bytes may still sit in socket buffers, and the server's `226` only
        // comes once it read them all (at a slow server's pace): that wait must still
        // end on cancellation or the deadline, so a watcher shuts the control
        // connection down then (the caller deletes the temporary name on a fresh
        // session). The data connection is never duplicated: its close is what tells
        // the server the upload ended.
        let finishing = std::sync::atomic::AtomicBool::new(false);
        let finished = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                while !finishing.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Err(e) = ctx.check() {
                        if let Some(control) = &control {
                            let _ = control.shutdown(Shutdown::Both);
                        }
                        return Some(e);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                None
            });
            let finished = sink.finish();
            finishing.store(true, std::sync::atomic::Ordering::Relaxed);
            match watcher.join() {
                Ok(Some(stopped)) => Err(stopped),
                _ => finished.map_err(|e| classify("STOR", shown, e, true)),
            }
        });
        finished?;
        let stored = match ftp.size(temporary) {
            Ok(n) => Some(n as u64),
            Err(e) if unknown_command(&e) => None,
            Err(e) => return Err(classify("cannot SIZE the upload of", shown, e, true)),
        };
        if let Some(n) = stored.filter(|&n| n != done || done != total) {
            return Err(StageError::transient(format!(
                "STOR {shown}: the server holds {n} bytes of {total}"
            )));
        }
        ftp.rename(temporary, target.path.as_str())
            .map_err(|e| classify("cannot rename the upload onto", shown, e, true))
    }
}

stagehost_plugin_api::export_provider! {
    provider: FtpProvider,
    name: "ftp",
    schemes: ["ftp", "ftps"],
    description: "FTP and FTPS (explicit TLS): binary RETR into the working directory with resume, STOR to a temporary name then rename for stage-out",
    secret_settings: ["password"],
    capabilities: [stat, list, schemes],
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagehost_plugin_api::Provider;

    #[test]
    fn it_keeps_the_hosts_rules() {
        use stagehost_plugin_api::testing::{conformance, Conformance};
        use stagehost_tests::ftpd::{PyFtpd, PyFtpdOptions};
        let root =
            std::env::temp_dir().join(format!("stagehost-ftp-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("good.txt"), "over ftp\n").unwrap();
        let server = PyFtpd::start(
            &root,
            PyFtpdOptions {
                user: Some(("alice", "pw-ftp-conformance")),
                ..PyFtpdOptions::default()
            },
        );
        let provider = FtpProvider::new(&Settings::from_toml("")).unwrap();
        conformance(
            &provider,
            Conformance {
                good: &server.url("ftp", Some("alice:pw-ftp-conformance"), "good.txt"),
                missing: Some(&server.url("ftp", Some("alice:pw-ftp-conformance"), "absent.txt")),
                secrets: &["pw-ftp-conformance"],
            },
        )
        .unwrap();
        drop(server);
        let _ = std::fs::remove_dir_all(&root);
    }

    fn target(url: &str) -> Result<Target, StageError> {
        Target::of(&File::parse(url).unwrap())
    }

    #[test]
    fn urls_give_host_port_and_path() {
        let t = target("ftp://me:pw@[::1]:2121/pub/a%20b.txt").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 2121, false));
        assert_eq!(t.path, "pub/a b.txt");
        assert_eq!(t.userinfo, Some(("me".into(), "pw".into())));
        assert!(!t.shown.contains("pw"), "{}", t.shown);
        let t = target("ftps://h/%2Ftmp/x").unwrap();
        assert_eq!((t.port, t.tls, t.path.as_str()), (21, true, "/tmp/x"));
        assert!(t.temporary().starts_with("/tmp/.x.stagehost-"));
        for bad in ["ftp://h/", "ftp:///x", "ftp://h:x/y", "ftp://h/a%0Ab"] {
            let e = target(bad).err().unwrap();
            assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{bad}: {e}");
        }
    }

    #[test]
    fn replies_have_kinds() {
        assert_eq!(reply_kind(550, false), ErrorKind::NotFound);
        assert_eq!(reply_kind(550, true), ErrorKind::Permission);
        assert_eq!(reply_kind(421, false), ErrorKind::Transient);
        assert_eq!(reply_kind(530, false), ErrorKind::Permission);
        assert_eq!(reply_kind(504, false), ErrorKind::Other);
    }
}
