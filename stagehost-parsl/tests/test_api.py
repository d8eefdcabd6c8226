"""The package's own surface: configs, errors, pickling and the plugins listing."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Nginx, stagehost_config
from stagehost_parsl import PLUGIN_DIR, InTaskStaging, StagehostStaging, StagingError


def test_the_version_is_the_installed_distributions() -> None:
    import importlib.metadata

    import stagehost_parsl

    assert re.fullmatch(r"\d+\.\d+\.\d+", stagehost_parsl.__version__)
    assert stagehost_parsl.__version__ == importlib.metadata.version("stagehost-parsl")


def test_a_repr_never_shows_inline_config_text() -> None:
    from parsl.config import Config
    from parsl.executors.threads import ThreadPoolExecutor

    secret = "CFGPASSW0RD-in-repr"
    staging = StagehostStaging(
        config=f'[[provider]]\nname = "web"\nplugin = "http"\nsettings = {{ password = "{secret}" }}\n'
    )
    # Parsl logs its Config's repr when it loads one.
    config = Config(executors=[ThreadPoolExecutor(label="t", storage_access=[staging])])
    for shown in (repr(staging), repr(config)):
        assert secret not in shown
    assert repr(staging).startswith("StagehostStaging(config=<TOML text, ")


def test_the_interpreters_directories_are_never_searched_for_plugins() -> None:
    # The executable is python: its bin/ (/usr/bin holds ld.so) and ../lib are not
    # stagehost's; the package's bundled plugins/ is.
    listing = subprocess.run(
        [sys.executable, "-m", "stagehost_parsl", "plugins"],
        capture_output=True, text=True, check=True,
    )
    assert "<exe dir>" not in listing.stdout, listing.stdout
    assert "bundled" in listing.stdout, listing.stdout
    assert "not a stagehost plugin" not in listing.stderr, listing.stderr


def test_the_plugins_listing_is_the_clis(tmp_path: Path) -> None:
    cfg = tmp_path / "stagehost.toml"
    cfg.write_text(stagehost_config(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "STAGEHOST_PLUGIN_PATH"}
    ours = subprocess.run(
        [sys.executable, "-m", "stagehost_parsl", "--config", str(cfg), "plugins"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout
    cli = subprocess.run(
        [str(ROOT / "target" / "release" / "stagehost"), "--config", str(cfg), "plugins", "list"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout
    # The same providers and executor orders, in the same words; the plugins come
    # from the package's own directory, searched first.
    assert ours.split("\nProviders:")[1] == cli.split("\nProviders:")[1]
    assert ours.splitlines()[1] == f"  {PLUGIN_DIR} (bundled)"
    for name in ["file", "http", "ftp", "zip", "rsync", "object-store"]:
        assert re.search(rf"^  {re.escape(name)} \d+\.\d+\.\d+ \(plugin-api ", ours, re.M), ours


def test_a_bad_config_is_one_line_naming_the_place() -> None:
    with pytest.raises(StagingError) as raised:
        StagehostStaging('[[provider]]\nname = "x"\nplugin = "file"\nbogus = 1\n')
    assert raised.value.kind == "config"
    assert "<StagehostStaging config>:4" in raised.value.message
    assert "\n" not in raised.value.message


def test_an_unknown_executor_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(StagingError) as raised:
        StagehostStaging(stagehost_config(tmp_path), executor="nowhere")
    assert "unknown stagehost executor 'nowhere'" in raised.value.message
    assert "copying, intask, local" in raised.value.message


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StagingError) as raised:
        StagehostStaging(tmp_path / "absent.toml")
    assert "absent.toml" in raised.value.message


def test_what_crosses_to_workers_pickles(tmp_path: Path) -> None:
    staging = StagehostStaging(stagehost_config(tmp_path))
    again = pickle.loads(pickle.dumps(staging))
    assert (again.executor, again._spec) == (staging.executor, staging._spec)
    wrapper = InTaskStaging(len, staging._spec, "local", "in", "http://h/x", "/w/x")
    back = pickle.loads(pickle.dumps(wrapper))
    assert (back.func, back.spec, back.direction, back.url, back.local_path) == (
        len,
        staging._spec,
        "in",
        "http://h/x",
        "/w/x",
    )
    error = pickle.loads(pickle.dumps(StagingError("cannot stage in x", "not found")))
    assert (error.message, error.kind) == ("cannot stage in x", "not found")


def test_secrets_never_reach_an_error_a_plan_or_a_repr(tmp_path: Path) -> None:
    from stagehost_parsl._host import host_for

    staging = StagehostStaging(stagehost_config(tmp_path))
    secrets = ["pw-in-url", "pa/ss", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "jwt-value"]
    # A URL stagehost cannot parse: the error shows it redacted.
    with pytest.raises(StagingError) as raised:
        host_for(staging._spec).plan("in", "local", "http://me:pw-in-url@h/x\n")
    for s in secrets:
        assert s not in raised.value.message
    # A plan, and what a wrapped app shows.
    url = "http://ghp_16C7e42F292c6912E7710c838347Ae178B4a@127.0.0.1:9/x.txt?jwt=jwt-value"
    plan = host_for(staging._spec).plan("in", "local", url)
    wrapped = InTaskStaging(len, staging._spec, "local", "in", url, None)
    for shown in [repr(plan), plan.url, repr(wrapped), str(wrapped)]:
        for s in secrets:
            assert s not in shown, shown
        assert "127.0.0.1:9/x.txt" in shown


def test_staging_follows_the_configs_transfer_policy(tmp_path: Path) -> None:
    """Work runs through the same runner as `stagehost run`: a transient failure is
    retried under the config's `[transfers]`, as it is by the CLI."""
    import http.server
    import threading

    from stagehost_parsl._host import host_for

    hits: list[str] = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        # A fault-injecting server of the test's own: the first GET of each path is
        # answered 503, the next one with the file.
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            hits.append(self.path)
            if hits.count(self.path) == 1:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"served on the second try\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = stagehost_config(
            tmp_path, "[transfers]\nretries = 2\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n"
        )
        staging = StagehostStaging(config, executor="local")
        url = f"http://127.0.0.1:{server.server_address[1]}/flaky.txt"
        plan = host_for(staging._spec).plan("in", "local", url)
        assert plan.has_separate_job
        plan.run_separate_job()
        assert (tmp_path / "flaky.txt").read_text() == "served on the second try\n"
        assert hits == ["/flaky.txt", "/flaky.txt"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_file_a_worker_stages_in_task_is_stagehosts_own_for_the_next_run(
    tmp_path: Path, nginx: Nginx
) -> None:
    """A worker re-plans an in-task step at the destination the main process chose;
    what it puts there is marked as stagehost's, so the next run may replace it."""
    from stagehost_parsl._host import host_for

    (nginx.root / "in-task-rerun.txt").write_text("v1\n")
    url = nginx.url("in-task-rerun.txt")
    for run, extra in enumerate(["", "\n# the next run\n"]):
        # A fresh host per run, as a new process would have.
        host = host_for(StagehostStaging(stagehost_config(tmp_path, extra), executor="intask")._spec)
        main = host.plan("in", "intask", url)
        assert main.placed and main.has_in_task_step, run
        worker = host.plan("in", "intask", url, main.local_path, placed=main.placed)
        worker.run_in_task_step()
        assert Path(main.local_path or "").read_text() == "v1\n"
