//! HTTP servers for the http provider's tests, on loopback: [`FaultServer`], a small
//! server of our own that misbehaves on purpose (error statuses, short bodies, stalls,
//! redirect loops, gzip, chunks, auth), and [`Nginx`], the stock server from the Debian
//! packages, started with a config of its own and stopped by its pid.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bytes `/data/<n>` serves: `i % 251` for each offset `i`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[derive(Default)]
struct State {
    hits: HashMap<String, u32>,
    stored: HashMap<String, Vec<u8>>,
    authorizations: Vec<String>,
    /// Every request: method, path and its headers (names lower-cased).
    requests: Vec<(String, String, HashMap<String, String>)>,
}

/// A fault-injecting HTTP/1.1 server on 127.0.0.1; one thread per connection, each
/// response closes its connection.
pub struct FaultServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultServer {
    /// Starts the server on a free port.
    pub fn start() -> FaultServer {
        FaultServer::start_on("127.0.0.1")
    }

    /// Starts the server on a free port of the loopback address `ip` (`127.0.0.2` is
    /// another host as far as a client can tell).
    pub fn start_on(ip: &str) -> FaultServer {
        let listener = TcpListener::bind((ip, 0)).expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let st = state.clone();
        accept_loop(listener, stop.clone(), move |conn| {
            let _ = serve(conn, &st);
        });
        FaultServer { addr, state, stop }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// What a PUT to `/put/<name>` stored.
    pub fn stored(&self, name: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().stored.get(name).cloned()
    }

    /// Every request received: method, path and headers (names lower-cased).
    pub fn requests(&self) -> Vec<(String, String, HashMap<String, String>)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every Authorization header received.
    pub fn authorizations(&self) -> Vec<String> {
        self.state.lock().unwrap().authorizations.clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Accepts connections on `listener` until `stop` is raised (and a connection wakes
/// the loop), handling each on a thread of its own.
fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) {
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(conn) = conn {
                let handle = handle.clone();
                std::thread::spawn(move || handle(conn));
            }
        }
    });
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    let mut has_length = false;
    for (k, v) in headers {
        has_length |=
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding");
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

/// `data` gzip-encoded, as a server with `Content-Encoding: gzip` sends it.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

fn serve(mut conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    }
    let hit = {
        let mut st = state.lock().unwrap();
        let hit = st.hits.entry(path.clone()).or_default();
        *hit += 1;
        let hit = *hit;
        if let Some(a) = headers.get("authorization") {
            st.authorizations.push(a.clone());
        }
        st.requests
            .push((method.clone(), path.clone(), headers.clone()));
        hit
    };
    let auth = headers.get("authorization").cloned().unwrap_or_default();
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["data", n]) => respond(&mut conn, "200 OK", &[], &pattern(n.parse().unwrap_or(0))),
        ("GET", ["status", code]) => respond(
            &mut conn,
            &format!("{code} Status"),
            &[],
            format!("error page {code}\n").as_bytes(),
        ),
        ("GET", ["flaky", _]) if hit == 1 => {
            respond(&mut conn, "500 Internal Server Error", &[], b"try again\n")
        }
        ("GET", ["flaky", _]) => respond(&mut conn, "200 OK", &[], b"recovered\n"),
        ("GET", ["retry-after"]) if hit == 1 => respond(
            &mut conn,
            "503 Service Unavailable",
            &[("Retry-After", "1".into())],
            b"busy\n",
        ),
        ("GET", ["retry-after"]) => respond(&mut conn, "200 OK", &[], b"served\n"),
        ("GET", ["short"]) => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n",
            )?;
            conn.write_all(&pattern(400))?;
            conn.flush()
        }
        ("GET", ["drop", n]) => {
            // The first answer breaks off halfway; a ranged request gets the rest.
            let n: usize = n.parse().unwrap_or(0);
            let data = pattern(n);
            let range = headers
                .get("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|r| r.parse::<usize>().ok());
            match range {
                Some(start) if headers.get("if-range").map(String::as_str) == Some("\"v1\"") => {
                    respond(
                        &mut conn,
                        "206 Partial Content",
                        &[
                            ("Content-Range", format!("bytes {start}-{}/{n}", n - 1)),
                            ("ETag", "\"v1\"".into()),
                        ],
                        &data[start..],
                    )
                }
                _ => {
                    let head = format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {n}\r\nAccept-Ranges: bytes\r\nETag: \"v1\"\r\n\r\n");
                    conn.write_all(head.as_bytes())?;
                    conn.write_all(&data[..n / 2])?;
                    conn.flush()
                }
            }
        }
        ("GET", ["etag"]) if headers.get("if-none-match").map(String::as_str) == Some("\"e1\"") => {
            respond(
                &mut conn,
                "304 Not Modified",
                &[("ETag", "\"e1\"".into())],
                b"",
            )
        }
        ("GET", ["etag"]) => respond(
            &mut conn,
            "200 OK",
            &[("ETag", "\"e1\"".into())],
            b"versioned\n",
        ),
        ("GET", ["stall"]) => {
            conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 100\r\n\r\n")?;
            conn.write_all(&pattern(10))?;
            conn.flush()?;
            std::thread::sleep(Duration::from_secs(20));
            Ok(())
        }
        ("GET", ["redirect", k]) => match k.parse::<u32>().unwrap_or(0) {
            0 => respond(&mut conn, "200 OK", &[], b"landed\n"),
            k => respond(
                &mut conn,
                "302 Found",
                &[("Location", format!("/redirect/{}", k - 1))],
                b"",
            ),
        },
        ("GET", ["loop"]) => respond(&mut conn, "302 Found", &[("Location", "/loop".into())], b""),
        // A part of the file answering a request for all of it.
        ("GET", ["partial"]) => respond(
            &mut conn,
            "206 Partial Content",
            &[("Content-Range", "bytes 0-9/1000".into())],
            &pattern(10),
        ),
        ("GET", ["gzip"]) => respond(
            &mut conn,
            "200 OK",
            &[("Content-Encoding", "gzip".into())],
            &gzip(b"hello, gzip\n"),
        ),
        ("GET", ["gzip-bomb"]) => {
            // 64 MiB of zeros in a body of about 64 KiB.
            let body = gzip(&vec![0u8; 64 << 20]);
            respond(
                &mut conn,
                "200 OK",
                &[("Content-Encoding", "gzip".into())],
                &body,
            )
        }
        ("GET", ["gzip-cut"]) => {
            // A gzip body that breaks off halfway, on every attempt.
            let body = gzip(&pattern(64 << 10));
            let head = format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", body.len());
            conn.write_all(head.as_bytes())?;
            conn.write_all(&body[..body.len() / 2])?;
            conn.flush()
        }
        ("GET", ["chunked"]) => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
            )?;
            conn.write_all(b"6\r\nhello \r\n8\r\nchunked\n\r\n0\r\n\r\n")?;
            conn.flush()
        }
        ("GET", ["basic"]) if auth == "Basic dXNlcjpodW50ZXIy" => {
            respond(&mut conn, "200 OK", &[], b"basic ok\n")
        }
        ("GET", ["bearer"]) if auth == "Bearer tok-123" => {
            respond(&mut conn, "200 OK", &[], b"bearer ok\n")
        }
        ("GET", ["basic" | "bearer"]) => {
            respond(&mut conn, "401 Unauthorized", &[], b"who are you\n")
        }
        ("PUT", ["put", name]) => {
            state
                .lock()
                .unwrap()
                .stored
                .insert((*name).to_owned(), body);
            respond(&mut conn, "201 Created", &[], b"")
        }
        ("PUT", ["forbidden", _]) => respond(&mut conn, "403 Forbidden", &[], b"no\n"),
        _ => respond(&mut conn, "404 Not Found", &[], b"no such thing\n"),
    }
}

/// The Debian nginx binary.
fn nginx_bin() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nginx is missing: scripts/install-test-deps installs it (apt-get install nginx)");
}

/// nginx on a free loopback port, serving `root` with WebDAV PUT under `/dav/`; stopped
/// (by its pid) when dropped.
pub struct Nginx {
    child: Child,
    port: u16,
    tls_port: Option<u16>,
    _dir: tempfile::TempDir,
}

/// A test CA and a server certificate it signed for `127.0.0.1` and `localhost`, made
/// with openssl in `dir`: (`ca.pem`, `server.pem`, `server.key`).
pub fn make_test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (scripts/install-test-deps installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n",
    )
    .expect("write san.cnf");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=stagehost test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// A port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Nginx {
    /// Starts nginx serving `root`.
    pub fn start(root: &Path) -> Nginx {
        Nginx::start_with_tls(root, None)
    }

    /// Starts nginx serving `root`, and with `tls` (certificate, key) also over HTTPS
    /// on a second port.
    pub fn start_with_tls(root: &Path, tls: Option<(&Path, &Path)>) -> Nginx {
        Nginx::start_with(root, tls, "")
    }

    /// Starts nginx serving `root` with `extra` directives in its plain server block
    /// (`location = /moved { return 302 http://...; }`).
    pub fn start_with_conf(root: &Path, extra: &str) -> Nginx {
        Nginx::start_with(root, None, extra)
    }

    /// Starts nginx over HTTP and HTTPS with `extra` directives in both server blocks.
    pub fn start_with_tls_conf(root: &Path, tls: (&Path, &Path), extra: &str) -> Nginx {
        Nginx::start_with(root, Some(tls), extra)
    }

    fn start_with(root: &Path, tls: Option<(&Path, &Path)>, extra: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let tls_port = tls.map(|_| free_port());
        let tls_server = match (tls, tls_port) {
            (Some((cert, key)), Some(p)) => format!(
                "  server {{\n    listen 127.0.0.1:{p} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    root {};\n{extra}\n  }}\n",
                cert.display(),
                key.display(),
                root.display()
            ),
            _ => String::new(),
        };
        let d = dir.path().display();
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::create_dir_all(root.join("dav")).expect("mkdir dav");
        let conf = format!(
            "{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  sendfile on;\n  server {{\n    listen 127.0.0.1:{port};\n    root {};\n    location /dav/ {{\n      dav_methods PUT DELETE;\n      create_full_put_path on;\n      client_max_body_size 0;\n    }}\n{extra}\n  }}\n{tls_server}}}\n",
            root.display(),
            // As root, the workers would run as nobody and not read a private tempdir.
            // SAFETY: geteuid has no preconditions.
            user = if unsafe { libc::geteuid() } == 0 { "user root;\n" } else { "" },
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        for p in std::iter::once(port).chain(tls_port) {
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(Instant::now() < deadline, "nginx did not listen on {p}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Nginx {
            child,
            port,
            tls_port,
            _dir: dir,
        }
    }

    /// `https://127.0.0.1:<tls port><path>` (when started with TLS).
    pub fn tls_url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}{path}",
            self.tls_port.expect("nginx was started with TLS")
        )
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        crate::stop_child(&mut self.child, libc::SIGQUIT);
    }
}

/// A CONNECT proxy on 127.0.0.1: tunnels each CONNECT to its target and records the
/// targets asked for.
pub struct ConnectProxy {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    /// Starts the proxy on a free port.
    pub fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tg = targets.clone();
        accept_loop(listener, stop.clone(), move |conn| {
            let _ = tunnel(conn, &tg);
        });
        ConnectProxy {
            addr,
            targets,
            stop,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `host:port`s CONNECT asked for, in order.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn tunnel(mut client: TcpStream, targets: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_owned(),
    );
    if method != "CONNECT" {
        return client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
    }
    targets.lock().unwrap().push(target.clone());
    let upstream = TcpStream::connect(&target)?;
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut up_read, mut up_write) = (upstream.try_clone()?, upstream);
    let mut client_write = client.try_clone()?;
    let forward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut up_write);
        let _ = up_write.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut up_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Write);
    let _ = forward.join();
    Ok(())
}

/// tinyproxy from the Debian packages on a free loopback port, as sites run it:
/// `CONNECT` allowed to port 443 only, plain `http://` forwarded, and with `auth`
/// (user, password) basic proxy authentication required. Stopped by its pid.
pub struct Tinyproxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy.
    pub fn start(auth: Option<(&str, &str)>) -> Tinyproxy {
        let bin = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("tinyproxy is missing: scripts/install-test-deps installs it (apt-get install tinyproxy)");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        let auth = auth
            .map(|(user, password)| format!("BasicAuth {user} {password}\n"))
            .unwrap_or_default();
        let conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nConnectPort 443\nMaxClients 50\nLogLevel Info\nLogFile \"{d}/tinyproxy.log\"\nPidFile \"{d}/tinyproxy.pid\"\nDisableViaHeader Yes\n{auth}"
        );
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).expect("write tinyproxy.conf");
        let mut child = Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy starts");
        crate::wait_for_port(&mut child, port, "tinyproxy");
        Tinyproxy { child, port, dir }
    }

    /// `http://[userinfo@]127.0.0.1:<port>`.
    pub fn url(&self, userinfo: Option<&str>) -> String {
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        format!("http://{userinfo}127.0.0.1:{}", self.port)
    }

    /// The request lines tinyproxy logged (`GET http://… HTTP/1.1`, `CONNECT …`).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): ").map(|(_, r)| r.to_owned()))
            .filter(|r| r.contains(" HTTP/1."))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        crate::stop_child(&mut self.child, libc::SIGTERM);
    }
}
