//! The `http` provider: stages `http://` and `https://` URLs.
//!
//! Stage-in GETs the URL into the host's destination (by default
//! `<working_dir>/<filename>`), streamed to a temporary file, synced and renamed, so a
//! task never sees a partial or wrong file: an error status is an error (never the
//! file's content), and a body shorter than its `Content-Length` is an error. Stage-out
//! PUTs the task's output to the URL (WebDAV-style servers) and never touches the local
//! file. As Parsl's `HTTPSeparateTaskStaging` (`mode = "separate"`, the default) the
//! work is a separate job; as `HTTPInTaskStaging` (`mode = "in-task"`) it is an in-task
//! step.
//!
//! Errors carry the kind the host's retries need: 5xx, 408, 429, a reset or refused
//! connection, a timeout, a body cut short are transient; a 4xx, a bad certificate, a
//! redirect loop are not. Credentials (URL userinfo, settings, a bearer token from the
//! environment, extra headers) are sent, never shown.
//!
//! Invariant: a job writes only through `AtomicFile`; a failed, cancelled or timed-out
//! transfer leaves nothing at the destination.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use stagehost_plugin_api::net::{
    seconds, split_userinfo, strip_port, HostPatterns, RedirectPolicy,
};
use stagehost_plugin_api::transfer::{download, Download, Passes, Transfer, TransferProvider};
use stagehost_plugin_api::{Context, ErrorKind, File, Job, Settings, StageError, WorkPlace};
use ureq::Agent;

mod forward;
mod revalidate;
mod stat;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HttpSettings {
    mode: WorkPlace,
    /// Seconds to connect (TCP and TLS).
    connect_timeout_secs: f64,
    /// Seconds a read may wait for the next bytes.
    read_timeout_secs: f64,
    /// Redirects followed; more is an error.
    max_redirects: u32,
    /// Host patterns this instance claims (`example.org`, `*.example.org`,
    /// `host:8080`); empty claims every host.
    hosts: Vec<String>,
    /// A PEM file of CA certificates to trust instead of the built-in web roots.
    ca_file: Option<PathBuf>,
    /// Basic-auth user (the URL's userinfo wins).
    username: Option<String>,
    /// Basic-auth password.
    password: Option<String>,
    /// The name of an environment variable holding a bearer token.
    bearer_token_env: Option<String>,
    /// Extra request headers; their values are treated as secrets.
    headers: BTreeMap<String, String>,
    /// Ask for a compressed body (`Accept-Encoding: gzip`) and decode it, as curl's
    /// `--compressed`. By default the body is asked for as it is (`identity`), and a
    /// body the server encodes anyway is saved as sent, as curl without `--compressed`
    /// saves it.
    compressed: bool,
    /// With `compressed`, the most bytes a gzip-encoded body may decode to (16 GiB by
    /// default): a small body that would fill the disk is refused.
    max_decompressed_bytes: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            mode: WorkPlace::Separate,
            connect_timeout_secs: 30.0,
            read_timeout_secs: 60.0,
            max_redirects: 10,
            hosts: Vec::new(),
            ca_file: None,
            username: None,
            password: None,
            bearer_token_env: None,
            headers: BTreeMap::new(),
            compressed: false,
            max_decompressed_bytes: 16 << 30,
        }
    }
}

/// ureq's own connector chain with `ForwardConnector` first: plain `http://` through
/// an HTTP proxy goes in absolute form, everything else as ureq sends it.
fn agent(config: ureq::config::Config) -> Agent {
    use ureq::unversioned::resolver::DefaultResolver;
    use ureq::unversioned::transport::{
        ConnectProxyConnector, Connector, RustlsConnector, TcpConnector,
    };
    let connector =
        ().chain(forward::ForwardConnector)
            .chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(RustlsConnector::default());
    Agent::with_parts(config, connector, DefaultResolver::default())
}

/// See the crate docs.
pub struct Http {
    mode: WorkPlace,
    hosts: HostPatterns,
    shared: Arc<Shared>,
}

/// What every job of an instance uses: the pooled agent and the credentials.
struct Shared {
    agent: Agent,
    proxies: Proxies,
    username: Option<String>,
    password: Option<String>,
    bearer_token_env: Option<String>,
    headers: BTreeMap<String, String>,
    /// The instance's `hosts`: credentials may follow a redirect to them.
    hosts: HostPatterns,
    max_redirects: u32,
    /// `compressed`: a gzip-encoded body is decoded, to at most this many bytes.
    decode_up_to: Option<u64>,
}

fn load_roots(path: &PathBuf) -> Result<ureq::tls::RootCerts, StageError> {
    let pem = std::fs::read(path).map_err(|e| {
        StageError::invalid_settings(format!("invalid settings: ca_file {}: {e}", path.display()))
    })?;
    let mut certs: Vec<ureq::tls::Certificate<'static>> = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(StageError::invalid_settings(format!(
                    "invalid settings: ca_file {}: {e}",
                    path.display()
                )))
            }
        }
    }
    if certs.is_empty() {
        return Err(StageError::invalid_settings(format!(
            "invalid settings: ca_file {} holds no certificate",
            path.display()
        )));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

impl Transfer for Http {
    fn new(settings: &Settings) -> Result<Self, StageError> {
        let s: HttpSettings = settings.parse()?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &s.ca_file {
            tls = tls.root_certs(load_roots(ca)?);
        }
        if s.max_decompressed_bytes == 0 {
            return Err(StageError::invalid_settings(
                "invalid settings: max_decompressed_bytes must be at least 1",
            ));
        }
        let proxies = Proxies::from_env()?;
        let config = Agent::config_builder()
            // Proxies are chosen per request by scheme (see `Proxies`).
            .proxy(None)
            .http_status_as_error(false)
            .accept_encoding(if s.compressed { "gzip" } else { "identity" })
            .timeout_connect(Some(seconds(
                "connect_timeout_secs",
                s.connect_timeout_secs,
            )?))
            .timeout_per_read(Some(seconds("read_timeout_secs", s.read_timeout_secs)?))
            // Redirects are followed by `Shared::exchange`, under plugin-api's policy.
            .max_redirects(0)
            .max_idle_connections_per_host(16)
            .tls_config(tls.build())
            .build();
        Ok(Http {
            mode: s.mode,
            hosts: HostPatterns::new(&s.hosts),
            shared: Arc::new(Shared {
                agent: agent(config),
                proxies,
                username: s.username,
                password: s.password,
                bearer_token_env: s.bearer_token_env,
                headers: s.headers,
                hosts: HostPatterns::new(&s.hosts),
                max_redirects: s.max_redirects,
                decode_up_to: s.compressed.then_some(s.max_decompressed_bytes),
            }),
        })
    }

    fn place(&self) -> WorkPlace {
        self.mode
    }

    fn claims(&self, file: &File) -> Result<bool, StageError> {
        self.claims_checked(file)
    }

    fn schemes(&self) -> Vec<String> {
        vec!["http".into(), "https".into()]
    }

    fn get(&self, file: &File) -> Result<Job, StageError> {
        Ok(self.get_job(file))
    }

    fn put(&self, file: &File) -> Result<Job, StageError> {
        Ok(self.put_job(file))
    }

    fn stat(
        &self,
        ctx: &Context<'_>,
        file: &File,
    ) -> Result<Option<stagehost_plugin_api::capability::Entry>, StageError> {
        self.head(ctx, file)
    }
}

/// The `http` provider: [`Http`] with plugin-api's planning quartet.
pub type HttpProvider = TransferProvider<Http>;

impl Http {
    /// [`Http::claims_of`], refusing a URL of its schemes whose host and port do
    /// not read as a host and a number: with a password holding an unencoded `/`, `?`
    /// or `#` (`http://u:p/w@h/x`), HTTP clients and stagehost would read different
    /// hosts, and the request (with the instance's credentials) would go to the one
    /// nobody shows.
    fn claims_checked(&self, file: &File) -> Result<bool, StageError> {
        if !matches!(file.scheme(), "http" | "https") {
            return Ok(false);
        }
        let default = if file.scheme() == "https" { 443 } else { 80 };
        if stagehost_plugin_api::net::host_port(file.netloc(), default).is_none() {
            return Err(StageError::new(
                ErrorKind::InvalidUrl,
                format!(
                    "{} names no valid host and port (a password holding `/`, `?` or `#` must be percent-encoded)",
                    file.redacted_url()
                ),
            ));
        }
        Ok(self.claims_of(file))
    }

    fn claims_of(&self, file: &File) -> bool {
        if !matches!(file.scheme(), "http" | "https") {
            return false;
        }
        self.hosts.claims(file.netloc())
    }

    fn get_job(&self, file: &File) -> Job {
        let shared = self.shared.clone();
        let file = file.clone();
        Job::new(move |ctx| shared.get(ctx, &file))
    }

    fn put_job(&self, file: &File) -> Job {
        let shared = self.shared.clone();
        let file = file.clone();
        Job::new(move |ctx| shared.put(ctx, &file))
    }
}

/// RFC 4648 base64 with padding, as Basic credentials are written.
fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Reads `Retry-After` (seconds) from a response.
fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `HTTP 404 Not Found`.
fn status_line(response: &ureq::http::Response<ureq::Body>) -> String {
    let status = response.status();
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// The kind for an error status: 5xx, 408 and 429 may pass; 404 is not found; 401 and
/// 403 are permissions; any other is permanent.
fn status_kind(status: u16) -> ErrorKind {
    match status {
        404 | 410 => ErrorKind::NotFound,
        401 | 403 => ErrorKind::Permission,
        // 501 (the method is not implemented) and 505 do not change on a retry.
        501 | 505 => ErrorKind::Other,
        408 | 425 | 429 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// A ureq error as a stage error of the right kind.
fn classify(what: &str, url: &str, e: &ureq::Error) -> StageError {
    use ureq::Error as E;
    let kind = match e {
        E::Timeout(_) => ErrorKind::TimedOut,
        E::ConnectionFailed | E::Protocol(_) => ErrorKind::Transient,
        E::Io(io) => io_kind(io),
        E::HostNotFound => ErrorKind::NotFound,
        E::TooManyRedirects | E::RedirectFailed => ErrorKind::Other,
        // Certificates and TLS setup: retrying cannot help.
        E::Tls(_) | E::Rustls(_) | E::Pem(_) => ErrorKind::Other,
        _ => ErrorKind::Other,
    };
    let why = match e {
        E::TooManyRedirects => "too many redirects (a redirect loop?)".to_owned(),
        E::HostNotFound => "host not found".to_owned(),
        other => other.to_string(),
    };
    StageError::new(kind, format!("{what} {url}: {why}"))
}

/// An I/O error's kind, read through the whole chain of causes: a body cut inside a
/// gzip stream reaches us through the decoder, around the read's own error, and is as
/// transient as a cut plain body. A certificate failure reaches us as
/// `InvalidData`: permanent.
fn io_kind(e: &std::io::Error) -> ErrorKind {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()) {
        return match inner {
            ureq::Error::Timeout(_) => ErrorKind::TimedOut,
            ureq::Error::Io(io) => io_kind(io),
            ureq::Error::Protocol(_) | ureq::Error::ConnectionFailed => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
    }
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<std::io::Error>()) {
        let kind = io_kind(inner);
        if kind != ErrorKind::Other {
            return kind;
        }
    }
    stagehost_plugin_api::net::io_kind(e)
}

/// The proxies the environment names, by scheme, as curl reads them: `http_proxy` /
/// `HTTP_PROXY` for `http://`, `https_proxy` / `HTTPS_PROXY` for `https://`, then
/// `all_proxy` / `ALL_PROXY`; `no_proxy` / `NO_PROXY` lists hosts (or `.suffix`es, or
/// `*`) reached directly.
struct Proxies {
    http: Option<ureq::Proxy>,
    https: Option<ureq::Proxy>,
    no_proxy: Vec<String>,
}

impl Proxies {
    fn from_env() -> Result<Proxies, StageError> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let parse = |value: Option<String>| -> Result<Option<ureq::Proxy>, StageError> {
            value
                .map(|v| {
                    ureq::Proxy::new(&v).map_err(|e| {
                        StageError::other(format!(
                            "the proxy named in the environment is not usable: {e}"
                        ))
                    })
                })
                .transpose()
        };
        let all = var(&["all_proxy", "ALL_PROXY"]);
        Ok(Proxies {
            http: parse(var(&["http_proxy", "HTTP_PROXY"]).or_else(|| all.clone()))?,
            https: parse(var(&["https_proxy", "HTTPS_PROXY"]).or(all))?,
            no_proxy: var(&["no_proxy", "NO_PROXY"])
                .unwrap_or_default()
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        })
    }

    /// The proxy for `url`, if any.
    fn for_url(&self, url: &str) -> Option<ureq::Proxy> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = strip_port(authority)
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let bypass = self.no_proxy.iter().any(|entry| {
            let entry = strip_port(entry).trim_matches(['[', ']']);
            entry == "*"
                || host == entry.trim_start_matches('.')
                || host.ends_with(&format!(".{}", entry.trim_start_matches('.')))
        });
        if bypass {
            return None;
        }
        match scheme {
            "https" => self.https.clone(),
            _ => self.http.clone(),
        }
    }
}

/// Where a request goes: the URL without userinfo or fragment, the credentials the
/// userinfo held, and the URL as messages show it.
struct Target {
    url: String,
    userinfo: Option<(String, String)>,
    shown: String,
}

impl Target {
    fn of(file: &File) -> Target {
        let (url, userinfo) = split_userinfo(file.url());
        Target {
            url: url.split('#').next().unwrap_or_default().to_owned(),
            userinfo,
            shown: file.redacted_url(),
        }
    }
}

/// How often one transfer resumes a broken-off body before it gives up.
const MAX_RESUMES: u32 = 3;

impl Shared {
    /// The request's authorization header value, if any credentials apply.
    fn authorization(
        &self,
        userinfo: Option<(String, String)>,
    ) -> Result<Option<String>, StageError> {
        if let Some((user, password)) = userinfo {
            return Ok(Some(format!(
                "Basic {}",
                base64(format!("{user}:{password}").as_bytes())
            )));
        }
        if let Some(user) = &self.username {
            let password = self.password.as_deref().unwrap_or("");
            return Ok(Some(format!(
                "Basic {}",
                base64(format!("{user}:{password}").as_bytes())
            )));
        }
        if let Some(token) =
            stagehost_plugin_api::env_secret("bearer_token_env", self.bearer_token_env.as_deref())?
        {
            return Ok(Some(format!("Bearer {token}")));
        }
        Ok(None)
    }

    fn deadline(ctx: &Context<'_>) -> Option<Duration> {
        ctx.remaining().map(|r| r.max(Duration::from_millis(1)))
    }

    /// `request` to `url` with, when `credentials` allows, the credentials and the
    /// configured headers; with the proxy for its scheme and the deadline of `ctx`.
    fn prepare<B>(
        &self,
        ctx: &Context<'_>,
        mut request: ureq::RequestBuilder<B>,
        url: &str,
        target: &Target,
        credentials: bool,
    ) -> Result<ureq::RequestBuilder<B>, StageError> {
        if credentials {
            if let Some(auth) = self.authorization(target.userinfo.clone())? {
                request = request.header("Authorization", auth);
            }
            for (name, value) in &self.headers {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        Ok(request
            .config()
            .proxy(self.proxies.for_url(url))
            .timeout_global(Self::deadline(ctx))
            .build())
    }

    /// Sends `method` (`GET` with `extra` headers, or `PUT` of the file at `body`) to
    /// `target`, following redirects as plugin-api's `RedirectPolicy` allows:
    /// credentials only to their origin, an upload only through 307 and 308 (its body
    /// sent again). Returns the first answer that is not a redirect.
    fn exchange(
        &self,
        ctx: &Context<'_>,
        target: &Target,
        method: &str,
        extra: &[(&str, String)],
        body: Option<&std::path::Path>,
    ) -> Result<ureq::http::Response<ureq::Body>, StageError> {
        let mut policy = RedirectPolicy::new(&target.url, &self.hosts, self.max_redirects);
        let (mut url, mut method, mut credentials) = (target.url.clone(), method.to_owned(), true);
        loop {
            let sent = if method == "PUT" {
                let path = body.ok_or_else(|| {
                    StageError::new(
                        ErrorKind::Other,
                        format!("PUT {}: no file to send", target.shown),
                    )
                })?;
                let (source, _) = stagehost_plugin_api::fs::open_regular(path)?;
                self.prepare(ctx, self.agent.put(&url), &url, target, credentials)?
                    .send(&source)
            } else {
                let builder = if method == "HEAD" {
                    self.agent.head(&url)
                } else {
                    self.agent.get(&url)
                };
                let mut request = self.prepare(ctx, builder, &url, target, credentials)?;
                for (name, value) in extra {
                    request = request.header(*name, value.as_str());
                }
                request.call()
            };
            let response =
                sent.map_err(|e| classify(&format!("cannot {method}"), &target.shown, &e))?;
            let status = response.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let next = policy.follow(&url, &method, status, location.as_deref(), &target.shown)?;
            ctx.debug(&format!(
                "{method} {}: HTTP {status} to {}{}",
                target.shown,
                stagehost_plugin_api::redact_url(&next.url),
                if next.keep_credentials {
                    ""
                } else {
                    " (without credentials: another origin)"
                }
            ));
            url = next.url;
            method = next.method;
            credentials = next.keep_credentials;
        }
    }

    /// A GET of `target`, with `extra` headers.
    fn call_get(
        &self,
        ctx: &Context<'_>,
        target: &Target,
        extra: &[(&str, String)],
    ) -> Result<ureq::http::Response<ureq::Body>, StageError> {
        self.exchange(ctx, target, "GET", extra, None)
    }

    /// After a body broke off at `done` of `total` bytes, asks for the rest (`Range`,
    /// with `If-Range` on the validator so a changed file is never stitched together):
    /// the rest's reader if the server answered 206 from exactly there.
    fn resume(
        &self,
        ctx: &Context<'_>,
        target: &Target,
        validator: &str,
        (done, total): (u64, u64),
    ) -> Option<ureq::BodyReader<'static>> {
        let extra = [
            ("Range", format!("bytes={done}-")),
            ("If-Range", validator.to_owned()),
        ];
        let response = self.call_get(ctx, target, &extra).ok()?;
        let range = response
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let expected = format!("bytes {done}-{}/{total}", total.saturating_sub(1));
        (response.status().as_u16() == 206 && range == expected)
            .then(|| response.into_body().into_reader())
    }

    fn get(&self, ctx: &Context<'_>, file: &File) -> Result<(), StageError> {
        ctx.check()?;
        let dest = file.filepath()?;
        let target = Target::of(file);
        let shown = target.shown.clone();
        // What we fetched before, if it is still there unchanged: ask whether it changed.
        // A copy saved as sent and a decoded copy are different bytes: each revalidates
        // only a copy made the same way.
        let cache_key = match self.decode_up_to {
            Some(_) => format!("{} (decoded)", file.url()),
            None => file.url().to_owned(),
        };
        let record =
            stagehost_plugin_api::validators::load_for(&cache_key, &dest, ctx.working_dir());
        let condition: Vec<(&str, String)> =
            record.iter().map(|v| revalidate::condition(v)).collect();
        let mut response = self.call_get(ctx, &target, &condition)?;
        let mut status = response.status().as_u16();
        // A 304 to If-Modified-Since says only "not newer": a file put back with an
        // older date gets one too. It proves the version only when it repeats the
        // Last-Modified recorded; otherwise the whole file is asked for.
        if status == 304 {
            let last_modified = response
                .headers()
                .get("last-modified")
                .and_then(|v| v.to_str().ok());
            let proven = record
                .as_deref()
                .is_some_and(|v| revalidate::not_modified_proves(v, last_modified));
            if !proven {
                response = self.call_get(ctx, &target, &[])?;
                status = response.status().as_u16();
            }
        }
        if status == 304 && record.is_some() {
            let size = std::fs::metadata(&dest).map_or(0, |m| m.len());
            ctx.info(&format!(
                "GET {shown}: not modified; {} is current (cached)",
                stagehost_plugin_api::display::path(&dest)
            ));
            ctx.progress(size, Some(size));
            ctx.cached();
            return Ok(());
        }
        if !(200..300).contains(&status) {
            return Err(refused(ctx, "GET", &shown, &response, true));
        }
        // A part of the file where all of it was asked for is never saved as the file.
        if status == 206 {
            let range = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no Content-Range");
            return Err(StageError::new(
                ErrorKind::Integrity,
                format!("GET {shown}: the server sent part of the file ({range}) where all of it was asked for"),
            ));
        }
        // A body is decoded only when the user asked for `compressed` (ureq decodes
        // nothing): otherwise it is saved as sent, as curl without `--compressed` does,
        // and a `.tar.gz` served with `Content-Encoding: gzip` keeps its own bytes.
        // Every Content-Encoding line, as one list (two `gzip` lines are two layers).
        let encoding = response
            .headers()
            .get_all("content-encoding")
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|v| !v.is_empty() && v != "identity")
            .collect::<Vec<_>>()
            .join(", ");
        let encoding = (!encoding.is_empty()).then_some(encoding);
        let decode = match (&encoding, self.decode_up_to) {
            (Some(e), Some(limit)) if e == "gzip" || e == "x-gzip" => Some(limit),
            (Some(e), Some(_)) => {
                return Err(StageError::new(
                    ErrorKind::Other,
                    format!("GET {shown}: the server sent Content-Encoding: {e}, which is not gzip; set compressed = false to save the body as sent"),
                ))
            }
            (Some(e), None) => {
                ctx.info(&format!(
                    "GET {shown}: saved as sent (Content-Encoding: {e}); set compressed = true to decode it"
                ));
                None
            }
            (None, _) => None,
        };
        // With decoding the length counts encoded bytes: only a body saved as sent is
        // checked against it (gzip checks its own stream).
        let expected = if decode.is_some() {
            None
        } else {
            response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        // What identifies this version: its ETag, else a Last-Modified the Date shows
        // to be at least a second old (one from the second it was served in may not
        // change when the file does).
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let date = header("date");
        let identifying = header("etag").or_else(|| {
            header("last-modified")
                .filter(|lm| revalidate::strong_last_modified(lm, date.as_deref()))
        });
        // Recorded after the write, for the next run's revalidation.
        let revalidator = identifying.clone();
        // A strong validator and byte ranges make a broken-off body resumable.
        let ranges = response
            .headers()
            .get("accept-ranges")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes"));
        let validator = identifying.filter(|v| !v.starts_with("W/"));
        let raw = response.into_body().into_reader();
        let first: Box<dyn Read + Send> = match decode {
            Some(_) => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            None => Box::new(raw),
        };
        let mut passes = Body {
            shared: self,
            target: &target,
            first: Some(first),
            next: None,
            validator: validator.filter(|_| ranges),
            total: expected,
        };
        let limit = decode.map(|limit| {
            (
                limit,
                format!("GET {shown}: the gzip-encoded body decodes to more than {limit} bytes (max_decompressed_bytes)"),
            )
        });
        download(
            ctx,
            &mut passes,
            Download {
                dest: &dest,
                expected,
                max_resumes: MAX_RESUMES,
                limit,
            },
        )?;
        if let Some(v) = revalidator {
            stagehost_plugin_api::validators::store_for(&cache_key, &dest, ctx.working_dir(), &v);
        }
        Ok(())
    }

    fn put(&self, ctx: &Context<'_>, file: &File) -> Result<(), StageError> {
        ctx.check()?;
        let local = file.filepath()?;
        let target = Target::of(file);
        let shown = &target.shown;
        let (_, meta) = stagehost_plugin_api::fs::open_regular(&local)?;
        let total = meta.len();
        ctx.progress(0, Some(total));
        let response = self.exchange(ctx, &target, "PUT", &[], Some(&local))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(StageError::new(
                status_kind(status),
                format!(
                    "PUT {shown}: {} (the local file {} is kept)",
                    status_line(&response),
                    stagehost_plugin_api::display::path(&local)
                ),
            ));
        }
        ctx.progress(total, Some(total));
        Ok(())
    }
}

/// A GET's body as [`download`] reads it: the response already received, then, after
/// a break, the rest asked for with `Range` (only with a strong validator and
/// `Accept-Ranges: bytes`).
struct Body<'a> {
    shared: &'a Shared,
    target: &'a Target,
    first: Option<Box<dyn Read + Send>>,
    next: Option<Box<dyn Read + Send>>,
    /// The validator `If-Range` carries; `None`: the body cannot resume.
    validator: Option<String>,
    /// The whole length, which a resumed part must end at.
    total: Option<u64>,
}

impl Passes for Body<'_> {
    type Body = Box<dyn Read + Send>;

    fn open(&mut self, _ctx: &Context<'_>, offset: u64) -> Result<Self::Body, StageError> {
        let body = if offset == 0 {
            self.first.take()
        } else {
            self.next.take()
        };
        body.ok_or_else(|| {
            StageError::new(
                ErrorKind::Other,
                format!(
                    "GET {}: no body to read from byte {offset}",
                    self.target.shown
                ),
            )
        })
    }

    fn broke(&mut self, done: u64, e: std::io::Error) -> StageError {
        StageError::new(
            io_kind(&e),
            format!(
                "GET {}: the body broke off after {done} bytes: {e}",
                self.target.shown
            ),
        )
    }

    fn mismatch(&self, done: u64, expected: u64) -> StageError {
        StageError::new(
            ErrorKind::Transient,
            format!(
                "GET {}: the body has {done} bytes, Content-Length said {expected}",
                self.target.shown
            ),
        )
    }

    fn resume(&mut self, ctx: &Context<'_>, done: u64) -> Result<Option<String>, StageError> {
        let (Some(validator), Some(total)) = (&self.validator, self.total) else {
            return Ok(None);
        };
        Ok(self
            .shared
            .resume(ctx, self.target, validator, (done, total))
            .map(|rest| {
                self.next = Some(Box::new(rest));
                format!("resuming with Range: bytes={done}-")
            }))
    }
}

/// The error for a response whose status refuses `method` on `shown`; for a transient
/// status, after waiting out the server's `Retry-After` when `wait` (a transfer the host
/// will retry; a `stat` is not retried, so it does not wait).
fn refused(
    ctx: &Context<'_>,
    method: &str,
    shown: &str,
    response: &ureq::http::Response<ureq::Body>,
    wait: bool,
) -> StageError {
    let status = response.status().as_u16();
    if wait && status_kind(status) == ErrorKind::Transient {
        if let Some(wait) = retry_after(response) {
            wait_before_retry(ctx, wait);
        }
    }
    StageError::new(
        status_kind(status),
        format!("{method} {shown}: {}", status_line(response)),
    )
}

/// Waits out a server's `Retry-After` (at most 30 s, and never past the deadline),
/// waking for cancellation.
fn wait_before_retry(ctx: &Context<'_>, wait: Duration) {
    let mut left = wait.min(Duration::from_secs(30));
    if let Some(remaining) = ctx.remaining() {
        left = left.min(remaining);
    }
    let step = Duration::from_millis(50);
    while !left.is_zero() && !ctx.is_cancelled() {
        let nap = left.min(step);
        std::thread::sleep(nap);
        left -= nap;
    }
}

stagehost_plugin_api::export_provider! {
    provider: HttpProvider,
    name: "http",
    schemes: ["http", "https"],
    description: "HTTP(S): GET into the working directory, PUT for stage-out; no error page or short body ever handed to a task",
    secret_settings: ["password", "headers"],
    capabilities: [stat, schemes],
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagehost_plugin_api::Provider;

    #[test]
    fn it_keeps_the_hosts_rules() {
        use stagehost_plugin_api::testing::{conformance, Conformance};
        let root =
            std::env::temp_dir().join(format!("stagehost-http-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("good.txt"), "over http\n").unwrap();
        let nginx = stagehost_tests::httpd::Nginx::start(&root);
        let with_password = |path: &str| {
            nginx
                .url(path)
                .replace("http://", "http://reader:pw-http-conformance@")
        };
        let provider = HttpProvider::new(&Settings::from_toml("")).unwrap();
        conformance(
            &provider,
            Conformance {
                good: &with_password("/good.txt"),
                missing: Some(&with_password("/absent.txt")),
                secrets: &["pw-http-conformance"],
            },
        )
        .unwrap();
        drop(nginx);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass word"), "dXNlcjpwYXNzIHdvcmQ=");
    }

    #[test]
    fn statuses_have_kinds() {
        assert_eq!(status_kind(404), ErrorKind::NotFound);
        assert_eq!(status_kind(503), ErrorKind::Transient);
        assert_eq!(status_kind(501), ErrorKind::Other);
        assert_eq!(status_kind(429), ErrorKind::Transient);
        assert_eq!(status_kind(403), ErrorKind::Permission);
        assert_eq!(status_kind(400), ErrorKind::Other);
    }
}
