"""Benchmark data: ``NAME:SPLIT`` from the dataset registry (numpy only) or a ``.npz`` with ``x`` and ``y``.

When the bundle's manifest records the data it was trained on (``data`` section), the
split is rebuilt with the same settings and its test indices' hash is compared with the
manifest's, so the report says whether it measured the same held-out samples.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, InputError


@dataclass(frozen=True)
class BenchData:
    """Model-ready inputs and integer labels.

    Attributes:
        x: inputs, shape (N, ...), the bundle's dtype, already preprocessed.
        y: labels, shape (N,), int64.
        spec: what the user asked for (``digits:test`` or a path).
        source: where the arrays came from, in words.
        split_check: ``match``, ``mismatch``, or ``unchecked`` (with the reason in ``notes``).
        indices_sha256: hash of the split's sample indices when known.
        notes: anything the report should say about the data.
    """

    x: np.ndarray
    y: np.ndarray
    spec: str
    source: str
    split_check: str = "unchecked"
    indices_sha256: str | None = None
    notes: list[str] = field(default_factory=list)

    def head(self, n: int | None) -> BenchData:
        """The first ``n`` samples (all when n is None)."""
        if n is None or n >= len(self.y):
            return self
        return BenchData(self.x[:n], self.y[:n], self.spec, self.source, self.split_check, self.indices_sha256,
                         self.notes + [f"limited to the first {n} of {len(self.y)} samples"])


def load_bench_data(spec: str, runtime: Any, *, preprocess: bool | None = None) -> BenchData:
    """Load ``spec`` as model-ready inputs for ``runtime``'s bundle.

    Args:
        spec: ``NAME:SPLIT`` (a registered dataset, e.g. ``digits:test``) or a ``.npz`` file with ``x`` and ``y``.
        runtime: the loaded :class:`~edge_runtime.Runtime` (its manifest's ``data`` section and preprocessing).
        preprocess: apply the manifest's preprocessing (raw values outside the declared range are refused);
            None means: for a ``.npz``, only when its ``x`` cannot be model-ready (another dtype than the bundle's,
            e.g. uint8 pixels; model-ready float data outside the range raw inputs map to is refused, naming the
            flag), for a registered dataset, yes (they return raw samples).

    Raises:
        InputError: the file is missing/unreadable or ``x``/``y`` do not fit the bundle.
        ConfigError: unknown dataset or split.

    Example:
        >>> data = load_bench_data("digits:test", rt)       # doctest: +SKIP
    """
    path = Path(spec)
    if spec.endswith(".npz") or path.is_file():
        data = _load_npz(path, spec, runtime)
        if preprocess is None:
            preprocess = data.x.dtype != runtime.input_spec.np_dtype and runtime.input_spec.preprocessing is not None
        if preprocess:
            data = BenchData(runtime.preprocess(data.x), data.y, data.spec, data.source, data.split_check,
                             data.indices_sha256, data.notes + ["preprocessed with the manifest's preprocessing"])
    else:
        data = _load_registered(spec, runtime, preprocess)
    return _fit_to_bundle(data, runtime)


def _load_npz(path: Path, spec: str, runtime: Any) -> BenchData:
    if not path.is_file():
        raise InputError(f"{path}: data file not found (expected a .npz with arrays 'x' and 'y', or NAME:SPLIT)")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise InputError(f"{path}: missing array(s) {missing}; "
                                 "a bench .npz needs 'x' (inputs) and 'y' (labels)")
            x, y = f["x"], f["y"]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npz ({exc})") from None
    if y.dtype.kind in "US":  # class names: the bundle's labels give their indices
        index = {name: i for i, name in enumerate(runtime.labels)}
        unknown = sorted(set(y.astype(str).tolist()) - set(index))
        if unknown:
            raise InputError(f"{path}: labels {unknown[:5]} are not among the bundle's labels {runtime.labels}")
        y = np.array([index[v] for v in y.astype(str).tolist()], dtype=np.int64)
    return BenchData(x, y, spec, f"npz file {path}", "unchecked",
                     notes=[f"{path.name}: a .npz carries no split record, so the split was not checked against "
                            f"the manifest's data section"])


def _load_registered(spec: str, runtime: Any, preprocess: bool | None) -> BenchData:
    name, sep, split = spec.partition(":")
    if not sep or not name or not split:
        raise ConfigError(f"--data {spec!r}: expected NAME:SPLIT (e.g. digits:test) or a .npz file")
    try:
        datasets = importlib.import_module("edge_runtime.datasets")
    except ImportError:
        raise ConfigError(f"--data {spec!r}: the dataset registry (edge_runtime.datasets) is not available in this "
                          f"install; pass a .npz file with arrays x and y instead") from None
    record = runtime.manifest.data or {}
    same = record.get("name") == name
    split_data = datasets.build_split(record if same else name)
    if split not in split_data.indices:
        raise ConfigError(f"--data {spec!r}: unknown split {split!r}; splits: {', '.join(split_data.indices)}")
    x, y = split_data.arrays(split)
    got = datasets.indices_sha256(split_data.indices[split])
    want = record.get(f"{split}_indices_sha256") if same else None
    notes = []
    if same:
        notes.append(f"split rebuilt with the manifest's data settings (kwargs {record.get('kwargs', {})}, "
                     f"split {record.get('split', {})})")
    else:
        notes.append(f"the manifest's data section names {record.get('name')!r}, not {name!r}: "
                     f"{name!r} was loaded with its defaults" if record else
                     "the bundle has no data section: the split could not be confirmed")
    if want is None:
        check = "unchecked"
        if same:
            notes.append(f"the manifest records no hash of the {split!r} split's indices")
    elif want == got:
        check = "match"
        notes.append(f"split confirmed: sha256 of the {split!r} indices {got[:12]}... equals the manifest's")
    else:
        check = "mismatch"
        notes.append(f"split MISMATCH: sha256 of the {split!r} indices {got[:12]}... differs from the manifest's "
                     f"{want[:12]}...: this report does not measure the bundle's held-out split")
    if preprocess is None or preprocess:  # registered datasets return raw pixels in [0, 1]
        x = runtime.preprocess(x)
        notes.append("inputs preprocessed with the manifest's preprocessing")
    return BenchData(x, y, spec, f"dataset {name!r}, split {split!r} ({len(y)} samples)", check, got, notes)


def _fit_to_bundle(data: BenchData, runtime: Any) -> BenchData:
    x, y = data.x, data.y
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise InputError(f"{data.spec}: y must have shape (N,) with N = {x.shape[0]} (x's first axis), "
                         f"got {tuple(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{data.spec}: y must hold integer class indices, got dtype {y.dtype}")
    n_classes = len(runtime.labels)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"{data.spec}: labels must lie in [0, {n_classes}) for this bundle's {n_classes} classes, "
                         f"got [{y.min()}, {y.max()}]")
    want = runtime.input_spec.np_dtype
    if np.issubdtype(x.dtype, np.floating) and x.dtype != want:
        x = x.astype(want)
    x = runtime.check_input(x)  # names the expected shape/dtype when it does not fit
    return BenchData(x, y.astype(np.int64), data.spec, data.source, data.split_check, data.indices_sha256, data.notes)
