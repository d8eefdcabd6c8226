//! The channel between a run and its workers: TLS 1.3 with a key made for the run,
//! a mutual proof of the run's secret inside it, and bounded reads.
//!
//! - The run makes a fresh key and self-signed certificate ([`RunKey::generate`]); the
//!   worker's secret file holds the run's secret and the certificate's SHA-256
//!   fingerprint, and a worker accepts only that certificate: a process that took the
//!   run's port after it died cannot complete the handshake, so a worker whose run is
//!   gone runs nothing. Task messages (which carry URLs with credentials) travel
//!   encrypted.
//! - Inside TLS each side proves it knows the secret without sending it: HMAC-SHA256
//!   over both sides' nonces, with a different label each way ([`proof`]).
//! - Whatever is read before a peer has proved itself is bounded: the handshake has a
//!   deadline, and a message line may hold at most [`PRE_AUTH_LIMIT`] bytes.
//!
//! The worker's side is a blocking [`Channel`]: one thread reads it
//! ([`Channel::receive`]), any thread may send ([`Channel::send`]), and the reader
//! waits for the socket without holding the TLS state, so senders are never blocked
//! behind a read. The run's side is asynchronous (`dispatcher.rs`, over tokio-rustls
//! with [`RunKey::server_config`]); both speak the same lines.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// The most a message line may hold before its peer proved itself.
pub const PRE_AUTH_LIMIT: usize = 4096;
/// The most a message line may hold from a peer that proved itself.
pub const LIMIT: usize = 64 << 20;
/// How long a peer has to complete the TLS handshake and the proof.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// The run's side of the trust: its secret, its TLS identity and the identity's
/// fingerprint.
pub struct RunKey {
    /// The run's secret (hex).
    pub secret: String,
    /// SHA-256 of the certificate (hex).
    pub fingerprint: String,
    server: Arc<rustls::ServerConfig>,
}

/// The worker's side: what its secret file holds.
#[derive(Clone)]
pub struct WorkerKey {
    /// The run's secret.
    pub secret: String,
    /// The run certificate's SHA-256 fingerprint.
    pub fingerprint: String,
}

// Newer rustls releases prefer a post-quantum key exchange; ring's provider is kept
// (both ends are ours, and the key is per run).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// 32 random bytes from the OS, as 64 hex digits.
pub fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!(
        "{:x}",
        sha2::digest::generic_array::GenericArray::from(bytes)
    ))
}

impl RunKey {
    /// A fresh secret, key and certificate.
    pub fn generate() -> io::Result<RunKey> {
        let secret = random_hex()?;
        let certified = rcgen::generate_simple_self_signed(vec!["stagehost-run".to_owned()])
            .map_err(io::Error::other)?;
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let fingerprint = format!("{:x}", Sha256::digest(cert.as_ref()));
        let key = PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(io::Error::other)?;
        Ok(RunKey {
            secret,
            fingerprint,
            server: Arc::new(server),
        })
    }

    /// The TLS side of the run's listener.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// What the worker's secret file holds: the secret, then `sha256:<fingerprint>`.
    pub fn file_text(&self) -> String {
        format!("{}\nsha256:{}\n", self.secret, self.fingerprint)
    }
}

impl WorkerKey {
    /// Reads a secret file's text (see [`RunKey::file_text`]).
    pub fn parse(text: &str) -> Result<WorkerKey, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let secret = lines.next().unwrap_or_default().to_owned();
        let fingerprint = lines
            .next()
            .and_then(|l| l.strip_prefix("sha256:"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(&secret, 64) || !is_hex(&fingerprint, 64) {
            return Err(
                "the secret file does not hold a run's secret and its certificate fingerprint (sha256:...)"
                    .into(),
            );
        }
        Ok(WorkerKey {
            secret,
            fingerprint,
        })
    }
}

/// Accepts exactly the certificate with the pinned fingerprint.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let seen = format!("{:x}", Sha256::digest(end_entity.as_ref()));
        if same(&seen, &self.fingerprint) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the run's certificate is not the one in the secret file".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Constant-time comparison.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The proof that `who` (`"run"` or `"worker"`) knows `secret`, for one exchange of
/// nonces: HMAC-SHA256(secret, who | worker nonce | run nonce), hex.
pub fn proof(secret: &str, who: &str, worker_nonce: &str, run_nonce: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    for part in [who, worker_nonce, run_nonce] {
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part.as_bytes());
    }
    format!("{:x}", mac.finalize().into_bytes())
}

/// One TLS connection, readable by one thread and writable by any.
pub struct Channel {
    conn: Mutex<rustls::Connection>,
    sock: TcpStream,
    /// Plaintext read but not yet returned as lines (the reader's alone).
    pending: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Channel")
    }
}

impl Channel {
    /// The run's side of a new connection, blocking: the TLS handshake, within
    /// `deadline` (the run itself accepts asynchronously, in `dispatcher.rs`).
    #[cfg(test)]
    pub fn accept(sock: TcpStream, key: &RunKey, deadline: Instant) -> io::Result<Channel> {
        let conn = rustls::ServerConnection::new(key.server.clone()).map_err(io::Error::other)?;
        Channel::handshake(sock, conn.into(), deadline)
    }

    /// The worker's side: the TLS handshake with the pinned run, within `deadline`.
    pub fn connect(sock: TcpStream, key: &WorkerKey, deadline: Instant) -> io::Result<Channel> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: key.fingerprint.clone(),
                provider: provider(),
            }))
            .with_no_client_auth();
        let name = ServerName::try_from("stagehost-run").map_err(io::Error::other)?;
        let conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
        Channel::handshake(sock, conn.into(), deadline)
    }

    fn handshake(
        mut sock: TcpStream,
        mut conn: rustls::Connection,
        deadline: Instant,
    ) -> io::Result<Channel> {
        while conn.is_handshaking() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::TimedOut, "the handshake took too long")
                })?;
            sock.set_read_timeout(Some(left))?;
            sock.set_write_timeout(Some(left))?;
            conn.complete_io(&mut sock)?;
        }
        sock.set_read_timeout(None)?;
        sock.set_write_timeout(Some(Duration::from_secs(60)))?;
        let _ = sock.set_nodelay(true);
        Ok(Channel {
            conn: Mutex::new(conn),
            sock,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Sends one message line.
    pub fn send<T: serde::Serialize>(&self, message: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.writer().write_all(&line)?;
        while conn.wants_write() {
            conn.write_tls(&mut &self.sock)?;
        }
        Ok(())
    }

    /// The next message line (at most `limit` bytes), `None` at the end of the
    /// connection; waits at most `timeout` for more bytes (`TimedOut` then). One
    /// thread reads a channel.
    pub fn receive<T: serde::de::DeserializeOwned>(
        &self,
        limit: usize,
        timeout: Option<Duration>,
    ) -> io::Result<Option<T>> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // The whole message must arrive within `timeout`: a peer sending a byte now
        // and then does not hold the reader longer.
        let until = timeout.map(|t| Instant::now() + t);
        let mut fetch = false;
        loop {
            let mut ended = false;
            {
                let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
                if fetch && conn.read_tls(&mut &self.sock)? == 0 {
                    ended = true;
                }
                // Records that arrived with earlier reads (or with the handshake) are
                // decrypted and taken before waiting on the socket again.
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let mut chunk = [0u8; 16 << 10];
                loop {
                    match conn.reader().read(&mut chunk) {
                        Ok(0) => {
                            ended = true;
                            break;
                        }
                        Ok(n) => pending.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                    if pending.len() > limit {
                        break;
                    }
                }
                while conn.wants_write() {
                    conn.write_tls(&mut &self.sock)?;
                }
            }
            if let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if pending.len() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a message longer than {limit} bytes"),
                ));
            }
            if ended {
                return Ok(None);
            }
            let wait = until.map(|u| u.saturating_duration_since(Instant::now()));
            if wait == Some(Duration::ZERO) || !self.wait_readable(wait)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "nothing arrived"));
            }
            fetch = true;
        }
    }

    /// Waits until the socket has bytes (or its end) to read; `false` on timeout.
    fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32,
            };
            use rustix::event::{PollFd, PollFlags, Timespec};
            let mut fd = [PollFd::new(&self.sock, PollFlags::IN)];
            let timeout = (ms >= 0).then(|| Timespec {
                tv_sec: i64::from(ms / 1000),
                tv_nsec: i64::from(ms % 1000) * 1_000_000,
            });
            match rustix::event::poll(&mut fd, timeout.as_ref()) {
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
            }
        }
    }

    /// Ends the connection both ways (a blocked reader wakes).
    pub fn shutdown(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_pinned_to_another_run_never_completes_the_handshake() {
        let impostor = RunKey::generate().unwrap();
        let real = RunKey::generate().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            Channel::accept(sock, &impostor, Instant::now() + HANDSHAKE_DEADLINE).is_ok()
        });
        let pinned = WorkerKey::parse(&real.file_text()).unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        let Err(e) = Channel::connect(sock, &pinned, Instant::now() + HANDSHAKE_DEADLINE) else {
            panic!("the impostor's certificate was accepted");
        };
        assert!(
            e.to_string().contains("not the one in the secret file"),
            "{e}"
        );
        assert!(!server.join().unwrap());
    }

    #[test]
    fn a_pinned_worker_talks_to_its_run_and_reads_are_bounded() {
        let run = RunKey::generate().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let good = WorkerKey::parse(&run.file_text()).unwrap();
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let ch = Channel::accept(sock, &run, Instant::now() + HANDSHAKE_DEADLINE).unwrap();
            let hello: Option<String> = ch.receive(PRE_AUTH_LIMIT, None).unwrap();
            ch.send(&"welcome").unwrap();
            // A line over the limit is refused, never buffered without end.
            let long: io::Result<Option<String>> = ch.receive(PRE_AUTH_LIMIT, None);
            (hello, long.is_err())
        });
        let deadline = Instant::now() + HANDSHAKE_DEADLINE;
        let ch = Channel::connect(TcpStream::connect(addr).unwrap(), &good, deadline).unwrap();
        ch.send(&"hello").unwrap();
        let answer: Option<String> = ch.receive(LIMIT, None).unwrap();
        assert_eq!(answer.as_deref(), Some("welcome"));
        ch.send(&"x".repeat(PRE_AUTH_LIMIT * 4)).unwrap();
        let (hello, refused) = server.join().unwrap();
        assert_eq!(hello.as_deref(), Some("hello"));
        assert!(refused);
    }

    #[test]
    fn proofs_differ_by_side_and_by_nonce() {
        let p = proof("s", "run", "a", "b");
        assert_eq!(p, proof("s", "run", "a", "b"));
        assert_ne!(p, proof("s", "worker", "a", "b"));
        assert_ne!(p, proof("s", "run", "a", "c"));
        assert_ne!(p, proof("t", "run", "a", "b"));
    }
}
