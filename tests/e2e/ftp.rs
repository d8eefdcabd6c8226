//! The `ftp` provider, loaded from the built `.so`, against real servers on loopback:
//! pyftpdlib (PyPI, with faults switched on by flags) and vsftpd (Debian), over FTP
//! and FTPS, IPv4 and IPv6.

use std::path::{Path, PathBuf};

use stagehost_tests::ftpd::{PyFtpd, PyFtpdOptions, Vsftpd};
use stagehost_tests::httpd::{make_test_ca, pattern};
use stagehost_tests::*;

/// A config with one `ftp` instance (`settings` as inline TOML) working in `wd/`,
/// with fast retries.
fn ftp_config(sandbox: &Sandbox, settings: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    sandbox.write(
        format!("site-{}.toml", N.fetch_add(1, Ordering::Relaxed)),
        format!(
            "[[provider]]\nname = \"remote\"\nplugin = \"ftp\"\nsettings = {{ {settings} }}\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"remote\"]\n[transfers]\nretries = 2\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n"
        ),
    )
}

fn stage_in(sandbox: &Sandbox, cfg: &Path, url: &str) -> Run {
    sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        url,
    ])
}

fn stage_out(sandbox: &Sandbox, cfg: &Path, local: &Path, url: &str) -> Run {
    sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "out",
        "--json",
        local.to_str().unwrap(),
        url,
    ])
}

/// The error of the one file of a `--json` stage-in or stage-out.
fn error_of(out: &Run) -> String {
    out.json()["files"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `stagehost run` of one task with `url` as its input: the file's entry of the
/// report.
fn run_one(sandbox: &Sandbox, cfg: &Path, url: &str) -> (Run, serde_json::Value) {
    let out = sandbox.run_workflow(
        cfg,
        &format!("[[task]]\nname = \"t\"\ncommand = \"true\"\ninputs = [{url:?}]\n"),
    );
    let file = out.json()["tasks"][0]["files"][0].clone();
    (out, file)
}

/// Bytes that an ASCII-type transfer would rewrite: bare LFs, CRLFs, lone CRs.
fn line_endings() -> Vec<u8> {
    let mut data = b"one\ntwo\r\nthree\rfour\n\n".repeat(5000);
    data.extend(pattern(100_000));
    data
}

/// The names in `dir` that look like temporary files.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".stagehost-") || n.ends_with(".part"))
        .collect()
}

/// A fresh test CA's certificate pair in `sandbox/certs`: (ca, cert, key).
fn certificates(sandbox: &Sandbox) -> (PathBuf, PathBuf, PathBuf) {
    let certs = sandbox.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_test_ca(&certs)
}

#[test]
fn pyftpdlib_anonymous_and_user_logins_binary_both_ways_on_its_own_port() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("ftproot");
    std::fs::create_dir_all(root.join("pub")).unwrap();
    let data = line_endings();
    std::fs::write(root.join("pub/lines.txt"), &data).unwrap();
    let server = PyFtpd::start(
        &root,
        PyFtpdOptions {
            user: Some(("alice", "s3cr3t pw")),
            ..Default::default()
        },
    );
    let cfg = ftp_config(&sandbox, "");

    // Anonymous, on a port in the netloc: every byte as the server holds it.
    let out = stage_in(&sandbox, &cfg, &server.url("ftp", None, "pub/lines.txt"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/lines.txt")).unwrap(), data);
    let json = out.json();
    assert_eq!(json["files"][0]["provider"], "remote");
    assert_eq!(json["files"][0]["bytes"], data.len());
    std::fs::remove_file(sandbox.join("wd/lines.txt")).unwrap();

    // A user and password from the URL; the password is never shown.
    let url = server.url("ftp", Some("alice:s3cr3t%20pw"), "pub/lines.txt");
    let out = stage_in(&sandbox, &cfg, &url);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/lines.txt")).unwrap(), data);
    assert!(!out.stdout.contains("s3cr3t"), "{}", out.stdout);
    assert!(out.stdout.contains("alice:***@"), "{}", out.stdout);
    std::fs::remove_file(sandbox.join("wd/lines.txt")).unwrap();

    // From settings, the password read from a variable they name.
    let by_settings = ftp_config(
        &sandbox,
        "username = \"alice\", password_env = \"FTP_TEST_PASSWORD\"",
    );
    let out = sandbox.run_env(
        &[
            "--config",
            by_settings.to_str().unwrap(),
            "stage",
            "in",
            &server.url("ftp", None, "pub/lines.txt"),
        ],
        &[("FTP_TEST_PASSWORD", "s3cr3t pw")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/lines.txt")).unwrap(), data);

    // A wrong password: a permission error, not retried, that names the user only.
    let (out, file) = run_one(
        &sandbox,
        &cfg,
        &server.url("ftp", Some("alice:wrong-guess"), "pub/other.txt"),
    );
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    let error = file["error"].as_str().unwrap();
    assert!(
        error.contains("separate job: permission denied: cannot log in to ftp://alice:***@"),
        "{error}"
    );
    assert!(
        error.contains("as alice: the server replied 530"),
        "{error}"
    );
    assert_eq!(file["attempts"], 1, "{file:#}");
    assert!(!out.stderr.contains("wrong-guess") && !out.stdout.contains("wrong-guess"));

    // A missing file: one line saying so, and nothing written.
    let out = stage_in(&sandbox, &cfg, &server.url("ftp", None, "pub/missing.txt"));
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        error_of(&out).contains(&format!(
            "separate job: not found: cannot SIZE {}: the server replied 550",
            server.url("ftp", None, "pub/missing.txt")
        )),
        "{}",
        error_of(&out)
    );
    assert!(!sandbox.join("wd/missing.txt").exists());
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());

    // STOR stage-out: a temporary name, then a rename; binary both ways.
    let local = sandbox.write("result.txt", &data);
    let url = server.url("ftp", Some("alice:s3cr3t%20pw"), "pub/result.txt");
    let out = stage_out(&sandbox, &cfg, &local, &url);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(root.join("pub/result.txt")).unwrap(), data);
    assert_eq!(leftovers(&root.join("pub")), Vec::<String>::new());
    assert!(local.exists());

    // A stage-out the server refuses (no such directory) fails, keeps the local
    // file and leaves nothing on the server.
    let out = stage_out(
        &sandbox,
        &cfg,
        &local,
        &server.url("ftp", None, "no/such/dir/result.txt"),
    );
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(error_of(&out).contains("cannot STOR"), "{}", error_of(&out));
    assert!(error_of(&out).contains("is kept"), "{}", error_of(&out));
    assert_eq!(std::fs::read(&local).unwrap(), data);
    assert_eq!(leftovers(&root), Vec::<String>::new());
}

#[test]
fn vsftpd_serves_anonymous_get_and_stor_over_ftp_and_ftps() {
    let sandbox = Sandbox::new();
    let (ca, cert, key) = certificates(&sandbox);
    let root = sandbox.join("anon");
    std::fs::create_dir_all(root.join("pub")).unwrap();
    let data = pattern(5 << 20);
    std::fs::write(root.join("pub/data.bin"), &data).unwrap();
    let plain = Vsftpd::start(&root, None);
    let cfg = ftp_config(&sandbox, "");

    let out = stage_in(&sandbox, &cfg, &plain.url("ftp", "pub/data.bin"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/data.bin")).unwrap(), data);
    std::fs::remove_file(sandbox.join("wd/data.bin")).unwrap();

    let local = sandbox.write("up.txt", line_endings());
    let out = stage_out(&sandbox, &cfg, &local, &plain.url("ftp", "incoming/up.txt"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read(root.join("incoming/up.txt")).unwrap(),
        line_endings()
    );
    assert_eq!(leftovers(&root.join("incoming")), Vec::<String>::new());

    // Sessions are reused across the transfers of one process: eight files, two at
    // a time, over at most two control connections (a missing file costs none).
    for i in 0..8 {
        std::fs::write(root.join(format!("pub/s{i}.txt")), format!("small {i}\n")).unwrap();
    }
    let before = plain.connections();
    let urls: Vec<String> = (0..8)
        .map(|i| plain.url("ftp", &format!("pub/s{i}.txt")))
        .collect();
    let mut args = vec!["--config", cfg.to_str().unwrap(), "stage", "in", "-j", "2"];
    args.extend(urls.iter().map(String::as_str));
    let out = sandbox.run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for i in 0..8 {
        assert_eq!(
            std::fs::read_to_string(sandbox.join(format!("wd/s{i}.txt"))).unwrap(),
            format!("small {i}\n")
        );
    }
    let used = plain.connections() - before;
    assert!(
        (1..=2).contains(&used),
        "{used} control connections for 8 files"
    );

    let out = stage_in(&sandbox, &cfg, &plain.url("ftp", "pub/missing.bin"));
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        error_of(&out).contains("not found: cannot SIZE"),
        "{}",
        error_of(&out)
    );
    drop(plain);

    // FTPS: TLS on control and data, with the session reuse vsftpd requires.
    let secure = Vsftpd::start(&root, Some((&cert, &key)));
    let trusted = ftp_config(&sandbox, &format!("ca_file = {}", toml_path(&ca)));
    let out = stage_in(&sandbox, &trusted, &secure.url("ftps", "pub/data.bin"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/data.bin")).unwrap(), data);
    let out = stage_out(
        &sandbox,
        &trusted,
        &local,
        &secure.url("ftps", "incoming/secure.txt"),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read(root.join("incoming/secure.txt")).unwrap(),
        line_endings()
    );
    assert_eq!(leftovers(&root.join("incoming")), Vec::<String>::new());

    // Plain ftp:// to a server that demands TLS is refused, as a login error.
    let out = stage_in(&sandbox, &cfg, &secure.url("ftp", "pub/data.bin"));
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        error_of(&out).contains("cannot log in to"),
        "{}",
        error_of(&out)
    );

    // Without the CA the certificate is unknown: a permanent error, tried once.
    let (out, file) = run_one(&sandbox, &cfg, &secure.url("ftps", "pub/other.bin"));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(file["attempts"], 1, "{file:#}");
    let error = file["error"].as_str().unwrap();
    assert!(
        error.contains("separate job: cannot secure the connection to ftps://"),
        "{error}"
    );
    assert!(
        error.to_ascii_lowercase().contains("certificate"),
        "{error}"
    );
}

#[test]
fn ftps_ipv6_and_a_server_without_epsv() {
    let sandbox = Sandbox::new();
    let (ca, cert, key) = certificates(&sandbox);
    let root = sandbox.join("ftproot");
    std::fs::create_dir_all(&root).unwrap();
    let data = pattern(2 << 20);
    std::fs::write(root.join("a.bin"), &data).unwrap();

    // pyftpdlib with TLS required on control and data.
    let secure = PyFtpd::start(
        &root,
        PyFtpdOptions {
            tls: Some((&cert, &key)),
            ..Default::default()
        },
    );
    let trusted = ftp_config(&sandbox, &format!("ca_file = {}", toml_path(&ca)));
    let out = stage_in(&sandbox, &trusted, &secure.url("ftps", None, "a.bin"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/a.bin")).unwrap(), data);
    let local = sandbox.write("b.bin", pattern(300_000));
    let out = stage_out(
        &sandbox,
        &trusted,
        &local,
        &secure.url("ftps", None, "b.bin"),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(root.join("b.bin")).unwrap(), pattern(300_000));
    drop(secure);

    let cfg = ftp_config(&sandbox, "");
    // An IPv6 literal in the netloc.
    let v6 = PyFtpd::start(
        &root,
        PyFtpdOptions {
            host: Some("::1"),
            ..Default::default()
        },
    );
    let url = v6.url("ftp", None, "a.bin");
    assert!(url.starts_with("ftp://[::1]:"), "{url}");
    std::fs::remove_file(sandbox.join("wd/a.bin")).unwrap();
    let out = stage_in(&sandbox, &cfg, &url);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/a.bin")).unwrap(), data);
    let out = stage_out(&sandbox, &cfg, &local, &v6.url("ftp", None, "c.bin"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(root.join("c.bin")).unwrap(), pattern(300_000));
    drop(v6);

    // A server that refuses EPSV: the data connections fall back to PASV.
    let old = PyFtpd::start(
        &root,
        PyFtpdOptions {
            no_epsv: true,
            ..Default::default()
        },
    );
    std::fs::remove_file(sandbox.join("wd/a.bin")).unwrap();
    let out = stage_in(&sandbox, &cfg, &old.url("ftp", None, "a.bin"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/a.bin")).unwrap(), data);
    let out = stage_out(&sandbox, &cfg, &local, &old.url("ftp", None, "d.bin"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(root.join("d.bin")).unwrap(), pattern(300_000));
    assert_eq!(leftovers(&root), Vec::<String>::new());
}

#[test]
fn a_transfer_cut_short_resumes_with_rest_and_a_stall_times_out() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("ftproot");
    std::fs::create_dir_all(&root).unwrap();
    let data = pattern(4 << 20);
    std::fs::write(root.join("big.bin"), &data).unwrap();
    let server = PyFtpd::start(
        &root,
        PyFtpdOptions {
            short_first_retr: Some(1 << 20),
            ..Default::default()
        },
    );
    // Retries off: the resume happens inside the one attempt.
    let cfg = sandbox.write(
        "resume.toml",
        "[[provider]]\nname = \"remote\"\nplugin = \"ftp\"\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"remote\"]\n[transfers]\nretries = 0\n",
    );
    let out = sandbox.run_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "in",
            "--json",
            &server.url("ftp", None, "big.bin"),
        ],
        &[("RUST_LOG", "stagehost::plugin=info")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/big.bin")).unwrap(), data);
    assert!(
        out.stderr.contains(
            "the transfer ended after 1048576 bytes, SIZE said 4194304; resuming with REST 1048576"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["files"][0]["bytes"], 4 << 20);
    drop(server);

    // A file rewritten with the same size while it was fetched is never stitched
    // together: no resume (its MDTM moved); the host's retry fetches it whole.
    let changing = PyFtpd::start(
        &root,
        PyFtpdOptions {
            short_first_retr: Some(1 << 20),
            rewrite_after_short: true,
            ..Default::default()
        },
    );
    std::fs::write(root.join("changing.bin"), &data).unwrap();
    let once = sandbox.write(
        "once.toml",
        "[[provider]]\nname = \"remote\"\nplugin = \"ftp\"\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"remote\"]\n[transfers]\nretries = 1\nbackoff_initial_ms = 10\n",
    );
    let out = sandbox.run(&[
        "--config",
        once.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        &changing.url("ftp", None, "changing.bin"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("the file changed while it was fetched"),
        "{}",
        out.stderr
    );
    let rewritten = std::fs::read(root.join("changing.bin")).unwrap();
    assert_ne!(rewritten, data);
    assert_eq!(
        std::fs::read(sandbox.join("wd/changing.bin")).unwrap(),
        rewritten
    );
    assert_eq!(out.json()["files"][0]["attempts"], 2);
    drop(changing);

    // A server that never answers RETR: the read timeout ends it, nothing is left.
    let stalled = PyFtpd::start(
        &root,
        PyFtpdOptions {
            stall_retr: true,
            ..Default::default()
        },
    );
    let cfg = sandbox.write(
        "stall.toml",
        "[[provider]]\nname = \"remote\"\nplugin = \"ftp\"\nsettings = { read_timeout_secs = 0.5 }\n[executor.local]\nworking_dir = \"wd2\"\nstaging = [\"remote\"]\n[transfers]\nretries = 1\nbackoff_initial_ms = 10\n",
    );
    let (out, file) = run_one(&sandbox, &cfg, &stalled.url("ftp", None, "big.bin"));
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    let error = file["error"].as_str().unwrap();
    assert!(
        error.contains("separate job: timed out: cannot RETR"),
        "{error}"
    );
    assert_eq!(file["attempts"], 2, "a timeout is retried: {file:#}");
    assert!(!sandbox.join("wd2/big.bin").exists());
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

#[test]
fn workflows_stage_through_ftp_in_both_modes_with_host_scoping() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("ftproot");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("in.txt"), "hello over ftp\n").unwrap();
    let server = PyFtpd::start(
        &root,
        PyFtpdOptions {
            user: Some(("bob", "hunter2")),
            ..Default::default()
        },
    );
    let port = server.port();
    // A credentialed in-task instance scoped to this server, before a general one
    // that logs in anonymously: the site's order picks the first that claims a URL.
    let cfg = sandbox.write(
        "site.toml",
        format!(
            "[[provider]]\nname = \"ours\"\nplugin = \"ftp\"\nsettings = {{ mode = \"in-task\", hosts = [\"127.0.0.1:{port}\"], username = \"bob\", password = \"hunter2\" }}\n\n[[provider]]\nname = \"anyftp\"\nplugin = \"ftp\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"ours\", \"anyftp\"]\n"
        ),
    );
    let other = PyFtpd::start(&root, PyFtpdOptions::default());
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"shout\"\ncommand = \"tr a-z A-Z < {{inputs[0]}} > {{outputs[0]}}\"\ninputs = [\"{}\"]\noutputs = [\"{}\"]\n\n[[task]]\nname = \"copy\"\ncommand = \"cp {{inputs[0]}} {{outputs[0]}}\"\ninputs = [\"{}\"]\noutputs = [\"{}\"]\n",
            server.url("ftp", None, "in.txt"),
            server.url("ftp", None, "out.txt"),
            other.url("ftp", None, "in.txt"),
            other.url("ftp", None, "copy.txt"),
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
    assert_eq!(
        std::fs::read_to_string(root.join("out.txt")).unwrap(),
        "HELLO OVER FTP\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("copy.txt")).unwrap(),
        "hello over ftp\n"
    );
    let report = out.json();
    let tasks = report["tasks"].as_array().unwrap();
    let task = |name: &str| tasks.iter().find(|t| t["name"] == name).unwrap().clone();
    for file in task("shout")["files"].as_array().unwrap() {
        assert_eq!(file["provider"], "ours", "{file:#}");
        assert_eq!(file["modes"][0], "in-task-step", "{file:#}");
    }
    for file in task("copy")["files"].as_array().unwrap() {
        assert_eq!(file["provider"], "anyftp", "{file:#}");
        assert_eq!(file["modes"][0], "separate-job", "{file:#}");
    }
    assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"));
    assert_eq!(leftovers(&root), Vec::<String>::new());
}

#[test]
fn stat_and_ls_by_mlst_and_mlsd_on_pyftpdlib_and_by_list_size_and_cwd_on_vsftpd() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("ftproot");
    std::fs::create_dir_all(root.join("tree/sub/deeper")).unwrap();
    std::fs::write(root.join("tree/a.txt"), "A").unwrap();
    std::fs::write(root.join("tree/sub/b.txt"), "BB").unwrap();
    std::fs::write(root.join("tree/sub/deeper/c.txt"), "CCC").unwrap();
    let py = PyFtpd::start(&root, PyFtpdOptions::default());
    let vs = Vsftpd::start(&root, None);
    let cfg = ftp_config(&sandbox, "");
    let cfg = cfg.to_str().unwrap();
    for (server, url) in [
        (
            "pyftpdlib",
            Box::new(|p: &str| py.url("ftp", None, p)) as Box<dyn Fn(&str) -> String>,
        ),
        ("vsftpd", Box::new(|p: &str| vs.url("ftp", p))),
    ] {
        let out = sandbox.run(&["--config", cfg, "ls", &url("/tree/")]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "a.txt\nsub/\n"),
            "{server}: {}",
            out.stderr
        );
        let out = sandbox.run(&["--config", cfg, "ls", "-R", "--json", &url("/tree")]);
        assert_eq!(out.code, Some(0), "{server}: {}", out.stderr);
        let listed: Vec<(String, String, Option<u64>)> = out
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["kind"].as_str().unwrap().to_owned(),
                    e["size"].as_u64(),
                )
            })
            .collect();
        let want: Vec<(String, String, Option<u64>)> = [
            ("a.txt", "file", Some(1)),
            ("sub", "directory", None),
            ("sub/b.txt", "file", Some(2)),
            ("sub/deeper", "directory", None),
            ("sub/deeper/c.txt", "file", Some(3)),
        ]
        .iter()
        .map(|(n, k, s)| (n.to_string(), k.to_string(), *s))
        .collect();
        assert_eq!(listed, want, "{server}");
        let out = sandbox.run(&[
            "--config",
            cfg,
            "stat",
            "--json",
            &url("/tree/sub/b.txt"),
            &url("/tree/sub"),
            &url("/tree/none"),
        ]);
        assert_eq!(out.code, Some(3), "{server}: {}", out.stderr);
        let json = out.json();
        assert_eq!(
            (json[0]["kind"].as_str(), json[0]["size"].as_u64()),
            (Some("file"), Some(2)),
            "{server}: {json}"
        );
        assert!(json[0]["modified"].as_str().is_some(), "{server}: {json}");
        assert_eq!(json[1]["kind"], "directory", "{server}");
        assert_eq!(json[2]["exists"], false, "{server}");
        let out = sandbox.run(&["--config", cfg, "ls", &url("/nothing/")]);
        assert_eq!(out.code, Some(3), "{server}: {}", out.stderr);
        let out = sandbox.run(&["--config", cfg, "ls", &url("/tree/a.txt")]);
        assert_eq!(out.code, Some(2), "{server}: {}", out.stderr);
        assert!(
            out.stderr.contains("it is a file, not a directory"),
            "{server}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_hostile_tree_neither_loops_a_listing_nor_forges_an_entry() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("ftproot");
    // Two links back up to their own directory: a walk that follows them never ends.
    std::fs::create_dir_all(root.join("loop")).unwrap();
    std::fs::write(root.join("loop/f.txt"), "F").unwrap();
    std::os::unix::fs::symlink(".", root.join("loop/a")).unwrap();
    std::os::unix::fs::symlink(".", root.join("loop/b")).unwrap();
    // A name holding a line break and what looks like a second MLSD entry.
    std::fs::create_dir_all(root.join("inj")).unwrap();
    std::fs::write(
        root.join("inj/x\ntype=file;size=99999;modify=20300101000000; injected.bin"),
        "x",
    )
    .unwrap();
    let py = PyFtpd::start(&root, PyFtpdOptions::default());
    let cfg = ftp_config(&sandbox, "");
    let cfg = cfg.to_str().unwrap();
    let out = sandbox.run(&[
        "--config",
        cfg,
        "ls",
        "-R",
        "--json",
        &py.url("ftp", None, "/loop/"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let names: Vec<String> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["a", "b", "f.txt"],
        "each link to a directory already listed is listed, not walked"
    );
    let out = sandbox.run(&[
        "--config",
        cfg,
        "ls",
        "-l",
        "--json",
        &py.url("ftp", None, "/inj/"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let json = out.json();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{json}");
    assert_eq!(
        entries[0]["name"],
        "x\ntype=file;size=99999;modify=20300101000000; injected.bin"
    );
    assert_eq!(entries[0]["size"], 1);
}
