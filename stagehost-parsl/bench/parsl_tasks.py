"""Parsl tasks per second with Parsl's own staging providers and with
``StagehostStaging``, side by side in one run, on a ThreadPoolExecutor (2 threads):

- 1 NoOp file input (``NoOpFileStaging`` / stagehost's ``file`` no-op);
- 1 http input over loopback, from nginx (``HTTPSeparateTaskStaging`` / ``http``);
- 1 zip output into one archive (``ZipFileStaging`` / ``zip``).

Each task has its own file (its own URL, its own member), so no provider gains by
deduplication. Run with the test virtualenv, after ``scripts/test`` (or
``scripts/build-wheel`` and a ``pip install`` of the wheel):

    target/test-venv/bin/python stagehost-parsl/bench/parsl_tasks.py [TASKS]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import parsl
from parsl.app.app import python_app
from parsl.config import Config
from parsl.data_provider.file_noop import NoOpFileStaging
from parsl.data_provider.files import File
from parsl.data_provider.http import HTTPSeparateTaskStaging
from parsl.data_provider.zip import ZipFileStaging
from parsl.executors import ThreadPoolExecutor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import Nginx  # noqa: E402

from stagehost_parsl import StagehostStaging  # noqa: E402


@python_app
def read_input(inputs: Any = ()) -> int:
    with open(inputs[0].filepath, "rb") as f:
        return len(f.read())


@python_app
def write_output(n: int, outputs: Any = ()) -> int:
    with open(outputs[0].filepath, "w") as f:
        f.write(f"task {n}\n")
    return n


def measure(storage: list, work: Path, submit: Callable[[int], Any], tasks: int) -> float:
    """Tasks per second: submit ``tasks`` tasks, wait for every app and output."""
    executor = ThreadPoolExecutor(
        label="bench", max_threads=2, working_dir=str(work), storage_access=storage
    )
    dfk = parsl.load(Config(executors=[executor], run_dir=str(work / "runinfo"), strategy="none"))
    try:
        # One task first, so both sides pay their start-up (stagehost loads its
        # plugins once per process) outside the timing.
        warm = submit(-1)
        warm.result()
        for f in getattr(warm, "outputs", []):
            f.result()
        started = time.perf_counter()
        futures = [submit(n) for n in range(tasks)]
        for fut in futures:
            fut.result()
            for f in fut.outputs:
                f.result()
        elapsed = time.perf_counter() - started
    finally:
        dfk.cleanup()
        parsl.clear()
    return tasks / elapsed


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    base = Path(tempfile.mkdtemp(prefix="stagehost-parsl-bench-"))
    www = fresh(base / "www")
    inputs = fresh(base / "inputs")
    for n in range(-1, tasks):
        (www / f"in-{n}.txt").write_bytes(b"x" * 1024)
        (inputs / f"in-{n}.txt").write_bytes(b"x" * 1024)
    nginx = Nginx(www)
    results = []
    try:
        for case in ["noop", "http", "zip"]:
            row = []
            for side in ["parsl", "stagehost"]:
                work = fresh(base / f"work-{case}-{side}")
                config = f'[[provider]]\nname = "file"\nplugin = "file"\n[[provider]]\nname = "http"\nplugin = "http"\n[[provider]]\nname = "zip"\nplugin = "zip"\n[executor.local]\nworking_dir = "{work}"\n'
                native: dict[str, list] = {
                    "noop": [NoOpFileStaging()],
                    "http": [HTTPSeparateTaskStaging()],
                    "zip": [ZipFileStaging()],
                }
                storage = native[case] if side == "parsl" else [StagehostStaging(config)]
                archive = base / f"out-{case}-{side}.zip"

                def submit(n: int, case: str = case, archive: Path = archive) -> Any:
                    if case == "noop":
                        return read_input(inputs=[File(str(inputs / f"in-{n}.txt"))])
                    if case == "http":
                        return read_input(inputs=[File(nginx.url(f"in-{n}.txt"))])
                    return write_output(n, outputs=[File(f"zip:{archive}/out-{n}.txt")])

                rate = measure(storage, work, submit, tasks)
                if case == "zip":
                    with zipfile.ZipFile(archive) as z:
                        assert len(z.namelist()) == tasks + 1, f"{side}: {len(z.namelist())} members"
                row.append(rate)
            results.append((case, *row))
    finally:
        nginx.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"Parsl {parsl.__version__}, ThreadPoolExecutor (2 threads), {tasks} tasks, {os.cpu_count()} cores:")
    names = {
        "noop": "1 NoOp file input",
        "http": "1 http input (nginx)",
        "zip": "1 zip output",
    }
    for case, theirs, ours in results:
        print(
            f"  {names[case]:<22} Parsl's provider {theirs:8.1f} tasks/s | StagehostStaging {ours:8.1f} tasks/s = {ours / theirs:.2f}x"
        )


if __name__ == "__main__":
    main()
