"""DeeDiff's conversion stage (the recipe's ``deediff`` section): the quality classifier, its export, and the
uncertainty threshold chosen on a quality-vs-layers sweep of the exported bundle.

::

    deediff:
      sampler: {steps: 20, clip: true}            # the DDIM steps the device samples with by default
      classifier: {features: 64, epochs: 30, batch_size: 64, lr: 0.002}
      sweep: {samples: 200, seed: 1, thresholds: null, levels: [0.02, 0.05, 0.1], max_fid_increase: 0.05}
      tolerance: 1.0e-4                           # PyTorch vs ONNX for the classifier part
      threads: 1                                  # torch threads while training the classifier; ORT threads sweeping

The stage trains the digits classifier on the training split (model-space images). Its export hook, called by
``export_bundle`` once the segments are verified, writes the classifier under ``deediff/`` (verified against
PyTorch), records ``parts.deediff`` (mode ``sample``: the noise schedule, the sampler's settings, the classifier's
accuracy), then samples the staged bundle on the device runtime — full depth, and at every threshold of the
sweep, from the same noise — scores the samples by FID against the calibration split, and sets the bundle's
policy to the threshold using the fewest layers whose FID is within ``max_fid_increase`` of the full model's
(no exit at all when none is). The whole sweep is recorded in ``parts.deediff.info.sweep``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.export.onnx import count_flops, count_params, export_onnx, file_entry, onnx_op_counts, tensor_spec
from converters.export.verify import graph_max_diff, staged_bundle
from converters.methods.deediff.classifier import ClassifierWithFeatures, DigitsClassifier, accuracy, train_classifier
from converters.methods.deediff.model import DeeDiffUViT
from converters.pipeline.stages import STAGES, ConversionStage, PartsHook, StageContext
from converters.recipe.sections import expect_mapping, expect_type, section
from edge_runtime.backends import create_backend
from edge_runtime.errors import ConfigError, ExportError
from edge_runtime.methods.deediff.quality import (
    CLASSIFIER_PART,
    FEATURES_OUTPUT,
    LOGITS_OUTPUT,
    choose_threshold,
    quality_sweep,
    uncertainty_levels,
)
from edge_runtime.methods.deediff.sampler import METHOD, MODE
from edge_runtime.runtime import Runtime

SECTION = "deediff"
#: default sweep: thresholds at which these shares of (sample, step) pairs would leave early (quantiles of the
#: lowest u over the blocks along full-depth trajectories; ``sweep.thresholds`` lists fixed ones instead)
DEFAULT_LEVELS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45)
_DEFAULTS: dict[str, Any] = {
    "sampler": {"steps": 20, "clip": True},
    "classifier": {"features": 64, "epochs": 30, "batch_size": 64, "lr": 0.002},
    "sweep": {"samples": 200, "seed": 1, "thresholds": None, "levels": list(DEFAULT_LEVELS), "max_fid_increase": 0.05},
    "tolerance": 1e-4,
    "threads": 1,
}


def _positive(value: Any, where: str, kind: type | tuple[type, ...] = int) -> Any:
    expect_type(value, kind, where)
    if value <= 0:
        raise ConfigError(f"recipe key {where}: must be > 0, got {value!r}")
    return value


@section(SECTION)
def parse_deediff_section(value: Any, where: str = SECTION) -> dict[str, Any]:
    """Validate the recipe's ``deediff`` section and fill in the defaults.

    Example:
        >>> parse_deediff_section({"sampler": {"steps": 10}})["sampler"]
        {'steps': 10, 'clip': True}

    Raises:
        ConfigError: naming the bad key (``deediff.sweep.samples``) and what was expected.
    """
    spec = expect_mapping(value if value is not None else {}, where,
                          {k: v for k, v in _DEFAULTS.items() if not isinstance(v, dict)} |
                          {k: None for k, v in _DEFAULTS.items() if isinstance(v, dict)})
    for key, defaults in _DEFAULTS.items():
        if isinstance(defaults, dict):
            spec[key] = expect_mapping(spec[key] if spec[key] is not None else {}, f"{where}.{key}", dict(defaults))
    _positive(spec["sampler"]["steps"], f"{where}.sampler.steps")
    expect_type(spec["sampler"]["clip"], bool, f"{where}.sampler.clip")
    for key in ("features", "epochs", "batch_size"):
        _positive(spec["classifier"][key], f"{where}.classifier.{key}")
    spec["classifier"]["lr"] = float(_positive(spec["classifier"]["lr"], f"{where}.classifier.lr", (int, float)))
    sweep = spec["sweep"]
    _positive(sweep["samples"], f"{where}.sweep.samples")
    if sweep["samples"] < 2:
        raise ConfigError(f"recipe key {where}.sweep.samples: FID needs at least 2 samples, got {sweep['samples']}")
    expect_type(sweep["seed"], int, f"{where}.sweep.seed")
    for key in ("thresholds", "levels"):
        if key == "thresholds" and sweep[key] is None:
            continue
        values = expect_type(sweep[key], list, f"{where}.sweep.{key}")
        if not values:
            raise ConfigError(f"recipe key {where}.sweep.{key}: give at least one value")
        sweep[key] = [float(_positive(t, f"{where}.sweep.{key}[{i}]", (int, float))) for i, t in enumerate(values)]
    if any(q >= 1 for q in sweep["levels"]):
        raise ConfigError(f"recipe key {where}.sweep.levels: shares of (sample, step) pairs, each in (0, 1)")
    if float(expect_type(sweep["max_fid_increase"], (int, float), f"{where}.sweep.max_fid_increase")) < 0:
        raise ConfigError(f"recipe key {where}.sweep.max_fid_increase: must be >= 0, got {sweep['max_fid_increase']}")
    sweep["max_fid_increase"] = float(sweep["max_fid_increase"])
    spec["tolerance"] = float(_positive(spec["tolerance"], f"{where}.tolerance", (int, float)))
    _positive(spec["threads"], f"{where}.threads")
    return spec


@dataclass
class DeeDiffParts:
    """The ``export_bundle(..., extra_parts=[...])`` hook of DeeDiff (see the module docstring).

    Attributes:
        model: the trained denoiser (its schedule is recorded).
        classifier: the trained quality classifier.
        settings: the validated ``deediff`` section.
        example: one model-space image batch (the classifier's export example).
        real_images: model-space images to verify the classifier on too.
        reference_images: data-range images the sweep's FID is measured against (the calibration split).
        record: what to add to ``parts.deediff.info`` (classifier accuracy, training facts).
        progress: print one line per sweep point.
    """

    model: DeeDiffUViT
    classifier: DigitsClassifier
    settings: dict[str, Any]
    example: torch.Tensor
    real_images: torch.Tensor | None
    reference_images: np.ndarray
    record: dict[str, Any]
    progress: bool = False
    opset: int = 17
    seed: int = 0

    def __call__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.export_classifier(root, manifest)
        self.choose_threshold(root, manifest)

    def export_classifier(self, root: Path, manifest: dict[str, Any]) -> None:
        """Write and verify the classifier part and record ``parts.deediff`` (no threshold chosen yet)."""
        (root / METHOD).mkdir(exist_ok=True)
        clf = ClassifierWithFeatures(self.classifier).eval()
        path = root / METHOD / f"{CLASSIFIER_PART}.onnx"
        out_names = [LOGITS_OUTPUT, FEATURES_OUTPUT]
        export_onnx(clf, self.example, path, input_names=["image"], output_names=out_names, opset=self.opset)
        g = torch.Generator().manual_seed(self.seed)
        inputs = [torch.randn((b, *self.example.shape[1:]), generator=g) for b in (1, 3)]
        if self.real_images is not None:
            inputs.append(self.real_images.float())
        field = f"parts.{METHOD}.graphs.{CLASSIFIER_PART}"
        diff = graph_max_diff(clf, root, {"files": [file_entry(path, root)]}, inputs, field=field)
        tol = self.settings["tolerance"]
        if diff > tol:
            raise ExportError(f"{field}: max abs difference {diff:.3g} > tolerance {tol:g}")
        with torch.no_grad():
            logits, feats = clf(self.example[:1])
        graph = {"files": [file_entry(path, root)], "inputs": [tensor_spec("image", self.example)],
                 "outputs": [tensor_spec(LOGITS_OUTPUT, logits), tensor_spec(FEATURES_OUTPUT, feats)],
                 "flops": count_flops(clf, self.example), "params": count_params(clf),
                 "op_counts": onnx_op_counts(path)}
        manifest.setdefault("parts", {})[METHOD] = {
            "mode": MODE,
            "graphs": {CLASSIFIER_PART: graph},
            "verification": {"tolerance": tol, "batch_sizes": sorted({int(x.shape[0]) for x in inputs}), "passed": True,
                             "parts": {CLASSIFIER_PART: {"max_abs_diff": diff, "format": "onnx", "precision": "fp32"}}},
            "info": {"schedule": self.model.schedule.to_dict(), "sampler": dict(self.settings["sampler"]),
                     **self.record},
        }

    def choose_threshold(self, root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
        """Sweep the thresholds on the staged bundle; set the policy and record the sweep. Returns the record."""
        spec = self.settings["sweep"]
        rt = Runtime(staged_bundle(root, manifest), create_backend("onnxruntime", threads=self.settings["threads"]))
        start = time.perf_counter()

        def report(point: dict[str, Any]) -> None:
            if self.progress:
                print(f"deediff sweep: u < {point['threshold']:g}: {100 * point['layer_fraction']:.1f}% of the "
                      f"layers, FID {point['fid']:.2f} ({point['fid_ratio']:.3f}x full)", flush=True)

        steps = self.settings["sampler"]["steps"]
        thresholds = spec["thresholds"] or uncertainty_levels(rt, spec["levels"], n=spec["samples"], steps=steps,
                                                              seed=spec["seed"])
        sweep = quality_sweep(rt, self.reference_images, thresholds, n=spec["samples"], steps=steps, seed=spec["seed"],
                              on_point=report)
        chosen = choose_threshold(sweep, spec["max_fid_increase"])
        threshold = chosen["threshold"] if chosen is not None else 0.0   # u < 0 never: no exit at all
        manifest["policy"]["thresholds"] = [threshold] * (len(manifest["exits"]) - 1)
        record = {**sweep, "split": "calibration", "max_fid_increase": spec["max_fid_increase"], "chosen": chosen,
                  "levels": None if spec["thresholds"] else spec["levels"], "seconds": time.perf_counter() - start}
        manifest["parts"][METHOD]["info"]["sweep"] = record
        return record


def reference_split(split: Any, name: str = "calibration") -> np.ndarray:
    """A split's images in the data's range (what samples are compared with)."""
    x, _ = split.arrays(name)
    return np.asarray(x, dtype=np.float32)


def build_parts(model: DeeDiffUViT, split: Any, preprocess: Any, settings: dict[str, Any], *, seed: int = 0,
                progress: bool = True, opset: int = 17, checkpoint_dir: Path | None = None,
                resume: bool = False) -> DeeDiffParts:
    """Train the quality classifier on ``split`` and return the export hook (see :class:`DeeDiffParts`)."""
    clf_spec = settings["classifier"]
    x, y = split.arrays("train")
    xc, yc = split.arrays("calibration")
    xt, yt = split.arrays("test")
    xm, xcm, xtm = preprocess(x), preprocess(xc), preprocess(xt)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings["threads"])
    try:
        start = time.perf_counter()
        clf = train_classifier(xm, y, len(split.dataset.labels), features=clf_spec["features"],
                               epochs=clf_spec["epochs"],
                               batch_size=clf_spec["batch_size"], lr=clf_spec["lr"], seed=seed, progress=progress,
                               checkpoint_path=checkpoint_dir / "deediff_classifier.pt" if checkpoint_dir else None,
                               resume=resume)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    record = {"classifier": {"features": clf_spec["features"], "calibration_accuracy": accuracy(clf, xcm, yc),
                             "test_accuracy": accuracy(clf, xtm, yt), "train_seconds": seconds,
                             "trained_on": "train split (model-space images)"}}
    real = torch.from_numpy(np.ascontiguousarray(xcm[:64]))
    return DeeDiffParts(model=model, classifier=clf, settings=settings, example=real[:1], real_images=real,
                        reference_images=reference_split(split), record=record, progress=progress, opset=opset,
                        seed=seed)


@STAGES.register(SECTION)
class DeeDiffStage(ConversionStage):
    """After training: the quality classifier; at export: its part and the threshold chosen on the sweep."""

    section = SECTION
    when = "after_training"

    def check(self, recipe: Any, split: Any) -> None:
        if split is None:
            raise ConfigError(f"recipe key '{SECTION}' needs a 'data' section (the classifier and the sweep use it)")
        if recipe.get("calibrate"):
            raise ConfigError(f"recipe key 'calibrate' calibrates a classifier's exits; a '{SECTION}' recipe chooses "
                              f"its threshold on the quality sweep ({SECTION}.sweep): remove 'calibrate'")
        name = (recipe.get("model") or {}).get("name")   # None: a user's model (factory/exported) or model=
        if name != "deediff_uvit":
            raise ConfigError(f"recipe key '{SECTION}' needs model.name deediff_uvit, got {name!r}")

    def run(self, ctx: StageContext) -> list[PartsHook]:
        return [build_parts(ctx.model, ctx.split, ctx.preprocess, ctx.recipe[SECTION], seed=ctx.recipe["seed"],
                            progress=ctx.progress, opset=ctx.export["opset"], checkpoint_dir=ctx.checkpoint_dir,
                            resume=ctx.resume)]
