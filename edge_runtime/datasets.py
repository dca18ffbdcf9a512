"""Datasets for training, calibration and on-device benchmarks: one registry, a seeded stratified split.

Numpy only (scikit-learn and Pillow are imported inside the loaders that need them; never torch),
so the device-side benchmark rebuilds exactly the test split a bundle was calibrated against:
the bundle's ``data`` section records the dataset name and arguments, the seed, the fractions,
the counts per split and a sha256 of the test indices, and :func:`load_split` checks it.

A loader returns the raw samples, of any shape ``(N, ...)``: images (N, C, H, W) as float32 in [0, 1] (digits) or
uint8 in [0, 255] (``image_folder``, a uint8 ``npz``), 1-D signals (N, C, L), feature vectors (N, D) (``csv``);
labels as int64 class indices (string labels become indices, their names the bundle's labels; -1 where a sample
has no label). A loader may also give the user's own splits (``Dataset.splits``), which replace the seeded one.
What turns raw samples into model inputs (``scale``, then the training split's mean/std per channel (axis 1) or,
for (N, D) data, per feature) is recorded as the bundle's input preprocessing, together with the raw dtype and
range it expects; :meth:`edge_runtime.Runtime.preprocess` applies it on the device.

Example:
    >>> x, y = load_split({"name": "digits", "kwargs": {"size": 28}}, "test")   # doctest: +SKIP
    >>> x.shape, x.dtype                                                       # doctest: +SKIP
    ((360, 1, 28, 28), dtype('float32'))
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.registry import Registry

SPLITS = ("train", "calibration", "test")
DEFAULT_FRACTIONS = {"train": 0.6, "calibration": 0.2, "test": 0.2}


@dataclass(frozen=True)
class Dataset:
    """A whole data set, before splitting.

    Attributes:
        x: raw samples, shape (N, ...): float32, or uint8 (then ``scale`` maps them to [0, 1]).
        y: int64 class indices, shape (N,); -1 for a sample without a label.
        labels: one name per class.
        scale: the factor raw samples are multiplied by before normalisation (1/255 for uint8 pixels).
        value_range: the range raw samples lie in ((0, 1) for float pixels, (0, 255) for uint8 ones), or None
            (tabular features: no intrinsic range).
        splits: the user's own split (``train``, ``calibration``, ``test`` -> sample indices), or None (seeded).
        notes: what the loader skipped or decided, for the bundle's ``data`` section.
    """

    x: np.ndarray
    y: np.ndarray
    labels: list[str] = field(default_factory=list)
    scale: float = 1.0
    value_range: tuple[float, float] | None = None
    splits: dict[str, np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        """Whether every sample has a label."""
        return bool(len(self.y)) and bool((self.y >= 0).all())


DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")


def resize_bilinear(images: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Bilinear resize of (N, C, H, W) images with half-pixel centres (PIL/OpenCV ``INTER_LINEAR``,
    torch ``align_corners=False`` without antialiasing); edges are clamped.

    Example:
        >>> resize_bilinear(np.ones((1, 1, 8, 8), np.float32), 28).shape
        (1, 1, 28, 28)
    """
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    n, c, h, w = images.shape

    def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, wy = _axis(h, out_h)
    x0, x1, wx = _axis(w, out_w)
    img = images.astype(np.float64, copy=False)
    rows = img[:, :, y0, :] * (1 - wy)[None, None, :, None] + img[:, :, y1, :] * wy[None, None, :, None]
    out = rows[:, :, :, x0] * (1 - wx) + rows[:, :, :, x1] * wx
    return out.astype(np.float32)


@DATASETS.register("digits")
def digits(size: int = 28) -> Dataset:
    """scikit-learn's ``load_digits()``: 1,797 real 8x8 handwritten digits (UCI), grey levels 0..16,
    scaled to [0, 1] and resized bilinearly (:func:`resize_bilinear`) to ``size`` x ``size``.

    Args:
        size: output height and width (8 keeps the original resolution).
    """
    from sklearn.datasets import load_digits

    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"data.kwargs.size: expected a positive integer, got {size!r}")
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        x = resize_bilinear(x, size)
    return Dataset(np.clip(x, 0.0, 1.0), d.target.astype(np.int64), [str(c) for c in d.target_names],
                   value_range=(0.0, 1.0))


@DATASETS.register("npz")
def npz(path: str, x_key: str = "x", y_key: str | None = "y", labels: Sequence[str] | None = None,
        add_channel_axis: bool | None = None) -> Dataset:
    """A user's arrays: ``x`` of any shape (N, ...), uint8 (raw pixels: range [0, 255], scaled by 1/255) or float;
    ``y`` integer class indices or strings (mapped to indices in sorted order; the names become the labels).

    The user's own split: arrays ``x_train``/``y_train``, ``x_test``/``y_test`` and optionally
    ``x_calibration``/``y_calibration`` (else carved from train by the recipe's fractions) replace the seeded
    split. Without ``y`` (``y_key: null``, or no such array) the data is unlabelled (self-distillation).

    Args:
        add_channel_axis: (N, H, W) -> (N, 1, H, W). None: only for square (N, H, W) images; (N, C, L) signals
            keep their shape.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data.kwargs.path: {p} is not a file")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise ConfigError(f"{p}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    own = [k for k in SPLITS if f"{x_key}_{k}" in arrays]
    if own:
        if "train" not in own or "test" not in own:
            raise ConfigError(f"{p}: a split of your own needs {x_key}_train and {x_key}_test "
                              f"(and optionally {x_key}_calibration); found {[f'{x_key}_{k}' for k in own]}")
        xs = [arrays[f"{x_key}_{k}"] for k in own]
        ys = [_npz_labels(arrays, f"{y_key}_{k}" if y_key else None, len(xk), p) for k, xk in zip(own, xs)]
        sizes = np.cumsum([0] + [len(xk) for xk in xs])
        splits = {k: np.arange(sizes[i], sizes[i + 1]) for i, k in enumerate(own)}
        x, y_raw = np.concatenate(xs), np.concatenate(ys)
    else:
        if x_key not in arrays:
            raise ConfigError(f"{p}: array {x_key!r} not found; arrays: {', '.join(arrays)}")
        x, splits = arrays[x_key], None
        y_raw = _npz_labels(arrays, y_key, len(x), p)
    if add_channel_axis is None:
        add_channel_axis = x.ndim == 3 and x.shape[1] == x.shape[2]
    if add_channel_axis:
        if x.ndim != 3:
            raise ConfigError(f"{p}: add_channel_axis needs x of shape (N, H, W), got {x.shape}")
        x = x[:, None]
    if x.ndim < 2:
        raise ConfigError(f"{p}: {x_key} must have shape (N, ...) with at least one axis per sample, got {x.shape}")
    y, names = encode_labels(y_raw, labels, str(p))
    if x.dtype == np.uint8:
        return Dataset(x, y, names, scale=1.0 / 255.0, value_range=(0.0, 255.0), splits=splits)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ConfigError(f"{p}: {x_key} must hold numbers, got dtype {x.dtype}")
    x = x.astype(np.float32)
    check_finite(x, str(p))
    lo, hi = float(x.min()), float(x.max())
    rng = (0.0, 1.0) if 0.0 <= lo and hi <= 1.0 and x.ndim >= 3 else None   # float images in [0, 1]
    return Dataset(x, y, names, value_range=rng, splits=splits)


def _npz_labels(arrays: Mapping[str, np.ndarray], key: str | None, n: int, p: Path) -> np.ndarray:
    if key is None or key not in arrays:
        if key is not None and key != "y" and not key.startswith("y_"):
            raise ConfigError(f"{p}: array {key!r} not found; arrays: {', '.join(arrays)}")
        return np.full(n, -1, dtype=np.int64)   # unlabelled
    y = arrays[key]
    if y.ndim != 1 or len(y) != n:
        raise ConfigError(f"{p}: {key} must have shape ({n},) (one label per sample), got {y.shape}")
    return y


def encode_labels(y: np.ndarray, names: Sequence[str] | None, where: str) -> tuple[np.ndarray, list[str]]:
    """Class indices and names from integer indices (-1: no label) or strings (sorted names -> indices).

    Example:
        >>> encode_labels(np.array(["b", "a", "b"]), None, "x")
        (array([1, 0, 1]), ['a', 'b'])
    """
    y = np.asarray(y)
    if y.dtype.kind in ("U", "S", "O"):
        text = y.astype(str)
        classes = sorted(set(text.tolist()) - {""})
        if names is not None:
            unknown = sorted(set(classes) - {str(n) for n in names})
            if unknown:
                raise ConfigError(f"{where}: labels {unknown[:5]} are not among the given names {list(names)}")
            classes = [str(n) for n in names]
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index.get(t, -1) for t in text], dtype=np.int64), classes
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{where}: labels must be integer class indices or strings, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < -1:
        raise ConfigError(f"{where}: labels must be class indices >= 0 (or -1 for no label), got {int(y.min())}")
    n_classes = int(y.max()) + 1 if len(y) and y.max() >= 0 else 0
    if names is not None:
        if len(names) < n_classes:
            raise ConfigError(f"{where}: {len(names)} label names for {n_classes} classes")
        return y, [str(s) for s in names]
    return y, [str(c) for c in range(n_classes)]


def check_finite(x: np.ndarray, where: str) -> None:
    """Refuse NaN/Inf in data, naming the file and how many samples."""
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if len(x) else np.zeros(0, bool)
        if bad.any():
            raise ConfigError(f"{where}: {int(bad.sum())} sample(s) contain NaN or Inf (first: sample "
                              f"{int(np.flatnonzero(bad)[0])})")


@DATASETS.register("image_folder")
def image_folder(root: str, size: int | Sequence[int] = 28, channels: int = 1,
                 extensions: Sequence[str] = (".png", ".jpg", ".jpeg", ".bmp"), on_error: str = "fail") -> Dataset:
    """A folder per class (``root/<class>/<image>``, classes in sorted order; the folder names are the labels), read
    with Pillow, converted to grey (``channels=1``) or RGB (3), resized bilinearly to ``size``; raw uint8 pixels
    (range [0, 255], scaled by 1/255). A split of your own: ``root/train/<class>/...``, ``root/test/<class>/...``
    and optionally ``root/calibration/`` (or ``val/``).

    Args:
        on_error: ``fail`` on the first unreadable image (named), or ``skip`` them (counted in the bundle's notes).
    """
    from PIL import Image

    base = Path(root)
    if channels not in (1, 3):
        raise ConfigError(f"data.kwargs.channels: expected 1 or 3, got {channels!r}")
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"data.kwargs.on_error: expected fail or skip, got {on_error!r}")
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    split_dirs = {"train": base / "train", "test": base / "test",
                  "calibration": base / "calibration" if (base / "calibration").is_dir() else base / "val"}
    own = [k for k in SPLITS if split_dirs[k].is_dir()]
    roots = {k: split_dirs[k] for k in own} if "train" in own and "test" in own else {"all": base}
    class_sets = [sorted(d.name for d in r.iterdir() if d.is_dir()) if r.is_dir() else [] for r in roots.values()]
    classes = sorted(set().union(*class_sets))
    if not classes:
        raise ConfigError(f"data.kwargs.root: {base} holds no class folders")
    exts = {e.lower() for e in extensions}
    xs: list[np.ndarray] = []
    ys: list[int] = []
    parts: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for split, folder in roots.items():
        start = len(xs)
        for label, name in enumerate(classes):
            d = folder / name
            for f in sorted(d.iterdir()) if d.is_dir() else []:
                if f.suffix.lower() not in exts:
                    continue
                try:
                    with Image.open(f) as im:
                        im = im.convert("L" if channels == 1 else "RGB").resize((hw[1], hw[0]),
                                                                                Image.Resampling.BILINEAR)
                        a = np.asarray(im, dtype=np.uint8)
                except Exception as exc:  # Pillow raises many types for a corrupt file
                    if on_error == "fail":
                        raise ConfigError(f"{f}: not a readable image ({type(exc).__name__}: {exc}); "
                                          "data.kwargs.on_error: skip leaves such files out") from None
                    skipped.append(str(f))
                    continue
                xs.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
                ys.append(label)
        parts[split] = np.arange(start, len(xs))
    if not xs:
        raise ConfigError(f"data.kwargs.root: no images with extensions {sorted(exts)} under {base}")
    notes = [f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped[:5])}"] if skipped else []
    return Dataset(np.stack(xs), np.asarray(ys, dtype=np.int64), classes, scale=1.0 / 255.0,
                   value_range=(0.0, 255.0), splits=None if "all" in parts else parts, notes=notes)


@DATASETS.register("csv")
def csv_table(path: str, label_column: str | None = "label", feature_columns: Sequence[str] | None = None,
              delimiter: str = ",", on_error: str = "fail") -> Dataset:
    """A table with a header row: numeric feature columns -> x (N, D) float32; the label column (numbers or
    strings, mapped to class indices in sorted order) -> y. No label column (``label_column: null``): unlabelled.

    Args:
        feature_columns: the columns to use, in order (default: every column but the label).
        on_error: ``fail`` on the first bad row (named by line), or ``skip`` bad rows (counted).
    """
    import csv

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data.kwargs.path: {p} is not a file")
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"data.kwargs.on_error: expected fail or skip, got {on_error!r}")
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{p}: not a readable CSV file ({exc})") from None
    if len(rows) < 2:
        raise ConfigError(f"{p}: expected a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column is not None and label_column not in header:
        raise ConfigError(f"{p}: no label column {label_column!r}; columns: {', '.join(header)}")
    features = list(feature_columns) if feature_columns is not None else [h for h in header if h != label_column]
    missing = [c for c in features if c not in header]
    if missing or not features:
        raise ConfigError(f"{p}: feature columns {missing or features} not in the header ({', '.join(header)})")
    cols = [header.index(c) for c in features]
    li = header.index(label_column) if label_column is not None else None
    xs: list[list[float]] = []
    ys: list[str] = []
    bad: list[int] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields, the header has {len(header)}")
            values = [float(row[c]) for c in cols]
            if not all(np.isfinite(values)):
                raise ValueError("NaN or Inf")
        except ValueError as exc:
            if on_error == "fail":
                raise ConfigError(f"{p}: line {line}: {exc} (data.kwargs.on_error: skip leaves bad rows out)") \
                    from None
            bad.append(line)
            continue
        xs.append(values)
        ys.append(row[li].strip() if li is not None else "")
    if not xs:
        raise ConfigError(f"{p}: no usable rows")
    raw = np.asarray(ys)
    names: list[str]
    if li is None:
        y, names = np.full(len(xs), -1, dtype=np.int64), []
    else:
        try:
            y, names = encode_labels(np.asarray([int(v) for v in ys]), None, str(p))
        except ValueError:
            y, names = encode_labels(raw, None, str(p))
    notes = [f"skipped {len(bad)} bad row(s) (lines {bad[:10]})"] if bad else []
    return Dataset(np.asarray(xs, dtype=np.float32), y, names, notes=notes)


@dataclass(frozen=True)
class DataSpec:
    """Which data set and which split: recorded in the bundle's ``data`` section."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))

    @classmethod
    def from_any(cls, spec: str | Mapping[str, Any] | DataSpec) -> DataSpec:
        """From a name (``"digits"``), a mapping (a recipe's or manifest's ``data`` section) or a bundle dir."""
        if isinstance(spec, DataSpec):
            return spec
        if isinstance(spec, (str, Path)):
            manifest = Path(spec) / "manifest.json"
            if manifest.is_file():
                data = json.loads(manifest.read_text(encoding="utf-8")).get("data")
                if not data:
                    raise ConfigError(f"{manifest}: the bundle has no 'data' section")
                return cls.from_any(data)
            return cls(str(spec))
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"data spec: expected a dataset name or a mapping with 'name', got {spec!r}")
        split = spec.get("split", {}) or {}
        fractions = dict(split.get("fractions", spec.get("fractions", DEFAULT_FRACTIONS)))
        seed = split.get("seed", spec.get("seed", 0))
        return cls(str(spec["name"]), dict(spec.get("kwargs") or {}), int(seed), fractions)


def stratified_split(y: np.ndarray, fractions: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    """Split indices per class with ``np.random.RandomState(seed)`` (a stream numpy keeps stable across
    versions): each class is permuted, the first round(f_cal*n_c) go to calibration, the next
    round(f_test*n_c) to test, the rest to train. Returns sorted index arrays per split.

    Example:
        >>> s = stratified_split(np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]), DEFAULT_FRACTIONS, seed=0)
        >>> [len(s[k]) for k in SPLITS]
        [6, 2, 2]
    """
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise ConfigError(f"data.split.fractions.{unknown[0]} is not a split; splits: {', '.join(SPLITS)}")
    f = {k: float(fractions.get(k, 0.0)) for k in SPLITS}
    if any(v < 0 for v in f.values()) or abs(sum(f.values()) - 1.0) > 1e-6:
        raise ConfigError(f"data.split.fractions: must be >= 0 and sum to 1, got {f}")
    rs = np.random.RandomState(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SPLITS}
    needed = sum(1 for v in f.values() if v > 0)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) and counts.min() < needed:
        c = classes[int(np.argmin(counts))]
        raise ConfigError(f"data.split: class {int(c)} has {int(counts.min())} sample(s); a stratified split into "
                          f"{needed} parts needs at least {needed} per class (add samples, drop the class, or give "
                          "your own split)")
    for c in classes:
        idx = rs.permutation(np.flatnonzero(y == c))
        n_cal = int(round(f["calibration"] * len(idx)))
        n_test = int(round(f["test"] * len(idx)))
        parts["calibration"].append(idx[:n_cal])
        parts["test"].append(idx[n_cal:n_cal + n_test])
        parts["train"].append(idx[n_cal + n_test:])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}


def indices_sha256(indices: np.ndarray) -> str:
    """sha256 of sorted indices as little-endian int64 bytes (the split's fingerprint)."""
    return hashlib.sha256(np.sort(np.asarray(indices)).astype("<i8").tobytes()).hexdigest()


@dataclass(frozen=True)
class SplitData:
    """A data set cut into train / calibration / test, plus what the manifest records about it."""

    spec: DataSpec
    dataset: Dataset
    indices: dict[str, np.ndarray]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of one split: raw samples (not normalised) and labels (-1: none)."""
        if split not in self.indices:
            raise ConfigError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        idx = self.indices[split]
        return self.dataset.x[idx], self.dataset.y[idx]

    def normalization(self) -> dict[str, Any]:
        """The manifest's input ``preprocessing``: ``scale``, then the training split's mean/std per channel (axis 1;
        per feature for (N, D) data), and the raw dtype and range the bundle expects (when the data has one)."""
        x, _ = self.arrays("train")
        ds = self.dataset
        xs = x.astype(np.float64) * ds.scale
        axes = (0,) if xs.ndim == 2 else (0, *range(2, xs.ndim))
        mean = xs.mean(axis=axes)
        std = np.maximum(xs.std(axis=axes), 1e-6)
        per = "feature" if xs.ndim == 2 else "channel"
        out: dict[str, Any] = {"scale": ds.scale, "mean": [round(float(m), 6) for m in np.atleast_1d(mean)],
                               "std": [round(float(v), 6) for v in np.atleast_1d(std)],
                               "description": f"raw {self.spec.name} samples"
                               + (f" (x{ds.scale:.6g})" if ds.scale != 1.0 else "")
                               + f"; x' = (x * scale - mean) / std per {per} (mean/std of the training split)"}
        if ds.value_range is not None:
            out["input_range"] = [float(ds.value_range[0]), float(ds.value_range[1])]
        out["input_dtype"] = "uint8" if x.dtype == np.uint8 else "float32"
        return out

    def manifest_section(self) -> dict[str, Any]:
        """The bundle's ``data`` section: enough for :func:`load_split` to rebuild and check every split."""
        own = self.dataset.splits is not None
        out = {
            "name": self.spec.name,
            "kwargs": dict(self.spec.kwargs),
            "split": {"seed": self.spec.seed, "fractions": dict(self.spec.fractions),
                      "method": "given" if own else "stratified"},
            "counts": {k: int(len(v)) for k, v in self.indices.items()},
            "num_classes": len(self.dataset.labels),
            "input_shape": list(self.dataset.x.shape[1:]),
            "test_indices_sha256": indices_sha256(self.indices["test"]),
        }
        if not self.dataset.labelled:
            out["labelled"] = False
        if self.dataset.notes:
            out["notes"] = list(self.dataset.notes)
        return out


def apply_preprocessing(x: np.ndarray, preprocessing: Mapping[str, Any] | None) -> np.ndarray:
    """x' = (x * scale - mean) / std per channel (axis 1; per feature for (N, D)), as float32: exactly
    :meth:`edge_runtime.manifest.Preprocessing.apply`, what ``Runtime.preprocess`` does."""
    from edge_runtime.manifest import Preprocessing

    pre = Preprocessing.from_dict(preprocessing)
    return np.asarray(x, dtype=np.float32) if pre is None else pre.apply(x)


def build_split(spec: str | Mapping[str, Any] | DataSpec) -> SplitData:
    """Load the data set named by ``spec`` and split it (seeded, stratified)."""
    ds = DataSpec.from_any(spec)
    factory = DATASETS.get(ds.name)
    try:
        inspect.signature(factory).bind(**ds.kwargs)
    except TypeError as exc:  # a missing or unknown keyword: say which data set and what it takes
        raise ConfigError(f"data.kwargs of dataset {ds.name!r}: {exc}; it takes "
                          f"{', '.join(inspect.signature(factory).parameters)}") from None
    dataset = factory(**ds.kwargs)
    check_finite(dataset.x, f"dataset {ds.name!r}")
    if dataset.splits is None:
        return SplitData(ds, dataset, stratified_split(dataset.y, ds.fractions, ds.seed))
    return SplitData(ds, dataset, _given_split(dataset, ds))


def _given_split(dataset: Dataset, ds: DataSpec) -> dict[str, np.ndarray]:
    """The user's own split; without a calibration part, one is carved (stratified, seeded) from train."""
    given = {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in (dataset.splits or {}).items()}
    if "calibration" not in given:
        train = given["train"]
        f_cal = ds.fractions.get("calibration", 0.2) / max(1e-9, ds.fractions.get("train", 0.6)
                                                           + ds.fractions.get("calibration", 0.2))
        inner = stratified_split(dataset.y[train], {"train": 1 - f_cal, "calibration": f_cal, "test": 0.0}, ds.seed)
        given["train"], given["calibration"] = train[inner["train"]], train[inner["calibration"]]
    return {k: given[k] for k in SPLITS}


def load_split(spec: str | Mapping[str, Any] | DataSpec, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Rebuild one split of a data set: ``(x, y)``, x the raw samples (not normalised: pass them through
    ``Runtime.preprocess``).

    Args:
        spec: a dataset name (defaults), a mapping (recipe or manifest ``data`` section), or a bundle
            directory (its manifest's ``data`` section is used).
        split: ``train``, ``calibration`` or ``test``.

    Raises:
        ConfigError: unknown dataset or split, or the rebuilt test split does not match the sha256
            (or counts) the manifest recorded.

    Example:
        >>> x, y = load_split("out/branchynet_resnet", "test")     # doctest: +SKIP
    """
    sd = build_split(spec)
    if isinstance(spec, (str, Path, Mapping)):
        recorded = spec if isinstance(spec, Mapping) else _bundle_data(spec)
        want = (recorded or {}).get("test_indices_sha256")
        if want and want != indices_sha256(sd.indices["test"]):
            raise ConfigError(f"data split mismatch: the rebuilt test split of {sd.spec.name!r} does not match "
                              "the recorded test_indices_sha256 (different data, numpy or arguments)")
        counts = (recorded or {}).get("counts")
        if counts and {k: int(len(v)) for k, v in sd.indices.items()} != dict(counts):
            raise ConfigError(f"data split mismatch: rebuilt counts differ from the recorded {counts}")
    return sd.arrays(split)


def _bundle_data(spec: str | Path) -> dict[str, Any] | None:
    manifest = Path(spec) / "manifest.json"
    if manifest.is_file():
        return json.loads(manifest.read_text(encoding="utf-8")).get("data")
    return None


#: WordNet's 45 lexicographer files (lexnames(5WN)): a synset's ``lex_filenum`` is its index here
WORDNET_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
WORDNET_DIR = "/usr/share/wordnet"


def _subsample(y: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices keeping at most ``per_class`` samples of each class (seeded), all when None."""
    if per_class is None:
        return np.arange(len(y))
    rs = np.random.RandomState(seed)
    keep = [rs.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


@DATASETS.register("wordnet")
def wordnet(root: str = WORDNET_DIR, parts: Sequence[str] = ("noun", "verb", "adj", "adv"),
            max_per_class: int | None = None, min_per_class: int = 10, seed: int = 0) -> Dataset:
    """WordNet glosses labelled with their synset's lexicographer category (``noun.animal``, ``verb.motion``, ...):
    one sample per synset line of ``<root>/data.<part>`` (the Debian package ``wordnet-base``), the text after
    ``|`` (definition and examples) and the line's ``lex_filenum`` as the class. 117,659 synsets in 45 classes
    with every part.

    Args:
        root: the WordNet database directory.
        parts: which ``data.<part>`` files to read (``noun`` alone: the 26 noun categories).
        max_per_class: keep at most this many glosses per category (seeded), for a smaller task; None keeps all.
        min_per_class: drop categories with fewer glosses (a stratified split needs a few per split).
        seed: the subsample's seed.

    Class indices are renumbered 0..K-1 over the categories kept; ``labels`` are their names.
    """
    base = Path(root)
    texts: list[str] = []
    lex: list[int] = []
    for part in parts:
        path = base / f"data.{part}"
        if not path.is_file():
            raise ConfigError(f"{path}: WordNet data file not found; install the Debian package 'wordnet-base' "
                              "(apt-get install wordnet-base) or set data.kwargs.root")
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.startswith("  "):  # the licence header
                    continue
                head, sep, gloss = line.partition("|")
                fields = head.split()
                if not sep or len(fields) < 2 or not fields[1].isdigit() or not gloss.strip():
                    raise ConfigError(f"{path}:{n}: not a WordNet data line "
                                      "(expected 'offset lex_filenum ... | gloss')")
                texts.append(gloss.strip())
                lex.append(int(fields[1]))
    y_lex = np.asarray(lex, dtype=np.int64)
    if y_lex.max() >= len(WORDNET_LEXNAMES):
        raise ConfigError(f"{base}: lex_filenum {int(y_lex.max())} beyond the {len(WORDNET_LEXNAMES)} known categories")
    counts = np.bincount(y_lex, minlength=len(WORDNET_LEXNAMES))
    kept = [c for c in range(len(WORDNET_LEXNAMES)) if counts[c] >= min_per_class]
    remap = np.full(len(WORDNET_LEXNAMES), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    y = remap[y_lex]
    idx = np.flatnonzero(y >= 0)
    idx = idx[_subsample(y[idx], max_per_class, seed)]
    return Dataset(np.asarray([texts[i] for i in idx], dtype=object), y[idx], [WORDNET_LEXNAMES[c] for c in kept])


@DATASETS.register("text_jsonl")
def text_jsonl(path: str, text_key: str = "text", label_key: str = "label",
               labels: Sequence[str] | None = None) -> Dataset:
    """A user's texts: one JSON object per line, ``{"text": "...", "label": ...}``; labels are class names
    (strings, sorted to classes 0..K-1 unless ``labels`` gives the order) or integer class indices (-1: no
    label), mapped by :func:`encode_labels` like every data set's labels.

    Errors name the file and line (bad JSON, a missing key, an empty text, an unknown label).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data.kwargs.path: {p} is not a file")
    texts: list[str] = []
    raw: list[Any] = []
    with p.open(encoding="utf-8", errors="strict") as f:
        try:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"{p}:{n}: not a JSON object ({exc})") from None
                if not isinstance(rec, dict) or text_key not in rec or label_key not in rec:
                    raise ConfigError(f"{p}:{n}: expected an object with {text_key!r} and {label_key!r}")
                text = rec[text_key]
                if not isinstance(text, str) or not text.strip():
                    raise ConfigError(f"{p}:{n}: {text_key!r} must be a non-empty string")
                texts.append(text)
                raw.append(rec[label_key])
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not texts:
        raise ConfigError(f"{p}: no samples")
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
    y, names = encode_labels(np.asarray(raw if ints else [str(v) for v in raw]), labels, str(p))
    return Dataset(np.asarray(texts, dtype=object), y, names)
