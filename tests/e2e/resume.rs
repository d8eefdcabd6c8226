//! `stagehost run --resume` through the built binary: what is skipped, what runs again
//! and why, against local files, nginx and moto, and after SIGKILL at random points.

use std::collections::BTreeMap;
use std::path::Path;

use stagehost_tests::httpd::Nginx;
use stagehost_tests::s3d::Moto;
use stagehost_tests::{Run, Sandbox};

/// Each task's status in a run's JSON report, by name.
fn statuses(out: &Run) -> BTreeMap<String, String> {
    assert!(matches!(out.code, Some(0 | 1)), "{}", out.stderr);
    out.json()["tasks"]
        .as_array()
        .expect("a run report has tasks")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The names whose status is `status`.
fn with(s: &BTreeMap<String, String>, status: &str) -> Vec<String> {
    s.iter()
        .filter(|(_, v)| *v == status)
        .map(|(k, _)| k.clone())
        .collect()
}

fn resume(sandbox: &Sandbox) -> Run {
    sandbox.run(&["run", "--resume", "flow.toml", "--report", "-"])
}

/// a <- in1; b <- a; c <- in2 (runs only once `ok` exists); d <- b, c.
const FLOW: &str = r#"[[task]]
name = "a"
command = "tr a-z A-Z < {inputs[0]} > {outputs[0]}"
inputs = ["in1.txt"]
outputs = ["a.txt"]

[[task]]
name = "b"
command = "cat {inputs[0]} {inputs[0]} > {outputs[0]}"
inputs = [{ task = "a" }]
outputs = ["b.txt"]

[[task]]
name = "c"
command = "test -e ok && cp {inputs[0]} {outputs[0]}"
inputs = ["in2.txt"]
outputs = ["c.txt"]

[[task]]
name = "d"
command = "cat {inputs[0]} {inputs[1]} > {outputs[0]}"
inputs = [{ task = "b" }, { task = "c" }]
outputs = ["d.txt"]
"#;

#[test]
fn a_resume_skips_what_is_unchanged_and_reruns_exactly_what_a_change_reaches() {
    let sandbox = Sandbox::new();
    sandbox.write("work/in1.txt", "one\n");
    sandbox.write("work/in2.txt", "two\n");
    sandbox.write("work/flow.toml", FLOW);
    // c fails (no `ok` yet) and d loses an input.
    let first = sandbox.run(&["run", "flow.toml", "--report", "-"]);
    let s = statuses(&first);
    assert_eq!(with(&s, "succeeded"), ["a", "b"], "{s:?}");
    assert_eq!(s["c"], "failed");
    assert_eq!(s["d"], "dependency-failed");
    // What failed or never finished runs again; what succeeded is skipped.
    sandbox.write("work/ok", "");
    let out = resume(&sandbox);
    let s = statuses(&out);
    assert_eq!(with(&s, "skipped"), ["a", "b"], "{}", out.stderr);
    assert_eq!(with(&s, "succeeded"), ["c", "d"]);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/d.txt")).unwrap(),
        "ONE\nONE\ntwo\n"
    );
    // Nothing changed: all four are skipped, counted apart, and nothing moved.
    let out = resume(&sandbox);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(with(&statuses(&out), "skipped").len(), 4);
    let summary = &out.json()["summary"];
    assert_eq!(summary["skipped"], 4);
    assert_eq!(summary["succeeded"], 0);
    assert_eq!(summary["files_moved"], 0);
    assert!(
        out.stderr.contains("0 succeeded, 4 skipped (unchanged)"),
        "{}",
        out.stderr
    );
    // A run without --resume runs everything, as before.
    let out = sandbox.run(&["run", "flow.toml", "--report", "-"]);
    assert_eq!(with(&statuses(&out), "succeeded").len(), 4);

    // A touched input: its task and everything downstream, nothing else. The dry run
    // says so first, with the reasons, and moves nothing.
    let in1 = sandbox.join("work/in1.txt");
    let later =
        std::fs::metadata(&in1).unwrap().modified().unwrap() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&in1)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let dry = sandbox.run(&["run", "--resume", "--dry-run", "flow.toml"]);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let in1_shown = in1.display().to_string();
    assert!(
        dry.stdout
            .contains(&format!("run  a: input {in1_shown} was modified since")),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("run  b: its input comes from task \"a\", which runs"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("skip c: unchanged"), "{}", dry.stdout);
    assert!(dry.stdout.contains("run  d: "), "{}", dry.stdout);
    assert!(
        dry.stderr.contains(
            "dry run: 3 task(s) would run, 1 would be skipped, 0 depend on their servers"
        ),
        "{}",
        dry.stderr
    );
    let s = statuses(&resume(&sandbox));
    assert_eq!(with(&s, "succeeded"), ["a", "b", "d"], "{s:?}");
    assert_eq!(with(&s, "skipped"), ["c"]);

    // An edited command reruns its task (and d, whose input it rewrites).
    let edited = FLOW.replace(
        "test -e ok && cp {inputs[0]} {outputs[0]}",
        "test -e ok && cat {inputs[0]} > {outputs[0]}",
    );
    assert_ne!(edited, FLOW);
    sandbox.write("work/flow.toml", &edited);
    let s = statuses(&resume(&sandbox));
    assert_eq!(with(&s, "succeeded"), ["c", "d"], "{s:?}");

    // A deleted output reruns its task, and d after it.
    std::fs::remove_file(sandbox.join("work/b.txt")).unwrap();
    let s = statuses(&resume(&sandbox));
    assert_eq!(with(&s, "succeeded"), ["b", "d"], "{s:?}");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/d.txt")).unwrap(),
        "ONE\nONE\ntwo\n"
    );
    // A producer that fails in this run: its consumer loses its input, whatever
    // its own record says.
    // (c runs for its command, edited back, and fails; its old output is still there.)
    std::fs::remove_file(sandbox.join("work/ok")).unwrap();
    sandbox.write("work/flow.toml", FLOW);
    let s = statuses(&resume(&sandbox));
    assert_eq!(s["c"], "failed", "{s:?}");
    assert_eq!(s["d"], "dependency-failed", "{s:?}");
    sandbox.write("work/ok", "");
    let s = statuses(&resume(&sandbox));
    assert_eq!(with(&s, "succeeded"), ["c", "d"], "{s:?}");
    // Lineage: d's producer, its command, and its inputs back to the sources, each
    // current; --check finds nothing drifted.
    let out = sandbox.run(&["lineage", "d.txt"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let d_txt = sandbox.join("work/d.txt").display().to_string();
    assert!(
        out.stdout.starts_with(&format!("{d_txt} (")),
        "{}",
        out.stdout
    );
    for needle in [
        "produced by task \"d\"",
        "command: cat {inputs[0]} {inputs[1]} > {outputs[0]}",
        "produced by task \"a\"",
        &format!("{in1_shown} ("),
        "a source: no task of the journals produced it",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {}", out.stdout);
    }
    assert!(!out.stdout.contains("drifted"), "{}", out.stdout);
    let check = sandbox.run(&["lineage", "--check"]);
    assert_eq!(check.code, Some(0), "{} {}", check.stdout, check.stderr);
    // An output edited behind stagehost's back: --check names it and exits 1.
    std::fs::write(sandbox.join("work/a.txt"), "forged\n").unwrap();
    let check = sandbox.run(&["lineage", "--check", "--json"]);
    assert_eq!(check.code, Some(1), "{}", check.stderr);
    let drifted = &check.json()["drifted"];
    let a_txt = sandbox.join("work/a.txt").display().to_string();
    assert!(
        drifted
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["url"] == a_txt.as_str() && d["task"] == "a" && d["role"] == "output"),
        "{drifted}"
    );
    // A workflow error found by a dry run of a resume too, with the run's exit code.
    sandbox.write(
        "work/bad.toml",
        "[[task]]\nname = \"g\"\ncommand = \"cat {inputs[0]}\"\ninputs = [\"gopher://h/x\"]\n",
    );
    let out = sandbox.run(&["run", "--resume", "--dry-run", "bad.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = sandbox.run(&["run", "--dry-run", "bad.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    // A file no task made: exit 3, one line.
    let out = sandbox.run(&["lineage", "in1.txt"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("no task in the run journals"),
        "{}",
        out.stderr
    );
    // And --resume reruns the task whose output was forged.
    let s = statuses(&resume(&sandbox));
    assert_eq!(with(&s, "succeeded"), ["a", "b", "d"], "{s:?}");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/a.txt")).unwrap(),
        "ONE\n"
    );
    // --rerun: that task and what it reaches, whatever its record says.
    let out = sandbox.run(&[
        "run",
        "--resume",
        "--rerun",
        "c",
        "flow.toml",
        "--report",
        "-",
    ]);
    let s = statuses(&out);
    assert_eq!(with(&s, "succeeded"), ["c", "d"], "{s:?}");
    assert_eq!(with(&s, "skipped"), ["a", "b"], "{s:?}");
    let out = sandbox.run(&["run", "--resume", "--rerun", "nope", "flow.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

#[test]
fn a_changed_remote_input_reruns_its_consumers_and_an_unchanged_one_is_only_revalidated() {
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("data.txt"), "web v1\n").unwrap();
    let nginx = Nginx::start(&root);
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\ns3.put_object(Bucket='data', Key='k.txt', Body=b'store v1\\n')\n");
    let cfg = sandbox.write(
        "work/stagehost.toml",
        format!(
            "[[provider]]\nname = \"http\"\nplugin = \"http\"\n\n[[provider]]\nname = \"s3\"\nplugin = \"object-store\"\nsettings = {{ endpoint = {:?} }}\n\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"http\", \"s3\", \"file\"]\n",
            moto.endpoint()
        ),
    );
    sandbox.write(
        "work/flow.toml",
        format!(
            "[[task]]\nname = \"web\"\ncommand = \"cp {{inputs[0]}} {{outputs[0]}}\"\ninputs = [{:?}]\noutputs = [\"web.txt\"]\n\n[[task]]\nname = \"store\"\ncommand = \"cp {{inputs[0]}} {{outputs[0]}}\"\ninputs = [\"s3://data/k.txt\"]\noutputs = [\"store.txt\"]\n\n[[task]]\nname = \"both\"\ncommand = \"cat {{inputs[0]}} {{inputs[1]}} > {{outputs[0]}}\"\ninputs = [{{ task = \"web\" }}, {{ task = \"store\" }}]\noutputs = [\"both.txt\"]\n",
            nginx.url("/data.txt")
        ),
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ("AWS_REGION", "us-east-1"),
    ];
    let cfg = cfg.to_str().unwrap().to_owned();
    let run = |resume: bool| {
        let mut args = vec!["--config", &cfg, "run", "flow.toml", "--report", "-"];
        if resume {
            args.insert(3, "--resume");
        }
        sandbox.run_env(&args, &env)
    };
    let out = run(false);
    assert_eq!(
        with(&statuses(&out), "succeeded").len(),
        3,
        "{}",
        out.stderr
    );
    // Unchanged: a bulk check asks each server once (nginx a HEAD; the store's lone
    // key a HEAD too, a listing only pays for two or more) and proves both inputs
    // current, so every task is skipped with nothing staged.
    let mut logged = vec![("RUST_LOG", "stagehost=info")];
    logged.extend(env);
    let out = sandbox.run_env(
        &[
            "--config",
            &cfg,
            "run",
            "--resume",
            "flow.toml",
            "--report",
            "-",
        ],
        &logged,
    );
    let s = statuses(&out);
    assert_eq!(with(&s, "skipped").len(), 3, "{s:?} {}", out.stderr);
    let summary = &out.json()["summary"];
    assert_eq!(summary["files_cached"], 0, "{summary}");
    assert_eq!(summary["files_moved"], 0, "{summary}");
    assert!(
        out.stderr.contains("checked 2 remote input(s) in ")
            && out.stderr.contains(": 0 listing(s), 2 single request(s)"),
        "{}",
        out.stderr
    );
    // Asked one by one instead: each is staged in again under a conditional request;
    // both are found current (cached) and nothing moves.
    let out = sandbox.run_env(
        &[
            "--config",
            &cfg,
            "run",
            "--resume",
            "--no-bulk-checks",
            "flow.toml",
            "--report",
            "-",
        ],
        &env,
    );
    let s = statuses(&out);
    assert_eq!(with(&s, "skipped").len(), 3, "{s:?} {}", out.stderr);
    let summary = &out.json()["summary"];
    assert_eq!(summary["files_cached"], 2, "{summary}");
    assert_eq!(summary["files_moved"], 0, "{summary}");

    // The web file changes: its consumer and the task after it run; the store's does
    // not.
    std::fs::write(root.join("data.txt"), "web v2, longer\n").unwrap();
    let out = run(true);
    let s = statuses(&out);
    assert_eq!(
        with(&s, "succeeded"),
        ["both", "web"],
        "{s:?} {}",
        out.stderr
    );
    assert_eq!(with(&s, "skipped"), ["store"]);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/both.txt")).unwrap(),
        "web v2, longer\nstore v1\n"
    );
    // The object changes (same size: its ETag tells).
    moto.boto("s3.put_object(Bucket='data', Key='k.txt', Body=b'store v2\\n')\n");
    let out = run(true);
    let s = statuses(&out);
    assert_eq!(
        with(&s, "succeeded"),
        ["both", "store"],
        "{s:?} {}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/both.txt")).unwrap(),
        "web v2, longer\nstore v2\n"
    );
    let out = run(true);
    assert_eq!(with(&statuses(&out), "skipped").len(), 3, "{}", out.stderr);

    // The copy of the web input is deleted: it is fetched again, with the ETag
    // recorded, so it is the same version and nothing runs.
    let copy = sandbox.join("work/wd/data.txt");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "web v2, longer\n");
    std::fs::remove_file(&copy).unwrap();
    let out = run(true);
    let s = statuses(&out);
    assert_eq!(with(&s, "skipped").len(), 3, "{s:?} {}", out.stderr);
    assert_eq!(out.json()["summary"]["files_moved"], 1);
    // The dry run says which tasks hang on their servers' answers.
    let out = sandbox.run_env(
        &[
            "--config",
            &cfg,
            "run",
            "--resume",
            "--dry-run",
            "flow.toml",
        ],
        &env,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "ask  web: unchanged here; skipped unless its server says {} changed",
            nginx.url("/data.txt")
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("1 would be skipped, 2 depend on their servers"),
        "{}",
        out.stderr
    );

    // The lineage of the last output goes back to the two remote sources, each with
    // the validator its provider recorded.
    let out = sandbox.run(&["lineage", "--json", "both.txt"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let both = out.json();
    assert_eq!(both["produced_by"]["task"], "both");
    let inputs = both["produced_by"]["inputs"].as_array().unwrap();
    let web = &inputs[0]["produced_by"];
    assert_eq!(web["task"], "web");
    assert_eq!(web["command"], "cp {inputs[0]} {outputs[0]}");
    let source = &web["inputs"][0];
    assert_eq!(source["url"], nginx.url("/data.txt"));
    assert_eq!(source["state"], "not_checked");
    assert!(source["produced_by"].is_null());
    assert!(
        source["identity"]["validator"]
            .as_str()
            .is_some_and(|v| v.starts_with('"')),
        "an ETag: {source}"
    );
    assert_eq!(
        inputs[1]["produced_by"]["inputs"][0]["url"],
        "s3://data/k.txt"
    );
}

/// Three chains of five tasks; each writes half its output, pauses, writes the rest,
/// then notes in `ledger` that it finished.
fn chains() -> String {
    let mut flow = String::new();
    for c in 0..3 {
        for k in 0..5 {
            let input = if k == 0 {
                format!("inputs = [\"seed{c}.txt\"]\n")
            } else {
                format!("inputs = [{{ task = \"c{c}t{}\" }}]\n", k - 1)
            };
            flow.push_str(&format!(
                "[[task]]\nname = \"c{c}t{k}\"\ncommand = \"cat {{inputs[0]}} > {{outputs[0]}}; sleep 0.02; echo c{c}t{k} >> {{outputs[0]}}; echo c{c}t{k} >> ledger\"\n{input}outputs = [\"out/c{c}t{k}.txt\"]\n\n"
            ));
        }
    }
    flow
}

/// Every output's text, by file name.
fn outputs(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir.join("out"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".txt"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read_to_string(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The tasks the journal says succeeded, in all runs so far.
fn journaled(work: &Path) -> Vec<String> {
    stagehost::journal::read(&work.join(".stagehost/journal/flow.toml.jsonl"))
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["type"] == "task" && r["status"] == "succeeded")
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

fn ledger(work: &Path) -> Vec<String> {
    std::fs::read_to_string(work.join("ledger"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts `stagehost run [--resume] flow.toml` and SIGKILLs it after `ms`; then waits
/// for what its commands left running to end.
fn killed_after(sandbox: &Sandbox, resume: bool, ms: u64) {
    let mut c = sandbox.command(&stagehost_tests::stagehost_bin());
    c.arg("run").arg("-q");
    if resume {
        c.arg("--resume");
    }
    let mut child = c
        .arg("flow.toml")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let _ = child.kill();
    let _ = child.wait();
    // A command's pause is 20 ms; its shell ends well within this.
    std::thread::sleep(std::time::Duration::from_millis(300));
}

#[test]
fn sigkill_at_random_points_then_resume_gives_the_outputs_of_a_whole_run() {
    // The outputs of an uninterrupted run.
    let reference = Sandbox::new();
    for c in 0..3 {
        reference.write(format!("work/seed{c}.txt"), format!("seed {c}\n"));
    }
    reference.write("work/flow.toml", chains());
    let out = reference.run(&["run", "-q", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let whole = outputs(&reference.join("work"));
    assert_eq!(whole.len(), 15);
    let changed_whole = {
        reference.write("work/seed1.txt", "seed 1, changed\n");
        let out = reference.run(&["run", "-q", "flow.toml"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        outputs(&reference.join("work"))
    };

    // A small generator of our own: the kill points differ per trial, and a failure
    // names its trial and point.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    for trial in 0..20 {
        let sandbox = Sandbox::new();
        let work = sandbox.join("work");
        for c in 0..3 {
            sandbox.write(format!("work/seed{c}.txt"), format!("seed {c}\n"));
        }
        sandbox.write("work/flow.toml", chains());
        let at = 10 + next(500);
        killed_after(&sandbox, false, at);
        let mut expected = &whole;
        // The records made before the seed of chain 1 changed (none changes in even
        // trials).
        let mut before_change = usize::MAX;
        // Half the trials also kill a resumed run that a changed input set going.
        if trial % 2 == 1 {
            let out = sandbox.run(&["run", "-q", "--resume", "flow.toml"]);
            assert_eq!(out.code, Some(0), "trial {trial}: {}", out.stderr);
            before_change = journaled(&work).len();
            sandbox.write("work/seed1.txt", "seed 1, changed\n");
            killed_after(&sandbox, true, 10 + next(300));
            expected = &changed_whole;
        }
        let finished = journaled(&work);
        let before = ledger(&work).len();
        let out = sandbox.run(&["run", "-q", "--resume", "flow.toml"]);
        assert_eq!(
            out.code,
            Some(0),
            "trial {trial} (kill at {at} ms): {}",
            out.stderr
        );
        assert_eq!(
            &outputs(&work),
            expected,
            "trial {trial} (kill at {at} ms): the outputs differ from a whole run's"
        );
        // No task whose finish the journal holds ran again, unless a changed input
        // reached it (in the changed chain, after the changed seed).
        let again = &ledger(&work)[before..];
        let last_of = |name: &str| finished.iter().rposition(|n| n == name);
        for name in again {
            if let Some(pos) = last_of(name) {
                // It finished before: only a task of the changed chain whose last
                // finish predates the change may run again.
                assert!(
                    name.starts_with("c1") && pos < before_change,
                    "trial {trial} (kill at {at} ms): {name} finished (record {pos}) and ran again"
                );
            }
        }
        // And a last resume finds nothing to do.
        let out = sandbox.run(&["run", "--resume", "flow.toml", "--report", "-"]);
        assert_eq!(
            with(&statuses(&out), "skipped").len(),
            15,
            "trial {trial}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_last_modified_a_file_may_still_change_under_never_calls_a_change_current() {
    // Python's http.server: no ETag, Last-Modified from the file's mtime, and a 304
    // to any If-Modified-Since not older than it.
    let sandbox = Sandbox::new();
    let root = sandbox.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let data = root.join("data.txt");
    // A modification time ahead of the server's clock: the Last-Modified it sends is
    // not a second older than its Date, so it cannot tell two versions apart.
    let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(30);
    let write = |text: &str| {
        std::fs::write(&data, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&data)
            .unwrap()
            .set_modified(ahead)
            .unwrap();
    };
    write("version 1\n");
    // A file from long ago: its Last-Modified identifies it.
    let old = root.join("old.txt");
    let dated = |text: &str, days_ago: u64| {
        std::fs::write(&old, text).unwrap();
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(days_ago * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(when)
            .unwrap();
    };
    dated("from 2 years ago\n", 730);
    let port = stagehost_tests::httpd::free_port();
    // Stopped by its pid when the test ends, passing or failing.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            stagehost_tests::stop_child(&mut self.0, libc::SIGTERM);
        }
    }
    let mut server = Server(
        std::process::Command::new(stagehost_tests::ftpd::test_python())
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    stagehost_tests::wait_for_port(&mut server.0, port, "python -m http.server");
    sandbox.write(
        "work/flow.toml",
        format!(
            "[[task]]\nname = \"web\"\ncommand = \"cp {{inputs[0]}} {{outputs[0]}}\"\ninputs = [\"http://127.0.0.1:{port}/data.txt\"]\noutputs = [\"web.txt\"]\n\n[[task]]\nname = \"old\"\ncommand = \"cp {{inputs[0]}} {{outputs[0]}}\"\ninputs = [\"http://127.0.0.1:{port}/old.txt\"]\noutputs = [\"kept.txt\"]\n"
        ),
    );
    let out = sandbox.run(&["run", "flow.toml", "--report", "-"]);
    assert_eq!(
        with(&statuses(&out), "succeeded"),
        ["old", "web"],
        "{}",
        out.stderr
    );
    // The same size, the same modification time, other bytes.
    write("version 2\n");
    let out = resume(&sandbox);
    assert_eq!(
        with(&statuses(&out), "succeeded"),
        ["web"],
        "{}",
        out.stderr
    );
    assert_eq!(with(&statuses(&out), "skipped"), ["old"], "{}", out.stderr);
    // The old file put back from a backup, older still (as cp -p or tar x would):
    // not newer than the date recorded, so the server answers 304, which proves
    // nothing without that date repeated.
    dated("restored from a backup\n", 1000);
    let out = resume(&sandbox);
    assert_eq!(statuses(&out)["old"], "succeeded", "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/kept.txt")).unwrap(),
        "restored from a backup\n"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/web.txt")).unwrap(),
        "version 2\n"
    );
}

#[test]
fn with_checksum_sha256_a_touched_file_is_unchanged_and_an_edited_one_is_not() {
    let sandbox = Sandbox::new();
    sandbox.write("work/in.txt", "same bytes\n");
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"hashed\"\ncommand = \"cp {inputs[0]} {outputs[0]}\"\ninputs = [\"in.txt\"]\noutputs = [\"out.txt\"]\nchecksum = \"sha256\"\n\n[[task]]\nname = \"stat\"\ncommand = \"cp {inputs[0]} {outputs[0]}\"\ninputs = [\"in.txt\"]\noutputs = [\"stat.txt\"]\n",
    );
    let out = sandbox.run(&["run", "flow.toml", "--report", "-"]);
    assert_eq!(
        with(&statuses(&out), "succeeded").len(),
        2,
        "{}",
        out.stderr
    );
    let records =
        stagehost::journal::read(&sandbox.join("work/.stagehost/journal/flow.toml.jsonl")).unwrap();
    let hashed = records.iter().find(|r| r["name"] == "hashed").unwrap();
    assert_eq!(
        hashed["inputs"][0]["identity"]["sha256"],
        sha256_hex(b"same bytes\n").as_str()
    );
    // Touched (rewritten with the same bytes): the hashed task is unchanged, the other
    // one, judged by its stat as make would, runs.
    std::fs::write(sandbox.join("work/in.txt"), "same bytes\n").unwrap();
    let s = statuses(&resume(&sandbox));
    assert_eq!(s["hashed"], "skipped", "{s:?}");
    assert_eq!(s["stat"], "succeeded", "{s:?}");
    // Other bytes of the same size: both run.
    std::fs::write(sandbox.join("work/in.txt"), "SAME BYTES\n").unwrap();
    let s = statuses(&resume(&sandbox));
    assert_eq!(with(&s, "succeeded").len(), 2, "{s:?}");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/out.txt")).unwrap(),
        "SAME BYTES\n"
    );
    // A value other than sha256 is a workflow error at its line.
    sandbox.write(
        "work/bad.toml",
        "[[task]]\nname = \"t\"\ncommand = \"true\"\nchecksum = \"md4\"\n",
    );
    let out = sandbox.run(&["run", "bad.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("bad.toml:4:"), "{}", out.stderr);
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            std::io::Write::write_all(c.stdin.as_mut().unwrap(), bytes)?;
            drop(c.stdin.take());
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn lineage_speaks_only_for_tasks_the_workflow_still_has() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"x\"\ncommand = \"echo x > {outputs[0]}\"\noutputs = [\"x.txt\"]\n",
    );
    let out = sandbox.run(&["run", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    std::fs::write(sandbox.join("work/x.txt"), "edited\n").unwrap();
    let check = sandbox.run(&["lineage", "--check"]);
    assert_eq!(check.code, Some(1), "{}", check.stderr);
    assert!(
        check.stdout.contains("the output of task \"x\""),
        "{}",
        check.stdout
    );
    // Renamed: the old task's record no longer vouches for x.txt, nor is it checked.
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"y\"\ncommand = \"echo x > {outputs[0]}\"\noutputs = [\"x.txt\"]\n",
    );
    let check = sandbox.run(&["lineage", "--check"]);
    assert_eq!(check.code, Some(0), "{} {}", check.stdout, check.stderr);
    let out = sandbox.run(&["lineage", "x.txt"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
}

#[test]
fn an_input_changed_while_its_task_ran_runs_the_task_again() {
    let sandbox = Sandbox::new();
    sandbox.write("work/in.txt", "old\n");
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"slow\"\ncommand = \"cat {inputs[0]} > {outputs[0]}; sleep 1\"\ninputs = [\"in.txt\"]\noutputs = [\"out.txt\"]\n",
    );
    let mut child = sandbox
        .command(&stagehost_tests::stagehost_bin())
        .args(["run", "-q", "flow.toml"])
        .spawn()
        .unwrap();
    // Once the task has read its input, the input changes under it.
    let out = sandbox.join("work/out.txt");
    while !std::fs::read_to_string(&out).is_ok_and(|t| t == "old\n") {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    sandbox.write("work/in.txt", "new\n");
    assert!(child.wait().unwrap().success());
    // The record vouches for what the task read, so the resume sees the change.
    let s = statuses(&resume(&sandbox));
    assert_eq!(s["slow"], "succeeded", "{s:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "new\n");
}

#[test]
fn a_journal_is_written_and_trusted_only_when_it_is_the_users_own_and_one_run_at_a_time() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"t\"\ncommand = \"echo t > {outputs[0]}\"\noutputs = [\"t.txt\"]\n",
    );
    let out = sandbox.run(&["run", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let journal = sandbox.join("work/.stagehost/journal/flow.toml.jsonl");
    // Writable by others: a resume refuses to trust it (exit 2, naming it), and a run
    // goes on without writing into it.
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = std::fs::read(&journal).unwrap();
    let out = sandbox.run(&["run", "--resume", "flow.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("can be written by others"),
        "{}",
        out.stderr
    );
    let out = sandbox.run(&["run", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("the run goes on without it"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&journal).unwrap(), before);
    let out = sandbox.run(&["lineage", "t.txt"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("left out the run journal"),
        "{}",
        out.stderr
    );
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A FIFO planted at the journal: the run neither hangs nor fails.
    std::fs::remove_file(&journal).unwrap();
    let fifo = std::ffi::CString::new(journal.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let out = sandbox.run(&["run", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    std::fs::remove_file(&journal).unwrap();
    // Two runs of one workflow at once: the second is refused before it runs anything.
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"t\"\ncommand = \"sleep 2; echo t > {outputs[0]}\"\noutputs = [\"t.txt\"]\n",
    );
    let mut first = sandbox
        .command(&stagehost_tests::stagehost_bin())
        .args(["run", "-q", "flow.toml"])
        .spawn()
        .unwrap();
    while !journal.exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let second = sandbox.run(&["run", "flow.toml"]);
    assert_eq!(second.code, Some(2), "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("another stagehost run of this workflow is running"),
        "{}",
        second.stderr
    );
    assert!(first.wait().unwrap().success());
}

#[test]
fn lineage_names_a_shared_producer_once_and_stops_at_the_depth_asked() {
    let sandbox = Sandbox::new();
    let mut flow = String::from("[[task]]\nname = \"a\"\ncommand = \"echo 1 > {outputs[0]}; echo 2 > {outputs[1]}\"\noutputs = [\"a1.txt\", \"a2.txt\"]\n\n[[task]]\nname = \"b\"\ncommand = \"cat {inputs[0]} {inputs[1]} > {outputs[0]}\"\ninputs = [{ task = \"a\", output = 0 }, { task = \"a\", output = 1 }]\noutputs = [\"b.txt\"]\n\n");
    for i in 0..10 {
        let input = if i == 0 {
            "{ task = \"b\" }".to_owned()
        } else {
            format!("{{ task = \"c{}\" }}", i - 1)
        };
        flow.push_str(&format!(
            "[[task]]\nname = \"c{i}\"\ncommand = \"cp {{inputs[0]}} {{outputs[0]}}\"\ninputs = [{input}]\noutputs = [\"c{i}.txt\"]\n\n"
        ));
    }
    sandbox.write("work/flow.toml", flow);
    let out = sandbox.run(&["run", "-q", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = sandbox.run(&["lineage", "--json", "b.txt"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let inputs = out.json()["produced_by"]["inputs"].clone();
    // Both of a's outputs name a as their producer; its inputs are listed once.
    assert_eq!(inputs[0]["produced_by"]["task"], "a", "{inputs}");
    assert_eq!(inputs[1]["produced_by"]["task"], "a", "{inputs}");
    let out = sandbox.run(&["lineage", "--depth", "3", "c9.txt"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("produced by task \"c7\""),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("produced by task \"c5\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("inputs: deeper than the depth asked for"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_deleted_zip_archive_runs_the_task_that_wrote_its_member() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"pack\"\ncommand = \"echo packed > {outputs[0]}\"\noutputs = [\"zip:out/results.zip/top.txt\"]\n",
    );
    let out = sandbox.run(&["run", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let s = statuses(&resume(&sandbox));
    assert_eq!(s["pack"], "skipped", "{s:?}");
    std::fs::remove_file(sandbox.join("work/out/results.zip")).unwrap();
    let dry = sandbox.run(&["run", "--resume", "--dry-run", "flow.toml"]);
    assert!(dry.stdout.contains("its archive"), "{}", dry.stdout);
    let s = statuses(&resume(&sandbox));
    assert_eq!(s["pack"], "succeeded", "{s:?}");
    assert!(sandbox.join("work/out/results.zip").exists());
}

#[test]
fn a_resume_checks_many_objects_of_one_prefix_with_one_listing() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\nfor i in range(3): s3.put_object(Bucket='data', Key=f'in/{i}.txt', Body=f'v1 {i}\\n'.encode())\n");
    let cfg = sandbox.write(
        "work/stagehost.toml",
        format!(
            "[[provider]]\nname = \"s3\"\nplugin = \"object-store\"\nsettings = {{ endpoint = {:?} }}\n\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"s3\", \"file\"]\n",
            moto.endpoint()
        ),
    );
    let mut flow = String::new();
    for i in 0..3 {
        flow.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\ncommand = \"cp {{inputs[0]}} {{outputs[0]}}\"\ninputs = [\"s3://data/in/{i}.txt\"]\noutputs = [\"out{i}.txt\"]\n\n"
        ));
    }
    sandbox.write("work/flow.toml", flow);
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ("AWS_REGION", "us-east-1"),
        ("RUST_LOG", "stagehost=info"),
    ];
    let cfg = cfg.to_str().unwrap().to_owned();
    let run = |resume: bool| {
        let mut args = vec!["--config", &cfg, "run", "flow.toml", "--report", "-"];
        if resume {
            args.insert(3, "--resume");
        }
        sandbox.run_env(&args, &env)
    };
    let out = run(false);
    assert_eq!(
        with(&statuses(&out), "succeeded").len(),
        3,
        "{}",
        out.stderr
    );
    let out = run(true);
    assert_eq!(with(&statuses(&out), "skipped").len(), 3, "{}", out.stderr);
    assert!(
        out.stderr.contains(": 1 listing(s), 0 single request(s)"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["summary"]["files_moved"], 0);
    // One object changes (same size): the listing's ETag says so, and only its task
    // runs; one is deleted: its task runs and fails.
    moto.boto("s3.put_object(Bucket='data', Key='in/1.txt', Body=b'v2 1\\n')\ns3.delete_object(Bucket='data', Key='in/2.txt')\n");
    let out = run(true);
    // The missing object fails its task as not found (exit 3).
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let s: BTreeMap<String, String> = out.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(with(&s, "skipped"), ["t0"], "{s:?} {}", out.stderr);
    assert_eq!(with(&s, "succeeded"), ["t1"], "{s:?} {}", out.stderr);
    assert_eq!(with(&s, "failed"), ["t2"], "{s:?} {}", out.stderr);
    assert!(
        out.stderr
            .contains("task \"t1\" runs: input s3://data/in/1.txt changed on its server (ETag"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("task \"t2\" runs: input s3://data/in/2.txt is gone from its server"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/out1.txt")).unwrap(),
        "v2 1\n"
    );
}
