//! The host's side of a plugin call: the log, progress and cancellation channels a
//! provider sees through its `Context`, and the ABI context built for each call.
//!
//! Invariant: nothing here blocks; every method is safe to call from a plugin's
//! transfer loop as often as it likes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use abi_stable::sabi_trait::TD_CanDowncast;
use abi_stable::std_types::{ROption, RStr, RString};
use stagehost_plugin_api::abi::capability::{CachedV1, Capability, CapabilityTable};
use stagehost_plugin_api::abi::{AbiContext, HostServices, HostServices_TO, NOTICE_CACHED};
use stagehost_plugin_api::{ErrorKind, LogLevel, StageError};

/// Receives progress of one transfer.
pub trait ProgressSink: Send + Sync {
    /// Bytes done, and the total when known.
    fn update(&self, done: u64, total: Option<u64>);
}

/// A flag that asks running work to stop. Clones share the flag; a child flag is
/// also raised when its parent is (one transfer's timeout raises only its own).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag {
    own: Arc<AtomicBool>,
    parent: Option<Arc<AtomicBool>>,
}

impl CancelFlag {
    /// A flag not yet raised.
    pub fn new() -> CancelFlag {
        CancelFlag::default()
    }
    /// A new flag that reads as raised when either it or `self` is.
    pub fn child(&self) -> CancelFlag {
        CancelFlag {
            own: Arc::new(AtomicBool::new(false)),
            parent: Some(self.own.clone()),
        }
    }
    /// Raises the flag.
    pub fn cancel(&self) {
        self.own.store(true, Ordering::SeqCst);
    }
    /// Whether the flag (or its parent) was raised.
    pub fn is_cancelled(&self) -> bool {
        self.own.load(Ordering::Relaxed)
            || self
                .parent
                .as_ref()
                .is_some_and(|p| p.load(Ordering::Relaxed))
    }
}

/// What one call's services are made of; [`abi_context`] writes them into the
/// services a thread kept from its last call where it can (no allocation per call).
pub(crate) struct ServicesFor<'a> {
    pub instance: Arc<str>,
    pub executor: Arc<str>,
    pub url: &'a str,
    pub cancel: CancelFlag,
    pub progress: Option<Arc<dyn ProgressSink>>,
    pub secrets: Arc<[String]>,
}

impl ServicesFor<'_> {
    fn into_services(self) -> CallServices {
        CallServices {
            instance: self.instance,
            executor: self.executor,
            url: self.url.to_owned(),
            cancel: self.cancel,
            progress: self.progress,
            cached: AtomicBool::new(false),
            secrets: self.secrets,
        }
    }

    /// Makes `kept` these services, reusing its URL's buffer.
    fn write_into(self, kept: &mut CallServices) {
        kept.instance = self.instance;
        kept.executor = self.executor;
        kept.url.clear();
        kept.url.push_str(self.url);
        kept.cancel = self.cancel;
        kept.progress = self.progress;
        kept.cached = AtomicBool::new(false);
        kept.secrets = self.secrets;
    }
}

/// Who is calling, for the plugin's log lines.
pub(crate) struct CallServices {
    pub instance: Arc<str>,
    pub executor: Arc<str>,
    /// The file's URL as given, credentials and all: never shown as it is (a log
    /// line gets it redacted, and its credentials are scrubbed from the message).
    /// Both are worked out when a line is logged, which few calls do.
    pub url: String,
    pub cancel: CancelFlag,
    pub progress: Option<Arc<dyn ProgressSink>>,
    /// Raised when the provider says the destination already held the file (read
    /// back through the call's context: [`CallContext::cached`]).
    pub cached: AtomicBool,
    /// Scrubbed from every log line, with the URL's credentials: the instance's
    /// secret settings, longest first.
    pub secrets: Arc<[String]>,
}

impl HostServices for CallServices {
    fn log(&self, level: u8, message: RStr<'_>) {
        if level == NOTICE_CACHED {
            self.cached.store(true, Ordering::Relaxed);
            return;
        }
        let from_url = crate::secrets::url_secrets(&self.url);
        let scrubbed;
        let message = if self.secrets.is_empty() && from_url.is_empty() {
            message.as_str()
        } else if from_url.is_empty() {
            scrubbed = crate::secrets::scrub(message.as_str(), &self.secrets);
            scrubbed.as_str()
        } else {
            let mut secrets: Vec<String> = self.secrets.to_vec();
            secrets.extend(from_url);
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            scrubbed = crate::secrets::scrub(message.as_str(), &secrets);
            scrubbed.as_str()
        };
        let url = stagehost_plugin_api::redact_url(&self.url);
        let (provider, executor, file) = (&*self.instance, &*self.executor, url.as_str());
        match LogLevel::from_u8(level) {
            LogLevel::Error => {
                tracing::error!(target: "stagehost::plugin", provider, executor, file, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "stagehost::plugin", provider, executor, file, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "stagehost::plugin", provider, executor, file, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "stagehost::plugin", provider, executor, file, "{message}")
            }
            LogLevel::Trace => {
                tracing::trace!(target: "stagehost::plugin", provider, executor, file, "{message}")
            }
        }
    }
    fn progress(&self, done: u64, total: ROption<u64>) {
        if let Some(sink) = &self.progress {
            sink.update(done, total.into_option());
        }
    }
    fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// The `cached` capability: the call's services record that the destination already
/// held the current file. A context the host did not make is ignored.
extern "C" fn cached(ctx: &AbiContext) {
    if let Ok(services) = ctx.services.obj.downcast_as::<CallServices>() {
        services.cached.store(true, Ordering::Relaxed);
    }
}

static CACHED: CachedV1 = CachedV1 { cached };

/// The capabilities this host offers plugins (see
/// `stagehost_plugin_api::abi::capability`).
pub(crate) fn host_capabilities() -> &'static [Capability] {
    static OFFERED: OnceLock<[Capability; 1]> = OnceLock::new();
    OFFERED.get_or_init(|| [CachedV1::offer(&CACHED)])
}

/// `path` as the UTF-8 text the ABI carries; a path that is not UTF-8 is refused
/// (never rewritten with U+FFFD).
pub(crate) fn utf8_path<'p>(path: &'p Path, what: &str) -> Result<&'p str, StageError> {
    path.to_str().ok_or_else(|| {
        StageError::new(
            ErrorKind::InvalidUrl,
            format!(
                "the {what} {} is not valid UTF-8; plugins receive paths as UTF-8, so stagehost refuses it rather than alter it",
                stagehost_plugin_api::display::path(path)
            ),
        )
    })
}

/// The ABI context of one call; when it goes, its strings are kept by the thread
/// for its next call (a context is built for every file planned: its four strings
/// are then written into kept buffers instead of allocated anew).
pub(crate) struct CallContext(Option<Box<AbiContext>>);

impl CallContext {
    /// Whether the provider said, during this call, that the destination already
    /// held the file.
    pub(crate) fn cached(&self) -> bool {
        self.services
            .obj
            .downcast_as::<CallServices>()
            .is_ok_and(|s| s.cached.load(Ordering::Relaxed))
    }
}

impl std::ops::Deref for CallContext {
    type Target = AbiContext;
    fn deref(&self) -> &AbiContext {
        self.0
            .as_ref()
            .expect("a context is only taken when it goes")
    }
}

thread_local! {
    // Boxed: the context moves in and out of the slot as a pointer, not a copy of
    // its few hundred bytes.
    static SPARE_CONTEXT: std::cell::RefCell<Option<Box<AbiContext>>> =
        const { std::cell::RefCell::new(None) };
}

impl Drop for CallContext {
    fn drop(&mut self) {
        if let Some(mut ctx) = self.0.take() {
            // Its services (every context made here holds `CallServices`) are kept for
            // the thread's next call; what they point at goes now: the progress sink,
            // and the URL's text.
            if let Ok(kept) = ctx.services.obj.downcast_as_mut::<CallServices>() {
                kept.progress = None;
                kept.url.clear();
            }
            let _ = SPARE_CONTEXT.try_with(|spare| *spare.borrow_mut() = Some(ctx));
        }
    }
}

fn set(buffer: &mut RString, text: &str) {
    buffer.clear();
    buffer.push_str(text);
}

/// Builds the ABI context for one call. Fails when the working directory or the
/// destination is not UTF-8.
pub(crate) fn abi_context(
    services: ServicesFor<'_>,
    working_dir: &Path,
    destination: &Path,
    deadline: Option<SystemTime>,
) -> Result<CallContext, StageError> {
    let working_dir = utf8_path(working_dir, "working directory")?;
    let destination = utf8_path(destination, "destination")?;
    let deadline_unix_ms = deadline
        .map(|d| {
            d.duration_since(UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64)
        })
        .into();
    let spare = SPARE_CONTEXT
        .try_with(|spare| spare.borrow_mut().take())
        .ok()
        .flatten();
    let ctx = match spare {
        Some(mut ctx) => {
            set(&mut ctx.executor, &services.executor);
            set(&mut ctx.working_dir, working_dir);
            set(&mut ctx.instance, &services.instance);
            set(&mut ctx.destination, destination);
            ctx.deadline_unix_ms = deadline_unix_ms;
            match ctx.services.obj.downcast_as_mut::<CallServices>() {
                Ok(kept) => services.write_into(kept),
                Err(_) => {
                    ctx.services =
                        HostServices_TO::from_value(services.into_services(), TD_CanDowncast)
                }
            }
            ctx
        }
        None => Box::new(AbiContext {
            executor: services.executor.as_ref().into(),
            working_dir: working_dir.into(),
            instance: services.instance.as_ref().into(),
            destination: destination.into(),
            deadline_unix_ms,
            services: HostServices_TO::from_value(services.into_services(), TD_CanDowncast),
        }),
    };
    Ok(CallContext(Some(ctx)))
}
