//! The servers the `rsync` provider is tested against, from the Debian packages: an
//! sshd on a loopback port with keys made for the test, and an rsync daemon with an
//! open module and a password-protected one. Both are stopped by their pid.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::httpd::free_port;
use crate::{stop_child, wait_for_port};

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen runs (scripts/install-test-deps installs openssh)");
    assert!(status.success(), "ssh-keygen failed");
}

/// sshd on 127.0.0.1 accepting one key, for the current user.
pub struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd with a fresh host key and a fresh client key it accepts.
    pub fn start() -> Sshd {
        let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("sshd is missing: scripts/install-test-deps installs it (apt-get install openssh-server)");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("copy key");
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\nLogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), conf).expect("write sshd_config");
        let mut child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        wait_for_port(&mut child, port, "sshd");
        Sshd { child, port, dir }
    }

    /// The `ssh_command` that logs in with the test key.
    pub fn ssh_command(&self) -> String {
        format!(
            "ssh -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.port,
            self.dir.path().join("client_key").display()
        )
    }

    /// `user@127.0.0.1` for the current user.
    pub fn host(&self) -> String {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&Command::new("id").arg("-un").output().unwrap().stdout)
                    .trim()
                    .to_owned()
            });
        format!("{user}@127.0.0.1")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM);
    }
}

/// An rsync daemon on 127.0.0.1 with two writable modules: `open`, and `secret`
/// for the user `alice` with [`RsyncDaemon::PASSWORD`].
pub struct RsyncDaemon {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl RsyncDaemon {
    /// `alice`'s password for the `secret` module.
    pub const PASSWORD: &'static str = "s3cret-rsync";

    /// Starts a daemon whose modules live in `root/open` and `root/secret`.
    pub fn start(root: &Path) -> RsyncDaemon {
        let port = free_port();
        let (child, dir) = RsyncDaemon::spawn(root, port);
        RsyncDaemon {
            child,
            port,
            dir,
            root: root.to_path_buf(),
        }
    }

    fn spawn(root: &Path, port: u16) -> (Child, tempfile::TempDir) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for module in ["open", "secret"] {
            std::fs::create_dir_all(root.join(module)).expect("mkdir module");
        }
        let secrets = d.join("secrets");
        std::fs::write(&secrets, format!("alice:{}\n", RsyncDaemon::PASSWORD)).expect("secrets");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // SAFETY: geteuid has no preconditions.
        let ids = if unsafe { libc::geteuid() } == 0 {
            "uid = root\ngid = root\n"
        } else {
            ""
        };
        let conf = format!(
            "pid file = {d}/rsyncd.pid\nuse chroot = no\n{ids}\n[open]\n  path = {root}/open\n  read only = no\n\n[secret]\n  path = {root}/secret\n  read only = no\n  auth users = alice\n  secrets file = {secrets}\n",
            d = d.display(),
            root = root.display(),
            secrets = secrets.display()
        );
        std::fs::write(d.join("rsyncd.conf"), conf).expect("write rsyncd.conf");
        let mut child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", d.join("rsyncd.conf").display()))
            .arg(format!("--port={port}"))
            .arg("--address=127.0.0.1")
            .arg(format!("--log-file={}", d.join("rsyncd.log").display()))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsync --daemon starts (scripts/install-test-deps installs rsync)");
        wait_for_port(&mut child, port, "rsync --daemon");
        (child, dir)
    }

    /// `rsync://[user@]127.0.0.1:<port>/<module>/<path>`.
    pub fn url(&self, user: Option<&str>, module: &str, path: &str) -> String {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        format!("rsync://{user}127.0.0.1:{}/{module}/{path}", self.port)
    }

    /// Stops the daemon and every connection it serves, at once (SIGKILL to its
    /// process group), then starts it again on the same port.
    pub fn crash_and_restart(&mut self) {
        // SAFETY: the daemon leads a process group of its own.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let (child, dir) = RsyncDaemon::spawn(&self.root, self.port);
        (self.child, self.dir) = (child, dir);
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        // The connections it serves are its children, in its group.
        // SAFETY: the daemon leads a process group of its own.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        stop_child(&mut self.child, libc::SIGTERM);
    }
}
