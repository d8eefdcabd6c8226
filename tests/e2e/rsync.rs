//! The `rsync` provider, loaded from the built `.so`, against servers from the Debian
//! packages on loopback: sshd (the `file` form, as Parsl's RSyncStaging) and an rsync
//! daemon with an open and a password-protected module.

use std::path::{Path, PathBuf};

use stagehost_tests::httpd::pattern;
use stagehost_tests::rsyncd::{RsyncDaemon, Sshd};
use stagehost_tests::*;

/// A config with one `rsync` instance (`settings` inline) before `file`, in `wd/`.
fn rsync_config(sandbox: &Sandbox, name: &str, settings: &str, retries: u32) -> PathBuf {
    sandbox.write(
        name,
        format!(
            "[[provider]]\nname = \"remote\"\nplugin = \"rsync\"\nsettings = {{ {settings} }}\n\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"remote\", \"file\"]\n\n[transfers]\nretries = {retries}\nbackoff_initial_ms = 300\nbackoff_max_ms = 600\n"
        ),
    )
}

#[test]
fn over_ssh_file_urls_stage_in_and_out_as_parsl_rsync_staging() {
    let sandbox = Sandbox::new();
    let sshd = Sshd::start();
    let remote = sandbox.join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    std::fs::write(remote.join("in.txt"), "one\ntwo\nthree\n").unwrap();
    let cfg = rsync_config(
        &sandbox,
        "ssh.toml",
        &format!(
            "host = {:?}, ssh_command = {:?}",
            sshd.host(),
            sshd.ssh_command()
        ),
        0,
    );
    let out = sandbox.run_workflow(&cfg,
        &format!(
            "[[task]]\nname = \"count\"\ncommand = \"wc -l < {{inputs[0]}} | tr -d ' ' > {{outputs[0]}}\"\ninputs = [{:?}]\noutputs = [{:?}]\n",
            remote.join("in.txt").display().to_string(),
            remote.join("count.txt").display().to_string(),
        ),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(remote.join("count.txt")).unwrap(),
        "3\n"
    );
    // In the working directory, as Parsl puts it: <working_dir>/<filename>.
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/in.txt")).unwrap(),
        "one\ntwo\nthree\n"
    );
    let report = out.json();
    for file in report["tasks"][0]["files"].as_array().unwrap() {
        assert_eq!(file["provider"], "remote", "{file:#}");
        assert_eq!(file["modes"][0], "in-task-step", "{file:#}");
    }

    // A missing remote file: not found, and nothing left in the working directory.
    let out = sandbox.run_workflow(
        &cfg,
        &format!(
            "[[task]]\nname = \"t\"\ncommand = \"true\"\ninputs = [{:?}]\n",
            remote.join("missing.txt").display().to_string()
        ),
    );
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let error = out.json()["tasks"][0]["files"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("in-task step: not found: cannot stage in")
            && error.contains("rsync exited with code 23")
            && error.contains("No such file or directory"),
        "{error}"
    );
    assert!(!sandbox.join("wd/missing.txt").exists());
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

#[test]
fn daemon_modules_open_and_with_a_password_that_is_never_shown() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("daemon");
    let daemon = RsyncDaemon::start(&root);
    std::fs::write(root.join("open/data.bin"), pattern(1 << 20)).unwrap();
    std::fs::write(root.join("secret/private.txt"), "for alice\n").unwrap();
    let cfg = rsync_config(&sandbox, "open.toml", "mode = \"separate\"", 0);
    let stage_in = |cfg: &Path, url: &str, env: &[(&str, &str)]| {
        sandbox.run_env(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "stage",
                "in",
                "--json",
                url,
            ],
            env,
        )
    };
    let out = stage_in(&cfg, &daemon.url(None, "open", "data.bin"), &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read(sandbox.join("wd/data.bin")).unwrap(),
        pattern(1 << 20)
    );
    assert_eq!(out.json()["files"][0]["bytes"], 1 << 20);
    let local = sandbox.write("up.txt", "uploaded\n");
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "out",
        local.to_str().unwrap(),
        &daemon.url(None, "open", "up.txt"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(root.join("open/up.txt")).unwrap(),
        "uploaded\n"
    );

    // The protected module, the password from a variable the settings name.
    let secret = rsync_config(
        &sandbox,
        "secret.toml",
        "mode = \"separate\", password_env = \"SITE_RSYNC_PW\"",
        2,
    );
    let url = daemon.url(Some("alice"), "secret", "private.txt");
    let out = stage_in(&secret, &url, &[("SITE_RSYNC_PW", RsyncDaemon::PASSWORD)]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/private.txt")).unwrap(),
        "for alice\n"
    );
    // A wrong password: permission denied at once (no retry), and never shown.
    std::fs::remove_file(sandbox.join("wd/private.txt")).unwrap();
    let out = stage_in(&secret, &url, &[("SITE_RSYNC_PW", "guessed-wrong")]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    let error = out.json()["files"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("permission denied") && error.contains("rsync exited with code 5"),
        "{error}"
    );
    assert!(!out.stdout.contains("guessed-wrong") && !out.stderr.contains("guessed-wrong"));
    assert!(!sandbox.join("wd/private.txt").exists());
    // A missing file on the daemon.
    let out = stage_in(&cfg, &daemon.url(None, "open", "absent.bin"), &[]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.json()["files"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_daemon_killed_mid_transfer_is_retried_and_a_silent_one_times_out() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("daemon");
    let mut daemon = RsyncDaemon::start(&root);
    let data = pattern(24 << 20);
    std::fs::write(root.join("open/big.bin"), &data).unwrap();
    // Slowed to about 4 s, so the kill lands mid-transfer.
    let cfg = rsync_config(
        &sandbox,
        "slow.toml",
        "extra_args = [\"--bwlimit=6000\"]",
        2,
    );
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"t\"\ncommand = \"cmp {{inputs[0]}} {}\"\ninputs = [{:?}]\n",
            root.join("open/big.bin").display(),
            daemon.url(None, "open", "big.bin")
        ),
    );
    let child = sandbox
        .command(&stagehost_bin())
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--report", "-"])
        .arg(&flow)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    daemon.crash_and_restart();
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let file = out.json()["tasks"][0]["files"][0].clone();
    assert_eq!(
        file["attempts"], 2,
        "one broken attempt, one whole: {file:#}"
    );
    assert!(
        out.stderr.contains("retrying") && out.stderr.contains("transient"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(sandbox.join("wd/big.bin")).unwrap(), data);
    // Nothing of rsync's is left beside the file or in the working directory.
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
    let stray: Vec<String> = std::fs::read_dir(sandbox.join("wd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".big.bin."))
        .collect();
    assert_eq!(stray, Vec::<String>::new());
    assert!(!sandbox
        .join("wd/.stagehost/rsync")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));

    // A daemon that accepts and never answers: rsync's own timeout ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..2 {
            if let Ok((c, _)) = silent.accept() {
                conns.push(c);
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(4));
    });
    let cfg = rsync_config(
        &sandbox,
        "silent.toml",
        "mode = \"separate\", timeout_secs = 1, connect_timeout_secs = 1",
        0,
    );
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        &format!("rsync://127.0.0.1:{port}/open/x.bin"),
    ]);
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    let error = out.json()["files"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("timed out") && error.contains("code 30"),
        "{error}"
    );
    drop(held);
}

#[test]
fn a_missing_rsync_or_a_disallowed_argument_is_a_config_error_naming_the_setting() {
    let sandbox = Sandbox::new();
    for (settings, expected) in [
        (
            "rsync_binary = \"/nonexistent/rsync\"",
            "rsync_binary \"/nonexistent/rsync\" is not installed",
        ),
        (
            "extra_args = [\"--remove-source-files\"]",
            "extra_args may not hold \"--remove-source-files\"",
        ),
    ] {
        let cfg = rsync_config(&sandbox, "bad.toml", settings, 0);
        let out = sandbox.run(&["--config", cfg.to_str().unwrap(), "plugins", "check"]);
        assert_eq!(out.code, Some(2), "{settings}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{settings}: {}", out.stderr);
    }
    // An instance with nothing set (as when dropped in) on a machine without rsync
    // loads quietly, and fails its rsync:// transfers with the same line.
    let cfg = rsync_config(&sandbox, "plain.toml", "mode = \"separate\"", 0);
    let no_rsync = [("PATH", "/nonexistent")];
    let out = sandbox.run_env(
        &["--config", cfg.to_str().unwrap(), "plugins", "check"],
        &no_rsync,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = sandbox.run_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "in",
            "rsync://127.0.0.1:1/m/x",
        ],
        &no_rsync,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("rsync_binary \"rsync\" is not installed (not found on PATH)"),
        "{}",
        out.stderr
    );
}

#[test]
fn past_its_deadline_rsync_is_killed_with_its_group_and_leaves_nothing() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("daemon");
    let daemon = RsyncDaemon::start(&root);
    std::fs::write(root.join("open/slow.bin"), pattern(16 << 20)).unwrap();
    // About 8 s at this rate; the host's per-attempt timeout stops it after 1 s.
    let cfg = sandbox.write(
        "deadline.toml",
        "[[provider]]\nname = \"remote\"\nplugin = \"rsync\"\nsettings = { mode = \"separate\", extra_args = [\"--bwlimit=2000\"] }\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"remote\"]\n[transfers]\nretries = 0\ntimeout_secs = 1\n",
    );
    let url = daemon.url(None, "open", "slow.bin");
    let out = sandbox.run_workflow(
        &cfg,
        &format!("[[task]]\nname = \"t\"\ncommand = \"true\"\ninputs = [{url:?}]\n"),
    );
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    let error = out.json()["tasks"][0]["files"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("timed out"), "{error}");
    // Stopped, not waited out: had rsync run to its end, the file would be there.
    assert!(!sandbox.join("wd/slow.bin").exists());
    // No rsync of ours is still running, and nothing is left in the working directory.
    let running = std::process::Command::new("pgrep")
        .args(["-f", &url])
        .output()
        .unwrap();
    assert!(
        running.stdout.is_empty(),
        "rsync still runs: {}",
        String::from_utf8_lossy(&running.stdout)
    );
    let left: Vec<String> = std::fs::read_dir(sandbox.join("wd"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".stagehost")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(left, Vec::<String>::new());
}

/// `stagehost ARGS` started in the sandbox, its output piped.
fn spawn(sandbox: &Sandbox, args: &[&str]) -> std::process::Child {
    sandbox
        .command(&stagehost_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every file under `dir`, with its size.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                found.extend(files_under(&e.path()));
            } else {
                found.push((e.path(), meta.len()));
            }
        }
    }
    found
}

#[test]
fn a_failed_attempt_keeps_its_partial_data_for_the_next_and_a_success_cleans_up() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("daemon");
    let mut daemon = RsyncDaemon::start(&root);
    let data = pattern(24 << 20);
    std::fs::write(root.join("open/big.bin"), &data).unwrap();
    let cfg = rsync_config(
        &sandbox,
        "slow.toml",
        "extra_args = [\"--bwlimit=6000\"]",
        0,
    );
    let url = daemon.url(None, "open", "big.bin");
    let child = spawn(
        &sandbox,
        &["--config", cfg.to_str().unwrap(), "stage", "in", &url],
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    daemon.crash_and_restart();
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    assert!(!sandbox.join("wd/big.bin").exists());
    // The bytes that arrived wait in stagehost's private directory, not beside the file.
    let kept = files_under(&sandbox.join("wd/.stagehost/rsync"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0].0.to_string_lossy().contains("/partial/"),
        "{kept:?}"
    );
    assert!(kept[0].1 > 0 && kept[0].1 < data.len() as u64, "{kept:?}");
    let beside: Vec<_> = std::fs::read_dir(sandbox.join("wd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".stagehost")
        .collect();
    assert_eq!(beside, Vec::<String>::new());
    // The next attempt finishes it; nothing of rsync's stays.
    let cfg = rsync_config(&sandbox, "fast.toml", "", 0);
    let out = sandbox.run(&["--config", cfg.to_str().unwrap(), "stage", "in", &url]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/big.bin")).unwrap(), data);
    assert_eq!(files_under(&sandbox.join("wd/.stagehost/rsync")), vec![]);
}

#[test]
fn a_path_with_shell_metacharacters_never_reaches_a_remote_shell() {
    let sandbox = Sandbox::new();
    let sshd = Sshd::start();
    let pwned = sandbox.join("pwned");
    let cfg = rsync_config(
        &sandbox,
        "ssh.toml",
        &format!(
            "host = {:?}, ssh_command = {:?}",
            sshd.host(),
            sshd.ssh_command()
        ),
        0,
    );
    let remote = sandbox.join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let url = format!("{}/x;touch${{IFS}}{}", remote.display(), pwned.display());
    // As an rsync before 3.2.4 does by default: its remote shell parses the path.
    let out = sandbox.run_env(
        &["--config", cfg.to_str().unwrap(), "stage", "in", &url],
        &[("RSYNC_OLD_ARGS", "1")],
    );
    assert_eq!(out.code, Some(3), "{}", out.stdout);
    assert!(
        !pwned.exists(),
        "the remote shell ran a command from the URL"
    );
    // A name with those characters is a file name like any other.
    let odd = remote.join("a;b $(c).txt");
    std::fs::write(&odd, "odd\n").unwrap();
    let out = sandbox.run_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "in",
            odd.to_str().unwrap(),
        ],
        &[("RSYNC_OLD_ARGS", "1")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/a;b $(c).txt")).unwrap(),
        "odd\n"
    );
}

#[test]
fn a_module_that_needs_a_password_fails_at_once_from_a_terminal_naming_what_is_missing() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("daemon");
    let daemon = RsyncDaemon::start(&root);
    std::fs::write(root.join("secret/s.txt"), "s\n").unwrap();
    let cfg = rsync_config(&sandbox, "nopw.toml", "mode = \"separate\"", 0);
    let url = daemon.url(Some("alice"), "secret", "s.txt");
    // `script` gives stagehost a terminal, as a user at a prompt has.
    let command = format!(
        "{} --config {} stage in {}",
        stagehost_bin().display(),
        cfg.display(),
        url
    );
    let mut child = sandbox
        .command(std::path::Path::new("script"))
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script runs (util-linux)");
    // A guard against the hang this test is about, not a measure of speed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            stop_child(&mut child, libc::SIGKILL);
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = status.expect("stagehost hung at a password prompt");
    assert_eq!(status.code(), Some(4), "{text}");
    assert!(text.contains("set password_env or password_file"), "{text}");
    assert!(
        !text.to_lowercase().contains("password:"),
        "it prompted: {text}"
    );
}

#[test]
fn rsync_dies_with_stagehost_even_under_sigkill() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("daemon");
    let daemon = RsyncDaemon::start(&root);
    std::fs::write(root.join("open/slow.bin"), pattern(12 << 20)).unwrap();
    // About 4 s at this rate.
    let cfg = rsync_config(
        &sandbox,
        "slow.toml",
        "mode = \"separate\", extra_args = [\"--bwlimit=3000\"]",
        0,
    );
    let url = daemon.url(None, "open", "slow.bin");
    let mut child = spawn(
        &sandbox,
        &["--config", cfg.to_str().unwrap(), "stage", "in", &url],
    );
    std::thread::sleep(std::time::Duration::from_millis(1000));
    stop_child(&mut child, libc::SIGKILL);
    // Past the moment the transfer would have ended.
    std::thread::sleep(std::time::Duration::from_millis(5000));
    let running = std::process::Command::new("pgrep")
        .args(["-f", &url])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&running.stdout).into_owned();
    let ps = std::process::Command::new("ps")
        .args(["-o", "pid,ppid,stat,args", "-p"])
        .arg(pids.trim().replace('\n', ","))
        .output()
        .unwrap();
    assert!(
        running.stdout.is_empty(),
        "rsync outlived stagehost: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    assert!(
        !sandbox.join("wd/slow.bin").exists(),
        "rsync wrote the destination after stagehost was killed"
    );
}

#[test]
fn stat_and_ls_by_list_only_over_ssh_and_from_a_daemon() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("daemon");
    let daemon = RsyncDaemon::start(&root);
    let sshd = Sshd::start();
    let tree = root.join("open/tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("a.txt"), "A").unwrap();
    std::fs::write(tree.join("sub/b c.txt"), "BB").unwrap();
    std::fs::write(tree.join("sub/deeper/café.txt"), "CCC").unwrap();
    let daemon_cfg = rsync_config(&sandbox, "daemon.toml", "", 0);
    let ssh_cfg = rsync_config(
        &sandbox,
        "ssh.toml",
        &format!(
            "host = {:?}, ssh_command = {:?}",
            sshd.host(),
            sshd.ssh_command()
        ),
        0,
    );
    let by_daemon = |rest: &str| daemon.url(None, "open", &format!("tree{rest}"));
    let by_ssh = |rest: &str| format!("{}{rest}", tree.display());
    for (how, cfg, url) in [
        ("daemon", &daemon_cfg, &by_daemon as &dyn Fn(&str) -> String),
        ("ssh", &ssh_cfg, &by_ssh),
    ] {
        let cfg = cfg.to_str().unwrap();
        let out = sandbox.run(&["--config", cfg, "ls", &url("/")]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "a.txt\nsub/\n"),
            "{how}: {}",
            out.stderr
        );
        let out = sandbox.run(&["--config", cfg, "ls", "-R", "-l", &url("")]);
        assert_eq!(out.code, Some(0), "{how}: {}", out.stderr);
        let names: Vec<&str> = out
            .stdout
            .lines()
            .map(|l| l.rsplit("Z ").next().unwrap().trim())
            .collect();
        assert_eq!(
            names,
            [
                "a.txt",
                "sub/",
                "sub/b c.txt",
                "sub/deeper/",
                "sub/deeper/café.txt"
            ],
            "{how}: {}",
            out.stdout
        );
        let out = sandbox.run(&[
            "--config",
            cfg,
            "stat",
            "--json",
            &url("/sub/b c.txt"),
            &url("/sub"),
            &url("/none"),
        ]);
        assert_eq!(out.code, Some(3), "{how}: {}", out.stderr);
        let json = out.json();
        assert_eq!(
            (json[0]["kind"].as_str(), json[0]["size"].as_u64()),
            (Some("file"), Some(2)),
            "{how}: {json}"
        );
        // The file's own time, read as UTC.
        let mtime = std::fs::metadata(tree.join("sub/b c.txt"))
            .unwrap()
            .modified()
            .unwrap();
        let secs = mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(
            json[0]["modified"],
            stagehost_plugin_api::calendar::utc(secs),
            "{how}"
        );
        assert_eq!(json[1]["kind"], "directory", "{how}");
        assert_eq!(json[2]["exists"], false, "{how}");
        let out = sandbox.run(&["--config", cfg, "ls", &url("/none/")]);
        assert_eq!(out.code, Some(3), "{how}: {}", out.stderr);
    }
}
