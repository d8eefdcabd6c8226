"""Parsl's HighThroughputExecutor with its LocalProvider: TASKS bash_apps running
`true`, each with one input File (NoOp staging), on one block with WORKERS workers.
Prints one line:

    <seconds until the first result> <seconds from the first result to the last>

Run by `cargo bench -p stagehost-tests --bench processes`.
"""

import os
import sys
import tempfile
import time

import parsl
from parsl.app.app import bash_app
from parsl.config import Config
from parsl.data_provider.files import File
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider


@bash_app
def true_app(inputs=()):
    return "true"


def main() -> None:
    tasks, workers, inputs_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    run_dir = tempfile.mkdtemp(prefix="parsl-htex-local-")
    venv_bin = os.path.dirname(sys.executable)
    # Parsl starts interchange.py and process_worker_pool.py from PATH.
    os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    executor = HighThroughputExecutor(
        label="htex",
        address="127.0.0.1",
        max_workers_per_node=workers,
        cores_per_worker=1,
        encrypted=False,
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
    )
    dfk = parsl.load(Config(executors=[executor], run_dir=run_dir, strategy="none"))
    try:
        files = [File(os.path.join(inputs_dir, f"in-{n}.txt")) for n in range(tasks)]
        start = time.perf_counter()
        futures = [true_app(inputs=[f]) for f in files]
        futures[0].result()
        first = time.perf_counter()
        for fut in futures:
            fut.result()
        end = time.perf_counter()
    finally:
        dfk.cleanup()
        parsl.clear()
    print(f"{first - start:.3f} {end - first:.3f}")


if __name__ == "__main__":
    main()
