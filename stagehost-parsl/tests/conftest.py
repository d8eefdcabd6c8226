"""Fixtures: nginx on loopback, a stagehost config, and Parsl loaded with
``StagehostStaging`` on a ThreadPoolExecutor and on a HighThroughputExecutor.

Servers start once per test session and are stopped by their pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import parsl
import pytest
from parsl.config import Config
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
from parsl.launchers import SimpleLauncher
from parsl.providers import LocalProvider

from stagehost_parsl import StagehostStaging

ROOT = Path(__file__).resolve().parents[2]

# Parsl's HTEX workers are started by a shell: they find process_worker_pool.py and
# this Python (with stagehost_parsl) on PATH, and the tests' modules on PYTHONPATH.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")] if p
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


class Nginx:
    """nginx serving ``root`` on a free loopback port, with WebDAV PUT under /dav/."""

    def __init__(self, root: Path) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise RuntimeError("nginx is missing: scripts/install-test-deps installs it")
        self.root = root
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="stagehost-nginx-"))
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"]:
            (self.dir / sub).mkdir()
        (root / "dav").mkdir(parents=True, exist_ok=True)
        d = self.dir
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = (
            f"{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\n"
            f"error_log {d}/logs/error.log;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n"
            f"  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n"
            f"  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
            f"  server {{\n    listen 127.0.0.1:{self.port};\n    root {root};\n"
            f"    location /dav/ {{ dav_methods PUT DELETE; create_full_put_path on; client_max_body_size 0; }}\n"
            f"  }}\n}}\n"
        )
        (d / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(
            [nginx, "-p", str(d), "-c", str(d / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, "nginx")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    server = Nginx(tmp_path_factory.mktemp("www"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stagehost executors' working directory."""
    return tmp_path_factory.mktemp("work")


def stagehost_config(workdir: Path, extra: str = "") -> str:
    """The stagehost config the tests use, as TOML text: Parsl's default providers
    (file no-op, ftp, http, zip), http also as an in-task step, and a file provider
    that copies inputs into the working directory."""
    return f"""
[[provider]]
name = "file"
plugin = "file"

[[provider]]
name = "http"
plugin = "http"

[[provider]]
name = "http-in-task"
plugin = "http"
settings = {{ mode = "in-task" }}

[[provider]]
name = "zip"
plugin = "zip"

[[provider]]
name = "copy"
plugin = "file"
settings = {{ mode = "copy" }}

[executor.local]
working_dir = "{workdir}"
staging = ["file", "http", "zip"]

[executor.intask]
working_dir = "{workdir}"
staging = ["file", "http-in-task", "zip"]

[executor.copying]
working_dir = "{workdir}/copies"
staging = ["copy", "http", "zip"]
{extra}
"""


def threads(label: str, storage: list) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(label=label, max_threads=4, storage_access=storage)


def htex(label: str, storage: list) -> HighThroughputExecutor:
    return HighThroughputExecutor(
        label=label,
        cores_per_worker=1,
        max_workers_per_node=2,
        encrypted=False,
        provider=LocalProvider(init_blocks=1, max_blocks=1, launcher=SimpleLauncher()),
        storage_access=storage,
    )


MakeExecutor = Callable[[str, list], object]


@pytest.fixture(scope="module", params=["threads", "htex"])
def executor_kind(request: pytest.FixtureRequest) -> MakeExecutor:
    return {"threads": threads, "htex": htex}[request.param]


@pytest.fixture(scope="module")
def dfk(
    executor_kind: MakeExecutor,
    workdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[object]:
    """Parsl loaded with three executors staging through StagehostStaging: ``sep``
    (separate jobs), ``intask`` (http as an in-task step) and ``copying`` (file inputs
    copied into the working directory)."""
    config = stagehost_config(workdir)
    executors = [
        executor_kind("sep", [StagehostStaging(config, executor="local")]),
        executor_kind("intask", [StagehostStaging(config, executor="intask")]),
        executor_kind("copying", [StagehostStaging(config, executor="copying")]),
    ]
    yield from loaded(executors, tmp_path_factory)


def loaded(executors: list, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Parsl loaded with ``executors`` (blocks started at once) until the caller is
    done; then cleaned up."""
    run_dir = tmp_path_factory.mktemp("runinfo")
    dfk = parsl.load(Config(executors=executors, run_dir=str(run_dir), strategy="none"))
    try:
        yield dfk
    finally:
        dfk.cleanup()
        parsl.clear()
