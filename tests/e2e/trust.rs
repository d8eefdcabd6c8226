//! The host's rules of trust, through the built binary and `.so` files against real
//! servers on loopback: where staged files land, what a cached copy may serve, when an
//! upload counts, where credentials go, what a staged file may be.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use stagehost_tests::httpd::{FaultServer, Nginx};
use stagehost_tests::rsyncd::RsyncDaemon;
use stagehost_tests::*;

/// A config with one instance of `plugin` named `p` (`settings` inline) before `file`,
/// working in `wd/`, with fast retries.
fn config(sandbox: &Sandbox, plugin: &str, settings: &str) -> PathBuf {
    sandbox.write(
        "site.toml",
        format!(
            "[[provider]]\nname = \"p\"\nplugin = \"{plugin}\"\nsettings = {{ {settings} }}\n\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"p\", \"file\"]\n\n[transfers]\nretries = 2\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n"
        ),
    )
}

fn stage_in(sandbox: &Sandbox, cfg: &Path, url: &str) -> Run {
    sandbox.run(&["--config", cfg.to_str().unwrap(), "stage", "in", url])
}

/// Makes `archive` with one member `name` holding `text` (Python's `zipfile`).
fn make_zip(archive: &Path, name: &str, text: &str) {
    let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    z.writestr(sys.argv[2], sys.argv[3])\n";
    let ok = Command::new("python3")
        .args(["-c", script])
        .arg(archive)
        .args([name, text])
        .status()
        .expect("python3 runs");
    assert!(ok.success());
}

#[test]
fn two_archives_with_one_member_name_give_each_task_its_own_bytes() {
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "zip", "");
    let (a, b) = (sandbox.join("A.zip"), sandbox.join("B.zip"));
    make_zip(&a, "data.txt", "from A\n");
    make_zip(&b, "data.txt", "from B\n");
    let out = sandbox.run_workflow(
        &cfg,
        &format!(
            "[[task]]\nname = \"a\"\ncommand = \"cat {{inputs[0]}} > {}\"\ninputs = [\"zip:{}/data.txt\"]\n\n[[task]]\nname = \"b\"\ncommand = \"cat {{inputs[0]}} > {}\"\ninputs = [\"zip:{}/data.txt\"]\n",
            sandbox.join("a.out").display(),
            a.display(),
            sandbox.join("b.out").display(),
            b.display()
        ),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("a.out")).unwrap(),
        "from A\n"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("b.out")).unwrap(),
        "from B\n"
    );
}

#[test]
fn a_provider_that_places_a_file_itself_is_refused() {
    // The example third-party plugin is built against plugin-api as a third party
    // would; the probe fixture can be told to set a local_path of its own choosing.
    let sandbox = Sandbox::new();
    let dir = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let cfg = sandbox.write(
        "site.toml",
        format!(
            "plugin_dirs = [{:?}]\n[[provider]]\nname = \"probe\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], place_at = {:?} }}\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"probe\"]\n",
            dir.display().to_string(),
            sandbox.join("elsewhere.txt").display().to_string()
        ),
    );
    let out = stage_in(&sandbox, &cfg, "probe://h/x.txt");
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("the provider placed the file at")
            && out.stderr.contains("Context::destination()")
            && out.stderr.contains("provider \"probe\""),
        "{}",
        out.stderr
    );
    assert!(!sandbox.join("elsewhere.txt").exists());
}

/// Sets `path`'s modification time to a fixed moment.
fn set_mtime(path: &Path) {
    let ok = Command::new("touch")
        .args(["-d", "2020-01-02 03:04:05"])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_cached_copy_revalidates_only_the_url_it_came_from() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    for (v, text) in [("v1", "version one\n"), ("v2", "version two\n")] {
        let p = root.join(v).join("data.csv");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        // Same size and mtime: stock nginx gives both the same ETag.
        set_mtime(&p);
    }
    let nginx = Nginx::start(&root);
    let cfg = config(&sandbox, "http", "");
    let out = stage_in(&sandbox, &cfg, &nginx.url("/v1/data.csv"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = stage_in(&sandbox, &cfg, &nginx.url("/v2/data.csv"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/data.csv")).unwrap(),
        "version two\n"
    );
    assert!(!out.stdout.contains("cached"), "{}", out.stdout);
    // The same URL again is revalidated, and moves nothing.
    let out = stage_in(&sandbox, &cfg, &nginx.url("/v2/data.csv"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("cached"), "{}", out.stdout);
}

#[test]
fn an_upload_redirected_by_302_fails_and_by_307_sends_the_bytes() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let nginx = Nginx::start_with_conf(
        &root,
        "    location /found/ { return 302 /dav/found.txt; }\n    location /temp/ { return 307 /dav/temp.txt; }\n",
    );
    let cfg = config(&sandbox, "http", "");
    let local = sandbox.write("out.txt", "uploaded bytes\n");
    let stage_out = |url: &str| {
        sandbox.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "out",
            local.to_str().unwrap(),
            url,
        ])
    };
    let out = stage_out(&nginx.url("/found/x.txt"));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("HTTP 302"), "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing would be uploaded"),
        "{}",
        out.stderr
    );
    assert!(!root.join("dav/found.txt").exists());
    let out = stage_out(&nginx.url("/temp/x.txt"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(root.join("dav/temp.txt")).unwrap(),
        "uploaded bytes\n"
    );
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "uploaded bytes\n");
}

#[test]
fn credentials_stay_with_their_origin_across_redirects() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    // Another host, as far as the client can tell.
    let other = FaultServer::start_on("127.0.0.2");
    let nginx = Nginx::start_with_conf(
        &root,
        &format!(
            "    location = /away {{ return 302 {}; }}\n",
            other.url("/data/10")
        ),
    );
    let cfg = config(
        &sandbox,
        "http",
        "username = \"alice\", password = \"s3cret-pw\", headers = { X-Api-Key = \"key-123\", Cookie = \"session=abc\" }",
    );
    let out = stage_in(&sandbox, &cfg, &nginx.url("/away"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen = other.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    for name in ["authorization", "x-api-key", "cookie"] {
        assert!(
            !seen[0].2.contains_key(name),
            "{name} went to another host: {seen:?}"
        );
    }
    // Basic credentials in the URL do not follow either.
    let url = nginx
        .url("/away")
        .replace("http://", "http://bob:pw-in-url@");
    let out = stage_in(&sandbox, &cfg, &url);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!other.requests()[1].2.contains_key("authorization"));
    // A redirect within one origin keeps them.
    let same = FaultServer::start();
    let out = stage_in(&sandbox, &cfg, &same.url("/redirect/2"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen = same.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|r| r.2.get("x-api-key").map(String::as_str) == Some("key-123")));
    assert_eq!(same.authorizations().len(), 3);
    // The body is asked for as it is, as curl does without --compressed.
    assert_eq!(
        seen[0].2.get("accept-encoding").map(String::as_str),
        Some("identity")
    );
}

#[test]
fn an_object_stores_credentials_do_not_follow_a_redirect_to_another_origin() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    // An S3 endpoint (path style) that sends every request of the bucket elsewhere.
    let other = FaultServer::start_on("127.0.0.2");
    let nginx = Nginx::start_with_conf(
        &root,
        &format!(
            "    location /bucket/ {{ return 307 {}; }}\n",
            other.url("/data/10")
        ),
    );
    let cfg = config(
        &sandbox,
        "object-store",
        &format!(
            "endpoint = {:?}, region = \"us-east-1\", access_key_id_env = \"KEY_ID\", secret_access_key_env = \"SECRET_KEY\", session_token_env = \"SESSION_TOKEN\", max_retries = 0",
            nginx.url("")
        ),
    );
    let out = sandbox.run_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "in",
            "s3://bucket/data.bin",
        ],
        &[
            ("KEY_ID", "AKIDCONFORMANCE"),
            ("SECRET_KEY", "secret-key-value"),
            ("SESSION_TOKEN", "session-token-value"),
        ],
    );
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("another origin"), "{}", out.stderr);
    let seen = other.requests();
    assert!(
        seen.iter()
            .all(|r| !r.2.contains_key("x-amz-security-token")),
        "the session token went to another origin: {seen:?}"
    );
    assert!(seen.is_empty(), "{seen:?}");
    assert!(
        !out.stderr.contains("session-token-value"),
        "{}",
        out.stderr
    );
}

#[test]
fn credentials_never_go_over_a_downgrade_to_plain_http_even_to_a_trusted_host() {
    let sandbox = Sandbox::new();
    let certs = sandbox.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (ca, cert, key) = stagehost_tests::httpd::make_test_ca(&certs);
    let plain = FaultServer::start();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let nginx = Nginx::start_with_tls_conf(
        &root,
        (&cert, &key),
        &format!(
            "    location = /down {{ return 302 {}; }}\n",
            plain.url("/data/5")
        ),
    );
    let cfg = config(
        &sandbox,
        "http",
        &format!(
            "ca_file = {:?}, hosts = [\"127.0.0.1\"], headers = {{ X-Api-Key = \"key-123\" }}",
            ca.display().to_string()
        ),
    );
    let out = stage_in(&sandbox, &cfg, &nginx.tls_url("/down"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen = plain.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen[0].2.contains_key("x-api-key"), "{seen:?}");
}

#[test]
fn a_file_saved_at_the_destination_between_attempts_is_kept() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"p\"\nplugin = \"http\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"p\"]\n\n[transfers]\nretries = 2\nbackoff_initial_ms = 1500\nbackoff_max_ms = 1500\n",
    );
    let url = server.url("/flaky/kept.txt");
    let child = sandbox
        .command(&stagehost_bin())
        .args(["--config", cfg.to_str().unwrap(), "stage", "in", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first attempt is answered 500; during the backoff the user saves a file of
    // their own at the destination.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.hits("/flaky/kept.txt") == 0 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::create_dir_all(sandbox.join("wd")).unwrap();
    std::fs::write(sandbox.join("wd/kept.txt"), "the user's own\n").unwrap();
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr.contains("appeared after planning"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/kept.txt")).unwrap(),
        "the user's own\n"
    );
    assert_eq!(
        server.hits("/flaky/kept.txt"),
        1,
        "no attempt after the file appeared"
    );
}

#[test]
fn a_cut_gzip_body_is_retried_as_a_cut_plain_body_is() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = config(&sandbox, "http", "compressed = true");
    let out = sandbox.run_workflow(
        &cfg,
        &format!(
            "[[task]]\nname = \"t\"\ncommand = \"true\"\ninputs = [{:?}]\n",
            server.url("/gzip-cut")
        ),
    );
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    assert!(out.stderr.contains("transient"), "{}", out.stderr);
    // One attempt and two retries.
    assert_eq!(server.hits("/gzip-cut"), 3);
    assert!(!sandbox.join("wd/gzip-cut").exists());
}

/// An rsync daemon serving `root`, and a config for it.
fn rsync_setup(sandbox: &Sandbox, root: &Path) -> (RsyncDaemon, PathBuf) {
    let daemon = RsyncDaemon::start(root);
    let cfg = config(sandbox, "rsync", "");
    (daemon, cfg)
}

#[test]
fn a_stage_in_that_leaves_no_regular_file_fails_and_modes_are_tamed() {
    let sandbox = Sandbox::new();
    let module = sandbox.join("module");
    let root = module.join("open");
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::write(root.join("real.txt"), "real\n").unwrap();
    std::os::unix::fs::symlink("real.txt", root.join("link.txt")).unwrap();
    std::fs::write(root.join("dir/inner.txt"), "inner\n").unwrap();
    let loud = root.join("loud.sh");
    std::fs::write(&loud, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&loud, std::fs::Permissions::from_mode(0o6777)).unwrap();
    let (daemon, cfg) = rsync_setup(&sandbox, &module);

    // rsync skips a symlink ("skipping non-regular file") and exits 0.
    let out = stage_in(&sandbox, &cfg, &daemon.url(None, "open", "link.txt"));
    assert_eq!(out.code, Some(5), "{}", out.stdout);
    assert!(out.stderr.contains("nothing is at"), "{}", out.stderr);
    // A directory is not a file.
    let out = stage_in(&sandbox, &cfg, &daemon.url(None, "open", "dir"));
    assert_eq!(out.code, Some(5), "{}", out.stdout);
    assert!(
        out.stderr.contains("not a regular file") || out.stderr.contains("nothing is at"),
        "{}",
        out.stderr
    );
    // A wildcard that matches a directory.
    let out = stage_in(&sandbox, &cfg, &daemon.url(None, "open", "di*"));
    assert_eq!(out.code, Some(5), "{}", out.stdout);

    // Set-id bits and group/other write never come from the remote side.
    let out = stage_in(&sandbox, &cfg, &daemon.url(None, "open", "loud.sh"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mode = std::fs::metadata(sandbox.join("wd/loud.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7022, 0, "mode {mode:o}");
}

/// `stagehost --config CFG stage out LOCAL URL [extra]`.
fn stage_out(sandbox: &Sandbox, cfg: &Path, local: &Path, url: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "out",
        local.to_str().unwrap(),
        url,
    ];
    args.extend_from_slice(extra);
    sandbox.run(&args)
}

#[test]
fn stage_out_copies_and_never_moves_unless_asked() {
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "zip", "");
    let words = sandbox.write("words.txt", "one two\n");
    let archive = sandbox.join("a.zip");
    let out = stage_out(
        &sandbox,
        &cfg,
        &words,
        &format!("zip:{}/w.txt", archive.display()),
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&words).unwrap(),
        "one two\n",
        "the local file is kept"
    );
    // The arrow shows the way the bytes went.
    let line = out.stdout.lines().next().unwrap_or_default().to_owned();
    assert!(
        line.starts_with(&format!("{} -> zip:", words.display())),
        "{line}"
    );
    let check = Command::new("python3")
        .args(["-c", "import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read('w.txt').decode(), end='')"])
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout), "one two\n");

    // A local path as the URL: a copy, not "nothing to do".
    let copy = sandbox.join("copy/h.txt");
    let out = stage_out(&sandbox, &cfg, &words, copy.to_str().unwrap(), &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "one two\n");
    assert_eq!(std::fs::read_to_string(&words).unwrap(), "one two\n");

    // --move removes the local file once the URL holds it.
    let moved = sandbox.join("moved.txt");
    let out = stage_out(&sandbox, &cfg, &words, moved.to_str().unwrap(), &["--move"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&moved).unwrap(), "one two\n");
    assert!(!words.exists());
}

#[test]
fn stage_in_follows_the_transfer_policy_of_a_run() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = config(&sandbox, "http", "");
    // The first GET answers 500: a transient error, retried as `run` retries it.
    let out = stage_in(&sandbox, &cfg, &server.url("/flaky/x"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/x")).unwrap(),
        "recovered\n"
    );
    assert_eq!(server.hits("/flaky/x"), 2);
    // A stalled body is ended by the per-attempt timeout, not waited on forever.
    let slow = sandbox.write(
        "slow.toml",
        "[[provider]]\nname = \"p\"\nplugin = \"http\"\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"p\"]\n[transfers]\nretries = 0\ntimeout_secs = 1\n",
    );
    let out = stage_in(&sandbox, &slow, &server.url("/stall"));
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
    assert!(!sandbox.join("wd/stall").exists());
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

#[test]
fn sigterm_during_stage_out_leaves_nothing_on_the_ftp_server() {
    use stagehost_tests::ftpd::{PyFtpd, PyFtpdOptions};
    let sandbox = Sandbox::new();
    let root = sandbox.join("ftproot");
    std::fs::create_dir_all(&root).unwrap();
    let ftpd = PyFtpd::start(
        &root,
        PyFtpdOptions {
            stor_limit: Some(256 << 10),
            ..PyFtpdOptions::default()
        },
    );
    let cfg = config(&sandbox, "ftp", "");
    let local = sandbox.write("big.bin", vec![7u8; 4 << 20]);
    let child = sandbox
        .command(&stagehost_bin())
        .args(["--config", cfg.to_str().unwrap(), "stage", "out"])
        .arg(&local)
        .arg(ftpd.url("ftp", None, "/big.bin"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the upload has begun on the server.
    for _ in 0..200 {
        if std::fs::read_dir(&root).unwrap().next().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    assert!(out.stderr.contains("terminated"), "{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left on the server: {left:?}");
    assert_eq!(std::fs::read(&local).unwrap().len(), 4 << 20);
}

#[test]
fn credentials_of_every_shape_stay_out_of_errors_logs_and_config_show() {
    let sandbox = Sandbox::new();
    let server = FaultServer::start();
    let cfg = sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"web\"\nplugin = \"http\"\n[[provider]]\nname = \"store\"\nplugin = \"object-store\"\nsettings = { endpoint = \"http://minio:endpoint-pw@127.0.0.1:9\", allow_http = true }\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"web\", \"store\"]\n[transfers]\nretries = 0\n",
    );
    let port = server.host();
    let urls = [
        // A token as the user name.
        format!("http://ghp_16C7e42F292c6912E7710c838347Ae178B4a@{port}/status/404"),
        // Unencoded `/`, `#`, `?` in a password.
        format!("http://me:pa/ss-word@{port}/status/404"),
        format!("http://me:pa#ss-word@{port}/status/404"),
        format!("http://me:pa?ss-word@{port}/status/404"),
        // Query parameters that carry credentials under other names.
        format!("http://{port}/status/404?jwt=jwt-secret&authkey=authkey-secret&hmac=hmac-secret"),
        // The object store's endpoint holds a password.
        "s3://bucket/key.txt".to_owned(),
    ];
    let secrets = [
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "pa/ss-word",
        "ss-word",
        "jwt-secret",
        "authkey-secret",
        "hmac-secret",
        "endpoint-pw",
    ];
    for url in &urls {
        for json in [false, true] {
            let mut args = vec![
                "--config",
                cfg.to_str().unwrap(),
                "stage",
                "in",
                url.as_str(),
            ];
            if json {
                args.push("--json");
            }
            let out = sandbox.run_env(&args, &[("RUST_LOG", "trace")]);
            // It fails (the class varies with the URL's shape: a 404 is not found, a
            // URL the provider refuses as written is 1), and never as a usage error.
            assert!(
                matches!(out.code, Some(1 | 3..=6)),
                "{url}: {:?} {}",
                out.code,
                out.stderr
            );
            for s in secrets {
                assert!(
                    !out.stderr.contains(s),
                    "{url}: {s} in stderr:\n{}",
                    out.stderr
                );
                assert!(
                    !out.stdout.contains(s),
                    "{url}: {s} in stdout:\n{}",
                    out.stdout
                );
            }
        }
    }
    let out = sandbox.run(&["--config", cfg.to_str().unwrap(), "config", "show"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stdout.contains("endpoint-pw"), "{}", out.stdout);
    assert!(
        out.stdout.contains("http://minio:***@127.0.0.1:9"),
        "{}",
        out.stdout
    );
}

/// Makes `archive` whose members have these raw names (no UTF-8 flag: bytes as
/// written, read by zip tools as code page 437), each holding its index as text.
fn make_zip_with_raw_names(archive: &Path, names: &[&[u8]]) {
    // Python writes ASCII placeholders of the same length; their bytes are then
    // replaced in the local headers and the central directory.
    let script = r#"
import sys, zipfile
path, names = sys.argv[1], [bytes.fromhex(h) for h in sys.argv[2:]]
holders = ["%0*d" % (len(n), i) for i, n in enumerate(names)]
with zipfile.ZipFile(path, "w") as z:
    for i, h in enumerate(holders):
        z.writestr(h, str(i))
data = open(path, "rb").read()
for h, n in zip(holders, names):
    data = data.replace(h.encode(), n)
open(path, "wb").write(data)
"#;
    let hex: Vec<String> = names
        .iter()
        .map(|n| n.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let ok = Command::new("python3")
        .args(["-c", script])
        .arg(archive)
        .args(&hex)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The raw names of `archive`'s members, hex-encoded, in order.
fn raw_names(archive: &Path) -> Vec<String> {
    let script = "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist():\n    raw = i.orig_filename.encode('utf-8' if i.flag_bits & 0x800 else 'cp437')\n    print(raw.hex())\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn zip_member_names_stay_byte_exact_and_a_legacy_name_is_never_duplicated() {
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "zip", "");
    let archive = sandbox.join("legacy.zip");
    make_zip_with_raw_names(&archive, &[b"\xffA.txt", b"\xfeA.txt", b"\x82.txt"]);
    let local = sandbox.write("new.txt", "new\n");
    let out = stage_out(
        &sandbox,
        &cfg,
        &local,
        &format!("zip:{}/new.txt", archive.display()),
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Both names that are not UTF-8 are still there, byte for byte.
    assert_eq!(
        raw_names(&archive),
        [
            "ff412e747874",
            "fe412e747874",
            "822e747874",
            "6e65772e747874"
        ]
    );
    // `\x82.txt` reads as `é.txt` to every zip tool: a second `é.txt` is refused.
    let out = stage_out(
        &sandbox,
        &cfg,
        &local,
        &format!("zip:{}/é.txt", archive.display()),
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains("already holds a member"),
        "{}",
        out.stderr
    );
    assert_eq!(raw_names(&archive).len(), 4);
}

#[test]
fn zip_sidecars_are_never_opened_through_a_symlink() {
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "zip", "");
    let archive = sandbox.join("data.zip");
    make_zip(&archive, "m.txt", "member\n");
    let victim = sandbox.write("victim.txt", "precious\n");
    // A journal planted as a link to a victim: a read must not truncate it.
    std::os::unix::fs::symlink(&victim, sandbox.join("data.zip.journal")).unwrap();
    let out = stage_in(&sandbox, &cfg, &format!("zip:{}/m.txt", archive.display()));
    assert_eq!(out.code, Some(4), "{}", out.stdout);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    std::fs::remove_file(sandbox.join("data.zip.journal")).unwrap();
    // A lock planted as a link creates nothing where it points.
    let target = sandbox.join("created-through-link");
    let _ = std::fs::remove_file(sandbox.join("data.zip.lock"));
    std::os::unix::fs::symlink(&target, sandbox.join("data.zip.lock")).unwrap();
    let out = stage_in(&sandbox, &cfg, &format!("zip:{}/m.txt", archive.display()));
    assert_eq!(out.code, Some(4), "{}", out.stdout);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert!(!target.exists());
}

#[test]
fn a_read_only_archive_is_stageable_by_a_user_who_cannot_write_its_directory() {
    // A shared dataset: a directory others can read and not write.
    let shared = tempfile::Builder::new()
        .prefix("stagehost-shared-")
        .tempdir()
        .unwrap();
    let archive = shared.path().join("dataset.zip");
    make_zip(&archive, "rows.csv", "a,b\n1,2\n");
    for (path, mode) in [(shared.path(), 0o555), (archive.as_path(), 0o444)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // Someone else's working directory: as root the reader is `nobody`.
    let home = tempfile::Builder::new()
        .prefix("stagehost-reader-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = home.path().join("site.toml");
    std::fs::write(
        &cfg,
        "[[provider]]\nname = \"zip\"\nplugin = \"zip\"\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"zip\"]\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
        c.arg(stagehost_bin());
        c
    } else {
        Command::new(stagehost_bin())
    };
    let out: Run = cmd
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("STAGEHOST_PLUGIN_PATH", profile_dir())
        .args(["--config", cfg.to_str().unwrap(), "stage", "in"])
        .arg(format!("zip:{}/rows.csv", archive.display()))
        .output()
        .unwrap()
        .into();
    let _ = std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(home.path().join("wd/rows.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    assert!(!shared.path().join("dataset.zip.lock").exists());
}

#[test]
fn a_symlink_planted_in_the_hosts_private_directory_sends_no_file_elsewhere() {
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "zip", "");
    let (a, b) = (sandbox.join("A.zip"), sandbox.join("B.zip"));
    make_zip(&a, "data.txt", "from A\n");
    make_zip(&b, "data.txt", "from B\n");
    let outside = sandbox.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(sandbox.join("wd")).unwrap();
    std::os::unix::fs::symlink(&outside, sandbox.join("wd/.stagehost")).unwrap();
    // The second URL with the name `data.txt` would go under `.stagehost/<hash>/`.
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        &format!("zip:{}/data.txt", a.display()),
        &format!("zip:{}/data.txt", b.display()),
    ]);
    assert_eq!(out.code, Some(4), "{}", out.stdout);
    assert!(
        out.stderr.contains("not a directory (a symbolic link?)"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/data.txt")).unwrap(),
        "from A\n"
    );
}

#[test]
fn a_users_own_file_at_a_destination_is_never_overwritten_or_deleted() {
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "zip", "");
    let report = sandbox.write("wd/report.txt", "the user's own report\n");
    let archive = sandbox.join("out.zip");
    // A task whose zip output's working copy would land on the user's file.
    let flow = format!(
        "[[task]]\nname = \"t\"\ncommand = \"echo generated > {{outputs[0]}}\"\noutputs = [\"zip:{}/report.txt\"]\n",
        archive.display()
    );
    let out = sandbox.run_workflow(&cfg, &flow);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("already exists and stagehost did not put it there")
            && out.stderr.contains("report.txt")
            && out.stderr.contains("provider \"p\"")
            && out.stderr.contains("executor \"local\""),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "the user's own report\n"
    );

    // A download onto a user's file is refused too, as gfal-copy does without -f.
    let server = FaultServer::start();
    let web = sandbox.write(
        "web.toml",
        "[[provider]]\nname = \"web\"\nplugin = \"http\"\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"web\"]\n",
    );
    let out = stage_in(&sandbox, &web, &server.url("/data/report.txt"));
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stderr.contains("overwrite = true"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "the user's own report\n"
    );
    // What stagehost staged itself it may replace on the next run.
    let out = stage_in(&sandbox, &web, &server.url("/data/10"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = stage_in(&sandbox, &web, &server.url("/data/10"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // A file a user saved in its place (an editor writes a new file and renames it)
    // is the user's now.
    std::fs::write(sandbox.join("wd/10.new"), "edited by the user\n").unwrap();
    std::fs::rename(sandbox.join("wd/10.new"), sandbox.join("wd/10")).unwrap();
    let out = stage_in(&sandbox, &web, &server.url("/data/10"));
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/10")).unwrap(),
        "edited by the user\n"
    );
    // Unless the site allows replacing.
    let allow = sandbox.write(
        "allow.toml",
        "[[provider]]\nname = \"web\"\nplugin = \"http\"\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"web\"]\noverwrite = true\n",
    );
    let out = stage_in(&sandbox, &allow, &server.url("/data/report.txt"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(&report).unwrap(), b"");
}

#[test]
fn a_worker_obeys_only_its_own_run() {
    use std::io::{BufRead, BufReader, Read, Write};
    let sandbox = Sandbox::new();
    // Whoever holds the port now (the run is gone): it answers in the old plain
    // protocol and sends a command.
    let impostor = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = impostor.local_addr().unwrap().to_string();
    let pwned = sandbox.join("pwned");
    let task = format!(
        "{{\"type\":\"task\",\"id\":1,\"name\":\"t\",\"executor\":\"local\",\"command\":\"touch {}\",\"files\":{{\"working_dir\":\"/tmp\",\"inputs\":[],\"args\":[],\"outputs\":[],\"stdout\":null,\"stderr\":null}},\"timeout_secs\":null,\"staged\":[]}}\n",
        pwned.display()
    );
    let heard = std::thread::spawn(move || {
        let (conn, _) = impostor.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut first = vec![0u8; 512];
        let n = reader.read(&mut first).unwrap_or(0);
        first.truncate(n);
        let mut conn = conn;
        let _ = conn.write_all(b"{\"type\":\"welcome\",\"version\":1,\"heartbeat_secs\":1.0}\n");
        let _ = conn.write_all(task.as_bytes());
        let mut rest = String::new();
        let _ = reader.read_line(&mut rest);
        std::thread::sleep(std::time::Duration::from_millis(500));
        first
    });
    let secret = "3c".repeat(32);
    let secret_file = sandbox.write("secret", format!("{secret}\nsha256:{}\n", "ab".repeat(32)));
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"file\"\nplugin = \"file\"\n[executor.local]\nworking_dir = \"wd\"\n",
    );
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "worker",
        "--connect",
        &at,
        "--secret-file",
        secret_file.to_str().unwrap(),
        "--executor",
        "local",
        "--slots",
        "1",
    ]);
    let first = heard.join().unwrap();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("not this worker's run"),
        "{}",
        out.stderr
    );
    assert!(!pwned.exists(), "the worker ran the impostor's command");
    assert!(
        !String::from_utf8_lossy(&first).contains(&secret),
        "the secret went to the impostor"
    );
}

#[test]
fn a_quiet_run_still_shows_its_failures() {
    let sandbox = Sandbox::new();
    let cfg = config(&sandbox, "http", "");
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"bad\"\ncommand = \"echo oops >&2; exit 3\"\n",
    );
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "run",
        flow.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("task \"bad\""), "{}", out.stderr);
    assert!(out.stderr.contains("oops"), "{}", out.stderr);
}

#[test]
fn what_the_attack_review_found_stays_fixed() {
    let sandbox = Sandbox::new();
    // A password with an unencoded `/` reads as another host to HTTP clients: refused,
    // and no request goes anywhere.
    let server = FaultServer::start();
    let web = config(
        &sandbox,
        "http",
        "username = \"bob\", password = \"set-pw\"",
    );
    let url = format!("http://evil:x/@{}/data/5", server.host());
    let out = stage_in(&sandbox, &web, &url);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("names no valid host and port"),
        "{}",
        out.stderr
    );
    assert_eq!(server.requests().len(), 0);

    // `stage out --move` onto the file itself: refused, the file kept.
    let files = config(&sandbox, "zip", "");
    let same = sandbox.write("same.txt", "SAME\n");
    let out = stage_out(&sandbox, &files, &same, same.to_str().unwrap(), &["--move"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("itself"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&same).unwrap(), "SAME\n");
    // An archive is never added into itself (and so never moved away).
    let archive = sandbox.join("self.zip");
    make_zip(&archive, "m.txt", "m\n");
    let url = format!("zip:{}/self.zip", archive.display());
    let out = stage_out(&sandbox, &files, &archive, &url, &["--move"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(archive.exists());

    // A journal hard-linked to a victim is refused, the victim intact.
    let victim = sandbox.write("victim2.txt", "PRECIOUS\n");
    let target = sandbox.join("t.zip");
    std::fs::hard_link(&victim, sandbox.join("t.zip.journal")).unwrap();
    let local = sandbox.write("o.txt", "o\n");
    let out = stage_out(
        &sandbox,
        &files,
        &local,
        &format!("zip:{}/new.txt", target.display()),
        &[],
    );
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stderr.contains("hard links"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "PRECIOUS\n");

    // With overwrite = true, a link planted where an output's working copy goes is
    // removed before the task runs: the task never writes through it.
    let precious = sandbox.write("precious.txt", "PRECIOUS\n");
    std::fs::create_dir_all(sandbox.join("wd")).unwrap();
    std::os::unix::fs::symlink(&precious, sandbox.join("wd/data.txt")).unwrap();
    let allow = sandbox.write(
        "allow.toml",
        "[[provider]]\nname = \"z\"\nplugin = \"zip\"\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"z\"]\noverwrite = true\n",
    );
    let out = sandbox.run_workflow(
        &allow,
        &format!(
            "[[task]]\nname = \"t\"\ncommand = \"echo TASK > {{outputs[0]}}\"\noutputs = [\"zip:{}/data.txt\"]\n",
            sandbox.join("out.zip").display()
        ),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "PRECIOUS\n");
}
