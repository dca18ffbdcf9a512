"""CBNet (2024) on the device: the ``cbnet`` mode — converting autoencoder, then the lightweight classifier.

A bundle converted with a recipe ``cbnet`` section holds the method's graphs under ``parts.cbnet``:
``autoencoder`` (model-ready input -> converted input of the same shape) and ``classifier`` (the
BranchyNet's first segment + first exit head -> logits). ``Runtime.infer(x, mode="cbnet")`` runs them in
sequence; every sample is answered at exit 0. The parts' sessions are opened on the first call and kept
with the runtime (:meth:`Runtime.mode_state`). This module also adds CBNet's ``inspect`` lines, its bench
row and its report targets. Nothing here imports torch.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_runtime.bench.configs import BenchConfig, BenchContext, infer_fn, variant_suffix
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.executor import GraphRunner, OnExit, Tensors
from edge_runtime.manifest import Manifest
from edge_runtime.modes import InferenceResult, Mode, TargetCheck, register_mode
from edge_runtime.policies import ExitPolicy

METHOD = "cbnet"


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


class CBNetRunner:
    """Runs a bundle's CBNet parts: ``autoencoder`` then a classifier part.

    Args:
        runtime: a loaded bundle with ``parts.cbnet``.
        classifier_part: which classifier part answers (``classifier``, the one ``mode="cbnet"``
            uses; ``classifier_base``, the shared-weight one, where the bundle kept it).

    Raises:
        ConfigError: the bundle has no CBNet parts, or not the one asked for.

    Example:
        >>> rt = edge_runtime.load_bundle("out/branchynet_resnet")   # doctest: +SKIP
        >>> CBNetRunner(rt).run(x).predictions                        # doctest: +SKIP
    """

    def __init__(self, runtime: Any, classifier_part: str = "classifier") -> None:
        parts = runtime.manifest.parts.get(METHOD)
        if parts is None:
            raise ConfigError(f"{runtime.bundle.root}: bundle {runtime.name!r} has no CBNet parts; "
                              "convert with a recipe 'cbnet' section to add them")
        if classifier_part not in parts.graphs:
            raise ConfigError(f"{runtime.bundle.root}: bundle {runtime.name!r} has no CBNet part "
                              f"{classifier_part!r}; it has {', '.join(sorted(parts.graphs))}")
        self.runtime = runtime
        self.part_names = ("autoencoder", classifier_part)
        self.runners: list[GraphRunner] = [
            runtime.open_graph(parts.graphs[name], f"parts.{METHOD}.graphs.{name}") for name in self.part_names]
        out_shape = list(parts.graphs["autoencoder"].outputs[0].shape[1:])
        if out_shape != list(runtime.input_spec.shape[1:]):
            raise BundleError(f"autoencoder output shape {out_shape} differs from the input shape "
                              f"{list(runtime.input_spec.shape[1:])}", path=runtime.bundle.manifest_path,
                              field=f"parts.{METHOD}.graphs.autoencoder.outputs")

    def convert(self, x: np.ndarray) -> np.ndarray:
        """The autoencoder's converted inputs (model-ready, same shape as ``x``)."""
        return self.runners[0].run_one(x)

    def run(self, x: np.ndarray, on_exit: OnExit | None = None) -> InferenceResult:
        """Autoencoder -> classifier on a checked batch (use ``Runtime.infer(x, mode="cbnet")``)."""
        rt = self.runtime
        clock = time.perf_counter
        start = clock()
        converted = self.runners[0].run_one(x)
        t1 = clock()
        logits = self.runners[1].run_one(converted)
        t2 = clock()
        n = x.shape[0]
        if on_exit is not None:
            on_exit(np.arange(n), 0, logits, t2 - start)
        seg_latency = np.zeros(rt.num_exits)
        seg_latency[0] = t2 - start
        seg_batch = np.zeros(rt.num_exits, dtype=np.int64)
        seg_batch[0] = n
        return InferenceResult(
            predictions=logits.argmax(axis=-1), exit_index=np.zeros(n, dtype=np.int64), outputs=logits,
            segment_latency_s=seg_latency, segment_batch_size=seg_batch, sample_latency_s=np.full(n, t2 - start),
            latency_s=t2 - start, mode=METHOD, labels=rt.labels,
            part_latency_s={self.part_names[0]: t1 - start, self.part_names[1]: t2 - t1},
        )


def cbnet_runner(runtime: Any) -> CBNetRunner:
    """The runtime's CBNet runner, created (sessions opened) on first use and kept with the runtime."""
    return runtime.mode_state(METHOD, lambda: CBNetRunner(runtime))


@register_mode
class CBNetMode(Mode):
    """CBNet's converting autoencoder + lightweight classifier (every sample answered at exit 0)."""

    name = METHOD
    description = "CBNet: converting autoencoder, then the lightweight classifier (first exit)"

    def unsupported(self, manifest: Manifest) -> str | None:
        return None if METHOD in manifest.parts else "it has no CBNet parts (convert with a recipe 'cbnet' section)"

    def run(self, runtime: Any, feeds: Tensors, policy: ExitPolicy | None, *,
            on_exit: OnExit | None = None) -> InferenceResult:
        return cbnet_runner(runtime).run(feeds[runtime.input_spec.name], on_exit)

    def describe(self, manifest: Manifest) -> list[str]:
        parts = manifest.parts[METHOD]
        lines = ["cbnet (mode 'cbnet'): " + ", ".join(f"{k} {_fmt(g.flops)} FLOPs"
                                                        for k, g in sorted(parts.graphs.items()))]
        cost, train = parts.info.get("cost") or {}, parts.info.get("training") or {}
        if cost:
            ratio = cost["flops_ratio_full_vs_cbnet"]
            times = f"{ratio:.1f}x fewer" if ratio >= 1 else f"{1 / ratio:.1f}x more"
            lines.append(f"  autoencoder + classifier {_fmt(cost['cbnet_flops'])} FLOPs vs full "
                         f"{_fmt(cost['full_model_flops'])} ({times}); autoencoder "
                         f"{'cheaper' if cost['cheaper_than_saved'] else 'NOT cheaper'} than the "
                         f"{_fmt(cost['saved_flops'])} FLOPs it saves")
        accs = {k: v for k, v in train.items() if k.endswith("_accuracy") and isinstance(v, float)}
        if accs:
            lines.append(f"  {train.get('evaluated_on', '')} accuracy: " + ", ".join(
                f"{k.removesuffix('_accuracy')} {100 * v:.2f}%" for k, v in accs.items()))
        return lines

    def bench_rows(self, ctx: BenchContext) -> list[BenchConfig]:
        rows = []
        for key, rt in ctx.runtimes.items():
            if METHOD not in rt.modes():
                continue
            rows.append(BenchConfig(
                name=METHOD + variant_suffix(key, ctx.primary_key), kind=METHOD,
                label="CBNet (autoencoder + lightweight classifier)",
                run=infer_fn(rt, mode=METHOD), backend=key[0], precision=key[1]))
        return rows

    def targets(self) -> dict[str, TargetCheck]:
        return {"cbnet_accuracy": _accuracy_target, "cbnet_speedup": _speedup_target,
                "cbnet_vs_branchynet": _vs_early_exit_target}


def _row(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in results["configs"] if r["name"] == name), None)


def _na(goal: str, why: str) -> dict[str, Any]:
    return {"status": "N/A", "value": None, "goal": goal, "detail": why}


def _verdict(ok: bool, value: float, goal: str, detail: str) -> dict[str, Any]:
    return {"status": "PASS" if ok else "MISS", "value": value, "goal": goal, "detail": detail}


def _accuracy_target(results: dict[str, Any]) -> dict[str, Any]:
    goal = "CBNet accuracy within 1.0 point of the full model"
    cb = _row(results, METHOD)
    if not cb or cb.get("accuracy_drop_pts") is None:
        return _na(goal, "the bundle has no CBNet parts")
    drop = cb["accuracy_drop_pts"]
    return _verdict(drop <= 1.0, drop, goal, f"accuracy drop {drop:.2f} points")


def _speedup_target(results: dict[str, Any]) -> dict[str, Any]:
    goal = "CBNet mean batch-1 latency >= 3x lower than the full model's"
    cb = _row(results, METHOD)
    if not cb or not cb.get("speedup_vs_full"):
        return _na(goal, "the bundle has no CBNet parts")
    s = cb["speedup_vs_full"]
    return _verdict(s >= 3.0, s, goal, f"speed-up {s:.2f}x")


def _vs_early_exit_target(results: dict[str, Any]) -> dict[str, Any]:
    goal = "CBNet mean batch-1 latency lower than BranchyNet early exit's at its calibrated point"
    cb, ee = _row(results, METHOD), _row(results, "early_exit")
    if not cb or not ee or not cb.get("latency_ms") or not ee.get("latency_ms"):
        return _na(goal, "the bundle has no CBNet parts")
    ratio = ee["latency_ms"]["mean"] / cb["latency_ms"]["mean"]
    return _verdict(ratio > 1.0, ratio, goal, f"early exit / CBNet mean latency = {ratio:.2f}x")
