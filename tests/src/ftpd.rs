//! FTP servers on loopback for the `ftp` provider's tests: pyftpdlib (PyPI), with a
//! few faults switched on by flags, and vsftpd (Debian). Both are stopped by their
//! pid when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::httpd::free_port;
use crate::target_root;

/// The Python of the test virtualenv that `scripts/install-test-deps` makes
/// (`target/test-venv`), with pyftpdlib and pyOpenSSL installed.
pub fn test_python() -> PathBuf {
    let python = target_root().join("test-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps (it makes the virtualenv and installs pyftpdlib)",
        python.display()
    );
    python
}

/// pyftpdlib serving one directory; anonymous logins may read and write there.
const PYFTPD: &str = r#"
import argparse, logging, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

p = argparse.ArgumentParser()
p.add_argument("--root", required=True)
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--user")
p.add_argument("--password")
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--no-epsv", action="store_true")
p.add_argument("--short-first-retr", type=int, default=0)
p.add_argument("--stall-retr", action="store_true")
p.add_argument("--rewrite-after-short", action="store_true")
p.add_argument("--stor-limit", type=int, default=0)
a = p.parse_args()
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

auth = DummyAuthorizer()
auth.add_anonymous(a.root, perm="elradfmwMT")
if a.user:
    auth.add_user(a.user, a.password, a.root, perm="elradfmwMT")

base = FTPHandler
if a.cert:
    from pyftpdlib.handlers import TLS_FTPHandler
    base = TLS_FTPHandler
    base.certfile = a.cert
    base.keyfile = a.key
    base.tls_control_required = True
    base.tls_data_required = True

shortened = set()

class Handler(base):
    authorizer = auth
    passive_ports = None
    if a.stor_limit:
        # Uploads arrive at most this many bytes a second.
        from pyftpdlib.handlers import ThrottledDTPHandler
        class Slow(ThrottledDTPHandler):
            read_limit = a.stor_limit
        dtp_handler = Slow

    def ftp_EPSV(self, line):
        if a.no_epsv:
            self.respond("502 EPSV not implemented here.")
            return
        return super().ftp_EPSV(line)

    def ftp_RETR(self, file):
        if a.stall_retr:
            return
        if a.short_first_retr and self._restart_position == 0 and file not in shortened:
            # Fault: the first RETR of a file sends only its first bytes, then 226.
            shortened.add(file)
            with open(file, "rb") as f:
                data = f.read(a.short_first_retr)
            self.push_dtp_data(data, isproducer=False, cmd="RETR")
            if a.rewrite_after_short:
                # Fault: the file is then rewritten with other bytes of the same size
                # (and a later modification time).
                import os
                size = os.path.getsize(file)
                with open(file, "wb") as f:
                    f.write(bytes((i * 7 + 3) % 251 for i in range(size)))
                st = os.stat(file)
                os.utime(file, (st.st_atime, st.st_mtime + 10))
            return file
        return super().ftp_RETR(file)

server = FTPServer((a.host, 0), Handler)
print("ready", server.socket.getsockname()[1], flush=True)
server.serve_forever()
"#;

/// What a pyftpdlib server is started with.
#[derive(Default)]
pub struct PyFtpdOptions<'a> {
    /// `127.0.0.1` when `None`; `::1` for IPv6.
    pub host: Option<&'a str>,
    /// A user and password besides anonymous.
    pub user: Option<(&'a str, &'a str)>,
    /// FTPS, required on control and data: a certificate and its key.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// Refuse `EPSV` as not implemented.
    pub no_epsv: bool,
    /// The first `RETR` of each file sends only this many bytes, then `226`.
    pub short_first_retr: Option<u64>,
    /// `RETR` is never answered.
    pub stall_retr: bool,
    /// After the short first `RETR`, the file is rewritten: other bytes, the same
    /// size, a later modification time.
    pub rewrite_after_short: bool,
    /// Uploads arrive at most this many bytes a second.
    pub stor_limit: Option<u64>,
}

/// pyftpdlib on a loopback port.
pub struct PyFtpd {
    child: Child,
    host: String,
    port: u16,
}

impl PyFtpd {
    /// Starts pyftpdlib serving `root`.
    pub fn start(root: &Path, options: PyFtpdOptions<'_>) -> PyFtpd {
        let host = options.host.unwrap_or("127.0.0.1");
        let mut cmd = Command::new(test_python());
        cmd.arg("-c")
            .arg(PYFTPD)
            .arg("--root")
            .arg(root)
            .args(["--host", host]);
        if let Some((user, password)) = options.user {
            cmd.args(["--user", user, "--password", password]);
        }
        if let Some((cert, key)) = options.tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if options.no_epsv {
            cmd.arg("--no-epsv");
        }
        if let Some(n) = options.short_first_retr {
            cmd.args(["--short-first-retr", &n.to_string()]);
        }
        if let Some(n) = options.stor_limit {
            cmd.args(["--stor-limit", &n.to_string()]);
        }
        if options.rewrite_after_short {
            cmd.arg("--rewrite-after-short");
        }
        if options.stall_retr {
            cmd.arg("--stall-retr");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test virtualenv's python starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("pyftpdlib says it is ready");
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "pyftpdlib did not start (is it installed in the test virtualenv?): {line:?}"
                )
            });
        PyFtpd {
            child,
            host: host.to_owned(),
            port,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `<scheme>://[<userinfo>@]<host>:<port>/<path>`, an IPv6 host in brackets.
    pub fn url(&self, scheme: &str, userinfo: Option<&str>, path: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        format!("{scheme}://{userinfo}{host}:{}/{path}", self.port)
    }
}

impl Drop for PyFtpd {
    fn drop(&mut self) {
        crate::stop_child(&mut self.child, libc::SIGTERM);
    }
}

/// vsftpd from the Debian packages on a loopback port, anonymous only: it reads
/// from its root and takes uploads (with renames and deletes) under `incoming/`.
pub struct Vsftpd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Vsftpd {
    /// Starts vsftpd with `root` as the anonymous root (it must not be writable by
    /// the `ftp` user; `incoming/` is made writable), and with `tls` (certificate,
    /// key), FTPS required with TLS session reuse on data connections.
    pub fn start(root: &Path, tls: Option<(&Path, &Path)>) -> Vsftpd {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "vsftpd's tests run as root (vsftpd chroots anonymous sessions)"
        );
        let bin = ["/usr/sbin/vsftpd", "/usr/local/sbin/vsftpd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect(
                "vsftpd is missing: scripts/install-test-deps installs it (apt-get install vsftpd)",
            );
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).expect("mkdir");
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let incoming = root.join("incoming");
        std::fs::create_dir_all(&incoming).expect("mkdir incoming");
        std::fs::set_permissions(&incoming, std::fs::Permissions::from_mode(0o777))
            .expect("chmod incoming");
        let port = free_port();
        let tls_lines = match tls {
            Some((cert, key)) => format!(
                "ssl_enable=YES\nallow_anon_ssl=YES\nforce_anon_logins_ssl=YES\nforce_anon_data_ssl=YES\nrequire_ssl_reuse=YES\nrsa_cert_file={}\nrsa_private_key_file={}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let conf = format!(
            "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\nanonymous_enable=YES\nlocal_enable=NO\nanon_root={}\nno_anon_password=YES\nwrite_enable=YES\nanon_upload_enable=YES\nanon_mkdir_write_enable=YES\nanon_other_write_enable=YES\nanon_umask=022\nseccomp_sandbox=NO\nsecure_chroot_dir={}\nxferlog_enable=YES\nxferlog_std_format=NO\nlog_ftp_protocol=YES\nvsftpd_log_file={}/vsftpd.log\nconnect_from_port_20=NO\n{tls_lines}",
            root.display(),
            empty.display(),
            dir.path().display()
        );
        let conf_path = dir.path().join("vsftpd.conf");
        std::fs::write(&conf_path, conf).expect("write vsftpd.conf");
        // A tempdir is 0700: the chrooted sessions must reach the root through it.
        let mut child = Command::new(bin)
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vsftpd starts");
        crate::wait_for_port(&mut child, port, "vsftpd");
        Vsftpd { child, port, dir }
    }

    /// `<scheme>://127.0.0.1:<port>/<path>`.
    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/{path}", self.port)
    }

    /// How many control connections vsftpd has accepted so far (its log's `CONNECT`
    /// lines).
    pub fn connections(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("vsftpd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("] CONNECT: Client"))
            .count()
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        crate::stop_child(&mut self.child, libc::SIGTERM);
    }
}
