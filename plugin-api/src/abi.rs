//! The ABI layer: the only module that names abi_stable types. Plugin authors never
//! touch it; the host and the [`export_provider!`](crate::export_provider) macro do.
//!
//! Invariants:
//! - only `R*`/`StableAbi` types cross the boundary;
//! - every call into author code runs under `catch_unwind`: a panic returns an
//!   [`ErrorKind::Panicked`] error and never unwinds into the host;
//! - the core types (the root module, `AbiProvider`, `AbiJob`, `HostServices`,
//!   `AbiContext`, `AbiPlan`, `File`, `ErrorKind`) are frozen: abi_stable refuses a
//!   library whose types have fewer fields or variants than the host's, so any growth
//!   would shut out older plugins. Everything new is a [`capability`];
//! - a plugin's provider object is made with `TD_CanDowncast`, so its capability calls
//!   find their own provider by a checked downcast.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::library::RootModule;
use abi_stable::nonexhaustive_enum::NonExhaustive;
use abi_stable::sabi_trait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

use crate::error::{ErrorKind, ErrorKind_NE, StageError};
use crate::file::File;
use crate::provider::{Context, Job, Provider};
use crate::settings::Settings;

pub mod capability;
pub mod v0_1_0;

/// What the export macro needs from abi_stable, so that plugin crates depend on
/// `plugin-api` alone.
#[doc(hidden)]
pub mod reexports {
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
    pub use abi_stable::std_types::{RResult, RSlice, RStr};
}

/// The name of the symbol every plugin exports (abi_stable's mangled root-module
/// loader name). The host checks for it before `dlopen`.
pub const ROOT_MODULE_SYMBOL: &str = abi_stable::library::ROOT_MODULE_LOADER_NAME;

/// An error crossing the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiError {
    kind: ErrorKind_NE,
    message: RString,
}

impl From<StageError> for AbiError {
    fn from(e: StageError) -> AbiError {
        AbiError {
            kind: NonExhaustive::new(e.kind()),
            message: e.message().into(),
        }
    }
}

impl From<AbiError> for StageError {
    fn from(e: AbiError) -> StageError {
        // A kind this build does not know (added by a newer plugin-api) reads as Other.
        let kind = e.kind.as_enum().map_or(ErrorKind::Other, |k| *k);
        StageError::new(kind, e.message.into_string())
    }
}

/// The host's side of a call: logger, progress sink and cancellation flag.
#[sabi_trait]
pub trait HostServices: Send + Sync {
    /// Logs `message` at a [`LogLevel`](crate::LogLevel) given as its `u8` value, or
    /// sends a notice ([`NOTICE_CACHED`]).
    fn log(&self, level: u8, message: RStr<'_>);
    /// Bytes done, and the total if known.
    fn progress(&self, done: u64, total: ROption<u64>);
    /// Whether the host asked the work to stop.
    #[sabi(last_prefix_field)]
    fn is_cancelled(&self) -> bool;
}

/// A `log` level that is a notice to the host, not a log line: the destination
/// already held the current file and the work moved no bytes. Added in 0.1.2 as a
/// level (levels from 128 up are notices) because `HostServices` is frozen. Since
/// 0.1.6 a plugin sends it only to a host without the `cached` capability
/// ([`capability::CachedV1`]); a host still honours it from older plugins, and a host
/// older than 0.1.2 logs it at trace level.
pub const NOTICE_CACHED: u8 = 128;

/// The host's services as an owned trait object.
pub type HostServicesBox = HostServices_TO<'static, RBox<()>>;

/// The context of one call, built by the host.
#[repr(C)]
#[derive(StableAbi)]
pub struct AbiContext {
    /// Executor label.
    pub executor: RString,
    /// Executor working directory.
    pub working_dir: RString,
    /// Provider instance name.
    pub instance: RString,
    /// Where the host wants the file placed.
    pub destination: RString,
    /// Deadline as milliseconds since the Unix epoch.
    pub deadline_unix_ms: ROption<u64>,
    /// Logger, progress sink, cancellation flag.
    pub services: HostServicesBox,
}

/// A separate job or in-task step, as an ABI object.
#[sabi_trait]
pub trait AbiJob: Send {
    /// Runs the work. A second call fails: a job runs once.
    #[sabi(last_prefix_field)]
    fn run(&mut self, ctx: &AbiContext) -> RResult<(), AbiError>;
}

/// A job as an owned trait object.
pub type AbiJobBox = AbiJob_TO<'static, RBox<()>>;

/// What a planning call returns: the file copy (maybe with `local_path` set) and the
/// work, if any.
#[repr(C)]
#[derive(StableAbi)]
pub struct AbiPlan {
    /// The provider's copy of the file.
    pub file: File,
    /// The job or step, or none when there is nothing to do.
    pub job: ROption<AbiJobBox>,
}

/// A provider instance, as an ABI object. Mirrors [`Provider`].
#[sabi_trait]
pub trait AbiProvider: Send + Sync {
    /// See [`Provider::can_stage_in`].
    fn can_stage_in(&self, file: &File) -> RResult<bool, AbiError>;
    /// See [`Provider::can_stage_out`].
    fn can_stage_out(&self, file: &File) -> RResult<bool, AbiError>;
    /// See [`Provider::stage_in`].
    fn stage_in(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError>;
    /// See [`Provider::stage_out`].
    fn stage_out(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError>;
    /// See [`Provider::replace_task`].
    fn replace_task(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError>;
    /// See [`Provider::replace_task_stage_out`].
    #[sabi(last_prefix_field)]
    fn replace_task_stage_out(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError>;
}

/// A provider instance as an owned trait object.
pub type ProviderBox = AbiProvider_TO<'static, RBox<()>>;

/// A plugin's metadata.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct PluginMetadata {
    /// The plugin's name, which configs refer to (`plugin = "..."`).
    pub name: RStr<'static>,
    /// The plugin's own version.
    pub version: RStr<'static>,
    /// The `plugin-api` version it was built against.
    pub api_version: RStr<'static>,
    /// The URL schemes it serves.
    pub schemes: RSlice<'static, RStr<'static>>,
    /// One line saying what it does.
    pub description: RStr<'static>,
}

/// The root module every plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Name, versions, schemes, description.
    pub metadata: PluginMetadata,
    /// Builds a provider instance from its settings (TOML text).
    #[sabi(last_prefix_field)]
    pub new_provider: extern "C" fn(settings: RStr<'_>) -> RResult<ProviderBox, AbiError>,
    /// Settings keys that hold secrets, masked wherever the host shows settings,
    /// whatever their names (added in plugin-api 0.1.1; older plugins lack it, and
    /// the accessor then returns `None`).
    #[sabi(missing_field(option))]
    pub secret_settings: RSlice<'static, RStr<'static>>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "stagehost_plugin";
    const NAME: &'static str = "stagehost_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

// ---------------------------------------------------------------------------------
// The plugin side: adapting an author's `Provider` to the ABI.

thread_local! {
    /// Where the last panic on this thread happened, recorded by the plugin's hook.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per plugin library) a panic hook that records the location instead
/// of printing to the host's stderr: the caught panic becomes an error line instead.
fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
        }));
    });
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string payload".to_owned()
    }
}

/// Runs `f`, turning a panic into an [`ErrorKind::Panicked`] error naming `call`.
pub(crate) fn guarded<T>(
    call: &str,
    f: impl FnOnce() -> Result<T, StageError>,
) -> RResult<T, AbiError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(err)) => RResult::RErr(err.into()),
        Err(payload) => {
            let location = PANIC_LOCATION.with(|slot| slot.borrow_mut().take());
            let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
            let msg = format!(
                "plugin panicked in {call}{at}: {}",
                panic_message(&*payload)
            );
            RResult::RErr(StageError::new(ErrorKind::Panicked, msg).into())
        }
    }
}

pub(crate) struct ProviderAdapter<P>(pub(crate) P);

struct JobAdapter(Option<Job>);

impl AbiJob for JobAdapter {
    fn run(&mut self, ctx: &AbiContext) -> RResult<(), AbiError> {
        let job = self.0.take();
        guarded("a staging job", move || match job {
            Some(job) => (job.0)(&Context::new(ctx)),
            None => Err(StageError::other("a staging job ran twice")),
        })
    }
}

/// A job as the ABI object the host runs.
fn job_box(job: Job) -> AbiJobBox {
    AbiJob_TO::from_value(JobAdapter(Some(job)), sabi_trait::TD_Opaque)
}

fn plan(file: File, job: Option<Job>) -> AbiPlan {
    AbiPlan {
        file,
        job: job.map(job_box).into(),
    }
}

type PlanningCall<P> = fn(&P, &Context<'_>, &mut File) -> Result<Option<Job>, StageError>;

impl<P: Provider> ProviderAdapter<P> {
    fn planning(
        &self,
        name: &str,
        call: PlanningCall<P>,
        ctx: &AbiContext,
        mut file: File,
    ) -> RResult<AbiPlan, AbiError> {
        // The file stays in this frame (the guarded call borrows it): a `File` is
        // moved as few times as possible on a path taken for every file.
        match guarded(name, || call(&self.0, &Context::new(ctx), &mut file)) {
            RResult::ROk(job) => RResult::ROk(plan(file, job)),
            RResult::RErr(e) => RResult::RErr(e),
        }
    }
}

impl<P: Provider> AbiProvider for ProviderAdapter<P> {
    fn can_stage_in(&self, file: &File) -> RResult<bool, AbiError> {
        guarded("can_stage_in", || self.0.try_can_stage_in(file))
    }
    fn can_stage_out(&self, file: &File) -> RResult<bool, AbiError> {
        guarded("can_stage_out", || self.0.try_can_stage_out(file))
    }
    fn stage_in(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError> {
        self.planning("stage_in", P::stage_in, ctx, file)
    }
    fn stage_out(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError> {
        self.planning("stage_out", P::stage_out, ctx, file)
    }
    fn replace_task(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError> {
        self.planning("replace_task", P::replace_task, ctx, file)
    }
    fn replace_task_stage_out(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError> {
        self.planning(
            "replace_task_stage_out",
            P::replace_task_stage_out,
            ctx,
            file,
        )
    }
}

/// The constructor the export macro puts in the root module: refuses, with one line,
/// when the host lacks a capability in `requires_host` (an older host never calls
/// [`capability::CapabilityModule::accept_host`], so it lacks them all).
#[doc(hidden)]
pub fn construct_provider<P: Provider>(
    settings: RStr<'_>,
    requires_host: &[capability::CapabilityId],
) -> RResult<ProviderBox, AbiError> {
    install_quiet_panic_hook();
    guarded("the provider constructor", || {
        if let Some(missing) = capability::missing_host_capabilities(requires_host) {
            return Err(StageError::other(missing));
        }
        let provider = P::new(&Settings::from_toml(settings.as_str()))?;
        Ok(AbiProvider_TO::from_value(
            ProviderAdapter(provider),
            sabi_trait::TD_CanDowncast,
        ))
    })
}

/// Builds the root module; called once per library by the exported loader.
#[doc(hidden)]
pub fn plugin_module(
    metadata: PluginMetadata,
    new_provider: extern "C" fn(settings: RStr<'_>) -> RResult<ProviderBox, AbiError>,
    secret_settings: RSlice<'static, RStr<'static>>,
) -> PluginModRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginMod {
        metadata,
        new_provider,
        secret_settings,
    }
    .leak_into_prefix()
}

/// This crate's version: what a plugin records as the `plugin-api` it was built
/// against.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Makes the crate that invokes it a stagehost plugin: exports the root module for
/// `provider` (a type implementing [`Provider`](crate::Provider)) with its metadata.
/// Invoke it once, at the crate root of a `cdylib` crate.
///
/// Optional last fields, in this order:
/// - `secret_settings: ["sas", ...]` names settings keys that hold secrets: the host
///   masks their values (`config show`, error lines) whatever their names. Keys that
///   look secret (`password`, `token`, `apiKey`, ... see
///   [`is_secret_name`](crate::display::is_secret_name)) are masked without it.
/// - `capabilities: [stat, list]` offers [capabilities](crate::capability) the
///   provider implements (`stat` needs [`Stat`](crate::capability::Stat), `list`
///   needs [`List`](crate::capability::List), `schemes` needs
///   [`Schemes`](crate::capability::Schemes)).
/// - `requires_host: [cached]` names host capabilities the plugin cannot work
///   without: a host that lacks one refuses the plugin with one line naming it.
///
/// ```
/// use stagehost_plugin_api::{File, Provider, Settings, StageError};
///
/// pub struct MyProvider;
/// impl Provider for MyProvider {
///     fn new(_settings: &Settings) -> Result<Self, StageError> {
///         Ok(MyProvider)
///     }
///     fn can_stage_in(&self, file: &File) -> bool {
///         file.scheme() == "my-scheme"
///     }
/// }
///
/// stagehost_plugin_api::export_provider! {
///     provider: MyProvider,
///     name: "my-scheme",
///     schemes: ["my-scheme"],
///     description: "Stages my-scheme:// URLs",
/// }
/// ```
/// The plugin's version is its crate's `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! export_provider {
    (
        provider: $provider:ty,
        name: $name:expr,
        schemes: [$($scheme:expr),* $(,)?],
        description: $description:expr
        $(, secret_settings: [$($secret:expr),* $(,)?])?
        $(, capabilities: [$($capability:ident),* $(,)?])?
        $(, requires_host: [$($required:ident),* $(,)?])? $(,)?
    ) => {
        #[doc(hidden)]
        const _STAGEHOST_REQUIRES_HOST: &[$crate::abi::capability::CapabilityId] =
            &[$($($crate::abi::capability::require::$required),*)?];

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::abi::reexports::LibHeader = {
            use $crate::abi::reexports::{RResult, RSlice, RStr};
            static SCHEMES: &[RStr<'static>] = &[$(RStr::from_str($scheme)),*];
            static SECRETS: &[RStr<'static>] = &[$($(RStr::from_str($secret)),*)?];
            extern "C" fn new_provider(
                settings: RStr<'_>,
            ) -> RResult<$crate::abi::ProviderBox, $crate::abi::AbiError> {
                $crate::abi::construct_provider::<$provider>(settings, _STAGEHOST_REQUIRES_HOST)
            }
            fn module() -> $crate::abi::PluginModRef {
                $crate::abi::plugin_module(
                    $crate::abi::PluginMetadata {
                        name: RStr::from_str($name),
                        version: RStr::from_str(env!("CARGO_PKG_VERSION")),
                        api_version: RStr::from_str($crate::abi::API_VERSION),
                        schemes: RSlice::from_slice(SCHEMES),
                        description: RStr::from_str($description),
                    },
                    new_provider,
                    RSlice::from_slice(SECRETS),
                )
            }
            extern "C" fn load_root_module() -> $crate::abi::reexports::RootModuleResult {
                $crate::abi::reexports::__call_root_module_loader(module)
            }
            // SAFETY: `load_root_module` returns the prefix of `PluginModRef`, erased by
            // abi_stable's own loader shim, exactly as `#[export_root_module]` does.
            unsafe {
                $crate::abi::reexports::LibHeader::from_constructor::<$crate::abi::PluginModRef>(
                    load_root_module,
                    $crate::abi::reexports::CheckTypeLayout::Yes,
                )
            }
        };

        /// The plugin's capabilities (see `stagehost_plugin_api::abi::capability`).
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn stagehost_plugin_capabilities(
        ) -> $crate::abi::capability::CapabilityExport {
            fn capabilities() -> (
                ::std::vec::Vec<$crate::abi::capability::Capability>,
                ::std::vec::Vec<$crate::abi::capability::CapabilityId>,
            ) {
                (
                    ::std::vec![
                        $crate::abi::capability::offer::planning::<$provider>()
                        $($(, $crate::abi::capability::offer::$capability::<$provider>())*)?
                    ],
                    _STAGEHOST_REQUIRES_HOST.to_vec(),
                )
            }
            $crate::abi::capability::capability_export(capabilities)
        }
    };
}
