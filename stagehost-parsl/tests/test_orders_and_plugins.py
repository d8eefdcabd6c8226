"""``StagehostStaging`` beside Parsl's own providers, where the order decides; and a
third party's plugin, dropped into a directory, staging files in a Parsl workflow."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from parsl.app.app import python_app
from parsl.data_provider.file_noop import NoOpFileStaging
from parsl.data_provider.files import File

from conftest import ROOT, MakeExecutor, loaded, stagehost_config
from stagehost_parsl import StagehostStaging


def _read_inputs(inputs: Any = ()) -> list[tuple[str, str]]:
    return [(f.filepath, open(f.filepath).read()) for f in inputs]


LABELS = ["stagehost_first", "noop_first", "site"]
read_inputs = {label: python_app(executors=[label])(_read_inputs) for label in LABELS}


def data_provider_plugin() -> Path:
    """The example third-party plugin (`data:` URLs), built on its own as a third
    party builds it."""
    target = ROOT / "target" / "example-data-provider"
    subprocess.run(
        [
            "cargo",
            "build",
            "--quiet",
            "--manifest-path",
            str(ROOT / "examples" / "data-provider" / "Cargo.toml"),
            "--target-dir",
            str(target),
        ],
        check=True,
    )
    return target / "debug" / "libstagehost_data.so"


@pytest.fixture(scope="module")
def site_dfk(
    executor_kind: MakeExecutor,
    workdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    # A site's plugin directory with the third party's library dropped in, and a
    # config that only names the directory: no provider entry, no code change.
    site_plugins = tmp_path_factory.mktemp("site-plugins")
    shutil.copy(data_provider_plugin(), site_plugins / "libstagehost_data.so")
    site_config = f'plugin_dirs = ["{site_plugins}"]\n\n[executor.site]\nworking_dir = "{workdir}/site"\n'
    config = stagehost_config(workdir)
    executors = [
        executor_kind(
            "stagehost_first",
            [StagehostStaging(config, executor="copying"), NoOpFileStaging()],
        ),
        executor_kind(
            "noop_first",
            [NoOpFileStaging(), StagehostStaging(config, executor="copying")],
        ),
        executor_kind("site", [StagehostStaging(site_config, executor="site")]),
    ]
    yield from loaded(executors, tmp_path_factory)


def test_the_order_of_storage_access_decides(
    site_dfk: Any, tmp_path: Path, workdir: Path
) -> None:
    source = tmp_path / f"ordered-{tmp_path.name}.txt"
    source.write_text("which provider?\n")
    # StagehostStaging first: its copy-mode file provider claims the file.
    [(seen, text)] = read_inputs["stagehost_first"](inputs=[File(str(source))]).result()
    assert (seen, text) == (str(workdir / "copies" / source.name), "which provider?\n")
    # NoOpFileStaging first: the file is used where it is.
    [(seen, text)] = read_inputs["noop_first"](inputs=[File(str(source))]).result()
    assert (seen, text) == (str(source), "which provider?\n")


def test_a_url_the_first_provider_refuses_falls_through_to_stagehost(
    site_dfk: Any, nginx: Any, workdir: Path
) -> None:
    (nginx.root / "fallthrough.txt").write_text("NoOp does not claim http\n")
    [(seen, text)] = read_inputs["noop_first"](
        inputs=[File(nginx.url("fallthrough.txt"))]
    ).result()
    assert text == "NoOp does not claim http\n"
    assert seen == str(workdir / "copies" / "fallthrough.txt")


def test_a_dropped_in_third_party_plugin_stages_in_a_parsl_workflow(
    site_dfk: Any, workdir: Path
) -> None:
    url = "data:,hello%20from%20a%20plugin"
    [(seen, text)] = read_inputs["site"](inputs=[File(url)]).result()
    assert text == "hello from a plugin"
    # Where the host puts it: <working_dir>/<filename>, as for every provider.
    assert Path(seen) == workdir / "site" / File(url).filename
