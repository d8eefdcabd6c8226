//! The `http` provider against nginx on loopback, beside curl in the same run: 1,000
//! files of 1 MiB and 2 files of 1 GiB, staged in through `stagehost stage in` and
//! through `stagehost run`, and fetched by `curl --parallel` at the same concurrency
//! (stagehost's per-host limit set to match), best of 3 interleaved rounds. Prints
//! times, the ratio to curl and our peak RSS; asserts nothing about time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench http`
//! (needs nginx and curl: `bash scripts/install-test-deps`; `-- small` or `-- big` runs
//! one case).

use stagehost_tests::bench::{compare_with_curl, wanted, write_file, PARALLEL};
use stagehost_tests::httpd::Nginx;
use stagehost_tests::Sandbox;

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
    for f in small.iter().filter(|_| wanted("small")) {
        write_file(&root.join(f.trim_start_matches('/')), 1 << 20);
    }
    let big: Vec<String> = (0..2).map(|i| format!("/big/g{i}.bin")).collect();
    for f in big.iter().filter(|_| wanted("big")) {
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
}
