"""Writing files and directories so that a reader never sees half of one: the project's one atomic write.

Every file the project writes for others to read (manifests, reports, results, profiles,
training checkpoints) goes through :func:`write_bytes_atomic`: a temporary file in the same
directory, flushed and fsync'd, then renamed over the target, then the directory fsync'd.
A failure at any point removes the temporary file and leaves the old target untouched.
Directories (bundles) are built in a sibling staging directory and renamed into place with
:func:`replace_dir`, which replaces only a bundle this project wrote (``--overwrite`` must never delete a
home directory or a project). Written files get the modes a user expects (0644/0755 under the usual umask),
not the owner-only modes of :mod:`tempfile`, so a service account can read a bundle another account built.
A write that fails (unwritable directory, a file where a directory should be, disk full) raises
:class:`~edge_runtime.errors.OutputError` naming the path, and leaves no temporary file and no directory it
created behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError, OutputError

#: what marks a directory as a bundle this project wrote: its manifest file and the manifest's ``format`` value
#: (:mod:`edge_runtime.manifest` reads and writes that file; the names live here so that :func:`replace_dir` can
#: recognise a bundle without importing the manifest module, which imports this one)
MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "edge-runtime-bundle"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _make_parents(directory: Path, what: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; returns those it created (deepest last).

    Raises:
        OutputError: a parent is a file, or cannot be created (names ``what``, the path being written).
    """
    missing: list[Path] = []
    d = directory
    while not d.is_dir():
        if d.exists() or d.is_symlink():
            raise OutputError(f"{what}: cannot write here: {d} is not a directory")
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
    except OSError as exc:
        _remove_empty(created)
        raise OutputError(f"{what}: cannot create the directory {d} ({_why(exc)})") from None
    return created


def _remove_empty(dirs: list[Path]) -> None:
    """Remove directories this module created, deepest first, where they are still empty."""
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            return


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename); mode 0666 & ~umask.

    Raises:
        OutputError: the file cannot be written (names it and the reason); the old file, if any, is untouched,
            and no temporary file or directory created for it is left.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> write_bytes_atomic(p, b"hi").read_bytes()
        b'hi'
    """
    target = Path(path)
    created = _make_parents(target.parent, target)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _remove_empty(created)
        if isinstance(exc, OSError):
            raise OutputError(f"{target}: cannot write the file ({_why(exc)})") from None
        raise
    _fsync_dir(target.parent)
    return target


def write_text_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write text (UTF-8) or bytes atomically."""
    return write_bytes_atomic(path, text if isinstance(text, bytes) else text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (trailing newline) atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def staging_dir(out: str | Path, tag: str = "staging") -> Iterator[Path]:
    """A fresh directory next to ``out`` (same file system, so it can be renamed onto ``out``), removed
    on exit whatever happened; mode 0777 & ~umask.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with staging_dir(root / "bundle") as tmp:
        ...     _ = (tmp / "f").write_text("x")
        ...     _ = replace_dir(tmp, root / "bundle")
        >>> sorted(p.name for p in root.iterdir())
        ['bundle']
    """
    target = _output_name(out)
    created = _make_parents(target.parent, target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as exc:
        _remove_empty(created)
        raise OutputError(f"{target}: cannot create the output here ({_why(exc)})") from None
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)


def _output_name(out: str | Path) -> Path:
    """``out`` as a path that names a new directory (not ``.``, ``..`` or ``/``: they name no entry to create).

    Raises:
        ConfigError: naming ``out``.
    """
    target = Path(out)
    if target.name in ("", ".", ".."):
        raise ConfigError(f"{str(out)!r}: name the directory to write (e.g. {os.path.join(str(out), 'bundle')!r}), "
                          "not an existing directory's short name")
    return target


def bundle_marker_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a bundle directory this project wrote (None when it is one): a real directory (not a
    link) holding a regular ``manifest.json`` whose ``format`` is ``edge-runtime-bundle``."""
    p = Path(path)
    if p.is_symlink():
        return "it is a symbolic link"
    if not p.is_dir():
        return "it is not a directory"
    manifest = p / MANIFEST_NAME
    if manifest.is_symlink() or not manifest.is_file():
        return f"it has no {MANIFEST_NAME}"
    try:
        with manifest.open("rb") as f:
            doc = json.loads(f.read(64 << 20))
    except (OSError, ValueError, RecursionError):
        return f"its {MANIFEST_NAME} is not readable JSON"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        return f"its {MANIFEST_NAME} is not an edge-runtime bundle manifest"
    return None


def check_output_dir(out: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output directory that :func:`replace_dir` would refuse at the end.

    ``out`` must be a new path, or (with ``overwrite``) a bundle this project wrote; its parent must be a
    directory or creatable as one.

    Raises:
        ConfigError: ``out`` exists and is not to be replaced, or is not a bundle (one line naming it).
        OutputError: a parent of ``out`` is a file.

    Example:
        >>> import tempfile, pathlib
        >>> check_output_dir(pathlib.Path(tempfile.mkdtemp()) / "new").name
        'new'
    """
    target = _output_name(out)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise ConfigError(f"{target}: output exists (pass overwrite=True / --overwrite to replace it)")
        why = bundle_marker_problem(target)
        if why is not None:
            raise ConfigError(f"{target}: --overwrite replaces only a bundle directory this project wrote, and {why}; "
                              "refusing to delete it (choose a new --out)")
        return target
    d = target.parent
    while not d.is_dir():
        if d.exists() or d.is_symlink():
            raise OutputError(f"{target}: cannot write here: {d} is not a directory")
        if d.parent == d:
            break
        d = d.parent
    return target


def _rmtree_all(path: Path) -> None:
    """Remove a tree completely, making read-only directories writable where that is what stops it.

    Raises:
        OutputError: something could not be removed (names what is left).
    """
    def retry(func: Any, p: str, exc_info: Any) -> None:
        parent = os.path.dirname(p)
        try:
            os.chmod(parent, os.stat(parent).st_mode | 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)
    if path.exists() or path.is_symlink():
        raise OutputError(f"{path}: the new output is in place, but its previous copy could not be removed; "
                          "delete it by hand")


def replace_dir(tmp: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Rename the finished directory ``tmp`` onto ``out``; with ``overwrite`` an existing ``out`` — only a bundle
    this project wrote (:func:`bundle_marker_problem`) — is swapped out first and removed afterwards (never left
    behind as a hidden ``.NAME.old-*``).

    Raises:
        ConfigError: ``out`` exists and ``overwrite`` is False, or ``out`` is not a bundle (nothing is touched).
        OutputError: the rename failed (``out`` is as it was).
    """
    src, dst = Path(tmp), check_output_dir(out, overwrite=overwrite)
    try:
        if dst.exists() or dst.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
            moved = old / "previous"
            os.replace(dst, moved)
            try:
                os.replace(src, dst)
            except BaseException:
                os.replace(moved, dst)
                shutil.rmtree(old, ignore_errors=True)
                raise
            _rmtree_all(old)
        else:
            os.replace(src, dst)
    except OSError as exc:
        raise OutputError(f"{dst}: cannot move the finished output into place ({_why(exc)})") from None
    _fsync_dir(dst.parent)
    return dst
