"""The built-in recipe sections: ``name``, ``seed``, ``model``, ``input``, ``policy``, ``export``, ``data``, ``heads``,
``train``, ``calibrate`` (validators registered in :data:`converters.recipe.sections.SECTIONS`).

::

    data: {name: digits, kwargs: {size: 28}, split: {seed: 0, fractions: {train: 0.6, calibration: 0.2, test: 0.2}}}
    heads: [{name: conv_pool_linear, kwargs: {width: 16}}, pool_linear]     # one per early exit
    train:
      device: auto                                   # auto | cpu | cuda
      threads: 1                                     # torch intra-op threads while training (null: torch's default)
      stages:
        - {name: branchy, loss: {name: weighted_exits, kwargs: {}}, optimizer: {name: adam, kwargs: {}},
           lr: 0.002, epochs: 8, batch_size: 64, weight_decay: 0.0005, schedule: {name: cosine, kwargs: {}}}
    calibrate: {max_accuracy_drop: 1.0, confidence: 0.9, risk: label_drop, bound: binomial, selection_fraction: null,
                cost: flops, levels: null, measure_latency: true, latency_repeats: 200, recommend: true,
                recommend_repeats: 3, profile: null}
    # confidence: null = the point estimate (cheapest point within the budget on the calibration split);
    # a probability = the budget holds on new data with that probability (edge_runtime/calibration/risk.py)
    # recommend: compare every mode x backend x precision the bundle holds on the calibration split (measured here,
    # or predicted for `profile`) and record the fastest within the budget as the bundle's default (`deployment`)
"""

from __future__ import annotations

from typing import Any

from converters.export.quantize import QUANTIZERS
from converters.models.registry import HEADS, MODELS
from converters.models.user import is_user_model, validate_user_model
from converters.recipe.sections import expect_mapping, expect_type, named_component, section
from converters.training.registry import LOSSES, OPTIMIZERS, SCHEDULES
from converters.training.trainer import StageConfig
from edge_runtime.calibration.risk import BOUNDS, RISKS
from edge_runtime.datasets import DATASETS, DEFAULT_FRACTIONS, SPLITS
from edge_runtime.errors import ConfigError
from edge_runtime.policies import POLICIES
from edge_runtime.profiles import PROFILES


def _number(value: Any, where: str, *, low: float | None = None, strict: bool = False) -> float:
    v = float(expect_type(value, (int, float), where))
    if low is not None and (v <= low if strict else v < low):
        raise ConfigError(f"recipe key {where}: must be {'>' if strict else '>='} {low}, got {value!r}")
    return v


def _int(value: Any, where: str, low: int) -> int:
    v = int(expect_type(value, int, where))
    if v < low:
        raise ConfigError(f"recipe key {where}: must be an integer >= {low}, got {value!r}")
    return v


@section("name", required=True)
def _name(value: Any, where: str) -> str:
    expect_type(value, str, where)
    if not value or "/" in value or value.startswith("."):
        raise ConfigError(f"recipe key {where}: must be a plain non-empty name, got {value!r}")
    return value


@section("seed")
def _seed(value: Any, where: str) -> int:
    return int(expect_type(value, int, where))


@section("model")  # required by convert unless a stage writes the bundle itself (e.g. a language model)
def _model(value: Any, where: str) -> dict[str, Any]:
    """A registered builder ``{name, kwargs}``, or a user's model ``{factory | exported, kwargs, weights, exits}``
    (:mod:`converters.models.user`). Required unless ``convert`` is given the model itself."""
    if is_user_model(value):
        return validate_user_model(value, where)
    return named_component(value, where, MODELS)


@section("input")
def _input(value: Any, where: str) -> dict[str, Any]:
    spec = expect_mapping(value, where, {"shape": None, "preprocessing": None, "text": None})
    if spec["text"] is not None:
        text = expect_mapping(spec["text"], f"{where}.text", {"tokenizer": None, "max_length": 128,
                                                             "padding": "longest"}, required=("tokenizer",))
        expect_type(text["tokenizer"], str, f"{where}.text.tokenizer")
        _int(text["max_length"], f"{where}.text.max_length", 2)
        if text["padding"] not in ("longest", "max_length"):
            raise ConfigError(f"recipe key {where}.text.padding: expected longest or max_length, "
                              f"got {text['padding']!r}")
        spec["text"] = text
    if spec["shape"] is not None:
        shape = expect_type(spec["shape"], list, f"{where}.shape")
        for i, d in enumerate(shape):
            if not isinstance(d, int) or isinstance(d, bool) or d < 1:
                raise ConfigError(f"recipe key {where}.shape[{i}]: expected a positive integer, got {d!r}")
    return spec


@section("policy")
def _policy(value: Any, where: str) -> dict[str, Any]:
    spec = expect_mapping(value, where, {"name": "entropy", "kwargs": {}, "thresholds": None})
    expect_type(spec["name"], str, f"{where}.name")
    if spec["name"] not in POLICIES:
        raise ConfigError(f"recipe key {where}.name: unknown exit policy {spec['name']!r}; "
                          f"known: {', '.join(POLICIES.names())}")
    spec["kwargs"] = expect_type(spec["kwargs"] or {}, dict, f"{where}.kwargs")
    thr = spec["thresholds"]
    if thr is not None and not isinstance(thr, (int, float, list)) or isinstance(thr, bool):
        raise ConfigError(f"recipe key {where}.thresholds: expected a number or a list of numbers, got {thr!r}")
    return spec


@section("export")
def _export(value: Any, where: str) -> dict[str, Any]:
    spec = expect_mapping(value, where, {"tolerance": 1e-4, "opset": 17, "verify_batch_sizes": [1, 3],
                                         "full_model": True, "backends": ["onnx"], "tflite_batch_sizes": [1],
                                         "quantize": [], "fp16_tolerance": 1e-2})
    tol = expect_type(spec["tolerance"], (int, float), f"{where}.tolerance")
    if tol <= 0:
        raise ConfigError(f"recipe key {where}.tolerance: must be > 0, got {tol}")
    expect_type(spec["opset"], int, f"{where}.opset")
    sizes = expect_type(spec["verify_batch_sizes"], list, f"{where}.verify_batch_sizes")
    if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in sizes):
        raise ConfigError(f"recipe key {where}.verify_batch_sizes: expected positive integers, got {sizes!r}")
    expect_type(spec["full_model"], bool, f"{where}.full_model")
    if expect_type(spec["fp16_tolerance"], (int, float), f"{where}.fp16_tolerance") <= 0:
        raise ConfigError(f"recipe key {where}.fp16_tolerance: must be > 0, got {spec['fp16_tolerance']}")
    _export_variants(spec, where)
    return spec


def _export_variants(spec: dict[str, Any], where: str) -> None:
    """``backends``, ``tflite_batch_sizes``, ``quantize``: checked here so errors name the recipe key."""
    for key in ("backends", "quantize"):
        names = expect_type(spec[key], list, f"{where}.{key}")
        if any(not isinstance(n, str) for n in names):
            raise ConfigError(f"recipe key {where}.{key}: expected a list of names, got {names!r}")
    if "onnx" not in spec["backends"] or set(spec["backends"]) - {"onnx", "tflite"}:
        raise ConfigError(f"recipe key {where}.backends: expected [onnx] or [onnx, tflite], got {spec['backends']!r}")
    sizes = expect_type(spec["tflite_batch_sizes"], list, f"{where}.tflite_batch_sizes")
    if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in sizes):
        raise ConfigError(f"recipe key {where}.tflite_batch_sizes: expected positive integers, got {sizes!r}")
    for name in spec["quantize"]:
        if name not in QUANTIZERS:
            raise ConfigError(f"recipe key {where}.quantize: unknown variant {name!r}; known: "
                              f"{', '.join(QUANTIZERS.names())}")
        if name.split("/")[0] not in spec["backends"]:
            raise ConfigError(f"recipe key {where}.quantize: {name!r} needs {name.split('/')[0]!r} in {where}.backends")


@section("data")
def _data(value: Any, where: str) -> dict[str, Any]:
    spec = expect_mapping(value, where, {"name": None, "kwargs": {}, "split": {}}, required=("name",))
    named = named_component({"name": spec["name"], "kwargs": spec["kwargs"]}, where, DATASETS)
    split = expect_mapping(spec["split"], f"{where}.split", {"seed": 0, "fractions": dict(DEFAULT_FRACTIONS)})
    _int(split["seed"], f"{where}.split.seed", 0)
    fr = expect_mapping(split["fractions"], f"{where}.split.fractions", {k: 0.0 for k in SPLITS})
    for k in SPLITS:
        _number(fr[k], f"{where}.split.fractions.{k}", low=0.0)
    if abs(sum(fr.values()) - 1.0) > 1e-6:
        raise ConfigError(f"recipe key {where}.split.fractions: must sum to 1, got {fr}")
    if fr["train"] <= 0 or fr["calibration"] <= 0:
        raise ConfigError(f"recipe key {where}.split.fractions: train and calibration must be > 0, got {fr}")
    split["fractions"] = fr
    return {"name": named["name"], "kwargs": named["kwargs"], "split": split}


@section("heads")
def _heads(value: Any, where: str) -> list[Any]:
    entries = expect_type(value, list, where)
    out: list[Any] = []
    for i, entry in enumerate(entries):
        w = f"{where}[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry, "kwargs": {}}
        out.append(named_component(entry, w, HEADS))
    return out


@section("train")
def _train(value: Any, where: str) -> dict[str, Any]:
    spec = expect_mapping(value, where, {"device": "auto", "threads": None, "stages": None}, required=("stages",))
    if spec["threads"] is not None:
        _int(spec["threads"], f"{where}.threads", 1)
    if spec["device"] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"recipe key {where}.device: expected auto, cpu or cuda, got {spec['device']!r}")
    stages = expect_type(spec["stages"], list, f"{where}.stages")
    if not stages:
        raise ConfigError(f"recipe key {where}.stages: needs at least one stage")
    defaults = StageConfig()
    allowed = {k: getattr(defaults, k) for k in defaults.__dataclass_fields__}
    resolved = []
    for i, stage in enumerate(stages):
        w = f"{where}.stages[{i}]"
        st = expect_mapping(stage, w, allowed)
        expect_type(st["name"], str, f"{w}.name")
        st["loss"] = named_component(st["loss"], f"{w}.loss", LOSSES)
        st["optimizer"] = named_component(st["optimizer"], f"{w}.optimizer", OPTIMIZERS)
        st["schedule"] = named_component(st["schedule"], f"{w}.schedule", SCHEDULES)
        st["lr"] = _number(st["lr"], f"{w}.lr", low=0.0, strict=True)
        st["weight_decay"] = _number(st["weight_decay"], f"{w}.weight_decay", low=0.0)
        st["epochs"] = _int(st["epochs"], f"{w}.epochs", 0)
        st["batch_size"] = _int(st["batch_size"], f"{w}.batch_size", 1)
        resolved.append(st)
    spec["stages"] = resolved
    return spec


@section("calibrate")
def _calibrate(value: Any, where: str) -> dict[str, Any]:
    spec = expect_mapping(value, where, {"max_accuracy_drop": 1.0, "confidence": None, "risk": "label_drop",
                                         "bound": "binomial", "selection_fraction": None, "cost": "flops",
                                         "levels": None, "measure_latency": True, "latency_repeats": 200,
                                         "recommend": True, "recommend_repeats": 3, "profile": None})
    spec["max_accuracy_drop"] = _number(spec["max_accuracy_drop"], f"{where}.max_accuracy_drop", low=0.0)
    if spec["confidence"] is not None:
        c = _number(spec["confidence"], f"{where}.confidence")
        if not 0.0 < c < 1.0:
            raise ConfigError(f"recipe key {where}.confidence: expected a probability in (0, 1) or null (the point "
                              f"estimate), got {spec['confidence']!r}")
        spec["confidence"] = c
    for key, known in (("risk", RISKS), ("bound", BOUNDS)):
        if spec[key] not in known:
            raise ConfigError(f"recipe key {where}.{key}: expected one of {', '.join(known)}, got {spec[key]!r}")
    if spec["selection_fraction"] is not None:
        f = _number(spec["selection_fraction"], f"{where}.selection_fraction")
        if not 0.0 < f < 1.0:
            raise ConfigError(f"recipe key {where}.selection_fraction: expected a fraction in (0, 1) or null (the "
                              f"test part gets the size that certifies best), got {f!r}")
    if spec["cost"] not in ("flops", "latency"):
        raise ConfigError(f"recipe key {where}.cost: expected flops or latency, got {spec['cost']!r}")
    if spec["levels"] is not None:
        _int(spec["levels"], f"{where}.levels", 2)
    expect_type(spec["measure_latency"], bool, f"{where}.measure_latency")
    expect_type(spec["recommend"], bool, f"{where}.recommend")
    _int(spec["recommend_repeats"], f"{where}.recommend_repeats", 1)
    if spec["profile"] is not None and expect_type(spec["profile"], str, f"{where}.profile") not in PROFILES \
            and not spec["profile"].endswith((".yaml", ".yml")):
        raise ConfigError(f"recipe key {where}.profile: unknown device profile {spec['profile']!r}; known: "
                          f"{', '.join(PROFILES.names())} (or a .yaml path)")
    _int(spec["latency_repeats"], f"{where}.latency_repeats", 1)
    if spec["cost"] == "latency" and not spec["measure_latency"]:
        raise ConfigError(f"recipe key {where}.cost: 'latency' needs measure_latency: true")
    return spec
