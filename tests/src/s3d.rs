//! Object stores on loopback for the `object-store` provider's tests: moto_server (PyPI
//! `moto[server]`, in the test virtualenv), boto3 to look behind the provider's back,
//! and a throttling proxy of our own in front of moto that answers `503 SlowDown` to
//! the requests it is told to refuse. All are stopped when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ftpd::test_python;
use crate::httpd::free_port;
use crate::stop_child;

/// moto_server on 127.0.0.1.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts moto_server and waits for it to listen.
    pub fn start() -> Moto {
        let bin = test_python().with_file_name("moto_server");
        assert!(
            bin.exists(),
            "{} is missing: scripts/install-test-deps installs moto[server]",
            bin.display()
        );
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        crate::wait_for_port(&mut child, port, "moto_server");
        Moto { child, port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs Python with `s3`, a boto3 client of this server, defined first; its stdout.
    pub fn boto(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n",
            self.endpoint()
        );
        run_python(&(prelude + script), "boto3")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM);
    }
}

/// A proxy in front of moto that refuses multipart part uploads (`PUT ...?partNumber=`)
/// with `503 SlowDown` while `refuse_parts` is set, and forwards everything else.
pub struct ThrottlingProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    /// How many requests it refused.
    pub refused: Arc<AtomicUsize>,
}

impl ThrottlingProxy {
    /// Starts the proxy in front of `upstream` (`127.0.0.1:<port>`).
    pub fn start(upstream: u16) -> ThrottlingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let (stop2, refused2) = (stop.clone(), refused.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let refused = refused2.clone();
                        std::thread::spawn(move || {
                            let _ = serve(client, upstream, &refused);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ThrottlingProxy {
            port,
            stop,
            refused,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One connection: each request read whole, then refused or forwarded (with
/// `Connection: close` upstream, so the answer is read to its end).
fn serve(client: TcpStream, upstream: u16, refused: &AtomicUsize) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    loop {
        let mut head = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if let Some(v) = line
                .to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(str::trim)
            {
                length = v.parse().unwrap_or(0);
            }
            let end = line == "\r\n";
            if !line.to_ascii_lowercase().starts_with("connection:") {
                head.extend_from_slice(line.as_bytes());
            }
            if end {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let request_line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        if request_line.starts_with("PUT ") && request_line.contains("partNumber=") {
            refused.fetch_add(1, Ordering::Relaxed);
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                xml.len()
            )?;
            continue;
        }
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        let end = head.len() - 2;
        up.write_all(&head[..end])?;
        up.write_all(b"Connection: close\r\n\r\n")?;
        up.write_all(&body)?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer)?;
        client.write_all(&answer)?;
    }
}

/// Azurite's blob service (npm `azurite`, installed in `target/test-node`) on
/// 127.0.0.1, with the emulator's well-known account.
pub struct Azurite {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Azurite {
    /// The emulator's account key, public by design.
    const KEY: &'static str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    /// Starts Azurite's blob service on a free port, storing in a fresh directory.
    pub fn start() -> Azurite {
        let bin = crate::target_root().join("test-node/node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} is missing: scripts/install-test-deps installs azurite with npm",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.path())
            .args(["--silent", "--skipApiVersionCheck", "--loose"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite starts");
        crate::wait_for_port(&mut child, port, "azurite");
        Azurite {
            child,
            port,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<port>`, what `AZURITE_BLOB_STORAGE_URL` is set to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs Python with `blobs`, an azure-storage-blob `BlobServiceClient` of this
    /// server, defined first; its stdout.
    pub fn python(&self, script: &str) -> String {
        let prelude = format!(
            "from azure.storage.blob import BlobServiceClient\nblobs = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={}/devstoreaccount1;')\n",
            Azurite::KEY,
            self.url()
        );
        run_python(&(prelude + script), "azure-storage-blob")
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM);
    }
}

/// Runs `script` with the test virtualenv's Python, asserting it succeeds; its stdout.
fn run_python(script: &str, what: &str) -> String {
    let out = Command::new(test_python())
        .arg("-c")
        .arg(script)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{what} script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
