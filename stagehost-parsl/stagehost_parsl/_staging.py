"""``StagehostStaging``: Parsl's ``Staging`` interface over stagehost's data manager."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from parsl.app.app import python_app
from parsl.app.futures import DataFuture
from parsl.data_provider.files import File
from parsl.data_provider.staging import Staging

from . import _native
from ._errors import StagingError, as_parsl_error
from ._host import ConfigArg, ConfigSpec, host_for, resolve_config

if TYPE_CHECKING:
    from parsl.data_provider.data_manager import DataManager
    from parsl.dataflow.dflow import DataFlowKernel

logger = logging.getLogger("stagehost_parsl")


class MirroredFile(File):
    """A Parsl ``File`` with several sources of the same bytes, tried in order until
    one stages whole and right (a server error, a cut body, a missing file or a checksum
    mismatch moves to the next). Made by :func:`mirrored`. Its ``url`` is the first
    source, whose name the staged copy takes; ``urls`` lists them all."""

    def __init__(self, urls: Sequence[str], sha256: Optional[str] = None) -> None:
        self.urls: list[str] = _native.mirror_sources([str(u) for u in urls], sha256)
        if not self.urls:
            raise StagingError("a file with mirrors needs at least one source", "invalid URL")
        super().__init__(self.urls[0])

    def cleancopy(self) -> "MirroredFile":
        # Parsl stages a clean copy of each File: the sources go with it.
        return MirroredFile(self.urls)

    def __repr__(self) -> str:
        shown = ", ".join(repr(_native.redact_url(u)) for u in self.urls)
        return f"MirroredFile([{shown}])"


def mirrored(*urls: str, sha256: Optional[str] = None) -> MirroredFile:
    """A ``File`` whose sources are ``urls``, tried in order by ``StagehostStaging``;
    ``sha256`` (64 hex digits) is checked on whichever serves it::

        inputs=[mirrored("https://a.example/x.tar", "ftp://b.example/x.tar", sha256=sum)]
    """
    return MirroredFile(urls, sha256)


# Parsl calls stage_in (or stage_out) and then replace_task (or
# replace_task_stage_out) with the same fresh copy of a File; the plan made by the
# first is kept here, by the copy's identity, until the second takes it.
_planned: dict[int, _native.Plan] = {}
_planned_lock = threading.Lock()


def _keep(file: File, plan: _native.Plan) -> None:
    with _planned_lock:
        _planned[id(file)] = plan


def _take(file: File) -> Optional[_native.Plan]:
    with _planned_lock:
        return _planned.pop(id(file), None)


class StagehostStaging(Staging):
    """Stages Parsl ``File``\\ s with stagehost's providers.

    ``config`` is a stagehost config: a path, TOML text, or ``None`` for stagehost's
    own search order and embedded default. ``executor`` is the label of the stagehost
    executor whose provider order is used (``[executor.<label>]`` in the config).

    For each file Parsl asks about, stagehost's data manager asks the executor's
    providers in order, as Parsl asks its own. A provider's separate job runs as a
    Parsl task on the ``_parsl_internal`` executor; its in-task steps run inside the
    app's task, wherever Parsl runs it (re-planned there from the config, the
    executor label and the URL). The object holds only picklable state.
    """

    def __init__(self, config: ConfigArg = None, executor: str = "local") -> None:
        self.config = config
        self.executor = executor
        self._spec: ConfigSpec = resolve_config(config)
        known = host_for(self._spec).executors()
        if executor not in known:
            raise StagingError(
                f"unknown stagehost executor {executor!r} (configured: {', '.join(known)})",
                "config",
            )

    def __repr__(self) -> str:
        # Parsl logs its Config's repr: TOML text given inline may hold credentials,
        # so it is named, never shown.
        kind = self._spec[0]
        if kind == "text":
            shown = f"<TOML text, {len(self._spec[1])} characters>"
        elif kind == "path":
            shown = repr(self._spec[1])
        else:
            shown = "None"
        return f"StagehostStaging(config={shown}, executor={self.executor!r})"

    # Parsl's questions.

    def can_stage_in(self, file: File) -> bool:
        urls = file.urls if isinstance(file, MirroredFile) else [file.url]
        try:
            host = host_for(self._spec)
            return any(host.choose("in", self.executor, url) is not None for url in urls)
        except StagingError as e:
            raise as_parsl_error(e, file) from None

    def can_stage_out(self, file: File) -> bool:
        try:
            return host_for(self._spec).choose("out", self.executor, file.url) is not None
        except StagingError as e:
            raise as_parsl_error(e, file) from None

    # Stage-in.

    def stage_in(
        self, dm: "DataManager", executor: str, file: File, parent_fut: Optional[Future]
    ) -> Optional[DataFuture]:
        if isinstance(file, MirroredFile):
            # Every source is tried in one Parsl task on the submit side, to the
            # destination the first one's name gives.
            working_dir = _working_dir(dm, executor)
            file.local_path = host_for(self._spec).mirror_destination(
                self.executor, list(file.urls), working_dir
            )
            app = _internal_app(dm.dfk, _stage_in_mirrors_job)
            app_fut = app(
                self._spec,
                self.executor,
                list(file.urls),
                file.local_path,
                working_dir,
                outputs=[file],
                _parsl_staging_inhibit=True,
                parent_fut=parent_fut,
            )
            return app_fut._outputs[0]
        plan = host_for(self._spec).plan(
            "in", self.executor, file.url, None, _working_dir(dm, executor)
        )
        if plan.local_path is not None:
            file.local_path = plan.local_path
        _keep(file, plan)
        if not plan.has_separate_job:
            return None
        app = _internal_app(dm.dfk, _stage_in_job)
        app_fut = app(plan, outputs=[file], _parsl_staging_inhibit=True, parent_fut=parent_fut)
        return app_fut._outputs[0]

    def replace_task(
        self, dm: "DataManager", executor: str, file: File, func: Callable
    ) -> Optional[Callable]:
        plan = _take(file)
        if plan is None or not plan.has_in_task_step:
            return None
        return InTaskStaging(
            func, self._spec, self.executor, "in", file.url, file.local_path, plan.placed
        )

    # Stage-out.

    def stage_out(
        self, dm: "DataManager", executor: str, file: File, app_fu: Future
    ) -> Optional[Future]:
        plan = host_for(self._spec).plan(
            "out", self.executor, file.url, None, _working_dir(dm, executor)
        )
        if plan.local_path is not None:
            file.local_path = plan.local_path
        _keep(file, plan)
        if not plan.has_separate_job:
            return None
        app = _internal_app(dm.dfk, _stage_out_job)
        return app(plan, _parsl_staging_inhibit=True, parent_fut=app_fu)

    def replace_task_stage_out(
        self, dm: "DataManager", executor: str, file: File, func: Callable
    ) -> Optional[Callable]:
        plan = _take(file)
        if plan is None or not plan.has_in_task_step:
            return None
        return InTaskStaging(
            func, self._spec, self.executor, "out", file.url, file.local_path, plan.placed
        )


def _working_dir(dm: "DataManager", executor: str) -> Optional[str]:
    """The Parsl executor's ``working_dir``, absolute, where Parsl's own providers put
    staged files; ``None`` when it has none (stagehost's executor's is used)."""
    try:
        working_dir = dm.dfk.executors[executor].working_dir
    except (AttributeError, KeyError):
        return None
    return os.path.abspath(working_dir) if working_dir else None


class InTaskStaging:
    """An app function wrapped with one file's in-task step: a stage-in just before
    it, or a stage-out just after it. It pickles to Parsl's workers as plain data and
    re-plans the file there, in that process's own host."""

    def __init__(
        self,
        func: Callable,
        spec: ConfigSpec,
        executor: str,
        direction: str,
        url: str,
        local_path: Optional[str],
        placed: bool = False,
    ) -> None:
        self.func = func
        self.spec = spec
        self.executor = executor
        self.direction = direction
        self.url = url
        self.local_path = local_path
        # local_path is the destination the main process's host chose: what the
        # worker stages there is stagehost's own (replaced by a later run).
        self.placed = placed
        self.__name__ = getattr(func, "__name__", "task")

    def _plan(self) -> _native.Plan:
        return host_for(self.spec).plan(
            self.direction, self.executor, self.url, self.local_path, placed=self.placed
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.direction == "in":
            self._plan().run_in_task_step()
            return self.func(*args, **kwargs)
        plan = self._plan()
        result = self.func(*args, **kwargs)
        plan.run_in_task_step()
        return result

    def __repr__(self) -> str:
        shown = _native.redact_url(self.url)
        return f"<{self.__name__} with the in-task stage-{self.direction} of {shown}>"


def _stage_in_job(
    plan: _native.Plan,
    parent_fut: Any = None,
    outputs: Any = (),
    _parsl_staging_inhibit: bool = True,
) -> None:
    """A file's separate stage-in job, as a Parsl task."""
    plan.run_separate_job()


def _stage_in_mirrors_job(
    spec: ConfigSpec,
    executor: str,
    urls: list[str],
    destination: str,
    working_dir: Optional[str],
    parent_fut: Any = None,
    outputs: Any = (),
    _parsl_staging_inhibit: bool = True,
) -> str:
    """A mirrored file's stage-in, as a Parsl task: the source used (redacted)."""
    source = host_for(spec).stage_in_mirrors(executor, urls, destination, working_dir)
    logger.info("staged %s from %s", _native.redact_url(urls[0]), source)
    return source


def _stage_out_job(
    plan: _native.Plan, parent_fut: Any = None, _parsl_staging_inhibit: bool = True
) -> None:
    """A file's separate stage-out job, as a Parsl task after the app's."""
    plan.run_separate_job()


_apps: "weakref.WeakKeyDictionary[DataFlowKernel, dict[Callable, Any]]" = (
    weakref.WeakKeyDictionary()
)
_apps_lock = threading.Lock()


def _internal_app(dfk: "DataFlowKernel", func: Callable) -> Any:
    """``func`` as a Parsl app of ``dfk`` on its ``_parsl_internal`` executor, made
    once per DataFlowKernel."""
    with _apps_lock:
        made = _apps.setdefault(dfk, {})
        app = made.get(func)
        if app is None:
            app = python_app(executors=["_parsl_internal"], data_flow_kernel=dfk)(func)
            made[func] = app
        return app
