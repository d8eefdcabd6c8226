//! The `http` provider against nginx on loopback, beside curl in the same run: 1,000
//! files of 1 MiB and 2 files of 1 GiB, staged in through `stagehost stage in` and
//! through `stagehost run`, and fetched by `curl --parallel` at the same concurrency
//! (stagehost's per-host limit set to match), best of 3 interleaved rounds. Prints
//! times, the ratio to curl and our peak RSS; asserts nothing about time.
//!
//! Its `durable` part measures what a durable download costs beside its floor and
//! peers: one file of 1 GiB staged in (synced before it is renamed into place) beside
//! `dd conv=fsync` writing 1 GiB on the same disk (the floor of writing it durably) and
//! curl (which does not sync); 1,000 files of 1 MiB, each synced, beside rclone copying
//! them over its http backend (`--files-from`, no listing, no sync) and curl; best of
//! 3 interleaved rounds, each run starting with nothing left to write back (an
//! untimed `sync`), so no one waits behind the page cache a peer left dirty. Beside
//! them, the disk's durable floor: the same 1,000 files written from memory by 8
//! threads, each synced, renamed and its directory synced, as a durable download
//! lands them; no download that keeps each file durable can beat it.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench http`
//! (needs nginx, curl and rclone: `bash scripts/install-test-deps`; `-- small`, `-- big`
//! or `-- durable` runs one part).

use std::path::Path;
use std::process::Command;

use stagehost_tests::bench::{
    compare_with_curl, curl_parallel, measure, wanted, write_file, PARALLEL,
};
use stagehost_tests::httpd::Nginx;
use stagehost_tests::{stagehost_bin_in, Sandbox};

const ROUNDS: usize = 3;

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
}

/// Seconds of `stagehost stage in` of `urls`, 8 at once, into a fresh directory.
fn stage_in(sandbox: &Sandbox, urls: &[String]) -> f64 {
    let config = sandbox.write(
        "durable.toml",
        format!("[executor.local]\nworking_dir = \"wd\"\n[transfers]\nmax_concurrent = {PARALLEL}\nper_host = {PARALLEL}\n"),
    );
    fresh(&sandbox.join("wd"));
    let mut c = sandbox.command(&stagehost_bin_in("release"));
    c.arg("--config")
        .arg(&config)
        .args(["stage", "in", "-j", &PARALLEL.to_string()])
        .args(urls);
    measure(c, "stagehost stage in").0
}

fn curl(sandbox: &Sandbox, urls: &[String]) -> f64 {
    curl_parallel(&sandbox.join("curl"), urls).0
}

/// `dd` writing `mib` MiB of zeros and syncing them before it exits.
fn dd_fsync(sandbox: &Sandbox, mib: usize) -> f64 {
    let out = sandbox.join("dd.bin");
    let _ = std::fs::remove_file(&out);
    let mut c = Command::new("dd");
    c.arg("if=/dev/zero")
        .arg(format!("of={}", out.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fsync"]);
    let seconds = measure(c, "dd").0;
    let _ = std::fs::remove_file(&out);
    seconds
}

/// rclone copying `names` (paths under `base`) over its http backend, 8 at once.
fn rclone(sandbox: &Sandbox, base: &str, names: &[String]) -> f64 {
    let dir = sandbox.join("rclone");
    fresh(&dir);
    let list = sandbox.write(
        "rclone-files.txt",
        names.iter().map(|n| format!("{n}\n")).collect::<String>(),
    );
    let mut c = Command::new("rclone");
    c.args([
        "copy",
        "--http-url",
        base,
        ":http:",
        "--no-traverse",
        "--transfers",
    ])
    .arg(PARALLEL.to_string())
    .arg("--checkers")
    .arg(PARALLEL.to_string())
    .arg("--files-from")
    .arg(&list)
    .arg(&dir)
    .env("RCLONE_CONFIG", "/dev/null");
    measure(c, "rclone").0
}

/// The disk's floor for `count` durable files of `size` bytes: written from memory
/// (no network) by [`PARALLEL`] threads, each file as a durable download lands (a
/// temporary name, its data synced, renamed into place, its directory synced).
fn durable_floor(sandbox: &Sandbox, count: usize, size: usize) -> f64 {
    use std::io::Write;
    let dir = sandbox.join("floor");
    fresh(&dir);
    let data = vec![0x5au8; size];
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..PARALLEL {
            let (dir, data) = (&dir, &data);
            s.spawn(move || {
                for i in (t..count).step_by(PARALLEL) {
                    let temp = dir.join(format!(".f{i:04}.bin.part"));
                    let mut f = std::fs::File::create(&temp).expect("create");
                    f.write_all(data).expect("write");
                    f.sync_all().expect("fsync");
                    drop(f);
                    std::fs::rename(&temp, dir.join(format!("f{i:04}.bin"))).expect("rename");
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .expect("fsync dir");
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

/// The best (least) seconds of each of `N` measurements over [`ROUNDS`] interleaved
/// rounds (a noisy neighbour slows them all alike).
fn best_of_rounds<const N: usize>(mut runs: [&mut dyn FnMut() -> f64; N]) -> [f64; N] {
    let mut best = [f64::MAX; N];
    for _ in 0..ROUNDS {
        for (b, run) in best.iter_mut().zip(runs.iter_mut()) {
            *b = b.min(run());
        }
    }
    best
}

/// `run`, once what earlier runs wrote is on the disk (an untimed `sync`): the peers
/// that do not sync leave their writes in the page cache, and whatever runs next
/// would otherwise wait behind their write-back.
fn settled(run: impl FnOnce() -> f64) -> f64 {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    run()
}

fn durable(sandbox: &Sandbox, nginx: &Nginx, small: &[String], big: &str) {
    println!("durable downloads (each file synced before its rename), best of {ROUNDS}:");
    let big_url = [nginx.url(big)];
    let [floor, peer, ours] = best_of_rounds([
        &mut || settled(|| dd_fsync(sandbox, 1024)),
        &mut || settled(|| curl(sandbox, &big_url)),
        &mut || settled(|| stage_in(sandbox, &big_url)),
    ]);
    println!(
        "  1 x 1 GiB      dd conv=fsync {floor:>5.2}s | curl (no sync) {peer:>5.2}s | stage in {ours:>5.2}s = {:.2}x dd conv=fsync, {:.2}x curl",
        ours / floor,
        ours / peer
    );
    let urls: Vec<String> = small.iter().map(|f| nginx.url(f)).collect();
    let base = nginx.url("/");
    let names: Vec<String> = small
        .iter()
        .map(|f| f.trim_start_matches('/').to_owned())
        .collect();
    let [floor, peer, curl_s, ours] = best_of_rounds([
        &mut || settled(|| durable_floor(sandbox, small.len(), 1 << 20)),
        &mut || settled(|| rclone(sandbox, &base, &names)),
        &mut || settled(|| curl(sandbox, &urls)),
        &mut || settled(|| stage_in(sandbox, &urls)),
    ]);
    println!(
        "  1000 x 1 MiB   rclone (no sync) {peer:>5.2}s | curl (no sync) {curl_s:>5.2}s | stage in {ours:>5.2}s = {:.2}x rclone, {:.2}x curl",
        ours / peer,
        ours / curl_s
    );
    println!(
        "                 the disk's durable floor (the same files from memory, each synced and renamed, {PARALLEL} threads) {floor:>5.2}s = {:.2}x rclone; stage in = {:.2}x the floor",
        floor / peer,
        ours / floor
    );
}

fn case(sandbox: &Sandbox, nginx: &Nginx, name: &str, files: &[String]) {
    let urls: Vec<String> = files.iter().map(|f| nginx.url(f)).collect();
    compare_with_curl(sandbox, name, &urls);
}

fn main() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(root.join("small")).expect("mkdir");
    std::fs::create_dir_all(root.join("big")).expect("mkdir");
    let small: Vec<String> = (0..1000).map(|i| format!("/small/f{i:04}.bin")).collect();
    for f in small
        .iter()
        .filter(|_| wanted("small") || wanted("durable"))
    {
        write_file(&root.join(f.trim_start_matches('/')), 1 << 20);
    }
    let big: Vec<String> = (0..2).map(|i| format!("/big/g{i}.bin")).collect();
    for f in big.iter().filter(|_| wanted("big") || wanted("durable")) {
        write_file(&root.join(f.trim_start_matches('/')), 1 << 30);
    }
    // Written back before anything is timed, so no one pays for the generation.
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let nginx = Nginx::start(&root);
    println!(
        "http provider vs curl, nginx on loopback, {PARALLEL} at once (per-host limit {PARALLEL}):"
    );
    if wanted("small") {
        case(&sandbox, &nginx, "1000 x 1 MiB", &small);
    }
    if wanted("big") {
        case(&sandbox, &nginx, "2 x 1 GiB", &big);
    }
    if wanted("durable") {
        durable(&sandbox, &nginx, &small, &big[0]);
    }
}
