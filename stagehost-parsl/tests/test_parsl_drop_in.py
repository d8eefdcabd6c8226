"""StagehostStaging as a drop-in for Parsl's own providers: the Parsl executor's
``working_dir``, Parsl's exception classes, and log lines in Python's ``logging``."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from parsl.app.app import python_app
from parsl.data_provider.files import File
from parsl.data_provider.zip import ZipAuthorityError as ParslZipAuthorityError
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
from parsl.launchers import SimpleLauncher
from parsl.providers import LocalProvider

from conftest import loaded, stagehost_config
from stagehost_parsl import StagehostStaging, StagingError
from stagehost_parsl._host import host_for, resolve_config


def _read(inputs: Any = ()) -> list[tuple[str, str]]:
    return [(f.filepath, open(f.filepath).read()) for f in inputs]


def _write(outputs: Any = ()) -> None:
    for f in outputs:
        with open(f.filepath, "w") as out:
            out.write("x\n")


read = python_app(executors=["wd"])(_read)
write = python_app(executors=["wd"])(_write)


@pytest.fixture(scope="module", params=["threads", "htex"])
def wd_dfk(
    request: pytest.FixtureRequest,
    workdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """Parsl with one executor, ``wd``, whose own ``working_dir`` is set."""
    parsl_wd = tmp_path_factory.mktemp("parsl-working-dir")
    storage = [StagehostStaging(stagehost_config(workdir), executor="local")]
    if request.param == "threads":
        executor: object = ThreadPoolExecutor(
            label="wd", max_threads=2, working_dir=str(parsl_wd), storage_access=storage
        )
    else:
        executor = HighThroughputExecutor(
            label="wd",
            cores_per_worker=1,
            max_workers_per_node=1,
            encrypted=False,
            working_dir=str(parsl_wd),
            provider=LocalProvider(init_blocks=1, max_blocks=1, launcher=SimpleLauncher()),
            storage_access=storage,
        )
    for _ in loaded([executor], tmp_path_factory):
        yield parsl_wd


def test_an_input_lands_in_the_parsl_executors_working_dir(wd_dfk: Path, nginx: Any) -> None:
    (nginx.root / "for-the-working-dir.txt").write_text("where Parsl puts it\n")
    [(seen, text)] = read(inputs=[File(nginx.url("for-the-working-dir.txt"))]).result()
    assert text == "where Parsl puts it\n"
    assert Path(seen) == wd_dfk / "for-the-working-dir.txt"


def test_a_zip_url_with_an_authority_raises_parsls_own_class(
    wd_dfk: Path, tmp_path: Path
) -> None:
    # As parsl/tests/test_staging/test_zip_out.py::test_zip_bad_authority expects.
    url = f"zip://someauthority/{tmp_path}/container.zip/data.txt"
    with pytest.raises(ParslZipAuthorityError) as raised:
        write(outputs=[File(url)])
    assert isinstance(raised.value, StagingError)
    assert "someauthority" in str(raised.value)


def test_log_lines_go_to_the_stagehost_logger(
    nginx: Any, workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (nginx.root / "logged.txt").write_text("logged\n")
    host = host_for(resolve_config(stagehost_config(workdir)))
    caplog.set_level(logging.INFO, logger="stagehost")
    for _ in range(2):
        plan = host.plan("in", "local", nginx.url("logged.txt"))
        plan.run_separate_job()
    # The second fetch revalidates, and the http plugin says so through the host.
    lines = [r.getMessage() for r in caplog.records if r.name == "stagehost"]
    assert any("not modified" in line for line in lines), lines


def test_the_config_option_may_follow_the_command(tmp_path: Path) -> None:
    cfg = tmp_path / "stagehost.toml"
    cfg.write_text(stagehost_config(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "stagehost_parsl", "plugins", "--config", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "copying" in out.stdout
