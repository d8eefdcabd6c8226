//! The host's own cost, printed as figures (no assertions on time):
//! - choosing a provider among 8 loaded plugin instances where the last one matches,
//!   through the ABI, next to the same choice through in-process trait objects;
//! - planning a whole stage-in (choice, `stage_in`, `replace_task`) of a `file` URL
//!   with the no-op `file` provider;
//! - the whole-process time of `stagehost plugins list`.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench
//! host_overhead` (`-- choose`, `-- plan` or `-- plugins-list` for one part).

use std::hint::black_box;
use std::time::{Duration, Instant};

use stagehost::config::ConfigSource;
use stagehost::{Config, DataManager, PluginLoader, Registry, StageOptions};
use stagehost_plugin_api::{File, Provider, Settings, StageError};
use stagehost_tests::bench::wanted;
use stagehost_tests::{fixture_release, shipped_plugin, stagehost_bin, toml_path, Sandbox};

/// The same logic as the `probe` fixture's `can_stage_in`, in-process.
struct InProcessProbe {
    schemes: Vec<String>,
}

impl Provider for InProcessProbe {
    fn new(_: &Settings) -> Result<Self, StageError> {
        unreachable!("built directly")
    }
    fn can_stage_in(&self, file: &File) -> bool {
        self.schemes.iter().any(|s| s == file.scheme())
    }
}

fn per_iteration(total: Duration, n: u64) -> f64 {
    total.as_nanos() as f64 / n as f64
}

fn best_of<F: FnMut() -> Duration>(rounds: usize, mut f: F) -> Duration {
    (0..rounds).map(|_| f()).min().expect("at least one round")
}

fn main() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir(
        "plugins",
        &[&fixture_release("probe"), &shipped_plugin("file")],
    );
    let mut text = format!("plugin_dirs = [{}]\n", toml_path(&plugins));
    // The same eight instances twice: asked about every file, and declaring their
    // schemes (the `schemes` capability), so the host asks only the one that may claim.
    for (prefix, declared) in [("", false), ("d", true)] {
        for i in 0..7 {
            text.push_str(&format!("[[provider]]\nname = \"{prefix}miss{i}\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"nomatch{i}\"], declare_schemes = {declared} }}\n"));
        }
        text.push_str(&format!(
            "[[provider]]\nname = \"{prefix}hit\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"file\"], declare_schemes = {declared} }}\n"
        ));
        let order: Vec<String> = (0..7)
            .map(|i| format!("\"{prefix}miss{i}\""))
            .chain([format!("\"{prefix}hit\"")])
            .collect();
        let label = if declared { "declared" } else { "eight" };
        text.push_str(&format!(
            "[executor.{label}]\nstaging = [{}]\n",
            order.join(", ")
        ));
    }
    text.push_str("[[provider]]\nname = \"noop\"\nplugin = \"file\"\n");
    text.push_str("[executor.noop]\nstaging = [\"noop\"]\n");
    let config = Config::parse(&text, ConfigSource::Embedded).expect("bench config");
    let registry = Registry::build(&config, &PluginLoader::default()).expect("registry");
    let dm = DataManager::new(&registry);
    let file = File::parse("/data/input.txt").expect("url");

    if wanted("choose") {
        choose(&dm, &file);
    }
    if wanted("plan") {
        plan(&dm, &file);
    }
    if wanted("plugins-list") {
        plugins_list(&sandbox);
    }
}

fn choose(dm: &DataManager, file: &File) {
    const N: u64 = 2_000_000;
    let through_abi = |executor: &str, hit: &str| {
        let took = best_of(5, || {
            let start = Instant::now();
            for _ in 0..N {
                let p = dm
                    .choose_stage_in_provider(executor, black_box(file))
                    .expect("the last one matches");
                black_box(p);
            }
            start.elapsed()
        });
        assert_eq!(
            dm.choose_stage_in_provider(executor, file).unwrap().name,
            hit
        );
        took
    };
    let abi = through_abi("eight", "hit");
    let declared = through_abi("declared", "dhit");

    let mut in_process: Vec<Box<dyn Provider>> = (0..7)
        .map(|i| {
            Box::new(InProcessProbe {
                schemes: vec![format!("nomatch{i}")],
            }) as Box<dyn Provider>
        })
        .collect();
    in_process.push(Box::new(InProcessProbe {
        schemes: vec!["file".into()],
    }));
    let native = best_of(5, || {
        let start = Instant::now();
        for _ in 0..N {
            let p = black_box(&in_process)
                .iter()
                .position(|p| p.can_stage_in(black_box(file)));
            black_box(p);
        }
        start.elapsed()
    });
    println!(
        "choose provider, 8 instances, last matches, through the plugin ABI:  {:8.1} ns/file",
        per_iteration(abi, N)
    );
    println!(
        "  the same, each instance declaring its schemes (asked only on a match): {:8.1} ns/file",
        per_iteration(declared, N)
    );
    println!(
        "choose provider, 8 instances, last matches, in-process trait objects: {:8.1} ns/file",
        per_iteration(native, N)
    );
}

fn plan(dm: &DataManager, file: &File) {
    const M: u64 = 200_000;
    let opts = StageOptions::default();
    let plan = best_of(3, || {
        let start = Instant::now();
        for _ in 0..M {
            let s = dm
                .plan_stage_in("noop", black_box(file), &opts)
                .expect("plan");
            black_box(s);
        }
        start.elapsed()
    });
    println!(
        "plan a stage-in (choose + stage_in + replace_task), no-op file provider: {:8.1} ns/file",
        per_iteration(plan, M)
    );
}

fn plugins_list(sandbox: &Sandbox) {
    let runs = 30;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let out = sandbox
                .command(&stagehost_bin())
                .args(["plugins", "list"])
                .output()
                .expect("runs");
            assert!(out.status.success());
            start.elapsed()
        })
        .collect();
    times.sort();
    let mean = times.iter().sum::<Duration>() / runs;
    println!(
        "`stagehost plugins list` whole process (embedded default config), {runs} runs: mean {:.2} ms, median {:.2} ms, min {:.2} ms",
        mean.as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );
}
