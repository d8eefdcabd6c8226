//! Support for stagehost's end-to-end tests and benchmarks: the built `stagehost`
//! binary and plugin libraries, test-only plugins built into their own target
//! directories, and sandboxes that isolate a run from the machine's config and plugin
//! directories.
//!
//! Invariant: nothing here builds into `target/debug` or `target/release`, where the
//! default plugin discovery looks; test plugins go to `target/fixtures`,
//! `target/fixture-api-*` and `target/example-data-provider`.

pub mod bench;
pub mod ftpd;
pub mod httpd;
pub mod props;
pub mod rsyncd;
pub mod s3d;
pub mod slurmd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// `target/`.
pub fn target_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// The profile directory the tests were built in (`target/debug` under `cargo test`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/debug/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in <profile>/deps")
        .to_path_buf()
}

/// The `stagehost` binary of `profile` (`debug` or `release`), built by
/// `cargo build --workspace`.
pub fn stagehost_bin_in(profile: &str) -> PathBuf {
    let bin = target_root().join(profile).join("stagehost");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (`bash scripts/test` does: cargo build --workspace --release && cargo build --workspace)",
        bin.display()
    );
    bin
}

/// The `stagehost` binary next to the test binaries.
pub fn stagehost_bin() -> PathBuf {
    let bin = profile_dir().join("stagehost");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (scripts/test does)",
        bin.display()
    );
    bin
}

/// A shipped plugin library built by `cargo build --workspace`, e.g. `file`.
pub fn shipped_plugin(name: &str) -> PathBuf {
    let lib = profile_dir().join(format!("libstagehost_{name}.{}", dylib_ext()));
    assert!(
        lib.exists(),
        "{} is missing: run `cargo build --workspace` first",
        lib.display()
    );
    lib
}

/// `so` or `dylib`.
pub fn dylib_ext() -> &'static str {
    if cfg!(target_os = "macos") {
        "dylib"
    } else {
        "so"
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.env_remove("CARGO_TARGET_DIR");
    c
}

fn cargo_build(manifest: &Path, target_dir: &Path) {
    cargo_build_profile(manifest, target_dir, false);
}

fn cargo_build_profile(manifest: &Path, target_dir: &Path, release: bool) {
    let out = cargo()
        .arg("build")
        .arg("--quiet")
        .args(release.then_some("--release"))
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building {} failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test-only plugins of `tests/fixtures`, built once per process into
/// `target/fixtures`: `probe` and `no_root`.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = target_root().join("fixtures");
        cargo_build(&workspace_root().join("tests/fixtures/Cargo.toml"), &target);
        target.join("debug")
    });
    dir.join(format!("lib{name}.{}", dylib_ext()))
}

/// The test-only plugins of `tests/fixtures`, built with optimisations (for
/// benchmarks) into `target/fixtures/release`.
pub fn fixture_release(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = target_root().join("fixtures");
        cargo_build_profile(
            &workspace_root().join("tests/fixtures/Cargo.toml"),
            &target,
            true,
        );
        target.join("release")
    });
    dir.join(format!("lib{name}.{}", dylib_ext()))
}

/// The third-party example under `examples/data-provider`, built on its own.
pub fn example_data_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = target_root().join("example-data-provider");
            cargo_build(
                &workspace_root().join("examples/data-provider/Cargo.toml"),
                &target,
            );
            target
                .join("debug")
                .join(format!("libstagehost_data.{}", dylib_ext()))
        })
        .clone()
}

/// The plugin-api version one caret step above this one (0.1.x → 0.2.0; 1.x → 2.0.0):
/// what an incompatible plugin is built against.
pub fn incompatible_api_version() -> String {
    let v: Vec<u64> = stagehost_plugin_api::abi::API_VERSION
        .split('.')
        .map(|p| p.parse().expect("numeric version"))
        .collect();
    if v[0] == 0 {
        format!("0.{}.0", v[1] + 1)
    } else {
        format!("{}.0.0", v[0] + 1)
    }
}

/// A plugin built against [`incompatible_api_version`] (0.2.0 while the host is 0.1):
/// a copy of `plugin-api` with its version bumped, in a workspace of its own.
pub fn plugin_built_against_api_0_2() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_against_api(
                "api-0.2",
                ApiSource::WorkingTree {
                    version: incompatible_api_version(),
                },
                "future_api",
                "use stagehost_plugin_api::{Provider, Settings, StageError};\npub struct Future;\nimpl Provider for Future {\n    fn new(_: &Settings) -> Result<Self, StageError> { Ok(Future) }\n}\nstagehost_plugin_api::export_provider! { provider: Future, name: \"future\", schemes: [\"file\"], description: \"built against plugin-api 0.2\" }\n",
            )
        })
        .clone()
}

/// Every released `plugin-api`, with the last commit of this repository that had it
/// (the source a plugin of that release was built from).
pub const RELEASED_APIS: &[(&str, &str)] = &[
    ("0.1.0", "76a755d3ce2ad0badeb1ea658685d2100cc6acad"),
    ("0.1.1", "57ce5b4479693f31f00098272d4c3724a8d9c2d9"),
    ("0.1.2", "9f1bffb4d9ea4a05995132a118cddf484712b191"),
    ("0.1.3", "5b3ef108e6ece41a1e7738bc58a8c30d2531daa8"),
    ("0.1.4", "7e04764c3e78d3985ef877dab01414e306387f7a"),
    ("0.1.5", "cfb8a6a53194ca5be82481000eb8f4516344f851"),
    ("0.1.6", "0eb34c8ddec49ffac47473ad19be71035c8f329e"),
];

/// A plugin built against a released plugin-api (`version`, one of [`RELEASED_APIS`];
/// its source taken from the repository's history): the provider `old` stages
/// `old:<name>` by writing `old plugin\n`, logging a line and reporting progress on
/// the way, so every channel of the host's services is used through that release's
/// layout. The library is `libold_api_<version with _>`.
pub fn plugin_built_against_released_api(version: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(v, _)| v == version) {
        return path.clone();
    }
    let commit = RELEASED_APIS
        .iter()
        .find(|(v, _)| *v == version)
        .unwrap_or_else(|| panic!("plugin-api {version} was never released"))
        .1;
    let lib_name = format!("old_api_{}", version.replace('.', "_"));
    let src = r#"use std::io::Write;
use stagehost_plugin_api::fs::AtomicFile;
use stagehost_plugin_api::{Context, File, Job, Provider, Settings, StageError};
pub struct Old;
impl Provider for Old {
    fn new(_: &Settings) -> Result<Self, StageError> { Ok(Old) }
    fn can_stage_in(&self, file: &File) -> bool { file.scheme() == "old" }
    fn stage_in(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        file.set_local_path(ctx.destination());
        let dest = ctx.destination().to_path_buf();
        Ok(Some(Job::new(move |ctx| {
            ctx.info("written by a plugin built against plugin-api VERSION");
            ctx.check()?;
            let mut out = AtomicFile::create(&dest)?;
            out.write_all(b"old plugin
").map_err(|e| StageError::io("cannot write", &e))?;
            ctx.progress(11, Some(11));
            out.commit()
        })))
    }
}
stagehost_plugin_api::export_provider! { provider: Old, name: "old", schemes: ["old"], description: "built against plugin-api VERSION" }
"#
    .replace("VERSION", version);
    let path = build_against_api(
        &format!("api-{version}"),
        ApiSource::GitCommit(commit),
        &lib_name,
        &src,
    );
    built.push((version.to_owned(), path.clone()));
    path
}

/// A minimal host built against a released plugin-api (`version`, from
/// [`RELEASED_APIS`]), standing for a stagehost of that release: `old-host LIB URL DIR`
/// loads the plugin library `LIB` as that release's loader does (abi_stable's layout
/// check against that release's types), builds an instance with empty settings and
/// stages `URL` in to `DIR/<filename>`, printing what the plugin sends: `log N: ...`,
/// `notice: cached`, then `staged PATH`. A load failure prints `load error: ...` and
/// exits 2; a refused instance prints `refused: ...` and exits 3.
pub fn host_built_against_released_api(version: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(v, _)| v == version) {
        return path.clone();
    }
    let commit = RELEASED_APIS
        .iter()
        .find(|(v, _)| *v == version)
        .unwrap_or_else(|| panic!("plugin-api {version} was never released"))
        .1;
    let src = r#"use std::path::Path;

use abi_stable::library::lib_header_from_path;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RStr};
use stagehost_plugin_api::abi::{AbiContext, HostServices, HostServices_TO, PluginModRef};
use stagehost_plugin_api::{File, StageError};

/// The `cached` notice level (plugin-api 0.1.2 on; 0.1.0 has no name for it).
const NOTICE_CACHED: u8 = 128;

struct Services;

impl HostServices for Services {
    fn log(&self, level: u8, message: RStr<'_>) {
        if level == NOTICE_CACHED {
            println!("notice: cached");
        } else {
            println!("log {level}: {message}");
        }
    }
    fn progress(&self, _done: u64, _total: ROption<u64>) {}
    fn is_cancelled(&self) -> bool {
        false
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (lib, url, dir) = (&args[1], &args[2], &args[3]);
    let module = lib_header_from_path(Path::new(lib))
        .and_then(|h| h.init_root_module::<PluginModRef>())
        .unwrap_or_else(|e| {
            println!("load error: {}", e.to_string().lines().next().unwrap_or(""));
            std::process::exit(2)
        });
    let provider = module.new_provider()("".into())
        .into_result()
        .unwrap_or_else(|e| {
            println!("refused: {}", StageError::from(e));
            std::process::exit(3)
        });
    let file = File::parse(url).expect("a URL");
    let dest = Path::new(dir).join(file.filename());
    let ctx = AbiContext {
        executor: "local".into(),
        working_dir: dir.as_str().into(),
        instance: "new".into(),
        destination: dest.to_str().expect("UTF-8").into(),
        deadline_unix_ms: ROption::RNone,
        services: HostServices_TO::from_value(Services, TD_Opaque),
    };
    assert!(provider.can_stage_in(&file).into_result().expect("can_stage_in"));
    let plan = provider.stage_in(&ctx, file).into_result().expect("stage_in");
    if let ROption::RSome(mut job) = plan.job {
        job.run(&ctx).into_result().map_err(StageError::from).expect("the job");
    }
    println!("staged {}", dest.display());
}
"#;
    let path = build_crate_against_api(
        &format!("host-{version}"),
        ApiSource::GitCommit(commit),
        CrateKind::Host,
        &format!("old_host_{}", version.replace('.', "_")),
        src,
    );
    built.push((version.to_owned(), path.clone()));
    path
}

/// The `capable` fixture built with its `requires-cached` feature (plugin
/// `needs-cached`), into a target directory of its own.
pub fn fixture_needs_cached() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = target_root().join("fixtures-needs-cached");
            let out = cargo()
                .args(["build", "--quiet", "--manifest-path"])
                .arg(workspace_root().join("tests/fixtures/Cargo.toml"))
                .args([
                    "-p",
                    "stagehost-fixture-capable",
                    "--features",
                    "requires-cached",
                ])
                .arg("--target-dir")
                .arg(&target)
                .output()
                .expect("cargo runs");
            assert!(
                out.status.success(),
                "building needs-cached failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let built = target
                .join("debug")
                .join(format!("libcapable.{}", dylib_ext()));
            let renamed = target.join(format!("libneeds_cached.{}", dylib_ext()));
            std::fs::copy(&built, &renamed).expect("copy the library");
            renamed
        })
        .clone()
}

/// Where a fixture's copy of `plugin-api` comes from.
enum ApiSource {
    /// This checkout's, with its version set to `version`.
    WorkingTree { version: String },
    /// The repository's history at a commit, unchanged.
    GitCommit(&'static str),
}

/// What a crate built against a `plugin-api` copy is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CrateKind {
    /// A plugin (`cdylib`).
    Plugin,
    /// A program (a host), which also depends on abi_stable.
    Host,
}

/// Builds a `cdylib` named `lib_name` from `plugin_src` against `api`, in a workspace
/// `target/fixture-<name>/src` of its own; the fixtures share one target directory,
/// so their dependencies build once. Returns the library's path.
fn build_against_api(name: &str, api: ApiSource, lib_name: &str, plugin_src: &str) -> PathBuf {
    build_crate_against_api(name, api, CrateKind::Plugin, lib_name, plugin_src)
}

/// [`build_against_api`] for a plugin or a program; returns the built file.
fn build_crate_against_api(
    name: &str,
    api: ApiSource,
    kind: CrateKind,
    lib_name: &str,
    plugin_src: &str,
) -> PathBuf {
    let root = target_root().join(format!("fixture-{name}"));
    let src = root.join("src");
    let api_dir = src.join("plugin-api");
    let plugin = src.join("plugin");
    let (manifest, version) = match api {
        ApiSource::WorkingTree { version } => {
            copy_dir(
                &workspace_root().join("plugin-api/src"),
                &api_dir.join("src"),
            );
            let manifest = std::fs::read_to_string(workspace_root().join("plugin-api/Cargo.toml"))
                .expect("read plugin-api manifest");
            let line = format!("version = \"{}\"", stagehost_plugin_api::abi::API_VERSION);
            assert!(
                manifest.contains(&line),
                "plugin-api's version line moved: {manifest}"
            );
            (
                manifest.replacen(&line, &format!("version = \"{version}\""), 1),
                version,
            )
        }
        ApiSource::GitCommit(commit) => {
            let _ = std::fs::remove_dir_all(&api_dir);
            std::fs::create_dir_all(&api_dir).expect("mkdir");
            let archive = Command::new("git")
                .arg("-C")
                .arg(workspace_root())
                .args(["archive", "--format=tar", commit, "plugin-api"])
                .output()
                .expect("git runs");
            assert!(
                archive.status.success(),
                "plugin-api at {commit} is not in this clone's history (a shallow clone?): {}",
                String::from_utf8_lossy(&archive.stderr)
            );
            let mut tar = Command::new("tar")
                .args(["-x", "--strip-components=1", "-C"])
                .arg(&api_dir)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("tar runs");
            std::io::Write::write_all(tar.stdin.as_mut().expect("stdin"), &archive.stdout)
                .expect("feed tar");
            drop(tar.stdin.take());
            assert!(tar.wait().expect("tar ends").success(), "tar failed");
            let manifest =
                std::fs::read_to_string(api_dir.join("Cargo.toml")).expect("read manifest");
            let version = manifest
                .lines()
                .find_map(|l| l.strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
                .expect("a version line")
                .to_owned();
            (manifest, version)
        }
    };
    let manifest = manifest
        .replace("edition.workspace = true", "edition = \"2021\"")
        .replace("license.workspace = true\n", "")
        .replace("rust-version.workspace = true\n", "")
        .replace("abi_stable.workspace = true", "abi_stable = \"0.11.3\"")
        .replace(
            "serde.workspace = true",
            "serde = { version = \"1\", features = [\"derive\"] }",
        )
        .replace("toml.workspace = true", "toml = \"0.8\"")
        .replace("thiserror.workspace = true", "thiserror = \"2\"")
        .replace("libc.workspace = true", "libc = \"0.2\"")
        .replace(
            "rustix.workspace = true",
            "rustix = { version = \"1\", features = [\"fs\", \"process\", \"system\", \"pipe\", \"event\"] }",
        )
        .replace("percent-encoding.workspace = true", "percent-encoding = \"2\"")
        .replace("form_urlencoded.workspace = true", "form_urlencoded = \"1\"")
        .replace("tempfile.workspace = true", "tempfile = \"3\"");
    assert!(
        !manifest.contains(".workspace = true"),
        "a workspace dependency of plugin-api {version} is not mapped: {manifest}"
    );
    write_if_changed(&api_dir.join("Cargo.toml"), &manifest);
    write_if_changed(
        &src.join("Cargo.toml"),
        "[workspace]\nresolver = \"2\"\nmembers = [\"plugin-api\", \"plugin\"]\n",
    );
    let (target_section, extra_dep, src_file) = match kind {
        CrateKind::Plugin => (
            format!("[lib]\nname = \"{lib_name}\"\ncrate-type = [\"cdylib\"]\n"),
            "",
            "src/lib.rs",
        ),
        CrateKind::Host => (
            format!("[[bin]]\nname = \"{lib_name}\"\npath = \"src/main.rs\"\n"),
            "abi_stable = \"0.11.3\"\n",
            "src/main.rs",
        ),
    };
    write_if_changed(
        &plugin.join("Cargo.toml"),
        &format!("[package]\nname = \"stagehost-fixture-{lib_name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n{target_section}\n[dependencies]\nstagehost-plugin-api = {{ path = \"../plugin-api\" }}\n{extra_dep}"),
    );
    write_if_changed(&plugin.join(src_file), plugin_src);
    let lock = workspace_root().join("Cargo.lock");
    if lock.exists() && !src.join("Cargo.lock").exists() {
        std::fs::copy(&lock, src.join("Cargo.lock")).expect("copy Cargo.lock");
    }
    let target = target_root().join("fixture-api-target");
    cargo_build(&src.join("Cargo.toml"), &target);
    match kind {
        CrateKind::Plugin => target
            .join("debug")
            .join(format!("lib{lib_name}.{}", dylib_ext())),
        CrateKind::Host => target.join("debug").join(lib_name),
    }
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            write_if_changed(
                &dest,
                &std::fs::read_to_string(entry.path()).expect("read source"),
            );
        }
    }
}

/// A directory of its own for one test, with `HOME`, `XDG_*` and the working directory
/// inside it, so no config or plugin of the machine's leaks in.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

/// What a `stagehost` run did.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The entry of task `name` in a `run --report` JSON report.
pub fn task_in<'r>(report: &'r serde_json::Value, name: &str) -> &'r serde_json::Value {
    report["tasks"]
        .as_array()
        .expect("a run report lists its tasks")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name:?} in the report"))
}

impl Run {
    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    /// A fresh sandbox.
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("stagehost-test-")
            .tempdir()
            .expect("tempdir");
        for d in ["home", "config", "data", "work"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Sandbox { dir }
    }

    /// The sandbox directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path` inside the sandbox.
    pub fn join(&self, path: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(path)
    }

    /// Writes `text` to `path` inside the sandbox and returns the full path.
    pub fn write(&self, path: impl AsRef<Path>, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(path);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        p
    }

    /// A private plugin directory holding copies of `libs`.
    pub fn plugin_dir(&self, name: &str, libs: &[&Path]) -> PathBuf {
        let dir = self.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for lib in libs {
            std::fs::copy(lib, dir.join(lib.file_name().expect("a file name")))
                .expect("copy plugin");
        }
        dir
    }

    /// A `stagehost` command running in the sandbox's `work` directory, isolated from
    /// the machine's config and plugin directories.
    pub fn command(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.current_dir(self.join("work"))
            .env("HOME", self.join("home"))
            .env("XDG_CONFIG_HOME", self.join("config"))
            .env("XDG_DATA_HOME", self.join("data"))
            .env_remove("STAGEHOST_CONFIG")
            .env_remove("STAGEHOST_PLUGIN_PATH")
            .env_remove("RUST_LOG");
        // Loopback servers are reached directly unless a test names a proxy.
        for var in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            c.env_remove(var);
        }
        c
    }

    /// Runs `stagehost ARGS` with the binary next to the tests.
    pub fn run(&self, args: &[&str]) -> Run {
        self.command(&stagehost_bin())
            .args(args)
            .output()
            .expect("stagehost runs")
            .into()
    }

    /// Runs `stagehost ARGS` with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command(&stagehost_bin());
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args).output().expect("stagehost runs").into()
    }

    /// `stagehost --config CFG run flow.toml --report -` for the workflow text `flow`
    /// (written as `flow.toml`): the JSON report is on stdout.
    pub fn run_workflow(&self, cfg: &Path, flow: &str) -> Run {
        self.run_workflow_env(cfg, flow, &[])
    }

    /// [`Sandbox::run_workflow`] with `env` set for the run.
    pub fn run_workflow_env(&self, cfg: &Path, flow: &str, env: &[(&str, &str)]) -> Run {
        let flow = self.write("flow.toml", flow);
        self.run_env(
            &[
                "--config",
                cfg.to_str().expect("UTF-8 config path"),
                "run",
                flow.to_str().expect("UTF-8 workflow path"),
                "--report",
                "-",
            ],
            env,
        )
    }
}

/// Every temporary staging file (`*.part`) left anywhere under `dir`.
pub fn partial_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                found.extend(partial_files(&path));
            } else if e.file_name().to_string_lossy().ends_with(".part") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// A TOML string literal for `path`.
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A workflow of `n` shell tasks in chains of 100: each touches its output, which the
/// next task of its chain takes as input.
pub fn chained_workflow(n: usize) -> String {
    let mut text = String::with_capacity(n * 120);
    for c in 0..n / 100 {
        for k in 0..100 {
            text.push_str(&format!(
                "[[task]]\nname = \"c{c}-{k}\"\ncommand = \": > {{outputs[0]}}\"\noutputs = [\"out/c{c}-{k}.txt\"]\n"
            ));
            if k > 0 {
                text.push_str(&format!("inputs = [{{ task = \"c{c}-{}\" }}]\n", k - 1));
            }
            text.push('\n');
        }
    }
    text
}

/// Waits for `child`, reaping it with `wait4`, and returns what it printed (its piped
/// stdout and stderr, read to their end; empty when not piped), its exit code and its
/// peak RSS in KiB.
// The child is reaped by wait4, which std's `Child` does not see.
#[allow(clippy::zombie_processes)]
pub fn wait_with_peak_rss(mut child: std::process::Child) -> (Run, i64) {
    let pid = child.id() as i32;
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    // The peak of the program itself: its VmHWM, read until it exits. (wait4's
    // ru_maxrss is no measure of it: Linux carries the test process's own resident size
    // at the spawn across the exec, so a busy test process inflates it.)
    let hwm = std::thread::spawn(move || {
        let mut peak = None;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            else {
                break; // a zombie has no memory left to read
            };
            peak = peak.max(Some(kib));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        peak
    });
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-parameters.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 on our own child");
    let run = Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout: out.join().expect("reader thread"),
        stderr: err.join().expect("reader thread"),
    };
    let peak = hwm
        .join()
        .expect("poller thread")
        .unwrap_or(usage.ru_maxrss);
    (run, peak)
}

/// Stops a server the tests started: `signal` to it by its pid, then SIGKILL if it is
/// still there after 10 s; reaped either way.
pub fn stop_child(child: &mut std::process::Child, signal: i32) {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for a server the tests started to listen on `port` of 127.0.0.1, failing
/// the test if `child` exits first or 30 s pass.
pub fn wait_for_port(child: &mut std::process::Child, port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start ({status})");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
