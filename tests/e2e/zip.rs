//! The `zip` provider, loaded from the built `.so`: Parsl's zip cases through
//! `stagehost run`, many writers in many processes, writers killed mid-update, and
//! the paths it must refuse. Archives are checked by Python's `zipfile` and `unzip -t`.

use std::path::{Path, PathBuf};
use std::process::Command;

use stagehost_tests::*;

/// A config with `zip` (with `settings`) then `file`, working in `wd/`.
fn zip_config(sandbox: &Sandbox, settings: &str) -> PathBuf {
    sandbox.write(
        "site.toml",
        format!(
            "[[provider]]\nname = \"zip\"\nplugin = \"zip\"\nsettings = {{ {settings} }}\n\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"zip\", \"file\"]\n"
        ),
    )
}

/// Runs the Python `script` on `archive` (it must pass, after `testzip()` found every
/// CRC right) and `unzip -t` (unless the archive is empty); the script's stdout.
fn check_archive(archive: &Path, script: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(archive)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "zipfile rejects {}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let empty = out.stdout.starts_with(b"[]");
    if !empty {
        let unzip = Command::new("unzip")
            .arg("-tq")
            .arg(archive)
            .output()
            .expect("unzip runs (scripts/install-test-deps installs it)");
        assert!(
            unzip.status.success(),
            "unzip -t rejects {}: {}{}",
            archive.display(),
            String::from_utf8_lossy(&unzip.stdout),
            String::from_utf8_lossy(&unzip.stderr)
        );
    }
    out.stdout
}

/// The members of `archive` with their contents, read by Python's `zipfile`.
fn members(archive: &Path) -> Vec<(String, String)> {
    let script = "import json, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nbad = z.testzip()\nassert bad is None, bad\nprint(json.dumps([[n, z.read(n).decode()] for n in z.namelist()]))\n";
    serde_json::from_slice(&check_archive(archive, script)).expect("json")
}

fn zip_url(archive: &Path, member: &str) -> String {
    format!("zip:{}/{member}", archive.display())
}

#[test]
fn parsl_zip_out_cases_one_member_and_three_across_two_archives() {
    let sandbox = Sandbox::new();
    let cfg = zip_config(&sandbox, "");
    let one = sandbox.join("container.zip");
    let out = sandbox.run_workflow(
        &cfg,
        &format!(
            "[[task]]\nname = \"one\"\ncommand = \"echo 0 > {{outputs[0]}}\"\noutputs = [{:?}]\n",
            zip_url(&one, "data.txt")
        ),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(members(&one), [("data.txt".to_owned(), "0\n".to_owned())]);
    // As Parsl, the local copy goes once the archive holds it.
    assert!(!sandbox.join("wd/data.txt").exists());

    let (c1, c2) = (
        sandbox.join("container1.zip"),
        sandbox.join("container2.zip"),
    );
    let out = sandbox.run_workflow(&cfg,
        &format!(
            "[[task]]\nname = \"multi\"\ncommand = \"echo 0 > {{outputs[0]}}; echo 1 > {{outputs[1]}}; echo 2 > {{outputs[2]}}\"\noutputs = [{:?}, {:?}, {:?}]\n",
            zip_url(&c1, "a/b/c/data.txt"),
            zip_url(&c1, "something.txt"),
            zip_url(&c2, "a/d/other.txt"),
        ),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut got = members(&c1);
    got.sort();
    assert_eq!(
        got,
        [
            ("a/b/c/data.txt".to_owned(), "0\n".to_owned()),
            ("something.txt".to_owned(), "1\n".to_owned())
        ]
    );
    assert_eq!(
        members(&c2),
        [("a/d/other.txt".to_owned(), "2\n".to_owned())]
    );
    let report = out.json();
    for file in report["tasks"][0]["files"].as_array().unwrap() {
        assert_eq!(file["provider"], "zip", "{file:#}");
        assert_eq!(file["modes"][0], "separate-job", "{file:#}");
    }
}

#[test]
fn a_netloc_or_a_bad_member_path_fails_the_task_before_it_runs() {
    let sandbox = Sandbox::new();
    let cfg = zip_config(&sandbox, "");
    let archive = sandbox.join("c.zip");
    for (url, why) in [
        (
            format!("zip://someauthority{}/data.txt", archive.display()),
            "has no netloc, but this one has \"someauthority\"",
        ),
        (zip_url(&archive, "../escape.txt"), "holds `..`"),
        (zip_url(&archive, "a/../../escape.txt"), "holds `..`"),
        (format!("zip:{}//etc/x", archive.display()), "is absolute"),
        (
            format!("zip:{}/data.txt", sandbox.join("c.tar").display()),
            "no `.zip/`",
        ),
    ] {
        for direction in ["inputs", "outputs"] {
            let marker = sandbox.join("ran");
            let out = sandbox.run_workflow(
                &cfg,
                &format!(
                    "[[task]]\nname = \"t\"\ncommand = \"touch {}\"\n{direction} = [{url:?}]\n",
                    marker.display()
                ),
            );
            assert_eq!(out.code, Some(1), "{url}: {}", out.stderr);
            let error = out.json()["tasks"][0]["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                error.contains("provider \"zip\" (plugin zip 0.1.0) on executor \"local\"")
                    && error.contains(why),
                "{url} ({direction}): {error}"
            );
            assert!(!marker.exists(), "the task ran for {url}");
        }
    }
    // The archive with a trailing `/` names its root, a directory: as an input, one
    // that must exist (not found); as an output, a directory the task fills (in
    // `<working_dir>/<the archive's name without .zip>`, never the archive's place),
    // which left empty makes no archive, and whose files become members.
    let root = format!("zip:{}/", archive.display());
    let out = sandbox.run_workflow(
        &cfg,
        &format!("[[task]]\nname = \"t\"\ncommand = \"true\"\ninputs = [{root:?}]\n"),
    );
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("there is no archive"), "{}", out.stderr);
    let out = sandbox.run_workflow(
        &cfg,
        &format!("[[task]]\nname = \"t\"\ncommand = \"true\"\noutputs = [{root:?}]\n"),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!archive.exists());
    let out = sandbox.run_workflow(
        &cfg,
        &format!("[[task]]\nname = \"t\"\ncommand = \"mkdir {{outputs[0]}}/s && printf A > {{outputs[0]}}/s/a.txt\"\noutputs = [{root:?}]\n"),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let listed = check_archive(
        &archive,
        "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nprint([(n, z.read(n).decode()) for n in z.namelist()])",
    );
    assert_eq!(String::from_utf8_lossy(&listed), "[('s/a.txt', 'A')]\n");
    assert!(!sandbox.join("escape.txt").exists());
}

#[test]
fn zip_inputs_count_lines_and_a_zip_to_zip_chain_with_stdout_and_stderr_as_members() {
    let sandbox = Sandbox::new();
    let cfg = zip_config(&sandbox, "");
    let input = sandbox.join("in.zip");
    let results = sandbox.join("results.zip");
    let mut flow = String::new();
    for n in [1, 17, 1000] {
        // Write the member through stagehost, then count its lines from the archive.
        flow.push_str(&format!(
            "[[task]]\nname = \"write{n}\"\ncommand = \"seq 1 {n} > {{outputs[0]}}\"\noutputs = [{:?}]\n\n[[task]]\nname = \"count{n}\"\ncommand = \"wc -l < {{inputs[0]}} | tr -d ' ' > {{outputs[0]}}\"\ninputs = [{{ task = \"write{n}\", output = 0 }}]\noutputs = [{:?}]\n\n",
            zip_url(&input, &format!("lines/{n}.txt")),
            zip_url(&results, &format!("counts/{n}.txt")),
        ));
    }
    // stdout and stderr as members (Parsl's std_autopath case).
    flow.push_str(&format!(
        "[[task]]\nname = \"speak\"\ncommand = \"echo out; echo err >&2\"\nstdout = {:?}\nstderr = {:?}\n",
        zip_url(&results, "logs/speak.out"),
        zip_url(&results, "logs/speak.err"),
    ));
    let out = sandbox.run_workflow(&cfg, &flow);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let got = members(&results);
    let find = |name: &str| {
        got.iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("{name} missing from {got:?}"))
    };
    for n in [1, 17, 1000] {
        assert_eq!(find(&format!("counts/{n}.txt")), format!("{n}\n"));
    }
    assert_eq!(find("logs/speak.out"), "out\n");
    assert_eq!(find("logs/speak.err"), "err\n");
    // A later run reads those members into another archive.
    let out = sandbox.run_workflow(&cfg,
        &format!(
            "[[task]]\nname = \"join\"\ncommand = \"cat {{inputs[0]}} {{inputs[1]}} > {{outputs[0]}}\"\ninputs = [{:?}, {:?}]\noutputs = [{:?}]\n",
            zip_url(&results, "logs/speak.out"),
            zip_url(&results, "logs/speak.err"),
            zip_url(&sandbox.join("final.zip"), "joined.txt"),
        ),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        members(&sandbox.join("final.zip")),
        [("joined.txt".to_owned(), "out\nerr\n".to_owned())]
    );
}

#[test]
fn a_member_written_twice_is_an_error_unless_overwrite_and_never_a_duplicate() {
    let sandbox = Sandbox::new();
    let archive = sandbox.join("dup.zip");
    let cfg = zip_config(&sandbox, "");
    let local = sandbox.write("v1.txt", "first\n");
    let stage_out = |cfg: &Path, local: &Path| {
        sandbox.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "out",
            local.to_str().unwrap(),
            &zip_url(&archive, "m.txt"),
        ])
    };
    assert_eq!(stage_out(&cfg, &local).code, Some(0));
    // The same bytes again (a workflow run a second time): nothing changes, no error.
    let again = sandbox.write("v1-again.txt", "first\n");
    let out = stage_out(&cfg, &again);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        members(&archive),
        [("m.txt".to_owned(), "first\n".to_owned())]
    );
    let local = sandbox.write("v2.txt", "second\n");
    let out = stage_out(&cfg, &local);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("already holds a member m.txt; to replace it, set overwrite = true"),
        "{}",
        out.stderr
    );
    assert!(local.exists(), "a failed stage-out keeps the local file");
    assert_eq!(
        members(&archive),
        [("m.txt".to_owned(), "first\n".to_owned())]
    );
    let cfg = zip_config(&sandbox, "overwrite = true");
    let out = stage_out(&cfg, &local);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        members(&archive),
        [("m.txt".to_owned(), "second\n".to_owned())]
    );
}

#[test]
fn links_are_refused_as_members_and_as_outputs_and_a_held_lock_times_out() {
    let sandbox = Sandbox::new();
    let cfg = zip_config(&sandbox, "lock_timeout_secs = 0.5");
    // An archive (made by Python) whose member is a symbolic link to /etc/passwd.
    let evil = sandbox.join("evil.zip");
    let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\ni = zipfile.ZipInfo('link')\ni.external_attr = 0o120777 << 16\nz.writestr(i, '/etc/passwd')\nz.writestr('plain.txt', 'ok')\nz.close()\n";
    let made = Command::new("python3")
        .args(["-c", script])
        .arg(&evil)
        .status()
        .unwrap();
    assert!(made.success());
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        &zip_url(&evil, "link"),
    ]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("is a symbolic link; stagehost does not extract links"),
        "{}",
        out.stderr
    );
    assert!(std::fs::symlink_metadata(sandbox.join("wd/link")).is_err());
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        &zip_url(&evil, "plain.txt"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/plain.txt")).unwrap(),
        "ok"
    );
    // A missing member: not found, nothing written.
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        &zip_url(&evil, "absent.txt"),
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("not found:") && out.stderr.contains("holds no member absent.txt"),
        "{}",
        out.stderr
    );

    // A task's output that is a link to a secret is not added.
    let archive = sandbox.join("out.zip");
    let out = sandbox.run_workflow(&cfg,
        &format!(
            "[[task]]\nname = \"t\"\ncommand = \"ln -s /etc/passwd {{outputs[0]}}\"\noutputs = [{:?}]\n",
            zip_url(&archive, "stolen.txt")
        ),
    );
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("is a symbolic link; stagehost adds only regular files"),
        "{}",
        out.stderr
    );
    assert!(!archive.exists(), "no archive is made when nothing goes in");

    // Another process holds the archive's lock: a clear error after the deadline.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(sandbox.join("out.zip.lock"))
        .unwrap();
    lock.lock().unwrap();
    let local = sandbox.write("x.txt", "x\n");
    let out = sandbox.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "out",
        local.to_str().unwrap(),
        &zip_url(&archive, "x.txt"),
    ]);
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    assert!(
        out.stderr.contains("timed out: cannot lock") && out.stderr.contains("within 0.5s"),
        "{}",
        out.stderr
    );
    assert!(local.exists());
    lock.unlock().unwrap();
}

#[test]
fn sixty_four_tasks_in_each_of_four_processes_write_one_archive() {
    let sandbox = Sandbox::new();
    let cfg = zip_config(&sandbox, "");
    let archive = sandbox.join("shared.zip");
    let mut children = Vec::new();
    for p in 0..4 {
        let wd = format!("wd{p}");
        let cfg_p = sandbox.write(
            format!("site{p}.toml"),
            std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("\"wd\"", &format!("{wd:?}")),
        );
        let mut flow = String::new();
        for t in 0..64 {
            flow.push_str(&format!(
                "[[task]]\nname = \"t{t}\"\ncommand = \"echo p{p} t{t} > {{outputs[0]}}\"\noutputs = [{:?}]\n\n",
                zip_url(&archive, &format!("p{p}/t{t}.txt"))
            ));
        }
        let flow = sandbox.write(format!("flow{p}.toml"), flow);
        let mut cmd = sandbox.command(&stagehost_bin());
        cmd.arg("--config")
            .arg(&cfg_p)
            .arg("run")
            .arg(&flow)
            .arg("-q")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        children.push(cmd.spawn().unwrap());
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let got = members(&archive);
    assert_eq!(got.len(), 256, "every member once");
    let mut names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 256, "no name twice");
    for (name, content) in &got {
        let (p, t) = name.trim_end_matches(".txt").split_once('/').unwrap();
        assert_eq!(content, &format!("{p} {t}\n"), "{name}");
    }
}

/// Bytes that do not compress: deflate works through all of them, so an update takes
/// long enough for kills to land inside it.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The members of `archive` with the FNV-1a hash of their bytes, as Python's
/// `zipfile` reads them (every CRC checked), after `unzip -t` passed.
fn member_hashes(archive: &Path) -> Vec<(String, u64)> {
    let script = "import json, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nbad = z.testzip()\nassert bad is None, bad\ndef fnv(b):\n    h = 0xcbf29ce484222325\n    for x in b:\n        h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff\n    return h\nprint(json.dumps([[n, fnv(z.read(n)[:4096]), len(z.read(n))] for n in z.namelist()]))\n";
    let rows: Vec<(String, u64, u64)> =
        serde_json::from_slice(&check_archive(archive, script)).expect("json");
    rows.into_iter().map(|(n, h, len)| (n, h ^ len)).collect()
}

fn fnv_prefix(data: &[u8]) -> u64 {
    let h = data[..data.len().min(4096)]
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    h ^ data.len() as u64
}

#[test]
fn a_writer_killed_at_any_point_of_an_update_loses_nothing_committed() {
    const ROUNDS: usize = 24;
    const SIZE: usize = 3 << 20;
    let sandbox = Sandbox::new();
    let cfg = zip_config(&sandbox, "keep_local = true");
    let archive = sandbox.join("crash.zip");
    let journal = sandbox.join("crash.zip.journal");
    let stage_out = |i: usize| {
        let mut cmd = sandbox.command(&stagehost_bin());
        cmd.arg("--config")
            .arg(&cfg)
            .args(["stage", "out"])
            .arg(sandbox.join(format!("src/{i}.bin")))
            .arg(zip_url(&archive, &format!("m{i}.bin")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    for i in 0..=ROUNDS {
        sandbox.write(format!("src/{i}.bin"), noise(i as u64 + 1, SIZE));
    }
    // Member 0 goes in whole; its time sets the span the kills are spread over.
    let start = std::time::Instant::now();
    assert!(stage_out(0).status().unwrap().success());
    let span = start.elapsed();
    let mut committed = vec![0usize];
    let (mut mid_update, mut finished) = (0, 0);
    for i in 1..=ROUNDS {
        let mut child = stage_out(i).spawn().unwrap();
        std::thread::sleep(span.mul_f64((i as f64 - 0.5) / ROUNDS as f64));
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        if status.success() {
            committed.push(i);
            finished += 1;
        }
        if std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0) {
            mid_update += 1;
        }
        // The next reader rolls a leftover journal back; then the archive is whole.
        let out = sandbox.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "stage",
            "in",
            "--dest",
            sandbox.join("check").to_str().unwrap(),
            &zip_url(&archive, "m0.bin"),
        ]);
        assert_eq!(out.code, Some(0), "round {i}: {}", out.stderr);
        assert!(!std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0));
        let got = member_hashes(&archive);
        for &c in &committed {
            let want = fnv_prefix(&noise(c as u64 + 1, SIZE));
            let name = format!("m{c}.bin");
            assert!(
                got.iter().any(|(n, h)| *n == name && *h == want),
                "round {i}: committed member {name} is lost or damaged: {got:?}"
            );
        }
        // A member of the killed update is there whole, or not at all.
        for (n, h) in &got {
            let k: usize = n
                .trim_start_matches('m')
                .trim_end_matches(".bin")
                .parse()
                .unwrap();
            assert_eq!(
                *h,
                fnv_prefix(&noise(k as u64 + 1, SIZE)),
                "round {i}: {n} is damaged"
            );
        }
    }
    eprintln!("kills: {mid_update} inside an update, {finished} after it finished, of {ROUNDS}");
    assert!(
        mid_update >= 3,
        "only {mid_update} of {ROUNDS} kills landed inside an update ({finished} finished)"
    );
}

#[test]
fn stat_and_ls_read_the_central_directory() {
    let sandbox = Sandbox::new();
    let cfg = zip_config(&sandbox, "");
    let cfg = cfg.to_str().unwrap();
    let archive = sandbox.join("tree.zip");
    let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\nz.writestr(zipfile.ZipInfo('a.txt', (2024, 2, 29, 12, 30, 58)), 'A')\nz.writestr('sub/b.txt', 'BB')\nz.writestr('sub/deeper/c.txt', 'CCC')\nz.writestr('empty/', '')\nz.close()\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = |rest: &str| format!("zip:{}{rest}", archive.display());
    let out = sandbox.run(&["--config", cfg, "ls", &url("")]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "a.txt\nempty/\nsub/\n"),
        "{}",
        out.stderr
    );
    let out = sandbox.run(&["--config", cfg, "ls", "-R", &url("/sub/")]);
    assert_eq!(
        out.stdout, "b.txt\ndeeper/\ndeeper/c.txt\n",
        "{}",
        out.stderr
    );
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stat",
        "--json",
        &url("/a.txt"),
        &url("/sub"),
        &url("/empty"),
        &url("/none.txt"),
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let json = out.json();
    assert_eq!(
        (&json[0]["kind"], &json[0]["size"], &json[0]["modified"]),
        (&"file".into(), &1.into(), &"2024-02-29T12:30:58Z".into())
    );
    assert_eq!(json[1]["kind"], "directory");
    assert_eq!(json[2]["kind"], "directory");
    assert_eq!(json[3]["exists"], false);
    // Listing never extracts: nothing was written beside the archive.
    assert!(!sandbox.join("wd").exists());
    // A member, or an empty directory entry, as a directory to list.
    let out = sandbox.run(&["--config", cfg, "ls", &url("/a.txt")]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = sandbox.run(&["--config", cfg, "ls", &url("/empty/")]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), ""),
        "{}",
        out.stderr
    );
    // A prefix staged in: each member below it, extracted below `<working_dir>/sub/`;
    // in a workflow too, through {inputs[0]}.
    let out = sandbox.run(&["--config", cfg, "stage", "in", &url("/sub/")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/sub/deeper/c.txt")).unwrap(),
        "CCC"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/sub/b.txt")).unwrap(),
        "BB"
    );
    sandbox.write(
        "work/flow.toml",
        format!(
            "[[task]]\nname = \"t\"\ncommand = \"cat {{inputs[0]}}/b.txt {{inputs[0]}}/deeper/c.txt > {{outputs[0]}}\"\ninputs = [{:?}]\noutputs = [\"both.txt\"]\n",
            url("/sub/")
        ),
    );
    let out = sandbox.run(&["--config", cfg, "run", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/both.txt")).unwrap(),
        "BBCCC"
    );
    // An archive that is not there, or a prefix nothing continues: not found.
    let out = sandbox.run(&["--config", cfg, "ls", &url("/nothing/")]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let missing = sandbox.join("absent.zip");
    let out = sandbox.run(&["--config", cfg, "ls", &format!("zip:{}", missing.display())]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("there is no archive"), "{}", out.stderr);
}
