"""One stagehost host per config per process, and the config specs that name them.

A spec is plain data, so that it pickles to Parsl's workers, where the same host is
built again from it:

- ``("embedded",)``: stagehost's embedded default config;
- ``("path", "/abs/config.toml")``: a config file;
- ``("text", "<toml>", "/base/dir")``: TOML text, its relative paths resolved
  against the directory it was given in.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Union

from . import _native

ConfigSpec = tuple[str, ...]
ConfigArg = Union[str, "os.PathLike[str]", None]

#: The plugins shipped in the wheel; searched after ``STAGEHOST_PLUGIN_PATH`` and
#: before stagehost's standard plugin directories.
PLUGIN_DIR = Path(__file__).resolve().parent / "plugins"
_native.set_bundled_plugin_dir(str(PLUGIN_DIR))

_hosts: dict[ConfigSpec, _native.Host] = {}
_lock = threading.Lock()


def resolve_config(config: ConfigArg) -> ConfigSpec:
    """The spec for ``config``: ``None`` for stagehost's own search order (its
    ``STAGEHOST_CONFIG``, ``./stagehost.toml``, ... then the embedded default), a path,
    or TOML text (a string holding a newline or ``=``)."""
    if config is None:
        found = _native.locate_config()
        return ("path", found) if found is not None else ("embedded",)
    if isinstance(config, os.PathLike):
        return ("path", os.path.abspath(os.fspath(config)))
    if "\n" in config or "=" in config:
        return ("text", config, os.getcwd())
    return ("path", os.path.abspath(config))


def host_for(spec: ConfigSpec) -> _native.Host:
    """The host for ``spec`` in this process, built on first use (plugins loaded,
    every provider instance made)."""
    host = _hosts.get(spec)
    if host is not None:
        return host
    with _lock:
        host = _hosts.get(spec)
        if host is None:
            host = _native.Host(*spec)
            _hosts[spec] = host
        return host
