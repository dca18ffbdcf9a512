"""The project's error types: every failure a user can cause is one of these."""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Base class of every error this project raises on purpose.

    The command-line tool prints these as one line and exits with code 2.
    """


class BundleError(EdgeRuntimeError):
    """A bundle is missing, malformed, tampered with or unsupported.

    Attributes:
        path: the file that is wrong (the manifest, or a segment file).
        field: the manifest field involved, as a dotted path, when there is one.
    """

    def __init__(self, message: str, *, path: object = None, field: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.field = field
        #: the message without the file and field prefix
        self.detail = message
        where = []
        if self.path:
            where.append(self.path)
        if field:
            where.append(f"field {field!r}")
        prefix = f"{': '.join(where)}: " if where else ""
        super().__init__(f"{prefix}{message}")


class InputError(EdgeRuntimeError):
    """An input tensor does not match the bundle's input spec (rank, shape, dtype, finiteness).

    Attributes:
        field: the request field involved (e.g. ``inputs[0].data``), when there is one: the daemon's 422 names it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class ConfigError(EdgeRuntimeError):
    """A recipe, profile or command-line setting is invalid; the message names the key."""


class ExportError(EdgeRuntimeError):
    """Conversion or export failed (e.g. verification exceeded its tolerance); no bundle was written."""


class BackendError(BundleError):
    """The inference backend failed to run one of a bundle's graphs on checked inputs (names the file).

    The backend's own message is kept to its first line, without the library's source locations.
    """


class OutputError(EdgeRuntimeError):
    """A file or directory could not be written (unwritable, not a directory, disk full): names the path and the
    reason; nothing half-written is left behind."""
