//! Nothing lost, nobody let in: what a careless user or an attacker tries on the built
//! binary — planted symlinks, odd files, long names, kills, runaway commands, strange
//! paths — checked by bytes on disk, modes, process lists, exact error lines and exit
//! codes.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use stagehost_tests::*;

/// A config with the `file` provider copying into `wd/` (relative to the config).
fn copy_config(sandbox: &Sandbox) -> PathBuf {
    sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"files\"\nplugin = \"file\"\nsettings = { mode = \"copy\" }\n[executor.local]\nworking_dir = \"wd\"\n",
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        }
        Err(_) => false,
    }
}

/// Whether `pid` is gone, allowing a signal already sent a moment to be delivered.
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child`; a child still running after `limit` is a hang: it is killed and
/// the test fails. (A safety net against hanging the suite, not a speed check.)
fn wait_or_hang(mut child: Child, limit: Duration) -> Run {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "stagehost hung; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap().into()
}

fn spawn_run(sandbox: &Sandbox, args: &[&str]) -> Child {
    sandbox
        .command(&stagehost_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// 1. Files the host writes

#[test]
fn a_symlink_planted_at_a_stdout_destination_is_replaced_not_followed() {
    let sandbox = Sandbox::new();
    let victim = sandbox.write("victim.txt", "precious\n");
    std::fs::create_dir_all(sandbox.join("logs")).unwrap();
    std::os::unix::fs::symlink(&victim, sandbox.join("logs/x.out")).unwrap();
    std::os::unix::fs::symlink(&victim, sandbox.join("logs/x.err")).unwrap();
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"echo hi; echo oops >&2\"\nstdout = \"logs/x.out\"\nstderr = \"logs/x.err\"\n",
    );
    let out = sandbox.run(&["run", flow.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    for (name, text) in [("logs/x.out", "hi\n"), ("logs/x.err", "oops\n")] {
        let meta = std::fs::symlink_metadata(sandbox.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is a regular file now");
        assert_eq!(std::fs::read_to_string(sandbox.join(name)).unwrap(), text);
    }
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

#[test]
fn a_copy_keeps_the_sources_permission_bits_in_both_directions() {
    let sandbox = Sandbox::new();
    let cfg = copy_config(&sandbox);
    let key = sandbox.write("data/id_key", "secret key\n");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tool = sandbox.write("data/tool.sh", "#!/bin/sh\necho tool\n");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        key.to_str().unwrap(),
        tool.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(mode(&sandbox.join("wd/id_key")), 0o600);
    assert_eq!(mode(&sandbox.join("wd/tool.sh")), 0o755);

    // Stage-out: a 0600 output published to a URL stays 0600.
    let local = sandbox.write("out/result.key", "result\n");
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dest = sandbox.join("published/result.key");
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "out",
        local.to_str().unwrap(),
        dest.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "result\n");
    assert_eq!(mode(&dest), 0o600);
}

#[test]
fn a_failed_rename_leaves_no_temporary_file_and_names_the_destination() {
    let sandbox = Sandbox::new();
    let cfg = copy_config(&sandbox);
    let input = sandbox.write("data/in.txt", "x".repeat(1 << 20));
    // The destination is a directory.
    sandbox.write("wd/in.txt/inside", "keep");
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    let dest = sandbox.join("wd/in.txt");
    // Refused before anything is written: the directory is not stagehost's to replace.
    assert_eq!(
        out.stderr.lines().next().unwrap(),
        format!(
            "stagehost: error: cannot stage in {}: provider \"files\" (plugin file 0.1.0) on executor \"local\": planning: permission denied: {} already exists and stagehost did not put it there; it is never overwritten: move it away, or set overwrite = true in [executor.local]",
            input.display(),
            dest.display()
        )
    );
    // Where replacing is allowed, the rename fails and names the destination.
    let allowing = sandbox.write(
        "allow.toml",
        "[[provider]]\nname = \"files\"\nplugin = \"file\"\nsettings = { mode = \"copy\" }\n[executor.local]\nworking_dir = \"wd\"\noverwrite = true\n",
    );
    let out = sandbox.run(&[
        "--config",
        allowing.to_str().unwrap(),
        "stage",
        "in",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr.lines().next().unwrap(),
        format!(
            "stagehost: error: cannot stage in {}: provider \"files\" (plugin file 0.1.0) on executor \"local\": in-task step: cannot write {}: a directory is in the way",
            input.display(),
            dest.display()
        )
    );
    assert!(!out.stderr.contains(".part"), "{}", out.stderr);
    assert_eq!(partial_files(&sandbox.join("wd")), Vec::<String>::new());
    assert_eq!(
        std::fs::read_to_string(dest.join("inside")).unwrap(),
        "keep"
    );

    // A stage-out URL ending in `/` names a directory: refused, nothing left behind.
    let local = sandbox.write("out.txt", "result");
    let target = format!("{}/", sandbox.join("published").display());
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "out",
        local.to_str().unwrap(),
        &target,
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "invalid URL: cannot write {target}: the destination names a directory, not a file"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "result");
}

#[test]
fn a_basename_at_the_file_system_limit_stages() {
    let sandbox = Sandbox::new();
    let cfg = copy_config(&sandbox);
    let name = "n".repeat(255);
    let input = sandbox.write(format!("data/{name}"), "long name");
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd").join(&name)).unwrap(),
        "long name"
    );
}

/// The host tag temporary names carry, as plugin-api writes it.
fn host_tag() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    assert_eq!(
        unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) },
        0
    );
    let end = buf.iter().position(|&b| b == 0).unwrap();
    buf[..end]
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || **b == b'.')
        .take(32)
        .map(|&b| char::from(b))
        .collect()
}

#[test]
fn temporaries_of_killed_processes_are_swept_and_a_live_runs_are_not() {
    let sandbox = Sandbox::new();
    let cfg = copy_config(&sandbox);
    let input = sandbox.write("data/in.txt", "fresh");
    // A process that has exited: its pid no longer exists.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let host = host_tag();
    let dead = sandbox.write(
        format!("wd/.in.txt.stagehost-{host}-{dead_pid}-0.part"),
        "left by SIGKILL",
    );
    let live = sandbox.write(
        format!("wd/.other.stagehost-{host}-{}-3.part", std::process::id()),
        "a live run's",
    );
    let foreign = sandbox.write(
        format!("wd/.other.stagehost-elsewhere-{dead_pid}-1.part"),
        "another host's",
    );
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/in.txt")).unwrap(),
        "fresh"
    );
    assert!(!dead.exists(), "the dead process's temporary is swept");
    assert!(live.exists(), "a live process's temporary is kept");
    assert!(foreign.exists(), "another host's temporary is kept");
}

#[test]
fn copy_mode_refuses_fifos_devices_and_sockets() {
    let sandbox = Sandbox::new();
    let cfg = copy_config(&sandbox);
    let fifo = sandbox.join("data/fifo");
    std::fs::create_dir_all(sandbox.join("data")).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let socket_path = sandbox.join("data/sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    assert!(std::fs::metadata(&socket_path)
        .unwrap()
        .file_type()
        .is_socket());
    for (path, kind) in [
        (fifo.clone(), "a FIFO"),
        (PathBuf::from("/dev/zero"), "a device"),
        (socket_path.clone(), "a socket"),
    ] {
        let child = spawn_run(
            &sandbox,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "stage",
                "in",
                path.to_str().unwrap(),
            ],
        );
        let out = wait_or_hang(child, Duration::from_secs(60));
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "stagehost: error: cannot stage in {p}: provider \"files\" (plugin file 0.1.0) on executor \"local\": in-task step: invalid URL: cannot copy {p}: it is {kind}, not a regular file",
                p = path.display()
            )
        );
        let name = path.file_name().unwrap();
        assert!(!sandbox.join("wd").join(name).exists());
    }
    assert_eq!(partial_files(&sandbox.join("wd")), Vec::<String>::new());
}

/// Signals stagehost in the middle of a slow copy and checks the clean stop.
fn a_signal_cancels_like_ctrl_c(signal: i32, word: &str) {
    let sandbox = Sandbox::new();
    let cfg = copy_config(&sandbox);
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"slow\"\ncommand = \"echo $$ > shell.pid; sleep 300\"\noutputs = [\"out.txt\"]\n",
    );
    let child = spawn_run(
        &sandbox,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "run",
            flow.to_str().unwrap(),
        ],
    );
    let pid: i32 = wait_for_file(&sandbox.join("wd/shell.pid"))
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = wait_or_hang(child, Duration::from_secs(60));
    // As shells report a process the signal ended: 128 + its number.
    assert_eq!(out.code, Some(128 + signal), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("stagehost: {word}: cancelling")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.lines().last().unwrap().contains("1 cancelled"),
        "{}",
        out.stderr
    );
    assert!(gone(pid), "the task's shell is gone");
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

#[test]
fn sigterm_cancels_as_sigint_does() {
    a_signal_cancels_like_ctrl_c(libc::SIGTERM, "terminated");
}

#[test]
fn sighup_cancels_as_sigint_does() {
    a_signal_cancels_like_ctrl_c(libc::SIGHUP, "hung up");
}

// ---------------------------------------------------------------------------------
// 2. Processes

#[test]
fn cancelling_a_run_kills_the_whole_process_group() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"sleep 300 & echo $! > bg.pid; sleep 301 & echo $! > fg.pid; wait\"\n",
    );
    let child = spawn_run(&sandbox, &["run", flow.to_str().unwrap()]);
    let bg: i32 = wait_for_file(&sandbox.join("work/bg.pid"))
        .trim()
        .parse()
        .unwrap();
    let fg: i32 = wait_for_file(&sandbox.join("work/fg.pid"))
        .trim()
        .parse()
        .unwrap();
    assert!(alive(bg) && alive(fg));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = wait_or_hang(child, Duration::from_secs(60));
    assert_eq!(out.code, Some(130), "{}", out.stderr);
    assert!(gone(bg), "the background sleep was killed");
    assert!(gone(fg), "the foreground sleep was killed");
}

#[test]
fn a_background_child_holding_stderr_does_not_hang_its_task() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"sleep 600 & echo $! > bg.pid; echo started\"\n",
    );
    let child = spawn_run(&sandbox, &["run", flow.to_str().unwrap()]);
    let out = wait_or_hang(child, Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let bg: i32 = std::fs::read_to_string(sandbox.join("work/bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        gone(bg),
        "what the shell left behind is stopped with its task"
    );
}

#[test]
fn a_task_past_its_time_limit_is_killed_with_its_group() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"sleep 300 & echo $! > bg.pid; sleep 301\"\ntimeout_secs = 1\n",
    );
    let child = spawn_run(&sandbox, &["run", flow.to_str().unwrap(), "--report", "-"]);
    let out = wait_or_hang(child, Duration::from_secs(120));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["tasks"][0]["status"], "failed");
    assert_eq!(
        report["tasks"][0]["error"],
        "the command ran past its time limit of 1s and was killed"
    );
    let bg: i32 = std::fs::read_to_string(sandbox.join("work/bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(gone(bg));
}

#[test]
fn stderr_that_is_not_staged_is_bounded_in_memory_and_in_the_error_line() {
    let sandbox = Sandbox::new();
    // 512 MiB of stderr on one line, then a last line; exit 3.
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"noisy\"\ncommand = \"head -c 536870912 /dev/zero | tr '\\\\0' x >&2; echo >&2; echo the real reason >&2; exit 3\"\n",
    );
    let child = spawn_run(&sandbox, &["run", flow.to_str().unwrap(), "--report", "-"]);
    let (out, peak_kib) = wait_with_peak_rss(child);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report = out.json();
    assert_eq!(
        report["tasks"][0]["error"],
        "the command failed with exit status 3: the real reason"
    );
    assert!(
        out.stderr.len() < 4096,
        "stderr is short: {} bytes",
        out.stderr.len()
    );
    assert!(
        peak_kib < 200 * 1024,
        "peak RSS {peak_kib} KiB for 512 MiB of stderr"
    );
}

// ---------------------------------------------------------------------------------
// 3. Paths

#[test]
fn placeholders_are_absolute_with_a_relative_working_dir() {
    let sandbox = Sandbox::new();
    // ./stagehost.toml in the current directory, the README's relative working_dir.
    sandbox.write(
        "work/stagehost.toml",
        "[[provider]]\nname = \"files\"\nplugin = \"file\"\nsettings = { mode = \"copy\" }\n[executor.local]\nworking_dir = \"wd\"\n",
    );
    sandbox.write("work/data/in.txt", "b\na\n");
    let flow = sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"sort\"\ncommand = \"sort {inputs[0]} > {outputs[0]}\"\ninputs = [\"data/in.txt\"]\noutputs = [\"results/sorted.txt\"]\n",
    );
    let out = sandbox.run(&["run", flow.to_str().unwrap(), "--report", "-"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/results/sorted.txt")).unwrap(),
        "a\nb\n"
    );
    let local = out.json()["tasks"][0]["files"][0]["local_path"].clone();
    assert_eq!(local, sandbox.join("work/wd/in.txt").display().to_string());
}

#[test]
fn non_utf8_paths_are_refused_with_a_clear_error_never_rewritten() {
    use std::os::unix::ffi::OsStrExt;
    let sandbox = Sandbox::new();
    let cfg = copy_config(&sandbox);
    let input = sandbox.write("data/in.txt", "x");
    let dest = sandbox.join(std::ffi::OsStr::from_bytes(b"dest-\xff"));
    let out = sandbox
        .command(&stagehost_bin())
        .args(["--config", cfg.to_str().unwrap(), "stage", "in", "--dest"])
        .arg(&dest)
        .arg(&input)
        .output()
        .unwrap();
    let out: Run = out.into();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "stage_in: invalid URL: the working directory {}/dest-\\xff is not valid UTF-8",
            sandbox.path().display()
        )),
        "{}",
        out.stderr
    );
    let names: Vec<String> = std::fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains('\u{fffd}')), "{names:?}");

    // A local output whose path is not UTF-8.
    let local = sandbox.join(std::ffi::OsStr::from_bytes(b"out-\xfe.txt"));
    std::fs::write(&local, "x").unwrap();
    let out: Run = sandbox
        .command(&stagehost_bin())
        .args(["--config", cfg.to_str().unwrap(), "stage", "out"])
        .arg(&local)
        .arg(sandbox.join("pub.txt"))
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("out-\\xfe.txt is not valid UTF-8"),
        "{}",
        out.stderr
    );
    assert!(!sandbox.join("pub.txt").exists());
}

// ---------------------------------------------------------------------------------
// 4. Secrets

#[test]
fn userinfo_and_credential_parameters_never_reach_any_output() {
    let sandbox = Sandbox::new();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["stage", "out", "/missing", "http://user:hunter2@host/x"],
            "cannot stage out http://user:***@host/x: the local output /missing does not exist",
        ),
        (
            vec!["stage", "in", "http://user:hunter2@host/a\nb"],
            "URL http://user:***@host/a\\nb holds the control character \\n",
        ),
        (
            // A closed loopback port: the http provider fails at once.
            vec!["stage", "in", "https://127.0.0.1:9/x?sig=hunter2&X-Amz-Signature=hunter2&X-Goog-Signature=hunter2&access_token=hunter2&v=1"],
            "cannot stage in https://127.0.0.1:9/x?sig=***&X-Amz-Signature=***&X-Goog-Signature=***&access_token=***&v=1: provider \"http\"",
        ),
        (
            vec!["stage", "in", "--json", "ftp://me:hunter2@h/f?X-Amz-Credential=hunter2"],
            "ftp://me:***@h/f?X-Amz-Credential=***",
        ),
    ];
    for (args, expected) in cases {
        let out = sandbox.run(&args);
        assert_ne!(out.code, Some(0), "{args:?}");
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!all.contains("hunter2"), "{args:?} leaked:\n{all}");
        assert!(all.contains(expected), "{args:?}:\n{all}");
        for line in out.stderr.lines() {
            assert!(
                line.starts_with("stagehost: "),
                "one line per error: {line:?}"
            );
        }
    }
    // In a workflow: the error line and the report.
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"true\"\ninputs = [\"https://u:hunter2@127.0.0.1:9/in?token=hunter2\"]\n",
    );
    let out = sandbox.run(&["run", flow.to_str().unwrap(), "--report", "-"]);
    assert_eq!(out.code, Some(6));
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("hunter2"), "{all}");
    assert_eq!(
        out.json()["tasks"][0]["files"][0]["url"],
        "https://u:***@127.0.0.1:9/in?token=***"
    );
}

#[test]
fn config_show_masks_secrets_by_name_at_any_depth_and_as_the_plugin_declares() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let config = sandbox.write(
        "site.toml",
        format!(
            r#"plugin_dirs = [{}]
[[provider]]
name = "p"
plugin = "probe"
settings = {{ mark = "declared-1", schemes = ["probe"] }}

[[provider]]
name = "cloud"
plugin = "not-installed"
[provider.settings]
bucket = "public-bucket"
apiKey = "leak-1"
PrivateKey = "leak-2"
accessKeyId = "leak-3"
pwd = "leak-4"
Authorization = "leak-5"
tokens = ["leak-6", "leak-7"]
nested = {{ passphrase = "leak-8", list = [{{ client_secret = "leak-9", region = "eu" }}] }}
"#,
            toml_path(&plugins)
        ),
    );
    let out = sandbox.run(&["--config", config.to_str().unwrap(), "config", "show"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for secret in ["declared-1", "leak-"] {
        assert!(
            !out.stdout.contains(secret),
            "{secret} shown:\n{}",
            out.stdout
        );
    }
    for kept in ["public-bucket", "\"eu\"", "\"probe\""] {
        assert!(out.stdout.contains(kept), "{kept} hidden:\n{}", out.stdout);
    }
    assert_eq!(out.stdout.matches("\"***\"").count(), 9, "{}", out.stdout);
}

#[test]
fn a_wrong_typed_secret_setting_is_a_config_error_that_does_not_quote_it() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let config = sandbox.write(
        "site.toml",
        format!(
            "plugin_dirs = [{}]\n[[provider]]\nname = \"p\"\nplugin = \"probe\"\nsettings = {{ mark = 987654321 }}\n",
            toml_path(&plugins)
        ),
    );
    let out = sandbox.run(&[
        "--config",
        config.to_str().unwrap(),
        "stage",
        "in",
        "/etc/hostname",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "stagehost: error: {}:5:14: provider \"p\" (plugin \"probe\"): invalid settings: invalid type: integer `***`, expected a string\n",
            config.display()
        )
    );
}

// ---------------------------------------------------------------------------------
// 5. Config and workflow input

#[test]
fn a_typo_in_an_input_table_is_an_error_with_its_place() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"echo > {outputs[0]}; echo > {outputs[1]}\"\noutputs = [\"x\", \"y\"]\n\n[[task]]\nname = \"b\"\ncommand = \"cat {inputs[0]}\"\ninputs = [{ task = \"a\", outptu = 1 }]\n",
    );
    let out = sandbox.run(&["run", flow.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "stagehost: error: {}:9:25: unknown field `outptu`, expected one of `task`, `output`, `url`, `urls`, `recursive`, `sha256`\n",
            flow.display()
        )
    );
}

#[test]
fn two_tasks_writing_one_output_are_an_error_before_anything_runs() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"touch ran-a; echo a > {outputs[0]}\"\noutputs = [\"out/x.txt\"]\n\n[[task]]\nname = \"b\"\ncommand = \"touch ran-b\"\nstdout = \"out/x.txt\"\n",
    );
    let out = sandbox.run(&["run", flow.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "stagehost: error: {f}:6:1: task \"b\": it writes {x}, which task \"a\" (at {f}:1:1) writes too; two writers of one output would overwrite each other\n",
            f = flow.display(),
            x = sandbox.join("out/x.txt").display()
        )
    );
    assert!(!sandbox.join("work/ran-a").exists() && !sandbox.join("work/ran-b").exists());
}

#[test]
fn a_command_that_does_not_write_its_output_fails_and_its_consumer_never_runs() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"lazy\"\ncommand = \"true\"\noutputs = [\"out/never.txt\", \"out/made.txt\"]\n\n[[task]]\nname = \"reader\"\ncommand = \"cat {inputs[0]} > {outputs[0]}\"\ninputs = [{ task = \"lazy\" }]\noutputs = [\"out/copy.txt\"]\n",
    );
    std::fs::create_dir_all(sandbox.join("out")).unwrap();
    let out = sandbox.run(&["run", flow.to_str().unwrap(), "--report", "-"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report = out.json();
    let lazy = &report["tasks"][0];
    assert_eq!(lazy["status"], "failed");
    assert_eq!(
        lazy["error"],
        format!(
            "missing outputs: the command exited 0 but did not write {}, {}",
            sandbox.join("out/never.txt").display(),
            sandbox.join("out/made.txt").display()
        )
    );
    assert_eq!(report["tasks"][1]["status"], "dependency-failed");
    assert!(!sandbox.join("out/copy.txt").exists());
}

#[test]
fn out_of_range_numbers_are_config_errors_never_panics() {
    let sandbox = Sandbox::new();
    let cases = [
        ("[transfers]\nmax_concurrent = 9223372036854775807\n", "2:1: [transfers] max_concurrent must be between 1 and 1000000, not 9223372036854775807"),
        ("[transfers]\nper_host = 0\n", "2:1: [transfers] per_host must be between 1 and 1000000, not 0"),
        ("[transfers]\ntimeout_secs = 1e300\n", "2:1: [transfers] timeout_secs must be a number of seconds from 0 to 1000000000, not 1e300"),
        ("[transfers]\ntimeout_secs = nan\n", "2:1: [transfers] timeout_secs must be a number of seconds from 0 to 1000000000, not NaN"),
        ("[executor.local]\nworkers = 100000000\n", "2:1: executor \"local\": workers must be between 1 and 4096, not 100000000"),
        ("[transfers]\nmax_concurrent = -1\n", "2:18: invalid value: integer `-1`, expected usize"),
    ];
    for (text, expected) in cases {
        let cfg = sandbox.write("site.toml", text);
        let out = sandbox.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "in",
            "/etc/hostname",
        ]);
        assert_eq!(out.code, Some(2), "{text}: {}", out.stderr);
        assert_eq!(
            out.stderr,
            format!("stagehost: error: {}:{expected}\n", cfg.display()),
            "{text}"
        );
    }
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"true\"\ntimeout_secs = 1e300\n",
    );
    let out = sandbox.run(&["run", flow.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "timeout_secs must be a number of seconds above 0 and at most 1000000000, not 1e300"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_checksum_of_an_unknown_algorithm_is_an_error_and_sha1_is_verified() {
    let sandbox = Sandbox::new();
    let input = sandbox.write("data/in.txt", "hello world");
    let url = |fragment: &str| format!("file://{}#{fragment}", input.display());
    let out = sandbox.run(&["stage", "in", &url("sha384=00")]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("checksum: invalid URL: the URL asks for a sha384 checksum, which stagehost cannot verify (it knows sha256, sha512, sha1, md5, adler32)"),
        "{}",
        out.stderr
    );
    let out = sandbox.run(&[
        "stage",
        "in",
        &url("sha1=2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = sandbox.run(&[
        "stage",
        "in",
        &url("sha1=0000000000000000000000000000000000000000"),
    ]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stderr.contains("integrity: checksum mismatch"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------
// 6. Trust

#[test]
fn a_config_others_may_write_is_refused() {
    let sandbox = Sandbox::new();
    let local = sandbox.write("work/stagehost.toml", "[executor.local]\n");
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = sandbox.run(&["stage", "in", "/etc/hostname"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "stagehost: error: stagehost.toml: refused: the config is group- or world-writable (mode 666); run `chmod go-w stagehost.toml` (config found by ./stagehost.toml; a config names code to load, so only you or root may write it)\n"
    );
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = sandbox.run(&["stage", "in", "/etc/hostname"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Owned by another user (root can hand it over; others cannot make such a file).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(local.to_str().unwrap()).unwrap();
        // SAFETY: a valid path; uid/gid 65534 is `nobody`.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
        let out = sandbox.run(&["stage", "in", "/etc/hostname"]);
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        assert!(out.stderr.contains("refused: the config is owned by uid 65534, not by you (uid 0) or root (config found by ./stagehost.toml;"), "{}", out.stderr);
    }
}

#[test]
fn relative_plugin_dirs_resolve_against_the_config_and_each_directory_says_where_it_came_from() {
    let sandbox = Sandbox::new();
    sandbox.plugin_dir("conf/plugins", &[&fixture("probe")]);
    let cfg = sandbox.write(
        "conf/site.toml",
        "plugin_dirs = [\"plugins\", \"missing\", \"site.toml\"]\n",
    );
    let out = sandbox.run(&["--config", cfg.to_str().unwrap(), "plugins", "list"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let conf = sandbox.join("conf");
    for line in [
        format!("  {}/plugins (plugin_dirs in {})", conf.display(), cfg.display()),
        format!("  warning: plugin_dirs entry {}/missing cannot be searched: No such file or directory (os error 2)", conf.display()),
        format!("  warning: plugin_dirs entry {}/site.toml is not a directory", conf.display()),
        "  /work/main/target/debug (<exe dir>)".replace("/work/main", &workspace_root().display().to_string()),
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "{line:?} missing:\n{}", out.stdout);
    }
    let json = sandbox
        .run(&[
            "--config",
            cfg.to_str().unwrap(),
            "plugins",
            "list",
            "--json",
        ])
        .json();
    let probe = json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "probe")
        .unwrap()
        .clone();
    assert_eq!(probe["status"], "loaded");
    assert_eq!(
        probe["directory_origin"],
        format!("plugin_dirs in {}", cfg.display())
    );
    assert_eq!(json["warnings"].as_array().unwrap().len(), 2);
}

fn sha256_file(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_pinned_plugin_loads_only_with_the_pinned_bytes() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let lib = plugins.join(fixture("probe").file_name().unwrap());
    let good = sha256_file(&lib);
    let bad = "0".repeat(64);
    let config = |pin: &str, how: &str| {
        sandbox.write(
            "site.toml",
            format!(
                "plugin_dirs = [{}]\n[[provider]]\nname = \"p\"\n{how}\nsha256 = \"{pin}\"\nsettings = {{ schemes = [\"probe\"] }}\n",
                toml_path(&plugins)
            ),
        )
    };
    for how in [
        "plugin = \"probe\"".to_owned(),
        format!("library = {}", toml_path(&lib)),
    ] {
        let cfg = config(&good, &how);
        let json = sandbox
            .run(&[
                "--config",
                cfg.to_str().unwrap(),
                "plugins",
                "list",
                "--json",
            ])
            .json();
        assert_eq!(json["providers"][0]["status"], "ready", "{how}: {json:#}");
        let row = json["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "probe")
            .unwrap()
            .clone();
        assert_eq!(row["sha256"], good.as_str());

        let cfg = config(&bad, &how);
        let json = sandbox
            .run(&[
                "--config",
                cfg.to_str().unwrap(),
                "plugins",
                "list",
                "--json",
            ])
            .json();
        assert_eq!(json["providers"][0]["status"], "failed", "{how}");
        let reason = json["providers"][0]["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.ends_with(&format!(
                "{}: refused: its sha256 is {good}, the config pins {bad}",
                lib.display()
            )),
            "{how}: {reason}"
        );
    }
}

#[test]
fn a_plugin_with_an_undefined_symbol_is_refused_at_load_naming_it() {
    let sandbox = Sandbox::new();
    let dir = sandbox.plugin_dir("plugins", &[&fixture("undefined_symbol")]);
    let out = sandbox.run_env(
        &["plugins", "list", "--json"],
        &[("STAGEHOST_PLUGIN_PATH", dir.to_str().unwrap())],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let json = out.json();
    let row = json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["file"]
                .as_str()
                .unwrap()
                .ends_with("libundefined_symbol.so")
        })
        .unwrap()
        .clone();
    assert_eq!(row["status"], "failed");
    assert_eq!(
        row["reason"],
        "cannot load: undefined symbol: stagehost_fixture_symbol_defined_nowhere"
    );
    // The host goes on with the others.
    let out = sandbox.run_env(
        &["stage", "in", "/etc/hostname"],
        &[("STAGEHOST_PLUGIN_PATH", dir.to_str().unwrap())],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn a_plugin_file_swapped_after_its_checks_is_never_the_one_loaded() {
    let sandbox = Sandbox::new();
    let dir = sandbox.plugin_dir("plugins", &[]);
    let path = dir.join("libswap.so");
    std::fs::copy(fixture("probe"), &path).unwrap();
    let checked = stagehost::discovery::check_before_open(&path).unwrap();
    // An attacker renames another library over the checked path.
    let other = dir.join("other.tmp");
    std::fs::copy(example_data_plugin(), &other).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let loader = stagehost::PluginLoader::default();
    let loaded = loader.load_checked(&path, checked).unwrap();
    assert_eq!(
        loaded.name, "probe",
        "the checked bytes are the loaded bytes"
    );
    assert_eq!(loaded.sha256().unwrap(), sha256_file(&fixture("probe")));
}

// ---------------------------------------------------------------------------------
// 7. Scale

#[test]
fn a_workflow_of_50000_chained_tasks_is_checked_in_bounded_memory() {
    let sandbox = Sandbox::new();
    let text = chained_workflow(50_000);
    let flow = sandbox.write("flow.toml", &text);
    let child = sandbox
        .command(&stagehost_bin())
        .args(["run", flow.to_str().unwrap(), "--dry-run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, peak_kib) = wait_with_peak_rss(child);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.matches("task c").count(), 50_000);
    // The text is 5.8 MB; a document tree of it took over 250 MB.
    assert!(peak_kib < 120 * 1024, "peak RSS {peak_kib} KiB");
}

#[test]
fn a_straggler_that_ignores_sigterm_is_killed_by_the_end_of_the_run() {
    let sandbox = Sandbox::new();
    // The background shell and its sleep ignore SIGTERM; the task ends at once.
    let flow = sandbox.write(
        "flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"(trap '' TERM; echo $$ > /dev/null; exec sleep 600) & echo $! > bg.pid\"\n",
    );
    let child = spawn_run(&sandbox, &["run", flow.to_str().unwrap()]);
    let out = wait_or_hang(child, Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let bg: i32 = std::fs::read_to_string(sandbox.join("work/bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // stagehost has exited: nothing it started may be left.
    assert!(gone(bg), "the straggler outlived the run");
}
