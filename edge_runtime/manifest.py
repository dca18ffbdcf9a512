"""The bundle manifest as typed, frozen records: the one module that reads and writes ``manifest.json``.

A manifest is validated in two steps, both naming the file and the field that is wrong: the JSON schema
(``schemas/manifest.schema.json``: types, required fields, value ranges) and the cross-field rules below
(indices in order, one exit per segment, threshold counts, tensor names that chain across cuts). Then it
becomes a :class:`Manifest`; code reads attributes, never string keys. Free-form records a tool keeps for
people (the resolved recipe, the data split, training history) stay plain dicts.

Format version 2 (this runtime): several named model inputs (``inputs``), segments that pass any number of
named hidden tensors across a cut, and a generic ``parts`` section where a paper method keeps its
extra graphs and the mode that runs them. Version 1 bundles are refused with a message naming the version.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime._json import json_problem, no_duplicate_keys
from edge_runtime.errors import BundleError, InputError
from edge_runtime.files import FORMAT_NAME, MANIFEST_NAME, write_json_atomic

FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (2,)
#: file precisions, from the reference to the most compressed (``int8``: static, ``int8_dynamic``: dynamic range)
PRECISIONS = ("fp32", "fp16", "int8", "int8_dynamic")
#: the name of every segment's exit output (the answer at that exit)
EXIT_OUTPUT = "exit"
#: bounds on what a manifest may declare (a hostile one must not make the loader allocate without limit): the
#: manifest file's size, how deep its JSON may nest, one axis of a tensor, the elements of one sample (the largest
#: realistic edge input, a 4K RGB frame, is 25M) and a file's fixed batch size (also in the schema)
MAX_MANIFEST_BYTES = 16 << 20
MAX_NESTING = 64
MAX_DIM = 2**31 - 1
MAX_SAMPLE_ELEMENTS = 1 << 25
MAX_FILE_BATCH = 4096
#: a non-final segment's decision score, computed inside its graph by the bundle policy's own formula (optional;
#: ``segments[i].score`` records which policy and arguments), so the executor compares one number per sample
SCORE_OUTPUT = EXIT_OUTPUT + ".score"
NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
             "int32": np.int32, "int64": np.int64, "bool": np.bool_}


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The JSON schema of the manifest (``edge_runtime/schemas/manifest.schema.json``)."""
    text = resources.files("edge_runtime").joinpath("schemas/manifest.schema.json").read_text()
    return json.loads(text)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of a graph: shape with ``None`` for dynamic axes (the first is the batch)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d.get("dtype", "float32"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @cached_property
    def np_dtype(self) -> np.dtype:
        return np.dtype(NP_DTYPES[self.dtype])


@dataclass(frozen=True)
class Preprocessing:
    """What turns a raw input into a model-ready one: ``x' = (x * scale - mean) / std`` per channel (axis 1; per
    feature for an (N, D) input), and the dtype and range raw inputs come in (``input_dtype``, ``input_range``).

    Example:
        >>> Preprocessing(scale=0.5, mean=(1.0,), std=(2.0,)).apply(np.full((1, 1, 2), 4.0)).tolist()
        [[[0.5, 0.5]]]
        >>> Preprocessing(scale=1 / 255, mean=(0.5,), std=(0.25,), input_range=(0.0, 255.0)).model_range()
        (array([-2.]), array([2.]))
    """

    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: tuple[int, ...] | None = None
    description: str | None = None
    input_range: tuple[float, float] | None = None
    input_dtype: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Preprocessing | None:
        if not d:
            return None
        rng = d.get("input_range")
        return cls(float(d.get("scale", 1.0)), _tuple(d.get("mean")), _tuple(d.get("std")), _tuple(d.get("resize")),
                   d.get("description"), None if rng is None else (float(rng[0]), float(rng[1])),
                   d.get("input_dtype"))

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"scale": self.scale, "mean": _list(self.mean), "std": _list(self.std),
                           "resize": _list(self.resize), "input_range": _list(self.input_range),
                           "input_dtype": self.input_dtype, "description": self.description})

    def check_shape(self, x: np.ndarray, what: str = "input") -> None:
        """Refuse a raw batch that is not ``(N, C, ...)`` (or ``(N, D)``) with C matching ``mean``/``std`` (a scale
        alone: any batch with a batch axis).

        Raises:
            InputError: naming the shape expected and the one given.
        """
        channels = max(len(self.mean or ()), len(self.std or ()))
        expected = f"(N, {channels}, ...)" if channels > 1 else "(N, C, ...) or (N, D)"
        shape = np.shape(x)
        rank = 2 if channels else 1   # a scale alone applies to any batch
        if len(shape) < rank or (channels > 1 and shape[1] != channels):
            raise InputError(f"{what}: expected shape {expected} (channels on axis 1), got {tuple(shape)}")

    def apply(self, x: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """Apply to a raw batch ``(N, C, ...)`` (or ``(N, D)``: per feature); returns ``dtype``.

        Raises:
            InputError: ``x`` is not a batch of that shape (:meth:`check_shape`).
        """
        self.check_shape(x, "raw input")
        out = np.asarray(x, dtype=np.float64) * self.scale
        shape = (1, -1) + (1,) * max(out.ndim - 2, 0)
        if self.mean is not None:
            out = out - np.asarray(self.mean, dtype=np.float64).reshape(shape)
        if self.std is not None:
            out = out / np.asarray(self.std, dtype=np.float64).reshape(shape)
        return out.astype(dtype)

    def model_range(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per channel (or feature), the range model-ready inputs lie in when raw ones lie in ``input_range``."""
        if self.input_range is None:
            return None
        n = len(self.mean or self.std or (0,)) or 1
        lo, hi = (self.apply(np.full((1, n), v), np.float64)[0] for v in self.input_range)
        return np.minimum(lo, hi), np.maximum(lo, hi)

    def check_raw(self, x: np.ndarray, what: str = "input") -> None:
        """Refuse raw inputs outside ``input_range`` (or of another kind than ``input_dtype``).

        Raises:
            InputError: naming how many samples are outside and the range expected (or the shape expected).
        """
        self.check_shape(x, what)
        if self.input_dtype is not None and np.dtype(self.input_dtype).kind in "iu" and x.dtype.kind == "f" \
                and self.input_range is not None and float(np.max(x)) <= 1.0 < self.input_range[1] and x.size:
            raise InputError(f"{what}: raw inputs are expected as {self.input_dtype} in {list(self.input_range)}; "
                             f"got {x.dtype} values in [{float(np.min(x)):.3g}, {float(np.max(x)):.3g}] (already "
                             "scaled? pass the raw values, or model-ready ones without preprocessing)")
        if self.input_range is None or not x.size:
            return
        lo, hi = self.input_range
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        bad = ((flat < lo) | (flat > hi) | ~np.isfinite(flat)).any(axis=1)
        if bad.any():
            raise InputError(f"{what}: {int(bad.sum())} sample(s) have raw values outside the declared range "
                             f"[{lo:g}, {hi:g}] (got [{float(np.nanmin(flat)):.4g}, {float(np.nanmax(flat)):.4g}])")

    def check_model_ready(self, x: np.ndarray, what: str = "input") -> None:
        """Refuse model-ready inputs outside the range that raw inputs in ``input_range`` map to (a small slack
        for rounding): raw, unnormalised data fed as model-ready is refused instead of answered wrongly.

        Raises:
            InputError: naming the range and pointing at the preprocessing switch.
        """
        bounds = self.model_range()
        if bounds is None or not x.size:
            return
        lo, hi = bounds
        slack = 1e-3 * (hi - lo) + 1e-5
        if len(lo) > 1 and x.ndim >= 2 and x.shape[1] == len(lo):   # per channel (axis 1) or per feature
            shape = [1, -1] + [1] * (x.ndim - 2)
            lo_b, hi_b = (lo - slack).reshape(shape), (hi + slack).reshape(shape)
        else:
            lo_b, hi_b = (lo - slack).min(), (hi + slack).max()
        bad = ((x < lo_b) | (x > hi_b)).reshape(len(x), -1).any(axis=1)
        if bad.any():
            raise InputError(f"{what}: {int(bad.sum())} sample(s) lie outside the range model-ready inputs can have "
                             f"([{float(lo.min()):.4g}, {float(hi.max()):.4g}], from raw inputs in "
                             f"{list(self.input_range or ())} through the bundle's preprocessing); raw inputs? "
                             "preprocess them (run/bench --preprocess, Runtime.preprocess, the request parameter "
                             "preprocess: true)")


def _tuple(v: Any) -> tuple[Any, ...] | None:
    return None if v is None else tuple(v)


def _list(v: Any) -> list[Any] | None:
    return None if v is None else list(v)


@dataclass(frozen=True)
class InputSpec(TensorSpec):
    """One model input: its tensor spec, layout and the preprocessing raw inputs need."""

    layout: str | None = None
    preprocessing: Preprocessing | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"], d.get("layout"),
                   Preprocessing.from_dict(d.get("preprocessing")))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.layout is not None:
            out["layout"] = self.layout
        if self.preprocessing is not None:
            out["preprocessing"] = self.preprocessing.to_dict()
        return out

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        return self.shape[1:]


@dataclass(frozen=True)
class FileEntry:
    """One model file: where (relative to the bundle), its sha256, format, precision and fixed batch size."""

    format: str
    path: str
    sha256: str
    precision: str = "fp32"
    batch_size: int | None = None
    bytes: int | None = None
    quantization: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileEntry:
        return cls(d["format"], d["path"], d["sha256"], d.get("precision", "fp32"), d.get("batch_size"),
                   d.get("bytes"), d.get("quantization"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format, "path": self.path, "sha256": self.sha256,
                               "batch_size": self.batch_size, "precision": self.precision}
        if self.bytes is not None:
            out["bytes"] = self.bytes
        if self.quantization is not None:
            out["quantization"] = self.quantization
        return out


@dataclass(frozen=True)
class GraphSpec:
    """A graph of the bundle (a segment, the one-graph model, a method's part) with its files and costs.

    Attributes:
        files: one file per (format, precision, batch size) variant.
        inputs, outputs: named tensors.
        flops, params: one sample's FLOPs; parameters.
        op_counts: nodes per op type (the ONNX file).
        extra: other recorded facts (``backbone_flops``, ``head_flops``, ``flops_by_op``, ``output``).
    """

    files: tuple[FileEntry, ...]
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    flops: int = 0
    params: int = 0
    op_counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    _KNOWN = ("files", "inputs", "outputs", "flops", "params", "op_counts", "index")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GraphSpec:
        return cls(tuple(FileEntry.from_dict(f) for f in d["files"]),
                   tuple(TensorSpec.from_dict(t) for t in d.get("inputs", ())),
                   tuple(TensorSpec.from_dict(t) for t in d.get("outputs", ())),
                   int(d.get("flops", 0)), int(d.get("params", 0)), dict(d.get("op_counts") or {}),
                   {k: v for k, v in d.items() if k not in cls._KNOWN})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"files": [f.to_dict() for f in self.files]}
        if self.inputs:
            out["inputs"] = [t.to_dict() for t in self.inputs]
        if self.outputs:
            out["outputs"] = [t.to_dict() for t in self.outputs]
        out.update({"flops": self.flops, "params": self.params})
        if self.op_counts:
            out["op_counts"] = dict(self.op_counts)
        out.update(self.extra)
        return out

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass(frozen=True)
class Segment(GraphSpec):
    """Segment i: maps the hidden tensors of cut i-1 (the model inputs for i = 0) to those of cut i plus the exit
    output ``exit`` (the last segment: ``exit`` only)."""

    index: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Segment:
        g = GraphSpec.from_dict(d)
        return cls(g.files, g.inputs, g.outputs, g.flops, g.params, g.op_counts, g.extra, int(d["index"]))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, **super().to_dict()}

    @property
    def hidden_names(self) -> list[str]:
        """Outputs carried to the next segment (every output but the exit's own ones)."""
        return [n for n in self.output_names if n != EXIT_OUTPUT and not n.startswith(EXIT_OUTPUT + ".")]


@dataclass(frozen=True)
class Exit:
    """Exit i: after segment i; its head type, what its output means and the cost of answering there."""

    index: int
    segment: int
    head_type: str
    output_kind: str = "logits"
    cumulative_flops: int | None = None
    test_accuracy: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Exit:
        return cls(int(d["index"]), int(d["segment"]), d["head_type"], d.get("output_kind", "logits"),
                   d.get("cumulative_flops"), d.get("test_accuracy"))

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(asdict(self))


@dataclass(frozen=True)
class PolicySpec:
    """The bundle's exit policy: name, keyword arguments, per-exit thresholds, and thresholds re-calibrated per
    file variant (``variants["onnx/int8"]["thresholds"]``)."""

    name: str
    kwargs: dict[str, Any]
    thresholds: tuple[float, ...]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicySpec:
        return cls(d["name"], dict(d.get("kwargs") or {}), tuple(float(t) for t in d.get("thresholds") or ()),
                   dict(d.get("variants") or {}))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kwargs": dict(self.kwargs), "thresholds": list(self.thresholds)}
        if self.variants:
            out["variants"] = self.variants
        return out

    def thresholds_for(self, variant: str) -> list[float] | None:
        """The thresholds to use for a file variant (``format/precision``): its own when re-calibrated, else
        the bundle's; None when the policy takes none."""
        own = (self.variants.get(variant) or {}).get("thresholds")
        chosen = own if own else self.thresholds
        return list(chosen) if chosen else None


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold setting and what it costs and achieves on the data it was evaluated on."""

    thresholds: list[float]
    accuracy: float
    mean_flops: float
    flops_fraction: float
    exit_fractions: list[float]
    mean_latency_s: float | None = None
    expected_speedup: float | None = None
    #: share of samples answered as the final exit answers them (what the daemon's accuracy monitor watches live)
    agreement: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OperatingPoint:
        return cls([float(t) for t in d.get("thresholds", [])], float(d["accuracy"]), float(d.get("mean_flops", 0.0)),
                   float(d.get("flops_fraction", 1.0)), [float(f) for f in d.get("exit_fractions", [])],
                   d.get("mean_latency_s"), d.get("expected_speedup"), d.get("agreement"))

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(asdict(self))


@dataclass(frozen=True)
class CalibrationRecord:
    """How the thresholds were chosen: the front on the calibration split, the chosen point, and the rest
    (test-split figures, measured latencies, the oracle) as recorded by :mod:`edge_runtime.calibration`."""

    chosen: OperatingPoint | None
    curve: tuple[OperatingPoint, ...] = ()
    max_accuracy_drop: float | None = None
    cost: str | None = None
    final_exit_accuracy: float | None = None
    other: dict[str, Any] = field(default_factory=dict)

    _KNOWN = ("chosen", "curve", "max_accuracy_drop", "cost", "final_exit_accuracy")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> CalibrationRecord | None:
        if d is None:
            return None
        chosen = d.get("chosen")
        return cls(OperatingPoint.from_dict(chosen) if chosen else None,
                   tuple(OperatingPoint.from_dict(p) for p in d.get("curve", ())), d.get("max_accuracy_drop"),
                   d.get("cost"), d.get("final_exit_accuracy"), {k: v for k, v in d.items() if k not in cls._KNOWN})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.other)
        out.update(_drop_none({"cost": self.cost, "max_accuracy_drop": self.max_accuracy_drop,
                               "final_exit_accuracy": self.final_exit_accuracy}))
        out["curve"] = [p.to_dict() for p in self.curve]
        if self.chosen is not None:
            out["chosen"] = self.chosen.to_dict()
        return out

    @property
    def test(self) -> dict[str, Any]:
        """Figures on the test split (``exit_accuracy``, ``chosen``, ``oracle``), when recorded."""
        return dict(self.other.get("test") or {})


@dataclass(frozen=True)
class DeploymentRecord:
    """What to run by default (``deployment``): the mode, the files' format and precision, the thresholds it was
    chosen with, and why (written by :mod:`edge_runtime.calibration.deploy`; ``other`` keeps the candidates)."""

    mode: str
    format: str
    precision: str
    thresholds: tuple[float, ...] | None = None
    why: str = ""
    other: dict[str, Any] = field(default_factory=dict)

    _KNOWN = ("mode", "format", "precision", "thresholds", "why")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DeploymentRecord | None:
        if not d:
            return None
        thr = d.get("thresholds")
        return cls(d["mode"], d["format"], d["precision"], None if thr is None else tuple(float(t) for t in thr),
                   d.get("why", ""), {k: v for k, v in d.items() if k not in cls._KNOWN})

    def to_dict(self) -> dict[str, Any]:
        return {**self.other, "mode": self.mode, "format": self.format, "precision": self.precision,
                "thresholds": None if self.thresholds is None else list(self.thresholds), "why": self.why}

    @property
    def variant(self) -> str:
        """``format/precision`` (a key of ``policy.variants``)."""
        return f"{self.format}/{self.precision}"


@dataclass(frozen=True)
class Verification:
    """PyTorch vs exported files: the tolerance, the max abs difference per exit and whether it passed."""

    tolerance: float
    passed: bool
    batch_sizes: tuple[int, ...] = ()
    exits: tuple[dict[str, Any], ...] = ()
    full_model_max_abs_diff: float | None = None
    variants: tuple[dict[str, Any], ...] = ()
    other: dict[str, Any] = field(default_factory=dict)

    _KNOWN = ("tolerance", "passed", "batch_sizes", "exits", "full_model_max_abs_diff", "variants")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verification:
        return cls(float(d["tolerance"]), bool(d["passed"]), tuple(d.get("batch_sizes", ())),
                   tuple(dict(e) for e in d.get("exits", ())), d.get("full_model_max_abs_diff"),
                   tuple(dict(v) for v in d.get("variants", ())), {k: v for k, v in d.items() if k not in cls._KNOWN})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tolerance": self.tolerance, "batch_sizes": list(self.batch_sizes),
                               "exits": [dict(e) for e in self.exits], "passed": self.passed}
        if self.full_model_max_abs_diff is not None:
            out["full_model_max_abs_diff"] = self.full_model_max_abs_diff
        if self.variants:
            out["variants"] = [dict(v) for v in self.variants]
        out.update(self.other)
        return out

    def exit_diffs(self) -> dict[int, float]:
        return {int(e["index"]): float(e["max_abs_diff"]) for e in self.exits}


@dataclass(frozen=True)
class MethodParts:
    """A method's extra graphs (``parts.<method>``): the mode that runs them, the graphs by part name, their
    verification, and the method's own record (``info``: training report, costs, ...)."""

    mode: str
    graphs: dict[str, GraphSpec]
    verification: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MethodParts:
        return cls(d["mode"], {k: GraphSpec.from_dict(g) for k, g in d["graphs"].items()},
                   dict(d.get("verification") or {}), dict(d.get("info") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "graphs": {k: g.to_dict() for k, g in self.graphs.items()},
                "verification": self.verification, "info": self.info}


@dataclass(frozen=True)
class TextSpec:
    """Text inputs (``text``): the bundled tokenizer file and how strings become the model inputs.

    Attributes:
        tokenizer: the ``tokenizer.json`` file (path inside the bundle, sha256; checked like every file).
        max_length: longest token sequence the model gets (longer texts are truncated, and answers say so).
        padding: ``longest`` (to the batch's longest text) or ``max_length``.
        input_ids, attention_mask: the model inputs the ids and the mask go to.
    """

    tokenizer: FileEntry
    max_length: int
    padding: str = "longest"
    input_ids: str = "input_ids"
    attention_mask: str = "attention_mask"
    description: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TextSpec | None:
        if not d:
            return None
        return cls(FileEntry.from_dict(d["tokenizer"]), int(d["max_length"]), d.get("padding", "longest"),
                   d.get("input_ids", "input_ids"), d.get("attention_mask", "attention_mask"), d.get("description"))

    def to_dict(self) -> dict[str, Any]:
        tok = {k: v for k, v in self.tokenizer.to_dict().items() if k in ("format", "path", "sha256", "bytes")}
        return _drop_none({"tokenizer": tok, "max_length": self.max_length, "padding": self.padding,
                           "truncation": "longest_first", "input_ids": self.input_ids,
                           "attention_mask": self.attention_mask, "description": self.description})


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest, checked and typed.

    Example:
        >>> m = read_manifest("out/tiny_cnn")                      # doctest: +SKIP
        >>> m.num_exits, m.input.shape, m.policy.name              # doctest: +SKIP
        (3, (None, 1, 16, 16), 'entropy')
    """

    name: str
    labels: tuple[str, ...]
    inputs: tuple[InputSpec, ...]
    segments: tuple[Segment, ...]
    exits: tuple[Exit, ...]
    policy: PolicySpec
    verification: Verification
    full_model: GraphSpec | None = None
    parts: dict[str, MethodParts] = field(default_factory=dict)
    calibration: CalibrationRecord | None = None
    deployment: DeploymentRecord | None = None
    created: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    text: TextSpec | None = None
    format_version: int = FORMAT_VERSION

    @property
    def input(self) -> InputSpec:
        """The first (for most bundles: the only) model input."""
        return self.inputs[0]

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    @property
    def cumulative_flops(self) -> list[int | None]:
        return [e.cumulative_flops for e in self.exits]

    @property
    def full_model_flops(self) -> int | None:
        return self.full_model.flops if self.full_model is not None else None

    def graphs(self) -> list[tuple[str, GraphSpec]]:
        """Every graph with the manifest field that holds it (segments, full model, methods' parts)."""
        out: list[tuple[str, GraphSpec]] = [(f"segments.{s.index}", s) for s in self.segments]
        if self.full_model is not None:
            out.append(("full_model", self.full_model))
        for method, parts in sorted(self.parts.items()):
            out += [(f"parts.{method}.graphs.{k}", g) for k, g in sorted(parts.graphs.items())]
        return out

    def held_variants(self) -> list[tuple[str, str]]:
        """Every ``(format, precision)`` any segment has a file for."""
        return sorted({(f.format, f.precision) for s in self.segments for f in s.files})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, path: Path | str = MANIFEST_NAME) -> Manifest:
        """Validate (schema + cross-field rules) and type a manifest dict.

        Raises:
            BundleError: naming ``path`` and the first bad field.
        """
        validate_manifest(d, path=path)
        return cls(
            name=d["name"], labels=tuple(d["labels"]), inputs=tuple(InputSpec.from_dict(i) for i in d["inputs"]),
            segments=tuple(Segment.from_dict(s) for s in d["segments"]),
            exits=tuple(Exit.from_dict(e) for e in d["exits"]), policy=PolicySpec.from_dict(d["policy"]),
            verification=Verification.from_dict(d["verification"]),
            full_model=GraphSpec.from_dict(d["full_model"]) if d.get("full_model") else None,
            parts={k: MethodParts.from_dict(v) for k, v in (d.get("parts") or {}).items()},
            calibration=CalibrationRecord.from_dict(d.get("calibration")),
            deployment=DeploymentRecord.from_dict(d.get("deployment")), created=dict(d.get("created") or {}),
            data=d.get("data"), recipe=d.get("recipe"), extra=d.get("extra"), text=TextSpec.from_dict(d.get("text")),
            format_version=int(d["format_version"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """A fresh plain-dict copy (JSON-ready) that :meth:`from_dict` reads back to an equal manifest."""
        out: dict[str, Any] = {"format": FORMAT_NAME, "format_version": self.format_version, "name": self.name,
                               "labels": list(self.labels), "inputs": [i.to_dict() for i in self.inputs],
                               "segments": [s.to_dict() for s in self.segments],
                               "exits": [e.to_dict() for e in self.exits], "policy": self.policy.to_dict(),
                               "verification": self.verification.to_dict()}
        if self.full_model is not None:
            out["full_model"] = self.full_model.to_dict()
        if self.parts:
            out["parts"] = {k: v.to_dict() for k, v in self.parts.items()}
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.deployment is not None:
            out["deployment"] = json.loads(json.dumps(self.deployment.to_dict()))
        if self.text is not None:
            out["text"] = self.text.to_dict()
        for key in ("created", "data", "recipe", "extra"):
            value = getattr(self, key)
            if value:
                out[key] = json.loads(json.dumps(value))
        return out


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
        hint = " (written by edge-runtime 0.1; convert the recipe again)" if version == 1 else ""
        raise BundleError(
            f"unsupported bundle format version {version}{hint}; this runtime reads {list(SUPPORTED_FORMAT_VERSIONS)}",
            path=path, field="format_version")
    validator = jsonschema.Draft202012Validator(manifest_schema())
    errors = sorted(validator.iter_errors(manifest),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise BundleError(err.message, path=path, field=where)
    _check_cross_fields(manifest, path)


def _tensor_lists(m: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every list of tensor records with its field: the model inputs and each graph's inputs and outputs."""
    out: list[tuple[str, list[dict[str, Any]]]] = [("inputs", m["inputs"])]
    graphs = [(f"segments.{i}", s) for i, s in enumerate(m["segments"])]
    if m.get("full_model"):
        graphs.append(("full_model", m["full_model"]))
    for method, parts in sorted((m.get("parts") or {}).items()):
        graphs += [(f"parts.{method}.graphs.{k}", g) for k, g in sorted(parts["graphs"].items())]
    for where, g in graphs:
        out += [(f"{where}.inputs", g.get("inputs") or []), (f"{where}.outputs", g.get("outputs") or [])]
    return out


def _check_shapes(m: dict[str, Any], path: Path | str) -> None:
    """Axes are integers (JSON ``8.0`` passes the schema's "integer") and no tensor is absurdly large."""
    for key, tensors in _tensor_lists(m):
        for j, t in enumerate(tensors):
            where = f"{key}.{j}.shape"
            for k, d in enumerate(t["shape"]):
                if d is not None and (type(d) is not int or not 1 <= d <= MAX_DIM):
                    raise BundleError(f"axis {k} must be null or an integer from 1 to {MAX_DIM}, got {d!r}",
                                      path=path, field=f"{where}.{k}")
            elements = math.prod(d for d in t["shape"][1:] if d is not None)
            if elements > MAX_SAMPLE_ELEMENTS:
                raise BundleError(f"one sample of {t['name']!r} would have {elements} elements; at most "
                                  f"{MAX_SAMPLE_ELEMENTS} are allowed", path=path, field=where)


def _check_thresholds(values: list[Any], path: Path | str, field: str) -> None:
    for t in values:
        try:
            finite = not isinstance(t, bool) and math.isfinite(float(t))
        except (OverflowError, TypeError, ValueError):
            finite = False
        if not finite:
            raise BundleError(f"thresholds must be finite numbers, got {t!r}", path=path, field=field)


def _check_cross_fields(m: dict[str, Any], path: Path | str) -> None:
    _check_shapes(m, path)
    _check_thresholds(m["policy"]["thresholds"], path, "policy.thresholds")
    for key, variant in m["policy"].get("variants", {}).items():
        _check_thresholds(variant["thresholds"], path, f"policy.variants.{key}.thresholds")
    for i, seg in enumerate(m["segments"]):
        for j, f in enumerate(seg["files"]):
            b = f.get("batch_size")
            if b is not None and type(b) is not int:
                raise BundleError(f"batch_size must be null or an integer, got {b!r}", path=path,
                                  field=f"segments.{i}.files.{j}.batch_size")
    segments, exits = m["segments"], m["exits"]
    for i, seg in enumerate(segments):
        if seg["index"] != i:
            raise BundleError(f"expected index {i}, got {seg['index']}", path=path, field=f"segments.{i}.index")
    if len(exits) != len(segments):
        raise BundleError(f"{len(exits)} exits for {len(segments)} segments; every segment ends in one exit",
                          path=path, field="exits")
    for i, ex in enumerate(exits):
        if ex["index"] != i or ex["segment"] != i:
            raise BundleError(f"exit {i} must have index {i} and segment {i}", path=path, field=f"exits.{i}")
    n_thr = len(m["policy"]["thresholds"])
    if n_thr not in (0, len(exits) - 1):
        raise BundleError(f"expected {len(exits) - 1} thresholds (one per non-final exit), got {n_thr}",
                          path=path, field="policy.thresholds")
    for key, variant in m["policy"].get("variants", {}).items():
        if len(variant["thresholds"]) not in (0, len(exits) - 1):
            raise BundleError(f"expected {len(exits) - 1} thresholds (one per non-final exit), got "
                              f"{len(variant['thresholds'])}", path=path, field=f"policy.variants.{key}.thresholds")
    names = [i["name"] for i in m["inputs"]]
    if len(set(names)) != len(names):
        raise BundleError(f"input names must be unique, got {names}", path=path, field="inputs")
    for j, spec in enumerate(m["inputs"]):
        if spec["shape"][0] is not None:
            raise BundleError("the batch axis (first) must be null", path=path, field=f"inputs.{j}.shape.0")
    available = set(names)
    for i, seg in enumerate(segments):
        outs = [t["name"] for t in seg["outputs"]]
        if EXIT_OUTPUT not in outs:
            raise BundleError(f"segment {i} has no {EXIT_OUTPUT!r} output (outputs: {outs})", path=path,
                              field=f"segments.{i}.outputs")
        missing = [t["name"] for t in seg["inputs"] if t["name"] not in available]
        if missing:
            raise BundleError(f"segment {i} input(s) {missing} are neither model inputs nor outputs of segment {i - 1}",
                              path=path, field=f"segments.{i}.inputs")
        available = set(names) | {n for n in outs if n != EXIT_OUTPUT}
    text = m.get("text")
    if text:
        dtypes = {i["name"]: i["dtype"] for i in m["inputs"]}
        for key in ("input_ids", "attention_mask"):
            if dtypes.get(text[key]) not in ("int64", "int32"):
                raise BundleError(f"{text[key]!r} must be an integer model input (inputs: {sorted(dtypes)})",
                                  path=path, field=f"text.{key}")
    labels, n_classes = m["labels"], None
    last_exit = next((t for t in segments[-1]["outputs"] if t["name"] == EXIT_OUTPUT), None)
    if last_exit is not None and exits[-1].get("output_kind", "logits") == "logits" and len(last_exit["shape"]) == 2:
        n_classes = last_exit["shape"][1]
    if isinstance(n_classes, int) and len(labels) != n_classes:
        raise BundleError(f"{len(labels)} labels for a final exit with {n_classes} classes", path=path, field="labels")


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Read, validate and type ``<bundle_dir>/manifest.json``.

    Raises:
        BundleError: missing or unreadable file, invalid JSON, schema or cross-field violation.
    """
    path = Path(bundle_dir) / MANIFEST_NAME
    raw = _read_manifest_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"not valid UTF-8 JSON: {exc}", path=path) from None
    data = parse_json_strict(text, path=path)
    try:
        return Manifest.from_dict(data, path=path)
    except BundleError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        # the schema and the cross-field rules should catch every malformed manifest before this point
        raise BundleError(f"malformed manifest ({type(exc).__name__}: {exc})", path=path) from None


def _read_manifest_bytes(path: Path) -> bytes:
    """The manifest's bytes: a regular file inside the bundle (never a symbolic link), of bounded size."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BundleError("manifest.json is missing", path=path) from None
    except OSError as exc:
        if path.is_symlink():
            raise BundleError("manifest.json is a symbolic link; a bundle's manifest must be a regular file inside "
                              "it (link the bundle directory instead)", path=path) from None
        raise BundleError(f"cannot read the manifest ({exc.strerror or exc})", path=path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError("manifest.json is not a regular file", path=path)
        if info.st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"manifest.json has {info.st_size} bytes; a manifest may have at most "
                              f"{MAX_MANIFEST_BYTES}", path=path)
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"cannot read the manifest ({exc.strerror or exc})", path=path) from None
    finally:
        os.close(fd)


def parse_json_strict(text: str, *, path: Path | str = MANIFEST_NAME, limit: int = MAX_NESTING) -> Any:
    """Parse a manifest's JSON strictly: no ``NaN``/``Infinity`` literals, no key given twice in an object, at most
    ``limit`` levels of nesting.

    Raises:
        BundleError: naming ``path`` and what is wrong.
    """
    try:
        data = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except RecursionError:
        raise BundleError(f"not valid JSON: nests deeper than {limit} levels", path=path) from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError, and so is the duplicate-key refusal
        raise BundleError(f"not valid JSON: {exc}", path=path) from None
    problem = json_problem(data, limit)
    if problem is not None:
        raise BundleError(problem[1], path=path, field=problem[0])
    return data


def write_manifest(bundle_dir: str | Path, manifest: Manifest | Mapping[str, Any]) -> Manifest:
    """Validate ``manifest`` (a :class:`Manifest` or a dict built by an exporter) and write it atomically
    as ``<bundle_dir>/manifest.json``; returns the typed manifest.

    Raises:
        BundleError: the manifest is invalid (nothing is written).
    """
    path = Path(bundle_dir) / MANIFEST_NAME
    typed = manifest if isinstance(manifest, Manifest) else Manifest.from_dict(dict(manifest), path=path)
    write_json_atomic(path, typed.to_dict())
    return typed


def tensor_names(specs: Sequence[TensorSpec]) -> list[str]:
    """The names of a list of tensor specs."""
    return [t.name for t in specs]
