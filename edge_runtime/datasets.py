"""Datasets for training, calibration and on-device benchmarks: one registry, a seeded stratified split.

Numpy only (scikit-learn and Pillow are imported inside the loaders that need them; never torch),
so the device-side benchmark rebuilds exactly the test split a bundle was calibrated against:
the bundle's ``data`` section records the dataset name and arguments, the seed, the fractions,
the counts per split and a sha256 of the test indices, and :func:`load_split` checks it.

Every loader returns images as float32 (N, C, H, W) scaled to [0, 1] plus int64 labels; the
normalisation (per-channel mean/std of the training split) is recorded as the bundle's input
preprocessing, which :meth:`edge_runtime.Runtime.preprocess` applies on the device.

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
    """A whole labelled data set, before splitting.

    Attributes:
        x: float32 images, shape (N, C, H, W), values in [0, 1].
        y: int64 class indices, shape (N,).
        labels: one name per class.
    """

    x: np.ndarray
    y: np.ndarray
    labels: list[str] = field(default_factory=list)


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
    return Dataset(np.clip(x, 0.0, 1.0), d.target.astype(np.int64), [str(c) for c in d.target_names])


@DATASETS.register("npz")
def npz(path: str, x_key: str = "x", y_key: str = "y", labels: Sequence[str] | None = None) -> Dataset:
    """A user's arrays: ``x`` (N, C, H, W) or (N, H, W), uint8 (divided by 255) or float in [0, 1];
    ``y`` integer class indices.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data.kwargs.path: {p} is not a file")
    with np.load(p, allow_pickle=False) as f:
        for key in (x_key, y_key):
            if key not in f:
                raise ConfigError(f"{p}: array {key!r} not found; arrays: {', '.join(f.files)}")
        x, y = f[x_key], f[y_key]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(f"{p}: expected {x_key} of shape (N, C, H, W) or (N, H, W) and {y_key} of shape (N,), "
                          f"got {x.shape} and {y.shape}")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ConfigError(f"{p}: {y_key} must hold non-negative integer class indices")
    n_classes = int(y.max()) + 1
    names = [str(s) for s in labels] if labels is not None else [str(c) for c in range(n_classes)]
    return Dataset(x, y.astype(np.int64), names)


@DATASETS.register("image_folder")
def image_folder(root: str, size: int = 28, channels: int = 1,
                 extensions: Sequence[str] = (".png", ".jpg", ".jpeg", ".bmp")) -> Dataset:
    """A folder per class (``root/<class>/<image>``, classes in sorted order), read with Pillow,
    converted to grey (``channels=1``) or RGB (3), resized bilinearly to ``size`` x ``size``, scaled to [0, 1].
    """
    from PIL import Image

    base = Path(root)
    classes = sorted(d.name for d in base.iterdir() if d.is_dir()) if base.is_dir() else []
    if not classes:
        raise ConfigError(f"data.kwargs.root: {base} holds no class folders")
    if channels not in (1, 3):
        raise ConfigError(f"data.kwargs.channels: expected 1 or 3, got {channels!r}")
    xs, ys = [], []
    exts = {e.lower() for e in extensions}
    for label, name in enumerate(classes):
        for f in sorted((base / name).iterdir()):
            if f.suffix.lower() not in exts:
                continue
            with Image.open(f) as im:
                im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
            xs.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise ConfigError(f"data.kwargs.root: no images with extensions {sorted(exts)} under {base}")
    return Dataset(np.stack(xs), np.asarray(ys, dtype=np.int64), classes)


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
    for c in np.unique(y):
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
        """(x, y) of one split; x in [0, 1], not normalised."""
        if split not in self.indices:
            raise ConfigError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        idx = self.indices[split]
        return self.dataset.x[idx], self.dataset.y[idx]

    def normalization(self) -> dict[str, Any]:
        """Per-channel mean/std of the training split, as the manifest's input ``preprocessing``."""
        x, _ = self.arrays("train")
        mean = x.mean(axis=(0, 2, 3)).astype(np.float64)
        std = np.maximum(x.std(axis=(0, 2, 3)).astype(np.float64), 1e-6)
        return {"scale": 1.0, "mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std],
                "description": f"raw {self.spec.name} pixels in [0, 1]; x' = (x - mean) / std "
                               "(mean/std of the training split)"}

    def manifest_section(self) -> dict[str, Any]:
        """The bundle's ``data`` section: enough for :func:`load_split` to rebuild and check every split."""
        return {
            "name": self.spec.name,
            "kwargs": dict(self.spec.kwargs),
            "split": {"seed": self.spec.seed, "fractions": dict(self.spec.fractions), "method": "stratified"},
            "counts": {k: int(len(v)) for k, v in self.indices.items()},
            "num_classes": len(self.dataset.labels),
            "input_shape": list(self.dataset.x.shape[1:]),
            "test_indices_sha256": indices_sha256(self.indices["test"]),
        }


def apply_preprocessing(x: np.ndarray, preprocessing: Mapping[str, Any] | None) -> np.ndarray:
    """x' = (x * scale - mean) / std per channel (axis 1), as float32 — what ``Runtime.preprocess`` does."""
    pre = preprocessing or {}
    out = np.asarray(x, dtype=np.float64) * pre.get("scale", 1.0)
    shape = (1, -1) + (1,) * (out.ndim - 2)
    if "mean" in pre:
        out = out - np.asarray(pre["mean"], dtype=np.float64).reshape(shape)
    if "std" in pre:
        out = out / np.asarray(pre["std"], dtype=np.float64).reshape(shape)
    return out.astype(np.float32)


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
    return SplitData(ds, dataset, stratified_split(dataset.y, ds.fractions, ds.seed))


def load_split(spec: str | Mapping[str, Any] | DataSpec, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Rebuild one split of a data set: ``(x, y)``, x float32 (N, C, H, W) in [0, 1] (not normalised:
    pass it through ``Runtime.preprocess``).

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
    (strings, sorted to classes 0..K-1 unless ``labels`` gives the order) or integer class indices.

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
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        y = np.asarray(raw, dtype=np.int64)
        if y.min() < 0:
            raise ConfigError(f"{p}: integer labels must be >= 0")
        names = [str(s) for s in labels] if labels is not None else [str(c) for c in range(int(y.max()) + 1)]
    else:
        names = [str(s) for s in labels] if labels is not None else sorted({str(v) for v in raw})
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted({str(v) for v in raw} - set(index))
        if unknown:
            raise ConfigError(f"{p}: label(s) {unknown[:5]} not in data.kwargs.labels")
        y = np.asarray([index[str(v)] for v in raw], dtype=np.int64)
    if int(y.max()) >= len(names):
        raise ConfigError(f"{p}: label {int(y.max())} but only {len(names)} class names")
    return Dataset(np.asarray(texts, dtype=object), y, names)
