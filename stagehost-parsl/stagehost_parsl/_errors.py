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


class ZipAuthorityError(StagingError):
    """A ``zip:`` URL with a netloc, refused as Parsl's ``ZipFileStaging`` refuses it.

    It is also an instance of Parsl's own ``parsl.data_provider.zip.ZipAuthorityError``
    (when Parsl is installed), so code written against Parsl's providers catches it.
    """

    file: object

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:  # type: ignore[override]
        return (_zip_authority_class(), (self.message, self.kind))


_ZIP_AUTHORITY: type | None = None


def _zip_authority_class() -> type:
    """``ZipAuthorityError`` mixed with Parsl's class of that name, made once."""
    global _ZIP_AUTHORITY
    if _ZIP_AUTHORITY is None:
        try:
            from parsl.data_provider.zip import ZipAuthorityError as ParslZipAuthorityError
        except ImportError:  # Parsl without its zip provider
            _ZIP_AUTHORITY = ZipAuthorityError
        else:

            class _Both(ZipAuthorityError, ParslZipAuthorityError):  # type: ignore[misc]
                def __str__(self) -> str:
                    return self.message

            _Both.__name__ = "ZipAuthorityError"
            _Both.__qualname__ = "ZipAuthorityError"
            _ZIP_AUTHORITY = _Both
    return _ZIP_AUTHORITY


def as_parsl_error(error: StagingError, file: object) -> StagingError:
    """``error`` as the exception class Parsl's own provider raises for the same
    refusal, where Parsl has one; else ``error`` itself."""
    scheme = getattr(file, "scheme", None)
    netloc = getattr(file, "netloc", "")
    if error.kind == "invalid URL" and scheme == "zip" and netloc:
        refined = _zip_authority_class()(error.message, error.kind)
        refined.file = file
        return refined
    return error
