"""CBNet (2024): a converting autoencoder maps any input to an easy exemplar of its class, and a
lightweight classifier (the BranchyNet's first segment + first exit head, shared weights) answers.

From a trained :class:`EarlyExitModel` and its training split: find the easy training inputs
(those the calibrated policy lets leave at the first exit), choose an exemplar per input
(``medoid`` of its class's easy inputs, or its ``nearest`` easy input), train a registered
autoencoder (:data:`AUTOENCODERS`) to map every input to its exemplar, optionally fine-tune a
copy of the lightweight classifier on converted inputs, and export both parts into the bundle
(``export_bundle(..., extra_parts=[result.exporter(...)])``). The device runs them with
``Runtime.infer(x, mode="cbnet")`` (:mod:`edge_runtime.methods.cbnet`).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.methods.cbnet.autoencoders import AUTOENCODERS, ConvertingAutoencoder, create_autoencoder
from converters.methods.cbnet.exemplars import EXEMPLAR_METHODS, ExemplarChoice, choose_exemplars, find_easy
from converters.methods.cbnet.export import CBNetExporter
from converters.methods.cbnet.train import ConvertedClassifier, batched, predict, train_part
from converters.models.contract import EarlyExitModel
from converters.recipe.sections import expect_mapping, expect_type, named_component, section
from converters.training.evaluation import exit_logits
from converters.training.trainer import run_fingerprint
from edge_runtime.backends import create_backend
from edge_runtime.bundle import Bundle
from edge_runtime.errors import ConfigError
from edge_runtime.manifest import Manifest
from edge_runtime.methods.cbnet import calibrate_gate
from edge_runtime.policies import ExitPolicy, ScorePolicy, create_policy
from edge_runtime.policies.base import softmax
from edge_runtime.runtime import Runtime

__all__ = [
    "AUTOENCODERS", "EXEMPLAR_METHODS", "CBNetResult", "CBNetSettings", "ConvertingAutoencoder",
    "ExemplarChoice", "LightweightClassifier", "choose_exemplars", "create_autoencoder", "find_easy",
    "cbnet_from_recipe", "parse_cbnet_section", "train_cbnet",
]


@dataclass(frozen=True)
class CBNetSettings:
    """How CBNet trains (the recipe's ``cbnet`` section).

    Attributes:
        autoencoder: registered autoencoder name (``dense``: the paper's; ``conv``).
        autoencoder_kwargs: its arguments.
        exemplars: ``medoid`` (one per class, the paper's prototype), ``nearest`` or ``medoids`` (a per-class
            set of easy exemplars); see :data:`EXEMPLAR_METHODS`.
        exemplar_kwargs: the exemplar method's arguments (``medoids``: ``k``).
        require_correct: an easy input must also be classified correctly at the first exit.
        epochs, batch_size, lr: the autoencoder's Adam training (paper: 20 epochs, batch 256).
        shift: augment the autoencoder's training inputs by random translations of up to this many
            pixels (0: off, the paper's setting; targets stay the exemplars).
        finetune: also fine-tune a copy of the lightweight classifier on converted inputs.
        finetune_epochs, finetune_lr: its Adam training.
        finetune_shift: > 0: fine-tune on training inputs translated by up to this many pixels and converted on
            the fly (the autoencoder frozen), so the classifier sees conversions of inputs the autoencoder did not
            memorise; 0: on the converted training inputs as they are.
        fallback_count: pool size (most confident first-exit inputs) for a class without easy inputs.
        max_pool: easy inputs per class considered for exemplars (seeded subsample above it).
        tolerance: max abs difference PyTorch vs ONNX for the exported parts.
        threads: torch CPU threads while training (None: torch's default; 1 suits small models on
            a busy machine).
        gate: the confidence gate (beyond the paper), or None (ungated: the paper's CBNet). A mapping
            ``{policy, kwargs, max_accuracy_drop}``: a score policy on the classifier's output for the converted
            input, whose threshold is calibrated on the calibration split so that the gated answers stay within
            ``max_accuracy_drop`` points of the final exit (None: the recipe's ``calibrate.max_accuracy_drop``);
            turned-away samples continue through the early-exit chain on their original input
            (:func:`edge_runtime.methods.cbnet.calibrate_gate`).
    """

    autoencoder: str = "dense"
    autoencoder_kwargs: dict[str, Any] = field(default_factory=dict)
    exemplars: str = "medoid"
    exemplar_kwargs: dict[str, Any] = field(default_factory=dict)
    require_correct: bool = True
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    shift: int = 0
    finetune: bool = False
    finetune_epochs: int = 5
    finetune_lr: float = 1e-4
    finetune_shift: int = 0
    fallback_count: int = 10
    max_pool: int = 2000
    tolerance: float = 1e-4
    threads: int | None = None
    gate: dict[str, Any] | None = None

    @classmethod
    def from_section(cls, spec: dict[str, Any]) -> CBNetSettings:
        """From a validated recipe section (:func:`parse_cbnet_section`)."""
        flat = {k: v for k, v in spec.items() if k != "autoencoder"}
        return cls(autoencoder=spec["autoencoder"]["name"], autoencoder_kwargs=dict(spec["autoencoder"]["kwargs"]),
                   **flat)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_DEFAULTS = {k: v for k, v in CBNetSettings().to_dict().items() if k not in ("autoencoder", "autoencoder_kwargs")}


@section("cbnet")
def parse_cbnet_section(value: Any, where: str = "cbnet") -> dict[str, Any]:
    """Validate the recipe's ``cbnet`` section and fill in defaults.

    Example:
        >>> parse_cbnet_section({"epochs": 3})["autoencoder"]
        {'name': 'dense', 'kwargs': {}}

    Raises:
        ConfigError: naming the bad key (``cbnet.epochs``) and what was expected.
    """
    spec = expect_mapping(value, where, {"autoencoder": {"name": "dense", "kwargs": {}}, **_DEFAULTS})
    spec["autoencoder"] = named_component(spec["autoencoder"], f"{where}.autoencoder", AUTOENCODERS)
    accepted = set(inspect.signature(AUTOENCODERS.get(spec["autoencoder"]["name"])).parameters) - {
        "input_shape", "value_range"}
    for key in spec["autoencoder"]["kwargs"]:
        if key not in accepted:
            raise ConfigError(f"recipe key {where}.autoencoder.kwargs.{key} is not an argument of autoencoder "
                              f"{spec['autoencoder']['name']!r}; allowed: {', '.join(sorted(accepted))}")
    expect_type(spec["exemplars"], str, f"{where}.exemplars")
    if spec["exemplars"] not in EXEMPLAR_METHODS:
        raise ConfigError(f"recipe key {where}.exemplars: unknown {EXEMPLAR_METHODS.kind} {spec['exemplars']!r}; "
                          f"known: {', '.join(EXEMPLAR_METHODS.names())}")
    expect_type(spec["exemplar_kwargs"], dict, f"{where}.exemplar_kwargs")
    method_args = list(inspect.signature(EXEMPLAR_METHODS.get(spec["exemplars"])).parameters)[2:]
    for key in spec["exemplar_kwargs"]:
        if key not in method_args:
            raise ConfigError(f"recipe key {where}.exemplar_kwargs.{key} is not an argument of exemplar method "
                              f"{spec['exemplars']!r}; allowed: {', '.join(method_args) or 'none'}")
    for key in ("require_correct", "finetune"):
        expect_type(spec[key], bool, f"{where}.{key}")
    for key in ("epochs", "batch_size", "finetune_epochs", "fallback_count", "max_pool", "shift", "finetune_shift"):
        low = 0 if key in ("epochs", "finetune_epochs", "shift", "finetune_shift") else 1
        if expect_type(spec[key], int, f"{where}.{key}") < low:
            raise ConfigError(f"recipe key {where}.{key}: must be >= {low}, got {spec[key]}")
    spec["gate"] = _parse_gate(spec["gate"], f"{where}.gate")
    if spec["threads"] is not None and expect_type(spec["threads"], int, f"{where}.threads") < 1:
        raise ConfigError(f"recipe key {where}.threads: must be >= 1 or null, got {spec['threads']}")
    for key in ("lr", "finetune_lr", "tolerance"):
        if expect_type(spec[key], (int, float), f"{where}.{key}") <= 0:
            raise ConfigError(f"recipe key {where}.{key}: must be > 0, got {spec[key]}")
        spec[key] = float(spec[key])
    return spec


#: the gate's settings and their defaults (``cbnet.gate``)
GATE_DEFAULTS: dict[str, Any] = {"policy": "confidence", "kwargs": {}, "max_accuracy_drop": None}


def _parse_gate(value: Any, where: str) -> dict[str, Any] | None:
    """``cbnet.gate``: null/false (no gate), true (the defaults) or a mapping of :data:`GATE_DEFAULTS` keys."""
    if value is None or value is False:
        return None
    spec = expect_mapping({} if value is True else value, where, GATE_DEFAULTS)
    expect_type(spec["policy"], str, f"{where}.policy")
    expect_type(spec["kwargs"], dict, f"{where}.kwargs")
    try:
        probe = create_policy(spec["policy"], 2, None, **spec["kwargs"])
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"recipe key {where}.policy: {exc}") from None
    if not isinstance(probe, ScorePolicy):
        raise ConfigError(f"recipe key {where}.policy: {spec['policy']!r} is not a score policy (its threshold is "
                          "what the gate calibrates); use confidence or entropy")
    drop = spec["max_accuracy_drop"]
    if drop is not None and expect_type(drop, (int, float), f"{where}.max_accuracy_drop") < 0:
        raise ConfigError(f"recipe key {where}.max_accuracy_drop: must be >= 0, got {drop}")
    return spec


class LightweightClassifier(nn.Module):
    """CBNet's lightweight classifier: segment 0 + exit head 0 of a BranchyNet (the same modules,
    so the same weights). Input: model-ready inputs; output: logits.
    """

    def __init__(self, model: EarlyExitModel) -> None:
        super().__init__()
        self.segment = model.segments[0]
        self.head = model.heads[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.segment(x))


@dataclass
class CBNetResult:
    """What :func:`train_cbnet` returns: the trained parts and what to record in the manifest.

    Attributes:
        autoencoder: the converting autoencoder (model-ready in, model-ready out).
        classifier: the lightweight classifier sharing the model's weights.
        finetuned: a fine-tuned copy of it, when ``settings.finetune``.
        exemplars: the exemplar choice.
        settings: how it was trained.
        report: accuracies and loss curves (the manifest's ``cbnet.training``).
    """

    autoencoder: ConvertingAutoencoder
    classifier: LightweightClassifier
    finetuned: LightweightClassifier | None
    exemplars: ExemplarChoice
    settings: CBNetSettings
    report: dict[str, Any]

    def parts(self) -> dict[str, nn.Module]:
        """Part name -> module: ``classifier`` is what ``mode="cbnet"`` runs (the fine-tuned one when
        there is one, then the shared-weight one is kept as ``classifier_base``)."""
        if self.finetuned is None:
            return {"autoencoder": self.autoencoder, "classifier": self.classifier}
        return {"autoencoder": self.autoencoder, "classifier": self.finetuned, "classifier_base": self.classifier}

    def exporter(self, example: torch.Tensor, *, real_inputs: torch.Tensor | None = None,
                 batch_sizes: Sequence[int] = (1, 3), opset: int = 17, seed: int = 0,
                 gate_data: tuple[np.ndarray, np.ndarray] | None = None,
                 max_accuracy_drop: float | None = None,
                 guarantee: dict[str, Any] | None = None) -> CBNetExporter:
        """An ``export_bundle(..., extra_parts=[...])`` hook writing the parts under ``cbnet/``.

        Args:
            example: one model-ready input batch (the parts' example input).
            real_inputs: real inputs to verify on too (the classifiers on their converted form).
            batch_sizes: random-input batch sizes to verify on.
            gate_data: held-out model-ready inputs and labels (the calibration split) the gate is calibrated on
                (with ``settings.gate``), on the exported graphs and the bundle's policy, once the parts are in.
            max_accuracy_drop: the gate's budget when ``settings.gate`` names none (the recipe's calibration's).
            guarantee: the exit thresholds' risk control (the recipe's ``calibrate`` ``confidence``, ``risk``,
                ``bound``, ``selection_fraction``, ``seed``), applied to the gate too; None or no ``confidence``:
                the point estimate (:func:`edge_runtime.methods.cbnet.choose_gate`).

        Raises:
            ConfigError: ``settings.gate`` without ``gate_data``, or without any budget.

        Example:
            >>> export_bundle(model, example, "out/b", name="b",
            ...               extra_parts=[result.exporter(example, real_inputs=x_val[:64])])  # doctest: +SKIP
        """
        section = {"exemplars": self.exemplars.summary(), "training": self.report}
        gate = self.settings.gate
        budget = None
        if gate is not None:
            budget = gate["max_accuracy_drop"] if gate["max_accuracy_drop"] is not None else max_accuracy_drop
            if gate_data is None or budget is None:
                raise ConfigError("cbnet.gate: the gate needs held-out data to be calibrated on and an accuracy "
                                  "budget (a recipe 'calibrate' section, or cbnet.gate.max_accuracy_drop)")

        def finish(root: Path, manifest: dict[str, Any]) -> None:
            info = manifest["parts"]["cbnet"]["info"]
            info["cost"] = _cost(manifest)
            if gate is not None and gate_data is not None and budget is not None:
                info["gate"] = _calibrate_gate(root, manifest, gate_data, gate, float(budget), guarantee)

        return CBNetExporter(self.parts(), example, real_inputs=real_inputs, tolerance=self.settings.tolerance,
                             batch_sizes=batch_sizes, opset=opset, seed=seed, section=section, finish=finish)


def _calibrate_gate(root: Path, manifest: dict[str, Any], data: tuple[np.ndarray, np.ndarray], gate: dict[str, Any],
                    budget: float, guarantee: dict[str, Any] | None = None) -> dict[str, Any]:
    """Calibrate the gate on the bundle being written: its exported graphs (onnxruntime, fp32, one thread) and
    the manifest's (calibrated) policy, through the device's own code
    (:func:`edge_runtime.methods.cbnet.calibrate_gate`)."""
    runtime = Runtime(Bundle(Path(root), Manifest.from_dict(manifest)), create_backend("onnxruntime", threads=1))
    x, y = data
    return calibrate_gate(runtime, np.ascontiguousarray(x, dtype=np.float32), np.asarray(y), policy=gate["policy"],
                          policy_kwargs=gate["kwargs"], max_accuracy_drop=budget, guarantee=guarantee)


def _cost(manifest: dict[str, Any]) -> dict[str, Any]:
    """FLOPs of CBNet next to the model's: is the autoencoder cheaper than what it saves?"""
    parts = manifest["parts"]["cbnet"]["graphs"]
    full = manifest.get("full_model", {}).get("flops") or manifest["exits"][-1]["cumulative_flops"]
    ae, clf = parts["autoencoder"]["flops"], parts["classifier"]["flops"]
    saved = full - clf
    return {"autoencoder_flops": ae, "classifier_flops": clf, "cbnet_flops": ae + clf, "full_model_flops": full,
            "saved_flops": saved, "autoencoder_vs_saved": ae / saved if saved > 0 else None,
            "cheaper_than_saved": bool(ae < saved), "flops_ratio_full_vs_cbnet": full / max(ae + clf, 1)}


def _convert(ae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    ae.eval()
    return torch.cat(batched(ae, x))


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean())


def train_cbnet(
    model: EarlyExitModel,
    x: torch.Tensor,
    y: torch.Tensor,
    policy: ExitPolicy,
    settings: CBNetSettings | None = None,
    *,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> CBNetResult:
    """Train CBNet's converting autoencoder (and optionally fine-tune its classifier) for ``model``.

    Args:
        model: the trained BranchyNet (not modified; its segment 0 + head 0 are shared).
        x, y: the training split, model-ready inputs (N, ...) and classes (N,).
        policy: the calibrated exit policy deciding which inputs are easy.
        settings: training settings (default :class:`CBNetSettings`).
        x_val, y_val: held-out inputs for the reported accuracies (default: the training split).
        seed: seeds the shuffling and the exemplar subsampling.
        progress: progress bars.
        checkpoint_dir: where ``cbnet_autoencoder.pt`` / ``cbnet_finetune.pt`` checkpoints go.
        resume: continue from those checkpoints when they belong to this run.
        callbacks: :class:`converters.training.trainer.TrainCallback` hooks for the autoencoder's training
            (``benchmarks/cbnet_variants.py`` records learning curves with one).

    Example:
        >>> res = train_cbnet(model, x_train, y_train, create_policy("entropy", 3, 0.3))  # doctest: +SKIP
        >>> res.report["cbnet_accuracy"]                                                 # doctest: +SKIP
    """
    s = settings or CBNetSettings()
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        return _train_cbnet(model, x.float(), y.long(), policy, s, x_val, y_val, seed, progress, checkpoint_dir,
                            resume, callbacks)
    finally:
        torch.set_num_threads(threads)


def _train_cbnet(model: EarlyExitModel, x: torch.Tensor, y: torch.Tensor, policy: ExitPolicy, s: CBNetSettings,
                 x_val: torch.Tensor | None, y_val: torch.Tensor | None, seed: int, progress: bool,
                 checkpoint_dir: str | Path | None, resume: bool, callbacks: Sequence[Any] = ()) -> CBNetResult:
    y_np = y.numpy()
    torch.manual_seed(seed)
    logits = exit_logits(model, x, batch_size=512)
    easy = find_easy(logits, y_np, policy, require_correct=s.require_correct)
    confidence = softmax(logits[0].astype(np.float64))[np.arange(len(y_np)), y_np]
    choice = choose_exemplars(x.numpy(), y_np, easy, s.exemplars, confidence=confidence,
                              fallback_count=s.fallback_count, max_pool=s.max_pool, seed=seed,
                              method_kwargs=s.exemplar_kwargs)
    reduce = tuple(d for d in range(x.dim()) if d != 1) if x.dim() > 2 else tuple(range(x.dim()))
    value_range = (x.amin(dim=reduce).tolist(), x.amax(dim=reduce).tolist())
    ae = create_autoencoder(s.autoencoder, tuple(x.shape[1:]), value_range, **s.autoencoder_kwargs)
    target = x[torch.from_numpy(choice.target_index)]
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    run = {k: v for k, v in s.to_dict().items() if k not in ("threads", "tolerance", "gate")}
    key = run_fingerprint(run, seed, x, choice.target_index, [p.detach() for p in model.parameters()][:4])
    ae_loss = train_part(ae, x, target, loss={"name": "cbnet_reconstruction", "kwargs": {"shift": s.shift}},
                         epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=seed, name="cbnet autoencoder",
                         progress=progress, checkpoint=ckpt / "cbnet_autoencoder.pt" if ckpt else None,
                         resume=resume, run_id=key, callbacks=callbacks)
    classifier = LightweightClassifier(model).eval()
    finetuned, ft_loss = None, []
    if s.finetune:
        finetuned = copy.deepcopy(classifier)
        if s.finetune_shift:   # convert on the fly: shifted inputs; the loss trains the classifier only
            module: nn.Module = ConvertedClassifier(ae, finetuned)
            inputs = x
        else:
            module, inputs = finetuned, _convert(ae, x)
        ft_loss = train_part(module, inputs, y, loss={"name": "cbnet_classifier",
                                                      "kwargs": {"shift": s.finetune_shift}},
                             epochs=s.finetune_epochs, batch_size=s.batch_size, lr=s.finetune_lr, seed=seed + 1,
                             name="cbnet fine-tune", progress=progress,
                             checkpoint=ckpt / "cbnet_finetune.pt" if ckpt else None, resume=resume, run_id=key)
    report = _report(model, ae, classifier, finetuned, x, y, x_val, y_val)
    report.update({"settings": s.to_dict(), "easy_fraction": float(easy.mean()), "train_samples": int(x.shape[0]),
                   "autoencoder_loss": ae_loss, "finetune_loss": ft_loss})
    return CBNetResult(ae.eval(), classifier, finetuned, choice, s, report)


def _report(model: EarlyExitModel, ae: nn.Module, classifier: nn.Module, finetuned: nn.Module | None,
            x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor | None, y_val: torch.Tensor | None) -> dict[str, Any]:
    """Accuracies of the full model, the first exit, and CBNet (shared and fine-tuned) on held-out data."""
    on_val = x_val is not None and y_val is not None
    xe, ye = (x_val.float(), y_val.long()) if x_val is not None and y_val is not None else (x, y)
    ye_np = ye.numpy()
    logits = exit_logits(model, xe, batch_size=512)
    converted = _convert(ae, xe)
    out: dict[str, Any] = {
        "evaluated_on": "validation" if on_val else "train",
        "samples": int(xe.shape[0]),
        "full_model_accuracy": _accuracy(logits[-1].argmax(-1), ye_np),
        "first_exit_accuracy": _accuracy(logits[0].argmax(-1), ye_np),
        "cbnet_accuracy": _accuracy(predict(classifier, converted), ye_np),
        "cbnet_train_accuracy": _accuracy(predict(classifier, _convert(ae, x)), y.numpy()),
    }
    if finetuned is not None:
        out["cbnet_finetuned_accuracy"] = _accuracy(predict(finetuned, converted), ye_np)
    return out


def cbnet_from_recipe(recipe: Any, model: EarlyExitModel, split: Any, preprocess: Callable[[np.ndarray], np.ndarray],
                      policy: dict[str, Any], example: torch.Tensor, *, verify_inputs: torch.Tensor | None = None,
                      checkpoint_dir: str | Path | None = None, resume: bool = False,
                      progress: bool = True) -> CBNetExporter:
    """CBNet from a recipe (what its conversion stage runs, :class:`converters.methods.cbnet.stage.CBNetStage`):
    train on the recipe's train split with the (calibrated) policy, report accuracies on the calibration split,
    and return the hook that exports the parts into the bundle.

    Args:
        recipe: the validated recipe (its ``cbnet``, ``export`` and ``seed`` sections are read).
        model: the trained BranchyNet.
        split: the recipe's :class:`edge_runtime.datasets.SplitData`.
        preprocess: raw inputs -> model-ready inputs (the bundle's preprocessing).
        policy: ``{"name", "kwargs", "thresholds"}``, the calibrated policy (the manifest's).
        example: one model-ready input batch.
        verify_inputs: real model-ready inputs the exported parts are verified on too.
    """
    settings = CBNetSettings.from_section(recipe["cbnet"])
    x, y = split.arrays("train")
    xc, yc = split.arrays("calibration")
    pol = create_policy(policy["name"], model.num_exits, policy["thresholds"] or None, **policy["kwargs"])
    result = train_cbnet(model, torch.from_numpy(preprocess(x)), torch.from_numpy(np.asarray(y)), pol, settings,
                         x_val=torch.from_numpy(preprocess(xc)), y_val=torch.from_numpy(np.asarray(yc)),
                         seed=recipe["seed"], progress=progress, checkpoint_dir=checkpoint_dir, resume=resume)
    exp = recipe["export"]
    cal = recipe.get("calibrate")
    return result.exporter(example, real_inputs=verify_inputs, batch_sizes=exp["verify_batch_sizes"],
                           opset=exp["opset"], seed=recipe["seed"], gate_data=(preprocess(xc), np.asarray(yc)),
                           max_accuracy_drop=cal["max_accuracy_drop"] if cal else None,
                           guarantee=_guarantee(cal, recipe["seed"]))


def _guarantee(cal: dict[str, Any] | None, seed: int) -> dict[str, Any] | None:
    """The recipe's risk-control keys (``calibrate.confidence`` and its companions) the gate is calibrated with:
    the exit thresholds' own; None without a ``confidence`` (the point estimate)."""
    if not cal or cal.get("confidence") is None:
        return None
    keys = ("confidence", "risk", "bound", "selection_fraction")
    return {**{k: cal[k] for k in keys if cal.get(k) is not None}, "seed": int(seed)}
