"""Sample quality without a model hub: a digits classifier shipped in the bundle gives FID in its feature space.

The bundle's ``parts.deediff.graphs.classifier`` (trained in the same recipe) maps model-space images to
``logits`` and ``features`` (its penultimate layer). From them: the Fréchet distance between two sets of
features (FID's formula, Heusel et al. 2017, in this small feature space instead of Inception's), the class
accuracy of class-conditional samples, and the per-sample MSE between two sample sets drawn from the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.executor import GraphRunner
from edge_runtime.methods.deediff.policy import UNCERTAINTY_OUTPUT
from edge_runtime.methods.deediff.sampler import METHOD, sampler_of, starting_noise
from edge_runtime.policies import ExitPolicy

CLASSIFIER_PART = "classifier"
LOGITS_OUTPUT, FEATURES_OUTPUT = "logits", "features"


def classifier_runner(runtime: Any) -> GraphRunner:
    """The bundle's digits classifier part, opened on first use and kept with the runtime.

    Raises:
        ConfigError: the bundle has no classifier part.
    """
    parts = runtime.manifest.parts.get(METHOD)
    if parts is None or CLASSIFIER_PART not in parts.graphs:
        raise ConfigError(f"{runtime.bundle.root}: bundle {runtime.name!r} has no parts.{METHOD}.graphs."
                          f"{CLASSIFIER_PART} (the quality classifier)")
    field = f"parts.{METHOD}.graphs.{CLASSIFIER_PART}"
    return runtime.mode_state(field, lambda: runtime.open_graph(parts.graphs[CLASSIFIER_PART], field))


def classify(runtime: Any, images: np.ndarray, *, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) of images in the data's range (as :class:`SampleResult.images` and the data set hold
    them), after the bundle's input preprocessing."""
    runner = classifier_runner(runtime)
    x = runtime.preprocess(np.asarray(images, dtype=np.float32))
    logits, feats = [], []
    for start in range(0, x.shape[0], batch_size):
        out = runner.run({runner.input_names[0]: x[start:start + batch_size]})
        logits.append(out[LOGITS_OUTPUT])
        feats.append(out[FEATURES_OUTPUT])
    return np.concatenate(logits), np.concatenate(feats)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D):
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)`` (numpy only: symmetric square roots).

    Example:
        >>> a = np.random.default_rng(0).normal(size=(500, 2))
        >>> round(frechet_distance(a, a + [3, 0]), 6)      # same covariance: the squared mean shift
        9.0
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance: need two (N>=2, D) feature sets of one width, got {a.shape}, {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(s_a)
    cross = np.trace(_sqrt_psd(root_a @ s_b @ root_a))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def sample_quality(runtime: Any, images: np.ndarray, reference_features: np.ndarray,
                   classes: np.ndarray | None = None) -> dict[str, Any]:
    """FID against reference features (e.g. the test split's), and the class accuracy when conditioned."""
    logits, feats = classify(runtime, images)
    out: dict[str, Any] = {"fid": frechet_distance(feats, reference_features), "n": int(images.shape[0])}
    if classes is not None:
        out["class_accuracy"] = float((logits.argmax(-1) == np.asarray(classes)).mean())
    return out


def per_sample_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared difference per sample between two image sets of one shape, (N,)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return (d ** 2).reshape(d.shape[0], -1).mean(axis=1)


class _RecordUncertainty(ExitPolicy):
    """Never lets a sample leave; keeps the lowest ``u`` of every sample over the blocks at every step."""

    reads = (UNCERTAINTY_OUTPUT,)
    uses_thresholds = False

    def __init__(self, num_exits: int) -> None:
        super().__init__(num_exits)
        self.lowest: list[np.ndarray] = []

    def decide(self, exit_index: int, output: Any, state: dict[str, np.ndarray]) -> np.ndarray:
        u = np.asarray(output[UNCERTAINTY_OUTPUT], dtype=np.float64).reshape(-1)
        if exit_index == 0:
            self.lowest.append(u.copy())
        else:
            np.minimum(self.lowest[-1], u, out=self.lowest[-1])
        return np.zeros(u.shape[0], dtype=bool)


def uncertainty_levels(runtime: Any, levels: Sequence[float], *, n: int, steps: int | None = None,
                       seed: int = 0) -> list[float]:
    """Thresholds at which a given share of the (sample, step) pairs would leave early: the ``levels`` quantiles of
    each pair's lowest ``u`` over the blocks, along full-depth trajectories (the sampling loop with a policy that
    never lets a sample leave and records the scores).

    Example:
        >>> uncertainty_levels(rt, [0.05, 0.2], n=100)     # doctest: +SKIP
        [0.118, 0.131]
    """
    sampler = sampler_of(runtime)
    record = _RecordUncertainty(runtime.num_exits)
    sampler.run(starting_noise(n, sampler.sample_shape, seed), sampler.classes(n), steps=steps, threshold=record)
    lowest = np.concatenate(record.lowest)
    return sorted({round(float(np.quantile(lowest, q)), 6) for q in levels})


def quality_sweep(runtime: Any, reference_images: np.ndarray, thresholds: Sequence[float], *, n: int,
                  steps: int | None = None, seed: int = 0,
                  on_point: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Quality vs layers used over uncertainty thresholds, every point sampled from the same noise and classes.

    The full-depth samples (the one-graph model at every step) are the baseline: each threshold's point records
    its mean blocks per step, FID against ``reference_images`` (data range, e.g. a held-out split), the ratio to
    the full model's FID, the class accuracy (class-conditional) and the per-sample MSE to the full samples.

    Args:
        runtime: a diffusion bundle's runtime (with the quality classifier part).
        reference_images: real images in the data's range, (M, C, H, W).
        thresholds: the uncertainty thresholds to try.
        n: samples per point.
        steps: DDIM steps (default: the bundle's).
        seed: the starting noise's seed.
        on_point: called with each finished point (progress).

    Returns:
        ``{"n", "steps", "seed", "full": {...}, "curve": [{...} per threshold]}`` (JSON-ready).
    """
    sampler = sampler_of(runtime)
    _, ref = classify(runtime, reference_images)
    noise = starting_noise(n, sampler.sample_shape, seed)
    classes = sampler.classes(n)
    full = sampler.run(noise, classes, steps=steps, mode="full")
    base = sample_quality(runtime, full.images, ref, classes)
    base.update(mean_layers=full.mean_layers, layer_fraction=1.0, latency_s=full.latency_s)
    curve = []
    for thr in thresholds:
        res = sampler.run(noise, classes, steps=steps, threshold=float(thr))
        q = sample_quality(runtime, res.images, ref, classes)
        point = {"threshold": float(thr), "mean_layers": res.mean_layers, "layer_fraction": res.layer_fraction,
                 **q, "fid_ratio": q["fid"] / base["fid"] if base["fid"] > 0 else float("inf"),
                 "mse_vs_full": float(per_sample_mse(res.images, full.images).mean()), "latency_s": res.latency_s,
                 "layers_per_step": res.layers.mean(axis=1).tolist()}
        curve.append(point)
        if on_point is not None:
            on_point(point)
    return {"n": n, "steps": int(full.timesteps.shape[0]), "seed": seed, "full": base, "curve": curve}


def choose_threshold(sweep: dict[str, Any], max_fid_increase: float) -> dict[str, Any] | None:
    """The sweep point using the fewest layers whose FID is within ``max_fid_increase`` (0.1 = 10%) of the full
    model's; None when no point is."""
    ok = [p for p in sweep["curve"] if p["fid_ratio"] <= 1.0 + max_fid_increase]
    return min(ok, key=lambda p: (p["layer_fraction"], p["fid"])) if ok else None
