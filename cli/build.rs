//! Records the commit the binary was built from, for `stagehost version`: `git
//! rev-parse` when the source is a git checkout, else `STAGEHOST_COMMIT` if set (a
//! tarball's build), else nothing.

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("STAGEHOST_COMMIT").ok())
        .unwrap_or_default();
    println!("cargo:rustc-env=STAGEHOST_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=STAGEHOST_COMMIT");
    if let Ok(head) = std::process::Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        if let Ok(dir) = String::from_utf8(head.stdout) {
            let dir = dir.trim();
            if !dir.is_empty() {
                println!("cargo:rerun-if-changed={dir}/HEAD");
                println!("cargo:rerun-if-changed={dir}/refs/heads");
            }
        }
    }
}
