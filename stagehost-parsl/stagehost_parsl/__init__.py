"""Parsl staging through stagehost.

``StagehostStaging`` is a Parsl ``Staging`` provider that hands every file to
stagehost's data manager, so each stagehost provider plugin (file, http, ftp, zip,
rsync, s3/gs/az, and a site's own) stages Parsl ``File``\\ s on any Parsl executor::

    from parsl.executors import HighThroughputExecutor
    from stagehost_parsl import StagehostStaging

    HighThroughputExecutor(storage_access=[StagehostStaging()])

The built-in plugins ship in the package (``stagehost_parsl/plugins``); plugins a site
drops into stagehost's plugin directories, or names in ``plugin_dirs``, are found as
the ``stagehost`` CLI finds them.
"""

from ._errors import StagingError, ZipAuthorityError
from ._host import PLUGIN_DIR, resolve_config
from ._native import __version__
from ._staging import InTaskStaging, MirroredFile, StagehostStaging, mirrored

__all__ = [
    "PLUGIN_DIR",
    "InTaskStaging",
    "MirroredFile",
    "StagehostStaging",
    "StagingError",
    "ZipAuthorityError",
    "__version__",
    "mirrored",
    "resolve_config",
]
