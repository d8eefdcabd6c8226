//! The root module's layout as plugin-api 0.1.0 released it, kept only so that a host
//! can check a plugin built against 0.1.0. Nothing here is ever called.
//!
//! Two things grew after 0.1.0: the root module gained `secret_settings` (0.1.1) and
//! [`ErrorKind`](crate::ErrorKind) gained `InvalidSettings` (0.1.1). abi_stable refuses
//! a library whose root module has fewer fields, or whose non-exhaustive enum has fewer
//! variants, than the host's types, so a host checks a library that fails the current
//! layout against this one as well. A library that passes it is used through the
//! current types: the field it lacks reads as missing (`secret_settings()` is `None`)
//! and the kinds it sends are a subset of today's.
//!
//! This copy is frozen. The core types never grow again (see
//! [`capability`](super::capability)), so no other version needs one.

#![allow(missing_docs, dead_code)]

use abi_stable::library::RootModule;
use abi_stable::sabi_trait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, ROption, RResult, RStr, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

use super::{AbiContext, PluginMetadata};
use crate::file::File;

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[sabi(kind(WithNonExhaustive(size = [u8; 4], traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum ErrorKind {
    NotFound,
    Permission,
    Transient,
    Integrity,
    InvalidUrl,
    TimedOut,
    Cancelled,
    Panicked,
    Other,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiError {
    kind: ErrorKind_NE,
    message: RString,
}

#[sabi_trait]
pub trait AbiJob: Send {
    #[sabi(last_prefix_field)]
    fn run(&mut self, ctx: &AbiContext) -> RResult<(), AbiError>;
}

// The aliases are part of the layout: the derive records lifetimes as written.
pub type AbiJobBox = AbiJob_TO<'static, RBox<()>>;

#[repr(C)]
#[derive(StableAbi)]
pub struct AbiPlan {
    pub file: File,
    pub job: ROption<AbiJobBox>,
}

#[sabi_trait]
pub trait AbiProvider: Send + Sync {
    fn can_stage_in(&self, file: &File) -> RResult<bool, AbiError>;
    fn can_stage_out(&self, file: &File) -> RResult<bool, AbiError>;
    fn stage_in(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError>;
    fn stage_out(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError>;
    fn replace_task(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError>;
    #[sabi(last_prefix_field)]
    fn replace_task_stage_out(&self, ctx: &AbiContext, file: File) -> RResult<AbiPlan, AbiError>;
}

pub type ProviderBox = AbiProvider_TO<'static, RBox<()>>;

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    pub metadata: PluginMetadata,
    #[sabi(last_prefix_field)]
    pub new_provider: extern "C" fn(settings: RStr<'_>) -> RResult<ProviderBox, AbiError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "stagehost_plugin";
    const NAME: &'static str = "stagehost_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
