"""Recipe sections for training exits: ``data``, ``heads``, ``train``, ``calibrate`` (validators in SECTIONS).

::

    data: {name: digits, kwargs: {size: 28}, split: {seed: 0, fractions: {train: 0.6, calibration: 0.2, test: 0.2}}}
    heads: [{name: conv_pool_linear, kwargs: {width: 16}}, pool_linear]     # one per early exit
    train:
      device: auto                                   # auto | cpu | cuda
      threads: 1                                     # torch intra-op threads while training (null: torch's default)
      stages:
        - {name: branchy, loss: {name: weighted_exits, kwargs: {}}, optimizer: {name: adam, kwargs: {}},
           lr: 0.002, epochs: 8, batch_size: 64, weight_decay: 0.0005, schedule: {name: cosine, kwargs: {}}}
    calibrate: {max_accuracy_drop: 1.0, cost: flops, levels: null, measure_latency: true, latency_repeats: 200}
"""

from __future__ import annotations

from typing import Any

from converters.recipe import expect_mapping, expect_type, named_component, section
from edge_runtime.errors import ConfigError


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


@section("data")
def _data(value: Any, where: str) -> dict[str, Any]:
    from edge_runtime.datasets import DATASETS, DEFAULT_FRACTIONS, SPLITS

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
    from converters.heads import HEADS

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
    from converters.losses import LOSSES
    from converters.train import OPTIMIZERS, SCHEDULES, StageConfig

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
    spec = expect_mapping(value, where, {"max_accuracy_drop": 1.0, "cost": "flops", "levels": None,
                                         "measure_latency": True, "latency_repeats": 200})
    spec["max_accuracy_drop"] = _number(spec["max_accuracy_drop"], f"{where}.max_accuracy_drop", low=0.0)
    if spec["cost"] not in ("flops", "latency"):
        raise ConfigError(f"recipe key {where}.cost: expected flops or latency, got {spec['cost']!r}")
    if spec["levels"] is not None:
        _int(spec["levels"], f"{where}.levels", 2)
    expect_type(spec["measure_latency"], bool, f"{where}.measure_latency")
    _int(spec["latency_repeats"], f"{where}.latency_repeats", 1)
    if spec["cost"] == "latency" and not spec["measure_latency"]:
        raise ConfigError(f"recipe key {where}.cost: 'latency' needs measure_latency: true")
    return spec
