"""Writing files and directories so that a reader never sees half of one: the project's one atomic write.

Every file the project writes for others to read (manifests, reports, results, profiles,
training checkpoints) goes through :func:`write_bytes_atomic`: a temporary file in the same
directory, flushed and fsync'd, then renamed over the target, then the directory fsync'd.
A failure at any point removes the temporary file and leaves the old target untouched.
Directories (bundles) are built in a sibling staging directory and renamed into place with
:func:`replace_dir`. Written files get the modes a user expects (0644/0755 under the usual umask),
not the owner-only modes of :mod:`tempfile`.
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

from edge_runtime.errors import ConfigError


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


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename); mode 0666 & ~umask.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> write_bytes_atomic(p, b"hi").read_bytes()
        b'hi'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Rename the finished directory ``tmp`` onto ``out``; with ``overwrite`` an existing ``out`` is
    swapped out first and removed afterwards (never left behind).

    Raises:
        ConfigError: ``out`` exists and ``overwrite`` is False.
    """
    src, dst = Path(tmp), Path(out)
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise ConfigError(f"{dst}: output exists (pass overwrite=True / --overwrite to replace it)")
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        moved = old / "previous"
        os.replace(dst, moved)
        try:
            os.replace(src, dst)
        except BaseException:
            os.replace(moved, dst)
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
    _fsync_dir(dst.parent)
    return dst
