//! The `rsync` provider's stage-in of a 1 GiB file, through an rsync daemon and over
//! ssh (both on loopback), beside plain `rsync` of the same file the same way, best of
//! 3 interleaved rounds. Prints times, the ratio to plain rsync and our peak RSS;
//! asserts nothing about time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench rsync`
//! (needs rsync and openssh: `bash scripts/install-test-deps`; `-- daemon` or `-- ssh`
//! runs one case).

use std::path::Path;
use std::process::Command;

use stagehost_tests::bench::{measure, wanted, write_file};
use stagehost_tests::rsyncd::{RsyncDaemon, Sshd};
use stagehost_tests::{stagehost_bin_in, Sandbox};

const ROUNDS: usize = 3;

/// Best of `ROUNDS`: plain rsync (`plain` builds its command into a fresh directory)
/// and `stagehost stage in url` with `settings`.
fn case(
    sandbox: &Sandbox,
    name: &str,
    settings: &str,
    url: &str,
    plain: impl Fn(&Path) -> Command,
) {
    let config = sandbox.write(
        "site.toml",
        format!("[[provider]]\nname = \"remote\"\nplugin = \"rsync\"\nsettings = {{ {settings} }}\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"remote\"]\n"),
    );
    let (mut theirs, mut ours) = ((f64::MAX, 0i64), (f64::MAX, 0i64));
    for _ in 0..ROUNDS {
        let dir = sandbox.join("plain");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = measure(plain(&dir), "plain rsync");
        if t.0 < theirs.0 {
            theirs = t;
        }
        let _ = std::fs::remove_dir_all(sandbox.join("wd"));
        let mut cmd = sandbox.command(&stagehost_bin_in("release"));
        cmd.arg("--config").arg(&config).args(["stage", "in", url]);
        let t = measure(cmd, "stagehost stage in");
        if t.0 < ours.0 {
            ours = t;
        }
    }
    println!(
        "{name:<22} rsync {:>6.2}s | stagehost {:>6.2}s = {:.3}x rsync ({:.1} MiB peak RSS)",
        theirs.0,
        ours.0,
        ours.0 / theirs.0,
        ours.1 as f64 / 1024.0
    );
}

fn main() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("daemon");
    std::fs::create_dir_all(root.join("open")).unwrap();
    write_file(&root.join("open/big.bin"), 1 << 30);
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    println!("rsync provider vs plain rsync, 1 GiB on loopback, best of {ROUNDS}:");
    if wanted("daemon") {
        let daemon = RsyncDaemon::start(&root);
        let url = daemon.url(None, "open", "big.bin");
        case(
            &sandbox,
            "through the daemon",
            "mode = \"separate\"",
            &url,
            |dir| {
                let mut c = Command::new("rsync");
                c.args(["--times", "--perms", &url])
                    .arg(dir.join("big.bin"));
                c
            },
        );
    }
    if wanted("ssh") {
        let sshd = Sshd::start();
        let remote = root.join("open/big.bin");
        let settings = format!(
            "mode = \"separate\", host = {:?}, ssh_command = {:?}",
            sshd.host(),
            sshd.ssh_command()
        );
        let source = format!("{}:{}", sshd.host(), remote.display());
        case(
            &sandbox,
            "over ssh",
            &settings,
            remote.to_str().unwrap(),
            |dir| {
                let mut c = Command::new("rsync");
                c.args(["--times", "--perms", "-e", &sshd.ssh_command(), &source])
                    .arg(dir.join("big.bin"));
                c
            },
        );
    }
}
