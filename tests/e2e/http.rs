//! The `http` provider, loaded from the built `.so`, against real servers on loopback:
//! nginx from the Debian packages (GET, WebDAV PUT) and a fault-injecting server of our
//! own (error statuses, retries, short bodies, stalls, redirects, gzip, chunks, auth).

use std::path::{Path, PathBuf};

use stagehost_tests::httpd::{pattern, FaultServer, Nginx};
use stagehost_tests::*;

/// A config with one `http` instance (`settings` as inline TOML) working in `wd/`,
/// with fast retries.
fn http_config(sandbox: &Sandbox, settings: &str) -> PathBuf {
    sandbox.write(
        "site.toml",
        format!(
            "[[provider]]\nname = \"web\"\nplugin = \"http\"\nsettings = {{ {settings} }}\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"web\"]\n[transfers]\nretries = 2\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n"
        ),
    )
}

/// nginx over HTTPS with a certificate from a fresh test CA, serving `name` (`size`
/// pattern bytes); the CA's PEM file.
fn nginx_with_tls(sandbox: &Sandbox, name: &str, size: usize) -> (Nginx, PathBuf) {
    let certs = sandbox.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (ca, cert, key) = stagehost_tests::httpd::make_test_ca(&certs);
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join(name), pattern(size)).unwrap();
    (Nginx::start_with_tls(&root, Some((&cert, &key))), ca)
}

/// `stagehost run` of one task `t` running `command` with `url` as its input; the
/// JSON report is on stdout.
fn run_one_task(sandbox: &Sandbox, cfg: &Path, command: &str, url: &str) -> Run {
    sandbox.run_workflow(
        cfg,
        &format!("[[task]]\nname = \"t\"\ncommand = {command:?}\ninputs = [{url:?}]\n"),
    )
}

fn stage_in(sandbox: &Sandbox, cfg: &Path, url: &str) -> Run {
    sandbox.run(&["--config", cfg.to_str().unwrap(), "stage", "in", url])
}

fn no_file_left(sandbox: &Sandbox, name: &str) {
    assert!(
        !sandbox.join("wd").join(name).exists(),
        "{name} was written"
    );
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

#[test]
fn nginx_serves_get_and_takes_a_webdav_put() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let data = pattern(3 << 20);
    std::fs::write(root.join("big.bin"), &data).unwrap();
    let nginx = Nginx::start(&root);
    let cfg = http_config(&sandbox, "");
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        &nginx.url("/big.bin"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/big.bin")).unwrap(), data);
    let json = out.json();
    assert_eq!(json["files"][0]["provider"], "web");
    assert_eq!(
        json["files"][0]["modes"],
        serde_json::json!(["separate-job"])
    );
    assert_eq!(json["files"][0]["bytes"], 3 << 20);

    // A missing file is an error, and nginx's 404 page never becomes the file.
    let out = stage_in(&sandbox, &cfg, &nginx.url("/missing.bin"));
    assert_eq!(out.code, Some(3));
    assert!(
        out.stderr.contains(&format!(
            "separate job: not found: GET {}: HTTP 404 Not Found",
            nginx.url("/missing.bin")
        )),
        "{}",
        out.stderr
    );
    no_file_left(&sandbox, "missing.bin");

    // Stage-out with PUT.
    let local = sandbox.write("result.bin", &data[..1 << 20]);
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "out",
        local.to_str().unwrap(),
        &nginx.url("/dav/sub/result.bin"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read(root.join("dav/sub/result.bin")).unwrap(),
        &data[..1 << 20]
    );
    // A PUT nginx refuses (no WebDAV outside /dav/) fails and keeps the local file.
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "out",
        local.to_str().unwrap(),
        &nginx.url("/plain/result.bin"),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("HTTP 405"), "{}", out.stderr);
    assert!(out.stderr.contains("is kept"), "{}", out.stderr);
    assert!(local.exists());
}

#[test]
fn error_statuses_are_errors_never_files_and_only_5xx_is_retried() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = http_config(&sandbox, "");
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"gone\"\ncommand = \"true\"\ninputs = [\"{}\"]\n\n[[task]]\nname = \"broken\"\ncommand = \"true\"\ninputs = [\"{}\"]\n\n[[task]]\nname = \"flaky\"\ncommand = \"cat {{inputs[0]}}\"\ninputs = [\"{}\"]\n",
            server.url("/status/404"),
            server.url("/status/500"),
            server.url("/flaky/a")
        ),
    );
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "run",
        flow.to_str().unwrap(),
        "--report",
        "-",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report = out.json();
    let task = |name: &str| task_in(&report, name).clone();
    assert_eq!(task("gone")["status"], "failed");
    assert_eq!(
        task("gone")["files"][0]["attempts"],
        1,
        "a 404 is not retried"
    );
    assert_eq!(server.hits("/status/404"), 1);
    assert_eq!(
        task("broken")["files"][0]["attempts"],
        3,
        "a 500 is retried"
    );
    assert_eq!(server.hits("/status/500"), 3);
    assert!(
        task("broken")["error"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "separate job: transient: GET {}: HTTP 500 Internal Server Error",
                server.url("/status/500")
            )),
        "{}",
        task("broken")["error"]
    );
    assert_eq!(task("flaky")["status"], "succeeded");
    assert_eq!(task("flaky")["files"][0]["attempts"], 2);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/a")).unwrap(),
        "recovered\n"
    );
    no_file_left(&sandbox, "404");
    no_file_left(&sandbox, "500");
}

#[test]
fn a_short_body_a_stall_and_a_redirect_loop_fail_and_leave_nothing() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = http_config(&sandbox, "read_timeout_secs = 1");
    let out = stage_in(&sandbox, &cfg, &server.url("/short"));
    assert_eq!(out.code, Some(6));
    assert!(out.stderr.contains(": transient: GET "), "{}", out.stderr);
    assert!(out.stderr.contains("/short"), "{}", out.stderr);
    no_file_left(&sandbox, "short");

    let out = stage_in(&sandbox, &cfg, &server.url("/stall"));
    assert_eq!(out.code, Some(6));
    assert!(out.stderr.contains(": timed out: GET "), "{}", out.stderr);
    no_file_left(&sandbox, "stall");

    let out = stage_in(&sandbox, &cfg, &server.url("/loop"));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("too many redirects"), "{}", out.stderr);
    no_file_left(&sandbox, "loop");

    // A 206 to a request for the whole file: a part is never saved as the file.
    let out = stage_in(&sandbox, &cfg, &server.url("/partial"));
    assert_eq!(out.code, Some(5));
    assert!(
        out.stderr
            .contains("sent part of the file (bytes 0-9/1000)"),
        "{}",
        out.stderr
    );
    no_file_left(&sandbox, "partial");
}

#[test]
fn a_gzip_encoded_body_is_saved_as_sent_unless_compressed_is_set() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    // As curl without --compressed: the bytes the server sent (a `.tar.gz` served with
    // `Content-Encoding: gzip` keeps its own bytes, and its checksum).
    let out = stage_in(&sandbox, &http_config(&sandbox, ""), &server.url("/gzip"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let saved = std::fs::read(sandbox.join("wd/gzip")).unwrap();
    assert_eq!(saved, stagehost_tests::httpd::gzip(b"hello, gzip\n"));
    std::fs::remove_file(sandbox.join("wd/gzip")).unwrap();
    // As curl --compressed: decoded.
    let cfg = http_config(&sandbox, "compressed = true");
    let out = stage_in(&sandbox, &cfg, &server.url("/gzip"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/gzip")).unwrap(),
        "hello, gzip\n"
    );
    // Decoding is bounded: 64 KiB that decode to 64 MiB, with a bound of 1 MiB.
    let cfg = http_config(
        &sandbox,
        "compressed = true, max_decompressed_bytes = 1048576",
    );
    let out = stage_in(&sandbox, &cfg, &server.url("/gzip-bomb"));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("decodes to more than 1048576 bytes (max_decompressed_bytes)"),
        "{}",
        out.stderr
    );
    assert_eq!(server.hits("/gzip-bomb"), 1, "a refusal is not retried");
    no_file_left(&sandbox, "gzip-bomb");
}

#[test]
fn redirects_and_chunked_bodies_arrive_whole() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = http_config(&sandbox, "");
    for (path, name, text) in [
        ("/redirect/3", "3", "landed\n"),
        ("/chunked", "chunked", "hello chunked\n"),
    ] {
        let out = stage_in(&sandbox, &cfg, &server.url(path));
        assert_eq!(out.code, Some(0), "{path}: {}", out.stderr);
        assert_eq!(
            std::fs::read_to_string(sandbox.join("wd").join(name)).unwrap(),
            text,
            "{path}"
        );
    }
    assert_eq!(server.hits("/redirect/0"), 1);
}

#[test]
fn credentials_are_sent_and_never_shown() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = http_config(&sandbox, "");
    let url = server
        .url("/basic")
        .replace("http://", "http://user:hunter2@");
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        &url,
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/basic")).unwrap(),
        "basic ok\n"
    );
    assert!(!format!("{}{}", out.stdout, out.stderr).contains("hunter2"));
    // A wrong password: a permission error that does not show it.
    let bad = server
        .url("/basic")
        .replace("http://", "http://user:wrong-secret@");
    let out = stage_in(&sandbox, &cfg, &bad);
    assert_eq!(out.code, Some(4));
    assert!(
        out.stderr
            .contains("permission denied: GET http://user:***@"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("wrong-secret"));

    // Settings credentials and a bearer token from the environment.
    let cfg = http_config(&sandbox, "username = \"user\", password = \"hunter2\"");
    let out = stage_in(&sandbox, &cfg, &server.url("/basic"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let cfg = http_config(&sandbox, "bearer_token_env = \"STAGEHOST_TEST_TOKEN\"");
    let out = sandbox.run_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "in",
            &server.url("/bearer"),
        ],
        &[("STAGEHOST_TEST_TOKEN", "tok-123")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/bearer")).unwrap(),
        "bearer ok\n"
    );
    let shown = sandbox.run(&["--config", cfg.to_str().unwrap(), "config", "show"]);
    assert!(!shown.stdout.contains("hunter2"));
}

#[test]
fn in_task_mode_and_host_scoping_in_a_workflow_with_put_stage_out() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = sandbox.write(
        "site.toml",
        format!(
            "[[provider]]\nname = \"private\"\nplugin = \"http\"\nsettings = {{ hosts = [\"{host}\"], username = \"user\", password = \"hunter2\", mode = \"in-task\" }}\n\n[[provider]]\nname = \"public\"\nplugin = \"http\"\n\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"private\", \"public\", \"file\"]\n",
            host = server.host()
        ),
    );
    let other = FaultServer::start();
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"join\"\ncommand = \"cat {{inputs[0]}} {{inputs[1]}} > {{outputs[0]}}\"\ninputs = [\"{}\", \"{}\"]\noutputs = [\"{}\"]\n",
            server.url("/basic"),
            other.url("/data/5"),
            server.url("/put/joined.txt")
        ),
    );
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "run",
        flow.to_str().unwrap(),
        "--report",
        "-",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report = out.json();
    let files = report["tasks"][0]["files"].as_array().unwrap().clone();
    assert_eq!(files[0]["provider"], "private");
    assert_eq!(files[0]["modes"][0], "in-task-step");
    assert_eq!(
        files[1]["provider"], "public",
        "another host falls through to the general instance"
    );
    assert_eq!(files[1]["modes"][0], "separate-job");
    assert_eq!(files[2]["provider"], "private");
    let mut expected = b"basic ok\n".to_vec();
    expected.extend(pattern(5));
    assert_eq!(server.stored("joined.txt").unwrap(), expected);
    assert!(
        other.authorizations().is_empty(),
        "credentials go only to their host"
    );
    assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"));
}

#[test]
fn https_trusts_the_configured_ca_and_a_bad_certificate_is_not_retried() {
    let sandbox = Sandbox::new();
    let (nginx, ca) = nginx_with_tls(&sandbox, "secure.bin", 100_000);
    let trusted = http_config(&sandbox, &format!("ca_file = {}", toml_path(&ca)));
    let out = stage_in(&sandbox, &trusted, &nginx.tls_url("/secure.bin"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read(sandbox.join("wd/secure.bin")).unwrap(),
        pattern(100_000)
    );
    std::fs::remove_file(sandbox.join("wd/secure.bin")).unwrap();

    // Without the CA the certificate is unknown: a permanent error, tried once.
    let untrusted = http_config(&sandbox, "");
    let out = run_one_task(&sandbox, &untrusted, "true", &nginx.tls_url("/secure.bin"));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let file = out.json()["tasks"][0]["files"][0].clone();
    assert_eq!(file["attempts"], 1, "{file:#}");
    let error = file["error"].as_str().unwrap();
    assert!(
        error.contains("separate job: cannot GET https://127.0.0.1:"),
        "{error}"
    );
    assert!(
        error.to_ascii_lowercase().contains("certificate"),
        "{error}"
    );
    no_file_left(&sandbox, "secure.bin");
}

#[test]
fn a_body_that_breaks_off_resumes_with_a_range_and_ends_with_the_exact_bytes() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = http_config(&sandbox, "");
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        &server.url("/drop/3000000"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read(sandbox.join("wd/3000000")).unwrap(),
        pattern(3_000_000)
    );
    assert_eq!(
        server.hits("/drop/3000000"),
        2,
        "one full request, one ranged"
    );
    assert_eq!(out.json()["files"][0]["bytes"], 3_000_000);
}

#[test]
fn a_503_with_retry_after_is_waited_out_and_retried() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = http_config(&sandbox, "");
    let out = run_one_task(
        &sandbox,
        &cfg,
        "cat {inputs[0]}",
        &server.url("/retry-after"),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let file = out.json()["tasks"][0]["files"][0].clone();
    assert_eq!(file["attempts"], 2);
    assert!(
        file["seconds"].as_f64().unwrap() >= 1.0,
        "the server asked for a second: {file:#}"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/retry-after")).unwrap(),
        "served\n"
    );
}

#[test]
fn https_goes_through_the_environments_proxy_unless_no_proxy_names_the_host() {
    let sandbox = Sandbox::new();
    let (nginx, ca) = nginx_with_tls(&sandbox, "p.bin", 50_000);
    let proxy = stagehost_tests::httpd::ConnectProxy::start();
    let cfg = http_config(&sandbox, &format!("ca_file = {}", toml_path(&ca)));
    let url = nginx.tls_url("/p.bin");
    let target = url
        .trim_start_matches("https://")
        .trim_end_matches("/p.bin")
        .to_owned();
    let run = |env: &[(&str, &str)]| {
        let _ = std::fs::remove_file(sandbox.join("wd/p.bin"));
        let out = sandbox.run_env(
            &["--config", cfg.to_str().unwrap(), "stage", "in", &url],
            env,
        );
        assert_eq!(out.code, Some(0), "{env:?}: {}", out.stderr);
        assert_eq!(
            std::fs::read(sandbox.join("wd/p.bin")).unwrap(),
            pattern(50_000)
        );
    };
    run(&[("HTTPS_PROXY", &proxy.url())]);
    assert_eq!(
        proxy.targets(),
        vec![target.clone()],
        "the https proxy tunnelled it"
    );
    // HTTP_PROXY is for http:// URLs only.
    run(&[("HTTP_PROXY", &proxy.url())]);
    // NO_PROXY names the host: straight there.
    run(&[
        ("HTTPS_PROXY", &proxy.url()),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ]);
    assert_eq!(
        proxy.targets(),
        vec![target],
        "nothing else went through the proxy"
    );
}

#[test]
fn a_rerun_revalidates_and_a_304_moves_no_bytes() {
    use std::os::unix::fs::MetadataExt;
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = http_config(&sandbox, "");
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let dest = sandbox.join("wd/etag");
    let stage_in_logged = |url: &str| {
        sandbox.run_env(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "stage",
                "in",
                "--json",
                url,
            ],
            &[("RUST_LOG", "stagehost::plugin=info")],
        )
    };
    let out = stage_in_logged(&server.url("/etag"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json()["files"][0]["cached"], false);
    let first = inode(&dest);
    let out = stage_in_logged(&server.url("/etag"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.hits("/etag"), 2);
    assert_eq!(inode(&dest), first, "a 304 leaves the file as it was");
    assert!(out.stderr.contains("not modified"), "{}", out.stderr);
    assert_eq!(
        out.json()["files"][0]["cached"],
        true,
        "the report says cached"
    );
    assert_eq!(out.json()["files"][0]["bytes"], "versioned\n".len());
    // Nothing moved, and the summary says so.
    assert_eq!(out.json()["summary"]["files_moved"], 0);
    assert_eq!(out.json()["summary"]["files_cached"], 1);
    assert_eq!(out.json()["version"], 1);
    // In a workflow's report too.
    let run = run_one_task(&sandbox, &cfg, "cat {inputs[0]}", &server.url("/etag"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.json()["tasks"][0]["files"][0]["cached"], true);
    // Its progress line says so too, never "staged in" with a size.
    assert!(
        run.stderr.contains("is current (cached, nothing moved"),
        "{}",
        run.stderr
    );
    assert_eq!(server.hits("/etag"), 3);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "versioned\n");
    // A file changed since it was fetched is fetched again, whatever its record says.
    std::fs::write(&dest, "edited locally\n").unwrap();
    let out = stage_in_logged(&server.url("/etag"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json()["files"][0]["cached"], false);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "versioned\n");

    // nginx answers the same question for a static file.
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("static.bin"), pattern(10_000)).unwrap();
    let nginx = Nginx::start(&root);
    assert_eq!(
        stage_in(&sandbox, &cfg, &nginx.url("/static.bin")).code,
        Some(0)
    );
    let first = inode(&sandbox.join("wd/static.bin"));
    assert_eq!(
        stage_in(&sandbox, &cfg, &nginx.url("/static.bin")).code,
        Some(0)
    );
    assert_eq!(inode(&sandbox.join("wd/static.bin")), first);
    // No record is left as a visible file beside the data.
    let visible: Vec<String> = std::fs::read_dir(sandbox.join("wd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let mut visible = visible;
    visible.sort();
    assert_eq!(visible, ["etag", "static.bin"]);
}

#[test]
fn plain_http_goes_through_a_stock_proxy_that_tunnels_only_to_443() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let data = pattern(2 << 20);
    std::fs::write(root.join("big.bin"), &data).unwrap();
    let nginx = Nginx::start(&root);
    let proxy = stagehost_tests::httpd::Tinyproxy::start(None);
    let cfg = http_config(&sandbox, "");
    let url = nginx.url("/big.bin");
    let env = [("http_proxy", proxy.url(None))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = sandbox.run_env(
        &["--config", cfg.to_str().unwrap(), "stage", "in", &url],
        &env,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/big.bin")).unwrap(), data);
    // A PUT's body passes through unchanged.
    let local = sandbox.write("up.bin", &data[..300_000]);
    let out = sandbox.run_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "out",
            local.to_str().unwrap(),
            &nginx.url("/dav/up.bin"),
        ],
        &env,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read(root.join("dav/up.bin")).unwrap(),
        &data[..300_000]
    );
    let requests = proxy.requests();
    assert!(
        requests.contains(&format!("GET {url} HTTP/1.1")),
        "tinyproxy forwarded the GET in absolute form: {requests:?}"
    );
    assert!(
        requests.contains(&format!("PUT {} HTTP/1.1", nginx.url("/dav/up.bin"))),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.starts_with("CONNECT")),
        "no tunnel was asked for: {requests:?}"
    );

    // A proxy that wants credentials gets them from the proxy URL, and they are
    // never shown.
    let guarded = stagehost_tests::httpd::Tinyproxy::start(Some(("px", "proxy-pw")));
    let _ = std::fs::remove_file(sandbox.join("wd/big.bin"));
    let with = guarded.url(Some("px:proxy-pw"));
    let out = sandbox.run_env(
        &["--config", cfg.to_str().unwrap(), "stage", "in", &url],
        &[("http_proxy", with.as_str())],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/big.bin")).unwrap(), data);
    let without = guarded.url(None);
    let out = sandbox.run_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "in",
            &nginx.url("/other.bin"),
        ],
        &[("http_proxy", without.as_str())],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("HTTP 407"), "{}", out.stderr);
    assert!(!out.stderr.contains("proxy-pw"));
}

#[test]
fn stat_asks_nginx_with_one_head_through_redirects_and_http_offers_no_listing() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("data.bin"), pattern(123_456)).unwrap();
    let nginx = Nginx::start_with_conf(&root, "location = /moved.bin { return 301 /data.bin; }\n");
    let cfg = http_config(&sandbox, "");
    let cfg = cfg.to_str().unwrap();
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stat",
        "--json",
        &nginx.url("/data.bin"),
        &nginx.url("/moved.bin"),
        &nginx.url("/absent.bin"),
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let json = out.json();
    for i in [0, 1] {
        assert_eq!(json[i]["kind"], "file");
        assert_eq!(json[i]["size"], 123_456);
        assert!(
            json[i]["validator"].as_str().unwrap().starts_with('"'),
            "{json}"
        );
        assert!(
            json[i]["modified"].as_str().unwrap().ends_with('Z'),
            "{json}"
        );
    }
    assert_eq!(json[2]["exists"], false);
    // Nothing was fetched: no body, no file.
    assert!(!sandbox.join("wd").exists());
    // No listing over HTTP: the provider says so, and nothing else is asked.
    let out = sandbox.run(&["--config", cfg, "ls", &nginx.url("/")]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("does not offer the `list` capability"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_file_with_mirrors_comes_from_the_first_source_that_serves_it_whole_and_right() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let root = sandbox.join("www");
    std::fs::create_dir_all(root.join("bad")).unwrap();
    std::fs::create_dir_all(root.join("good")).unwrap();
    let want = pattern(1000);
    std::fs::write(root.join("good/x.bin"), &want).unwrap();
    let mut wrong = want.clone();
    wrong[500] ^= 1;
    std::fs::write(root.join("bad/x.bin"), &wrong).unwrap();
    let nginx = Nginx::start(&root);
    let cfg = http_config(&sandbox, "");
    let sum = stagehost::checksum::digest(
        stagehost::checksum::Algorithm::Sha256,
        &root.join("good/x.bin"),
    )
    .unwrap();
    // A server error (retried, then given up), a cut body, a checksum mismatch, then
    // the right bytes.
    let sources = [
        server.url("/status/503"),
        server.url("/short"),
        nginx.url("/bad/x.bin"),
        nginx.url("/good/x.bin"),
    ];
    let flow = |sources: &[String]| {
        format!(
            "[[task]]\nname = \"t\"\ncommand = \"cp {{inputs[0]}} got.bin\"\ninputs = [{{ urls = {sources:?}, sha256 = \"{sum}\" }}]\n"
        )
    };
    let out = sandbox.run_workflow(&cfg, &flow(&sources));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/got.bin")).unwrap(), want);
    let file = &out.json()["tasks"][0]["files"][0];
    assert_eq!(
        file["source"],
        format!("{}#sha256={sum}", nginx.url("/good/x.bin")),
        "{file}"
    );
    assert!(
        file["url"].as_str().unwrap().contains("/status/503"),
        "{file}"
    );
    // The destination is named after the first source; nothing partial is left.
    assert_eq!(std::fs::read(sandbox.join("wd/503")).unwrap(), want);
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
    assert!(
        out.stderr.contains("staged from source 4 of 4, after: ")
            && out.stderr.contains("HTTP 503")
            && out.stderr.contains("checksum mismatch"),
        "{}",
        out.stderr
    );
    // Run again: the copy there has the checksum, so no source is asked (a failing
    // one would have replaced the good copy before its bytes were found wrong).
    let hits = server.hits("/status/503");
    let out = sandbox.run_workflow(&cfg, &flow(&sources));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.hits("/status/503"), hits);
    assert_eq!(out.json()["tasks"][0]["files"][0]["cached"], true);
    assert_eq!(std::fs::read(sandbox.join("wd/503")).unwrap(), want);
    // Two files whose first sources agree but whose others differ are two files: each
    // has a destination of its own (they shared one, and the task read one file twice).
    let two = format!(
        "[[task]]\nname = \"two\"\ncommand = \"cat {{inputs[0]}} {{inputs[1]}} > both.bin\"\ninputs = [{{ urls = [{:?}, {:?}] }}, {{ urls = [{:?}, {:?}] }}]\n",
        server.url("/status/404"),
        nginx.url("/good/x.bin"),
        server.url("/status/404"),
        nginx.url("/bad/x.bin"),
    );
    let out = sandbox.run_workflow(&cfg, &two);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read(sandbox.join("wd/both.bin")).unwrap(),
        [want.clone(), wrong.clone()].concat()
    );
    // No source serves it right: the task fails, naming every source, and nothing is
    // left where the file would land.
    std::fs::remove_file(sandbox.join("wd/503")).unwrap();
    let out = sandbox.run_workflow(&cfg, &flow(&sources[..3]));
    // Failures of different classes (transient, integrity): exit 1, whatever the order.
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let error = out.json()["tasks"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("none of its 3 source(s) could be staged: ")
            && error.contains("/status/503")
            && error.contains("/short")
            && error.contains("/bad/x.bin"),
        "{error}"
    );
    assert!(!error.contains('\n'));
    assert!(!sandbox.join("wd/503").exists());
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

#[test]
fn a_download_never_lands_on_a_local_file_of_the_workflow_with_the_same_name() {
    // Task A writes the local output dl.txt, which C reads; B downloads a dl.txt over
    // http into the same directory (the working directory is the workflow's). The
    // download lands beside A's output, whichever task is planned first.
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("dl.txt"), "SERVER\n").unwrap();
    let nginx = Nginx::start(&root);
    let cfg = sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"web\"\nplugin = \"http\"\n[[provider]]\nname = \"local\"\nplugin = \"file\"\n[executor.local]\nworking_dir = \"work\"\nworkers = 2\nstaging = [\"web\", \"local\"]\n",
    );
    let flow = sandbox.write(
        "work/flow.toml",
        format!(
            "[[task]]\nname = \"A\"\ncommand = \"echo A-bytes > {{outputs[0]}}\"\noutputs = [\"dl.txt\"]\n\n[[task]]\nname = \"B\"\ncommand = \"cat {{inputs[0]}} > {{outputs[0]}}\"\ninputs = [{:?}]\noutputs = [\"b.txt\"]\n\n[[task]]\nname = \"C\"\ncommand = \"cat {{inputs[0]}} > {{outputs[0]}}\"\ninputs = [{{ task = \"A\", output = 0 }}]\noutputs = [\"c.txt\"]\n",
            nginx.url("/dl.txt")
        ),
    );
    for round in 0..5 {
        for f in ["dl.txt", "b.txt", "c.txt", ".stagehost"] {
            let p = sandbox.join("work").join(f);
            let _ = std::fs::remove_file(&p);
            let _ = std::fs::remove_dir_all(&p);
        }
        let out = sandbox.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "run",
            flow.to_str().unwrap(),
        ]);
        assert_eq!(out.code, Some(0), "round {round}: {}", out.stderr);
        let read = |f: &str| std::fs::read_to_string(sandbox.join("work").join(f)).unwrap();
        assert_eq!(read("dl.txt"), "A-bytes\n", "round {round}: A's output");
        assert_eq!(
            read("b.txt"),
            "SERVER\n",
            "round {round}: B read its URL's bytes"
        );
        assert_eq!(
            read("c.txt"),
            "A-bytes\n",
            "round {round}: C read A's output"
        );
    }
}
