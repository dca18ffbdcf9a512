"""Reading and checking a bundle directory: manifest schema, format version, paths, hashes.

Nothing in a bundle executes code when loaded: the manifest is JSON, model files are
ONNX/TFLite graphs, and every path must stay inside the bundle directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from edge_runtime.errors import BundleError
from edge_runtime.files import sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "edge-runtime-bundle"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
#: file precisions, from the reference to the most compressed (``int8``: static, ``int8_dynamic``: dynamic range)
PRECISIONS = ("fp32", "fp16", "int8", "int8_dynamic")


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The JSON schema of the manifest (``edge_runtime/schemas/manifest.schema.json``)."""
    text = resources.files("edge_runtime").joinpath("schemas/manifest.schema.json").read_text()
    return json.loads(text)


def validate_manifest(manifest: Any, *, path: Path | str = MANIFEST_NAME) -> None:
    """Check a manifest dict against the schema and the cross-field rules.

    Raises:
        BundleError: naming the manifest file and the first bad field.
    """
    import jsonschema

    if not isinstance(manifest, dict):
        raise BundleError("manifest must be a JSON object", path=path)
    version = manifest.get("format_version")
    if manifest.get("format") == FORMAT_NAME and isinstance(version, int) and version not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(
            f"unsupported format version {version}; this runtime reads {list(SUPPORTED_FORMAT_VERSIONS)}",
            path=path,
            field="format_version",
        )
    validator = jsonschema.Draft202012Validator(manifest_schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        field = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise BundleError(err.message, path=path, field=field)
    _check_cross_fields(manifest, path)


def _check_cross_fields(m: dict[str, Any], path: Path | str) -> None:
    segments, exits = m["segments"], m["exits"]
    for i, seg in enumerate(segments):
        if seg["index"] != i:
            raise BundleError(f"expected index {i}, got {seg['index']}", path=path, field=f"segments.{i}.index")
    if len(exits) != len(segments):
        raise BundleError(
            f"{len(exits)} exits for {len(segments)} segments; every segment ends in one exit",
            path=path,
            field="exits",
        )
    for i, ex in enumerate(exits):
        if ex["index"] != i or ex["segment"] != i:
            raise BundleError(f"exit {i} must have index {i} and segment {i}", path=path, field=f"exits.{i}")
    n_thr = len(m["policy"]["thresholds"])
    if n_thr not in (0, len(exits) - 1):
        raise BundleError(
            f"expected {len(exits) - 1} thresholds (one per non-final exit), got {n_thr}",
            path=path,
            field="policy.thresholds",
        )
    for key, variant in m["policy"].get("variants", {}).items():
        if len(variant["thresholds"]) not in (0, len(exits) - 1):
            raise BundleError(
                f"expected {len(exits) - 1} thresholds (one per non-final exit), got {len(variant['thresholds'])}",
                path=path,
                field=f"policy.variants.{key}.thresholds",
            )
    if m["input"]["shape"][0] is not None:
        raise BundleError("the batch axis (first) must be null", path=path, field="input.shape.0")


def resolve_inside(root: Path, relative: str, *, field: str, manifest_path: Path) -> Path:
    """Resolve a manifest path relative to the bundle, refusing anything outside it."""
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise BundleError(f"path {relative!r} points outside the bundle", path=manifest_path, field=field)
    resolved = (root / rel).resolve()
    root_resolved = root.resolve()
    if root_resolved not in resolved.parents and resolved != root_resolved:
        raise BundleError(f"path {relative!r} points outside the bundle", path=manifest_path, field=field)
    return resolved


@dataclass(frozen=True)
class BundleFile:
    """One model file of a bundle, checked to exist and match its hash."""

    path: Path
    format: str
    precision: str
    batch_size: int | None
    sha256: str


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its directory and its validated manifest.

    Example:
        >>> bundle = read_bundle("out/tiny_cnn")       # doctest: +SKIP
        >>> [f.path.name for f in bundle.segment_files("onnx")]   # doctest: +SKIP
        ['segment_0.onnx', 'segment_1.onnx', 'segment_2.onnx']
    """

    root: Path
    manifest: dict[str, Any]

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def num_exits(self) -> int:
        return len(self.manifest["exits"])

    def _file(self, entry: dict[str, Any], field: str) -> BundleFile:
        return BundleFile(
            path=resolve_inside(self.root, entry["path"], field=f"{field}.path", manifest_path=self.manifest_path),
            format=entry["format"],
            precision=entry.get("precision", "fp32"),
            batch_size=entry.get("batch_size"),
            sha256=entry["sha256"],
        )

    def files_for(self, entries: list[dict[str, Any]], field: str, fmt: str, precision: str = "fp32",
                  batch_sizes: Sequence[int] | None = None) -> list[BundleFile]:
        """All files of one list entry matching a format and precision (several batch sizes may match).

        ``batch_sizes`` keeps only the files of those fixed batch sizes (a dynamic-batch file serves any);
        each requested size must have a file.
        """
        found = [
            self._file(e, f"{field}.{j}")
            for j, e in enumerate(entries)
            if e["format"] == fmt and e.get("precision", "fp32") == precision
        ]
        if not found:
            have = sorted({f"{e['format']}/{e.get('precision', 'fp32')}" for e in entries})
            raise BundleError(
                f"no {fmt}/{precision} file; the bundle has {', '.join(have)}", path=self.manifest_path, field=field
            )
        if batch_sizes is not None and not any(f.batch_size is None for f in found):
            have_b = sorted(f.batch_size for f in found if f.batch_size is not None)
            missing = sorted(set(int(b) for b in batch_sizes) - set(have_b))
            if missing:
                raise BundleError(
                    f"no {fmt}/{precision} file for batch size {missing[0]}; it has batch sizes {have_b}",
                    path=self.manifest_path, field=field,
                )
            found = [f for f in found if f.batch_size in set(batch_sizes)]
        return found

    def segment_files(self, fmt: str, precision: str = "fp32",
                      batch_sizes: Sequence[int] | None = None) -> list[list[BundleFile]]:
        """Per segment, the files of one format and precision (optionally only some batch sizes)."""
        return [
            self.files_for(seg["files"], f"segments.{i}.files", fmt, precision, batch_sizes)
            for i, seg in enumerate(self.manifest["segments"])
        ]

    def variants(self) -> list[tuple[str, str, list[int | None]]]:
        """The (format, precision, batch sizes) variants every segment has a file for.

        A batch size of None means a dynamic-batch file. The bench runs one row per variant.

        Example:
            >>> read_bundle("out/tiny_cnn").variants()                  # doctest: +SKIP
            [('onnx', 'fp32', [None]), ('tflite', 'fp32', [1, 2]), ('tflite', 'int8', [1, 2])]
        """
        per_segment = []
        for seg in self.manifest["segments"]:
            have: dict[tuple[str, str], set[int | None]] = {}
            for e in seg["files"]:
                have.setdefault((e["format"], e.get("precision", "fp32")), set()).add(e.get("batch_size"))
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
        """Every model file the manifest references, with the field that references it."""
        out: list[tuple[str, BundleFile]] = []
        for i, seg in enumerate(self.manifest["segments"]):
            for j, e in enumerate(seg["files"]):
                out.append((f"segments.{i}.files.{j}", self._file(e, f"segments.{i}.files.{j}")))
        for j, e in enumerate(self.manifest.get("full_model", {}).get("files", [])):
            out.append((f"full_model.files.{j}", self._file(e, f"full_model.files.{j}")))
        for key, part in sorted(self.manifest.get("cbnet", {}).get("parts", {}).items()):
            for j, e in enumerate(part.get("files", [])):
                out.append((f"cbnet.parts.{key}.files.{j}", self._file(e, f"cbnet.parts.{key}.files.{j}")))
        return out

    def verify_files(self) -> None:
        """Check every referenced file exists and matches its sha256."""
        for field, f in self.all_files():
            if not f.path.is_file():
                raise BundleError("file is missing", path=f.path, field=field)
            digest = sha256_file(f.path)
            if digest != f.sha256:
                raise BundleError(
                    f"sha256 mismatch: manifest says {f.sha256[:12]}..., file has {digest[:12]}...",
                    path=f.path,
                    field=f"{field}.sha256",
                )


def read_bundle(path: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Read a bundle directory, validate its manifest and (by default) every file's hash.

    Raises:
        BundleError: naming the file and field that is wrong.
    """
    root = Path(path)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError("bundle directory does not exist", path=root)
    if not manifest_path.is_file():
        raise BundleError("manifest.json is missing", path=manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"not valid JSON: {exc}", path=manifest_path) from None
    validate_manifest(manifest, path=manifest_path)
    bundle = Bundle(root=root, manifest=manifest)
    bundle.all_files()  # resolves every path: raises if one points outside the bundle
    if verify_hashes:
        bundle.verify_files()
    return bundle
