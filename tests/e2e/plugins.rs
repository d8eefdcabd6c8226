//! Discovery, loading, config and the `plugins` commands, through the built `stagehost`
//! binary and real plugin libraries.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use stagehost_plugin_api::abi::API_VERSION;
use stagehost_tests::*;

fn plugin_rows(listing: &serde_json::Value) -> Vec<serde_json::Value> {
    listing["plugins"]
        .as_array()
        .expect("plugins array")
        .clone()
}

fn row_for(listing: &serde_json::Value, file_name: &str) -> serde_json::Value {
    plugin_rows(listing)
        .into_iter()
        .find(|r| r["file"].as_str().is_some_and(|f| f.ends_with(file_name)))
        .unwrap_or_else(|| panic!("no row for {file_name} in {listing:#}"))
}

/// The plugins the workspace ships: one crate per directory under `plugins/`.
fn shipped_plugin_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn loaded_names(listing: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = plugin_rows(listing)
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "loaded", "{r:#}");
            r["name"].as_str().unwrap().to_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn default_discovery_finds_exactly_the_shipped_plugins_in_debug_and_release() {
    // Build every test-only plugin first: none of them may land where discovery looks.
    fixture("probe");
    example_data_plugin();
    let sandbox = Sandbox::new();
    for profile in ["debug", "release"] {
        let out: Run = sandbox
            .command(&stagehost_bin_in(profile))
            .args(["plugins", "list", "--json"])
            .output()
            .unwrap()
            .into();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(
            loaded_names(&out.json()),
            shipped_plugin_names(),
            "profile {profile}"
        );
    }
}

#[test]
fn plugins_list_shows_file_name_versions_schemes_and_order() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["plugins", "list", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let listing = out.json();
    let file = row_for(&listing, &format!("libstagehost_file.{}", dylib_ext()));
    assert_eq!(file["name"], "file");
    assert_eq!(file["version"], "0.1.0");
    assert_eq!(file["api_version"], stagehost_plugin_api::abi::API_VERSION);
    assert_eq!(file["schemes"], serde_json::json!(["file"]));
    // The embedded default is Parsl's default_staging; a plugin not built yet is
    // missing, not fatal.
    let providers = listing["providers"].as_array().unwrap();
    let names: Vec<&str> = providers
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(&names[..4], ["file", "ftp", "http", "zip"]);
    let local = &listing["executors"][0];
    assert_eq!(local["label"], "local");
    assert_eq!(local["order_from"], "default");
    assert_eq!(
        local["order"][0],
        serde_json::json!({"provider": "file", "ready": true})
    );
    // Every built-in provider of the default order is built and loads.
    for (i, name) in ["file", "ftp", "http", "zip"].into_iter().enumerate() {
        assert_eq!(
            local["order"][i],
            serde_json::json!({"provider": name, "ready": true})
        );
    }

    let text = sandbox.run(&["plugins", "list"]);
    assert!(
        text.stdout.contains(&format!(
            "file 0.1.0 (plugin-api {}, schemes: file): loaded",
            stagehost_plugin_api::abi::API_VERSION
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("local [default order"),
        "{}",
        text.stdout
    );
}

fn stage_in_json(
    sandbox: &Sandbox,
    config: &Path,
    executor: &str,
    url: &str,
) -> (Run, serde_json::Value) {
    let out = sandbox.run(&[
        "--config",
        config.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        "-e",
        executor,
        url,
    ]);
    let json = out.json();
    (out, json["files"][0].clone())
}

#[test]
fn the_config_decides_the_order_and_the_first_claim_wins() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let input = sandbox.write("data/in.txt", "original bytes");
    let config = |order: &str| {
        format!(
            "plugin_dirs = [{}]\n\n[[provider]]\nname = \"copier\"\nplugin = \"file\"\nsettings = {{ mode = \"copy\" }}\n\n[[provider]]\nname = \"prober\"\nplugin = \"probe\"\nsettings = {{ mark = \"PROBE\" }}\n\n[executor.local]\nworking_dir = \"staged\"\nstaging = [{order}]\n",
            toml_path(&plugins)
        )
    };
    let a = sandbox.write("a.toml", config("\"prober\", \"copier\""));
    let (out, r) = stage_in_json(&sandbox, &a, "local", input.to_str().unwrap());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(r["provider"], "prober");
    assert_eq!(r["modes"], serde_json::json!(["separate-job"]));
    let staged = sandbox.join("staged/in.txt");
    assert_eq!(
        std::fs::read_to_string(&staged).unwrap(),
        format!("PROBE:{}", input.display())
    );

    std::fs::remove_file(&staged).unwrap();
    let b = sandbox.write("b.toml", config("\"copier\", \"prober\""));
    let (out, r) = stage_in_json(&sandbox, &b, "local", input.to_str().unwrap());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(r["provider"], "copier");
    assert_eq!(r["modes"], serde_json::json!(["in-task-step"]));
    assert_eq!(std::fs::read_to_string(&staged).unwrap(), "original bytes");
}

#[test]
fn a_claim_with_nothing_to_do_does_not_fall_through() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let input = sandbox.write("data/in.txt", "x");
    let config = sandbox.write(
        "c.toml",
        format!(
            "plugin_dirs = [{}]\n[[provider]]\nname = \"idle\"\nplugin = \"probe\"\nsettings = {{ work = \"none\" }}\n[[provider]]\nname = \"copier\"\nplugin = \"file\"\nsettings = {{ mode = \"copy\" }}\n[executor.local]\nworking_dir = \"staged\"\n",
            toml_path(&plugins)
        ),
    );
    let (out, r) = stage_in_json(&sandbox, &config, "local", input.to_str().unwrap());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(r["provider"], "idle");
    assert_eq!(r["modes"], serde_json::json!([]));
    assert!(!sandbox.join("staged/in.txt").exists());
}

#[test]
fn bad_plugins_each_give_one_line_and_the_good_ones_keep_working() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir(
        "plugins",
        &[
            &fixture("probe"),
            &fixture("no_root"),
            &plugin_built_against_api_0_2(),
            &shipped_plugin("file"),
        ],
    );
    std::fs::write(plugins.join("libx.so"), "this is a text file\n").unwrap();
    // A world-writable plugin, in a directory of its own (the check looks at the file).
    let ww_dir = sandbox.plugin_dir("ww", &[]);
    let ww = ww_dir.join("libprobe_ww.so");
    std::fs::copy(fixture("probe"), &ww).unwrap();
    std::fs::set_permissions(&ww, std::fs::Permissions::from_mode(0o666)).unwrap();

    let input = sandbox.write("data/in.txt", "payload");
    let config = sandbox.write(
        "site.toml",
        format!(
            r#"plugin_dirs = [{plugins}, {ww}]

[[provider]]
name = "ctor-fails"
plugin = "probe"
settings = {{ fail_constructor = true }}

[[provider]]
name = "panics-in-can"
plugin = "probe"
settings = {{ panic_in = "can_stage_in" }}

[[provider]]
name = "panics-in-stage-in"
plugin = "probe"
settings = {{ panic_in = "stage_in" }}

[[provider]]
name = "panics-in-job"
plugin = "probe"
settings = {{ panic_in = "job" }}

[[provider]]
name = "copier"
plugin = "file"
settings = {{ mode = "copy" }}

[executor.can]
staging = ["panics-in-can"]
[executor.stagein]
staging = ["panics-in-stage-in"]
[executor.job]
staging = ["panics-in-job"]
[executor.good]
working_dir = "good"
staging = ["ctor-fails", "copier"]
"#,
            plugins = toml_path(&plugins),
            ww = toml_path(&ww_dir)
        ),
    );
    let cfg = config.to_str().unwrap();
    let out = sandbox.run(&["--config", cfg, "plugins", "list", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let listing = out.json();
    let reason = |file: &str| {
        let row = row_for(&listing, file);
        assert_eq!(row["status"], "failed", "{row:#}");
        let reason = row["reason"].as_str().unwrap().to_owned();
        assert!(!reason.contains('\n'), "one line: {reason}");
        reason
    };
    assert_eq!(
        reason("libx.so"),
        "not a shared library (no ELF or Mach-O header)"
    );
    assert_eq!(
        reason("libno_root.so"),
        "not a stagehost plugin: it exports no root module (build it with `export_provider!`)"
    );
    assert_eq!(
        reason("libfuture_api.so"),
        format!(
            "built against plugin-api {future}, which this host (plugin-api {api}) cannot load; rebuild it against plugin-api {api}",
            future = incompatible_api_version(),
            api = stagehost_plugin_api::abi::API_VERSION
        )
    );
    assert!(reason("libprobe_ww.so")
        .starts_with("refused: the file is group- or world-writable (mode 666)"));
    let providers = listing["providers"].as_array().unwrap();
    let ctor = providers
        .iter()
        .find(|p| p["name"] == "ctor-fails")
        .unwrap();
    assert_eq!(ctor["status"], "failed");
    assert_eq!(
        ctor["reason"],
        "provider \"ctor-fails\" (plugin \"probe\"): constructor failed as configured"
    );

    // Staging goes on with the good plugins, even with a failed instance first in the order.
    let good = sandbox.run(&[
        "--config",
        cfg,
        "stage",
        "in",
        "-e",
        "good",
        input.to_str().unwrap(),
    ]);
    assert_eq!(good.code, Some(0), "{}", good.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("good/in.txt")).unwrap(),
        "payload"
    );

    // A panic is an error for its file, never a crash of the host.
    for (executor, call) in [
        ("can", "can_stage_in"),
        ("stagein", "stage_in"),
        ("job", "separate job"),
    ] {
        let out = sandbox.run(&[
            "--config",
            cfg,
            "stage",
            "in",
            "-e",
            executor,
            input.to_str().unwrap(),
        ]);
        assert_eq!(out.code, Some(1), "executor {executor}: {}", out.stderr);
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("panicked"))
            .unwrap_or_else(|| panic!("{}", out.stderr));
        assert!(
            line.starts_with(&format!(
                "stagehost: error: cannot stage in {}: provider \"panics-in-",
                input.display()
            )),
            "{line}"
        );
        assert!(
            line.contains(&format!(
                "on executor \"{executor}\": {call}: panicked: plugin panicked in"
            )),
            "{line}"
        );
        assert!(
            out.stderr
                .lines()
                .last()
                .unwrap()
                .ends_with("1 of 1 file(s) failed"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn a_panicking_constructor_is_a_failed_instance() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let config = sandbox.write(
        "c.toml",
        format!(
            "plugin_dirs = [{}]\n[[provider]]\nname = \"boom\"\nplugin = \"probe\"\nsettings = {{ panic_in = \"constructor\" }}\n",
            toml_path(&plugins)
        ),
    );
    let out = sandbox.run(&[
        "--config",
        config.to_str().unwrap(),
        "plugins",
        "list",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let boom = out.json()["providers"][0].clone();
    let reason = boom["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "provider \"boom\" (plugin \"probe\"): plugin panicked in the provider constructor at "
        ),
        "{reason}"
    );
    assert!(
        reason.ends_with(": probe panics in its constructor"),
        "{reason}"
    );
}

#[test]
fn a_third_party_plugin_dropped_into_a_directory_works_without_config_change() {
    let sandbox = Sandbox::new();
    let dir = sandbox.plugin_dir("dropped", &[&example_data_plugin()]);
    let env = [("STAGEHOST_PLUGIN_PATH", dir.to_str().unwrap())];
    let out = sandbox.run_env(&["plugins", "list", "--json"], &env);
    let listing = out.json();
    let order = &listing["executors"][0]["order"];
    let names: Vec<&str> = order
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["provider"].as_str().unwrap())
        .collect();
    // The embedded default's four, then what was dropped in: the test's directory
    // first, then built plugins beside the binary that the default does not name.
    assert_eq!(
        names[..5],
        ["file", "ftp", "http", "zip", "data"],
        "dropped-in plugins come after the configured ones"
    );
    let mut rest = names[5..].to_vec();
    rest.sort_unstable();
    assert_eq!(rest, ["object-store", "rsync"], "{names:?}");
    let data = listing["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "data")
        .unwrap()
        .clone();
    assert_eq!(data["origin"], "dropped-in");
    assert_eq!(data["status"], "ready");

    let out = sandbox.run_env(&["stage", "in", "--json", "data:,hello%20stagehost"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = &out.json()["files"][0];
    assert_eq!(r["provider"], "data");
    let local = r["local_path"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work").join(local)).unwrap(),
        "hello stagehost"
    );
}

#[test]
fn unknown_keys_are_errors_with_line_and_column() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "bad.toml",
        "[executor.local]\nworking_dir = \"w\"\nstagin = []\n",
    );
    let out = sandbox.run(&["--config", config.to_str().unwrap(), "plugins", "list"]);
    assert_eq!(out.code, Some(2));
    let line = out.stderr.trim();
    assert!(
        line.starts_with(&format!(
            "stagehost: error: {}:3:1: unknown field `stagin`, expected",
            config.display()
        )),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");
}

#[test]
fn an_unknown_settings_key_points_at_its_place_in_the_config() {
    let sandbox = Sandbox::new();
    let text =
        "[[provider]]\nname = \"copier\"\nplugin = \"file\"\nsettings = { moed = \"copy\" }\n";
    let config = sandbox.write("site.toml", text);
    let expected = format!(
        "stagehost: error: {}:4:14: provider \"copier\" (plugin \"file\"): invalid settings: unknown field `moed`, expected `mode`\n",
        config.display()
    );
    // Settings a plugin rejects are a config error for every command, as an unknown
    // key in stagehost's own tables is: exit 2, one line, file:line:column.
    for args in [
        &["plugins", "list", "--json"][..],
        &["plugins", "check"],
        &["stage", "in", "/etc/hostname"],
    ] {
        let mut full = vec!["--config", config.to_str().unwrap()];
        full.extend_from_slice(args);
        let out = sandbox.run(&full);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr, expected, "{args:?}");
        assert_eq!(out.stdout, "", "{args:?}");
    }
    // Marked required, it is the same config error.
    let required = sandbox.write(
        "req.toml",
        text.replace("[[provider]]\n", "[[provider]]\nrequired = true\n"),
    );
    let out = sandbox.run(&[
        "--config",
        required.to_str().unwrap(),
        "stage",
        "in",
        "/etc/hostname",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field `moed`"),
        "{}",
        out.stderr
    );
}

#[test]
fn version_requirements_and_plugins_check() {
    let sandbox = Sandbox::new();
    let ok = sandbox.write(
        "ok.toml",
        "[[provider]]\nname = \"f\"\nplugin = \"file\"\nversion = \"^0.1\"\n",
    );
    let out = sandbox.run(&["--config", ok.to_str().unwrap(), "plugins", "check"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The configured instance, plus one dropped-in instance per other shipped plugin.
    assert_eq!(
        out.stdout.trim(),
        format!("ok: {} provider(s) ready", shipped_plugin_names().len())
    );

    let bad = sandbox.write(
        "bad.toml",
        "[[provider]]\nname = \"f\"\nplugin = \"file\"\nversion = \">=2\"\n",
    );
    let out = sandbox.run(&["--config", bad.to_str().unwrap(), "plugins", "check"]);
    assert_eq!(out.code, Some(2));
    let first = out.stderr.lines().next().unwrap();
    assert!(
        first.starts_with("stagehost: error: provider \"f\" (plugin \"file\"): "),
        "{first}"
    );
    assert!(
        first.ends_with("libstagehost_file.so is version 0.1.0, the config requires >=2"),
        "{first}"
    );
}

#[test]
fn a_library_path_in_the_config_loads_that_file() {
    let sandbox = Sandbox::new();
    let lib = sandbox
        .plugin_dir("private", &[&fixture("probe")])
        .join(format!("libprobe.{}", dylib_ext()));
    let input = sandbox.write("in.txt", "x");
    let config = sandbox.write(
        "c.toml",
        format!("[[provider]]\nname = \"mine\"\nlibrary = {}\nsettings = {{ mark = \"LIB\" }}\n[executor.local]\nworking_dir = \"out\"\nstaging = [\"mine\"]\n", toml_path(&lib)),
    );
    let (out, r) = stage_in_json(&sandbox, &config, "local", input.to_str().unwrap());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(r["provider"], "mine");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("out/in.txt")).unwrap(),
        format!("LIB:{}", input.display())
    );
}

#[test]
fn the_config_is_found_in_documented_order_and_shown() {
    let sandbox = Sandbox::new();
    let show = |env: &[(&str, &str)], args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["config", "show"]);
        let out = sandbox.run_env(&all, env);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out.stdout
    };
    // Embedded default.
    let embedded = show(&[], &[]);
    assert!(embedded.contains("name = \"zip\""), "{embedded}");
    // XDG, then ./stagehost.toml, then STAGEHOST_CONFIG, then --config.
    sandbox.write("config/stagehost/config.toml", "[executor.xdg]\n");
    assert!(show(&[], &[]).contains("[executor.xdg]"));
    sandbox.write("work/stagehost.toml", "[executor.cwd]\n");
    assert!(show(&[], &[]).contains("[executor.cwd]"));
    let env_cfg = sandbox.write("env.toml", "[executor.env]\n");
    let env = [("STAGEHOST_CONFIG", env_cfg.to_str().unwrap())];
    assert!(show(&env, &[]).contains("[executor.env]"));
    let flag = sandbox.write("flag.toml", "[executor.flag]\nstaging = []\n");
    let shown = show(&env, &["--config", flag.to_str().unwrap()]);
    assert!(
        shown.contains("[executor.flag]") && shown.contains("staging = []"),
        "{shown}"
    );
    // A named config that does not exist is an error, not a fall-back.
    let out = sandbox.run(&["--config", "/nonexistent/stagehost.toml", "config", "show"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.starts_with(
            "stagehost: error: /nonexistent/stagehost.toml: cannot read config (named by --config)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_staging_list_naming_no_provider_is_a_config_error() {
    let sandbox = Sandbox::new();
    let config = sandbox.write("c.toml", "[executor.local]\nstaging = [\"nosuch\"]\n");
    let out = sandbox.run(&[
        "--config",
        config.to_str().unwrap(),
        "stage",
        "in",
        "/etc/hostname",
    ]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.starts_with(&format!(
            "stagehost: error: {}:2:1: executor \"local\": staging names provider \"nosuch\", which is neither configured nor a dropped-in plugin",
            config.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn plugins_built_against_every_released_plugin_api_load_and_stage() {
    let sandbox = Sandbox::new();
    let mut failures = Vec::new();
    for (version, _) in RELEASED_APIS {
        let dir = format!("old-{version}");
        let plugins = sandbox.plugin_dir(&dir, &[&plugin_built_against_released_api(version)]);
        let config = sandbox.write(
            format!("site-{version}.toml"),
            format!(
                "plugin_dirs = [{}]\n\n[[provider]]\nname = \"old\"\nplugin = \"old\"\n\n[executor.local]\nworking_dir = \"wd-{version}\"\nstaging = [\"old\"]\n",
                toml_path(&plugins)
            ),
        );
        let listing = sandbox.run(&["--config", config.to_str().unwrap(), "plugins", "list"]);
        if !listing.stdout.contains(&format!(
            "old 0.1.0 (plugin-api {version}, schemes: old): loaded"
        )) {
            failures.push(format!(
                "{version}: listing\n{}\n{}",
                listing.stdout, listing.stderr
            ));
            continue;
        }
        let out = sandbox.run_env(
            &[
                "--config",
                config.to_str().unwrap(),
                "stage",
                "in",
                "--json",
                "old:greeting",
            ],
            &[("RUST_LOG", "stagehost::plugin=info")],
        );
        if out.code != Some(0) {
            failures.push(format!(
                "{version}: stage in exited {:?}\n{}",
                out.code, out.stderr
            ));
            continue;
        }
        assert_eq!(
            std::fs::read_to_string(sandbox.join(format!("wd-{version}/greeting"))).unwrap(),
            "old plugin\n"
        );
        assert!(
            out.stderr.contains(&format!(
                "written by a plugin built against plugin-api {version}"
            )),
            "{}",
            out.stderr
        );
        assert_eq!(out.json()["files"][0]["cached"], false);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn an_installed_tree_finds_its_plugins_wherever_it_is_mounted() {
    let sandbox = Sandbox::new();
    let prefix = sandbox.join("opt/stagehost");
    let out = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/install"))
        .arg("--prefix")
        .arg(&prefix)
        .args(["--profile", "debug", "--no-build"])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Mounted somewhere else, and reached through a symbolic link on PATH.
    let mounted = sandbox.join("mnt/site-tools");
    std::fs::create_dir_all(mounted.parent().unwrap()).unwrap();
    std::fs::rename(&prefix, &mounted).unwrap();
    let link = sandbox.join("bin/stagehost");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(mounted.join("bin/stagehost"), &link).unwrap();
    let out: Run = sandbox
        .command(&link)
        .args(["plugins", "list", "--json"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let listing = out.json();
    assert_eq!(loaded_names(&listing), shipped_plugin_names());
    let plugin_dir = mounted.join("lib/stagehost/plugins");
    for plugin in listing["plugins"].as_array().unwrap() {
        if plugin["status"] == "loaded" {
            let file = std::path::PathBuf::from(plugin["file"].as_str().unwrap());
            assert_eq!(file.parent(), Some(plugin_dir.as_path()), "{plugin}");
            assert_eq!(
                plugin["directory_origin"],
                "<exe dir>/../lib/stagehost/plugins"
            );
        }
    }
    // And it stages with them.
    sandbox.write("work/in.txt", "installed\n");
    let out: Run = sandbox
        .command(&link)
        .args(["stage", "in", "--json", "in.txt"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json()["files"][0]["provider"], "file");
}

#[test]
fn version_lists_the_build_plugin_api_and_every_plugin_found() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["version"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("stagehost 0."), "{}", out.stdout);
    assert!(first.contains("(commit "), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "plugin-api {}",
            stagehost_plugin_api::abi::API_VERSION
        )),
        "{}",
        out.stdout
    );
    let json = sandbox.run(&["version", "--json"]).json();
    let mut names: Vec<String> = json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["loaded"] == true)
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, shipped_plugin_names());
    for name in &names {
        assert!(out.stdout.contains(&format!("  {name} ")), "{}", out.stdout);
    }
    // `--version` says the same build; `-V` is the short form.
    let long = sandbox.run(&["--version"]);
    assert_eq!(
        long.stdout.lines().next(),
        Some(first.trim_end_matches('\n'))
    );
}

#[test]
fn completions_and_man_pages_are_generated_for_every_command() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = sandbox.run(&["completions", shell]);
        assert_eq!(out.code, Some(0), "{shell}: {}", out.stderr);
        assert!(out.stdout.contains("stagehost"), "{shell}");
        assert!(
            out.stdout.contains("worker"),
            "{shell}: every command is there"
        );
    }
    assert_eq!(sandbox.run(&["completions", "tcsh"]).code, Some(2));
    let dir = sandbox.join("man");
    let out = sandbox.run(&["man", dir.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for page in [
        "stagehost.1",
        "stagehost-run.1",
        "stagehost-stage-in.1",
        "stagehost-version.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    // `man` reads them.
    if std::path::Path::new("/usr/bin/man").exists() {
        let shown = std::process::Command::new("man")
            .arg(dir.join("stagehost-run.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&shown.stdout).contains("--report"));
    }
}

#[test]
fn config_path_names_the_file_and_the_rule_and_v_raises_the_log_level() {
    let sandbox = Sandbox::new();
    let cfg = sandbox.write("site.toml", "[executor.local]\nworking_dir = \"wd\"\n");
    let out = sandbox.run(&["--config", cfg.to_str().unwrap(), "config", "path"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        format!("{} (found by --config)", cfg.display())
    );
    let shown = sandbox.run(&["--config", cfg.to_str().unwrap(), "config", "show"]);
    assert!(
        shown
            .stdout
            .starts_with(&format!("# {} (found by --config)", cfg.display())),
        "{}",
        shown.stdout
    );
    // Without RUST_LOG: quiet by default, -v says which config, -vv each plugin.
    let quiet = sandbox.run(&["--config", cfg.to_str().unwrap(), "plugins", "check"]);
    assert!(!quiet.stderr.contains("info:"), "{}", quiet.stderr);
    let v = sandbox.run(&["-v", "--config", cfg.to_str().unwrap(), "plugins", "check"]);
    assert!(
        v.stderr.contains("stagehost: info: config: "),
        "{}",
        v.stderr
    );
    assert!(!v.stderr.contains("debug:"), "{}", v.stderr);
    let vv = sandbox.run(&["-vv", "--config", cfg.to_str().unwrap(), "plugins", "check"]);
    assert!(vv.stderr.contains("loaded plugin file "), "{}", vv.stderr);
}

#[test]
fn config_show_includes_dropped_in_providers() {
    let sandbox = Sandbox::new();
    let dir = sandbox.plugin_dir("dropped", &[&example_data_plugin()]);
    let out = sandbox.run_env(
        &["config", "show"],
        &[("STAGEHOST_PLUGIN_PATH", dir.to_str().unwrap())],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("[[provider]]\nname = \"data\"\nplugin = \"data\"\n# from "),
        "{}",
        out.stdout
    );
    // Settings a plugin rejects fail `config show` as they fail every command (exit 2,
    // at their place), after the config is shown.
    let bad = sandbox.write(
        "bad.toml",
        "[[provider]]\nname = \"web\"\nplugin = \"http\"\nsettings = { conect_timeout_secs = 5 }\n",
    );
    let shown = sandbox.run(&["--config", bad.to_str().unwrap(), "config", "show"]);
    assert_eq!(shown.code, Some(2), "{}", shown.stderr);
    assert!(
        shown.stderr.contains("bad.toml:4:14: provider \"web\""),
        "{}",
        shown.stderr
    );
    assert!(
        shown.stdout.contains("conect_timeout_secs"),
        "{}",
        shown.stdout
    );
    // What it prints is a config that parses.
    let parsed: toml::Value = toml::from_str(&out.stdout).expect("config show prints TOML");
    assert!(parsed["provider"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"].as_str() == Some("data")));
}

#[test]
fn exit_codes_and_logs_are_for_scripts() {
    let sandbox = Sandbox::new();
    // Not found: the class every failure shares is the exit code. (A file provider
    // that copies needs the source.)
    let cfg = sandbox.write(
        "site.toml",
        "[[provider]]\nname = \"files\"\nplugin = \"file\"\nsettings = { mode = \"copy\" }\n",
    );
    let cfg = cfg.to_str().unwrap();
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stage",
        "in",
        "--json",
        "--dest",
        "d",
        "missing.txt",
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert_eq!(out.json()["files"][0]["error_class"], "not_found");
    // A dry run checks that local inputs exist; one that a task writes need not.
    sandbox.write("work/here.txt", "x");
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"a\"\ncommand = \"cp {inputs[0]} {outputs[0]}\"\ninputs = [\"here.txt\"]\noutputs = [\"mid.txt\"]\n\n[[task]]\nname = \"b\"\ncommand = \"cat {inputs[0]} {inputs[1]} > {outputs[0]}\"\ninputs = [\"mid.txt\", \"gone.txt\"]\noutputs = [\"out.txt\"]\n",
    );
    let out = sandbox.run(&["run", "--dry-run", "flow.toml"]);
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("gone.txt: the local input does not exist"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("mid.txt: the local"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("here.txt: the local"),
        "{}",
        out.stdout
    );
    // A real run stops before any task runs, naming the missing input, exit 3.
    let out = sandbox.run(&["run", "flow.toml"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("gone.txt does not exist, and no task of the workflow writes it"),
        "{}",
        out.stderr
    );
    assert!(!sandbox.join("work/mid.txt").exists(), "no task ran");
    // An unclaimed file anywhere in the workflow is told before a missing input (a
    // usage error, exit 2), whichever task comes first.
    sandbox.write(
        "work/both.toml",
        "[[task]]\nname = \"a\"\ncommand = \"true\"\ninputs = [\"gone.txt\"]\n\n[[task]]\nname = \"b\"\ncommand = \"true\"\ninputs = [\"gopher://h/x\"]\n",
    );
    let out = sandbox.run(&["run", "both.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("gopher://h/x"), "{}", out.stderr);
    // An unknown scheme is a usage error for `stage` as for `run`, naming what is served.
    let out = sandbox.run(&["stage", "in", "gopher://h/x"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "cannot stage file gopher://h/x; the providers of executor \"local\" serve: "
        ) && out.stderr.contains(" http, https"),
        "{}",
        out.stderr
    );
    // A local file to stage out that is not there is not found.
    let out = sandbox.run(&["stage", "out", "nothere.txt", "zip:o.zip/x"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    // JSON logs on request: one object a line.
    let out = sandbox.run(&[
        "--config",
        cfg,
        "--log-format",
        "json",
        "-v",
        "stage",
        "in",
        "--dest",
        "d",
        "missing.txt",
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let logged: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!logged.is_empty(), "{}", out.stderr);
    for line in &logged {
        assert!(
            line["time"].is_f64() && line["level"].is_string() && line["message"].is_string(),
            "{line}"
        );
    }
    assert!(
        logged.iter().any(|l| l["level"] == "info"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_plugin_in_a_directory_another_user_controls_is_refused() {
    use std::os::unix::fs::{symlink, MetadataExt};
    let sandbox = Sandbox::new();
    // A root-owned plugin reached through a directory uid 1500 owns (as a directory
    // a user made inside an unpacked tree would be): that user chose what the name
    // points at, so the plugin is not loaded.
    let theirs = sandbox.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    symlink(example_data_plugin(), theirs.join("libstagehost_data.so")).unwrap();
    let me = std::fs::metadata(sandbox.path()).unwrap().uid();
    let other = if me == 1500 { 1501 } else { 1500 };
    std::os::unix::fs::lchown(&theirs, Some(other), None).unwrap();
    let out = sandbox.run_env(
        &["plugins", "list", "--json"],
        &[("STAGEHOST_PLUGIN_PATH", theirs.to_str().unwrap())],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let listing = out.json();
    let row = listing["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"].as_str().is_some_and(|f| f.contains("theirs")))
        .unwrap_or_else(|| panic!("{listing:#}"))
        .clone();
    assert_eq!(row["status"], "failed", "{row:#}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("is owned by uid {other}, not by you")),
        "{reason}"
    );
}

#[test]
fn a_run_report_becomes_one_self_contained_page_that_chromium_renders() {
    let sandbox = Sandbox::new();
    sandbox.write("work/in.txt", "a\nb\n");
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"count\"\ncommand = \"wc -l < {inputs[0]} > {outputs[0]}\"\ninputs = [\"in.txt\"]\noutputs = [\"n.txt\"]\n\n[[task]]\nname = \"breaks <here>\"\ncommand = \"exit 3\"\n",
    );
    let out = sandbox.run(&["run", "flow.toml", "--report", "run.json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    // Each task says which worker ran its body: the page's lanes.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sandbox.join("work/run.json")).unwrap())
            .unwrap();
    for t in doc["tasks"].as_array().unwrap() {
        assert!(
            t["worker"]
                .as_str()
                .is_some_and(|w| w.starts_with("worker ")),
            "{t}"
        );
    }
    let out = sandbox.run(&["report", "run.json", "-o", "run.html"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let page = std::fs::read_to_string(sandbox.join("work/run.html")).unwrap();
    // Self-contained: nothing fetched, no script.
    for outside in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!page.contains(outside), "{outside} in the page");
    }
    // Names are escaped; the failure is listed with its line.
    assert!(page.contains("breaks &lt;here&gt;"), "{page}");
    assert!(
        page.contains("the command failed with exit status 3"),
        "{page}"
    );
    // Not a report: one line, exit 2.
    let out = sandbox.run(&["report", "flow.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("not a JSON report"), "{}", out.stderr);

    // Headless Chromium (Debian's package) loads it: the DOM it builds holds a bar per
    // task with its status, and a screenshot is kept with the test's output.
    let shots = target_root().join("test-output");
    std::fs::create_dir_all(&shots).unwrap();
    let url = format!("file://{}", sandbox.join("work/run.html").display());
    let chromium = |args: &[&str]| -> Run {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1300,900",
            ])
            .args(args)
            .arg(&url)
            .env("HOME", sandbox.join("home"))
            .output()
            .expect("chromium runs (scripts/install-test-deps installs it)")
            .into()
    };
    let dom = chromium(&["--dump-dom"]);
    assert_eq!(dom.code, Some(0), "{}", dom.stderr);
    assert!(
        dom.stdout
            .contains("class=\"task succeeded\" data-task=\"count\""),
        "{}",
        dom.stdout
    );
    assert!(
        dom.stdout.contains("class=\"lane\"") && dom.stdout.contains(">worker "),
        "a lane per worker: {}",
        dom.stdout
    );
    assert!(
        dom.stdout
            .contains("class=\"task failed\" data-task=\"breaks &lt;here&gt;\""),
        "{}",
        dom.stdout
    );
    let shot = shots.join("run-report.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    eprintln!("screenshot of the report: {}", shot.display());
}

#[test]
fn each_run_journals_its_tasks_beside_the_workflow() {
    use std::os::unix::fs::MetadataExt;
    let sandbox = Sandbox::new();
    sandbox.write("work/in.txt", "a\nb\n");
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"count\"\ncommand = \"wc -l < {inputs[0]} > {outputs[0]}\"\ninputs = [\"in.txt\"]\noutputs = [\"n.txt\"]\n\n[[task]]\nname = \"copy\"\ncommand = \"cp {inputs[0]} {outputs[0]}\"\ninputs = [{ task = \"count\", output = 0 }]\noutputs = [\"m.txt\"]\n",
    );
    for run in 1..=2 {
        let out = sandbox.run(&["run", "flow.toml"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let journal = sandbox.join("work/.stagehost/journal/flow.toml.jsonl");
        let records = stagehost::journal::read(&journal).unwrap();
        let runs = records.iter().filter(|r| r["type"] == "run").count();
        let tasks: Vec<_> = records.iter().filter(|r| r["type"] == "task").collect();
        assert_eq!((runs, tasks.len()), (run, 2 * run), "{records:#?}");
        // The last run's records: each output's identity is the file's as it is now,
        // and the copy's input is the count's output, by identity.
        let last = &tasks[tasks.len() - 2..];
        let count = last.iter().find(|t| t["name"] == "count").unwrap();
        let copy = last.iter().find(|t| t["name"] == "copy").unwrap();
        let meta = std::fs::metadata(sandbox.join("work/n.txt")).unwrap();
        assert_eq!(count["outputs"][0]["identity"]["size"], meta.len());
        assert_eq!(count["outputs"][0]["identity"]["inode"], meta.ino());
        assert_eq!(
            copy["inputs"][0]["identity"],
            count["outputs"][0]["identity"]
        );
        assert_eq!(count["status"], "succeeded");
        assert_eq!(count["command_sha256"].as_str().unwrap().len(), 64);
    }
}

#[test]
fn a_plugin_built_against_this_plugin_api_works_in_older_hosts_or_is_refused_by_name() {
    let sandbox = Sandbox::new();
    for version in ["0.1.0", "0.1.5"] {
        let host = host_built_against_released_api(version);
        let dir = sandbox.join(format!("wd-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        let out: Run = std::process::Command::new(&host)
            .arg(fixture("capable"))
            .arg("capable:greeting")
            .arg(&dir)
            .output()
            .unwrap()
            .into();
        assert_eq!(
            out.code,
            Some(0),
            "{version}: {}\n{}",
            out.stdout,
            out.stderr
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("greeting")).unwrap(),
            "capable plugin\n"
        );
        // No capabilities in an older host: the plugin says `cached` the old way.
        assert!(
            out.stdout
                .contains("log 3: the host offers cached/1: false")
                && out.stdout.contains("notice: cached"),
            "{version}: {}",
            out.stdout
        );
        // A plugin that cannot work without a host capability is refused, naming it.
        let out: Run = std::process::Command::new(&host)
            .arg(fixture_needs_cached())
            .arg("capable:other")
            .arg(&dir)
            .output()
            .unwrap()
            .into();
        assert_eq!(
            out.code,
            Some(3),
            "{version}: {}\n{}",
            out.stdout,
            out.stderr
        );
        assert_eq!(
            out.stdout.trim(),
            "refused: this plugin needs the host capability cached/1, which this stagehost does not offer (it is older than the plugin-api the plugin was built with); upgrade stagehost",
            "{version}"
        );
        assert!(!dir.join("other").exists());
    }
}

#[test]
fn this_host_offers_its_capabilities_and_refuses_a_plugin_needing_one_it_lacks() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir(
        "caps",
        &[
            &fixture("capable"),
            &fixture_needs_cached(),
            &fixture("future_host"),
        ],
    );
    let config = sandbox.write(
        "site.toml",
        format!(
            "plugin_dirs = [{}]\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"capable\"]\n",
            toml_path(&plugins)
        ),
    );
    let listing = sandbox.run(&["--config", config.to_str().unwrap(), "plugins", "list"]);
    assert!(
        listing.stdout.contains(&format!(
            "capable 0.1.0 (plugin-api {API_VERSION}, schemes: capable): loaded\n      {}\n      capabilities: list/1, planning/1, stat/1\n",
            plugins.join(format!("libcapable.{}", dylib_ext())).display()
        )),
        "{}",
        listing.stdout
    );
    assert!(
        listing.stdout.contains("needs-cached 0.1.0"),
        "{}",
        listing.stdout
    );
    assert!(
        listing.stdout.contains(&format!(
            "libfuture_host.{}: failed: it needs the host capability cached/2, which this stagehost (plugin-api {API_VERSION}) does not offer; upgrade stagehost\n",
            dylib_ext()
        )),
        "{}",
        listing.stdout
    );
    let json = sandbox
        .run(&[
            "--config",
            config.to_str().unwrap(),
            "plugins",
            "list",
            "--json",
        ])
        .json();
    let capable = json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "capable")
        .unwrap()
        .clone();
    assert_eq!(
        capable["capabilities"],
        serde_json::json!(["list/1", "planning/1", "stat/1"])
    );
    // The host's `cached` capability reaches the plugin, and its answer the report.
    let out = sandbox.run_env(
        &[
            "--config",
            config.to_str().unwrap(),
            "stage",
            "in",
            "--json",
            "capable:greeting",
        ],
        &[("RUST_LOG", "stagehost::plugin=info")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("the host offers cached/1: true"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["files"][0]["cached"], true);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/greeting")).unwrap(),
        "capable plugin\n"
    );
}

#[test]
fn stat_and_ls_ask_the_chosen_provider_and_survive_a_broken_one() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("caps", &[&fixture("capable")]);
    let config = sandbox.write(
        "site.toml",
        format!(
            "plugin_dirs = [{}]\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"capable\", \"file\", \"http\"]\n",
            toml_path(&plugins)
        ),
    );
    let cfg = config.to_str().unwrap();
    let out = sandbox.run(&["--config", cfg, "stat", "capable:dir/a"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "capable:dir/a\n  kind: file\n  size: 1\n  modified: 2023-11-14T22:13:20Z\n  validator: \"a1\"\n  provider: capable\n"
    );
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stat",
        "--json",
        "capable:dir/sub",
        "capable:dir/none",
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert_eq!(
        out.json(),
        serde_json::json!([
            {"url": "capable:dir/sub", "exists": true, "kind": "directory", "size": null,
             "modified": null, "validator": null, "provider": "capable"},
            {"url": "capable:dir/none", "exists": false, "provider": "capable"},
        ])
    );
    let out = sandbox.run(&["--config", cfg, "ls", "capable:dir"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "a\nsub/\n"),
        "{}",
        out.stderr
    );
    let out = sandbox.run(&["--config", cfg, "ls", "-R", "-l", "capable:dir"]);
    assert_eq!(
        out.stdout,
        "           1 2023-11-14T22:13:20Z           a\n           - -                              sub/\n           2 2023-11-14T22:13:20Z           sub/b\n"
    );
    let out = sandbox.run(&["--config", cfg, "ls", "-R", "--json", "capable:dir"]);
    assert_eq!(out.json()[2]["name"], "sub/b");
    assert_eq!(out.json()[2]["size"], 2);
    // A panic in a capability call is an error for that URL, naming everything.
    let out = sandbox.run(&["--config", cfg, "ls", "capable:boom"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("stagehost: error: cannot list capable:boom: provider \"capable\" (plugin capable 0.1.0) on executor \"local\": panicked: plugin panicked in list at ")
            && out.stderr.contains("list exploded"),
        "{}",
        out.stderr
    );
    let out = sandbox.run(&["--config", cfg, "stat", "capable:refuse"]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    // A listed name that leaves the directory fails the whole listing.
    let out = sandbox.run(&["--config", cfg, "ls", "capable:evil"]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stderr.contains("the listing holds the entry \"../escape\", which is not a plain relative path; nothing was listed"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    // A provider without the capability is named; nothing falls through to the next.
    let out = sandbox.run(&["--config", cfg, "ls", "http://127.0.0.1:9/dir/"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let line = out.stderr.lines().next().unwrap();
    assert!(
        line.starts_with("stagehost: error: cannot list http://127.0.0.1:9/dir/: provider \"http\" (plugin http ")
            && line.ends_with(") on executor \"local\" does not offer the `list` capability"),
        "{line}"
    );
    let out = sandbox.run(&["--config", cfg, "ls", "nosuch://x/"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    // The file provider answers both, for a path or a file: URL.
    std::fs::create_dir_all(sandbox.join("data/sub")).unwrap();
    std::fs::write(sandbox.join("data/x"), "xyz").unwrap();
    let data = sandbox.join("data");
    let out = sandbox.run(&["--config", cfg, "ls", "-R", data.to_str().unwrap()]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "sub/\nx\n"),
        "{}",
        out.stderr
    );
    let out = sandbox.run(&[
        "--config",
        cfg,
        "stat",
        "--json",
        data.join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.json()[0]["size"], 3);
    assert_eq!(out.json()[0]["provider"], "file");
}

#[test]
fn a_provider_declaring_its_schemes_is_asked_only_about_files_of_them() {
    // An instance whose `can_stage_in` panics, first in the order: declaring its
    // schemes (the `schemes` capability), it is never asked about a local file, which
    // the next provider stages; a file of its own scheme still reaches it. Without the
    // declaration every file reaches it.
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugin_dir("plugins", &[&fixture("probe")]);
    let input = sandbox.write("data/in.txt", "payload");
    let config = |declared: bool| {
        sandbox.write(
            format!("site-{declared}.toml"),
            format!(
                "plugin_dirs = [{}]\n\n[[provider]]\nname = \"picky\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"probe\"], declare_schemes = {declared}, panic_in = \"can_stage_in\" }}\n\n[[provider]]\nname = \"copier\"\nplugin = \"file\"\nsettings = {{ mode = \"copy\" }}\n\n[executor.local]\nworking_dir = \"wd-{declared}\"\nstaging = [\"picky\", \"copier\"]\n",
                toml_path(&plugins)
            ),
        )
    };
    let stage = |cfg: &std::path::Path, url: &str| {
        sandbox.run(&["--config", cfg.to_str().unwrap(), "stage", "in", url])
    };
    let declared = config(true);
    let out = stage(&declared, input.to_str().unwrap());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd-true/in.txt")).unwrap(),
        "payload"
    );
    let out = stage(&declared, "probe://h/x");
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("can_stage_in: panicked"),
        "{}",
        out.stderr
    );
    // A scheme nobody claims is told with the schemes promised (the probe's plugin
    // names only `file`; this instance promised `probe`).
    let out = stage(&declared, "zz://h/x");
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("serve: file, probe"), "{}", out.stderr);
    // `plugins list` shows each instance's promise.
    let list = |cfg: &std::path::Path, json: bool| {
        let mut args = vec!["--config", cfg.to_str().unwrap(), "plugins", "list"];
        if json {
            args.push("--json");
        }
        sandbox.run(&args)
    };
    let providers = list(&declared, true).json()["providers"].clone();
    let claims = |providers: &serde_json::Value, name: &str| {
        providers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no provider {name}: {providers}"))["claims_only"]
            .clone()
    };
    assert_eq!(claims(&providers, "picky"), serde_json::json!(["probe"]));
    assert_eq!(claims(&providers, "copier"), serde_json::json!(["file"]));
    let text = list(&declared, false).stdout;
    assert!(text.contains("ready, claims only probe"), "{text}");
    let undeclared = config(false);
    let providers = list(&undeclared, true).json()["providers"].clone();
    assert_eq!(claims(&providers, "picky"), serde_json::Value::Null);
    // A promise naming something that is not a scheme is no promise (the instance
    // would be unreachable), and says so; the text listing stays on its lines.
    let malformed = sandbox.write(
        "site-bad.toml",
        format!(
            "plugin_dirs = [{}]\n\n[[provider]]\nname = \"picky\"\nplugin = \"probe\"\nsettings = {{ schemes = [\"data:\", \"pro\\u001b[2Jbe\\u202e\"], declare_schemes = true }}\n",
            toml_path(&plugins)
        ),
    );
    let out = list(&malformed, true);
    assert_eq!(
        claims(&out.json()["providers"], "picky"),
        serde_json::Value::Null
    );
    assert!(
        out.stderr.contains("not all of them a scheme"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains('\u{1b}') && !out.stderr.contains('\u{202e}'),
        "{}",
        out.stderr
    );
    let out = stage(&undeclared, input.to_str().unwrap());
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("can_stage_in: panicked"),
        "{}",
        out.stderr
    );
}
