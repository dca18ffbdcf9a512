"""Reading and checking a bundle directory: manifest schema, format version, paths, hashes.

Nothing in a bundle executes code when loaded: the manifest is JSON, model files are
ONNX/TFLite graphs, and every path must stay inside the bundle directory. A model file is read
once (:meth:`Bundle.read_file`): its bytes are checked against the manifest's sha256 and those same
bytes go to the backend, so a file swapped on disk after the check is never loaded.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import BundleError
from edge_runtime.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    PRECISIONS,
    FileEntry,
    GraphSpec,
    Manifest,
    read_manifest,
    validate_manifest,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_NAME", "PRECISIONS", "Bundle", "BundleFile", "read_bundle",
           "resolve_inside", "validate_manifest"]


#: the longest manifest path, and path component (bytes), the loader accepts: what file systems accept, no more
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
_CHUNK = 1 << 20


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def resolve_inside(root: Path, relative: str, *, field: str, manifest_path: Path) -> Path:
    """Resolve a manifest path relative to the bundle, refusing anything outside it (and paths no file system
    holds: control characters, backslashes, over-long names).

    Raises:
        BundleError: naming the manifest and ``field``.
    """
    def refuse(why: str) -> BundleError:
        return BundleError(f"path {_short(relative)} {why}", path=manifest_path, field=field)

    bad = next((c for c in relative if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise refuse(f"contains a control character ({bad!r})")
    if "\\" in relative:
        raise refuse("contains a backslash; bundle paths are relative, with '/' between names")
    if len(relative) > MAX_PATH_CHARS:
        raise refuse(f"is longer than {MAX_PATH_CHARS} characters")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in relative.split("/")):
        raise refuse(f"has a name longer than {MAX_NAME_BYTES} bytes")
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise refuse("points outside the bundle")
    try:
        resolved = (root / rel).resolve()
        root_resolved = root.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name the OS refuses
        raise refuse(f"cannot be resolved ({exc})") from None
    if root_resolved not in resolved.parents and resolved != root_resolved:
        raise refuse("points outside the bundle")
    return resolved


def _open_regular(path: Path, field: str) -> int:
    """Open a bundle file for reading: a regular file only (a FIFO or device would block or never end)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BundleError("file is missing", path=path, field=field) from None
    except OSError as exc:
        raise BundleError(f"cannot read the file ({exc.strerror or exc})", path=path, field=field) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError("not a regular file", path=path, field=field)
    return fd


@dataclass(frozen=True)
class BundleFile:
    """One model file of a bundle, checked to exist and match its hash."""

    path: Path
    format: str
    precision: str
    batch_size: int | None
    sha256: str
    #: the manifest field of this file (``segments.0.files.1``)
    field: str = ""


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its directory and its validated, typed manifest.

    Example:
        >>> bundle = read_bundle("out/tiny_cnn")       # doctest: +SKIP
        >>> [f.path.name for f in bundle.segment_files("onnx")[0]]   # doctest: +SKIP
        ['segment_0.onnx']
    """

    root: Path
    manifest: Manifest
    #: whether :meth:`read_file` checks each file's sha256 (``read_bundle(verify_hashes=False)`` turns it off)
    verify_hashes: bool = True

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def num_exits(self) -> int:
        return self.manifest.num_exits

    def _file(self, entry: FileEntry, field: str) -> BundleFile:
        return BundleFile(
            path=resolve_inside(self.root, entry.path, field=f"{field}.path", manifest_path=self.manifest_path),
            format=entry.format, precision=entry.precision, batch_size=entry.batch_size, sha256=entry.sha256,
            field=field)

    def files_for(self, graph: GraphSpec, field: str, fmt: str, precision: str = "fp32",
                  batch_sizes: Sequence[int] | None = None) -> list[BundleFile]:
        """All files of one graph matching a format and precision (several batch sizes may match).

        ``batch_sizes`` keeps only the files of those fixed batch sizes (a dynamic-batch file serves any);
        each requested size must have a file.

        Raises:
            BundleError: no file of that format/precision (or batch size); names the field.
        """
        found = [self._file(e, f"{field}.files.{j}") for j, e in enumerate(graph.files)
                 if e.format == fmt and e.precision == precision]
        if not found:
            have = sorted({f"{e.format}/{e.precision}" for e in graph.files})
            raise BundleError(f"no {fmt}/{precision} file; the bundle has {', '.join(have)}",
                              path=self.manifest_path, field=f"{field}.files")
        if batch_sizes is not None and not any(f.batch_size is None for f in found):
            have_b = sorted(f.batch_size for f in found if f.batch_size is not None)
            missing = sorted(set(int(b) for b in batch_sizes) - set(have_b))
            if missing:
                raise BundleError(f"no {fmt}/{precision} file for batch size {missing[0]}; it has batch sizes {have_b}",
                                  path=self.manifest_path, field=f"{field}.files")
            found = [f for f in found if f.batch_size in set(batch_sizes)]
        return found

    def segment_files(self, fmt: str, precision: str = "fp32",
                      batch_sizes: Sequence[int] | None = None) -> list[list[BundleFile]]:
        """Per segment, the files of one format and precision (optionally only some batch sizes)."""
        return [self.files_for(seg, f"segments.{seg.index}", fmt, precision, batch_sizes)
                for seg in self.manifest.segments]

    def variants(self) -> list[tuple[str, str, list[int | None]]]:
        """The (format, precision, batch sizes) variants every segment has a file for.

        A batch size of None means a dynamic-batch file. The bench runs one row per variant.

        Example:
            >>> read_bundle("out/tiny_cnn").variants()                  # doctest: +SKIP
            [('onnx', 'fp32', [None]), ('tflite', 'fp32', [1, 2]), ('tflite', 'int8', [1, 2])]
        """
        per_segment = []
        for seg in self.manifest.segments:
            have: dict[tuple[str, str], set[int | None]] = {}
            for e in seg.files:
                have.setdefault((e.format, e.precision), set()).add(e.batch_size)
            per_segment.append(have)
        common = set.intersection(*(set(h) for h in per_segment)) if per_segment else set()
        order = {p: i for i, p in enumerate(PRECISIONS)}
        out = []
        for key in sorted(common, key=lambda k: (k[0] != "onnx", k[0], order.get(k[1], len(order)), k[1])):
            sizes = set.intersection(*(h[key] for h in per_segment))
            if sizes:
                out.append((key[0], key[1], sorted(sizes, key=lambda b: -1 if b is None else b)))
        return out

    def all_files(self) -> list[tuple[str, BundleFile]]:
        """Every file the manifest references (model files, the text tokenizer), with the field that references it."""
        out = [(f"{field}.files.{j}", self._file(e, f"{field}.files.{j}"))
               for field, graph in self.manifest.graphs() for j, e in enumerate(graph.files)]
        if self.manifest.text is not None:
            out.append(("text.tokenizer", self._file(self.manifest.text.tokenizer, "text.tokenizer")))
        return out

    def verify_files(self) -> None:
        """Check every referenced file exists, is readable and matches its sha256.

        Raises:
            BundleError: naming the file and its manifest field.
        """
        for field, f in self.all_files():
            self._read(f, field, keep=False, verify=True)

    def read_file(self, f: BundleFile, field: str) -> bytes:
        """A model file's bytes, read once and checked against the manifest's sha256 (unless this bundle was read
        with ``verify_hashes=False``): the bytes a backend must load.

        Raises:
            BundleError: missing, unreadable, not a regular file, or not the pinned content (names ``field``).
        """
        data = self._read(f, field, keep=True, verify=self.verify_hashes)
        assert data is not None
        return data

    def _read(self, f: BundleFile, field: str, *, keep: bool, verify: bool) -> bytes | None:
        fd = _open_regular(f.path, field)
        h = hashlib.sha256()
        chunks: list[bytes] = []
        try:
            with os.fdopen(fd, "rb") as fh:
                while block := fh.read(_CHUNK):
                    h.update(block)
                    if keep:
                        chunks.append(block)
        except OSError as exc:
            raise BundleError(f"cannot read the file ({exc.strerror or exc})", path=f.path, field=field) from None
        if verify and h.hexdigest() != f.sha256:
            raise BundleError(f"sha256 mismatch: manifest says {f.sha256[:12]}..., file has {h.hexdigest()[:12]}...",
                              path=f.path, field=f"{field}.sha256")
        return b"".join(chunks) if keep else None


def read_bundle(path: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Read a bundle directory, validate its manifest and (by default) every file's hash.

    Raises:
        BundleError: naming the file and field that is wrong.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError("bundle directory does not exist", path=root)
    bundle = Bundle(root=root, manifest=read_manifest(root), verify_hashes=verify_hashes)
    bundle.all_files()  # resolves every path: raises if one points outside the bundle
    if verify_hashes:
        bundle.verify_files()
    return bundle
