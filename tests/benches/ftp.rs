//! The `ftp` provider against vsftpd on loopback, beside curl in the same run: 200
//! files of 1 MiB and 1 file of 1 GiB, staged in through `stagehost stage in` and
//! through `stagehost run`, and fetched by `curl --parallel` at the same concurrency,
//! best of 3 interleaved rounds. Prints times, the ratio to curl and our peak RSS;
//! asserts nothing about time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench ftp`
//! (needs vsftpd and curl, and root for vsftpd: `bash scripts/install-test-deps`;
//! `-- small` or `-- big` runs one case).

use stagehost_tests::bench::{compare_with_curl, wanted, write_file, PARALLEL};
use stagehost_tests::ftpd::Vsftpd;
use stagehost_tests::Sandbox;

fn main() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("anon");
    std::fs::create_dir_all(root.join("small")).expect("mkdir");
    std::fs::create_dir_all(root.join("big")).expect("mkdir");
    let small: Vec<String> = (0..200).map(|i| format!("small/f{i:03}.bin")).collect();
    for f in small.iter().filter(|_| wanted("small")) {
        write_file(&root.join(f), 1 << 20);
    }
    let big = vec!["big/g0.bin".to_owned()];
    for f in big.iter().filter(|_| wanted("big")) {
        write_file(&root.join(f), 1 << 30);
    }
    // Written back before anything is timed, so no one pays for the generation.
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let server = Vsftpd::start(&root, None);
    let urls =
        |files: &[String]| -> Vec<String> { files.iter().map(|f| server.url("ftp", f)).collect() };
    println!("ftp provider vs curl, vsftpd on loopback, {PARALLEL} at once:");
    if wanted("small") {
        compare_with_curl(&sandbox, "200 x 1 MiB", &urls(&small));
    }
    if wanted("big") {
        compare_with_curl(&sandbox, "1 x 1 GiB", &urls(&big));
    }
}
