//! The staging interface of stagehost: what a provider plugin implements, and the
//! stable ABI the host loads it through.
//!
//! A provider decides, for each file of a task, whether it can stage it, and if so
//! plans the work: a **separate job** the host runs as a task of its own, or an
//! **in-task step** the host runs inside the task, just before or after its body. These
//! are the six calls of Parsl's `Staging` class, kept with Parsl's meaning; see
//! [`Provider`].
//!
//! You implement the plain Rust trait [`Provider`] and invoke [`export_provider!`]
//! once. You never write `extern "C"`, `RString` or `catch_unwind`: the macro exports
//! the root module the host looks for, and every call into your code is guarded, so a
//! panic becomes an error for that one file ([`ErrorKind::Panicked`]) and never takes
//! the host down.
//!
//! # Writing a provider, from an empty directory to a dropped-in plugin
//!
//! **1. `Cargo.toml`.** A provider is a `cdylib` crate that depends on this crate alone
//! (add `serde` if it has settings). Depend on it by version, `"0.1"`: a plugin built
//! against any 0.1.x loads in every host of the 0.1 line. (The crate packs for
//! crates.io; until it is published there, add `path` or `git` to the version.)
//!
//! ```toml
//! [package]
//! name = "stagehost-hello"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! stagehost-plugin-api = { version = "0.1", path = "../stagehost/plugin-api" }
//! # published: stagehost-plugin-api = "0.1"
//! serde = { version = "1", features = ["derive"] }
//!
//! # The test kit (step 4), for `cargo test` only:
//! [dev-dependencies]
//! stagehost-plugin-api = { version = "0.1", path = "../stagehost/plugin-api", features = ["testing"] }
//!
//! # A plugin crate outside a workspace says so:
//! [workspace]
//! ```
//!
//! **2. `src/lib.rs`.** This provider serves `hello:` URLs: `hello:///world.txt`
//! stages in as a file `world.txt` in the executor's working directory, holding a
//! greeting from its settings. The work runs as a separate staging job, written
//! atomically (a temporary name, synced, then renamed: see [`fs`]).
//!
//! ```
//! use std::io::Write;
//!
//! use serde::Deserialize;
//! use stagehost_plugin_api::fs::AtomicFile;
//! use stagehost_plugin_api::{Context, File, Job, Provider, Settings, StageError};
//!
//! /// The `settings = { ... }` table of a `[[provider]]` in the host's config.
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)] // a typo becomes an error with its line and column
//! struct HelloSettings {
//!     #[serde(default = "default_greeting")]
//!     greeting: String,
//! }
//!
//! fn default_greeting() -> String {
//!     "hello".to_owned()
//! }
//!
//! pub struct Hello {
//!     greeting: String,
//! }
//!
//! impl Provider for Hello {
//!     fn new(settings: &Settings) -> Result<Self, StageError> {
//!         let s: HelloSettings = settings.parse()?;
//!         Ok(Hello { greeting: s.greeting })
//!     }
//!
//!     // Pure and fast: the host asks this for every file, in the site's order.
//!     fn can_stage_in(&self, file: &File) -> bool {
//!         file.scheme() == "hello"
//!     }
//!
//!     // Say where the task will find the file, and hand back the work.
//!     fn stage_in(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
//!         let dest = ctx.destination().to_path_buf(); // <working_dir>/<filename> by default
//!         file.set_local_path(&dest);
//!         let body = format!("{}, {}\n", self.greeting, file.filename());
//!         Ok(Some(Job::new(move |ctx| {
//!             ctx.check()?; // cancelled or past the deadline?
//!             let mut out = AtomicFile::create(&dest)?;
//!             out.write_all(body.as_bytes())
//!                 .map_err(|e| StageError::io(format_args!("cannot write {}", dest.display()), &e))?;
//!             ctx.progress(body.len() as u64, Some(body.len() as u64));
//!             out.commit()
//!         })))
//!     }
//! }
//!
//! stagehost_plugin_api::export_provider! {
//!     provider: Hello,
//!     name: "hello",
//!     schemes: ["hello"],
//!     description: "Greets hello: URLs",
//! }
//! # fn main() {
//! #     // What the host does, in-process, to show the provider works:
//! #     let p = Hello::new(&Settings::from_toml("greeting = \"hi\"")).unwrap();
//! #     assert!(p.can_stage_in(&File::parse("hello:///world.txt").unwrap()));
//! #     assert!(!p.can_stage_in(&File::parse("/etc/hostname").unwrap()));
//! #     #[cfg(feature = "testing")]
//! #     {
//! #         let host = stagehost_plugin_api::testing::TestHost::new();
//! #         let staged = host.stage_in(&p, "hello:///world.txt").unwrap();
//! #         let text = std::fs::read_to_string(staged.file.filepath().unwrap()).unwrap();
//! #         assert_eq!(text, "hi, world.txt\n");
//! #     }
//! # }
//! ```
//!
//! **3. Build and drop it in.**
//!
//! ```sh
//! cargo build --release
//! mkdir -p ~/.local/share/stagehost/plugins
//! cp target/release/libstagehost_hello.so ~/.local/share/stagehost/plugins/
//! chmod go-w ~/.local/share/stagehost/plugins/libstagehost_hello.so
//! stagehost plugins list            # shows `hello`, loaded, appended to the default order
//! stagehost stage in hello:///world.txt
//! ```
//!
//! **4. Test it in-process.** With the `testing` feature (a dev-dependency, above),
//! [`testing::TestHost`] gives your calls the context the host would: a temporary
//! working directory, captured log lines and progress, cancellation and deadline
//! switches. It runs the planning calls and the jobs they return in the host's order:
//!
//! ```text
//! #[test]
//! fn stages_a_greeting() {
//!     let host = stagehost_plugin_api::testing::TestHost::new();
//!     let hello = Hello::new(&Settings::from_toml("greeting = \"hi\"")).unwrap();
//!     let staged = host.stage_in(&hello, "hello:///world.txt").unwrap();
//!     let text = std::fs::read_to_string(staged.file.filepath().unwrap()).unwrap();
//!     assert_eq!(text, "hi, world.txt\n");
//! }
//! ```
//!
//! (The walkthrough's doctest runs this very test when the feature is on, and the
//! [`testing`] module's own example is a doctest too.)
//!
//! The host finds the plugin with no config change: a plugin in a plugin directory that
//! no `[[provider]]` names gets an instance of its own (named after the plugin, with
//! empty settings) at the end of the default order. To give it settings or a place in
//! an executor's order, name it in the config:
//!
//! ```toml
//! [[provider]]
//! name = "greeter"
//! plugin = "hello"
//! version = "^0.1"
//! settings = { greeting = "good morning" }
//!
//! [executor.local]
//! staging = ["greeter", "file"]
//! ```
//!
//! The host refuses, with a one-line reason, a plugin file that is group- or
//! world-writable, in such a directory, owned by another user, built for another
//! architecture, or built against an incompatible `plugin-api` (Cargo's caret rule:
//! 0.1.x loads in a 0.1 host, 0.2 does not). A complete crate built this way lives in
//! the stagehost repository under `examples/data-provider`.
//!
//! # Beyond the six calls: capabilities
//!
//! The ABI the six calls travel over is frozen: a field added to it would shut out
//! every plugin built before (abi_stable refuses a library whose types are shorter
//! than the host's). What a provider can do beyond them, and what the host can do for
//! it, are [`capability`]s, each a name and a version: implement
//! [`capability::Stat`], [`capability::List`] or [`capability::Schemes`] (the only
//! schemes an instance claims, so the host asks it about no other file) and list them
//! in `export_provider!` (`capabilities: [stat, list, schemes]`). A released capability version
//! never changes; read [`capability`] for what one promises. A plugin built against a
//! newer plugin-api loads in an older host of the same release line and works without
//! the capabilities that host lacks, unless it lists them in `requires_host`, in which
//! case that host refuses it with one line naming them.
//!
//! # Rules of the contract
//!
//! - Each call gets a fresh copy of the task's [`File`]; set `local_path` on it to say
//!   where the task finds (stage-in) or writes (stage-out) the file. Use
//!   [`Context::destination`] unless you have a reason not to: it keeps two URLs with
//!   the same basename apart.
//! - Claiming a file and then having nothing to do is fine: the host does not ask the
//!   next provider (Parsl's rule).
//! - Return [`ErrorKind::Transient`] for failures worth retrying; the host retries
//!   only those (and [`ErrorKind::TimedOut`]).
//! - Calls run on the host's blocking threads. If you want async, keep a runtime of
//!   your own inside the plugin: the host's tokio runtime is not visible across the
//!   library boundary.
//! - Log through [`Context::log`]: a plugin's own `log`/`tracing` output goes nowhere.
//! - Write through [`fs::AtomicFile`] (or [`fs::copy_atomically`]) so that a failed or
//!   cancelled transfer leaves nothing at the destination.

#![warn(missing_docs)]
// abi_stable 0.11's derives expand trait impls inside consts.
#![allow(non_local_definitions)]

pub mod abi;
#[cfg(unix)]
pub mod calendar;
pub mod capability;
pub mod display;
mod error;
mod file;
pub mod fs;
pub mod landing;
pub mod net;
#[cfg(unix)]
pub mod process;
mod provider;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transfer;
pub mod validators;
#[cfg(unix)]
pub mod walk;
mod xattr;

pub use error::{ErrorKind, StageError};
pub use file::{redact_url, secret_query_values as file_secret_query_values, userinfo_span, File};
pub use provider::{Context, Job, LogLevel, Provider};
pub use settings::{env_secret, Settings, WorkPlace};
