//! The `zip` provider's throughput: 10,000 tasks each writing one 4 KiB member into
//! one archive through `stagehost run`, in tasks per second, and the archive checked
//! whole afterwards. Beside it in the same run, when Parsl is installed in the test
//! virtualenv, Parsl's own `ZipFileStaging` writing members into one archive from
//! `bash_app`s on a `ThreadPoolExecutor` (fewer tasks: it is slower). Asserts nothing
//! about time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench zip`
//! (`-- TASKS` changes the count; Parsl: `target/test-venv/bin/pip install parsl`).

use std::process::{Command, Stdio};
use std::time::Instant;

use stagehost_tests::{stagehost_bin_in, target_root, wait_with_peak_rss, Sandbox};

/// Parsl's script: `n` bash_apps writing `<archive>/m<i>.txt`; prints tasks per second.
const PARSL: &str = r#"
import sys, time, zipfile
import parsl
from parsl.config import Config
from parsl.executors.threads import ThreadPoolExecutor
from parsl.data_provider.files import File
from parsl.data_provider.zip import ZipFileStaging
from parsl.data_provider.data_manager import default_staging

n, archive, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
parsl.load(Config(executors=[ThreadPoolExecutor(max_threads=2, working_dir=workdir,
    storage_access=[ZipFileStaging()] + default_staging)]))

@parsl.bash_app
def write(outputs=()):
    return f"printf %4096s x > {outputs[0]}"

start = time.time()
futures = [write(outputs=[File(f"zip:{archive}/m{i}.txt")]) for i in range(n)]
for f in futures:
    f.outputs[0].result()
elapsed = time.time() - start
parsl.dfk().cleanup()
assert len(zipfile.ZipFile(archive).namelist()) == n
print(f"{n / elapsed:.1f}")
"#;

fn members(archive: &std::path::Path) -> usize {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print(len(z.namelist()))",
        ])
        .arg(archive)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `tasks` tasks each writing 4 KiB to `output(i)` through `stagehost run`: tasks per
/// second and peak RSS (MiB).
fn ours(sandbox: &Sandbox, tasks: usize, output: impl Fn(usize) -> String) -> (f64, f64) {
    let config = sandbox.write(
        "site.toml",
        "[executor.local]\nworking_dir = \"wd\"\n[transfers]\nmax_concurrent = 16\n",
    );
    let mut flow = String::with_capacity(tasks * 120);
    for i in 0..tasks {
        flow.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\ncommand = \"printf %4096s x > {{outputs[0]}}\"\noutputs = [{:?}]\n",
            output(i)
        ));
    }
    let flow = sandbox.write("flow.toml", flow);
    let start = Instant::now();
    let child = sandbox
        .command(&stagehost_bin_in("release"))
        .arg("--config")
        .arg(&config)
        .args(["run", "-q"])
        .arg(&flow)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (run, rss) = wait_with_peak_rss(child);
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    (tasks as f64 / seconds, rss as f64 / 1024.0)
}

fn main() {
    let tasks: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let sandbox = Sandbox::new();
    println!("{tasks} tasks, each one 4 KiB member of one archive, through `stagehost run`:");
    // The floor: the same tasks writing plain local files, staged by nobody.
    let (floor, floor_rss) = ours(&sandbox, tasks, |i| format!("out/m{i}.txt"));
    println!("  floor, plain local outputs:   {floor:>7.0} tasks/s ({floor_rss:.0} MiB peak RSS)");
    let archive = sandbox.join("ours.zip");
    let (rate, rss) = ours(&sandbox, tasks, |i| {
        format!("zip:{}/m{i}.txt", archive.display())
    });
    assert_eq!(members(&archive), tasks, "every member, once");
    println!(
        "  stagehost, zip: outputs:      {rate:>7.0} tasks/s ({rss:.0} MiB peak RSS) = {:.0}% of the floor",
        100.0 * rate / floor
    );
    let python = target_root().join("test-venv/bin/python");
    let has_parsl = Command::new(&python)
        .args(["-c", "import parsl"])
        .status()
        .is_ok_and(|s| s.success());
    if has_parsl {
        let n = (tasks / 10).max(100);
        let out = Command::new(&python)
            .args(["-c", PARSL, &n.to_string()])
            .arg(sandbox.join("parsl.zip"))
            .arg(sandbox.join("parsl-wd"))
            .current_dir(sandbox.path())
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsl: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        println!(
            "  Parsl ZipFileStaging ({n} tasks, ThreadPoolExecutor, 2 threads): {parsl:>7.0} tasks/s; stagehost is {:.1}x",
            rate / parsl
        );
    } else {
        println!(
            "  Parsl: not installed in {} (pip install parsl there to compare)",
            python.display()
        );
    }
}
