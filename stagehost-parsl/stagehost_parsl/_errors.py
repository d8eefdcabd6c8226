"""The exception every stagehost failure is raised as."""

from __future__ import annotations


class StagingError(Exception):
    """A stagehost staging failure.

    ``message`` is the one line the ``stagehost`` CLI prints: it names the file (its
    URL, with any password redacted), the provider, the plugin and the executor.
    ``kind`` is stagehost's error kind (``"not found"``, ``"permission denied"``,
    ``"transient"``, ``"integrity"``, ``"config"``, ...), or ``None`` when no provider
    was involved (no provider claims the file, an unknown executor).
    """

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind

    def __reduce__(self) -> tuple[type[StagingError], tuple[str, str | None]]:
        # Raised in a Parsl worker, it crosses back to the main process by pickle.
        return (StagingError, (self.message, self.kind))
