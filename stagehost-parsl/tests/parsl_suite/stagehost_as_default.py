"""A pytest plugin that puts StagehostStaging where Parsl's own staging providers are.

Loaded with ``-p stagehost_as_default`` while Parsl's own ``parsl/tests/test_staging``
files run (see ``run`` beside this file), it replaces
``parsl.data_provider.data_manager.default_staging`` (the list every executor without
``storage_access`` uses) with one ``StagehostStaging`` on the embedded default config.
A test that passes with Parsl's providers must pass with stagehost's.

Parsl's https tests read one file from the internet. This plugin serves the same
bytes (the numbers 1 to 100, shuffled) from a stock ``python -m http.server`` on
loopback and points the tests' module-level URL there, so no test leaves the machine.

At the end of the session the plugin fails the run if stagehost was never asked to
stage anything: a run that silently fell back to Parsl's own providers proves nothing.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any, Optional

import pytest

logger = logging.getLogger(__name__)

_calls = {"stage_in": 0, "stage_out": 0}
_server: Optional[subprocess.Popen[str]] = None
_served_url: Optional[str] = None
_served_root: Optional[str] = None


def _start_http_server() -> str:
    """``python -m http.server`` on 127.0.0.1, serving ``unsorted.txt``; its URL."""
    global _server, _served_root
    root = _served_root = tempfile.mkdtemp(prefix="stagehost-parsl-suite-")
    lines = [f"{i}\n" for i in range(1, 101)]
    random.Random(1316).shuffle(lines)
    with open(os.path.join(root, "unsorted.txt"), "w") as f:
        f.writelines(lines)
    _server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", root],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert _server.stdout is not None
    first = _server.stdout.readline()
    port = re.search(r"port (\d+)", first)
    if port is None:
        raise RuntimeError(f"python -m http.server did not say its port: {first!r}")
    return f"http://127.0.0.1:{port.group(1)}/unsorted.txt"


def pytest_configure(config: pytest.Config) -> None:
    global _served_url
    from parsl.data_provider import data_manager

    from stagehost_parsl import StagehostStaging

    staging = StagehostStaging()
    for name in _calls:
        original = getattr(staging, name)

        def counted(*args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            _calls[_name] += 1
            return _original(*args, **kw)

        setattr(staging, name, counted)
    data_manager.default_staging[:] = [staging]
    _served_url = _start_http_server()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        os.kill(_server.pid, signal.SIGTERM)
        _server.wait()
    if _served_root is not None:
        shutil.rmtree(_served_root, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "_unsorted_url"):
            module._unsorted_url = _served_url


def pytest_report_header(config: pytest.Config) -> str:
    from parsl.data_provider import data_manager

    return f"staging: {data_manager.default_staging!r}; Parsl's https tests read {_served_url}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.testscollected and sum(_calls.values()) == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nstagehost_as_default: StagehostStaging was never asked to stage a file")
    else:
        print(f"\nstagehost_as_default: StagehostStaging {_calls}")
