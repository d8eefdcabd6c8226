//! Capabilities across the boundary: how the ABI grows without changing a layout that
//! a released plugin or host was checked with.
//!
//! abi_stable checks a loaded library's types against the host's and refuses the
//! library when the host's side has more: a prefix type (the root module, a trait's
//! method table) with more fields, a non-exhaustive enum with more variants. So a field
//! or method added to the core types would shut out every plugin built before it. The
//! core types (`PluginMod`, `AbiProvider`, `HostServices`, `AbiContext`, `File`,
//! `ErrorKind`) are therefore frozen, and everything new is a capability:
//!
//! - a plugin exports, beside its root module, the symbol [`EXPORT_SYMBOL`]: a function
//!   returning a [`CapabilityExport`] (a magic number, then the layout of
//!   [`CapabilityModule`] and the module itself), which a host that does not know
//!   capabilities never looks for;
//! - the module lists the capabilities the plugin offers and those it requires of the
//!   host, and takes the host's own capabilities ([`CapabilityModule::accept_host`]),
//!   called once, at load, before any instance is built;
//! - each [`Capability`] is a name, a version, the layout of its table of `extern "C"`
//!   functions and the table; the side that uses a table first checks its layout
//!   against its own definition, so a table is only ever called through the type it was
//!   made with;
//! - a table type, once released, never changes ([`CapabilityTable`]); growth is a new
//!   version (a new table type) or a new name.
//!
//! A plugin's capability calls take the instance they are about as a `&ProviderBox`;
//! the plugin finds its own provider in it by a checked downcast, so a box from another
//! library is an error, never a misread.

use std::ffi::c_void;
use std::sync::OnceLock;

use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec};
use abi_stable::type_layout::TypeLayout;
use abi_stable::StableAbi;

use super::{guarded, AbiContext, AbiError, AbiJobBox, ProviderAdapter, ProviderBox};
use crate::capability::{Entry, EntryKind, List, Schemes, Stat};
use crate::error::StageError;
use crate::file::File;
use crate::provider::{Context, Provider};

/// The symbol a plugin exports for its capabilities: `extern "C" fn() ->
/// CapabilityExport`.
pub const EXPORT_SYMBOL: &str = "stagehost_plugin_capabilities";

/// [`EXPORT_SYMBOL`] with the NUL a symbol lookup needs.
pub const EXPORT_SYMBOL_WITH_NUL: &str = "stagehost_plugin_capabilities\0";

/// The first word of a [`CapabilityExport`]: `stgcap01` in ASCII.
pub const EXPORT_MAGIC: u64 = u64::from_be_bytes(*b"stgcap01");

/// What [`EXPORT_SYMBOL`] returns. Its own shape is fixed by [`EXPORT_MAGIC`]; the
/// module's is checked against `layout`. The pointers are raw so that a host can refuse
/// a null one instead of trusting it.
#[repr(C)]
pub struct CapabilityExport {
    /// [`EXPORT_MAGIC`].
    pub magic: u64,
    /// The layout of [`CapabilityModule`] as the plugin was built with it.
    pub layout: *const TypeLayout,
    /// The module.
    pub module: *const CapabilityModule,
}

/// A capability's name and version.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapabilityId {
    /// Its name: `stat`, `list`, `cached`, or a third party's dotted name.
    pub name: RStr<'static>,
    /// Its version, from 1.
    pub version: u32,
}

impl CapabilityId {
    /// Whether the name is one a capability may have: 1 to 64 ASCII letters, digits,
    /// `-`, `_` and `.` (so it can be printed and compared as it is). Read as bytes: a
    /// name from a library is not trusted to be UTF-8.
    pub fn has_valid_name(&self) -> bool {
        let bytes = self.name.as_rslice();
        let bytes = bytes.as_slice();
        (1..=64).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }
}

impl std::fmt::Display for CapabilityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.version)
    }
}

/// One capability on offer: its id, the layout of its table, and the table.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct Capability {
    /// Name and version.
    pub id: CapabilityId,
    /// The layout of the table's type.
    pub layout: &'static TypeLayout,
    /// The table: a `&'static` of the type `layout` describes.
    pub table: *const c_void,
}

// SAFETY: a table is an immutable `'static` struct of function pointers.
unsafe impl Send for Capability {}
// SAFETY: as above.
unsafe impl Sync for Capability {}

/// A table of `extern "C"` functions that is one version of one capability.
///
/// # Safety
/// `NAME` and `VERSION` name this type and no other, in every build: once released, the
/// type never changes (the same fields, in the same order, with the same types).
pub unsafe trait CapabilityTable: StableAbi + Sized + 'static {
    /// The capability's name.
    const NAME: &'static str;
    /// The version this table is.
    const VERSION: u32;
    /// Its id.
    const ID: CapabilityId = CapabilityId {
        name: RStr::from_str(Self::NAME),
        version: Self::VERSION,
    };
    /// Offers `table` as this capability.
    fn offer(table: &'static Self) -> Capability {
        Capability {
            id: Self::ID,
            layout: Self::LAYOUT,
            table: (table as *const Self).cast(),
        }
    }
    /// This capability's table among `offered`, checked against this type's layout:
    /// `Ok(None)` when it is not offered, `Err` (one line) when a table with its id has
    /// another layout.
    fn find(offered: &[Capability]) -> Result<Option<&'static Self>, String> {
        let Some(cap) = offered.iter().find(|c| {
            c.id.name.as_rslice().as_slice() == Self::NAME.as_bytes()
                && c.id.version == Self::VERSION
        }) else {
            return Ok(None);
        };
        check_layout_compatibility(Self::LAYOUT, cap.layout).map_err(|_| {
            format!(
                "its capability {} does not have the layout that name and version were released with",
                Self::ID
            )
        })?;
        // SAFETY: the table's layout was just checked against this type's.
        Ok(Some(unsafe { &*cap.table.cast::<Self>() }))
    }
}

/// The capability module a plugin exports. Frozen: what grows is the lists.
#[repr(C)]
#[derive(StableAbi)]
pub struct CapabilityModule {
    /// The capabilities the plugin offers.
    pub offered: RSlice<'static, Capability>,
    /// The host capabilities the plugin cannot work without.
    pub requires_host: RSlice<'static, CapabilityId>,
    /// Hands the plugin the host's capabilities. The host calls it once, at load, before
    /// it builds any instance; the slice lives as long as the process.
    pub accept_host: extern "C" fn(host: RSlice<'static, Capability>),
}

// ---------------------------------------------------------------------------------
// The tables stagehost defines. Frozen once released.

/// An entry as the ABI carries it (see [`Entry`]).
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct AbiEntry {
    /// See [`Entry::name`].
    pub name: RString,
    /// 0 a file, 1 a directory, anything else other.
    pub kind: u8,
    /// Size in bytes.
    pub size: ROption<u64>,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_unix_ns: ROption<i64>,
    /// See [`Entry::validator`].
    pub validator: RString,
}

impl From<Entry> for AbiEntry {
    fn from(e: Entry) -> AbiEntry {
        let modified = e.modified_unix_ns();
        AbiEntry {
            kind: match e.kind {
                EntryKind::File => 0,
                EntryKind::Directory => 1,
                EntryKind::Other => 2,
            },
            name: e.name.into(),
            size: e.size.into(),
            modified_unix_ns: modified.into(),
            validator: e.validator.into(),
        }
    }
}

impl TryFrom<AbiEntry> for Entry {
    type Error = StageError;
    /// The entry, or an error when its name or validator is not UTF-8 (a library's
    /// strings are not trusted to be).
    fn try_from(e: AbiEntry) -> Result<Entry, StageError> {
        let text = |s: RString, what: &str| {
            String::from_utf8(s.into_bytes().into_vec()).map_err(|bad| {
                StageError::new(
                    crate::ErrorKind::Integrity,
                    format!(
                        "the provider answered with a {what} that is not UTF-8 ({})",
                        crate::display::escape(&String::from_utf8_lossy(bad.as_bytes()))
                    ),
                )
            })
        };
        Ok(Entry {
            name: text(e.name, "name")?,
            kind: match e.kind {
                0 => EntryKind::File,
                1 => EntryKind::Directory,
                _ => EntryKind::Other,
            },
            size: e.size.into_option(),
            modified: e
                .modified_unix_ns
                .into_option()
                .map(Entry::modified_from_unix_ns),
            validator: text(e.validator, "validator")?,
        })
    }
}

/// `stat`, version 1 (plugin → host): see [`Stat`].
#[repr(C)]
#[derive(StableAbi)]
pub struct StatV1 {
    /// [`Stat::stat`] on the instance `provider`.
    pub stat: extern "C" fn(
        provider: &ProviderBox,
        ctx: &AbiContext,
        file: &File,
    ) -> RResult<ROption<AbiEntry>, AbiError>,
}

// SAFETY: released in plugin-api 0.1.6; never changed.
unsafe impl CapabilityTable for StatV1 {
    const NAME: &'static str = "stat";
    const VERSION: u32 = 1;
}

/// `list`, version 1 (plugin → host): see [`List`].
#[repr(C)]
#[derive(StableAbi)]
pub struct ListV1 {
    /// [`List::list`] on the instance `provider`.
    pub list: extern "C" fn(
        provider: &ProviderBox,
        ctx: &AbiContext,
        dir: &File,
        recursive: bool,
    ) -> RResult<RVec<AbiEntry>, AbiError>,
}

// SAFETY: released in plugin-api 0.1.6; never changed.
unsafe impl CapabilityTable for ListV1 {
    const NAME: &'static str = "list";
    const VERSION: u32 = 1;
}

/// `cached`, version 1 (host → plugin): see
/// [`Context::cached`](crate::Context::cached). Replaces the
/// [`NOTICE_CACHED`](super::NOTICE_CACHED) log level, which a plugin still sends to a
/// host that does not offer this.
#[repr(C)]
#[derive(StableAbi)]
pub struct CachedV1 {
    /// The call `ctx` found the destination already holding the current file.
    pub cached: extern "C" fn(ctx: &AbiContext),
}

// SAFETY: released in plugin-api 0.1.6; never changed.
unsafe impl CapabilityTable for CachedV1 {
    const NAME: &'static str = "cached";
    const VERSION: u32 = 1;
}

/// `schemes`, version 1 (plugin → host): see [`Schemes`].
#[repr(C)]
#[derive(StableAbi)]
pub struct SchemesV1 {
    /// The schemes the instance `provider` ever claims.
    pub schemes: extern "C" fn(provider: &ProviderBox) -> RResult<RVec<RString>, AbiError>,
}

// SAFETY: released in plugin-api 0.1.7; never changed.
unsafe impl CapabilityTable for SchemesV1 {
    const NAME: &'static str = "schemes";
    const VERSION: u32 = 1;
}

/// `planning`, version 1 (plugin → host): the four planning calls with the file lent
/// to the plugin (`&mut File`) instead of moved into the call and back out in an
/// [`AbiPlan`](super::AbiPlan). The host plans every file a task names through them;
/// a `File` is six strings, and moving it across the boundary twice per call cost
/// more than the calls themselves. Every plugin built with
/// [`export_provider!`](crate::export_provider) from plugin-api 0.1.7 offers it; the
/// host falls back to the frozen calls for older ones.
#[repr(C)]
#[derive(StableAbi)]
pub struct PlanningV1 {
    /// Runs planning call `call` ([`PLAN_STAGE_IN`], [`PLAN_STAGE_OUT`],
    /// [`PLAN_REPLACE_TASK`], [`PLAN_REPLACE_TASK_STAGE_OUT`]) of `provider` on `file`,
    /// which the plugin changes in place; returns the job, if any. Another number is
    /// an error.
    pub plan: extern "C" fn(
        provider: &ProviderBox,
        call: u8,
        ctx: &AbiContext,
        file: &mut File,
    ) -> RResult<ROption<AbiJobBox>, AbiError>,
}

// SAFETY: released in plugin-api 0.1.7; never changed.
unsafe impl CapabilityTable for PlanningV1 {
    const NAME: &'static str = "planning";
    const VERSION: u32 = 1;
}

/// [`PlanningV1`]'s `call` for `stage_in`.
pub const PLAN_STAGE_IN: u8 = 0;
/// [`PlanningV1`]'s `call` for `stage_out`.
pub const PLAN_STAGE_OUT: u8 = 1;
/// [`PlanningV1`]'s `call` for `replace_task`.
pub const PLAN_REPLACE_TASK: u8 = 2;
/// [`PlanningV1`]'s `call` for `replace_task_stage_out`.
pub const PLAN_REPLACE_TASK_STAGE_OUT: u8 = 3;

// ---------------------------------------------------------------------------------
// The plugin side.

/// The host's capabilities as this plugin library received them, checked.
#[derive(Default)]
pub(crate) struct HostTables {
    pub(crate) cached: Option<&'static CachedV1>,
    offered: Vec<CapabilityId>,
}

static HOST: OnceLock<HostTables> = OnceLock::new();

/// The host's capabilities; empty when the host offered none (an older host, or a
/// call before load).
pub(crate) fn host() -> &'static HostTables {
    static NONE: OnceLock<HostTables> = OnceLock::new();
    HOST.get()
        .unwrap_or_else(|| NONE.get_or_init(HostTables::default))
}

/// Records the host's capabilities (the first call wins: one host per process).
pub fn accept_host(host: &'static [Capability]) {
    let _ = HOST.set(HostTables {
        // A table with a wrong layout is treated as not offered.
        cached: CachedV1::find(host).ok().flatten(),
        offered: host.iter().map(|c| c.id).collect(),
    });
}

extern "C" fn accept_host_abi(host: RSlice<'static, Capability>) {
    // Nothing here can panic but an allocation failure, which aborts anyway.
    accept_host(host.as_slice());
}

/// Whether the host that loaded this plugin offers capability `name` at `version`
/// (false in a host older than plugin-api 0.1.6, which offers none).
pub fn host_offers(name: &str, version: u32) -> bool {
    host()
        .offered
        .iter()
        .any(|c| c.name.as_rslice().as_slice() == name.as_bytes() && c.version == version)
}

/// The required host capabilities the host did not offer, as one line; `None` when
/// all are there.
pub(crate) fn missing_host_capabilities(required: &[CapabilityId]) -> Option<String> {
    let offered = &host().offered;
    let missing: Vec<String> = required
        .iter()
        .filter(|r| !offered.contains(r))
        .map(|r| r.to_string())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "this plugin needs the host capabilit{} {}, which this stagehost does not offer (it is older than the plugin-api the plugin was built with); upgrade stagehost",
            if missing.len() == 1 { "y" } else { "ies" },
            missing.join(", ")
        )
    })
}

/// The plugin's own provider inside `provider`, or an error when the box was made by
/// another library.
fn own<P: Provider>(provider: &ProviderBox) -> Result<&P, StageError> {
    provider
        .obj
        .downcast_as::<ProviderAdapter<P>>()
        .map(|a| &a.0)
        .map_err(|_| StageError::other("a capability was called with another plugin's provider"))
}

extern "C" fn stat_v1<P: Stat>(
    provider: &ProviderBox,
    ctx: &AbiContext,
    file: &File,
) -> RResult<ROption<AbiEntry>, AbiError> {
    guarded("stat", || {
        let entry = own::<P>(provider)?.stat(&Context::new(ctx), file)?;
        Ok(entry.map(AbiEntry::from).into())
    })
}

extern "C" fn list_v1<P: List>(
    provider: &ProviderBox,
    ctx: &AbiContext,
    dir: &File,
    recursive: bool,
) -> RResult<RVec<AbiEntry>, AbiError> {
    guarded("list", || {
        let entries = own::<P>(provider)?.list(&Context::new(ctx), dir, recursive)?;
        Ok(entries.into_iter().map(AbiEntry::from).collect())
    })
}

extern "C" fn schemes_v1<P: Schemes>(provider: &ProviderBox) -> RResult<RVec<RString>, AbiError> {
    guarded("schemes", || {
        Ok(own::<P>(provider)?
            .schemes()
            .into_iter()
            .map(RString::from)
            .collect())
    })
}

extern "C" fn planning_v1<P: Provider>(
    provider: &ProviderBox,
    call: u8,
    ctx: &AbiContext,
    file: &mut File,
) -> RResult<ROption<AbiJobBox>, AbiError> {
    type Call<P> = fn(&P, &Context<'_>, &mut File) -> Result<Option<crate::Job>, StageError>;
    let (name, f): (&str, Call<P>) = match call {
        PLAN_STAGE_IN => ("stage_in", P::stage_in),
        PLAN_STAGE_OUT => ("stage_out", P::stage_out),
        PLAN_REPLACE_TASK => ("replace_task", P::replace_task),
        PLAN_REPLACE_TASK_STAGE_OUT => ("replace_task_stage_out", P::replace_task_stage_out),
        other => {
            return RResult::RErr(
                StageError::other(format!("no planning call numbered {other}")).into(),
            )
        }
    };
    guarded(name, || {
        let job = f(own::<P>(provider)?, &Context::new(ctx), file)?;
        Ok(job.map(super::job_box).into())
    })
}

struct PlanningOf<P>(std::marker::PhantomData<P>);
impl<P: Provider> PlanningOf<P> {
    const TABLE: PlanningV1 = PlanningV1 {
        plan: planning_v1::<P>,
    };
}

struct StatOf<P>(std::marker::PhantomData<P>);
impl<P: Stat> StatOf<P> {
    const TABLE: StatV1 = StatV1 { stat: stat_v1::<P> };
}

struct SchemesOf<P>(std::marker::PhantomData<P>);
impl<P: Schemes> SchemesOf<P> {
    const TABLE: SchemesV1 = SchemesV1 {
        schemes: schemes_v1::<P>,
    };
}

struct ListOf<P>(std::marker::PhantomData<P>);
impl<P: List> ListOf<P> {
    const TABLE: ListV1 = ListV1 { list: list_v1::<P> };
}

/// What [`export_provider!`](crate::export_provider)'s `capabilities: [...]` expands
/// to: one function per capability a plugin can offer, each returning it for `P`.
#[doc(hidden)]
pub mod offer {
    use super::*;
    /// `stat` version 1 for `P`.
    pub fn stat<P: Stat>() -> Capability {
        StatV1::offer(&StatOf::<P>::TABLE)
    }
    /// `list` version 1 for `P`.
    pub fn list<P: List>() -> Capability {
        ListV1::offer(&ListOf::<P>::TABLE)
    }
    /// `schemes` version 1 for `P`.
    pub fn schemes<P: Schemes>() -> Capability {
        SchemesV1::offer(&SchemesOf::<P>::TABLE)
    }
    /// `planning` version 1 for `P`: offered by every plugin (the export macro adds it).
    pub fn planning<P: Provider>() -> Capability {
        PlanningV1::offer(&PlanningOf::<P>::TABLE)
    }
}

/// What `requires_host: [...]` expands to: the id of each host capability a plugin
/// can require.
#[doc(hidden)]
#[allow(non_upper_case_globals)]
pub mod require {
    use super::*;
    /// `cached` version 1.
    pub const cached: CapabilityId = CachedV1::ID;
}

/// Builds the capability export from what `capabilities` returns (once per library,
/// however often the exported symbol is called).
#[doc(hidden)]
pub fn capability_export(
    capabilities: fn() -> (Vec<Capability>, Vec<CapabilityId>),
) -> CapabilityExport {
    static MODULE: OnceLock<&'static CapabilityModule> = OnceLock::new();
    let module = *MODULE.get_or_init(|| {
        let (offered, requires_host) = capabilities();
        Box::leak(Box::new(CapabilityModule {
            offered: RSlice::from_slice(Box::leak(offered.into_boxed_slice())),
            requires_host: RSlice::from_slice(Box::leak(requires_host.into_boxed_slice())),
            accept_host: accept_host_abi,
        }))
    });
    CapabilityExport {
        magic: EXPORT_MAGIC,
        layout: <CapabilityModule as StableAbi>::LAYOUT,
        module: module as *const CapabilityModule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn no_op(_: &AbiContext) {}
    static CACHED: CachedV1 = CachedV1 { cached: no_op };

    #[test]
    fn a_table_is_found_by_name_and_version_and_used_only_with_its_own_layout() {
        let offered = [CachedV1::offer(&CACHED)];
        let found = CachedV1::find(&offered).unwrap().unwrap();
        assert!(std::ptr::eq(found, &CACHED));
        // Another version, or another name, is not offered.
        assert!(StatV1::find(&offered).unwrap().is_none());
        let v2 = [Capability {
            id: CapabilityId {
                name: RStr::from_str("cached"),
                version: 2,
            },
            ..offered[0]
        }];
        assert!(CachedV1::find(&v2).unwrap().is_none());
        // A table offered under an id whose released layout it does not have is refused.
        let lying = [Capability {
            id: StatV1::ID,
            ..offered[0]
        }];
        assert_eq!(
            StatV1::find(&lying).err().as_deref(),
            Some("its capability stat/1 does not have the layout that name and version were released with")
        );
    }

    #[test]
    fn a_missing_required_host_capability_is_named() {
        // No host offers version 99 (whether or not a test host offered its own).
        let future = CapabilityId {
            name: RStr::from_str("cached"),
            version: 99,
        };
        let line = missing_host_capabilities(&[future]).unwrap();
        assert!(line.starts_with("this plugin needs the host capability cached/99, which"));
        assert_eq!(missing_host_capabilities(&[]), None);
    }

    #[cfg(feature = "testing")]
    mod planning {
        use super::*;
        use crate::testing::TestHost;
        use crate::{Job, Settings};
        use abi_stable::std_types::RStr;

        /// Places the file at the host's destination on `stage_in`; panics in
        /// `replace_task`.
        struct Places;
        impl Provider for Places {
            fn new(_: &Settings) -> Result<Self, StageError> {
                Ok(Places)
            }
            fn stage_in(
                &self,
                ctx: &Context<'_>,
                file: &mut File,
            ) -> Result<Option<Job>, StageError> {
                file.set_local_path(ctx.destination());
                Ok(Some(Job::new(|_| Ok(()))))
            }
            fn replace_task(
                &self,
                _: &Context<'_>,
                _: &mut File,
            ) -> Result<Option<Job>, StageError> {
                panic!("replace_task gave up");
            }
        }
        struct Other;
        impl Provider for Other {
            fn new(_: &Settings) -> Result<Self, StageError> {
                Ok(Other)
            }
        }

        /// The error of a call that should have failed.
        fn failed(r: RResult<ROption<AbiJobBox>, AbiError>) -> StageError {
            match r {
                RResult::RErr(e) => e.into(),
                RResult::ROk(_) => panic!("the call succeeded"),
            }
        }

        fn boxed<P: Provider>() -> ProviderBox {
            crate::abi::construct_provider::<P>(RStr::from_str(""), &[])
                .into_result()
                .unwrap_or_else(|_| panic!("constructed"))
        }

        #[test]
        fn a_planning_call_changes_the_lent_file_and_a_panic_or_a_wrong_call_is_an_error() {
            let host = TestHost::new();
            let provider = boxed::<Places>();
            let plan = PlanningOf::<Places>::TABLE.plan;
            let mut file = File::parse("x://h/a.txt").unwrap();
            let ctx = host.context(&file);
            let job = plan(&provider, PLAN_STAGE_IN, &ctx.abi, &mut file).unwrap();
            assert!(job.is_some());
            assert_eq!(
                file.local_path(),
                Some(host.working_dir().join("a.txt").as_path())
            );
            assert_eq!(file.url(), "x://h/a.txt");
            // The defaults: nothing to do, the file as it was.
            let before = file.clone();
            let job = plan(&provider, PLAN_STAGE_OUT, &ctx.abi, &mut file).unwrap();
            assert!(job.is_none());
            assert_eq!(file, before);

            let e = failed(plan(&provider, PLAN_REPLACE_TASK, &ctx.abi, &mut file));
            assert_eq!(e.kind(), crate::ErrorKind::Panicked);
            assert!(
                e.message().starts_with("plugin panicked in replace_task")
                    && e.message().ends_with("replace_task gave up"),
                "{}",
                e.message()
            );
            let e = failed(plan(&provider, 9, &ctx.abi, &mut file));
            assert_eq!(e.message(), "no planning call numbered 9");
            // A box made for another provider type is refused, never misread.
            let e = failed(plan(&boxed::<Other>(), PLAN_STAGE_IN, &ctx.abi, &mut file));
            assert_eq!(
                e.message(),
                "a capability was called with another plugin's provider"
            );
        }
    }
}
