"""Parsl's own staging tests, run through ``StagehostStaging`` on a ThreadPoolExecutor
and on a HighThroughputExecutor (each module-scoped DFK is loaded once per kind).

They follow parsl/tests/test_staging (test_staging_https, test_file_apps,
test_output_chain_filenames, test_staging_stdout, test_zip_out, test_zip_in) with
stagehost's providers in place of Parsl's.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
from parsl.app.app import bash_app, python_app
from parsl.app.futures import DataFuture
from parsl.data_provider.files import File
from parsl.dataflow.errors import DependencyError

from stagehost_parsl import StagingError


def _read_inputs(inputs: Any = ()) -> list[tuple[str, str]]:
    return [(f.filepath, open(f.filepath).read()) for f in inputs]


def _write_outputs(text: str, outputs: Any = ()) -> str:
    for f in outputs:
        os.makedirs(os.path.dirname(f.filepath) or ".", exist_ok=True)
        with open(f.filepath, "w") as out:
            out.write(text)
    return text


def _append(suffix: str, inputs: Any = (), outputs: Any = ()) -> None:
    text = open(inputs[0].filepath).read()
    with open(outputs[0].filepath, "w") as out:
        out.write(text + suffix)


def _echo_to_outputs(outputs: Any = ()) -> str:
    return "; ".join(f"echo {n} > {outputs[n]}" for n in range(len(outputs)))


def _output_to_stds(stdout: Any = None, stderr: Any = None) -> str:
    return "echo hello ; echo goodbye >&2"


LABELS = ["sep", "intask", "copying"]
read_inputs = {label: python_app(executors=[label])(_read_inputs) for label in LABELS}
write_outputs = {label: python_app(executors=[label])(_write_outputs) for label in LABELS}
append = {label: python_app(executors=[label])(_append) for label in LABELS}
echo_to_outputs = {label: bash_app(executors=[label])(_echo_to_outputs) for label in LABELS}
output_to_stds = {label: bash_app(executors=[label])(_output_to_stds) for label in LABELS}


def dependency_errors(e: BaseException) -> list[BaseException]:
    """The exceptions behind a Parsl DependencyError (or ``e`` itself)."""
    if isinstance(e, DependencyError):
        found: list[BaseException] = []
        for inner, _tid in e.dependent_exceptions_tids:
            found.extend(dependency_errors(inner))
        return found
    return [e]


@pytest.mark.parametrize("label", ["sep", "intask"])
def test_http_input_gets_a_local_path_the_task_sees(
    dfk: Any, nginx: Any, workdir: Path, label: str
) -> None:
    name = f"hello-{label}.txt"
    (nginx.root / name).write_text(f"hello over http, {label}\n")
    f = File(nginx.url(name))
    [(seen_path, text)] = read_inputs[label](inputs=[f]).result()
    assert text == f"hello over http, {label}\n"
    assert seen_path == str(workdir / name)
    # The caller's File keeps its URL and gets no local path: Parsl stages a copy.
    assert f.url == nginx.url(name)
    assert f.local_path is None


def test_a_separate_stage_in_is_a_task_whose_data_future_the_app_waits_for(
    dfk: Any, nginx: Any, workdir: Path
) -> None:
    (nginx.root / "future.txt").write_text("through a DataFuture\n")
    before = dfk.task_count
    fut = read_inputs["sep"](inputs=[File(nginx.url("future.txt"))])
    # Two tasks: the stage-in (on _parsl_internal) and the app, which depends on it.
    assert dfk.task_count == before + 2
    [(_, text)] = fut.result()
    assert text == "through a DataFuture\n"
    assert (workdir / "future.txt").read_text() == "through a DataFuture\n"


def test_an_output_only_task_and_an_input_only_task(dfk: Any, tmp_path: Path) -> None:
    out = File(str(tmp_path / "written.txt"))
    fut = write_outputs["sep"]("made by a task\n", outputs=[out])
    assert isinstance(fut.outputs[0], DataFuture)
    fut.outputs[0].result()
    assert (tmp_path / "written.txt").read_text() == "made by a task\n"
    [(seen, text)] = read_inputs["sep"](inputs=[File(str(tmp_path / "written.txt"))]).result()
    assert text == "made by a task\n"
    # file: URLs are used where they are, as Parsl's NoOpFileStaging does.
    assert seen == str(tmp_path / "written.txt")


def test_stdout_and_stderr_as_files_and_as_zip_members(dfk: Any, tmp_path: Path) -> None:
    plain = File("file://" + str(tmp_path / "stdout.txt"))
    fut = output_to_stds["sep"](stdout=plain)
    assert isinstance(fut.stdout, DataFuture)
    fut.stdout.result()
    assert (tmp_path / "stdout.txt").read_text() == "hello\n"

    archive = tmp_path / "staging.zip"
    out = File(f"zip:{archive}/somewhere/test-out.txt")
    err = File(f"zip:{archive}/somewhere/test-error.txt")
    fut = output_to_stds["sep"](stdout=out, stderr=err)
    fut.stdout.result()
    fut.stderr.result()
    with zipfile.ZipFile(archive) as z:
        assert z.read("somewhere/test-out.txt") == b"hello\n"
        assert z.read("somewhere/test-error.txt").splitlines()[-1] == b"goodbye"


def test_a_chain_of_four_apps_passing_data_futures(dfk: Any, tmp_path: Path) -> None:
    first = write_outputs["sep"]("0", outputs=[File(str(tmp_path / "chain-0.txt"))])
    previous = first.outputs[0]
    for n in range(1, 4):
        nxt = append["sep"](
            str(n), inputs=[previous], outputs=[File(str(tmp_path / f"chain-{n}.txt"))]
        )
        previous = nxt.outputs[0]
    previous.result()
    assert (tmp_path / "chain-3.txt").read_text() == "0123"


def test_zip_outputs_into_two_archives(dfk: Any, tmp_path: Path) -> None:
    one, two = tmp_path / "container1.zip", tmp_path / "container2.zip"
    outputs = [
        File(f"zip:{one}/a/b/c/data.txt"),
        File(f"zip:{one}/something.txt"),
        File(f"zip:{two}/a/d/other.txt"),
    ]
    fut = echo_to_outputs["sep"](outputs=outputs)
    for f in fut.outputs:
        f.result()
    fut.result()
    with zipfile.ZipFile(one) as z:
        assert sorted(z.namelist()) == ["a/b/c/data.txt", "something.txt"]
        assert z.read("a/b/c/data.txt") == b"0\n"
        assert z.read("something.txt") == b"1\n"
    with zipfile.ZipFile(two) as z:
        assert z.namelist() == ["a/d/other.txt"]
        assert z.read("a/d/other.txt") == b"2\n"


def test_a_zip_input(dfk: Any, tmp_path: Path, workdir: Path) -> None:
    archive = tmp_path / "input.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("inside/here.txt", "from the archive\n")
    [(seen, text)] = read_inputs["sep"](inputs=[File(f"zip:{archive}/inside/here.txt")]).result()
    assert text == "from the archive\n"
    # Where the host puts every staged file: <working_dir>/here.txt (Parsl would use
    # <working_dir>/inside/here.txt, where two archives' members of one name share a
    # file). The working_dir is the Parsl executor's when it has one (see
    # test_parsl_drop_in.py), else stagehost's.
    assert Path(seen).name == "here.txt"
    assert Path(seen).parent.name != "inside"


def test_a_separate_stage_in_error_names_the_file(dfk: Any, nginx: Any) -> None:
    url = nginx.url("absent-separate.txt")
    with pytest.raises(DependencyError) as raised:
        read_inputs["sep"](inputs=[File(url)]).result()
    [error] = [e for e in dependency_errors(raised.value) if isinstance(e, StagingError)]
    assert error.kind == "not found"
    assert url in error.message
    assert 'provider "http"' in error.message and 'executor "local"' in error.message


def test_an_in_task_stage_in_error_names_the_file(dfk: Any, nginx: Any) -> None:
    url = nginx.url("absent-in-task.txt")
    with pytest.raises(StagingError) as raised:
        read_inputs["intask"](inputs=[File(url)]).result()
    # Raised in the worker on HTEX, it crossed back by pickle with its kind.
    assert raised.value.kind == "not found"
    assert url in raised.value.message
    assert 'provider "http-in-task"' in raised.value.message


def test_copy_mode_stages_file_inputs_in_the_task(dfk: Any, tmp_path: Path, workdir: Path) -> None:
    # A name of its own: in one process, a second URL with the same file name would
    # land under .stagehost/<hash>/ instead (stagehost never lets two URLs share a
    # destination).
    source = tmp_path / f"original-{tmp_path.name}.txt"
    source.write_text("copied in\n")
    [(seen, text)] = read_inputs["copying"](inputs=[File(str(source))]).result()
    assert text == "copied in\n"
    assert seen == str(workdir / "copies" / source.name)


def test_an_in_task_stage_out_copies_the_output_back_after_the_app(
    dfk: Any, tmp_path: Path, workdir: Path
) -> None:
    # The copy-mode file provider points the task at the working directory and, as an
    # in-task step after the app (in the worker, on HTEX), copies the file out.
    target = tmp_path / f"result-{tmp_path.name}.txt"
    fut = write_outputs["copying"]("written in the working directory\n", outputs=[File(str(target))])
    fut.outputs[0].result()
    assert target.read_text() == "written in the working directory\n"
    assert (workdir / "copies" / target.name).read_text() == "written in the working directory\n"


def test_a_password_in_a_url_never_reaches_the_error(dfk: Any, nginx: Any) -> None:
    url = nginx.url("absent-secret.txt").replace("http://", "http://user:hunter2-secret@")
    with pytest.raises(StagingError) as raised:
        read_inputs["intask"](inputs=[File(url)]).result()
    assert "hunter2-secret" not in raised.value.message
    assert "absent-secret.txt" in raised.value.message


def test_a_mirrored_file_comes_from_the_first_source_that_serves_it_right(
    dfk: Any, nginx: Any, workdir: Path
) -> None:
    import hashlib

    from stagehost_parsl import MirroredFile, mirrored

    (nginx.root / "mirror-bad.txt").write_text("wrong bytes\n")
    (nginx.root / "mirror-good.txt").write_text("right bytes\n")
    digest = hashlib.sha256(b"right bytes\n").hexdigest()
    # Missing (404), the wrong bytes (a checksum mismatch), then the right ones.
    f = mirrored(
        nginx.url("mirror-none.txt"),
        nginx.url("mirror-bad.txt"),
        nginx.url("mirror-good.txt"),
        sha256=digest,
    )
    assert isinstance(f.cleancopy(), MirroredFile) and f.cleancopy().urls == f.urls
    [(seen_path, text)] = read_inputs["sep"](inputs=[f]).result()
    assert text == "right bytes\n"
    # The copy takes the first source's name; nothing else is left.
    assert seen_path == str(workdir / "mirror-none.txt")
    assert not (workdir / "mirror-bad.txt").exists()
    # No source serves the right bytes: the app never runs, and the error names each
    # source in one line.
    f = mirrored(nginx.url("mirror-gone.txt"), nginx.url("mirror-bad.txt"), sha256=digest)
    with pytest.raises(BaseException) as info:
        read_inputs["sep"](inputs=[f]).result()
    errors = [e for e in dependency_errors(info.value) if isinstance(e, StagingError)]
    assert errors, info.value
    line = str(errors[0])
    assert "none of its 2 source(s) could be staged" in line and "mirror-bad.txt" in line
    assert "\n" not in line
    assert not (workdir / "mirror-gone.txt").exists()
    with pytest.raises(StagingError, match="64 hexadecimal digits"):
        mirrored(nginx.url("x"), sha256="123")
