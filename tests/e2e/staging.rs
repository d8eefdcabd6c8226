//! Staging through the data manager: the `file` provider's modes, destinations,
//! stage-out, and Parsl's rules, through the CLI and the library API, with real
//! plugin libraries.

use std::path::Path;

use stagehost::config::ConfigSource;
use stagehost::{Config, DataManager, File, PluginLoader, Registry, StageOptions};
use stagehost_tests::*;

fn file_config(sandbox: &Sandbox, mode: &str) -> std::path::PathBuf {
    sandbox.write(
        "site.toml",
        format!("[[provider]]\nname = \"files\"\nplugin = \"file\"\nsettings = {{ mode = \"{mode}\" }}\n\n[executor.local]\nworking_dir = \"staged\"\n"),
    )
}

fn no_temp_files_left(dir: &Path) {
    assert_eq!(
        partial_files(dir),
        Vec::<String>::new(),
        "temporary files left behind"
    );
}

#[test]
fn by_default_file_urls_stage_in_place() {
    let sandbox = Sandbox::new();
    let input = sandbox.write("data/in.txt", "abc");
    let url = format!("file://{}", input.display());
    let out = sandbox.run(&["stage", "in", "--json", &url, input.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for r in out.json()["files"].as_array().unwrap() {
        assert_eq!(r["provider"], "file");
        assert_eq!(r["local_path"], input.to_str().unwrap());
        assert_eq!(r["modes"], serde_json::json!([]));
        assert_eq!(r["bytes"], 3);
    }
    let text = sandbox.run(&["stage", "in", &url]);
    assert_eq!(
        text.stdout.trim(),
        format!(
            "{url} -> {} [provider file, nothing to do]",
            input.display()
        )
    );
}

#[test]
fn copy_mode_writes_the_bytes_atomically_into_the_working_dir() {
    let sandbox = Sandbox::new();
    let config = file_config(&sandbox, "copy");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let input = sandbox.write("data/big.bin", &payload);
    let out = sandbox.run(&[
        "--config",
        config.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = &out.json()["files"][0];
    assert_eq!(r["modes"], serde_json::json!(["in-task-step"]));
    assert_eq!(r["bytes"], payload.len());
    // The working dir is relative to the config file's directory.
    let staged = sandbox.join("staged/big.bin");
    assert_eq!(r["local_path"], staged.to_str().unwrap());
    assert_eq!(std::fs::read(&staged).unwrap(), payload);
    no_temp_files_left(&sandbox.join("staged"));
}

#[test]
fn symlink_and_hardlink_modes() {
    use std::os::unix::fs::MetadataExt;
    for mode in ["symlink", "hardlink"] {
        let sandbox = Sandbox::new();
        let config = file_config(&sandbox, mode);
        let input = sandbox.write("data/in.txt", "linked");
        let out = sandbox.run(&[
            "--config",
            config.to_str().unwrap(),
            "stage",
            "in",
            input.to_str().unwrap(),
        ]);
        assert_eq!(out.code, Some(0), "{mode}: {}", out.stderr);
        let staged = sandbox.join("staged/in.txt");
        assert_eq!(std::fs::read_to_string(&staged).unwrap(), "linked");
        let meta = std::fs::symlink_metadata(&staged).unwrap();
        match mode {
            "symlink" => assert_eq!(std::fs::read_link(&staged).unwrap(), input),
            _ => {
                assert!(meta.file_type().is_file());
                assert_eq!(meta.ino(), std::fs::metadata(&input).unwrap().ino());
            }
        }
    }
}

#[test]
fn two_urls_with_the_same_basename_do_not_overwrite_each_other() {
    let sandbox = Sandbox::new();
    let config = file_config(&sandbox, "copy");
    let a = sandbox.write("a/x.txt", "from a");
    let b = sandbox.write("b/x.txt", "from b");
    let out = sandbox.run(&[
        "--config",
        config.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        "-j",
        "1",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let results = out.json()["files"].clone();
    let pa = results[0]["local_path"].as_str().unwrap().to_owned();
    let pb = results[1]["local_path"].as_str().unwrap().to_owned();
    assert_ne!(pa, pb);
    assert_eq!(pa, sandbox.join("staged/x.txt").to_str().unwrap());
    assert!(
        pb.starts_with(sandbox.join("staged/.stagehost/").to_str().unwrap()),
        "{pb}"
    );
    assert!(pb.ends_with("/x.txt"), "{pb}");
    assert_eq!(std::fs::read_to_string(&pa).unwrap(), "from a");
    assert_eq!(std::fs::read_to_string(&pb).unwrap(), "from b");
}

#[test]
fn dest_overrides_the_working_dir_and_a_missing_source_leaves_nothing() {
    let sandbox = Sandbox::new();
    let config = file_config(&sandbox, "copy");
    let dest = sandbox.join("elsewhere");
    let missing = sandbox.join("data/missing.txt");
    let out = sandbox.run(&[
        "--config",
        config.to_str().unwrap(),
        "stage",
        "in",
        "--dest",
        dest.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(3));
    let first = out.stderr.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "stagehost: error: cannot stage in {m}: provider \"files\" (plugin file 0.1.0) on executor \"local\": in-task step: not found: cannot open {m}: No such file or directory (os error 2)",
            m = missing.display()
        )
    );
    assert!(!dest.join("missing.txt").exists());
    no_temp_files_left(&dest);
}

#[test]
fn stage_out_copies_and_a_failed_stage_out_keeps_the_local_output() {
    let sandbox = Sandbox::new();
    let config = file_config(&sandbox, "copy");
    let cfg = config.to_str().unwrap();
    let local = sandbox.write("work/result.txt", "result bytes");
    let published = sandbox.join("published/result.txt");
    let url = format!("file://{}", published.display());
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stage",
        "out",
        "--json",
        local.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.json()["files"][0]["modes"],
        serde_json::json!(["in-task-step"])
    );
    assert_eq!(std::fs::read_to_string(&published).unwrap(), "result bytes");

    // The destination's parent is a regular file: the copy cannot be made.
    sandbox.write("blocker", "a file, not a directory");
    let bad = format!("file://{}", sandbox.join("blocker/result.txt").display());
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stage",
        "out",
        local.to_str().unwrap(),
        &bad,
    ]);
    assert_eq!(out.code, Some(1));
    let line = out.stderr.lines().next().unwrap();
    assert!(
        line.starts_with(&format!(
            "stagehost: error: cannot stage out {bad}: provider \"files\""
        )),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(&local).unwrap(),
        "result bytes",
        "the local output survives"
    );
}

#[test]
fn an_unclaimed_url_gets_parsls_error_and_credentials_stay_hidden() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["stage", "in", "gopher://user:hunter2@host/x"]);
    // A URL no provider claims is a usage error, found before anything moves.
    assert_eq!(out.code, Some(2));
    let line = out.stderr.lines().next().unwrap();
    assert!(
        line.starts_with(
            "stagehost: error: Executor local cannot stage file gopher://user:***@host/x"
        ),
        "{line}"
    );
    assert!(!out.stderr.contains("hunter2"));
    // An unknown executor and an empty URL are usage errors: exit 2.
    let out = sandbox.run(&["stage", "in", "-e", "nosuch", "/etc/hostname"]);
    assert_eq!(out.code, Some(2));
    assert_eq!(
        out.stderr,
        "stagehost: error: unknown executor \"nosuch\" (configured: local)\n"
    );
    let out = sandbox.run(&["stage", "in", "/etc/hostname", ""]);
    assert_eq!(out.code, Some(2));
    assert_eq!(out.stderr, "stagehost: error: an empty URL names no file\n");
}

#[test]
fn an_empty_staging_list_stages_nothing_while_no_list_uses_the_default() {
    let sandbox = Sandbox::new();
    let config = sandbox.write("c.toml", "[[provider]]\nname = \"file\"\nplugin = \"file\"\n[executor.none]\nstaging = []\n[executor.default]\n");
    let cfg = config.to_str().unwrap();
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stage",
        "in",
        "-e",
        "none",
        "/etc/hostname",
    ]);
    assert_eq!(out.code, Some(2));
    assert_eq!(
        out.stderr.lines().next().unwrap(),
        "stagehost: error: Executor none cannot stage file /etc/hostname; the providers of executor \"none\" serve: nothing"
    );
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stage",
        "in",
        "-e",
        "default",
        "/etc/hostname",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn plugin_log_lines_reach_the_host_log_with_their_provider() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let input = sandbox.write("in.txt", "x");
    let config = sandbox.write(
        "c.toml",
        format!("plugin_dirs = [{}]\n[[provider]]\nname = \"chatty\"\nplugin = \"probe\"\nsettings = {{ log = \"hello from the plugin\" }}\n", toml_path(&plugins)),
    );
    let out = sandbox.run_env(
        &[
            "--config",
            config.to_str().unwrap(),
            "stage",
            "in",
            input.to_str().unwrap(),
        ],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("hello from the plugin"))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(
        line.contains("provider=\"chatty\"") || line.contains("provider=chatty"),
        "{line}"
    );
    assert!(
        line.contains("executor=\"local\"") || line.contains("executor=local"),
        "{line}"
    );
}

fn library_data_manager(sandbox: &Sandbox, provider_settings: &str) -> (DataManager, Registry) {
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let text = format!(
        "plugin_dirs = [{}]\n[[provider]]\nname = \"setter\"\nplugin = \"probe\"\nsettings = {provider_settings}\n[executor.local]\nworking_dir = {}\nstaging = [\"setter\"]\n",
        toml_path(&plugins),
        toml_path(&sandbox.join("wd"))
    );
    let config = Config::parse(&text, ConfigSource::Embedded).unwrap();
    let registry = Registry::build(&config, &PluginLoader::default()).unwrap();
    (DataManager::new(&registry), registry)
}

#[test]
fn a_provider_sets_local_path_on_its_copy_and_the_callers_file_is_unchanged() {
    let sandbox = Sandbox::new();
    let (dm, _registry) = library_data_manager(&sandbox, "{ work = \"in-task\", mark = \"M\" }");
    let input = sandbox.write("in.txt", "x");
    let caller = File::parse(input.to_str().unwrap()).unwrap();
    let opts = StageOptions::default();
    let mut staging = dm.plan_stage_in("local", &caller, &opts).unwrap();
    let expected = sandbox.join("wd/in.txt");
    assert_eq!(staging.file.local_path(), Some(expected.as_path()));
    assert_eq!(
        caller.local_path(),
        None,
        "the caller's File is never changed"
    );
    assert_eq!(caller.filepath().unwrap(), input);
    assert!(staging.separate_job.is_none());
    assert!(!expected.exists(), "planning moves nothing");
    staging.run_separate_job(&opts).unwrap();
    staging.run_in_task_step(&opts).unwrap();
    assert_eq!(
        std::fs::read_to_string(&expected).unwrap(),
        format!("M:{}", input.display())
    );
    assert_eq!(staging.provider.name, "setter");
}

#[test]
fn a_provider_error_reaches_the_caller_with_its_kind() {
    let sandbox = Sandbox::new();
    let (dm, _registry) = library_data_manager(&sandbox, "{ fail_with = \"transient\" }");
    let file = File::parse("/data/in.txt").unwrap();
    let opts = StageOptions::default();
    let mut staging = dm.plan_stage_in("local", &file, &opts).unwrap();
    let err = staging.run_separate_job(&opts).unwrap_err();
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        "cannot stage in /data/in.txt: provider \"setter\" (plugin probe 0.1.0) on executor \"local\": separate job: transient: probe fails as configured (transient)"
    );
}

#[test]
fn cancellation_stops_a_job_before_it_writes() {
    let sandbox = Sandbox::new();
    let (dm, _registry) = library_data_manager(&sandbox, "{ }");
    let file = File::parse("/data/in.txt").unwrap();
    let opts = StageOptions::default();
    let mut staging = dm.plan_stage_in("local", &file, &opts).unwrap();
    opts.cancel.cancel();
    let err = staging.run_separate_job(&opts).unwrap_err();
    assert_eq!(err.kind(), Some(stagehost_plugin_api::ErrorKind::Cancelled));
    assert!(!sandbox.join("wd/in.txt").exists());
}

#[test]
fn a_checksum_in_the_url_is_verified() {
    let sandbox = Sandbox::new();
    let config = file_config(&sandbox, "copy");
    let cfg = config.to_str().unwrap();
    let input = sandbox.write("data/hello.txt", "hello world");
    let sha256 = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    let good = format!("{}#sha256={sha256}", input.display());
    let out = sandbox.run(&["--config", cfg, "stage", "in", &good]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("staged/hello.txt")).unwrap(),
        "hello world"
    );

    let wrong = format!("{}#md5={}", input.display(), "0".repeat(32));
    let out = sandbox.run(&["--config", cfg, "stage", "in", &wrong]);
    assert_eq!(out.code, Some(5));
    assert_eq!(
        out.stderr.lines().next().unwrap(),
        format!(
            "stagehost: error: cannot stage in {wrong}: provider \"files\" (plugin file 0.1.0) on executor \"local\": checksum: integrity: checksum mismatch for {}: md5 expected {}, got 5eb63bbbe01eeed093cb22bb8f5acdc3",
            sandbox.join("staged/hello.txt").display(),
            "0".repeat(32)
        )
    );
    assert_eq!(
        std::fs::read_to_string(&input).unwrap(),
        "hello world",
        "the source is never touched"
    );
    assert!(
        !sandbox.join("staged/hello.txt").exists(),
        "a copy with the wrong bytes is removed"
    );

    // Staged in place (the default no-op mode), the file is checked where it is.
    let out = sandbox.run(&[
        "stage",
        "in",
        &format!("{}#adler32=00000000", input.display()),
    ]);
    assert_eq!(out.code, Some(5));
    assert!(
        out.stderr
            .contains(": checksum: integrity: checksum mismatch for "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("adler32 expected 00000000, got 1a0b045d"),
        "{}",
        out.stderr
    );
    let out = sandbox.run(&[
        "stage",
        "in",
        &format!("{}#adler32=1a0b045d", input.display()),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "hello world");

    let out = sandbox.run(&["stage", "in", &format!("{}#sha256=abc", input.display())]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains(": checksum: invalid URL: the sha256 checksum \"abc\" is not 64 hex digits"),
        "{}",
        out.stderr
    );
}

#[test]
fn stage_out_of_a_missing_file_still_writes_its_json_report() {
    let sandbox = Sandbox::new();
    let missing = sandbox.join("data/never-written.txt");
    let out = sandbox.run(&[
        "stage",
        "out",
        "--json",
        missing.to_str().unwrap(),
        sandbox.join("copy.txt").to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["version"], 1);
    assert_eq!(json["files"][0]["ok"], false);
    assert_eq!(json["files"][0]["error_class"], "not_found");
    assert!(json["files"][0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("does not exist")));
    assert_eq!(json["summary"]["files_failed"], 1);
}

#[test]
fn a_local_directory_input_is_used_in_place_or_copied_and_an_output_directory_is_copied_out() {
    let sandbox = Sandbox::new();
    sandbox.write("data/a.txt", "A");
    sandbox.write("data/sub/b.txt", "B");
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"list\"\ncommand = \"cd {inputs[0]} && find . -type f | sort > {outputs[0]}\"\ninputs = [{ url = \"../data\", recursive = true }]\noutputs = [\"list.txt\"]\n",
    );
    // The embedded default: the file provider uses files where they are, so the task
    // gets the directory itself.
    let out = sandbox.run(&["run", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/list.txt")).unwrap(),
        "./a.txt\n./sub/b.txt\n"
    );
    assert!(!sandbox.join("work/data").exists(), "nothing copied");
    // Copied: the directory lands in the working directory, and a file gone from the
    // source since is gone from the copy the task reads on the next run.
    let cfg = file_config(&sandbox, "copy");
    let cfg = cfg.to_str().unwrap();
    let out = sandbox.run(&["--config", cfg, "run", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    std::fs::remove_file(sandbox.join("data/a.txt")).unwrap();
    let out = sandbox.run(&["--config", cfg, "run", "flow.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/list.txt")).unwrap(),
        "./sub/b.txt\n"
    );
    // A directory output: the task fills a directory the host made in the working
    // directory, and each file it wrote is copied below the output's path.
    sandbox.write(
        "work/out.toml",
        "[[task]]\nname = \"t\"\ncommand = \"mkdir {outputs[0]}/s && printf X > {outputs[0]}/s/x.txt\"\noutputs = [\"out/d/\"]\n",
    );
    // A file of the user's already in that directory is sent too, but stays theirs:
    // the next run never removes it (it removed it before).
    sandbox.write("staged/d/mine.txt", "MINE");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = sandbox.run(&["--config", cfg, "run", "out.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/out/d/s/x.txt")).unwrap(),
        "X"
    );
    std::fs::remove_dir_all(sandbox.join("staged/d/s")).unwrap();
    let out = sandbox.run(&["--config", cfg, "run", "out.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("staged/d/mine.txt")).unwrap(),
        "MINE"
    );
    no_temp_files_left(&sandbox.join("work/out/d/s"));
    // A link in the directory output's place is refused, and nothing behind it is
    // touched (a later run's prune followed it).
    std::fs::rename(sandbox.join("staged/d"), sandbox.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(sandbox.join("elsewhere"), sandbox.join("staged/d")).unwrap();
    let out = sandbox.run(&["--config", cfg, "run", "out.toml"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("staged/d is a link"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("elsewhere/s/x.txt")).unwrap(),
        "X"
    );
    // stdout is a file: a directory there is refused before anything runs.
    sandbox.write(
        "work/bad.toml",
        "[[task]]\nname = \"t\"\ncommand = \"true\"\nstdout = \"logs/\"\n",
    );
    let out = sandbox.run(&["run", "bad.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("stdout and stderr are files, and "),
        "{}",
        out.stderr
    );
    // A directory stage-out refuses, before anything moves, a name no URL carries alike
    // and a link (exit 2), naming the local file.
    sandbox.write("send/50%.txt", "x");
    let send = sandbox.join("send");
    let send = send.to_str().unwrap();
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stage",
        "out",
        send,
        "/tmp/never-used-stagehost-dir/",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("send holds \"50%.txt\""),
        "{}",
        out.stderr
    );
    std::fs::remove_file(sandbox.join("send/50%.txt")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", sandbox.join("send/link")).unwrap();
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stage",
        "out",
        send,
        "/tmp/never-used-stagehost-dir/",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(!Path::new("/tmp/never-used-stagehost-dir").exists());
}

#[test]
fn a_missing_local_source_of_a_file_with_mirrors_gives_way_to_the_next() {
    let sandbox = Sandbox::new();
    sandbox.write("data/b.txt", "from b");
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"m\"\ncommand = \"cat {inputs[0]} > {outputs[0]}\"\ninputs = [{ urls = [\"../data/a.txt\", \"../data/b.txt\"] }]\noutputs = [\"got.txt\"]\n",
    );
    // The preflight lets the missing first source pass (the next may serve), and the
    // file provider's in-place use of it counts only if it is there.
    let out = sandbox.run(&["run", "flow.toml", "--report", "-"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/got.txt")).unwrap(),
        "from b"
    );
    let file = &out.json()["tasks"][0]["files"][0];
    assert!(
        file["source"].as_str().unwrap().ends_with("/data/b.txt"),
        "{file}"
    );
    assert!(
        out.stderr.contains("a.txt does not exist"),
        "{}",
        out.stderr
    );
}
