//! The `object-store` provider: stages `s3://bucket/key` objects with the
//! `object_store` crate, on a tokio runtime the plugin owns.
//!
//! Stage-in asks for the whole object: the answer gives its size, ETag and the
//! store's checksums (see [`checksum`]). The first part is read from it; a larger rest
//! comes in parallel ranged GETs (`concurrency` at once, consumed in order, each only
//! while the ETag is unchanged), streamed to a temporary file in the destination
//! directory that is synced and renamed. Memory stays at most `concurrency` parts. The
//! store's whole-object checksums and a single-part object's MD5 ETag are checked
//! against the bytes. When the destination already holds the object with the same
//! ETag (recorded through `validators`), no bytes move and the report says `cached`.
//!
//! Stage-out uploads a file no larger than a part in one PUT, else as a multipart
//! upload with `concurrency` parts in flight; a failed or cancelled upload is aborted,
//! so no parts are left behind, and the local file is kept.
//!
//! Credentials: the standard `AWS_*` variables, the shared `~/.aws/credentials` and
//! `~/.aws/config` files with profiles (`AWS_PROFILE`, or the `profile` setting), or
//! settings that name the variables holding them. None is ever shown.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use serde::Deserialize;
use stagehost_plugin_api::capability::Entry;
use stagehost_plugin_api::display;
use stagehost_plugin_api::fs::AtomicFile;
use stagehost_plugin_api::transfer::{Transfer, TransferProvider};
use stagehost_plugin_api::{
    env_secret, Context, ErrorKind, File, Job, Settings, StageError, WorkPlace,
};

mod checksum;
mod client;
mod inspect;
mod profile;

/// The runtime every instance's transfers run on, called from the host's blocking
/// threads.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("stagehost-object-store")
        .enable_all()
        .build()
        .expect("a tokio runtime builds")
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StoreSettings {
    mode: WorkPlace,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); `http://` allows plain
    /// http.
    endpoint: Option<String>,
    region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); the default with an endpoint.
    path_style: Option<bool>,
    /// Plain http to an endpoint given as `https://`-less host names.
    allow_http: bool,
    /// The part size, for ranged GETs and multipart uploads, in MiB.
    part_size_mib: u64,
    /// Parts in flight at once, per transfer.
    concurrency: usize,
    /// S3: the checksum each upload carries, for the store to check and keep.
    upload_checksum: UploadChecksum,
    /// Buckets (or `bucket/prefix`es) this instance claims; empty claims all.
    buckets: Vec<String>,
    /// The profile of the shared AWS files (else `AWS_PROFILE`, else `default`).
    profile: Option<String>,
    /// Names of environment variables holding the credentials.
    access_key_id_env: Option<String>,
    secret_access_key_env: Option<String>,
    session_token_env: Option<String>,
    /// Retries object_store makes itself before an error reaches the host's retries.
    max_retries: usize,
    /// The Azure storage account (else `AZURE_STORAGE_ACCOUNT_NAME`).
    azure_account: Option<String>,
    /// The name of an environment variable holding the Azure account key.
    azure_access_key_env: Option<String>,
    /// Use the Azure storage emulator (Azurite) at `AZURITE_BLOB_STORAGE_URL`.
    use_emulator: bool,
    /// Send no credentials (public buckets, emulators).
    anonymous: bool,
    /// GCS: the name of an environment variable holding an OAuth bearer token.
    bearer_token_env: Option<String>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            mode: WorkPlace::Separate,
            endpoint: None,
            region: None,
            path_style: None,
            allow_http: false,
            part_size_mib: 8,
            concurrency: 8,
            upload_checksum: UploadChecksum::Sha256,
            buckets: Vec::new(),
            profile: None,
            access_key_id_env: None,
            secret_access_key_env: None,
            session_token_env: None,
            max_retries: 2,
            azure_account: None,
            azure_access_key_env: None,
            use_emulator: false,
            anonymous: false,
            bearer_token_env: None,
        }
    }
}

/// The checksum an S3 upload (each PUT, each part) carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum UploadChecksum {
    /// `x-amz-checksum-sha256`: the SHA-256 computed for the request's signature
    /// anyway; the object keeps it (composite for a multipart upload).
    Sha256,
    /// `x-amz-checksum-crc64nvme`.
    Crc64nvme,
    /// None sent; the store chooses (S3 computes a CRC64NVME of the whole object).
    None,
}

/// See the crate docs.
pub struct Stores {
    mode: WorkPlace,
    buckets: Vec<String>,
    shared: Arc<Shared>,
}

struct Shared {
    settings: StoreSettings,
    part_size: usize,
    /// One client per bucket, made on first use.
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// `s3://bucket/key` or `az://container/blob`, read.
struct Target {
    scheme: String,
    bucket: String,
    key: ObjectPath,
    shown: String,
}

impl Target {
    fn of(file: &File) -> Result<Target, StageError> {
        let shown = file.redacted_url();
        let scheme = file.scheme().to_owned();
        let bucket = file.netloc().to_owned();
        let key = file.path().trim_start_matches('/');
        if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
            return Err(StageError::new(
                ErrorKind::InvalidUrl,
                format!("{shown}: write {scheme}://bucket/key, naming one object"),
            ));
        }
        let key = ObjectPath::parse(key)
            .map_err(|e| StageError::new(ErrorKind::InvalidUrl, format!("{shown}: {e}")))?;
        Ok(Target {
            scheme,
            bucket,
            key,
            shown,
        })
    }
}

impl Transfer for Stores {
    fn new(settings: &Settings) -> Result<Self, StageError> {
        let s: StoreSettings = settings.parse()?;
        if !(1..=5 * 1024).contains(&s.part_size_mib) {
            return Err(StageError::invalid_settings(format!(
                "invalid settings: part_size_mib must be 1 to 5120, not {}",
                s.part_size_mib
            )));
        }
        if !(1..=64).contains(&s.concurrency) {
            return Err(StageError::invalid_settings(format!(
                "invalid settings: concurrency must be 1 to 64, not {}",
                s.concurrency
            )));
        }
        Ok(Stores {
            mode: s.mode,
            buckets: s.buckets.clone(),
            shared: Arc::new(Shared {
                part_size: (s.part_size_mib as usize) << 20,
                settings: s,
                stores: Mutex::new(HashMap::new()),
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
        vec!["s3".into(), "az".into(), "gs".into()]
    }

    fn get(&self, file: &File) -> Result<Job, StageError> {
        Target::of(file)?;
        Ok(self.job(file, true))
    }

    fn stat(&self, ctx: &Context<'_>, file: &File) -> Result<Option<Entry>, StageError> {
        self.stat_object(ctx, file)
    }

    fn list(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<Entry>, StageError> {
        self.list_prefix(ctx, dir, recursive)
    }

    fn put(&self, file: &File) -> Result<Job, StageError> {
        let target = Target::of(file)?;
        // object_store's GCS client fetches a token for every upload, skip_signature
        // or not: with none configured it asks this machine's metadata server
        // (169.254.169.254). An anonymous upload is refused here instead.
        let s = &self.shared.settings;
        if target.scheme == "gs" && s.anonymous && s.bearer_token_env.is_none() {
            return Err(StageError::new(
                ErrorKind::Permission,
                format!(
                    "cannot stage out to {}: anonymous = true sends no credentials, and Google Cloud Storage takes no upload without them; give bearer_token_env, or drop anonymous to use the application default credentials",
                    target.shown
                ),
            ));
        }
        Ok(self.job(file, false))
    }
}

/// The provider: [`Stores`] with plugin-api's planning quartet.
pub type ObjectStoreProvider = TransferProvider<Stores>;

impl Stores {
    fn claims_of(&self, file: &File) -> bool {
        if !matches!(file.scheme(), "s3" | "az" | "gs") {
            return false;
        }
        let object = format!("{}{}", file.netloc(), file.path());
        self.buckets.is_empty()
            || self.buckets.iter().any(|b| {
                object
                    .strip_prefix(b.trim_end_matches('/'))
                    .is_some_and(|rest| {
                        rest.is_empty() || rest.starts_with('/') || b.ends_with('/')
                    })
            })
    }

    fn job(&self, file: &File, fetch: bool) -> Job {
        let shared = self.shared.clone();
        let file = file.clone();
        Job::new(move |ctx| {
            let target = Target::of(&file)?;
            let local = file.filepath()?;
            let store = shared.store(&target)?;
            if fetch {
                RUNTIME.block_on(shared.get(ctx, &store, &target, &local, file.url()))
            } else {
                RUNTIME.block_on(shared.put(ctx, &store, &target, &local))
            }
        })
    }
}

/// The error code of a store's XML error body (`<Code>NoSuchBucket</Code>`).
fn error_code(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("<Code>")?;
    let (code, _) = rest.split_once("</Code>")?;
    // A store's codes are words (`NoSuchBucket`, `Azure.Error`): anything else is
    // not a code, and never reaches an error line.
    (!code.is_empty()
        && code.len() < 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
    .then_some(code)
}

/// An object_store error as a stage error of the right kind, with the store's error
/// code when it gave one.
fn classify(what: &str, target: &Target, e: &object_store::Error) -> StageError {
    let text = e.to_string();
    if let Some(why) = client::redirect_refusal(e) {
        return StageError::new(ErrorKind::Other, format!("{what} {}: {why}", target.shown));
    }
    let has = |s: &str| text.contains(s);
    let code = error_code(&text);
    let (kind, why) = match (e, code.unwrap_or("")) {
        (_, "NoSuchBucket" | "ContainerNotFound") => (
            ErrorKind::NotFound,
            format!("the bucket {} does not exist", target.bucket),
        ),
        (_, "InvalidAccessKeyId") => (
            ErrorKind::Permission,
            "the store does not know the access key ID (check AWS_ACCESS_KEY_ID, the profile, or the setting that names the key)".to_owned(),
        ),
        (_, "SignatureDoesNotMatch" | "AuthenticationFailed") => (
            ErrorKind::Permission,
            "the secret key does not match the access key ID (the request's signature was refused)".to_owned(),
        ),
        (_, "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired") => (
            ErrorKind::Permission,
            "the session token is expired or invalid".to_owned(),
        ),
        (_, "SlowDown" | "Throttling" | "ThrottlingException" | "ServerBusy" | "RequestLimitExceeded") => (
            ErrorKind::Transient,
            "the store is throttling requests".to_owned(),
        ),
        (object_store::Error::NotFound { .. }, _) => {
            (ErrorKind::NotFound, "no such object".to_owned())
        }
        (object_store::Error::Precondition { .. }, _) => (
            ErrorKind::Transient,
            "the object changed while it was fetched".to_owned(),
        ),
        (
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. },
            _,
        ) => (ErrorKind::Permission, "access denied".to_owned()),
        _ if has("status code: 403") => (ErrorKind::Permission, "access denied".to_owned()),
        _ if has("status code: 503") || has("status code: 429") => (
            ErrorKind::Transient,
            "the store is throttling requests".to_owned(),
        ),
        _ if has("status code: 5") || has("error sending request") || has("connection") => (
            ErrorKind::Transient,
            "the store failed or is unreachable".to_owned(),
        ),
        _ => (ErrorKind::Other, "the store refused".to_owned()),
    };
    // object_store's messages quote the request (never its credentials) and then the
    // body, which a server may fill with anything (a token it echoes): the status and
    // the code stand for it.
    const STATUS: &str = "status code: ";
    let request = match text.find(STATUS) {
        Some(i) => {
            let after = i + STATUS.len();
            let end = text[after..].find(": ").map_or(text.len(), |j| after + j);
            &text[..end]
        }
        None => text.split(": <?xml").next().unwrap_or(&text),
    };
    let detail: String = display::escape(request).chars().take(240).collect();
    let code = code.map(|c| format!("{c}; ")).unwrap_or_default();
    StageError::new(
        kind,
        format!("{what} {}: {why} ({code}{detail})", target.shown),
    )
}

/// Whether `etag` is a single-part upload's MD5 (32 hex digits, quoted or not).
fn md5_etag(etag: &str) -> Option<String> {
    let bare = etag.trim_matches('"');
    (bare.len() == 32 && bare.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| bare.to_ascii_lowercase())
}

impl Shared {
    /// The client for `target`'s bucket or container, made on first use.
    fn store(&self, target: &Target) -> Result<Arc<dyn ObjectStore>, StageError> {
        let key = format!("{}://{}", target.scheme, target.bucket);
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(&key) {
            return Ok(store.clone());
        }
        let store = match target.scheme.as_str() {
            "az" => self.azure(&target.bucket)?,
            "gs" => self.gcs(&target.bucket)?,
            _ => self.s3(&target.bucket)?,
        };
        stores.insert(key, store.clone());
        Ok(store)
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.settings.max_retries,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        }
    }

    /// An Azure Blob client for `container`: the `AZURE_*` variables (among them
    /// `AZURE_STORAGE_USE_EMULATOR` with `AZURITE_BLOB_STORAGE_URL`), then settings.
    fn azure(&self, container: &str) -> Result<Arc<dyn ObjectStore>, StageError> {
        let s = &self.settings;
        let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
        if let Some(account) = &s.azure_account {
            builder = builder.with_account(account);
        }
        if let Some(key) = env_secret("azure_access_key_env", s.azure_access_key_env.as_deref())? {
            builder = builder.with_access_key(key);
        }
        if s.use_emulator {
            builder = builder.with_use_emulator(true);
        }
        if let Some(url) = &s.endpoint {
            builder = builder.with_endpoint(url.clone());
        }
        let plain = s
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let store = builder
            .with_allow_http(s.allow_http || plain)
            .with_http_connector(checksum::Connector::default())
            .with_retry(self.retry())
            .build()
            .map_err(|e| {
                StageError::invalid_settings(format!(
                    "invalid settings: cannot set up Azure Blob for container {container}: {e}"
                ))
            })?;
        Ok(Arc::new(store))
    }

    /// A Google Cloud Storage client for `bucket`: `GOOGLE_*` variables and
    /// `SERVICE_ACCOUNT` (a key file), then settings (`endpoint` as the base URL of an
    /// emulator, `anonymous` to send no credentials).
    fn gcs(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, StageError> {
        let s = &self.settings;
        let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
        if let Some(url) = &s.endpoint {
            builder = builder.with_base_url(url);
        }
        if s.anonymous {
            builder = builder.with_skip_signature(true);
        }
        if let Some(token) = env_secret("bearer_token_env", s.bearer_token_env.as_deref())? {
            builder = builder.with_bearer_token(token);
        }
        let plain = s
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let store = builder
            .with_client_options(ClientOptions::new().with_allow_http(s.allow_http || plain))
            .with_http_connector(checksum::Connector::default())
            .with_retry(self.retry())
            .build()
            .map_err(|e| {
                StageError::invalid_settings(format!(
                    "invalid settings: cannot set up Google Cloud Storage for bucket {bucket}: {e}"
                ))
            })?;
        Ok(Arc::new(store))
    }

    /// An S3 client for `bucket`.
    fn s3(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, StageError> {
        let s = &self.settings;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let env_has = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let mut endpoint = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty());
        // The shared files, unless the environment already names the keys.
        if !env_has("AWS_ACCESS_KEY_ID") && s.access_key_id_env.is_none() {
            if let Some(p) = profile::load(s.profile.as_deref()) {
                if let (Some(id), Some(secret)) = (p.access_key_id, p.secret_access_key) {
                    builder = builder
                        .with_access_key_id(id)
                        .with_secret_access_key(secret);
                }
                if let Some(token) = p.session_token {
                    builder = builder.with_token(token);
                }
                if let (Some(region), false) = (p.region, env_has("AWS_REGION")) {
                    builder = builder.with_region(region);
                }
                if let (Some(url), None) = (p.endpoint_url, &endpoint) {
                    builder = builder.with_endpoint(&url);
                    endpoint = Some(url);
                }
            }
        }
        let from_env = |setting: &str, var: &Option<String>| env_secret(setting, var.as_deref());
        if let Some(id) = from_env("access_key_id_env", &s.access_key_id_env)? {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = from_env("secret_access_key_env", &s.secret_access_key_env)? {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = from_env("session_token_env", &s.session_token_env)? {
            builder = builder.with_token(token);
        }
        if let Some(region) = &s.region {
            builder = builder.with_region(region);
        }
        if let Some(url) = &s.endpoint {
            builder = builder.with_endpoint(url);
            endpoint = Some(url.clone());
        }
        let plain = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        // Ask for the objects' checksums on every request, so that the header is signed.
        let mut headers = http::HeaderMap::new();
        headers.insert(
            checksum::MODE_HEADER,
            http::HeaderValue::from_static("ENABLED"),
        );
        match s.upload_checksum {
            UploadChecksum::Sha256 => builder = builder.with_checksum_algorithm(Checksum::SHA256),
            UploadChecksum::Crc64nvme => {
                builder = builder.with_checksum_algorithm(Checksum::CRC64NVME)
            }
            UploadChecksum::None => {}
        }
        builder = builder
            .with_client_options(ClientOptions::new().with_allow_http(s.allow_http || plain))
            .with_http_connector(checksum::Connector { headers })
            .with_virtual_hosted_style_request(!s.path_style.unwrap_or(endpoint.is_some()))
            .with_retry(self.retry());
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(|e| {
            StageError::invalid_settings(format!(
                "invalid settings: cannot set up S3 for bucket {bucket}: {e}"
            ))
        })?);
        Ok(store)
    }

    async fn get(
        &self,
        ctx: &Context<'_>,
        store: &Arc<dyn ObjectStore>,
        target: &Target,
        dest: &Path,
        url: &str,
    ) -> Result<(), StageError> {
        ctx.check()?;
        let part = self.part_size as u64;
        // The version fetched before, if the file is still as it was then: the first
        // GET asks only for a change (one request when there is none).
        // A record serves only the URL it was made for (plugin-api's rule).
        let recorded = stagehost_plugin_api::validators::load_for(url, dest, ctx.working_dir());
        let ask = |range: Option<GetRange>| GetOptions {
            if_none_match: recorded.clone(),
            range,
            ..GetOptions::default()
        };
        // The whole object is asked for first: a store sends its checksums only then.
        // Its first part is read from this response; a larger rest is fetched in
        // parallel ranges, each only if the object is still the version begun with.
        let first = match store.get_opts(&target.key, ask(None)).await {
            Ok(first) => first,
            Err(object_store::Error::NotModified { .. }) => {
                let size = std::fs::metadata(dest).map_or(0, |m| m.len());
                ctx.info(&format!(
                    "{}: not modified (same ETag); {} is current (cached)",
                    target.shown,
                    display::path(dest)
                ));
                ctx.progress(size, Some(size));
                ctx.cached();
                return Ok(());
            }
            // A 404 of a missing key and of a missing bucket read the same to
            // object_store: a listing tells them apart.
            Err(e @ object_store::Error::NotFound { .. }) => {
                let probe = store.list(Some(&target.key)).next().await;
                return Err(match probe {
                    Some(Err(listing)) => classify("cannot stage in", target, &listing),
                    _ => classify("cannot stage in", target, &e),
                });
            }
            Err(e) => return Err(classify("cannot stage in", target, &e)),
        };
        let meta = first.meta.clone();
        let size = meta.size;
        let validator = meta.e_tag.clone();
        let given = first
            .extensions
            .get::<checksum::Checksums>()
            .cloned()
            .unwrap_or_default();
        let mut checks: Vec<(checksum::Given, checksum::Running)> = given
            .given
            .iter()
            .filter_map(|g| Some((g.clone(), checksum::Running::for_given(g)?)))
            .collect();
        let etag_md5 = meta
            .e_tag
            .as_deref()
            .and_then(md5_etag)
            .filter(|_| !given.etag_not_md5);
        let mut md5 = etag_md5.as_ref().map(|_| md5::Md5::default());
        let mut out = AtomicFile::create(dest)?;
        let write_error = |e: std::io::Error| {
            StageError::io(format_args!("cannot write {}", display::path(dest)), &e)
        };
        let mut take = |bytes: &[u8], out: &mut AtomicFile| -> Result<(), StageError> {
            if let Some(md5) = md5.as_mut() {
                md5::Digest::update(md5, bytes);
            }
            for (_, running) in checks.iter_mut() {
                running.update(bytes);
            }
            out.write_all(bytes).map_err(write_error)
        };
        let mut done = 0u64;
        ctx.progress(done, Some(size));
        let mut stream = first.into_stream();
        while done < part.min(size) {
            ctx.check()?;
            let Some(bytes) = stream.next().await else {
                break;
            };
            let bytes = bytes.map_err(|e| classify("cannot stage in", target, &e))?;
            take(&bytes, &mut out)?;
            done += bytes.len() as u64;
            ctx.progress(done, Some(size));
        }
        drop(stream);
        let ranges: Vec<std::ops::Range<u64>> = (done..size)
            .step_by(part as usize)
            .map(|at| at..(at + part).min(size))
            .collect();
        let mut parts = futures::stream::iter(ranges.into_iter().map(|r| {
            let store = store.clone();
            let key = target.key.clone();
            let options = GetOptions {
                range: Some(GetRange::Bounded(r)),
                if_match: meta.e_tag.clone(),
                ..GetOptions::default()
            };
            async move { store.get_opts(&key, options).await?.bytes().await }
        }))
        .buffered(self.settings.concurrency);
        while let Some(bytes) = parts.next().await {
            ctx.check()?;
            let bytes = bytes.map_err(|e| classify("cannot stage in", target, &e))?;
            take(&bytes, &mut out)?;
            done += bytes.len() as u64;
            ctx.progress(done, Some(size));
        }
        if done != size {
            return Err(StageError::new(
                ErrorKind::Integrity,
                format!("{}: received {done} bytes of {size}", target.shown),
            ));
        }
        for (given, running) in checks {
            let got = running.finish();
            if got != given.value {
                return Err(StageError::new(
                    ErrorKind::Integrity,
                    format!(
                        "{}: the bytes' {} is {got}, the store says {}",
                        target.shown, given.algorithm, given.value
                    ),
                ));
            }
            ctx.debug(&format!(
                "{}: {} checksum verified",
                target.shown, given.algorithm
            ));
        }
        if let (Some(expected), Some(md5)) = (etag_md5, md5) {
            let got = format!("{:x}", md5::Digest::finalize(md5));
            if got != expected {
                return Err(StageError::new(
                    ErrorKind::Integrity,
                    format!(
                        "{}: the bytes' MD5 is {got}, the ETag says {expected}",
                        target.shown
                    ),
                ));
            }
        }
        for g in given.given.iter().filter(|g| g.value.contains('-')) {
            ctx.debug(&format!(
                "{}: its {} checksum is composite ({}), of the parts of its upload; not checked",
                target.shown, g.algorithm, g.value
            ));
        }
        out.commit()?;
        if let Some(v) = validator {
            stagehost_plugin_api::validators::store_for(url, dest, ctx.working_dir(), &v);
        }
        Ok(())
    }

    async fn put(
        &self,
        ctx: &Context<'_>,
        store: &Arc<dyn ObjectStore>,
        target: &Target,
        local: &Path,
    ) -> Result<(), StageError> {
        ctx.check()?;
        let kept = || format!("(the local file {} is kept)", display::path(local));
        let fail = |e: StageError| StageError::new(e.kind(), format!("{} {}", e.message(), kept()));
        let (mut source, meta) = stagehost_plugin_api::fs::open_regular(local)?;
        let size = meta.len();
        let read_error = |e: std::io::Error| {
            StageError::io(format_args!("cannot read {}", display::path(local)), &e)
        };
        ctx.progress(0, Some(size));
        if size <= self.part_size as u64 {
            let mut data = Vec::with_capacity(size as usize);
            source.read_to_end(&mut data).map_err(read_error)?;
            store
                .put(&target.key, PutPayload::from(data))
                .await
                .map_err(|e| fail(classify("cannot stage out to", target, &e)))?;
            ctx.progress(size, Some(size));
            return Ok(());
        }
        let upload = store
            .put_multipart(&target.key)
            .await
            .map_err(|e| fail(classify("cannot stage out to", target, &e)))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut buf = vec![0u8; self.part_size.min(8 << 20)];
        let mut done = 0u64;
        let outcome: Result<(), StageError> = async {
            loop {
                ctx.check()?;
                let n = match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_error(e)),
                };
                writer
                    .wait_for_capacity(self.settings.concurrency)
                    .await
                    .map_err(|e| classify("cannot stage out to", target, &e))?;
                writer.write(&buf[..n]);
                done += n as u64;
                ctx.progress(done, Some(size));
            }
            if done != size {
                return Err(StageError::new(
                    ErrorKind::Integrity,
                    format!(
                        "{} changed while it was uploaded ({done} bytes read, {size} expected)",
                        display::path(local)
                    ),
                ));
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| fail(classify("cannot stage out to", target, &e)))?;
                Ok(())
            }
            Err(e) => {
                // No parts may outlive a failed upload.
                if let Err(abort) = writer.abort().await {
                    ctx.info(&format!(
                        "{}: aborting the multipart upload failed too: {abort}",
                        target.shown
                    ));
                }
                Err(fail(e))
            }
        }
    }
}

stagehost_plugin_api::export_provider! {
    provider: ObjectStoreProvider,
    name: "object-store",
    schemes: ["s3", "gs", "az"],
    description: "s3://, gs:// and az:// objects: parallel ranged GETs, multipart uploads aborted on failure, checksums and MD5 ETags checked, unchanged objects not moved again",
    capabilities: [stat, list, schemes],
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagehost_plugin_api::Provider;

    #[test]
    fn it_keeps_the_hosts_rules() {
        use stagehost_plugin_api::testing::{conformance, Conformance};
        let moto = stagehost_tests::s3d::Moto::start();
        moto.boto("s3.create_bucket(Bucket='conformance')\ns3.put_object(Bucket='conformance', Key='good.txt', Body=b'over s3\\n')\n");
        std::env::set_var("STAGEHOST_S3_CONFORMANCE_ID", "conformance-key-id");
        std::env::set_var("STAGEHOST_S3_CONFORMANCE_SECRET", "sk-s3-conformance");
        let provider = ObjectStoreProvider::new(&Settings::from_toml(format!(
            "endpoint = {:?}\nregion = \"us-east-1\"\naccess_key_id_env = \"STAGEHOST_S3_CONFORMANCE_ID\"\nsecret_access_key_env = \"STAGEHOST_S3_CONFORMANCE_SECRET\"\n",
            moto.endpoint()
        )))
        .unwrap();
        conformance(
            &provider,
            Conformance {
                good: "s3://conformance/good.txt",
                missing: Some("s3://conformance/absent.txt"),
                secrets: &["sk-s3-conformance"],
            },
        )
        .unwrap();
    }

    #[test]
    fn a_body_a_server_echoes_is_never_quoted() {
        let target = Target::of(&File::parse("s3://bucket/key").unwrap()).unwrap();
        for body in [
            "internal error token=tok-echoed-123",
            "<Error><Code>Weird</Code><T>tok-echoed-123</T></Error>",
        ] {
            let e = object_store::Error::Generic {
                store: "S3",
                source: format!("Error performing GET http://127.0.0.1:1/bucket/key in 1ms - Server returned non-2xx status code: 500 Internal Server Error: {body}").into(),
            };
            let shown = classify("GET", &target, &e).to_string();
            assert!(!shown.contains("tok-echoed"), "{shown}");
            assert!(shown.contains("500 Internal Server Error"), "{shown}");
        }
    }

    #[test]
    fn a_stores_error_code_is_a_word_or_nothing() {
        assert_eq!(
            error_code("x<Code>NoSuchBucket</Code>y"),
            Some("NoSuchBucket")
        );
        assert_eq!(error_code("<Code>Azure.Blob</Code>"), Some("Azure.Blob"));
        // A server's escape sequences never reach an error line as a code.
        assert_eq!(error_code("<Code>X\u{1b}]0;PWNED\u{7}</Code>"), None);
        assert_eq!(error_code("<Code>a b</Code>"), None);
    }

    #[test]
    fn single_part_etags_are_md5s() {
        assert_eq!(
            md5_etag("\"9E107D9D372BB6826BD81D3542A419D6\"").as_deref(),
            Some("9e107d9d372bb6826bd81d3542a419d6")
        );
        assert_eq!(md5_etag("\"9e107d9d372bb6826bd81d3542a419d6-3\""), None);
    }

    #[test]
    fn errors_are_read_by_their_status_not_by_digits_in_a_timing() {
        let t = Target::of(&File::parse("s3://b/k").unwrap()).unwrap();
        let kind = |m: &str| {
            let e = object_store::Error::Generic {
                store: "S3",
                source: m.into(),
            };
            classify("x", &t, &e).kind()
        };
        let timing =
            "Error performing PUT http://h/b/k in 14.403ms - Server returned non-2xx status code";
        assert_eq!(
            kind(&format!("{timing}: 400 Bad Request")),
            ErrorKind::Other
        );
        assert_eq!(
            kind(&format!("{timing}: 403 Forbidden")),
            ErrorKind::Permission
        );
        assert_eq!(
            kind(&format!("{timing}: 503 Slow Down: <Code>SlowDown</Code>")),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(&format!("{timing}: 502 Bad Gateway")),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(&format!(
                "{timing}: 404 Not Found: <Code>NoSuchBucket</Code>"
            )),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn urls_name_one_object() {
        let t = Target::of(&File::parse("s3://b/k/x.bin").unwrap()).unwrap();
        assert_eq!((t.bucket.as_str(), t.key.as_ref()), ("b", "k/x.bin"));
        for bad in ["s3://b/", "s3:///k", "s3://b/dir/"] {
            assert!(Target::of(&File::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }
}
